"""IPCP, the IP Control Protocol (RFC 1332), with the DNS options of RFC 1877.

The client pattern (what slirp and most servers expect): ask IP-Address
0.0.0.0 and the DNS servers 0.0.0.0 to be told, take the values from the
peer's Configure-Nak, ask again, get the Ack. The peer's own IP-Address is
acked as it comes. Van Jacobson compression (RFC 1332 §4, RFC 1144) is asked
for and granted only when ``vj`` is set. NBNS (RFC 1877 §1.2, §1.4) and
anything unknown is rejected.

A peer that asks 0.0.0.0 to be told when we have no address for it gets a
Configure-Reject: a Configure-Nak must carry an address acceptable to us as
the peer's (RFC 1332 §3.3), and we have none; the Reject tells it to go on
without. With ``peer_address`` set we Nak with it instead, and append it to a
Nak when the peer did not ask at all (§3.3: SHOULD).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from hilkit.drivers.ppp.fsm import Automaton, Judgement, LinkEvent, Option, Verdict, combine
from hilkit.drivers.ppp.proto import PPP_IPCP, PPP_VJC

IP_ADDRESSES = 1  # RFC 1332 §3.1, deprecated: rejected
IP_COMPRESSION_PROTOCOL = 2  # RFC 1332 §3.2
IP_ADDRESS = 3  # RFC 1332 §3.3
PRIMARY_DNS = 129  # RFC 1877 §1.1
PRIMARY_NBNS = 130  # RFC 1877 §1.2
SECONDARY_DNS = 131  # RFC 1877 §1.3
SECONDARY_NBNS = 132  # RFC 1877 §1.4

DNS_OPTIONS = (PRIMARY_DNS, SECONDARY_DNS)
ZERO = IPv4Address(0)


@dataclass(frozen=True)
class VjParams:
    """Van Jacobson TCP/IP header compression as negotiated (RFC 1332 §4)."""

    max_slot_id: int  # slots are 0..max_slot_id
    comp_slot_id: bool  # the slot id may be compressed away

    def option(self) -> Option:
        return Option(IP_COMPRESSION_PROTOCOL,
                      struct.pack("!HBB", PPP_VJC, self.max_slot_id, int(self.comp_slot_id)))

    @staticmethod
    def from_option(data: bytes) -> VjParams | None:
        if len(data) != 4 or data[:2] != struct.pack("!H", PPP_VJC) or data[3] > 1:
            return None
        return VjParams(data[2], bool(data[3]))


@dataclass(frozen=True)
class IpcpConfig:
    address: IPv4Address | None = None  # ours; None: ask 0.0.0.0 to be told
    accept_nak_address: bool = True  # take the peer's address for us over ``address``
    peer_address: IPv4Address | None = None  # the peer's, to hand out or insist on
    request_dns: bool = True  # ask Primary/Secondary-DNS 0.0.0.0 to be told
    dns_servers: tuple[IPv4Address, ...] = ()  # handed to a peer that asks (servers)
    vj: bool = False  # ask for VJ compression, and accept the peer's offer
    vj_max_slot_id: int = 15
    vj_comp_slot_id: bool = True


@dataclass(frozen=True)
class IpcpResult:
    """What IPCP negotiated."""

    address: IPv4Address | None  # ours
    peer_address: IPv4Address | None
    dns: tuple[IPv4Address, ...]  # primary first; servers the peer told us
    vj_tx: VjParams | None  # we may send VJ-compressed packets (the peer asked)
    vj_rx: VjParams | None  # the peer may send them to us (we asked, it acked)


@dataclass(frozen=True)
class IpcpNegotiated(LinkEvent):
    """IPCP reached Opened (again) with this result; follows LayerUp."""

    result: IpcpResult


def _address(data: bytes) -> IPv4Address:
    return IPv4Address(data)


def _address_option(kind: int, address: IPv4Address) -> Option:
    return Option(kind, address.packed)


class Ipcp(Automaton):
    protocol = PPP_IPCP
    name = "IPCP"

    def __init__(self, config: IpcpConfig | None = None, **timers: int) -> None:
        super().__init__(**timers)
        self.config = config or IpcpConfig()
        self.result: IpcpResult | None = None
        self._reset_request()

    def _reset_request(self) -> None:
        c = self.config
        self._want_address: IPv4Address | None = c.address or ZERO
        self._want_dns: dict[int, IPv4Address] = \
            {t: ZERO for t in DNS_OPTIONS} if c.request_dns else {}
        self._want_vj = VjParams(c.vj_max_slot_id, c.vj_comp_slot_id) if c.vj else None

    # --- negotiation ------------------------------------------------------------------

    def our_options(self) -> list[Option]:
        opts: list[Option] = []
        if self._want_vj is not None:
            opts.append(self._want_vj.option())
        if self._want_address is not None:
            opts.append(_address_option(IP_ADDRESS, self._want_address))
        opts.extend(_address_option(t, a) for t, a in self._want_dns.items())
        return opts

    def judge(self, peer: list[Option]) -> Judgement:
        extra: list[Option] = []
        given = self.config.peer_address
        if given is not None and all(o.type != IP_ADDRESS for o in peer):
            extra.append(_address_option(IP_ADDRESS, given))
        return combine(peer, [self._judge_one(o) for o in peer], extra)

    def _judge_one(self, o: Option) -> tuple[Verdict, Option]:
        c = self.config
        if o.type == IP_ADDRESS and len(o.data) == 4:
            asked = _address(o.data)
            if c.peer_address is not None and asked != c.peer_address:
                return Verdict.NAK, _address_option(IP_ADDRESS, c.peer_address)
            if asked == ZERO:
                return Verdict.REJECT, o  # nothing to tell it (module docstring)
            return Verdict.ACK, o
        if o.type == IP_COMPRESSION_PROTOCOL and len(o.data) >= 2 and c.vj:
            if VjParams.from_option(o.data) is not None:
                return Verdict.ACK, o
            return Verdict.NAK, VjParams(c.vj_max_slot_id, c.vj_comp_slot_id).option()
        if o.type in DNS_OPTIONS and len(o.data) == 4:
            index = DNS_OPTIONS.index(o.type)
            if index < len(c.dns_servers):
                server = c.dns_servers[index]
                if _address(o.data) == server:
                    return Verdict.ACK, o
                return Verdict.NAK, _address_option(o.type, server)
        return Verdict.REJECT, o  # NBNS, IP-Addresses, unknown, bad lengths

    def on_nak(self, options: list[Option]) -> None:
        for o in options:
            if o.type == IP_ADDRESS and len(o.data) == 4:
                told = _address(o.data)
                if told != ZERO and (self.config.address is None
                                     or self.config.accept_nak_address):
                    self._want_address = told
            elif o.type in self._want_dns and len(o.data) == 4:
                self._want_dns[o.type] = _address(o.data)
            elif o.type == IP_COMPRESSION_PROTOCOL and self._want_vj is not None:
                offer = VjParams.from_option(o.data)
                self._want_vj = None if offer is None else VjParams(
                    min(offer.max_slot_id, self._want_vj.max_slot_id),
                    offer.comp_slot_id and self._want_vj.comp_slot_id)

    def on_reject(self, options: list[Option]) -> None:
        for o in options:
            if o.type == IP_ADDRESS:
                self._want_address = None
            elif o.type in self._want_dns:
                del self._want_dns[o.type]
            elif o.type == IP_COMPRESSION_PROTOCOL:
                self._want_vj = None

    # --- layer hooks ----------------------------------------------------------------------

    def this_layer_up(self) -> None:
        p, o = self.acked_peer, self.acked_ours
        ours = _address(o[IP_ADDRESS]) if IP_ADDRESS in o else self.config.address
        peers = _address(p[IP_ADDRESS]) if IP_ADDRESS in p else self.config.peer_address
        dns = tuple(_address(o[t]) for t in DNS_OPTIONS if t in o and o[t] != ZERO.packed)
        self.result = IpcpResult(
            address=None if ours == ZERO else ours,
            peer_address=peers,
            dns=dns,
            vj_tx=VjParams.from_option(p[IP_COMPRESSION_PROTOCOL])
            if IP_COMPRESSION_PROTOCOL in p else None,
            vj_rx=VjParams.from_option(o[IP_COMPRESSION_PROTOCOL])
            if IP_COMPRESSION_PROTOCOL in o else None,
        )
        self.events.append(IpcpNegotiated(self.protocol, self.result))

    def this_layer_started(self) -> None:
        self._reset_request()

    def this_layer_finished(self) -> None:
        self._reset_request()


__all__ = [
    "IP_ADDRESS",
    "IP_COMPRESSION_PROTOCOL",
    "PRIMARY_DNS",
    "SECONDARY_DNS",
    "Ipcp",
    "IpcpConfig",
    "IpcpNegotiated",
    "IpcpResult",
    "VjParams",
]

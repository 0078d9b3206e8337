"""One PPP link over an async serial line, sans-I/O (RFC 1661 §3, RFC 1662, RFC 1332).

Bytes read from the line, IP packets to send and the time in milliseconds go
in; bytes to write, received IP packets and events come out. The owner (a
serial device) calls ``receive``/``send_ip``/``poll`` and drains
``take_output``/``take_packets``/``take_events`` after each call, and sleeps
until ``next_deadline()``.

The phases of RFC 1661 §3.2, top to bottom:

- DEAD: nothing flows; ``line_up`` starts a fresh run (new LCP, IPCP, auth).
- ESTABLISH: LCP negotiates. Only LCP packets are taken (§3.3). With
  ``passive`` LCP is opened only when the peer's first LCP packet arrives, so
  we send no Configure-Request before the peer speaks (§4.1 "passive").
- AUTHENTICATE: PAP (RFC 1334) or CHAP-MD5 (RFC 1994), each side as LCP
  negotiated; only LCP and the authentication protocols are taken (§3.5).
  Failure, or no verdict within ``restart_ms * (max_configure + 1)``, closes LCP.
- NETWORK: IPCP negotiates; when Opened, IPv4 flows (VJ-compressed per RFC
  1144 when IPCP agreed). Any other protocol is answered with an LCP
  Protocol-Reject (§5.7).
- TERMINATE: LCP sends or answers Terminate-Request; then DEAD.

Every arrival in DEAD emits ``Terminated`` exactly once; ``LinkDown`` comes
whenever IP stops flowing after a ``LinkUp``. The link keeps LCP and the
framing in step: the framing uses the negotiated ACCM/ACFC/PFC from LCP's
Opened on and the defaults otherwise. FCS-16 only: no FCS-Alternatives are
offered (RFC 1570), so FCS-32 is never negotiated.

Nothing a wire sends raises; everything refused is counted in ``stats``.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from hilkit.drivers.ppp.auth import (
    AuthFailed,
    AuthSucceeded,
    ChapClient,
    ChapServer,
    Credentials,
    PapClient,
    PapServer,
)
from hilkit.drivers.ppp.fsm import Automaton, LayerDown, LayerFinished, LinkEvent, State
from hilkit.drivers.ppp.hdlc import DEFAULT_MRU, FrameDecoder, FrameEncoder
from hilkit.drivers.ppp.ipcp import Ipcp, IpcpConfig, IpcpNegotiated, IpcpResult
from hilkit.drivers.ppp.lcp import (
    AuthProtocol,
    CodeRejected,
    Lcp,
    LcpConfig,
    LcpNegotiated,
    LcpResult,
    LinkDead,
    LoopbackDetected,
    ProtocolRejected,
)
from hilkit.drivers.ppp.proto import (
    NAMES,
    PPP_CHAP,
    PPP_IP,
    PPP_IPCP,
    PPP_LCP,
    PPP_PAP,
    PPP_VJC,
    PPP_VJUC,
)
from hilkit.drivers.ppp.vj import VjCompressor, VjDecompressor

__all__ = [
    "MAX_OUTPUT",
    "MAX_PACKETS",
    "AuthFailedEvent",
    "LinkDown",
    "LinkUp",
    "Phase",
    "PppConfig",
    "PppLink",
    "Terminated",
]

MAX_PACKETS = 256  # received IP packets held until taken; more are dropped (counted)
MAX_OUTPUT = 256 * 1024  # line bytes held until taken before send_ip refuses more
FRAME_OVERHEAD = 8  # address, control, protocol, FCS-32: what a frame adds to the MRU

# Decoder counters that mean a frame was lost or damaged on the line (RFC 1144 §4).
_FRAME_ERRORS = ("bad_fcs", "too_short", "too_long", "aborts", "bad_address_control",
                 "bad_protocol")


@dataclass(frozen=True)
class PppConfig:
    """What one end of the link wants; the defaults suit a client of slirp or pppd."""

    credentials: Credentials | None = None  # answer the peer's PAP/CHAP demand with these
    demand_auth: tuple[AuthProtocol, ...] = ()  # server role: the peer must authenticate
    # server role: name -> secret; kept out of repr, which logs and reports may show
    secrets: Mapping[bytes, bytes] = field(default_factory=dict, repr=False)
    address: str | None = None  # our IPv4; None: ask to be told (0.0.0.0)
    peer_address: str | None = None  # server role: what we give the peer
    dns_servers: tuple[str, ...] = ()  # server role (RFC 1877)
    request_dns: bool = True
    vj: bool = True  # RFC 1144 header compression when the peer agrees
    mru: int = DEFAULT_MRU
    accm: int = 0  # our receive ACCM: what the peer must escape (RFC 1662 §7.1)
    echo_interval_ms: int = 0  # LCP Echo keepalive; 0 = off
    echo_failure: int = 3
    restart_ms: int = 3000  # RFC 1661 §4.6 counters and timer
    max_configure: int = 10
    max_failure: int = 5
    max_terminate: int = 2
    passive: bool = False  # send nothing until the peer's first LCP packet


class Phase(enum.Enum):
    """RFC 1661 §3.2."""

    DEAD = "dead"
    ESTABLISH = "establish"
    AUTHENTICATE = "authenticate"
    NETWORK = "network"
    TERMINATE = "terminate"


@dataclass(frozen=True)
class LinkUp:
    """IPCP opened (again): IP flows with these addresses."""

    result: IpcpResult


@dataclass(frozen=True)
class LinkDown:
    """IP no longer flows."""

    reason: str


@dataclass(frozen=True)
class AuthFailedEvent:
    """Authentication failed either way (``protocol``: PAP or CHAP); LCP is closing.

    Its own class rather than ``auth.AuthFailed``, so that the owner sees only
    link events and never the peer name an authenticator records.
    """

    protocol: int
    message: str


@dataclass(frozen=True)
class Terminated:
    """The link is DEAD again; ``line_up`` starts over."""

    reason: str


AuthSide = PapClient | PapServer | ChapClient | ChapServer


class PppLink:
    """One PPP link: LCP, authentication, IPCP and VJ over HDLC-like framing."""

    def __init__(self, config: PppConfig | None = None, *,
                 rng: random.Random | None = None) -> None:
        self.config = config or PppConfig()
        self.rng = rng
        self.phase = Phase.DEAD
        self.lcp_result: LcpResult | None = None
        self.ipcp_result: IpcpResult | None = None
        self._counts: dict[str, int] = {}
        self._retired: dict[str, int] = {}  # counters of framers and VJ state let go
        self._out = bytearray()
        self._packets: list[bytes] = []
        self._events: list[object] = []
        self._ip_open = False
        self._reason: str | None = None  # why the link is going down, for the next event
        self._lcp_opened_once = False  # passive: LCP opened by the peer's first packet
        self._auth_client: PapClient | ChapClient | None = None
        self._auth_server: PapServer | ChapServer | None = None
        self._auth_pending: set[str] = set()
        self._auth_deadline: int | None = None
        self._vj_tx: VjCompressor | None = None
        self._vj_rx: VjDecompressor | None = None
        self.lcp, self.ipcp = self._new_layers()
        self._encoder, self._decoder = self._new_framers()

    # --- set-up ---------------------------------------------------------------------------

    def _new_layers(self) -> tuple[Lcp, Ipcp]:
        c = self.config
        timers = {"restart_ms": c.restart_ms, "max_terminate": c.max_terminate,
                  "max_configure": c.max_configure, "max_failure": c.max_failure}
        can_auth = (AuthProtocol.CHAP_MD5, AuthProtocol.PAP) if c.credentials else ()
        lcp = Lcp(LcpConfig(mru=c.mru, accm=c.accm, can_authenticate=can_auth,
                            demand_auth=c.demand_auth, echo_interval_ms=c.echo_interval_ms,
                            echo_failure=c.echo_failure), rng=self.rng, **timers)
        ipcp = Ipcp(IpcpConfig(
            address=IPv4Address(c.address) if c.address else None,
            peer_address=IPv4Address(c.peer_address) if c.peer_address else None,
            request_dns=c.request_dns,
            dns_servers=tuple(IPv4Address(d) for d in c.dns_servers),
            vj=c.vj), **timers)
        return lcp, ipcp

    def _new_framers(self) -> tuple[FrameEncoder, FrameDecoder]:
        # The decoder drops only control characters we asked the peer to escape:
        # before LCP opens it escapes all of them, after at least these, so nothing
        # genuine is dropped even when LCP opens in the middle of a received chunk.
        max_frame = max(self.config.mru, DEFAULT_MRU) + FRAME_OVERHEAD
        return FrameEncoder(), FrameDecoder(max_frame, rx_accm=self.config.accm)

    # --- the owner's calls ----------------------------------------------------------------

    @property
    def ip_open(self) -> bool:
        return self._ip_open

    @property
    def output_pending(self) -> int:
        return len(self._out)

    @property
    def stats(self) -> dict[str, int]:
        """Link counters, framing (``hdlc_rx_*``/``hdlc_tx_*``) and VJ (``vj_*``) in one dict."""
        out = dict(self._retired)
        for key, value in self._counts.items():
            out[key] = out.get(key, 0) + value
        for prefix, stats in self._component_stats():
            for key, value in stats.items():
                out[prefix + key] = out.get(prefix + key, 0) + value
        return out

    def line_up(self, now_ms: int) -> None:
        """Carrier / CONNECT: a fresh LCP run (RFC 1661 §3.2 Dead -> Establish)."""
        if self.phase is not Phase.DEAD:
            self._count("line_up_ignored")
            return
        self._retire_framers()
        self.lcp, self.ipcp = self._new_layers()
        self._encoder, self._decoder = self._new_framers()
        self.lcp_result = self.ipcp_result = None
        self._reason = None
        self._lcp_opened_once = not self.config.passive
        self.phase = Phase.ESTABLISH
        self.ipcp.open(now_ms)  # administratively open; it waits for Up in NETWORK
        if self._lcp_opened_once:
            self.lcp.open(now_ms)
        self.lcp.up(now_ms)  # passive: Closed until the peer speaks
        self._run(now_ms)

    def line_down(self, now_ms: int) -> None:
        """Carrier lost: every layer Down, DEAD."""
        if self.phase is Phase.DEAD:
            return
        self._reason = "line down"
        self.lcp.down(now_ms)
        self._run(now_ms)
        self._to_dead("line down")

    def close(self, now_ms: int, reason: str = "closed") -> None:
        """Administrative Close: LCP Terminate-Request; DEAD once answered or timed out."""
        if self.phase is Phase.DEAD:
            return
        self._reason = reason
        self.lcp.close(now_ms)
        self._run(now_ms)
        if self.lcp.state not in (State.CLOSING, State.STOPPING):
            self._to_dead(reason)  # nothing to terminate (passive, not yet opened)

    def receive(self, data: bytes, now_ms: int) -> None:
        """Bytes read from the line, any amount."""
        if self.phase is Phase.DEAD:
            self._count("rx_bytes_dead", len(data))
            return
        stats = self._decoder.stats
        before = sum(stats[k] for k in _FRAME_ERRORS)
        frames = self._decoder.feed(data)
        if sum(stats[k] for k in _FRAME_ERRORS) != before and self._vj_rx is not None:
            # RFC 1144 §4: a frame was lost; toss compressed packets until resynchronised.
            # Before the chunk's good frames, as we cannot tell where the damage was.
            self._vj_rx.frame_error()
        for protocol, info in frames:
            if self._is_dead():
                break  # terminated by an earlier frame of this chunk
            self._frame(protocol, info, now_ms)
            self._run(now_ms)

    def send_ip(self, packet: bytes, now_ms: int) -> bool:
        """Queue one IPv4 packet; False (counted) when IP is not open or it cannot go."""
        if not self._ip_open or not packet:
            self._count("ip_dropped")
            return False
        if len(packet) > self.lcp.peer_mru or len(self._out) > MAX_OUTPUT:
            self._count("ip_dropped")
            return False
        protocol, payload = (self._vj_tx.compress(packet) if self._vj_tx is not None
                             else (PPP_IP, packet))
        self._send_frame(protocol, payload)
        self._count("ip_out")
        return True

    def poll(self, now_ms: int) -> None:
        """Run every layer's timers that are due."""
        if self.phase is Phase.DEAD:
            return
        self.lcp.poll(now_ms)
        self.ipcp.poll(now_ms)
        for side in self._auth_sides():
            side.poll(now_ms)
        if self._auth_deadline is not None and now_ms >= self._auth_deadline:
            self._auth_deadline = None
            protocol = self._auth_protocol()
            self._auth_failed(protocol, "authentication timed out", now_ms)
        self._run(now_ms)

    def next_deadline(self) -> int | None:
        """The earliest timer of every layer (ms, the caller's clock), or None."""
        if self.phase is Phase.DEAD:
            return None
        deadlines = [self.lcp.next_deadline(), self.ipcp.next_deadline(), self._auth_deadline]
        deadlines += [s.next_deadline() for s in self._auth_sides()]
        due = [d for d in deadlines if d is not None]
        return min(due) if due else None

    def take_output(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def take_packets(self) -> list[bytes]:
        packets, self._packets = self._packets, []
        return packets

    def take_events(self) -> list[object]:
        events, self._events = self._events, []
        return events

    # --- receive: one good frame ----------------------------------------------------------

    def _frame(self, protocol: int, info: bytes, now_ms: int) -> None:
        self._count("rx_" + NAMES.get(protocol, "other"))
        if protocol == PPP_LCP:
            if not self._lcp_opened_once:  # passive: the peer spoke first
                self._lcp_opened_once = True
                self.lcp.open(now_ms)
            self.lcp.receive(info, now_ms)
        elif self.lcp.state is not State.OPENED:
            self._count("rx_before_lcp")  # RFC 1661 §3.3: only LCP until Opened
        elif protocol in (PPP_PAP, PPP_CHAP):
            self._auth_packet(protocol, info, now_ms)
        elif self.phase is not Phase.NETWORK:
            self._count("rx_before_network")  # RFC 1661 §3.4, §3.5
        elif protocol == PPP_IPCP:
            self.ipcp.receive(info, now_ms)
        elif protocol in (PPP_IP, PPP_VJC, PPP_VJUC):
            self._ip_packet(protocol, info)
        else:
            self._protocol_reject(protocol, info)

    def _auth_packet(self, protocol: int, info: bytes, now_ms: int) -> None:
        sides = [s for s in self._auth_sides() if s.protocol == protocol]
        if not sides or self.phase not in (Phase.AUTHENTICATE, Phase.NETWORK):
            self._count("rx_auth_unexpected")  # not negotiated: dropped
            return
        for side in sides:  # each ignores the codes of the other role
            side.receive(info, now_ms)

    def _ip_packet(self, protocol: int, info: bytes) -> None:
        if not self._ip_open:
            self._count("ip_dropped_closed")  # RFC 1661 §3.4: NCP not Opened
            return
        packet: bytes | None = info
        if protocol != PPP_IP:
            if self._vj_rx is None:
                self._count("vj_unexpected")
                return
            vj = self._vj_rx
            packet = vj.uncompressed(info) if protocol == PPP_VJUC else vj.compressed(info)
        if packet is None:
            self._count("ip_dropped_vj")
            return
        if len(self._packets) >= MAX_PACKETS:
            self._count("ip_dropped_queue_full")
            return
        self._packets.append(packet)
        self._count("ip_in")

    def _protocol_reject(self, protocol: int, info: bytes) -> None:
        self._count("unknown_protocols")
        if self.lcp.protocol_reject(protocol, info) is not None:
            self._count("protocol_rejects_sent")

    # --- layer outputs and events ---------------------------------------------------------

    def _run(self, now_ms: int) -> None:
        """Move every layer's packets to the line and act on its events until quiet."""
        for _ in range(64):  # each round settles one layer change; a handful suffice
            busy = False
            layers: list[Automaton | AuthSide] = [self.lcp, *self._auth_sides(), self.ipcp]
            for layer in layers:
                packets, events = layer.take()
                for raw in packets:
                    self._send_frame(layer.protocol, raw)
                for event in events:
                    busy = True
                    if isinstance(event, AuthSucceeded):
                        self._auth_succeeded(layer, now_ms)
                    else:
                        self._on_event(event, now_ms)
            if not busy:
                return
        self._count("event_rounds_exceeded")

    def _on_event(self, event: LinkEvent, now_ms: int) -> None:
        if isinstance(event, LcpNegotiated):
            self._lcp_up(event.result, now_ms)
        elif isinstance(event, LayerDown) and event.protocol == PPP_LCP:
            self._lcp_down()
        elif isinstance(event, LayerFinished) and event.protocol == PPP_LCP:
            self._to_dead(self._reason or "LCP finished")
        elif isinstance(event, LinkDead):
            self._close_lcp(f"peer did not answer {event.missed} LCP echo requests", now_ms)
        elif isinstance(event, LoopbackDetected):
            self._reason = "loopback detected"  # LCP closes itself
        elif isinstance(event, ProtocolRejected):
            self._rejected(event.rejected, now_ms)
        elif isinstance(event, CodeRejected):
            self._count("code_rejects_received")
        elif isinstance(event, IpcpNegotiated):
            self._ip_up(event.result)
        elif isinstance(event, LayerDown) and event.protocol == PPP_IPCP:
            self._ip_down("peer closed IPCP" if self.ipcp.state is State.STOPPING
                          else "IPCP renegotiation")
        elif isinstance(event, LayerFinished) and event.protocol == PPP_IPCP:
            # No network protocol left: the link has no use (RFC 1661 §3.4).
            self._close_lcp("IPCP failed", now_ms)
        elif isinstance(event, AuthFailed):
            self._auth_failed(event.protocol, event.message, now_ms)

    def _lcp_up(self, result: LcpResult, now_ms: int) -> None:
        self.lcp_result = result
        e = self._encoder
        e.tx_accm, e.acfc, e.pfc = result.tx_accm, result.tx_acfc, result.tx_pfc
        self._decoder.rx_accm = result.rx_accm
        self.ipcp.peer_mru = result.peer_mru
        self._auth_client = self._auth_server = None
        self._auth_pending = set()
        c = self.config
        if result.peer_auth is not None:
            if c.credentials is None:
                self._auth_failed(result.peer_auth.protocol,
                                  "peer demands authentication; no credentials", now_ms)
                return
            self._auth_pending.add("client")
            if result.peer_auth is AuthProtocol.PAP:
                pap = PapClient(c.credentials, restart_ms=c.restart_ms,
                                max_requests=c.max_configure)
                pap.start(now_ms)
                self._auth_client = pap
            else:
                self._auth_client = ChapClient(c.credentials, restart_ms=c.restart_ms,
                                               max_requests=c.max_configure)
        if result.our_auth is not None:
            self._auth_pending.add("server")
            if result.our_auth is AuthProtocol.PAP:
                self._auth_server = PapServer(c.secrets)
            else:
                chap = ChapServer(c.secrets, rng=self.rng, restart_ms=c.restart_ms,
                                  max_requests=c.max_configure)
                chap.challenge(now_ms)
                self._auth_server = chap
        if self._auth_pending:
            self.phase = Phase.AUTHENTICATE
            self._auth_deadline = now_ms + c.restart_ms * (c.max_configure + 1)
        else:
            self._network(now_ms)

    def _lcp_down(self) -> None:
        """LCP left Opened: renegotiating (ESTABLISH) or terminating (TERMINATE)."""
        terminating = self.lcp.state in (State.CLOSING, State.STOPPING)
        reason = self._reason or ("peer terminated the link" if terminating
                                  else "LCP renegotiation")
        self._ip_down(reason)
        self.ipcp.down(self.lcp.now_ms)
        self._auth_client = self._auth_server = None
        self._auth_pending = set()
        self._auth_deadline = None
        # Back to the default framing until LCP opens again; the decoder keeps the frame
        # in progress and drops only what we asked the peer to escape (see _new_framers).
        self._retire_framers()
        self._encoder = FrameEncoder()
        self._decoder.rx_accm = self.config.accm
        self.lcp_result = None
        self.phase = Phase.TERMINATE if terminating else Phase.ESTABLISH

    def _close_lcp(self, reason: str, now_ms: int) -> None:
        self._reason = reason
        self.lcp.close(now_ms)

    def _rejected(self, protocol: int, now_ms: int) -> None:
        """RFC 1661 §5.7: stop sending what the peer Protocol-Rejected."""
        self._count("protocol_rejects_received")
        if protocol in (PPP_VJC, PPP_VJUC):
            self._retire_vj(tx=True, rx=False)  # the peer cannot take VJ: send plain IP
        elif protocol in (PPP_IPCP, PPP_IP):
            self._ip_down(f"peer rejected {NAMES[protocol]}")
            self.ipcp.down(now_ms)

    def _network(self, now_ms: int) -> None:
        self.phase = Phase.NETWORK
        self._auth_deadline = None
        self.ipcp.up(now_ms)

    def _ip_up(self, result: IpcpResult) -> None:
        if self._ip_open:
            self._ip_down("IPCP renegotiation")
        self._retire_vj(tx=True, rx=True)
        if result.vj_tx is not None:
            self._vj_tx = VjCompressor(result.vj_tx.max_slot_id + 1, result.vj_tx.comp_slot_id)
        if result.vj_rx is not None:
            self._vj_rx = VjDecompressor(result.vj_rx.max_slot_id + 1)
        self.ipcp_result = result
        self._ip_open = True
        self._events.append(LinkUp(result))

    def _ip_down(self, reason: str) -> None:
        if not self._ip_open:
            return
        self._ip_open = False
        self._retire_vj(tx=True, rx=True)
        self._events.append(LinkDown(reason))

    def _is_dead(self) -> bool:
        return self.phase is Phase.DEAD

    def _to_dead(self, reason: str) -> None:
        if self.phase is Phase.DEAD:
            return
        self._ip_down(reason)
        self._auth_client = self._auth_server = None
        self._auth_pending = set()
        self._auth_deadline = None
        self.phase = Phase.DEAD
        self._events.append(Terminated(reason))

    # --- authentication -------------------------------------------------------------------

    def _auth_sides(self) -> list[AuthSide]:
        return [s for s in (self._auth_client, self._auth_server) if s is not None]

    def _auth_protocol(self) -> int:
        sides = self._auth_sides()
        return sides[0].protocol if sides else PPP_PAP

    def _auth_succeeded(self, side: object, now_ms: int) -> None:
        self._auth_pending.discard("server" if side is self._auth_server else "client")
        if not self._auth_pending and self.phase is Phase.AUTHENTICATE:
            self._network(now_ms)

    def _auth_failed(self, protocol: int, message: str, now_ms: int) -> None:
        self._events.append(AuthFailedEvent(protocol, message))
        self._auth_deadline = None
        self._close_lcp(f"authentication failed: {message}", now_ms)

    # --- transmit and counters ------------------------------------------------------------

    def _send_frame(self, protocol: int, info: bytes) -> None:
        frame = self._encoder.encode(protocol, info)
        self._out += frame
        self._count("tx_" + NAMES.get(protocol, "other"))
        self._count("output_bytes", len(frame))

    def _count(self, key: str, n: int = 1) -> None:
        self._counts[key] = self._counts.get(key, 0) + n

    def _component_stats(self) -> list[tuple[str, dict[str, int]]]:
        parts = [("hdlc_rx_", self._decoder.stats), ("hdlc_tx_", self._encoder.stats)]
        if self._vj_tx is not None:
            parts.append(("vj_tx_", self._vj_tx.stats))
        if self._vj_rx is not None:
            parts.append(("vj_rx_", self._vj_rx.stats))
        return parts

    def _retire(self, prefix: str, stats: dict[str, int]) -> None:
        for key, value in stats.items():
            self._retired[prefix + key] = self._retired.get(prefix + key, 0) + value

    def _retire_framers(self) -> None:
        self._retire("hdlc_tx_", self._encoder.stats)
        if self.phase is Phase.DEAD:
            self._retire("hdlc_rx_", self._decoder.stats)

    def _retire_vj(self, *, tx: bool, rx: bool) -> None:
        if tx and self._vj_tx is not None:
            self._retire("vj_tx_", self._vj_tx.stats)
            self._vj_tx = None
        if rx and self._vj_rx is not None:
            self._retire("vj_rx_", self._vj_rx.stats)
            self._vj_rx = None

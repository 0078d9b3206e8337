"""LCP, the Link Control Protocol (RFC 1661 §5, §6), on the shared automaton.

Options are requested for the requester's *receive* direction: the peer's MRU,
ACCM, PFC and ACFC tell us how to send; ours tell the peer. ``LcpResult``
says both, named from our side (``tx_*``: what we send, ``rx_*``: what we get).

Beyond negotiation LCP keeps the link: Echo-Request keepalive (``LinkDead``
after ``echo_failure`` unanswered), Echo-Reply, Discard-Request, Code-Reject
and Protocol-Reject both ways, and Magic-Number loop detection (§6.4).
"""

from __future__ import annotations

import enum
import random
import struct
from dataclasses import dataclass

from hilkit.drivers.ppp.fsm import (
    CODE_REJECT,
    DEFAULT_MRU,
    HEADER_LEN,
    Automaton,
    Event,
    Judgement,
    LinkEvent,
    Option,
    Packet,
    State,
    Verdict,
    combine,
)
from hilkit.drivers.ppp.proto import PPP_CHAP, PPP_LCP, PPP_PAP

# LCP codes beyond the common seven (RFC 1661 §5.7-§5.9, RFC 1570 §2, §3).
PROTOCOL_REJECT = 8  # RFC 1661 §5.7
ECHO_REQUEST = 9  # RFC 1661 §5.8
ECHO_REPLY = 10  # RFC 1661 §5.8
DISCARD_REQUEST = 11  # RFC 1661 §5.9
IDENTIFICATION = 12  # RFC 1570 §2
TIME_REMAINING = 13  # RFC 1570 §3

# Option types (RFC 1661 §6, RFC 1662 §7.1, RFC 1570 §2).
MRU = 1  # Maximum-Receive-Unit, RFC 1661 §6.1
ACCM = 2  # Async-Control-Character-Map, RFC 1662 §7.1
AUTHENTICATION_PROTOCOL = 3  # RFC 1661 §6.2
QUALITY_PROTOCOL = 4  # RFC 1661 §6.3
MAGIC_NUMBER = 5  # RFC 1661 §6.4
PROTOCOL_FIELD_COMPRESSION = 7  # RFC 1661 §6.5
ADDRESS_AND_CONTROL_FIELD_COMPRESSION = 8  # RFC 1661 §6.6
FCS_ALTERNATIVES = 9  # RFC 1570 §2.1

CHAP_MD5 = 5  # CHAP Algorithm: MD5 (RFC 1994 §3)
DEFAULT_ACCM = 0xFFFFFFFF  # RFC 1662 §7.1: escape every control character
MIN_MRU = 128  # ours: below this a Configure-Request with options no longer fits


class AuthProtocol(enum.Enum):
    """What the Authentication-Protocol option names (RFC 1661 §6.2)."""

    PAP = "pap"  # RFC 1334
    CHAP_MD5 = "chap-md5"  # RFC 1994, algorithm 5

    def option(self) -> Option:
        if self is AuthProtocol.PAP:
            return Option(AUTHENTICATION_PROTOCOL, struct.pack("!H", PPP_PAP))
        return Option(AUTHENTICATION_PROTOCOL, struct.pack("!HB", PPP_CHAP, CHAP_MD5))

    @property
    def protocol(self) -> int:
        return PPP_PAP if self is AuthProtocol.PAP else PPP_CHAP

    @staticmethod
    def from_option(data: bytes) -> AuthProtocol | None:
        if data == struct.pack("!H", PPP_PAP):
            return AuthProtocol.PAP
        if data == struct.pack("!HB", PPP_CHAP, CHAP_MD5):
            return AuthProtocol.CHAP_MD5
        return None


@dataclass(frozen=True)
class LcpConfig:
    mru: int = DEFAULT_MRU  # our MRU; asked for only when not the default
    accm: int | None = 0  # our receive ACCM; 0 on a clean line, None: don't ask
    magic: bool = True  # ask for a Magic-Number (loop detection, echo)
    pfc: bool = True  # ask for PFC, and grant it to the peer
    acfc: bool = True  # ask for ACFC, and grant it to the peer
    # As the authenticatee: which protocols we can answer (empty: no credentials,
    # the peer's demand is rejected), in order of preference for a Nak.
    can_authenticate: tuple[AuthProtocol, ...] = ()
    # As the authenticator: the protocol we demand of the peer, in order of
    # preference if the peer Naks.
    demand_auth: tuple[AuthProtocol, ...] = ()
    fcs_alternatives: int = 0  # RFC 1570 bits we support; 0: reject the option
    max_loopback: int = 5  # own magic seen this many times in a row: looped back
    echo_interval_ms: int = 0  # 0: no keepalive
    echo_failure: int = 3  # unanswered Echo-Requests before LinkDead


@dataclass(frozen=True)
class LcpResult:
    """What LCP negotiated, named from our side."""

    mru: int  # what we receive at most (our acked MRU)
    peer_mru: int  # what we send at most
    tx_accm: int  # the peer's receive ACCM: what WE must escape
    rx_accm: int  # ours: what the peer escapes for us
    tx_pfc: bool  # we may compress the protocol field
    rx_pfc: bool  # the peer may
    tx_acfc: bool
    rx_acfc: bool
    peer_auth: AuthProtocol | None  # what the peer demands of us
    our_auth: AuthProtocol | None  # what we demand of the peer
    magic: int  # ours, 0 if none
    peer_magic: int
    fcs_alternatives: int | None  # the peer's FCS-Alternatives, if acked


@dataclass(frozen=True)
class LcpNegotiated(LinkEvent):
    """LCP reached Opened (again) with this result; follows LayerUp."""

    result: LcpResult


@dataclass(frozen=True)
class LinkDead(LinkEvent):
    """Echo keepalive: ``missed`` Echo-Requests went unanswered."""

    missed: int


@dataclass(frozen=True)
class LoopbackDetected(LinkEvent):
    """Our own Magic-Number came back ``count`` times in a row (RFC 1661 §6.4)."""

    count: int


@dataclass(frozen=True)
class ProtocolRejected(LinkEvent):
    """The peer Protocol-Rejected ``rejected``: stop that protocol (RFC 1661 §5.7)."""

    rejected: int


@dataclass(frozen=True)
class CodeRejected(LinkEvent):
    """The peer Code-Rejected one of our codes."""

    code: int


def _u16(data: bytes) -> int:
    return int(struct.unpack("!H", data)[0])


def _u32(data: bytes) -> int:
    return int(struct.unpack("!I", data)[0])


class Lcp(Automaton):
    protocol = PPP_LCP
    name = "LCP"

    def __init__(self, config: LcpConfig | None = None, *, rng: random.Random | None = None,
                 **timers: int) -> None:
        super().__init__(**timers)
        self.config = config or LcpConfig()
        self.rng = rng or random.Random()
        self.result: LcpResult | None = None
        self.loop_count = 0
        self.echo_missed = 0
        self._echo_deadline: int | None = None
        self._echo_enabled = True
        self._close_pending = False
        self._reset_request()

    def _reset_request(self) -> None:
        c = self.config
        self._want_mru: int | None = c.mru if c.mru != DEFAULT_MRU else None
        self._want_accm = c.accm
        self._magic = self._new_magic() if c.magic else 0
        self._want_pfc, self._want_acfc = c.pfc, c.acfc
        self._want_auth = c.demand_auth[0] if c.demand_auth else None

    def _new_magic(self) -> int:
        return self.rng.randrange(1, 1 << 32)

    # --- negotiation ------------------------------------------------------------------

    def our_options(self) -> list[Option]:
        opts: list[Option] = []
        if self._want_mru is not None:
            opts.append(Option(MRU, struct.pack("!H", self._want_mru)))
        if self._want_accm is not None:
            opts.append(Option(ACCM, struct.pack("!I", self._want_accm)))
        if self._want_auth is not None:
            opts.append(self._want_auth.option())
        if self._magic:
            opts.append(Option(MAGIC_NUMBER, struct.pack("!I", self._magic)))
        if self._want_pfc:
            opts.append(Option(PROTOCOL_FIELD_COMPRESSION))
        if self._want_acfc:
            opts.append(Option(ADDRESS_AND_CONTROL_FIELD_COMPRESSION))
        return opts

    def judge(self, peer: list[Option]) -> Judgement:
        return combine(peer, [self._judge_one(o) for o in peer])

    def _judge_one(self, o: Option) -> tuple[Verdict, Option]:
        c, t, n = self.config, o.type, len(o.data)
        if t == MRU and n == 2:
            if _u16(o.data) < MIN_MRU:
                return Verdict.NAK, Option(MRU, struct.pack("!H", MIN_MRU))
            return Verdict.ACK, o
        if t == ACCM and n == 4:
            return Verdict.ACK, o
        if t == AUTHENTICATION_PROTOCOL and n >= 2 and c.can_authenticate:
            if AuthProtocol.from_option(o.data) in c.can_authenticate:
                return Verdict.ACK, o
            return Verdict.NAK, c.can_authenticate[0].option()  # one we can do (§6.2)
        if t == MAGIC_NUMBER and n == 4:
            magic = _u32(o.data)
            if magic == 0 or (self._magic and magic == self._magic):
                # §6.4: our own number came back (or none): maybe looped. Nak with
                # another number, and choose a new one for ourselves.
                if magic:
                    self._count_loop()
                return Verdict.NAK, Option(MAGIC_NUMBER, struct.pack("!I", self._new_magic()))
            return Verdict.ACK, o
        if t == PROTOCOL_FIELD_COMPRESSION and n == 0 and c.pfc:
            return Verdict.ACK, o
        if t == ADDRESS_AND_CONTROL_FIELD_COMPRESSION and n == 0 and c.acfc:
            return Verdict.ACK, o
        if t == FCS_ALTERNATIVES and n == 1 and o.data[0] and \
                o.data[0] & ~c.fcs_alternatives == 0:
            return Verdict.ACK, o
        return Verdict.REJECT, o  # unknown, unwanted, or a bad length

    def _count_loop(self) -> None:
        if self.state is State.OPENED:
            return  # a renegotiation's first request, judged in Opened: not a loop sign
        self._magic = self._new_magic()
        self.loop_count += 1
        if self.loop_count >= self.config.max_loopback:
            self.events.append(LoopbackDetected(self.protocol, self.loop_count))
            self._close_pending = True

    def on_nak(self, options: list[Option]) -> None:
        for o in options:
            if o.type == MRU and len(o.data) == 2:
                mru = _u16(o.data)
                self._want_mru = mru if MIN_MRU <= mru <= self.config.mru else None
            elif o.type == ACCM and len(o.data) == 4 and self._want_accm is not None:
                self._want_accm |= _u32(o.data)  # the peer needs more escaped
            elif o.type == MAGIC_NUMBER and self._magic:
                self._magic = self._new_magic()  # §6.4: MUST choose another
            elif o.type == AUTHENTICATION_PROTOCOL and self._want_auth is not None:
                suggested = AuthProtocol.from_option(o.data)
                if suggested in self.config.demand_auth:
                    self._want_auth = suggested

    def on_reject(self, options: list[Option]) -> None:
        for o in options:
            if o.type == MRU:
                self._want_mru = None
            elif o.type == ACCM:
                self._want_accm = None
            elif o.type == MAGIC_NUMBER:
                self._magic = 0
            elif o.type == PROTOCOL_FIELD_COMPRESSION:
                self._want_pfc = False
            elif o.type == ADDRESS_AND_CONTROL_FIELD_COMPRESSION:
                self._want_acfc = False
            elif o.type == AUTHENTICATION_PROTOCOL:
                # The peer will not authenticate: a link we demanded it of must not open.
                self._want_auth = None
                self._close_pending = True

    # --- layer hooks ----------------------------------------------------------------------

    def this_layer_up(self) -> None:
        p, o = self.acked_peer, self.acked_ours
        fcs = p.get(FCS_ALTERNATIVES)
        self.result = LcpResult(
            mru=_u16(o[MRU]) if MRU in o else DEFAULT_MRU,
            peer_mru=_u16(p[MRU]) if MRU in p else DEFAULT_MRU,
            tx_accm=_u32(p[ACCM]) if ACCM in p else DEFAULT_ACCM,
            rx_accm=_u32(o[ACCM]) if ACCM in o else DEFAULT_ACCM,
            tx_pfc=PROTOCOL_FIELD_COMPRESSION in p,
            rx_pfc=PROTOCOL_FIELD_COMPRESSION in o,
            tx_acfc=ADDRESS_AND_CONTROL_FIELD_COMPRESSION in p,
            rx_acfc=ADDRESS_AND_CONTROL_FIELD_COMPRESSION in o,
            peer_auth=AuthProtocol.from_option(p[AUTHENTICATION_PROTOCOL])
            if AUTHENTICATION_PROTOCOL in p else None,
            our_auth=AuthProtocol.from_option(o[AUTHENTICATION_PROTOCOL])
            if AUTHENTICATION_PROTOCOL in o else None,
            magic=_u32(o[MAGIC_NUMBER]) if MAGIC_NUMBER in o else 0,
            peer_magic=_u32(p[MAGIC_NUMBER]) if MAGIC_NUMBER in p else 0,
            fcs_alternatives=fcs[0] if fcs else None,
        )
        self.peer_mru = self.result.peer_mru
        self.loop_count = 0
        self.echo_missed = 0
        self._echo_enabled = True
        self._arm_echo()
        self.events.append(LcpNegotiated(self.protocol, self.result))

    def this_layer_down(self) -> None:
        self._echo_deadline = None
        self.peer_mru = DEFAULT_MRU

    def this_layer_started(self) -> None:
        self._reset_request()

    def this_layer_finished(self) -> None:
        self._reset_request()

    # --- the owner's calls ----------------------------------------------------------------

    def receive(self, raw: bytes, now_ms: int) -> None:
        super().receive(raw, now_ms)
        if self._close_pending:
            self._close_pending = False
            self.close(now_ms)

    def next_deadline(self) -> int | None:
        deadlines = [d for d in (super().next_deadline(), self._echo_deadline) if d is not None]
        return min(deadlines) if deadlines else None

    def poll(self, now_ms: int) -> None:
        super().poll(now_ms)
        if self._echo_deadline is not None and now_ms >= self._echo_deadline:
            self._keepalive()

    def protocol_reject(self, protocol: int, info: bytes) -> bytes | None:
        """An LCP Protocol-Reject for a frame of unknown ``protocol`` (RFC 1661 §5.7).

        Returns the packet (also queued in ``send``), cut to the peer's MRU; None
        outside Opened, where the RFC says unknown protocols are silently dropped.
        """
        if self.state is not State.OPENED:
            return None
        data = struct.pack("!H", protocol & 0xFFFF) + info
        return self.emit(PROTOCOL_REJECT, self.new_id(), data, truncate=True)

    def echo_request(self, data: bytes = b"") -> bytes | None:
        """Send one Echo-Request now (Opened only); keepalive calls this too."""
        if self.state is not State.OPENED:
            return None
        return self.emit(ECHO_REQUEST, self.new_id(), struct.pack("!I", self._our_magic()) + data)

    # --- keepalive and the codes beyond seven ---------------------------------------------

    def _our_magic(self) -> int:
        return self.result.magic if self.result and self.state is State.OPENED else 0

    def _arm_echo(self) -> None:
        interval = self.config.echo_interval_ms
        on = interval > 0 and self._echo_enabled and self.state is not State.INITIAL
        self._echo_deadline = self.now_ms + interval if on else None

    def _keepalive(self) -> None:
        if self.state is not State.OPENED:
            self._echo_deadline = None
            return
        if self.echo_missed >= self.config.echo_failure:
            self._echo_deadline = None
            self.events.append(LinkDead(self.protocol, self.echo_missed))
            return
        self.echo_missed += 1
        self.echo_request()
        self._arm_echo()

    def send_echo_reply(self, packet: Packet) -> None:
        if packet.code == ECHO_REQUEST:
            self.emit(ECHO_REPLY, packet.ident, struct.pack("!I", self._our_magic())
                      + packet.data[4:])

    def is_catastrophic(self, code: int) -> bool:
        # §5.6: rejecting Configure-*, Terminate-* or Code-Reject ends the link; the
        # rest (Echo, Discard, Identification ...) is optional.
        return 1 <= code <= PROTOCOL_REJECT

    def receive_extra(self, packet: Packet) -> Event | None:
        code = packet.code
        if code == PROTOCOL_REJECT:
            if len(packet.data) < 2:
                self.stats.rx_malformed += 1
                return None
            rejected = _u16(packet.data[:2])
            if rejected == PPP_LCP:
                return Event.RXJ_MINUS
            if self.state is State.OPENED:
                self.events.append(ProtocolRejected(self.protocol, rejected))
            return Event.RXJ_PLUS
        if code in (ECHO_REQUEST, ECHO_REPLY, DISCARD_REQUEST, IDENTIFICATION, TIME_REMAINING):
            if len(packet.data) < 4:
                self.stats.rx_malformed += 1  # each carries a Magic-Number
                return None
            magic = _u32(packet.data[:4])
            if self.state is State.OPENED and magic and magic == self._our_magic():
                self.stats.rx_malformed += 1  # our own packet looped back (§6.4)
                return None
            if code == ECHO_REPLY:
                self.echo_missed = 0
            return Event.RXR
        return super().receive_extra(packet)

    def _classify(self, packet: Packet) -> Event | None:
        event = super()._classify(packet)
        if event is Event.RXJ_PLUS and packet.code == CODE_REJECT and packet.data:
            rejected = packet.data[0]
            if rejected == ECHO_REQUEST:
                self._echo_enabled = False  # the peer cannot echo: no keepalive
                self._echo_deadline = None
            self.events.append(CodeRejected(self.protocol, rejected))
        return event


__all__ = [
    "ACCM",
    "ADDRESS_AND_CONTROL_FIELD_COMPRESSION",
    "AUTHENTICATION_PROTOCOL",
    "DEFAULT_ACCM",
    "FCS_ALTERNATIVES",
    "HEADER_LEN",
    "MAGIC_NUMBER",
    "MRU",
    "PROTOCOL_FIELD_COMPRESSION",
    "AuthProtocol",
    "CodeRejected",
    "Lcp",
    "LcpConfig",
    "LcpNegotiated",
    "LcpResult",
    "LinkDead",
    "LoopbackDetected",
    "ProtocolRejected",
]

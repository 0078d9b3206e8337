"""The RFC 1661 §4 option negotiation automaton, shared by LCP and the NCPs.

Sans-I/O: control packets (bytes, without the PPP protocol field) and the time
in milliseconds go in; control packets to send collect in ``send`` (the owner
frames them under ``protocol``) and layer events in ``events``. The owner calls
``poll(now_ms)`` by ``next_deadline()`` for the restart timer.

The state transition table is ``RFC1661_TABLE``: the RFC's §4.1 table copied
row by row, as strings, so it can be checked cell by cell against the RFC.
``step(event)`` looks the cell up and runs its actions in order.

What a protocol asks for and how it judges the peer's options lives in a
subclass: ``our_options``, ``judge``, ``on_ack``/``on_nak``/``on_reject``,
``peer_acked`` and the ``this_layer_*`` hooks. Code numbers beyond 7 (LCP's
Protocol-Reject, Echo, Discard) go to ``receive_extra``.

Everything a wire may send is counted and dropped when malformed; nothing
raises out of ``receive`` or ``poll``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import NamedTuple

# Packet codes common to LCP and the NCPs (RFC 1661 §5).
CONFIGURE_REQUEST = 1  # RFC 1661 §5.1
CONFIGURE_ACK = 2  # RFC 1661 §5.2
CONFIGURE_NAK = 3  # RFC 1661 §5.3
CONFIGURE_REJECT = 4  # RFC 1661 §5.4
TERMINATE_REQUEST = 5  # RFC 1661 §5.5
TERMINATE_ACK = 6  # RFC 1661 §5.5
CODE_REJECT = 7  # RFC 1661 §5.6

HEADER_LEN = 4  # Code, Identifier, Length (RFC 1661 §5)
DEFAULT_MRU = 1500  # RFC 1661 §6.1

# Counters and timer defaults (RFC 1661 §4.6).
RESTART_MS = 3000  # Restart timer: 3 seconds
MAX_TERMINATE = 2  # Max-Terminate
MAX_CONFIGURE = 10  # Max-Configure
MAX_FAILURE = 5  # Max-Failure


class State(enum.IntEnum):
    """The ten states of RFC 1661 §4.2, numbered as the RFC numbers them."""

    INITIAL = 0
    STARTING = 1
    CLOSED = 2
    STOPPED = 3
    CLOSING = 4
    STOPPING = 5
    REQ_SENT = 6
    ACK_RCVD = 7
    ACK_SENT = 8
    OPENED = 9


class Event(enum.Enum):
    """The events of RFC 1661 §4.3, valued by their names in the table."""

    UP = "Up"
    DOWN = "Down"
    OPEN = "Open"
    CLOSE = "Close"
    TO_PLUS = "TO+"
    TO_MINUS = "TO-"
    RCR_PLUS = "RCR+"
    RCR_MINUS = "RCR-"
    RCA = "RCA"
    RCN = "RCN"
    RTR = "RTR"
    RTA = "RTA"
    RUC = "RUC"
    RXJ_PLUS = "RXJ+"
    RXJ_MINUS = "RXJ-"
    RXR = "RXR"


class Action(enum.Enum):
    """The actions of RFC 1661 §4.4, valued by their abbreviations in the table."""

    TLU = "tlu"  # This-Layer-Up
    TLD = "tld"  # This-Layer-Down
    TLS = "tls"  # This-Layer-Started
    TLF = "tlf"  # This-Layer-Finished
    IRC = "irc"  # Initialize-Restart-Count
    ZRC = "zrc"  # Zero-Restart-Count
    SCR = "scr"  # Send-Configure-Request
    SCA = "sca"  # Send-Configure-Ack
    SCN = "scn"  # Send-Configure-Nak/Rej
    STR = "str"  # Send-Terminate-Request
    STA = "sta"  # Send-Terminate-Ack
    SCJ = "scj"  # Send-Code-Reject
    SER = "ser"  # Send-Echo-Reply


# RFC 1661 §4.1, the state transition table, in the RFC's two halves.
# A cell is "actions/next-state"; "-" is a transition that cannot happen (ignored).
# Letters after the state are the RFC's footnotes: r = restart option (not taken:
# the owner may call down() and up()), p = passive option (Stopped waits for the
# peer, which is what tlf/3 does), x = crossed connection.
_STATES_0_TO_5 = (State.INITIAL, State.STARTING, State.CLOSED, State.STOPPED,
                  State.CLOSING, State.STOPPING)
_TABLE_0_TO_5: dict[Event, tuple[str, str, str, str, str, str]] = {
    #                 0 Initial 1 Starting   2 Closed     3 Stopped        4 Closing  5 Stopping
    Event.UP:        ("2",     "irc,scr/6", "-",         "-",             "-",       "-"),
    Event.DOWN:      ("-",     "-",         "0",         "tls/1",         "0",       "1"),
    Event.OPEN:      ("tls/1", "1",         "irc,scr/6", "3r",            "5r",      "5r"),
    Event.CLOSE:     ("0",     "tlf/0",     "2",         "2",             "4",       "4"),
    Event.TO_PLUS:   ("-",     "-",         "-",         "-",             "str/4",   "str/5"),
    Event.TO_MINUS:  ("-",     "-",         "-",         "-",             "tlf/2",   "tlf/3"),
    Event.RCR_PLUS:  ("-",     "-",         "sta/2",     "irc,scr,sca/8", "4",       "5"),
    Event.RCR_MINUS: ("-",     "-",         "sta/2",     "irc,scr,scn/6", "4",       "5"),
    Event.RCA:       ("-",     "-",         "sta/2",     "sta/3",         "4",       "5"),
    Event.RCN:       ("-",     "-",         "sta/2",     "sta/3",         "4",       "5"),
    Event.RTR:       ("-",     "-",         "sta/2",     "sta/3",         "sta/4",   "sta/5"),
    Event.RTA:       ("-",     "-",         "2",         "3",             "tlf/2",   "tlf/3"),
    Event.RUC:       ("-",     "-",         "scj/2",     "scj/3",         "scj/4",   "scj/5"),
    Event.RXJ_PLUS:  ("-",     "-",         "2",         "3",             "4",       "5"),
    Event.RXJ_MINUS: ("-",     "-",         "tlf/2",     "tlf/3",         "tlf/2",   "tlf/3"),
    Event.RXR:       ("-",     "-",         "2",         "3",             "4",       "5"),
}
_STATES_6_TO_9 = (State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT, State.OPENED)
_TABLE_6_TO_9: dict[Event, tuple[str, str, str, str]] = {
    #                 6 Req-Sent   7 Ack-Rcvd   8 Ack-Sent   9 Opened
    Event.UP:        ("-",         "-",         "-",         "-"),
    Event.DOWN:      ("1",         "1",         "1",         "tld/1"),
    Event.OPEN:      ("6",         "7",         "8",         "9r"),
    Event.CLOSE:     ("irc,str/4", "irc,str/4", "irc,str/4", "tld,irc,str/4"),
    Event.TO_PLUS:   ("scr/6",     "scr/6",     "scr/8",     "-"),
    Event.TO_MINUS:  ("tlf/3p",    "tlf/3p",    "tlf/3p",    "-"),
    Event.RCR_PLUS:  ("sca/8",     "sca,tlu/9", "sca/8",     "tld,scr,sca/8"),
    Event.RCR_MINUS: ("scn/6",     "scn/7",     "scn/6",     "tld,scr,scn/6"),
    Event.RCA:       ("irc/7",     "scr/6x",    "irc,tlu/9", "tld,scr/6x"),
    Event.RCN:       ("irc,scr/6", "scr/6x",    "irc,scr/8", "tld,scr/6x"),
    Event.RTR:       ("sta/6",     "sta/6",     "sta/6",     "tld,zrc,sta/5"),
    Event.RTA:       ("6",         "6",         "8",         "tld,scr/6"),
    Event.RUC:       ("scj/6",     "scj/7",     "scj/8",     "scj/9"),
    Event.RXJ_PLUS:  ("6",         "6",         "8",         "9"),
    Event.RXJ_MINUS: ("tlf/3",     "tlf/3",     "tlf/3",     "tld,irc,str/5"),
    Event.RXR:       ("6",         "7",         "8",         "ser/9"),
}


class Transition(NamedTuple):
    actions: tuple[Action, ...]
    next_state: State


def parse_cell(cell: str) -> Transition | None:
    """One table cell ("irc,scr/6", "3r", "-") as a Transition; None for "-"."""
    if cell == "-":
        return None
    actions, _, target = cell.rpartition("/")
    number = target.rstrip("rpx")
    return Transition(tuple(Action(a) for a in actions.split(",") if a), State(int(number)))


def _build_table() -> dict[tuple[State, Event], Transition]:
    table: dict[tuple[State, Event], Transition] = {}
    halves: list[tuple[tuple[State, ...], dict[Event, tuple[str, ...]]]] = [
        (_STATES_0_TO_5, dict(_TABLE_0_TO_5)), (_STATES_6_TO_9, dict(_TABLE_6_TO_9))]
    for states, rows in halves:
        for event, cells in rows.items():
            for state, cell in zip(states, cells, strict=True):
                transition = parse_cell(cell)
                if transition is not None:
                    table[(state, event)] = transition
    return table


RFC1661_TABLE: dict[tuple[State, Event], Transition] = _build_table()

# States in which the restart timer runs (RFC 1661 §4.2: Closing, Stopping and the
# three negotiating states); entering any other state stops it.
TIMER_STATES = frozenset({State.CLOSING, State.STOPPING, State.REQ_SENT, State.ACK_RCVD,
                          State.ACK_SENT})


# --- packets and options (RFC 1661 §5, §6) ------------------------------------------------


@dataclass(frozen=True)
class Packet:
    """A control packet: Code, Identifier, and the Data after the 4-byte header."""

    code: int
    ident: int
    data: bytes = b""

    def encode(self) -> bytes:
        return struct.pack("!BBH", self.code, self.ident & 0xFF, HEADER_LEN + len(self.data)) \
            + self.data

    @staticmethod
    def parse(raw: bytes) -> Packet | None:
        """None when shorter than its header or its Length; octets past Length are padding."""
        if len(raw) < HEADER_LEN:
            return None
        code, ident, length = struct.unpack_from("!BBH", raw)
        if length < HEADER_LEN or length > len(raw):
            return None
        return Packet(code, ident, bytes(raw[HEADER_LEN:length]))


@dataclass(frozen=True)
class Option:
    """A configuration option: Type, then Data (the Length octet is implied)."""

    type: int
    data: bytes = b""

    def encode(self) -> bytes:
        return bytes((self.type, len(self.data) + 2)) + self.data


def encode_options(options: list[Option]) -> bytes:
    return b"".join(o.encode() for o in options)


def parse_options(data: bytes) -> list[Option] | None:
    """None when an option's Length is below 2 or runs past the packet (RFC 1661 §6)."""
    options: list[Option] = []
    i = 0
    while i < len(data):
        if len(data) - i < 2:
            return None
        length = data[i + 1]
        if length < 2 or i + length > len(data):
            return None
        options.append(Option(data[i], bytes(data[i + 2:i + length])))
        i += length
    return options


class Verdict(enum.IntEnum):
    """How a Configure-Request is answered; valued by the reply's code."""

    ACK = CONFIGURE_ACK
    NAK = CONFIGURE_NAK
    REJECT = CONFIGURE_REJECT


class Judgement(NamedTuple):
    verdict: Verdict
    options: list[Option]  # the reply's options (Ack: the request's, verbatim)


def combine(request: list[Option], verdicts: list[tuple[Verdict, Option]],
            extra_naks: list[Option] | None = None) -> Judgement:
    """One reply from per-option verdicts (RFC 1661 §5.2-§5.4).

    Any rejected option makes the reply a Configure-Reject listing all of them
    verbatim; else any Nak makes a Configure-Nak with the acceptable values (and
    ``extra_naks``, options the peer should add); else a Configure-Ack.
    """
    rejects = [o for v, o in verdicts if v is Verdict.REJECT]
    if rejects:
        return Judgement(Verdict.REJECT, rejects)
    naks = [o for v, o in verdicts if v is Verdict.NAK] + (extra_naks or [])
    if naks:
        return Judgement(Verdict.NAK, naks)
    return Judgement(Verdict.ACK, list(request))


# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkEvent:
    """Something the owner of a protocol should act on; ``protocol`` says whose."""

    protocol: int


@dataclass(frozen=True)
class LayerUp(LinkEvent):
    """tlu: this layer is Opened; the layer above may start."""


@dataclass(frozen=True)
class LayerDown(LinkEvent):
    """tld: this layer left Opened; the layer above must go down."""


@dataclass(frozen=True)
class LayerStarted(LinkEvent):
    """tls: this layer needs the lower layer up."""


@dataclass(frozen=True)
class LayerFinished(LinkEvent):
    """tlf: this layer no longer needs the lower layer."""


@dataclass
class FsmStats:
    rx_packets: int = 0
    rx_malformed: int = 0  # shorter than header or Length, or bad option lengths
    rx_bad_id: int = 0  # Ack/Nak/Reject not answering our last Configure-Request
    rx_bad_reply: int = 0  # Ack not a copy of our request, Reject of options we never sent
    rx_unknown_code: int = 0
    ignored_events: int = 0  # "-" cells: cannot happen, ignored
    tx_packets: int = 0
    tx_oversize: int = 0  # replies larger than the peer's MRU, not sent
    naks_as_rejects: int = 0  # Max-Failure reached (RFC 1661 §4.6)


class Automaton:
    """One control protocol's negotiation; subclass for the protocol's options."""

    protocol: int = 0
    name: str = "fsm"

    def __init__(self, *, restart_ms: int = RESTART_MS, max_terminate: int = MAX_TERMINATE,
                 max_configure: int = MAX_CONFIGURE, max_failure: int = MAX_FAILURE) -> None:
        self.restart_ms = restart_ms
        self.max_terminate = max_terminate
        self.max_configure = max_configure
        self.max_failure = max_failure
        self.state = State.INITIAL
        self.send: list[bytes] = []
        self.events: list[LinkEvent] = []
        self.stats = FsmStats()
        self.peer_mru = DEFAULT_MRU  # bounds what we send; LCP sets it, the owner for NCPs
        self.acked_peer: dict[int, bytes] = {}  # the peer's options we last acked, by type
        self.acked_ours: dict[int, bytes] = {}  # our options the peer last acked, by type
        self.restart_count = 0
        self.failure_count = 0  # Configure-Naks sent since the last Configure-Ack
        self.last_actions: tuple[Action, ...] = ()
        self.now_ms = 0
        self._deadline: int | None = None
        self._next_id = 1
        self._req_id: int | None = None  # our outstanding Configure-Request
        self._req_options = b""
        self._rx: Packet | None = None  # the packet behind the event being stepped
        self._rx_raw = b""
        self._reply: Judgement | None = None  # the verdict on the Configure-Request in _rx

    # --- what a protocol provides ---------------------------------------------------------

    def our_options(self) -> list[Option]:
        """The options of our next Configure-Request."""
        return []

    def judge(self, peer: list[Option]) -> Judgement:
        """The verdict on the peer's Configure-Request (the base knows no options)."""
        return combine(peer, [(Verdict.REJECT, o) for o in peer])

    def peer_acked(self, options: list[Option]) -> None:
        """We sent a Configure-Ack for these peer options: kept in ``acked_peer``."""
        self.acked_peer = {o.type: o.data for o in options}

    def on_ack(self, options: list[Option]) -> None:
        """The peer acknowledged our request (these options, verbatim): ``acked_ours``."""
        self.acked_ours = {o.type: o.data for o in options}

    def on_nak(self, options: list[Option]) -> None:
        """The peer suggested other values; change what ``our_options`` returns."""

    def on_reject(self, options: list[Option]) -> None:
        """The peer refused these options; stop asking for them."""

    def this_layer_up(self) -> None: ...
    def this_layer_down(self) -> None: ...
    def this_layer_started(self) -> None: ...
    def this_layer_finished(self) -> None: ...

    def receive_extra(self, packet: Packet) -> Event | None:
        """Codes beyond 7: an event, or None to drop. The base knows none: RUC."""
        self.stats.rx_unknown_code += 1
        return Event.RUC

    def is_catastrophic(self, code: int) -> bool:
        """A Code-Reject of this code is RXJ- (RFC 1661 §5.6): one negotiation needs."""
        return CONFIGURE_REQUEST <= code <= CODE_REJECT

    def send_echo_reply(self, packet: Packet) -> None:
        """ser (LCP only)."""

    # --- the owner's calls ----------------------------------------------------------------

    def up(self, now_ms: int) -> None:
        """The lower layer is up."""
        self.now_ms = now_ms
        self.step(Event.UP)

    def down(self, now_ms: int) -> None:
        """The lower layer went down."""
        self.now_ms = now_ms
        self.step(Event.DOWN)

    def open(self, now_ms: int) -> None:
        """Administrative Open: the link may be used."""
        self.now_ms = now_ms
        self.step(Event.OPEN)

    def close(self, now_ms: int) -> None:
        """Administrative Close: terminate the link."""
        self.now_ms = now_ms
        self.step(Event.CLOSE)

    def next_deadline(self) -> int | None:
        """When ``poll`` next has work (ms, the caller's clock), or None."""
        return self._deadline

    def poll(self, now_ms: int) -> None:
        """Run the restart timer: TO+ while the restart counter is above zero, else TO-."""
        self.now_ms = now_ms
        if self._deadline is not None and now_ms >= self._deadline:
            self._deadline = None
            self.step(Event.TO_PLUS if self.restart_count > 0 else Event.TO_MINUS)

    def take(self) -> tuple[list[bytes], list[LinkEvent]]:
        """Packets to send and events, emptying both lists."""
        out, events = self.send, self.events
        self.send, self.events = [], []
        return out, events

    def receive(self, raw: bytes, now_ms: int) -> None:
        """One control packet of this protocol (the Information field of its frame)."""
        self.now_ms = now_ms
        self.stats.rx_packets += 1
        packet = Packet.parse(raw)
        if packet is None:
            self.stats.rx_malformed += 1
            return
        self._rx, self._rx_raw, self._reply = packet, packet.encode(), None
        try:
            event = self._classify(packet)
            if event is not None:
                self.step(event)
        finally:
            self._rx, self._rx_raw, self._reply = None, b"", None

    # --- the automaton --------------------------------------------------------------------

    def step(self, event: Event) -> None:
        """Apply one event: the table's actions in order, then the next state."""
        transition = RFC1661_TABLE.get((self.state, event))
        if transition is None:
            self.stats.ignored_events += 1
            self.last_actions = ()
            return
        self.last_actions = transition.actions
        for action in transition.actions:
            self._act(action, transition)
        self.state = transition.next_state
        if self.state not in TIMER_STATES:
            self._deadline = None

    def _act(self, action: Action, transition: Transition) -> None:
        if action is Action.TLU:
            self.events.append(LayerUp(self.protocol))
            self.this_layer_up()
        elif action is Action.TLD:
            self.events.append(LayerDown(self.protocol))
            self.this_layer_down()
        elif action is Action.TLS:
            self.failure_count = 0
            self.events.append(LayerStarted(self.protocol))
            self.this_layer_started()
        elif action is Action.TLF:
            self.failure_count = 0
            self.events.append(LayerFinished(self.protocol))
            self.this_layer_finished()
        elif action is Action.IRC:
            # Max-Terminate when a Terminate-Request follows, else Max-Configure (§4.4).
            terminating = Action.STR in transition.actions
            self.restart_count = self.max_terminate if terminating else self.max_configure
        elif action is Action.ZRC:
            self.restart_count = 0
            self._start_timer()
        elif action is Action.SCR:
            self._send_configure_request()
        elif action is Action.SCA:
            self._send_configure_ack()
        elif action is Action.SCN:
            self._send_configure_nak()
        elif action is Action.STR:
            self.emit(TERMINATE_REQUEST, self.new_id(), b"")
            self.restart_count -= 1
            self._start_timer()
        elif action is Action.STA:
            self.emit(TERMINATE_ACK, self._rx.ident if self._rx else 0, b"")
        elif action is Action.SCJ:
            self.emit(CODE_REJECT, self.new_id(), self._rx_raw, truncate=True)
        elif action is Action.SER and self._rx is not None:
            self.send_echo_reply(self._rx)

    def _start_timer(self) -> None:
        self._deadline = self.now_ms + self.restart_ms

    def _send_configure_request(self) -> None:
        self._req_id = self.new_id()
        self._req_options = encode_options(self.our_options())
        self.emit(CONFIGURE_REQUEST, self._req_id, self._req_options)
        self.restart_count -= 1
        self._start_timer()

    def _send_configure_ack(self) -> None:
        if self._rx is None:
            return
        self.failure_count = 0
        self.emit(CONFIGURE_ACK, self._rx.ident, self._rx.data)
        self.peer_acked(self._verdict().options)

    def _send_configure_nak(self) -> None:
        if self._rx is None:
            return
        reply = self._verdict()
        if reply.verdict is Verdict.NAK:
            self.failure_count += 1
        self.emit(int(reply.verdict), self._rx.ident, encode_options(reply.options))

    def _verdict(self) -> Judgement:
        """The judgement on the request in hand; Naks become Rejects after Max-Failure."""
        if self._reply is None:
            options = parse_options(self._rx.data) if self._rx else None
            self._reply = self.judge(options or [])
            if self._reply.verdict is Verdict.NAK and self.failure_count >= self.max_failure:
                # RFC 1661 §4.6 Max-Failure: Naks of the peer's options become Rejects;
                # suggestions for options it did not send are dropped.
                naked = {o.type for o in self._reply.options}
                rejects = [o for o in (options or []) if o.type in naked]
                self.stats.naks_as_rejects += 1
                self._reply = Judgement(Verdict.REJECT, rejects) if rejects else \
                    Judgement(Verdict.ACK, list(options or []))
        return self._reply

    def new_id(self) -> int:
        ident = self._next_id
        self._next_id = (self._next_id + 1) & 0xFF
        return ident

    def emit(self, code: int, ident: int, data: bytes, *, truncate: bool = False) -> bytes | None:
        """Queue one packet; never larger than the peer's MRU (Code-Reject is cut, §5.6)."""
        if truncate:
            data = data[:max(0, self.peer_mru - HEADER_LEN)]
        raw = Packet(code, ident, data).encode()
        if len(raw) > self.peer_mru:
            self.stats.tx_oversize += 1
            return None
        self.send.append(raw)
        self.stats.tx_packets += 1
        return raw

    # --- receive ------------------------------------------------------------------------------

    def _classify(self, packet: Packet) -> Event | None:
        code = packet.code
        if code == CONFIGURE_REQUEST:
            options = parse_options(packet.data)
            if options is None:
                self.stats.rx_malformed += 1
                return None
            if self.state not in _JUDGING_STATES:
                return Event.RCR_PLUS  # Closed answers sta, Closing/Stopping ignore
            ack = self._verdict().verdict is Verdict.ACK
            return Event.RCR_PLUS if ack else Event.RCR_MINUS
        if code in (CONFIGURE_ACK, CONFIGURE_NAK, CONFIGURE_REJECT):
            return self._classify_reply(packet)
        if code == TERMINATE_REQUEST:
            return Event.RTR
        if code == TERMINATE_ACK:
            return Event.RTA
        if code == CODE_REJECT:
            if not packet.data:
                self.stats.rx_malformed += 1
                return None
            return Event.RXJ_MINUS if self.is_catastrophic(packet.data[0]) else Event.RXJ_PLUS
        return self.receive_extra(packet)

    def _classify_reply(self, packet: Packet) -> Event | None:
        # RFC 1661 §5.2-§5.4: a reply whose Identifier does not match our last
        # Configure-Request is silently discarded. A reply is taken once: a copy
        # that arrives later (duplicated by the line) no longer matches.
        if self._req_id is None or packet.ident != self._req_id:
            self.stats.rx_bad_id += 1
            return None
        options = parse_options(packet.data)
        if options is None:
            self.stats.rx_malformed += 1
            return None
        sent = parse_options(self._req_options) or []
        if packet.code == CONFIGURE_ACK and packet.data != self._req_options:
            self.stats.rx_bad_reply += 1  # §5.2: an Ack lists our options exactly
            return None
        if packet.code == CONFIGURE_REJECT and any(o not in sent for o in options):
            self.stats.rx_bad_reply += 1  # §5.4: a Reject lists some of ours verbatim
            return None
        self._req_id = None
        negotiating = self.state in _NEGOTIATING_STATES
        if packet.code == CONFIGURE_ACK:
            if negotiating:
                self.on_ack(options)
            return Event.RCA
        if negotiating:
            if packet.code == CONFIGURE_NAK:
                self.on_nak(options)
            else:
                self.on_reject(options)
        return Event.RCN


_JUDGING_STATES = frozenset({State.STOPPED, State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT,
                             State.OPENED})
_NEGOTIATING_STATES = frozenset({State.REQ_SENT, State.ACK_RCVD, State.ACK_SENT, State.OPENED})


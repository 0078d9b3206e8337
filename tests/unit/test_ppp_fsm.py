"""The RFC 1661 §4 automaton, cell by cell, with a manual clock.

Every (state, event) cell is driven through the real inputs (packets, timer,
owner calls) and its effects checked against the table's actions; a second,
hand-written list of transitions quoted from the RFC's prose checks the table
itself. ``Toy`` is a protocol with one option (type 1): value 1 is acked,
value 2 Nak'd with 1, anything else rejected; code 9 is an echo (RXR).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import pytest

from hilkit.drivers.ppp.fsm import (
    CODE_REJECT,
    CONFIGURE_ACK,
    CONFIGURE_NAK,
    CONFIGURE_REJECT,
    CONFIGURE_REQUEST,
    RFC1661_TABLE,
    TERMINATE_ACK,
    TERMINATE_REQUEST,
    TIMER_STATES,
    Action,
    Automaton,
    Event,
    Judgement,
    LayerDown,
    LayerFinished,
    LayerStarted,
    LayerUp,
    Option,
    Packet,
    State,
    Verdict,
    combine,
    encode_options,
    parse_cell,
    parse_options,
)
from tests.ppp_loop import converse, pkt

ECHO, ECHO_REPLY = 9, 10
GOOD, BAD = Option(1, b"\x01"), Option(1, b"\x02")


class Toy(Automaton):
    protocol = 0x8001

    def __init__(self, **kw: int) -> None:
        super().__init__(**kw)
        self.naks: list[list[Option]] = []
        self.rejects: list[list[Option]] = []
        self.want = [GOOD]

    def our_options(self) -> list[Option]:
        return list(self.want)

    def judge(self, peer: list[Option]) -> Judgement:
        def one(o: Option) -> tuple[Verdict, Option]:
            if o == GOOD:
                return Verdict.ACK, o
            if o == BAD:
                return Verdict.NAK, GOOD
            return Verdict.REJECT, o
        return combine(peer, [one(o) for o in peer])

    def on_nak(self, options: list[Option]) -> None:
        self.naks.append(options)

    def on_reject(self, options: list[Option]) -> None:
        self.rejects.append(options)
        self.want = [o for o in self.want if o not in options]

    def receive_extra(self, packet: Packet) -> Event | None:
        return Event.RXR if packet.code == ECHO else super().receive_extra(packet)

    def is_catastrophic(self, code: int) -> bool:
        return code != ECHO

    def send_echo_reply(self, packet: Packet) -> None:
        self.emit(ECHO_REPLY, packet.ident, packet.data)


def codes(fsm: Automaton) -> list[int]:
    return [p[0] for p in fsm.send]


REQ_ID = 77
T = 10_000


def in_state(state: State) -> Toy:
    """A Toy put in ``state`` with a request of ours outstanding (id REQ_ID)."""
    fsm = Toy()
    fsm.state = state
    fsm._req_id = REQ_ID
    fsm._req_options = encode_options([GOOD])
    fsm.now_ms = T
    return fsm


def drive(fsm: Toy, event: Event) -> None:
    """Cause ``event`` the way the wire, the clock or the owner would."""
    if event is Event.UP:
        fsm.up(T)
    elif event is Event.DOWN:
        fsm.down(T)
    elif event is Event.OPEN:
        fsm.open(T)
    elif event is Event.CLOSE:
        fsm.close(T)
    elif event in (Event.TO_PLUS, Event.TO_MINUS):
        fsm.restart_count = 2 if event is Event.TO_PLUS else 0
        fsm._deadline = T
        fsm.poll(T)
    elif event is Event.RCR_PLUS:
        fsm.receive(pkt(CONFIGURE_REQUEST, 5, GOOD.encode()), T)
    elif event is Event.RCR_MINUS:
        fsm.receive(pkt(CONFIGURE_REQUEST, 5, BAD.encode()), T)
    elif event is Event.RCA:
        fsm.receive(pkt(CONFIGURE_ACK, REQ_ID, GOOD.encode()), T)
    elif event is Event.RCN:
        fsm.receive(pkt(CONFIGURE_NAK, REQ_ID, GOOD.encode()), T)
    elif event is Event.RTR:
        fsm.receive(pkt(TERMINATE_REQUEST, 6), T)
    elif event is Event.RTA:
        fsm.receive(pkt(TERMINATE_ACK, 6), T)
    elif event is Event.RUC:
        fsm.receive(pkt(42, 6, b"what"), T)
    elif event is Event.RXJ_PLUS:
        fsm.receive(pkt(CODE_REJECT, 6, pkt(ECHO, 1, b"\0\0\0\0")), T)
    elif event is Event.RXJ_MINUS:
        fsm.receive(pkt(CODE_REJECT, 6, pkt(CONFIGURE_REQUEST, 1)), T)
    elif event is Event.RXR:
        fsm.receive(pkt(ECHO, 6, b"\0\0\0\0"), T)


SENDS = {Action.SCR: CONFIGURE_REQUEST, Action.SCA: CONFIGURE_ACK, Action.SCN: CONFIGURE_NAK,
         Action.STR: TERMINATE_REQUEST, Action.STA: TERMINATE_ACK, Action.SCJ: CODE_REJECT,
         Action.SER: ECHO_REPLY}
LAYER_EVENTS = {Action.TLU: LayerUp, Action.TLD: LayerDown, Action.TLS: LayerStarted,
                Action.TLF: LayerFinished}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, Event)),
                         ids=lambda x: x.name)
def test_every_cell_does_what_the_table_says(state: State, event: Event) -> None:
    fsm = in_state(state)
    drive(fsm, event)
    cell = RFC1661_TABLE.get((state, event))
    if cell is None:  # "-": ignored
        assert fsm.state is state
        assert fsm.send == [] and fsm.events == []
        return
    assert fsm.last_actions == cell.actions
    assert fsm.state is cell.next_state
    assert codes(fsm) == [SENDS[a] for a in cell.actions if a in SENDS]
    assert [type(e) for e in fsm.events] == [LAYER_EVENTS[a] for a in cell.actions
                                             if a in LAYER_EVENTS]
    if Action.ZRC in cell.actions:
        assert fsm.restart_count == 0
    elif Action.IRC in cell.actions:
        start = fsm.max_terminate if Action.STR in cell.actions else fsm.max_configure
        sends = sum(a in (Action.SCR, Action.STR) for a in cell.actions)
        assert fsm.restart_count == start - sends
    if cell.next_state in TIMER_STATES and {Action.SCR, Action.STR, Action.ZRC} & \
            set(cell.actions):
        assert fsm.next_deadline() == T + fsm.restart_ms
    if cell.next_state not in TIMER_STATES:
        assert fsm.next_deadline() is None


# Transitions as RFC 1661 §4.1-§4.4 describe them in prose, written independently of
# the table in fsm.py: (state, event, actions, next state).
RFC_PROSE = [
    (State.INITIAL, Event.OPEN, "tls", State.STARTING),  # §4.3 Open: tls, wait for Up
    (State.STARTING, Event.UP, "irc,scr", State.REQ_SENT),  # §4.3 Up
    (State.CLOSED, Event.OPEN, "irc,scr", State.REQ_SENT),
    (State.REQ_SENT, Event.RCA, "irc", State.ACK_RCVD),  # §4.3 RCA
    (State.REQ_SENT, Event.RCR_PLUS, "sca", State.ACK_SENT),
    (State.ACK_RCVD, Event.RCR_PLUS, "sca,tlu", State.OPENED),
    (State.ACK_SENT, Event.RCA, "irc,tlu", State.OPENED),
    (State.ACK_SENT, Event.TO_PLUS, "scr", State.ACK_SENT),  # retransmit, still Ack-Sent
    (State.REQ_SENT, Event.TO_MINUS, "tlf", State.STOPPED),  # §4.6 Max-Configure
    (State.OPENED, Event.RTR, "tld,zrc,sta", State.STOPPING),  # §4.3 RTR
    (State.OPENED, Event.CLOSE, "tld,irc,str", State.CLOSING),
    (State.CLOSING, Event.RTA, "tlf", State.CLOSED),
    (State.CLOSING, Event.TO_MINUS, "tlf", State.CLOSED),  # §4.6 Max-Terminate
    (State.STOPPED, Event.RCR_PLUS, "irc,scr,sca", State.ACK_SENT),
    (State.STOPPED, Event.DOWN, "tls", State.STARTING),
    (State.OPENED, Event.RCR_PLUS, "tld,scr,sca", State.ACK_SENT),  # renegotiation
    (State.OPENED, Event.RXJ_MINUS, "tld,irc,str", State.STOPPING),
    (State.OPENED, Event.RXR, "ser", State.OPENED),
    (State.CLOSED, Event.RTR, "sta", State.CLOSED),
]


@pytest.mark.parametrize(("state", "event", "actions", "target"), RFC_PROSE,
                         ids=[f"{s.name}-{e.name}" for s, e, _, _ in RFC_PROSE])
def test_table_agrees_with_the_rfc_prose(state: State, event: Event, actions: str,
                                         target: State) -> None:
    cell = RFC1661_TABLE[(state, event)]
    assert cell.actions == tuple(Action(a) for a in actions.split(","))
    assert cell.next_state is target


def test_table_shape() -> None:
    assert parse_cell("-") is None
    assert parse_cell("3r") == (((), State.STOPPED))
    assert parse_cell("tlf/3p") == ((Action.TLF,), State.STOPPED)
    # Up is only meaningful in Initial and Starting; nothing happens in Initial or
    # Starting but the owner's events (the lower layer is down).
    assert {s for s, e in RFC1661_TABLE if e is Event.UP} == {State.INITIAL, State.STARTING}
    for s in (State.INITIAL, State.STARTING):
        assert {e for st, e in RFC1661_TABLE if st is s} <= {Event.UP, Event.DOWN, Event.OPEN,
                                                             Event.CLOSE}
    assert len(RFC1661_TABLE) == 160 - 40  # 40 "-" cells in the RFC's table


# --- a whole negotiation, timers ----------------------------------------------------------


def start(fsm: Automaton, now: int = 0) -> None:
    fsm.open(now)
    fsm.up(now)


def test_restart_timer_then_max_configure_gives_up() -> None:
    fsm = Toy()
    start(fsm)
    assert codes(fsm) == [CONFIGURE_REQUEST] and fsm.state is State.REQ_SENT
    ids = [fsm.send[0][1]]
    fsm.send.clear()
    now = 0
    for _ in range(9):
        assert fsm.next_deadline() == now + 3000
        fsm.poll(now + 2999)  # not yet
        assert fsm.send == []
        now += 3000
        fsm.poll(now)
        assert codes(fsm) == [CONFIGURE_REQUEST]
        ids.append(fsm.send.pop()[1])
    assert len(set(ids)) == 10  # Max-Configure requests, each with its own identifier
    now += 3000
    fsm.poll(now)
    assert fsm.send == [] and fsm.state is State.STOPPED
    assert [type(e) for e in fsm.events] == [LayerStarted, LayerFinished]
    assert fsm.next_deadline() is None


def test_restart_options_are_honoured() -> None:
    fsm = Toy(restart_ms=500, max_configure=3)
    start(fsm, 100)
    for t in (600, 1100):
        fsm.poll(t)
    fsm.poll(1600)
    assert codes(fsm) == [CONFIGURE_REQUEST] * 3 and fsm.state is State.STOPPED


def opened(**kw: int) -> Toy:
    fsm = Toy(**kw)
    start(fsm)
    req = Packet.parse(fsm.send.pop())
    assert req is not None
    fsm.receive(pkt(CONFIGURE_ACK, req.ident, req.data), 10)
    fsm.receive(pkt(CONFIGURE_REQUEST, 1, GOOD.encode()), 20)
    assert fsm.state is State.OPENED
    fsm.send.clear()
    fsm.events.clear()
    return fsm


def test_max_terminate_on_close() -> None:
    fsm = opened()
    fsm.close(1000)
    assert codes(fsm) == [TERMINATE_REQUEST] and fsm.state is State.CLOSING
    fsm.poll(4000)
    assert codes(fsm) == [TERMINATE_REQUEST] * 2
    fsm.poll(7000)
    assert codes(fsm) == [TERMINATE_REQUEST] * 2  # Max-Terminate = 2
    assert fsm.state is State.CLOSED
    assert [type(e) for e in fsm.events] == [LayerDown, LayerFinished]


def test_terminate_ack_ends_closing_at_once() -> None:
    fsm = opened()
    fsm.close(1000)
    fsm.receive(pkt(TERMINATE_ACK, fsm.send[0][1]), 1001)
    assert fsm.state is State.CLOSED and fsm.next_deadline() is None


def test_peer_terminate_waits_one_restart_period_in_stopping() -> None:
    fsm = opened()
    fsm.receive(pkt(TERMINATE_REQUEST, 9), 1000)
    assert codes(fsm) == [TERMINATE_ACK] and fsm.send[0][1] == 9
    assert fsm.state is State.STOPPING and fsm.next_deadline() == 4000
    fsm.poll(4000)
    assert fsm.state is State.STOPPED
    assert [type(e) for e in fsm.events] == [LayerDown, LayerFinished]


# --- Nak and Reject, both ways ------------------------------------------------------------


def test_we_nak_then_ack_the_corrected_request() -> None:
    fsm = Toy()
    start(fsm)
    fsm.send.clear()
    fsm.receive(pkt(CONFIGURE_REQUEST, 3, BAD.encode()), 1)
    assert fsm.send == [pkt(CONFIGURE_NAK, 3, GOOD.encode())]
    fsm.receive(pkt(CONFIGURE_REQUEST, 4, GOOD.encode()), 2)
    assert fsm.send[-1] == pkt(CONFIGURE_ACK, 4, GOOD.encode())
    assert fsm.state is State.ACK_SENT


def test_we_reject_unknown_options_verbatim() -> None:
    fsm = Toy()
    start(fsm)
    fsm.send.clear()
    odd = Option(200, b"xyz")
    fsm.receive(pkt(CONFIGURE_REQUEST, 3, BAD.encode() + odd.encode()), 1)
    assert fsm.send == [pkt(CONFIGURE_REJECT, 3, odd.encode())]  # Reject beats Nak


def test_peer_nak_and_reject_reach_the_protocol_and_a_new_request_goes_out() -> None:
    fsm = Toy()
    start(fsm)
    req = Packet.parse(fsm.send.pop())
    assert req is not None
    fsm.receive(pkt(CONFIGURE_NAK, req.ident, BAD.encode()), 1)
    assert fsm.naks == [[BAD]] and codes(fsm) == [CONFIGURE_REQUEST]
    req = Packet.parse(fsm.send.pop())
    assert req is not None
    fsm.receive(pkt(CONFIGURE_REJECT, req.ident, GOOD.encode()), 2)
    assert fsm.rejects == [[GOOD]]
    assert fsm.send == [pkt(CONFIGURE_REQUEST, fsm.send[0][1])]  # nothing left to ask


def test_replies_with_the_wrong_identifier_or_content_are_dropped() -> None:
    fsm = Toy()
    start(fsm)
    req = Packet.parse(fsm.send.pop())
    assert req is not None
    fsm.receive(pkt(CONFIGURE_ACK, req.ident + 1, req.data), 1)
    fsm.receive(pkt(CONFIGURE_NAK, req.ident - 1, GOOD.encode()), 1)
    assert fsm.stats.rx_bad_id == 2
    fsm.receive(pkt(CONFIGURE_ACK, req.ident, BAD.encode()), 1)  # not a copy
    fsm.receive(pkt(CONFIGURE_REJECT, req.ident, BAD.encode()), 1)  # never sent
    assert fsm.stats.rx_bad_reply == 2
    assert fsm.state is State.REQ_SENT and fsm.send == [] and fsm.naks == []
    fsm.receive(pkt(CONFIGURE_ACK, req.ident, req.data), 2)
    assert fsm.state is State.ACK_RCVD
    fsm.receive(pkt(CONFIGURE_ACK, req.ident, req.data), 3)  # a duplicate: taken once
    assert fsm.state is State.ACK_RCVD and fsm.stats.rx_bad_id == 3


@pytest.mark.parametrize("max_failure", [1, 2, 5])
def test_max_failure_turns_naks_into_rejects(max_failure: int) -> None:
    fsm = Toy(max_failure=max_failure)
    start(fsm)
    fsm.send.clear()
    replies = []
    for ident in range(max_failure + 2):
        fsm.receive(pkt(CONFIGURE_REQUEST, ident, BAD.encode()), ident)
        replies.append(fsm.send.pop()[0])
    assert replies == [CONFIGURE_NAK] * max_failure + [CONFIGURE_REJECT] * 2
    assert fsm.stats.naks_as_rejects == 2
    fsm.receive(pkt(CONFIGURE_REQUEST, 50, GOOD.encode()), 99)  # an Ack resets the count
    fsm.receive(pkt(CONFIGURE_REQUEST, 51, BAD.encode()), 99)
    assert codes(fsm)[-1] == CONFIGURE_NAK


def test_echo_is_answered_only_when_opened() -> None:
    fsm = Toy()
    start(fsm)
    fsm.send.clear()
    fsm.receive(pkt(ECHO, 1, b"abcd"), 1)
    assert fsm.send == []
    fsm = opened()
    fsm.receive(pkt(ECHO, 1, b"abcd"), 1)
    assert fsm.send == [pkt(ECHO_REPLY, 1, b"abcd")]


# --- parsing ------------------------------------------------------------------------------


def test_packet_parsing_checks_lengths_and_ignores_padding() -> None:
    assert Packet.parse(b"\x01\x02\x00") is None
    assert Packet.parse(b"\x01\x02\x00\x03") is None  # Length below the header
    assert Packet.parse(b"\x01\x02\x00\x09abcd") is None  # Length past the end
    assert Packet.parse(b"\x01\x02\x00\x06ab\x00\x00\x00") == Packet(1, 2, b"ab")
    assert parse_options(b"\x01\x03\x01\x07\x02") == [Option(1, b"\x01"), Option(7)]
    assert parse_options(b"\x01") is None
    assert parse_options(b"\x01\x01") is None
    assert parse_options(b"\x01\x05ab") is None


def test_short_and_malformed_packets_are_counted_and_dropped() -> None:
    fsm = Toy()
    start(fsm)
    fsm.send.clear()
    for raw in (b"", b"\x01", b"\x01\x01\x00\x10", pkt(CONFIGURE_REQUEST, 1, b"\x01\x00"),
                pkt(CODE_REJECT, 1)):
        fsm.receive(raw, 1)
    assert fsm.stats.rx_malformed == 5 and fsm.send == []
    assert fsm.state is State.REQ_SENT


def test_code_reject_is_cut_to_the_peers_mru() -> None:
    fsm = opened()
    fsm.peer_mru = 64
    fsm.receive(pkt(99, 1, bytes(1000)), 1)
    assert codes(fsm) == [CODE_REJECT] and len(fsm.send[0]) == 64
    assert fsm.send[0][4:12] == pkt(99, 1, bytes(1000))[:8]


def test_replies_never_exceed_the_peers_mru() -> None:
    fsm = Toy()
    start(fsm)
    fsm.send.clear()
    fsm.peer_mru = 100
    fsm.receive(pkt(CONFIGURE_REQUEST, 1, GOOD.encode() * 60), 1)  # would be a 184-byte Ack
    assert fsm.send == [] and fsm.stats.tx_oversize == 1


# --- two automata, a lossy loop -----------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_two_automata_open_over_a_lossy_loop(seed: int) -> None:
    rng = random.Random(seed)
    drop = {n for n in range(1, 60) if rng.random() < 0.3}
    a, b = Toy(), Toy()
    start(a)
    start(b, 0)
    converse(a, b, drop)
    assert a.state is State.OPENED and b.state is State.OPENED


# --- hostile input: a generated corpus, every protocol, every state -----------------------


def corpus(seed: int = 1661) -> list[bytes]:
    """Malformed and odd control packets: random, truncated, lying lengths, bad options."""
    rng = random.Random(seed)
    out: list[bytes] = [b"", b"\x01", b"\x01\x01\x00", b"\x01\x01\xff\xff",
                        pkt(CONFIGURE_REQUEST, 1, bytes(3000))]
    out += [rng.randbytes(rng.randrange(0, 64)) for _ in range(150)]
    known = [1, 2, 3, 4, 5, 7, 8, 9, 129, 130, 131, 132, 200]
    for code in [*range(0, 15), 42, 255]:
        for _ in range(12):
            ident = rng.choice([1, 2, 77, rng.randrange(256)])
            if code in (1, 2, 3, 4) and rng.random() < 0.7:
                opts = b""
                for _ in range(rng.randrange(1, 5)):
                    kind = rng.choice(known)
                    size = rng.choice([0, 1, 2, 3, 4, 5, 6, 10, 255])
                    body = rng.randbytes(max(0, min(size, 40) - 2))
                    opts += bytes((kind, size)) + body
                data = opts
            else:
                data = rng.randbytes(rng.choice([0, 1, 2, 3, 4, 8, 20, 300]))
            good = pkt(code, ident, data)
            out.append(good)
            out.append(good[:rng.randrange(0, len(good) + 1)])  # truncated
            lying = bytearray(good)
            lying[2:4] = rng.choice([0, 3, 4, len(good) + 1, 0xFFFF]).to_bytes(2, "big")
            out.append(bytes(lying))
            out.append(good + rng.randbytes(rng.randrange(1, 8)))  # padding
    for _ in range(300):  # well-formed option lists with hostile values and sizes
        opts = b"".join(Option(rng.choice(known), rng.randbytes(rng.randrange(0, 9))).encode()
                        for _ in range(rng.randrange(0, 6)))
        out.append(pkt(rng.choice([1, 1, 1, 2, 3, 4]), rng.choice([1, 2, 5]), opts))
    return out


CORPUS = corpus()


def _protocols() -> dict[str, Callable[[], Automaton]]:
    from ipaddress import IPv4Address

    from hilkit.drivers.ppp.ipcp import Ipcp, IpcpConfig
    from hilkit.drivers.ppp.lcp import AuthProtocol, Lcp, LcpConfig

    return {
        "toy": Toy,
        "lcp": lambda: Lcp(LcpConfig(echo_interval_ms=500), rng=random.Random(3)),
        "lcp-auth": lambda: Lcp(LcpConfig(can_authenticate=(AuthProtocol.PAP,),
                                          demand_auth=(AuthProtocol.CHAP_MD5,)),
                                rng=random.Random(4)),
        "ipcp": lambda: Ipcp(IpcpConfig(vj=True)),
        "ipcp-server": lambda: Ipcp(IpcpConfig(address=IPv4Address("10.0.0.1"),
                                               peer_address=IPv4Address("10.0.0.2"),
                                               dns_servers=(IPv4Address("10.0.0.3"),))),
    }


@pytest.mark.parametrize("peer_mru", [1500, 128])
@pytest.mark.parametrize("name", list(_protocols()))
def test_corpus_never_raises_and_replies_stay_within_the_peers_mru(name: str,
                                                                  peer_mru: int) -> None:
    make = _protocols()[name]
    for state in State:
        fsm = make()
        fsm.open(0)
        fsm.up(0)
        fsm.state = state
        fsm._req_id = 1
        fsm.peer_mru = peer_mru
        for i, raw in enumerate(CORPUS):
            now = i * 7
            fsm.peer_mru = min(fsm.peer_mru, peer_mru)  # LCP may raise it on tlu
            fsm.receive(raw, now)
            fsm.poll(now)
            for out in fsm.send:
                assert len(out) <= peer_mru
                parsed = Packet.parse(out)
                assert parsed is not None and len(out) == 4 + len(parsed.data)
            assert len(fsm.send) <= 4
            fsm.send.clear()
            fsm.events.clear()


def test_corpus_against_the_authentication_sides() -> None:
    from hilkit.drivers.ppp.auth import ChapClient, ChapServer, Credentials, PapClient, PapServer

    creds = Credentials(b"user", b"hunter2-secret")
    secrets = {b"user": b"hunter2-secret"}
    sides = [PapClient(creds), PapServer(secrets), ChapClient(creds),
             ChapServer(secrets, rng=random.Random(5))]
    sides[0].start(0)
    sides[3].challenge(0)
    for side in sides:
        for i, raw in enumerate(CORPUS):
            side.receive(raw, i)
            side.poll(i)
            assert all(len(out) <= 600 for out in side.send)
            assert len(side.send) <= 2
            side.send.clear()
        for event in side.events:
            assert "hunter2" not in repr(event)

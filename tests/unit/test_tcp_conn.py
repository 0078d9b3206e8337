# mypy: disable-error-code="comparison-overlap"
# (the state changes behind mypy's back: ``c.state`` is read again after each call)
"""Two ``Connection`` objects driven against each other by hand (RFC 9293 and friends).

A ``Pipe`` moves each connection's ``outbox`` through ``tcp.parse`` (with the
right addresses, so checksums are checked) into the other's ``input``, with a
clock the test moves; it can drop or hold back chosen segments, and it checks
on every data segment that the sender stays inside the window the receiver
advertised. ``forge`` builds a segment as one end would send it (an attacker,
or a peer the test scripts by hand).

The tests assert what the RFCs say: RFC 9293 (state machine), RFC 5961
(blind attacks), RFC 7323 (window scale, timestamps, PAWS), RFC 2018 (SACK),
RFC 6298 (RTO), RFC 5681/6582 (congestion control), RFC 1122 (keepalive,
delayed ACK), RFC 896 (Nagle).
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from hilkit.stack import tcp
from hilkit.stack.events import SocketEvent
from hilkit.stack.tcp import ACK, FIN, PSH, RST, SYN, Segment, seq_add, seq_diff, seq_le, seq_lt
from hilkit.stack.tcp_budget import TcpBudget
from hilkit.stack.tcp_conn import Connection, State, TcpConfig

A_IP, B_IP = 0x0A000001, 0x0A000002
A_PORT, B_PORT = 40000, 80
T0 = 1000.0

Drop = Callable[[str, Segment], bool]


@dataclass
class Sent:
    t: float
    src: str  # "a" or "b"
    seg: Segment
    dropped: bool


class Pipe:
    """``a`` actively opens to ``b``; segments cross instantly unless dropped or held."""

    def __init__(self, cfg_a: TcpConfig | None = None, cfg_b: TcpConfig | None = None,
                 iss_a: int = 1000, iss_b: int = 500_000, mtu_a: int = 1500,
                 mtu_b: int = 1500, ts_a: int = 0x100, ts_b: int = 0x7000_0000,
                 now: float = T0, budget_b: TcpBudget | None = None) -> None:
        self.now = now
        self.a = Connection((A_IP, A_PORT), (B_IP, B_PORT), iss_a, mtu_a, cfg_a or TcpConfig(),
                            now, ts_a)
        self.b = Connection((B_IP, B_PORT), (A_IP, A_PORT), iss_b, mtu_b, cfg_b or TcpConfig(),
                            now, ts_b, budget_b)
        self.log: list[Sent] = []
        self.drop: Drop | None = None
        self.held: list[tuple[str, Segment]] = []
        self.hold: Drop | None = None  # held segments wait for ``release()``
        self.syn_ws: dict[str, int | None] = {"a": None, "b": None}
        self.edge: dict[str, int | None] = {"a": None, "b": None}  # right edge advertised
        self.zero: dict[str, bool] = {"a": False, "b": False}
        self.data: dict[str, bytearray] = {"a": bytearray(), "b": bytearray()}  # app reads

    # -- plumbing ---------------------------------------------------------------------
    def conn(self, name: str) -> Connection:
        return self.a if name == "a" else self.b

    @staticmethod
    def other(name: str) -> str:
        return "b" if name == "a" else "a"

    def take(self, name: str) -> list[Segment]:
        """Parse what ``name`` queued, checking the window it was offered."""
        c = self.conn(name)
        out, c.outbox = c.outbox, []
        segs = []
        for hdr, payload in out:
            raw = bytes(hdr) + bytes(payload)
            seg = tcp.parse(memoryview(raw), c.local[0], c.remote[0])
            assert isinstance(seg, Segment), f"{name} sent a segment that does not parse: {seg}"
            if seg.flags & SYN:
                self.syn_ws[name] = seg.wscale
            self._check_window(name, seg)
            segs.append(seg)
        return segs

    def _check_window(self, name: str, seg: Segment) -> None:
        edge = self.edge[self.other(name)]
        n = len(seg.payload)
        if edge is None or n == 0:
            return
        end = seq_add(seg.seq, n)
        if self.zero[self.other(name)] and n == 1:
            return  # a one-octet zero-window probe (RFC 9293 §3.8.6.1) may pass the edge
        assert seq_le(end, edge), (
            f"{name} sent [{seg.seq}, {end}) beyond the advertised right edge {edge}")

    def _learn_window(self, name: str, seg: Segment) -> None:
        """``name`` sent ``seg`` and it arrived: the right edge it offers (RFC 7323 §2.2)."""
        if not seg.flags & ACK or seg.flags & RST:
            return
        if seg.flags & SYN:
            wnd = seg.wnd  # never scaled in a SYN
        else:
            both = self.syn_ws["a"] is not None and self.syn_ws["b"] is not None
            wnd = seg.wnd << (self.syn_ws[name] or 0 if both else 0)
        edge = seq_add(seg.ack, wnd)
        old = self.edge[name]
        if old is None or seq_lt(old, edge):
            self.edge[name] = edge
        self.zero[name] = wnd == 0

    def deliver(self, src: str, seg: Segment) -> None:
        self._learn_window(src, seg)
        self.conn(self.other(src)).input(seg, self.now)

    def step(self) -> int:
        n = 0
        for src in ("a", "b"):
            for seg in self.take(src):
                n += 1
                dropped = bool(self.drop and self.drop(src, seg))
                self.log.append(Sent(self.now, src, seg, dropped))
                if dropped:
                    continue
                if self.hold and self.hold(src, seg):
                    self.held.append((src, seg))
                    continue
                self.deliver(src, seg)
        return n

    def run(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            if not self.step():
                return
        raise AssertionError("the connections never went quiet")

    def release(self) -> None:
        held, self.held = self.held, []
        for src, seg in held:
            self.deliver(src, seg)
        self.run()

    def advance(self, ms: float) -> None:
        """Move the clock, firing each deadline at its exact time."""
        end = self.now + ms
        self.run()
        for _ in range(1_000_000):
            due = [(d, c) for c in (self.a, self.b)
                   if (d := c.next_deadline()) is not None and d <= end]
            if not due:
                break
            d, c = min(due, key=lambda x: x[0])
            self.now = max(self.now, d)
            c.on_timer(self.now)
            self.run()
        self.now = end
        self.run()

    def open(self) -> None:
        """Active open from ``a``, passive open at ``b`` (what a listener does)."""
        self.a.connect(self.now)
        syn = self.take("a")[0]
        self.log.append(Sent(self.now, "a", syn, False))
        self.b.accept_syn(syn, self.now)
        self.run()
        assert self.a.state == self.b.state == State.ESTABLISHED

    def read_all(self) -> None:
        for name in ("a", "b"):
            c = self.conn(name)
            while c.readable:
                self.data[name] += c.recv(1 << 20, self.now)
        self.run()

    # -- looking at the log ----------------------------------------------------------------
    def sent(self, src: str, since: int = 0) -> list[Segment]:
        return [s.seg for s in self.log[since:] if s.src == src]

    def mark(self) -> int:
        return len(self.log)

    # -- forging -------------------------------------------------------------------------
    def forge(self, src: str, seq: int, ack: int, flags: int, payload: bytes = b"",
              wnd: int | None = None, ts: tuple[int, int] | str | None = "auto",
              sack: list[tuple[int, int]] | None = None, mss: int | None = None) -> Segment:
        """A segment as ``src`` would put it on the wire (parsed back, checksum and all)."""
        me, peer = self.conn(src), self.conn(self.other(src))
        if ts == "auto":
            ts = (peer.ts_recent, 0) if peer.ts_ok else None
        assert not isinstance(ts, str)
        if wnd is None:
            wnd = next((s.seg.wnd for s in reversed(self.log)
                        if s.src == src and not s.seg.flags & SYN), 0xFFFF)
        opts = tcp.build_options(mss=mss, ts=ts, sack=sack)
        hdr = tcp.header(me.local[0], me.remote[0], me.local[1], me.remote[1], seq, ack, flags,
                         wnd, opts, payload)
        seg = tcp.parse(memoryview(hdr + payload), me.local[0], me.remote[0])
        assert isinstance(seg, Segment)
        return seg

    def inject(self, src: str, seg: Segment) -> list[Segment]:
        """Deliver a forged segment; returns what the receiver answered at once."""
        dst = self.other(src)
        self.conn(dst).input(seg, self.now)
        answers = self.take(dst)
        for s in answers:
            self.log.append(Sent(self.now, dst, s, True))
        return answers


def xfer(p: Pipe, src: str, data: bytes, chunk: int = 1 << 16, max_ms: float = 600_000) -> None:
    """Write ``data`` from ``src`` (as room allows), reading at both ends, until it arrived."""
    c = p.conn(src)
    dst = p.other(src)
    before = len(p.data[dst])
    off = 0
    waited = 0.0
    while True:
        while off < len(data) and c.writable:
            off += c.send(data[off:off + chunk], p.now)
        p.run()
        p.read_all()
        if off == len(data) and len(p.data[dst]) - before >= len(data):
            break
        p.advance(10)
        waited += 10
        assert waited < max_ms, f"transfer stalled at {len(p.data[dst]) - before}/{len(data)}"
    assert bytes(p.data[dst][before:]) == data


def sha(b: bytes | bytearray) -> str:
    return hashlib.sha256(b).hexdigest()


def payload(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def assert_released(c: Connection) -> None:
    """A closed (or TIME-WAIT) connection keeps no timers and no send-side buffers."""
    if c.state == State.CLOSED:
        assert c.next_deadline() is None
    assert len(c.sndbuf) == 0 and not c.ooo and not c.sacked


def established(cfg_a: TcpConfig | None = None, cfg_b: TcpConfig | None = None,
                **kw: Any) -> Pipe:
    p = Pipe(cfg_a, cfg_b, **kw)
    p.open()
    p.a.events = p.b.events = SocketEvent(0)
    return p


NO_OPTS = TcpConfig(timestamps=False, sack=False, window_scaling=False)


# == opening ==============================================================================


def test_three_way_handshake() -> None:
    p = Pipe(mtu_a=1500, mtu_b=1000)
    p.open()
    syn, synack, ack = (s.seg for s in p.log[:3])
    assert [s.src for s in p.log[:3]] == ["a", "b", "a"] and len(p.log) == 3
    # <SEQ=ISS><CTL=SYN>, <SEQ=ISS'><ACK=ISS+1><CTL=SYN,ACK>, <SEQ=ISS+1><ACK=ISS'+1><CTL=ACK>
    assert (syn.flags, syn.seq) == (SYN, 1000)
    assert (synack.flags, synack.seq, synack.ack) == (SYN | ACK, 500_000, 1001)
    assert (ack.flags & (SYN | ACK | FIN | RST), ack.seq, ack.ack) == (ACK, 1001, 500_001)
    assert not syn.payload and not synack.payload and not ack.payload
    # MSS: each side offers its own (MTU - 40) and sends at most the smaller, less options
    assert syn.mss == 1460 and synack.mss == 960
    assert ack.mss is None  # MSS only in SYNs (RFC 9293 §3.7.1)
    assert p.a.mss == p.b.mss == 960 - tcp.TS_OPTION_LEN
    # window scale, SACK-permitted and timestamps offered and accepted
    assert syn.wscale is not None and synack.wscale is not None
    assert 0 <= syn.wscale <= 14 and 0 <= synack.wscale <= 14
    assert p.a.snd_wscale == synack.wscale and p.b.snd_wscale == syn.wscale
    assert p.a.rcv_wscale == syn.wscale and p.b.rcv_wscale == synack.wscale
    assert syn.sack_ok and synack.sack_ok and p.a.sack_ok and p.b.sack_ok
    assert syn.ts is not None and synack.ts is not None and ack.ts is not None
    assert synack.ts[1] == syn.ts[0] and ack.ts[1] == synack.ts[0]  # TSecr echoes TSval
    assert p.a.ts_ok and p.b.ts_ok
    # RFC 7323 §2.2: the window in a SYN or SYN-ACK is never scaled
    assert p.a.snd_wnd == synack.wnd
    assert p.b.snd_wnd == ack.wnd << p.b.snd_wscale  # ... but every later one is
    assert p.a.events & SocketEvent.CONN and p.a.events & SocketEvent.WR
    assert p.b.events & SocketEvent.CONN and p.b.events & SocketEvent.WR
    assert p.a.next_deadline() is None and p.b.next_deadline() is None  # nothing outstanding


@pytest.mark.parametrize("mtu_b", [576, 1000, 9000])
def test_segments_fit_the_smaller_mss(mtu_b: int) -> None:
    p = established(mtu_a=1500, mtu_b=mtu_b)
    data = payload(50_000)
    xfer(p, "a", data)
    xfer(p, "b", data)
    limit = min(1500, mtu_b) - 40  # RFC 9293 §3.7.1: options come out of the MSS
    for s in p.log:
        assert len(s.seg.payload) <= limit - tcp.TS_OPTION_LEN, (s.src, len(s.seg.payload))
    assert max(len(s.seg.payload) for s in p.log if s.src == "a") == limit - tcp.TS_OPTION_LEN


def test_options_come_out_of_the_mss() -> None:
    """RFC 9293 §3.7.1 (MUST-16): Eff.snd.MSS = min(SendMSS+20, MMS_S) - TCPhdrsize -
    IPoptionsize, TCPhdrsize counting the options: a data segment carrying SACK blocks
    carries that much less data, and no segment exceeds the MTU."""
    p = established()
    b = p.b
    # b's data reaches a out of order: a has SACK blocks to report for a while
    p.hold = lambda src, s: src == "b" and s.seq == p.b.snd_una and bool(s.payload)
    b.send(payload(8 * b.mss), p.now)
    p.run()
    assert p.a.ooo
    p.hold = None
    p.a.send(payload(20 * p.a.mss), p.now)
    out = list(p.a.outbox)
    assert out
    for hdr, data in out:
        assert 20 + len(hdr) + len(data) <= 1500, (len(hdr), len(data))


def test_no_mss_option_means_536() -> None:
    """RFC 9293 §3.7.1 (MUST-15): without an MSS option, assume 536."""
    p = Pipe(TcpConfig(timestamps=False), TcpConfig(timestamps=False), mtu_b=9000)
    syn = p.forge("a", 1000, 0, SYN, wnd=65535, ts=None)
    assert syn.mss is None
    p.b.accept_syn(syn, p.now)
    synack = p.take("b")[0]
    assert synack.mss == 8960
    assert p.b.mss == 536


@dataclass(frozen=True)
class Offer:
    ws: bool
    ts: bool
    sack: bool


OFFERS = [Offer(ws, ts, sack) for ws in (False, True) for ts in (False, True)
          for sack in (False, True)]


@pytest.mark.parametrize("oa", OFFERS, ids=str)
@pytest.mark.parametrize("ob", [Offer(True, True, True), Offer(False, False, False),
                                Offer(True, False, True), Offer(False, True, False)], ids=str)
def test_options_used_only_when_both_offer(oa: Offer, ob: Offer) -> None:
    ca = TcpConfig(window_scaling=oa.ws, timestamps=oa.ts, sack=oa.sack, rcvbuf=1 << 20)
    cb = TcpConfig(window_scaling=ob.ws, timestamps=ob.ts, sack=ob.sack, rcvbuf=1 << 20)
    p = established(ca, cb)
    syn, synack = p.log[0].seg, p.log[1].seg
    assert (syn.wscale is not None, syn.ts is not None, syn.sack_ok) == (oa.ws, oa.ts, oa.sack)
    # a SYN-ACK carries an option only if the SYN did (RFC 7323 §1.3, §3.2; RFC 2018 §2)
    assert (synack.wscale is not None) == (oa.ws and ob.ws)
    assert (synack.ts is not None) == (oa.ts and ob.ts)
    assert synack.sack_ok == (oa.sack and ob.sack)
    ws, ts, sack = oa.ws and ob.ws, oa.ts and ob.ts, oa.sack and ob.sack
    for c in (p.a, p.b):
        assert c.ts_ok == ts and c.sack_ok == sack
        if not ws:
            assert c.snd_wscale == 0 and c.rcv_wscale == 0
        else:
            assert c.rcv_wscale > 0  # a 1 MiB buffer needs a shift
    data = payload(300_000)
    xfer(p, "a", data)
    xfer(p, "b", data[:100_000])
    for s in p.log[2:]:
        # RFC 7323 §3.2: once negotiated, TSopt in every non-RST segment; else in none
        assert (s.seg.ts is not None) == ts, s
        if not sack:
            assert s.seg.sack == []


def test_simultaneous_open() -> None:
    """RFC 9293 §3.5 figure 8: SYNs cross, both go SYN-RECEIVED, then ESTABLISHED."""
    p = Pipe()
    p.a.connect(p.now)
    p.b.connect(p.now)
    syn_a, syn_b = p.take("a"), p.take("b")
    assert [s.flags for s in syn_a + syn_b] == [SYN, SYN]
    p.deliver("a", syn_a[0])
    p.deliver("b", syn_b[0])
    assert p.a.state == p.b.state == State.SYN_RECEIVED
    p.run()
    assert p.a.state == p.b.state == State.ESTABLISHED
    assert p.a.events & SocketEvent.CONN and p.b.events & SocketEvent.CONN
    assert p.a.ts_ok and p.b.ts_ok and p.a.sack_ok and p.b.sack_ok
    assert p.a.snd_wscale == p.b.rcv_wscale and p.b.snd_wscale == p.a.rcv_wscale
    assert p.a.rcv_nxt == p.b.snd_nxt and p.b.rcv_nxt == p.a.snd_nxt
    data = payload(100_000)
    xfer(p, "a", data)
    xfer(p, "b", data)


def test_rst_in_syn_received_after_simultaneous_open_is_refused() -> None:
    """RFC 9293 §3.10.7.4: SYN-RECEIVED from an active OPEN: a RST means 'refused'."""
    p = Pipe()
    p.a.connect(p.now)
    p.b.connect(p.now)
    p.take("a")  # a's SYN is lost
    syn_b = p.take("b")
    p.deliver("b", syn_b[0])  # a: SYN-SENT -> SYN-RECEIVED
    p.take("a")
    assert p.a.state == State.SYN_RECEIVED
    p.inject("b", p.forge("b", p.a.rcv_nxt, 0, RST, ts=None))
    assert p.a.state == State.CLOSED and p.a.error == errno.ECONNREFUSED
    assert_released(p.a)


def test_syn_received_answers_bad_ack_with_rst() -> None:
    """RFC 9293 §3.10.7.4 (SYN-RECEIVED, fifth check): unacceptable ACK: <SEQ=SEG.ACK><RST>."""
    p = Pipe()
    p.a.connect(p.now)
    p.b.accept_syn(p.take("a")[0], p.now)
    p.take("b")
    out = p.inject("a", p.forge("a", p.b.rcv_nxt, 12345, ACK, ts=None))
    assert [(s.flags & RST, s.seq) for s in out] == [(RST, 12345)]
    assert p.b.state == State.SYN_RECEIVED


def test_lost_syn_ack_is_retransmitted() -> None:
    p = Pipe()
    p.drop = lambda src, s: src == "b" and bool(s.flags & SYN) and p.now < T0 + 500
    p.a.connect(p.now)
    syn = p.take("a")[0]
    p.log.append(Sent(p.now, "a", syn, False))
    p.b.accept_syn(syn, p.now)
    p.run()
    assert p.a.state == State.SYN_SENT and p.b.state == State.SYN_RECEIVED
    p.advance(3000)
    assert p.a.state == p.b.state == State.ESTABLISHED


def test_lost_final_ack_is_recovered() -> None:
    p = Pipe()
    p.drop = lambda src, s: src == "a" and s.flags == ACK and not s.payload and p.now < T0 + 1
    p.a.connect(p.now)
    syn = p.take("a")[0]
    p.b.accept_syn(syn, p.now)
    p.run()
    assert p.a.state == State.ESTABLISHED and p.b.state == State.SYN_RECEIVED
    p.advance(1100)  # b retransmits its SYN-ACK, a answers with an ACK
    assert p.b.state == State.ESTABLISHED


def test_data_on_the_third_ack_is_delivered() -> None:
    p = Pipe()
    p.a.connect(p.now)
    p.b.accept_syn(p.take("a")[0], p.now)
    synack = p.take("b")[0]
    p.a.input(synack, p.now)
    p.take("a")  # the bare ACK: lost
    p.a.send(b"hello", p.now)
    p.run()
    assert p.b.state == State.ESTABLISHED and p.b.recv(100, p.now) == b"hello"


def test_connect_refused_by_rst() -> None:
    """RFC 9293 §3.10.7.3: an acceptable RST in SYN-SENT: 'connection reset' (refused)."""
    p = Pipe()
    p.a.connect(p.now)
    syn = p.take("a")[0]
    p.inject("b", p.forge("b", 0, seq_add(syn.seq, 1), RST | ACK, wnd=0, ts=None))
    assert p.a.state == State.CLOSED and p.a.error == errno.ECONNREFUSED
    assert p.a.events & SocketEvent.ERR
    assert_released(p.a)


def test_syn_sent_ignores_rst_with_bad_ack_and_rst_without_ack() -> None:
    p = Pipe()
    p.a.connect(p.now)
    p.take("a")
    assert p.inject("b", p.forge("b", 0, 999, RST | ACK, ts=None)) == []  # unacceptable ACK
    assert p.inject("b", p.forge("b", 0, 0, RST, ts=None)) == []  # RFC 5961 §3.2: no ACK bit
    assert p.a.state == State.SYN_SENT


def test_syn_sent_answers_bad_ack_with_rst() -> None:
    """RFC 9293 §3.10.7.3: SEG.ACK =< ISS or > SND.NXT: <SEQ=SEG.ACK><CTL=RST>."""
    p = Pipe()
    p.a.connect(p.now)
    p.take("a")
    out = p.inject("b", p.forge("b", 7777, 5, SYN | ACK, ts=None))
    assert [(s.flags & RST, s.seq) for s in out] == [(RST, 5)]
    assert p.a.state == State.SYN_SENT


# == closing ===============================================================================


def test_active_close_and_time_wait_lasts_2msl() -> None:
    cfg = TcpConfig(msl_ms=5_000)
    p = established(cfg, cfg)
    p.a.shutdown_write(p.now)
    fin = p.take("a")
    assert [s.flags & FIN for s in fin] == [FIN] and p.a.state == State.FIN_WAIT_1
    p.deliver("a", fin[0])
    ack = p.take("b")
    assert p.b.state == State.CLOSE_WAIT and p.b.events & SocketEvent.CLOSE
    assert p.b.eof
    p.deliver("b", ack[0])
    assert p.a.state == State.FIN_WAIT_2
    p.b.shutdown_write(p.now)
    assert p.b.state == State.LAST_ACK
    p.run()
    assert p.a.state == State.TIME_WAIT and p.b.state == State.CLOSED
    assert p.b.error == 0 and p.b.events & SocketEvent.FIN and not p.b.events & SocketEvent.ERR
    entered = p.now
    assert p.a.next_deadline() == entered + 2 * 5_000
    p.advance(2 * 5_000 - 1)
    assert p.a.state == State.TIME_WAIT
    p.advance(1)
    assert p.a.state == State.CLOSED and p.a.error == 0
    assert p.a.events & SocketEvent.FIN
    assert_released(p.a)
    assert_released(p.b)


def test_time_wait_acks_a_retransmitted_fin_and_restarts_2msl() -> None:
    """RFC 9293 §3.10.7.4 (TIME-WAIT): the only thing that can arrive is a retransmission of
    the remote FIN: acknowledge it, and restart the 2 MSL timeout."""
    cfg = TcpConfig(msl_ms=5_000)
    p = established(cfg, cfg)
    p.a.shutdown_write(p.now)
    p.run()
    p.b.shutdown_write(p.now)
    # a's ACK of b's FIN is lost
    p.drop = lambda src, s: src == "a"
    p.run()
    p.drop = None
    assert p.a.state == State.TIME_WAIT and p.b.state == State.LAST_ACK
    p.advance(4_000)
    assert p.b.state == State.CLOSED  # b's FIN came again, a acknowledged it
    refin = [s for s in p.log if s.src == "b" and s.seg.flags & FIN]
    assert len(refin) == 2
    assert p.a.state == State.TIME_WAIT
    assert p.a.next_deadline() == refin[-1].t + 2 * 5_000


def test_passive_close() -> None:
    p = established()
    p.b.shutdown_write(p.now)
    p.run()
    assert p.b.state == State.FIN_WAIT_2 and p.a.state == State.CLOSE_WAIT
    assert p.a.events & SocketEvent.CLOSE and p.a.eof and p.a.recv(10, p.now) == b""
    p.a.shutdown_write(p.now)
    fin = p.take("a")
    assert p.a.state == State.LAST_ACK and fin[0].flags & FIN
    p.deliver("a", fin[0])
    p.run()
    assert p.a.state == State.CLOSED and p.b.state == State.TIME_WAIT
    assert p.a.events & SocketEvent.FIN and p.a.error == 0
    assert_released(p.a)
    p.advance(2 * p.b.cfg.msl_ms)
    assert p.b.state == State.CLOSED
    assert_released(p.b)


def test_last_ack_retransmits_fin_until_acked() -> None:
    p = established()
    p.b.shutdown_write(p.now)
    p.run()
    p.drop = lambda src, s: src == "a" and bool(s.flags & FIN)
    p.a.shutdown_write(p.now)
    p.run()
    assert p.a.state == State.LAST_ACK
    p.drop = None
    p.advance(5_000)
    assert p.a.state == State.CLOSED and p.b.state == State.TIME_WAIT


def test_simultaneous_close_goes_through_closing() -> None:
    p = established()
    p.a.shutdown_write(p.now)
    p.b.shutdown_write(p.now)
    fa, fb = p.take("a"), p.take("b")
    assert fa[0].flags & FIN and fb[0].flags & FIN
    p.deliver("a", fa[0])
    p.deliver("b", fb[0])
    assert p.a.state == p.b.state == State.CLOSING
    p.run()
    assert p.a.state == p.b.state == State.TIME_WAIT
    p.advance(2 * p.a.cfg.msl_ms)
    assert p.a.state == p.b.state == State.CLOSED
    for c in (p.a, p.b):
        assert c.error == 0
        assert_released(c)


def test_fin_wait_1_straight_to_time_wait() -> None:
    """RFC 9293 §3.10.7.4: FIN-WAIT-1 gets a FIN that also ACKs our FIN: TIME-WAIT."""
    p = established()
    p.a.send(b"last words", p.now)
    p.a.shutdown_write(p.now)
    for seg in p.take("a"):
        p.deliver("a", seg)
    assert p.b.recv(100, p.now) == b"last words" and p.b.eof
    p.b.shutdown_write(p.now)
    fin = [s for s in p.take("b") if s.flags & FIN]  # the bare ACK before it is lost
    assert len(fin) == 1 and fin[0].flags & ACK and fin[0].ack == p.a.snd_max
    assert p.a.state == State.FIN_WAIT_1
    p.deliver("b", fin[0])
    assert p.a.state == State.TIME_WAIT


@pytest.mark.parametrize("closer", ["a", "b"])
def test_half_close_with_data_flowing_the_other_way(closer: str) -> None:
    p = established()
    other = Pipe.other(closer)
    c, o = p.conn(closer), p.conn(other)
    xfer(p, closer, b"request")
    c.shutdown_write(p.now)
    p.run()
    assert c.state == State.FIN_WAIT_2 and o.state == State.CLOSE_WAIT
    with pytest.raises(OSError) as e:
        c.send(b"more", p.now)
    assert e.value.errno == errno.EPIPE
    data = payload(400_000, seed=7)
    xfer(p, other, data)  # the half-closed side keeps receiving
    assert sha(p.data[closer]) == sha(data)
    assert o.eof and not c.eof
    o.shutdown_write(p.now)
    p.run()
    p.read_all()
    assert c.eof and c.state == State.TIME_WAIT and o.state == State.CLOSED


def test_abort_sends_rst_and_peer_gets_econnreset() -> None:
    p = established()
    xfer(p, "a", b"x" * 1000)
    p.a.abort(p.now)
    out = p.take("a")
    assert [s.flags & RST for s in out] == [RST] and out[0].seq == p.a.snd_nxt
    p.deliver("a", out[0])
    assert p.b.state == State.CLOSED and p.b.error == errno.ECONNRESET
    assert p.b.events & SocketEvent.ERR
    assert_released(p.a)
    assert_released(p.b)


# == RFC 5961 ===============================================================================


def test_rst_exact_sequence_resets() -> None:
    """RFC 5961 §3.2: RST with SEG.SEQ == RCV.NXT: reset the connection."""
    p = established()
    a = p.a
    out = p.inject("b", p.forge("b", a.rcv_nxt, 0, RST))
    assert out == []
    assert a.state == State.CLOSED and a.error == errno.ECONNRESET
    assert a.events & SocketEvent.ERR
    assert_released(a)


@pytest.mark.parametrize("off", [1, 1000, 30_000])
def test_rst_in_window_but_not_exact_draws_challenge_ack(off: int) -> None:
    """RFC 5961 §3.2: in the window but not RCV.NXT: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>."""
    p = established()
    a = p.a
    out = p.inject("b", p.forge("b", seq_add(a.rcv_nxt, off), 0, RST))
    assert a.state == State.ESTABLISHED and a.error == 0
    assert [(s.flags, s.seq, s.ack) for s in out] == [(ACK, a.snd_nxt, a.rcv_nxt)]
    xfer(p, "a", b"still here")
    xfer(p, "b", b"and here")


@pytest.mark.parametrize("where", ["before", "right_edge", "far"])
def test_rst_out_of_window_is_silently_dropped(where: str) -> None:
    """RFC 5961 §3.2 (1): outside the window: silently drop."""
    p = established()
    a = p.a
    wnd = seq_diff(a.rcv_adv, a.rcv_nxt)
    seq = {"before": seq_add(a.rcv_nxt, -1), "right_edge": seq_add(a.rcv_nxt, wnd),
           "far": seq_add(a.rcv_nxt, 0x40000000)}[where]
    out = p.inject("b", p.forge("b", seq, 0, RST))
    assert out == [] and a.state == State.ESTABLISHED


@pytest.mark.parametrize("where", ["exact", "in_window", "old", "far"])
def test_syn_in_established_draws_challenge_ack(where: str) -> None:
    """RFC 5961 §4.2: a SYN, whatever its sequence number: challenge ACK, no reset."""
    p = established()
    a = p.a
    seq = {"exact": a.rcv_nxt, "in_window": seq_add(a.rcv_nxt, 500),
           "old": seq_add(a.rcv_nxt, -5000), "far": seq_add(a.rcv_nxt, 0x50000000)}[where]
    out = p.inject("b", p.forge("b", seq, 0, SYN))
    assert a.state == State.ESTABLISHED
    assert [(s.flags, s.seq, s.ack) for s in out] == [(ACK, a.snd_nxt, a.rcv_nxt)]
    out = p.inject("b", p.forge("b", seq, a.snd_nxt, SYN | ACK))
    assert a.state == State.ESTABLISHED
    assert all(not s.flags & (RST | SYN) for s in out)
    xfer(p, "b", b"unharmed")


def test_ack_beyond_snd_nxt_is_dropped_with_ack() -> None:
    """RFC 5961 §5.2 / RFC 9293: SEG.ACK > SND.NXT: send an ACK, drop the segment."""
    p = established()
    a = p.a
    before = (a.snd_una, a.rcv_nxt)
    out = p.inject("b", p.forge("b", a.rcv_nxt, seq_add(a.snd_nxt, 100), ACK | PSH,
                                payload=b"injected"))
    assert a.readable == 0 and (a.snd_una, a.rcv_nxt) == before
    assert [(s.flags, s.seq, s.ack) for s in out] == [(ACK, a.snd_nxt, a.rcv_nxt)]
    xfer(p, "b", b"real data")
    assert bytes(p.data["a"]) == b"real data"


def test_ack_too_old_is_dropped_with_ack_but_old_ack_in_range_is_fine() -> None:
    """RFC 5961 §5.2: acceptable iff SND.UNA - MAX.SND.WND =< SEG.ACK =< SND.NXT."""
    p = established()
    xfer(p, "a", payload(20_000))
    a = p.a
    old = seq_add(a.snd_una, -(a.max_snd_wnd + 1))
    out = p.inject("b", p.forge("b", a.rcv_nxt, old, ACK, payload=b"blind"))
    assert a.readable == 0
    assert [(s.flags, s.seq, s.ack) for s in out] == [(ACK, a.snd_nxt, a.rcv_nxt)]
    # an old ACK still inside MAX.SND.WND: the data is taken (the ACK is just a duplicate)
    out = p.inject("b", p.forge("b", a.rcv_nxt, seq_add(a.snd_una, -100), ACK,
                                payload=b"fine"))
    assert a.recv(10, p.now) == b"fine"


def test_an_ack_at_the_right_edge_of_the_window_is_taken() -> None:
    """A peer that filled our window and lost that data sends its ACKs with SEQ at our
    right edge: Linux and BSD take them (SEG.SEQ =< RCV.NXT + RCV.WND for an empty
    segment). Dropped, its ACK field is never seen, while it drops ours after our RTO
    (SEQ behind its RCV.NXT), and neither side moves again."""
    p = established()
    a = p.a
    a.send(payload(3000), p.now)
    p.take("a")  # lost, as far as this test goes: b's ACK below says it came
    edge = a.rcv_adv
    assert a.snd_una != a.snd_nxt
    out = p.inject("b", p.forge("b", seq_add(edge, 1), a.snd_nxt, ACK))
    assert a.snd_una != a.snd_nxt  # past the edge: still unacceptable, answered with an ACK
    assert [(s.flags, s.seq, s.ack) for s in out] == [(ACK, a.snd_nxt, a.rcv_nxt)]
    sent = a.snd_nxt
    p.inject("b", p.forge("b", edge, sent, ACK))
    assert a.snd_una == sent  # taken: what was in flight is acknowledged


def test_challenge_acks_are_rate_limited() -> None:
    """RFC 5961 §7: challenge ACKs are throttled: one per invalid_ack_interval_ms per
    connection (more in tests/unit/test_tcp_limits.py)."""
    cfg = TcpConfig(invalid_ack_interval_ms=500)
    p = established(cfg, cfg)
    a = p.a
    acks = 0
    for i in range(50):
        acks += len(p.inject("b", p.forge("b", seq_add(a.rcv_nxt, 10 + i), 0, RST)))
    assert acks == 1 and a.stats["challenge_acks_limited"] == 49
    p.now += 500
    acks2 = sum(len(p.inject("b", p.forge("b", seq_add(a.rcv_nxt, 10), 0, SYN)))
                for _ in range(50))
    assert acks2 == 1
    assert a.state == State.ESTABLISHED


def test_paws_drops_old_timestamp_and_acks() -> None:
    """RFC 7323 §5.3 R1: SEG.TSval < TS.Recent: not acceptable; send an ACK and drop."""
    p = established()
    xfer(p, "b", b"warm up")
    a = p.a
    recent = a.ts_recent
    out = p.inject("b", p.forge("b", a.rcv_nxt, a.snd_nxt, ACK, payload=b"stale",
                                ts=(seq_add(recent, -1), 0)))
    assert a.readable == 0 and a.ts_recent == recent
    assert [(s.flags, s.seq, s.ack) for s in out] == [(ACK, a.snd_nxt, a.rcv_nxt)]
    out = p.inject("b", p.forge("b", a.rcv_nxt, a.snd_nxt, ACK, payload=b"fresh",
                                ts=(seq_add(recent, 5), 0)))
    assert a.recv(10, p.now) == b"fresh" and a.ts_recent == seq_add(recent, 5)


def test_delayed_ack_echoes_the_earliest_unacknowledged_tsval() -> None:
    """RFC 7323 §4.3: with delayed ACKs, TSecr echoes the earliest unacknowledged segment."""
    p = established()
    mss = p.a.mss
    p.a.send(b"x" * mss, p.now)
    p.run()
    first = [s.seg for s in p.log if s.src == "a" and s.seg.payload][-1]
    p.now += 10
    p.a.send(b"y" * mss, p.now)
    mark = p.mark()
    p.run()
    second = next(s.seg for s in p.log[mark:] if s.src == "a" and s.seg.payload)
    ack = next(s.seg for s in p.log[mark:] if s.src == "b")
    assert first.ts and second.ts and ack.ts and first.ts[0] != second.ts[0]
    assert ack.ts[1] == first.ts[0]


def test_fin_before_a_hole_is_filled() -> None:
    """A FIN that arrives ahead of missing data waits for the data (RFC 9293 §3.10.7.4)."""
    p = established()
    data = payload(5 * p.a.mss)
    p.hold = lambda src, s: src == "a" and s.seq == p.a.snd_una and bool(s.payload)
    p.a.send(data, p.now)
    p.a.shutdown_write(p.now)
    p.run()
    assert p.b.state == State.ESTABLISHED and not p.b.fin_received
    p.hold = None
    p.release()
    p.read_all()
    assert bytes(p.data["b"]) == data and p.b.state == State.CLOSE_WAIT and p.b.eof


def test_timestamps_wrap_without_paws_drops() -> None:
    """TSval comparisons are mod 2**32 too (RFC 7323 §5.2)."""
    p = established(ts_a=0xFFFFFFFF - 2_000 - int(T0), ts_b=0xFFFFFFFF - 500 - int(T0))
    data = payload(200_000)
    for _ in range(5):
        xfer(p, "a", data[:20_000])
        xfer(p, "b", data[:20_000])
        p.advance(1_000)
    assert p.a._ts_now(p.now) < 10_000 and p.b._ts_now(p.now) < 10_000  # both wrapped
    assert p.a.stats.get("paws_drops", 0) == 0 and p.b.stats.get("paws_drops", 0) == 0


# == retransmission timer (RFC 6298) ============================================================


def syn_times(p: Pipe, src: str = "a") -> list[float]:
    return [s.t - T0 for s in p.log if s.src == src and s.seg.flags & SYN]


def test_syn_rto_starts_at_1s_and_backs_off() -> None:
    cfg = TcpConfig(syn_retries=5)
    p = Pipe(cfg)
    p.drop = lambda src, s: True
    p.a.connect(p.now)
    p.advance(200_000)
    assert syn_times(p) == [0, 1000, 3000, 7000, 15000, 31000]
    assert p.a.state == State.CLOSED and p.a.error == errno.ETIMEDOUT
    assert p.a.events & SocketEvent.ERR
    assert_released(p.a)


def test_syn_is_retried_for_at_least_3_minutes() -> None:
    """RFC 9293 §3.8.3 (MUST-23): R2 for a SYN provides retransmission for >= 3 minutes."""
    p = Pipe()  # default configuration
    p.drop = lambda src, s: True
    p.a.connect(p.now)
    p.advance(179_999)
    assert p.a.state == State.SYN_SENT
    p.advance(3_600_000)
    assert p.a.state == State.CLOSED and p.a.error == errno.ETIMEDOUT
    assert syn_times(p)[-1] >= 0  # and it did give up in the end


def test_rto_capped_at_rto_max() -> None:
    """RFC 6298 §2.5: a maximum may be placed on RTO provided it is at least 60 s."""
    cfg = TcpConfig(syn_retries=10)
    assert cfg.rto_max_ms >= 60_000
    p = Pipe(cfg)
    p.drop = lambda src, s: True
    p.a.connect(p.now)
    p.advance(1_000_000)
    t = syn_times(p)
    gaps = [b - a for a, b in itertools.pairwise(t)]
    assert gaps[:6] == [1000, 2000, 4000, 8000, 16000, 32000]
    assert all(g == cfg.rto_max_ms for g in gaps[6:])


def test_data_retries_exhausted_gives_etimedout() -> None:
    cfg = TcpConfig(data_retries=3, tail_loss_probe=False)  # RTOs alone
    p = established(cfg, cfg)
    p.drop = lambda src, s: src == "a"
    p.a.send(b"doomed", p.now)
    p.advance(1_000_000)
    tx = [s for s in p.log if s.src == "a" and s.seg.payload]
    assert len(tx) == 1 + 3 and len({s.seg.seq for s in tx}) == 1
    gaps = [b.t - a.t for a, b in itertools.pairwise(tx)]
    assert gaps[1] == 2 * gaps[0] and gaps[2] == 2 * gaps[1]  # RFC 6298 §5.5
    assert p.a.state == State.CLOSED and p.a.error == errno.ETIMEDOUT
    assert p.a.events & SocketEvent.ERR
    assert_released(p.a)


def test_timeout_collapses_cwnd_to_the_loss_window() -> None:
    """RFC 5681 §3.1: on RTO, ssthresh = max(FlightSize/2, 2*SMSS), cwnd = 1 SMSS; so one
    segment goes out again at first, then slow start."""
    cfg = TcpConfig(sack=False, tail_loss_probe=False)
    p = established(cfg, cfg)
    a = p.a
    p.drop = lambda src, s: src == "a" and bool(s.payload)
    flight = 8 * a.mss
    a.send(payload(flight), p.now)
    p.run()
    assert seq_diff(a.snd_max, a.snd_una) == flight
    mark = p.mark()
    p.advance(a.rto)
    assert a.stats["timeouts"] == 1
    assert a.cc.ssthresh == max(flight // 2, 2 * a.mss) and a.cc.cwnd == a.mss
    resent = [s for s in p.log[mark:] if s.src == "a" and s.seg.payload]
    assert len(resent) == 1 and resent[0].seg.seq == a.snd_una
    p.drop = None
    p.advance(10_000)
    p.read_all()
    assert len(p.data["b"]) == flight


def test_initial_window() -> None:
    """RFC 5681 §3.1 / RFC 6928: the first flight is at most IW = min(10*MSS,
    max(2*MSS, 14600)) bytes."""
    p = established()
    a = p.a
    p.hold = lambda src, s: src == "a"
    a.send(payload(100_000), p.now)
    p.run()
    first = sum(len(s.payload) for _, s in p.held)
    assert 0 < first <= min(10 * a.mss, max(2 * a.mss, 14600))
    p.hold = None
    p.release()


def test_rto_min_is_honoured() -> None:
    """RFC 6298 §2.4: RTO rounded up to the minimum (1 s in the RFC; configurable)."""
    cfg = TcpConfig(rto_min_ms=1000.0, tail_loss_probe=False)
    p = established(cfg, cfg)
    xfer(p, "a", payload(100_000))
    assert p.a.srtt is not None and p.a.srtt < 100
    assert p.a.rto == 1000.0
    p.advance(100)  # everything acknowledged
    assert p.a.next_deadline() is None
    p.drop = lambda src, s: src == "a"
    mark = p.mark()
    p.a.send(b"lost", p.now)
    p.advance(999)
    assert len([s for s in p.log[mark:] if s.src == "a" and s.seg.payload]) == 1
    p.advance(1)
    assert len([s for s in p.log[mark:] if s.src == "a" and s.seg.payload]) == 2


class Scripted:
    """One ``Connection`` (a) and a peer the test plays by hand, for exact timing."""

    def __init__(self, cfg: TcpConfig, rtt: float = 100.0) -> None:
        self.p = Pipe(cfg, cfg)
        self.a = self.p.a
        self.a.connect(self.p.now)
        syn = self.p.take("a")[0]
        self.p.now += rtt
        self.peer_seq = 7001
        self.a.input(self.seg(SYN | ACK, seq=7000, ack=seq_add(syn.seq, 1), mss=1460),
                     self.p.now)
        self.p.take("a")
        assert self.a.state == State.ESTABLISHED

    def seg(self, flags: int, seq: int | None = None, ack: int | None = None,
            data: bytes = b"", wnd: int = 65535, mss: int | None = None) -> Segment:
        opt_bytes = tcp.build_options(mss=mss)
        hdr = tcp.header(B_IP, A_IP, B_PORT, A_PORT, self.peer_seq if seq is None else seq,
                         self.a.snd_nxt if ack is None else ack, flags, wnd, opt_bytes, data)
        s = tcp.parse(memoryview(hdr + data), B_IP, A_IP)
        assert isinstance(s, Segment)
        return s

    def at(self, t: float, seg: Segment) -> list[Segment]:
        self.p.now = T0 + t
        self.a.input(seg, self.p.now)
        return self.p.take("a")

    def send(self, t: float, data: bytes) -> list[Segment]:
        self.p.now = T0 + t
        self.a.send(data, self.p.now)
        return self.p.take("a")

    def timers(self, t: float) -> list[Segment]:
        out: list[Segment] = []
        while (d := self.a.next_deadline()) is not None and d <= T0 + t:
            self.p.now = d
            self.a.on_timer(d)
            out += self.p.take("a")
        self.p.now = T0 + t
        return out


def test_rtt_estimation_rfc6298_known_samples() -> None:
    """RFC 6298 §2.2-2.3 with K=4, alpha=1/8, beta=1/4 (timing the SYN and then data)."""
    cfg = TcpConfig(timestamps=False, rto_min_ms=1.0)
    s = Scripted(cfg, rtt=100.0)
    a = s.a
    assert (a.srtt, a.rttvar, a.rto) == (100.0, 50.0, 300.0)  # first sample: R, R/2
    s.send(100, b"x" * 100)
    s.at(400, s.seg(ACK))  # R = 300
    assert (a.srtt, a.rttvar, a.rto) == (125.0, 87.5, 475.0)
    s.send(400, b"y" * 100)
    s.at(450, s.seg(ACK))  # R = 50
    assert (a.srtt, a.rttvar) == (115.625, 84.375)
    assert a.rto == 115.625 + 4 * 84.375


def test_rtt_from_timestamps() -> None:
    """RFC 7323 §4: RTT from the echoed TSval (1 ms timestamp clock here)."""
    cfg = TcpConfig(rto_min_ms=1.0)
    s2 = Pipe(cfg, cfg)
    a = s2.a
    a.connect(s2.now)
    syn = s2.take("a")[0]
    assert syn.ts is not None
    s2.now += 100
    hdr = tcp.header(B_IP, A_IP, B_PORT, A_PORT, 7000, seq_add(syn.seq, 1), SYN | ACK, 65535,
                     tcp.build_options(mss=1460, ts=(55, syn.ts[0])), b"")
    synack = tcp.parse(memoryview(hdr), B_IP, A_IP)
    assert isinstance(synack, Segment)
    a.input(synack, s2.now)
    assert a.ts_ok and a.srtt == 100.0
    a.send(b"z" * 10, s2.now)
    data = s2.take("a")
    data = [d for d in data if d.payload]
    assert data and data[0].ts is not None
    s2.now += 250
    hdr = tcp.header(B_IP, A_IP, B_PORT, A_PORT, 7001, a.snd_nxt, ACK, 65535,
                     tcp.build_options(ts=(60, data[0].ts[0])), b"")
    ack = tcp.parse(memoryview(hdr), B_IP, A_IP)
    assert isinstance(ack, Segment)
    a.input(ack, s2.now)
    assert (a.srtt, a.rttvar) == (118.75, 75.0)
    assert a.rto == 118.75 + 300.0


def test_karn_no_sample_from_a_retransmitted_segment() -> None:
    """RFC 6298 §3 (Karn): no RTT sample from a retransmitted segment; RTO stays backed off
    until a new sample (RFC 6298 §5, after rule 5.7)."""
    cfg = TcpConfig(timestamps=False, rto_min_ms=1.0, tail_loss_probe=False)
    s = Scripted(cfg, rtt=100.0)
    a = s.a
    s.send(100, b"x" * 100)
    assert a.rto == 300.0
    rtx = s.timers(400)
    assert [len(x.payload) for x in rtx] == [100] and a.rto == 600.0
    s.at(410, s.seg(ACK))  # acks the retransmission (or the original?)
    assert (a.srtt, a.rttvar) == (100.0, 50.0)
    assert a.rto == 600.0
    s.send(410, b"y" * 100)
    s.at(510, s.seg(ACK))  # a clean sample of 100
    assert a.srtt == 100.0 and a.rto == 100.0 + 4 * 37.5


def test_karn_no_sample_after_fast_retransmit() -> None:
    """RFC 6298 §3: the segment that fast retransmit sent again must not be timed either."""
    cfg = TcpConfig(timestamps=False, sack=False, rto_min_ms=1.0)
    s = Scripted(cfg, rtt=1000.0)
    a = s.a
    assert a.srtt == 1000.0
    sent = s.send(1000, b"d" * (5 * a.mss))
    assert len(sent) == 5
    una = a.snd_una
    for t in (1010, 1011, 1012):  # segment 1 lost; 2..4 arrive and draw duplicate ACKs
        out = s.at(t, s.seg(ACK, ack=una))
    assert a.stats["fast_retransmits"] == 1 and out and out[0].seq == una
    s.at(1020, s.seg(ACK, ack=a.snd_max))  # everything acknowledged
    assert a.srtt == 1000.0, "RTT sampled from a segment that was retransmitted"


def test_rto_after_syn_retransmission_is_3s() -> None:
    """RFC 6298 §5.7: a SYN timed out and RTO < 3 s: RTO is 3 s when data transmission begins."""
    cfg = TcpConfig(timestamps=False)
    p = Pipe(cfg, cfg)
    p.a.connect(p.now)
    p.take("a")  # lost
    p.now += 1000
    p.a.on_timer(p.now)
    syn = p.take("a")
    assert len(syn) == 1 and syn[0].flags == SYN
    p.b.accept_syn(syn[0], p.now)
    p.run()
    assert p.a.state == State.ESTABLISHED and p.a.srtt is None  # Karn: the SYN was resent
    assert p.a.rto == 3000.0
    # and the first data segment, lost, is resent 3 s later
    p.drop = lambda src, s: src == "a"
    p.a.send(b"data", p.now)
    sent_at = p.now
    p.advance(2999)
    assert len([s for s in p.log if s.src == "a" and s.seg.payload]) == 1
    p.advance(1)
    tx = [s for s in p.log if s.src == "a" and s.seg.payload]
    assert len(tx) == 2 and tx[1].t == sent_at + 3000


# == delayed ACK (RFC 1122 §4.2.3.2, RFC 5681 §4.2) ===============================================


def test_delayed_ack_one_segment_acked_after_delack() -> None:
    p = established()
    b = p.b
    assert b.cfg.delack_ms < 500  # RFC 1122: MUST be less than 0.5 s
    mark = p.mark()
    p.a.send(b"x" * 100, p.now)
    p.run()
    assert [s.src for s in p.log[mark:]] == ["a"]  # no ACK yet
    assert b.next_deadline() == p.now + b.cfg.delack_ms
    p.advance(b.cfg.delack_ms - 1)
    assert [s.src for s in p.log[mark:]] == ["a"]
    p.advance(1)
    acks = [s.seg for s in p.log[mark:] if s.src == "b"]
    assert len(acks) == 1 and acks[0].ack == p.a.snd_nxt


def test_delayed_ack_every_second_full_segment() -> None:
    p = established()
    mss = p.a.mss
    mark = p.mark()
    p.a.send(b"x" * (4 * mss), p.now)
    p.run()
    srcs = [s.src for s in p.log[mark:]]
    assert srcs.count("b") == 2
    acks = [s.seg.ack for s in p.log[mark:] if s.src == "b"]
    start = seq_add(p.a.snd_nxt, -4 * mss)
    assert acks == [seq_add(start, 2 * mss), seq_add(start, 4 * mss)]
    assert p.b.next_deadline() is None


def test_out_of_order_segment_draws_immediate_dupack() -> None:
    """RFC 5681 §4.2: an out-of-order segment draws an immediate duplicate ACK."""
    p = established()
    mss = p.a.mss
    p.drop = lambda src, s: src == "a" and s.seq == p.a.snd_una and bool(s.payload)
    mark = p.mark()
    p.a.send(b"x" * (3 * mss), p.now)
    p.run()
    acks = [s.seg for s in p.log[mark:] if s.src == "b"]
    assert len(acks) == 2 and all(x.ack == p.b.rcv_nxt for x in acks)


# == zero window, persist timer ====================================================================


def test_zero_window_probes_back_off_and_no_data_is_lost() -> None:
    """RFC 9293 §3.8.6.1: probe a zero window, backing off exponentially; when the window
    opens (even if the update is lost) data flows again and nothing is lost."""
    cfg_b = TcpConfig(rcvbuf=8192)
    p = established(TcpConfig(), cfg_b)
    data = payload(60_000, seed=3)
    assert p.a.send(data, p.now) == len(data)
    p.advance(1_000)
    assert p.b.readable == 8192 and p.a.snd_wnd == 0  # b's buffer is full, nobody reads
    mark = p.mark()
    p.advance(300_000)
    probes = [s for s in p.log[mark:] if s.src == "a"]
    assert len(probes) >= 5
    gaps = [y.t - x.t for x, y in itertools.pairwise(probes)]
    assert all(g2 >= g1 for g1, g2 in itertools.pairwise(gaps))  # backoff
    assert gaps[1] == 2 * gaps[0] and gaps[2] == 2 * gaps[1]
    assert max(gaps) <= p.a.cfg.persist_max_ms
    # each probe drew an ACK showing the (still zero) window
    answers = [s for s in p.log[mark:] if s.src == "b"]
    assert len(answers) == len(probes) and all(s.seg.wnd == 0 for s in answers)
    assert p.a.state == State.ESTABLISHED  # a zero window never kills the connection
    # the application reads; the window update is lost; a later probe finds the window
    p.drop = lambda src, s: src == "b"
    mark = p.mark()
    p.data["b"] += p.b.recv(1 << 20, p.now)
    p.run()
    assert any(s.src == "b" and s.seg.wnd > 0 for s in p.log[mark:])
    p.drop = None
    for _ in range(100_000):
        p.read_all()
        if len(p.data["b"]) >= len(data):
            break
        p.advance(100)
    assert sha(p.data["b"]) == sha(data)


def test_zero_window_persists_for_long() -> None:
    """RFC 9293 §3.8.6.1 (MUST-67?): never give up while the receiver answers probes."""
    cfg_b = TcpConfig(rcvbuf=4096)
    p = established(TcpConfig(data_retries=3), cfg_b)
    p.a.send(payload(20_000), p.now)
    p.run()
    p.advance(30 * 60_000)
    assert p.a.state == State.ESTABLISHED
    assert p.a.stats.get("window_probes", 0) >= 25


def test_receiver_silly_window_avoidance() -> None:
    """RFC 9293 §3.8.6.2.2: do not open the window by less than min(RCV.BUFF/2, MSS)."""
    cfg_b = TcpConfig(rcvbuf=16384)
    p = established(TcpConfig(), cfg_b)
    p.a.send(payload(40_000), p.now)
    p.advance(1_000)
    assert p.a.snd_wnd == 0
    mark = p.mark()
    p.b.recv(100, p.now)
    p.run()
    p.advance(5_000)  # probes draw ACKs; none may offer a tiny window
    for s in p.log[mark:]:
        if s.src == "b":
            w = s.seg.wnd << p.a.snd_wscale
            assert w == 0 or w >= min(16384 // 2, p.b.mss_local)
    p.b.recv(p.b.mss_local, p.now)
    p.run()
    assert any(s.src == "b" and s.seg.wnd > 0 for s in p.log[mark:])


# == keepalive (RFC 1122 §4.2.3.6) =================================================================


def test_keepalive_is_off_by_default_and_idle_default_is_2h() -> None:
    p = established()
    assert not p.a.keepalive and p.a.cfg.keepalive_idle_ms >= 7_200_000
    assert p.a.next_deadline() is None
    p.advance(3 * 3_600_000)
    assert len(p.log) == 3


def test_keepalive_probes_after_idle_and_aborts_after_count() -> None:
    cfg = TcpConfig(keepalive_idle_ms=10_000, keepalive_interval_ms=1_000, keepalive_count=3)
    p = established(cfg, cfg)
    start = p.now
    p.a.set_keepalive(True, p.now)
    mark = p.mark()
    p.advance(9_999)
    assert p.mark() == mark
    p.advance(1)
    probe = [s for s in p.log[mark:] if s.src == "a"]
    assert len(probe) == 1 and not probe[0].seg.flags & (SYN | FIN | RST)
    assert len(probe[0].seg.payload) <= 1
    assert seq_lt(probe[0].seg.seq, p.a.snd_nxt)  # SEG.SEQ = SND.NXT - 1: draws an ACK
    assert [s.src for s in p.log[mark:]] == ["a", "b"]  # answered
    p.advance(10_000)
    assert len([s for s in p.log[mark:] if s.src == "a"]) == 2  # idle again, probe again
    assert p.a.state == State.ESTABLISHED
    # the peer vanishes: count probes, then the connection is dead
    assert p.now == start + 20_000
    p.drop = lambda src, s: src == "b"
    mark = p.mark()
    p.advance(10_000)  # the next probe is due 10 s after the last answer
    assert len([s for s in p.log[mark:] if s.src == "a"]) == 1
    p.advance(2_999)
    assert p.a.state == State.ESTABLISHED
    p.advance(1)
    probes = [s for s in p.log[mark:] if s.src == "a" and not s.seg.flags & RST]
    assert len(probes) == 3
    assert p.a.state == State.CLOSED and p.a.error == errno.ETIMEDOUT
    assert p.a.events & SocketEvent.ERR
    assert_released(p.a)


def test_keepalive_probe_answered_keeps_connection() -> None:
    cfg = TcpConfig(keepalive_idle_ms=1_000, keepalive_interval_ms=100, keepalive_count=2)
    p = established(cfg, cfg)
    p.a.set_keepalive(True, p.now)
    p.advance(3_600_000)
    assert p.a.state == State.ESTABLISHED
    xfer(p, "a", b"alive")


# == Nagle (RFC 896, RFC 9293 §3.7.4) ==============================================================


def test_nagle_coalesces_small_writes_while_data_in_flight() -> None:
    p = established()
    mark = p.mark()
    p.a.send(b"a", p.now)
    for ch in b"bcdef":
        p.a.send(bytes([ch]), p.now)
    segs = p.take("a")
    assert [bytes(s.payload) for s in segs] == [b"a"]  # one small segment in flight at a time
    for seg in segs:
        p.log.append(Sent(p.now, "a", seg, False))
        p.deliver("a", seg)
    p.run()
    assert [s.src for s in p.log[mark:]] == ["a"]  # b delays its ACK, a keeps waiting
    p.advance(p.b.cfg.delack_ms)
    later = [bytes(s.seg.payload) for s in p.log[mark:] if s.src == "a" and s.seg.payload]
    assert later[-1] == b"bcdef"
    p.read_all()
    assert bytes(p.data["b"]) == b"abcdef"


def test_nodelay_sends_each_write_at_once() -> None:
    """RFC 9293 §3.7.4 (MUST-17): an application can switch Nagle off."""
    p = established()
    p.a.nodelay = True
    for ch in b"abcdef":
        p.a.send(bytes([ch]), p.now)
    sent = [bytes(s.payload) for s in p.take("a")]
    assert sent == [b"a", b"b", b"c", b"d", b"e", b"f"]


# == loss recovery (RFC 5681, RFC 6582, RFC 2018) ==================================================


def lossy(p: Pipe, drop_idx: set[int]) -> None:
    """Drop the data segments from a whose index among a's first transmissions is in the set."""
    seen: dict[int, int] = {}

    def drop(src: str, s: Segment) -> bool:
        if src != "a" or not s.payload:
            return False
        if s.seq in seen:
            return False  # retransmissions get through
        seen[s.seq] = len(seen)
        return seen[s.seq] in drop_idx

    p.drop = drop


def test_fast_retransmit_on_third_dupack() -> None:
    nosack = TcpConfig(sack=False)
    p = established(nosack, nosack)
    a = p.a
    mss = a.mss
    lossy(p, {0})
    flight = 10 * mss
    a.send(payload(flight), p.now)
    p.run()
    assert a.stats["fast_retransmits"] == 1 and a.stats["timeouts"] == 0
    dupacks = [s for s in p.log if s.src == "b" and s.seg.ack == seq_add(p.b.irs, 1)
               and not s.seg.flags & SYN]
    assert len(dupacks) >= 3
    assert a.cc.ssthresh == max(flight // 2, 2 * mss)  # RFC 5681 eq. (4)
    p.read_all()
    assert len(p.data["b"]) == flight
    assert a.snd_una == a.snd_max and not a.in_recovery
    assert a.cc.cwnd <= a.cc.ssthresh + mss  # deflated on leaving recovery (RFC 6582 step 6)


def test_newreno_partial_ack_retransmits_next_hole() -> None:
    """RFC 6582 §3.2 step 5: a partial ACK retransmits the first unacknowledged segment at once
    and stays in recovery; the full ACK ends it. No timeout needed for two losses."""
    nosack = TcpConfig(sack=False)
    p = established(nosack, nosack)
    a = p.a
    lossy(p, {0, 3})
    data = payload(10 * a.mss)
    a.send(data, p.now)
    p.run()
    assert a.stats["timeouts"] == 0 and a.stats["fast_retransmits"] == 1
    rtx = [s.seg.seq for s in p.log if s.src == "a" and s.seg.payload]
    assert rtx.count(seq_add(a.iss, 1)) == 2 and rtx.count(seq_add(a.iss, 1 + 3 * a.mss)) == 2
    p.read_all()
    assert bytes(p.data["b"]) == data and not a.in_recovery


def test_three_dupacks_do_not_fire_twice_for_one_window() -> None:
    """RFC 6582 §3.2 step 1: no new fast retransmit until the ACK covers ``recover``."""
    nosack = TcpConfig(sack=False)
    p = established(nosack, nosack)
    lossy(p, {0, 3, 6})
    p.a.send(payload(10 * p.a.mss), p.now)
    p.run()
    assert p.a.stats["fast_retransmits"] == 1
    p.advance(10_000)
    p.read_all()
    assert len(p.data["b"]) == 10 * p.a.mss


def test_receiver_generates_sack_blocks() -> None:
    """RFC 2018 §4: the first block holds the segment that triggered the ACK."""
    p = established()
    a = p.a
    mss = a.mss
    p.hold = lambda src, s: src == "a" and bool(s.payload)
    a.send(payload(6 * mss), p.now)
    p.run()
    held = [s for _, s in p.held]
    p.held = []
    assert len(held) == 6
    start = held[0].seq

    def blk(i: int, j: int) -> tuple[int, int]:
        return seq_add(start, i * mss), seq_add(start, j * mss)

    def give(i: int) -> Segment:
        out = p.inject("a", held[i])
        assert len(out) == 1
        return out[0]

    ack = give(1)
    assert ack.ack == start and ack.sack == [blk(1, 2)]
    ack = give(3)
    assert ack.ack == start and ack.sack[0] == blk(3, 4) and blk(1, 2) in ack.sack
    ack = give(5)
    assert ack.sack[0] == blk(5, 6) and set(ack.sack) == {blk(1, 2), blk(3, 4), blk(5, 6)}
    assert len(ack.sack) <= 3  # with timestamps, three blocks fit
    ack = give(2)
    assert ack.sack[0] == blk(1, 4) and set(ack.sack) == {blk(1, 4), blk(5, 6)}
    ack = give(0)
    assert ack.ack == seq_add(start, 4 * mss) and ack.sack == [blk(5, 6)]
    ack = give(4)
    assert ack.ack == seq_add(start, 6 * mss) and ack.sack == []


def test_sack_option_only_when_negotiated() -> None:
    cfg = TcpConfig(sack=False)
    p = established(cfg, TcpConfig())
    lossy(p, {0})
    p.a.send(payload(5 * p.a.mss), p.now)
    p.run()
    assert all(s.seg.sack == [] for s in p.log)


def test_sack_blocks_that_lie_are_ignored() -> None:
    p = established()
    a = p.a
    p.drop = lambda src, s: src == "a"
    a.send(payload(5 * a.mss), p.now)
    p.run()
    una, smax = a.snd_una, a.snd_max
    lies = [(seq_add(smax, 100), seq_add(smax, 2000)),  # beyond SND.MAX
            (seq_add(una, a.mss), seq_add(smax, 1)),  # right edge past SND.MAX
            (seq_add(una, 3000), seq_add(una, 1000))]  # right < left
    for blocks in lies:
        p.inject("b", p.forge("b", a.rcv_nxt, una, ACK, sack=[blocks]))
    assert a.sacked == []
    assert a.stats.get("sack_invalid", 0) == 3
    good = (seq_add(una, a.mss), seq_add(una, 2 * a.mss))
    p.inject("b", p.forge("b", a.rcv_nxt, una, ACK, sack=[good]))
    assert a.sacked == [good]


def test_sacked_data_is_kept_and_resent_after_rto() -> None:
    """RFC 2018 §8: SACKed data is not discarded until cumulatively ACKed; after a
    retransmission timeout SACK information is ignored (the receiver may have reneged)."""
    p = established()
    a = p.a
    p.drop = lambda src, s: src == "a"
    data = payload(5 * a.mss)
    a.send(data, p.now)
    p.run()
    una = a.snd_una
    p.inject("b", p.forge("b", a.rcv_nxt, una, ACK,
                          sack=[(seq_add(una, a.mss), seq_add(una, 5 * a.mss))]))
    assert len(a.sndbuf) == len(data)
    p.drop = None
    p.advance(5_000)
    p.read_all()
    assert bytes(p.data["b"]) == data


def test_recovery_with_sack_and_random_loss() -> None:
    for seed in range(5):
        rng = random.Random(seed)
        p = established()
        p.drop = lambda src, s, rng=rng: bool(s.payload) and rng.random() < 0.08
        data = payload(300_000, seed)
        xfer(p, "a", data)
        xfer(p, "b", data[:100_000])
        assert sha(p.data["b"]) == sha(data)


# == sequence numbers wrapping (RFC 9293 §3.4) =====================================================


@pytest.mark.parametrize("cfg", [TcpConfig(), NO_OPTS], ids=["options", "no-options"])
def test_sequence_numbers_wrap_in_both_directions(cfg: TcpConfig) -> None:
    p = established(cfg, cfg, iss_a=0xFFFFF000, iss_b=0xFFFFFC00)
    rng = random.Random(42)
    p.drop = lambda src, s: bool(s.payload) and rng.random() < 0.05
    up, down = payload(200_000, 1), payload(150_000, 2)
    xfer(p, "a", up)
    xfer(p, "b", down)
    assert sha(p.data["b"]) == sha(up) and sha(p.data["a"]) == sha(down)
    assert p.a.snd_una < 0x10000000 and p.b.snd_una < 0x10000000  # both wrapped
    p.drop = None
    p.a.shutdown_write(p.now)
    p.b.shutdown_write(p.now)
    p.run()
    p.advance(2 * cfg.msl_ms)
    assert p.a.state == p.b.state == State.CLOSED


# == buffers and windows ===========================================================================


def ooo_bytes(c: Connection) -> int:
    q = c.ooo
    items = q.values() if isinstance(q, dict) else (buf for _, buf in q)
    return sum(len(x) for x in items)


def test_out_of_order_queue_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_b = TcpConfig(ooo_max_segments=4)
    p = established(TcpConfig(), cfg_b)
    lossy(p, {0, 2, 4, 6, 8})  # five holes: more disjoint ranges than b keeps
    worst = 0
    orig = Connection.input

    def watch(self: Connection, seg: Segment, now: float) -> None:
        nonlocal worst
        orig(self, seg, now)
        if self is p.b:
            worst = max(worst, len(p.b.ooo))

    monkeypatch.setattr(Connection, "input", watch)
    data = payload(10 * p.a.mss)
    p.a.send(data, p.now)
    p.run()
    assert worst <= 4 and p.b.stats.get("ooo_dropped", 0) >= 1
    p.advance(10_000)
    p.read_all()
    assert bytes(p.data["b"]) == data


def test_data_beyond_the_window_is_not_stored() -> None:
    p = established()
    b = p.b
    wnd = seq_diff(b.rcv_adv, b.rcv_nxt)
    out = p.inject("a", p.forge("a", seq_add(b.rcv_nxt, wnd), b.snd_nxt, ACK, b"x" * 100))
    assert not b.ooo and b.readable == 0 and out and out[0].ack == b.rcv_nxt
    # straddling the right edge (as advertised now): only what fits is kept
    wnd = seq_diff(b.rcv_adv, b.rcv_nxt)
    out = p.inject("a", p.forge("a", seq_add(b.rcv_nxt, wnd - 10), b.snd_nxt, ACK, b"y" * 100))
    assert ooo_bytes(b) <= 10


@pytest.mark.parametrize(("mtu", "rcvbuf"), [(1500, 8192), (1500, 100_000), (65535, 100_000),
                                             (65535, 70_000)])
def test_sender_never_exceeds_the_advertised_window(mtu: int, rcvbuf: int) -> None:
    """RFC 9293 §3.8.6: never send beyond SND.UNA + SND.WND (the Pipe checks every segment)."""
    p = established(TcpConfig(), TcpConfig(rcvbuf=rcvbuf), mtu_a=mtu, mtu_b=mtu)
    data = payload(400_000)
    off = p.a.send(data, p.now)
    p.run()
    assert p.b.readable <= rcvbuf
    for _ in range(100_000):
        if len(p.data["b"]) >= len(data):
            break
        if off < len(data):
            off += p.a.send(data[off:], p.now)
        p.data["b"] += p.b.recv(3000, p.now)
        p.run()
        assert p.b.readable <= rcvbuf
        if not p.b.readable:
            p.advance(50)
    assert sha(p.data["b"]) == sha(data)


def test_zero_receive_window_still_takes_acks() -> None:
    """RFC 9293 §3.10.7.4: with RCV.WND zero, no data is acceptable, but valid ACKs are."""
    p = established(TcpConfig(), TcpConfig(rcvbuf=4096))
    p.a.send(payload(20_000), p.now)
    p.advance(1_000)
    assert p.b.readable == 4096 and seq_diff(p.b.rcv_adv, p.b.rcv_nxt) == 0
    p.drop = lambda src, s: src == "a" and not s.payload  # only a's data segments get there
    p.b.send(b"reply" * 100, p.now)
    p.run()
    assert p.b.snd_una != p.b.snd_max
    # a's next segment carries data (refused: no room) and an ACK for b's reply (taken)
    p.drop = None
    p.inject("a", p.forge("a", p.b.rcv_nxt, p.b.snd_max, ACK, b"z"))
    assert p.b.snd_una == p.b.snd_max
    assert p.b.readable == 4096


def test_segment_without_ack_bit_is_dropped() -> None:
    """RFC 9293 §3.10.7.4, fifth check: if the ACK bit is off, drop the segment."""
    p = established()
    a = p.a
    p.inject("b", p.forge("b", a.rcv_nxt, 0, PSH, b"no ack bit"))
    p.inject("b", p.forge("b", a.rcv_nxt, 0, FIN))
    assert a.readable == 0 and a.state == State.ESTABLISHED and not a.fin_received


def test_data_written_in_syn_sent_goes_after_the_handshake() -> None:
    p = Pipe()
    p.a.connect(p.now)
    assert p.a.send(b"early", p.now) == 5
    syn = p.take("a")
    assert len(syn) == 1 and not syn[0].payload
    p.b.accept_syn(syn[0], p.now)
    p.run()
    p.read_all()
    assert bytes(p.data["b"]) == b"early"


def test_send_buffer_is_bounded() -> None:
    cfg = TcpConfig(sndbuf=10_000)
    p = established(cfg, cfg)
    p.drop = lambda src, s: True
    assert p.a.send(b"x" * 30_000, p.now) == 10_000
    assert p.a.writable == 0 and p.a.send(b"more", p.now) == 0


def test_closed_connection_has_no_deadline_and_no_buffers() -> None:
    p = established()
    p.drop = lambda src, s: src == "a" and bool(s.payload)
    p.a.send(payload(50_000), p.now)  # data queued and in flight, timers armed
    p.b.send(payload(1000), p.now)
    p.run()
    assert p.a.next_deadline() is not None
    p.inject("b", p.forge("b", p.a.rcv_nxt, 0, RST))
    assert p.a.state == State.CLOSED
    assert p.a.next_deadline() is None and len(p.a.sndbuf) == 0 and not p.a.ooo
    assert p.a.rcvbuf == b""  # reset: unread data is gone with the connection
    with pytest.raises(OSError) as e:
        p.a.send(b"x", p.now)
    assert e.value.errno == errno.ECONNRESET


def test_events_through_a_connection_life() -> None:
    p = Pipe()
    p.open()
    assert p.a.events == SocketEvent.CONN | SocketEvent.WR
    p.a.events = p.b.events = SocketEvent(0)
    p.a.send(b"ping", p.now)
    p.run()
    assert p.b.events & SocketEvent.RD
    p.advance(100)
    assert p.a.events & SocketEvent.WR  # room again once acknowledged
    p.a.events = p.b.events = SocketEvent(0)
    p.a.shutdown_write(p.now)
    p.run()
    assert p.b.events & SocketEvent.CLOSE and not p.b.events & SocketEvent.FIN
    p.b.shutdown_write(p.now)
    p.run()
    assert p.b.events & SocketEvent.FIN and not p.b.events & SocketEvent.ERR


def test_pipe_window_check_trips_on_overrun() -> None:
    """The pipe's own window check catches a sender that overruns (guards the guard)."""
    p = established()
    seg = p.forge("a", p.a.snd_nxt, p.a.rcv_nxt, ACK, b"x")
    p.edge["b"] = p.a.snd_nxt
    with pytest.raises(AssertionError):
        p._check_window("a", seg)


def test_tail_loss_probe_recovers_a_lost_tail_before_the_rto() -> None:
    """RFC 8985 §7: when the last segments of a flight are lost, a probe (the last
    segment again) goes out after PTO = max(2*SRTT, 10 ms), well before the RTO, and
    the SACK it draws starts recovery of the rest."""
    p = established()
    a = p.a
    assert a.srtt is not None and a.rto >= 200.0
    lost = {seq_add(a.snd_nxt, 1448 * i) for i in (2, 3)}  # segments 3 and 4 of 4
    p.drop = lambda src, s: src == "a" and s.seq in lost and len(s.payload) > 0
    a.send(b"t" * 4 * 1448, p.now)
    p.run()
    assert a.tlp_deadline is not None
    pto = a.tlp_deadline - p.now
    assert 10.0 <= pto < a.rto
    p.drop = None
    p.advance(pto)
    assert a.stats["tail_loss_probes"] == 1
    p.advance(50)  # recovery finishes on SACK information, not on the RTO
    assert a.snd_una == a.snd_max and a.stats["timeouts"] == 0
    assert bytes(p.b.rcvbuf) == b"t" * 4 * 1448


@pytest.mark.parametrize("later", [1, 2, 4])
def test_a_lost_resend_of_a_later_hole_is_resent_before_the_rto(later: int) -> None:
    """Two holes; the resend of the second is lost too. When SND.UNA reaches it, the
    copy sent in this recovery is watched as SND.UNA's own resend is (the idea of RFC
    8985): with SACKs for later data showing it lost, it goes again well before the RTO,
    although RFC 6675 NextSeg, past it already (HighRxt), would never go back to it."""
    cfg = TcpConfig(tail_loss_probe=False)  # no probe: only the mechanism under test acts
    p = established(cfg, cfg)
    a = p.a
    mss = a.mss
    first, second = seq_add(a.snd_nxt, mss), seq_add(a.snd_nxt, mss * (1 + later))
    sent: dict[int, int] = {}

    def drop(src: str, s: Segment) -> bool:
        if src != "a" or not s.payload:
            return False
        sent[s.seq] = sent.get(s.seq, 0) + 1
        return (s.seq == first and sent[s.seq] == 1) or (s.seq == second and sent[s.seq] <= 2)

    p.drop = drop
    data = payload(12 * mss)
    a.send(data, p.now)
    p.run()
    assert sent[second] == 2 and a.in_recovery  # sent, resent, both lost
    assert a.rto >= 200.0
    p.advance(50)
    assert a.stats["timeouts"] == 0 and a.stats.get("lost_retransmits") == 1
    assert sent[second] == 3 and a.snd_una == a.snd_max and not a.in_recovery
    p.read_all()
    assert bytes(p.data["b"]) == data


def test_no_tail_loss_probe_when_disabled() -> None:
    cfg = TcpConfig(tail_loss_probe=False)
    p = established(cfg, cfg)
    p.drop = lambda src, s: src == "a" and len(s.payload) > 0
    p.a.send(b"x" * 100, p.now)
    p.run()
    assert p.a.tlp_deadline is None


def test_fin_acked_late_after_a_timeout_still_counts() -> None:
    """Our FIN keeps its sequence number across an RTO: an ACK for it that arrives after
    the timeout (held in the network) completes FIN-WAIT-1 -> FIN-WAIT-2, with no second
    FIN at a new sequence number (RFC 9293 §3.10.7.4)."""
    cfg = TcpConfig(tail_loss_probe=False)  # the RTO alone
    p = established(cfg, cfg)
    a = p.a
    a.send(b"d" * 5000, p.now)
    a.shutdown_write(p.now)
    p.hold = lambda src, s: src == "b"  # every ACK from b is delayed
    p.run()
    fin_seq = a.fin_seq
    assert fin_seq is not None and a.state == State.FIN_WAIT_1
    p.hold = None
    p.advance(a.rto)  # the RTO fires with everything still unacknowledged
    assert a.stats["timeouts"] >= 1
    p.release()  # the old ACKs (including the FIN's) finally arrive
    p.run()
    assert a.state in (State.FIN_WAIT_2, State.TIME_WAIT)
    fins = [seq_add(s.seg.seq, len(s.seg.payload)) for s in p.log
            if s.src == "a" and s.seg.flags & FIN]
    assert set(fins) == {fin_seq}
    assert bytes(p.b.rcvbuf) == b"d" * 5000


def test_hostile_tiny_mss_is_clamped() -> None:
    """An MSS option of 1..12 must not make segments empty or the window negative."""
    from hilkit.stack.tcp_conn import MIN_SND_MSS

    p = Pipe()
    a = p.a
    a.connect(p.now)
    (syn,) = p.take("a")
    p.b.state = State.LISTEN
    syn.mss = 12  # as a hostile peer would announce it
    p.b.accept_syn(syn, p.now)
    (synack,) = p.take("b")
    synack.mss = 12
    a.input(synack, p.now)
    assert a.mss >= MIN_SND_MSS and p.b.mss >= MIN_SND_MSS
    assert a.cc.cwnd > 0


def test_orphan_in_fin_wait_2_ends_after_fin_wait2_ms() -> None:
    """A connection the application closed must not wait forever for a peer that never
    sends its FIN (Linux's tcp_fin_timeout): it closes after ``fin_wait2_ms``."""
    cfg = TcpConfig(fin_wait2_ms=5_000)
    p = established(cfg, cfg)
    a = p.a
    a.shutdown_write(p.now)
    a.orphan(p.now)
    p.run()
    assert a.state == State.FIN_WAIT_2 and p.b.state == State.CLOSE_WAIT
    p.advance(4_999)
    assert a.state == State.FIN_WAIT_2
    p.advance(1)
    assert a.state == State.CLOSED and a.error == 0 and a.next_deadline() is None


def test_data_for_an_orphan_draws_a_reset() -> None:
    """RFC 1122 §4.2.2.13: data arriving after the application closed gets a RST."""
    p = established()
    a, b = p.a, p.b
    a.shutdown_write(p.now)
    a.orphan(p.now)
    p.run()
    b.send(b"nobody reads this", p.now)
    p.run()
    assert a.state == State.CLOSED and a.stats["data_after_close"] == 1
    assert any(s.src == "a" and s.seg.flags & RST for s in p.log)
    assert b.state == State.CLOSED and b.error == errno.ECONNRESET

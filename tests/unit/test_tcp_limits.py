# mypy: disable-error-code="comparison-overlap"
"""What a peer can make hilkit's TCP spend, and the bounds on it.

- memory: the stack-wide budget (``TcpConfig.mem_*``, as Linux's tcp_mem), the
  per-connection minimums, the caps on connections; the receive window shrinks
  without its right edge moving back (RFC 9293 §3.8.6, RFC 7323 §2.4);
- CPU: out-of-order segments and SACK blocks cost what an in-order segment costs,
  however many ranges are queued; SACK blocks in RFC 2018 §4 order;
- challenge ACKs and ACKs for unacceptable segments, throttled per connection
  and per stack (RFC 5961 §7).

Work is counted, not timed (timing is for ``bench/tcp.py``): ``calls`` counts
every Python and C function call made while the stack handles one segment.
"""

from __future__ import annotations

import itertools
import random
import sys
from collections.abc import Callable
from typing import Any

from hilkit.services import CHARGEN_PORT, start_tcp_services
from hilkit.stack import StackConfig, TcpConfig, TcpSocket, TcpState
from hilkit.stack.stack import Stack
from hilkit.stack.tcp import ACK, PSH, SYN, Segment, seq_add, seq_diff, seq_lt
from hilkit.stack.tcp_budget import TcpBudget
from hilkit.stack.tcp_conn import Connection
from tests.memwire import StackPair
from tests.unit.test_tcp_conn import Pipe, established, ooo_bytes, payload

B_IP = "10.0.0.2"


# == memory ===================================================================================


def held(stack: Stack) -> int:
    """Bytes in every send buffer, receive buffer and out-of-order queue of ``stack``."""
    return sum(len(c.sndbuf) + len(c.rcvbuf) + ooo_bytes(c) for c in stack.tcp.conns.values())


SMALL = TcpConfig(sndbuf=64 * 1024, rcvbuf=64 * 1024, mem_low=64 * 1024,
                  mem_pressure=96 * 1024, mem_high=128 * 1024, sndbuf_min=4096,
                  rcvbuf_min=4096)
N_IDLE = 40


def chargen_clients(p: StackPair, n: int) -> list[TcpSocket]:
    """``n`` clients of b's chargen on a that never read."""
    out = []
    for _ in range(n):
        c = p.a.tcp_socket()
        c.connect((B_IP, CHARGEN_PORT))
        out.append(c)
        p.settle(4)
    p.advance(1_000, step=50)
    assert all(c.state == TcpState.ESTABLISHED for c in out)
    return out


def test_non_reading_chargen_clients_stay_within_the_budget_and_a_new_one_is_served() -> None:
    """Clients that never read may not make the server hold their sndbuf each: the total
    stays under mem_high plus each connection's guaranteed minimum, and a new client still
    connects, sends and receives."""
    p = StackPair(config=StackConfig(tcp=SMALL))
    start_tcp_services(p.b)
    idle = chargen_clients(p, N_IDLE)
    bound = SMALL.mem_high + (N_IDLE + 1) * SMALL.sndbuf_min
    assert held(p.b) <= bound, (held(p.b), bound)
    assert N_IDLE * SMALL.sndbuf > 4 * bound  # without the budget they would hold far more
    assert p.b.tcp.budget.pressure and p.b.stats["tcp.mem_pressure_entered"] >= 1
    # a new client: handshake, data both ways
    fresh = p.a.tcp_socket()
    fresh.connect((B_IP, CHARGEN_PORT))
    p.settle()
    assert fresh.connected
    assert fresh.send(b"hello chargen") == 13
    got = bytearray()
    for _ in range(50):
        p.advance(20)
        got += fresh.recv(1 << 16)
        if len(got) >= 8192:
            break
    assert len(got) >= 8192 and got[:72] == bytes(range(32, 104))
    conn = fresh.conn
    assert conn is not None and conn.snd_una == conn.snd_max  # our 13 bytes were acknowledged
    assert held(p.b) <= bound + SMALL.sndbuf_min
    assert all(c.state == TcpState.ESTABLISHED for c in idle)
    assert p.b.tcp.budget.held == held(p.b)  # the account matches the buffers


def test_budget_is_returned_when_connections_end() -> None:
    p = StackPair(config=StackConfig(tcp=SMALL))
    start_tcp_services(p.b)
    idle = chargen_clients(p, 10)
    assert p.b.tcp.budget.held > 0 and p.b.tcp.budget.users == 10
    for c in idle:
        c.abort()
    p.advance(1_000, step=50)
    assert p.b.tcp.budget.held == 0 and p.b.tcp.budget.users == 0 and not p.b.tcp.conns
    assert not p.b.tcp.budget.pressure


def test_connection_caps_are_counted_refusals() -> None:
    cfg = TcpConfig(max_connections=12, listener_max_connections=5)
    p = StackPair(config=StackConfig(tcp=cfg))
    p.a.tcp.config = TcpConfig()  # the clients' stack has no such caps
    start_tcp_services(p.b)

    def open_(port: int, n: int) -> list[TcpSocket]:
        out = []
        for _ in range(n):
            c = p.a.tcp_socket()
            c.connect((B_IP, port))
            out.append(c)
            p.settle(4)
        return out

    chargen = open_(CHARGEN_PORT, 6)
    assert sum(c.connected for c in chargen) == 5  # the listener's cap
    assert p.b.stats["tcp.listener_limit_refused"] >= 1
    others = open_(9, 5) + open_(7, 5)
    assert sum(c.connected for c in others) == 7  # 5 + 2: then the stack's cap
    assert p.b.stats["tcp.conn_limit_refused"] >= 3
    for c in chargen[:5]:
        c.abort()
    p.advance(3_000, step=100)  # the refused SYN is sent again, and now there is room
    assert chargen[5].connected


def test_defaults_bound_1000_chargen_clients() -> None:
    """The defaults' arithmetic: 1,000 clients that never read cost at most mem_high plus
    their minimums in buffers (12 MiB from send buffers, 16 MiB with receive buffers too),
    not 1,000 x sndbuf (500 MiB)."""
    cfg = TcpConfig()
    assert cfg.mem_low < cfg.mem_pressure < cfg.mem_high
    assert cfg.mem_high + 1_000 * cfg.sndbuf_min <= 12 * 2**20
    assert cfg.mem_high + 1_000 * (cfg.sndbuf_min + cfg.rcvbuf_min) <= 16 * 2**20
    assert 1_000 * cfg.sndbuf > 40 * cfg.mem_high
    assert cfg.max_connections >= cfg.listener_max_connections > 1_000


def test_receive_window_shrinks_without_retracting_its_edge() -> None:
    """Under memory pressure the offered window shrinks but its right edge never moves
    back (RFC 9293 §3.8.6, RFC 7323 §2.4); data it invited that no longer fits is
    dropped and counted, and all of it arrives once memory is free again."""
    cfg = TcpConfig(sndbuf=128 * 1024, rcvbuf=128 * 1024, mem_low=32 * 1024,
                    mem_pressure=48 * 1024, mem_high=64 * 1024)
    budget = TcpBudget(cfg.mem_low, cfg.mem_pressure, cfg.mem_high, 1000)
    p = established(cfg, cfg, budget_b=budget)
    b = p.b
    edges: list[int] = []
    orig = p.take

    def take(name: str) -> list[Segment]:
        segs = orig(name)
        if name == "b":
            edges.extend(seq_add(s.ack, s.wnd << b.rcv_wscale) for s in segs if s.flags & ACK)
        return segs

    p.take = take  # type: ignore[method-assign]
    data = payload(400_000)
    off = p.a.send(data, p.now)
    p.run()
    budget.charge(60 * 1024)  # other connections take almost all memory
    at_pressure = len(b.rcvbuf) + b.ooo.nbytes
    for _ in range(40):
        off += p.a.send(data[off:off + 65536], p.now)
        p.advance(50)
        assert len(b.rcvbuf) + b.ooo.nbytes <= max(at_pressure, cfg.rcvbuf_min)  # no more
    assert b.stats["rcv_mem_dropped"] > 0
    assert all(not seq_lt(y, x) for x, y in itertools.pairwise(edges)), "edge retracted"
    budget.charge(-60 * 1024)
    got = bytearray()
    for _ in range(2_000):
        got += b.recv(1 << 20, p.now)
        off += p.a.send(data[off:off + 65536], p.now)
        p.advance(20)
        if len(got) == len(data):
            break
    assert got == data
    assert all(not seq_lt(y, x) for x, y in itertools.pairwise(edges))


def test_over_the_hard_limit_data_is_dropped_and_counted() -> None:
    budget = TcpBudget(1000, 2000, 4000, 1000)
    cfg = TcpConfig(rcvbuf_min=2000)
    p = established(cfg, cfg, budget_b=budget)
    b = p.b
    budget.charge(10_000)  # far over mem_high
    seq = b.rcv_nxt
    assert seq_diff(b.rcv_adv, seq) == 4000  # the SYN-ACK offered no more than mem_high
    p.inject("a", p.forge("a", seq_add(seq, 1000), b.snd_nxt, ACK, b"o" * 2500))
    assert b.ooo.nbytes == 0 and b.stats["rcv_mem_dropped"] == 1  # more than the minimum
    p.inject("a", p.forge("a", seq, b.snd_nxt, ACK, b"x" * 1500))
    p.inject("a", p.forge("a", seq_add(seq, 1500), b.snd_nxt, ACK, b"y" * 1500))
    assert len(b.rcvbuf) == 2000  # the guaranteed minimum, no more
    assert b.stats["rcv_mem_dropped"] == 2 and budget.stats["tcp.rcv_mem_dropped"] == 2
    assert b.writable <= cfg.sndbuf_min


# == CPU: out-of-order data and SACK ==============================================================


def calls(fn: Callable[[], Any]) -> int:
    """Python and C function calls made by ``fn()``: work, independent of the machine."""
    n = 0

    def prof(frame: Any, event: str, arg: Any) -> None:
        nonlocal n
        if event in ("call", "c_call"):
            n += 1

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return n


def with_ranges(n: int) -> Pipe:
    """b holds ``n`` one-byte out-of-order ranges at RCV.NXT + 8i + 8 (SACK on, timestamps)."""
    p = established()
    b = p.b
    base = b.rcv_nxt
    for i in range(n):
        p.inject("a", p.forge("a", seq_add(base, 8 * i + 8), b.snd_nxt, ACK, b"r"))
    assert len(b.ooo) == n
    return p


def segment_costs(n: int) -> dict[str, int]:
    """Calls for one segment of each kind, into a receiver holding ``n`` ranges."""
    out: dict[str, int] = {}
    mid = 8 * (n // 2) + 8  # offset of a range in the middle
    kinds = {
        "in_order": (0, 1),
        "new_range_middle": (mid + 3, 1),  # between two ranges, touching neither
        "append_middle": (mid + 1, 1),  # right after a range
        "before_middle": (mid + 7, 1),  # right before a range
        "fill_gap": (mid + 1, 7),  # joins two ranges
        "cover_many": (mid - 16, 40),  # a retransmission over 5 ranges
        "duplicate": (mid, 1),
    }
    for kind, (off, size) in kinds.items():
        p = with_ranges(n)
        b = p.b
        seg = p.forge("a", seq_add(b.rcv_nxt, off), b.snd_nxt, ACK, b"d" * size)
        out[kind] = calls(lambda: p.inject("a", seg))  # noqa: B023 (called at once)
        assert b.outbox == []
    return out


def test_out_of_order_work_does_not_grow_with_the_queue() -> None:
    """With 1,000 one-byte ranges queued, no segment takes more work than with 10, and
    none more than twice an in-order segment (ACK and SACK blocks included)."""
    few, many = segment_costs(10), segment_costs(1_000)
    for kind, n in many.items():
        assert n <= few[kind] + 8, (kind, few[kind], n)
        assert n <= 2 * many["in_order"], (kind, n, many["in_order"])


def test_sack_generation_does_not_walk_the_queue() -> None:
    p = with_ranges(1_000)
    b = p.b
    assert calls(lambda: b.ooo.sack_blocks(3)) <= 60


def test_ooo_queue_keeps_the_data_whatever_the_order() -> None:
    """Random overlapping segments in random order: what comes out is the stream."""
    for seed in range(20):
        rng = random.Random(seed)
        p = established()
        b = p.b
        base = b.rcv_nxt
        stream = payload(6000, seed)
        segs = []
        for _ in range(200):
            s = rng.randrange(1, 5990)
            e = min(s + rng.randrange(1, 300), 6000)
            segs.append((s, e))
        for s, e in segs:
            p.inject("a", p.forge("a", seq_add(base, s), b.snd_nxt, ACK, stream[s:e]))
            held_ = ooo_bytes(b)
            assert held_ == b.ooo.nbytes
        covered: set[int] = set()
        for s, e in segs:
            covered.update(range(s, e))
        assert b.ooo.nbytes == len(covered)
        for blk in b.ooo.sack_blocks(3):
            lo, hi = seq_diff(blk[0], base), seq_diff(blk[1], base)
            assert all(i in covered for i in range(lo, hi))
            assert lo - 1 not in covered and hi not in covered  # maximal
        p.inject("a", p.forge("a", base, b.snd_nxt, ACK, stream[:1]))
        first_gap = next(i for i in range(1, 6001) if i not in covered)
        assert bytes(b.rcvbuf) == stream[:first_gap]


def test_ooo_ranges_are_bounded_even_in_descending_order() -> None:
    cfg = TcpConfig(ooo_max_segments=64)
    p = established(TcpConfig(), cfg)
    b = p.b
    base = b.rcv_nxt
    for i in range(500, 0, -1):  # each touches the range after it
        p.inject("a", p.forge("a", seq_add(base, i), b.snd_nxt, ACK, b"z"))
    assert len(b.ooo) <= 64 and b.stats["ooo_dropped"] > 0
    assert len(b.ooo.sack_blocks(3)) == 1  # what is kept is contiguous


# -- RFC 2018 §4 order ---------------------------------------------------------------------


def sack_after(p: Pipe, off: int, size: int = 100) -> list[tuple[int, int]]:
    b = p.b
    base = b.rcv_nxt
    out = p.inject("a", p.forge("a", seq_add(base, off), b.snd_nxt, ACK, b"s" * size))
    assert len(out) == 1 and out[0].ack == base
    return [(seq_diff(x, base), seq_diff(y, base)) for x, y in out[0].sack]


def test_sack_first_block_holds_the_newest_segment_then_most_recently_reported() -> None:
    """RFC 2018 §4: the first block holds the segment that triggered the ACK; the others
    repeat the most recently reported first blocks, newest first, none a subset of one
    already included. With timestamps three blocks fit."""
    p = established()
    assert sack_after(p, 1000) == [(1000, 1100)]
    assert sack_after(p, 3000) == [(3000, 3100), (1000, 1100)]
    assert sack_after(p, 5000) == [(5000, 5100), (3000, 3100), (1000, 1100)]
    assert sack_after(p, 7000) == [(7000, 7100), (5000, 5100), (3000, 3100)]
    # a duplicate of the oldest: it comes first again, the others by recency
    assert sack_after(p, 1000) == [(1000, 1100), (7000, 7100), (5000, 5100)]
    # joining 3000 and 5000 makes one block, reported first
    assert sack_after(p, 3100, 1900) == [(3000, 5100), (1000, 1100), (7000, 7100)]
    # extending a block reports the whole block, once
    assert sack_after(p, 7100) == [(7000, 7200), (3000, 5100), (1000, 1100)]


def test_sack_fills_with_unreported_blocks_when_history_runs_short() -> None:
    nots = TcpConfig(timestamps=False)
    p = established(nots, nots)
    for off in (1000, 3000, 5000, 7000, 9000):
        sack_after(p, off)
    b = p.b
    b.ooo.recent = b.ooo.recent[:1]  # as if only one had been reported
    blocks = b.ooo.sack_blocks(4)
    assert len(blocks) == 4 and len(set(blocks)) == 4
    assert seq_diff(blocks[0][0], b.rcv_nxt) == 9000


# == challenge ACKs ===============================================================================

INTERVAL_MS = 500.0  # TcpConfig().invalid_ack_interval_ms, as Linux's tcp_invalid_ratelimit


def flood(p: Pipe, n: int, make: Callable[[random.Random], Segment], step_ms: float) -> int:
    """Inject ``n`` segments from ``make`` into b, ``step_ms`` apart; returns b's answers."""
    rng = random.Random(7)
    answers = 0
    for _ in range(n):
        answers += len(p.inject("a", make(rng)))
        p.now += step_ms
    return answers


def hole_then(p: Pipe) -> Segment:
    """a sends three segments, the first is held back: returns it (the retransmission)."""
    a, b = p.a, p.b
    first = a.snd_nxt
    p.hold = lambda src, s: src == "a" and s.seq == first and bool(s.payload)
    a.nodelay = True
    a.send(payload(3 * a.mss), p.now)
    p.run()
    p.hold = None
    seg = p.held[0][1]  # (and its fast retransmission, held too)
    p.held = []
    assert len(b.ooo) == 1
    return seg


def test_10000_random_syns_draw_few_acks_and_a_retransmission_is_still_acked() -> None:
    """RFC 5961 §4.2 asks a challenge ACK for any SYN, §7 to throttle them: at most one
    per invalid_ack_interval_ms per connection."""
    p = established()
    b = p.b
    rexmit = hole_then(p)
    start = p.now
    acks = flood(p, 10_000, lambda r: p.forge("a", r.getrandbits(32), 0, SYN), 1.0)
    limit = int((p.now - start) / INTERVAL_MS) + 1
    assert acks <= limit, (acks, limit)
    assert b.stats.get("challenge_acks_limited", 0) >= 10_000 - limit
    assert b.state == TcpState.ESTABLISHED
    before = b.rcv_nxt
    out = p.inject("a", rexmit)  # in the window: answered at once, not throttled
    assert len(out) == 1 and seq_diff(out[0].ack, before) == 3 * p.a.mss and not out[0].sack


def test_20000_out_of_window_data_segments_draw_few_acks() -> None:
    """RFC 9293 §3.10.7.4 answers an unacceptable segment with an ACK; RFC 5961 §5.2/§7
    throttle those too (as Linux's tcp_invalid_ratelimit)."""
    p = established()
    a, b = p.a, p.b
    rexmit = hole_then(p)
    wnd = seq_diff(b.rcv_adv, b.rcv_nxt)

    def bad(r: random.Random) -> Segment:
        off = r.randrange(wnd + 10, 2**31) if r.random() < 0.5 else -r.randrange(10, 2**31)
        return p.forge("a", seq_add(b.rcv_nxt, off), b.snd_nxt, ACK | PSH, b"junk" * 10)

    start = p.now
    acks = flood(p, 20_000, bad, 1.0)
    limit = int((p.now - start) / INTERVAL_MS) + 1
    assert acks <= limit, (acks, limit)
    assert b.stats.get("oow_acks_limited", 0) >= 20_000 - limit
    out = p.inject("a", rexmit)
    assert len(out) == 1 and out[0].ack == a.snd_nxt
    assert b.readable == 3 * a.mss


def test_challenge_acks_are_limited_per_stack() -> None:
    """The stack-wide limit (Linux's tcp_challenge_ack_limit): many connections each hit
    once at the same moment still draw at most ``challenge_acks_per_s`` ACKs."""
    cfg = TcpConfig(challenge_acks_per_s=10)
    budget = TcpBudget(cfg.mem_low, cfg.mem_pressure, cfg.mem_high, cfg.challenge_acks_per_s)
    pipes = [established(cfg, cfg, budget_b=budget, iss_a=1000 + 77 * i) for i in range(30)]
    acks = sum(len(p.inject("a", p.forge("a", seq_add(p.b.rcv_nxt, 9), 0, SYN)))
               for p in pipes)
    assert acks == 10 and budget.stats["tcp.challenge_acks_limited_stack"] == 20
    for p in pipes:
        p.now += 1000
    acks = sum(len(p.inject("a", p.forge("a", seq_add(p.b.rcv_nxt, 9), 0, SYN)))
               for p in pipes)
    assert acks == 10  # a second later, the bucket is full again


def test_peers_in_step_are_answered_every_time() -> None:
    """Zero-window probes at RCV.NXT and keep-alives just below it are not throttled:
    a blind attacker cannot produce them, and persist and keep-alive depend on them."""
    p = established()
    a, b = p.a, p.b
    for i in range(5):
        out = p.inject("a", p.forge("a", seq_add(b.rcv_nxt, -1), b.snd_nxt, ACK))  # keep-alive
        assert len(out) == 1 and out[0].ack == b.rcv_nxt, i
    assert b.stats.get("oow_acks_limited", 0) == 0
    assert a.state == TcpState.ESTABLISHED


def test_default_interval() -> None:
    assert TcpConfig().invalid_ack_interval_ms == INTERVAL_MS


def test_connection_without_budget_gets_its_own() -> None:
    c = Connection((1, 1), (2, 2), 0, 1500, TcpConfig(), 0.0)
    assert c.budget.users == 1 and c.writable == 0  # not connected yet

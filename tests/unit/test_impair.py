"""ImpairedDevice on a fake device and a manual clock: every decision and due time is exact."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import pytest

from hilkit.port import Device, DeviceClosed, DeviceCounters, LinkType, ManualClock
from hilkit.port.impair import (
    DEFAULT_QUEUE_FRAMES,
    DEFAULT_REORDER_HOLD_MS,
    ImpairCounters,
    ImpairedDevice,
    Impairment,
)

T0 = 1000.0
MAC = b"\x02\x00\x00\x00\x00\x01"
PEER = b"\x02\x00\x00\x00\x00\x02"


class FakeDevice:
    """A Device whose wire is two Python lists: what it sent (with the time), what it will read."""

    def __init__(self, clock: ManualClock, link_type: LinkType = LinkType.ETHERNET,
                 mtu: int = 1500) -> None:
        self.clock = clock
        self.name = "fake0"
        self.link_type = link_type
        self.mac: bytes | None = MAC if link_type is LinkType.ETHERNET else None
        self.mtu = mtu
        self.counters = DeviceCounters()
        self.sent: list[tuple[float, bytes]] = []
        self.rx: deque[bytes] = deque()
        self.refuse = False
        self.up = True
        self.close_calls = 0
        self.poll_budgets: list[int] = []

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        if self.close_calls:
            raise DeviceClosed(self.name)
        data = bytes(frame)
        hdr = 14 if self.link_type is LinkType.ETHERNET else 0
        if not data or len(data) > self.mtu + hdr:
            self.counters.tx_errors += 1
            return False
        if self.refuse:
            self.counters.tx_dropped += 1
            return False
        self.counters.tx_frames += 1
        self.counters.tx_bytes += len(data)
        self.sent.append((self.clock.now_ms(), data))
        return True

    def poll(self, budget: int) -> list[bytes]:
        if self.close_calls:
            raise DeviceClosed(self.name)
        self.poll_budgets.append(budget)
        out = []
        while self.rx and len(out) < budget:
            f = self.rx.popleft()
            self.counters.rx_frames += 1
            self.counters.rx_bytes += len(f)
            out.append(f)
        return out

    @property
    def link_up(self) -> bool:
        return self.up

    def fileno(self) -> int | None:
        return 42

    def close(self) -> None:
        self.close_calls += 1

    # -- test helpers ---------------------------------------------------------
    def frames_sent(self) -> list[bytes]:
        return [f for _, f in self.sent]


def frame(seq: int, size: int = 64) -> bytes:
    """An Ethernet frame carrying ``seq``, ``size`` bytes long."""
    body = seq.to_bytes(4, "big")
    return (MAC + PEER + b"\x88\xb5" + body).ljust(size, b"\xa5")


def seq_of(f: bytes) -> int:
    return int.from_bytes(f[14:18], "big")


def make(spec: str | Impairment = "", **kw: object) -> tuple[ImpairedDevice, FakeDevice,
                                                             ManualClock]:
    clock = ManualClock(T0)
    fake = FakeDevice(clock, **kw)  # type: ignore[arg-type]
    imp = spec if isinstance(spec, Impairment) else Impairment.parse(spec)
    return ImpairedDevice(fake, imp, clock), fake, clock


def run_tx(spec: str, n: int, size: int = 64) -> list[bytes]:
    dev, fake, clock = make(spec)
    for i in range(n):
        assert dev.send(frame(i, size)) is True
    clock.advance(1e6)
    dev.poll(0)
    return fake.frames_sent()


def run_rx(spec: str, n: int, size: int = 64) -> list[bytes]:
    dev, fake, clock = make(spec)
    fake.rx.extend(frame(i, size) for i in range(n))
    got = dev.poll(n)
    clock.advance(1e6)
    while more := dev.poll(n):
        got += more
    return got


def binomial_ok(count: int, n: int, p: float, sds: float = 5.0) -> bool:
    mean = n * p
    sd = math.sqrt(n * p * (1 - p))
    return abs(count - mean) <= sds * sd


# -- Impairment: the config and its spec language ---------------------------------------


def test_parse_the_readme_example() -> None:
    imp = Impairment.parse("loss=2%,reorder=1%,dup=0.5%,corrupt=0.1%,delay=5ms,rate=10mbit,seed=7")
    assert imp == Impairment(loss=0.02, reorder=0.01, dup=0.005, corrupt=0.001, delay_ms=5.0,
                             rate_bps=10_000_000, seed=7)
    assert imp.direction == "both" and imp.active


@pytest.mark.parametrize(("spec", "want"), [
    ("loss=0.02", Impairment(loss=0.02)),
    ("loss=2%", Impairment(loss=0.02)),
    ("loss=100%", Impairment(loss=1.0)),
    ("loss=1", Impairment(loss=1.0)),
    ("loss=0", Impairment()),
    ("dup=.5", Impairment(dup=0.5)),
    (" loss = 1% , dup=0 ,", Impairment(loss=0.01)),
    ("delay=500us", Impairment(delay_ms=0.5)),
    ("delay=1.5s", Impairment(delay_ms=1500.0)),
    ("delay=5 ms,jitter=1ms", Impairment(delay_ms=5.0, jitter_ms=1.0)),
    ("delay=0", Impairment()),
    ("delay=2e3us", Impairment(delay_ms=2.0)),
    ("rate=1.5kbit", Impairment(rate_bps=1500.0)),
    ("rate=10Mbit", Impairment(rate_bps=1e7)),
    ("rate=1gbit", Impairment(rate_bps=1e9)),
    ("rate=8bit", Impairment(rate_bps=8.0)),
    ("rate=64000bps", Impairment(rate_bps=64000.0)),
    ("rate=0", Impairment()),
    ("queue=50", Impairment(queue_frames=50)),
    ("queue=0", Impairment(queue_frames=0)),
    ("queue_bytes=3000", Impairment(queue_bytes=3000)),
    ("queue_bytes=64KiB", Impairment(queue_bytes=65536)),
    ("queue_bytes=1.5kB", Impairment(queue_bytes=1500)),
    ("queue_bytes=1MB", Impairment(queue_bytes=1_000_000)),
    ("reorder=5%,reorder_hold=3ms", Impairment(reorder=0.05, reorder_hold_ms=3.0)),
    ("seed=-3", Impairment(seed=-3)),
    ("direction=tx", Impairment(direction="tx")),
    ("direction=RX", Impairment(direction="rx")),
    ("", Impairment()),
    ("none", Impairment()),
])
def test_parse_good(spec: str, want: Impairment) -> None:
    assert Impairment.parse(spec) == want


@pytest.mark.parametrize(("spec", "must_name"), [
    ("lose=2%", "'lose'"),  # unknown key
    ("Loss=2%", "'Loss'"),  # keys are lower case
    ("loss", "'loss'"),  # no '='
    ("loss=", "loss"),  # no value
    ("loss=-1%", "'-1%'"),  # negative
    ("loss=-0.1", "'-0.1'"),
    ("loss=101%", "'101%'"),  # > 100 %
    ("loss=1.5", "'1.5'"),  # a fraction > 1
    ("loss=2x", "'2x'"),  # bad unit
    ("loss=abc", "'abc'"),  # not a number
    ("loss=nan", "'nan'"),
    ("loss=inf%", "'inf%'"),
    ("loss=1%,loss=2%", "'loss'"),  # twice
    ("delay=5", "'5'"),  # no unit
    ("delay=5m", "'m'"),  # bad unit
    ("delay=5min", "'min'"),
    ("delay=-5ms", "'-5ms'"),
    ("jitter=1e999ms", "'1e999ms'"),  # overflows to inf
    ("reorder_hold=0ms", "reorder_hold"),  # must be > 0
    ("rate=10", "'10'"),  # no unit
    ("rate=10mb", "'mb'"),
    ("rate=10kbps", "'kbps'"),
    ("rate=-1mbit", "'-1mbit'"),
    ("rate=1e300gbit", "'1e300gbit'"),  # overflows once scaled
    ("queue=1.5", "'1.5'"),
    ("queue=-1", "'-1'"),
    ("queue=10kB", "queue_bytes"),  # points at the right key
    ("queue_bytes=10kbit", "'kbit'"),
    ("queue_bytes=1.5B", "'1.5B'"),
    ("seed=abc", "'abc'"),
    ("seed=1.5", "'1.5'"),
    ("direction=sideways", "'sideways'"),
    ("delay=5ms,,oops", "'oops'"),
])
def test_parse_bad(spec: str, must_name: str) -> None:
    with pytest.raises(ValueError) as e:
        Impairment.parse(spec)
    assert must_name in str(e.value), str(e.value)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ValueError):
        Impairment.parse(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("kw", [
    {"loss": 1.5}, {"dup": -0.1}, {"corrupt": math.nan}, {"delay_ms": -1.0},
    {"jitter_ms": math.inf}, {"rate_bps": -1.0}, {"queue_frames": -1}, {"queue_bytes": -1},
    {"queue_frames": 1.5}, {"seed": 1.5}, {"seed": True}, {"loss": "2%"},
    {"reorder_hold_ms": 0.0}, {"direction": "up"},
])
def test_constructor_validates(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError) as e:
        Impairment(**kw)  # type: ignore[arg-type]
    assert next(iter(kw)) in str(e.value)


@pytest.mark.parametrize("imp", [
    Impairment(),
    Impairment(loss=0.07, dup=0.001, reorder=0.3, corrupt=1.0),
    Impairment(delay_ms=0.25, jitter_ms=1.0 / 3, reorder_hold_ms=2.0),
    Impairment(rate_bps=1.5e6, queue_frames=7, queue_bytes=9000, seed=-12, direction="rx"),
])
def test_spec_round_trips(imp: Impairment) -> None:
    assert Impairment.parse(imp.spec()) == imp
    assert str(imp) == imp.spec()


def test_frozen_and_defaults() -> None:
    imp = Impairment()
    with pytest.raises(AttributeError):
        imp.loss = 0.5  # type: ignore[misc]
    assert not imp.active
    assert not Impairment(queue_frames=5, queue_bytes=100).active  # limits alone do nothing
    assert imp.queue_frames == DEFAULT_QUEUE_FRAMES
    assert imp.reorder_hold_ms == DEFAULT_REORDER_HOLD_MS
    assert Impairment(loss=0.1, direction="tx").applies_to("tx")
    assert not Impairment(loss=0.1, direction="tx").applies_to("rx")


# -- each impairment alone, at 100 % --------------------------------------------------------


def test_loss_all() -> None:
    dev, fake, _ = make("loss=100%")
    assert all(dev.send(frame(i)) for i in range(10))  # lost on the wire, not refused
    assert fake.sent == []
    assert fake.counters.tx_frames == 0  # the inner device's counters: the real wire
    fake.rx.extend(frame(i) for i in range(10))
    assert dev.poll(64) == []
    assert not fake.rx  # read from the inner device, then lost
    c = dev.impair_counters
    assert (c.frames, c.dropped) == (20, 20)
    assert dev.impair_counters_tx.dropped == dev.impair_counters_rx.dropped == 10


def test_dup_all() -> None:
    assert [seq_of(f) for f in run_tx("dup=1", 3)] == [0, 0, 1, 1, 2, 2]
    assert [seq_of(f) for f in run_rx("dup=1", 3)] == [0, 0, 1, 1, 2, 2]


def test_corrupt_all_flips_exactly_one_bit() -> None:
    for out in (run_tx("corrupt=100%", 200, size=100), run_rx("corrupt=100%", 200, size=100)):
        assert len(out) == 200
        positions = set()
        for i, got in enumerate(out):
            want = frame(i, 100)
            assert len(got) == len(want)
            diff = int.from_bytes(got, "big") ^ int.from_bytes(want, "big")
            assert diff and diff & (diff - 1) == 0, f"frame {i}: not exactly one bit flipped"
            positions.add(diff.bit_length())
        assert len(positions) > 100  # anywhere in the frame, headers included
        assert min(positions) <= 100 * 8 - 14 * 8 < max(positions)


def test_corrupt_duplicate_is_clean() -> None:
    out = run_tx("corrupt=1,dup=1", 5)
    for i in range(5):
        assert out[2 * i] != frame(i) and out[2 * i + 1] == frame(i)


def test_reorder_all_swaps_pairs() -> None:
    dev, fake, clock = make("reorder=100%")
    for i in range(5):
        dev.send(frame(i))
    assert [seq_of(f) for f in fake.frames_sent()] == [1, 0, 3, 2]
    assert dev.next_deadline() == T0 + DEFAULT_REORDER_HOLD_MS  # frame 4 waits, not forever
    clock.advance(DEFAULT_REORDER_HOLD_MS - 1)
    dev.poll(8)
    assert len(fake.sent) == 4
    clock.advance(1)
    dev.poll(8)
    assert [seq_of(f) for f in fake.frames_sent()] == [1, 0, 3, 2, 4]
    assert fake.sent[-1][0] == T0 + DEFAULT_REORDER_HOLD_MS
    c = dev.impair_counters_tx
    assert (c.reordered, c.reorder_timeouts) == (2, 1)
    assert dev.next_deadline() is None


def test_reorder_rx_and_hold_time() -> None:
    dev, fake, clock = make("reorder=1,reorder_hold=2ms")
    fake.rx.extend([frame(0), frame(1), frame(2)])
    assert [seq_of(f) for f in dev.poll(8)] == [1, 0]
    assert dev.next_deadline() == T0 + 2
    clock.advance(2)
    assert [seq_of(f) for f in dev.poll(8)] == [2]


def test_held_frame_goes_before_a_later_frame_once_its_hold_expired() -> None:
    dev, fake, clock = make("reorder=1,delay=1ms,reorder_hold=2ms")
    dev.send(frame(0))  # due at +1, then held until +3
    clock.advance(2)
    dev.send(frame(1))  # due at +3: the hold has run out by then
    clock.advance(1)
    dev.poll(1)
    assert [seq_of(f) for f in fake.frames_sent()] == [0]  # timed out; frame 1 is now held
    assert dev.impair_counters.reorder_timeouts == 1


# -- each impairment at a fraction, over many frames --------------------------------------

N = 20_000


def _tx_outcome(kind: str, p: float, seed: int) -> tuple[int, list[int]]:
    """How many frames ``kind`` hit, and which ones."""
    out = run_tx(f"{kind}={p},seed={seed}", N)
    seqs = [seq_of(f) for f in out]
    if kind == "loss":
        hit = sorted(set(range(N)) - set(seqs))
    elif kind == "dup":
        hit = [s for i, s in enumerate(seqs) if i and seqs[i - 1] == s]
    elif kind == "corrupt":
        hit = [i for i, f in enumerate(out) if f != frame(i)]
    else:  # reorder: each held frame is overtaken by one, seen as a descent
        hit = [seqs[i] for i in range(1, len(seqs)) if seqs[i] < seqs[i - 1]]
        assert sorted(seqs) == list(range(N))
    return len(hit), hit


@pytest.mark.parametrize(("kind", "p"), [
    ("loss", 0.1), ("loss", 0.02), ("dup", 0.05), ("corrupt", 0.01), ("reorder", 0.1),
])
def test_fraction_is_about_right_and_reproducible(kind: str, p: float) -> None:
    count, hit = _tx_outcome(kind, p, seed=7)
    # reorder: a frame that overtakes a held one is never held itself, so the held
    # fraction is p / (1 + p) rather than p.
    expect = p / (1 + p) if kind == "reorder" else p
    assert binomial_ok(count, N, expect), (count, N * expect)
    again, hit_again = _tx_outcome(kind, p, seed=7)
    assert (again, hit_again) == (count, hit)  # same seed, same frames: same decisions
    other, hit_other = _tx_outcome(kind, p, seed=8)
    assert hit_other != hit  # another seed: other frames
    assert binomial_ok(other, N, expect)


def test_loss_pattern_is_pinned() -> None:
    """The decision stream is part of the contract: a seed in a report must replay.

    If the model changes on purpose, update this pattern and say so in the changelog.
    """
    out = {seq_of(f) for f in run_tx("loss=50%,seed=7", 32)}
    pattern = "".join("." if i in out else "x" for i in range(32))
    assert pattern == PINNED_LOSS_PATTERN


PINNED_LOSS_PATTERN = "xx.xx.xx..xx.x.xx.xx..xxxxxxx..."


def test_one_impairment_does_not_move_another() -> None:
    lost_alone = {seq_of(f) for f in run_tx("loss=10%,seed=3", 2000)}
    mixed = "loss=10%,dup=30%,reorder=20%,delay=2ms,jitter=1ms,seed=3"
    assert {seq_of(f) for f in run_tx(mixed, 2000)} == lost_alone
    corrupt = "corrupt=20%,seed=3"
    assert run_tx(corrupt, 2000) == run_tx(corrupt + ",delay=3ms,jitter=2ms", 2000)
    assert len(run_tx("dup=30%,seed=3", 2000)) == len(run_tx("dup=30%,corrupt=50%,seed=3", 2000))


def test_a_loss_only_link_decides_as_the_full_pipeline_does() -> None:
    """Loss alone takes a shorter way (frames kept leave at once); a delay sends them
    through the queue: the same frames are lost, in the same order, both ways."""
    for run in (run_tx, run_rx):
        fast = run("loss=10%,seed=3", 3000)
        assert fast == run("loss=10%,delay=0.5ms,seed=3", 3000)
        assert 200 < 3000 - len(fast) < 400


def test_directions_have_independent_streams() -> None:
    dev, fake, _ = make("loss=30%,seed=5")
    ref, rfake, _ = make("loss=30%,seed=5")
    for i in range(500):
        dev.send(frame(i))
        ref.send(frame(i))
        fake.rx.append(frame(i))  # rx traffic on one, none on the other
        dev.poll(4)
    assert fake.frames_sent() == rfake.frames_sent()


def test_seed_is_the_only_source_of_randomness() -> None:
    spec = "loss=10%,dup=10%,reorder=10%,corrupt=10%,delay=1ms,jitter=1ms,seed=11"

    def scenario(spec: str) -> tuple[list[tuple[float, bytes]], list[tuple[float, bytes]]]:
        dev, fake, clock = make(spec)
        got: list[tuple[float, bytes]] = []
        for i in range(400):
            dev.send(frame(i))
            fake.rx.append(frame(10_000 + i))
            got += [(clock.now_ms(), f) for f in dev.poll(3)]
            clock.advance(0.25)
        clock.advance(100)
        while out := dev.poll(64):
            got += [(clock.now_ms(), f) for f in out]
        return fake.sent, got

    first = scenario(spec)
    assert scenario(spec) == first
    assert scenario(spec.replace("seed=11", "seed=12")) != first


# -- delay, jitter, rate, queue -----------------------------------------------------------


def test_delay_releases_exactly_at_the_deadline() -> None:
    dev, fake, clock = make("delay=5ms")
    assert dev.next_deadline() is None
    assert dev.send(frame(0)) is True
    assert fake.sent == [] and dev.next_deadline() == T0 + 5
    clock.advance(4.5)
    dev.poll(8)
    assert fake.sent == []
    clock.advance(0.5)
    assert dev.poll(8) == []
    assert fake.sent == [(T0 + 5, frame(0))]  # tx frames go out from poll()
    assert dev.next_deadline() is None

    fake.rx.append(frame(1))
    assert dev.poll(8) == []
    assert not fake.rx  # read at once, so the inner descriptor is not left readable
    assert dev.next_deadline() == T0 + 10
    clock.advance(4.5)
    assert dev.poll(8) == []
    clock.advance(0.5)
    assert dev.poll(8) == [frame(1)]
    assert dev.impair_counters.delayed == 2


def test_delay_keeps_order_and_spacing() -> None:
    dev, fake, clock = make("delay=20ms")
    for i in range(5):
        dev.send(frame(i))
        clock.advance(1)
    clock.advance(30)
    dev.poll(0)  # budget 0 still moves tx
    assert [(t - T0, seq_of(f)) for t, f in fake.sent] == [(35.0, i) for i in range(5)]
    dev2, fake2, clock2 = make("delay=20ms")
    for i in range(5):
        dev2.send(frame(i))
        clock2.advance(1)
        dev2.poll(0)
    for _ in range(60):
        clock2.advance(0.5)
        dev2.poll(0)
    assert [t - T0 for t, _ in fake2.sent] == [20.0, 21.0, 22.0, 23.0, 24.0]


def test_jitter_is_bounded_and_does_not_reorder() -> None:
    dev, fake, clock = make("delay=10ms,jitter=4ms,seed=1")
    sent_at = {}
    for i in range(400):  # a frame every 0.5 ms: closer than the jitter, so FIFO matters
        sent_at[i] = clock.now_ms()
        dev.send(frame(i))
        for _ in range(4):
            clock.advance(0.125)
            dev.poll(0)
    for _ in range(200):
        clock.advance(0.125)
        dev.poll(0)
    assert [seq_of(f) for _, f in fake.sent] == list(range(400))
    delays = [t - sent_at[seq_of(f)] for t, f in fake.sent]
    assert min(delays) >= 6.0 and max(delays) <= 14.0 + 0.125
    assert max(delays) - min(delays) > 3  # it does vary
    assert dev.impair_counters.delayed == 400


def test_rate_spaces_frames_by_serialisation_time() -> None:
    dev, fake, clock = make("rate=8mbit")  # 1000 bytes -> 1 ms on the line
    for i in range(3):
        dev.send(frame(i, 1000))
    for _ in range(10):
        clock.advance(0.5)
        dev.poll(0)
    assert [t - T0 for t, _ in fake.sent] == [1.0, 2.0, 3.0]
    assert dev.impair_counters.rate_limited == 2  # the 2nd and 3rd waited for the line
    clock.advance(10)
    dev.send(frame(3, 250))  # idle line: just its own 0.25 ms
    assert dev.next_deadline() == clock.now_ms() + 0.25


def test_rate_then_delay() -> None:
    dev, fake, clock = make("rate=8mbit,delay=5ms")
    dev.send(frame(0, 1000))
    dev.send(frame(1, 500))
    assert dev.next_deadline() == T0 + 6
    clock.advance(6)
    dev.poll(0)
    clock.advance(0.5)
    dev.poll(0)
    assert [t - T0 for t, _ in fake.sent] == [6.0, 6.5]


def test_rate_on_rx() -> None:
    dev, fake, clock = make("rate=8mbit,direction=rx")
    fake.rx.extend(frame(i, 1000) for i in range(3))
    got = []
    for _ in range(8):
        got += [(clock.now_ms() - T0, seq_of(f)) for f in dev.poll(8)]
        clock.advance(0.5)
    assert got == [(1.0, 0), (2.0, 1), (3.0, 2)]


def test_queue_limit_in_frames() -> None:
    dev, fake, clock = make("rate=8mbit,queue=2")
    assert all(dev.send(frame(i, 1000)) for i in range(5))  # a router drops silently
    assert dev.impair_counters.queue_dropped == 3
    clock.advance(1)  # frame 0 has left the line: room for one more
    dev.poll(0)
    dev.send(frame(5, 1000))
    dev.send(frame(6, 1000))
    clock.advance(10)
    dev.poll(0)
    assert [seq_of(f) for f in fake.frames_sent()] == [0, 1, 5]
    assert dev.impair_counters.queue_dropped == 4


def test_queue_limit_in_bytes() -> None:
    dev, _fake, _clock = make("rate=8mbit,queue=0,queue_bytes=2500")
    for i in range(4):
        dev.send(frame(i, 1000))
    assert dev.impair_counters.queue_dropped == 2  # a third 1000 bytes would make 3000
    dev2, _fake2, _clock2 = make("rate=8mbit,queue_bytes=500")
    dev2.send(frame(0, 1000))  # an empty queue takes one frame, however big
    dev2.send(frame(1, 100))
    assert dev2.impair_counters.queue_dropped == 1


def test_queue_limit_needs_a_rate() -> None:
    dev, fake, clock = make("delay=50ms,queue=2")
    for i in range(10):
        dev.send(frame(i))
    clock.advance(50)
    dev.poll(0)
    assert len(fake.sent) == 10 and dev.impair_counters.queue_dropped == 0


# -- direction --------------------------------------------------------------------------


@pytest.mark.parametrize(("direction", "tx_lost", "rx_lost"), [
    ("both", True, True), ("tx", True, False), ("rx", False, True),
])
def test_direction(direction: str, tx_lost: bool, rx_lost: bool) -> None:
    dev, fake, _ = make(f"loss=1,direction={direction}")
    dev.send(frame(0))
    fake.rx.append(frame(1))
    got = dev.poll(8)
    assert (fake.sent == []) == tx_lost
    assert (got == []) == rx_lost
    assert dev.impair_counters_tx.frames == int(tx_lost)
    assert dev.impair_counters_rx.frames == int(rx_lost)


def test_unimpaired_direction_passes_straight_through() -> None:
    dev, fake, _ = make("delay=5ms,direction=tx")
    fake.rx.extend([frame(0), frame(1), frame(2)])
    assert dev.poll(2) == [frame(0), frame(1)]
    assert fake.poll_budgets == [2]  # the caller's budget, untouched
    assert dev.poll(0) == []
    dev2, fake2, _ = make("delay=5ms,direction=rx")
    fake2.refuse = True
    assert dev2.send(frame(0)) is False  # the inner device's answer
    assert fake2.counters.tx_dropped == 1


def test_perfect_link_is_transparent() -> None:
    dev, fake, _ = make("")
    assert dev.send(bytearray(frame(0))) is True
    assert dev.send(memoryview(frame(1))) is True
    fake.rx.append(frame(2))
    assert dev.poll(8) == [frame(2)]
    assert fake.frames_sent() == [frame(0), frame(1)]
    assert dev.impair_counters == ImpairCounters()
    assert dev.next_deadline() is None and dev.pending == 0


# -- budget, refusals, the send result ------------------------------------------------


def test_poll_honours_budget_with_duplicates() -> None:
    dev, fake, clock = make("dup=1")
    fake.rx.extend(frame(i) for i in range(10))
    assert dev.poll(0) == []
    got: list[bytes] = []
    for _ in range(20):
        out = dev.poll(3)
        assert len(out) <= 3
        if out == [] and not fake.rx:
            break
        got += out
        if dev.pending:
            assert dev.next_deadline() == clock.now_ms()  # due now: the loop must not sleep
    assert [seq_of(f) for f in got] == [i for i in range(10) for _ in (0, 1)]
    assert max(fake.poll_budgets) <= 3


def test_frames_the_inner_device_refuses_bypass_the_impairment() -> None:
    dev, fake, clock = make("loss=50%,delay=1ms,seed=9")
    ref, rfake, rclock = make("loss=50%,delay=1ms,seed=9")
    assert dev.send(b"") is False
    assert dev.send(frame(0, 1515)) is False  # longer than max_frame_len
    assert fake.counters.tx_errors == 2
    assert dev.impair_counters.frames == 0  # no random numbers drawn for them
    for i in range(50):
        dev.send(frame(i))
        ref.send(frame(i))
    clock.advance(1)
    rclock.advance(1)
    dev.poll(0)
    ref.poll(0)
    assert fake.frames_sent() == rfake.frames_sent()


def test_send_reports_the_inner_result_when_the_frame_goes_out_at_once() -> None:
    dev, fake, _clock = make("dup=1")
    fake.refuse = True
    assert dev.send(frame(0)) is False  # first copy refused: the stack learns it
    assert dev.impair_counters.inner_refused == 1  # the duplicate, refused too
    dev2, fake2, clock2 = make("delay=1ms")
    fake2.refuse = True
    assert dev2.send(frame(0)) is True  # accepted by the link ...
    clock2.advance(1)
    dev2.poll(0)
    assert dev2.impair_counters.inner_refused == 1  # ... refused later, and counted
    assert fake2.counters.tx_dropped == 1


def test_raw_ip_link() -> None:
    dev, fake, _ = make("corrupt=1", link_type=LinkType.RAW_IP, mtu=576)
    pkt = b"\x45" + bytes(575)
    assert dev.send(pkt) is True
    assert dev.send(pkt + b"\0") is False  # over the MTU: no link header on RAW_IP
    assert len(fake.sent) == 1 and fake.sent[0][1] != pkt


# -- the Device contract, delegated ------------------------------------------------------


def test_delegates_the_device_attributes() -> None:
    dev, fake, _ = make("loss=1%")
    assert isinstance(dev, Device)
    assert (dev.name, dev.link_type, dev.mac, dev.mtu) == ("fake0", LinkType.ETHERNET, MAC, 1500)
    assert dev.counters is fake.counters
    assert dev.fileno() == 42
    assert dev.link_up is True
    fake.up = False
    assert dev.link_up is False
    dev.name = "renamed"
    dev.mtu = 1400
    dev.mac = PEER
    c = DeviceCounters()
    dev.counters = c
    assert (fake.name, fake.mtu, fake.mac, fake.counters) == ("renamed", 1400, PEER, c)
    dev.link_type = LinkType.RAW_IP
    assert fake.link_type is LinkType.RAW_IP
    assert "loss=0.01" in repr(dev)


def test_close() -> None:
    dev, fake, _clock = make("delay=5ms")
    dev.send(frame(0))
    fake.rx.append(frame(1))
    dev.poll(8)
    assert dev.pending == 2
    dev.close()
    dev.close()  # twice is fine
    assert fake.close_calls == 2
    assert dev.pending == 0 and dev.next_deadline() is None
    with pytest.raises(DeviceClosed):
        dev.send(frame(2))
    with pytest.raises(DeviceClosed):
        dev.poll(8)
    clean, _, _ = make("")
    clean.close()
    with pytest.raises(DeviceClosed):
        clean.send(frame(0))


def test_counters() -> None:
    dev, _fake, _ = make("loss=1,direction=tx")
    dev.send(frame(0))
    d = dev.impair_counters.as_dict()
    assert d["dropped"] == 1 and d["frames"] == 1
    assert set(d) == {"frames", "dropped", "duplicated", "corrupted", "reordered",
                      "reorder_timeouts", "delayed", "rate_limited", "queue_dropped",
                      "inner_refused"}
    assert (ImpairCounters(dropped=1, delayed=2) + ImpairCounters(dropped=3)).as_dict() == {
        **ImpairCounters().as_dict(), "dropped": 4, "delayed": 2}


def test_reconfigure_keeps_frames_in_flight() -> None:
    dev, fake, clock = make("delay=10ms")
    dev.send(frame(0))
    dev.impairment = Impairment()  # a perfect link from now on
    dev.send(frame(1))  # FIFO: it waits behind frame 0
    assert fake.sent == []
    clock.advance(10)
    dev.poll(0)
    assert [seq_of(f) for f in fake.frames_sent()] == [0, 1]
    dev.send(frame(2))  # idle again: straight through
    assert len(fake.sent) == 3
    with pytest.raises(TypeError):
        dev.impairment = "loss=1%"  # type: ignore[assignment]


def test_reconfigure_restarts_the_random_stream() -> None:
    dev, fake, _ = make("loss=50%,seed=4")
    for i in range(20):
        dev.send(frame(i))
    first = fake.frames_sent()
    dev.impairment = Impairment.parse("loss=50%,seed=4")
    for i in range(20):
        dev.send(frame(i))
    assert fake.frames_sent()[len(first):] == first


# -- under a real Stack, on an in-memory wire ----------------------------------------------


def test_stack_ping_rtt_is_twice_the_delay() -> None:
    from hilkit.stack import PingError, PingStats, Stack
    from tests.memwire import wire

    clock = ManualClock(T0)
    wa, wb = wire()
    a, b = Stack(clock), Stack(clock)
    dev = ImpairedDevice(wa, Impairment.parse("delay=10ms"), clock)
    a.add_device(dev)
    b.add_device(wb)
    a.link_add(dev, "10.0.0.1", "255.255.255.0")
    b.link_add(wb, "10.0.0.2", "255.255.255.0")
    got: list[PingStats] = []
    a.ping("10.0.0.2", 3, 100, 1000, 56, got.append)

    def step(ms: float, until: Callable[[], bool]) -> None:
        for _ in range(10_000):
            if until():
                return
            # what Stack.run must do: wake at the device's next deadline too
            due = [d for d in (a.next_deadline(), dev.next_deadline()) if d is not None]
            if wa.rx:  # the descriptor would be readable: select returns at once
                due.append(clock.now_ms())
            assert due, "nothing to wake for"
            clock.advance(max(0.0, min(min(due), clock.now_ms() + ms) - clock.now_ms()))
            a.tick()
            b.tick()
        raise AssertionError("did not finish")

    step(100, lambda: len(got) == 3)
    assert [s.err for s in got] == [PingError.REPLIED] * 3
    # The first ping waited for ARP: B's gratuitous ARP (sent at link_add, not delayed on
    # B's side) resolved B when it came out of A's rx delay, at +10; then 10 + 10 more.
    assert [s.time for s in got] == [30.0, 20.0, 20.0]
    assert dev.impair_counters.delayed == dev.impair_counters.frames

"""W5100Device against the register-level W5100 model (and a few fake buses).

The driver never imports the model; only this test does. Time is a
ManualClock wherever the model's timing matters, so SEND completion, stalls
and re-probes are exact. Bus costs are asserted as counts (transactions and
calls), which are deterministic; timing is never asserted.
"""

from __future__ import annotations

import os
import select
from collections import deque
from collections.abc import Iterator, Sequence

import pytest

from hilkit.drivers import load_driver
from hilkit.drivers.w5100 import WIRING_HINT, W5100Device
from hilkit.drivers.w5100 import regs as r
from hilkit.drivers.w5100.model import W5100Model, W5100Timing
from hilkit.port.clock import ManualClock
from hilkit.port.device import Device, DeviceClosed, DeviceCounters, LinkType
from hilkit.port.errors import ChipNotResponding
from hilkit.port.pin import Edge, InvertedPin
from hilkit.port.spi import BusCounters, SpiBus, reply_tails
from tests.fakebus import FillBus

MAC = b"\x02\x00\x00\x00\x00\x01"
PEER = b"\x02\x00\x00\x00\x00\x02"
OTHER = b"\x02\x00\x00\x00\x00\x03"
BCAST = b"\xff" * 6


def frame(n: int, seq: int = 0, dst: bytes = MAC, src: bytes = PEER) -> bytes:
    """An Ethernet frame of ``n`` bytes with a recognisable body."""
    body = seq.to_bytes(4, "big") + bytes((seq * 7 + i) & 0xFF for i in range(max(0, n - 18)))
    return (dst + src + b"\x88\xb5" + body)[:n]


def on_wire(f: bytes) -> bytes:
    """What the model keeps of a frame: short ones are padded to 60 bytes."""
    return f.ljust(60, b"\0")


def reg16(model: W5100Model, addr: int) -> int:
    return model.register(addr) << 8 | model.register(addr + 1)


class Cost:
    """Bus counters moved between two points."""

    def __init__(self, counters: BusCounters) -> None:
        self._c = counters
        self._start = (counters.bytes, counters.transactions, counters.calls)

    @property
    def bytes(self) -> int:
        return self._c.bytes - self._start[0]

    @property
    def transactions(self) -> int:
        return self._c.transactions - self._start[1]

    @property
    def calls(self) -> int:
        return self._c.calls - self._start[2]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def model(clock: ManualClock) -> W5100Model:
    return W5100Model(clock=clock, seed=1)


@pytest.fixture
def dev(model: W5100Model, clock: ManualClock) -> Iterator[W5100Device]:
    d = W5100Device(model, mac=MAC, clock=clock)
    yield d
    d.close()


def drain(dev: W5100Device, budget: int = 64, rounds: int = 100) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(rounds):
        got = dev.poll(budget)
        if not got:
            break
        out += got
    return out


def clean(model: W5100Model) -> None:
    """What a correct driver never makes the model count."""
    bad = ("bad_frames", "reserved_access", "ro_writes", "bad_commands", "cmd_while_busy",
           "send_while_busy", "pointer_errors", "rx_misaligned", "tx_short")
    assert {k: model.stats[k] for k in bad} == dict.fromkeys(bad, 0)


# -- fake buses ---------------------------------------------------------------------------


class Plug:
    """The model behind a connector that can be pulled (MISO then floats high)."""

    def __init__(self, model: W5100Model) -> None:
        self.model = model
        self.plugged = True
        self.counters = model.counters

    def transfer(self, data: bytes) -> bytes:
        return self.transfer_batch([data])[0]

    def transfer_batch(
        self, frames: Sequence[bytes], tails: Sequence[int] | None = None
    ) -> list[bytes]:
        if self.plugged:
            return self.model.transfer_batch(frames, tails)
        self.counters.calls += 1
        self.counters.transactions += len(frames)
        return reply_tails([b"\xff" * len(f) for f in frames], tails)

    def close(self) -> None:
        pass


class OtherChip(Plug):
    """Something that answers like a WIZnet chip but whose RTR is not the W5100's reset value."""

    def transfer_batch(
        self, frames: Sequence[bytes], tails: Sequence[int] | None = None
    ) -> list[bytes]:
        out = self.model.transfer_batch(frames)
        return reply_tails([
            o[:3] + b"\x0f" if f[0] == r.OP_READ and f[1:3] in (b"\x00\x17", b"\x00\x18") else o
            for f, o in zip(frames, out, strict=True)
        ], tails)


class FdPin:
    """A pin with a descriptor, like a gpiod line request."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.waits = 0

    def set(self, value: bool) -> None:
        raise OSError("input")

    def get(self) -> bool:
        return True

    def wait_edge(self, edge: Edge, timeout_ms: float) -> bool:
        self.waits += 1
        return False

    def close(self) -> None:
        pass

    def fileno(self) -> int:
        return self.fd


# -- bring-up -----------------------------------------------------------------------------


def test_is_a_device_and_registered(dev: W5100Device, model: W5100Model) -> None:
    assert isinstance(dev, Device)
    assert isinstance(model, SpiBus)
    assert load_driver("w5100") is W5100Device
    assert dev.link_type is LinkType.ETHERNET and dev.mac == MAC and dev.mtu == 1500
    assert dev.name == "w5100"
    assert dev.link_up is True
    assert dev.fileno() is None


def test_states_its_rx_buffer(dev: W5100Device, model: W5100Model) -> None:
    """``rx_buffer_bytes``: 8 KB less the 2-byte MACRAW header of each full-size frame;
    as many full-size frames as it says fit (floor(8182 / 1514) = 5) are what the chip
    stores before it drops."""
    assert dev.rx_buffer_bytes == 8192 - 5 * 2
    for k in range(5):
        assert model.inject(frame(1514, k))
    assert not model.inject(frame(1514, 5))
    assert model.stats["rx_dropped_full"] == 1


def test_probe_configures_the_chip(dev: W5100Device, model: W5100Model) -> None:
    assert model.stats["soft_resets"] == 1 and model.stats["hard_resets"] == 0
    assert model.register(r.MR) == r.MR_PB
    assert bytes(model.register(r.SHAR + k) for k in range(6)) == MAC
    assert bytes(model.register(r.SIPR + k) for k in range(4)) == bytes(4)
    assert model.register(r.RMSR) == model.register(r.TMSR) == 0x03
    assert model.register(r.IMR) == 0
    assert model.register(r.S0_MR) == r.Sn_MR_MACRAW | r.Sn_MR_MF
    assert model.register(r.S0_SR) == r.SOCK_MACRAW
    assert model.buffer_layout()[0][0] == model.buffer_layout()[1][0] == (0, 8192)
    clean(model)


def test_probe_pulses_the_reset_pin(model: W5100Model, clock: ManualClock) -> None:
    with W5100Device(model, reset=InvertedPin(model.reset_pin), clock=clock) as d:
        assert model.stats["hard_resets"] == 1 and model.reset_pin.level is True
        assert d.link_up


def test_probe_waits_for_the_chip() -> None:
    """PLL lock after /RESET and a soft reset that takes time, on a real clock."""
    model = W5100Model(timing=W5100Timing(pll_lock_ms=4.0, soft_reset_ms=3.0))
    with W5100Device(model, reset=InvertedPin(model.reset_pin)) as d:
        assert d.link_up and model.register(r.S0_SR) == r.SOCK_MACRAW


def test_default_mac_is_random_local_unicast(model: W5100Model, clock: ManualClock) -> None:
    macs = set()
    for _ in range(3):
        with W5100Device(model, clock=clock) as d:
            assert d.mac is not None
            assert d.mac[0] & 0x03 == 0x02
            assert bytes(model.register(r.SHAR + k) for k in range(6)) == d.mac
            macs.add(d.mac)
    assert len(macs) == 3


@pytest.mark.parametrize(
    "kw", [{"mac": b"\x01\0\0\0\0\1"}, {"mac": b"\x02\0\0"}, {"mac": bytes(6)}, {"mtu": 1501},
           {"mtu": 40}, {"name": ""}],
)
def test_bad_arguments(model: W5100Model, kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        W5100Device(model, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("fill", [0x00, 0xFF])
def test_probe_fails_cleanly_on_an_empty_bus(fill: int) -> None:
    bus = FillBus(fill)
    with pytest.raises(ChipNotResponding) as e:
        W5100Device(bus)
    msg = str(e.value)
    assert "spidev9.9" in msg and WIRING_HINT in msg
    assert f"every byte read back 0x{fill:02X}" in msg
    if fill == 0xFF:
        assert "MR.RST did not clear (MR reads 0xFF)" in msg
    else:
        assert "no W5100 answered on " in msg and "RTR read 0x0000, expected 0x07D0" in msg
    assert bus.counters.calls < 30  # bounded


def test_probe_names_a_chip_that_is_not_a_w5100(model: W5100Model) -> None:
    with pytest.raises(ChipNotResponding) as e:
        W5100Device(OtherChip(model))
    assert "RTR read 0x0F0F" in str(e.value) and "not as a W5100" in str(e.value)


# -- frames -------------------------------------------------------------------------------


def test_frames_come_in(dev: W5100Device, model: W5100Model) -> None:
    sizes = [14, 59, 60, 61, 100, 999, 1513, 1514]
    sent = [frame(n, i) for i, n in enumerate(sizes)]
    for f in sent:
        assert model.inject(f)
    got = dev.poll(64)
    assert got == [on_wire(f) for f in sent]
    assert dev.counters.rx_frames == len(sent)
    assert dev.counters.rx_bytes == sum(len(on_wire(f)) for f in sent)
    assert dev.poll(64) == []
    assert dev.counters.rx_errors == 0
    clean(model)


def test_frames_go_out(dev: W5100Device, model: W5100Model) -> None:
    sizes = [14, 42, 60, 61, 1000, 1514]
    out = [frame(n, i, dst=PEER, src=MAC) for i, n in enumerate(sizes)]
    for f in out:
        assert dev.send(f) is True
    assert model.sent == [on_wire(f) for f in out]  # padded by the driver (model: tx_short 0)
    c = dev.counters
    assert (c.tx_frames, c.tx_bytes, c.tx_dropped, c.tx_errors) == (6, sum(sizes), 0, 0)
    clean(model)


def test_send_accepts_any_buffer(dev: W5100Device, model: W5100Model) -> None:
    f = frame(100, dst=PEER, src=MAC)
    big = bytearray(b"\xaa" * 3 + f + b"\xbb" * 5)
    for buf in (f, bytearray(f), memoryview(big)[3 : 3 + len(f)]):
        assert dev.send(buf) is True
    assert model.sent == [f, f, f]


def test_send_refuses_bad_sizes(model: W5100Model, clock: ManualClock) -> None:
    with W5100Device(model, clock=clock, mtu=1000) as d:
        for n in (0, 13, 1015, 1514):
            assert d.send(bytes(n)) is False
        assert d.counters.tx_errors == 4 and d.counters.tx_frames == 0
        assert d.send(frame(1014, dst=PEER)) is True
    assert len(model.sent) == 1


def test_mac_filter_option(model: W5100Model, clock: ManualClock) -> None:
    with W5100Device(model, mac=MAC, clock=clock) as d:
        for dst in (MAC, BCAST, OTHER):
            model.inject(frame(60, dst=dst))
        assert [f[:6] for f in d.poll(8)] == [MAC, BCAST]
        assert model.stats["rx_filtered"] == 1
    with W5100Device(model, mac=MAC, clock=clock, mac_filter=False) as d:
        assert model.register(r.S0_MR) == r.Sn_MR_MACRAW
        model.inject(frame(60, dst=OTHER))
        assert [f[:6] for f in d.poll(8)] == [OTHER]


def test_poll_honours_budget(dev: W5100Device, model: W5100Model) -> None:
    sent = [frame(80, i) for i in range(10)]
    for f in sent:
        model.inject(f)
    cost = Cost(model.counters)
    assert dev.poll(0) == [] and dev.poll(-1) == []
    assert cost.calls == 0  # poll(0) does not touch the bus
    got: list[bytes] = []
    sizes = []
    for _ in range(5):
        batch = dev.poll(3)
        sizes.append(len(batch))
        got += batch
    assert sizes == [3, 3, 3, 1, 0]
    assert got == sent


# -- wrap-around ----------------------------------------------------------------------------


def test_tx_buffer_wraps(dev: W5100Device, model: W5100Model) -> None:
    sizes = [1514, 1000, 777, 1513, 60, 1400, 333, 1514, 999] * 4
    out = [frame(n, i, dst=PEER, src=MAC) for i, n in enumerate(sizes)]
    ptr, straddles = 0, 0
    for f in out:
        straddles += (ptr & 0x1FFF) + len(f) > 0x2000
        ptr += len(f)
        assert dev.send(f)
    assert straddles >= 3 and ptr > 4 * 0x2000
    assert model.sent == out
    assert reg16(model, r.S0_TX_WR) == ptr & 0xFFFF
    clean(model)


def test_rx_buffer_wraps_even_inside_the_header(dev: W5100Device, model: W5100Model) -> None:
    # 5 x (1514 + 2) + (609 + 2) = 8191: the next header is split over the end of the buffer.
    first = [frame(1514, i) for i in range(5)] + [frame(609, 5)]
    for f in first:
        assert model.inject(f)
    assert drain(dev) == first
    assert reg16(model, r.S0_RX_RD) == 8191
    split = frame(300, 6)
    assert model.inject(split)
    assert dev.poll(4) == [split]
    # then round the ring a few more times, the data split at varying places
    more = [frame(n, 7 + i) for i, n in enumerate([1514, 61, 1200, 777, 1514, 1023] * 6)]
    got: list[bytes] = []
    for i in range(0, len(more), 4):
        for f in more[i : i + 4]:
            assert model.inject(f)
        got += dev.poll(64)
    assert got == more
    assert reg16(model, r.S0_RX_RD) == (8191 + 302 + sum(n + 2 for n in map(len, more))) & 0xFFFF
    assert dev.counters.rx_errors == 0
    clean(model)


# -- TX busy, full, stalled -----------------------------------------------------------------


def test_tx_busy_refused_then_accepted(clock: ManualClock) -> None:
    model = W5100Model(clock=clock, timing=W5100Timing(send_ms=1.0))
    with W5100Device(model, clock=clock) as d:
        a, b, c = (frame(200, i, dst=PEER) for i in range(3))
        assert d.send(a) is True
        assert d.send(b) is False  # SEND of a still in flight: the chip is busy
        assert d.counters.tx_dropped == 1 and d.counters.tx_errors == 0
        clock.advance(1.0)
        assert d.send(c) is True
        clock.advance(1.0)
        d.poll(1)
        assert model.sent == [a, c]
        clean(model)


def test_tx_full_by_fsr(dev: W5100Device, model: W5100Model) -> None:
    """A chip that reports no free TX space gets no frame."""

    class NoRoom(Plug):
        def transfer_batch(
            self, frames: Sequence[bytes], tails: Sequence[int] | None = None
        ) -> list[bytes]:
            out = self.model.transfer_batch(frames)
            fsr = (b"\x04\x20", b"\x04\x21")
            return reply_tails([
                o[:3] + b"\x00" if f[0] == r.OP_READ and f[1:3] in fsr else o
                for f, o in zip(frames, out, strict=True)
            ], tails)

    with W5100Device(NoRoom(model), clock=ManualClock()) as d:
        d._cr_busy = True  # force the checked path (the one that reads Sn_TX_FSR)
        assert d.send(frame(100, dst=PEER)) is False
        assert d.counters.tx_dropped == 1
    assert model.sent == []


def test_stalled_send_is_detected_by_send(
    dev: W5100Device, model: W5100Model, clock: ManualClock
) -> None:
    model.faults.stall_send = True
    a, b, c, d = (frame(100, i, dst=PEER) for i in range(4))
    assert dev.send(a) is True
    assert model.stats["tx_stalled"] == 1
    assert dev.send(b) is False and dev.counters.tx_dropped == 1  # busy, not yet a stall
    clock.advance(100.0)
    assert dev.send(c) is False  # the stall is seen: counted, socket re-opened
    assert dev.counters.tx_errors == 1 and dev.tx_stalls == 1 and dev.reopens == 1
    model.faults.stall_send = False
    assert dev.send(d) is True
    assert model.sent == [d]
    clean(model)


def test_stalled_send_is_detected_by_poll(
    dev: W5100Device, model: W5100Model, clock: ManualClock
) -> None:
    model.faults.stall_send = True
    assert dev.send(frame(100, dst=PEER)) is True
    assert dev.poll(4) == []
    assert dev.counters.tx_errors == 0
    clock.advance(100.0)
    model.faults.stall_send = False
    assert dev.poll(4) == []
    assert dev.counters.tx_errors == 1 and dev.tx_stalls == 1
    model.inject(frame(70))
    assert dev.poll(4) == [frame(70)]
    assert dev.send(frame(90, dst=PEER)) is True and model.sent == [frame(90, dst=PEER)]


def test_stall_detected_by_check_count_on_a_frozen_clock(
    dev: W5100Device, model: W5100Model
) -> None:
    dev.SEND_MAX_CHECKS = 5
    model.faults.stall_send = True
    assert dev.send(frame(100, dst=PEER))
    for _ in range(5):
        dev.poll(1)
    assert dev.tx_stalls == 1 and dev.counters.tx_errors == 1


# -- faults ---------------------------------------------------------------------------------


def _near(a: bytes, b: bytes, max_bytes: int) -> bool:
    return len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) <= max_bytes


def test_bit_errors_on_miso(dev: W5100Device, model: W5100Model) -> None:
    model.faults.bit_error_rate = 1e-3  # per MISO bit: ~3 % of replies carry a flipped bit
    n = 120
    inbound = [frame(300, i) for i in range(n)]
    got: list[bytes] = []
    for i in range(0, n, 6):
        for f in inbound[i : i + 6]:
            model.inject(f)
        got += dev.poll(64)
    got += drain(dev)
    outbound = [frame(300, i, dst=PEER, src=MAC) for i in range(n)]
    accepted = sum(dev.send(f) for f in outbound)
    assert model.stats["bit_errors"] > 100
    # Headers and sizes are read twice and compared: misreads are redone, not delivered.
    assert dev.bus_errors > 0
    assert len(got) >= n - 2 and all(len(f) == 300 for f in got)
    assert sum(f == e for f, e in zip(got, inbound, strict=False)) < len(got)  # payload flips
    assert all(_near(f, e, 8) for f, e in zip(got, inbound, strict=False))
    assert accepted >= n - 2 and model.sent[:3] == outbound[:3]
    assert model.stats["rx_misaligned"] == 0 and model.stats["pointer_errors"] == 0
    # errors stop: clean traffic both ways
    model.faults.bit_error_rate = 0.0
    drain(dev)
    model.sent.clear()
    after = [frame(500, 1000 + i) for i in range(10)]
    for f in after:
        model.inject(f)
    assert drain(dev) == after
    assert all(dev.send(f) for f in after) and model.sent == after


def test_heavy_bit_errors_are_survived(dev: W5100Device, model: W5100Model) -> None:
    """A quarter of all replies damaged: bad frames are counted, nothing raises, traffic resumes."""
    model.faults.bit_error_rate = 1e-2
    for i in range(0, 300, 6):
        for j in range(6):
            model.inject(frame(300, i + j))
        dev.poll(64)
        dev.send(frame(300, i, dst=PEER))
    assert dev.bus_errors > 100
    assert dev.counters.rx_frames > 200
    model.faults.bit_error_rate = 0.0
    drain(dev)
    dev.poll(1)
    model.sent.clear()
    after = [frame(500, 1000 + i) for i in range(10)]
    for f in after:
        model.inject(f)
    assert drain(dev) == after
    assert all(dev.send(f) for f in after) and model.sent == after


class FlakyBus(Plug):
    """Raises OSError (an ioctl that failed) on the next ``fail`` calls."""

    fail = 0

    def transfer_batch(
        self, frames: Sequence[bytes], tails: Sequence[int] | None = None
    ) -> list[bytes]:
        if self.fail:
            self.fail -= 1
            raise OSError(5, "SPI_IOC_MESSAGE: Input/output error")
        return super().transfer_batch(frames, tails)


def test_bus_errors_are_counted_not_raised(model: W5100Model, clock: ManualClock) -> None:
    bus = FlakyBus(model)
    with W5100Device(bus, mac=MAC, clock=clock) as d:
        model.inject(frame(100))
        bus.fail = 1
        assert d.poll(4) == [] and d.counters.rx_errors == 1
        bus.fail = 1
        assert d.send(frame(100, dst=PEER)) is False and d.counters.tx_errors == 1
        assert d.poll(4) == [frame(100)]
        assert d.send(frame(100, dst=PEER)) is True


class LosesWrites(Plug):
    """Swallows the next ``count`` write frames equal to ``victim`` (a write lost on MOSI)."""

    def __init__(self, model: W5100Model, victim: bytes, count: int = 1) -> None:
        super().__init__(model)
        self.victim = victim
        self.count = count

    def transfer_batch(
        self, frames: Sequence[bytes], tails: Sequence[int] | None = None
    ) -> list[bytes]:
        keep = []
        for f in frames:
            if self.count and f == self.victim:
                self.count -= 1
                f = b"\x00\x00\x00\x00"  # not a frame the chip acts on
            keep.append(f)
        return self.model.transfer_batch(keep, tails)


def test_lost_send_command_is_repeated(model: W5100Model, clock: ManualClock) -> None:
    bus = LosesWrites(model, bytes((r.OP_WRITE, 0x04, 0x01, r.Sn_CR_SEND)))
    with W5100Device(bus, mac=MAC, clock=clock) as d:
        f = frame(300, dst=PEER)
        assert d.send(f) is True and bus.count == 0
        assert model.sent == [f] and d.bus_errors >= 1 and d.counters.tx_errors == 0


def test_lost_recv_command_is_repeated(model: W5100Model, clock: ManualClock) -> None:
    bus = LosesWrites(model, bytes((r.OP_WRITE, 0x04, 0x01, r.Sn_CR_RECV)))
    with W5100Device(bus, mac=MAC, clock=clock) as d:
        sent = [frame(300, 1), frame(200, 2)]
        for f in sent:
            model.inject(f)
        assert drain(d) == sent and bus.count == 0
        assert d.bus_errors >= 1 and d.counters.rx_errors == 0
        assert model.stats["rx_misaligned"] == 0 and model.stats["pointer_errors"] == 0


def test_torn_tx_wr_write_is_an_error(model: W5100Model, clock: ManualClock) -> None:
    """TX_WR's high byte never arrives: the chip sends the wrong span; count it, resync."""
    bus = LosesWrites(model, bytes((r.OP_WRITE, 0x04, 0x24, 0x01)))  # TX_WR hi = 0x01
    with W5100Device(bus, mac=MAC, clock=clock) as d:
        assert d.send(frame(300, dst=PEER)) is False
        assert d.counters.tx_errors == 1 and d.reopens == 1
        model.sent.clear()
        assert d.send(frame(300, 1, dst=PEER)) is True
        assert model.sent == [frame(300, 1, dst=PEER)]


def test_soft_reset_between_polls(dev: W5100Device, model: W5100Model) -> None:
    model.inject(frame(100, 1))
    assert dev.poll(4) == [frame(100, 1)]
    model.soft_reset()
    model.inject(frame(100, 2))  # the socket is closed: lost by the chip
    assert dev.poll(4) == []
    assert dev.resets == 1 and dev.counters.rx_errors == 1
    assert model.register(r.S0_SR) == r.SOCK_MACRAW and model.register(r.MR) == r.MR_PB
    assert bytes(model.register(r.SHAR + k) for k in range(6)) == MAC
    model.inject(frame(100, 3))
    assert dev.poll(4) == [frame(100, 3)]
    assert dev.send(frame(100, 4, dst=PEER)) and model.sent == [frame(100, 4, dst=PEER)]


@pytest.mark.parametrize("hard", [False, True])
def test_reset_inside_a_receive_batch(dev: W5100Device, model: W5100Model, hard: bool) -> None:
    for i in range(3):
        model.inject(frame(400, i))
    model.schedule_reset(after_frames=13 + 100, hard=hard)  # inside the first frame's copy
    got = dev.poll(8)
    assert got == []  # the frame read across the reset is not handed over
    assert dev.resets == 1 and dev.counters.rx_errors == 1
    assert model.stats["hard_resets" if hard else "soft_resets"] == (1 if hard else 2)
    model.inject(frame(400, 9))
    assert drain(dev) == [frame(400, 9)]
    clean(model)


def test_reset_inside_a_send_batch(dev: W5100Device, model: W5100Model) -> None:
    f = frame(1000, dst=PEER)
    model.schedule_reset(after_frames=500)
    assert dev.send(f) is True  # seen, re-initialised, sent again: one frame out
    assert model.sent == [f]
    assert dev.resets == 1 and dev.counters.tx_frames == 1


def test_reset_found_by_the_health_check(dev: W5100Device, model: W5100Model) -> None:
    """Registers changed under us while the socket stayed open."""
    model.transfer_batch([bytes((r.OP_WRITE, 0, r.SHAR, 0x66))])
    for _ in range(dev.HEALTH_EVERY):
        dev.poll(1)
    assert dev.resets == 1
    assert bytes(model.register(r.SHAR + k) for k in range(6)) == MAC


def test_chip_held_in_reset_then_back(
    dev: W5100Device, model: W5100Model, clock: ManualClock
) -> None:
    model.reset_pin.set(False)  # the chip stops answering (MISO idles low)
    assert dev.poll(4) == []
    assert dev.link_up is False
    assert dev.send(frame(100, dst=PEER)) is False and dev.counters.tx_dropped == 1
    model.reset_pin.set(True)
    clock.advance(dev.REPROBE_MS)
    assert dev.poll(4) == []
    assert dev.link_up is True and dev.resets == 1
    model.inject(frame(64))
    assert dev.poll(4) == [frame(64)]


def test_unplugged_and_plugged_again(model: W5100Model, clock: ManualClock) -> None:
    plug = Plug(model)
    with W5100Device(plug, clock=clock) as d:
        plug.plugged = False
        clock.advance(d.STATUS_TTL_MS + 1)
        assert d.link_up is False
        assert d.poll(4) == [] and d.counters.rx_errors == 1
        assert d.link_up is False
        plug.plugged = True
        clock.advance(d.REPROBE_MS)
        d.poll(4)
        assert d.link_up is True
        model.inject(frame(100, dst=d.mac or b""))
        assert len(d.poll(4)) == 1


def test_rx_overflow(dev: W5100Device, model: W5100Model) -> None:
    stored = model.fill_rx()
    assert stored > 100
    assert not model.inject(frame(100))
    model.faults.rx_full = True
    assert not model.inject(frame(100))
    assert model.stats["rx_dropped_full"] == 2
    assert len(drain(dev, budget=16)) == stored
    model.faults.rx_full = False
    model.inject(frame(100, 5))
    assert dev.poll(4) == [frame(100, 5)]
    assert dev.counters.rx_errors == 0
    clean(model)


@pytest.mark.parametrize("header", [0xFFFF, 0x0005, 0x0000, 1514 + 4 + 2 + 1])
def test_rx_out_of_step_reopens(dev: W5100Device, model: W5100Model, header: int) -> None:
    model.inject(frame(100))
    model.rx_mem[0:2] = header.to_bytes(2, "big")  # the header at RX_RD is nonsense
    assert dev.poll(4) == []
    assert dev.counters.rx_errors == 1 and dev.reopens == 1
    model.inject(frame(100, 1))
    assert dev.poll(4) == [frame(100, 1)]


def test_rx_header_longer_than_received(dev: W5100Device, model: W5100Model) -> None:
    model.inject(frame(100))
    model.rx_mem[0:2] = (300).to_bytes(2, "big")  # plausible, but more than RX_RSR
    assert dev.poll(4) == []
    assert dev.counters.rx_errors == 1 and dev.reopens == 1


def test_busy_chip_on_a_real_clock() -> None:
    """Commands and SENDs that take time: the driver never writes Sn_CR while one is pending."""
    model = W5100Model(timing=W5100Timing(cmd_ms=0.2, send_ms=0.3))
    with W5100Device(model, mac=MAC, send_timeout_ms=10_000) as d:
        d.COMMAND_TIMEOUT_MS = 10_000  # a slow CI runner must not look like a stuck chip
        inbound = [frame(200 + i, i) for i in range(20)]
        outbound = [frame(300 + i, i, dst=PEER) for i in range(20)]
        got: list[bytes] = []
        for f_in, f_out in zip(inbound, outbound, strict=True):
            model.inject(f_in)
            got += d.poll(8)
            for _ in range(200):
                if d.send(f_out):
                    break
        got += drain(d)
        for _ in range(100):
            if len(got) == len(inbound):
                break
            got += d.poll(8)
        assert got == inbound
        for _ in range(50):  # the last SEND finishes
            d.poll(1)
        assert model.sent == outbound
        clean(model)


# -- interrupt line, descriptor, close -------------------------------------------------------


def test_interrupt_line_goes_quiet_after_poll(model: W5100Model, clock: ManualClock) -> None:
    with W5100Device(model, mac=MAC, irq=InvertedPin(model.int_pin), clock=clock) as d:
        assert model.register(r.IMR) == r.IR_S0
        assert model.int_pin.level is True
        model.inject(frame(100))
        assert model.int_pin.level is False  # asserted: the frame is waiting
        assert d.poll(4) == [frame(100)]
        assert model.int_pin.level is True  # quiet again, so the next frame makes an edge
        falls = model.int_pin.falling
        assert d.send(frame(100, dst=PEER))
        d.poll(4)  # takes SEND_OK
        assert model.int_pin.level is True
        model.inject(frame(100, 1))
        assert model.int_pin.falling > falls
        assert d.poll(4) == [frame(100, 1)]
        assert model.int_pin.level is True


def test_interrupt_line_quiet_after_send_ok_seen_by_poll(clock: ManualClock) -> None:
    model = W5100Model(clock=clock, timing=W5100Timing(send_ms=1.0))
    with W5100Device(model, mac=MAC, irq=InvertedPin(model.int_pin), clock=clock) as d:
        assert d.send(frame(100, dst=PEER))
        clock.advance(1.0)
        assert d.poll(4) == []
        assert model.int_pin.level is True


class PipeWire:
    """The Ethernet under the model: frames pushed here wait, and a pipe says so."""

    name, link_type, mac, mtu = "pipewire", LinkType.ETHERNET, PEER, 1500

    def __init__(self) -> None:
        self.counters = DeviceCounters()
        self.rx: deque[bytes] = deque()
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)

    def push(self, f: bytes) -> None:
        self.rx.append(f)
        os.write(self.w, b"x")

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        return True

    def poll(self, budget: int) -> list[bytes]:
        out = [self.rx.popleft() for _ in range(min(budget, len(self.rx)))]
        if out:
            os.read(self.r, len(out))
        return out

    @property
    def link_up(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.r

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


def test_fileno_wakes_when_a_send_pulls_frames_in(clock: ManualClock) -> None:
    """A send is a bus call: the model pulls what waits on the wire and /INT falls. The
    descriptor the stack sleeps on must turn readable then, not at its next timer; the
    poll that takes the frame takes the edge too, so the descriptor goes quiet."""
    wire = PipeWire()
    model = W5100Model(wire, clock=clock)
    try:
        with W5100Device(model, mac=MAC, irq=InvertedPin(model.int_pin), clock=clock) as d:
            d.poll(4)
            fd = d.fileno()
            assert fd is not None and not select.select([fd], [], [], 0)[0]
            wire.push(frame(100, 1))
            assert d.send(frame(100, 2, dst=PEER))
            assert model.stats["frames_in"] == 1  # in the chip; the wire is quiet
            assert not select.select([wire.fileno()], [], [], 0)[0]
            assert select.select([fd], [], [], 0)[0]
            assert d.poll(4) == [frame(100, 1)]
            assert not select.select([fd], [], [], 0)[0]
    finally:
        model.close()
        wire.close()


def test_fileno_is_the_irq_pins(model: W5100Model, clock: ManualClock) -> None:
    rfd, wfd = os.pipe()
    try:
        pin = FdPin(rfd)
        d = W5100Device(model, irq=pin, clock=clock)
        assert d.fileno() == rfd
        d.poll(4)
        assert pin.waits >= 1  # queued edges are consumed
        d.close()
        assert d.fileno() is None
    finally:
        os.close(rfd)
        os.close(wfd)


def test_close(dev: W5100Device, model: W5100Model) -> None:
    dev.close()
    assert model.register(r.S0_SR) == r.SOCK_CLOSED
    assert dev.link_up is False and dev.closed
    with pytest.raises(DeviceClosed):
        dev.send(frame(60, dst=PEER))
    with pytest.raises(DeviceClosed):
        dev.poll(1)
    dev.close()
    assert model.transfer(bytes((r.OP_READ, 0, r.RTR, 0)))[3] == 0x07  # the bus is not ours


def test_link_up_sees_a_reset_before_any_poll(
    dev: W5100Device, model: W5100Model, clock: ManualClock
) -> None:
    assert dev.link_up is True
    model.soft_reset()
    clock.advance(dev.STATUS_TTL_MS + 1)
    assert dev.link_up is False
    dev.poll(1)
    assert dev.link_up is True


# -- bus cost (counts, not time) ----------------------------------------------------------------


def test_cost_of_an_empty_poll(dev: W5100Device, model: W5100Model) -> None:
    dev.poll(8)
    cost = Cost(model.counters)
    assert dev.poll(8) == []
    assert (cost.calls, cost.transactions) == (1, 13)


def test_cost_of_receiving(dev: W5100Device, model: W5100Model) -> None:
    f = frame(1514)
    model.inject(f)
    cost = Cost(model.counters)
    assert dev.poll(8) == [f]
    # call 1: Sn_SR, Sn_CR, Sn_IR, RX_RD, RX_RSR x2, header x2;
    # call 2: frame, Sn_SR, RX_RD, RECV, Sn_CR, RX_RD, Sn_IR, RX_RSR x2, next header x2
    assert cost.calls == 2
    assert cost.transactions == 13 + 1514 + 16
    assert cost.bytes == 4 * cost.transactions
    burst = [frame(1514, i) for i in range(5)]
    for g in burst:
        model.inject(g)
    cost = Cost(model.counters)
    assert dev.poll(8) == burst
    assert cost.calls == 1 + 5  # one call per frame in a burst
    assert cost.transactions <= 13 + 5 * (1514 + 16)
    assert cost.bytes / (5 * 1514) <= 4.1


def test_cost_of_sending(dev: W5100Device, model: W5100Model) -> None:
    f = frame(1514, dst=PEER)
    assert dev.send(f)
    cost = Cost(model.counters)
    for _ in range(10):
        assert dev.send(f)
    # one call: frame, Sn_SR, clear SEND_OK, TX_WR, SEND, Sn_CR, TX_WR, Sn_IR
    assert cost.calls == 10
    assert cost.transactions == 10 * (1514 + 9)
    assert cost.bytes / (10 * 1514) <= 4.1


def test_cost_of_sending_while_the_last_send_is_in_flight(clock: ManualClock) -> None:
    model = W5100Model(clock=clock, timing=W5100Timing(send_ms=0.5))
    with W5100Device(model, clock=clock) as d:
        f = frame(1514, dst=PEER)
        assert d.send(f)
        clock.advance(0.5)
        cost = Cost(model.counters)
        assert d.send(f)  # copy + status, then commit
        assert cost.calls == 2
        assert cost.transactions == 1514 + 5 + 9 - 1
        assert cost.bytes / 1514 <= 4.1


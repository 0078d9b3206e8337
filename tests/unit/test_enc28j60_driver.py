"""ENC28J60Device against the register-level ENC28J60 model (and a few fake buses).

The driver never imports the model; only this test does. Most tests run the
model with ``ENC28J60Timing.instant()`` on a ManualClock, so completions,
stalls and re-probes are exact; a few use the model's real timing on the
monotonic clock where the timing is the point (reset start-up, the wire).
Bus costs are asserted as counts (calls, transactions, bank switches), never
as time.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator, Sequence

import pytest

from hilkit.drivers.enc28j60 import WIRING_HINT, ENC28J60Device
from hilkit.drivers.enc28j60 import regs as r
from hilkit.drivers.enc28j60.driver import STAT_NAMES, ring_add, rx_capacity, rx_read_pointer
from hilkit.drivers.enc28j60.driver import _aim as learn_aim
from hilkit.drivers.enc28j60.model import ENC28J60Faults, ENC28J60Model, ENC28J60Timing
from hilkit.drivers.enc28j60.nic import NIC
from hilkit.port.clock import ManualClock
from hilkit.port.conformance import DeviceConformance, DevicePair
from hilkit.port.device import Device, DeviceClosed, LinkType, device_rx_buffer
from hilkit.port.errors import ChipNotResponding
from hilkit.port.pin import Edge, InvertedPin
from hilkit.port.spi import BusCounters, SpiBus, reply_tails
from hilkit.stack import PingError, PingStats, Stack
from tests.fakebus import FillBus
from tests.memwire import A_IP, B_IP, WireEnd, wire

MAC = b"\x02\x00\x00\x00\x00\x01"
PEER = b"\x02\x00\x00\x00\x00\x02"
OTHER = b"\x02\x00\x00\x00\x00\x03"
BCAST = b"\xff" * 6


def frame(n: int, seq: int = 0, dst: bytes = MAC, src: bytes = PEER) -> bytes:
    """An Ethernet frame of ``n`` bytes with a recognisable body."""
    body = seq.to_bytes(4, "big") + bytes((seq * 7 + i) & 0xFF for i in range(max(0, n - 18)))
    return (dst + src + b"\x88\xb5" + body)[:n]


def on_wire(f: bytes) -> bytes:
    """Short frames are padded to 60 bytes (by the sending NIC or by MACON3.PADCFG)."""
    return f.ljust(60, b"\0")


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


def u16(model: ENC28J60Model, low: r.Reg) -> int:
    high = r.Reg(low.name[:-1] + "H", low.bank, low.addr + 1)
    return model.register(low) | model.register(high) << 8


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def model(clock: ManualClock) -> ENC28J60Model:
    return ENC28J60Model(clock=clock, seed=1, timing=ENC28J60Timing.instant())


@pytest.fixture
def dev(model: ENC28J60Model, clock: ManualClock) -> Iterator[ENC28J60Device]:
    d = ENC28J60Device(model, mac=MAC, clock=clock)
    yield d
    d.close()


def drain(dev: ENC28J60Device, budget: int = 64, rounds: int = 100) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(rounds):
        got = dev.poll(budget)
        if not got:
            break
        out += got
    return out


def clean(model: ENC28J60Model) -> None:
    """What a correct driver never makes the model count."""
    bad = ("bad_frames", "bad_opcodes", "reserved_access", "ro_writes", "bfs_bfc_on_mac",
           "access_clock_unready", "mii_while_busy", "phy_ro_writes", "phy_reserved",
           "pktdec_underflow", "erxrdpt_even", "tx_bad_bounds", "tx_short", "tx_giant",
           "duplex_mismatch", "rx_bad_ring")
    assert {k: model.stats[k] for k in bad} == dict.fromkeys(bad, 0)


# -- fake buses ---------------------------------------------------------------------------


class Plug:
    """The model behind a connector: it can be pulled (MISO floats high), a call can fail
    (``fail``), and every instruction is recorded (``log``)."""

    def __init__(self, model: ENC28J60Model) -> None:
        self.model = model
        self.plugged = True
        self.fail = 0
        self.counters = model.counters
        self.log: list[bytes] = []

    def transfer(self, data: bytes) -> bytes:
        return self.transfer_batch([data])[0]

    def transfer_batch(
        self, frames: Sequence[bytes], tails: Sequence[int] | None = None
    ) -> list[bytes]:
        if self.fail:
            self.fail -= 1
            raise OSError(5, "SPI_IOC_MESSAGE: Input/output error")
        self.log += frames
        if self.plugged:
            return self.model.transfer_batch(frames, tails)
        self.counters.calls += 1
        self.counters.transactions += len(frames)
        return reply_tails([b"\xff" * len(f) for f in frames], tails)

    def close(self) -> None:
        pass


class FdPin:
    """A pin with a descriptor, like a gpiod line request."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.waits = 0

    def set(self, value: bool) -> None:
        raise OSError("input")

    def get(self) -> bool:
        return False

    def wait_edge(self, edge: Edge, timeout_ms: float) -> bool:
        self.waits += 1
        return False

    def close(self) -> None:
        pass

    def fileno(self) -> int:
        return self.fd


def bank_changes(log: Sequence[bytes]) -> tuple[int, int]:
    """(BSEL changes, BFS/BFC of BSEL that changed nothing) in a recorded instruction stream."""
    bank, changes, idle = 0, 0, 0
    for f in log:
        if f[0] == r.OP_SRC or f[:2] == bytes((r.OP_WCR | r.ECON1.addr, 0)):
            bank = 0
            continue
        if f[0] in (r.OP_BFS | r.ECON1.addr, r.OP_BFC | r.ECON1.addr) and f[1] & r.ECON1_BSEL:
            mask = f[1] & r.ECON1_BSEL
            new = bank | mask if f[0] & 0xE0 == r.OP_BFS else bank & ~mask
            changes += new != bank
            idle += new == bank
            bank = new
    return changes, idle


# -- bring-up -----------------------------------------------------------------------------


def test_is_a_device(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    assert isinstance(dev, Device)
    assert isinstance(model, SpiBus)
    assert dev.link_type is LinkType.ETHERNET and dev.mac == MAC and dev.mtu == 1500
    assert dev.name == "enc28j60" and dev.link_up is True and dev.fileno() is None
    # ring 0x0000-0x13FF (5120 bytes): 3 frames of 1514 + 10 fit; 5119 - 3 x 10 = 5089
    assert dev.rx_buffer_bytes == rx_capacity(1500) == 5089
    assert device_rx_buffer(dev) == 5089
    assert tuple(dev.stats) == STAT_NAMES
    assert dev.probe() == r.EREVID_B7 == dev.revision


def test_init_configures_the_chip_half_duplex(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    assert model.stats["soft_resets"] == 1 and model.stats["hard_resets"] == 0
    assert model.register(r.ECON1) & r.ECON1_RXEN
    assert model.register(r.ECON2) == r.ECON2_AUTOINC | r.ECON2_VRPS
    # errata item 5: RX ring at 0x0000; two TX buffers above it; ERXRDPT odd (item 14)
    assert (u16(model, r.ERXSTL), u16(model, r.ERXNDL)) == (0x0000, 0x13FF)
    assert u16(model, r.ERXRDPTL) == 0x13FF and u16(model, r.ETXSTL) == 0x1400
    assert model.register(r.ERXFCON) == r.ERXFCON_UCEN | r.ERXFCON_CRCEN | r.ERXFCON_BCEN
    assert model.register(r.MACON1) == r.MACON1_MARXEN
    assert model.register(r.MACON3) == r.MACON3_PADCFG0 | r.MACON3_TXCRCEN | r.MACON3_FRMLNEN
    assert model.register(r.MACON4) == r.MACON4_DEFER
    assert (model.register(r.MABBIPG), model.register(r.MAIPGL), model.register(r.MAIPGH)) == (
        0x12, 0x12, 0x0C)
    assert u16(model, r.MAMXFLL) == 1518
    # MAADR1 (first octet) lives at bank 3 address 0x04 (Table 3-2)
    assert r.MAADR1.addr == 0x04 and bytes(model.register(x) for x in r.MAADR) == MAC
    assert model.phy(r.PHCON1) & r.PHCON1_PDPXMD == 0
    assert model.phy(r.PHCON2) & r.PHCON2_HDLDIS
    assert model.phy(r.PHLCON) == 0x3476
    assert model.phy(r.PHIE) == r.PHIE_PGEIE | r.PHIE_PLNKIE
    assert model.register(r.EIE) == 0  # no interrupt line: /INT stays quiet
    clean(model)


def test_full_duplex(model: ENC28J60Model, clock: ManualClock) -> None:
    with ENC28J60Device(model, mac=MAC, clock=clock, full_duplex=True) as d:
        assert model.register(r.MACON3) & r.MACON3_FULDPX
        assert model.phy(r.PHCON1) & r.PHCON1_PDPXMD
        assert model.register(r.MABBIPG) == 0x15
        assert model.register(r.MACON1) == (
            r.MACON1_MARXEN | r.MACON1_TXPAUS | r.MACON1_RXPAUS)
        assert d.send(frame(100, dst=PEER)) and model.sent == [frame(100, dst=PEER)]
        model.inject(frame(100))
        assert d.poll(4) == [frame(100)]
        clean(model)


def test_probe_pulses_the_reset_pin(model: ENC28J60Model, clock: ManualClock) -> None:
    with ENC28J60Device(model, reset=InvertedPin(model.reset_pin), clock=clock) as d:
        assert model.stats["hard_resets"] == 1 and model.reset_pin.level is True
        assert d.link_up


def test_probe_waits_out_the_start_up_timer() -> None:
    """The model's real reset timing on the monotonic clock: nothing is lost to it."""
    model = ENC28J60Model(timing=ENC28J60Timing(wire=False))
    with ENC28J60Device(model, mac=MAC, reset=InvertedPin(model.reset_pin)) as d:
        assert d.link_up and model.stats["access_clock_unready"] == 0
        assert bytes(model.register(x) for x in r.MAADR) == MAC


@pytest.mark.parametrize(
    "kw", [{"mac": b"\x01\0\0\0\0\1"}, {"mac": b"\x02\0\0"}, {"mac": bytes(6)}, {"mtu": 1501},
           {"mtu": 40}, {"name": ""}],
)
def test_bad_arguments(model: ENC28J60Model, kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ENC28J60Device(model, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("fill", [0x00, 0xFF])
def test_probe_fails_cleanly_on_an_empty_bus(fill: int) -> None:
    bus = FillBus(fill)
    with pytest.raises(ChipNotResponding) as e:
        ENC28J60Device(bus)
    msg = str(e.value)
    assert msg.startswith(
        f"no ENC28J60 answered on spidev9.9: EREVID read 0x{fill:02X}, expected 0x06 (Rev. B7)")
    assert f"every byte read back 0x{fill:02X}" in msg and WIRING_HINT in msg
    assert bus.counters.calls < 10  # bounded


def test_other_revision_is_accepted_with_a_warning(
    model: ENC28J60Model, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    class RevB5(Plug):
        def transfer_batch(
            self, frames: Sequence[bytes], tails: Sequence[int] | None = None
        ) -> list[bytes]:
            out = []
            for f in frames:  # one at a time, to know the bank of each
                bank3 = model.register(r.ECON1) & r.ECON1_BSEL == 3
                o = super().transfer_batch([f])[0]
                out.append(o[:1] + b"\x05" if bank3 and f[0] == r.EREVID.addr else o)
            return reply_tails(out, tails)

    with ENC28J60Device(RevB5(model), clock=clock) as d:
        assert d.revision == 0x05 and "not Rev. B7" in caplog.text


# -- frames -------------------------------------------------------------------------------


def test_frames_come_in(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    sizes = [14, 59, 60, 61, 100, 999, 1513, 1514]
    sent = [frame(n, i) for i, n in enumerate(sizes)]
    for f in sent:
        assert model.inject(f)
    got = dev.poll(64)
    assert got == [on_wire(f) for f in sent]  # without the FCS
    assert dev.counters.rx_frames == len(sent)
    assert dev.counters.rx_bytes == sum(len(on_wire(f)) for f in sent)
    assert dev.poll(64) == [] and dev.counters.rx_errors == 0
    assert model.register(r.EPKTCNT) == 0
    clean(model)


def test_frames_go_out(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    sizes = [14, 42, 60, 61, 1000, 1514]
    out = [frame(n, i, dst=PEER, src=MAC) for i, n in enumerate(sizes)]
    for f in out:
        assert dev.send(f) is True
    assert model.sent == [on_wire(f) for f in out]  # padded by the MAC (PADCFG)
    c = dev.counters
    assert (c.tx_frames, c.tx_bytes, c.tx_dropped, c.tx_errors) == (6, sum(sizes), 0, 0)
    clean(model)


def test_send_accepts_any_buffer(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    f = frame(100, dst=PEER)
    big = bytearray(b"\xaa" * 3 + f + b"\xbb" * 5)
    for buf in (f, bytearray(f), memoryview(big)[3 : 3 + len(f)]):
        assert dev.send(buf) is True
    assert model.sent == [f, f, f]


def test_send_refuses_bad_sizes(model: ENC28J60Model, clock: ManualClock) -> None:
    with ENC28J60Device(model, clock=clock, mtu=1000) as d:
        for n in (0, 13, 1015, 1514):
            assert d.send(bytes(n)) is False
        assert d.counters.tx_errors == 4 and d.counters.tx_frames == 0
        assert d.send(frame(1014, dst=PEER)) is True
    assert len(model.sent) == 1


def test_mac_filter_option(model: ENC28J60Model, clock: ManualClock) -> None:
    with ENC28J60Device(model, mac=MAC, clock=clock) as d:
        for dst in (MAC, BCAST, OTHER):
            model.inject(frame(60, dst=dst))
        assert [f[:6] for f in d.poll(8)] == [MAC, BCAST]
        assert model.stats["rx_filtered"] == 1
    with ENC28J60Device(model, mac=MAC, clock=clock, mac_filter=False) as d:
        assert model.register(r.ERXFCON) == 0
        model.inject(frame(60, dst=OTHER))
        assert [f[:6] for f in d.poll(8)] == [OTHER]


def test_poll_honours_budget(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    sent = [frame(80, i) for i in range(10)]
    for f in sent:
        model.inject(f)
    cost = Cost(model.counters)
    assert dev.poll(0) == [] and dev.poll(-1) == []
    assert cost.calls == 0  # poll(0) does not touch the bus
    sizes = []
    got: list[bytes] = []
    for _ in range(5):
        batch = dev.poll(3)
        sizes.append(len(batch))
        got += batch
    assert sizes == [3, 3, 3, 1, 0] and got == sent


def test_rx_ring_wraps(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    """Several times round the ring, frames split over its end at varying places."""
    sizes = [1514, 61, 1200, 777, 1514, 1023, 60, 333] * 6
    more = [frame(n, i) for i, n in enumerate(sizes)]
    used = sum(r.RSV_LEN + n + r.CRC_LEN + 1 for n in sizes)
    assert used > 3 * (r.RX_END - r.RX_START + 1)
    got: list[bytes] = []
    for i in range(0, len(more), 3):
        for f in more[i : i + 3]:
            assert model.inject(f)
        got += dev.poll(64)
    assert got == more
    assert dev.counters.rx_errors == 0 and dev.stats["rx_resets"] == 0
    assert u16(model, r.ERXRDPTL) & 1  # always odd (errata item 14)
    clean(model)


@pytest.mark.parametrize("mtu", [576, 1000, 1499, 1500])
def test_rx_buffer_bytes_is_what_the_ring_holds(model: ENC28J60Model, clock: ManualClock,
                                               mtu: int) -> None:
    """Full-size frames up to rx_buffer_bytes fit in the ring; one more does not."""
    with ENC28J60Device(model, clock=clock, mtu=mtu) as d:
        assert d.rx_buffer_bytes is not None
        size = mtu + 14
        fit = d.rx_buffer_bytes // size
        assert all(model.inject(frame(size, i, dst=d.mac or b"")) for i in range(fit))
        assert not model.inject(frame(size, fit, dst=d.mac or b""))
        assert len(drain(d)) == fit


def test_ring_helpers() -> None:
    assert ring_add(r.RX_END - 1, 4) == 0x0002 and ring_add(0, 6) == 6
    assert rx_read_pointer(0) == r.RX_END and rx_read_pointer(0x0100) == 0x00FF


# -- link -----------------------------------------------------------------------------------


def test_link_down_and_up(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    assert dev.link_up
    model.set_link(False)
    assert dev.poll(4) == []
    assert dev.link_up is False and dev.stats["link_changes"] == 1
    assert model.register(r.EIR) & r.EIR_LINKIF == 0  # PHIR was read
    assert dev.send(frame(100, dst=PEER)) is False and dev.counters.tx_dropped == 1
    assert model.sent == []
    model.set_link(True)
    dev.poll(4)
    assert dev.link_up is True and dev.stats["link_changes"] == 2
    assert dev.send(frame(100, dst=PEER)) and model.sent == [frame(100, dst=PEER)]


def test_link_down_at_open(model: ENC28J60Model, clock: ManualClock) -> None:
    model.set_link(False)
    with ENC28J60Device(model, clock=clock) as d:
        assert d.link_up is False
        model.set_link(True)
        d.poll(1)
        assert d.link_up is True


# -- errata workarounds: off shows the failure, on shows none --------------------------------


def test_errata_reset_wait_not_clkrdy() -> None:
    """Item 2: CLKRDY reads 1 at once after SRC though the chip ignores the bus for 1 ms."""
    faults = ENC28J60Faults(clkrdy_wrong_after_reset=True)

    class TrustsClkrdy(ENC28J60Device):
        ERRATA_RESET_WAIT = False

    model = ENC28J60Model(timing=ENC28J60Timing(wire=False), faults=faults)
    with pytest.raises(ChipNotResponding):  # configuration written into a deaf chip
        TrustsClkrdy(model, mac=MAC)
    assert model.stats["clkrdy_lies"] > 0
    model = ENC28J60Model(timing=ENC28J60Timing(wire=False), faults=faults)
    with ENC28J60Device(model, mac=MAC) as d:
        assert d.link_up and model.stats["access_clock_unready"] == 0


@pytest.mark.parametrize("workaround", [False, True])
def test_errata_epktcnt_not_pktif(
    model: ENC28J60Model, clock: ManualClock, workaround: bool
) -> None:
    class Dev(ENC28J60Device):
        ERRATA_EPKTCNT = workaround

    model.faults.unreliable_pktif = 1.0
    with Dev(model, mac=MAC, clock=clock) as d:
        sent = [frame(100, i) for i in range(3)]
        for f in sent:
            model.inject(f)
        assert model.stats["pktif_missed"] == 3
        assert drain(d) == (sent if workaround else [])


@pytest.mark.parametrize("workaround", [False, True])
def test_errata_odd_erxrdpt(model: ENC28J60Model, clock: ManualClock, workaround: bool) -> None:
    class Dev(ENC28J60Device):
        ERRATA_ODD_ERXRDPT = workaround

    model.faults.even_erxrdpt_corrupts = True
    with Dev(model, mac=MAC, clock=clock) as d:
        sent = [frame(101 + i, i) for i in range(12)]
        got: list[bytes] = []
        for f in sent:
            model.inject(f)
            got += d.poll(4)
        if workaround:
            assert got == sent and model.stats["erxrdpt_even"] == 0
            assert d.stats["rx_resets"] == 0
        else:  # the ring is garbled; the impossible-pointer watchdog resets it
            assert model.stats["ring_corrupted"] > 0
            assert d.stats["rx_resets"] > 0 and len(got) < len(sent)
            assert d.counters.rx_errors == d.stats["rx_resets"]


@pytest.mark.parametrize("workaround", [False, True])
def test_errata_txrst_before_each_send(
    model: ENC28J60Model, clock: ManualClock, workaround: bool
) -> None:
    """Item 12: after an abort the next TXRTS never clears; the TX watchdog recovers."""

    class Dev(ENC28J60Device):
        ERRATA_TXRST = workaround
        ERRATA_LATE_COLLISION = False

    model.faults.tx_stall_after_abort = True
    with Dev(model, mac=MAC, clock=clock) as d:
        model.faults.false_collision = 1.0
        a, b, c = (frame(200, i, dst=PEER) for i in range(3))
        assert d.send(a)  # aborted by a late collision, not retried: lost
        assert d.counters.tx_errors == 1 and d.stats["tx_aborts"] == 1
        model.faults.false_collision = 0.0
        assert d.send(b)
        if workaround:
            assert model.stats["tx_stalls"] == 0 and model.sent == [b]
        else:
            assert model.stats["tx_stalls"] == 1 and model.sent == []
            assert d.send(c) is False and d.counters.tx_dropped == 1  # busy: not yet a stall
            clock.advance(100.0)
            d.poll(1)  # the watchdog: TXRST, b again
            assert d.stats["tx_stalls"] == 1 and model.sent == [b]
        assert d.send(c) and model.sent == [b, c]


@pytest.mark.parametrize("workaround", [False, True])
def test_errata_late_collision_retries(
    model: ENC28J60Model, clock: ManualClock, workaround: bool
) -> None:
    """Item 13: false late collisions in half duplex; the frame is sent again, ETXND kept."""

    class Dev(ENC28J60Device):
        ERRATA_LATE_COLLISION = workaround

    model.faults.false_collision = 0.5
    with Dev(model, mac=MAC, clock=clock) as d:
        out = [frame(300 + i, i, dst=PEER) for i in range(20)]
        for f in out:  # a frame retried again and again keeps the next one waiting: busy
            assert any(d.send(f) for _ in range(20))
        for _ in range(20):
            d.poll(1)
        assert model.stats["false_collisions"] > 0
        if workaround:
            assert model.sent == out and d.counters.tx_errors == 0
            assert d.stats["tx_retries"] == model.stats["false_collisions"]
            # ETXND kept at each frame's end; frames alternate buffers, both were retried
            assert u16(model, r.ETXSTL) == r.TX_BUFS[(len(out) - 1) % 2]
            assert u16(model, r.ETXNDL) == u16(model, r.ETXSTL) + len(out[-1])
        else:
            assert len(model.sent) < len(out) and d.counters.tx_errors > 0
        clean(model)


# -- watchdogs and recovery -------------------------------------------------------------------


def test_soft_reset_between_polls(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    model.inject(frame(100, 1))
    assert dev.poll(4) == [frame(100, 1)]
    model.soft_reset()
    model.inject(frame(100, 2))  # receive is off after a reset: lost by the chip
    assert dev.poll(4) == []
    assert dev.stats["resets"] == 1 and dev.counters.rx_errors == 1
    assert bytes(model.register(x) for x in r.MAADR) == MAC
    model.inject(frame(100, 3))
    assert dev.poll(4) == [frame(100, 3)]
    assert dev.send(frame(100, 4, dst=PEER)) and model.sent == [frame(100, 4, dst=PEER)]


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("after", [3, 12])
def test_reset_inside_a_receive_batch(
    dev: ENC28J60Device, model: ENC28J60Model, hard: bool, after: int
) -> None:
    for i in range(3):
        model.inject(frame(400, i))
    dev.poll(1)  # traffic flows: the next status call reads the header too
    model.schedule_reset(after_frames=after, hard=hard)
    got = dev.poll(8)
    assert len(got) <= 2 and all(f in [frame(400, i) for i in range(3)] for f in got)
    assert dev.stats["resets"] == 1 and dev.counters.rx_errors == 1
    model.inject(frame(400, 9))
    assert drain(dev) == [frame(400, 9)]
    # A PKTDEC already in the batch when the chip reset finds EPKTCNT at 0: at most one.
    assert model.stats["pktdec_underflow"] <= 1
    model.stats["pktdec_underflow"] = 0
    clean(model)


def test_reset_inside_a_send_batch(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    f = frame(1000, dst=PEER)
    model.schedule_reset(after_frames=5)  # before the WBM
    assert dev.send(f) is True  # seen, re-initialised, sent again: one frame out
    assert model.sent == [f]
    assert dev.stats["resets"] == 1 and dev.counters.tx_frames == 1


def test_reset_found_by_the_health_check(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    """A register changed under us while ECON1/ECON2 look fine: the periodic read-back."""
    bank = model.register(r.ECON1) & r.ECON1_BSEL
    model.transfer_batch([
        bytes((r.OP_BFS | r.ECON1.addr, 0x03)),
        bytes((r.OP_WCR | r.MAADR1.addr, 0x66)),
        bytes((r.OP_BFC | r.ECON1.addr, 0x03 & ~bank)),
    ])
    for _ in range(dev.HEALTH_EVERY):
        dev.poll(1)
    assert dev.stats["health_checks"] == 1 and dev.stats["resets"] == 1
    assert bytes(model.register(x) for x in r.MAADR) == MAC
    model.inject(frame(100))
    assert dev.poll(4) == [frame(100)]


def test_bank_moved_by_someone_else(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    """BSEL not where the driver left it: the reads of that call are void; re-initialise."""
    dev.poll(1)
    model.transfer_batch([bytes((r.OP_BFC | r.ECON1.addr, 0x03))])  # bank 0 under us
    model.inject(frame(100))
    assert dev.poll(4) == []
    assert dev.stats["resets"] == 1 and dev.stats["rx_resets"] == 0
    model.inject(frame(100, 1))
    assert dev.poll(4) == [frame(100, 1)]


def test_a_misread_is_not_a_reset(model: ENC28J60Model, clock: ManualClock) -> None:
    class FlipOnce(Plug):  # the next ECON2 read comes back as a reset chip's 0x80
        flip = 0

        def transfer_batch(
            self, frames: Sequence[bytes], tails: Sequence[int] | None = None
        ) -> list[bytes]:
            out = super().transfer_batch(frames)
            for k, f in enumerate(frames):
                if self.flip and f[0] == r.OP_RCR | r.ECON2.addr:
                    self.flip -= 1
                    out[k] = out[k][:1] + bytes((r.ECON2_AUTOINC,))
            return reply_tails(out, tails)

    bus = FlipOnce(model)
    with ENC28J60Device(bus, mac=MAC, clock=clock) as d:
        model.inject(frame(100))
        bus.flip = 1
        assert d.poll(4) == [frame(100)]
        assert d.stats["bus_errors"] == 1 and d.stats["resets"] == 0


@pytest.mark.parametrize(
    "next_ptr,count",
    [(0x1A00, 100), (0x0101, 100), (0x0100, 1600), (0x0100, 100)],
    ids=["outside", "odd", "too-long", "inconsistent"],
)
def test_impossible_header_resets_rx(
    dev: ENC28J60Device, model: ENC28J60Model, next_ptr: int, count: int
) -> None:
    model.inject(frame(100))
    model.inject(frame(100, 1))
    model.mem[0:4] = bytes((next_ptr & 0xFF, next_ptr >> 8, count & 0xFF, count >> 8))
    assert dev.poll(4) == []
    assert dev.stats["rx_resets"] == 1 and dev.counters.rx_errors == 1
    assert dev.counters.rx_dropped == 1  # the other frame in the ring
    assert model.register(r.EPKTCNT) == 0 and u16(model, r.ERXRDPTL) == r.RX_END
    model.inject(frame(100, 2))
    assert dev.poll(4) == [frame(100, 2)]
    clean(model)


def test_rx_overflow(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    model.faults.rx_overflow = True
    assert not model.inject(frame(100))
    assert dev.poll(4) == []
    assert dev.stats["rx_overflows"] == 1 and dev.counters.rx_dropped == 1
    dev.poll(4)  # the carried BFC went out with the last call
    assert model.register(r.EIR) & r.EIR_RXERIF == 0
    model.faults.rx_overflow = False
    model.inject(frame(100, 5))
    assert dev.poll(4) == [frame(100, 5)]
    assert dev.stats["rx_overflows"] == 1 and dev.counters.rx_errors == 0


def test_ring_full_overflows_then_drains(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    stored = [f for f in (frame(1000, i) for i in range(8)) if model.inject(f)]
    assert 0 < len(stored) < 8 and model.stats["rx_overflow"] > 0
    assert drain(dev) == stored
    assert dev.stats["rx_overflows"] == 1
    model.inject(frame(100, 9))
    assert dev.poll(4) == [frame(100, 9)]


def test_tx_stall_twice_loses_the_frame(dev: ENC28J60Device, clock: ManualClock,
                                        model: ENC28J60Model) -> None:
    dev.TX_MAX_CHECKS = 3

    class Stuck(Plug):  # TXRTS reads set forever
        def transfer_batch(
            self, frames: Sequence[bytes], tails: Sequence[int] | None = None
        ) -> list[bytes]:
            out = super().transfer_batch(frames)
            return reply_tails([o[:1] + bytes((o[1] | r.ECON1_TXRTS,))
                                if f[0] == r.OP_RCR | r.ECON1.addr else o
                                for f, o in zip(frames, out, strict=True)], tails)

    dev._bus = Stuck(model)
    assert dev.send(frame(100, dst=PEER))
    for _ in range(8):
        dev.poll(1)
    assert dev.stats["tx_stalls"] == 2 and dev.counters.tx_errors == 1


def test_chip_held_in_reset_then_back(
    dev: ENC28J60Device, model: ENC28J60Model, clock: ManualClock
) -> None:
    model.reset_pin.set(False)  # the chip stops answering (MISO floats high)
    assert dev.poll(4) == []
    assert dev.link_up is False
    assert dev.send(frame(100, dst=PEER)) is False and dev.counters.tx_dropped == 1
    model.reset_pin.set(True)
    clock.advance(dev.REPROBE_MS)
    assert dev.poll(4) == []
    assert dev.link_up is True and dev.stats["resets"] == 1 and dev.stats["revives"] == 1
    model.inject(frame(64))
    assert dev.poll(4) == [frame(64)]


def test_unplugged_probe_names_the_bus(model: ENC28J60Model, clock: ManualClock) -> None:
    plug = Plug(model)
    with ENC28J60Device(plug, clock=clock) as d:
        plug.plugged = False
        with pytest.raises(ChipNotResponding, match="EREVID read 0xFF"):
            d.probe()
        d.poll(4)
        assert d.link_up is False
        plug.plugged = True
        clock.advance(d.REPROBE_MS)
        d.poll(4)
        assert d.link_up is True


def test_bus_errors_are_counted_not_raised(model: ENC28J60Model, clock: ManualClock) -> None:
    bus = Plug(model)
    with ENC28J60Device(bus, mac=MAC, clock=clock) as d:
        model.inject(frame(100))
        bus.fail = 1
        assert d.poll(4) == [] and d.counters.rx_errors == 1
        bus.fail = 1
        assert d.send(frame(100, dst=PEER)) is False and d.counters.tx_errors == 1
        assert d.poll(4) == [frame(100)]
        assert d.send(frame(100, dst=PEER)) is True


def test_bit_errors_are_survived(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    """Flipped MISO bits: nothing raises, and once they stop traffic flows cleanly."""
    model.faults.bit_error_rate = 1e-4
    for i in range(0, 120, 4):
        for j in range(4):
            model.inject(frame(300, i + j))
        dev.poll(64)
        dev.send(frame(300, i, dst=PEER))
    assert model.stats["bit_errors"] > 10
    model.faults.bit_error_rate = 0.0
    drain(dev)
    dev.poll(1)
    model.sent.clear()
    after = [frame(500, 1000 + i) for i in range(10)]
    for f in after:
        model.inject(f)
    assert drain(dev) == after
    assert all(dev.send(f) for f in after) and model.sent == after


# -- interrupt line, descriptor, close ----------------------------------------------------------


def test_interrupt_line(model: ENC28J60Model, clock: ManualClock) -> None:
    with ENC28J60Device(model, mac=MAC, irq=InvertedPin(model.int_pin), clock=clock) as d:
        assert model.register(r.EIE) & r.EIE_INTIE and model.register(r.EIE) & r.EIE_PKTIE
        assert model.int_pin.level is True  # /INT high: nothing pending
        model.inject(frame(100))
        assert model.int_pin.level is False
        cost = Cost(model.counters)
        assert d.poll(4) == [frame(100)]
        assert model.int_pin.level is True
        assert cost.calls == 3  # status, header, frame: re-arming INTIE rides along
        # a frame left behind by the budget makes a fresh edge after the poll
        for i in range(2):
            model.inject(frame(100, i))
        assert d.poll(1) == [frame(100, 0)]
        assert model.int_pin.level is False and model.int_pin.falling_queued()
        assert d.poll(4) == [frame(100, 1)]
        assert model.int_pin.level is True and not model.int_pin.falling_queued()


def test_fileno_is_the_irq_pins(model: ENC28J60Model, clock: ManualClock) -> None:
    rfd, wfd = os.pipe()
    try:
        pin = FdPin(rfd)
        d = ENC28J60Device(model, irq=pin, clock=clock)
        assert d.fileno() == rfd
        d.poll(4)
        assert pin.waits >= 1  # queued edges are consumed
        d.close()
        assert d.fileno() is None
    finally:
        os.close(rfd)
        os.close(wfd)


def test_close(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    dev.close()
    assert model.register(r.ECON1) & r.ECON1_RXEN == 0 and model.register(r.EIE) == 0
    assert dev.link_up is False and dev.closed
    with pytest.raises(DeviceClosed):
        dev.send(frame(60, dst=PEER))
    with pytest.raises(DeviceClosed):
        dev.poll(1)
    dev.close()


# -- bus cost (counts, not time) ----------------------------------------------------------------


def test_cost_of_an_idle_poll(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    dev.poll(8)
    switches = dev.stats["bank_switches"]
    cost = Cost(model.counters)
    for _ in range(10):
        assert dev.poll(8) == []
    assert (cost.calls, cost.transactions) == (10, 50)  # EIR, ESTAT, ECON2, ECON1, EPKTCNT
    assert dev.stats["bank_switches"] == switches  # bank 1 stays selected


def test_cost_of_receiving(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    f = frame(1514)
    model.inject(f)
    cost = Cost(model.counters)
    assert dev.poll(8) == [f]
    assert cost.calls == 3  # status, header, frame
    assert cost.bytes - 1514 <= 80
    burst = [frame(1514, i) for i in range(3)]  # what the 5 KB ring holds
    for g in burst:
        assert model.inject(g)
    cost = Cost(model.counters)
    assert dev.poll(8) == burst
    assert cost.calls == 3 + 1  # the status call read the first header: traffic flows
    assert cost.bytes / (3 * 1514) <= 1.03


def test_cost_of_sending(dev: ENC28J60Device, model: ENC28J60Model) -> None:
    f = frame(1514, dst=PEER)
    assert dev.send(f)
    cost = Cost(model.counters)
    for _ in range(10):
        assert dev.send(f)
    assert cost.calls == 10  # the last frame was seen done in its own call
    assert cost.bytes / (10 * 1514) <= 1.03


class ModelBus:
    """The model behind a bus a test looks through; subclasses note what they need."""

    def __init__(self, model: ENC28J60Model) -> None:
        self.model = model
        self.counters = model.counters

    def transfer(self, data: bytes) -> bytes:
        return self.transfer_batch([data])[0]

    def transfer_batch(
        self, frames: Sequence[bytes], tails: Sequence[int] | None = None
    ) -> list[bytes]:
        return self.model.transfer_batch(frames, tails)

    def close(self) -> None:
        pass


class DearBus(ModelBus):
    """A bus whose calls are dear (``call_overhead_us``: a USB bridge)."""

    call_overhead_us = 500.0


@pytest.mark.parametrize("dear", [False, True], ids=["cheap-calls", "dear-calls"])
def test_cost_of_sending_on_a_timed_wire(clock: ManualClock, dear: bool) -> None:
    """With a frame in flight, the next one's write carries the status read: once the
    first frame is done, 2 calls (the write, the start), on any bus."""
    model = ENC28J60Model(clock=clock, timing=ENC28J60Timing(mii_us=0, reset_us=0))
    bus = DearBus(model) if dear else model
    with ENC28J60Device(bus, mac=MAC, clock=clock) as d:
        f = frame(1514, dst=PEER)
        assert d.send(f)
        assert d.send(f) is False and d.counters.tx_dropped == 1  # still on the wire
        clock.advance(2.0)
        cost = Cost(model.counters)
        assert d.send(f)  # the frame and ECON1/EIR/ESTAT, then the start
        assert cost.calls == 2
        clock.advance(2.0)
        d.poll(1)  # the status call sees it done
        cost = Cost(model.counters)
        assert d.send(f) and cost.calls == 1
        clock.advance(2.0)
        d.poll(1)
        assert len(model.sent) == 3


class SimTime:
    """``time`` for the driver module on a ManualClock: a sleep advances the clock, and
    each look at the time a microsecond (a spin ends), so a timed wire runs exactly."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    def sleep(self, s: float) -> None:
        self.clock.advance(s * 1000.0)

    def monotonic(self) -> float:
        self.clock.advance(0.001)
        return self.clock.now_ms() / 1000.0


class TxWatch(ModelBus):
    """A bus that notes, after each call, whether it wrote buffer memory, whether a frame
    was still on the wire (TXRTS set, TXIF clear) and where ETXST was."""

    def __init__(self, model: ENC28J60Model) -> None:
        super().__init__(model)
        self.calls: list[tuple[bool, bool, int]] = []  # (WBM, in flight after, ETXST)
        self.starts: list[int] = []  # ETXST at each transmission started

    def transfer_batch(
        self, frames: Sequence[bytes], tails: Sequence[int] | None = None
    ) -> list[bytes]:
        started = self.model.stats["tx_started"]
        out = self.model.transfer_batch(frames, tails)
        m = self.model
        flying = bool(m.register(r.ECON1) & r.ECON1_TXRTS) and not m.register(r.EIR) & r.EIR_TXIF
        wbm = any(f[:1] == bytes((r.OP_WBM,)) and len(f) > 2 for f in frames)
        self.calls.append((wbm, flying, u16(m, r.ETXSTL)))
        self.starts += [u16(m, r.ETXSTL)] * (m.stats["tx_started"] - started)
        return out


@pytest.fixture
def sim_time(clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> SimTime:
    t = SimTime(clock)
    monkeypatch.setattr("hilkit.drivers.enc28j60.driver.time", t)
    return t


def test_two_tx_buffers_layout() -> None:
    """Each buffer: control byte, a 1514-byte frame, its 7-byte TSV (§7.1); ETXST even;
    the receive ring keeps 0x0000 (errata item 5) and everything below the buffers."""
    assert r.TX_BUF_LEN == 1 + 1514 + r.TSV_LEN and r.TX_BUFS[0] == r.TX_START
    assert r.TX_BUFS[1] + r.TX_BUF_LEN <= r.BUFFER_SIZE
    assert r.TX_BUFS[0] + r.TX_BUF_LEN <= r.TX_BUFS[1]
    assert all(b % 0x100 == 0 for b in r.TX_BUFS)  # even (§7.1), and only high bytes differ
    assert r.RX_START == 0 and r.RX_END + 1 == r.TX_START and r.RX_END % 2 == 1
    assert NIC.rx_buffer_bytes == r.RX_END + 1 == 0x1400
    assert NIC.tx_buffer_bytes == 2 * r.TX_STRIDE


@pytest.mark.parametrize("dear", [False, True], ids=["cheap-calls", "dear-calls"])
def test_next_frame_written_while_one_is_on_the_wire(
    clock: ManualClock, sim_time: SimTime, dear: bool
) -> None:
    """Frame N+1 goes over SPI into the other buffer while N is on the wire, timed to end
    as N does; N+1 starts once N is seen done (by the read that ends the write, or one
    more short read when that came early: on a cheap bus most do, on a dear one few),
    and nothing cuts a frame short."""
    model = ENC28J60Model(clock=clock, timing=ENC28J60Timing(mii_us=0, reset_us=0))
    watch = TxWatch(model)
    if dear:
        watch.call_overhead_us = DearBus.call_overhead_us  # type: ignore[attr-defined]
    with ENC28J60Device(watch, mac=MAC, clock=clock) as d:
        out = [frame(1514 - i, i, dst=PEER) for i in range(6)]
        watch.calls.clear()
        cost = Cost(model.counters)
        for f in out:
            assert d.send(f)
        assert cost.calls <= 3 * len(out)
        writes = [i for i, (wbm, _, _) in enumerate(watch.calls) if wbm]
        assert len(writes) == len(out)
        # each write came while the last frame was in flight: no status call between
        assert all(watch.calls[i - 1][1] for i in writes[1:])
        assert watch.starts == [r.TX_BUFS[i % 2] for i in range(len(out))]  # they alternate
        clock.advance(2.0)
        d.poll(1)
        assert model.sent == out and d.counters.tx_frames == len(out)
        assert model.stats["tx_reset_lost"] == 0 and model.stats["tx_cancelled"] == 0
        clean(model)


_POINTER_WCR = {r.OP_WCR | reg.addr: reg.name for reg in (r.ETXSTL, r.ETXSTH, r.ETXNDL, r.ETXNDH)}


@pytest.mark.parametrize("share", [0.1, 0.5, 0.75])
@pytest.mark.parametrize("end_ms", [-0.03, 0.0, 0.02])
def test_the_aim_learns_where_reads_come_early_the_share_asked(share: float,
                                                              end_ms: float) -> None:
    """Reads land at the aim plus a spread of +-10 us about the frame's true end (the
    reckoning is off by ``end_ms``): the learned aim settles where ``share`` of them come
    early, and never leaves the bound."""
    rng = random.Random(3)
    aim, early = 0.0, []
    for _ in range(20_000):
        read_at = aim + rng.uniform(-0.01, 0.01)
        early.append(read_at < end_ms)
        aim = learn_aim(aim, early=early[-1], share=share)
        assert abs(aim) <= 0.1
    assert abs(sum(early[5000:]) / len(early[5000:]) - share) < 0.05
    aim = 0.0
    for _ in range(1000):  # a frame that never ends within reach: the aim stops at its bound
        aim = learn_aim(aim, early=True, share=share)
    assert aim == pytest.approx(0.1)


class PointerWrites(ModelBus):
    """A bus that notes which ETXST/ETXND bytes each call wrote (WCR)."""

    def __init__(self, model: ENC28J60Model) -> None:
        super().__init__(model)
        self.writes: list[list[str]] = []

    def transfer_batch(
        self, frames: Sequence[bytes], tails: Sequence[int] | None = None
    ) -> list[bytes]:
        if self.model.register(r.ECON1) & r.ECON1_BSEL == 0:  # bank 0: ETXST/ETXND
            self.writes.append([_POINTER_WCR[f[0]] for f in frames if len(f) == 2
                                and f[0] in _POINTER_WCR])
        return self.model.transfer_batch(frames, tails)


def test_starts_write_only_the_pointer_bytes_that_change(clock: ManualClock) -> None:
    """Both buffers on a 256-byte boundary: frames of one length differ in ETXSTH and
    ETXNDH alone, and only those are written; after a bus error, all four again."""
    model = ENC28J60Model(clock=clock, timing=ENC28J60Timing(mii_us=0, reset_us=0))
    bus = PointerWrites(model)
    with ENC28J60Device(bus, mac=MAC, clock=clock) as d:
        out = [frame(1514, i, dst=PEER) for i in range(4)]
        for f in out:
            bus.writes.clear()
            assert d.send(f)
            clock.advance(2.0)
            starts = [w for w in bus.writes if w]
            assert len(starts) == 1
            if f is out[0]:  # nothing known of the chip's pointers after the set-up
                assert starts[0] == ["ETXSTL", "ETXSTH", "ETXNDL", "ETXNDH"]
            else:
                assert starts[0] == ["ETXSTH", "ETXNDH"]
        other = frame(600, 9, dst=PEER)
        bus.writes.clear()
        assert d.send(other)
        assert [w for w in bus.writes if w] == [["ETXSTH", "ETXNDL", "ETXNDH"]]
        d._bus_failed()  # what a transfer that raised leaves: nothing cached is trusted
        clock.advance(2.0)
        bus.writes.clear()
        assert d.send(out[0])
        assert [w for w in bus.writes if w] == [["ETXSTL", "ETXSTH", "ETXNDL", "ETXNDH"]]
        clock.advance(2.0)
        d.poll(1)
        assert model.sent == [*out, other, out[0]] and d.counters.tx_errors == 0
        clean(model)


def test_late_collision_resends_the_frame_in_flight(
    clock: ManualClock, sim_time: SimTime
) -> None:
    """Item 13 with the next frame already written to the other buffer: the retry sends
    the frame that collided (ETXST/ETXND untouched), then the next one."""
    model = ENC28J60Model(clock=clock, timing=ENC28J60Timing(mii_us=0, reset_us=0))
    with ENC28J60Device(model, mac=MAC, clock=clock) as d:
        a, b = frame(600, 1, dst=PEER), frame(700, 2, dst=PEER)
        model.faults.false_collision = 1.0
        assert d.send(a)  # collides on the wire
        model.faults.false_collision = 0.0
        assert d.send(b)  # written to buffer 1, then waits: a is sent again from buffer 0
        clock.advance(2.0)
        d.poll(1)
        assert model.sent == [a, b]
        assert d.stats["tx_retries"] == 1 and d.counters.tx_errors == 0
        assert (u16(model, r.ETXSTL), u16(model, r.ETXNDL)) == (r.TX_BUFS[1], r.TX_BUFS[1] + 700)
        clean(model)


def test_both_buffers_busy_refuses_within_the_wait(clock: ManualClock) -> None:
    """A frame that will not leave the wire: the next one is written, waited for at most
    BUSY_WAIT_MS of real time, then refused and counted as dropped."""
    model = ENC28J60Model(clock=clock, timing=ENC28J60Timing(mii_us=0, reset_us=0))
    with ENC28J60Device(model, mac=MAC, clock=clock) as d:
        assert d.send(frame(1514, dst=PEER))
        t0 = time.monotonic()
        assert d.send(frame(1514, 1, dst=PEER)) is False  # the ManualClock stands still
        assert time.monotonic() - t0 < 0.5 and d.counters.tx_dropped == 1
        clock.advance(2.0)
        assert d.send(frame(1514, 2, dst=PEER))
        clock.advance(2.0)
        d.poll(1)
        assert model.sent == [frame(1514, dst=PEER), frame(1514, 2, dst=PEER)]


def test_bank_switches_only_on_change(model: ENC28J60Model, clock: ManualClock) -> None:
    plug = Plug(model)
    with ENC28J60Device(plug, mac=MAC, clock=clock) as d:
        start = len(plug.log)
        switches = d.stats["bank_switches"]
        for i in range(40):
            model.inject(frame(100 + i, i))
            if i % 3 == 0:
                d.send(frame(80, i, dst=PEER))
            d.poll(2)
        drain(d)
        changes, idle = bank_changes(plug.log[start:])
        assert idle == 0  # never a BFS/BFC of BSEL that leaves the bank where it was
        assert changes == d.stats["bank_switches"] - switches > 0
        # the common registers never cause a switch: a receive round costs at most two
        assert changes <= 2 * d.stats["bus_calls"]
        assert d.counters.rx_frames == 40
        clean(model)


def test_real_time_traffic_both_ways() -> None:
    """The model's 10 Mb/s wire timing on the monotonic clock: frames both ways, none lost."""
    model = ENC28J60Model(timing=ENC28J60Timing(mii_us=0, reset_us=0))
    with ENC28J60Device(model, mac=MAC, send_timeout_ms=10_000) as d:
        inbound = [frame(200 + i, i) for i in range(20)]
        outbound = [frame(300 + i, i, dst=PEER) for i in range(20)]
        got: list[bytes] = []
        for f_in, f_out in zip(inbound, outbound, strict=True):
            model.inject(f_in)
            got += d.poll(8)
            for _ in range(200):
                if d.send(f_out):
                    break
                time.sleep(0.0005)
        got += drain(d)
        assert got == inbound
        deadline = time.monotonic() + 5.0  # the last frame's wire time is under 1 ms
        while model.sent != outbound and time.monotonic() < deadline:
            d.poll(1)
        assert model.sent == outbound
        clean(model)


# -- the Device conformance suite, on the model's timed wire ----------------------------------


class MemPeer:
    """The far end of the model's in-memory wire (a ``LinkPeer``). Every look touches the
    model, as a TAP's descriptor would wake it: frames move, /INT follows."""

    can_set_link = True

    def __init__(self, model: ENC28J60Model, end: WireEnd) -> None:
        self.model = model
        self.end = end
        self.peer_mac = end.mac

    def send(self, frame: bytes) -> None:
        self.end.send(frame)
        self.model.int_pin.get()

    def recv(self, timeout_s: float) -> bytes | None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.model.int_pin.get()
            got = self.end.poll(1)
            if got:
                return got[0]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.001)

    def set_link(self, up: bool) -> None:
        self.model.set_link(up)


class TestConformance(DeviceConformance):
    @pytest.fixture
    def conformance_pair(self) -> Iterator[DevicePair]:
        ours, theirs = wire()
        model = ENC28J60Model(ours, seed=1)  # real timing: 10 Mb/s, MII, start-up timer
        dev = ENC28J60Device(model, irq=InvertedPin(model.int_pin),
                             reset=InvertedPin(model.reset_pin), name="enc28j60@sim")
        try:
            yield dev, MemPeer(model, theirs)
        finally:
            dev.close()
            model.close()


# -- under the stack ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [56, 1472, 4000])
def test_stack_pings_through_the_enc28j60(size: int) -> None:
    """hilkit's stack on the driver pings another stack at the far end of the model's wire
    (4000 bytes: IPv4 fragments, several frames per ping each way)."""
    clock = ManualClock(1000.0)
    ours, theirs = wire()
    model = ENC28J60Model(ours, clock, seed=1, timing=ENC28J60Timing.instant())
    a, b = Stack(clock), Stack(clock)
    dev = ENC28J60Device(model, mac=MAC, clock=clock)
    a.add_device(dev)
    b.add_device(theirs)
    a.link_add(dev, A_IP, "255.255.255.0")
    b.link_add(theirs, B_IP, "255.255.255.0")
    got: list[PingStats] = []
    a.ping(B_IP, 3, 10, 1000, size, got.append)
    for _ in range(200):
        if len(got) == 3:
            break
        clock.advance(1.0)
        a.tick()
        model.int_pin.get()  # the model pulls what the far stack put on the wire
        b.tick()
    assert [(s.err, s.size) for s in got] == [(PingError.REPLIED, size)] * 3
    assert dev.counters.rx_errors == dev.counters.tx_errors == 0
    clean(model)
    a.close()
    b.close()

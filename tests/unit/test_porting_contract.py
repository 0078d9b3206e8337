"""The porting contract as a driver author meets it: the conformance suite on a chip with
a small receive buffer, the chip-model helpers, a bus's own per-call cost."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest

from hilkit.hil import report
from hilkit.hil.suites.test_recovery import sized_timeout
from hilkit.port.conformance import DeviceConformance, DevicePair, rx_burst
from hilkit.port.device import Device, device_probe
from hilkit.port.model import (
    ChipModel,
    is_chip_model,
    missing_reset_hint,
    model_pin,
    model_reset,
    model_stats,
)
from hilkit.port.pin import Edge, InvertedPin
from hilkit.port.spi import BusCounters, bus_call_overhead_us, reply_tails
from hilkit.rig.suite_params import SuiteParams
from tests.memwire import WireEnd, wire

SLOTS = 4


class SlotQueue(deque[bytes]):
    """A receive buffer of ``slots`` frames of any size: what does not fit is dropped."""

    def __init__(self, end: WireEnd, slots: int) -> None:
        super().__init__()
        self.end = end
        self.slots = slots

    def append(self, frame: bytes) -> None:
        if len(self) >= self.slots:
            self.end.counters.rx_dropped += 1
            return
        super().append(frame)


class SlotDevice(WireEnd):
    """A chip that holds SLOTS frames, and may say so (``rx_buffer_bytes``)."""

    def __init__(self, *, states: bool) -> None:
        super().__init__("slots", b"\x02\x00\x00\x00\x00\x0c", wire()[0].link_type, 1500)
        self.rx = SlotQueue(self, SLOTS)
        if states:
            self.rx_buffer_bytes = SLOTS * (self.mtu + 14)

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        if not self.closed and not 0 < len(frame) <= self.mtu + 14:
            self.counters.tx_errors += 1
            return False
        return super().send(frame)


class MemPeer:
    """The far end of the memory wire, as the conformance suite's ``LinkPeer``."""

    def __init__(self, end: WireEnd) -> None:
        self.end = end

    def send(self, frame: bytes) -> None:
        self.end.send(frame)

    def recv(self, timeout_s: float) -> bytes | None:
        got = self.end.poll(1)
        return got[0] if got else None


def _pair(states: bool) -> tuple[SlotDevice, MemPeer]:
    dev = SlotDevice(states=states)
    far = WireEnd("far", b"\x02\x00\x00\x00\x00\x0f", dev.link_type, dev.mtu)
    dev.peer, far.peer = far, dev
    return dev, MemPeer(far)


class TestSmallBufferChip(DeviceConformance):
    """A faithful four-frame chip that states its buffer passes the whole suite."""

    timeout_s = 0.2

    @pytest.fixture
    def conformance_pair(self) -> Iterator[DevicePair]:
        dev, peer = _pair(states=True)
        yield dev, peer
        dev.close()


def test_burst_follows_the_stated_buffer() -> None:
    dev, _ = _pair(states=True)
    n, why = rx_burst(dev)
    assert n == SLOTS
    assert "rx_buffer_bytes = 6056 holds 4 frames of up to 1514 bytes" in why
    dev2, _ = _pair(states=False)
    assert rx_burst(dev2)[0] > 1000


def test_a_chip_that_does_not_state_its_buffer_is_told_why_it_fails() -> None:
    dev, peer = _pair(states=False)
    suite = DeviceConformance()
    suite.timeout_s = 0.1
    with pytest.raises(AssertionError) as info:
        suite.test_peer_frames_arrive_in_order((dev, peer))
    msg = str(info.value)
    assert msg.startswith("frames arrived as [0, 1, 2, 3]: expected [0, 1, 2, 3, 4] in order")
    assert "the device states no rx_buffer_bytes" in msg
    assert "rx_dropped rose by 1" in msg


# -- the chip-model contract ----------------------------------------------------------------


class RawLine:
    def __init__(self) -> None:
        self.level = True

    def set(self, value: bool) -> None:
        self.level = value

    def get(self) -> bool:
        return self.level

    def wait_edge(self, edge: Edge, timeout_ms: float) -> bool:
        return False

    def fileno(self) -> int | None:
        return 7

    def close(self) -> None:
        pass


class PinlessModel:
    """A model with resets and stats but no pins: still a chip model."""

    def __init__(self) -> None:
        self.counters = BusCounters()
        self.stats = {"soft_resets": 0}

    def transfer(self, data: bytes) -> bytes:
        return bytes(len(data))

    def transfer_batch(self, frames: Any, tails: Any = None) -> list[bytes]:
        return reply_tails([bytes(len(f)) for f in frames], tails)

    def close(self) -> None:
        pass

    def soft_reset(self) -> None:
        self.stats["soft_resets"] += 1


def test_chip_model_members() -> None:
    m = PinlessModel()
    assert isinstance(m, ChipModel) and is_chip_model(m)
    assert not is_chip_model(object())
    assert model_pin(m, "reset") is None
    fn = model_reset(m, "soft")
    assert fn is not None
    fn()
    assert model_stats(m) == {"soft_resets": 1}
    assert model_reset(m, "hard") is None
    hint = missing_reset_hint(m, "hard")
    assert "the chip model PinlessModel has no hard_reset(); implement it" in hint
    assert "docs/porting.md" in missing_reset_hint(None, "soft")


def test_model_pins_are_active_low_unless_the_model_says() -> None:
    class Pinned(PinlessModel):
        def __init__(self, active_low: bool) -> None:
            super().__init__()
            self.int_pin = RawLine()
            self.pins_active_low = active_low

    m = Pinned(True)
    pin = model_pin(m, "irq")
    assert isinstance(pin, InvertedPin) and pin.get() is False  # raw high: not asserted
    assert pin.fileno() == 7  # what a driver hands the stack
    m2 = Pinned(False)
    assert model_pin(m2, "irq") is m2.int_pin


def test_probe_is_found_through_wrappers() -> None:
    from hilkit.port.middleware import DeviceMiddleware

    dev, _ = _pair(states=True)
    assert device_probe(dev) is None
    dev.probe = lambda: True  # type: ignore[attr-defined]
    wrapped: Device = DeviceMiddleware(dev)
    probe = device_probe(wrapped)
    assert probe is not None and probe() is True


# -- the bus's own per-call cost ----------------------------------------------------------------


def test_call_overhead_comes_from_the_bus() -> None:
    class Bridge:
        call_overhead_us = 80.0

    class Silent:
        pass

    assert bus_call_overhead_us(Bridge()) == 80.0
    assert bus_call_overhead_us(Silent()) is None
    assert report.call_overhead_s("python", Bridge()) == pytest.approx(80e-6)
    assert report.call_overhead_s("python", PinlessModel()) == report.DEFAULT_CALL_OVERHEAD_S
    assert report.call_overhead_s("ftdi", Silent()) == pytest.approx(125e-6)  # the fallback
    zero = type("Model", (), {"call_overhead_us": 0.0})()
    figs = report.bus_figures(spi_bytes=8000, transactions=10, calls=1000, frames=10,
                              frame_bytes=7000, speed_hz=8_000_000, bus_kind="python",
                              bus=zero)
    assert figs["bus_call_overhead_us"] == (0.0, "us")
    assert figs["silicon_s"][0] == pytest.approx(8000 * 8 / 8e6)
    from hilkit.bus.ftdi import FtdiSpiBus
    from hilkit.bus.spidev import SpidevBus

    assert (SpidevBus.call_overhead_us, FtdiSpiBus.call_overhead_us) == (30.0, 125.0)


# -- the recovery suite's timeout ------------------------------------------------------------


class _Rig:
    def __init__(self, simulated: bool, given: dict[str, Any]) -> None:
        self.simulated = simulated
        self.given = given

    def suite_params(self, suite: str) -> SuiteParams:
        return SuiteParams(suite, self.given, slow_sim=self.simulated)


class _Hil:
    def __init__(self, simulated: bool, figures: dict[str, Any],
                 given: dict[str, Any] | None = None) -> None:
        self.figures = figures
        self.built = type("B", (), {"rig": _Rig(simulated, given or {})})()

    def params(self, suite: str) -> SuiteParams:
        return self.built.rig.suite_params(suite)  # type: ignore[no-any-return]


def test_recovery_timeout_is_sized_to_the_rig() -> None:
    n = 512 * 1024
    t, why = sized_timeout(_Hil(True, {}), None, n)  # type: ignore[arg-type]
    assert t == 300.0 and "no rate measured" in why
    hil = _Hil(True, {"tcp_client_MBps": 0.02})  # 0.01 MB/s each way
    t, why = sized_timeout(hil, None, n)  # type: ignore[arg-type]
    assert t == pytest.approx(4 * n / 0.01e6) and "tcp suite" in why
    t, _ = sized_timeout(_Hil(True, {"tcp_client_MBps": 50.0}), None, n)  # type: ignore[arg-type]
    assert t == 60.0  # the floor
    t, why = sized_timeout(_Hil(True, {}, {"timeout_s": 12.0}), None, n)  # type: ignore[arg-type]
    assert t == 12.0 and "rig file" in why

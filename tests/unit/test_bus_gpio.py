"""GpiodPin without a GPIO chip: the missing-library error here, and the whole pin against a
fake ``gpiod`` (libgpiod v2 bindings API) inserted into ``sys.modules``."""

from __future__ import annotations

import enum
import errno
import sys
import time
import types
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hilkit.bus import gpio as gb
from hilkit.bus.gpio import GpiodPin
from hilkit.port import Edge, HardwareNotFound, Pin


def test_gpiod_missing_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiod", None)  # as here: not installed
    t0 = time.monotonic()
    with pytest.raises(HardwareNotFound) as info:
        GpiodPin("/dev/gpiochip0", 25, direction="in", edge=Edge.FALLING)
    assert time.monotonic() - t0 < 0.5
    err = info.value
    assert err.what == "/dev/gpiochip0"
    assert err.problem == "python gpiod (libgpiod v2) is not installed"
    assert err.hint == "pip install 'hilkit[rpi]'"


def test_gpiod_v1_binding_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = types.ModuleType("gpiod")
    v1.Chip = object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gpiod", v1)
    with pytest.raises(HardwareNotFound, match="v1"):
        GpiodPin("gpiochip0", 25, direction="in")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        GpiodPin("gpiochip0", 1, direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        GpiodPin("gpiochip0", 1, direction="out", edge=Edge.RISING)


# --- a fake libgpiod v2 -----------------------------------------------------------------------


class Direction(enum.Enum):
    AS_IS = 1
    INPUT = 2
    OUTPUT = 3


class GEdge(enum.Enum):
    NONE = 1
    RISING = 2
    FALLING = 3
    BOTH = 4


class Bias(enum.Enum):
    AS_IS = 1
    UNKNOWN = 2
    DISABLED = 3
    PULL_UP = 4
    PULL_DOWN = 5


class Value(enum.Enum):
    INACTIVE = 0
    ACTIVE = 1


@dataclass
class LineSettings:
    direction: Direction = Direction.AS_IS
    edge_detection: GEdge = GEdge.NONE
    bias: Bias = Bias.AS_IS
    active_low: bool = False
    output_value: Value = Value.INACTIVE


class EventType(enum.Enum):
    RISING_EDGE = 1
    FALLING_EDGE = 2


class EdgeEvent:
    Type = EventType

    def __init__(self, event_type: EventType, offset: int) -> None:
        self.event_type = event_type
        self.line_offset = offset


@dataclass
class FakeChipState:
    label: str
    num_lines: int = 54
    busy: set[int] = field(default_factory=set)
    requests: list[FakeRequest] = field(default_factory=list)


class FakeRequest:
    def __init__(self, consumer: str | None, config: dict[int, LineSettings]) -> None:
        self.consumer = consumer
        self.config = dict(config)
        self.values = {
            off: s.output_value if s.direction is Direction.OUTPUT else Value.INACTIVE
            for off, s in config.items()
        }
        self.events: deque[list[EdgeEvent]] = deque()  # batches, one per wait
        self.waits: list[float] = []
        self.reconfigured: list[dict[int, LineSettings]] = []
        self.released = False
        self.fd = 42

    def set_value(self, line: int, value: Value) -> None:
        assert self.config[line].direction is Direction.OUTPUT
        self.values[line] = value

    def get_value(self, line: int) -> Value:
        return self.values[line]

    def reconfigure_lines(self, config: dict[int, LineSettings]) -> None:
        self.reconfigured.append(config)
        self.config.update(config)

    def wait_edge_events(self, timeout: timedelta | float | None = None) -> bool:
        assert isinstance(timeout, timedelta)
        self.waits.append(timeout.total_seconds())
        return bool(self.events)

    def read_edge_events(self, max_events: int | None = None) -> list[EdgeEvent]:
        return self.events.popleft()

    def release(self) -> None:
        assert not self.released
        self.released = True


class FakeGpiod:
    """Builds the ``gpiod`` and ``gpiod.line`` modules over a dict of chip paths."""

    def __init__(self, chips: dict[str, FakeChipState]) -> None:
        self.chips = chips
        mod = types.ModuleType("gpiod")
        line = types.ModuleType("gpiod.line")
        line.Direction = Direction  # type: ignore[attr-defined]
        line.Edge = GEdge  # type: ignore[attr-defined]
        line.Bias = Bias  # type: ignore[attr-defined]
        line.Value = Value  # type: ignore[attr-defined]
        mod.line = line  # type: ignore[attr-defined]
        mod.LineSettings = LineSettings  # type: ignore[attr-defined]
        mod.EdgeEvent = EdgeEvent  # type: ignore[attr-defined]
        mod.is_gpiochip_device = lambda path: path in chips  # type: ignore[attr-defined]
        mod.request_lines = lambda *a, **k: None  # type: ignore[attr-defined]
        fake = self

        class Chip:
            def __init__(self, path: str) -> None:
                if path not in fake.chips:
                    raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
                self.state = fake.chips[path]

            def __enter__(self) -> Chip:
                return self

            def __exit__(self, *exc: object) -> None:
                pass

            def get_info(self) -> Any:
                return types.SimpleNamespace(
                    label=self.state.label, num_lines=self.state.num_lines, name="gpiochipX"
                )

            def request_lines(
                self, config: dict[int, LineSettings], consumer: str | None = None
            ) -> FakeRequest:
                for off in config:
                    if off in self.state.busy:
                        raise OSError(errno.EBUSY, "Device or resource busy")
                req = FakeRequest(consumer, config)
                self.state.requests.append(req)
                return req

        mod.Chip = Chip  # type: ignore[attr-defined]
        self.module = mod
        self.line = line


@pytest.fixture
def chips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeChipState]:
    """gpiochip0 (the RP1 header bank on a Pi 5), gpiochip10 and gpiochip2 in a fake /dev."""
    states = {
        str(tmp_path / "gpiochip0"): FakeChipState("pinctrl-rp1"),
        str(tmp_path / "gpiochip2"): FakeChipState("gpio-brcmstb@107d508500", num_lines=32),
        str(tmp_path / "gpiochip10"): FakeChipState("rp1-sys", num_lines=4),
    }
    for path in states:
        Path(path).touch()
    fake = FakeGpiod(states)
    monkeypatch.setitem(sys.modules, "gpiod", fake.module)
    monkeypatch.setitem(sys.modules, "gpiod.line", fake.line)
    monkeypatch.setattr(gb, "DEV_DIR", str(tmp_path))
    return states


def _only_request(state: FakeChipState) -> FakeRequest:
    assert len(state.requests) == 1
    return state.requests[0]


def test_chip_by_label_path_and_name(chips: dict[str, FakeChipState], tmp_path: Path) -> None:
    pin = GpiodPin("rp1-sys", 3, direction="in")
    assert pin.path == str(tmp_path / "gpiochip10")
    pin2 = GpiodPin("pinctrl-rp1", 25, direction="in")
    assert pin2.path == str(tmp_path / "gpiochip0")
    pin3 = GpiodPin(str(tmp_path / "gpiochip2"), 5, direction="in")
    assert pin3.path == str(tmp_path / "gpiochip2")
    pin4 = GpiodPin("gpiochip2", 6, direction="in")
    assert pin4.path == str(tmp_path / "gpiochip2")


def test_missing_chip(chips: dict[str, FakeChipState], tmp_path: Path) -> None:
    with pytest.raises(HardwareNotFound) as info:
        GpiodPin("pinctrl-bcm2711", 25, direction="in")
    assert info.value.what == "pinctrl-bcm2711"
    assert "gpiochip0=pinctrl-rp1" in info.value.problem
    assert "gpiodetect" in info.value.hint
    with pytest.raises(HardwareNotFound, match="not found"):
        GpiodPin("gpiochip7", 25, direction="in")
    with pytest.raises(HardwareNotFound, match="not found"):
        GpiodPin(str(tmp_path / "gpiochip9"), 25, direction="in")


def test_no_chips_at_all(chips: dict[str, FakeChipState], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gb, "DEV_DIR", "/nonexistent-dev")
    with pytest.raises(HardwareNotFound, match="no /dev/gpiochip"):
        GpiodPin("pinctrl-rp1", 25, direction="in")


def test_bad_line_and_busy_line(chips: dict[str, FakeChipState], tmp_path: Path) -> None:
    with pytest.raises(HardwareNotFound, match="no such line"):
        GpiodPin("rp1-sys", 4, direction="in")
    chips[str(tmp_path / "gpiochip0")].busy.add(24)
    with pytest.raises(HardwareNotFound) as info:
        GpiodPin("pinctrl-rp1", 24, direction="out")
    assert info.value.problem == "line busy"
    assert info.value.what.endswith("gpiochip0 line 24")


def test_output_pin(chips: dict[str, FakeChipState], tmp_path: Path) -> None:
    reset = GpiodPin("pinctrl-rp1", 24, direction="out", active_low=True, consumer="w5100-reset")
    assert isinstance(reset, Pin)
    req = _only_request(chips[str(tmp_path / "gpiochip0")])
    assert req.consumer == "w5100-reset"
    s = req.config[24]
    assert s.direction is Direction.OUTPUT and s.active_low is True
    assert s.output_value is Value.INACTIVE  # initial=False: not in reset
    assert reset.get() is False
    reset.set(True)
    assert req.values[24] is Value.ACTIVE  # logical; the kernel drives the pin low
    assert reset.get() is True
    with pytest.raises(ValueError):
        reset.wait_edge(Edge.RISING, 0)
    reset.close()
    assert req.released
    reset.close()
    with pytest.raises(OSError):
        reset.set(False)


def test_input_pin_edges(chips: dict[str, FakeChipState], tmp_path: Path) -> None:
    irq = GpiodPin("pinctrl-rp1", 25, direction="in", edge=Edge.FALLING, bias="pull_up")
    req = _only_request(chips[str(tmp_path / "gpiochip0")])
    s = req.config[25]
    assert s.direction is Direction.INPUT and s.edge_detection is GEdge.FALLING
    assert s.bias is Bias.PULL_UP
    assert irq.fileno() == 42
    with pytest.raises(ValueError):
        irq.set(True)

    req.events.append([EdgeEvent(EventType.FALLING_EDGE, 25)])
    assert irq.wait_edge(Edge.FALLING, 100) is True
    assert 0 < req.waits[-1] <= 0.1

    assert irq.wait_edge(Edge.FALLING, 0) is False  # nothing queued
    assert req.waits[-1] == 0.0
    assert req.reconfigured == []

    # asking for RISING widens the detection to BOTH, on the same request
    req.events.append([EdgeEvent(EventType.FALLING_EDGE, 25)])
    req.events.append([EdgeEvent(EventType.FALLING_EDGE, 25), EdgeEvent(EventType.RISING_EDGE, 25)])
    assert irq.wait_edge(Edge.RISING, 100) is True
    assert req.reconfigured[-1][25].edge_detection is GEdge.BOTH
    assert irq.edge is Edge.BOTH
    assert not req.events  # the non-matching batch was consumed on the way


def test_input_pin_without_edge_gets_one(chips: dict[str, FakeChipState], tmp_path: Path) -> None:
    pin = GpiodPin("pinctrl-rp1", 17, direction="in", active_low=True)
    req = _only_request(chips[str(tmp_path / "gpiochip0")])
    assert req.config[17].edge_detection is GEdge.NONE
    req.events.append([EdgeEvent(EventType.RISING_EDGE, 17)])
    assert pin.wait_edge(Edge.RISING, 10) is True
    assert req.reconfigured[-1][17].edge_detection is GEdge.RISING
    assert req.reconfigured[-1][17].active_low is True


def test_wait_edge_only_wrong_edges_times_out(
    chips: dict[str, FakeChipState], tmp_path: Path
) -> None:
    pin = GpiodPin("pinctrl-rp1", 5, direction="in", edge=Edge.BOTH)
    req = _only_request(chips[str(tmp_path / "gpiochip0")])
    req.events.extend([[EdgeEvent(EventType.RISING_EDGE, 5)]] * 3)
    t0 = time.monotonic()
    assert pin.wait_edge(Edge.FALLING, 20) is False
    assert time.monotonic() - t0 < 1.0

"""Out-of-tree plug-ins for the rig tests: what a lab's own package would provide.

- ``make_loopback_bus``: a ``kind = "python"`` bus factory. Its bus is a toy
  "chip model" whose wire is the rig's TAP (the builder passes ``wire`` and
  ``clock`` to a factory that takes them).
- ``FakeChipDevice``: a driver for that toy chip, registered through a
  (monkeypatched) ``hilkit.drivers`` entry point.
- ``PacketDevice``: a bus-less driver on an AF_PACKET socket in a given
  namespace, standing in for a NIC on the far side of a host rig's cable.
- ``TOY_NIC``, ``NOMODEL_NIC``: NIC registrations (``hilkit.port.nic.Nic``) under a
  (monkeypatched) ``hilkit.nics`` entry point: the toy chip with a model for
  ``[bus] kind = "sim"``, and a chip without one.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import Any

import pytest

import hilkit.drivers
from hilkit.drivers.tap import random_mac
from hilkit.port.device import Device, DeviceClosed, DeviceCounters, LinkType
from hilkit.port.nic import Nic
from hilkit.port.spi import BusCounters, check_tails, reply_tails
from hilkit.rig.netns import CLONE_NEWNET, NETNS_RUN_DIR, _setns

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


class LoopbackBus:
    """A toy chip on an SPI bus: ``transfer`` echoes; frames go to and come from ``wire``."""

    def __init__(self, wire: Device | None, clock: Any, label: str, speed_hz: int) -> None:
        self.wire = wire
        self.clock = clock
        self.label = label
        self.speed_hz = speed_hz
        self.counters = BusCounters()
        self.closed = False
        self.reset_pin = None

    def transfer(self, data: bytes) -> bytes:
        self.counters.calls += 1
        self.counters.transactions += 1
        self.counters.bytes += len(data)
        return bytes(data)

    def transfer_batch(
        self, frames: Sequence[bytes], tails: Sequence[int] | None = None
    ) -> list[bytes]:
        if tails is not None:
            check_tails(frames, tails)
        self.counters.calls += 1
        out = []
        for f in frames:
            self.counters.transactions += 1
            self.counters.bytes += len(f)
            out.append(bytes(f))
        return reply_tails(out, tails)

    def close(self) -> None:
        self.closed = True


def make_loopback_bus(
    *, label: str = "loop", speed_hz: int = 1_000_000, wire: Device | None = None,
    clock: Any = None,
) -> LoopbackBus:
    return LoopbackBus(wire, clock, label, speed_hz)


def open_bridge(*, serial: str, speed_hz: int = 1_000_000) -> LoopbackBus:
    """A bridge factory with a required parameter: the rig must name the bridge."""
    return LoopbackBus(None, None, f"bridge-{serial}", speed_hz)


def not_a_bus(**kw: Any) -> object:
    return object()


def raising_bus(**kw: Any) -> LoopbackBus:
    """A bridge that is not plugged in: its factory raises what its library raises."""
    raise RuntimeError("no such bridge on USB")


class FakeChipDevice:
    """A driver for ``LoopbackBus``: frames pass through the bus to its wire."""

    link_type = LinkType.ETHERNET

    def __init__(self, bus: LoopbackBus, *, mac: bytes | None = None, reset: Any = None,
                 irq: Any = None, mtu: int = 1500, gain: int = 1) -> None:
        self.bus = bus
        self.name = f"fakechip@{bus.label}"
        self.mac = mac or random_mac()
        self.mtu = mtu
        self.gain = gain
        self.counters = DeviceCounters()
        self.closed = False

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        assert self.bus.wire is not None
        self.bus.transfer(b"\xf0\x00\x00\x00")
        ok = self.bus.wire.send(frame)
        if ok:
            self.counters.tx_frames += 1
        return ok

    def poll(self, budget: int) -> list[bytes]:
        if self.closed:
            raise DeviceClosed("closed")
        assert self.bus.wire is not None
        frames = self.bus.wire.poll(budget)
        self.counters.rx_frames += len(frames)
        return frames

    @property
    def link_up(self) -> bool:
        return True

    def fileno(self) -> int | None:
        return self.bus.wire.fileno() if self.bus.wire is not None else None

    def close(self) -> None:
        self.closed = True


def in_named_netns(name: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a thread that entered the namespace ``/run/netns/NAME``."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            fd = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY)
            try:
                _setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class PacketDevice:
    """A bus-less driver: Ethernet frames on ``interface`` in namespace ``netns``."""

    link_type = LinkType.ETHERNET

    def __init__(self, *, interface: str, netns: str, mac: bytes | None = None,
                 mtu: int = 1500) -> None:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.bind((interface, 0))
            s.setblocking(False)
            return s

        self._sock: socket.socket | None = in_named_netns(netns, make)
        self.name = f"packet:{interface}"
        self.mac = mac or random_mac()
        self.mtu = mtu
        self.counters = DeviceCounters()

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        if self._sock is None:
            raise DeviceClosed("closed")
        try:
            self._sock.send(frame)
        except OSError:
            self.counters.tx_dropped += 1
            return False
        self.counters.tx_frames += 1
        return True

    def poll(self, budget: int) -> list[bytes]:
        if self._sock is None:
            raise DeviceClosed("closed")
        out: list[bytes] = []
        while len(out) < budget:
            try:
                data, addr = self._sock.recvfrom(65536)
            except BlockingIOError:
                break
            if addr[2] == PACKET_OUTGOING:
                continue
            out.append(data)
        self.counters.rx_frames += len(out)
        return out

    @property
    def link_up(self) -> bool:
        return self._sock is not None

    def fileno(self) -> int | None:
        return self._sock.fileno() if self._sock is not None else None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


PLUGINS = {
    "fakechip": "tests.rig_plugins:FakeChipDevice",
    "packet": "tests.rig_plugins:PacketDevice",
}


def register_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``PLUGINS`` visible as ``hilkit.drivers`` entry points, as an installed package's."""
    real: Callable[..., Any] = hilkit.drivers.entry_points  # type: ignore[attr-defined]
    eps = [EntryPoint(name, value, hilkit.drivers.ENTRY_POINT_GROUP)
           for name, value in PLUGINS.items()]

    def fake(**kw: Any) -> list[EntryPoint]:
        mine = [ep for ep in eps if all(getattr(ep, k) == v for k, v in kw.items())]
        return mine + list(real(**kw))

    monkeypatch.setattr(hilkit.drivers, "entry_points", fake)


# -- NIC registrations -----------------------------------------------------------------------


@dataclass
class ToyFaults:
    """The toy model's faults: the keys a rig's ``bus.faults`` may hold."""

    mute: bool = False
    noise: float = 0.0


def make_toy_model(*, wire: Device | None, clock: Any, seed: int, faults: ToyFaults | None,
                   timing: Any) -> LoopbackBus:
    """The toy chip's model, as ``Nic.model`` names it: a ``LoopbackBus`` on the wire."""
    bus = LoopbackBus(wire, clock, f"toy-model-{seed}", 1_000_000)
    bus.faults = faults  # type: ignore[attr-defined]
    bus.stats = {"seed": seed}  # type: ignore[attr-defined]
    return bus


def identify_toy(bus: Any) -> str | None:
    """The toy chip echoes: anything else on the bus is not it."""
    reply = bus.transfer_batch([b"\x5a\xa5"])
    return None if [bytes(r) for r in reply] == [b"\x5a\xa5"] else f"no toy chip: {reply!r}"


TOY_NIC = Nic(
    name="toy",
    title="Toy Chip",
    driver="tests.rig_plugins:FakeChipDevice",
    model="tests.rig_plugins:make_toy_model",
    model_faults="tests.rig_plugins:ToyFaults",
    identify="tests.rig_plugins:identify_toy",
    spi_max_hz=2_000_000,
    spi_bytes_per_data_byte=1.0,
    stat_names=("gain",),
)

NOMODEL_NIC = Nic(name="nomodel", title="Bare Chip", driver="tests.rig_plugins:FakeChipDevice")

NICS = {
    "toy": "tests.rig_plugins:TOY_NIC",
    "nomodel": "tests.rig_plugins:NOMODEL_NIC",
}


def register_nics(monkeypatch: pytest.MonkeyPatch, nics: dict[str, str] | None = None) -> None:
    """Make ``nics`` (default ``NICS``) visible as ``hilkit.nics`` entry points."""
    real: Callable[..., Any] = hilkit.drivers.entry_points  # type: ignore[attr-defined]
    eps = [EntryPoint(name, value, hilkit.drivers.NIC_ENTRY_POINT_GROUP)
           for name, value in (NICS if nics is None else nics).items()]

    def fake(**kw: Any) -> list[EntryPoint]:
        mine = [ep for ep in eps if all(getattr(ep, k) == v for k, v in kw.items())]
        return mine + list(real(**kw))

    monkeypatch.setattr(hilkit.drivers, "entry_points", fake)

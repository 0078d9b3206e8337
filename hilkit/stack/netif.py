"""Interfaces and routes as every layer sees them, and the one way a frame reaches a device.

``Stack`` owns the interfaces; the layers are handed the same objects, so an
address or a link state the stack changes is what every layer reads next.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from hilkit.port.clock import Clock
from hilkit.port.device import ETH_HEADER_LEN, NO_OFFLOADS, Device, LinkConfig, Offloads
from hilkit.port.offload import wire_frames
from hilkit.stack.addr import ANY, BROADCAST
from hilkit.stack.arp import ArpCache
from hilkit.stack.faults import DeviceGuard, LogThrottle
from hilkit.stack.ipv4 import Buffer

__all__ = ["Addresses", "Buffer", "Interface", "Route", "Transmit"]


@dataclass
class Interface:
    dev: Device
    ethernet: bool
    mac: bytes
    arp: ArpCache
    guard: DeviceGuard  # what went wrong with ``dev``: counted, down after repeated failures
    addrs: list[tuple[int, int]] = field(default_factory=list)  # (address, netmask)
    # The device's ``link_config`` (looked up once, at add_device), or None: it has none.
    link_config: Callable[[], LinkConfig | None] | None = field(default=None, compare=False)
    link: LinkConfig | None = field(default=None, compare=False)  # the last one it returned
    dns: tuple[str, ...] = ()  # what ``link`` said, once applied
    # What applying ``link`` added, so exactly that goes when it changes; hand-made
    # addresses and routes on the same device stay.
    link_addr: int | None = field(default=None, compare=False, repr=False)
    link_routes: list[Route] = field(default_factory=list, compare=False, repr=False)
    link_faults: LogThrottle | None = field(default=None, compare=False, repr=False)
    # ``dev.link_up`` as last read, and when (``StackConfig.link_check_ms``)
    link_up: bool = field(default=True, compare=False)
    link_checked_at: float = field(default=0.0, compare=False, repr=False)
    link_up_faults: LogThrottle | None = field(default=None, compare=False, repr=False)
    offloads: Offloads = field(default=NO_OFFLOADS, compare=False)  # the device's, at add_device

    def subnet_broadcasts(self) -> set[int]:
        return {(a & m) | (~m & BROADCAST) for a, m in self.addrs if m != BROADCAST}


@dataclass(frozen=True)
class Route:
    net: int
    mask: int
    gateway: int  # ANY for on-link
    iface: Interface
    src: int = ANY  # preferred source (as ``ip route ... src``): a link config's address


class Addresses:
    """The host's addresses, and the broadcast addresses that reach it.

    The sets are updated in place, so a layer may keep a reference to them
    and test membership on every packet without a lookup through this object.
    """

    def __init__(self, interfaces: list[Interface]) -> None:
        self.interfaces = interfaces  # the stack's own list, in the order they were added
        self.local: set[int] = set()
        self.bcast: set[int] = {BROADCAST}

    def refresh(self) -> None:
        local = {a for i in self.interfaces for a, _ in i.addrs}
        bcast = {BROADCAST}.union(*(i.subnet_broadcasts() for i in self.interfaces))
        self.local.clear()
        self.local.update(local)
        self.bcast.clear()
        self.bcast.update(bcast)


class Transmit:
    """Hands frames to devices: nothing goes to a device that is down or whose link is.

    A raising driver costs the frame, never the stack; ``on_state_change`` is
    told when a device is taken down for failing again and again.
    """

    def __init__(self, clock: Clock, stats: Counter[str],
                 on_state_change: Callable[[], None]) -> None:
        self._clock = clock
        self._stats = stats
        self._on_state_change = on_state_change

    def send(self, iface: Interface, frame: bytes) -> None:
        guard = iface.guard
        if guard.down:  # as a link that is down: nothing is sent on it
            guard.faults.tx_while_down += 1
            return
        if not iface.link_up:
            self._stats["link_down_drops"] += 1
            return
        dev = iface.dev
        l3 = ETH_HEADER_LEN if iface.ethernet else 0
        if len(frame) > dev.mtu + l3 and not iface.offloads.tso:
            # a TCP segment of many MSS (TcpConfig.gso): cut here, each piece completed
            self._stats["tx.gso_segments"] += 1
            for piece in wire_frames(frame, l3, dev.mtu):
                self._send(iface, piece)
            return
        self._send(iface, frame)

    def _send(self, iface: Interface, frame: bytes) -> None:
        guard = iface.guard
        try:
            ok = iface.dev.send(frame)
        except Exception:
            if guard.failed("send", self._clock.now_ms()):
                self._on_state_change()
            return
        guard.succeeded("send")
        if not ok:
            self._stats["tx.device_refused"] += 1

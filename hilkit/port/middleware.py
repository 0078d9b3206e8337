"""The base of device middleware: a Device that wraps another (smoltcp's idea).

Everything the contract asks is the inner device's unless a subclass says
otherwise; subclasses override ``send``/``poll`` (and ``next_deadline`` when
they hold frames). The wrapped device stays reachable as ``inner``.
"""

from __future__ import annotations

from hilkit.port.device import (
    Device,
    DeviceCounters,
    LinkType,
    Offloads,
    device_deadline,
    device_offloads,
    device_rx_buffer,
)


class DeviceMiddleware:
    def __init__(self, inner: Device) -> None:
        self.inner = inner

    # Settable, as the Device protocol declares its attributes.
    @property
    def name(self) -> str:
        return self.inner.name

    @name.setter
    def name(self, value: str) -> None:
        self.inner.name = value

    @property
    def link_type(self) -> LinkType:
        return self.inner.link_type

    @link_type.setter
    def link_type(self, value: LinkType) -> None:
        self.inner.link_type = value

    @property
    def mac(self) -> bytes | None:
        return self.inner.mac

    @mac.setter
    def mac(self, value: bytes | None) -> None:
        # The contract reads ``mac`` only; a wrapper still forwards a test's assignment.
        inner: object = self.inner
        inner.mac = value  # type: ignore[attr-defined]

    @property
    def mtu(self) -> int:
        return self.inner.mtu

    @mtu.setter
    def mtu(self, value: int) -> None:
        self.inner.mtu = value

    @property
    def counters(self) -> DeviceCounters:
        return self.inner.counters

    @counters.setter
    def counters(self, value: DeviceCounters) -> None:
        self.inner.counters = value

    @property
    def link_up(self) -> bool:
        return self.inner.link_up

    @property
    def rx_buffer_bytes(self) -> int | None:
        """Forwarded: the wrapped device's receive buffer is the one that overflows."""
        return device_rx_buffer(self.inner)

    @property
    def offloads(self) -> Offloads:
        """Forwarded: the frames pass as they are, so the wrapped device still does the
        work (a wrapper that looks into frames decides for itself)."""
        return device_offloads(self.inner)

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        return self.inner.send(frame)

    def poll(self, budget: int) -> list[bytes]:
        return self.inner.poll(budget)

    def fileno(self) -> int | None:
        return self.inner.fileno()

    def next_deadline(self) -> float | None:
        """Forwarded: a wrapped device that holds frames says when it needs a poll."""
        return device_deadline(self.inner)

    def close(self) -> None:
        self.inner.close()

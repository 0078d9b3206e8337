"""The SPI bus contract every SPI NIC driver speaks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass
class BusCounters:
    """What a bus moved; the bus fills it, the runner's bus figures read it."""

    bytes: int = 0  # bytes clocked (each direction counts once: SPI is full duplex)
    transactions: int = 0  # chip-select assertions
    calls: int = 0  # round trips to the OS or the bridge (ioctl, USB write+read)


@runtime_checkable
class SpiBus(Protocol):
    """Full-duplex SPI with chip select.

    ``transfer_batch`` toggles chip select between its items within one call:
    a chip may need a CS frame per 4 bytes, and one call per batch is what
    makes spidev (one ioctl) or an FT232H (one USB write) fast.

    Optional member (read with ``bus_call_overhead_us``): ``call_overhead_us: float``,
    what one call (``counters.calls``) costs the host beyond clocking the bits, in
    microseconds: ~30 for a spidev ioctl, ~125 for an FT232H USB round trip, 0 for a
    chip model that stands for no bridge (or its bridge's figure). The throughput
    figures charge it per call; a bus without it gets its kind's guess.
    """

    counters: BusCounters

    def transfer(self, data: bytes) -> bytes:
        """Assert CS, clock ``data`` out, return the bytes clocked in, release CS."""
        ...

    def transfer_batch(self, frames: Sequence[bytes]) -> list[bytes]:
        """Each item is one CS-delimited transfer; results in the same order."""
        ...

    def close(self) -> None: ...


def bus_call_overhead_us(bus: object) -> float | None:
    """The bus's own ``call_overhead_us`` (a finite number >= 0), or None if it states none."""
    v = getattr(bus, "call_overhead_us", None)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if 0 <= v < float("inf") else None

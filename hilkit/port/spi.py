"""The SPI bus contract every SPI NIC driver speaks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass
class BusCounters:
    bytes: int = 0  # bytes clocked (each direction counts once: SPI is full duplex)
    transactions: int = 0  # chip-select assertions
    calls: int = 0  # round trips to the OS or the bridge (ioctl, USB write+read)


@runtime_checkable
class SpiBus(Protocol):
    """Full-duplex SPI with chip select.

    ``transfer_batch`` toggles chip select between its items within one call:
    a chip may need a CS frame per 4 bytes, and one call per batch is what
    makes spidev (one ioctl) or an FT232H (one USB write) fast.
    """

    counters: BusCounters

    def transfer(self, data: bytes) -> bytes:
        """Assert CS, clock ``data`` out, return the bytes clocked in, release CS."""
        ...

    def transfer_batch(self, frames: Sequence[bytes]) -> list[bytes]:
        """Each item is one CS-delimited transfer; results in the same order."""
        ...

    def close(self) -> None: ...

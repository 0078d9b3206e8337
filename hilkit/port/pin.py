"""The GPIO line contract: reset and interrupt pins.

Values are logical: True means asserted (reset held, interrupt pending), and a
rising edge is the line becoming asserted. A pin whose line is active low (the
usual /RESET and /INT of a NIC chip) inverts inside its implementation: gpiod and FTDI pins
take ``active_low`` from the rig file, and ``InvertedPin`` wraps a raw line.
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable


class Edge(enum.Enum):
    RISING = "rising"
    FALLING = "falling"
    BOTH = "both"


@runtime_checkable
class Pin(Protocol):
    def set(self, value: bool) -> None: ...

    def get(self) -> bool: ...

    def wait_edge(self, edge: Edge, timeout_ms: float) -> bool:
        """True if the edge came within ``timeout_ms``; never waits longer."""
        ...

    def close(self) -> None: ...


_OPPOSITE = {Edge.RISING: Edge.FALLING, Edge.FALLING: Edge.RISING, Edge.BOTH: Edge.BOTH}


class InvertedPin:
    """An active-low line seen as a logical pin (a chip model's raw /RESET or /INT)."""

    def __init__(self, inner: Pin) -> None:
        self.inner = inner

    def set(self, value: bool) -> None:
        self.inner.set(not value)

    def get(self) -> bool:
        return not self.inner.get()

    def wait_edge(self, edge: Edge, timeout_ms: float) -> bool:
        return self.inner.wait_edge(_OPPOSITE[edge], timeout_ms)

    def fileno(self) -> int | None:
        fileno = getattr(self.inner, "fileno", None)
        return fileno() if fileno is not None else None

    def close(self) -> None:
        self.inner.close()

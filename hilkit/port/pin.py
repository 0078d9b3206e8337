"""The GPIO line contract: reset and interrupt pins."""

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

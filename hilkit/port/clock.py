"""Monotonic millisecond clocks: the real one, and one a test moves by hand."""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now_ms(self) -> float:
        """Milliseconds since an arbitrary fixed point; never goes back."""
        ...


class MonotonicClock:
    def now_ms(self) -> float:
        return time.monotonic_ns() / 1e6


class ManualClock:
    """Time moves only when the test says so, which makes timer tests exact."""

    def __init__(self, start_ms: float = 0.0) -> None:
        self._now = start_ms

    def now_ms(self) -> float:
        return self._now

    def advance(self, ms: float) -> None:
        if ms < 0:
            raise ValueError("a monotonic clock cannot go back")
        self._now += ms

"""A heap of one-shot timers; the stack's notion of "what is due next"."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class Timer:
    __slots__ = ("cancelled", "deadline", "fn")

    def __init__(self, deadline: float, fn: Callable[[], None]) -> None:
        self.deadline = deadline
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class TimerQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return sum(1 for _, _, t in self._heap if not t.cancelled)

    def at(self, deadline: float, fn: Callable[[], None]) -> Timer:
        t = Timer(deadline, fn)
        heapq.heappush(self._heap, (deadline, next(self._seq), t))
        return t

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[Timer]:
        """Timers due at ``now``, in deadline order (ties in scheduling order)."""
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            t = heapq.heappop(heap)[2]
            if not t.cancelled:
                due.append(t)
        return due

"""Simulated GPIO lines for the hardware models (``hilkit.port.Pin``).

A ``SimPin`` is one line between the host and a model. Either the host drives
it (``output=True``: a reset line; ``set`` moves it and tells the model through
``on_set``), or the model drives it (an interrupt line: the model calls
``drive``; the host may only read it, and ``set`` raises).

Edges are recorded as they happen, like a GPIO character device queues edge
events from the moment the line is requested: ``wait_edge`` first takes a
queued event and only then waits. An edge is a *change* of level; a line that
is already low gives no falling edge until it has gone high and low again.

Waiting never spins: before each look at the line ``refresh`` lets the model
catch up (pull frames from its wire, run its timers); between looks the pin
sleeps in ``select`` on ``fileno()`` (the model's descriptor) or, with no
descriptor, in short naps, never past the timeout.

With ``signal_edge`` the pin also keeps an eventfd (``event_fd()``) that is
readable while an edge of that kind waits in the queue, as a GPIO line
request's descriptor is while it holds edge events: written when such an edge
is queued, drained when ``wait_edge`` has taken the last one. A model puts it
into its own descriptor, so an interrupt raised during any bus call wakes a
waiting stack at once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable

from hilkit.port.pin import Edge

DEFAULT_IDLE_POLL_MS = 2.0  # nap between looks when there is no descriptor to wait on
DEFAULT_MAX_EVENTS = 64  # queued edges kept; older ones are lost, as in a kernel event buffer


class SimPin:
    """A GPIO line of a simulated chip; implements ``hilkit.port.Pin``.

    ``refresh`` is called before the level is looked at (``get``, ``wait_edge``);
    ``fileno`` returns a descriptor that turns readable when the far side may have
    moved the line; ``wake_ms`` returns how long, at most, a waiter should sleep
    before looking again (the model's next timer), or None.
    """

    def __init__(
        self,
        name: str,
        *,
        level: bool = True,
        output: bool = False,
        on_set: Callable[[bool], None] | None = None,
        refresh: Callable[[], None] | None = None,
        fileno: Callable[[], int | None] | None = None,
        wake_ms: Callable[[], float | None] | None = None,
        idle_poll_ms: float = DEFAULT_IDLE_POLL_MS,
        max_events: int = DEFAULT_MAX_EVENTS,
        signal_edge: Edge | None = None,
    ) -> None:
        self.name = name
        self.output = output
        self._level = level
        self._on_set = on_set
        self._refresh = refresh
        self._fileno = fileno
        self._wake_ms = wake_ms
        self._idle_poll_s = max(idle_poll_ms, 0.1) / 1000.0
        self._events: deque[bool] = deque(maxlen=max_events)  # True = rising
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._signal_edge = signal_edge
        self._efd: int | None = None
        if signal_edge is not None:
            self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._signalled = False  # the eventfd holds a count
        self.rising = 0  # edges seen since creation
        self.falling = 0

    # -- the far side ---------------------------------------------------------

    @property
    def level(self) -> bool:
        """The line's level right now, without letting the model catch up."""
        return self._level

    def drive(self, level: bool) -> None:
        """Move the line (the side that owns it: the model for an input line)."""
        with self._cond:
            if level == self._level:
                return
            self._level = level
            self._events.append(level)
            if level:
                self.rising += 1
            else:
                self.falling += 1
            if self._efd is not None and not self._signalled and self._signals(level):
                os.eventfd_write(self._efd, 1)
                self._signalled = True
            self._cond.notify_all()

    # -- hilkit.port.Pin ------------------------------------------------------

    def set(self, value: bool) -> None:
        self._check_open()
        if not self.output:
            raise OSError(errno.EPERM, f"{self.name}: input line, the chip drives it")
        value = bool(value)
        changed = value != self._level
        self.drive(value)
        if changed and self._on_set is not None:
            self._on_set(value)

    def get(self) -> bool:
        self._check_open()
        if self._refresh is not None:
            self._refresh()
        return self._level

    def wait_edge(self, edge: Edge, timeout_ms: float) -> bool:
        self._check_open()
        deadline = time.monotonic() + max(timeout_ms, 0.0) / 1000.0
        idle_rounds = 0
        while True:
            if self._refresh is not None:
                self._refresh()
            if self._take(edge):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            wait = remaining
            if self._wake_ms is not None and (hint := self._wake_ms()) is not None:
                wait = min(wait, max(hint, 0.0) / 1000.0)
            fd = self.fileno()
            if fd is None or idle_rounds >= 2:
                # No descriptor, or one that stays readable while nothing moves:
                # nap, but wake at once if another thread drives the line.
                with self._cond:
                    if not self._events:
                        self._cond.wait(min(wait, self._idle_poll_s))
                idle_rounds = 0
            else:
                readable, _, _ = select.select([fd], [], [], wait)
                idle_rounds = idle_rounds + 1 if readable else 0

    def fileno(self) -> int | None:
        """The descriptor a stack can select on for this line, or None."""
        return self._fileno() if self._fileno is not None else None

    def event_fd(self) -> int | None:
        """Readable while a ``signal_edge`` edge is queued (None without ``signal_edge``)."""
        return self._efd

    def close(self) -> None:
        self.release_event_fd()
        self._closed = True

    def release_event_fd(self) -> None:
        """Close ``event_fd`` (its model is closed); the line itself stays usable."""
        with self._cond:
            if self._efd is not None:
                os.close(self._efd)
                self._efd = None
            self._signalled = False

    # -- internals --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, f"{self.name}: pin closed")

    def _take(self, edge: Edge) -> bool:
        """Consume queued edges up to and including the first one that matches."""
        with self._cond:
            try:
                while self._events:
                    rising = self._events.popleft()
                    if edge is Edge.BOTH or rising == (edge is Edge.RISING):
                        return True
                return False
            finally:
                if self._signalled and not any(map(self._signals, self._events)):
                    self._drain_signal()

    def _signals(self, rising: bool) -> bool:
        """An edge of this direction makes ``event_fd`` readable."""
        want = self._signal_edge
        return want is Edge.BOTH or (want is not None and rising == (want is Edge.RISING))

    def _drain_signal(self) -> None:
        """The last signalling edge was taken: the descriptor goes quiet."""
        if self._efd is not None:
            with contextlib.suppress(BlockingIOError):  # nothing to drain
                os.eventfd_read(self._efd)
        self._signalled = False

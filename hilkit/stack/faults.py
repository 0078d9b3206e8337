"""Faults that are not the wire's: a device or an application callback that raises.

The stack contains them rather than dying: each is counted, the first is
logged with its traceback, and after that at most one short line per
interval, so a fault that repeats for every frame can neither flood the log
nor spend the CPU on formatting tracebacks. A device that keeps failing is
taken down and retried at a low rate, so it can come back on its own.
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any

from hilkit.port.clock import Clock
from hilkit.stack.events import SocketEvent


class LogThrottle:
    """Log the first occurrence in full, then one short line per ``interval_ms``."""

    def __init__(self, interval_ms: float) -> None:
        self.interval_ms = interval_ms
        self.count = 0  # every occurrence, logged or not
        self._last_ms: float | None = None
        self._unlogged = 0

    def report(self, logger: logging.Logger, now_ms: float, what: str) -> None:
        """Count one occurrence of ``what``; call it from inside the ``except`` block."""
        self.count += 1
        if self._last_ms is None:
            self._last_ms = now_ms
            logger.error("%s (repeats are logged at most every %g s)", what,
                         self.interval_ms / 1000.0, exc_info=True)
            return
        self._unlogged += 1
        if now_ms - self._last_ms >= self.interval_ms:
            exc = sys.exc_info()[1]
            logger.error("%s again: %d times since the last report, latest %r", what,
                         self._unlogged, exc)
            self._last_ms = now_ms
            self._unlogged = 0


@dataclass
class DeviceFaults:
    """What the stack saw go wrong with one device (the driver's own counters are apart)."""

    poll_exceptions: int = 0  # ``poll`` raised
    send_exceptions: int = 0  # ``send`` raised; the frame is lost
    went_down: int = 0  # times it was taken down for failing again and again
    tx_while_down: int = 0  # frames not offered to it because it was down
    down: int = 0  # 1 while it is down

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class DeviceGuard:
    """Tracks one device's failures: ``max_failures`` in a row (of ``poll``, or of
    ``send``) take it down; while down it gets no frames and one ``poll`` every
    ``retry_ms``, and the first that succeeds brings it back."""

    def __init__(self, name: str, logger: logging.Logger, max_failures: int, retry_ms: float,
                 log_interval_ms: float) -> None:
        self.name = name
        self.faults = DeviceFaults()
        self._log = logger
        self._max = max(1, max_failures)
        self._retry_ms = retry_ms
        self._throttle = LogThrottle(log_interval_ms)
        self._streak = {"poll": 0, "send": 0}
        self._retry_at = 0.0

    @property
    def down(self) -> bool:
        return bool(self.faults.down)

    def may_poll(self, now_ms: float) -> bool:
        return not self.down or now_ms >= self._retry_at

    def retry_deadline(self) -> float | None:
        """When a down device is due its next trial ``poll`` (stack ms), else None."""
        return self._retry_at if self.down else None

    def failed(self, op: str, now_ms: float) -> bool:
        """Count a raising ``op``; call it inside the ``except``. True if it just went down."""
        if op == "poll":
            self.faults.poll_exceptions += 1
        else:
            self.faults.send_exceptions += 1
        self._throttle.report(self._log, now_ms, f"{self.name}: {op} raised")
        self._streak[op] += 1
        if self.down:
            self._retry_at = now_ms + self._retry_ms
            return False
        if self._streak[op] < self._max:
            return False
        self.faults.down = 1
        self.faults.went_down += 1
        self._retry_at = now_ms + self._retry_ms
        self._log.error("%s: down after %d failed %s calls in a row; trying again every %g s",
                        self.name, self._streak[op], op, self._retry_ms / 1000.0)
        return True

    def succeeded(self, op: str) -> bool:
        """Note a call that returned. True if the device just came back up."""
        self._streak[op] = 0
        if op != "poll" or not self.down:
            return False
        self.faults.down = 0
        self._streak["send"] = 0
        self._log.warning("%s: poll works again; device is back up", self.name)
        return True


def _sock_name(sock: Any) -> str:
    """'UdpSocket 0.0.0.0:7' for a log line; never raises, it runs in an ``except``."""
    try:
        host, port = sock.getsockname()
        return f"{type(sock).__name__} {host}:{port}"
    except Exception:
        return type(sock).__name__


class Callbacks:
    """Calls the application's callbacks; one that raises is counted in ``stats``
    (``callback_error``) and logged once per owner, then rarely: an application bug
    must not stop the stack nor flood its log."""

    def __init__(self, clock: Clock, stats: Counter[str], logger: logging.Logger,
                 log_interval_ms: float) -> None:
        self._clock = clock
        self._stats = stats
        self._log = logger
        self._interval_ms = log_interval_ms
        self._logs: dict[int, LogThrottle] = {}  # by id() of socket or ping session

    def notify(self, sock: Any, events: SocketEvent) -> None:
        """Tell a socket's ``on_event`` (if it has one) of ``events``."""
        cb = sock.on_event
        if cb is None:
            return
        try:
            cb(sock, events)
        except Exception:
            self.failed(sock, f"event callback of {_sock_name(sock)} raised")

    def failed(self, owner: object, what: str) -> None:
        """An application callback raised: call it inside the ``except``."""
        self._stats["callback_error"] += 1
        throttle = self._logs.get(id(owner))
        if throttle is None:
            throttle = LogThrottle(self._interval_ms)
            self._logs[id(owner)] = throttle
            weakref.finalize(owner, self._logs.pop, id(owner), None)  # goes with it
        throttle.report(self._log, self._clock.now_ms(), what)

"""What every SPI NIC driver shares, written once (docs/porting.md).

``SpiNic`` is the ``hilkit.port.Device`` contract around a driver's own state
machine: argument checks, ``counters``, ``send``/``poll`` that never raise
(a bus error is counted, the driver's cached state dropped), ``fileno`` from
the interrupt pin, ``close``. And the bring-up and recovery every chip needs:
a /RESET pulse followed by a bounded wait for a reset supervisor that holds
the line longer, periodic health checks, and a chip that stopped answering
taken for dead and probed again every ``REPROBE_MS`` until it answers.

A driver derives from it once and supplies the chip: ``_send``, ``_poll``,
``_bus_failed``, ``_close_frames``, ``_answers``, ``_reinit``, ``_forget_chip``.
Everything else it reads top to bottom in its own module. Drivers never
import ``hilkit.sim``.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import inspect
import logging
import time
from collections.abc import Callable
from typing import ClassVar, Self

from hilkit.port.clock import Clock, MonotonicClock
from hilkit.port.device import (
    ETH_HEADER_LEN,
    DeviceClosed,
    DeviceCounters,
    LinkType,
    random_mac,
)
from hilkit.port.pin import Edge, Pin
from hilkit.port.spi import SpiBus, reply_tails

__all__ = ["SpiNic", "Tx", "bus_label", "random_mac"]


def bus_label(bus: SpiBus) -> str:
    """How messages name the bus: its device path or URL where it has one."""
    for attr in ("name", "path", "url", "device"):
        v = getattr(bus, attr, None)
        if isinstance(v, str) and v:
            return v
    return type(bus).__name__


class Tx(enum.Enum):
    """How a driver's ``_send`` ended; ``send`` counts it."""

    SENT = "sent"
    DROPPED = "dropped"  # busy, link down or chip gone: tx_dropped
    ERROR = "error"  # the write failed: tx_errors


class SpiNic:
    """An Ethernet NIC on an SPI bus, as the stack sees it (``hilkit.port.Device``).

    ``bus`` and the pins belong to the caller: ``close()`` leaves them open.
    ``reset`` (/RESET, logical: True holds the chip in reset) gives a hard reset
    at bring-up; ``irq`` (/INT, logical: True = asserted) lends its descriptor
    to ``fileno()``. ``clock`` times transmit watchdogs and re-probes.
    """

    link_type = LinkType.ETHERNET

    # Tunables (class attributes: a subclass or a test may change them).
    HARD_RESET_LOW_S = 0.001  # /RESET held low far past any chip's minimum pulse
    RESET_SUPERVISOR_S = 0.600  # a supervisor (CAT811/MAX811) may hold /RESET 560 ms longer
    HEALTH_EVERY = 64  # polls between read-backs of the configuration
    REPROBE_MS = 200.0  # how often a chip that stopped answering is probed again
    REPROBE_FIRST_MS: ClassVar[float] = 0.0  # ... the first time, after it stopped

    def __init__(
        self,
        bus: SpiBus,
        *,
        mac: bytes | None,
        reset: Pin | None,
        irq: Pin | None,
        name: str,
        mtu: int,
        max_mtu: int,
        mtu_why: str,
        clock: Clock | None,
        send_timeout_ms: float,
    ) -> None:
        mac = bytes(mac) if mac is not None else random_mac()
        if len(mac) != 6 or mac[0] & 0x01 or mac == bytes(6):
            raise ValueError(f"mac must be 6 bytes, unicast, not zero; got {mac.hex(':')}")
        if not 68 <= mtu <= max_mtu:
            raise ValueError(f"mtu {mtu} outside 68..{max_mtu} ({mtu_why})")
        if not name:
            raise ValueError("name must not be empty")
        self.name = name
        self.mac: bytes | None = mac
        self.mtu = mtu
        self.counters = DeviceCounters()
        self._mac = mac
        self._bus = bus
        self._bus_label = bus_label(bus)
        self._bus_takes_tails = _takes_tails(bus)
        self._reset_pin = reset
        self._irq = irq
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._send_timeout_ms = send_timeout_ms
        self._log = logging.getLogger(type(self).__module__)
        self._closed = False
        self._dead = False  # the chip stopped answering: link down until a re-probe succeeds
        self._next_probe_ms = 0.0
        self._polls = 0

    # -- what the chip's driver says ------------------------------------------------------

    def _send(self, frame: bytes, *, retry: bool) -> Tx:
        """Put one frame (length already checked) out; ``retry``: once more after a reset."""
        raise NotImplementedError

    def _poll(self, budget: int, out: list[bytes]) -> None:
        """Append up to ``budget`` received frames to ``out``."""
        raise NotImplementedError

    def _bus_failed(self) -> None:
        """A transfer raised: trust nothing cached about the chip."""
        raise NotImplementedError

    def _close_frames(self) -> list[bytes]:
        """The transfers that stop reception and interrupts at ``close``."""
        raise NotImplementedError

    def _answers(self) -> bool:
        """A read-only look: does the chip answer as itself again?"""
        raise NotImplementedError

    def _reinit(self, why: str) -> None:
        """Reset and configure the chip again; ``_go_dead`` if it does not answer."""
        raise NotImplementedError

    def _forget_chip(self) -> None:
        """The chip is gone: drop every pointer and flag cached about it."""
        raise NotImplementedError

    # -- the Device contract --------------------------------------------------------------

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        self._check_open()
        c = self.counters
        data = _as_bytes(frame)
        n = len(data)
        if n < ETH_HEADER_LEN or n > self.mtu + ETH_HEADER_LEN:
            c.tx_errors += 1
            return False
        try:
            outcome = self._send(data, retry=True)
        except OSError as e:
            self._log.warning("%s: bus error during send: %s", self.name, e)
            self._bus_error(e)
            outcome = Tx.ERROR
        if outcome is Tx.SENT:
            c.tx_frames += 1
            c.tx_bytes += n
            return True
        if outcome is Tx.DROPPED:
            c.tx_dropped += 1
        else:
            c.tx_errors += 1
        return False

    def poll(self, budget: int) -> list[bytes]:
        self._check_open()
        out: list[bytes] = []
        if budget <= 0:
            return out
        try:
            self._poll(budget, out)
        except OSError as e:
            self._log.warning("%s: bus error during poll: %s", self.name, e)
            self.counters.rx_errors += 1
            self._bus_error(e)
        return out

    def fileno(self) -> int | None:
        """The interrupt pin's descriptor, if it has one; None once closed."""
        if self._closed or self._irq is None:
            return None
        fn = getattr(self._irq, "fileno", None)
        if fn is None:
            return None
        fd = fn()
        return fd if isinstance(fd, int) and fd >= 0 else None

    def close(self) -> None:
        """Stop reception and interrupts. The bus and the pins stay the caller's."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):  # a bus that is gone has nothing left to close
            frames = self._close_frames()
            self._transfer(frames, [0] * len(frames))  # no reply is read

    # -- conveniences ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("not answering" if self._dead else "open")
        return f"{type(self).__name__}({self.name!r} on {self._bus_label}, {state})"

    # -- bring-up and recovery ------------------------------------------------------------

    def _pulse_reset(self, settle_s: float, ready: Callable[[], bool]) -> None:
        """With a reset pin: /RESET low, high, ``settle_s``, then until ``ready()`` (a
        supervisor on the board may hold the line after we release it), bounded."""
        if self._reset_pin is None:
            return
        self._reset_pin.set(True)  # logical values: True holds the chip in reset
        time.sleep(self.HARD_RESET_LOW_S)
        self._reset_pin.set(False)
        time.sleep(settle_s)
        deadline = time.monotonic() + self.RESET_SUPERVISOR_S
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.005)

    def _health_due(self) -> bool:
        """Count a poll; True every HEALTH_EVERY polls (time to read back the configuration)."""
        self._polls += 1
        return self._polls % self.HEALTH_EVERY == 0

    def _bus_error(self, e: OSError) -> None:
        """A transfer raised. A bus whose bridge is gone (ENODEV) or stopped answering
        (ETIMEDOUT, after its own timeout) will fail the next call the same way: the chip
        is taken for dead now, so polls probe it every REPROBE_MS instead of each waiting
        out that timeout again."""
        self._bus_failed()
        if e.errno in (errno.ENODEV, errno.ETIMEDOUT):
            self._go_dead(str(e))

    def _go_dead(self, why: str) -> None:
        if not self._dead:
            self._log.warning("%s: the chip stopped answering: %s", self.name, why)
        self._dead = True
        self._forget_chip()
        self._next_probe_ms = self._clock.now_ms() + self.REPROBE_FIRST_MS

    def _try_revive(self) -> bool:
        """Probe a dead chip, at most every REPROBE_MS; True once it is back and set up."""
        now = self._clock.now_ms()
        if now < self._next_probe_ms:
            return False
        self._next_probe_ms = now + self.REPROBE_MS
        if not self._answers():
            return False
        self._reinit("the chip answers again")
        return not self._dead

    # -- plumbing -------------------------------------------------------------------------

    def _transfer(self, frames: list[bytes], tails: list[int] | None = None) -> list[bytes]:
        """One ``transfer_batch``; replies missing are a bus error, as if it had raised.

        ``tails``: what is read of each reply (``SpiBus``); a bridge carries back no more.
        """
        if tails is None or self._bus_takes_tails:
            raw = self._bus.transfer_batch(frames, tails)
        else:
            raw = reply_tails(self._bus.transfer_batch(frames), tails)
        if len(raw) != len(frames):
            raise OSError(
                errno.EIO, f"{self._bus_label}: {len(raw)} replies to {len(frames)} transfers"
            )
        return raw

    def _drain_irq(self) -> None:
        """Consume the edges the interrupt line queued, so its descriptor goes quiet."""
        if self._irq is None or getattr(self._irq, "fileno", None) is None:
            return
        for _ in range(8):
            if not self._irq.wait_edge(Edge.RISING, 0):  # logical: the line was asserted
                break

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceClosed(errno.EBADF, f"{self.name} is closed")


def _takes_tails(bus: SpiBus) -> bool:
    """Whether ``bus.transfer_batch`` has the ``tails`` parameter; a bus written before the
    contract had it gets whole replies asked for, and cut here."""
    try:
        params = inspect.signature(bus.transfer_batch).parameters
    except (TypeError, ValueError):  # a builtin or C callable: assume the current contract
        return True
    return "tails" in params or any(
        p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values())


def _as_bytes(frame: bytes | bytearray | memoryview) -> bytes:
    if isinstance(frame, bytes):
        return frame
    if isinstance(frame, memoryview) and frame.format != "B":
        return frame.tobytes()
    return bytes(frame)

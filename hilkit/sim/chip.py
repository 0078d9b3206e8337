"""What every SPI chip model shares, written once (docs/porting.md, "Chip models").

A chip model is an SPI *slave* (``hilkit.port.SpiBus``) with a /RESET and an
/INT pin, sitting on a wire (a ``Device``, e.g. a TAP). ``ChipModel`` holds
what does not depend on the chip:

* the bus side: ``transfer`` / ``transfer_batch`` under one lock, ``counters``,
  the model catching up (its timers, the wire) once per call;
* an optional streaming form of one transaction (``stream_begin`` / ``stream`` /
  ``stream_end``) for a bridge that must hand MISO back while CS is still low
  (docs/hardware/ft232h.md, "The FT232H model"); a subclass opts in;
* the wire pump: frames pulled with ``wire.poll`` (at most ``wire_budget`` per
  touch), frames sent with ``wire.send``, a closed wire left alone for good;
* the pins, and the /INT descriptor (``IntDescriptor``): like a GPIO line's
  edge events, readable while a falling edge waits, while frames wait on the
  wire, or while something is due on the model's own time;
* faults: MISO bit errors at a rate per bit (a geometric gap between flips, so
  the cost does not grow with the bytes that pass unharmed), and resets
  scheduled a number of SPI transactions ahead, so they land mid-batch;
* ``stats`` (the model's own keys) and the reset counters every chip has.

A subclass says what a transaction does (``_exchange``), what a frame from the
wire does (``_receive``), what is due (``_dues``), when /INT is asserted, and
what its resets do. A model never imports a driver.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import random
import select
import threading
import weakref
from collections.abc import Sequence
from typing import ClassVar, Protocol

from hilkit.port.clock import Clock, MonotonicClock
from hilkit.port.device import Device, DeviceClosed
from hilkit.port.pin import Edge
from hilkit.port.spi import BusCounters, check_tails
from hilkit.sim.pins import SimPin

DEFAULT_WIRE_BUDGET = 64  # frames pulled from the wire per touch


class ChipFaults(Protocol):
    """The fault every model takes: a probability per MISO bit of being flipped."""

    bit_error_rate: float


class IntPin(SimPin):
    """/INT: a SimPin whose eventfd signals queued falling edges, plus a look at it."""

    def falling_queued(self) -> bool:
        """True while a falling edge waits to be taken by ``wait_edge``."""
        fd = self.event_fd()
        return fd is not None and bool(select.select([fd], [], [], 0)[0])


class IntDescriptor:
    """An epoll descriptor (itself pollable) over the /INT pin's edge eventfd, the
    wire's descriptor and an eventfd of the model's own that is readable while
    anything is due on the model's time. Opened on the first ``fileno``; closed
    by ``close`` or when its model is collected."""

    def __init__(self, pin: SimPin) -> None:
        self._pin = pin
        self._epoll: select.epoll | None = None
        self._due_fd: int | None = None
        self._due_set = False
        self._wire_fd: int | None = None
        self._finalizer: weakref.finalize[[select.epoll, int], IntDescriptor] | None = None

    def fileno(self, wire_fd: int | None, due: bool) -> int:
        if self._epoll is None:
            self._epoll = select.epoll()
            self._due_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._epoll.register(self._due_fd, select.EPOLLIN)
            edges = self._pin.event_fd()
            if edges is not None:
                self._epoll.register(edges, select.EPOLLIN)
            self._finalizer = weakref.finalize(self, _close, self._epoll, self._due_fd)
        self.watch_wire(wire_fd)
        self.set_due(due)
        return self._epoll.fileno()

    def watch_wire(self, fd: int | None) -> None:
        """Wait on the wire's descriptor ``fd`` from now on (None: on no wire)."""
        if self._epoll is None or fd == self._wire_fd:
            return
        if self._wire_fd is not None:
            with contextlib.suppress(OSError):  # closed already: epoll forgot it
                self._epoll.unregister(self._wire_fd)
        self._wire_fd = None
        if fd is not None:
            with contextlib.suppress(OSError):  # a wire closing under us: edges only
                self._epoll.register(fd, select.EPOLLIN)
                self._wire_fd = fd

    def set_due(self, due: bool) -> None:
        """Readable exactly while something is due: the model acts on it only when
        next touched after its time, so a waiter must come back and touch it."""
        if self._due_fd is None or due == self._due_set:
            return
        if due:
            os.eventfd_write(self._due_fd, 1)
        else:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._due_fd)
        self._due_set = due

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._epoll = self._due_fd = self._wire_fd = None


def _close(epoll: select.epoll, due_fd: int) -> None:
    epoll.close()
    with contextlib.suppress(OSError):
        os.close(due_fd)


class ChipModel:
    """The shared half of a chip model: bus, wire pump, pins, /INT descriptor, faults.

    ``wire`` is the Ethernet the chip's PHY sits on; without one, frames sent are
    collected in ``sent`` and frames arrive through ``inject``. ``seed`` seeds
    every random draw of the model (bit errors and the chip's own faults).
    """

    CHIP: ClassVar[str]  # the pins' names ("chip./INT") and the bus's error messages
    faults: ChipFaults

    def __init__(
        self,
        wire: Device | None,
        clock: Clock | None,
        *,
        seed: int,
        stat_keys: Sequence[str],
        wire_budget: int,
    ) -> None:
        self.wire = wire
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.wire_budget = wire_budget
        self.counters = BusCounters()
        self.stats: dict[str, int] = dict.fromkeys(stat_keys, 0)
        self.sent: list[bytes] = []  # frames sent while there is no wire
        self._lock = threading.RLock()
        self._rng = random.Random(seed)
        self._ber_rate = 0.0
        self._ber_gap = 0  # MISO bits to let through before the next flip
        self._closed = False
        self._wire_dead = False
        self._reset_in: int | None = None  # transactions until a scheduled reset
        self._reset_hard = False
        self._in_reset = False  # /RESET held low, or no power
        self.powered = True  # the board's supply (``set_power``)
        self.power_offs = 0  # kept apart from ``stats``: those are the chip's own keys
        self.power_ons = 0
        self._int_level = True
        self._stream_open = False  # between stream_begin and stream_end
        self._stream_started = False  # ... and the transaction's first byte has passed
        name = self.CHIP.lower()
        self.int_pin = IntPin(
            f"{name}./INT",
            level=True,
            refresh=self._touch,
            fileno=self.fileno,
            wake_ms=self._wake_ms,
            signal_edge=Edge.FALLING,  # /INT is active low: a falling edge is an interrupt
        )
        self.reset_pin = SimPin(f"{name}./RESET", level=True, output=True, on_set=self._reset_line)
        self._int_fd = IntDescriptor(self.int_pin)

    # -- what a chip says -----------------------------------------------------------------

    def _exchange(self, f: bytes) -> bytes:
        """One CS transaction: the chip's reply to ``f``."""
        raise NotImplementedError

    def _receive(self, frame: bytes) -> bool:
        """A frame arrives from the wire now; True if the chip stored it."""
        raise NotImplementedError

    def _advance(self, now: float) -> None:
        """Catch up with the clock (timers) before a bus call or a look at a pin."""

    def _from_wire(self, frames: list[bytes]) -> None:
        """Frames just pulled off the wire (default: they arrive at once)."""
        for frame in frames:
            self._receive(frame)

    def _wire_room(self) -> int:
        """How many frames to pull off the wire now."""
        return self.wire_budget

    def _dues(self) -> list[float]:
        """When, in ``clock`` ms, anything pending on the model's own time falls due."""
        return []

    def _int_asserted(self) -> bool:
        """/INT is asserted (the line low)."""
        raise NotImplementedError

    def _soft_reset(self) -> None:
        raise NotImplementedError

    def _hold_reset(self) -> None:
        """/RESET went low: the chip forgets everything and stops answering."""
        raise NotImplementedError

    def _release_reset(self, now: float) -> None:
        """/RESET went high after a hold."""

    def _stream_accepts(self, first: int) -> bool:
        """Whether a transaction starting with byte ``first`` can stream (default: none
        can, and the caller falls back to whole transactions). No side effects."""
        return False

    def _stream_start(self) -> None:
        """A streamed transaction's first byte is about to pass (after a scheduled reset)."""
        raise NotImplementedError

    def _stream_chunk(self, chunk: bytes) -> bytes:
        """The MISO bytes for the next ``chunk`` of MOSI bytes, as ``_exchange`` gives them."""
        raise NotImplementedError

    def _stream_finish(self) -> None:
        """CS rose on a streamed transaction: what ``_exchange`` does after its last byte."""

    # -- hilkit.port.SpiBus ---------------------------------------------------------------

    def transfer(self, data: bytes | bytearray | memoryview) -> bytes:
        with self._lock:
            self._check_open()
            self.counters.calls += 1
            self._touch_locked()
            out = self._transaction(bytes(data))
            self._after_call()
            return out

    def transfer_batch(
        self,
        frames: Sequence[bytes | bytearray | memoryview],
        tails: Sequence[int] | None = None,
    ) -> list[bytes]:
        if tails is not None:
            check_tails(frames, tails)  # before anything reaches the chip, as a bridge would
        with self._lock:
            self._check_open()
            self.counters.calls += 1
            self._touch_locked()
            if tails is None:
                out = [self._transaction(bytes(f)) for f in frames]
            else:
                # The chip clocks every byte either way; only the caller's view is cut,
                # in the same pass (a hot path: tails were checked above).
                out = [(x := self._transaction(bytes(f)))[len(x) - t :]
                       for f, t in zip(frames, tails, strict=True)]
            self._after_call()
        return out

    # -- one transaction as a stream (optional; docs/porting.md, "Chip models") ---------------

    def stream_begin(self) -> None:
        """CS fell: a transaction starts, fed by ``stream``. The model catches up with
        its clock and wire at the first byte it accepts, once, as ``transfer`` does per
        call. A stream still open is ended first (CS must have risen in between)."""
        with self._lock:
            self._check_open()
            if self._stream_open:
                self._stream_close()
            self._stream_open = True
            self._stream_started = False

    def stream(self, data: bytes | bytearray | memoryview) -> bytes | None:
        """The MISO bytes for exactly these MOSI bytes, in order; None if this
        transaction cannot stream (decided at its first byte, with no side effect:
        the stream is dropped and the caller hands the whole transaction to
        ``transfer``). Any split gives what ``transfer`` of the whole gives: the same
        replies, side effects, bit errors and scheduled resets (bit errors land on the
        same bits unless a chip's own seeded fault also draws inside the transaction,
        e.g. when a short instruction completes: the draws then interleave
        differently). Bytes count in ``counters.bytes`` as they pass; the transaction
        and its call count once, at ``stream_end``. The lock is held for this call
        only, so no ``transfer`` may run between ``stream_begin`` and ``stream_end``
        (one CS line: the bridge does not do that)."""
        with self._lock:
            self._check_open()
            if not self._stream_open:
                raise RuntimeError(f"{self.CHIP} model: stream() without stream_begin()")
            chunk = bytes(data)
            if not self._stream_started:
                if not chunk:
                    return b""
                if not self._stream_accepts(chunk[0]):
                    self._stream_open = False
                    return None
                self._stream_started = True
                self._touch_locked()  # only now: a refused stream's transfer() catches up
                self._scheduled_reset()
                self._stream_start()
            self.counters.bytes += len(chunk)
            out = self._stream_chunk(chunk)
            if self.faults.bit_error_rate > 0.0 and out:
                out = self._corrupt(out)  # the gap between flips carries over: split-proof
            return out

    def stream_end(self) -> None:
        """CS rose. A stream through which no byte passed is no transaction (nothing
        was clocked); one that was refused (``stream`` gave None) is already gone."""
        with self._lock:
            if self._stream_open:
                self._stream_close()

    def _stream_close(self) -> None:
        self._stream_open = False
        if not self._stream_started:
            return
        self._stream_started = False
        self.counters.transactions += 1
        self.counters.calls += 1
        self._stream_finish()
        self._after_call()

    def close(self) -> None:
        """Close the bus side and the /INT descriptor; the wire stays open (it is not ours)."""
        with self._lock:
            self._closed = True
            self._int_fd.close()
            self.int_pin.release_event_fd()

    def fileno(self) -> int | None:
        """/INT's descriptor, like a GPIO line's edge events; None once closed.

        Readable while a falling edge waits in ``int_pin`` to be taken by
        ``wait_edge`` (whatever raised it, bus calls included), while frames wait
        on the wire for the chip, and while something is due on the model's time.
        """
        with self._lock:
            if self._closed:
                return None
            return self._int_fd.fileno(self._wire_fileno(), bool(self._dues()))

    def next_deadline(self) -> float | None:
        """When, in ``clock`` ms, the model next changes by itself (a timer), or None."""
        with self._lock:
            dues = self._dues()
            return min(dues) if dues else None

    # -- test and fault hooks -------------------------------------------------------------

    def inject(self, frame: bytes | bytearray | memoryview) -> bool:
        """A frame has just arrived from the wire (no wire time); True if it was stored."""
        with self._lock:
            stored = self._receive(bytes(frame))
            self._after_call()
            return stored

    def soft_reset(self) -> None:
        """The chip's own reset command, from outside, at any moment."""
        with self._lock:
            self._soft_reset()
            self._after_call()

    def hard_reset(self) -> None:
        """A full pulse on /RESET (low, then high)."""
        with self._lock:
            self._reset_line(False)
            if self.reset_pin.level:  # not while the host itself holds /RESET low
                self._reset_line(True)

    def set_power(self, on: bool) -> None:
        """The board's supply goes off or on (a power switch). Off: the chip is held
        as in reset -- it stops answering and forgets its registers -- and /RESET from
        the host cannot wake it. On: a power-on reset; the chip comes up at its reset
        values (counted in ``stats["resets"]``) once /RESET is released."""
        with self._lock:
            if on == self.powered:
                return
            self.powered = on
            if not on:
                self.power_offs += 1
                self._in_reset = True
                self._hold_reset()
            else:
                self.power_ons += 1
                if self.reset_pin.level:  # the host does not hold /RESET low
                    self._in_reset = False
                    self.stats["resets"] += 1
                    self._release_reset(self.clock.now_ms())
            self._after_call()

    def schedule_reset(self, after_frames: int, hard: bool = False) -> None:
        """Reset the chip before the transaction ``after_frames`` from now, even in a batch."""
        with self._lock:
            self._reset_in = max(0, after_frames)
            self._reset_hard = hard

    # -- the bus side ---------------------------------------------------------------------

    def _transaction(self, f: bytes) -> bytes:
        self.counters.transactions += 1
        self.counters.bytes += len(f)
        if self._reset_in is not None:
            self._scheduled_reset()
        out = self._exchange(f)
        if self.faults.bit_error_rate > 0.0 and out:
            out = self._corrupt(out)
        return out

    def _scheduled_reset(self) -> None:
        """A transaction starts: a reset ``schedule_reset`` put here happens now."""
        if self._reset_in is not None:
            if self._reset_in == 0:
                self._reset_in = None
                if self._reset_hard:
                    self._reset_line(False)
                    self._reset_line(True)
                else:
                    self._soft_reset()
            else:
                self._reset_in -= 1

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, f"{self.CHIP} model: SPI bus closed")

    # -- time, wire and interrupt ---------------------------------------------------------

    def _touch(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._touch_locked()
            self._after_call()

    def _touch_locked(self) -> None:
        self._advance(self.clock.now_ms())
        if self.wire is None or self._wire_dead:
            return
        room = self._wire_room()
        if room <= 0:
            return
        try:
            frames = self.wire.poll(room)
        except DeviceClosed:
            self.stats["wire_errors"] += 1
            self._wire_dead = True  # stop asking a closed wire
            self._int_fd.watch_wire(None)
            return
        except OSError:
            self.stats["wire_errors"] += 1
            return
        if frames:
            self._from_wire(frames)

    def _to_wire(self, frame: bytes) -> None:
        """The frame leaves the chip's PHY: onto the wire, or into ``sent``."""
        if self.wire is None:
            self.sent.append(frame)
        else:
            try:
                if not self.wire.send(frame):
                    self.stats["wire_tx_refused"] += 1
                    return
            except OSError:
                self.stats["wire_errors"] += 1
                return
        self.stats["frames_out"] += 1
        self.stats["bytes_out"] += len(frame)

    def _wire_fileno(self) -> int | None:
        """The wire's descriptor (readable when frames wait for the chip), or None."""
        if self.wire is None or self._wire_dead:
            return None
        try:
            return self.wire.fileno()
        except OSError:
            return None

    def _wake_ms(self) -> float | None:
        """How long a waiter on /INT may sleep before the next timer falls due."""
        with self._lock:
            now = self.clock.now_ms()
            future = [d - now for d in self._dues() if d > now]
            return min(future) if future else None

    def _after_call(self) -> None:
        self._update_int()
        self._int_fd.set_due(bool(self._dues()))

    def _update_int(self) -> None:
        level = not self._int_asserted()
        if level != self._int_level:
            self._int_level = level
            if not level:
                self.stats["int_asserts"] += 1
            self.int_pin.drive(level)

    # -- resets ---------------------------------------------------------------------------

    def _reset_line(self, high: bool) -> None:
        """/RESET moved (logical level: high is released)."""
        with self._lock:
            if not high:
                self._in_reset = True
                self._hold_reset()
            elif self._in_reset and self.powered:  # no supply: nothing to release
                self._in_reset = False
                self.stats["resets"] += 1
                self.stats["hard_resets"] += 1
                self._release_reset(self.clock.now_ms())
            self._after_call()

    # -- faults ---------------------------------------------------------------------------

    def _corrupt(self, out: bytes) -> bytes:
        rate = self.faults.bit_error_rate
        if rate != self._ber_rate:
            self._ber_rate = rate
            self._ber_gap = self._draw_gap(rate)
        bits = 8 * len(out)
        if self._ber_gap >= bits:
            self._ber_gap -= bits
            return out
        buf = bytearray(out)
        pos = self._ber_gap
        while pos < bits:
            buf[pos // 8] ^= 0x80 >> (pos % 8)
            self.stats["bit_errors"] += 1
            pos += 1 + self._draw_gap(rate)
        self._ber_gap = pos - bits
        return bytes(buf)

    def _draw_gap(self, rate: float) -> int:
        """Bits that pass before the next flipped one (geometric: each bit flips at ``rate``)."""
        if rate >= 1.0:
            return 0
        return int(math.log1p(-self._rng.random()) / math.log1p(-rate))

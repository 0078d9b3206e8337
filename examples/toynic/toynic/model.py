"""A register-level model of the TN4 (``toynic.regs``), as a ``kind = "python"`` bus factory.

``open_model(wire=, clock=, rx_slots=4)`` returns the chip: an ``SpiBus`` that speaks the
TN4's bus protocol and puts its frames on ``wire`` (the rig's TAP). It follows hilkit's
chip-model contract (``hilkit.port.model.ChipModel``, docs/porting.md "Chip models"):
``reset_pin`` and ``int_pin`` (raw, active-low lines), ``soft_reset()`` / ``hard_reset()``
for the recovery suite, ``stats`` and ``call_overhead_us`` (0: no bridge in between).

The model takes frames off the wire whenever the bus is used, or its /INT line is looked
at; a frame that finds every slot full is dropped, as on silicon. It imports no driver.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from hilkit.port import (
    BusCounters,
    ChipModel,
    Clock,
    Device,
    Edge,
    MonotonicClock,
    Pin,
    SpiBus,
    check_tails,
    reply_tails,
)

from toynic import regs as r

__all__ = ["ModelPin", "ToyNicModel", "open_model"]

_BROADCAST = b"\xff" * 6
_NAP_S = 0.002


class ModelPin:
    """One raw line of the chip (``hilkit.port.Pin``): /RESET driven by the host, or /INT
    driven by the chip. Both idle high (they are active low)."""

    def __init__(self, name: str, *, on_set: Callable[[bool], None] | None = None,
                 level: Callable[[], bool] | None = None,
                 fileno: Callable[[], int | None] | None = None) -> None:
        self.name = name
        self._on_set = on_set
        self._level_fn = level
        self._fileno = fileno
        self._level = True

    def set(self, value: bool) -> None:
        if self._on_set is None:
            raise OSError(f"{self.name} is an input: the chip drives it")
        self._level = bool(value)
        self._on_set(self._level)

    def get(self) -> bool:
        return self._level_fn() if self._level_fn is not None else self._level

    def wait_edge(self, edge: Edge, timeout_ms: float) -> bool:
        """Look at the line every couple of milliseconds; never past ``timeout_ms``."""
        deadline = time.monotonic() + max(0.0, timeout_ms) / 1000
        last = self.get()
        while True:
            now = self.get()
            if now != last and (edge is Edge.BOTH or now is (edge is Edge.RISING)):
                return True
            last = now
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, _NAP_S))

    def fileno(self) -> int | None:
        return self._fileno() if self._fileno is not None else None

    def close(self) -> None:
        """The model owns its lines; nothing to release."""


class ToyNicModel:
    """The TN4 on its bus: registers, ``rx_slots`` one-frame receive slots, a transmit
    buffer, a PHY on ``wire``."""

    call_overhead_us = 0.0  # a model stands for no bridge: no per-call host cost

    def __init__(self, wire: Device | None, clock: Clock, rx_slots: int = r.SLOTS) -> None:
        if not 1 <= rx_slots <= 255:
            raise ValueError(f"rx_slots must be 1..255, not {rx_slots}")
        self.wire = wire
        self.clock = clock
        self.slots = rx_slots
        self.speed_hz = r.SPI_MAX_HZ
        self.counters = BusCounters()
        self.stats: dict[str, int] = dict.fromkeys(
            ("soft_resets", "hard_resets", "frames_in", "frames_out", "rx_overflows",
             "rx_filtered", "access_in_reset"), 0)
        self._lock = threading.RLock()
        self._regs = bytearray(r.NREGS)
        self._rx: deque[bytes] = deque()
        self._tx = b""
        self._drops = 0
        self._in_reset = False
        self._closed = False
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # readable while /INT low
        self._efd_set = False
        self._epoll = select.epoll()
        self._epoll.register(self._efd, select.EPOLLIN)
        self._wire_fd: int | None = None
        if wire is not None:
            with contextlib.suppress(OSError, ValueError):
                fd = wire.fileno()
                if fd is not None:
                    self._epoll.register(fd, select.EPOLLIN)
                    self._wire_fd = fd
        self.reset_pin = ModelPin("tn4./RESET", on_set=self._reset_line)
        self.int_pin = ModelPin("tn4./INT", level=self._int_level, fileno=self._int_fileno)
        self._power_on()

    # -- hilkit.port.SpiBus ----------------------------------------------------------------

    def transfer(self, data: bytes) -> bytes:
        with self._lock:
            self._check_open()
            self.counters.calls += 1
            self._pump()
            out = self._transaction(bytes(data))
            self._update_int()
            return out

    def transfer_batch(
        self, frames: Sequence[bytes], tails: Sequence[int] | None = None
    ) -> list[bytes]:
        if tails is not None:
            check_tails(frames, tails)  # before the chip sees a byte
        with self._lock:
            self._check_open()
            self.counters.calls += 1
            self._pump()
            out = [self._transaction(bytes(f)) for f in frames]
            self._update_int()
            return reply_tails(out, tails)

    def close(self) -> None:
        """Close the bus side; the wire belongs to whoever made it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._epoll.close()
            os.close(self._efd)

    # -- the chip-model contract (hilkit.port.model.ChipModel) ---------------------------

    def soft_reset(self) -> None:
        """What writing CTRL.RST does, from outside, now."""
        with self._lock:
            self.stats["soft_resets"] += 1
            self._power_on()
            self._update_int()

    def hard_reset(self) -> None:
        """A pulse on /RESET: everything back to its power-on state."""
        with self._lock:
            self.stats["hard_resets"] += 1
            self._power_on()
            self._update_int()

    # -- inside the chip ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise OSError("the TN4 model's bus is closed")

    def _power_on(self) -> None:
        self._regs[:] = bytes(r.NREGS)
        self._regs[r.ID] = r.CHIP_ID
        self._regs[r.REV] = r.CHIP_REV
        self._regs[r.RXSLOTS] = self.slots
        self._rx.clear()
        self._tx = b""
        self._drops = 0

    def _reset_line(self, level: bool) -> None:
        with self._lock:
            if not level:  # /RESET low: held in reset, deaf and mute
                self._in_reset = True
                self._power_on()
            elif self._in_reset:
                self._in_reset = False
                self.stats["hard_resets"] += 1
                self._power_on()
            self._update_int()

    def _transaction(self, data: bytes) -> bytes:
        if self._in_reset:
            self.stats["access_in_reset"] += 1
            return bytes(len(data))  # MISO floats low while the chip is held in reset
        if len(data) < 2:
            return bytes(len(data))
        op, addr, body = data[0], data[1], data[2:]
        out = bytearray(2)
        if op == r.OP_READ:
            out += bytes(self._read(addr + i) for i in range(len(body)))
        elif op == r.OP_WRITE:
            for i, b in enumerate(body):
                self._write(addr + i, b)
            out += bytes(len(body))
        elif op == r.OP_RXREAD:
            head = self._rx[0] if self._rx else b""
            out += head[:len(body)].ljust(len(body), b"\0")
        elif op == r.OP_TXWRITE:
            self._tx = bytes(body[:r.MAX_FRAME])
            out += bytes(len(body))
        else:
            out += bytes(len(body))
        self.counters.transactions += 1
        self.counters.bytes += len(data)
        return bytes(out)

    def _read(self, addr: int) -> int:
        if addr == r.STATUS:
            return r.STATUS_LINK if self._link() else 0
        if addr == r.RXCNT:
            return len(self._rx)
        if addr in (r.RXLEN_H, r.RXLEN_L):
            n = len(self._rx[0]) if self._rx else 0
            return n >> 8 if addr == r.RXLEN_H else n & 0xFF
        if addr == r.DROPS:
            n, self._drops = min(self._drops, 255), 0
            return n
        return self._regs[addr] if addr < r.NREGS else 0

    def _write(self, addr: int, value: int) -> None:
        if addr == r.CTRL:
            if value & r.CTRL_RST:
                self.stats["soft_resets"] += 1
                self._power_on()
                return
            self._regs[r.CTRL] = value & r.CTRL_RXEN
        elif addr == r.CMD:
            if value & r.CMD_RX_POP and self._rx:
                self._rx.popleft()
            if value & r.CMD_TX_SEND:
                self._send()
        elif r.MAC <= addr < r.MAC + 6:
            self._regs[addr] = value
        # ID, REV, STATUS, RXCNT, RXLEN, DROPS, RXSLOTS are read-only

    def _send(self) -> None:
        frame = self._tx
        if not frame or self.wire is None or not self._link():
            return
        with contextlib.suppress(OSError):
            if self.wire.send(frame):
                self.stats["frames_out"] += 1

    def _pump(self) -> None:
        """Frames that reached the PHY since the bus was last used: kept while a slot is
        free and the chip receives, else dropped."""
        if self.wire is None or self._in_reset:
            return
        while True:
            try:
                frames = self.wire.poll(64)
            except OSError:
                return
            if not frames:
                return
            for f in frames:
                self._receive(f)

    def _receive(self, frame: bytes) -> None:
        mac = bytes(self._regs[r.MAC:r.MAC + 6])
        if not self._regs[r.CTRL] & r.CTRL_RXEN or frame[:6] not in (mac, _BROADCAST):
            self.stats["rx_filtered"] += 1
            return
        if len(self._rx) >= self.slots:
            self._drops += 1
            self.stats["rx_overflows"] += 1
            return
        self._rx.append(frame)
        self.stats["frames_in"] += 1

    def _link(self) -> bool:
        if self.wire is None:
            return False
        try:
            return bool(self.wire.link_up)
        except OSError:
            return False

    def _int_level(self) -> bool:
        """/INT: low (asserted) while a frame waits in a slot."""
        with self._lock:
            if not self._closed:
                self._pump()
                self._update_int()
            return not self._rx

    def _update_int(self) -> None:
        want = bool(self._rx) and not self._closed
        if want and not self._efd_set:
            os.eventfd_write(self._efd, 1)
            self._efd_set = True
        elif not want and self._efd_set:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._efd)
            self._efd_set = False

    def _int_fileno(self) -> int | None:
        """Readable while /INT is low or frames wait on the wire for the chip to take:
        an epoll descriptor (itself pollable) over both."""
        with self._lock:
            return None if self._closed else self._epoll.fileno()


def open_model(*, wire: Device | None = None, clock: Clock | None = None,
               rx_slots: int = r.SLOTS, speed_hz: int = r.SPI_MAX_HZ) -> ToyNicModel:
    """The rig's bus factory (``[bus] kind = "python"``, ``factory = "toynic.model:open_model"``):
    hilkit passes the TAP as ``wire`` and its clock; ``rx_slots`` and ``speed_hz`` (the
    SPI clock the figures assume; a model runs at Python's pace) are rig keys."""
    if not 0 < speed_hz <= r.SPI_MAX_HZ:
        raise ValueError(f"speed_hz {speed_hz}: the TN4 clocks SPI at 1..{r.SPI_MAX_HZ} Hz")
    model = ToyNicModel(wire, clock or MonotonicClock(), rx_slots)
    model.speed_hz = speed_hz
    return model


if TYPE_CHECKING:  # mypy checks the contracts: the model is an SpiBus and a ChipModel

    def _is_a_bus(model: ToyNicModel) -> tuple[SpiBus, ChipModel, Pin]:
        return model, model, model.int_pin

"""The TN4 driver: a ``hilkit.port.Device`` over any ``hilkit.port.SpiBus`` (``toynic.regs``).

What a frame costs on the bus:

- ``poll``: one call reads ID..RXSLOTS (the chip is there and set up, frames waiting,
  the oldest one's length, drops); then one call per frame reads it, frees its slot and
  reads the next length: ``2 + 2 + n`` bytes of frame transaction for ``n`` bytes.
- ``send``: one call writes the frame into the transmit buffer and starts it.

A reset of the chip (its pin, a soft reset, a brown-out) clears CTRL.RXEN and the MAC;
``poll`` sees that in its first read and sets the chip up again (``resets``). While the
chip reads nothing but zeros (held in reset), ``poll`` returns nothing and ``send``
refuses. The interrupt line, when the rig has one, is the device's ``fileno``.
"""

from __future__ import annotations

import contextlib
import secrets
from typing import TYPE_CHECKING

from hilkit.port import (
    ChipNotResponding,
    Device,
    DeviceClosed,
    DeviceCounters,
    LinkType,
    Pin,
    SpiBus,
)

from toynic import regs as r

__all__ = ["STAT_NAMES", "ToyNicDevice"]

STAT_NAMES = ("resets", "rx_overflows", "bus_errors")
_STATUS_LEN = r.RXSLOTS - r.ID + 1  # ID..RXSLOTS in one read
ETH_HEADER = 14


def _random_mac() -> bytes:
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = (raw[0] & 0xFC) | 0x02  # locally administered, unicast
    return bytes(raw)


class ToyNicDevice:
    """A TN4 on ``bus``; ``mac`` comes from the rig's ``driver.mac`` as 6 bytes."""

    link_type = LinkType.ETHERNET

    def __init__(self, bus: SpiBus, *, mac: bytes | None = None, reset: Pin | None = None,
                 irq: Pin | None = None, mtu: int = 1500) -> None:
        if mtu + ETH_HEADER > r.MAX_FRAME:
            raise ValueError(f"mtu {mtu}: the TN4 moves frames of at most {r.MAX_FRAME} bytes")
        self.bus = bus
        self.mac: bytes = mac if mac is not None else _random_mac()
        self.mtu = mtu
        self.name = f"tn4@{type(bus).__name__}"
        self.counters = DeviceCounters()
        self.resets = 0
        self.rx_overflows = 0
        self.bus_errors = 0
        self._reset = reset
        self._irq = irq
        self._closed = False
        self._slots = r.SLOTS
        if reset is not None:  # a pulse on /RESET (logical: True holds it)
            reset.set(True)
            reset.set(False)
        self.probe()
        self._setup()
        self.resets = 0  # the first set-up is no recovery

    # -- the chip ------------------------------------------------------------------------

    def probe(self) -> bool:
        """The chip answers with its ID (the contract's optional ``probe()``)."""
        ident = self._read(r.ID, 2)
        if ident != bytes((r.CHIP_ID, r.CHIP_REV)):
            raise ChipNotResponding(f"{self.name}: ID/REV read {ident.hex()}, expected "
                                    f"{r.CHIP_ID:02x}{r.CHIP_REV:02x} (check wiring, CS)")
        return True

    @property
    def rx_buffer_bytes(self) -> int:
        """The contract's optional member: the chip holds ``RXSLOTS`` frames of any size,
        so room for that many frames of the largest size."""
        return self._slots * (self.mtu + ETH_HEADER)

    def _read(self, addr: int, n: int) -> bytes:
        return bytes(self.bus.transfer(bytes((r.OP_READ, addr)) + bytes(n)))[2:]

    def _setup(self) -> None:
        self.bus.transfer_batch([
            bytes((r.OP_WRITE, r.CTRL, r.CTRL_RST)),
            bytes((r.OP_WRITE, r.MAC)) + self.mac,
            bytes((r.OP_WRITE, r.CTRL, r.CTRL_RXEN)),
        ])
        slots = self._read(r.RXSLOTS, 1)[0]
        self._slots = slots or r.SLOTS
        self.resets += 1

    def _status(self) -> bytes | None:
        """ID..RXSLOTS; None (set up again when it can be) if the chip lost its set-up."""
        st = self._read(r.ID, _STATUS_LEN)
        self.rx_overflows += st[r.DROPS]
        self.counters.rx_dropped += st[r.DROPS]
        if st[r.ID] != r.CHIP_ID:  # held in reset, or gone: nothing to do now
            self.bus_errors += 1
            return None
        if not st[r.CTRL] & r.CTRL_RXEN:  # reset behind our back: set it up again
            self._setup()
            return None
        return st

    # -- hilkit.port.Device ------------------------------------------------------------------

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        if self._closed:
            raise DeviceClosed(f"{self.name} is closed")
        n = len(frame)
        if n == 0 or n > self.mtu + ETH_HEADER:
            self.counters.tx_errors += 1
            return False
        try:
            self.bus.transfer_batch([
                bytes((r.OP_TXWRITE, 0)) + bytes(frame),
                bytes((r.OP_WRITE, r.CMD, r.CMD_TX_SEND)),
            ])
        except OSError:
            self.bus_errors += 1
            self.counters.tx_errors += 1
            return False
        self.counters.tx_frames += 1
        self.counters.tx_bytes += n
        return True

    def poll(self, budget: int) -> list[bytes]:
        if self._closed:
            raise DeviceClosed(f"{self.name} is closed")
        out: list[bytes] = []
        if budget <= 0:
            return out
        try:
            st = self._status()
            if st is None:
                return out
            count = st[r.RXCNT]
            length = (st[r.RXLEN_H] << 8) | st[r.RXLEN_L]
            while count and len(out) < budget:
                frame, nxt = self.bus.transfer_batch([
                    bytes((r.OP_RXREAD, 0)) + bytes(length),
                    bytes((r.OP_WRITE, r.CMD, r.CMD_RX_POP)),
                    bytes((r.OP_READ, r.RXCNT, 0, 0, 0)),
                ])[0::2]
                data = bytes(frame[2:])
                if ETH_HEADER <= length <= self.mtu + ETH_HEADER:
                    out.append(data)
                    self.counters.rx_frames += 1
                    self.counters.rx_bytes += length
                else:
                    self.counters.rx_errors += 1
                count, length = nxt[2], (nxt[3] << 8) | nxt[4]
        except OSError:
            self.bus_errors += 1
        return out

    @property
    def link_up(self) -> bool:
        if self._closed:
            return False
        try:
            return bool(self._read(r.STATUS, 1)[0] & r.STATUS_LINK)
        except OSError:
            return False

    def fileno(self) -> int | None:
        """The /INT line's descriptor when the rig wires one (its ``fileno()``), else None:
        the stack then polls on a short interval."""
        if self._closed or self._irq is None:
            return None
        fn = getattr(self._irq, "fileno", None)
        fd = fn() if callable(fn) else None
        return fd if isinstance(fd, int) else None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self.bus.transfer(bytes((r.OP_WRITE, r.CTRL, 0)))  # stop receiving


if TYPE_CHECKING:  # mypy checks the contract: a ToyNicDevice is a hilkit.port.Device

    def _is_a_device(bus: SpiBus) -> Device:
        return ToyNicDevice(bus)

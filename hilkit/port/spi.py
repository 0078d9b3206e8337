"""The SPI bus contract every SPI NIC driver speaks."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass
class BusCounters:
    """What a bus moved; the bus fills it, the runner's bus figures read it."""

    bytes: int = 0  # bytes clocked (each direction counts once: SPI is full duplex)
    transactions: int = 0  # chip-select assertions
    calls: int = 0  # round trips to the OS or the bridge (ioctl, USB write+read)


@runtime_checkable
class SpiBus(Protocol):
    """Full-duplex SPI with chip select.

    ``transfer_batch`` toggles chip select between its items within one call:
    a chip may need a CS frame per 4 bytes, and one call per batch is what
    makes spidev (one ioctl) or an FT232H (one USB write) fast.

    Optional member (read with ``bus_call_overhead_us``): ``call_overhead_us: float``,
    what one call (``counters.calls``) costs the host beyond clocking the bits, in
    microseconds: ~30 for a spidev ioctl, ~125 for an FT232H USB round trip, 0 for a
    chip model that stands for no bridge (or its bridge's figure). The throughput
    figures charge it per call; a bus without it gets its kind's guess.

    ``tails`` says what the caller reads of each reply: ``tails[i]`` is how many bytes at
    the end of frame ``i``'s reply it wants (0: a write, the reply is ``b""``), and the
    reply is exactly those last bytes. Most bytes clocked in are never read (a register
    read may want 1 byte of a 4-byte frame, a write none), and a USB bridge pays for every
    byte it carries back, so it need not carry them; spidev can leave ``rx_buf`` at 0. ``None``
    gives every reply whole. Bad tails raise ``ValueError`` before anything is clocked
    (``check_tails``); a bus that clocks everything in anyway slices with ``reply_tails``.
    """

    counters: BusCounters

    def transfer(self, data: bytes) -> bytes:
        """Assert CS, clock ``data`` out, return the bytes clocked in, release CS."""
        ...

    def transfer_batch(
        self, frames: Sequence[bytes], tails: Sequence[int] | None = None
    ) -> list[bytes]:
        """Each item is one CS-delimited transfer; results in the same order, each cut
        to its ``tails`` entry when ``tails`` is given."""
        ...

    def close(self) -> None: ...


def bus_call_overhead_us(bus: object) -> float | None:
    """The bus's own ``call_overhead_us`` (a finite number >= 0), or None if it states none."""
    v = getattr(bus, "call_overhead_us", None)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if 0 <= v < float("inf") else None


def check_tails(frames: Sequence[bytes | bytearray | memoryview], tails: Sequence[int]) -> None:
    """Raise ``ValueError`` unless ``tails`` has one entry per frame, each in 0..len(frame).

    A bus calls it before it clocks anything: bad tails are the caller's bug, not the bus's.
    """
    if len(tails) != len(frames):
        raise ValueError(f"tails has {len(tails)} entries for {len(frames)} frames")
    # The common case in C-level loops: batches of thousands of small frames are usual.
    if not tails or (min(tails) >= 0 and all(map(operator.le, tails, map(len, frames)))):
        return
    for i, (f, t) in enumerate(zip(frames, tails, strict=True)):
        if not 0 <= t <= len(f):
            raise ValueError(
                f"tails[{i}] = {t} is outside 0..{len(f)} (frame {i} is {len(f)} bytes)"
            )


def reply_tails(replies: list[bytes], tails: Sequence[int] | None) -> list[bytes]:
    """The last ``tails[i]`` bytes of each whole reply; ``replies`` itself for None.

    For buses that clock every byte in anyway. Replies are as long as their frames, so
    bad tails raise ``ValueError`` as ``check_tails`` would.
    """
    if tails is None:
        return replies
    check_tails(replies, tails)
    return [x[len(x) - t :] for x, t in zip(replies, tails, strict=True)]

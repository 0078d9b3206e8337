"""An SPI bus with no chip on it, for the drivers' "nothing answered" paths."""

from __future__ import annotations

from collections.abc import Sequence

from hilkit.port.spi import BusCounters, check_tails


class FillBus:
    """A bus with nothing on it: every byte clocked in is ``fill``."""

    def __init__(self, fill: int, name: str = "spidev9.9") -> None:
        self.fill = fill
        self.name = name
        self.counters = BusCounters()

    def transfer(self, data: bytes) -> bytes:
        return self.transfer_batch([data])[0]

    def transfer_batch(
        self, frames: Sequence[bytes], tails: Sequence[int] | None = None
    ) -> list[bytes]:
        if tails is not None:
            check_tails(frames, tails)
        self.counters.calls += 1
        self.counters.transactions += len(frames)
        self.counters.bytes += sum(map(len, frames))
        lengths = map(len, frames) if tails is None else tails
        return [bytes([self.fill]) * n for n in lengths]

    def close(self) -> None:
        pass

"""Errors every layer shares: what a person at the bench must be told."""

from __future__ import annotations


class HardwareNotFound(OSError):
    """A device a rig names is not there (or cannot be opened).

    ``what`` names the device looked for (``/dev/spidev0.0``, ``ftdi://ftdi:232h/1``,
    ``USB 0525:a4a2``); ``hint`` says how to check or fix it.
    """

    def __init__(self, what: str, problem: str, hint: str) -> None:
        super().__init__(f"{what}: {problem} ({hint})")
        self.what = what
        self.problem = problem
        self.hint = hint


class ChipNotResponding(OSError):
    """The bus works but the chip does not answer as its datasheet says it must."""

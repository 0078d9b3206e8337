#!/usr/bin/env python3
"""Bus figures for the simulated W5100 rig, through the HIL runner.

Runs the `throughput` suite of `sim-w5100` (the W5100 driver speaking real SPI
frames to the register-level model, the kernel on a TAP in a private namespace)
and prints what its results.json holds: SPI bytes per payload byte (floor 4.0,
goal <= 4.1), CS transactions and bus calls per frame, frames/s and goodput
through the model, and what the same traffic would take on silicon at the rig's
SPI clock as a share of the W5100's SPI ceiling. JSON: reports/bench-w5100.json.
"""

from __future__ import annotations

import sys

from throughput_figures import Row, run

ROWS: list[Row] = [  # (figure, unit, floor or goal)
    ("spi_bytes_per_payload_byte", "B/B", "floor 4.0, goal <= 4.1"),
    ("cs_transactions_per_frame", "1/frame", ""),
    ("bus_calls_per_frame", "1/frame", "goal <= 3 each way"),
    ("frames_per_s", "frames/s", ""),
    ("goodput", "MB/s", "through the model"),
    ("spi_clock_hz", "Hz", "the rig's SPI clock"),
    ("silicon_s", "s", "bytes*8/f + calls*overhead"),
    ("silicon_goodput_MBps", "MB/s", "on silicon"),
    ("silicon_pct_of_spi_ceiling", "%", "of the W5100's SPI ceiling"),
]


if __name__ == "__main__":
    sys.exit(run("sim-w5100", ROWS, "bench-w5100.json", "bench/w5100.py"))

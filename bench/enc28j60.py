#!/usr/bin/env python3
"""Bus and wire figures for the simulated ENC28J60 rig, through the HIL runner.

Runs the `throughput` suite of `sim-enc28j60` (the ENC28J60 driver speaking its SPI
instructions to the register-level model, whose wire is a TAP at the chip's 10 Mb/s, the
kernel in a private namespace) and prints what its results.json holds, per direction and
overall: SPI bytes per payload byte (floor just above 1.0; goal <= 1.05 on MTU-sized frames,
`_mtu`), bus calls per frame moving frames (goal <= 3 each way) with the idle polls apart,
bank switches per frame, frames/s and goodput through the model, the silicon time at the
rig's SPI clock, and the goodput's share of the 10 Mb/s wire ceiling (goal >= 95 %).
JSON: reports/bench-enc28j60.json.
"""

from __future__ import annotations

import sys

from throughput_figures import Row, run

ROWS: list[Row] = [
    ("spi_bytes_per_payload_byte", "B/B", "floor ~1.0"),
    ("spi_bytes_per_payload_byte_mtu", "B/B", "MTU frames: goal <= 1.05"),
    ("bus_calls_per_frame", "1/frame", "goal <= 3 each way"),
    ("bus_calls_per_frame_mtu", "1/frame", "MTU frames"),
    ("idle_polls_per_frame", "1/frame", "status calls that found nothing"),
    ("quiet_polls_per_frame", "1/frame", "polls /INT answered: no bus call"),
    ("bank_switches_per_frame", "1/frame", ""),
    ("cs_transactions_per_frame", "1/frame", ""),
    ("frames_per_s", "frames/s", "through the model"),
    ("goodput", "MB/s", "through the model"),
    ("goodput_mtu", "MB/s", "MTU-sized UDP"),
    ("silicon_s", "s", "bytes*8/f + calls*overhead"),
    ("silicon_goodput_MBps", "MB/s", "on silicon, bus time only"),
    ("pct_of_wire_ceiling", "%", "of 10 Mb/s: goal >= 95"),
    ("pct_of_wire_ceiling_mtu", "%", "MTU-sized UDP"),
    ("model_goodput", "MB/s", "both transfers"),
    ("spi_clock_hz", "Hz", "the rig's SPI clock"),
]


if __name__ == "__main__":
    sys.exit(run("sim-enc28j60", ROWS, "bench-enc28j60.json", "bench/enc28j60.py"))

#!/usr/bin/env python3
"""FT232H bridge figures for the simulated FT232H rigs, through the HIL runner.

Runs the `throughput` suite of `sim-ft232h-enc28j60` (15 MHz SCK) and of `sim-ft232h-w5100`
(6 MHz): hilkit's ftdi bus code and pyftdi, unchanged, on the virtual USB bus, where an FT232H
model (its MPSSE, 1 KiB FIFOs, status bytes, latency timer) has the chip's model on its SPI
pins and the kernel at the far end of the chip's wire. Printed per direction and overall:
USB round trips per frame (goal <= 2 each way; MTU-sized frames alone are the clean
figure), the command writes they took, USB bytes per SPI byte, and the frame-byte rate in
silicon time (the model's MPSSE clocking plus the bus's USB time, docs/hardware/ft232h.md)
as a share of the chip's SPI ceiling at the rig's clock (goal >= 90 %). Goodput through the
models is Python's, not the silicon's: every SPI transaction is a Python call.
JSON: reports/bench-ft232h-enc28j60.json and reports/bench-ft232h-w5100.json.
"""

from __future__ import annotations

import sys

from throughput_figures import Row, run

ROWS: list[Row] = [
    ("usb_round_trips_per_frame_mtu", "1/frame", "MTU-sized UDP alone: goal <= 2"),
    ("usb_round_trips_per_frame", "1/frame", "TCP both ways (ACKs in the frames)"),
    ("usb_writes_per_frame_mtu", "1/frame", "command writes (a round trip feeds chunks)"),
    ("usb_bytes_per_spi_byte", "B/B", "commands out + read-back in, per SPI byte"),
    ("usb_bytes_per_spi_byte_mtu", "B/B", "MTU-sized UDP"),
    ("spi_bytes_per_payload_byte", "B/B", ""),
    ("bridge_pct_of_spi_ceiling", "%", "silicon time, rig's clock: goal >= 90"),
    ("bridge_pct_of_spi_ceiling_mtu", "%", "MTU-sized UDP"),
    ("bridge_silicon_frame_MBps", "MB/s", "frame bytes over MPSSE + USB time"),
    ("goodput", "MB/s", "through the models (Python)"),
    ("goodput_mtu", "MB/s", "through the models (Python)"),
]

if __name__ == "__main__":
    code = run("sim-ft232h-enc28j60", ROWS, "bench-ft232h-enc28j60.json", "bench/ft232h.py")
    print()
    sys.exit(code or run("sim-ft232h-w5100", ROWS, "bench-ft232h-w5100.json",
                         "bench/ft232h.py"))

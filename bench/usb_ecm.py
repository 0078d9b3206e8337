#!/usr/bin/env python3
"""USB figures for the simulated CDC-ECM rigs, through the HIL runner.

Runs the `throughput` suite of `sim-usb-ecm` (high speed, 512-byte bulk packets) and of
`sim-usb-ecm-fs` (full speed, 64-byte packets): the CDC-ECM host driver speaking pyusb to
the virtual USB bus, whose ECM gadget model's Ethernet side is a TAP with the kernel in a
private namespace. Printed per direction and overall: bulk transfers per frame each way
(goal exactly 1; ZLPs counted apart), bus bytes per payload byte (packet overhead included),
frames/s and goodput through the model, and the share of the bus's ceiling under the
bus-time model (docs/hardware/usb.md; goal >= 90 % at full speed). At high speed the bus is
not the limit: Python is, and the share says how far from the bus it stays.
JSON: reports/bench-usb-ecm.json and reports/bench-usb-ecm-fs.json.
"""

from __future__ import annotations

import sys

from throughput_figures import Row, run

ROWS: list[Row] = [
    ("usb_transfers_per_frame_out", "1/frame", "bulk OUT transfers per frame sent: goal 1"),
    ("usb_transfers_per_frame_in", "1/frame", "bulk IN transfers per frame received: goal 1"),
    ("usb_zlps_per_frame_out", "1/frame", "ZLPs after exact multiples, apart"),
    ("usb_zlps_per_frame_in", "1/frame", ""),
    ("usb_bus_bytes_per_payload_byte", "B/B", "bulk bus bytes (with packet overhead)"),
    ("usb_bus_bytes_per_payload_byte_mtu", "B/B", "MTU-sized UDP"),
    ("frames_per_s", "frames/s", "through the model"),
    ("goodput", "MB/s", "through the model"),
    ("goodput_mtu", "MB/s", "MTU-sized UDP"),
    ("usb_ceiling_goodput_MBps", "MB/s", "the same traffic with the bus never idle"),
    ("pct_of_usb_ceiling", "%", "bus busy share: goal >= 90 at full speed"),
    ("pct_of_usb_ceiling_mtu", "%", "MTU-sized UDP"),
    ("model_goodput", "MB/s", "both transfers"),
]

if __name__ == "__main__":
    code = run("sim-usb-ecm", ROWS, "bench-usb-ecm.json", "bench/usb_ecm.py")
    print()
    sys.exit(code or run("sim-usb-ecm-fs", ROWS, "bench-usb-ecm-fs.json", "bench/usb_ecm.py"))

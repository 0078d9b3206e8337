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

import io
import json
import sys
import tempfile
from pathlib import Path

from hilkit.hil.runner import run_hil

ROWS = [  # (figure, unit, floor or goal)
    ("spi_bytes_per_payload_byte", "B/B", "floor 4.0, goal <= 4.1"),
    ("cs_transactions_per_frame", "1/frame", ""),
    ("bus_calls_per_frame", "1/frame", "goal <= 3 each way"),
    ("frames_per_s_hilkit_to_kernel", "frames/s", ""),
    ("frames_per_s_kernel_to_hilkit", "frames/s", ""),
    ("goodput_hilkit_to_kernel", "MB/s", "through the model"),
    ("goodput_kernel_to_hilkit", "MB/s", "through the model"),
    ("spi_clock_hz", "Hz", "the rig's SPI clock"),
    ("silicon_s", "s", "bytes*8/f + calls*overhead"),
    ("silicon_goodput_MBps", "MB/s", "on silicon"),
    ("silicon_pct_of_spi_ceiling", "%", "of the W5100's SPI ceiling"),
]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hilkit-bench-") as tmp:
        out = Path(tmp) / "report"
        log = io.StringIO()
        code = run_hil("sim-w5100", suites=["throughput"], out=out, stream=log, err=log)
        if code != 0:
            print(log.getvalue(), file=sys.stderr)
            print(f"bench/w5100.py: the sim-w5100 throughput suite exited {code}", file=sys.stderr)
            return 2
        figures = json.loads((out / "results.json").read_text())["figures"]
    print(f"{'sim-w5100 figure':36} {'value':>12}  {'unit':9} note")
    print("-" * 84)
    for name, unit, note in ROWS:
        value = figures.get(name)
        shown = f"{value:12.3f}" if isinstance(value, float) else f"{value!s:>12}"
        print(f"{name:36} {shown}  {unit:9} {note}")
    result = {"command": "hilkit hil --rig sim-w5100 --suite throughput",
              "figures": {name: figures.get(name) for name, _, _ in ROWS}}
    Path("reports").mkdir(exist_ok=True)
    Path("reports/bench-w5100.json").write_text(json.dumps(result, indent=2))
    print("\nJSON: reports/bench-w5100.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run a simulated rig's `throughput` suite through the HIL runner and print its figures.

Shared by the per-chip benches (`bench/w5100.py`, `bench/enc28j60.py`): each names
its rig and the rows to show. A row is printed per direction and then overall, as
results.json names figures (`<figure>_hilkit_to_kernel`, `<figure>_kernel_to_hilkit`,
`<figure>`), for whichever of those the run has.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
from pathlib import Path

from hilkit.hil.runner import run_hil

DIRS = ("hilkit_to_kernel", "kernel_to_hilkit")
Row = tuple[str, str, str]  # (figure, unit, note)


def names(base: str) -> list[str]:
    """The figure per direction, then overall."""
    return [f"{base}_{d}" for d in DIRS] + [base]


def hil_figures(rig: str, suites: list[str], prog: str) -> dict[str, object] | None:
    """The figures of ``rig``'s ``suites`` (results.json), run through the HIL runner;
    None, with the run's output on stderr, if it did not pass."""
    with tempfile.TemporaryDirectory(prefix="hilkit-bench-") as tmp:
        out = Path(tmp) / "report"
        log = io.StringIO()
        code = run_hil(rig, suites=suites, out=out, stream=log, err=log)
        if code != 0:
            print(log.getvalue(), file=sys.stderr)
            print(f"{prog}: {rig}'s {','.join(suites)} exited {code}", file=sys.stderr)
            return None
        figures: dict[str, object] = json.loads((out / "results.json").read_text())["figures"]
    return figures


def run(rig: str, rows: list[Row], report: str, prog: str) -> int:
    """Print ``rows`` of ``rig``'s throughput figures; write them to reports/``report``."""
    figures = hil_figures(rig, ["throughput"], prog)
    if figures is None:
        return 2
    print(f"{rig + ' figure':52} {'value':>12}  {'unit':9} note")
    print("-" * 100)
    shown: dict[str, object] = {}
    for base, unit, note in rows:
        for name in names(base):
            if name not in figures:
                continue
            value = shown[name] = figures[name]
            text = f"{value:12.3f}" if isinstance(value, float) else f"{value!s:>12}"
            print(f"{name:52} {text}  {unit:9} {note}")
    result = {"command": f"hilkit hil --rig {rig} --suite throughput", "figures": shown}
    Path("reports").mkdir(exist_ok=True)
    Path("reports", report).write_text(json.dumps(result, indent=2))
    print(f"\nJSON: reports/{report}")
    return 0

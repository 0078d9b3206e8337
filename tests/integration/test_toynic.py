"""The out-of-tree example NIC (``examples/toynic``) brought up the way a driver author
would: installed as its own package, reached only through hilkit's extension points
(``hilkit.nics``, a ``kind = "python"`` bus factory), and run through every HIL suite
(conformance included) on its own rig file.

``./install`` pip-installs the package with the ``dev`` extra; when it is missing this
test installs it, and fails saying how if it cannot: it never skips for it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hilkit.rig.suite_params import SUITE_NAMES
from tests.hil_checks import applicable, skips

REPO = Path(__file__).resolve().parents[2]
TOYNIC = REPO / "examples" / "toynic"
RIG = TOYNIC / "rigs" / "sim-toynic.toml"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
    reason="needs root and /dev/net/tun (network namespaces, TAPs)",
)


def _installed() -> bool:
    """toynic imports and registers its NIC under ``hilkit.nics`` (in a fresh process:
    this one's entry-point view predates an install)."""
    code = ("from hilkit.drivers import find_nic; import sys; "
            "sys.exit(0 if find_nic('toynic') is not None else 1)")
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          check=False).returncode == 0


def ensure_toynic() -> None:
    """Install examples/toynic into this interpreter's environment if it is not there."""
    if _installed():
        return
    tries = [["--no-build-isolation"], []]  # offline first (needs setuptools and wheel)
    errors = []
    for extra in tries:
        res = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
             *extra, "-e", str(TOYNIC)], capture_output=True, text=True, check=False,
            timeout=300)
        if res.returncode == 0 and _installed():
            importlib.invalidate_caches()
            return
        errors.append(res.stderr.strip()[-600:])
    pytest.fail(
        "the example NIC is not installed and installing it failed; run "
        f"`{sys.executable} -m pip install -e examples/toynic` (./install does with the dev "
        "extra):\n" + "\n---\n".join(errors), pytrace=False)


def test_toynic_passes_every_suite(tmp_path: Path) -> None:
    ensure_toynic()
    assert importlib.metadata.version("toynic")
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(REPO), "LC_ALL": "C"}
    res = subprocess.run([sys.executable, "-m", "hilkit.hil.runner", "--rig", str(RIG),
                          "--out", str(out)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["verdict"] == "passed" and results["driver"] == "toynic"
    suites = results["suites"]
    assert list(suites) == list(SUITE_NAMES), suites  # every suite ran
    for name, row in suites.items():
        assert row["passed"] > 0 and row["failed"] == 0, (name, row)
    assert not skips(applicable(results)), [c["message"] for c in results["checks"]
                                            if c["outcome"] == "skipped"]
    figures = results["figures"]
    # the model's own per-call cost (0: no bridge), not spidev's by bus kind
    assert figures["bus_call_overhead_us"] == 0.0
    # the NIC's registration reached the runner: driver stats and the chip's identity
    assert {"resets", "rx_overflows"} <= set(figures["counters"]["device"])
    assert figures["chip"] == "Toy TN4"
    # the recovery suite's faults came from the chip-model contract
    assert figures["recovery_soft_resets"] >= 1 and figures["recovery_hard_resets"] >= 1


def test_rig_check_probes_the_chip(tmp_path: Path) -> None:
    """``hilkit rig check`` on a simulated rig builds it and probes the chip (docs/rigs.md)."""
    ensure_toynic()
    env = {**os.environ, "PYTHONPATH": str(REPO), "LC_ALL": "C"}
    res = subprocess.run([sys.executable, "-m", "hilkit.cli", "rig", "check", str(RIG)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "chip: Toy TN4 answered its identity probe" in res.stdout
    assert "ping 192.168.74.1 from 192.168.74.2" in res.stdout


def test_a_misspelt_factory_key_is_a_rig_error(tmp_path: Path) -> None:
    """``rx_slot`` for ``rx_slots``: refused when the rig is validated, with the closest
    parameter of the factory suggested, exit 2 (never a TypeError from the build)."""
    ensure_toynic()
    rig = tmp_path / "typo.toml"
    rig.write_text(RIG.read_text().replace("rx_slots = 4", "rx_slot = 4"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "LC_ALL": "C"}
    res = subprocess.run([sys.executable, "-m", "hilkit.cli", "rig", "check", str(rig)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert res.returncode == 2, res.stdout + res.stderr
    assert ('typo.toml: bus.rx_slot: factory toynic.model:open_model has no parameter '
            '"rx_slot"; did you mean "rx_slots"?') in res.stderr
    assert "Traceback" not in res.stderr

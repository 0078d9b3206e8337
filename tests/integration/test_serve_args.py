"""`hilkit serve` as a process, refusing bad arguments: exit 2, a line naming the
argument, no traceback. Run inside a private namespace, so that even a check
that let something through could only touch that namespace. The generated
corpus runs in-process in tests/unit/test_serve_args.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hilkit.rig.netns import Netns
from tests.integration.conftest import TAP, kernel_side

GOOD = {"tap": TAP, "ip": "192.168.5.4/24", "gw": "192.168.5.5"}


@pytest.mark.parametrize(("arg", "value"), [
    ("tap", "a" * 16),
    ("tap", "hk0/x"),
    ("tap", ".."),
    ("ip", "192.168.5.255/24"),
    ("ip", "192.168.5.4/" + "9" * 5000),
    ("ip", "0.0.0.0/24"),
    ("gw", "10.9.9.9"),
    ("gw", "not-an-address"),
    ("pcap", "{tmp}"),
    ("pcap", "{tmp}/missing/serve.pcapng"),
    ("pcap", ""),
])
def test_serve_process_refuses_a_bad_argument(netns: Netns, tmp_path: Path, arg: str,
                                              value: str) -> None:
    kernel_side(netns, persistent=True)  # a real TAP is there: only the checks stop serve
    args = {**GOOD, "pcap": str(tmp_path / "serve.pcapng"), arg: value.format(tmp=tmp_path)}
    cmd = [sys.executable, "-m", "hilkit.cli", "serve", *[f"--{k}={v}" for k, v in args.items()]]
    res = subprocess.run(["ip", "netns", "exec", netns.name, *cmd], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith(f"hilkit serve: --{arg}: "), res.stderr
    assert res.stdout == ""
    assert not (tmp_path / "serve.pcapng").exists()


def test_a_missing_tap_leaves_no_capture_file(netns: Netns, tmp_path: Path) -> None:
    pcap = tmp_path / "serve.pcapng"
    res = subprocess.run(
        ["ip", "netns", "exec", netns.name, sys.executable, "-m", "hilkit.cli", "serve",
         "--tap", "nosuch0", "--ip", "10.0.0.1/24", "--pcap", str(pcap)],
        capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("hilkit serve: --tap: cannot open TAP 'nosuch0'"), res.stderr
    assert not pcap.exists()

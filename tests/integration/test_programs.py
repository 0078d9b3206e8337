"""The programs a person runs: the README ping example and `hilkit serve`."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from hilkit.rig.netns import Netns
from tests.integration.conftest import HILKIT_IP, Server, kping, start_server
from tests.integration.test_kernel import received

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ping.py"
REPLY = re.compile(r"64 bytes from 192\.168\.5\.5: icmp_req=(\d+) ttl=64 time=\d+(\.\d+)? ms")


def readme_preparation(ns: Netns) -> None:
    ns.ip("tuntap", "add", "dev", "tap0", "mode", "tap")
    ns.ip("addr", "add", "192.168.5.5/24", "dev", "tap0")
    ns.ip("link", "set", "tap0", "up")


def run_example(ns: Netns) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, str(EXAMPLE)],
                          capture_output=True, text=True, timeout=60)


def test_ping_example_prints_the_readme_lines(netns: Netns) -> None:
    readme_preparation(netns)
    res = run_example(netns)
    lines = res.stdout.splitlines()
    assert res.returncode == 0, res.stderr
    assert lines[0] == "starting ping"
    assert lines[-1] == "finished !"
    seqs = [int(m.group(1)) for m in map(REPLY.fullmatch, lines[1:-1]) if m]
    assert seqs == list(range(1, 11)), lines


def test_ping_example_reports_an_error_and_stops(netns: Netns) -> None:
    readme_preparation(netns)
    netns.ip("addr", "flush", "dev", "tap0")  # nobody answers for 192.168.5.5 now
    netns.ip("addr", "add", "192.168.5.6/24", "dev", "tap0")
    res = run_example(netns)
    assert res.stdout.splitlines() == [
        "starting ping", "PING 1 to 192.168.5.5: Error 2", "finished !"]  # 2: unreachable
    assert res.returncode == 1


def test_serve_stops_cleanly_on_sigint(netns: Netns, tmp_path: Path) -> None:
    srv: Server = start_server(netns, tmp_path)
    assert srv.ready_line.startswith(f"ready {HILKIT_IP}/24 on hk0 mac ")
    assert received(kping(netns, "-c", "1", "-W", "5", HILKIT_IP)) == (1, 1)
    srv.proc.send_signal(signal.SIGINT)
    c = srv.stop()
    assert c["devices"]["hk0"]["rx_frames"] >= 2 and c["devices"]["hk0"]["tx_frames"] >= 2


def test_serve_names_a_missing_tap(netns: Netns) -> None:
    res = subprocess.run(
        ["ip", "netns", "exec", netns.name, sys.executable, "-m", "hilkit.cli", "serve",
         "--tap", "nosuch0", "--ip", "10.0.0.1/24"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert "nosuch0" in res.stderr

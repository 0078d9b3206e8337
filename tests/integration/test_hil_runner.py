"""The HIL runner end to end: ``python -m hilkit.hil.runner`` as a subprocess, so exit
codes, output and report directories are what a lab's CI sees.

Every rig here is simulated (its namespace is made and deleted by the runner) or fails
its hardware check before anything is touched.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.hil_checks import applicable, skips
from tests.tshark import TSHARK, assert_capture_clean, tshark_fields

REPO = Path(__file__).resolve().parents[2]
RIGS = REPO / "rigs"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
    reason="needs root and /dev/net/tun (network namespaces, TAPs)",
)


class Run(subprocess.CompletedProcess[str]):
    pid: int


def hil(*args: str, timeout: float = 600) -> Run:
    """``python -m hilkit.hil.runner ARGS``; asserts it left no namespace behind."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "LC_ALL": "C"}
    proc = subprocess.Popen([sys.executable, "-m", "hilkit.hil.runner", *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run = Run(proc.args, proc.returncode, out, err)
    run.pid = proc.pid
    assert not namespaces_of(proc.pid), f"namespaces left behind: {namespaces_of(proc.pid)}"
    return run


def namespaces_of(pid: int) -> set[str]:
    """Namespaces process ``pid`` made (``Netns`` names them PREFIX-PID-RANDOM)."""
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True,
                         check=False).stdout
    return {n["name"] for n in json.loads(out or "[]") if f"-{pid}-" in n["name"]}


def rig_file(tmp_path: Path, base: str, edit: Any = None, name: str = "rig.toml") -> Path:
    text = (RIGS / f"{base}.toml").read_text()
    if edit is not None:
        text = edit(text)
    p = tmp_path / name
    p.write_text(text)
    return p


def load(out: Path) -> tuple[dict[str, Any], ET.Element]:
    results = json.loads((out / "results.json").read_text())
    junit = ET.parse(out / "junit.xml").getroot()
    return results, junit


def junit_cases(junit: ET.Element) -> list[ET.Element]:
    return list(junit.iter("testcase"))


def check_report_dir(out: Path, rig: str) -> dict[str, Any]:
    """What every finished run must leave: parseable JUnit with a testcase per check,
    results.json, a pcapng per check, the log."""
    results, junit = load(out)
    assert results["rig"] == rig
    assert results["started"] <= results["ended"]
    checks = results["checks"]
    cases = junit_cases(junit)
    assert len(cases) == len(checks) > 0
    names = {f"{c.get('classname')}::{c.get('name')}" for c in cases}
    assert len(names) == len(cases)
    for c in checks:
        assert c["outcome"] in ("passed", "failed", "error", "skipped"), c
        assert isinstance(c["duration_s"], float)
        assert c["pcapng"] and (out / c["pcapng"]).is_file(), c
        if c["outcome"] != "passed":
            assert c["message"], c
    pcaps = sorted(p.name for p in out.glob("*.pcapng"))
    assert pcaps == sorted(c["pcapng"] for c in checks)  # one per check, nothing else
    # figures are JUnit properties of their testcase
    props = {p.get("name") for case in cases for p in case.iter("property")}
    for c in checks:
        for name, fig in c["figures"].items():
            assert (f"{name}[{fig['unit']}]" if fig["unit"] else name) in props
    assert (out / "hil.log").stat().st_size > 0
    return results


EVERY_SUITE = {"identity", "link", "arp", "icmp", "udp", "tcp", "throughput", "recovery",
               "conformance"}


def full_run(tmp_path: Path, rig: str, timeout: float = 900) -> tuple[dict[str, Any],
                                                                       dict[str, str]]:
    """``hilkit hil --rig RIG`` to its end: exit 0, a well-formed report in which no suite
    failed, clean captures where tshark can read them; (results.json, check -> outcome of
    the checks that apply to the rig's link)."""
    out = tmp_path / "report"
    res = hil("--rig", rig, "--out", str(out), timeout=timeout)
    assert res.returncode == 0, res.stdout + res.stderr
    results = check_report_dir(out, rig)
    assert all(r["failed"] == 0 for r in results["suites"].values()), results["suites"]
    if TSHARK is not None:
        for pcap in sorted(out.glob("*.pcapng")):
            assert_capture_clean(pcap)
    return results, applicable(results)



# -- sim-tap: the whole run ---------------------------------------------------------------


def test_sim_tap_full_run(tmp_path: Path) -> None:
    out = tmp_path / "report"
    res = hil("--rig", "sim-tap", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    # live progress, a line per check, and the summary table
    assert re.search(r"^PASS  icmp::test_hilkit_pings_kernel\[1473\]  [\d.]+ m?s$",
                     res.stdout, re.M), res.stdout
    assert re.search(r"^suite\s+passed\s+failed\s+skipped\s+time$", res.stdout, re.M)
    assert re.search(r"^total\s+\d+\s+0\s+\d+\s", res.stdout, re.M)

    results = check_report_dir(out, "sim-tap")
    assert results["exit_code"] == 0 and results["verdict"] == "passed"
    assert set(results["suites"]) == {"identity", "link", "arp", "icmp", "udp", "tcp",
                                      "throughput", "conformance"}
    outcomes = applicable(results)
    assert outcomes["identity::test_chip_probe"] == "skipped"  # a TAP has no chip
    assert all(o == "passed" for i, o in outcomes.items()
               if i not in ("identity::test_chip_probe", "throughput::test_bus_figures"))
    for size in (0, 56, 1472, 1473, 4000):
        assert outcomes[f"icmp::test_kernel_pings_hilkit[{size}]"] == "passed"
    figures = results["figures"]
    assert figures["tcp_bytes_each_way"] == 16 * 1024 * 1024
    assert figures["goodput_hilkit_to_kernel"] > 0 and figures["goodput_kernel_to_hilkit"] > 0
    assert figures["units"]["goodput_hilkit_to_kernel"] == "MB/s"
    counters = figures["counters"]
    assert counters["device"]["tx_frames"] > 1000 and counters["device"]["rx_frames"] > 1000
    assert "drops" in counters["stack"] and "stats" in counters["stack"]
    assert "bus" not in counters  # no SPI bus on this rig

    _, junit = load(out)
    goodput = [c for c in junit_cases(junit) if c.get("name") == "test_goodput[hilkit_to_kernel]"]
    assert goodput and any(p.get("name") == "goodput_hilkit_to_kernel[MB/s]"
                           for p in goodput[0].iter("property"))
    if TSHARK is not None:
        for pcap in sorted(out.glob("*.pcapng")):
            assert_capture_clean(pcap)


def test_sim_tap_with_offloads_passes_every_suite_and_captures_a_wire(tmp_path: Path) -> None:
    """``offload = true`` in [driver]: checksums and TCP segmentation left to the kernel
    (docs/porting.md, "Offloads"); the verdict is the same, the captures still a wire."""
    rig = rig_file(tmp_path, "sim-tap", lambda t: t.replace(
        'mac = "02:00:00:7a:90:01"', 'mac = "02:00:00:7a:90:01"\noffload = true'))
    out = tmp_path / "report"
    res = hil("--rig", str(rig), "--suite", "udp,tcp,throughput,conformance", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    results = check_report_dir(out, "sim-tap")
    assert all(o == "passed" for i, o in applicable(results).items()
               if i != "throughput::test_bus_figures")
    dev = results["figures"]["counters"]["device"]
    for way in ("tx", "rx"):  # long segments crossed the TAP, both ways
        assert dev[f"{way}_bytes"] / dev[f"{way}_frames"] > 1514, dev
    if TSHARK is not None:
        for pcap in sorted(out.glob("tcp-*.pcapng")):
            assert assert_capture_clean(pcap) > 1000
            lengths = [int(v[0]) for v in tshark_fields(pcap, ["frame.len"])]
            assert max(lengths) <= 1514, pcap.name  # wire frames, whatever the TAP moved


# -- failures ----------------------------------------------------------------------------


def test_failing_check_exits_1(tmp_path: Path) -> None:
    """A rig whose icmp sizes include one no IPv4 datagram can carry: those checks fail."""
    rig = rig_file(tmp_path, "sim-tap",
                   lambda t: t.replace("[suites.icmp]", "[suites.icmp]\nsizes = [56, 70000]"))
    out = tmp_path / "report"
    res = hil("--rig", str(rig), "--suite", "icmp", "-k", "70000", "--out", str(out))
    assert res.returncode == 1, res.stdout + res.stderr
    assert re.search(r"^FAIL  icmp::test_hilkit_pings_kernel\[70000\]", res.stdout, re.M)
    results = check_report_dir(out, "sim-tap")
    assert results["exit_code"] == 1 and results["verdict"] == "failed"
    assert {c["id"] for c in results["checks"]} == {"icmp::test_hilkit_pings_kernel[70000]",
                                                    "icmp::test_kernel_pings_hilkit[70000]"}
    assert all(c["outcome"] == "failed" for c in results["checks"])
    _, junit = load(out)
    assert all(c.find("failure") is not None for c in junit_cases(junit))
    assert "Traceback" in (out / "hil.log").read_text() or "Error" in (out / "hil.log").read_text()


def test_broken_rig_file_exits_2(tmp_path: Path) -> None:
    rig = rig_file(tmp_path, "sim-tap",
                   lambda t: t.replace('address = "192.168.7.2/24"',
                                       'address = "192.168.7.300/24"'))
    out = tmp_path / "report"
    t0 = time.monotonic()
    res = hil("--rig", str(rig), "--out", str(out), timeout=30)
    assert res.returncode == 2, res.stdout + res.stderr
    assert time.monotonic() - t0 < 5
    assert str(rig.name) in res.stderr and "dut.address" in res.stderr, res.stderr
    assert not out.exists(), "nothing may be touched before the rig file is known good"


def test_unknown_rig_and_suite_exit_2(tmp_path: Path) -> None:
    res = hil("--rig", "no-such-rig", timeout=30)
    assert res.returncode == 2 and "no-such-rig" in res.stderr, res.stderr
    res = hil("--rig", "sim-tap", "--suite", "icmp,pingpong", timeout=30)
    assert res.returncode == 2 and "pingpong" in res.stderr, res.stderr


def test_nothing_selected_exits_2(tmp_path: Path) -> None:
    res = hil("--rig", "sim-tap", "--suite", "identity", "-k", "no_such_check",
              "--out", str(tmp_path / "r"), timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "no check selected" in res.stderr


@pytest.mark.parametrize(("rig", "device"), [("rpi-w5100", "/dev/spidev0.0"),
                                             ("ft232h-w5100", "ftdi://ftdi:232h/1"),
                                             ("rpi-enc28j60", "/dev/spidev0.0"),
                                             ("ft232h-enc28j60", "ftdi://ftdi:232h/1"),
                                             ("usb-ecm", "0525:a4a2"),
                                             ("usb-ecm-gadget", "0525:a4a2"),
                                             ("rpi-ppp", "/dev/serial0")])
def test_missing_hardware_exits_2_fast(tmp_path: Path, rig: str, device: str) -> None:
    if rig.startswith("rpi-") and os.path.exists(device):
        pytest.skip(f"{device} exists on this machine")
    t0 = time.monotonic()
    res = hil("--rig", rig, "--out", str(tmp_path / "r"), timeout=30)
    took = time.monotonic() - t0
    assert res.returncode == 2, res.stdout + res.stderr
    assert took < 5, f"took {took:.1f} s"
    assert device in res.stderr and "hardware not found" in res.stderr, res.stderr
    assert "what to do:" in res.stderr  # how to check is part of the message


# -- the run's lifetime -------------------------------------------------------------------


def test_ctrl_c_tears_the_rig_down(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "hilkit.hil.runner", "--rig", "sim-tap",
                             "--suite", "tcp", "--out", str(tmp_path / "r")], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not namespaces_of(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert namespaces_of(proc.pid), "the rig's namespace never appeared"
        time.sleep(0.3)  # into the transfer
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, out + err
    assert "interrupted" in err
    assert not namespaces_of(proc.pid), "the rig's namespace survived Ctrl-C"


def test_repeat(tmp_path: Path) -> None:
    out = tmp_path / "report"
    res = hil("--rig", "sim-tap", "--suite", "identity", "--repeat", "2", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    results = check_report_dir(out, "sim-tap")
    ids = [c["id"] for c in results["checks"]]
    assert "identity::test_mtu[r1]" in ids and "identity::test_mtu[r2]" in ids


def test_pytest_rig_option(tmp_path: Path) -> None:
    """``pytest --rig NAME`` in a lab's own setup: the suites plus the lab's tests, which
    get the same fixtures."""
    (tmp_path / "test_lab.py").write_text(
        "def test_lab_ping(rig, kernel, stack):\n"
        "    got = kernel.ping(rig.dut_ip, count=1)\n"
        "    assert got[0] == 0  # nobody drives the stack: hilkit cannot answer\n"
        "    th = kernel.start(stack, lambda: kernel.ping(rig.dut_ip, count=1))\n"
        "    assert th.wait(30)[0] == 1\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    installed = any(ep.value == "hilkit.hil.plugin"
                    for ep in importlib.metadata.entry_points(group="pytest11"))
    load = [] if installed else ["-p", "hilkit.hil.plugin"]  # the pytest11 entry point
    res = subprocess.run(
        [sys.executable, "-m", "pytest", *load, "-p", "no:cacheprovider", "--rig", "sim-tap",
         "--hil-suite", "identity,arp", "--hil-out", str(out), "test_lab.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    results = json.loads((out / "results.json").read_text())
    ids = {c["id"]: c["outcome"] for c in results["checks"]}
    assert ids["lab::test_lab_ping"] == "passed"
    assert ids["arp::test_kernel_learns_hilkit_mac"] == "passed"
    assert len(list(out.glob("*.pcapng"))) == len(ids)


# -- sim-w5100 -------------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_sim_w5100_full_run(tmp_path: Path) -> None:
    t0 = time.monotonic()
    results, outcomes = full_run(tmp_path, "sim-w5100")
    took = time.monotonic() - t0
    assert set(results["suites"]) == EVERY_SUITE
    assert outcomes["identity::test_chip_probe"] == "passed"
    for how in ("soft", "hard"):
        assert outcomes[f"recovery::test_reset_mid_transfer[{how}]"] == "passed"
    assert outcomes["throughput::test_bus_figures"] == "passed"
    fig = results["figures"]
    assert fig["spi_bytes_per_payload_byte"] >= 4.0
    assert fig["cs_transactions_per_frame"] > 0 and fig["bus_calls_per_frame"] > 0
    assert fig["silicon_pct_of_spi_ceiling"] > 0
    for key in ("device", "stack", "bus", "model"):
        assert key in fig["counters"], key
    assert fig["counters"]["bus"]["bytes"] > 0
    assert fig["counters"]["model"]["soft_resets"] >= 1  # the recovery suite's faults
    assert fig["counters"]["device"]["resets"] >= 2  # ... which the driver noticed
    print(f"sim-w5100 run: {took:.1f} s; figures: "
          + ", ".join(f"{k}={fig[k]}" for k in ("spi_bytes_per_payload_byte",
                                                 "cs_transactions_per_frame",
                                                 "bus_calls_per_frame",
                                                 "silicon_pct_of_spi_ceiling")))


# -- sim-enc28j60 ----------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_sim_enc28j60_full_run(tmp_path: Path) -> None:
    """Every suite, the link taken down and up for real (the model's PHY follows the TAP)."""
    results, outcomes = full_run(tmp_path, "sim-enc28j60")
    assert set(results["suites"]) == EVERY_SUITE
    assert not skips(outcomes), skips(outcomes)
    for check in ("identity::test_chip_probe", "link::test_link_down_and_up",
                  "conformance::TestDevice::test_link_down_and_up",
                  "conformance::TestDevice::test_send_while_link_down",
                  "recovery::test_reset_mid_transfer[soft]",
                  "recovery::test_reset_mid_transfer[hard]"):
        assert outcomes[check] == "passed", check
    fig = results["figures"]
    assert 1.0 < fig["spi_bytes_per_payload_byte"] < 4.0  # RBM/WBM bursts, not byte frames
    assert fig["counters"]["device"]["resets"] >= 2  # the recovery suite's resets were seen


# -- sim-usb-ecm ----------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_sim_usb_ecm_full_run(tmp_path: Path) -> None:
    """Every suite through pyusb and the virtual USB bus: link down and up (the model's
    NETWORK_CONNECTION follows the TAP), the device resetting itself and a replug."""
    results, outcomes = full_run(tmp_path, "sim-usb-ecm")
    assert set(results["suites"]) == EVERY_SUITE
    assert skips(outcomes) == {"recovery::test_reset_mid_transfer[pin]"}  # USB: no pin
    for check in ("identity::test_chip_probe", "link::test_link_down_and_up",
                  "conformance::TestDevice::test_link_down_and_up",
                  "conformance::TestDevice::test_send_while_link_down",
                  "recovery::test_reset_mid_transfer[soft]",
                  "recovery::test_reset_mid_transfer[hard]"):
        assert outcomes[check] == "passed", check
    fig = results["figures"]
    # one bulk transfer per frame each way; ZLPs apart
    assert fig["usb_transfers_per_frame_out"] == pytest.approx(1.0, abs=0.01)
    assert fig["usb_transfers_per_frame_in"] == pytest.approx(1.0, abs=0.01)
    assert fig["counters"]["device"]["replugs"] >= 2  # the recovery suite's two were seen
    assert fig["counters"]["usb"]["usb_bulk_transfers_out"] > 0


@pytest.mark.timeout(600)
def test_sim_usb_ecm_full_speed(tmp_path: Path) -> None:
    """At 12 Mb/s with 64-byte packets: every suite of the rig passes, every frame is
    still one transfer, and the share of the bus's ceiling is a sane figure."""
    results, outcomes = full_run(tmp_path, "sim-usb-ecm-fs", timeout=600)
    assert not skips(outcomes), skips(outcomes)
    fig = results["figures"]
    assert fig["usb_transfers_per_frame_out"] == pytest.approx(1.0, abs=0.01)
    assert 0 < fig["pct_of_usb_ceiling"] <= 102  # a figure; the bus model caps it near 100


# -- sim-ft232h-* ---------------------------------------------------------------------------


@pytest.mark.timeout(900)
@pytest.mark.parametrize("chip", ["w5100", "enc28j60"])
def test_sim_ft232h_full_run(tmp_path: Path, chip: str) -> None:
    """The hardware rig with only the USB made virtual: hilkit's ftdi bus and pyftdi run
    unchanged against the FT232H model, the chip's model on its SPI pins; the recovery
    suite's pin check resets the chip through the FT232H's AD4."""
    results, outcomes = full_run(tmp_path, f"sim-ft232h-{chip}")
    assert set(results["suites"]) == EVERY_SUITE
    for check in ("identity::test_chip_probe", "recovery::test_reset_mid_transfer[pin]",
                  "tcp::test_bytes_each_way[client]", "throughput::test_goodput[hilkit_to_kernel]"):
        assert outcomes[check] == "passed", check
    # the drivers' own SPI traffic through pyftdi: the W5100's 4-byte frame per data byte,
    # the ENC28J60's RBM/WBM bursts
    fig = results["figures"]
    assert fig["spi_bytes_per_payload_byte"] >= (4.0 if chip == "w5100" else 1.0)
    # the bridge's own figures: at most about 2 USB round trips per frame each way, and the
    # share of the chip's SPI ceiling in silicon time (docs/hardware/ft232h.md)
    assert 0 < fig["usb_round_trips_per_frame_mtu"] <= 2.5
    assert 0 < fig["usb_bytes_per_spi_byte"] < 5
    assert 50 < fig["bridge_pct_of_spi_ceiling"] <= 100


# -- sim-ppp: PPP to slirp in the rig's namespace ------------------------------------------

PPP_PASSES = {"identity::test_device_opened", "identity::test_negotiated", "link::test_link_up",
              "tcp::test_bytes_each_way[client]", "tcp::test_bytes_each_way[server]",
              "throughput::test_goodput[hilkit_to_kernel]",
              "throughput::test_goodput[kernel_to_hilkit]"}


def test_sim_ppp_full_run(tmp_path: Path) -> None:
    """Every suite on a PPP line to slirp: what works passes, what slirp cannot do is
    skipped saying why, and the PPP figures are in results.json."""
    results, outcomes = full_run(tmp_path, "sim-ppp", timeout=600)
    assert set(results["suites"]) == EVERY_SUITE
    for c in PPP_PASSES:
        assert outcomes.get(c) == "passed", (c, outcomes.get(c))
    figs = results["figures"]
    for name in ("ppp_bringup_ms", "ppp_wire_bytes_per_ip_byte", "pct_of_line_ceiling",
                 "ppp_address", "ppp_tx_accm"):
        assert name in figs, name
    assert figs["ppp_address"] == "10.0.2.15"
    skipped = [c for c in results["checks"] if c["outcome"] == "skipped"]
    assert all(c["message"] for c in skipped)


@pytest.mark.parametrize("auth", ["pap", "chap"])
def test_sim_ppp_with_authentication_hides_the_secret(tmp_path: Path, auth: str) -> None:
    """peer.auth: slirp demands PAP or CHAP with the rig's credentials; the password (from
    the environment) appears nowhere in the run's report directory."""
    secret = "Zq9-hilkit-s3cret-" + auth
    text = (REPO / "rigs" / "sim-ppp.toml").read_text()
    text = text.replace('auth = "none"', f'auth = "{auth}"')
    text = text.replace('# username = "hilkit"', 'username = "hilkit"')
    text = text.replace('# password_env = "PPP_PASSWORD"', 'password_env = "HK_TEST_PPP_PW"')
    rig = tmp_path / "sim-ppp-auth.toml"
    rig.write_text(text)
    out = tmp_path / "report"
    env = {**os.environ, "HK_TEST_PPP_PW": secret}
    res = subprocess.run([sys.executable, "-m", "hilkit.cli", "hil", "--rig", str(rig),
                          "--suite", "identity,udp", "--out", str(out)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert secret not in res.stdout + res.stderr
    for f in out.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    results = json.loads((out / "results.json").read_text())
    assert results["figures"]["ppp_auth"] != "none"

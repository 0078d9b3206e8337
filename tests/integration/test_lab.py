"""A small real lab: ``hilkit hil --place`` through labgrid (docs/lab.md).

The module builds it once: a ``labgrid-coordinator`` on 127.0.0.1 (a free port), a
``labgrid-exporter`` with the shipped ``lab/sim.yaml`` (sim-w5100 and sim-enc28j60,
each with a NetworkService that is this machine and a NetworkPowerPort on outlets 1
and 2 of a simulated power switch, ``hilkit.lab.simswitch``, on loopback), and Debian's
OpenSSH ``sshd``
standing in for the rig host: a throwaway config, host key and client key pair in
a temporary directory, listening on 127.0.0.1 only, key authentication only (root
allowed for this sshd alone, its authorized keys in the temporary directory). The
places are made with the ``labgrid-client`` commands docs/lab.md gives. Nothing is
configured in this machine's own network namespace: the servers are loopback ones,
and the simulated rigs make and delete their own namespaces.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hilkit.lab.simswitch import SimSwitch

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the simulated rigs need root"),
    pytest.mark.skipif(not (BIN / "labgrid-coordinator").exists(),
                       reason="labgrid (the [lab] extra) is not installed"),
    pytest.mark.skipif(not Path(SSHD).exists() or shutil.which("ssh") is None,
                       reason="openssh-server/openssh-client are not installed"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} does not listen on {port}: {log.read_text()[-2000:]}")


@dataclass
class Lab:
    tmp: Path
    coordinator: str
    ssh_port: int
    env: dict[str, str]
    me: str
    switch: SimSwitch

    def client(self, *args: str, user: str | None = None, check: bool = True
               ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if user:
            env["LG_USERNAME"] = user
        p = subprocess.run([str(BIN / "labgrid-client"), "-x", self.coordinator, *args],
                           env=env, capture_output=True, text=True, timeout=60)
        if check:
            assert p.returncode == 0, (args, p.stdout, p.stderr)
        return p

    def hil(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hilkit.cli", "hil", *args], cwd=REPO,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def start_hil(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "hilkit.cli", "hil", *args], cwd=REPO,
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def holder(self, place: str) -> str | None:
        out = self.client("-p", place, "show").stdout
        m = re.search(r"^\s*acquired: (\S+)", out, re.M)
        return None if m is None or m.group(1) == "None" else m.group(1)


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A lab server, its output in ``log``, its working directory (where the coordinator
    keeps places.yaml) the log's."""
    with open(log, "wb") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env,
                                cwd=log.parent, start_new_session=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("lab")
    procs: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("LG_")}
    env["PYTHONPATH"] = str(REPO)
    switch = SimSwitch()  # the lab's power switch, on loopback
    try:
        # the rig host: a throwaway sshd on loopback
        for name in ("host_key", "id_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hilkit-lab",
                            "-f", str(tmp / name)], check=True)
        shutil.copy(tmp / "id_key.pub", tmp / "authorized_keys")
        ssh_port = free_port()
        (tmp / "sshd_config").write_text(
            f"Port {ssh_port}\nListenAddress 127.0.0.1\nHostKey {tmp}/host_key\n"
            f"PidFile {tmp}/sshd.pid\nAuthorizedKeysFile {tmp}/authorized_keys\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            "UsePAM no\nStrictModes no\nX11Forwarding no\n"
            # remote forwarding only: the power channel (docs/lab.md, "Power")
            "AllowTcpForwarding remote\nAllowStreamLocalForwarding remote\n"
            "PermitUserEnvironment no\nLogLevel ERROR\n")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        host_pub = (tmp / "host_key.pub").read_text().split()
        (tmp / "known_hosts").write_text(f"[127.0.0.1]:{ssh_port} {host_pub[0]} {host_pub[1]}\n")
        (tmp / "ssh_config").write_text(
            f"Host *\n  IdentityFile {tmp}/id_key\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {tmp}/known_hosts\n  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n")
        procs.append(_start([SSHD, "-D", "-e", "-f", str(tmp / "sshd_config")],
                            tmp / "sshd.log", env))
        wait_port(ssh_port, procs[-1], "sshd", tmp / "sshd.log")
        # the coordinator and the exporter of the simulated rigs
        port = free_port()
        coordinator = f"127.0.0.1:{port}"
        procs.append(_start([str(BIN / "labgrid-coordinator"), "-l", coordinator],
                            tmp / "coordinator.log", env))
        wait_port(port, procs[-1], "labgrid-coordinator", tmp / "coordinator.log")
        procs.append(_start([str(BIN / "labgrid-exporter"), "-c", coordinator, "-n", "simhost",
                             str(REPO / "lab" / "sim.yaml")], tmp / "exporter.log",
                            {**env, "HILKIT_LAB_SSH_PORT": str(ssh_port),
                             "HILKIT_LAB_POWER": switch.url()}))
        # the rig host runs this checkout's hilkit
        hilkit = tmp / "hilkit"
        hilkit.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m hilkit.cli "
                          '"$@"\n')
        hilkit.chmod(0o755)
        env.update(LG_COORDINATOR=coordinator, HILKIT_SSH_CONFIG=str(tmp / "ssh_config"))
        me = f"{socket.gethostname()}/{getpass.getuser()}"
        lab = Lab(tmp=tmp, coordinator=coordinator, ssh_port=ssh_port, env=env, me=me,
                  switch=switch)
        deadline = time.monotonic() + 30
        while "sim-enc28j60" not in lab.client("resources").stdout:
            assert time.monotonic() < deadline, (tmp / "exporter.log").read_text()
            time.sleep(0.3)
        for place, rig, chip in (("lab-w5100-01", "sim-w5100", "w5100"),
                                 ("lab-enc28j60-01", "sim-enc28j60", "enc28j60")):
            lab.client("-p", place, "create")
            lab.client("-p", place, "set-tags", f"rig={rig}", f"{chip}=1", f"hilkit={hilkit}")
            lab.client("-p", place, "add-match", f"simhost/{rig}/NetworkService")
        yield lab
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        switch.close()


def report(out: Path) -> tuple[set[str], set[str], str, int]:
    """A report's files, its checks (junit testcases), its verdict and exit code."""
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    tree = ET.parse(out / "junit.xml")
    checks = {f"{c.get('classname')}::{c.get('name')}" for c in tree.iter("testcase")}
    results = json.loads((out / "results.json").read_text())
    return files, checks, results["verdict"], results["exit_code"]


def remote_runs_left() -> list[str]:
    """Remote runs still going (the sh -c of the run script holds the marker)."""
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if "hilkit-lab." in line and "--out" in line]


def wait_remote_gone(timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while remote_runs_left():
        assert time.monotonic() < deadline, remote_runs_left()
        time.sleep(0.3)


# -- the tests ---------------------------------------------------------------------------------


def test_place_run_is_a_local_run(lab: Lab, tmp_path: Path) -> None:
    """Every suite of sim-w5100 through the coordinator, the exporter and SSH: the report
    that comes home has the verdict, the files and the checks of a local run (which runs
    beside it: each run has namespaces of its own)."""
    t0 = time.monotonic()
    local = subprocess.Popen([sys.executable, "-m", "hilkit.cli", "hil", "--rig", "sim-w5100",
                              "--out", str(tmp_path / "local")], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        res = lab.hil("--place", "lab-w5100-01", "--out", str(tmp_path / "remote"))
    finally:
        local_out, _ = local.communicate(timeout=600)
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert local.returncode == 0, local_out[-3000:]
    assert "PASS  identity::test_chip_probe" in res.stdout  # streamed live
    assert "place lab-w5100-01 unlocked" in res.stdout
    assert lab.holder("lab-w5100-01") is None
    r_files, r_checks, r_verdict, r_code = report(tmp_path / "remote")
    l_files, l_checks, l_verdict, l_code = report(tmp_path / "local")
    assert (r_verdict, r_code) == (l_verdict, l_code) == ("passed", 0)
    assert r_files == l_files
    assert r_checks == l_checks and len(r_checks) > 40
    assert {"junit.xml", "results.json", "hil.log"} <= r_files
    assert any(f.endswith(".pcapng") for f in r_files)
    remote_results = json.loads((tmp_path / "remote" / "results.json").read_text())
    local_results = json.loads((tmp_path / "local" / "results.json").read_text())
    assert set(remote_results) - set(local_results) == {"lab"}
    assert remote_results["suites"].keys() == local_results["suites"].keys()
    lab_entry = remote_results["lab"]
    assert lab_entry["place"] == "lab-w5100-01"
    assert lab_entry["host"] == f"root@127.0.0.1 port {lab.ssh_port}"
    print(f"remote and local runs side by side: {took:.1f} s")


def test_tag_picks_a_free_place(lab: Lab, tmp_path: Path) -> None:
    """``tag:enc28j60``: the one place with that tag; its rig is the one its rig tag names."""
    res = lab.hil("--place", "tag:enc28j60", "--suite", "identity", "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "rig sim-enc28j60" in res.stdout
    assert json.loads((tmp_path / "r" / "results.json").read_text())["rig"] == "sim-enc28j60"


def test_two_places_at_once(lab: Lab, tmp_path: Path) -> None:
    """Two places from one CI machine at the same time, each into its own directory."""
    a = lab.start_hil("--place", "tag:w5100", "--suite", "identity", "--out",
                      str(tmp_path / "a"))
    b = lab.start_hil("--place", "tag:enc28j60", "--suite", "identity", "--out",
                      str(tmp_path / "b"))
    for p in (a, b):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, out[-2000:] + err[-2000:]
    assert report(tmp_path / "a")[2] == report(tmp_path / "b")[2] == "passed"


def test_held_place_fails_naming_the_holder(lab: Lab, tmp_path: Path) -> None:
    """Someone else holds it: the run waits its --place-timeout, then exit 2 naming them."""
    lab.client("-p", "lab-w5100-01", "acquire", user="alice")
    try:
        t0 = time.monotonic()
        res = lab.hil("--place", "lab-w5100-01", "--place-timeout", "2", "--suite", "identity",
                      "--out", str(tmp_path / "r"), timeout=60)
        assert res.returncode == 2, res.stdout + res.stderr
        assert 2 <= time.monotonic() - t0 < 30
        err = res.stderr.strip().splitlines()
        assert len(err) == 1, err
        assert "place lab-w5100-01 was not free within 2 s" in err[0]
        assert "held by " in err[0] and "/alice since" in err[0]
        assert "release-from" in err[0] and "Traceback" not in res.stderr
        assert lab.holder("lab-w5100-01").endswith("/alice")  # not ours to free
    finally:
        lab.client("-p", "lab-w5100-01", "release", "--kick", user="alice", check=False)


def test_second_run_waits_for_the_place(lab: Lab, tmp_path: Path) -> None:
    """A held place freed within the timeout: the waiting run gets it and passes."""
    lab.client("-p", "lab-w5100-01", "acquire", user="bob")
    try:
        p = lab.start_hil("--place", "lab-w5100-01", "--place-timeout", "120", "--suite",
                          "identity", "--out", str(tmp_path / "r"))
        time.sleep(3)
        assert p.poll() is None
    finally:
        lab.client("-p", "lab-w5100-01", "release", "--kick", user="bob", check=False)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, out[-2000:] + err[-2000:]
    assert "waiting up to 120 s for place lab-w5100-01: lab-w5100-01 held by" in out
    assert lab.holder("lab-w5100-01") is None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_unlocks_the_place(lab: Lab, tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM or SIGINT to the CI side mid-run: the remote run is stopped and tears its
    rig down, the report that exists comes home, the place is unlocked; exit 2."""
    p = lab.start_hil("--place", "lab-w5100-01", "--suite", "udp,tcp", "--out",
                      str(tmp_path / "r"))
    assert p.stdout is not None
    lines = []
    for line in p.stdout:
        lines.append(line)
        if line.startswith(("PASS", "FAIL", "SKIP")):
            break
    assert lab.holder("lab-w5100-01") == lab.me, lines
    p.send_signal(sig)
    out, err = p.communicate(timeout=180)
    assert p.returncode == 2, "".join(lines) + out + err
    assert "place lab-w5100-01 unlocked" in out
    assert lab.holder("lab-w5100-01") is None
    assert (tmp_path / "r" / "hil.log").exists()
    assert "Traceback" not in err
    wait_remote_gone()


def test_kill9_leaves_a_stale_lock_the_next_run_names(lab: Lab, tmp_path: Path) -> None:
    """SIGKILL cannot unlock: the next run names the holder and how to free the place; the
    command it gives frees it. The rig host's run stops when the SSH session ends."""
    p = lab.start_hil("--place", "lab-w5100-01", "--suite", "udp,tcp", "--out",
                      str(tmp_path / "r"))
    assert p.stdout is not None
    for line in p.stdout:
        if line.startswith(("PASS", "FAIL", "SKIP")):
            break
    p.kill()
    p.wait()
    wait_remote_gone()  # the remote watcher saw the session end
    res = lab.hil("--place", "lab-w5100-01", "--place-timeout", "0", "--suite", "identity",
                  "--out", str(tmp_path / "r2"), timeout=60)
    assert res.returncode == 2
    m = re.search(r"free it: labgrid-client -x (\S+) -p lab-w5100-01 release-from (\S+)",
                  res.stderr)
    assert m is not None and m.group(2) == lab.me, res.stderr
    assert f"held by {lab.me} since" in res.stderr
    lab.client("-p", "lab-w5100-01", "release-from", m.group(2))
    assert lab.holder("lab-w5100-01") is None


def test_lab_errors_are_one_line(lab: Lab, tmp_path: Path) -> None:
    """No coordinator, no such place, no tag, SSH that fails: one line each, exit 2."""
    dead = f"127.0.0.1:{free_port()}"
    cases = [
        (["--place", "lab-w5100-01", "--coordinator", dead],
         f"cannot reach the labgrid coordinator at {dead}"),
        (["--place", "no-such-place"], "no place no-such-place on the coordinator"),
        (["--place", "tag:nosuchtag"], "has tag nosuchtag"),
    ]
    # a place whose rig host does not answer SSH
    lab.client("-p", "lab-broken", "create")
    lab.client("-p", "lab-broken", "set-tags", "rig=sim-w5100")
    lab.client("-p", "lab-broken", "add-match", "simhost/sim-w5100/NetworkService")
    broken_cfg = lab.tmp / "ssh_config_broken"
    broken_cfg.write_text("Host *\n  IdentityFile /dev/null\n  IdentitiesOnly yes\n"
                          f"  UserKnownHostsFile {lab.tmp}/known_hosts\n")
    try:
        for args, want in cases:
            res = lab.hil(*args, "--suite", "identity", "--out", str(tmp_path / "r"),
                          timeout=60)
            assert res.returncode == 2, (args, res.stdout, res.stderr)
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and want in lines[0], (args, res.stderr)
        env = {**lab.env, "HILKIT_SSH_CONFIG": str(broken_cfg)}
        res = subprocess.run([sys.executable, "-m", "hilkit.cli", "hil", "--place", "lab-broken",
                              "--suite", "identity", "--out", str(tmp_path / "r")], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2
        assert f"ssh to root@127.0.0.1 port {lab.ssh_port} failed" in res.stderr
        assert f"try: ssh -F {broken_cfg} -p {lab.ssh_port} root@127.0.0.1 true" in res.stderr
        assert "Traceback" not in res.stderr
        assert lab.holder("lab-broken") is None  # unlocked after the failure
    finally:
        lab.client("-p", "lab-broken", "delete", check=False)


# -- power: the recovery suite cuts the board's power through the place -----------------------

POWER_OFF_S = 0.4
OUTLET = {"w5100": 1, "enc28j60": 2}  # lab/sim.yaml


@pytest.fixture(scope="module")
def power_places(lab: Lab) -> Iterator[dict[str, str]]:
    """A place per simulated rig that also matches its NetworkPowerPort, running a copy of
    the shipped rig file that allows the cut (``power_off_s``), found on the rig host
    through ``$HILKIT_RIGS``."""
    rigs = lab.tmp / "rigs"
    rigs.mkdir()
    for chip in OUTLET:
        text = (REPO / "rigs" / f"sim-{chip}.toml").read_text()
        text = text.replace(f'name = "sim-{chip}"', f'name = "sim-{chip}-power"')
        text = text.replace("[suites.recovery]", "[suites.recovery]\nbytes = 262_144\n"
                            f"power_off_s = {POWER_OFF_S}")
        (rigs / f"sim-{chip}-power.toml").write_text(text)
    hilkit = lab.tmp / "hilkit-power"
    hilkit.write_text(f"#!/bin/sh\nHILKIT_RIGS={rigs} PYTHONPATH={REPO} exec {sys.executable} "
                      '-m hilkit.cli "$@"\n')
    hilkit.chmod(0o755)
    places = {}
    for chip in OUTLET:
        place = f"lab-{chip}-power"
        lab.client("-p", place, "create")
        lab.client("-p", place, "set-tags", f"rig=sim-{chip}-power", f"hilkit={hilkit}")
        lab.client("-p", place, "add-match", f"simhost/sim-{chip}/NetworkService")
        lab.client("-p", place, "add-match", f"simhost/sim-{chip}/NetworkPowerPort")
        places[chip] = place
    try:
        yield places
    finally:
        for place in places.values():
            lab.client("-p", place, "delete", check=False)


def power_sockets_left() -> list[Path]:
    return sorted(Path("/tmp").glob("hilkit-power.*.sock"))


@pytest.mark.parametrize("chip", ["w5100", "enc28j60"])
def test_power_cut_mid_transfer(lab: Lab, power_places: dict[str, str], tmp_path: Path,
                                chip: str) -> None:
    """The recovery suite's power check through a place with a power resource: the rig
    host asks the channel, the CI side switches the outlet with labgrid's power driver,
    the simulated chip follows the outlet (off: it stops answering and forgets; on: it
    comes up at its reset values), the driver re-initialises it and the TCP transfer
    completes intact."""
    outlet = OUTLET[chip]
    switched0 = len(lab.switch.switched(outlet))
    t0 = time.monotonic()
    res = lab.hil("--place", power_places[chip], "--suite", "recovery", "-k", "power",
                  "--out", str(tmp_path / "r"), timeout=300)
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "PASS  recovery::test_reset_mid_transfer[power]" in res.stdout
    assert f"power channel open (simhost/sim-{chip}/NetworkPowerPort" in res.stdout
    assert "power off (" in res.stdout and "asked by the rig host" in res.stdout
    assert f"place {power_places[chip]} unlocked" in res.stdout
    # the switch saw the outlet go off, then on: labgrid's driver, asked by the rig host
    assert lab.switch.switched(outlet)[switched0:] == [False, True]
    assert lab.switch.state(outlet)[1] is True
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    power = results["lab"]["power"]
    assert power["resource"] == f"simhost/sim-{chip}/NetworkPowerPort/NetworkPowerPort"
    assert [(r["request"], r["reply"]) for r in power["requests"]] == [
        ("info", power["requests"][0]["reply"]), ("off", "ok off"), ("on", "ok on")]
    figures = results["figures"]
    assert figures["recovery_power_model_offs"] >= 1  # the chip model lost its power
    assert figures["recovery_power_off_s"] >= POWER_OFF_S
    # the driver noticed and set the chip up again
    assert figures.get("recovery_power_resets", 0) + figures.get("recovery_power_reopens", 0) >= 1
    assert not power_sockets_left()
    print(f"power cut through the place ({chip}): {took:.1f} s")


def test_power_cut_not_allowed_skips(lab: Lab, power_places: dict[str, str],
                                     tmp_path: Path) -> None:
    """A place with power, a rig file that does not allow the cut (the shipped sim-w5100):
    the check skips saying what to add; the switch is left alone."""
    place = power_places["w5100"]
    before = len(lab.switch.switched(1))
    lab.client("-p", place, "set-tags", "rig=sim-w5100")
    try:
        res = lab.hil("--place", place, "--suite", "recovery", "-k", "power", "--out",
                      str(tmp_path / "r"), timeout=300)
    finally:
        lab.client("-p", place, "set-tags", "rig=sim-w5100-power")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert ("SKIP  recovery::test_reset_mid_transfer[power]" in res.stdout
            and "add power_off_s = 1.0 (seconds without power) to [suites.recovery] in"
            in res.stdout), res.stdout
    assert len(lab.switch.switched(1)) == before

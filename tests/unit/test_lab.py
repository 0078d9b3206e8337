"""hilkit/lab without a lab: selectors, claiming against a fake coordinator, the place's
rig and host, the remote script, the report's tar stream, ``hilkit hil --place``'s
arguments and errors (docs/lab.md)."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hilkit.cli import build_parser
from hilkit.cli import main as cli_main
from hilkit.lab import remote
from hilkit.lab.place import (
    LabError,
    PlaceInfo,
    ReservationInfo,
    Resource,
    Selector,
    SshService,
    claim,
    coordinator_address,
    hilkit_of,
    parse_selector,
    rig_of,
    ssh_service,
)
from hilkit.lab.power import (
    POWER_ENV,
    ChannelError,
    PowerChannel,
    PowerServer,
    describe,
    power_resource,
    unsupported_power,
)
from hilkit.lab.run import run_place
from hilkit.lab.simswitch import OutletFollower, SimSwitch

REPO = Path(__file__).resolve().parents[2]


# -- selectors and addresses -----------------------------------------------------------------


def test_parse_selector() -> None:
    assert parse_selector("rpi-w5100-03") == Selector(name="rpi-w5100-03")
    assert parse_selector("tag:w5100") == Selector(tags=(("w5100", None),))
    assert parse_selector("tag:rig=rpi-w5100,shelf=2") == Selector(
        tags=(("rig", "rpi-w5100"), ("shelf", "2")))
    assert str(parse_selector("tag:w5100,rig=x")) == "tag:w5100,rig=x"
    assert parse_selector("tag:w5100").describe() == "a place with tag w5100"


@pytest.mark.parametrize("text, why", [
    ("tag:", "needs a tag"),
    ("tag:W5100", "tag key"),
    ("tag:rig=", "KEY=VALUE"),
    ("", "not a place name"),
    ("a b", "not a place name"),
    ("-x", "not a place name"),
])
def test_parse_selector_refuses(text: str, why: str) -> None:
    with pytest.raises(LabError, match=why):
        parse_selector(text)


def test_selector_matches() -> None:
    p = PlaceInfo("p1", tags={"w5100": "1", "rig": "rpi-w5100"})
    assert parse_selector("p1").matches(p)
    assert not parse_selector("p").matches(p)  # a name is exact, not a substring
    assert parse_selector("tag:w5100").matches(p)
    assert parse_selector("tag:rig=rpi-w5100,w5100").matches(p)
    assert not parse_selector("tag:rig=sim-w5100").matches(p)
    assert not parse_selector("tag:enc28j60").matches(p)


def test_coordinator_address() -> None:
    assert coordinator_address(None, {}) == "127.0.0.1:20408"
    assert coordinator_address(None, {"LG_COORDINATOR": "lab:1234"}) == "lab:1234"
    assert coordinator_address("lab", {"LG_COORDINATOR": "x:1"}) == "lab:20408"
    assert coordinator_address("10.0.0.1:5", {}) == "10.0.0.1:5"
    for bad in ("ws://lab:20408/ws", "lab:0", "lab:x", "a b"):
        with pytest.raises(LabError, match="--coordinator"):
            coordinator_address(bad, {})


# -- a place's rig and host --------------------------------------------------------------------


def ns(port: int = 22, avail: bool = True) -> Resource:
    return Resource(("exp", "sim-w5100", "NetworkService", "NetworkService"),
                    {"address": "10.0.0.5", "username": "root", "port": port}, avail)


def test_rig_hilkit_and_host_of_a_place() -> None:
    p = PlaceInfo("p1", tags={"rig": "sim-w5100", "hilkit": "/opt/hk/bin/hilkit"},
                  resources=(ns(2222),))
    assert rig_of(p) == "sim-w5100"
    assert hilkit_of(p) == "/opt/hk/bin/hilkit"
    assert hilkit_of(PlaceInfo("p2")) == "hilkit"
    assert ssh_service(p) == SshService("10.0.0.5", "root", 2222)


@pytest.mark.parametrize("place, why", [
    (PlaceInfo("p1"), "no rig tag naming its rig file; set it: labgrid-client -p p1 set-tags"),
    (PlaceInfo("p1", tags={"rig": "../x y"}), "is not a rig name"),
])
def test_rig_of_refuses(place: PlaceInfo, why: str) -> None:
    with pytest.raises(LabError, match=why.replace("(", r"\(")):
        rig_of(place)


@pytest.mark.parametrize("resources, why", [
    ((), "no NetworkService resource .* add-match EXPORTER/GROUP/NetworkService"),
    ((ns(), ns()), "matches 2 NetworkService resources"),
    ((ns(avail=False),), "not available .* exporter exp is offline"),
    ((ns(port=0),), "port 0 is not 1..65535"),
])
def test_ssh_service_refuses(resources: tuple[Resource, ...], why: str) -> None:
    with pytest.raises(LabError, match=why):
        ssh_service(PlaceInfo("p1", tags={"rig": "r"}, resources=resources))


def test_hilkit_tag_refuses_spaces() -> None:
    with pytest.raises(LabError, match="without spaces"):
        hilkit_of(PlaceInfo("p1", tags={"hilkit": "rm -rf"}))


# -- claiming, against a fake coordinator -------------------------------------------------------


class FakeCoordinator:
    """The coordinator's rules that claim relies on: a reservation is allocated a free
    place (no lock, no other reservation), oldest first; a lock needs the allocation."""

    address = "lab:20408"
    me = "ci/root"

    def __init__(self, places: list[PlaceInfo]) -> None:
        self._places = {p.name: p for p in places}
        self.res: dict[str, ReservationInfo] = {}
        self.log: list[str] = []
        self._n = 0

    def _schedule(self) -> None:
        for tok, r in self.res.items():
            if r.state != "waiting":
                continue
            p = self._places[r.place or ""]
            taken = any(o.state in ("allocated", "acquired") and o.place == p.name
                        for o in self.res.values())
            if p.acquired is None and p.reservation is None and not taken:
                self.res[tok] = ReservationInfo(tok, r.owner, "allocated", p.name)
                self._places[p.name] = PlaceInfo(p.name, p.tags, None, tok, p.changed,
                                                 p.resources)

    def places(self) -> dict[str, PlaceInfo]:
        return dict(self._places)

    def reservations(self) -> dict[str, ReservationInfo]:
        return dict(self.res)

    def reserve(self, place: str) -> str:
        self._n += 1
        tok = f"T{self._n}"
        self.res[tok] = ReservationInfo(tok, self.me, "waiting", place)
        self.log.append(f"reserve {place}")
        self._schedule()
        return tok

    def poll(self, token: str) -> ReservationInfo:
        r = self.res[token]
        return r if r.state != "waiting" else ReservationInfo(token, r.owner, "waiting")

    def cancel(self, token: str) -> None:
        r = self.res.pop(token)
        self.log.append(f"cancel {token}")
        if r.place and self._places[r.place].reservation == token:
            p = self._places[r.place]
            self._places[r.place] = PlaceInfo(p.name, p.tags, p.acquired, None, p.changed,
                                              p.resources)
        self._schedule()

    def acquire(self, place: str) -> None:
        p = self._places[place]
        if p.acquired:
            raise LabError(f"Place {place} is already acquired")
        self._places[place] = PlaceInfo(p.name, p.tags, self.me, p.reservation, 1.0,
                                        p.resources)
        self.log.append(f"acquire {place}")

    def release(self, place: str) -> None:
        p = self._places[place]
        self._places[place] = PlaceInfo(p.name, p.tags, None, p.reservation, 2.0, p.resources)
        self.log.append(f"release {place}")

    def hold(self, place: str, who: str, since: float = 1_700_000_000.0) -> None:
        p = self._places[place]
        self._places[place] = PlaceInfo(p.name, p.tags, who, None, since, p.resources)

    def close(self) -> None:
        self.log.append("close")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += max(s, 0.01)


def lab_places() -> list[PlaceInfo]:
    return [PlaceInfo("rpi-w5100-01", {"rig": "rpi-w5100", "w5100": "1"}),
            PlaceInfo("rpi-w5100-02", {"rig": "rpi-w5100", "w5100": "1"}),
            PlaceInfo("rpi-enc-01", {"rig": "rpi-enc28j60", "enc28j60": "1"})]


def test_claim_a_free_place_by_name() -> None:
    c = FakeCoordinator(lab_places())
    clock = Clock()
    got = claim(c, parse_selector("rpi-w5100-02"), 10, sleep=clock.sleep, clock=clock)
    assert got.place.name == "rpi-w5100-02" and got.place.acquired == "ci/root"
    assert c.log == ["reserve rpi-w5100-02", "acquire rpi-w5100-02"]
    assert clock.t == 0  # no waiting


def test_claim_by_tag_takes_a_free_one_and_cancels_the_rest() -> None:
    c = FakeCoordinator(lab_places())
    c.hold("rpi-w5100-01", "alice/alice")
    clock = Clock()
    got = claim(c, parse_selector("tag:w5100"), 10, sleep=clock.sleep, clock=clock)
    assert got.place.name == "rpi-w5100-02"
    assert c.log[:2] == ["reserve rpi-w5100-01", "reserve rpi-w5100-02"]
    assert "cancel T1" in c.log and f"cancel {got.token}" not in c.log
    assert list(c.res) == [got.token]


def test_claim_waits_until_the_holder_lets_go() -> None:
    c = FakeCoordinator(lab_places())
    c.hold("rpi-w5100-01", "alice/alice")
    clock = Clock()
    said: list[str] = []

    def sleep(s: float) -> None:
        clock.sleep(s)
        if clock.t >= 3:
            c.release("rpi-w5100-01")
            c._schedule()

    got = claim(c, parse_selector("rpi-w5100-01"), 60, sleep=sleep, clock=clock,
                say=said.append, wall=lambda: 1_700_000_060.0)
    assert got.place.name == "rpi-w5100-01" and 3 <= clock.t < 5
    assert said == ["waiting up to 60 s for place rpi-w5100-01: rpi-w5100-01 held by "
                    "alice/alice since 2023-11-14 22:13:20 UTC (60 s ago)"]


def test_claim_times_out_naming_the_holder_and_the_fix() -> None:
    c = FakeCoordinator(lab_places())
    c.hold("rpi-w5100-01", "ci/root")
    clock = Clock()
    with pytest.raises(LabError) as e:
        claim(c, parse_selector("rpi-w5100-01"), 5, sleep=clock.sleep, clock=clock,
              wall=lambda: 1_700_003_600.0)
    msg = str(e.value)
    assert msg == ("place rpi-w5100-01 was not free within 5 s (--place-timeout): "
                   "rpi-w5100-01 held by ci/root since 2023-11-14 22:13:20 UTC (60 min ago); "
                   "if that run is gone (killed), free it: labgrid-client -x lab:20408 "
                   "-p rpi-w5100-01 release-from ci/root")
    assert c.res == {}  # the reservation was cancelled
    assert "acquire rpi-w5100-01" not in c.log


def test_claim_timeout_zero_asks_once() -> None:
    c = FakeCoordinator(lab_places())
    c.hold("rpi-enc-01", "bob/bob")
    clock = Clock()
    with pytest.raises(LabError, match="a place with tag enc28j60 was not free within 0 s"):
        claim(c, parse_selector("tag:enc28j60"), 0, sleep=clock.sleep, clock=clock)
    assert clock.t == 0


def test_claim_names_what_does_not_exist() -> None:
    c = FakeCoordinator(lab_places())
    with pytest.raises(LabError, match=r"no place rpi-w5100-09 on the coordinator at "
                       r"lab:20408 \(places: rpi-enc-01, rpi-w5100-01, rpi-w5100-02\); "
                       "create it: labgrid-client -x lab:20408 -p rpi-w5100-09 create"):
        claim(c, parse_selector("rpi-w5100-09"), 5)
    with pytest.raises(LabError, match="no place on the coordinator at lab:20408 has tag ppp"):
        claim(c, parse_selector("tag:ppp"), 5)
    assert c.log == []


def test_claim_interrupted_cancels_its_reservations() -> None:
    c = FakeCoordinator(lab_places())
    c.hold("rpi-w5100-01", "alice/alice")

    def sleep(s: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        claim(c, parse_selector("rpi-w5100-01"), 60, sleep=sleep)
    assert c.res == {}


def test_claim_reserved_for_someone_else() -> None:
    c = FakeCoordinator(lab_places())
    other = ReservationInfo("R9", "night/ci", "allocated", "rpi-enc-01")
    c.res["R9"] = other
    p = c._places["rpi-enc-01"]
    c._places["rpi-enc-01"] = PlaceInfo(p.name, p.tags, None, "R9")
    clock = Clock()
    with pytest.raises(LabError, match=r"rpi-enc-01 reserved for night/ci \(reservation R9\)"):
        claim(c, parse_selector("rpi-enc-01"), 1, sleep=clock.sleep, clock=clock)


# -- run_place: the errors it prints, the lock it gives back ------------------------------------


def test_run_place_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    c = FakeCoordinator(lab_places())
    assert run_place("nope", connect=lambda a: c, timeout=0) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hilkit hil: no place nope on the coordinator")

    def unreachable(address: str) -> FakeCoordinator:
        raise LabError(f"cannot reach the labgrid coordinator at {address}")

    assert run_place("p", coordinator="lab:1", connect=unreachable) == 2
    assert capsys.readouterr().err == ("hilkit hil: cannot reach the labgrid coordinator at "
                                       "lab:1\n")
    assert run_place("tag:", connect=unreachable) == 2
    assert "--place: tag: needs a tag" in capsys.readouterr().err
    assert run_place("p", timeout=-1, connect=unreachable) == 2
    assert "--place-timeout must be 0 or more" in capsys.readouterr().err


def test_run_place_unlocks_when_the_place_is_not_runnable(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A place without a NetworkService: locked, then the problem, then unlocked."""
    c = FakeCoordinator(lab_places())
    code = run_place("rpi-w5100-01", connect=lambda a: c, timeout=0, out=tmp_path / "r")
    assert code == 2
    out, err = capsys.readouterr()
    assert "no NetworkService resource" in err and len(err.strip().splitlines()) == 1
    assert "place rpi-w5100-01 unlocked" in out
    assert c.log[-2:] == ["cancel T1", "close"] and "release rpi-w5100-01" in c.log
    assert c._places["rpi-w5100-01"].acquired is None


# -- the remote side ---------------------------------------------------------------------------


def test_ssh_argv_and_the_line_to_try() -> None:
    s = remote.Ssh(SshService("rig-03.lab", "root", 2222), config="/etc/hk/ssh_config")
    argv = s.argv("true")
    assert argv[:3] == ["ssh", "-F", "/etc/hk/ssh_config"]
    assert argv[-3:] == ["rig-03.lab", "--", "true"]
    assert "BatchMode=yes" in argv and "-p" in argv and "2222" in argv
    assert s.try_line() == "ssh -F /etc/hk/ssh_config -p 2222 root@rig-03.lab true"
    assert remote.Ssh.from_env(SshService("h", "u"), {}).config is None


def test_hil_args() -> None:
    assert remote.hil_args("r", None, None, 1) == ["--rig", "r"]
    assert remote.hil_args("r", "icmp,udp", "not big", 3) == [
        "--rig", "r", "--suite", "icmp,udp", "-k", "not big", "--repeat", "3"]


def test_run_script_runs_and_stops_on_end_of_file(tmp_path: Path) -> None:
    """The script under sh: it prints its directory first, passes the run's exit status
    through, and the end of its stdin stops the run (SIGTERM)."""
    fake = tmp_path / "fakehil"
    fake.write_text("\n".join([
        "#!/bin/sh",
        'trap "echo stopped; exit 2" TERM',
        'out=""',
        'while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done',
        'mkdir -p "$out"; echo ran > "$out/junit.xml"',
        'if [ -n "$SLOW" ]; then echo ready; while :; do sleep 0.05; done; fi',
        "echo done; exit 1", ""]))
    fake.chmod(0o755)
    script = remote.run_script(str(fake), remote.hil_args("r", None, None, 1))
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    p = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=env)
    assert p.stdout is not None and p.stdin is not None
    first, *rest = p.stdout.read().splitlines()  # the session stays open: the run ends itself
    assert p.wait(20) == 1 and rest == ["done"]
    p.stdin.close()
    d = remote.remote_dir(first)
    assert d is not None and d.startswith(str(tmp_path))
    assert (Path(d) / "report" / "junit.xml").read_text() == "ran\n"
    slow = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**env, "SLOW": "1"})
    assert slow.stdout is not None and slow.stdin is not None
    assert slow.stdout.readline().startswith(remote.DIR_LINE)
    assert slow.stdout.readline() == "ready\n"
    slow.stdin.close()
    out = slow.stdout.read()
    assert slow.wait(20) == 2 and "stopped" in out


def test_run_script_without_hilkit(tmp_path: Path) -> None:
    script = remote.run_script(str(tmp_path / "nothing"), ["--rig", "r"])
    p = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == remote.EXIT_NO_HILKIT and p.stdout == ""


def test_remote_dir() -> None:
    assert remote.remote_dir("hilkit-lab: dir /tmp/hilkit-lab.AbC123") == "/tmp/hilkit-lab.AbC123"
    for bad in ("hilkit-lab: dir /", "hilkit-lab: dir /tmp/../etc/hilkit-lab.x",
                "hilkit-lab: dir /tmp/x y/hilkit-lab.a", "PASS x",
                "hilkit-lab: dir ~/hilkit-lab.a"):
        assert remote.remote_dir(bad) is None, bad


def _tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            t.addfile(info, io.BytesIO(data) if info.isfile() else None)
    buf.seek(0)
    return buf


def test_untar_brings_files_home(tmp_path: Path) -> None:
    d = tarfile.TarInfo("./pcap")
    d.type = tarfile.DIRTYPE
    link = tarfile.TarInfo("./evil")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    names = remote._untar(_tar([(tarfile.TarInfo("./junit.xml"), b"<x/>"), (d, b""),
                                (tarfile.TarInfo("./pcap/a.pcapng"), b"pc"), (link, b"")]),
                          tmp_path)
    assert names == ["junit.xml", "pcap/a.pcapng"]
    assert (tmp_path / "pcap" / "a.pcapng").read_bytes() == b"pc"
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/../../x"])
def test_untar_refuses_paths_outside(tmp_path: Path, name: str) -> None:
    with pytest.raises(tarfile.TarError, match="refusing"):
        remote._untar(_tar([(tarfile.TarInfo(name), b"x")]), tmp_path / "in")


# -- the command line ----------------------------------------------------------------------------


def test_place_and_rig_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["hil", "--rig", "sim-w5100", "--place", "p"])
    assert e.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["hil"])
    assert e.value.code == 2
    assert "one of the arguments --rig --place is required" in capsys.readouterr().err
    args = build_parser().parse_args(["hil", "--place", "tag:w5100", "--place-timeout", "30",
                                      "--coordinator", "lab:1", "--suite", "icmp"])
    assert (args.place, args.place_timeout, args.coordinator, args.suite, args.rig) == (
        "tag:w5100", 30.0, "lab:1", "icmp", None)


@pytest.mark.parametrize("opt", [["--place-timeout", "5"], ["--coordinator", "lab:1"]])
def test_place_options_need_place(opt: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["hil", "--rig", "sim-w5100", *opt]) == 2
    assert capsys.readouterr().err == f"hilkit hil: {opt[0]}: only with --place\n"


# -- the shipped exporter files ------------------------------------------------------------------


def test_exporter_files_name_labgrid_resources() -> None:
    """Every lab/*.yaml renders as labgrid renders exporter files, and every resource it
    names is one the exporter exports; every group has a NetworkService."""
    pytest.importorskip("labgrid")
    import contextlib

    from labgrid.remote.config import ResourceConfig
    from labgrid.remote.exporter import exports

    files = sorted((REPO / "lab").glob("*.yaml"))
    assert len(files) >= 5
    for f in files:
        with contextlib.redirect_stdout(io.StringIO()):
            cfg = ResourceConfig(str(f), {"env": {}, "isolated": False, "hostname": "h",
                                          "name": "n"})
        for group, resources in cfg.data.items():
            assert "NetworkService" in resources, (f.name, group)
            for cls in resources:
                assert cls == "location" or cls in exports, (f.name, group, cls)


# -- power: the place's power resource, the channel, the simulated switch and board ------------

def pdu(name: str = "NetworkPowerPort", avail: bool = True, cls: str = "NetworkPowerPort",
        host: str = "pdu-1.lab", model: str = "gude") -> Resource:
    return Resource(path=("exp", "rpi", cls, name), avail=avail,
                    params={"model": model, "host": host, "index": "3"})


def test_power_resource_is_the_one_networkpowerport() -> None:
    assert power_resource(PlaceInfo("p", resources=(ns(),))) is None
    r = pdu()
    assert power_resource(PlaceInfo("p", resources=(ns(), r))) is r
    with pytest.raises(LabError, match=r"matches 2 NetworkPowerPort resources .* needs "
                                       r"exactly one: narrow the match"):
        power_resource(PlaceInfo("p", resources=(r, pdu("b"))))
    with pytest.raises(LabError, match=r"is not available .* exporter exp is offline"):
        power_resource(PlaceInfo("p", resources=(pdu(avail=False),)))
    other = pdu(cls="PDUDaemonPort")
    assert power_resource(PlaceInfo("p", resources=(other,))) is None
    assert unsupported_power(PlaceInfo("p", resources=(ns(), other))) == [other]
    assert describe("p", r) == {"place": "p", "resource": "exp/rpi/NetworkPowerPort/"
                                "NetworkPowerPort", "class": "NetworkPowerPort",
                                "model": "gude", "host": "pdu-1.lab", "index": "3"}


class FakeSwitch:
    def __init__(self, fail: str | None = None) -> None:
        self.state = True
        self.log: list[str] = []
        self.fail = fail

    def _maybe_fail(self, what: str) -> None:
        self.log.append(what)
        if self.fail == what:
            raise RuntimeError(f"PDU said no to {what}\nsecond line")

    def on(self) -> None:
        self._maybe_fail("on")
        self.state = True

    def off(self) -> None:
        self._maybe_fail("off")
        self.state = False

    def get(self) -> bool:
        self._maybe_fail("get")
        return self.state


def test_power_server_answers_and_switches_on_when_left_off() -> None:
    said: list[str] = []
    sw = FakeSwitch()
    server = PowerServer(sw, describe("p", pdu()), say=said.append)
    try:
        assert server.handle("info").startswith('ok {"class": "NetworkPowerPort"')
        assert server.handle("off") == "ok off" and sw.state is False
        assert server.handle("get") == "ok off"
        assert said == ["power off (exp/rpi/NetworkPowerPort/NetworkPowerPort), asked by "
                        "the rig host"]
        assert server.handle("reboot").startswith("error unknown request 'reboot'")
    finally:
        server.close()
    assert sw.state is True and sw.log[-1] == "on"  # the run left it off: on again
    assert "the run had left it off" in said[-1]
    assert [e.request for e in server.events] == ["info", "off", "get", "reboot"]
    assert server.summary()["resource"] == "exp/rpi/NetworkPowerPort/NetworkPowerPort"
    assert not os.path.exists(server.path)


def test_power_server_says_a_failure_in_one_line() -> None:
    said: list[str] = []
    server = PowerServer(FakeSwitch(fail="off"), describe("p", pdu()), say=said.append)
    try:
        assert server.handle("off") == ("error power off failed: RuntimeError: PDU said no "
                                        "to off")
    finally:
        server.close()
    assert not server.left_off and said == []
    stuck = PowerServer(FakeSwitch(fail="on"), describe("p", pdu()), say=said.append)
    assert stuck.handle("off") == "ok off"
    stuck.close()
    assert said[-1].startswith("the power may stay OFF") and "labgrid-client -p p power on" \
        in said[-1]


def test_power_channel_over_its_socket() -> None:
    sw = FakeSwitch()
    server = PowerServer(sw, describe("p", pdu()))
    try:
        ch = PowerChannel.from_env({POWER_ENV: server.path})
        assert ch is not None and ch.exists()
        assert ch.info()["resource"] == "exp/rpi/NetworkPowerPort/NetworkPowerPort"
        assert ch.request("off") == "off" and sw.state is False
        assert ch.request("on") == "on" and sw.state is True
        with pytest.raises(ChannelError, match="unknown request 'x'"):
            ch.request("x")
    finally:
        server.close()
    assert PowerChannel.from_env({}) is None
    gone = PowerChannel(server.path, timeout=2)
    assert not gone.exists()
    with pytest.raises(ChannelError, match=f"power channel {server.path}: off: "):
        gone.request("off")


def test_open_power_says_why_there_is_none() -> None:
    import io as _io

    from hilkit.lab.run import _close_power, _open_power

    out, err = _io.StringIO(), _io.StringIO()
    assert _open_power(PlaceInfo("p", resources=(ns(),)), None, out, err) is None
    assert out.getvalue() == err.getvalue() == ""
    assert _open_power(PlaceInfo("p", resources=(ns(), pdu("pdud", cls="PDUDaemonPort"))),
                       None, out, err) is None
    assert "exp/rpi/PDUDaemonPort/pdud is a power resource hilkit does not drive" in \
        err.getvalue()

    def refuse(place: str, r: Resource) -> FakeSwitch:
        raise LabError(f"place {place}: labgrid cannot drive {r} (no such model)")

    err = _io.StringIO()
    assert _open_power(PlaceInfo("p", resources=(ns(), pdu())), refuse, out, err) is None
    assert err.getvalue().count("\n") == 1
    assert "labgrid cannot drive" in err.getvalue() and "power check will skip" in \
        err.getvalue()
    server = _open_power(PlaceInfo("p", resources=(ns(), pdu())),
                         lambda place, r: FakeSwitch(), out, err)
    assert server is not None
    _close_power(server)
    assert "place p: power channel open (exp/rpi/NetworkPowerPort/NetworkPowerPort)" in \
        out.getvalue()


def test_ssh_forwards_the_power_channel_and_the_script_passes_it_on(tmp_path: Path) -> None:
    ssh = remote.Ssh(SshService("pi", "root", 22))
    sock = remote.power_socket()
    assert sock.startswith("/tmp/hilkit-power.") and sock.endswith(".sock")
    assert sock != remote.power_socket()
    argv = ssh.argv("true", forward=(sock, "/run/x/power.sock"))
    assert argv[argv.index("-R") + 1] == f"{sock}:/run/x/power.sock"
    assert "ExitOnForwardFailure=no" in argv and argv[-3:] == ["pi", "--", "true"]
    fake = tmp_path / "fakehil"
    fake.write_text(f'#!/bin/sh\necho "channel=${POWER_ENV}"\n')
    fake.chmod(0o755)
    there = tmp_path / "power.sock"
    there.write_text("")  # stands in for the socket sshd makes
    script = remote.run_script(str(fake), ["--rig", "r"], power=str(there))
    p = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert p.stdout is not None and p.stdin is not None
    out = p.stdout.read()  # the session stays open: the run ends itself
    assert p.wait(20) == 0 and f"channel={there}" in out
    p.stdin.close()
    assert not there.exists()  # removed at the end of the run


def test_sim_switch_speaks_labgrids_rest_model() -> None:
    """labgrid's own NetworkPowerDriver (model rest) switches the simulated switch."""
    pytest.importorskip("labgrid")
    from hilkit.lab.coordinator import LabgridPower

    with SimSwitch() as switch:
        lp = LabgridPower("p", pdu(host=switch.url(), model="rest"))
        lp.off()
        assert lp.get() is False and switch.state(3) == (1, False)
        lp.on()
        assert lp.get() is True and switch.switched(3) == [False, True]
        lp.close()
        with pytest.raises(LabError, match=r"^place p: labgrid cannot drive "
                                           r"exp/rpi/NetworkPowerPort/NetworkPowerPort \("):
            LabgridPower("p", pdu(model="nosuchpdu"))


def test_sim_switch_refuses_what_it_does_not_know() -> None:
    import urllib.error
    import urllib.request

    with SimSwitch() as switch:
        for url, data, code in ((switch.url(9), None, 404), (switch.url(1), b"x", 400),
                                (switch.url(1) + "?since=x", None, 400)):
            req = urllib.request.Request(url, data=data, method="PUT" if data else "GET")
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=5)
            assert e.value.code == code
        assert switch.switched(1) == []


def test_follower_misses_no_switching() -> None:
    """Off and on again between two looks still reaches the board as off, then on."""
    with SimSwitch() as switch:
        seen: list[bool] = []
        f = OutletFollower(switch.url(2), seen.append)
        try:
            switch.set(2, False)
            _wait(lambda: seen == [False])
            switch.set(2, True)
            _wait(lambda: seen == [False, True])
            with switch._cond:  # a blip faster than any look: both switchings at once
                switch.set(2, False)
                switch.set(2, True)
            _wait(lambda: len(seen) == 4)
            assert seen == [False, True, False, True] and f.changes == 4 and f.error is None
        finally:
            f.close()
        switch.set(3, False)
        late: list[bool] = []
        OutletFollower(switch.url(3), late.append).close()
        assert late == [False]  # plugged into an outlet that is off
    with pytest.raises(ValueError, match="is not a simulated switch's outlet"):
        OutletFollower("http://127.0.0.1:1/relay/1", late.append)


def _wait(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_chip_model_loses_its_power() -> None:
    """Off: the chip stops answering, forgets its registers and /RESET cannot wake it;
    on: it comes up at its reset values, counted as a reset and a power-on."""
    from hilkit.drivers.w5100.model import W5100Model
    from hilkit.drivers.w5100.regs import SHAR
    from hilkit.port.model import model_power

    m = W5100Model()
    assert model_power(m) == m.set_power
    m.transfer(bytes((0xF0, 0, SHAR, 0x02)))
    assert m.transfer(bytes((0x0F, 0, SHAR, 0)))[3] == 0x02
    resets = m.stats["resets"]
    m.set_power(False)
    assert not m.powered and m.power_offs == 1
    assert m.transfer(bytes((0x0F, 0, SHAR, 0))) == b"\x00\x00\x00\x00"  # silent
    m.reset_pin.set(False)
    m.reset_pin.set(True)  # a /RESET pulse from the host: still no supply
    m.hard_reset()
    assert m.transfer(bytes((0x0F, 0, SHAR, 0))) == b"\x00\x00\x00\x00"
    assert m.stats["hard_resets"] == 0
    m.set_power(False)  # no change: not counted
    m.set_power(True)
    assert m.powered and m.power_ons == 1 and m.stats["resets"] == resets + 1
    assert m.transfer(bytes((0x0F, 0, SHAR, 0))) == b"\x00\x01\x02\x00"  # reset value


def test_chip_model_powers_up_held_in_reset() -> None:
    """Power on while the host holds /RESET low: the chip starts when it lets go."""
    from hilkit.drivers.enc28j60.model import ENC28J60Model

    m = ENC28J60Model()
    m.set_power(False)
    m.reset_pin.set(False)
    m.set_power(True)
    assert m.stats["resets"] == 0
    m.reset_pin.set(True)
    assert m.stats["resets"] == 1 and m.stats["hard_resets"] == 1


@pytest.mark.parametrize("value, problem", [
    ('"yes"', 'suites.recovery.power_off_s: expected a number, got "yes"'),
    ("true", "suites.recovery.power_off_s: expected a number, got true"),
    ("-1", "suites.recovery.power_off_s: -1 is out of range 0..600"),
    ("601", "suites.recovery.power_off_s: 601 is out of range 0..600"),
])
def test_rig_file_power_key_is_checked(tmp_path: Path, value: str, problem: str) -> None:
    from hilkit.rig import RigError, parse_rig

    text = (REPO / "rigs" / "sim-w5100.toml").read_text().replace(
        "[suites.recovery]", f"[suites.recovery]\npower_off_s = {value}")
    path = tmp_path / "sim-w5100.toml"
    path.write_text(text)
    with pytest.raises(RigError) as e:
        parse_rig(path, display="rigs/sim-w5100.toml")
    assert str(e.value) == f"rigs/sim-w5100.toml: {problem}"


def test_rig_file_power_key_defaults_to_never() -> None:
    from hilkit.rig import load_rig

    assert load_rig("sim-w5100").suite_params("recovery").number("power_off_s") == 0.0


# -- the recovery suite's power check: when it skips, and what it says --------------------------


class _Hil:
    def __init__(self, off_s: float | None) -> None:
        from hilkit.rig.suite_params import SuiteParams

        self._p = SuiteParams("recovery", {} if off_s is None else {"power_off_s": off_s})

    def params(self, suite: str) -> Any:
        return self._p


def _rig(model: object = None, simulated: bool = True) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(rig=SimpleNamespace(path=Path("rigs/sim-w5100.toml"),
                                               simulated=simulated), model=model)


def _skip_reason(rig: Any, hil: Any) -> str:
    from hilkit.hil.suites.test_recovery import _power_cut

    with pytest.raises(pytest.skip.Exception) as e:
        _power_cut(rig, hil)
    return str(e.value)


def test_power_check_skips_saying_what_to_add(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.delenv(POWER_ENV, raising=False)
    add_key = ("add power_off_s = 1.0 (seconds without power) to [suites.recovery] in "
               "rigs/sim-w5100.toml")
    both = _skip_reason(_rig(), _Hil(None))
    assert "does not allow cutting the board's power and the run has no power channel" in \
        both and add_key in both and "hilkit hil --place PLACE" in both
    assert "no power channel ($HILKIT_POWER_CHANNEL is not set)" in \
        _skip_reason(_rig(), _Hil(0.5))
    monkeypatch.setenv(POWER_ENV, str(tmp_path / "gone.sock"))
    only_key = _skip_reason(_rig(), _Hil(0.0))
    assert only_key.startswith("the rig file does not allow") and add_key in only_key
    assert "sshd refused to forward it" in _skip_reason(_rig(), _Hil(0.5))
    server = PowerServer(FakeSwitch(), describe("p", pdu()))
    try:
        monkeypatch.setenv(POWER_ENV, server.path)
        assert "its model object has no set_power(on)" in _skip_reason(_rig(object()),
                                                                      _Hil(0.5))
        from hilkit.drivers.w5100.model import W5100Model

        gude = _skip_reason(_rig(W5100Model()), _Hil(0.5))
        assert "a simulated chip follows only a simulated switch" in gude
        assert "(model gude)" in gude
    finally:
        server.close()


def test_power_check_cuts_through_the_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rest switch on a simulated rig: the check's cut goes channel -> switch -> model."""
    from hilkit.drivers.w5100.model import W5100Model
    from hilkit.hil.suites.test_recovery import _power_cut

    class Rest:  # what labgrid's rest backend does, without labgrid
        def __init__(self, switch: SimSwitch) -> None:
            self.switch = switch

        def on(self) -> None:
            self.switch.set(3, True)

        def off(self) -> None:
            self.switch.set(3, False)

        def get(self) -> bool:
            return self.switch.state(3)[1]

    class Timers:
        def __init__(self) -> None:
            self.later: list[tuple[float, Callable[[], None]]] = []

        def call_later(self, ms: float, fn: Callable[[], None]) -> None:
            self.later.append((ms, fn))

    with SimSwitch() as switch:
        server = PowerServer(Rest(switch), describe("p", pdu(host=switch.url(), model="rest")))
        try:
            monkeypatch.setenv(POWER_ENV, server.path)
            model = W5100Model()
            cut = _power_cut(_rig(model), _Hil(0.25))
            cut.start()
            timers = Timers()
            cut.cut(timers)  # type: ignore[arg-type]
            _wait(lambda: not model.powered)
            assert timers.later[0][0] == 250.0
            timers.later[0][1]()
            _wait(lambda: model.powered)
            cut.close()
        finally:
            server.close()
        assert switch.switched(3) == [False, True]
        assert cut.replies == ["off", "on"] and cut.error is None
        assert (model.power_offs, model.power_ons) == (1, 1)


def test_exporter_files_export_power() -> None:
    """lab/sim.yaml exports each board's outlet with $HILKIT_LAB_POWER (rest model, outlets
    1 and 2); the hardware files' power examples, uncommented, render to a resource of
    labgrid's (the exporter exports one it has no special class for as it is)."""
    pytest.importorskip("labgrid")
    import contextlib

    import labgrid.resource  # noqa: F401  (registers the resource classes)
    from labgrid.factory import target_factory
    from labgrid.remote.config import ResourceConfig

    def render(path: Path, env: dict[str, str]) -> dict[str, Any]:
        with contextlib.redirect_stdout(io.StringIO()):
            cfg = ResourceConfig(str(path), {"env": env, "isolated": False,
                                             "hostname": "h", "name": "n"})
        return dict(cfg.data)

    url = "http://127.0.0.1:8123/outlet/{index}"
    sim = render(REPO / "lab" / "sim.yaml", {"HILKIT_LAB_POWER": url})
    assert {g: (r["NetworkPowerPort"]["model"], r["NetworkPowerPort"]["host"],
                r["NetworkPowerPort"]["index"]) for g, r in sim.items()} == {
        "sim-w5100": ("rest", url, 1), "sim-enc28j60": ("rest", url, 2)}
    assert all("NetworkPowerPort" not in r for r in render(REPO / "lab" / "sim.yaml",
                                                            {}).values())
    examples = 0
    for f in sorted((REPO / "lab").glob("*.yaml")):
        text = f.read_text()
        if "## NetworkPowerPort:" not in text:
            continue
        tmp = REPO / "lab" / f"{f.stem}.uncommented.yaml.tmp"
        lines = [line.replace("  ## ", "  ", 1) if line.lstrip().startswith(
            ("## NetworkPowerPort:", "##   model:", "##   host:", "##   index:")) else line
                 for line in text.splitlines()]
        tmp.write_text("\n".join(lines) + "\n")
        try:
            for group, resources in render(tmp, {}).items():
                if "NetworkPowerPort" in resources:
                    examples += 1
                    assert "NetworkPowerPort" in target_factory.resources, (f.name, group)
                    assert set(resources["NetworkPowerPort"]) == {"model", "host", "index"}
        finally:
            tmp.unlink()
    assert examples >= 4

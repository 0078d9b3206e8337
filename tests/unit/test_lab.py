"""hilkit/lab without a lab: selectors, claiming against a fake coordinator, the place's
rig and host, the remote script, the report's tar stream, ``hilkit hil --place``'s
arguments and errors (docs/lab.md)."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

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
from hilkit.lab.run import run_place

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

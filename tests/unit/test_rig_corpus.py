"""A generated corpus of broken rig files: each is refused with exit status 2 and a
message naming the file and the key, by ``hilkit rig check`` and ``hilkit hil`` alike,
and never with a traceback.

The cases are derived from the shipped rigs (``rigs/*.toml``): every key path deleted,
every leaf given the wrong type, unknown keys in every table, extreme numbers in every
numeric key and every suite parameter, bad addresses, MACs, names and URLs, and
file-level garbage (invalid TOML, deep nesting, binary data, other encodings, an empty
file, a directory). Each case knows what it expects: deleting an optional key leaves a
valid rig (checked with ``parse_rig``, so nothing is built), everything else exits 2.

The bulk runs ``hilkit.cli.main`` in-process with the hardware check and the builder
replaced by tripwires: a rig file that passed validation by mistake fails its test
instead of touching anything. A small sample runs as real subprocesses.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hilkit.rig import parse_rig
from hilkit.rig.schema import display_path
from hilkit.rig.suite_params import SUITE_PARAMS

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {p.stem: tomllib.loads(p.read_text()) for p in sorted((REPO / "rigs").glob("*.toml"))}
MIN_CASES = 500


# -- writing TOML (tomllib only reads) ---------------------------------------------------


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_k(k)} = {_scalar(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def _k(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Scalars first, then one [table] per sub-table, so every key lands where it belongs."""
    lines = [f"{_k(k)} = {_scalar(v)}" for k, v in data.items() if not isinstance(v, dict)]
    out = "\n".join(lines) + ("\n" if lines else "")
    for k, v in data.items():
        if isinstance(v, dict):
            name = f"{prefix}.{_k(k)}" if prefix else _k(k)
            out += f"\n[{name}]\n" + to_toml(v, name)
    return out


# -- the cases -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    content: bytes | None  # None: ``make`` builds the path itself
    key: str | None  # the dotted key the message must name; None for file-level problems
    valid: bool = False  # a legitimate mutation: the rig must still validate
    make: str = ""  # "dir", "missing", "fifo": a path that is not a rig file


def _paths(d: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        path = f"{prefix}.{k}" if prefix else k
        yield path, v
        if isinstance(v, dict):
            yield from _paths(v, path)


def _get(d: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        d = d[part]
    return d


def _set(d: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(d)
    parts = path.split(".")
    cur = out
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value
    return out


def _delete(d: dict[str, Any], path: str) -> dict[str, Any]:
    out = copy.deepcopy(d)
    parts = path.split(".")
    cur = out
    for part in parts[:-1]:
        cur = cur[part]
    del cur[parts[-1]]
    return out


def _required(rig: dict[str, Any], path: str) -> bool:
    """What the schema (docs/rigs.md, "Keys") says may not be left out."""
    parts = path.split(".")
    peer_kind = rig.get("peer", {}).get("kind")
    if peer_kind in ("slirp", "pppd", "remote"):  # PPP: IPCP gives the DUT its address
        if path in ("dut", "dut.address"):
            return False
        if path == "peer.address":
            return peer_kind == "remote"  # slirp's is fixed; pppd's has a default
        if path in ("bus", "bus.port"):
            return peer_kind != "slirp"  # slirp provides the line
        if path == "peer.port":
            return peer_kind == "pppd"
    if path in ("driver", "driver.name", "peer", "peer.kind", "peer.address", "dut",
                "dut.address", "bus.kind", "bus.device", "bus.url", "bus.factory",
                "bus.model"):
        return True
    if path == "bus":
        return rig["driver"]["name"] not in ("tap", "tun")  # a chip's driver takes a bus
    if path == "peer.interface":
        return bool(rig["peer"]["kind"] == "host")
    if len(parts) == 3 and parts[0] == "pins":
        kind = rig["pins"][parts[1]]["kind"]
        return parts[2] == "kind" or (kind, parts[2]) in (
            ("gpiod", "chip"), ("gpiod", "line"), ("ftdi", "bit"))
    return False


NAN, INF = float("nan"), float("inf")
EXTREMES: tuple[Any, ...] = (NAN, INF, -INF, 1e308, -1, 2**63, -(2**63) - 1, 10**40)
WRONG: dict[type, tuple[Any, ...]] = {
    str: (7, True, [1, 2], {"x": 1}),
    int: ("7", True, 7.5, [7], {"x": 1}),
    bool: ("true", 1, [True]),
    dict: ("x", 7, [1]),
}
PARAM_BAD: dict[str, tuple[Any, ...]] = {
    "int": ("x", "16M", True, 1.5, [1], *EXTREMES),
    "float": ("x", True, [1.0], NAN, INF, -INF, 1e308, -1),
    "ints": ("abc", 7, [], ["a"], [-1], [NAN], [1e308], [2**63], list(range(100)),
             [1, 1], [[1]]),
}
# (key, values): each value wrong on its own, whatever the rest of the rig says.
FIELD_BAD: dict[str, tuple[Any, ...]] = {
    "peer.address": ("192.168.7.300/24", "192.168.7.1", "192.168.7.1/33",
                     "192.168.7.1/" + "9" * 5000, "192.168.7.1/" + "0" * 5000 + "24",
                     "192.168.7.1/-1", "192.168.7.1/24/24",
                     "::1/64", "", "x" * 10_000, "192.168.7.0/24", "192.168.7.255/24",
                     "224.0.0.1/24", "127.0.0.1/8", "192.168.7.1/255.255.255.0",
                     "192.168.7.1/\u0662\u0664", "192.168.7.1/24\u0000"),
    "dut.address": ("192.168.7.2/" + "9" * 5000, "192.168.7.2/99", "1.2.3", "0.0.0.0/0",
                    "192.168.7.1/24", "203.0.113.2/24"),
    "dut.gateway": ("10.0.0.1", "192.168.7.2", "192.168.7.300", "192.168.7.1/24", "", 7),
    "driver.mac": ("01:00:5e:00:00:01", "02:00:00:00:00", "zz:zz:zz:zz:zz:zz", "",
                   "02:00:00:00:00:00:00", "02-00-00-00-00-0g", 12345),
    "driver.name": ("", "nosuchchip", "w5101", "x" * 100_000, "w5100\u0000"),
    "name": ("bad name", "", "-x", "a/b", "a\u0000b"),
    "description": ("line\u0001", "\u007f"),
    "mtu": (575, 9217, 0, 1500.0),
    "peer.kind": ("", "bridge", "taps", 0),
    "peer.interface": ("", "a" * 16, "eth1/x", "eth 1", "eth1:0", ".", "..", "eth\u0000"),
    "suites": ("tcp", 7, [], ["tcpp"], [1], {}, {"tcpp": {}}),
}
BUS_BAD: dict[str, dict[str, tuple[Any, ...]]] = {
    "serial": {"bus.baudrate": (49, 4_000_001, "115200", 115200.0),
               "bus.rtscts": ("yes", 1), "bus.port": ("", "ttyS0", "\u0000", 7)},
    "spidev": {"bus.device": ("spidev0.0", "", "/dev/spidev0.0\u0000"),
               "bus.speed_hz": (999, 200_000_001), "bus.mode": (4,)},
    "ftdi": {"bus.url": ("ftdi://ftdi:232h/9", "ftdi://ftdi:nosuch/1",
                         "ftdi://ftdi:232h:" + "9" * 5000 + "/1", "ftdi://ftdi:232h:zz:1/1",
                         "ftdi://zzzzz:232h/1", "http://ftdi/1", ""),
             "bus.speed_hz": (457, 30_000_001), "bus.cs_pin": (2, 8), "bus.mode": (1, 3)},
    "sim": {"bus.model": ("", "w5101", "nosuchchip", "w5100\u0000", "x" * 100_000),
            "bus.kind": ("sim-w5100", "sim-"),
            "bus.seed": ("7", *EXTREMES),
            "bus.timing.send_ms": ("x", True, *EXTREMES),
            "bus.faults.bit_error_rate": (1.5, "x", *EXTREMES),
            "bus.faults.rx_full": ("yes", 1),
            "bus.timing.warp_ms": (1.0,), "bus.faults.smoke": (True,),
            "bus.speed_hz": (999, 200_000_001)},
}


# Driver options: typed by the driver's signature; numbers finite and 64-bit like any.
DRIVER_BAD: dict[str, dict[str, tuple[Any, ...]]] = {
    "w5100": {"driver.send_timeout_ms": ("x", True, NAN, INF, 1e308, 2**63),
              "driver.mac_filter": ("yes", 1), "driver.mtu": (1500,), "driver.reset": (1,)},
    "tap": {"driver.create": (True,), "driver.name": ("hk9",), "driver.mtu": (NAN,)},
    # PPP on a serial line: the link's keys, checked by the schema (docs/rigs.md)
    "ppp": {"driver.username": ("", "x" * 300), "driver.password": (7, "x" * 300, [1]),
            "driver.password_env": ("1BAD", "A-B", "", "X Y"),
            "driver.chat": ("", 7, [["OK"], 7], [[1, 2]], "'unterminated", {"a": 1}),
            "driver.hangup": ("hang", "", "DTR"), "driver.vj": ("yes", 1),
            "driver.echo_interval_ms": (-1, 3_600_001, "x", NAN),
            "driver.echo_failure": (0, 1001, True), "driver.watch_dcd": ("no",),
            "driver.port": ("/dev/ttyS0",), "driver.baudrate": (9600,),
            "driver.config": ("x",), "driver.clock": (1,)},
}
# A python bus (a lab's bridge): its free parameters obey the rules every value obeys.
PYTHON_BUS = {"kind": "python", "factory": "tests.rig_plugins:make_loopback_bus",
              "label": "bench"}
PYTHON_BAD: dict[str, tuple[Any, ...]] = {
    "bus.factory": ("tests.rig_plugins", "mod:", ":make", "my mod:x", "a-b:c", "", 7,
                    "x\u0000:y"),
    "bus.speed_hz": ("8MHz", 0, NAN, INF, 1e308, -1, 2**63),
    "bus.label": (NAN, INF, -INF, 1e308, 2**63, "x\u0000", [NAN], {"deep": {"er": INF}}),
}


def _serial(case_id: str, data: dict[str, Any], key: str | None, valid: bool = False) -> Case:
    return Case(case_id, to_toml(data).encode(), key, valid)


def _field_cases(name: str, rig: dict[str, Any]) -> Iterator[Case]:
    for path, v in list(_paths(rig)):
        # deleted: an error naming it if it is required, else still a valid rig
        yield _serial(f"{name}-del-{path}", _delete(rig, path), path,
                      valid=not _required(rig, path))
        # the wrong type
        kind = dict if isinstance(v, dict) else type(v)
        for i, bad in enumerate(WRONG.get(kind, ())):
            yield _serial(f"{name}-type{i}-{path}", _set(rig, path, bad), path)
        # extreme numbers
        if isinstance(v, int) and not isinstance(v, bool):
            for i, bad in enumerate(EXTREMES):
                yield _serial(f"{name}-num{i}-{path}", _set(rig, path, bad), path)
    # an unknown key in every table, a close one and a far one
    for path, v in [("", rig), *[(p, x) for p, x in _paths(rig) if isinstance(x, dict)]]:
        if path == "pins" or path.startswith("suites"):
            continue  # pins take names, suites their parameters: below
        for typo in ("bogus_key", (next(iter(v)) + "x") if v else "kindd"):
            where = f"{path}.{typo}" if path else typo
            yield _serial(f"{name}-unknown-{where}", _set(rig, where, 1), where)
    yield _serial(f"{name}-unknown-pins.rst", _set(rig, "pins.rst", {"kind": "sim"}),
                  "pins.rst")
    # values wrong on their own
    for path, values in FIELD_BAD.items():
        for i, bad in enumerate(values):
            yield _serial(f"{name}-bad{i}-{path}", _set(rig, path, bad), path)
    bus = rig.get("bus", {}).get("kind")
    for path, values in BUS_BAD.get(bus, {}).items():
        for i, bad in enumerate(values):
            yield _serial(f"{name}-bad{i}-{path}", _set(rig, path, bad), path)
    for path, values in DRIVER_BAD.get(rig["driver"]["name"], {}).items():
        for i, bad in enumerate(values):
            yield _serial(f"{name}-bad{i}-{path}", _set(rig, path, bad), path)
    for pin, spec in rig.get("pins", {}).items():
        key = f"pins.{pin}"
        if spec["kind"] == "gpiod":
            for i, bad in enumerate(("", "/dev/gpiochip0\u0000")):
                yield _serial(f"{name}-bad{i}-{key}.chip", _set(rig, f"{key}.chip", bad),
                              f"{key}.chip")
            for i, bad in enumerate(("sideways", "")):
                yield _serial(f"{name}-bad{i}-{key}.bias", _set(rig, f"{key}.bias", bad),
                              f"{key}.bias")
            yield _serial(f"{name}-bad-{key}.line", _set(rig, f"{key}.line", 4096),
                          f"{key}.line")
        if spec["kind"] == "ftdi":
            for i, bad in enumerate((0, 2, 3, 16)):  # SPI lines, the CS pin, no such bit
                yield _serial(f"{name}-bad{i}-{key}.bit", _set(rig, f"{key}.bit", bad),
                              f"{key}.bit")
        yield _serial(f"{name}-bad-{key}.kind", _set(rig, f"{key}.kind", "gpio"),
                      f"{key}.kind")


def _suite_cases(names: list[str]) -> Iterator[Case]:
    """Every declared suite parameter, wrong in every way, on the shipped rigs in turn."""
    n = 0
    for suite, params in SUITE_PARAMS.items():
        for p in params:
            name = names[n % len(names)]
            n += 1
            rig = SHIPPED[name]
            for i, bad in enumerate(PARAM_BAD[p.kind]):
                path = f"suites.{suite}.{p.name}"
                yield _serial(f"{name}-param{i}-{path}", _set(rig, path, bad), path)
        rig = SHIPPED[names[n % len(names)]]
        first = params[0].name
        for bogus in ("bogus", first[:-1] + first[-1] * 2):
            path = f"suites.{suite}.{bogus}"
            yield _serial(f"{names[n % len(names)]}-param-unknown-{path}",
                          _set(rig, path, 1), path)


def _file_cases(name: str, text: str) -> Iterator[Case]:
    rnd = random.Random(name)
    broken = {
        "unclosed-header": text + "\n[driver\n",
        "no-value": text + "\nname = \n",
        "unclosed-array": text + "\nx = [1, 2\n",
        "duplicate-key": text + '\nname = "again"\n',
        "duplicate-table": text + '\n[driver]\nname = "tap"\n',
        "bare-equals": "= 1\n" + text,
        "unterminated-string": text + '\ndescription = "oops\n',
        "bad-escape": text + '\nzz = "\\q"\n',
        "big-int-literal": text + "\nzz = " + "9" * 5000 + "\n",
        "deep-arrays": "x = " + "[" * 1000 + "]" * 1000 + "\n" + text,
        "deep-inline-tables": "x = " + "{a = " * 600 + "1" + "}" * 600 + "\n" + text,
        "nul": text[:40] + "\u0000" + text[40:],
    }
    for what, body in broken.items():
        yield Case(f"{name}-toml-{what}", body.encode(), None)
    for n in (1, 16, 300, 4096):
        yield Case(f"{name}-binary-{n}", rnd.randbytes(n) + b"\xff", None)
    yield Case(f"{name}-latin1", text.replace('"', '"\u00e9', 1).encode("latin-1", "replace"),
               None)
    yield Case(f"{name}-utf16", text.encode("utf-16"), None)
    yield Case(f"{name}-huge", (text + "#" * (1 << 20)).encode(), None)
    # nesting TOML takes, deeper than any rig file needs: named where it starts
    yield _serial(f"{name}-deep-tables", _set(SHIPPED[name], ".".join(["suites", "tcp"]
                                                                        + ["n"] * 40), 1),
                  "suites.tcp.n")
    yield _serial(f"{name}-deep-array", _set(SHIPPED[name], "suites.icmp.sizes",
                                             _nest(60)), "suites.icmp.sizes")


def _nest(depth: int) -> Any:
    v: Any = 1
    for _ in range(depth):
        v = [v]
    return v


def all_cases() -> list[Case]:
    names = sorted(SHIPPED)
    cases: list[Case] = []
    for name in names:
        cases += _field_cases(name, SHIPPED[name])
        cases += _file_cases(name, (REPO / "rigs" / f"{name}.toml").read_text())
    cases += _suite_cases(names)
    # a python bus in place of the model: valid, then wrong in its free parameters
    lab = _set(SHIPPED["sim-w5100"], "bus", PYTHON_BUS)
    cases.append(_serial("python-bus-valid", lab, None, valid=True))
    for path, values in PYTHON_BAD.items():
        for i, bad in enumerate(values):
            cases.append(_serial(f"python-bus-bad{i}-{path}", _set(lab, path, bad), path))
    cases.append(_serial("python-bus-deep", _set(lab, "bus.opts", _nest(40)), "bus.opts"))
    cases += [
        Case("empty", b"", "driver"),
        Case("whitespace", b"\n\n   \n# only a comment\n", "driver"),
        Case("directory", None, None, make="dir"),
        Case("missing", None, None, make="missing"),
        Case("fifo", None, None, make="fifo"),
        Case("dev-null", None, None, make="devnull"),
    ]
    seen: set[str] = set()
    unique = []
    for c in cases:
        if c.id not in seen:
            seen.add(c.id)
            unique.append(c)
    return unique


CASES = all_cases()
ERROR_CASES = [c for c in CASES if not c.valid]


def materialize(case: Case, tmp: Path) -> Path:
    if case.make == "dir":
        path = tmp / "rig.toml"
        path.mkdir()
    elif case.make == "missing":
        path = tmp / "nowhere" / "rig.toml"
    elif case.make == "fifo":
        path = tmp / "rig.toml"
        os.mkfifo(path)
    elif case.make == "devnull":
        path = Path(os.devnull)
    else:
        assert case.content is not None
        path = tmp / "rig.toml"
        path.write_bytes(case.content)
    return path


# -- running them -----------------------------------------------------------------------------


def test_the_corpus_is_big_enough() -> None:
    assert len(ERROR_CASES) >= MIN_CASES, len(ERROR_CASES)
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_writer_round_trips_the_shipped_rigs(name: str, tmp_path: Path) -> None:
    text = to_toml(SHIPPED[name])
    assert tomllib.loads(text) == SHIPPED[name]
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    assert parse_rig(path).name == name


class Tripped(BaseException):
    """Not an ``Exception``: no command's error handling may swallow it."""


@pytest.fixture
def tripwires(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that validates by mistake must not reach the hardware or a namespace."""
    import hilkit.rig.builder as builder

    def tripped(*args: object, **kw: object) -> Any:
        raise Tripped("a broken rig file got past validation")

    monkeypatch.setattr(builder, "check_hardware", tripped)
    monkeypatch.setattr(builder, "build", tripped)


def _main(argv: list[str]) -> int:
    from hilkit.cli import main

    try:
        return main(argv)
    except SystemExit as e:  # argparse's way out
        return e.code if isinstance(e.code, int) else 2


def _names_key(lines: list[str], prog: str, shown: str, key: str | None) -> bool:
    head = f"{prog}: {shown}: "
    if key is None:
        return any(line.startswith(head) or line == f"{prog}: {shown}" for line in lines)
    pat = re.compile(re.escape(head) + re.escape(key) + r"(\.|\[|: |$)")
    return any(pat.match(line) for line in lines)


def _assert_refused(case: Case, path: Path, prog: str, argv: list[str],
                    capsys: pytest.CaptureFixture[str]) -> None:
    code = _main(argv)
    out, err = capsys.readouterr()
    text = out + err
    assert "Traceback" not in text, text
    assert code == 2, f"exit {code}:\n{text}"
    shown = str(path) if case.make == "missing" else display_path(path)
    lines = err.splitlines()
    assert _names_key(lines, prog, shown, case.key), \
        f"expected {prog}: {shown}: {case.key or ''}...\n{err}"


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c.id for c in ERROR_CASES])
def test_a_broken_rig_file_is_refused_by_both_commands(
    case: Case, tmp_path: Path, tripwires: None, capsys: pytest.CaptureFixture[str],
) -> None:
    path = materialize(case, tmp_path)
    _assert_refused(case, path, "hilkit rig check", ["rig", "check", str(path)], capsys)
    out = tmp_path / "report"
    _assert_refused(case, path, "hilkit hil", ["hil", "--rig", str(path), "--out", str(out)],
                    capsys)
    assert not out.exists(), "hil touched the report directory before the rig was known good"


VALID_CASES = [c for c in CASES if c.valid]


@pytest.mark.parametrize("case", VALID_CASES, ids=[c.id for c in VALID_CASES])
def test_leaving_out_an_optional_key_keeps_the_rig_valid(case: Case, tmp_path: Path) -> None:
    path = materialize(case, tmp_path)
    parse_rig(path)  # raises RigError naming the key if the schema disagrees with the docs


# -- a sample end to end, as a lab's CI runs the commands ---------------------------------------


def _sample(n: int) -> list[Case]:
    step = max(1, len(ERROR_CASES) // n)
    picked = ERROR_CASES[::step][:n]
    wanted = {"directory", "empty"}
    return picked + [c for c in ERROR_CASES if c.id in wanted and c not in picked]


SAMPLE = _sample(10)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hilkit.cli", *argv], capture_output=True,
                          text=True, cwd=REPO, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.parametrize("case", SAMPLE, ids=[c.id for c in SAMPLE])
def test_end_to_end_sample(case: Case, tmp_path: Path) -> None:
    path = materialize(case, tmp_path)
    out = tmp_path / "report"
    for prog, argv in (("hilkit rig check", ["rig", "check", str(path)]),
                       ("hilkit hil", ["hil", "--rig", str(path), "--out", str(out)])):
        res = _run(argv)
        assert "Traceback" not in res.stdout + res.stderr, res.stderr
        assert res.returncode == 2, res.stdout + res.stderr
        shown = str(path) if case.make == "missing" else display_path(path)
        assert _names_key(res.stderr.splitlines(), prog, shown, case.key), res.stderr
    assert not out.exists()

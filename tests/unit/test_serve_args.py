"""`hilkit serve` refuses bad arguments with exit 2 and a line naming each, before it
opens anything. The corpus is generated: for several valid argument sets, every
argument in turn gets a family of bad values while the others stay good."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hilkit import cli
from tests.cli_main import run_main


class Base:
    """A valid argument set: tap, ip/prefix, gateway."""

    def __init__(self, tap: str, ip: str, gw: str) -> None:
        self.tap, self.ip, self.gw = tap, ip, gw
        self.iface = ipaddress.IPv4Interface(ip)
        self.addr = str(self.iface.ip)
        self.plen = self.iface.network.prefixlen


BASES = [
    Base("hk0", "192.168.5.4/24", "192.168.5.1"),
    Base("tap0", "10.1.2.3/8", "10.0.0.1"),
    Base("t", "172.16.0.10/30", "172.16.0.9"),
    Base("x" * 15, "198.51.100.7/31", "198.51.100.6"),  # RFC 3021: both are hosts
    Base("eth-hil.1", "100.64.3.1/16", "100.64.0.1"),
]

HUGE = "9" * 5000  # beyond int()'s digit limit


def bad_taps(b: Base) -> Iterator[str]:
    yield from ["", ".", "..", "a" * 16, b.tap + "x" * (16 - len(b.tap)), "a" * 1000,
                "a" * 100_000, "a/b", "/", b.tap + "/", "a:b", b.tap + ":1", "a b", " " + b.tap,
                b.tap + " ", "a\tb", "a\nb", "\u00e9" * 8,  # 16 bytes in UTF-8
                "a\u00a0b", "a\u2003b", "a\0b",
                "t\u00e0"]  # "à" is C3 A0 in UTF-8: the kernel sees an A0 (space) byte


def bad_ips(b: Base) -> Iterator[str]:
    a, n = b.addr, b.iface.network
    yield from ["", "/", a, f"{a}/", f"{a}/33", f"{a}/99", f"{a}/100", f"{a}/-1", f"{a}/+24",
                f"{a}/ 24", f"{a}/24 ", f"{a}/2a", f"{a}/0x18", f"{a}/\u0662\u0664",
                f"{a}/\u00b2", f"{a}/{HUGE}", f"{a}/00024", f"{a}/24/24", f"{a}//24"]
    yield from [f"{x}/{b.plen}" for x in [
        "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "0x7f.0.0.1", "1.2.3.4 ", " 1.2.3.4",
        "a.b.c.d", HUGE + ".1.1.1", "::1", "1..2.3", "1.2.3.-4", "", "1.2.3.4\n",
        "0.0.0.0", "255.255.255.255", "127.0.0.1", "127.1.2.3", "224.0.0.1",
        "239.255.255.250"]]
    if b.plen <= 30:
        yield f"{n.network_address}/{b.plen}"
        yield f"{n.broadcast_address}/{b.plen}"


def bad_gws(b: Base) -> Iterator[str]:
    n = b.iface.network
    off_link = ipaddress.IPv4Address(int(b.iface.ip) ^ 0x40000000)
    yield from ["", "x", "1.2.3", f"{b.gw}/{b.plen}", HUGE, f" {b.gw}", f"{b.gw} ",
                str(off_link), b.addr, "0.0.0.0", "255.255.255.255", "127.0.0.1",
                "224.0.0.1", "01.2.3.4", "8.8.8.8"]
    if b.plen <= 30:
        yield from [str(n.network_address), str(n.broadcast_address)]


def bad_pcaps(tmp: Path) -> Iterator[str]:
    (tmp / "a-file").write_bytes(b"")
    (tmp / "a-dir").mkdir(exist_ok=True)
    fifo = tmp / "a-fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    yield from ["", str(tmp), str(tmp / "a-dir"), str(tmp / "a-dir") + "/",
                str(tmp / "missing" / "x.pcapng"), str(tmp / "missing" / "deeper" / "x"),
                str(tmp / "a-file" / "x.pcapng"), str(tmp / "new-dir") + "/",
                str(tmp / "x\0y"), str(fifo), str(tmp / ("a" * 300)), "."]


def corpus() -> Iterator[Any]:
    for i, b in enumerate(BASES):
        for arg, values in (("tap", bad_taps(b)), ("ip", bad_ips(b)), ("gw", bad_gws(b))):
            for j, v in enumerate(values):
                yield pytest.param(b, arg, v, id=f"{i}-{arg}-{j}")
        for j in range(12):  # the pcap values need tmp_path: picked by index in the test
            yield pytest.param(b, "pcap", j, id=f"{i}-pcap-{j}")


CORPUS = list(corpus())


@pytest.fixture
def nothing_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation comes first: a case that gets as far as opening something fails here."""
    import hilkit.drivers.tap
    import hilkit.stack

    def refuse(*a: object, **kw: object) -> None:
        raise AssertionError("opened something before the arguments were checked")

    monkeypatch.setattr(hilkit.drivers.tap, "TapDevice", refuse)
    monkeypatch.setattr(hilkit.stack, "Stack", refuse)


def test_the_corpus_is_large() -> None:
    assert len(CORPUS) >= 300
    assert {p.values[1] for p in CORPUS} == {"tap", "ip", "gw", "pcap"}


@pytest.mark.parametrize(("base", "arg", "value"), CORPUS)
def test_bad_serve_argument_exits_2_naming_it(
    base: Base, arg: str, value: str | int, tmp_path: Path, nothing_opens: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if arg == "pcap":
        assert isinstance(value, int)
        value = list(bad_pcaps(tmp_path))[value]
    args = {"tap": base.tap, "ip": base.ip, "gw": base.gw, "pcap": str(tmp_path / "ok.pcapng")}
    args[arg] = str(value)
    argv = ["serve"] + [f"--{k}={v}" for k, v in args.items()]
    rc, err = run_main(argv, capsys)
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines, "a refusal says why"
    assert all(line.startswith(f"hilkit serve: --{arg}: ") for line in lines), lines
    assert len(err) < 2000, "a huge argument is shortened in the message"
    assert not (tmp_path / "ok.pcapng").exists()


@pytest.mark.parametrize("argv", [
    ["serve", "--ip=192.168.5.4/24"],
    ["serve", "--tap=hk0"],
    ["serve", "--tap=hk0", "--ip"],
    ["serve", "--tap=hk0", "--ip=192.168.5.4/24", "--nonsense=1"],
])
def test_argparse_refusals_are_exit_2_without_traceback(
    argv: list[str], nothing_opens: None, capsys: pytest.CaptureFixture[str],
) -> None:
    rc, err = run_main(argv, capsys)
    assert rc == 2 and "Traceback" not in err and "--" in err


def test_all_problems_are_reported_at_once(
    nothing_opens: None, capsys: pytest.CaptureFixture[str],
) -> None:
    rc, err = run_main(["serve", "--tap=" + "a" * 20, "--ip=10.0.0.0/24", "--gw=11.0.0",
                        "--pcap=", "--impair=loss=200%"], capsys)
    assert rc == 2
    assert [line.split(":")[1].strip() for line in err.splitlines()] == [
        "--tap", "--ip", "--gw", "--pcap", "--impair"]


@pytest.mark.parametrize(("tap", "ip", "gw", "pcap"), [
    ("a" * 15, "192.168.5.4/24", "192.168.5.1", "ok.pcapng"),
    ("\u00e9" * 7, "10.0.0.1/31", "10.0.0.0", None),  # 14 bytes; /31: both addresses are hosts
    ("tap0", "10.0.0.0/31", "10.0.0.1", "/dev/null"),
    ("tap0", "10.0.0.7/32", None, "existing.pcapng"),
    ("tap0", "192.168.5.4/0", "10.9.9.9", None),
    ("hil-w5100.0", "169.254.1.2/16", None, None),
])
def test_good_arguments_pass_the_checks(tap: str, ip: str, gw: str | None, pcap: str | None,
                                        tmp_path: Path) -> None:
    if pcap is not None and not pcap.startswith("/"):
        (tmp_path / "existing.pcapng").write_bytes(b"old")
        pcap = str(tmp_path / pcap)
    argv = ["serve", f"--tap={tap}", f"--ip={ip}"]
    argv += [f"--gw={gw}"] if gw else []
    argv += [f"--pcap={pcap}"] if pcap else []
    checked = cli.check_serve_args(cli.build_parser().parse_args(argv))
    assert isinstance(checked, cli.ServeArgs), checked
    assert str(checked.iface) == ip


@pytest.mark.parametrize(("argv", "problem"), [
    (["--ppp=/dev/ttyUSB0", "--offload"], "--offload: only with --tap"),
    (["--tap=tap0", "--ip=10.0.0.1/24", "--offload", "--impair=corrupt=1%"],
     "--impair: corrupt needs the stack to check checksums"),
])
def test_offload_is_refused_where_nothing_could_honour_it(
        argv: list[str], problem: str, nothing_opens: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    rc, err = run_main(["serve", *argv], capsys)
    assert rc == 2
    assert f"hilkit serve: {problem}" in err, err


def test_offload_with_a_tap_passes_the_checks() -> None:
    for extra, want in (([], False), (["--offload", "--impair=loss=1%"], True)):
        checked = cli.check_serve_args(cli.build_parser().parse_args(
            ["serve", "--tap=tap0", "--ip=10.0.0.1/24", *extra]))
        assert isinstance(checked, cli.ServeArgs), checked
        assert checked.offload is want

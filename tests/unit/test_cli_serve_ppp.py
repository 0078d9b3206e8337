"""`hilkit serve --ppp` as a process on one end of a pty pair, an in-process hilkit
stack over a PppDevice on the other: echo (TCP, UDP), discard and chargen over the
link, the link-up and link-down lines, SIGTERM, the server role (--ppp-serve), and
the password never in the output. Every byte stays on the pty pair."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from hilkit import cli
from hilkit.drivers.ppp.auth import Credentials
from hilkit.drivers.ppp.device import PppDevice
from hilkit.drivers.ppp.lcp import AuthProtocol
from hilkit.drivers.ppp.link import PppConfig
from hilkit.port.clock import MonotonicClock
from hilkit.rig.slirp import PacedPtyLine
from hilkit.services import chargen_block
from hilkit.stack import Stack
from hilkit.stack.sockets import SHUT_WR, create_connection
from tests.cli_main import run_main

BAUD = 921600  # both ends pace their writes to this: ~90 KB/s
PASSWORD = "pw-Zq8-not-for-your-eyes"
ENV = "HK_TEST_SERVE_PPP_PW"
OURS, THEIRS, DNS = "10.64.0.1", "10.64.0.2", "10.64.0.53"
ROOT = Path(__file__).resolve().parents[2]


class Served:
    """``hilkit serve`` in a subprocess; its output lines collected by reader threads."""

    def __init__(self, args: list[str], password: str | None = PASSWORD) -> None:
        env = {k: v for k, v in os.environ.items() if k not in (ENV, cli.DEFAULT_PASSWORD_ENV)}
        if password is not None:
            env[ENV] = password
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hilkit.cli", "serve", *args], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [threading.Thread(target=self._read, args=(f, sink, q), daemon=True)
                         for f, sink, q in ((self.proc.stdout, self.out, self.lines),
                                            (self.proc.stderr, self.err, None))]
        for t in self._threads:
            t.start()

    def _read(self, f: IO[str], sink: list[str], q: queue.Queue[str] | None) -> None:
        for line in f:
            sink.append(line)
            if q is not None:
                q.put(line.rstrip("\n"))

    def said(self) -> str:
        return f"stdout: {''.join(self.out)!r}\nstderr: {''.join(self.err)!r}"

    def finish(self) -> tuple[str, str]:
        """Both outputs, whole, once the process has ended."""
        for t in self._threads:
            t.join(5)
        return "".join(self.out), "".join(self.err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def drive(stack: Stack, until: Callable[[], bool], timeout: float, what: str,
          served: Served) -> None:
    """Run our stack until ``until()``; fail naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not until():
        if time.monotonic() > end:
            pytest.fail(f"no {what} within {timeout} s\n{served.said()}")
        stack.run(timeout=0.02)


def wait_line(stack: Stack, served: Served, prefix: str, timeout: float = 10) -> str:
    """The next line of ``served``'s stdout that starts with ``prefix``, our stack running."""
    got: list[str] = []

    def seen() -> bool:
        while not got:
            try:
                line = served.lines.get_nowait()
            except queue.Empty:
                return served.proc.poll() is not None and served.lines.empty()
            if line.startswith(prefix):
                got.append(line)
        return True

    drive(stack, seen, timeout, f"line {prefix!r} from hilkit serve", served)
    if not got:
        pytest.fail(f"hilkit serve ended without {prefix!r}\n{served.said()}")
    return got[0]


def first_line(served: Served, timeout: float = 10) -> str:
    """The first line ``served`` prints, before anything on our side runs."""
    try:
        return served.lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"hilkit serve printed nothing within {timeout} s\n{served.said()}")


class Peer:
    """The far end: a hilkit stack over a PppDevice on the pty pair's other side."""

    def __init__(self, port: str, config: PppConfig) -> None:
        self.clock = MonotonicClock()
        self.dev = PppDevice(port, baudrate=BAUD, config=config, hangup="none",
                             clock=self.clock, name="ppp-peer")
        self.stack = Stack(clock=self.clock)
        self.stack.add_device(self.dev)

    def close(self) -> None:
        self.stack.close()


@pytest.fixture
def line() -> Iterator[PacedPtyLine]:
    pty = PacedPtyLine(BAUD, pace=False)
    try:
        yield pty
    finally:
        pty.close()


def counters_of(stdout: str) -> dict[str, object]:
    """The JSON counters ``hilkit serve`` prints last."""
    start = stdout.find("\n{")
    assert start >= 0, stdout
    out = json.loads(stdout[start + 1:])
    assert isinstance(out, dict)
    return out


def exchange_udp(peer: Peer, served: Served, port: int, payload: bytes,
                 answer: bool) -> None:
    sock = peer.stack.udp_socket()
    sock.sendto(payload, (THEIRS, port))
    if not answer:
        return
    got: list[tuple[bytes, tuple[str, int]]] = []

    def answered() -> bool:
        d = sock.recvfrom()
        if d is not None:
            got.append(d)
        return bool(got)

    drive(peer.stack, answered, 5, f"UDP answer from port {port}", served)
    assert got[0] == (payload, (THEIRS, port))


def test_serve_ppp_client_echo_discard_chargen_and_sigterm(line: PacedPtyLine) -> None:
    """hilkit serve as the client of an authenticating hilkit server: every service,
    then SIGTERM closes the link with LCP Terminate and exits 0."""
    peer = Peer(line.b, PppConfig(
        address=OURS, peer_address=THEIRS, dns_servers=(DNS,), demand_auth=(
            AuthProtocol.CHAP_MD5,), secrets={b"alice": PASSWORD.encode()}, passive=True,
        restart_ms=500))
    served = Served(["--ppp", line.a, "--baud", str(BAUD), "--user", "alice",
                     "--password-env", ENV, "--echo-ms", "1000"])
    try:
        assert wait_line(peer.stack, served, "ready ").startswith(f"ready on {line.a} ppp")
        up = wait_line(peer.stack, served, "link ")
        assert up == f"link up: {THEIRS} peer {OURS} dns {DNS}", served.said()
        drive(peer.stack, lambda: peer.dev.link_up, 5, "link up on our side", served)

        # TCP echo: more than a window's worth, every byte back in order
        payload = os.urandom(24_000)
        with create_connection(peer.stack, (THEIRS, 7), timeout=10) as s:
            s.sendall(payload)
            s.shutdown(SHUT_WR)
            back = bytearray()
            while chunk := s.recv(65536):
                back += chunk
        assert bytes(back) == payload

        # TCP discard: it takes everything and closes when we are done
        with create_connection(peer.stack, (THEIRS, 9), timeout=10) as s:
            s.sendall(b"d" * 10_000)
            s.shutdown(SHUT_WR)
            assert s.recv(100) == b""

        # TCP chargen: the RFC 864 pattern from its first line on
        want = chargen_block() * 2
        with create_connection(peer.stack, (THEIRS, 19), timeout=10) as s:
            got = bytearray()
            while len(got) < 9000:
                chunk = s.recv(65536)
                assert chunk, "chargen closed early"
                got += chunk
        assert bytes(got[:9000]) == want[:9000]

        # UDP discard, then echo: the line keeps order, so the echo's answer means the
        # discarded datagram was taken before it
        exchange_udp(peer, served, 9, b"gone", answer=False)
        exchange_udp(peer, served, 7, b"hello over ppp " * 40, answer=True)

        served.proc.send_signal(signal.SIGTERM)
        drive(peer.stack, lambda: served.proc.poll() is not None, 10,
              "exit after SIGTERM", served)
        drive(peer.stack, lambda: not peer.dev.link_up, 3, "link down on our side", served)
        out, err = served.finish()
        assert served.proc.returncode == 0, served.said()
        assert "Traceback" not in err, err
        assert "link down: " in out, out
        counters = counters_of(out)
        services = counters["services"]
        assert isinstance(services, dict)
        assert services.get("udp.echo.answered") == 1, services
        assert services.get("udp.discard.received") == 1, services
        assert PASSWORD not in out + err
    finally:
        served.kill()
        peer.close()


def test_serve_ppp_server_role_gives_the_address_and_ends_with_the_link(
    line: PacedPtyLine,
) -> None:
    """--ppp-serve: hilkit gives the peer its address and demands CHAP; when the peer
    closes the link, serve exits 0 on its own."""
    served = Served(["--ppp", line.a, "--baud", str(BAUD), "--ppp-serve", "--ip", THEIRS,
                     "--peer-ip", OURS, "--user", "bob", "--password-env", ENV, "--passive"])
    peer: Peer | None = None
    try:
        # its port first: opening a tty throws away what is waiting on it
        assert first_line(served).startswith("ready on "), served.said()
        peer = Peer(line.b, PppConfig(credentials=Credentials.of("bob", PASSWORD),
                                      restart_ms=500))
        up = wait_line(peer.stack, served, "link ")
        assert up == f"link up: {THEIRS} peer {OURS} dns -", served.said()
        dev = peer.dev
        drive(peer.stack, lambda: dev.link_up, 5, "link up on our side", served)
        cfg = dev.link_config()
        assert cfg is not None and (cfg.address, cfg.peer) == (OURS, THEIRS)
        exchange_udp(peer, served, 7, bytes(range(256)), answer=True)
        peer.close()  # LCP Terminate-Request from our side
        peer = None
        assert served.proc.wait(10) == 0, served.said()
        out, err = served.finish()
        assert "link down: " in out and PASSWORD not in out + err, served.said()
    finally:
        served.kill()
        if peer is not None:
            peer.close()


def test_serve_ppp_wrong_password_exits_1_without_showing_it(line: PacedPtyLine) -> None:
    served = Served(["--ppp", line.a, "--baud", str(BAUD), "--ppp-serve", "--ip", THEIRS,
                     "--peer-ip", OURS, "--user", "bob", "--password-env", ENV, "--passive"])
    peer: Peer | None = None
    try:
        assert first_line(served).startswith("ready on "), served.said()
        wrong = "not-" + PASSWORD[::-1]
        peer = Peer(line.b, PppConfig(credentials=Credentials.of("bob", wrong),
                                      restart_ms=500, max_configure=3))
        drive(peer.stack, lambda: served.proc.poll() is not None, 15, "exit", served)
        out, err = served.finish()
        assert served.proc.returncode == 1, served.said()
        assert "authentication failed" in out + err, served.said()
        assert PASSWORD not in out + err and wrong not in out + err
        assert "Traceback" not in err
    finally:
        served.kill()
        if peer is not None:
            peer.close()


def test_missing_port_exits_2_naming_it(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    port = str(tmp_path / "ttyNOSUCH7")
    rc, err = run_main(["serve", "--ppp", port], capsys)
    assert rc == 2
    assert err.startswith(f"hilkit serve: --ppp: {port}: no such serial port"), err
    assert "Traceback" not in err


@pytest.mark.parametrize(("argv", "names"), [
    (["--tap", "tap0", "--ppp", "/dev/ttyS0"], "--ppp"),
    (["--ppp", "/dev/ttyS0", "--baud", "0"], "--baud"),
    (["--ppp", "/dev/ttyS0", "--echo-ms", "-5"], "--echo-ms"),
    (["--ppp", "/dev/ttyS0", "--user", "u"], "--password-env"),
    (["--ppp", "/dev/ttyS0", "--ppp-serve"], "--ip"),
    (["--ppp", "/dev/ttyS0", "--ppp-serve", "--ip", OURS], "--peer-ip"),
    (["--ppp", "/dev/ttyS0", "--ppp-serve", "--ip", OURS, "--peer-ip", OURS], "--peer-ip"),
    (["--ppp", "/dev/ttyS0", "--peer-ip", OURS], "--peer-ip"),
    (["--ppp", "/dev/ttyS0", "--ip", "10.0.0.1/24"], "--ip"),
    (["--ppp", "/dev/ttyS0", "--gw", OURS], "--gw"),
    (["--ppp", "/dev/ttyS0", "--chat", "ABORT"], "--chat"),
    (["--ppp", "", ], "--ppp"),
    (["--tap", "tap0", "--ip", "10.0.0.1/24", "--user", "u"], "--user"),
    (["--tap", "tap0"], "--ip"),
])
def test_bad_ppp_arguments_exit_2_naming_them(
    argv: list[str], names: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(cli.DEFAULT_PASSWORD_ENV, raising=False)

    def refuse(*a: object, **kw: object) -> None:
        raise AssertionError("opened something before the arguments were checked")

    import hilkit.drivers.ppp.device
    monkeypatch.setattr(hilkit.drivers.ppp.device, "PppDevice", refuse)
    rc, err = run_main(["serve", *argv], capsys)
    assert rc == 2, err
    assert names in err and "Traceback" not in err, err


def test_password_only_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, PASSWORD)
    args = cli.build_parser().parse_args(
        ["serve", "--ppp", "/dev/ttyS0", "--user", "alice", "--password-env", ENV])
    checked = cli.check_serve_args(args)
    assert isinstance(checked, cli.PppServeArgs), checked
    assert checked.password == PASSWORD and PASSWORD not in repr(checked)
    config = cli.ppp_config(checked)
    assert config.credentials == Credentials.of("alice", PASSWORD)
    assert PASSWORD not in repr(config)



@pytest.mark.parametrize("argv", [["--password", "s3cr3t-Value"],
                                  ["--password=s3cr3t-Value"],
                                  ["--user", "u", "--password-env", "s3cr3t-Value!"]])
def test_a_password_on_the_command_line_is_refused_unshown(
    argv: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    rc, err = run_main(["serve", "--ppp", "/dev/ttyS0", *argv], capsys)
    assert rc == 2 and "--password" in err and "s3cr3t" not in err, err

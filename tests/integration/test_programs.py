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


def test_serve_stops_on_a_sigterm_sent_the_moment_it_is_ready(netns: Netns,
                                                              tmp_path: Path) -> None:
    """Even when SIGTERM came ignored from its parent: the handler is in place first."""
    srv = start_server(netns, tmp_path,
                       preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    c = srv.stop()
    assert c["devices"]["hk0"]["rx_errors"] == 0


def test_serve_prints_its_stacks_on_sigusr1_and_serves_on(server: Server) -> None:
    server.proc.send_signal(signal.SIGUSR1)
    assert received(kping(server.ns, "-c", "1", "-W", "5", HILKIT_IP)) == (1, 1)
    c = server.stop()
    assert "Current thread" in server.stderr and "_serve_loop" in server.stderr
    assert c["stats"]["icmp.echo_replies_sent"] == 1


def test_serve_names_a_missing_tap(netns: Netns) -> None:
    res = subprocess.run(
        ["ip", "netns", "exec", netns.name, sys.executable, "-m", "hilkit.cli", "serve",
         "--tap", "nosuch0", "--ip", "10.0.0.1/24"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert "nosuch0" in res.stderr


def test_serve_tcp_echo_discard_chargen(server: Server) -> None:
    import hashlib
    import os
    import socket

    from hilkit.services import chargen_block

    payload = os.urandom(1 << 20)
    s = server.ns.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect((HILKIT_IP, 7))

    def send_all() -> None:  # while we read: an echo client that only writes deadlocks
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)

    import threading

    sender = threading.Thread(target=send_all)
    sender.start()
    got = bytearray()
    while chunk := s.recv(1 << 16):
        got += chunk
    sender.join()
    s.close()
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()

    d = server.ns.socket(socket.AF_INET, socket.SOCK_STREAM)
    d.settimeout(20)
    d.connect((HILKIT_IP, 9))
    d.sendall(payload)
    d.shutdown(socket.SHUT_WR)
    assert d.recv(10) == b""  # discard sends nothing and closes after our FIN
    d.close()

    c = server.ns.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(20)
    c.connect((HILKIT_IP, 19))
    want = chargen_block() * 3
    got = bytearray()
    while len(got) < len(want):
        got += c.recv(1 << 16)
    c.close()
    assert bytes(got[:len(want)]) == want
    assert want[:74] == bytes(range(32, 104)) + b"\r\n"
    counters = server.stop()
    assert "internal_error" not in counters["drops"]


def test_serve_answers_200_clients_connecting_at_once(server: Server) -> None:
    import selectors
    import socket

    n = 200
    sel = selectors.DefaultSelector()
    socks = [server.ns.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    for i, s in enumerate(socks):
        s.setblocking(False)
        s.connect_ex((HILKIT_IP, 7))
        sel.register(s, selectors.EVENT_WRITE, i)
    echoed: dict[int, bytes] = {}
    import time

    deadline = time.monotonic() + 30
    while len(echoed) < n and time.monotonic() < deadline:
        for key, ev in sel.select(1):
            s, i = key.fileobj, key.data
            if ev & selectors.EVENT_WRITE:
                assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0  # type: ignore[union-attr]
                s.send(b"client %03d" % i)  # type: ignore[union-attr]
                sel.modify(s, selectors.EVENT_READ, i)
            else:
                echoed[i] = s.recv(100)  # type: ignore[union-attr]
                sel.unregister(s)
    for s in socks:
        s.close()
    assert echoed == {i: b"client %03d" % i for i in range(n)}


def test_serve_impair_spec_is_applied_and_checked(netns: Netns, tmp_path: Path) -> None:
    srv = start_server(netns, tmp_path, "--impair", "delay=30ms,seed=3")
    out = kping(netns, "-c", "2", "-i", "0.2", "-W", "5", HILKIT_IP)
    assert received(out) == (2, 2), out
    rtts = [float(t) for t in re.findall(r"time=([\d.]+) ms", out)]
    assert min(rtts) >= 60.0, rtts  # 30 ms each way through the wrapper
    srv.stop()
    bad = subprocess.run(
        ["ip", "netns", "exec", netns.name, sys.executable, "-m", "hilkit.cli", "serve",
         "--tap", "hk0", "--ip", "10.0.0.1/24", "--impair", "loss=200%"],
        capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "loss" in bad.stderr

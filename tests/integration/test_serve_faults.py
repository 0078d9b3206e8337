"""`hilkit serve` against the kernel in a private namespace, when things go wrong at
run time: its capture file fills up, and hostile datagrams ask its UDP echo to
reflect. It keeps serving, logs no tracebacks, exits 0 on SIGTERM with counters."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from hilkit.rig.netns import Netns
from hilkit.stack import eth, ipv4, udp
from hilkit.stack.addr import ip_to_int
from tests.integration.conftest import HILKIT_IP, KERNEL_IP, TAP, Server, kping, start_server
from tests.integration.test_hostile import raw_socket
from tests.integration.test_kernel import received

TMPFS_SIZE = 16 * 1024  # the capture's 64 KiB buffer cannot fit: the first flush fails


def start_server_with_small_disk(ns: Netns, tmp_path: Path) -> Server:
    """`hilkit serve` with its capture on a 16 KiB tmpfs that only it sees: mounted in a
    private mount namespace (unshare -m) inside the private network namespace."""
    disk = tmp_path / "small-disk"
    disk.mkdir()
    script = f'mount -t tmpfs -o size={TMPFS_SIZE} hilkit-test "$0" && exec "$@"'
    return start_server(ns, tmp_path, pcap=disk / "serve.pcapng",
                        wrapper=["unshare", "-m", "--propagation", "private", "sh", "-c",
                                 script, str(disk)])


def udp_echo_round_trips(ns: Netns, n: int, size: int) -> int:
    """Send ``n`` datagrams to echo one at a time, each waiting for its answer; the count."""
    s = ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    ok = 0
    try:
        for i in range(n):
            msg = i.to_bytes(4, "big") + bytes(size - 4)
            s.sendto(msg, (HILKIT_IP, 7))
            if s.recv(65536) == msg:
                ok += 1
    finally:
        s.close()
    return ok


def test_serve_keeps_serving_when_its_capture_disk_fills(netns: Netns, tmp_path: Path) -> None:
    srv = start_server_with_small_disk(netns, tmp_path)
    try:
        assert received(kping(netns, "-c", "1", "-W", "5", HILKIT_IP)) == (1, 1)
        # ~800 kB through the capture: its buffer is flushed onto the full disk many times over.
        assert udp_echo_round_trips(netns, 300, 1400) == 300
        assert srv.proc.poll() is None, "hilkit serve died"
        out = kping(netns, "-c", "3", "-i", "0.05", "-W", "5", HILKIT_IP)
        assert received(out) == (3, 3), out
        srv.proc.terminate()
        stdout, stderr = srv.proc.communicate(timeout=20)
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
    assert srv.proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, lines
    assert "capture" in lines[0] and "No space left on device" in lines[0], lines
    c = json.loads(stdout)
    assert c["capture"]["write_errors"] == 1
    assert c["capture"]["frames_not_captured"] > 400
    assert c["services"]["udp.echo.answered"] == 300
    assert "internal_error" not in c["drops"]
    assert c["device_faults"][TAP]["poll_exceptions"] == 0


def test_serve_echo_does_not_reflect_or_raise(server: Server) -> None:
    hmac = bytes.fromhex(server.ready_line.split("mac ")[1].strip().replace(":", ""))
    raw = raw_socket(server.ns)
    kmac = raw.getsockname()[4]

    def frame(src: str, dst: str, sport: int, eth_dst: bytes) -> bytes:
        s, d = ip_to_int(src), ip_to_int(dst)
        seg = udp.header(s, sport, d, 7, b"reflect me") + b"reflect me"
        return (eth.header(eth_dst, kmac, eth.ETHERTYPE_IPV4)
                + ipv4.build_header(s, d, ipv4.PROTO_UDP, len(seg), 7) + seg)

    cases = {
        "source_port_zero": frame(KERNEL_IP, HILKIT_IP, 0, hmac),
        "bad_source": frame("0.0.0.0", HILKIT_IP, 4000, hmac),
        "send_failed": frame("203.0.113.9", HILKIT_IP, 4000, hmac),  # no route back
        "to_broadcast": frame(KERNEL_IP, "192.168.5.255", 4000, eth.BROADCAST_MAC),
    }
    barrier = server.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    barrier.settimeout(5)
    n, batch = 1000, 50
    for i in range(n // batch):
        for _ in range(batch):
            for f in cases.values():
                raw.send(f)
        # Frames are handled in order: the answer to this one means the batch was handled
        # (and the TAP's queue never overflows).
        barrier.sendto(b"barrier %d" % i, (HILKIT_IP, 7))
        assert barrier.recv(100) == b"barrier %d" % i
    raw.close()
    barrier.close()
    out = kping(server.ns, "-c", "1", "-W", "5", HILKIT_IP)
    assert received(out) == (1, 1), out
    server.proc.terminate()
    stdout, stderr = server.proc.communicate(timeout=20)
    assert server.proc.returncode == 0, stderr
    assert "Traceback" not in stderr and stderr == "", stderr
    c = json.loads(stdout)
    for why in cases:
        assert c["services"][f"udp.echo.not_answered.{why}"] == n, (why, c["services"])
    assert c["services"]["udp.echo.answered"] == n // batch  # the barriers, nothing else
    assert "callback_error" not in c["stats"]

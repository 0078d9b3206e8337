"""PppDevice against slirp, the real PPP peer, inside a namespace each test makes.

slirp runs in a fresh network namespace with only ``lo`` (``hilkit.rig.slirp``); hilkit
speaks only to 10.0.2.2 (slirp's alias for that namespace's loopback, where the echo
servers listen on 127.0.0.1) from 10.0.2.15. The DNS server slirp hands out is never
used, and the devices install no default route. Figures (bring-up time, goodput at
115200 baud against the 11520 B/s line ceiling) are printed, never asserted.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from hilkit.drivers.ppp.auth import Credentials
from hilkit.drivers.ppp.device import PppDevice
from hilkit.drivers.ppp.link import AuthFailedEvent, LinkUp, PppConfig
from hilkit.port.device import LinkConfig
from hilkit.rig.netns import Netns
from hilkit.rig.slirp import SlirpPeer
from hilkit.stack import Stack
from hilkit.stack.sockets import SHUT_WR, create_connection

BAUD = 115200
LINE_CEILING = BAUD / 10  # bytes a second on an 8N1 line


@pytest.fixture
def ns() -> Iterator[Netns]:
    with Netns("hkppp") as n:
        yield n


def bring_up(dev: PppDevice, limit_s: float = 10.0) -> tuple[float, list[object]]:
    t0 = time.monotonic()
    events: list[object] = []
    while not dev.link_up and time.monotonic() - t0 < limit_s:
        dev.poll(8)
        events += dev.take_events()
        if any(isinstance(e, AuthFailedEvent) for e in events):
            break
        time.sleep(0.001)
    return time.monotonic() - t0, events


class LoopbackServer:
    """TCP and UDP servers on the namespace's 127.0.0.1 (10.0.2.2 through slirp).

    TCP: the first byte picks the job: ``E`` echo until EOF, ``S`` sink (answers the
    byte count as 8 bytes after EOF), ``D`` + 8-byte N: send N bytes of a pattern.
    UDP: echo.
    """

    def __init__(self, ns: Netns) -> None:
        self.tcp = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(4)
        self.udp = ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.tcp_port = self.tcp.getsockname()[1]
        self.udp_port = self.udp.getsockname()[1]
        self.errors: list[BaseException] = []
        for fn in (self._tcp_loop, self._udp_loop):
            threading.Thread(target=fn, daemon=True).start()

    def close(self) -> None:
        for s in (self.tcp, self.udp):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _tcp_loop(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                job = conn.recv(1)
                if job == b"E":
                    while data := conn.recv(65536):
                        conn.sendall(data)
                elif job == b"S":
                    n = 0
                    while data := conn.recv(65536):
                        n += len(data)
                    conn.sendall(struct.pack("!Q", n))
                elif job == b"D":
                    hdr = b""
                    while len(hdr) < 8:
                        hdr += conn.recv(8 - len(hdr))
                    (n,) = struct.unpack("!Q", hdr)
                    conn.sendall(pattern(n))
        except OSError as e:
            self.errors.append(e)

    def _udp_loop(self) -> None:
        while True:
            try:
                data, addr = self.udp.recvfrom(65536)
                if addr is None:  # shut down
                    return
                self.udp.sendto(data, addr)
            except OSError:
                return


def pattern(n: int) -> bytes:
    return bytes(random.Random(n).randbytes(n))


@pytest.fixture
def servers(ns: Netns) -> Iterator[LoopbackServer]:
    s = LoopbackServer(ns)
    yield s
    s.close()


def test_link_up_against_slirp(ns: Netns) -> None:
    with SlirpPeer(ns, baudrate=BAUD) as peer:
        dev = PppDevice(peer.port, baudrate=BAUD, default_route=False)
        try:
            took, events = bring_up(dev)
            assert dev.link_up, f"no LinkUp in {took:.1f} s: {events}\n{peer.output()}"
            up = [e for e in events if isinstance(e, LinkUp)]
            assert up and str(up[0].result.address) == peer.dut_ip == "10.0.2.15"
            assert str(up[0].result.peer_address) == peer.peer_ip == "10.0.2.2"
            cfg = dev.link_config()
            assert isinstance(cfg, LinkConfig)
            assert (cfg.address, cfg.peer, cfg.default_route) == ("10.0.2.15", "10.0.2.2",
                                                                   False)
            assert dev.link_config() is cfg
            print(f"\nLCP+IPCP bring-up against slirp at {BAUD} baud: {took * 1000:.0f} ms")
        finally:
            dev.close()
        assert dev.stats["link.tx_LCP"] >= 2  # Configure-Request ... Terminate-Request


def test_an_idle_link_sleeps(ns: Netns) -> None:
    """Up and idle (LCP echoes every 500 ms), the stack sleeps on the port's descriptor:
    the loop's thread spends next to no CPU (bench/ppp.py gives the figure)."""
    with SlirpPeer(ns, baudrate=BAUD) as peer:
        dev = PppDevice(peer.port, baudrate=BAUD, default_route=False,
                        config=PppConfig(echo_interval_ms=500, echo_failure=4))
        stack = Stack()
        try:
            stack.add_device(dev)
            assert dev.fileno() is not None
            assert stack.run(until=lambda: dev.link_up and stack.interfaces[0].addrs != [],
                             timeout=10), peer.output()
            echoes0 = dev.stats["link.tx_LCP"]
            c0, t0 = time.thread_time(), time.monotonic()
            stack.run(timeout=2.0)
            cpu, wall = time.thread_time() - c0, time.monotonic() - t0
            assert dev.link_up and dev.stats["link.tx_LCP"] > echoes0  # alive, echoing
            assert cpu < 0.1 * wall, f"{cpu:.3f} s of CPU in {wall:.1f} s idle"
        finally:
            stack.close()


@pytest.mark.parametrize("asyncmap", [0, None], ids=["accm0", "default"])
def test_the_accm_slirp_asks_for_is_the_one_hilkit_escapes_by(
        ns: Netns, servers: LoopbackServer, asyncmap: int | None) -> None:
    """RFC 1662 §7.1: hilkit escapes the control bytes in the peer's receive ACCM, no
    more. slirp asks for 0 when told (``asyncmap 0``, as pppd does by default) and for
    nothing otherwise, which leaves the default 0xFFFFFFFF: then every byte below 0x20
    crosses the line as two, and slirp still gets the datagram right."""
    with SlirpPeer(ns, baudrate=BAUD, asyncmap=asyncmap) as peer:
        dev = PppDevice(peer.port, baudrate=BAUD, default_route=False)
        stack = Stack()
        try:
            stack.add_device(dev)
            assert stack.run(until=lambda: dev.link_up and stack.interfaces[0].addrs != [],
                             timeout=10), peer.output()
            lcp = dev.link.lcp_result
            assert lcp is not None
            assert lcp.tx_accm == (0 if asyncmap == 0 else 0xFFFFFFFF)
            escaped0 = dev.stats["link.hdlc_tx_escaped"]
            controls = bytes(range(32)) * 8  # 256 bytes below 0x20
            u = stack.udp_socket()
            u.sendto(controls, (peer.peer_ip, servers.udp_port))
            got: list[bytes] = []

            def echoed() -> bool:
                d = u.recvfrom()
                if d is not None:
                    got.append(d[0])
                return bool(got)

            assert stack.run(until=echoed, timeout=10)
            assert got[0] == controls
            escaped = dev.stats["link.hdlc_tx_escaped"] - escaped0
            assert (escaped >= len(controls)) == (asyncmap is None), escaped
        finally:
            stack.close()


@pytest.mark.parametrize("auth", ["pap", "chap"])
def test_link_up_with_authentication(ns: Netns, auth: str) -> None:
    with SlirpPeer(ns, baudrate=BAUD, auth=auth,  # type: ignore[arg-type]
                   secrets={"hilkit": "s3cret pass"}) as peer:
        good = PppConfig(credentials=Credentials(b"hilkit", b"s3cret pass"))
        dev = PppDevice(peer.port, baudrate=BAUD, config=good, default_route=False)
        try:
            took, events = bring_up(dev)
            assert dev.link_up, f"{auth}: no LinkUp: {events}\n{peer.output()}"
            assert dev.stats[f"link.tx_{auth.upper()}"] >= 1
            print(f"\n{auth.upper()} + LCP + IPCP bring-up: {took * 1000:.0f} ms")
        finally:
            dev.close()
        bad = PppConfig(credentials=Credentials(b"hilkit", b"wrong"))
        dev = PppDevice(peer.port, baudrate=BAUD, config=bad, default_route=False)
        try:
            _, events = bring_up(dev, limit_s=5)
            assert not dev.link_up
            assert any(isinstance(e, AuthFailedEvent) for e in events), events
        finally:
            dev.close()


def test_tcp_and_udp_through_the_stack(ns: Netns, servers: LoopbackServer) -> None:
    with SlirpPeer(ns, baudrate=BAUD) as peer:
        dev = PppDevice(peer.port, baudrate=BAUD, default_route=False)
        stack = Stack()
        try:
            stack.add_device(dev)
            t0 = time.monotonic()
            # the stack applies link_config() by itself: wait until it has our address
            assert stack.run(until=lambda: dev.link_up and stack.interfaces[0].addrs != [],
                             timeout=10), peer.output()
            print(f"\nbring-up through the stack: {(time.monotonic() - t0) * 1000:.0f} ms")
            target = (peer.peer_ip, servers.tcp_port)

            # echo: both ways, byte-identical, in pieces the windows take
            data = pattern(24 * 1024)
            with create_connection(stack, target, timeout=30) as s:
                s.sendall(b"E")
                back = bytearray()
                for i in range(0, len(data), 2048):
                    s.sendall(data[i:i + 2048])
                    while len(back) < min(i + 2048, len(data)):
                        back += s.recv(65536)
                s.shutdown(SHUT_WR)
                while chunk := s.recv(65536):
                    back += chunk
            assert bytes(back) == data

            # goodput, hilkit -> slirp
            n = 48 * 1024
            with create_connection(stack, target, timeout=60) as s:
                s.sendall(b"S")
                t0 = time.monotonic()
                s.sendall(pattern(n))
                s.shutdown(SHUT_WR)
                count = b""
                while len(count) < 8:
                    chunk = s.recv(8 - len(count))
                    assert chunk, "sink closed early"
                    count += chunk
                up_s = time.monotonic() - t0
                conn = s.tcp.conn
                up_stats = dict(conn.stats) if conn is not None else {}
            assert struct.unpack("!Q", count)[0] == n

            # goodput, slirp -> hilkit
            with create_connection(stack, target, timeout=60) as s:
                t0 = time.monotonic()
                s.sendall(b"D" + struct.pack("!Q", n))
                got = bytearray()
                while chunk := s.recv(65536):
                    got += chunk
                down_s = time.monotonic() - t0
            assert bytes(got) == pattern(n)
            for what, secs in (("hilkit->slirp", up_s), ("slirp->hilkit", down_s)):
                rate = n / secs
                print(f"TCP goodput {what} at {BAUD} baud: {rate:.0f} B/s "
                      f"({100 * rate / LINE_CEILING:.0f}% of the {LINE_CEILING:.0f} B/s "
                      f"line ceiling)")

            # UDP echo
            u = stack.udp_socket()
            payload = pattern(1200)
            u.sendto(payload, (peer.peer_ip, servers.udp_port))
            got_dgram: list[tuple[bytes, tuple[str, int]]] = []

            def have() -> bool:
                d = u.recvfrom()
                if d is not None:
                    got_dgram.append(d)
                return bool(got_dgram)

            assert stack.run(until=have, timeout=10)
            assert got_dgram[0] == (payload, (peer.peer_ip, servers.udp_port))
            u.close()
            assert not servers.errors
            print(f"device counters: {dev.counters.as_dict()}")
            print(f"upload connection: {up_stats}")
        finally:
            stack.close()


def _run_until(dev: PppDevice, pred: Callable[[], bool], limit_s: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        dev.poll(8)
        if pred():
            return time.monotonic() - t0
        time.sleep(0.002)
    return None


def test_slirp_restart_link_renegotiates_with_persist(ns: Netns) -> None:
    """slirp killed and started again on the same pty comes back silent; LCP echoes notice,
    the link ends, and persist_ms brings it up again against the new slirp."""
    with SlirpPeer(ns, baudrate=BAUD) as peer:
        cfg = PppConfig(echo_interval_ms=500, echo_failure=2)
        dev = PppDevice(peer.port, baudrate=BAUD, default_route=False, config=cfg,
                        persist_ms=200)
        try:
            bring_up(dev)
            assert dev.link_up, peer.output()
            port = peer.port
            peer.restart()
            assert peer.restarts == 1 and peer.port == port
            down = _run_until(dev, lambda: not dev.link_up, 10.0)
            assert down is not None, "the link did not notice slirp's restart"
            back = _run_until(dev, lambda: dev.link_up, 15.0)
            assert back is not None, f"no renegotiation: phase {dev.phase}\n{peer.output()}"
            assert dev.stats["relinks"] >= 1
            print(f"\nslirp restart: noticed in {down:.1f} s, link back {back:.1f} s later")
        finally:
            dev.close()


def test_line_down_briefly_keeps_the_link(ns: Netns) -> None:
    """The line down for less than the echoes allow: the link stays up, bytes discarded."""
    with SlirpPeer(ns, baudrate=BAUD) as peer:
        cfg = PppConfig(echo_interval_ms=500, echo_failure=4)
        dev = PppDevice(peer.port, baudrate=BAUD, default_route=False, config=cfg)
        try:
            bring_up(dev)
            assert dev.link_up
            assert peer.line is not None
            peer.line.down(600)
            _run_until(dev, lambda: False, 2.0)
            assert dev.link_up
            assert peer.line.fault_stats["b_to_a_discarded"] > 0  # our echo requests
        finally:
            dev.close()

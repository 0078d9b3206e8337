"""Helpers for the TCP tests against the kernel (``test_tcp_kernel.py``).

Threading model: the hilkit stack lives in the test's thread (blocking
facade, or ``Stack.run``); kernel sockets made with ``Netns.socket`` are
driven from helper threads (``KernelThread``), which call ``stack.wake()``
when they finish so a ``Stack.run(until=...)`` waiting on them returns at
once. Every kernel socket gets a timeout, so a failing test cannot leave a
thread blocked forever.

Crafted segments (``Crafter``) go out of a raw socket *inside* the test's
namespace, with source addresses from the TAP's own subnet: nothing leaves
the namespace.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import random
import selectors
import socket
import struct
import time
from pathlib import Path
from typing import Any

from hilkit.drivers.tap import TapDevice
from hilkit.rig.netns import Netns
from hilkit.stack import SocketEvent, Stack, StackConfig, TcpSocket, ipv4, tcp
from hilkit.stack.addr import int_to_ip, ip_to_int
from hilkit.stack.sockets import Socket
from hilkit.stack.tcp_conn import Connection
from tests.integration.conftest import HILKIT_IP, KERNEL_IP, TAP, Link, kernel_side

KSOCK_TIMEOUT = 60.0  # no kernel socket call in these tests may block longer


# -- links -----------------------------------------------------------------------------
def tcp_link(ns: Netns, tmp_path: Path, config: StackConfig | None = None,
             capture: bool = True) -> Link:
    """``conftest.make_link``, with the capture optional (64 MiB runs leave none)."""
    tap = ns.call(lambda: TapDevice(TAP))
    kernel_side(ns, persistent=False)
    pcap = tmp_path / "link.pcapng"
    stack = Stack(config=config, pcap=str(pcap) if capture else None)
    dev = stack.add_device(tap)
    stack.link_add(dev, HILKIT_IP, "255.255.255.0")
    return Link(ns, stack, tap, pcap)


# -- data ------------------------------------------------------------------------------
_LETTERS = bytes(0x61 + i % 26 for i in range(256))


def pattern(n: int, seed: int) -> bytes:
    """``n`` reproducible pseudo-random bytes (no two seeds alike, no period to hide in).

    Lowercase letters only: random binary payloads now and then look like the start of a
    Thrift message to tshark's heuristic dissectors, which then call the frame malformed.
    """
    return random.Random(seed).randbytes(n).translate(_LETTERS)


def sha(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


# -- kernel side -----------------------------------------------------------------------
def kernel_listener(ns: Netns, port: int, rcvbuf: int | None = None,
                    backlog: int = 256) -> socket.socket:
    k = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
    k.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if rcvbuf is not None:  # before listen(): accepted sockets inherit it, window scale too
        k.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    k.bind((KERNEL_IP, port))
    k.listen(backlog)
    k.settimeout(KSOCK_TIMEOUT)
    return k


def kernel_client(ns: Netns, timeout: float = KSOCK_TIMEOUT) -> socket.socket:
    k = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
    k.settimeout(timeout)
    return k


def k_recv_all(k: socket.socket) -> tuple[int, str]:
    """Read until EOF; (byte count, SHA-256)."""
    h = hashlib.sha256()
    n = 0
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while True:
        got = k.recv_into(buf)
        if got == 0:
            return n, h.hexdigest()
        h.update(view[:got])
        n += got


def k_recv_exactly(k: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = k.recv(n - len(out))
        if not chunk:
            raise EOFError(f"EOF after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


# -- hilkit side (blocking facade) ---------------------------------------------------------
def h_recv_all(s: Socket, bufsize: int = 1 << 20) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    while True:
        d = s.recv(bufsize)
        if not d:
            return n, h.hexdigest()
        h.update(d)
        n += len(d)


def h_recv_exactly(s: Socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError(f"EOF after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def settle(stack: Stack, conn: Connection, timeout: float = 3.0) -> None:
    """Run until everything hilkit sent is acknowledged and no ACK is owed."""
    assert stack.run(until=lambda: conn.snd_una == conn.snd_max and conn.delack_deadline is None
                     and not conn.ack_now, timeout=timeout), conn.info()


# -- hilkit echo server on event sockets ---------------------------------------------------
class EchoServer:
    """A picoTCP-style echo server: accept on CONN, recv on RD and send back, resume on WR.

    Each connection is closed once the peer's FIN has come and everything was echoed.
    """

    def __init__(self, stack: Stack, port: int, backlog: int = 256) -> None:
        self.stack = stack
        self.listener = stack.tcp_socket(self._on_listener)
        self.listener.bind(("0.0.0.0", port))
        self.listener.listen(backlog)
        self.pending: dict[TcpSocket, bytearray] = {}
        self.accepted = 0
        self.closed = 0
        self.echoed = 0
        self.errors: list[int] = []
        self.max_open = 0

    def _on_listener(self, sock: TcpSocket, ev: SocketEvent) -> None:
        if ev & SocketEvent.CONN:
            while (child := sock.accept()) is not None:
                self.accepted += 1
                self.pending[child] = bytearray()
                child.on_event = self._on_conn
                self.max_open = max(self.max_open, len(self.pending))
                self._pump(child)  # data (even a FIN) may have come before accept

    def _on_conn(self, sock: TcpSocket, ev: SocketEvent) -> None:
        if ev & SocketEvent.ERR:
            self.errors.append(sock.error)
            self.pending.pop(sock, None)
            sock.close()
            return
        self._pump(sock)

    def _pump(self, sock: TcpSocket) -> None:
        buf = self.pending.get(sock)
        if buf is None:
            return
        while True:
            if buf:
                n = sock.send(buf)
                del buf[:n]
                self.echoed += n
                if buf:
                    return  # the send buffer is full: WR brings us back
            data = sock.recv(65536)
            if data:
                buf += data
                continue
            if sock.eof:
                del self.pending[sock]
                sock.close()
                self.closed += 1
            return

    def close(self) -> None:
        self.listener.close()


# -- kernel echo clients / server (one selectors loop in one thread) -----------------------
def kernel_echo_clients(ns: Netns, count: int, size: int, addr: tuple[str, int],
                        deadline_s: float = 90.0) -> dict[str, Any]:
    """``count`` kernel sockets connect to ``addr`` at once, each sends ``size`` unique
    bytes, half-closes, and reads the echo until EOF. Returns per-socket outcomes."""
    socks = ns.call(lambda: [socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                             for _ in range(count)])
    sel = selectors.DefaultSelector()
    state: dict[socket.socket, dict[str, Any]] = {}
    for i, s in enumerate(socks):
        s.setblocking(False)
        err = s.connect_ex(addr)
        assert err in (0, errno.EINPROGRESS), os_err(err)
        state[s] = {"i": i, "data": pattern(size, 1000 + i), "off": 0, "got": bytearray(),
                    "connected": False, "err": 0, "eof": False}
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    end = time.monotonic() + deadline_s
    open_ = count
    try:
        while open_ and time.monotonic() < end:
            for key, mask in sel.select(timeout=0.5):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                st = state[s]
                if not st["connected"]:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        st["err"] = err
                        sel.unregister(s)
                        open_ -= 1
                        continue
                    st["connected"] = True
                if mask & selectors.EVENT_WRITE and st["off"] < size:
                    with contextlib.suppress(BlockingIOError):
                        st["off"] += s.send(memoryview(st["data"])[st["off"]:st["off"] + 65536])
                    if st["off"] == size:
                        s.shutdown(socket.SHUT_WR)
                        sel.modify(s, selectors.EVENT_READ)
                if mask & selectors.EVENT_READ:
                    try:
                        chunk = s.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        st["err"] = e.errno
                        sel.unregister(s)
                        open_ -= 1
                        continue
                    if chunk:
                        st["got"] += chunk
                    else:
                        st["eof"] = True
                        sel.unregister(s)
                        open_ -= 1
    finally:
        sel.close()
        for s in socks:
            s.close()
    ok = sum(1 for st in state.values() if st["eof"] and st["got"] == st["data"])
    bad = [(st["i"], st["off"], len(st["got"]), st["err"], st["eof"]) for st in state.values()
           if not (st["eof"] and st["got"] == st["data"])]
    return {"ok": ok, "bad": bad, "unfinished": open_}


def os_err(err: int) -> str:
    return f"{errno.errorcode.get(err, err)}"


class KernelEchoServer:
    """A kernel echo server in one thread (selectors); stops after ``expect`` connections."""

    def __init__(self, ns: Netns, port: int, expect: int, deadline_s: float = 90.0) -> None:
        self.lst = kernel_listener(ns, port, backlog=512)
        self.lst.setblocking(False)
        self.expect = expect
        self.deadline_s = deadline_s
        self.finished = 0
        self.accepted = 0

    def serve(self) -> int:
        sel = selectors.DefaultSelector()
        sel.register(self.lst, selectors.EVENT_READ)
        out: dict[socket.socket, bytearray] = {}
        eof: set[socket.socket] = set()
        end = time.monotonic() + self.deadline_s
        try:
            while self.finished < self.expect and time.monotonic() < end:
                for key, mask in sel.select(timeout=0.5):
                    s = key.fileobj
                    assert isinstance(s, socket.socket)
                    if s is self.lst:
                        with contextlib.suppress(BlockingIOError):
                            while True:
                                c, _ = self.lst.accept()
                                c.setblocking(False)
                                out[c] = bytearray()
                                self.accepted += 1
                                sel.register(c, selectors.EVENT_READ)
                        continue
                    buf = out[s]
                    if mask & selectors.EVENT_READ and s not in eof:
                        try:
                            chunk = s.recv(65536)
                        except BlockingIOError:
                            chunk = None
                        if chunk == b"":
                            eof.add(s)
                        elif chunk:
                            buf += chunk
                    if buf:
                        with contextlib.suppress(BlockingIOError):
                            n = s.send(buf)
                            del buf[:n]
                    if not buf and s in eof:
                        sel.unregister(s)
                        s.close()
                        del out[s]
                        self.finished += 1
                        continue
                    sel.modify(s, (selectors.EVENT_READ if s not in eof else 0)
                               | (selectors.EVENT_WRITE if buf else 0))
        finally:
            sel.close()
            for s in out:
                s.close()
            self.lst.close()
        return self.finished


class EchoClients:
    """``count`` hilkit event sockets that each send ``size`` unique bytes to an echo server,
    half-close, and collect the echo until EOF."""

    def __init__(self, stack: Stack, count: int, size: int, addr: tuple[str, int]) -> None:
        self.size = size
        self.data: dict[TcpSocket, bytes] = {}
        self.off: dict[TcpSocket, int] = {}
        self.got: dict[TcpSocket, bytearray] = {}
        self.done: dict[TcpSocket, str] = {}  # "ok", "mismatch" or an errno name
        for i in range(count):
            s = stack.tcp_socket(self._on_event)
            self.data[s] = pattern(size, 5000 + i)
            self.off[s] = 0
            self.got[s] = bytearray()
            s.connect(addr)

    def finished(self) -> bool:
        return len(self.done) == len(self.data)

    def _on_event(self, s: TcpSocket, ev: SocketEvent) -> None:
        if s in self.done:
            return
        if ev & SocketEvent.ERR:
            self.done[s] = os_err(s.error)
            s.close()
            return
        if s.connected and self.off[s] < self.size:
            while self.off[s] < self.size:
                n = s.send(memoryview(self.data[s])[self.off[s]:])
                if n == 0:
                    break
                self.off[s] += n
            if self.off[s] == self.size:
                s.shutdown()
        while True:
            d = s.recv(65536)
            if not d:
                break
            self.got[s] += d
        if s.eof:
            self.done[s] = "ok" if self.got[s] == self.data[s] else "mismatch"
            s.close()


# -- crafted segments from a raw socket in the namespace ------------------------------------
class Crafter:
    """Send hand-made TCP segments (IP_HDRINCL, any source in the subnet) and see what the
    kernel receives (a raw IPPROTO_TCP socket gets a copy of every inbound TCP segment)."""

    def __init__(self, ns: Netns) -> None:
        self.raw = ns.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        self.raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        self.raw.setblocking(False)
        self._ident = 1

    def send(self, src: str | int, sport: int, dst: str | int, dport: int, seq: int, ack: int,
             flags: int, wnd: int = 65535, opts: bytes = b"", payload: bytes = b"") -> None:
        s = ip_to_int(src) if isinstance(src, str) else src
        d = ip_to_int(dst) if isinstance(dst, str) else dst
        seg = tcp.header(s, d, sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, flags, wnd,
                         opts, payload) + payload
        self._ident = (self._ident + 1) & 0xFFFF
        pkt = ipv4.build_header(s, d, ipv4.PROTO_TCP, len(seg), self._ident) + seg
        self.raw.sendto(pkt, (int_to_ip(d), 0))

    def as_peer(self, conn: Connection, seq: int, ack: int, flags: int, wnd: int = 65535,
                opts: bytes = b"", payload: bytes = b"") -> None:
        """A segment that claims to come from ``conn``'s peer (the kernel socket)."""
        self.send(conn.remote[0], conn.remote[1], conn.local[0], conn.local[1], seq, ack, flags,
                  wnd, opts, payload)

    def drain(self) -> list[dict[str, Any]]:
        """Every TCP segment the kernel received since the last call, decoded."""
        out = []
        while True:
            try:
                pkt = self.raw.recv(65536)
            except BlockingIOError:
                return out
            ihl = (pkt[0] & 0xF) * 4
            src, dst = pkt[12:16], pkt[16:20]
            sport, dport, seq, ack, off, flags, wnd = struct.unpack_from("!HHIIBBH", pkt, ihl)
            out.append({"src": socket.inet_ntoa(src), "dst": socket.inet_ntoa(dst),
                        "sport": sport, "dport": dport, "seq": seq, "ack": ack,
                        "flags": flags, "wnd": wnd,
                        "payload": pkt[ihl + (off >> 4) * 4:]})

    def close(self) -> None:
        self.raw.close()

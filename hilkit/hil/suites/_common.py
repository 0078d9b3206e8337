"""What several suites share: sizes per rig kind, payload patterns, bulk TCP both ways."""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hilkit.hil.plugin import BuiltRigLike, HilSession, Kernel
from hilkit.stack import SocketEvent, Stack, TcpSocket, TcpState
from hilkit.stack.tcp_socket import SHUT_WR


def size_param(hil: HilSession, suite: str, key: str = "bytes") -> int:
    """The suite's ``key`` in bytes: the rig file's, else the declared default.

    A chip model moves every data byte as a 4-byte SPI frame in Python, so
    simulated SPI rigs may get a smaller default; that choice is noted in results.json.
    """
    p = hil.params(suite)
    n = p.integer(key)
    if p.sim_defaulted(key):
        hil.note(f"{suite}: {key} = {n} on this simulated SPI rig (real rigs: "
                 f"{p.spec(key).default}); set [suites.{suite}] {key} in the rig file "
                 f"to change it")
    return n


def timeout_param(hil: HilSession, suite: str) -> float:
    """The suite's ``timeout_s``: the rig file's, else the default for this rig."""
    return hil.params(suite).number("timeout_s")


_LETTERS = bytes(0x61 + i % 26 for i in range(256))


def pattern(n: int, seed: int) -> bytes:
    """``n`` reproducible pseudo-random bytes, lowercase letters only: random binary now
    and then looks like a Thrift message to tshark's heuristic dissectors, which then call
    the frame malformed."""
    return random.Random(seed).randbytes(n).translate(_LETTERS)


def random_bytes(n: int, seed: int) -> bytes:
    """``n`` reproducible random bytes, all 256 values: what a serial line's framing costs
    depends on them (RFC 1662 escapes), and its figures are defined on random data."""
    return random.Random(seed).randbytes(n)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- hilkit's side of a bulk transfer: an event-socket pump ----------------------------------


@dataclass
class Pump:
    """Send ``data`` (then FIN) and read until the peer's FIN, on one hilkit TCP socket.

    Driven by socket events, so both directions run at once.
    """

    data: bytes
    sent: int = 0
    received: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    error: int = 0
    eof: bool = False
    shut: bool = False
    sock: TcpSocket | None = None
    started_at: float = 0.0  # the connection was asked for (the data already made)
    first_byte_at: float | None = None
    eof_at: float | None = None
    on_progress: Callable[[Pump], None] | None = None

    @property
    def done(self) -> bool:
        return bool(self.error) or (self.eof and self.shut)

    def attach(self, sock: TcpSocket) -> None:
        self.sock = sock
        sock.on_event = self._on_event
        self._pump(sock)

    def _on_event(self, sock: TcpSocket, ev: SocketEvent) -> None:
        if ev & SocketEvent.ERR:
            self.error = sock.error or -1
            return
        self._pump(sock)

    def _pump(self, sock: TcpSocket) -> None:
        if self.error or sock.conn is None:
            return
        try:
            if not self.shut and sock.state in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
                view = memoryview(self.data)
                while self.sent < len(self.data):
                    n = sock.send(view[self.sent:self.sent + 65536])
                    if n == 0:
                        break
                    self.sent += n
                if self.sent == len(self.data):
                    sock.shutdown(SHUT_WR)
                    self.shut = True
            while True:
                d = sock.recv(1 << 20)
                if not d:
                    break
                if self.first_byte_at is None:
                    self.first_byte_at = time.monotonic()
                self.digest.update(d)
                self.received += len(d)
        except OSError as e:
            self.error = e.errno or -1
            return
        if sock.eof and not self.eof:
            self.eof = True
            self.eof_at = time.monotonic()
        if self.on_progress is not None:
            self.on_progress(self)


def hilkit_connect(stack: Stack, addr: tuple[str, int], pump: Pump) -> TcpSocket:
    """Connect a hilkit socket to ``addr`` and hand it to ``pump`` once connected."""

    def on_event(sock: TcpSocket, ev: SocketEvent) -> None:
        if ev & SocketEvent.ERR:
            pump.error = sock.error or -1
        elif sock.connected:
            pump.attach(sock)

    s = stack.tcp_socket(on_event)
    pump.sock = s
    s.connect(addr)
    return s


def hilkit_listen(stack: Stack, addr: tuple[str, int], pump: Pump) -> TcpSocket:
    """Listen on ``addr``; the first connection accepted goes to ``pump``."""

    def on_listener(lst: TcpSocket, ev: SocketEvent) -> None:
        child = lst.accept()
        if child is not None and pump.sock is None:
            pump.attach(child)

    s = stack.tcp_socket(on_listener)
    s.bind(addr)
    s.listen(4)
    return s


# -- the kernel's side ------------------------------------------------------------------------


@dataclass
class KernelEnd:
    received: int = 0
    digest: str = ""
    sent: int = 0
    started_at: float = 0.0
    ended_at: float = 0.0


# A kernel end shares hilkit's interpreter: each of its wake-ups takes the GIL from the
# loop under test. A throughput run wakes it per this many bytes (or EOF), not per segment.
KERNEL_RCVLOWAT = 32 * 1024


def kernel_duplex(sock: socket.socket, data: bytes, rcvlowat: int = 1) -> KernelEnd:
    """On a connected kernel socket: send ``data`` then FIN (in a helper thread) while
    reading until EOF, ``rcvlowat`` bytes a wake-up (SO_RCVLOWAT); both ends' counts and
    the SHA-256 of what came in."""
    end = KernelEnd(started_at=time.monotonic())
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            view = memoryview(data)
            off = 0
            while off < len(data):
                off += sock.send(view[off:off + (1 << 20)])
            end.sent = off
            sock.shutdown(socket.SHUT_WR)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=sender, name="kernel-sender", daemon=True)
    t.start()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, rcvlowat)
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while True:
        got = sock.recv_into(buf)
        if got == 0:
            break
        h.update(view[:got])
        end.received += got
    t.join(sock.gettimeout() or 60)
    end.digest = h.hexdigest()
    end.ended_at = time.monotonic()
    sock.close()
    if errors:
        raise errors[0]
    return end


def duplex_transfer(stack: Stack, kernel: Kernel, built: BuiltRigLike, nbytes: int,
                    hilkit_is_client: bool, port: int, timeout: float,
                    on_progress: Callable[[Pump], None] | None = None,
                    seed: int = 1, nbytes_to_hilkit: int | None = None,
                    kernel_rcvlowat: int = 1, binary: bool = False,
                    ) -> tuple[Pump, KernelEnd, bytes, bytes]:
    """``nbytes`` from hilkit to the kernel while ``nbytes_to_hilkit`` (default the same)
    go the other way, at once, between a hilkit socket and a kernel socket; ``binary``:
    random bytes (``random_bytes``) rather than letters (``pattern``).

    Returns (hilkit's end, the kernel's end, what hilkit sent, what the kernel sent).
    """
    make = random_bytes if binary else pattern
    to_kernel = make(nbytes, seed)
    back = nbytes if nbytes_to_hilkit is None else nbytes_to_hilkit
    to_hilkit = make(back, seed + 1000)
    pump = Pump(to_kernel, on_progress=on_progress)
    if hilkit_is_client:
        lst = kernel.tcp_listener(port)
        kport = lst.getsockname()[1]

        def kside() -> KernelEnd:
            conn, _ = lst.accept()
            conn.settimeout(timeout)
            return kernel_duplex(conn, to_hilkit, kernel_rcvlowat)

        th = kernel.start(stack, kside, "kernel-server")
        pump.started_at = time.monotonic()
        hilkit_connect(stack, (built.kernel_ip, kport), pump)
    else:
        hilkit_listen(stack, (built.dut_ip, port), pump)

        def kside() -> KernelEnd:
            c = kernel.tcp_client()
            c.settimeout(timeout)
            c.connect(kernel.to_hilkit(port))
            return kernel_duplex(c, to_hilkit, kernel_rcvlowat)

        pump.started_at = time.monotonic()
        th = kernel.start(stack, kside, "kernel-client")
    kend: KernelEnd = th.wait(timeout)
    stack.run(until=lambda: pump.done, timeout=timeout)
    if pump.sock is not None:
        pump.sock.close()
        stack.run(until=lambda: True, timeout=0)
    return pump, kend, to_kernel, to_hilkit

"""Blocking sockets over hilkit's TCP, shaped like the stdlib's ``socket``.

Each call drives the stack itself (``Stack.run`` until the call can finish),
so a program written for stdlib sockets -- ``http.client`` among them -- runs
over hilkit without ever calling ``tick()``. Timeouts raise ``TimeoutError``,
a refused connect ``ConnectionRefusedError``, a reset ``ConnectionResetError``.
The stack is single-threaded: use these from the thread that owns it.
"""

from __future__ import annotations

import errno
import io
import os
import socket as _socket
from collections.abc import Callable
from typing import Any, Literal

from hilkit.stack.stack import Stack
from hilkit.stack.tcp_conn import State
from hilkit.stack.tcp_socket import SHUT_RD, SHUT_RDWR, SHUT_WR, TcpSocket

__all__ = ["SHUT_RD", "SHUT_RDWR", "SHUT_WR", "Socket", "create_connection", "create_server"]

_DEFAULT: Any = object()


class Socket:
    """A blocking (or timed) TCP socket. ``fileno()`` is -1: there is no OS descriptor."""

    def __init__(self, stack: Stack, sock: TcpSocket | None = None,
                 timeout: float | None = None) -> None:
        self.stack = stack
        self.tcp = sock if sock is not None else stack.tcp_socket()
        self._timeout = timeout
        self._closed = False
        self._io_refs = 0  # open makefile() files; the socket closes when the last goes
        self._close_wanted = False

    # -- stdlib surface ----------------------------------------------------------
    def settimeout(self, timeout: float | None) -> None:
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be >= 0 or None")
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        if level == _socket.IPPROTO_TCP and option == _socket.TCP_NODELAY:
            self.tcp.set_nodelay(bool(value))
        elif level == _socket.SOL_SOCKET and option == _socket.SO_KEEPALIVE:
            self.tcp.set_keepalive(bool(value))
        # other options have no meaning here and are accepted as no-ops, like a TAP ignores them

    def fileno(self) -> int:
        return -1

    def bind(self, address: tuple[str, int]) -> None:
        self.tcp.bind(address)

    def listen(self, backlog: int = 128) -> None:
        self.tcp.listen(backlog)

    def accept(self) -> tuple[Socket, tuple[str, int]]:
        self._wait(lambda: bool(self.tcp.accept_queue), "accept")
        child = self.tcp.accept()
        assert child is not None
        return Socket(self.stack, child, self._timeout), child.getpeername()

    def connect(self, address: tuple[str, int]) -> None:
        self.tcp.connect(address)
        try:
            self._wait(lambda: self.tcp.connected or self.tcp.error != 0
                       or self.tcp.state == State.CLOSED, "connect")
        except TimeoutError:
            self.tcp.abort()
            raise
        if not self.tcp.connected:
            self._raise(self.tcp.error or errno.ECONNREFUSED)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        self._wait(lambda: self.tcp.writable > 0 or self._failed(), "send")
        self._check_error()
        return self.tcp.send(data)

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        while view:
            n = self.send(view)
            view = view[n:]

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        self._wait(lambda: self.tcp.readable > 0 or self.tcp.eof or self._failed(), "recv")
        if not self.tcp.readable and self.tcp.error:
            self._check_error()
        return self.tcp.recv(bufsize)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        data = self.recv(nbytes or len(view))
        view[:len(data)] = data
        return len(data)

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        """A file over the socket, as ``socket.makefile`` (what ``http.client`` reads)."""
        raw = _SocketIO(self, "rb" if "r" in mode else "wb")
        self._io_refs += 1
        size = io.DEFAULT_BUFFER_SIZE if buffering is None or buffering < 0 else buffering
        if size == 0:
            if "b" not in mode:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buf: io.BufferedIOBase = (io.BufferedReader(raw, size) if "r" in mode
                                  else io.BufferedWriter(raw, size))
        if "b" in mode:
            return buf
        return io.TextIOWrapper(buf, encoding, errors, newline)

    def shutdown(self, how: int) -> None:
        self.tcp.shutdown(how)
        if how in (SHUT_WR, SHUT_RDWR):
            self.stack.run(until=lambda: True, timeout=0)

    def close(self) -> None:
        """Close; with files from ``makefile`` still open, only once they are closed too.

        ``http.client`` closes its socket before reading a body that ends with
        the connection, and goes on reading through the file, as stdlib
        sockets allow.
        """
        self._close_wanted = True
        if self._io_refs == 0 and not self._closed:
            self._closed = True
            self.tcp.close()
            self.stack.run(until=lambda: True, timeout=0)  # let the FIN go out now

    def _io_closed(self) -> None:
        self._io_refs -= 1
        if self._io_refs == 0 and self._close_wanted:
            self.close()

    def getsockname(self) -> tuple[str, int]:
        return self.tcp.getsockname()

    def getpeername(self) -> tuple[str, int]:
        return self.tcp.getpeername()

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------------
    def _failed(self) -> bool:
        return self.tcp.error != 0 or self.tcp.state == State.CLOSED

    def _check_error(self) -> None:
        if self.tcp.error:
            self._raise(self.tcp.error)
        if self.tcp.state == State.CLOSED and not self.tcp.listening:
            self._raise(errno.EPIPE)

    @staticmethod
    def _raise(err: int) -> None:
        raise OSError(err, os.strerror(err))

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "socket is closed")
        if ready():
            return
        if self._timeout == 0:
            raise BlockingIOError(errno.EAGAIN, f"{what} would block")
        if not self.stack.run(until=ready, timeout=self._timeout):
            raise TimeoutError(f"{what} timed out")


class _SocketIO(io.RawIOBase):
    def __init__(self, sock: Socket, mode: Literal["rb", "wb"]) -> None:
        super().__init__()
        self._sock = sock
        self._mode = mode

    def readable(self) -> bool:
        return self._mode == "rb"

    def writable(self) -> bool:
        return self._mode == "wb"

    def readinto(self, b: Any) -> int:
        return self._sock.recv_into(b)

    def write(self, b: Any) -> int:
        self._sock.sendall(b)
        return len(memoryview(b))

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._sock._io_closed()


def create_connection(
    stack: Stack, address: tuple[str, int], timeout: float | None = _DEFAULT,
    source_address: tuple[str, int] | None = None,
) -> Socket:
    """Connect like ``socket.create_connection``; the host must be an IPv4 address."""
    sock = Socket(stack, timeout=None if timeout is _DEFAULT else timeout)
    if source_address is not None:
        sock.bind(source_address)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def create_server(stack: Stack, address: tuple[str, int], backlog: int = 128) -> Socket:
    sock = Socket(stack)
    sock.bind(address)
    sock.listen(backlog)
    return sock

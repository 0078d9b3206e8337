"""UDP sockets with event callbacks, in the style of picoTCP's ``pico_socket``.

A socket knows the UDP layer only through ``UdpPorts``: the few calls it
makes, so this module needs nothing above it.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

from hilkit.stack.addr import int_to_ip, ip_to_int
from hilkit.stack.events import SocketEvent
from hilkit.stack.udp import HEADER_LEN, Datagram


class UdpPorts(Protocol):
    """What a UDP socket asks of the UDP layer (``udp_layer.UdpLayer``)."""

    def bind(self, sock: UdpSocket, addr: int, port: int) -> None: ...

    def unbind(self, sock: UdpSocket) -> None: ...

    def output(self, laddr: int, lport: int, dst: int, dport: int,
               data: bytes | bytearray | memoryview) -> None: ...


class UdpOwner(Protocol):
    """A stack, as far as a socket cares: ``UdpSocket(stack)`` works as it always did."""

    @property
    def udp(self) -> UdpPorts: ...


class UdpSocket:
    """A UDP socket driven by the stack's ``tick()``; nothing here blocks.

    ``on_event(sock, events)`` is called with ``SocketEvent.RD`` when a
    datagram is queued and ``SocketEvent.ERR`` when an ICMP error concerns a
    connected socket; the next ``recvfrom``/``recvmsg``/``send`` then raises
    it, as a Linux socket reports ``ECONNREFUSED`` once.
    """

    def __init__(
        self, udp: UdpPorts | UdpOwner,
        on_event: Callable[[UdpSocket, SocketEvent], None] | None = None,
        rcvbuf: int = 256 * 1024,
    ) -> None:
        layer = getattr(udp, "udp", None)  # given a stack: its UDP layer
        self._udp: UdpPorts = layer if layer is not None else cast(UdpPorts, udp)
        self.on_event = on_event
        self.local: tuple[int, int] | None = None  # (address or 0, port)
        self.remote: tuple[int, int] | None = None
        self.rcvbuf = rcvbuf
        self._queue: deque[Datagram] = deque()
        self._queued_bytes = 0
        self.error: int = 0
        self.closed = False

    # -- API --------------------------------------------------------------
    def bind(self, addr: tuple[str, int]) -> None:
        self._check_open()
        if self.local is not None:
            raise OSError(errno.EINVAL, "socket already bound")
        self._udp.bind(self, ip_to_int(addr[0] or "0.0.0.0"), addr[1])

    def connect(self, addr: tuple[str, int]) -> None:
        self._check_open()
        if self.local is None:
            self._udp.bind(self, 0, 0)
        self.remote = (ip_to_int(addr[0]), addr[1])
        self.error = 0

    def sendto(self, data: bytes | bytearray | memoryview, addr: tuple[str, int]) -> int:
        self._check_open()
        self._raise_error()
        if self.local is None:
            self._udp.bind(self, 0, 0)
        assert self.local is not None
        dst = ip_to_int(addr[0])
        if not 0 < addr[1] <= 0xFFFF:
            raise OSError(errno.EINVAL, f"bad port {addr[1]}")
        if HEADER_LEN + len(data) + 20 > 65535:
            raise OSError(errno.EMSGSIZE, "datagram too long")
        self._udp.output(self.local[0], self.local[1], dst, addr[1], data)
        return len(data)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        if self.remote is None:
            raise OSError(errno.EDESTADDRREQ, "socket not connected")
        return self.sendto(data, (int_to_ip(self.remote[0]), self.remote[1]))

    def recvfrom(self) -> tuple[bytes, tuple[str, int]] | None:
        """The oldest datagram and its sender, or None if none is queued."""
        d = self.recvmsg()
        return None if d is None else (d.data, d.addr)

    def recvmsg(self) -> Datagram | None:
        """The oldest datagram with its sender and destination, or None if none is queued."""
        self._check_open()
        self._raise_error()
        if not self._queue:
            return None
        d = self._queue.popleft()
        self._queued_bytes -= len(d.data)
        return d

    def pending(self) -> int:
        return len(self._queue)

    def getsockname(self) -> tuple[str, int]:
        return (int_to_ip(self.local[0]), self.local[1]) if self.local else ("0.0.0.0", 0)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._udp.unbind(self)
            self._queue.clear()

    # -- called by the UDP layer, which then tells ``on_event`` ------------------
    def deliver(self, payload: memoryview, src: int, sport: int, dst: int = 0,
                broadcast: bool = False) -> bool:
        """Queue a datagram; False if the receive buffer has no room for it."""
        if self._queued_bytes + len(payload) > self.rcvbuf:
            return False
        data = bytes(payload)
        self._queue.append(Datagram(data, (int_to_ip(src), sport), int_to_ip(dst), broadcast))
        self._queued_bytes += len(data)
        return True

    def _raise_error(self) -> None:
        if self.error:
            err, self.error = self.error, 0
            raise OSError(err, os.strerror(err))  # OSError maps errno to its subclass

    def _check_open(self) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "socket is closed")

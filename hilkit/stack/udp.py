"""UDP (RFC 768): header parse and build."""

from __future__ import annotations

import errno
import os
import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from hilkit.stack import checksum
from hilkit.stack.addr import int_to_ip, ip_to_int
from hilkit.stack.events import SocketEvent
from hilkit.stack.ipv4 import PROTO_UDP

if TYPE_CHECKING:
    from hilkit.stack.stack import Stack

HEADER_LEN = 8
EPHEMERAL_FIRST = 49152  # RFC 6335 §6 dynamic ports
EPHEMERAL_LAST = 65535

_HDR = struct.Struct("!HHHH")


def parse(seg: memoryview, src: int, dst: int) -> tuple[int, int, memoryview] | str:
    """(source port, destination port, payload) or the reason it is refused."""
    if len(seg) < HEADER_LEN:
        return "udp.short"
    sport, dport, length, csum = _HDR.unpack_from(seg)
    if length < HEADER_LEN or length > len(seg):
        return "udp.bad_length"
    seg = seg[:length]
    if csum and not checksum.verify(seg, checksum.pseudo_header_sum(src, dst, PROTO_UDP, length)):
        return "udp.bad_checksum"
    if dport == 0:
        return "udp.port_zero"
    return sport, dport, seg[HEADER_LEN:]


def header(src: int, sport: int, dst: int, dport: int, payload: checksum.Buffer) -> bytes:
    """The 8-byte header for ``payload`` with its checksum."""
    length = HEADER_LEN + len(payload)
    pseudo = checksum.pseudo_header_sum(src, dst, PROTO_UDP, length)
    c = checksum.checksum(payload, checksum.ones_sum(_HDR.pack(sport, dport, length, 0), pseudo))
    # RFC 768: a computed zero is sent as all ones; zero means "no checksum".
    return _HDR.pack(sport, dport, length, c or 0xFFFF)


class Datagram(NamedTuple):
    """A received datagram and where it was going, as ``IP_PKTINFO`` tells on Linux.

    A service that answers checks ``broadcast`` first: answering a datagram
    sent to a broadcast or multicast address turns one spoofed packet into
    many (reflection, amplification).
    """

    data: bytes
    addr: tuple[str, int]  # the sender
    dst: str  # the destination address in its IP header
    broadcast: bool  # sent to a broadcast or multicast address, at the IP or the link layer


class UdpSocket:
    """A UDP socket driven by the stack's ``tick()``; nothing here blocks.

    ``on_event(sock, events)`` is called with ``SocketEvent.RD`` when a
    datagram is queued and ``SocketEvent.ERR`` when an ICMP error concerns a
    connected socket; the next ``recvfrom``/``recvmsg``/``send`` then raises
    it, as a Linux socket reports ``ECONNREFUSED`` once.
    """

    def __init__(
        self, stack: Stack, on_event: Callable[[UdpSocket, SocketEvent], None] | None = None,
        rcvbuf: int = 256 * 1024,
    ) -> None:
        self._stack = stack
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
        self._stack._udp_bind(self, ip_to_int(addr[0] or "0.0.0.0"), addr[1])

    def connect(self, addr: tuple[str, int]) -> None:
        self._check_open()
        if self.local is None:
            self._stack._udp_bind(self, 0, 0)
        self.remote = (ip_to_int(addr[0]), addr[1])
        self.error = 0

    def sendto(self, data: bytes | bytearray | memoryview, addr: tuple[str, int]) -> int:
        self._check_open()
        self._raise_error()
        if self.local is None:
            self._stack._udp_bind(self, 0, 0)
        assert self.local is not None
        dst = ip_to_int(addr[0])
        if not 0 < addr[1] <= 0xFFFF:
            raise OSError(errno.EINVAL, f"bad port {addr[1]}")
        if HEADER_LEN + len(data) + 20 > 65535:
            raise OSError(errno.EMSGSIZE, "datagram too long")
        self._stack._udp_output(self.local[0], self.local[1], dst, addr[1], data)
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
            self._stack._udp_unbind(self)
            self._queue.clear()

    # -- called by the stack ----------------------------------------------
    def _deliver(self, payload: memoryview, src: int, sport: int, dst: int = 0,
                 broadcast: bool = False) -> bool:
        if self._queued_bytes + len(payload) > self.rcvbuf:
            return False
        data = bytes(payload)
        self._queue.append(Datagram(data, (int_to_ip(src), sport), int_to_ip(dst), broadcast))
        self._queued_bytes += len(data)
        self._stack._notify(self, SocketEvent.RD)
        return True

    def _set_error(self, err: int) -> None:
        self.error = err
        self._stack._notify(self, SocketEvent.ERR)

    def _raise_error(self) -> None:
        if self.error:
            err, self.error = self.error, 0
            raise OSError(err, os.strerror(err))  # OSError maps errno to its subclass

    def _check_open(self) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "socket is closed")

"""The small services `hilkit serve` offers, on UDP and TCP: echo (RFC 862),
discard (RFC 863) and, on TCP, chargen (RFC 864). Written on the event
sockets, so one stack serves hundreds of clients without threads.

Whatever a datagram says, a service never raises: what it cannot or must not
answer is dropped and counted in the ``counters`` it was given."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable

from hilkit.stack import SocketEvent, Stack, TcpSocket, UdpSocket
from hilkit.stack.udp import Datagram

Handler = Callable[[TcpSocket, SocketEvent], None]

ECHO_PORT = 7
DISCARD_PORT = 9
CHARGEN_PORT = 19
TCP_BACKLOG = 256

_CHARGEN_LINE = 72  # RFC 864: 72 printable characters and CR LF per line


def chargen_block(lines: int = 95) -> bytes:
    """The rotating pattern of RFC 864: line i starts at printable character i."""
    chars = bytes(range(32, 127))
    out = bytearray()
    for i in range(lines):
        out += (chars[i % 95:] + chars)[:_CHARGEN_LINE] + b"\r\n"
    return bytes(out)


_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def unanswerable(d: Datagram) -> str | None:
    """Why a reply to ``d`` must not be sent (a counter's name), or None.

    Never to a broadcast or multicast destination: one spoofed datagram would
    draw an answer from every host (RFC 1122 §4.1.3.6 asks the same of UDP
    errors). Never to port 0 or to a source that is not one host.
    """
    if d.broadcast:
        return "to_broadcast"
    if d.addr[1] == 0:
        return "source_port_zero"
    src = ipaddress.IPv4Address(d.addr[0])
    if src.is_unspecified or src.is_multicast or src.is_loopback or src == _LIMITED_BROADCAST:
        return "bad_source"
    return None


def _next_datagram(sock: UdpSocket) -> Datagram | None:
    for _ in range(2):  # a queued socket error is reported once; then datagrams again
        try:
            return sock.recvmsg()
        except OSError:
            continue
    return None


def start_udp_services(stack: Stack, counters: Counter[str] | None = None) -> list[UdpSocket]:
    """Bind UDP echo (7) and discard (9); ``counters`` gets what they did, by name."""
    count: Counter[str] = Counter() if counters is None else counters

    def echo(sock: UdpSocket, ev: SocketEvent) -> None:
        if not ev & SocketEvent.RD:
            return
        while (d := _next_datagram(sock)) is not None:
            why = unanswerable(d)
            if why is not None:
                count[f"udp.echo.not_answered.{why}"] += 1
                continue
            try:
                sock.sendto(d.data, d.addr)
            except OSError:  # no route back, too long for the link, ...
                count["udp.echo.not_answered.send_failed"] += 1
            else:
                count["udp.echo.answered"] += 1

    def discard(sock: UdpSocket, ev: SocketEvent) -> None:
        if ev & SocketEvent.RD:
            while _next_datagram(sock) is not None:
                count["udp.discard.received"] += 1

    socks = []
    for port, handler in ((ECHO_PORT, echo), (DISCARD_PORT, discard)):
        s = stack.udp_socket(handler)
        s.bind(("0.0.0.0", port))
        socks.append(s)
    return socks


class _Echo:
    """Echo what arrives; when the send buffer is full, stop reading until WR."""

    def __init__(self) -> None:
        self.pending = b""

    def __call__(self, sock: TcpSocket, ev: SocketEvent) -> None:
        if ev & SocketEvent.ERR:
            sock.close()
            return
        if self.pending:
            n = sock.send(self.pending)
            self.pending = self.pending[n:]
        while not self.pending and sock.readable:
            data = sock.recv(65536)
            n = sock.send(data)
            self.pending = data[n:]
        if sock.eof and not self.pending:
            sock.close()


def _discard(sock: TcpSocket, ev: SocketEvent) -> None:
    if ev & SocketEvent.ERR:
        sock.close()
        return
    while sock.readable:
        sock.recv(1 << 20)
    if sock.eof:
        sock.close()


class _Chargen:
    """Send the pattern for as long as the client reads; what it sends is discarded."""

    block = chargen_block()

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self, sock: TcpSocket, ev: SocketEvent) -> None:
        if ev & SocketEvent.ERR or sock.eof:
            sock.close()
            return
        while sock.readable:
            sock.recv(1 << 20)
        while sock.writable:
            chunk = self.block[self.offset:] + self.block
            n = sock.send(chunk[:sock.writable])
            self.offset = (self.offset + n) % len(self.block)
            if n == 0:
                break


def start_tcp_services(stack: Stack, backlog: int = TCP_BACKLOG) -> list[TcpSocket]:
    def serve(factory: type[_Echo] | type[_Chargen] | None) -> Handler:
        def on_listener(lst: TcpSocket, ev: SocketEvent) -> None:
            while (child := lst.accept()) is not None:
                handler: Handler = factory() if factory is not None else _discard
                child.on_event = handler
                handler(child, SocketEvent.RD | SocketEvent.WR)  # data may already be there
        return on_listener

    socks = []
    for port, factory in ((ECHO_PORT, _Echo), (DISCARD_PORT, None), (CHARGEN_PORT, _Chargen)):
        s = stack.tcp_socket(serve(factory))
        s.bind(("0.0.0.0", port))
        s.listen(backlog)
        socks.append(s)
    return socks

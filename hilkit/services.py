"""The small services `hilkit serve` offers, on UDP and TCP: echo (RFC 862),
discard (RFC 863) and, on TCP, chargen (RFC 864). Written on the event
sockets, so one stack serves hundreds of clients without threads."""

from __future__ import annotations

from collections.abc import Callable

from hilkit.stack import SocketEvent, Stack, TcpSocket, UdpSocket

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


def start_udp_services(stack: Stack) -> list[UdpSocket]:
    def echo(sock: UdpSocket, ev: SocketEvent) -> None:
        if ev & SocketEvent.RD:
            while (item := sock.recvfrom()) is not None:
                data, addr = item
                sock.sendto(data, addr)

    def discard(sock: UdpSocket, ev: SocketEvent) -> None:
        if ev & SocketEvent.RD:
            while sock.recvfrom() is not None:
                pass

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

"""The small-services suite `hilkit serve` offers: echo (RFC 862) and discard (RFC 863)."""

from __future__ import annotations

from hilkit.stack import SocketEvent, Stack, UdpSocket

UDP_ECHO_PORT = 7
UDP_DISCARD_PORT = 9


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
    for port, handler in ((UDP_ECHO_PORT, echo), (UDP_DISCARD_PORT, discard)):
        s = stack.udp_socket(handler)
        s.bind(("0.0.0.0", port))
        socks.append(s)
    return socks

"""A picoTCP-style TCP/IP stack: sans-I/O protocol modules driven by ``Stack.tick()``."""

from hilkit.stack.events import SocketEvent
from hilkit.stack.icmp4 import PingError, PingStats
from hilkit.stack.stack import Interface, Route, Stack, StackConfig
from hilkit.stack.tcp_conn import State as TcpState
from hilkit.stack.tcp_conn import TcpConfig
from hilkit.stack.tcp_socket import TcpSocket
from hilkit.stack.udp_socket import UdpSocket

__all__ = [
    "Interface",
    "PingError",
    "PingStats",
    "Route",
    "SocketEvent",
    "Stack",
    "StackConfig",
    "TcpConfig",
    "TcpSocket",
    "TcpState",
    "UdpSocket",
]

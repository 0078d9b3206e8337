"""A picoTCP-style TCP/IP stack: sans-I/O protocol modules driven by ``Stack.tick()``."""

from hilkit.stack.events import SocketEvent
from hilkit.stack.icmp4 import PingError, PingStats
from hilkit.stack.stack import Interface, Route, Stack, StackConfig
from hilkit.stack.udp import UdpSocket

__all__ = [
    "Interface",
    "PingError",
    "PingStats",
    "Route",
    "SocketEvent",
    "Stack",
    "StackConfig",
    "UdpSocket",
]

"""Socket events, in the style of picoTCP's PICO_SOCK_EV_* flags."""

from __future__ import annotations

import enum


class SocketEvent(enum.IntFlag):
    RD = 0x01  # data to read
    WR = 0x02  # room to write
    CONN = 0x04  # connected (TCP) / a connection to accept (listening TCP)
    CLOSE = 0x08  # the peer closed (TCP)
    FIN = 0x10  # the socket is fully closed (TCP)
    ERR = 0x80  # an error is pending: read it from ``socket.error``

"""TCP sockets with event callbacks, in the style of picoTCP's ``pico_socket``.

Nothing here blocks: calls return at once, and ``on_event(sock, events)``
says when to call again (``SocketEvent.CONN`` connected or a connection to
accept, ``RD`` data or end of stream, ``WR`` room to send, ``CLOSE`` the peer
sent FIN, ``FIN`` fully closed, ``ERR`` see ``error``). The stack's ``tick()``
drives them. ``hilkit.stack.sockets`` builds blocking sockets on top.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

from hilkit.port.clock import Clock
from hilkit.stack.addr import int_to_ip, ip_to_int
from hilkit.stack.events import SocketEvent
from hilkit.stack.tcp_conn import Connection, State

SHUT_RD, SHUT_WR, SHUT_RDWR = 0, 1, 2


class TcpPorts(Protocol):
    """What a TCP socket asks of the TCP layer (``tcp_layer.TcpLayer``): a socket
    knows nothing above it, so the layer can create sockets without a cycle."""

    clock: Clock

    def bind(self, addr: int, port: int) -> tuple[int, int]: ...

    def unbind(self, local: tuple[int, int]) -> None: ...

    def listen(self, sock: TcpSocket) -> None: ...

    def unlisten(self, sock: TcpSocket) -> None: ...

    def connect(self, sock: TcpSocket, remote: tuple[int, int]) -> None: ...

    def flush(self, conn: Connection) -> None: ...


class TcpOwner(Protocol):
    """A stack, as far as a socket cares: ``TcpSocket(stack)`` works as it always did."""

    @property
    def tcp(self) -> TcpPorts: ...


class TcpSocket:
    # One per connection, and a thousand idle connections on a small host: no dict, and
    # a listener's queue only on a listener.
    __slots__ = ("_accept_queue", "_tcp", "backlog", "children", "closed", "conn", "error",
                 "half_open", "listening", "local", "nodelay", "on_event")

    def __init__(
        self, tcp: TcpPorts | TcpOwner,
        on_event: Callable[[TcpSocket, SocketEvent], None] | None = None,
    ) -> None:
        layer = getattr(tcp, "tcp", None)  # given a stack: its TCP layer
        self._tcp: TcpPorts = layer if layer is not None else cast(TcpPorts, tcp)
        self.on_event = on_event
        self.conn: Connection | None = None
        self.local: tuple[int, int] | None = None
        self.error = 0
        self.closed = False
        self.nodelay = False
        # listening
        self.listening = False
        self.backlog = 0
        self._accept_queue: deque[TcpSocket] | None = None
        self.half_open = 0
        self.children = 0  # connections from this listener still in the stack (all states)

    @property
    def accept_queue(self) -> deque[TcpSocket]:
        """Connections accepted by the stack, waiting for ``accept()``."""
        q = self._accept_queue
        if q is None:
            q = self._accept_queue = deque()
        return q

    # -- setup -------------------------------------------------------------------
    def bind(self, addr: tuple[str, int]) -> None:
        self._check_open()
        if self.local is not None or self.conn is not None:
            raise OSError(errno.EINVAL, "socket already bound")
        self.local = self._tcp.bind(ip_to_int(addr[0] or "0.0.0.0"), addr[1])

    def listen(self, backlog: int = 128) -> None:
        """Accept connections; at most ``backlog`` wait in the accept queue.

        SYNs that find the queue full are dropped (the client retries);
        half-open connections beyond ``StackConfig.tcp_max_syn_backlog`` are
        answered with SYN cookies instead of being kept.
        """
        self._check_open()
        if self.local is None:
            raise OSError(errno.EINVAL, "bind before listen")
        if self.conn is not None:
            raise OSError(errno.EISCONN, "socket is connected")
        self.backlog = max(1, backlog)
        if not self.listening:
            self.listening = True
            self._tcp.listen(self)

    def accept(self) -> TcpSocket | None:
        self._check_open()
        if not self.listening:
            raise OSError(errno.EINVAL, "socket is not listening")
        return self.accept_queue.popleft() if self.accept_queue else None

    def connect(self, addr: tuple[str, int]) -> None:
        """Start the handshake; ``SocketEvent.CONN`` or ``ERR`` tells how it went."""
        self._check_open()
        if self.conn is not None or self.listening:
            raise OSError(errno.EISCONN, "socket is already connected or listening")
        self._tcp.connect(self, (ip_to_int(addr[0]), addr[1]))

    # -- data ----------------------------------------------------------------------
    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Queue what fits in the send buffer; 0 means full (wait for ``WR``)."""
        conn = self._connected()
        n = conn.send(data, self._tcp.clock.now_ms())
        self._tcp.flush(conn)
        return n

    def recv(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes; b"" if none is there yet or at the end (see ``eof``)."""
        self._check_open()
        conn = self.conn
        if conn is None:
            raise OSError(errno.ENOTCONN, "socket is not connected")
        if not conn.readable and self.error:
            self._raise_error()
        data = conn.recv(n, self._tcp.clock.now_ms())
        self._tcp.flush(conn)
        return data

    @property
    def eof(self) -> bool:
        """The peer closed its side and everything it sent has been read."""
        return self.conn is not None and self.conn.eof

    @property
    def readable(self) -> int:
        return self.conn.readable if self.conn else 0

    @property
    def writable(self) -> int:
        return self.conn.writable if self.conn else 0

    @property
    def state(self) -> State:
        if self.listening:
            return State.LISTEN
        return self.conn.state if self.conn else State.CLOSED

    @property
    def connected(self) -> bool:
        return self.conn is not None and self.conn.state in (
            State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1, State.FIN_WAIT_2)

    def set_nodelay(self, on: bool) -> None:
        self.nodelay = on
        if self.conn is not None:
            self.conn.nodelay = on
            self._tcp.flush(self.conn)

    def set_keepalive(self, on: bool) -> None:
        if self.conn is None:
            raise OSError(errno.ENOTCONN, "socket is not connected")
        self.conn.set_keepalive(on, self._tcp.clock.now_ms())
        self._tcp.flush(self.conn)

    def shutdown(self, how: int = SHUT_WR) -> None:
        conn = self._connected()
        if how in (SHUT_WR, SHUT_RDWR):
            conn.shutdown_write(self._tcp.clock.now_ms())
            self._tcp.flush(conn)

    def close(self) -> None:
        """Close gracefully (FIN after queued data); unread data means RST, as on Linux."""
        self._release(abort=False)

    def abort(self) -> None:
        """Reset the connection at once (SO_LINGER 0)."""
        self._release(abort=True)

    def _release(self, abort: bool) -> None:
        """The one way out: the listener, the port and the connection are let go."""
        if self.closed:
            return
        self.closed = True
        self.on_event = None
        now = self._tcp.clock.now_ms()
        if self.listening:
            self._tcp.unlisten(self)
            for child in self._accept_queue or ():
                child.abort()
            self._accept_queue = None
        conn = self.conn
        if conn is not None and conn.state != State.CLOSED:
            conn.context = None
            if abort or conn.readable or conn.state in (State.SYN_SENT, State.SYN_RECEIVED):
                conn.abort(now, errno.ECONNABORTED)
            else:
                conn.shutdown_write(now)
                conn.orphan(now)
            self._tcp.flush(conn)
        elif conn is not None:
            conn.drop_buffers()  # closed already: what nobody read leaves the budget
        if self.local is not None:  # the connection's own 4-tuple stays taken until it ends
            self._tcp.unbind(self.local)

    def getsockname(self) -> tuple[str, int]:
        if self.conn is not None:
            return int_to_ip(self.conn.local[0]), self.conn.local[1]
        return (int_to_ip(self.local[0]), self.local[1]) if self.local else ("0.0.0.0", 0)

    def getpeername(self) -> tuple[str, int]:
        if self.conn is None:
            raise OSError(errno.ENOTCONN, "socket is not connected")
        return int_to_ip(self.conn.remote[0]), self.conn.remote[1]

    def info(self) -> dict[str, object]:
        """Per-connection figures: cwnd, ssthresh, srtt, rttvar, retransmits, ..."""
        return self.conn.info() if self.conn else {"state": self.state.value}

    # -- helpers -------------------------------------------------------------------
    def _connected(self) -> Connection:
        self._check_open()
        if self.error:
            self._raise_error()
        if self.conn is None:
            raise OSError(errno.ENOTCONN, "socket is not connected")
        return self.conn

    def _check_open(self) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "socket is closed")

    def _raise_error(self) -> None:
        err = self.error
        raise OSError(err, os.strerror(err))  # ConnectionResetError, ... by errno

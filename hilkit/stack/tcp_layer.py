"""The TCP layer of a stack: demultiplexing, listeners, SYN cookies, timers.

Connections (``tcp_conn``) are sans-I/O; this module is where their segments
meet IPv4 and their deadlines meet the stack's timer queue.

SYN-flood defence: a listener keeps at most ``max_syn_backlog`` half-open
connections; SYNs beyond that are answered with SYN cookies (no state kept),
and a connection is created only when the cookie comes back in a valid ACK.
Connections made from cookies carry the MSS (from a table of four) but not
window scaling, timestamps or SACK. SYNs that find a full accept queue are
dropped without an answer, so the client's retransmission tries again later.

Bounds on what peers can make the stack hold: at most ``max_connections``
TCBs in all and ``listener_max_connections`` per listener (SYNs beyond are
dropped unanswered and counted, as for a full accept queue; ``connect``
fails with ENOBUFS), and one memory budget for all buffers (``tcp_budget``).
"""

from __future__ import annotations

import errno
import hashlib
import secrets
import struct
from collections import Counter

from hilkit.port.clock import Clock
from hilkit.port.device import (
    Device,
    device_offloads,
    device_rx_buffer,
    max_frame_len,
    tx_queue_reader,
)
from hilkit.stack import ipv4, tcp
from hilkit.stack.addr import ANY
from hilkit.stack.events import SocketEvent
from hilkit.stack.faults import Callbacks
from hilkit.stack.ip_layer import Ipv4Layer
from hilkit.stack.tcp import ACK, RST, SYN, Segment, seq_add
from hilkit.stack.tcp_budget import TcpBudget
from hilkit.stack.tcp_conn import (
    Connection,
    State,
    TcpConfig,
    rx_window_clamp,
    tx_flight_clamp,
)
from hilkit.stack.tcp_socket import TcpSocket
from hilkit.stack.timers import Timer, TimerQueue

Key = tuple[int, int, int, int]  # local address, local port, remote address, remote port

EPHEMERAL_FIRST, EPHEMERAL_LAST = 49152, 65535  # RFC 6335 §6
COOKIE_MSS = (536, 1220, 1440, 1460)  # 2 bits in the cookie
COOKIE_PERIOD_MS = 64_000.0  # the cookie's clock ticks every 64 s; one tick back is valid


class TcpLayer:
    def __init__(self, ip: Ipv4Layer, clock: Clock, timers: TimerQueue, stats: Counter[str],
                 drops: Counter[str], callbacks: Callbacks, config: TcpConfig,
                 max_syn_backlog: int, syncookies: bool) -> None:
        self.ip = ip
        self.clock = clock
        self.stats = stats
        self.config = config
        self.max_syn_backlog = max_syn_backlog
        self.syncookies = syncookies
        self.conns: dict[Key, Connection] = {}
        self.listeners: dict[tuple[int, int], TcpSocket] = {}  # (address or ANY, port)
        self.bound: set[tuple[int, int]] = set()
        self._armed: dict[Connection, Timer] = {}  # one timer per connection, the earliest
        self._half_open_of: dict[Connection, TcpSocket] = {}
        self._listener_of: dict[Connection, TcpSocket] = {}  # counted in its ``children``
        self.budget = TcpBudget(config.mem_low, config.mem_pressure, config.mem_high,
                                config.challenge_acks_per_s, stats)
        self._timers = timers
        self._drops = drops
        self._callbacks = callbacks
        self._ip_output = ip.output  # per segment: bound once
        self._secret = secrets.token_bytes(16)
        self._next_ephemeral = 0
        self._ts_secret = secrets.token_bytes(16)
        ip.register(ipv4.PROTO_TCP, self.input, self.icmp_error)

    # -- sockets -----------------------------------------------------------------
    def bind(self, addr: int, port: int) -> tuple[int, int]:
        if addr != ANY and not self.ip.is_local(addr):
            raise OSError(errno.EADDRNOTAVAIL, "not a local address")
        if port == 0:
            port = self._ephemeral(addr, ANY, 0)
        if not 0 < port <= 0xFFFF:
            raise OSError(errno.EINVAL, f"bad port {port}")
        for a, p in self.bound:
            if p == port and (a == addr or ANY in (a, addr)):
                raise OSError(errno.EADDRINUSE, f"TCP port {port} is in use")
        self.bound.add((addr, port))
        return addr, port

    def unbind(self, local: tuple[int, int]) -> None:
        self.bound.discard(local)

    def listen(self, sock: TcpSocket) -> None:
        assert sock.local is not None
        self.listeners[sock.local] = sock

    def unlisten(self, sock: TcpSocket) -> None:
        assert sock.local is not None
        if self.listeners.get(sock.local) is sock:
            del self.listeners[sock.local]
        self.bound.discard(sock.local)
        for conn, parent in list(self._half_open_of.items()):
            if parent is sock:
                conn.abort(self.clock.now_ms())
                self.flush(conn)

    def connect(self, sock: TcpSocket, remote: tuple[int, int]) -> None:
        route, src = self.ip.source_for(remote[0])
        if route is None or src == ANY:
            raise OSError(errno.ENETUNREACH, "no route to host")
        if sock.local is not None:
            laddr, lport = sock.local
            laddr = laddr if laddr != ANY else src
        else:
            laddr, lport = src, self._ephemeral(src, remote[0], remote[1])
        key = (laddr, lport, remote[0], remote[1])
        if key in self.conns:
            raise OSError(errno.EADDRINUSE, "that connection exists")
        if len(self.conns) >= self.config.max_connections:
            self.stats["tcp.conn_limit_refused"] += 1
            raise OSError(errno.ENOBUFS, "too many TCP connections")
        now = self.clock.now_ms()
        dev = route.iface.dev
        conn = Connection((laddr, lport), remote, self._isn(key, now), dev.mtu,
                          self.config, now, self._ts_offset(key), self.budget,
                          *self._clamps(dev))
        self._attach(conn, dev)
        conn.nodelay = sock.nodelay
        conn.context = sock
        sock.conn = conn
        self.conns[key] = conn
        conn.connect(now)
        self.flush(conn)

    def close_all(self) -> None:
        """Abort every connection and drop every listener (``Stack.close``)."""
        now = self.clock.now_ms()
        for conn in list(self.conns.values()):
            if conn.state not in (State.CLOSED, State.TIME_WAIT):  # TIME-WAIT closed cleanly
                conn.abort(now)
            self.flush(conn)  # the RST goes out while the device is still open
            self._forget(conn)
        self.listeners.clear()
        self.bound.clear()

    # -- input ---------------------------------------------------------------------
    def input(self, h: ipv4.Header, hbytes: ipv4.Buffer, data: memoryview, bcast: bool) -> None:
        if bcast:
            self._drops["tcp.broadcast"] += 1
            return
        seg = tcp.parse(data, h.src, h.dst, h.csum_checked)
        if isinstance(seg, str):
            self._drops[seg] += 1
            return
        now = self.clock.now_ms()
        conn = self.conns.get((h.dst, seg.dport, h.src, seg.sport))
        if conn is not None:
            conn.input(seg, now)
            self.flush(conn)
            return
        lst = self.listeners.get((h.dst, seg.dport)) or self.listeners.get((ANY, seg.dport))
        if lst is not None:
            self._listen_input(lst, h, seg, now)
            return
        self.stats["tcp.no_socket"] += 1
        self._reset_for(h, seg)

    def _listen_input(self, lst: TcpSocket, h: ipv4.Header, seg: Segment, now: float) -> None:
        """RFC 9293 §3.10.7.2, with SYN cookies when the half-open table is full."""
        if seg.flags & RST:
            return
        if seg.flags & ACK:
            if self.syncookies and not seg.flags & SYN and self._cookie_ack(lst, h, seg, now):
                return
            self._reset_for(h, seg)
            return
        if not seg.flags & SYN:
            return
        if len(lst.accept_queue) >= lst.backlog:
            self.stats["tcp.listen_overflow"] += 1
            return
        if not self._room_for_child(lst):
            return
        key = (h.dst, seg.dport, h.src, seg.sport)
        if lst.half_open >= self.max_syn_backlog:
            if self.syncookies:
                self._send_cookie(key, seg, now)
            else:
                self.stats["tcp.syn_dropped"] += 1
            return
        route, _ = self.ip.source_for(h.src)
        if route is None:
            self.stats["ipv4.no_route"] += 1
            return
        dev = route.iface.dev
        conn = Connection((h.dst, seg.dport), (h.src, seg.sport), self._isn(key, now),
                          dev.mtu, self.config, now, self._ts_offset(key),
                          self.budget, *self._clamps(dev))
        self._attach(conn, dev)
        conn.nodelay = lst.nodelay
        self.conns[key] = conn
        self._half_open_of[conn] = lst
        lst.half_open += 1
        self._listener_of[conn] = lst
        lst.children += 1
        conn.accept_syn(seg, now)
        self.flush(conn)

    def _room_for_child(self, lst: TcpSocket) -> bool:
        """The caps on connections in all and per listener; a refusal is counted."""
        if len(self.conns) >= self.config.max_connections:
            self.stats["tcp.conn_limit_refused"] += 1
            return False
        if lst.children >= self.config.listener_max_connections:
            self.stats["tcp.listener_limit_refused"] += 1
            return False
        return True

    def _reset_for(self, h: ipv4.Header, seg: Segment) -> None:
        """RFC 9293 §3.10.7.1: a segment for no connection draws a RST (unless it is one)."""
        if seg.flags & RST:
            return
        if seg.flags & ACK:
            seq, ack, flags = seg.ack, 0, RST
        else:
            seq, ack, flags = 0, seq_add(seg.seq, seg.seg_len), RST | ACK
        hdr = tcp.header(h.dst, h.src, seg.dport, seg.sport, seq, ack, flags, 0, b"", b"")
        self.stats["tcp.resets_sent"] += 1
        self._ip_output(h.src, ipv4.PROTO_TCP, [hdr], src=h.dst)

    # -- SYN cookies ---------------------------------------------------------------
    def _cookie(self, key: Key, client_isn: int, tick: int, mss_idx: int) -> int:
        mac = hashlib.blake2s(struct.pack("!IHIHII", key[0], key[1], key[2], key[3], client_isn,
                                          tick & 0xFFFFFFFF), key=self._secret,
                              digest_size=4).digest()
        return ((tick & 0x1F) << 27) | (mss_idx << 24) | (int.from_bytes(mac, "big") & 0xFFFFFF)

    def _send_cookie(self, key: Key, seg: Segment, now: float) -> None:
        route, _ = self.ip.source_for(key[2])
        ours = route.iface.dev.mtu - 40 if route is not None else tcp.DEFAULT_MSS
        mss = min(seg.mss or tcp.DEFAULT_MSS, ours)
        idx = max(i for i, m in enumerate(COOKIE_MSS) if m <= mss or i == 0)
        isn = self._cookie(key, seg.seq, int(now // COOKIE_PERIOD_MS), idx)
        opts = tcp.build_options(mss=ours)
        clamp = self._clamps(route.iface.dev)[0] if route is not None else None
        wnd = min(0xFFFF, self.config.rcvbuf, clamp if clamp is not None else 0xFFFF)
        hdr = tcp.header(key[0], key[2], key[1], key[3], isn, seq_add(seg.seq, 1), SYN | ACK,
                         wnd, opts, b"")
        self.stats["tcp.syncookies_sent"] += 1
        self._ip_output(key[2], ipv4.PROTO_TCP, [hdr], src=key[0])

    def _cookie_ack(self, lst: TcpSocket, h: ipv4.Header, seg: Segment, now: float) -> bool:
        key = (h.dst, seg.dport, h.src, seg.sport)
        cookie = seq_add(seg.ack, -1)
        client_isn = seq_add(seg.seq, -1)
        tick = int(now // COOKIE_PERIOD_MS)
        idx = (cookie >> 24) & 0x3
        if not any(self._cookie(key, client_isn, t, idx) == cookie for t in (tick, tick - 1)):
            self.stats["tcp.syncookies_failed"] += 1
            return False
        if len(lst.accept_queue) >= lst.backlog:
            self.stats["tcp.listen_overflow"] += 1
            return True
        if not self._room_for_child(lst):
            return True
        route, _ = self.ip.source_for(h.src)
        if route is None:
            return True
        dev = route.iface.dev
        conn = Connection((h.dst, seg.dport), key[2:], cookie, dev.mtu, self.config, now,
                          0, self.budget, *self._clamps(dev))
        self._attach(conn, dev)
        conn.establish_from_cookie(seg, COOKIE_MSS[idx], now)
        self.stats["tcp.syncookies_accepted"] += 1
        self.conns[key] = conn
        self._listener_of[conn] = lst
        lst.children += 1
        self._accepted(lst, conn)
        if seg.payload or seg.flags & tcp.FIN:
            conn.input(seg, now)
        self.flush(conn)
        return True

    # -- after every call into a connection --------------------------------------------
    def flush(self, conn: Connection) -> None:
        """Send what the connection queued, hand over its events, arm its timer."""
        if conn.outbox:
            out, conn.outbox = conn.outbox, []
            ip_output = self._ip_output
            for hdr, payload in out:
                ip_output(conn.remote[0], ipv4.PROTO_TCP, [hdr, payload] if payload
                          else [hdr], src=conn.local[0])
            del out, hdr, payload  # views of the send buffer: let it grow again
        if conn.dev_queue_ms is not None and (conn.rto_deadline is not None
                                              or conn.tlp_deadline is not None):
            conn.link_queued(conn.dev_queue_ms(), self.clock.now_ms())
        ev = conn.events
        if ev:
            conn.events = SocketEvent(0)
            parent = self._half_open_of.get(conn)
            if parent is not None and ev & SocketEvent.CONN:
                del self._half_open_of[conn]
                parent.half_open -= 1
                self._accepted(parent, conn)
            elif conn.context is not None:
                sock: TcpSocket = conn.context
                if ev & SocketEvent.ERR:
                    sock.error = conn.error
                self._callbacks.notify(sock, ev)
        if conn.state == State.CLOSED:
            self._forget(conn)
            return
        deadline = conn.next_deadline()
        if deadline is not None:
            armed = self._armed.get(conn)
            if armed is None or deadline < armed.deadline:
                if armed is not None:
                    armed.cancel()
                self._armed[conn] = self._timers.at(deadline, lambda: self._timer(conn))

    def _accepted(self, lst: TcpSocket, conn: Connection) -> None:
        child = TcpSocket(self)
        child.conn = conn
        child.nodelay = lst.nodelay
        conn.context = child
        if lst.closed or len(lst.accept_queue) >= lst.backlog:
            self.stats["tcp.listen_overflow"] += 1
            conn.abort(self.clock.now_ms())
            return
        lst.accept_queue.append(child)
        self._callbacks.notify(lst, SocketEvent.CONN)

    def _timer(self, conn: Connection) -> None:
        """The connection's earliest deadline came; it re-arms for its next in ``flush``."""
        self._armed.pop(conn, None)
        conn.on_timer(self.clock.now_ms())
        self.flush(conn)

    def _forget(self, conn: Connection) -> None:
        key = (conn.local[0], conn.local[1], conn.remote[0], conn.remote[1])
        if self.conns.get(key) is conn:
            del self.conns[key]
        timer = self._armed.pop(conn, None)
        if timer is not None:
            timer.cancel()  # a closed connection leaves no timer behind
        parent = self._half_open_of.pop(conn, None)
        if parent is not None:
            parent.half_open -= 1
        parent = self._listener_of.pop(conn, None)
        if parent is not None:
            parent.children -= 1

    def icmp_error(self, err: int, src: int, dst: int, transport: memoryview) -> None:
        """An ICMP error about one of our segments (or a local failure to send it)."""
        sport = int.from_bytes(transport[0:2], "big")
        dport = int.from_bytes(transport[2:4], "big")
        conn = self.conns.get((src, sport, dst, dport))
        if conn is None:
            return
        if len(transport) >= 8:  # RFC 5927 §4.1: the quoted SEQ must be one we have in flight
            seq = int.from_bytes(transport[4:8], "big")
            if not (tcp.seq_le(conn.snd_una, seq) and tcp.seq_lt(seq, conn.snd_max)):
                self.stats["tcp.icmp_out_of_window"] += 1
                return
        # Hard errors abort a connection still in SYN-SENT (as Linux does); later, soft.
        if conn.state == State.SYN_SENT and err in (errno.ECONNREFUSED, errno.EHOSTUNREACH,
                                                   errno.ENETUNREACH):
            conn.abort(self.clock.now_ms(), err)
            self.flush(conn)
        else:
            conn.stats["icmp_soft_errors"] = conn.stats.get("icmp_soft_errors", 0) + 1

    def _attach(self, conn: Connection, dev: Device) -> None:
        """What the connection reads of the device it is routed out through, once."""
        conn.dev_queue_ms = tx_queue_reader(dev)
        off = device_offloads(dev)
        conn.tx_partial = off.tx_checksum
        if off.tso and off.tx_checksum:  # the device cuts and completes each piece
            conn.tso_max = off.tso
        elif self.config.gso and conn.dev_queue_ms is None:  # the stack cuts (not on a slow
            conn.tso_max = ipv4.MAX_DATAGRAM  # link: its queue is looked at per segment)

    @staticmethod
    def _clamps(dev: Device) -> tuple[int | None, int | None]:
        """The receive window limit and the flight limit in segments for a connection
        routed out through ``dev``: looked up once, when the connection is made
        (``rx_window_clamp``, ``tx_flight_clamp``, docs/porting.md)."""
        rx, link = device_rx_buffer(dev), max_frame_len(dev) - dev.mtu
        return rx_window_clamp(rx, dev.mtu, link), tx_flight_clamp(rx, dev.mtu, link)

    # -- numbers -----------------------------------------------------------------------
    def _isn(self, key: Key, now: float) -> int:
        """RFC 6528: a 4 µs clock plus a keyed hash of the connection's identity."""
        mac = hashlib.blake2s(struct.pack("!IHIH", *key), key=self._secret, digest_size=4)
        return (int(now * 250) + int.from_bytes(mac.digest(), "big")) & 0xFFFFFFFF

    def _ts_offset(self, key: Key) -> int:
        """RFC 7323 §5.4: a per-connection random offset for TSval."""
        mac = hashlib.blake2s(struct.pack("!IHIH", *key), key=self._ts_secret, digest_size=4)
        return int.from_bytes(mac.digest(), "big")

    def _ephemeral(self, laddr: int, raddr: int, rport: int) -> int:
        """RFC 6056 §3.3.3 (algorithm 3): a per-destination offset, then a shared counter."""
        span = EPHEMERAL_LAST - EPHEMERAL_FIRST + 1
        mac = hashlib.blake2s(struct.pack("!IIH", laddr, raddr, rport), key=self._secret,
                              digest_size=4)
        offset = int.from_bytes(mac.digest(), "big")
        used = {p for _, p in self.bound} | {p for _, p in self.listeners}
        for i in range(span):
            port = EPHEMERAL_FIRST + (offset + self._next_ephemeral + i) % span
            if port in used or (laddr, port, raddr, rport) in self.conns:
                continue
            if rport == 0 and any(k[1] == port for k in self.conns):
                continue
            self._next_ephemeral += i + 1
            return port
        raise OSError(errno.EADDRNOTAVAIL, "no free TCP port")

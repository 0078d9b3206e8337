"""TCP through whole stacks: two ``Stack``s on an in-memory wire with a manual clock.

Event sockets (``stack.tcp_socket()``) on both ends; everything that crosses
the wire is real Ethernet/IPv4/TCP and can be parsed back. Covers the layer
around the state machine: demultiplexing, listeners and their backlog, SYN
cookies, RSTs for closed ports, ISNs (RFC 6528), ephemeral ports (RFC 6056),
timers and tables left empty after many connections.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import random
from collections.abc import Callable

import pytest

from hilkit.stack import (
    SocketEvent,
    StackConfig,
    TcpConfig,
    TcpSocket,
    TcpState,
    eth,
    ipv4,
    sockets,
    tcp,
)
from hilkit.stack.tcp import ACK, RST, SYN, Segment, seq_diff
from tests.memwire import StackPair

A_IP, B_IP = "10.0.0.1", "10.0.0.2"
A_INT, B_INT = 0x0A000001, 0x0A000002
A_MAC, B_MAC = b"\x02\x00\x00\x00\x00\x0a", b"\x02\x00\x00\x00\x00\x0b"
PORT = 80


class Pair(StackPair):
    def healthy(self) -> None:
        assert self.a.drops["internal_error"] == 0 and self.b.drops["internal_error"] == 0
        assert self.a.stats["callback_error"] == 0 and self.b.stats["callback_error"] == 0


def tcp_segments(frames: list[bytes]) -> list[tuple[int, int, Segment]]:
    """(source address, destination address, segment) for every TCP segment in ``frames``."""
    out = []
    for f in frames:
        if f[12:14] != b"\x08\x00":
            continue
        ip = memoryview(f)[14:]
        if ip[9] != ipv4.PROTO_TCP:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big")
        src, dst = int.from_bytes(ip[12:16], "big"), int.from_bytes(ip[16:20], "big")
        seg = tcp.parse(ip[ihl:total], src, dst)
        assert isinstance(seg, Segment), seg
        out.append((src, dst, seg))
    return out


def inject_tcp(p: Pair, sport: int, dport: int, seq: int, ack: int, flags: int,
               opts: bytes = b"", data: bytes = b"") -> None:
    """A segment from A's address straight into B's receive queue."""
    hdr = tcp.header(A_INT, B_INT, sport, dport, seq, ack, flags, 65535, opts, data)
    body = hdr + data
    pkt = ipv4.build_header(A_INT, B_INT, ipv4.PROTO_TCP, len(body), random.randrange(65536))
    p.wb.rx.append(eth.header(B_MAC, A_MAC, eth.ETHERTYPE_IPV4) + pkt + body)


class Recorder:
    def __init__(self) -> None:
        self.events: list[SocketEvent] = []

    def __call__(self, sock: TcpSocket, ev: SocketEvent) -> None:
        self.events.append(ev)

    @property
    def all(self) -> SocketEvent:
        acc = SocketEvent(0)
        for e in self.events:
            acc |= e
        return acc


def listen(p: Pair, port: int = PORT, backlog: int = 128,
           on_event: Callable[[TcpSocket, SocketEvent], None] | None = None) -> TcpSocket:
    srv = p.b.tcp_socket(on_event)
    srv.bind(("0.0.0.0", port))
    srv.listen(backlog)
    return srv


def connect(p: Pair, srv: TcpSocket, port: int = PORT,
            on_event: Callable[[TcpSocket, SocketEvent], None] | None = None
            ) -> tuple[TcpSocket, TcpSocket]:
    c = p.a.tcp_socket(on_event)
    c.connect((B_IP, port))
    p.settle()
    assert c.connected, c.state
    child = srv.accept()
    assert child is not None
    return c, child


def pump(p: Pair, pairs: list[tuple[TcpSocket, bytes, TcpSocket, bytearray]],
         max_ms: float = 600_000) -> None:
    """Send each ``data`` from its socket while reading at the other, until all arrived."""
    offs = [0] * len(pairs)
    waited = 0.0
    while True:
        for i, (tx, data, _, _) in enumerate(pairs):
            while offs[i] < len(data) and tx.writable:
                n = tx.send(data[offs[i]:offs[i] + 65536])
                if n == 0:
                    break
                offs[i] += n
        p.settle(4)
        for _, _, rx, got in pairs:
            while chunk := rx.recv(1 << 20):
                got += chunk
        if all(len(got) >= len(data) for _, data, _, got in pairs):
            return
        p.clock.advance(1)
        waited += 1
        assert waited < max_ms, "transfer stalled"


def sha(b: bytes | bytearray) -> str:
    return hashlib.sha256(b).hexdigest()


# -- connect, accept, data ------------------------------------------------------------------


def test_connect_accept_and_data_both_ways() -> None:
    p = Pair()
    srv_ev = Recorder()
    srv = listen(p, on_event=srv_ev)
    cli_ev = Recorder()
    c, child = connect(p, srv, on_event=cli_ev)
    assert srv_ev.all == SocketEvent.CONN
    assert cli_ev.all & SocketEvent.CONN and cli_ev.all & SocketEvent.WR
    assert c.getpeername() == (B_IP, PORT) and child.getpeername() == c.getsockname()
    assert child.getsockname() == (B_IP, PORT)
    assert c.state == child.state == TcpState.ESTABLISHED
    up, down = random.Random(1).randbytes(1_000_000), random.Random(2).randbytes(700_000)
    got_b, got_a = bytearray(), bytearray()
    pump(p, [(c, up, child, got_b), (child, down, c, got_a)])
    assert sha(got_b) == sha(up) and sha(got_a) == sha(down)
    info = c.info()
    assert info["timestamps"] and info["sack"] and info["state"] == "ESTABLISHED"
    p.healthy()
    assert not p.a.drops and not p.b.drops


def test_events_connection_life() -> None:
    """CONN, WR, RD, CLOSE (peer's FIN), FIN (fully closed), ERR (reset)."""
    p = Pair()
    srv = listen(p)
    cli_ev, child_ev = Recorder(), Recorder()
    c, child = connect(p, srv, on_event=cli_ev)
    child.on_event = child_ev
    assert cli_ev.all == SocketEvent.CONN | SocketEvent.WR
    c.send(b"hello")
    p.settle()
    assert child_ev.all & SocketEvent.RD and child.recv() == b"hello"
    child.send(b"world")
    p.settle()
    p.advance(100, step=10)
    assert cli_ev.all & SocketEvent.RD and c.recv() == b"world"
    assert child_ev.all & SocketEvent.WR  # acknowledged: room again
    cli_ev.events.clear()
    child_ev.events.clear()
    c.shutdown()
    p.settle()
    assert child_ev.all & SocketEvent.CLOSE and child.eof and child.recv() == b""
    assert not child_ev.all & SocketEvent.FIN
    child.shutdown()
    p.settle()
    assert child_ev.all & SocketEvent.FIN and not child_ev.all & SocketEvent.ERR
    assert cli_ev.all & SocketEvent.CLOSE and c.eof
    assert c.state == TcpState.TIME_WAIT and child.state == TcpState.CLOSED
    # a reset connection says ERR, and the error is ECONNRESET
    c2_ev = Recorder()
    c2, child2 = connect(p, srv, on_event=c2_ev)
    child2.abort()
    p.settle()
    assert c2_ev.all & SocketEvent.ERR and c2.error == errno.ECONNRESET
    with pytest.raises(ConnectionResetError):
        c2.recv()
    with pytest.raises(ConnectionResetError):
        c2.send(b"x")
    p.healthy()


def test_connect_to_closed_port_is_refused() -> None:
    """RFC 9293 §3.10.7.1: a SYN to no socket draws <SEQ=0><ACK=SEG.SEQ+1><CTL=RST,ACK>."""
    p = Pair()
    ev = Recorder()
    c = p.a.tcp_socket(ev)
    c.connect((B_IP, 9))
    p.settle()
    assert c.error == errno.ECONNREFUSED and ev.all & SocketEvent.ERR
    assert c.state == TcpState.CLOSED
    with pytest.raises(ConnectionRefusedError):
        c.recv()
    syn = [s for _, _, s in tcp_segments(p.wa.sent) if s.flags & SYN]
    rst = [s for _, _, s in tcp_segments(p.wb.sent)]
    assert len(syn) == 1 and len(rst) == 1
    assert rst[0].flags & (RST | ACK) == RST | ACK and rst[0].seq == 0
    assert rst[0].ack == syn[0].seq + 1
    assert p.a.tcp.conns == {} and p.b.stats["tcp.resets_sent"] == 1
    p.advance(2_000, step=100)  # a stale wake-up for the SYN's timer may still be queued
    assert len(p.a.timers) == 0 and not p.a.tcp._armed
    p.healthy()


def test_ack_to_closed_port_draws_rst_with_its_ack_as_seq() -> None:
    """RFC 9293 §3.10.7.1: an ACK to no socket: <SEQ=SEG.ACK><CTL=RST>; a RST: nothing."""
    p = Pair()
    p.settle()
    inject_tcp(p, 5000, 9, 1234, 0xABCDEF01, ACK, data=b"hi")
    inject_tcp(p, 5000, 9, 1234, 0xABCDEF01, RST)
    p.settle()
    rst = [s for _, _, s in tcp_segments(p.wb.sent)]
    assert [(s.flags, s.seq) for s in rst] == [(RST, 0xABCDEF01)]


# -- listen ---------------------------------------------------------------------------------


def test_full_accept_queue_leaves_syns_unanswered() -> None:
    """tcp_layer: a SYN that finds the accept queue full is dropped without an answer; the
    client's retransmission gets in once the application accepts."""
    p = Pair()
    srv = p.b.tcp_socket()
    srv.bind(("0.0.0.0", PORT))
    srv.listen(1)
    c1 = p.a.tcp_socket()
    c1.connect((B_IP, PORT))
    p.settle()
    assert c1.connected and len(srv.accept_queue) == 1
    mark = len(p.wb.sent)
    c2 = p.a.tcp_socket()
    c2.connect((B_IP, PORT))
    p.settle()
    port2 = c2.getsockname()[1]
    assert not [s for _, _, s in tcp_segments(p.wb.sent[mark:]) if s.dport == port2]
    assert p.b.stats["tcp.listen_overflow"] == 1 and c2.state == TcpState.SYN_SENT
    assert srv.accept() is not None
    p.advance(1000)  # c2's SYN again
    assert c2.connected and srv.accept() is not None
    p.healthy()


def test_syn_cookies_when_half_open_table_is_full() -> None:
    cfg = StackConfig(tcp_max_syn_backlog=2)
    p = Pair(config=cfg)
    srv = listen(p)
    connect(p, srv)  # ARP resolved both ways
    p.wb.up = False  # B's answers are lost: two handshakes stay half-open
    c1, c2 = p.a.tcp_socket(), p.a.tcp_socket()
    c1.connect((B_IP, PORT))
    c2.connect((B_IP, PORT))
    p.settle()
    assert srv.half_open == 2
    p.wb.up = True
    c3 = p.a.tcp_socket()
    c3.connect((B_IP, PORT))
    p.settle()
    assert c3.connected, "the third client must get in with a SYN cookie"
    assert p.b.stats["tcp.syncookies_sent"] == 1 and p.b.stats["tcp.syncookies_accepted"] == 1
    child3 = srv.accept()
    assert child3 is not None and child3.getpeername() == c3.getsockname()
    # a cookie connection carries no window scale, timestamps or SACK, and works
    info = child3.info()
    assert not info["timestamps"] and not info["sack"] and info["snd_wscale"] == 0
    assert not c3.info()["timestamps"] and c3.info()["rcv_wscale"] == 0
    up, down = random.Random(3).randbytes(300_000), random.Random(4).randbytes(200_000)
    got_b, got_a = bytearray(), bytearray()
    pump(p, [(c3, up, child3, got_b), (child3, down, c3, got_a)])
    assert got_b == up and got_a == down
    # the two half-open ones complete when B retransmits its SYN-ACKs
    p.advance(3000, step=100)
    assert c1.connected and c2.connected
    assert srv.accept() is not None and srv.accept() is not None
    p.healthy()


def test_ack_to_a_listener_draws_rst() -> None:
    """RFC 9293 §3.10.7.2 (LISTEN): any ACK is bad here: <SEQ=SEG.ACK><CTL=RST>. With SYN
    cookies on (the default) the ACK is first checked as a cookie, and fails."""
    p = Pair()  # default configuration; the clock has run for one second
    srv = listen(p)
    p.settle()
    inject_tcp(p, 5001, PORT, 1000, 0x12345678, ACK)
    p.settle()
    assert p.b.drops["internal_error"] == 0
    assert srv.accept() is None and p.b.stats["tcp.syncookies_failed"] == 1
    rst = [s for _, _, s in tcp_segments(p.wb.sent) if s.flags & RST]
    assert [(s.flags, s.seq) for s in rst] == [(RST, 0x12345678)]
    p.advance(70_000)  # a minute later (the cookie clock has ticked): the same
    inject_tcp(p, 5002, PORT, 1000, 0x12345678, ACK)
    p.settle()
    assert len([s for _, _, s in tcp_segments(p.wb.sent) if s.flags & RST]) == 2
    p.healthy()


# -- numbers: ISN (RFC 6528), ephemeral ports (RFC 6056) ----------------------------------------


def syn_ack_isn(p: Pair, sport: int) -> int:
    mark = len(p.wb.sent)
    inject_tcp(p, sport, PORT, 777, 0, SYN, tcp.build_options(mss=1460))
    p.settle()  # B answers; A has no such connection and resets it
    synacks = [s for _, _, s in tcp_segments(p.wb.sent[mark:])
               if s.flags & (SYN | ACK) == SYN | ACK and s.dport == sport]
    assert len(synacks) == 1
    return synacks[0].seq


def test_isn_differs_per_four_tuple_and_advances_with_time() -> None:
    """RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport, secretkey), where M
    is a 4 microsecond timer."""
    p = Pair()
    listen(p)
    p.settle()
    isns = [syn_ack_isn(p, port) for port in range(6000, 6010)]
    assert len(set(isns)) == 10
    diffs = {seq_diff(b, a) for a, b in itertools.pairwise(isns)}
    assert len(diffs) > 1  # no fixed stride between neighbouring tuples
    first = syn_ack_isn(p, 6000)
    assert first == isns[0]  # same tuple, same instant: same ISN
    p.advance(1000)
    later = syn_ack_isn(p, 6000)
    assert seq_diff(later, first) == 250_000  # 1 s of a 4 µs clock
    assert p.b.tcp.conns == {}
    # client side too: different tuples, different ISNs
    mark = len(p.wa.sent)
    for port in (81, 82, 83):
        p.a.tcp_socket().connect((B_IP, port))
    p.settle()
    syns = [s.seq for _, _, s in tcp_segments(p.wa.sent[mark:]) if s.flags == SYN]
    assert len(set(syns)) == 3


def test_isn_differs_between_stacks() -> None:
    """F() is keyed with a secret per stack: two hosts do not share ISNs for one tuple."""
    p1, p2 = Pair(), Pair()
    for p in (p1, p2):
        listen(p)
        p.settle()
    assert syn_ack_isn(p1, 6000) != syn_ack_isn(p2, 6000)


def test_ephemeral_ports_are_not_sequential() -> None:
    """RFC 6056: the port for a new destination cannot be guessed from earlier ones."""
    p = Pair()
    p.settle()
    socks = []
    for dport in range(1000, 1040):  # closed ports: each is refused, which is fine here
        s = p.a.tcp_socket()
        s.connect((B_IP, dport))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    # A refused connection frees its port, and a port may serve another destination
    # (RFC 6056 §3.3.3 keys the offset by destination): a rare repeat is legal.
    assert len(set(ports)) >= len(ports) - 2
    assert all(1024 <= port <= 65535 for port in ports)
    steps = [b - a for a, b in itertools.pairwise(ports)]
    assert sum(1 for d in steps if d == 1) < len(steps) // 4
    assert max(ports) - min(ports) > 1000
    p.settle()
    p.healthy()


# -- tables and timers ------------------------------------------------------------------------


def test_many_short_connections_leave_nothing_behind() -> None:
    p = Pair()
    srv = listen(p)
    for i in range(300):
        c, child = connect(p, srv)
        c.send(b"req %d" % i)
        p.settle()
        assert child.recv() == b"req %d" % i
        child.send(b"resp %d" % i)
        p.settle()
        assert c.recv() == b"resp %d" % i
        c.close()
        p.settle()
        child.close()
        p.settle()
        if i % 50 == 0:
            p.advance(1_000)
    assert all(conn.state == TcpState.TIME_WAIT for conn in p.a.tcp.conns.values())
    assert p.b.tcp.conns == {}
    p.advance(2 * p.a.config.tcp.msl_ms + 1_000, step=5_000)
    assert p.a.tcp.conns == {} and p.b.tcp.conns == {}
    assert len(p.a.timers) == 0 and len(p.b.timers) == 0
    assert not p.a.tcp._armed and not p.b.tcp._armed
    assert p.a.tcp.bound == set() and p.b.tcp.bound == {(0, PORT)}
    p.healthy()


def test_bound_client_port_is_free_again_after_close() -> None:
    p = Pair()
    srv = listen(p)
    c = p.a.tcp_socket()
    c.bind((A_IP, 5555))
    c.connect((B_IP, PORT))
    p.settle()
    child = srv.accept()
    assert child is not None and c.getsockname() == (A_IP, 5555)
    child.close()
    p.settle()
    c.close()
    p.settle()
    p.advance(2 * p.a.config.tcp.msl_ms + 1000, step=5000)
    assert p.a.tcp.conns == {}
    again = p.a.tcp_socket()
    again.bind((A_IP, 5555))  # the old connection is gone entirely
    again.connect((B_IP, PORT))
    p.settle()
    assert again.connected


def test_retransmission_over_a_lossy_wire() -> None:
    """Every tenth frame lost both ways: data still arrives intact (RTO, fast recovery)."""
    cfg = StackConfig(tcp=TcpConfig(rto_min_ms=200))
    p = Pair(config=cfg)
    srv = listen(p)
    c, child = connect(p, srv)
    rng = random.Random(5)
    for end in (p.wa, p.wb):
        orig = end.send

        def lossy(frame: bytes | bytearray | memoryview, orig: Callable[..., bool] = orig
                  ) -> bool:
            if rng.random() < 0.1:
                return True
            return orig(frame)

        end.send = lossy  # type: ignore[method-assign]
    up, down = random.Random(6).randbytes(200_000), random.Random(7).randbytes(100_000)
    got_b, got_a = bytearray(), bytearray()
    pump(p, [(c, up, child, got_b), (child, down, c, got_a)])
    assert got_b == up and got_a == down
    assert c.info()["retransmits"] > 0  # type: ignore[operator]
    p.healthy()


def test_blocking_facade_nonblocking_accept() -> None:
    """The blocking facade runs ``Stack.run`` on real time; only its non-blocking edge here."""
    p = Pair()
    s = sockets.Socket(p.b)
    s.bind(("0.0.0.0", PORT))
    s.listen(4)
    s.setblocking(False)
    with pytest.raises(BlockingIOError):
        s.accept()
    s.close()

"""A seeded fuzz run of more than 100,000 hostile TCP segments against a live stack.

Stack B listens on port 80 and holds an established connection with stack A;
segments go straight into B's receive queue with A's (or a stranger's) source
address, and every answer B sends crosses the wire to A, which has to digest
it too. The clock moves between batches so retransmission, delayed-ACK,
keepalive, SYN-ACK and TIME-WAIT timers fire in between.

Phase 1 is a *blind* attacker (RFC 5961): segments on the established
connection's own four-tuple, but never with the exact sequence number a reset
needs, never with an acceptable ACK on in-window data: out-of-window segments
of every flag combination, RSTs in the window, SYNs anywhere, in-window data
with an ACK beyond SND.NXT or older than MAX.SND.WND, segments without the ACK
bit. Meanwhile real data flows both ways; afterwards both streams must be
intact and the connection still in sync.

Phase 2 is anything: valid segments from the live connection and the
listener, mutated (bit flips, flag combinations, sequence and
acknowledgement numbers near the window edges and far away, option garbage,
wrong data offsets, truncation, stray ports), checksums mostly recomputed so
they reach the state machine. Connections that a segment legitimately kills
are replaced. Afterwards a new connection must carry data correctly.

In both: nothing raises out of ``tick()`` and ``drops["internal_error"]`` is 0.
"""

from __future__ import annotations

import hashlib
import logging
import random
import struct
import time
from dataclasses import dataclass

from hilkit.port import ManualClock, checksum
from hilkit.stack import (
    Stack,
    StackConfig,
    TcpConfig,
    TcpSocket,
    TcpState,
    eth,
    ipv4,
    tcp,
)
from hilkit.stack.tcp import ACK, FIN, PSH, RST, SYN, URG, seq_add, seq_diff, seq_le, seq_lt
from hilkit.stack.tcp_conn import Connection
from tests.memwire import wire

SEED = 20261203
N_BLIND = 60_000
N_ANY = 140_000
BATCH = 48

A_IP, B_IP = "10.0.0.1", "10.0.0.2"
A_INT, B_INT = 0x0A000001, 0x0A000002
A_MAC, B_MAC = b"\x02\x00\x00\x00\x00\x0a", b"\x02\x00\x00\x00\x00\x0b"
STRANGERS = [0x0A000000 | i for i in range(3, 9)]  # on the subnet, nobody answers ARP
PORT = 80

CONFIG = StackConfig(
    tcp=TcpConfig(keepalive_idle_ms=20_000, keepalive_interval_ms=2_000, keepalive_count=3,
                  msl_ms=5_000, challenge_acks_per_s=1000),
    tcp_max_syn_backlog=8,
)

FLAG_COMBOS = [0, SYN, SYN | ACK, ACK, ACK | PSH, FIN, FIN | ACK, RST, RST | ACK, SYN | FIN,
               SYN | RST, SYN | FIN | RST | ACK | PSH | URG, FIN | PSH | URG, URG | ACK, 0xFF,
               0xC0 | ACK, SYN | ACK | FIN, RST | FIN]


class Pair:
    def __init__(self) -> None:
        self.clock = ManualClock(1000.0)
        self.wa, self.wb = wire()
        self.a = Stack(self.clock, CONFIG)
        self.b = Stack(self.clock, CONFIG)
        self.a.add_device(self.wa)
        self.b.add_device(self.wb)
        self.a.link_add(self.wa, A_IP, "255.255.255.0")
        self.b.link_add(self.wb, B_IP, "255.255.255.0")

    def settle(self, rounds: int = 6) -> None:
        for _ in range(rounds):
            self.a.tick()
            self.b.tick()


@dataclass
class Link:
    """The established connection under attack: A's socket and B's accepted child."""

    c: TcpSocket
    child: TcpSocket

    @property
    def bconn(self) -> Connection:
        assert self.child.conn is not None
        return self.child.conn

    @property
    def aconn(self) -> Connection:
        assert self.c.conn is not None
        return self.c.conn

    @property
    def sport(self) -> int:
        return self.c.getsockname()[1]

    def alive(self) -> bool:
        return (self.c.conn is not None and self.child.conn is not None
                and self.aconn.state == TcpState.ESTABLISHED
                and self.bconn.state == TcpState.ESTABLISHED)

    def in_sync(self) -> bool:
        a, b = self.aconn, self.bconn
        return self.alive() and b.rcv_nxt == a.snd_nxt and a.rcv_nxt == b.snd_nxt


def connect(p: Pair, srv: TcpSocket) -> Link:
    c = p.a.tcp_socket()
    c.connect((B_IP, PORT))
    for _ in range(200):
        p.settle()
        if c.connected:
            break
        p.clock.advance(100)
    assert c.connected
    mine = None
    while (child := srv.accept()) is not None:
        if child.getpeername() == c.getsockname():
            mine = child
        else:
            child.abort()  # something the fuzz managed to open: not ours
    assert mine is not None
    return Link(c, mine)


def transfer(p: Pair, link: Link, n: int, seed: int) -> None:
    rng = random.Random(seed)
    up, down = rng.randbytes(n), rng.randbytes(n // 2)
    got_b, got_a = bytearray(), bytearray()
    offs = [0, 0]
    for _ in range(200_000):
        for i, (tx, data) in enumerate(((link.c, up), (link.child, down))):
            if offs[i] < len(data) and tx.writable:
                offs[i] += tx.send(data[offs[i]:offs[i] + 65536])
        p.settle(3)
        got_b += link.child.recv(1 << 20)
        got_a += link.c.recv(1 << 20)
        if len(got_b) >= len(up) and len(got_a) >= len(down):
            break
        p.clock.advance(1)
    assert hashlib.sha256(got_b).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(got_a).digest() == hashlib.sha256(down).digest()


def frame(src: int, tcp_bytes: bytes | bytearray, fix_checksum: bool = True) -> bytes:
    body = bytearray(tcp_bytes)
    if fix_checksum and len(body) >= 18:
        body[16:18] = b"\0\0"
        c = checksum.checksum(bytes(body), checksum.pseudo_header_sum(src, B_INT,
                                                                      ipv4.PROTO_TCP, len(body)))
        struct.pack_into("!H", body, 16, c)
    pkt = ipv4.build_header(src, B_INT, ipv4.PROTO_TCP, len(body), 1) + bytes(body)
    return eth.header(B_MAC, A_MAC, eth.ETHERTYPE_IPV4) + pkt


def build(sport: int, dport: int, seq: int, ack: int, flags: int, wnd: int = 65535,
          opts: bytes = b"", data: bytes = b"") -> bytes:
    return tcp.header(A_INT, B_INT, sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      flags & 0xFF, wnd, opts, data) + data


def acceptable(seq: int, n: int, rcv_nxt: int, wnd: int) -> bool:
    """RFC 9293 §3.10.7.4, the four cases of the acceptability test."""
    if n == 0:
        if wnd == 0:
            return seq == rcv_nxt
        return seq_le(rcv_nxt, seq) and seq_lt(seq, seq_add(rcv_nxt, wnd))
    if wnd == 0:
        return False
    right, last = seq_add(rcv_nxt, wnd), seq_add(seq, n - 1)
    return (seq_le(rcv_nxt, seq) and seq_lt(seq, right)) or (
        seq_le(rcv_nxt, last) and seq_lt(last, right))


# -- phase 1: the blind attacker -------------------------------------------------------------


def blind_segment(rng: random.Random, link: Link) -> tuple[int, bytes]:
    b = link.bconn
    rn = b.rcv_nxt
    wnd = max(seq_diff(b.rcv_adv, rn), 0)
    una, smax, maxwnd = b.snd_una, b.snd_max, max(b.max_snd_wnd, 1)
    data = rng.randbytes(rng.choice((0, 0, 1, 7, 100, 1000)))
    ts: tuple[int, int] | None = None
    if b.ts_ok and rng.random() < 0.85:  # never newer than TS.Recent: no PAWS games here
        ts = (seq_add(b.ts_recent, -rng.choice((0, 0, 0, 1, 5000))), rng.getrandbits(32))
    opts = tcp.build_options(ts=ts, sack=[(rng.getrandbits(32), rng.getrandbits(32))]
                             if rng.random() < 0.1 else None)
    sport, dport = link.sport, PORT
    kind = rng.randrange(6)
    if kind == 0:  # nothing of it inside the window, any flags
        flags = rng.choice(FLAG_COMBOS)
        n = len(data) + (1 if flags & FIN else 0)
        while True:
            seq = rng.choice((
                seq_add(rn, -n - rng.randrange(1, 3000)), seq_add(rn, wnd + rng.randrange(5000)),
                seq_add(rn, 0x80000000 + rng.randrange(-5000, 5000)), rng.getrandbits(32),
                seq_add(rn, -n - 1), seq_add(rn, wnd)))
            if not acceptable(seq, n, rn, wnd):
                break
        ack = rng.choice((una, smax, rng.getrandbits(32)))
    elif kind == 1:  # RST in the window but not at RCV.NXT (or anywhere else but RCV.NXT)
        flags = RST | (rng.getrandbits(8) & (SYN | ACK | FIN | PSH | URG))
        seq = seq_add(rn, rng.choice((1, 2, max(wnd - 1, 1), rng.randrange(1, max(wnd, 2)),
                                      rng.randrange(1, 1 << 32))))
        ack = rng.choice((una, smax, rng.getrandbits(32)))
    elif kind == 2:  # SYN anywhere, exact sequence number included
        flags = SYN | (rng.getrandbits(8) & (ACK | FIN | PSH | URG))
        seq = rng.choice((rn, seq_add(rn, rng.randrange(wnd + 1)), rng.getrandbits(32)))
        ack = rng.choice((una, smax, rng.getrandbits(32)))
    elif kind == 3:  # in-window data (RCV.NXT included) with an unacceptable ACK (§5.2)
        flags = ACK | (rng.getrandbits(8) & (FIN | PSH | URG))
        seq = rng.choice((rn, rn, seq_add(rn, rng.randrange(max(wnd, 1)))))
        ack = rng.choice((seq_add(smax, rng.randrange(1, 1 << 20)),
                          seq_add(una, -maxwnd - rng.randrange(1, 1 << 20)),
                          seq_add(smax, 1), seq_add(una, -maxwnd - 1)))
    elif kind == 4:  # no ACK bit: dropped whatever it carries (RFC 9293, fifth check)
        flags = rng.choice((0, FIN, PSH, URG, FIN | PSH, PSH | URG))
        seq = rng.choice((rn, seq_add(rn, rng.randrange(max(wnd, 1))), rng.getrandbits(32)))
        ack = rng.getrandbits(32)
    else:  # another four-tuple altogether: the listener, closed ports
        while (sport := rng.randrange(1, 65536)) == link.sport:
            pass
        dport = rng.choice((PORT, PORT, rng.randrange(1, 65536)))
        flags = rng.choice(FLAG_COMBOS)
        seq, ack = rng.getrandbits(32), rng.getrandbits(32)
        opts = tcp.build_options(mss=rng.choice((None, 536, 1460, 0, 65535)),
                                 wscale=rng.choice((None, 0, 7, 14)), sack_ok=rng.random() < .5,
                                 ts=(rng.getrandbits(32), 0) if rng.random() < .5 else None)
    src = A_INT if kind != 5 or rng.random() < 0.9 else rng.choice(STRANGERS)
    return src, build(sport, dport, seq, ack, flags, rng.randrange(65536), opts, data)


# -- phase 2: anything ------------------------------------------------------------------------


def harvest(p: Pair, since: int) -> list[bytes]:
    """TCP segments A sent to B, as bytes (the corpus for mutation)."""
    out = []
    for f in p.wa.sent[since:]:
        if f[12:14] != b"\x08\x00" or f[14 + 9] != ipv4.PROTO_TCP:
            continue
        ip = f[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big")
        out.append(bytes(ip[ihl:total]))
    return out


def edge_values(rng: random.Random, link: Link | None) -> tuple[int, int]:
    if link is None or link.child.conn is None:
        return rng.getrandbits(32), rng.getrandbits(32)
    b = link.bconn
    rn, wnd = b.rcv_nxt, max(seq_diff(b.rcv_adv, b.rcv_nxt), 0)
    seq = seq_add(rn, rng.choice((0, 0, -1, 1, wnd - 1, wnd, wnd + 1, -wnd, -1000,
                                  rng.randrange(-70000, 70000), rng.getrandbits(32))))
    ack = rng.choice((b.snd_una, b.snd_max, seq_add(b.snd_max, 1), seq_add(b.snd_una, -1),
                      seq_add(b.snd_una, -b.max_snd_wnd), seq_add(b.snd_una, -b.max_snd_wnd - 1),
                      rng.getrandbits(32)))
    return seq, ack


def garbage_options(rng: random.Random) -> bytes:
    choice = rng.randrange(5)
    if choice == 0:
        return rng.randbytes(rng.choice((4, 8, 12, 20, 40)))
    if choice == 1:  # an option whose length lies
        kind = rng.choice((2, 3, 4, 5, 8, 30, 254))
        length = rng.choice((0, 1, 2, 3, 39, 40, 41, 255))
        body = bytes([kind, length]) + rng.randbytes(rng.randrange(0, 10))
        return body + b"\x01" * (-len(body) % 4)
    if choice == 2:  # SACK blocks, maybe lying, maybe too many
        n = rng.randrange(0, 5)
        body = bytes([1, 1, 5, 2 + 8 * n]) + rng.randbytes(8 * n)
        return body[:40]
    if choice == 3:
        return bytes([0] * 4)  # EOL only
    return tcp.build_options(mss=rng.randrange(65536), wscale=rng.randrange(256),
                             sack_ok=True, ts=(rng.getrandbits(32), rng.getrandbits(32)))


def mutate(rng: random.Random, seg: bytes, link: Link | None) -> tuple[bytes, bool]:
    b = bytearray(seg)
    if link is not None and rng.random() < 0.5 and len(b) >= 20:
        struct.pack_into("!HH", b, 0, link.sport, PORT)  # aim at the live connection
    for _ in range(rng.randrange(1, 4)):
        m = rng.randrange(11)
        if len(b) < 20:
            b += rng.randbytes(20 - len(b))
        if m == 0:  # bit flips
            for _ in range(rng.randrange(1, 5)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif m == 1:
            b[13] = rng.choice(FLAG_COMBOS) if rng.random() < 0.8 else rng.randrange(256)
        elif m == 2 or m == 3:
            seq, ack = edge_values(rng, link)
            if m == 2:
                struct.pack_into("!I", b, 4, seq)
            else:
                struct.pack_into("!I", b, 8, ack)
        elif m == 4:  # option garbage, data offset to match
            hlen = max((b[12] >> 4) * 4, 20)
            opts = garbage_options(rng)
            b = b[:20] + opts + b[min(hlen, len(b)):]
            b[12] = (((20 + len(opts)) // 4) << 4) | (b[12] & 0x0F)
        elif m == 5:  # a wrong data offset
            b[12] = (rng.randrange(16) << 4) | (b[12] & 0x0F)
        elif m == 6:  # truncated
            b = b[:rng.randrange(len(b) + 1)]
        elif m == 7:  # longer
            b += rng.randbytes(rng.choice((1, 10, 500, 1400)))
        elif m == 8:
            struct.pack_into("!H", b, 14, rng.choice((0, 1, 0xFFFF, rng.randrange(65536))))
        elif m == 9:  # stray ports
            struct.pack_into("!HH", b, 0, rng.choice((0, rng.randrange(65536), PORT)),
                             rng.choice((0, PORT, rng.randrange(65536))))
        else:  # a new payload
            hlen = min(max((b[12] >> 4) * 4, 20), len(b))
            b = b[:hlen] + rng.randbytes(rng.choice((0, 1, 100, 1448)))
    return bytes(b), rng.random() < 0.92


# -- the run ------------------------------------------------------------------------------------


def check_health(p: Pair) -> None:
    assert p.a.drops["internal_error"] == 0, "stack A raised while handling a frame"
    assert p.b.drops["internal_error"] == 0, "stack B raised while handling a frame"


def test_tcp_fuzz() -> None:
    logging.getLogger("hilkit").setLevel(logging.CRITICAL)  # internal errors are counted
    started = time.monotonic()
    rng = random.Random(SEED)
    p = Pair()
    srv = p.b.tcp_socket()
    srv.bind(("0.0.0.0", PORT))
    srv.listen(16)
    mark = len(p.wa.sent)
    # a corpus: handshakes, data, FIN and RST, SYNs to the listener and to closed ports
    for i in range(4):
        side = connect(p, srv)
        side.c.send(rng.randbytes(3000 + i))
        p.settle()
        side.child.recv(1 << 20)
        if i % 2:
            side.c.close()
        else:
            side.c.abort()
        side.child.close()
        p.settle()
    closed = p.a.tcp_socket()
    closed.connect((B_IP, 9))
    link = connect(p, srv)
    transfer(p, link, 5000, seed=0)
    corpus = harvest(p, mark)
    assert len(corpus) > 20

    # -- phase 1: blind attacks while data flows ----------------------------------------
    up_sent, up_got = bytearray(), bytearray()
    down_sent, down_got = bytearray(), bytearray()
    sent = 0
    while sent < N_BLIND:
        for _ in range(BATCH):
            # One at a time, each made from B's state of the moment: what a blind attacker
            # cannot hit must not be hit by accident (a window that grew, a RCV.NXT that moved).
            while p.wb.rx:
                p.b.tick()
            src, seg = blind_segment(rng, link)
            p.wb.rx.append(frame(src, seg))
            p.b.tick()
            p.a.tick()
        sent += BATCH
        if rng.random() < 0.5 and link.c.writable:
            chunk = rng.randbytes(rng.randrange(1, 3000))
            up_sent += chunk[:link.c.send(chunk)]
        if rng.random() < 0.5 and link.child.writable:
            chunk = rng.randbytes(rng.randrange(1, 3000))
            down_sent += chunk[:link.child.send(chunk)]
        p.settle(3)
        up_got += link.child.recv(1 << 20)
        down_got += link.c.recv(1 << 20)
        while srv.accept_queue:
            srv.accept_queue.popleft().abort()
        p.clock.advance(rng.choice((1, 2, 5, 10, 20)))
    assert link.alive(), "a blind attacker broke the connection"
    for _ in range(100_000):
        p.settle(3)
        up_got += link.child.recv(1 << 20)
        down_got += link.c.recv(1 << 20)
        if len(up_got) >= len(up_sent) and len(down_got) >= len(down_sent):
            break
        p.clock.advance(5)
    assert up_got == up_sent and down_got == down_sent, "data corrupted under blind attack"
    assert link.in_sync()
    check_health(p)
    transfer(p, link, 100_000, seed=1)
    assert link.bconn.stats.get("challenge_acks", 0) > 0

    # -- phase 2: anything goes ---------------------------------------------------------
    replaced = 0
    sent = 0
    while sent < N_ANY:
        for _ in range(BATCH):
            seg, fix = mutate(rng, rng.choice(corpus), link if link.alive() else None)
            src = A_INT if rng.random() < 0.95 else rng.choice(STRANGERS)
            p.wb.rx.append(frame(src, seg, fix))
        sent += BATCH
        if link.alive() and rng.random() < 0.3 and link.c.writable:
            link.c.send(rng.randbytes(rng.randrange(1, 2000)))
        if link.alive() and rng.random() < 0.3 and link.child.writable:
            link.child.send(rng.randbytes(rng.randrange(1, 2000)))
        p.settle(3)
        if link.child.conn is not None and not link.child.error:
            link.child.recv(1 << 20)
        if link.c.conn is not None and not link.c.error:
            link.c.recv(1 << 20)
        while srv.accept_queue:
            srv.accept_queue.popleft().abort()
        p.clock.advance(rng.choice((1, 2, 5, 10, 20, 50)))
        if sent % (BATCH * 40) == 0:
            check_health(p)
            if not link.in_sync():  # legitimately hit: start another one
                link.c.abort()
                link.child.abort()
                p.settle()
                link = connect(p, srv)
                replaced += 1
                corpus += harvest(p, len(p.wa.sent) - 4)
            if rng.random() < 0.1:
                p.clock.advance(rng.choice((10_000, 70_000)))  # TIME-WAIT, keepalive, cookies
                p.settle()
    check_health(p)

    # -- afterwards: time passes, tables drain, a new connection works ------------------------
    for _ in range(60):
        p.clock.advance(10_000)
        p.settle()
    check_health(p)
    fresh = connect(p, srv)
    transfer(p, fresh, 200_000, seed=2)
    check_health(p)
    assert len(p.b.tcp.conns) <= 3 and len(p.a.tcp.conns) <= 3
    total = N_BLIND + N_ANY
    assert total >= 100_000
    elapsed = time.monotonic() - started
    tcp_stats = {k: v for k, v in p.b.stats.items() if k.startswith("tcp.")}
    print(f"fuzzed {total} segments in {elapsed:.1f} s; connections replaced: {replaced}; "
          f"B drops: {dict(p.b.drops.most_common(8))}; B: {tcp_stats}")

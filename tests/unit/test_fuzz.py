"""A seeded fuzz run: >= 100,000 random and mutated frames through two stacks on a wire.

Frames go straight into a ``WireEnd``'s receive queue, so the stack under fire
answers (echo replies, ARP, ICMP errors, UDP echo) and its peer has to digest
those answers too. The manual clock moves between batches, so ARP retries,
reassembly timeouts and ping timeouts fire in between. Afterwards both stacks
must still be healthy: no internal error, tables within their limits, and a
real ping is answered.
"""

from __future__ import annotations

import logging
import random
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from hilkit.port import ManualClock, checksum
from hilkit.stack import (
    PingError,
    PingStats,
    SocketEvent,
    Stack,
    StackConfig,
    UdpSocket,
    arp,
    eth,
    icmp4,
    ipv4,
    udp,
)
from tests.memwire import WireEnd, wire

SEED = 20261127
N_FRAMES = 200_000

A_IP, B_IP = 0x0A000001, 0x0A000002
A_MAC, B_MAC = b"\x02\x00\x00\x00\x00\x0a", b"\x02\x00\x00\x00\x00\x0b"
NETMASK = 0xFFFFFF00
SUBNET_BCAST = 0x0A0000FF
ECHO_PORT, CLOSED_PORT = 7, 9999

FUZZ_CONFIG = StackConfig(
    arp=arp.ArpConfig(max_entries=16, max_pending=8),
    reassembly=ipv4.ReassemblyLimits(max_concurrent=8, max_fragments=32, timeout_ms=30_000),
)


# -- frames built with hilkit's own builders -----------------------------------------


@dataclass(frozen=True)
class Ends:
    """Who a corpus frame is from and to."""

    src_mac: bytes
    src_ip: int
    dst_mac: bytes
    dst_ip: int


A_TO_B = Ends(A_MAC, A_IP, B_MAC, B_IP)
B_TO_A = Ends(B_MAC, B_IP, A_MAC, A_IP)


def eth_frame(dst: bytes, src: bytes, etype: int, payload: bytes) -> bytes:
    return eth.header(dst, src, etype) + payload


def ip_packet(src: int, dst: int, proto: int, body: bytes, ident: int = 1,
              flags_frag: int = 0) -> bytes:
    return ipv4.build_header(src, dst, proto, len(body), ident, flags_frag=flags_frag) + body


def udp_segment(src: int, sport: int, dst: int, dport: int, data: bytes) -> bytes:
    return udp.header(src, sport, dst, dport, data) + data


def echo_request(ident: int, seq: int, body: bytes, reply: bool = False) -> bytes:
    return icmp4.echo_header(reply, ident, seq, body) + body


def build_corpus(e: Ends) -> list[bytes]:
    """Valid frames from ``e.src`` to ``e.dst``, one of each kind the fuzzer starts from."""
    out: list[bytes] = []

    def ip4(payload: bytes, dst_mac: bytes = e.dst_mac) -> None:
        out.append(eth_frame(dst_mac, e.src_mac, eth.ETHERTYPE_IPV4, payload))

    def arp4(pkt: bytes, dst_mac: bytes) -> None:
        out.append(eth_frame(dst_mac, e.src_mac, eth.ETHERTYPE_ARP, pkt))

    s, d = e.src_ip, e.dst_ip
    arp4(arp.build(arp.OP_REQUEST, e.src_mac, s, bytes(6), d), eth.BROADCAST_MAC)
    arp4(arp.build(arp.OP_REPLY, e.src_mac, s, e.dst_mac, d), e.dst_mac)
    arp4(arp.build(arp.OP_REQUEST, e.src_mac, s, bytes(6), s), eth.BROADCAST_MAC)  # gratuitous
    body = bytes(range(56))
    ip4(ip_packet(s, d, ipv4.PROTO_ICMP, echo_request(0x1234, 1, body), 11))
    ip4(ip_packet(s, d, ipv4.PROTO_ICMP, echo_request(0x4321, 9, body, reply=True), 12))
    ip4(ip_packet(s, d, ipv4.PROTO_UDP, udp_segment(s, 40000, d, ECHO_PORT, b"echo me"), 13))
    ip4(ip_packet(s, d, ipv4.PROTO_UDP, udp_segment(s, 40001, d, CLOSED_PORT, b"anyone?"), 14))
    ip4(ip_packet(s, 0xFFFFFFFF, ipv4.PROTO_UDP,
                  udp_segment(s, 40002, 0xFFFFFFFF, ECHO_PORT, b"all"), 15), eth.BROADCAST_MAC)
    ip4(ip_packet(s, SUBNET_BCAST, ipv4.PROTO_UDP,
                  udp_segment(s, 40003, SUBNET_BCAST, CLOSED_PORT, b"subnet"), 16),
        eth.BROADCAST_MAC)
    ip4(ip_packet(s, d, 99, b"unknown protocol", 17))
    # A header with options (NOPs and an end-of-list), checksum over all of it.
    opt = bytearray(ip_packet(s, d, ipv4.PROTO_ICMP, echo_request(0x55, 2, b"opt"), 18))
    hdr = bytearray(opt[:20]) + b"\x01\x01\x01\x00"
    hdr[0] = 0x46
    struct.pack_into("!H", hdr, 2, len(opt) + 4)
    struct.pack_into("!H", hdr, 10, 0)
    struct.pack_into("!H", hdr, 10, checksum.checksum(hdr))
    ip4(bytes(hdr) + bytes(opt[20:]))
    # ICMP errors about datagrams the receiver sent (they reach its error handlers).
    quoted_udp = ip_packet(d, s, ipv4.PROTO_UDP, udp_segment(d, 50000, s, 53, b"q"), 19)[:28]
    err = icmp4.header(icmp4.TYPE_DEST_UNREACH, icmp4.CODE_PORT_UNREACH, 0, quoted_udp)
    ip4(ip_packet(s, d, ipv4.PROTO_ICMP, err + quoted_udp, 20))
    quoted_echo = ip_packet(d, s, ipv4.PROTO_ICMP, echo_request(0x777, 1, b""), 21)[:28]
    err = icmp4.header(icmp4.TYPE_TIME_EXCEEDED, 0, 0, quoted_echo)
    ip4(ip_packet(s, d, ipv4.PROTO_ICMP, err + quoted_echo, 22))
    # Fragments of 4000-byte datagrams: an echo request, and UDP to the echo port.
    big = bytes(i * 7 & 0xFF for i in range(4000 - 8))
    for proto, msg, ident in (
        (ipv4.PROTO_ICMP, echo_request(0x99, 3, big), 0x100),
        (ipv4.PROTO_UDP, udp_segment(s, 40004, d, ECHO_PORT, big), 0x101),
    ):
        for parts in ipv4.packets(s, d, proto, [msg], ident, 1500):
            ip4(b"".join(parts))
    return out


# -- mutations ------------------------------------------------------------------------


def _ihl(f: bytearray) -> int:
    return (f[14] & 0xF) * 4


def _is_ipv4(f: bytearray) -> bool:
    return len(f) >= 34 and f[12:14] == b"\x08\x00"


def fix_ip_checksum(f: bytearray) -> None:
    if _is_ipv4(f) and _ihl(f) >= 20 and 14 + _ihl(f) <= len(f):
        hdr = f[14:14 + _ihl(f)]
        struct.pack_into("!H", hdr, 10, 0)
        struct.pack_into("!H", f, 24, checksum.checksum(hdr))


def fix_l4_checksum(f: bytearray) -> None:
    """Recompute an unfragmented ICMP or UDP checksum, so mutations get past it."""
    if not _is_ipv4(f):
        return
    ihl = _ihl(f)
    total, flags_frag = struct.unpack_from("!H2xH", f, 16)
    if ihl < 20 or total < ihl or 14 + total > len(f) or flags_frag & 0x3FFF:
        return
    seg = f[14 + ihl:14 + total]
    if f[23] == ipv4.PROTO_ICMP and len(seg) >= 8:
        seg[2:4] = b"\0\0"
        struct.pack_into("!H", f, 14 + ihl + 2, checksum.checksum(seg))
    elif f[23] == ipv4.PROTO_UDP and len(seg) >= 8:
        seg[6:8] = b"\0\0"
        src, dst = struct.unpack_from("!II", f, 26)
        c = checksum.checksum(seg, checksum.pseudo_header_sum(src, dst, 17, len(seg)))
        struct.pack_into("!H", f, 14 + ihl + 6, c or 0xFFFF)


def interesting16(rng: random.Random, f: bytearray) -> int:
    return rng.choice([0, 1, 7, 8, 19, 20, 28, len(f) - 14, len(f) - 15, len(f) - 13,
                       len(f) - 14 - 20, 576, 1500, 0x7FFF, 0xFFFE, 0xFFFF,
                       rng.randrange(0x10000)]) & 0xFFFF


def interesting_ip(rng: random.Random) -> int:
    return rng.choice([0, 0xFFFFFFFF, SUBNET_BCAST, 0x0A000000, A_IP, B_IP, 0xE0000001,
                       0x7F000001, 0x0A000000 | rng.randrange(256), rng.randrange(1 << 32)])


def _put16(f: bytearray, off: int, v: int) -> None:
    if off + 2 <= len(f):
        struct.pack_into("!H", f, off, v & 0xFFFF)


def _put8(f: bytearray, off: int, v: int) -> None:
    if off < len(f):
        f[off] = v & 0xFF


def _put32(f: bytearray, off: int, v: int) -> None:
    if off + 4 <= len(f):
        struct.pack_into("!I", f, off, v)


def mutate_field(rng: random.Random, f: bytearray) -> None:
    """Set one protocol field to an interesting value; usually keep checksums right."""
    l4 = 14 + (_ihl(f) if _is_ipv4(f) else 20)
    field = rng.randrange(17)
    if field == 0:  # version / IHL
        _put8(f, 14, rng.choice([0x40 | rng.randrange(16), 0x45, 0x4F, 0x44, 0x46,
                                 rng.randrange(256)]))
    elif field == 1:  # total length
        _put16(f, 16, interesting16(rng, f))
    elif field == 2:  # flags / fragment offset
        _put16(f, 20, rng.choice([ipv4.FLAG_MF, ipv4.FLAG_DF, 0x8000, 0x1FFF, 0x3FFF,
                                  ipv4.FLAG_MF | rng.randrange(0x2000), rng.randrange(0x2000),
                                  ipv4.FLAG_MF | 185, 185, 370, rng.randrange(0x10000)]))
    elif field == 3:  # protocol
        _put8(f, 23, rng.choice([0, 1, 2, 6, 17, 41, 99, 255, rng.randrange(256)]))
    elif field == 4:  # TTL / TOS / ident
        _put8(f, rng.choice([15, 22]), rng.randrange(256))
        _put16(f, 18, rng.choice([0, 0x100, 0x101, rng.randrange(0x10000)]))
    elif field == 5:  # source / destination address
        _put32(f, rng.choice([26, 30]), interesting_ip(rng))
    elif field == 6:  # UDP length
        _put16(f, l4 + 4, interesting16(rng, f))
    elif field == 7:  # UDP ports
        _put16(f, l4 + rng.choice([0, 2]), rng.choice([0, 7, 53, 9999, 40000, 0xFFFF,
                                                       rng.randrange(0x10000)]))
    elif field == 8:  # ICMP type / code
        _put8(f, l4, rng.choice([0, 3, 4, 5, 8, 11, 12, 13, 255, rng.randrange(256)]))
        _put8(f, l4 + 1, rng.choice([0, 1, 2, 3, 4, 13, rng.randrange(256)]))
    elif field == 9:  # ICMP echo id / seq
        _put32(f, l4 + 4, rng.randrange(1 << 32))
    elif field == 10:  # ARP op
        _put16(f, 20, rng.choice([0, 1, 2, 3, 4, 0xFFFF, rng.randrange(0x10000)]))
    elif field == 11:  # ARP hlen / plen / htype / ptype
        off = rng.choice([14, 16, 18, 19])
        if off < 18:
            _put16(f, off, rng.choice([0, 1, 6, 0x0800, 0x86DD, rng.randrange(0x10000)]))
        else:
            _put8(f, off, rng.choice([0, 4, 6, 16, 255, rng.randrange(256)]))
    elif field == 12:  # ARP addresses
        off = rng.choice([28, 38])  # spa, tpa
        _put32(f, off, interesting_ip(rng))
    elif field == 13:  # ARP sender MAC
        if len(f) >= 28:
            f[22:28] = rng.choice([eth.BROADCAST_MAC, A_MAC, B_MAC, b"\x01\x00\x5e\0\0\1",
                                   rng.randbytes(6)])
    elif field == 14:  # EtherType
        _put16(f, 12, rng.choice([0x0800, 0x0806, 0x86DD, 0x8100, rng.randrange(0x10000)]))
    elif field == 15:  # Ethernet destination
        if len(f) >= 6:
            f[0:6] = rng.choice([eth.BROADCAST_MAC, A_MAC, B_MAC, b"\x01\x00\x5e\0\0\1",
                                 rng.randbytes(6)])
    else:  # the inner header quoted by an ICMP error
        off = l4 + 8 + rng.choice([0, 2, 9, 12, 20, 22])
        _put8(f, off, rng.randrange(256))
    if rng.random() < 0.7:
        fix_l4_checksum(f)
    if rng.random() < 0.85:
        fix_ip_checksum(f)


def mutate(rng: random.Random, frame: bytes, corpus: list[bytes]) -> bytes:
    f = bytearray(frame)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.randrange(7)
        if kind == 0 and f:  # bit flips
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(f) * 8)
                f[i >> 3] ^= 1 << (i & 7)
        elif kind == 1 and f:  # bytes set to 0 / 0xFF / random
            for _ in range(rng.randint(1, 4)):
                f[rng.randrange(len(f))] = rng.choice([0, 0xFF, rng.randrange(256)])
        elif kind == 2 and f:  # truncation
            del f[rng.randrange(len(f)):]
        elif kind == 3:  # extension with junk
            f += rng.randbytes(rng.randint(1, rng.choice([8, 64, 600])))
        elif kind == 4:  # splice two frames
            other = rng.choice(corpus)
            f = f[:rng.randint(0, len(f))] + bytearray(other[rng.randint(0, len(other)):])
        else:
            mutate_field(rng, f)
    return bytes(f)


def random_frame(rng: random.Random, ends: Ends) -> bytes:
    kind = rng.randrange(4)
    n = rng.randint(0, 1600)
    if kind == 0:  # pure junk
        return rng.randbytes(n)
    etype = rng.choice([eth.ETHERTYPE_IPV4, eth.ETHERTYPE_ARP])
    head = eth.header(rng.choice([ends.dst_mac, eth.BROADCAST_MAC]), ends.src_mac, etype)
    if kind == 1:  # junk after a good Ethernet header
        return head + rng.randbytes(n)
    if kind == 2 and etype == eth.ETHERTYPE_ARP:
        return head + rng.randbytes(n & 63)
    # junk after a good IPv4 header (so it gets past the header and into the protocols)
    body = rng.randbytes(n & 0x3FF)
    proto = rng.choice([ipv4.PROTO_ICMP, ipv4.PROTO_UDP, rng.randrange(256)])
    ff = rng.choice([0, 0, ipv4.FLAG_MF | rng.randrange(4), rng.randrange(4)])
    return eth.header(ends.dst_mac, ends.src_mac, eth.ETHERTYPE_IPV4) + ip_packet(
        ends.src_ip, rng.choice([ends.dst_ip, ends.dst_ip, 0xFFFFFFFF]), proto, body,
        rng.randrange(8), ff)


def fuzz_frame(rng: random.Random, corpus: list[bytes], ends: Ends) -> bytes:
    r = rng.random()
    if r < 0.1:
        return rng.choice(corpus)  # some valid traffic keeps state (ARP, reassembly) busy
    if r < 0.8:
        return mutate(rng, rng.choice(corpus), corpus)
    return random_frame(rng, ends)


# -- what the stacks send must be sound --------------------------------------------------


def problem_in_sent(frame: bytes, mac: bytes, ip: int, mtu: int = 1500) -> str | None:
    """Why a frame a stack put on the wire is malformed, or None.

    (Whether an ICMP error should have been sent at all, e.g. about a broadcast,
    is left to targeted tests: see test_ipv4.test_no_time_exceeded_about_a_broadcast.)
    """
    if len(frame) > 14 + mtu:
        return "longer than the MTU"
    if frame[6:12] != mac:
        return "not our source MAC"
    etype = frame[12:14]
    if etype == b"\x08\x06":
        p = arp.parse(memoryview(frame[14:]))
        if isinstance(p, str):
            return p
        if len(frame) != 14 + arp.PACKET_LEN or p.sha != mac or p.spa != ip:
            return "ARP not from us"
        return None
    if etype != b"\x08\x00":
        return "unknown EtherType"
    try:
        h = ipv4.parse(memoryview(frame)[14:])
    except ipv4.Drop as d:
        return d.reason
    if h.total_len != len(frame) - 14 or h.ihl != 20 or h.src != ip or h.ttl != ipv4.DEFAULT_TTL:
        return "IPv4 header"
    if h.dst == 0 or h.dst >> 28 == 0xE:
        return "IPv4 destination"
    if h.is_fragment:
        return None if not h.more_fragments or (h.total_len - 20) % 8 == 0 else "fragment size"
    seg = memoryview(frame)[34:]
    if h.proto == ipv4.PROTO_UDP:
        r = udp.parse(seg, h.src, h.dst)
        return r if isinstance(r, str) else None
    if h.proto != ipv4.PROTO_ICMP:
        return f"protocol {h.proto}"
    if len(seg) < 8 or not checksum.verify(seg):
        return "ICMP checksum"
    if seg[0] in icmp4.ERROR_TYPES:
        inner = seg[8:]
        if len(frame) - 14 > icmp4.ERROR_MAX_LEN or len(inner) < 20:
            return "ICMP error size"
        ihl = (inner[0] & 0xF) * 4
        if inner[9] == ipv4.PROTO_ICMP and len(inner) > ihl and inner[ihl] in icmp4.ERROR_TYPES:
            return "ICMP error about an ICMP error"
    elif seg[0] not in (icmp4.TYPE_ECHO_REQUEST, icmp4.TYPE_ECHO_REPLY):
        return f"ICMP type {seg[0]}"
    return None


# -- the two stacks ------------------------------------------------------------------


class Rig:
    def __init__(self, config: StackConfig = FUZZ_CONFIG, seed: int = SEED) -> None:
        self.clock = ManualClock(1_000_000.0)
        self.wa, self.wb = wire()
        self.a = Stack(self.clock, config)
        self.b = Stack(self.clock, config)
        for i, s in enumerate((self.a, self.b)):  # IP idents, ping ids, ports: reproducible
            s._rng = random.Random(seed + i)  # type: ignore[assignment]
            s._ident = 0
        self.a.add_device(self.wa)
        self.b.add_device(self.wb)
        self.a.link_add(self.wa, "10.0.0.1", "255.255.255.0")
        self.b.link_add(self.wb, "10.0.0.2", "255.255.255.0")
        self.echoed = 0
        self.echo_errors = 0
        self.echo = self.b.udp_socket(self._echo)
        self.echo.bind(("0.0.0.0", ECHO_PORT))
        self.pings: list[PingStats] = []
        self.bad_sent: list[tuple[str, bytes]] = []

    def _echo(self, sock: UdpSocket, ev: SocketEvent) -> None:
        if not ev & SocketEvent.RD:
            return
        while (item := sock.recvfrom()) is not None:
            data, addr = item
            try:
                sock.sendto(data, addr)
                self.echoed += 1
            except OSError:  # port 0, no route, too big: refused locally, as on Linux
                self.echo_errors += 1

    def settle(self, rounds: int = 8) -> None:
        for _ in range(rounds):
            self.a.tick()
            self.b.tick()
            if not self.wa.rx and not self.wb.rx:
                break
        for end, ip in ((self.wa, A_IP), (self.wb, B_IP)):
            assert end.mac is not None
            for frame in end.sent:
                why = problem_in_sent(frame, end.mac, ip)
                if why is not None:
                    self.bad_sent.append((why, frame))
            end.sent.clear()  # checked; a long run must not keep them all

    def close(self) -> None:
        self.a.close()
        self.b.close()


def check_limits(stack: Stack, config: StackConfig) -> None:
    assert len(stack.ip.reasm) <= config.reassembly.max_concurrent
    for p in stack.ip.reasm._partials.values():
        assert len(p.pieces) <= config.reassembly.max_fragments
    for iface in stack.interfaces:
        assert len(iface.arp) <= config.arp.max_entries
        for pending in iface.arp._pending.values():
            assert len(pending.packets) <= config.arp.max_pending


def ping_ok(rig: Rig, src: Stack, dst: str) -> list[tuple[int, PingError]]:
    got: list[PingStats] = []
    src.ping(dst, 3, 200, 1000, 56, got.append)
    for _ in range(10):
        rig.settle()
        rig.clock.advance(100)
    rig.settle()
    return [(s.seq, s.err) for s in got]


@dataclass
class FuzzResult:
    frames: int
    seconds: float


def run_fuzz(rig: Rig, rng: random.Random, n_frames: int,
             on_batch: Callable[[], None] | None = None) -> FuzzResult:
    corpus = {id(rig.wb): build_corpus(A_TO_B), id(rig.wa): build_corpus(B_TO_A)}
    ends = {id(rig.wb): A_TO_B, id(rig.wa): B_TO_A}
    start = time.perf_counter()
    sent = 0
    while sent < n_frames:
        batch = rng.randint(1, 64)
        for _ in range(batch):
            target: WireEnd = rig.wb if rng.random() < 0.75 else rig.wa
            target.rx.append(fuzz_frame(rng, corpus[id(target)], ends[id(target)]))
        sent += batch
        rig.settle()
        r = rng.random()
        if r < 0.4:
            rig.clock.advance(rng.choice([0.5, 1, 10, 100, 500, 999, 1000, 1001, 2500, 5000,
                                          29_999, 30_000, 61_000]))
            rig.settle()
        if r > 0.97:  # pings in flight while the fuzz goes on: replies, timeouts, unreachables
            dst = rng.choice(["10.0.0.2", "10.0.0.2", "10.0.0.77", "10.0.0.255"])
            size = rng.choice([0, 56, 1500, 3000])
            timeout = rng.choice([700, 4000])  # ARP gives up after 3 s: UNREACH, not TIMEOUT
            rig.a.ping(dst, rng.randint(1, 3), 300, timeout, size, rig.pings.append)
        if on_batch is not None:
            on_batch()
    return FuzzResult(sent, time.perf_counter() - start)


def test_fuzz_two_stacks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="hilkit")  # address-conflict warnings are noise here
    rig = Rig()
    rng = random.Random(SEED)

    def limits() -> None:
        check_limits(rig.a, FUZZ_CONFIG)
        check_limits(rig.b, FUZZ_CONFIG)
        assert len(rig.wa.rx) + len(rig.wb.rx) < 10_000  # no reply storm between the two

    try:
        result = run_fuzz(rig, rng, N_FRAMES, limits)
        print(f"fuzz: {result.frames} frames in {result.seconds:.1f} s")
        assert result.frames >= N_FRAMES
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert rig.a.drops["internal_error"] == 0, errors[:3]
        assert rig.b.drops["internal_error"] == 0, errors[:3]
        assert rig.a.stats["callback_error"] == 0 and rig.b.stats["callback_error"] == 0
        assert not rig.bad_sent, [(why, f.hex()) for why, f in rig.bad_sent[:5]]

        # The fuzz reached deep: replies were generated, timers fired, data was reassembled.
        b = rig.b
        reached = Counter({k: v for k, v in {**b.stats, **b.drops}.items() if v})
        for key in ["icmp.echo_replies_sent", "ipv4.reassembled", "udp.datagrams_in",
                    "icmp.errors_sent", "arp.replies_sent", "arp.unresolved",
                    "ipv4.reasm_timeout", "ipv4.frag_overlap", "ipv4.frag_inconsistent",
                    "ipv4.reasm_evicted", "ipv4.bad_checksum", "ipv4.bad_ihl",
                    "ipv4.bad_total_length", "udp.bad_length", "udp.bad_checksum",
                    "icmp.bad_checksum", "arp.bad_format", "arp.bad_op", "eth.short",
                    "icmp.errors_received"]:
            assert reached[key] > 0, (key, sorted(reached.items()))
        assert rig.echoed > 0
        outcomes = Counter(s.err for s in rig.pings)
        assert outcomes[PingError.REPLIED] > 0 and outcomes[PingError.TIMEOUT] > 0
        assert outcomes[PingError.UNREACH] > 0

        # Still healthy: once poisoned ARP entries have aged out, real pings are answered.
        rig.clock.advance(FUZZ_CONFIG.arp.timeout_ms + FUZZ_CONFIG.reassembly.timeout_ms)
        rig.settle()
        rig.clock.advance(10_000)
        rig.settle()
        ok = [(1, PingError.REPLIED), (2, PingError.REPLIED), (3, PingError.REPLIED)]
        assert ping_ok(rig, rig.a, "10.0.0.2") == ok
        assert ping_ok(rig, rig.b, "10.0.0.1") == ok
        cli = rig.a.udp_socket()
        cli.sendto(b"still there?", ("10.0.0.2", ECHO_PORT))
        rig.settle()
        assert cli.recvfrom() == (b"still there?", ("10.0.0.2", ECHO_PORT))
        assert rig.a.drops["internal_error"] == 0 and rig.b.drops["internal_error"] == 0
        check_limits(rig.a, FUZZ_CONFIG)
        check_limits(rig.b, FUZZ_CONFIG)
    finally:
        rig.close()


def test_corpus_is_valid() -> None:
    """Every corpus frame is accepted without a drop (the fuzz starts from sound traffic)."""
    rig = Rig(StackConfig())
    try:
        rig.settle()
        for frame in build_corpus(A_TO_B):
            rig.wb.rx.append(frame)
            rig.settle()
        for frame in build_corpus(B_TO_A):
            rig.wa.rx.append(frame)
            rig.settle()
        assert not rig.a.drops and not rig.b.drops, (rig.a.drops, rig.b.drops)
        assert rig.b.stats["ipv4.reassembled"] >= 2 and rig.echoed >= 3
        assert rig.b.stats["icmp.echo_replies_sent"] == 3  # small, with options, big
    finally:
        rig.close()

"""RFC 1144 header compression: realistic TCP flows round-trip, loss recovery, bad input, fuzz."""

from __future__ import annotations

import random
import struct
import time
from dataclasses import dataclass

from hilkit.drivers.ppp.proto import PPP_IP, PPP_VJC, PPP_VJUC
from hilkit.drivers.ppp.vj import (
    DECOMPRESSOR_STATS,
    NEW_C,
    NEW_I,
    NEW_U,
    SPECIAL_D,
    SPECIAL_I,
    SPECIALS_MASK,
    TCP_PUSH_BIT,
    VjCompressor,
    VjDecompressor,
)
from hilkit.port import checksum
from hilkit.stack import ipv4, tcp

SEED = 1144
CLIENT = 0x0A00020F  # 10.0.2.15
SERVER = 0x0A000202  # 10.0.2.2


def tcp_packet(
    src: int, dst: int, sport: int, dport: int, seq: int, ack: int, *, flags: int = tcp.ACK,
    wnd: int = 8192, payload: bytes = b"", ident: int = 1, options: bytes = b"", urp: int = 0,
    tos: int = 0,
) -> bytes:
    """An IPv4/TCP packet built with the stack's own header builders."""
    seg = bytearray(tcp.header(src, dst, sport, dport, seq, ack, flags, wnd, options, payload))
    if urp:  # tcp.header has no urgent pointer: set it and redo the checksum
        struct.pack_into("!HH", seg, 16, 0, urp)
        pseudo = checksum.pseudo_header_sum(src, dst, ipv4.PROTO_TCP, len(seg) + len(payload))
        struct.pack_into("!H", seg, 16, checksum.checksum(bytes(seg) + payload, pseudo))
    ip = ipv4.build_header(src, dst, ipv4.PROTO_TCP, len(seg) + len(payload), ident, tos=tos)
    return ip + bytes(seg) + payload


@dataclass
class Side:
    """One end of a TCP connection: what it puts in its next header."""

    addr: int
    port: int
    seq: int
    ack: int = 0
    ident: int = 100
    wnd: int = 16384

    def send(
        self, peer: Side, payload: bytes = b"", flags: int = tcp.ACK, *, options: bytes = b"",
        urp: int = 0, tos: int = 0,
    ) -> bytes:
        pkt = tcp_packet(self.addr, peer.addr, self.port, peer.port, self.seq, self.ack,
                         flags=flags, wnd=self.wnd, payload=payload, ident=self.ident,
                         options=options, urp=urp, tos=tos)
        self.seq = (self.seq + len(payload)) & 0xFFFFFFFF
        self.ident = (self.ident + 1) & 0xFFFF
        peer.ack = self.seq
        return pkt


class Link:
    """A compressor on one end, a decompressor on the other, checking every packet."""

    def __init__(self, slots: int = 16, compress_slot_id: bool = True) -> None:
        self.tx = VjCompressor(slots, compress_slot_id)
        self.rx = VjDecompressor(slots)
        self.kinds: list[int] = []
        self.sizes: list[int] = []

    def send(self, packet: bytes, lose: bool = False) -> tuple[int, bytes]:
        kind, payload = self.tx.compress(packet)
        self.kinds.append(kind)
        self.sizes.append(len(payload))
        if lose:
            self.rx.frame_error()
            return kind, payload
        out = self.receive(kind, payload)
        assert out == packet
        return kind, payload

    def receive(self, kind: int, payload: bytes) -> bytes | None:
        if kind == PPP_IP:
            return payload
        if kind == PPP_VJUC:
            return self.rx.uncompressed(payload)
        return self.rx.compressed(payload)


def connection(sport: int = 40000, dport: int = 8080, isn: int = 1000) -> tuple[Side, Side]:
    a = Side(CLIENT, sport, isn)
    b = Side(SERVER, dport, 5_000_000, ack=isn)
    a.ack = b.seq
    return a, b


def test_not_compressible_goes_as_plain_ip() -> None:
    link = Link()
    a, b = connection()
    udp = ipv4.build_header(CLIENT, SERVER, ipv4.PROTO_UDP, 28, 7) + bytes(28)
    frag = bytearray(a.send(b, b"x" * 30))
    struct.pack_into("!H", frag, 6, ipv4.FLAG_MF)
    struct.pack_into("!H", frag, 10, 0)
    struct.pack_into("!H", frag, 10, checksum.checksum(frag[:20]))
    for pkt in (
        udp,
        a.send(b, flags=tcp.SYN),
        a.send(b, flags=tcp.SYN | tcp.ACK),
        a.send(b, flags=tcp.FIN | tcp.ACK),
        a.send(b, flags=tcp.RST | tcp.ACK),
        a.send(b, flags=0),  # no ACK
        bytes(frag),
        a.send(b)[:39],  # short
        a.send(b) + b"\x00\x00",  # padded: the length would not be implicit
    ):
        kind, payload = link.send(pkt)
        assert kind == PPP_IP and payload == pkt
    assert link.tx.stats["ip"] == 9 and link.tx.stats["uncompressed"] == 0


def test_bulk_data_uses_the_unidirectional_special_case() -> None:
    link = Link()
    a, b = connection()
    for i in range(50):
        link.send(a.send(b, bytes([i]) * 1000))
    assert link.kinds[0] == PPP_VJUC
    assert link.kinds[1] == PPP_VJC  # the first delta is explicit: previous length unknown
    assert set(link.kinds[2:]) == {PPP_VJC}
    # change mask + checksum: 3 octets of header for every 1040-octet packet
    assert link.sizes[2:] == [1003] * 48
    _kind, payload = link.tx.compress(a.send(b, b"z" * 1000))
    assert payload[0] & SPECIALS_MASK == SPECIAL_D and not payload[0] & NEW_C
    assert link.tx.stats["header_bytes_saved"] > 48 * 36


def test_first_packet_sets_the_slot_and_restores_the_protocol() -> None:
    link = Link()
    a, b = connection()
    pkt = a.send(b, b"hello")
    kind, payload = link.send(pkt)
    assert kind == PPP_VJUC
    assert payload[9] == 0 and payload[:9] == pkt[:9] and payload[10:] == pkt[10:]
    assert link.rx.stats["uncompressed_in"] == 1


def test_echoed_interactive_traffic() -> None:
    to_b, to_a = Link(), Link()  # each direction has its own compressor
    a, b = connection()
    # a types one character at a time, b echoes it and acks it in the same segment
    to_b.send(a.send(b, b"l"))
    to_a.send(b.send(a, b"l"))
    for ch in b"s -la /tmp\n":
        for link, src, dst in ((to_b, a, b), (to_a, b, a)):
            kind, payload = link.send(src.send(dst, bytes([ch])))
            # seq and ack both grew by the previous data length (1): no deltas at all
            assert kind == PPP_VJC and payload[0] & SPECIALS_MASK == SPECIAL_I
            assert len(payload) == 4  # change mask, checksum, the typed octet


def test_acks_windows_ids_urgent_and_push() -> None:
    link = Link()
    a, b = connection()
    link.send(a.send(b, b"x" * 100))
    for n in (1, 200, 255, 256, 1460, 40000, 65535):  # one- and three-octet deltas
        b.ack = (b.ack + n) & 0xFFFFFFFF
        kind, _ = link.send(b.send(a))  # pure ACKs
        assert kind in (PPP_VJC, PPP_VJUC)
    for wnd in (16000, 0, 65535, 1, 300):  # window shrinking and growing
        b.wnd = wnd
        b.ack += 10
        assert link.send(b.send(a))[0] == PPP_VJC
    b.ident += 500  # IP ID jump: explicit I delta
    b.ack += 10
    kind, payload = link.send(b.send(a))
    assert kind == PPP_VJC and payload[0] & NEW_I
    b.ident = (b.ident - 1) & 0xFFFF  # same ID again: delta 0 sent as 0, 0, 0
    b.ack += 10
    link.send(b.send(a))
    kind, payload = link.send(a.send(b, b"!", flags=tcp.ACK | tcp.PSH))
    assert kind == PPP_VJC and payload[0] & TCP_PUSH_BIT
    kind, payload = link.send(a.send(b, b"u", flags=tcp.ACK | tcp.URG, urp=1))
    assert kind == PPP_VJC and payload[0] & NEW_U
    link.send(a.send(b, b"v", flags=tcp.ACK | tcp.URG, urp=0))  # URG with pointer 0
    link.send(a.send(b, b"w"))  # URG cleared, pointer back to 0
    kind, _ = link.send(a.send(b, b"q", urp=5))  # pointer without URG: not encodable
    assert kind == PPP_VJUC


def test_jumps_retransmissions_and_duplicates_go_uncompressed() -> None:
    link = Link()
    a, b = connection()
    link.send(a.send(b, b"a" * 500))
    link.send(a.send(b, b"b" * 500))
    saved = (a.seq, a.ident)
    link.send(a.send(b, b"c" * 500))
    a.seq = saved[0]  # retransmission: sequence goes backwards
    assert link.send(a.send(b, b"c" * 500))[0] == PPP_VJUC
    a.seq += 70000  # forward by more than 16 bits
    assert link.send(a.send(b, b"d" * 10))[0] == PPP_VJUC
    b.ack = a.seq
    link.send(b.send(a))
    assert link.send(b.send(a))[0] == PPP_VJUC  # duplicate ACK
    assert link.send(b.send(a))[0] == PPP_VJUC
    assert link.send(b.send(a, b"data after pure acks"))[0] == PPP_VJC


def test_changed_fixed_fields_and_options() -> None:
    link = Link()
    a, b = connection()
    link.send(a.send(b, b"x"))
    link.send(a.send(b, b"x"))
    assert link.send(a.send(b, b"x", tos=0x10))[0] == PPP_VJUC  # TOS changed
    ts = 1
    for _ in range(5):  # timestamps change every segment: never compressed, always exact
        ts += 7
        opts = tcp.build_options(ts=(ts, 3))
        assert link.send(a.send(b, b"y" * 10, options=opts))[0] == PPP_VJUC
    opts = tcp.build_options(ts=(ts, 3))
    link.send(a.send(b, b"z", options=opts))  # same options twice: compressible
    assert link.send(a.send(b, b"z", options=opts))[0] == PPP_VJC
    ecn = a.send(b, b"e", flags=tcp.ACK | 0x40)  # ECE: a flag RFC 1144 cannot carry
    assert link.send(ecn)[0] == PPP_VJUC


def test_ip_options_are_carried_in_the_saved_header() -> None:
    link = Link()
    a, b = connection()
    for i in range(5):
        pkt = bytearray(a.send(b, b"opt" * (i + 1)))
        opts = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL
        pkt = pkt[:20] + opts + pkt[20:]
        pkt[0] = 0x46
        struct.pack_into("!H", pkt, 2, len(pkt))
        struct.pack_into("!H", pkt, 10, 0)
        struct.pack_into("!H", pkt, 10, checksum.checksum(pkt[:24]))
        kind, _ = link.send(bytes(pkt))
        assert kind == (PPP_VJUC if i == 0 else PPP_VJC)


def test_many_connections_share_slots_lru() -> None:
    rnd = random.Random(SEED)
    link = Link(slots=4)
    conns = [connection(sport=40000 + i, isn=1000 * i) for i in range(10)]
    for _ in range(2000):
        a, b = rnd.choice(conns[:3] if rnd.random() < 0.8 else conns)
        if rnd.random() < 0.5:
            link.send(a.send(b, rnd.randbytes(rnd.randrange(1, 600))))
        else:
            link.send(b.send(a))
    assert link.kinds.count(PPP_VJC) > 400
    assert link.tx.stats["misses"] > 10
    assert link.rx.stats["errors"] == 0


def test_slot_id_always_sent_when_not_compressible() -> None:
    link = Link(compress_slot_id=False)
    a, b = connection()
    for _ in range(10):
        kind, payload = link.send(a.send(b, b"k" * 100))
    assert kind == PPP_VJC and payload[0] & NEW_C and payload[1] == 0
    link2 = Link()
    a, b = connection()
    for _ in range(10):
        kind, payload = link2.send(a.send(b, b"k" * 100))
    assert not payload[0] & NEW_C


def test_lost_frame_tosses_until_a_retransmission_resynchronises() -> None:
    link = Link()
    a, b = connection()
    for _ in range(5):
        link.send(a.send(b, b"a" * 512))
    lost_seq, lost_ident = a.seq, a.ident
    link.send(a.send(b, b"L" * 512), lose=True)  # FCS error on the receiver: frame_error()
    assert link.rx.tossing
    tossed = []
    for _ in range(3):  # sent on, compressed against the lost state: must be tossed
        pkt = a.send(b, b"b" * 512)
        kind, payload = link.tx.compress(pkt)
        assert kind == PPP_VJC
        tossed.append(link.receive(kind, payload))
    assert tossed == [None] * 3
    assert link.rx.stats["tossed"] == 3 and link.rx.stats["frame_errors"] == 1
    # TCP retransmits from the lost segment: backwards, so uncompressed: resynchronised
    a.seq, a.ident = lost_seq, lost_ident
    assert link.send(a.send(b, b"L" * 512))[0] == PPP_VJUC
    assert not link.rx.tossing
    for _ in range(5):
        assert link.send(a.send(b, b"c" * 512))[0] == PPP_VJC


def test_a_frame_lost_unseen_is_caught_by_the_tcp_checksum() -> None:
    """A line that drops a whole frame between two flags reports no FCS error: the next
    packet is rebuilt on stale state, its carried TCP checksum fails, and it is tossed
    (never handed up) until the retransmission resynchronises (RFC 1144 §4.1)."""
    link = Link()
    a, b = connection()
    for _ in range(3):
        link.send(a.send(b, b"a" * 512))
    lost_seq, lost_ident = a.seq, a.ident
    link.tx.compress(a.send(b, b"L" * 512))  # gone, and nobody said so
    assert not link.rx.tossing
    kind, payload = link.tx.compress(a.send(b, b"b" * 512))
    assert kind == PPP_VJC and link.receive(kind, payload) is None
    assert link.rx.stats["bad_tcp_checksum"] == 1 and link.rx.tossing
    a.seq, a.ident = lost_seq, lost_ident
    assert link.send(a.send(b, b"L" * 512))[0] == PPP_VJUC
    assert link.send(a.send(b, b"b" * 512))[0] == PPP_VJC


def test_explicit_slot_number_ends_tossing() -> None:
    link = Link()
    a, b = connection(sport=1)
    c, d = connection(sport=2)
    link.send(a.send(b, b"1" * 10))
    link.send(c.send(d, b"2" * 10))
    link.send(a.send(b, b"1" * 10))
    link.send(c.send(d, b"2" * 10), lose=True)
    kind, payload = link.tx.compress(a.send(b, b"1" * 10))  # other slot: names it
    assert kind == PPP_VJC and payload[0] & NEW_C
    assert link.receive(kind, payload) is not None
    assert not link.rx.tossing


def test_bad_input_is_counted_never_raised() -> None:
    rx = VjDecompressor(slots=4)
    assert rx.compressed(b"\x00\x12\x34") is None  # no slot yet
    assert rx.stats["no_state"] == 1
    assert rx.compressed(b"") is None
    assert rx.stats["short"] == 1
    assert rx.compressed(b"\x00\x12\x34") is None  # an error starts tossing
    assert rx.stats["tossed"] == 1
    a, b = connection()
    pkt = bytearray(a.send(b, b"x"))
    pkt[9] = 9
    assert rx.uncompressed(bytes(pkt)) is None and rx.stats["bad_slot"] == 1
    assert rx.uncompressed(bytes(pkt[:30])) is None and rx.stats["short"] >= 1
    pkt[9] = 1
    bad = bytearray(pkt)
    bad[0] = 0x65
    assert rx.uncompressed(bytes(bad)) is None and rx.stats["bad_header"] == 1
    assert rx.uncompressed(bytes(pkt)) is not None
    assert rx.compressed(bytes([NEW_C, 7, 0, 0])) is None  # slot 7 of 4
    assert rx.compressed(bytes([NEW_C | 0x08, 1, 0, 0])) is None  # S delta missing
    assert rx.compressed(bytes([NEW_C | 0x08, 1, 0, 0, 0, 1])) is None  # 3-octet delta cut
    assert rx.compressed(bytes([NEW_C | 0x80, 1, 0, 0])) is None
    assert rx.compressed(bytes([NEW_C, 1, 0, 0]) + bytes(65500)) is None
    assert rx.stats["too_long"] == 1
    assert rx.tossing
    # An explicit connection number resynchronises (RFC 1144 §4); the packet it rebuilds
    # must carry the right TCP checksum, or it is refused as built on stale state.
    assert rx.compressed(bytes([NEW_C, 1, 0, 0]) + b"fine") is None
    assert rx.stats["bad_tcp_checksum"] == 1 and rx.tossing
    assert rx.compressed(bytes([NEW_C, 1]) + _tcp_checksum_for(pkt, b"fine") + b"fine")
    assert not rx.tossing
    assert rx.stats["errors"] == sum(
        rx.stats[k] for k in ("short", "bad_header", "bad_slot", "no_state", "too_long",
                              "bad_tcp_checksum")
    )


def _tcp_checksum_for(uncompressed: bytes | bytearray, payload: bytes) -> bytes:
    """The TCP checksum of the packet a compressed header with no deltas rebuilds from the
    state ``uncompressed`` set (same header, IP ID + 1, ``payload``)."""
    ihl = (uncompressed[0] & 0x0F) * 4
    hlen = ihl + (uncompressed[ihl + 12] >> 4) * 4
    seg = bytearray(uncompressed[ihl:hlen]) + payload
    seg[16:18] = b"\x00\x00"
    src, dst = (int.from_bytes(uncompressed[i:i + 4], "big") for i in (12, 16))
    c = checksum.checksum(seg, checksum.pseudo_header_sum(src, dst, 6, len(seg)))
    return c.to_bytes(2, "big")


# --- fuzz ----------------------------------------------------------------------------

FUZZ_PACKETS = 100_000


def _mutate(rnd: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randrange(1, 4)):
        op = rnd.randrange(4)
        if not b:
            b += rnd.randbytes(rnd.randrange(1, 8))
        elif op == 0:
            i = rnd.randrange(len(b))
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 1:
            del b[rnd.randrange(len(b)) :]
        elif op == 2:
            b[rnd.randrange(len(b))] = rnd.choice([0, 0xFF, 0x40, 0x0F, 0x0B, 16, 255])
        else:
            i = rnd.randrange(len(b) + 1)
            b[i:i] = rnd.randbytes(rnd.randrange(1, 6))
    return bytes(b)


def test_fuzz_decompressor_never_raises() -> None:
    rnd = random.Random(SEED + 1)
    # a corpus of real payloads from mixed flows
    link = Link(slots=8)
    conns = [connection(sport=50000 + i) for i in range(12)]
    corpus: list[tuple[int, bytes]] = []
    for _ in range(600):
        a, b = rnd.choice(conns)
        pkt = a.send(b, rnd.randbytes(rnd.randrange(0, 80))) if rnd.random() < 0.6 else b.send(a)
        kind, payload = link.send(pkt)
        if kind != PPP_IP:
            corpus.append((kind, payload))
    rx = VjDecompressor(slots=8)
    start = time.perf_counter()
    rebuilt = 0
    for i in range(FUZZ_PACKETS):
        kind, payload = rnd.choice(corpus)
        r = i % 8
        if r == 0:
            data = rnd.randbytes(rnd.randrange(0, 60))
        elif r in (1, 2):
            data = payload  # clean: keeps slots populated
        else:
            data = _mutate(rnd, payload)
        if r == 7:
            kind = PPP_VJC if kind == PPP_VJUC else PPP_VJUC
        if i % 97 == 0:
            rx.frame_error()
        if kind == PPP_VJUC:
            out = rx.uncompressed(data)  # the IP layer checks what it was handed
        else:
            out = rx.compressed(data)  # rebuilt here: must be a sound header
            if out is not None:
                assert checksum.verify(out[: (out[0] & 15) * 4])
        if out is not None:
            rebuilt += 1
            assert len(out) <= 0xFFFF and out[0] >> 4 == 4 and out[9] == ipv4.PROTO_TCP
    elapsed = time.perf_counter() - start
    assert rebuilt > 10_000
    assert set(rx.stats) == set(DECOMPRESSOR_STATS)
    assert rx.stats["errors"] > 1000 and rx.stats["tossed"] > 0
    assert len(rx._saved) == 8  # fixed state
    assert elapsed < 60  # a wedged decompressor, not a benchmark

"""IPv4 (RFC 791): header parse/build, fragmentation by ``packets()``, the ``Reassembler``."""

from __future__ import annotations

import itertools
import random
import struct
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hilkit.port import ManualClock, checksum
from hilkit.stack import Stack, eth, icmp4, ipv4
from tests.memwire import WireEnd, wire

SRC, DST = 0x0A000001, 0x0A000002
A_MAC, B_MAC = b"\x02\x00\x00\x00\x00\x0a", b"\x02\x00\x00\x00\x00\x0b"


def with_checksum(hdr: bytearray) -> bytearray:
    struct.pack_into("!H", hdr, 10, 0)
    struct.pack_into("!H", hdr, 10, checksum.checksum(hdr))
    return hdr


def raw_header(
    payload_len: int, *, ihl: int = 20, ident: int = 1, flags_frag: int = 0,
    proto: int = ipv4.PROTO_UDP, src: int = SRC, dst: int = DST, options: bytes | None = None,
) -> bytes:
    """A header of ``ihl`` bytes (options padded with NOPs unless given)."""
    opts = options if options is not None else b"\x01" * (ihl - 20)
    assert len(opts) == ihl - 20
    hdr = bytearray(struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl // 4, 0, ihl + payload_len, ident, flags_frag, 64, proto, 0,
        src.to_bytes(4, "big"), dst.to_bytes(4, "big"))) + opts
    return bytes(with_checksum(hdr))


def fragment(data: bytes, offset: int, more: bool, **kw: Any) -> tuple[ipv4.Header, memoryview]:
    ff = (ipv4.FLAG_MF if more else 0) | (offset >> 3)
    pkt = memoryview(raw_header(len(data), flags_frag=ff, **kw) + data)
    return ipv4.parse(pkt), pkt


class Feeder:
    """A Reassembler, its drop counters and a clock, for terse tests."""

    def __init__(self, **limits: Any) -> None:
        self.r = ipv4.Reassembler(ipv4.ReassemblyLimits(**limits))
        self.drops: dict[str, int] = {}
        self.now = 0.0

    def add(self, data: bytes, offset: int, more: bool, **kw: Any
            ) -> tuple[ipv4.Header, bytes, bytes] | None:
        h, pkt = fragment(data, offset, more, **kw)
        return self.r.add(h, pkt, self.now, self.drops)


def chunks(payload: bytes, size: int) -> list[tuple[bytes, int, bool]]:
    out = []
    for off in range(0, len(payload), size):
        piece = payload[off:off + size]
        out.append((piece, off, off + size < len(payload)))
    return out


# -- parse -----------------------------------------------------------------------


@given(
    src=st.integers(0, 0xFFFFFFFF), dst=st.integers(0, 0xFFFFFFFF), proto=st.integers(0, 255),
    payload_len=st.integers(0, 65515), ident=st.integers(0, 0xFFFF), ttl=st.integers(0, 255),
    tos=st.integers(0, 255), flags_frag=st.integers(0, 0x7FFF), pad=st.integers(0, 46),
)
def test_parse_accepts_built_headers(
    src: int, dst: int, proto: int, payload_len: int, ident: int, ttl: int, tos: int,
    flags_frag: int, pad: int,
) -> None:
    hdr = ipv4.build_header(src, dst, proto, payload_len, ident, ttl, tos, flags_frag)
    assert len(hdr) == 20 and checksum.verify(hdr)
    pkt = hdr + bytes(payload_len + pad)  # Ethernet padding may follow the datagram
    h = ipv4.parse(memoryview(pkt))
    assert h == ipv4.Header(20, tos, 20 + payload_len, ident, flags_frag, ttl, proto, src, dst)
    assert h.offset == (flags_frag & 0x1FFF) * 8
    assert h.more_fragments == bool(flags_frag & 0x2000)
    assert h.is_fragment == bool(flags_frag & 0x3FFF)


@pytest.mark.parametrize("ihl", [24, 28, 40, 60])
def test_parse_skips_options_by_ihl(ihl: int) -> None:
    # Hostile option bytes (a lying length, a source route) are never read.
    opts = (b"\x83\xff\x00" + b"\x44\x02" + b"\x00" * 60)[:ihl - 20]
    pkt = raw_header(5, ihl=ihl, options=opts) + b"hello"
    h = ipv4.parse(memoryview(pkt))
    assert (h.ihl, h.total_len) == (ihl, ihl + 5)
    assert bytes(memoryview(pkt)[h.ihl:h.total_len]) == b"hello"


def mutate(pkt: bytes, off: int, fmt: str, value: int, fix: bool = True) -> memoryview:
    b = bytearray(pkt)
    struct.pack_into(fmt, b, off, value)
    if fix:
        ihl = min((b[0] & 0xF) * 4, len(b))
        b[:ihl] = with_checksum(b[:ihl]) if ihl >= 12 else b[:ihl]
    return memoryview(bytes(b))


GOOD = ipv4.build_header(SRC, DST, ipv4.PROTO_UDP, 12, 99) + bytes(12)


@pytest.mark.parametrize(
    ("pkt", "reason"),
    [
        (memoryview(b""), "ipv4.short"),
        (memoryview(GOOD[:19]), "ipv4.short"),
        (mutate(GOOD, 0, "!B", 0x65), "ipv4.bad_version"),
        (mutate(GOOD, 0, "!B", 0x05), "ipv4.bad_version"),
        (mutate(GOOD, 0, "!B", 0xF5), "ipv4.bad_version"),
        (mutate(GOOD, 0, "!B", 0x40), "ipv4.bad_ihl"),
        (mutate(GOOD, 0, "!B", 0x44), "ipv4.bad_ihl"),
        (mutate(GOOD, 0, "!B", 0x4F), "ipv4.bad_ihl"),  # 60 > 32 bytes present
        (mutate(GOOD, 0, "!B", 0x49), "ipv4.bad_ihl"),  # 36 > 32
        (mutate(GOOD, 10, "!H", 0x1234, fix=False), "ipv4.bad_checksum"),
        (mutate(GOOD, 8, "!B", 1, fix=False), "ipv4.bad_checksum"),
        (mutate(GOOD, 2, "!H", 19), "ipv4.bad_total_length"),
        (mutate(GOOD, 2, "!H", 0), "ipv4.bad_total_length"),
        (mutate(GOOD, 2, "!H", 33), "ipv4.bad_total_length"),
        (mutate(GOOD, 2, "!H", 0xFFFF), "ipv4.bad_total_length"),
        (mutate(GOOD, 6, "!H", 0x8000), "ipv4.reserved_flag"),
        (mutate(GOOD, 6, "!H", 0xE000 | 5), "ipv4.reserved_flag"),
    ],
)
def test_parse_rejects_each_bad_field(pkt: memoryview, reason: str) -> None:
    with pytest.raises(ipv4.Drop) as e:
        ipv4.parse(pkt)
    assert e.value.reason == reason
    assert str(e.value) == reason


def test_parse_total_length_bounds() -> None:
    h = ipv4.parse(mutate(GOOD, 2, "!H", 20))  # a header and nothing else is sound
    assert h.total_len == 20
    h = ipv4.parse(mutate(GOOD, 2, "!H", 32))
    assert h.total_len == 32
    opts = raw_header(0, ihl=24)
    with pytest.raises(ipv4.Drop, match=r"^ipv4\.bad_total_length$"):
        ipv4.parse(mutate(opts, 2, "!H", 20))  # shorter than its own IHL


# -- fragmentation ------------------------------------------------------------------


def split(payload: bytes, rnd: random.Random) -> list[checksum.Buffer]:
    """The payload as 1..4 parts of mixed buffer types (packets() slices, never joins)."""
    cuts = sorted(rnd.randint(0, len(payload)) for _ in range(rnd.randint(0, 3)))
    bounds = [0, *cuts, len(payload)]
    kinds = (bytes, bytearray, memoryview)
    return [rnd.choice(kinds)(payload[a:b]) for a, b in itertools.pairwise(bounds)]


@settings(deadline=None, max_examples=150)
@given(size=st.integers(0, 65507), mtu=st.integers(68, 9000),
       rnd=st.randoms(use_true_random=True), ident=st.integers(0, 0xFFFF))
def test_fragmentation_round_trip(size: int, mtu: int, rnd: random.Random, ident: int) -> None:
    payload = rnd.randbytes(size)
    parts = split(payload, rnd)
    pkts = [b"".join(p) for p in ipv4.packets(SRC, DST, ipv4.PROTO_UDP, parts, ident, mtu)]
    assert payload == b"".join(bytes(p) for p in parts)  # parts untouched
    assert pkts
    heads = [ipv4.parse(memoryview(p)) for p in pkts]
    if 20 + size <= mtu:
        assert len(pkts) == 1 and not heads[0].is_fragment
        assert pkts[0][20:] == payload
        return
    expect_off = 0
    for i, (p, h) in enumerate(zip(pkts, heads, strict=True)):
        assert len(p) <= mtu and h.total_len == len(p)
        assert h.offset % 8 == 0 and h.offset == expect_off
        last = i == len(pkts) - 1
        assert h.more_fragments == (not last)
        assert not h.flags_frag & ipv4.FLAG_DF
        assert (h.ident, h.src, h.dst, h.proto) == (ident, SRC, DST, ipv4.PROTO_UDP)
        if not last:
            assert (len(p) - 20) % 8 == 0 and len(p) > mtu - 8  # fragments are full
        expect_off += len(p) - 20
    assert expect_off == size

    # Reassemble in a shuffled order with exact duplicates sprinkled in.
    n = len(pkts)
    order = list(range(n)) + rnd.choices(range(n), k=rnd.randint(0, n))
    rnd.shuffle(order)
    r = ipv4.Reassembler(ipv4.ReassemblyLimits(max_fragments=65536 // 8))
    drops: dict[str, int] = {}
    seen: set[int] = set()
    dups = done = 0
    for i in order:
        got = r.add(heads[i], memoryview(pkts[i]), 0.0, drops)
        if i in seen:  # an exact duplicate of a fragment of the datagram in progress
            dups += 1
            assert got is None
        else:
            seen.add(i)
            if len(seen) < n:
                assert got is None
            else:  # the last missing piece completes it; a later copy starts a new one
                assert got is not None
                h, hbytes, data = got
                assert data == payload
                assert h == heads[0] and hbytes == pkts[0][:20]
                seen = set()
                done += 1
    assert done >= 1
    assert drops == ({"ipv4.frag_duplicate": dups} if dups else {})
    assert len(r) == (1 if seen else 0)


@pytest.mark.parametrize("mtu", [68, 69, 75, 76, 576, 1500, 9000])
def test_fragment_sizes_at_mtu_edges(mtu: int) -> None:
    pkts = [b"".join(p) for p in ipv4.packets(SRC, DST, 17, [bytes(3000)], 1, mtu)]
    step = (mtu - 20) & ~7
    assert all(len(p) == 20 + step for p in pkts[:-1])
    assert sum(len(p) - 20 for p in pkts) == 3000


def test_df_above_mtu_raises_drop() -> None:
    with pytest.raises(ipv4.Drop) as e:
        list(ipv4.packets(SRC, DST, 17, [bytes(1481)], 1, 1500, df=True))
    assert e.value.reason == "ipv4.needs_fragmentation_df"
    (pkt,) = ipv4.packets(SRC, DST, 17, [bytes(1480)], 1, 1500, df=True)
    h = ipv4.parse(memoryview(b"".join(pkt)))
    assert h.flags_frag == ipv4.FLAG_DF and not h.is_fragment


def test_datagram_too_big_raises_drop() -> None:
    assert len(list(ipv4.packets(SRC, DST, 17, [bytes(65515)], 1, 1500))) == 45
    with pytest.raises(ipv4.Drop) as e:
        list(ipv4.packets(SRC, DST, 17, [bytes(65516)], 1, 1500))
    assert e.value.reason == "ipv4.too_big"


# -- reassembly ------------------------------------------------------------------------


PAYLOAD = bytes(range(256)) * 4


def test_first_fragments_header_is_returned_whatever_the_order() -> None:
    f = Feeder()
    pieces = chunks(PAYLOAD[:64], 24)
    assert f.add(*pieces[2], ident=5) is None
    assert f.add(*pieces[0], ident=5, ihl=28) is None  # offset 0 carries options
    got = f.add(*pieces[1], ident=5)
    assert got is not None
    h, hbytes, data = got
    assert data == PAYLOAD[:64] and h.offset == 0 and h.ihl == 28 and len(hbytes) == 28
    assert ipv4.parse(memoryview(hbytes + PAYLOAD[:24])) == h
    assert f.drops == {} and len(f.r) == 0


def test_fragments_of_different_datagrams_do_not_mix() -> None:
    f = Feeder()
    a, b = chunks(PAYLOAD[:32], 16)
    keys: list[dict[str, Any]] = [
        {"ident": 2}, {"proto": ipv4.PROTO_ICMP}, {"src": 0x0A000009}, {"dst": 0x0A000003}]
    for kw in keys:
        assert f.add(*a, **kw) is None
    assert len(f.r) == 4
    assert f.add(*b) is None  # no datagram with the default key has its first part
    got = f.add(*a)
    assert got is not None and got[2] == PAYLOAD[:32]
    assert len(f.r) == 4


def test_overlap_drops_the_datagram_and_later_fragments() -> None:
    f = Feeder(timeout_ms=1000)
    assert f.add(PAYLOAD[0:16], 0, True) is None
    assert f.add(b"X" * 16, 8, True) is None  # overlaps 8..16 with different bytes
    assert f.drops == {"ipv4.frag_overlap": 1}
    assert len(f.r) == 1  # remembered as discarded
    for piece in chunks(PAYLOAD[:48], 16):  # even the whole, correct datagram now fails
        assert f.add(*piece) is None
    assert f.drops == {"ipv4.frag_overlap": 1, "ipv4.frag_of_discarded": 3}
    f.now = 1000
    assert f.r.expire(f.now, f.drops) == []  # no time-exceeded for a discarded datagram
    assert len(f.r) == 0
    got = None
    for piece in chunks(PAYLOAD[:48], 16):  # after the timeout: a fresh start
        got = f.add(*piece)
    assert got is not None and got[2] == PAYLOAD[:48]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((PAYLOAD[0:16], 0, True), (PAYLOAD[0:8], 0, True)),  # same offset, a prefix
        ((PAYLOAD[0:16], 0, True), (PAYLOAD[0:24], 0, True)),  # same offset, longer
        ((PAYLOAD[0:16], 0, True), (b"\0" * 16, 0, True)),  # same place, other bytes
        ((PAYLOAD[8:16], 8, True), (PAYLOAD[0:24], 0, True)),  # covers it entirely
        ((PAYLOAD[0:24], 0, True), (PAYLOAD[8:16], 8, True)),  # inside it, even if equal
        ((PAYLOAD[16:24], 16, False), (PAYLOAD[8:24], 8, True)),  # ends at the known total
    ],
)
def test_every_non_identical_overlap_is_refused(
    first: tuple[bytes, int, bool], second: tuple[bytes, int, bool]
) -> None:
    f = Feeder()
    assert f.add(*first) is None
    assert f.add(*second) is None
    assert f.drops == {"ipv4.frag_overlap": 1}


def test_exact_duplicates_are_counted_not_fatal() -> None:
    f = Feeder()
    a, b, c = chunks(PAYLOAD[:40], 16)
    assert f.add(*a) is None
    assert f.add(*a) is None
    assert f.add(*c) is None
    assert f.add(*c) is None
    got = f.add(*b)
    assert got is not None and got[2] == PAYLOAD[:40]
    assert f.drops == {"ipv4.frag_duplicate": 2}


def test_max_concurrent_evicts_the_oldest() -> None:
    f = Feeder(max_concurrent=3)
    a, b = chunks(PAYLOAD[:32], 16)
    for ident in (1, 2, 3):
        assert f.add(*a, ident=ident) is None
    assert f.drops == {} and len(f.r) == 3
    assert f.add(*a, ident=4) is None
    assert f.drops == {"ipv4.reasm_evicted": 1} and len(f.r) == 3
    for ident in (4, 3, 2):  # the survivors complete
        got = f.add(*b, ident=ident)
        assert got is not None and got[0].ident == ident
    assert len(f.r) == 0
    assert f.add(*b, ident=1) is None  # ident 1 was evicted: this starts over
    assert len(f.r) == 1


def test_max_datagram() -> None:
    f = Feeder(max_datagram=1000)
    assert f.add(PAYLOAD[:8], 0, True) is None
    got = f.add(bytes(972), 8, False)  # 20 + 980 = 1000: at the limit
    assert got is not None and len(got[2]) == 980 and f.drops == {}
    f = Feeder(max_datagram=1000)
    assert f.add(PAYLOAD[:8], 0, True) is None
    assert f.add(bytes(973), 8, False) is None  # 20 + 981 > 1000
    assert f.drops == {"ipv4.frag_too_big": 1}
    assert f.add(bytes(972), 8, False) is None  # the datagram is discarded
    assert f.drops == {"ipv4.frag_too_big": 1, "ipv4.frag_of_discarded": 1}


def test_max_datagram_default_is_the_ipv4_limit() -> None:
    f = Feeder()
    assert f.add(bytes(11), 65504, False, ident=1) is None  # 20 + 65515 fits
    assert f.drops == {}
    assert f.add(bytes(12), 65504, False, ident=2) is None  # 20 + 65516 does not
    assert f.drops == {"ipv4.frag_too_big": 1}


def test_completed_max_size_datagram() -> None:
    payload = random.Random(7).randbytes(65515)
    f = Feeder()
    got = None
    for piece in chunks(payload, 65504):
        got = f.add(*piece)
    assert got is not None and got[2] == payload and 20 + len(got[2]) == 65535


def test_max_datagram_counts_the_first_fragments_header() -> None:
    """The reassembled datagram is offset 0's header plus the payload: that must fit.

    The limit is checked per fragment with *that fragment's* IHL, so a first
    fragment with 40 bytes of options lets a datagram 40 bytes over the limit
    through (with the default limit: a 65575-byte "IPv4 datagram").
    """
    f = Feeder(max_datagram=1000)
    assert f.add(PAYLOAD[:8], 0, True, ihl=60) is None  # 60 + 8 <= 1000
    got = f.add(bytes(972), 8, False)  # 20 + 980 <= 1000, but the datagram is 60 + 980
    if got is not None:
        assert got[0].ihl + len(got[2]) <= 1000, "reassembled datagram exceeds max_datagram"
    else:
        assert f.drops == {"ipv4.frag_too_big": 1}


def test_max_datagram_ignores_options_of_later_fragments() -> None:
    """The other side of the same check: options copied into a later fragment (RFC 791
    copy flag) do not make the datagram longer, so they must not get it refused."""
    f = Feeder(max_datagram=1000)
    assert f.add(PAYLOAD[:8], 0, True) is None  # the datagram's header is 20 bytes
    got = f.add(bytes(972), 8, False, ihl=60)  # 20 + 980 == 1000: fits
    assert f.drops == {}
    assert got is not None and len(got[2]) == 980


def test_timeout_via_expire() -> None:
    f = Feeder(timeout_ms=1000)
    f.now = 100.0
    assert f.add(PAYLOAD[:16], 0, True, ident=1) is None
    assert f.add(PAYLOAD[16:32], 16, True, ident=2) is None  # no offset 0
    assert f.r.next_deadline() == 1100.0
    f.now = 1099.0
    assert f.add(PAYLOAD[16:32], 16, True, ident=1) is None  # does not extend the deadline
    assert f.r.expire(1099.9, f.drops) == []
    assert len(f.r) == 2
    expired = f.r.expire(1100.0, f.drops)
    assert len(expired) == 1  # only the one whose offset 0 arrived reports
    h, first = expired[0]
    assert h.ident == 1 and h.offset == 0
    assert first == raw_header(16, ident=1, flags_frag=ipv4.FLAG_MF) + PAYLOAD[:8]
    assert len(f.r) == 0 and f.r.next_deadline() is None
    assert f.drops == {"ipv4.reasm_timeout": 2}
    f.now = 1100.0
    assert f.add(PAYLOAD[32:40], 32, False, ident=1) is None  # a late piece starts over
    assert len(f.r) == 1


def test_first_bytes_are_capped_at_8_payload_bytes_and_keep_options() -> None:
    f = Feeder(timeout_ms=10)
    assert f.add(PAYLOAD[:4], 16, False) is None
    assert f.add(PAYLOAD[:8], 0, True, ihl=32) is None
    ((h, first),) = f.r.expire(10, f.drops)
    assert first == raw_header(8, ihl=32, flags_frag=ipv4.FLAG_MF) + PAYLOAD[:8]
    assert h.ihl == 32


@pytest.mark.parametrize("n", [4, 5])
def test_max_fragments(n: int) -> None:
    f = Feeder(max_fragments=4)
    got = None
    for piece in chunks(PAYLOAD[: 8 * n], 8):
        got = f.add(*piece)
    if n <= 4:
        assert got is not None and got[2] == PAYLOAD[:8 * n] and f.drops == {}
    else:
        assert got is None and f.drops == {"ipv4.frag_too_many": 1}


def test_last_fragment_contradicting_known_total() -> None:
    f = Feeder()
    assert f.add(PAYLOAD[16:24], 16, False) is None  # the total is 24
    assert f.add(PAYLOAD[16:32], 16, False) is None  # ... no, says this one: 32
    assert f.drops == {"ipv4.frag_inconsistent": 1}
    assert f.add(PAYLOAD[0:16], 0, True) is None
    assert f.drops == {"ipv4.frag_inconsistent": 1, "ipv4.frag_of_discarded": 1}


@pytest.mark.parametrize(
    "steps",
    [
        # a second "last" fragment that ends earlier
        [(PAYLOAD[16:24], 16, False), (PAYLOAD[8:12], 8, False)],
        # a middle fragment past the known end
        [(PAYLOAD[16:24], 16, False), (PAYLOAD[24:32], 24, True)],
        [(PAYLOAD[16:24], 16, False), (PAYLOAD[8:32], 8, True)],
        # a last fragment that ends before data already received
        [(PAYLOAD[32:40], 32, True), (PAYLOAD[8:16], 8, False)],
    ],
)
def test_length_contradictions(steps: list[tuple[bytes, int, bool]]) -> None:
    f = Feeder()
    for s in steps:
        assert f.add(*s) is None
    assert f.drops == {"ipv4.frag_inconsistent": 1}


def test_bad_length_and_empty_fragments() -> None:
    f = Feeder()
    assert f.add(PAYLOAD[:12], 0, True, ident=1) is None  # not a multiple of 8, yet MF
    assert f.drops == {"ipv4.frag_bad_length": 1}
    assert f.add(b"", 8, True, ident=2) is None
    assert f.add(b"", 8, False, ident=3) is None
    assert f.drops == {"ipv4.frag_bad_length": 1, "ipv4.frag_empty": 2}


# -- through the stack -----------------------------------------------------------------


def _stack_pair() -> tuple[ManualClock, Stack, Stack, WireEnd]:
    clock = ManualClock(1000.0)
    wa, wb = wire()
    a, b = Stack(clock), Stack(clock)
    a.add_device(wa)
    b.add_device(wb)
    a.link_add(wa, "10.0.0.1", "255.255.255.0")
    b.link_add(wb, "10.0.0.2", "255.255.255.0")
    return clock, a, b, wb


@pytest.mark.parametrize(
    ("eth_dst", "ip_dst"),
    [(eth.BROADCAST_MAC, 0xFFFFFFFF), (eth.BROADCAST_MAC, 0x0A0000FF), (eth.BROADCAST_MAC, DST)],
    ids=["limited-broadcast", "subnet-broadcast", "link-broadcast"],
)
def test_no_time_exceeded_about_a_broadcast(eth_dst: bytes, ip_dst: int) -> None:
    """RFC 1122 §3.2.2: no ICMP error about a datagram sent to a broadcast address
    or as a link-layer broadcast; that includes a reassembly timeout (Linux: icmp_send
    refuses RTCF_BROADCAST routes and non-PACKET_HOST frames)."""
    clock, a, b, wb = _stack_pair()
    try:
        udp_body = bytes(48)
        hdr = ipv4.build_header(SRC, ip_dst, ipv4.PROTO_UDP, 48, 0x4242, flags_frag=ipv4.FLAG_MF)
        for _ in range(5):
            a.tick()
            b.tick()
        wb.rx.append(eth.header(eth_dst, A_MAC, eth.ETHERTYPE_IPV4) + hdr + udp_body)
        b.tick()
        if ip_dst == DST:  # unicast in a link-layer broadcast: dropped at once (RFC 1122 §3.3.6)
            assert len(b.ip.reasm) == 0 and b.drops["ipv4.unicast_in_link_broadcast"] == 1
            assert b.stats["icmp.errors_sent"] == 0
            return
        assert len(b.ip.reasm) == 1
        sent_before = len(wb.sent)
        clock.advance(30_000)
        for _ in range(5):
            b.tick()
            a.tick()
        assert len(b.ip.reasm) == 0 and b.drops["ipv4.reasm_timeout"] == 1
        icmp = [f for f in wb.sent[sent_before:]
                if f[12:14] == b"\x08\x00" and f[23] == ipv4.PROTO_ICMP]
        assert [(f[34], f[35]) for f in icmp] == [], (
            "time-exceeded sent about a broadcast datagram")
        assert b.stats["icmp.errors_sent"] == 0
    finally:
        a.close()
        b.close()


def test_reassembly_through_stack_counts_and_echo() -> None:
    """A fragmented echo request, fragments reversed, is answered (as fragments)."""
    _, a, b, wb = _stack_pair()
    try:
        for _ in range(5):
            a.tick()
            b.tick()
        body = random.Random(3).randbytes(3000)
        msg = icmp4.echo_header(False, 0x99, 1, body) + body
        frags = [b"".join(p) for p in ipv4.packets(SRC, DST, ipv4.PROTO_ICMP, [msg], 77, 1500)]
        assert len(frags) == 3
        for f in reversed(frags):
            wb.rx.append(eth.header(B_MAC, A_MAC, eth.ETHERTYPE_IPV4) + f)
        for _ in range(5):
            b.tick()
            a.tick()
        assert b.stats["ipv4.reassembled"] == 1 and b.stats["icmp.echo_replies_sent"] == 1
        replies = [ipv4.parse(memoryview(f[14:])) for f in wb.sent[-3:]]
        assert [h.more_fragments for h in replies] == [True, True, False]
        assert not b.drops
        assert Counter(h.proto for h in replies) == {ipv4.PROTO_ICMP: 3}
    finally:
        a.close()
        b.close()

"""Property tests: no parser and no input path raises on anything a wire can send.

A parser returns a value or a reason (a counter name); ``ipv4.parse`` raises
``ipv4.Drop`` and nothing else. Whatever a frame holds, ``Stack.input`` does
not raise and ``tick()`` never counts an ``internal_error``.
"""

from __future__ import annotations

import re
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hilkit.port import LinkType, ManualClock, checksum
from hilkit.stack import Stack, arp, eth, ipv4, udp
from tests.memwire import WireEnd, wire
from tests.unit.test_fuzz import A_TO_B, ECHO_PORT, build_corpus

REASON = re.compile(r"^[a-z0-9]+\.[a-z_]+$")
ARP_REASONS = {"arp.short", "arp.bad_format", "arp.bad_op", "arp.bad_sender"}
IPV4_REASONS = {"ipv4.short", "ipv4.bad_version", "ipv4.bad_ihl", "ipv4.bad_checksum",
                "ipv4.bad_total_length", "ipv4.reserved_flag"}
UDP_REASONS = {"udp.short", "udp.bad_length", "udp.bad_checksum", "udp.port_zero"}

CORPUS = build_corpus(A_TO_B)
addrs = st.integers(0, 0xFFFFFFFF)


@st.composite
def mutated(draw: st.DrawFn, frames: list[bytes], skip: int = 0) -> bytes:
    """A valid frame (minus ``skip`` leading bytes) with one byte replaced, maybe cut short."""
    frame = bytearray(draw(st.sampled_from(frames))[skip:])
    if frame:
        i = draw(st.integers(0, len(frame) - 1))
        frame[i] = draw(st.integers(0, 255))
    cut = draw(st.one_of(st.none(), st.integers(0, len(frame))))
    return bytes(frame if cut is None else frame[:cut])


ARP_PKTS = [f[14:] for f in CORPUS if f[12:14] == b"\x08\x06"]
IP_PKTS = [f[14:] for f in CORPUS if f[12:14] == b"\x08\x00"]
UDP_SEGS = [(p[20:], int.from_bytes(p[12:16], "big"), int.from_bytes(p[16:20], "big"))
            for p in IP_PKTS if p[9] == 17 and not int.from_bytes(p[6:8], "big") & 0x3FFF]


# -- arp.parse ---------------------------------------------------------------------


def check_arp(data: bytes) -> None:
    got = arp.parse(memoryview(data))
    if isinstance(got, str):
        assert got in ARP_REASONS
        return
    assert got.op in (arp.OP_REQUEST, arp.OP_REPLY)
    assert len(got.sha) == 6 and len(got.tha) == 6 and not eth.is_group(got.sha)
    assert 0 <= got.spa <= 0xFFFFFFFF and 0 <= got.tpa <= 0xFFFFFFFF
    assert arp.build(got.op, got.sha, got.spa, got.tha, got.tpa) == data[:arp.PACKET_LEN]


@given(st.binary(max_size=64))
def test_arp_parse_arbitrary_bytes(data: bytes) -> None:
    check_arp(data)


@given(mutated(ARP_PKTS))
def test_arp_parse_mutated(data: bytes) -> None:
    check_arp(data)


# -- ipv4.parse ----------------------------------------------------------------------


def check_ipv4(data: bytes) -> None:
    try:
        h = ipv4.parse(memoryview(data))
    except ipv4.Drop as d:
        assert d.reason in IPV4_REASONS
        return
    assert 20 <= h.ihl <= 60 and h.ihl % 4 == 0
    assert h.ihl <= h.total_len <= len(data)
    assert checksum.verify(data[:h.ihl])
    assert data[0] >> 4 == 4 and not h.flags_frag & 0x8000
    assert 0 <= h.offset <= 0x1FFF * 8


@given(st.binary(max_size=100))
def test_ipv4_parse_arbitrary_bytes(data: bytes) -> None:
    check_ipv4(data)


@given(st.binary(min_size=18, max_size=80))
def test_ipv4_parse_arbitrary_headers_with_a_good_checksum(data: bytes) -> None:
    """Random headers whose checksum is right reach every later check."""
    b = bytearray(data)
    b[0] = 0x40 | (b[0] & 0xF)
    ihl = min(max((b[0] & 0xF) * 4, 12), len(b))
    if ihl >= 12:
        b[10:12] = b"\0\0"
        struct.pack_into("!H", b, 10, checksum.checksum(b[:ihl]))
    check_ipv4(bytes(b))


@given(mutated(IP_PKTS))
def test_ipv4_parse_mutated(data: bytes) -> None:
    check_ipv4(data)


# -- udp.parse ------------------------------------------------------------------------


def check_udp(seg: bytes, src: int, dst: int) -> None:
    got = udp.parse(memoryview(seg), src, dst)
    if isinstance(got, str):
        assert got in UDP_REASONS
        return
    sport, dport, payload = got
    length = struct.unpack_from("!H", seg, 4)[0]
    assert 0 <= sport <= 0xFFFF and 0 < dport <= 0xFFFF
    assert bytes(payload) == seg[8:length]
    csum = struct.unpack_from("!H", seg, 6)[0]
    if csum:
        assert checksum.verify(seg[:length], checksum.pseudo_header_sum(src, dst, 17, length))


@given(st.binary(max_size=64), addrs, addrs)
def test_udp_parse_arbitrary_bytes(seg: bytes, src: int, dst: int) -> None:
    check_udp(seg, src, dst)


@given(st.sampled_from(UDP_SEGS), st.integers(0, 1000), st.integers(0, 255),
       st.one_of(st.none(), st.integers(0, 100)))
def test_udp_parse_mutated(
    seg_src_dst: tuple[bytes, int, int], where: int, value: int, cut: int | None
) -> None:
    seg, src, dst = seg_src_dst
    b = bytearray(seg)
    b[where % len(b)] = value
    check_udp(bytes(b if cut is None else b[:cut]), src, dst)


@given(st.binary(max_size=40), addrs, addrs, st.integers(1, 0xFFFF), st.integers(0, 0xFFFF))
def test_udp_header_round_trip(data: bytes, src: int, dst: int, dport: int, sport: int) -> None:
    seg = udp.header(src, sport, dst, dport, data) + data
    assert struct.unpack_from("!H", seg, 6)[0] != 0  # a computed zero goes out as 0xFFFF
    got = udp.parse(memoryview(seg), src, dst)
    assert not isinstance(got, str)
    assert (got[0], got[1], bytes(got[2])) == (sport, dport, data)


# -- the stack's input path -------------------------------------------------------------


class Host:
    """One stack with an echo socket, on one end of a wire (the far end is silent)."""

    def __init__(self, link: LinkType = LinkType.ETHERNET) -> None:
        self.clock = ManualClock(1000.0)
        self.peer, self.end = wire(1500, link)
        self.stack = Stack(self.clock)
        self.stack.add_device(self.end)
        self.stack.link_add(self.end, "10.0.0.2", "255.255.255.0")
        sock = self.stack.udp_socket()
        sock.bind(("0.0.0.0", ECHO_PORT))

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()


frames = st.one_of(
    st.binary(max_size=1600),
    mutated(CORPUS),
    st.builds(lambda head, tail: head + tail,
              st.sampled_from([f[:14] for f in CORPUS] + [f[:34] for f in CORPUS]),
              st.binary(max_size=200)),
)
PROP = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)


@PROP
@given(st.lists(frames, min_size=1, max_size=4))
def test_stack_input_never_raises(batch: list[bytes]) -> None:
    with Host() as h:
        iface = h.stack.interfaces[0]
        for frame in batch:
            h.stack.input(iface, frame)  # straight in: nothing may escape
            assert all(REASON.match(k) for k in h.stack.drops), dict(h.stack.drops)


@PROP
@given(st.lists(frames, min_size=1, max_size=8), st.lists(st.floats(0, 40_000), max_size=3))
def test_stack_tick_counts_no_internal_error(batch: list[bytes], waits: list[float]) -> None:
    with Host() as h:
        end: WireEnd = h.end
        end.rx.extend(batch)
        h.stack.tick()
        assert not end.rx
        for w in waits:  # let ARP retries and reassembly timeouts fire
            h.clock.advance(w)
            h.stack.tick()
        assert h.stack.drops["internal_error"] == 0
        assert h.stack.stats["callback_error"] == 0


@PROP
@given(st.lists(st.one_of(st.binary(max_size=1500), mutated(CORPUS, skip=14)),
                min_size=1, max_size=8))
def test_raw_ip_link_input_never_raises(batch: list[bytes]) -> None:
    """On a point-to-point link (TUN, PPP) a frame is a bare IP packet."""
    with Host(LinkType.RAW_IP) as h:
        iface = h.stack.interfaces[0]
        for frame in batch:
            h.stack.input(iface, frame)
        h.end.rx.extend(batch)
        h.stack.tick()
        assert h.stack.drops["internal_error"] == 0


def test_host_answers_corpus_echo() -> None:
    """Sanity for the fixture: a well-formed echo request to 10.0.0.2 gets a reply out."""
    with Host() as h:
        h.end.rx.append(CORPUS[0])  # ARP request for 10.0.0.2
        h.end.rx.append(CORPUS[3])  # echo request
        h.stack.tick()
        assert h.stack.stats["arp.replies_sent"] == 1
        assert h.stack.stats["icmp.echo_replies_sent"] == 1
        assert not h.stack.drops

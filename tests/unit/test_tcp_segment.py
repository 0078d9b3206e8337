"""TCP segments and options (RFC 9293 §3.1, RFC 7323, RFC 2018): parse, build, refuse.

Everything here is pure bytes: ``tcp.header`` + ``tcp.build_options`` build,
``tcp.parse`` reads back, and anything hostile comes back as a reason string
(a counter name), never an exception. Sequence arithmetic is mod 2**32
(RFC 9293 §3.4), checked around the wrap.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hilkit.port import checksum
from hilkit.stack import tcp
from hilkit.stack.ipv4 import PROTO_TCP
from hilkit.stack.tcp import Segment, seq_add, seq_diff, seq_le, seq_lt

SRC, DST = 0x0A000001, 0x0A000002
REASONS = {"tcp.short", "tcp.bad_offset", "tcp.bad_checksum", "tcp.port_zero", "tcp.bad_option"}
MOD = 1 << 32


def build(seq: int = 1000, ack: int = 2000, flags: int = tcp.ACK, wnd: int = 4096,
          options: bytes = b"", payload: bytes = b"", sport: int = 40000, dport: int = 80,
          src: int = SRC, dst: int = DST) -> bytes:
    return tcp.header(src, dst, sport, dport, seq, ack, flags, wnd, options, payload) + payload


def parse(data: bytes, src: int = SRC, dst: int = DST) -> Segment | str:
    return tcp.parse(memoryview(data), src, dst)


def ok(data: bytes) -> Segment:
    seg = parse(data)
    assert isinstance(seg, Segment), seg
    return seg


def raw_header(options: bytes, payload: bytes = b"", offset_words: int | None = None,
               sport: int = 40000, dport: int = 80, flags: int = tcp.ACK) -> bytes:
    """A header with arbitrary (maybe unpadded, maybe lying) option bytes and a good checksum."""
    words = offset_words if offset_words is not None else (20 + len(options) + 3) // 4
    opts = options + b"\0" * (max(words * 4 - 20, 0) - len(options))
    hdr = bytearray(struct.pack("!HHIIBBHHH", sport, dport, 1, 2, (words & 0xF) << 4, flags,
                                1000, 0, 0) + opts)
    body = bytes(hdr) + payload
    pseudo = checksum.pseudo_header_sum(SRC, DST, PROTO_TCP, len(body))
    struct.pack_into("!H", hdr, 16, checksum.checksum(body, pseudo))
    return bytes(hdr) + payload


# -- fixed header -----------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"x", b"hello world", bytes(range(256)) * 6])
@pytest.mark.parametrize("flags", [tcp.SYN, tcp.SYN | tcp.ACK, tcp.ACK, tcp.FIN | tcp.ACK,
                                   tcp.RST, tcp.RST | tcp.ACK, tcp.PSH | tcp.ACK, 0xFF])
def test_header_round_trip(payload: bytes, flags: int) -> None:
    data = build(0xDEADBEEF, 0x01020304, flags, 0xFFFF, b"", payload, 1234, 65535)
    seg = ok(data)
    assert (seg.sport, seg.dport, seg.seq, seg.ack, seg.flags, seg.wnd) == (
        1234, 65535, 0xDEADBEEF, 0x01020304, flags, 0xFFFF)
    assert bytes(seg.payload) == payload
    assert seg.mss is None and seg.wscale is None and not seg.sack_ok
    assert seg.ts is None and seg.sack == []
    # SEG.LEN counts SYN and FIN (RFC 9293 §3.4)
    assert seg.seg_len == len(payload) + bool(flags & tcp.SYN) + bool(flags & tcp.FIN)


def test_header_layout_matches_rfc_figure() -> None:
    data = build(seq=7, ack=9, flags=tcp.SYN | tcp.ACK, wnd=512, sport=1, dport=2,
                 options=tcp.build_options(mss=1460))
    assert data[0:2] == b"\x00\x01" and data[2:4] == b"\x00\x02"
    assert data[4:8] == (7).to_bytes(4, "big") and data[8:12] == (9).to_bytes(4, "big")
    assert data[12] >> 4 == 6  # data offset in 32-bit words: 20 + 4 bytes of options
    assert data[13] == 0x12 and data[14:16] == b"\x02\x00"
    assert data[18:20] == b"\x00\x00"  # urgent pointer
    assert checksum.checksum(data, checksum.pseudo_header_sum(SRC, DST, PROTO_TCP,
                                                              len(data))) == 0


# -- options: round trips -----------------------------------------------------------------


@pytest.mark.parametrize("mss", [0, 1, 536, 1460, 8960, 0xFFFF])
def test_mss_round_trip(mss: int) -> None:
    opts = tcp.build_options(mss=mss)
    assert len(opts) == 4
    assert ok(build(flags=tcp.SYN, options=opts)).mss == mss


@pytest.mark.parametrize("shift", range(15))
def test_window_scale_round_trip(shift: int) -> None:
    opts = tcp.build_options(wscale=shift)
    assert len(opts) % 4 == 0
    assert ok(build(flags=tcp.SYN, options=opts)).wscale == shift


@pytest.mark.parametrize("shift", [15, 16, 30, 255])
def test_window_scale_above_14_is_taken_as_14(shift: int) -> None:
    """RFC 7323 §2.3: a shift.cnt above 14 MUST be used as 14."""
    opts = bytes([tcp.OPT_NOP, tcp.OPT_WSCALE, 3, shift])
    assert ok(build(flags=tcp.SYN, options=opts)).wscale == 14


def test_sack_permitted_round_trip() -> None:
    opts = tcp.build_options(sack_ok=True)
    assert len(opts) == 4
    seg = ok(build(flags=tcp.SYN, options=opts))
    assert seg.sack_ok and seg.ts is None


@pytest.mark.parametrize("ts", [(0, 0), (1, 2), (0xFFFFFFFF, 0x80000000), (123456789, 0)])
def test_timestamps_round_trip(ts: tuple[int, int]) -> None:
    opts = tcp.build_options(ts=ts)
    assert len(opts) == tcp.TS_OPTION_LEN
    assert ok(build(options=opts)).ts == ts


def test_syn_options_all_together() -> None:
    opts = tcp.build_options(mss=1460, wscale=7, sack_ok=True, ts=(11, 0))
    assert len(opts) <= 40 and len(opts) % 4 == 0
    seg = ok(build(flags=tcp.SYN, options=opts))
    assert (seg.mss, seg.wscale, seg.sack_ok, seg.ts) == (1460, 7, True, (11, 0))
    # and without timestamps the SACK-permitted option still comes through
    seg = ok(build(flags=tcp.SYN, options=tcp.build_options(mss=536, wscale=0, sack_ok=True)))
    assert (seg.mss, seg.wscale, seg.sack_ok, seg.ts) == (536, 0, True, None)


BLOCKS = [(1000, 2000), (3000, 4000), (0xFFFFFF00, 0x00000100), (5, 6)]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_sack_blocks_round_trip(n: int) -> None:
    blocks = BLOCKS[:n]
    opts = tcp.build_options(sack=blocks)
    assert len(opts) <= 40 and len(opts) % 4 == 0
    assert ok(build(options=opts)).sack == blocks


@pytest.mark.parametrize("n", [1, 2, 3])
def test_sack_blocks_with_timestamps_fit(n: int) -> None:
    """RFC 2018 §3: with timestamps (10+2 bytes) at most three blocks fit in 40 bytes."""
    opts = tcp.build_options(ts=(5, 6), sack=BLOCKS[:n])
    assert len(opts) <= 40
    seg = ok(build(options=opts, payload=b"data"))
    assert seg.ts == (5, 6) and seg.sack == BLOCKS[:n] and bytes(seg.payload) == b"data"


def test_unknown_option_is_skipped_by_its_length() -> None:
    opts = bytes([99, 6, 1, 2, 3, 4]) + tcp.build_options(mss=1400)[:4] + bytes([tcp.OPT_NOP] * 2)
    seg = ok(raw_header(opts, b"pay"))
    assert seg.mss == 1400 and bytes(seg.payload) == b"pay"


def test_end_of_option_list_stops_parsing() -> None:
    opts = bytes([tcp.OPT_EOL]) + b"\x02\x04\x05\xb4" + b"\0" * 3  # an MSS after EOL is padding
    seg = ok(raw_header(opts))
    assert seg.mss is None


def test_wrong_length_known_options_are_not_taken() -> None:
    # MSS with length 3, window scale with length 4, TS with length 8: well formed TLVs, so
    # the segment is kept, but none is read as the option it claims to be.
    opts = bytes([tcp.OPT_MSS, 3, 5, tcp.OPT_WSCALE, 4, 7, 0, tcp.OPT_TS, 8]) + bytes(6)
    seg = parse(raw_header(opts))
    if isinstance(seg, Segment):
        assert seg.mss is None and seg.wscale is None and seg.ts is None
    else:
        assert seg == "tcp.bad_option"


# -- hostile options ----------------------------------------------------------------------


@pytest.mark.parametrize("opts", [
    pytest.param(bytes([tcp.OPT_MSS, 0, 0, 0]), id="length-0"),
    pytest.param(bytes([tcp.OPT_MSS, 1, 0, 0]), id="length-1"),
    pytest.param(bytes([99, 0, 0, 0]), id="unknown-length-0"),
    pytest.param(bytes([tcp.OPT_NOP, tcp.OPT_NOP, 99, 1]), id="unknown-length-1"),
    pytest.param(bytes([tcp.OPT_NOP, tcp.OPT_NOP, tcp.OPT_TS, 10]), id="ts-runs-past-header"),
    pytest.param(bytes([tcp.OPT_MSS, 4, 5, 0xB4, 99, 40, 0, 0]), id="unknown-runs-past-header"),
    pytest.param(bytes([tcp.OPT_NOP, tcp.OPT_NOP, tcp.OPT_NOP, tcp.OPT_SACK]),
                 id="kind-without-length"),
    pytest.param(bytes([tcp.OPT_NOP, tcp.OPT_NOP, tcp.OPT_SACK, 34]) + bytes(28),
                 id="sack-runs-past-header"),
])
def test_hostile_options_are_refused(opts: bytes) -> None:
    """RFC 9293 §3.1 (MUST-7): be prepared for illegal option lengths; here: refuse."""
    assert len(opts) % 4 == 0
    assert parse(raw_header(opts, b"payload")) == "tcp.bad_option"


def test_option_length_running_into_payload_is_refused() -> None:
    # The option claims 12 bytes, but the header ends after 4: the rest is payload, not option.
    data = raw_header(bytes([tcp.OPT_TS, 12, 0, 0]), b"\0" * 8)
    assert parse(data) == "tcp.bad_option"


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 19])
def test_short(n: int) -> None:
    assert parse(build()[:n]) == "tcp.short"


@pytest.mark.parametrize("words", [0, 1, 4])
def test_data_offset_below_five_words(words: int) -> None:
    assert parse(raw_header(b"", b"x" * 40, offset_words=words)) == "tcp.bad_offset"


def test_data_offset_past_the_segment() -> None:
    # offset 15 words = 60 bytes, but only 24 bytes are there
    data = bytearray(raw_header(bytes([1, 1, 1, 1])))
    data[12] = 0xF0
    assert parse(bytes(data)) == "tcp.bad_offset"


def test_truncated_segment_fails_checksum_or_offset() -> None:
    data = build(options=tcp.build_options(ts=(1, 2)), payload=b"0123456789")
    assert parse(data[:-1]) == "tcp.bad_checksum"
    assert parse(data[:25]) == "tcp.bad_offset"


@pytest.mark.parametrize("where", [0, 4, 13, 16, 20, 33])
def test_bad_checksum(where: int) -> None:
    data = bytearray(build(options=tcp.build_options(ts=(1, 2)), payload=b"abcd"))
    data[where] ^= 0x40
    assert parse(bytes(data)) == "tcp.bad_checksum"


def test_checksum_covers_pseudo_header() -> None:
    data = build(payload=b"odd")
    assert isinstance(parse(data), Segment)
    assert parse(data, dst=0x0A000003) == "tcp.bad_checksum"
    assert parse(data, src=0x0B000001) == "tcp.bad_checksum"


@pytest.mark.parametrize("payload", [b"", b"a", b"ab", b"abc", bytes(1461)])
def test_checksum_odd_and_even_payloads(payload: bytes) -> None:
    data = build(payload=payload, options=tcp.build_options(sack=[(1, 2)]))
    assert bytes(ok(data).payload) == payload


@pytest.mark.parametrize(("sport", "dport"), [(0, 80), (40000, 0), (0, 0)])
def test_port_zero(sport: int, dport: int) -> None:
    assert parse(build(sport=sport, dport=dport)) == "tcp.port_zero"


# -- properties ---------------------------------------------------------------------------------


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=120), st.integers(0, MOD - 1), st.integers(0, MOD - 1))
def test_arbitrary_bytes_never_raise(data: bytes, src: int, dst: int) -> None:
    got = tcp.parse(memoryview(data), src, dst)
    assert isinstance(got, Segment) or got in REASONS


@settings(max_examples=1500, deadline=None)
@given(st.binary(min_size=20, max_size=100), st.integers(5, 15))
def test_arbitrary_headers_with_good_checksum_never_raise(data: bytes, words: int) -> None:
    """Past the checksum: the option walk sees every byte pattern."""
    b = bytearray(data)
    b[12] = (words << 4) | (b[12] & 0x0F)
    b[16:18] = b"\0\0"
    pseudo = checksum.pseudo_header_sum(SRC, DST, PROTO_TCP, len(b))
    struct.pack_into("!H", b, 16, checksum.checksum(bytes(b), pseudo))
    got = parse(bytes(b))
    assert isinstance(got, Segment) or got in REASONS
    if isinstance(got, Segment):
        assert got.wscale is None or 0 <= got.wscale <= 14
        assert len(got.sack) <= 4
        assert bytes(got.payload) == bytes(b[words * 4:])


@settings(max_examples=500, deadline=None)
@given(
    st.integers(1, 0xFFFF), st.integers(1, 0xFFFF), st.integers(0, MOD - 1),
    st.integers(0, MOD - 1), st.integers(0, 0xFF), st.integers(0, 0xFFFF),
    st.one_of(st.none(), st.integers(0, 0xFFFF)), st.one_of(st.none(), st.integers(0, 14)),
    st.booleans(), st.one_of(st.none(), st.tuples(st.integers(0, MOD - 1),
                                                  st.integers(0, MOD - 1))),
    st.binary(max_size=64),
)
def test_build_parse_round_trip(sport: int, dport: int, seq: int, ack: int, flags: int,
                                wnd: int, mss: int | None, ws: int | None, sack_ok: bool,
                                ts: tuple[int, int] | None, payload: bytes) -> None:
    opts = tcp.build_options(mss=mss, wscale=ws, sack_ok=sack_ok, ts=ts)
    seg = ok(build(seq, ack, flags, wnd, opts, payload, sport, dport))
    assert (seg.sport, seg.dport, seg.seq, seg.ack, seg.flags, seg.wnd) == (
        sport, dport, seq, ack, flags, wnd)
    assert (seg.mss, seg.wscale, seg.sack_ok, seg.ts) == (mss, ws, sack_ok, ts)
    assert bytes(seg.payload) == payload


# -- sequence arithmetic (RFC 9293 §3.4) ---------------------------------------------------


def test_seq_compare_around_the_wrap() -> None:
    top = 0xFFFFFFFF
    assert seq_lt(top, 0) and not seq_lt(0, top)
    assert seq_lt(top - 10, 5) and not seq_lt(5, top - 10)
    assert seq_le(top, 0) and seq_le(0, 0) and not seq_le(1, 0)
    assert not seq_lt(7, 7) and seq_le(7, 7)
    assert seq_lt(0x7FFFFFFF, 0x80000000)
    assert seq_lt(0xC0000000, 0x3FFFFFFF) and not seq_lt(0x3FFFFFFF, 0xC0000000)


def test_seq_add_and_diff_around_the_wrap() -> None:
    assert seq_add(0xFFFFFFFF, 1) == 0
    assert seq_add(0xFFFFF000, 0x2000) == 0x1000
    assert seq_add(5, -10) == 0xFFFFFFFB
    assert seq_add(0, MOD) == 0
    assert seq_diff(0, 0xFFFFFFFF) == 1
    assert seq_diff(0xFFFFFFFF, 0) == -1
    assert seq_diff(0x1000, 0xFFFFF000) == 0x2000
    assert seq_diff(0xFFFFF000, 0x1000) == -0x2000
    assert seq_diff(123, 123) == 0


@settings(max_examples=2000)
@given(st.integers(0, MOD - 1), st.integers(1, (1 << 31) - 1))
def test_seq_order_is_circular(a: int, n: int) -> None:
    b = seq_add(a, n)
    assert seq_lt(a, b) and seq_le(a, b)
    assert not seq_lt(b, a) and not seq_le(b, a)
    assert seq_diff(b, a) == n and seq_diff(a, b) == -n
    assert seq_add(b, -n) == a


@settings(max_examples=2000)
@given(st.integers(0, MOD - 1), st.integers(0, MOD - 1))
def test_seq_diff_inverts_add(a: int, b: int) -> None:
    d = seq_diff(b, a)
    assert -(1 << 31) <= d < (1 << 31)
    assert seq_add(a, d) == b
    if d != -(1 << 31):  # exactly 2**31 apart, the order is undefined (RFC 1982 §3.2)
        assert seq_lt(a, b) == (d > 0)
        assert seq_le(a, b) == (d >= 0)

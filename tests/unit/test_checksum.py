"""The Internet checksum (RFC 1071) against a plain word-by-word reference."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hilkit.port import checksum


def ref_ones_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 §4.1 as written: add 16-bit words, fold the carries back in."""
    if len(data) % 2:
        data += b"\0"
    total = initial
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ref_checksum(data: bytes, initial: int = 0) -> int:
    return ~ref_ones_sum(data, initial) & 0xFFFF


def ref_pseudo(src: int, dst: int, proto: int, length: int) -> int:
    words = struct.pack("!IIBBH", src, dst, 0, proto, length)
    return sum(struct.unpack("!6H", words))


initials = st.one_of(st.just(0), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFF))
buffers = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=1, max_size=2000),
    st.builds(lambda n, b: bytes([b]) * n, st.integers(0, 300), st.sampled_from([0, 0xFF])),
)


@given(buffers, initials)
def test_ones_sum_matches_reference(data: bytes, initial: int) -> None:
    assert checksum.ones_sum(data, initial) == ref_ones_sum(data, initial)
    assert checksum.checksum(data, initial) == ref_checksum(data, initial)


@given(buffers, initials)
def test_buffer_types_agree(data: bytes, initial: int) -> None:
    want = ref_ones_sum(data, initial)
    assert checksum.ones_sum(bytearray(data), initial) == want
    assert checksum.ones_sum(memoryview(data), initial) == want
    padded = b"\x55" + data + b"\xaa"
    assert checksum.ones_sum(memoryview(padded)[1:-1], initial) == want


@given(st.binary(max_size=200), st.binary(max_size=200), initials)
def test_sum_is_associative_over_even_splits(a: bytes, b: bytes, initial: int) -> None:
    """RFC 1071 §2(B): a sum can be computed in pieces (at even boundaries)."""
    if len(a) % 2:
        a += b"\0"
    split = checksum.ones_sum(b, checksum.ones_sum(a, initial))
    whole = checksum.ones_sum(a + b, initial)
    assert split % 0xFFFF == whole % 0xFFFF
    assert (split == 0) == (whole == 0)


def test_rfc1071_example() -> None:
    """RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2."""
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert checksum.ones_sum(data) == 0xDDF2 == ref_ones_sum(data)
    assert checksum.checksum(data) == 0x220D


def test_known_ipv4_header() -> None:
    """A textbook IPv4 header (192.168.0.1 -> 192.168.0.199, UDP): checksum 0xb861."""
    hdr = bytearray.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert checksum.checksum(hdr) == 0xB861
    struct.pack_into("!H", hdr, 10, 0xB861)
    assert checksum.verify(hdr)


@pytest.mark.parametrize(
    ("data", "want"),
    [
        (b"", 0),
        (b"\0", 0),
        (b"\0\0\0\0", 0),
        (b"\xff\xff", 0xFFFF),
        (b"\xff\xff\xff\xff", 0xFFFF),
        (b"\x01", 0x0100),  # an odd byte is the high half of a word
        (b"\x12\x34\x56", 0x1234 + 0x5600),
        (b"\x80\x00\x80\x00", 0x0001),  # the carry comes back around
    ],
)
def test_small_vectors(data: bytes, want: int) -> None:
    assert checksum.ones_sum(data) == want == ref_ones_sum(data)


def test_initial_alone() -> None:
    assert checksum.ones_sum(b"", 0x1FFFE) == 0xFFFF
    assert checksum.ones_sum(b"", 0x10000) == 1
    assert checksum.ones_sum(b"\0\0", 0) == 0


@given(st.binary(max_size=1500), st.integers(0, 1500), initials)
def test_verify_after_inserting_checksum(body: bytes, where: int, initial: int) -> None:
    """Zero a 16-bit field at an even offset, fill in the checksum: the buffer verifies."""
    buf = bytearray(body)
    off = min(where, len(buf)) & ~1
    buf[off:off + 2] = b"\0\0"
    c = checksum.checksum(buf, initial)
    struct.pack_into("!H", buf, off, c)
    assert checksum.verify(buf, initial)
    assert checksum.verify(memoryview(bytes(buf)), initial)
    assert ref_ones_sum(bytes(buf), initial) == 0xFFFF


@given(st.binary(min_size=4, max_size=600), st.integers(0, 599), st.integers(1, 0xFFFF))
def test_verify_detects_a_changed_word(body: bytes, where: int, delta: int) -> None:
    """Any single 16-bit word changed by a non-multiple of 0xFFFF breaks verification."""
    buf = bytearray(body if len(body) % 2 == 0 else body + b"\0")
    buf[0:2] = b"\0\0"
    struct.pack_into("!H", buf, 0, checksum.checksum(buf))
    off = (where % len(buf)) & ~1
    old = struct.unpack_from("!H", buf, off)[0]
    new = (old + delta) & 0xFFFF
    if new % 0xFFFF == old % 0xFFFF:  # 0x0000 <-> 0xFFFF: the famous blind spot
        return
    struct.pack_into("!H", buf, off, new)
    assert not checksum.verify(buf)


@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 255),
       st.integers(0, 0xFFFF))
def test_pseudo_header_sum(src: int, dst: int, proto: int, length: int) -> None:
    got = checksum.pseudo_header_sum(src, dst, proto, length)
    assert got == ref_pseudo(src, dst, proto, length)
    payload = struct.pack("!IIBBH", src, dst, 0, proto, length)
    assert checksum.ones_sum(b"", got) == ref_ones_sum(payload)


@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.binary(max_size=300))
def test_udp_style_checksum_with_pseudo_header(src: int, dst: int, payload: bytes) -> None:
    length = 8 + len(payload)
    seg = bytearray(struct.pack("!HHHH", 1234, 7, length, 0) + payload)
    pseudo = checksum.pseudo_header_sum(src, dst, 17, length)
    c = checksum.checksum(seg, pseudo)
    assert c == ref_checksum(struct.pack("!IIBBH", src, dst, 0, 17, length) + bytes(seg))
    struct.pack_into("!H", seg, 6, c)
    assert checksum.verify(seg, pseudo)

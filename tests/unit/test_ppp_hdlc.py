"""RFC 1662 framing: FCS, escaping, compression, aborts, noise, chunking, and a fuzz corpus."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hilkit.drivers.ppp import proto
from hilkit.drivers.ppp.hdlc import (
    DECODER_STATS,
    DEFAULT_MAX_FRAME,
    FCS16_GOOD,
    FCS16_INIT,
    FCS16_TABLE,
    FCS32_GOOD,
    FCS32_INIT,
    FCS32_TABLE,
    FrameDecoder,
    FrameEncoder,
    fcs16,
    fcs32,
    fcs_by_table,
)

SEED = 1662


def fcs16_trailer(data: bytes) -> bytes:
    return (fcs_by_table(FCS16_TABLE, data, FCS16_INIT) ^ 0xFFFF).to_bytes(2, "little")


def escape_all(data: bytes, accm: int = 0xFFFFFFFF) -> bytes:
    """Escaping written the slow, obvious way, to hold the encoder to."""
    out = bytearray()
    for c in data:
        if c in (0x7D, 0x7E) or (c < 32 and accm >> c & 1):
            out += bytes((0x7D, c ^ 0x20))
        else:
            out.append(c)
    return bytes(out)


# --- FCS -----------------------------------------------------------------------------


def test_fcs16_table_values_from_the_rfc_step() -> None:
    assert FCS16_TABLE[0] == 0
    assert FCS16_TABLE[1] == 0x1189
    assert FCS16_TABLE[0x80] == 0x8408
    assert FCS32_TABLE[0x80] == 0xEDB88320


def test_fcs_check_values() -> None:
    # The catalogue check values of CRC-16/X-25 and CRC-32 over "123456789".
    assert fcs16(b"123456789") ^ 0xFFFF == 0x906E
    assert fcs32(b"123456789") ^ 0xFFFFFFFF == 0xCBF43926


def test_fast_fcs_equals_the_table_step() -> None:
    rnd = random.Random(SEED)
    for _ in range(200):
        data = rnd.randbytes(rnd.randrange(0, 300))
        init16 = rnd.randrange(0x10000)
        init32 = rnd.randrange(0x100000000)
        assert fcs16(data, init16) == fcs_by_table(FCS16_TABLE, data, init16)
        assert fcs32(data, init32) == fcs_by_table(FCS32_TABLE, data, init32)
        assert fcs16(memoryview(data)) == fcs16(bytearray(data)) == fcs16(data)


def test_good_residues() -> None:
    rnd = random.Random(SEED + 1)
    for _ in range(50):
        data = rnd.randbytes(rnd.randrange(1, 100))
        t16 = (fcs16(data) ^ 0xFFFF).to_bytes(2, "little")
        t32 = (fcs32(data) ^ 0xFFFFFFFF).to_bytes(4, "little")
        assert fcs16(data + t16) == FCS16_GOOD
        assert fcs32(data + t32) == FCS32_GOOD
        assert fcs16(data, FCS16_INIT) == fcs16(data[1:], fcs16(data[:1]))  # incremental


# --- encoder -------------------------------------------------------------------------


def test_hand_made_lcp_frame() -> None:
    info = bytes.fromhex("01010004")  # Configure-Request, id 1, no options
    body = b"\xff\x03\xc0\x21" + info
    expected = b"\x7e" + escape_all(body + fcs16_trailer(body)) + b"\x7e"
    frame = FrameEncoder().encode(proto.PPP_LCP, info)
    assert frame == expected
    assert frame.startswith(bytes.fromhex("7e ff 7d 23 c0 21 7d 21 7d 21 7d 20 7d 24"))


def test_every_control_char_escaped_under_default_accm() -> None:
    info = bytes(range(256))
    frame = FrameEncoder().encode(proto.PPP_IP, info)
    inner = frame[1:-1]
    assert 0x7E not in inner
    assert not any(c < 0x20 for c in inner)
    body = b"\xff\x03\x00\x21" + info
    assert inner == escape_all(body + fcs16_trailer(body))
    assert FrameDecoder().feed(frame) == [(proto.PPP_IP, info)]


def test_accm_zero_escapes_only_flag_and_escape() -> None:
    info = bytes(range(256))
    enc = FrameEncoder(tx_accm=0)
    frame = enc.encode(proto.PPP_IP, info)
    body = b"\xff\x03\x00\x21" + info
    assert frame[1:-1] == escape_all(body + fcs16_trailer(body), accm=0)
    assert sum(c < 0x20 for c in frame) >= 30  # sent raw
    dec = FrameDecoder(rx_accm=0)
    assert dec.feed(frame) == [(proto.PPP_IP, info)]
    # A receiver that still expects every control escaped drops them and fails the FCS.
    strict = FrameDecoder()
    assert strict.feed(frame) == []
    assert strict.stats["bad_fcs"] == 1


def test_partial_accm() -> None:
    accm = (1 << 0x11) | (1 << 0x13)  # XON/XOFF only
    info = bytes(range(32))
    frame = FrameEncoder(tx_accm=accm).encode(proto.PPP_IP, info)
    assert b"\x11" not in frame and b"\x13" not in frame
    assert b"\x7d\x31" in frame and b"\x7d\x33" in frame and b"\x12" in frame
    assert FrameDecoder(rx_accm=accm).feed(frame) == [(proto.PPP_IP, info)]


def test_acfc_pfc_on_transmit() -> None:
    enc = FrameEncoder(tx_accm=0, acfc=True, pfc=True)
    frame = enc.encode(proto.PPP_IP, b"abc")
    body = b"\x21abc"
    assert frame == b"\x7e" + escape_all(body + fcs16_trailer(body), 0) + b"\x7e"
    frame = enc.encode(proto.PPP_IPCP, b"abc")  # >= 0x100: never one octet
    assert frame[1:3] == b"\x80\x21"
    enc.acfc = False
    assert enc.encode(proto.PPP_IP, b"abc")[1:4] == b"\xff\x03\x21"
    enc.acfc, enc.pfc = True, False
    assert enc.encode(proto.PPP_IP, b"abc")[1:3] == b"\x00\x21"


def test_lcp_ignores_negotiated_state() -> None:
    enc = FrameEncoder(tx_accm=0, acfc=True, pfc=True)
    info = bytes(range(8))
    frame = enc.encode(proto.PPP_LCP, info)
    assert frame == FrameEncoder().encode(proto.PPP_LCP, info)
    assert frame[1:6] == b"\xff\x7d\x23\xc0\x21"


def test_fcs32_round_trip_and_mismatch() -> None:
    enc = FrameEncoder(fcs32=True)
    frame = enc.encode(proto.PPP_IP, b"hello")
    body = b"\xff\x03\x00\x21hello"
    trailer = (fcs_by_table(FCS32_TABLE, body, FCS32_INIT) ^ 0xFFFFFFFF).to_bytes(4, "little")
    assert frame == b"\x7e" + escape_all(body + trailer) + b"\x7e"
    assert FrameDecoder(fcs32=True).feed(frame) == [(proto.PPP_IP, b"hello")]
    dec16 = FrameDecoder()
    assert dec16.feed(frame) == []
    assert dec16.stats["bad_fcs"] == 1


def test_share_flags() -> None:
    enc = FrameEncoder(share_flags=True)
    a = enc.encode(proto.PPP_IP, b"a")
    b = enc.encode(proto.PPP_IP, b"b")
    assert a[0] == 0x7E and b[0] != 0x7E and b[-1] == 0x7E
    enc.line_idle()
    c = enc.encode(proto.PPP_IP, b"c")
    assert c[0] == 0x7E
    assert FrameDecoder().feed(a + b + c) == [(0x21, b"a"), (0x21, b"b"), (0x21, b"c")]
    plain = FrameEncoder()
    assert plain.encode(0x21, b"a")[0] == plain.encode(0x21, b"b")[0] == 0x7E


def test_encoder_refuses_bad_protocol_and_counts() -> None:
    enc = FrameEncoder()
    with pytest.raises(ValueError):
        enc.encode(0x10000, b"")
    enc.encode(0x21, b"\x7e")
    assert enc.stats["frames"] == 1 and enc.stats["escaped"] >= 1


# --- decoder -------------------------------------------------------------------------


def raw_frame(body: bytes, accm: int = 0xFFFFFFFF) -> bytes:
    return b"\x7e" + escape_all(body + fcs16_trailer(body), accm) + b"\x7e"


def test_decoder_accepts_compressed_and_full_fields() -> None:
    dec = FrameDecoder()
    stream = (
        raw_frame(b"\xff\x03\x00\x21one")  # full
        + raw_frame(b"\x00\x21two")  # ACFC
        + raw_frame(b"\xff\x03\x21three")  # PFC
        + raw_frame(b"\x21four")  # both
        + raw_frame(b"\xff\x03\xc0\x21five")
    )
    assert dec.feed(stream) == [
        (0x21, b"one"), (0x21, b"two"), (0x21, b"three"), (0x21, b"four"), (0xC021, b"five"),
    ]
    assert dec.stats["frames"] == 5


def test_decoder_refusals_are_counted() -> None:
    dec = FrameDecoder()
    cases = {
        "too_short": raw_frame(b"\x21"),  # 3 octets with FCS
        "bad_address_control": raw_frame(b"\xff\x13\x00\x21x"),
        "bad_protocol": raw_frame(b"\xff\x03\x00\x20x"),  # last protocol octet even
    }
    for key, frame in cases.items():
        assert dec.feed(frame) == []
        assert dec.stats[key] == 1, key
    assert dec.feed(raw_frame(b"\xff\x03\x00")) == []  # two-octet protocol cut short
    assert dec.stats["too_short"] == 2
    assert dec.feed(b"\x7e\x01\x02\x03\x04\x05\x7e") == []
    assert dec.stats["bad_fcs"] == 0  # control chars dropped: nothing left
    assert dec.feed(b"\x7e\x41\x42\x43\x44\x45\x7e") == []
    assert dec.stats["bad_fcs"] == 1
    assert set(dec.stats) == set(DECODER_STATS)


def test_back_to_back_flags_are_not_frames() -> None:
    dec = FrameDecoder()
    assert dec.feed(b"\x7e" * 50) == []
    assert all(v == 0 for k, v in dec.stats.items() if k != "bytes_in")
    frame = raw_frame(b"\xff\x03\x00\x21x")
    assert dec.feed(b"\x7e\x7e" + frame + b"\x7e\x7e\x7e" + frame) == [(0x21, b"x")] * 2


def test_abort_sequence() -> None:
    dec = FrameDecoder()
    good = raw_frame(b"\xff\x03\x00\x21ok")
    assert dec.feed(b"\x7e\xff\x7d\x23\x00\x21part\x7d\x7e" + good) == [(0x21, b"ok")]
    assert dec.stats["aborts"] == 1
    # split between the escape and the flag
    assert dec.feed(b"\x7e\xff\x7d\x23\x00\x21part\x7d") == []
    assert dec.feed(b"\x7e" + good[1:]) == [(0x21, b"ok")]
    assert dec.stats["aborts"] == 2


def test_escape_split_across_feeds() -> None:
    frame = FrameEncoder().encode(0x21, b"\x7d\x7e\x00\x5d")
    for cut in range(1, len(frame)):
        dec = FrameDecoder()
        got = dec.feed(frame[:cut]) + dec.feed(frame[cut:])
        assert got == [(0x21, b"\x7d\x7e\x00\x5d")], cut
    # an escape of 0x5D (7D 7D) must not be taken for two escapes
    body = b"\xff\x03\x00\x21\x5d\x5d"
    head = b"\xff\x7d\x23\x7d\x20\x21\x7d\x7d\x7d\x7d"
    wire = b"\x7e" + head + escape_all(fcs16_trailer(body)) + b"\x7e"
    assert FrameDecoder().feed(wire) == [(0x21, b"\x5d\x5d")]


def test_line_inserted_control_chars_dropped() -> None:
    frame = FrameEncoder().encode(0x21, bytes(range(40)))
    noisy = frame[:10] + b"\x11\x13" + frame[10:20] + b"\x00" + frame[20:]
    dec = FrameDecoder()
    assert dec.feed(noisy) == [(0x21, bytes(range(40)))]
    assert dec.stats["dropped_ctrl_bytes"] == 3
    # between an escape and the octet it escapes, too (dropped before unescaping)
    i = frame.index(b"\x7d", 5)
    noisy = frame[: i + 1] + b"\x13" + frame[i + 1 :]
    assert FrameDecoder().feed(noisy) == [(0x21, bytes(range(40)))]
    # not in our ACCM: kept, and then the FCS fails
    dec = FrameDecoder(rx_accm=0)
    frame0 = FrameEncoder(tx_accm=0).encode(0x21, b"abcdef")
    assert dec.feed(frame0[:4] + b"\x11" + frame0[4:]) == []
    assert dec.stats["bad_fcs"] == 1
    assert dec.feed(frame0) == [(0x21, b"abcdef")]


def test_garbage_and_noise_between_frames() -> None:
    rnd = random.Random(SEED + 2)
    enc = FrameEncoder()
    infos = [rnd.randbytes(rnd.randrange(0, 200)) for _ in range(50)]
    stream = bytearray(rnd.randbytes(30).replace(b"\x7e", b""))  # noise before any flag
    for info in infos:
        stream += enc.encode(0x21, info)
        noise = rnd.randbytes(rnd.randrange(0, 20))
        stream += noise + b"\x7e" if noise else b""
    dec = FrameDecoder()
    got = dec.feed(bytes(stream))
    # noise frames could pass an FCS only with odds 2**-16 each: none in this seed
    assert got == [(0x21, info) for info in infos]
    assert dec.stats["frames"] == 50


def test_too_long_is_dropped_and_bounded() -> None:
    dec = FrameDecoder(max_frame=100)
    enc = FrameEncoder()
    big = enc.encode(0x21, bytes(200))
    ok = enc.encode(0x21, bytes(96))  # 2 + 2 + 96 + 2 = 102 > 100
    fits = enc.encode(0x21, bytes(94))
    assert dec.feed(big + ok + fits) == [(0x21, bytes(94))]
    assert dec.stats["too_long"] == 2
    for chunk in [big[i : i + 7] for i in range(0, len(big), 7)]:
        dec.feed(chunk)
        assert dec.buffered <= 100
    assert dec.feed(fits) == [(0x21, bytes(94))]
    assert dec.stats["too_long"] == 3
    # an endless frame: memory stays bounded, the next flag recovers
    for _ in range(100):
        dec.feed(b"\x41" * 999)
        assert dec.buffered <= 100
    assert dec.feed(b"\x7e" + fits) == [(0x21, bytes(94))]
    assert dec.stats["too_long"] == 4


def test_default_max_frame_takes_an_mru_1500_frame_with_fcs32() -> None:
    info = bytes(range(256)) * 5 + bytes(220)
    assert len(info) == 1500
    dec = FrameDecoder(fcs32=True)
    assert dec.max_frame == DEFAULT_MAX_FRAME == 1508
    assert dec.feed(FrameEncoder(fcs32=True).encode(0x21, info)) == [(0x21, info)]


def test_feed_accepts_any_buffer_and_empty() -> None:
    frame = FrameEncoder().encode(0x21, b"x")
    dec = FrameDecoder()
    assert dec.feed(b"") == []
    assert dec.feed(bytearray(frame)) == [(0x21, b"x")]
    assert dec.feed(memoryview(frame)) == [(0x21, b"x")]
    dec.feed(frame[:5])
    dec.reset()
    assert dec.buffered == 0
    assert dec.stats["bytes_in"] == 2 * len(frame) + 5


def _stream(rnd: random.Random, n: int) -> tuple[bytes, list[tuple[int, bytes]], int]:
    """Frames as one stream, the frames, and the ACCM the receiver must use."""
    accm = rnd.choice([0, 0xFFFFFFFF, 0x000A0000])
    enc = FrameEncoder(tx_accm=accm,
                       acfc=rnd.random() < 0.5, pfc=rnd.random() < 0.5,
                       share_flags=rnd.random() < 0.5)
    frames = []
    for _ in range(n):
        p = rnd.choice([proto.PPP_IP, proto.PPP_LCP, proto.PPP_IPCP, proto.PPP_VJC, 0x3D])
        # at least a byte: with ACFC and PFC an empty one is 3 octets, under RFC 1662's
        # minimum of 4 (§4.3), and rightly dropped: the encoder property test covers it
        frames.append((p, rnd.randbytes(rnd.randrange(1, 300))))
    return b"".join(enc.encode(p, i) for p, i in frames), frames, accm


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cuts=st.lists(st.integers(0, 10_000), max_size=30))
def test_random_splits_give_the_same_frames(seed: int, cuts: list[int]) -> None:
    rnd = random.Random(seed)
    stream, frames, accm = _stream(rnd, rnd.randrange(1, 8))
    points = sorted({c % (len(stream) + 1) for c in cuts})
    dec = FrameDecoder(rx_accm=accm)
    got = []
    prev = 0
    for p in [*points, len(stream)]:
        got += dec.feed(stream[prev:p])
        prev = p
    assert got == frames
    assert dec.buffered == 0


@settings(max_examples=300, deadline=None)
@given(
    accm=st.integers(0, 0xFFFFFFFF), info=st.binary(max_size=200), protocol=st.sampled_from(
        [proto.PPP_IP, proto.PPP_IPV6, proto.PPP_VJC, proto.PPP_IPCP, proto.PPP_LCP, 0x3D]),
    acfc=st.booleans(), pfc=st.booleans(), use_fcs32=st.booleans(),
)
def test_encoder_matches_the_reference_and_round_trips(
    accm: int, info: bytes, protocol: int, acfc: bool, pfc: bool, use_fcs32: bool,
) -> None:
    enc = FrameEncoder(tx_accm=accm, acfc=acfc, pfc=pfc, fcs32=use_fcs32)
    frame = enc.encode(protocol, info)
    lcp = protocol == proto.PPP_LCP
    body = b"" if acfc and not lcp else b"\xff\x03"
    body += bytes([protocol]) if pfc and protocol < 0x100 else protocol.to_bytes(2, "big")
    body += info
    table, init, size = (FCS32_TABLE, FCS32_INIT, 4) if use_fcs32 else (FCS16_TABLE, FCS16_INIT, 2)
    trailer = (fcs_by_table(table, body, init) ^ (1 << 8 * size) - 1).to_bytes(size, "little")
    assert frame == b"\x7e" + escape_all(body + trailer, 0xFFFFFFFF if lcp else accm) + b"\x7e"
    dec = FrameDecoder(rx_accm=accm, fcs32=use_fcs32)
    if len(body) >= 2:
        assert dec.feed(frame) == [(protocol, info)]
    else:  # an empty packet with both compressions: under RFC 1662 §4.3's 4-octet minimum
        assert dec.feed(frame) == [] and dec.stats["too_short"] == 1


def test_byte_at_a_time() -> None:
    stream, frames, accm = _stream(random.Random(SEED + 3), 20)
    dec = FrameDecoder(rx_accm=accm)
    got = []
    for i in range(len(stream)):
        got += dec.feed(stream[i : i + 1])
    assert got == frames


# --- fuzz corpus ---------------------------------------------------------------------

FUZZ_STREAMS = 100_000


def _mutate(rnd: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randrange(1, 4)):
        op = rnd.randrange(6)
        if not b:
            b += rnd.randbytes(rnd.randrange(1, 20))
        elif op == 0:  # flip a bit
            i = rnd.randrange(len(b))
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 1:  # truncate
            del b[rnd.randrange(len(b)) :]
        elif op == 2:  # insert a flag, an escape or an abort
            i = rnd.randrange(len(b) + 1)
            b[i:i] = rnd.choice([b"\x7e", b"\x7d", b"\x7d\x7e", b"\x7e\x7e", b"\x7d\x7d"])
        elif op == 3:  # insert line noise (control characters)
            i = rnd.randrange(len(b) + 1)
            b[i:i] = bytes(rnd.randrange(32) for _ in range(rnd.randrange(1, 4)))
        elif op == 4:  # drop a slice
            i = rnd.randrange(len(b))
            del b[i : i + rnd.randrange(1, 16)]
        else:  # duplicate a slice
            i = rnd.randrange(len(b))
            b[i:i] = b[i : i + rnd.randrange(1, 64)]
    return bytes(b)


def test_fuzz_corpus_never_raises_and_stays_bounded() -> None:
    rnd = random.Random(SEED + 4)
    pool = []
    for _ in range(64):
        stream, _frames, _accm = _stream(rnd, rnd.randrange(1, 4))
        pool.append(stream)
    long_frame = FrameEncoder().encode(0x21, rnd.randbytes(3000))
    decoders = [
        FrameDecoder(),
        FrameDecoder(max_frame=64),
        FrameDecoder(rx_accm=0, fcs32=True),
        FrameDecoder(max_frame=300, rx_accm=0x000A0000),
    ]
    start = time.perf_counter()
    good = 0
    for i in range(FUZZ_STREAMS):
        kind = i % 4
        if kind == 0:
            data = rnd.randbytes(rnd.randrange(0, 80))
        elif kind == 1:
            data = _mutate(rnd, rnd.choice(pool))
        elif kind == 2:
            data = rnd.choice(pool)  # clean, possibly landing mid-garbage
        else:
            data = _mutate(rnd, long_frame) if i % 64 == 3 else _mutate(rnd, rnd.choice(pool))
        dec = decoders[(i >> 2) & 3]
        if i & 16:
            cut = rnd.randrange(len(data) + 1)
            frames = dec.feed(data[:cut]) + dec.feed(data[cut:])
        else:
            frames = dec.feed(data)
        good += len(frames)
        assert dec.buffered <= dec.max_frame
        for p, info in frames:
            assert 0 < p <= 0xFFFF and len(info) <= dec.max_frame
    elapsed = time.perf_counter() - start
    total = {k: sum(d.stats[k] for d in decoders) for k in DECODER_STATS}
    assert total["frames"] == good > 10_000
    for key in ("bad_fcs", "too_short", "too_long", "aborts", "dropped_ctrl_bytes"):
        assert total[key] > 0, key
    assert elapsed < 60  # generous: a wedged decoder, not a benchmark

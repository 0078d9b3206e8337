"""A transaction streamed in chunks (``ChipModel.stream_begin/stream/stream_end``)
equals the same transaction handed to ``transfer`` whole, for any split.

A bridge that reads MISO back while CS is still low (the FT232H's send-immediate,
docs/hardware/ft232h.md, "The FT232H model") streams; the chip cannot tell the
difference, so neither may the model: same replies, side effects, counters, bit
errors and scheduled resets. Opcodes and addresses are DS39662E Table 4-1 / 3-1.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence

import pytest

from hilkit.drivers.enc28j60.model import ENC28J60Faults, ENC28J60Model, ENC28J60Timing
from hilkit.drivers.w5100.model import W5100Model
from hilkit.port import ManualClock

RCR, RBM, WCR, WBM, BFS, BFC, SRC = 0x00, 0x3A, 0x40, 0x7A, 0x80, 0xA0, 0xFF
ECON2, ECON1, ESTAT, EIE = 0x1E, 0x1F, 0x1D, 0x1B
ERDPTL, ERDPTH, EWRPTL, EWRPTH = 0x00, 0x01, 0x02, 0x03
ERXSTL, ERXSTH, ERXNDL, ERXNDH = 0x08, 0x09, 0x0A, 0x0B
MACON1, MACON3 = 0x00, 0x02  # bank 2, MAC registers: RCR answers after a dummy byte
AUTOINC = 0x80

Splitter = Callable[[bytes], list[bytes]]


def _wcr16(low: int, value: int) -> list[bytes]:
    return [bytes((WCR | low, value & 0xFF)), bytes((WCR | (low + 1), value >> 8))]


def _pattern(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(n))


def _setup() -> list[bytes]:
    """Fill the buffer with a known pattern and set a small receive ring."""
    out = _wcr16(EWRPTL, 0x0000)
    out += [bytes((WBM,)) + _pattern(0x2000, 1)]
    out += _wcr16(ERXSTL, 0x0100) + _wcr16(ERXNDL, 0x0180)
    return out


def _batch() -> list[bytes]:
    """Mixed instructions: RBM/WBM of odd lengths across both wraps, AUTOINC off,
    ETH and MAC register reads, bit sets and clears, and frames of the wrong length."""
    b: list[bytes] = []
    b += _wcr16(ERDPTL, 0x0170)
    b.append(bytes((RBM,)) + bytes(41))  # ERXND 0x0180 -> ERXST 0x0100 (§3.2.1)
    b.append(bytes((RCR | ERDPTL, 0)))
    b += _wcr16(ERDPTL, 0x1FF0)
    b.append(bytes((RBM,)) + bytes(33))  # outside the ring: 0x1FFF -> 0x0000
    b += _wcr16(EWRPTL, 0x1FF5)
    b.append(bytes((WBM,)) + _pattern(21, 2))  # 0x1FFF -> 0x0000
    b += _wcr16(EWRPTL, 0x0179)
    b.append(bytes((WBM,)) + _pattern(15, 3))  # WBM does not wrap at ERXND
    b.append(bytes((BFC | ECON2, AUTOINC)))
    b.append(bytes((RBM,)) + bytes(5))  # no auto-increment: one byte, again and again
    b.append(bytes((WBM,)) + _pattern(7, 4))  # ... and the last byte written stays
    b.append(bytes((BFS | ECON2, AUTOINC)))
    b.append(bytes((BFS | ECON1, 0x02)))  # bank 2
    b.append(bytes((WCR | MACON3, 0x33)))
    b.append(bytes((RCR | MACON3, 0, 0)))  # MAC: dummy byte, then the value
    b.append(bytes((RCR | MACON1, 0, 0, 0, 0)))  # too long: counted, zeros after
    b.append(bytes((RCR | MACON3, 0)))  # too short for a MAC register
    b.append(bytes((BFC | ECON1, 0x03)))  # bank 0
    b.append(bytes((WCR | EIE, 0xC0, 0x55)))  # too long: written, counted
    b.append(bytes((WCR | EIE,)))  # too short: nothing written
    b.append(bytes((RCR | ESTAT, 0, 0)))
    b.append(bytes((RBM,)))  # the opcode alone
    b.append(bytes((0xC5, 1, 2)))  # no such instruction (op 6)
    b.append(bytes((RCR | ERDPTH,)))
    b.append(bytes((RBM,)) + bytes(1))
    b.append(bytes((SRC, 0)))  # too long, still a reset
    b.append(bytes((RCR | ERXNDL, 0)))
    return b


def _state(m: ENC28J60Model) -> tuple[object, ...]:
    c = m.counters
    return (
        bytes(m.mem),
        bytes(m._r),
        dict(m.stats),
        (c.transactions, c.bytes, c.calls),
        dict(m._phy),
        m.int_pin.level,
    )


def _stream(m: ENC28J60Model, f: bytes, split: Splitter) -> bytes:
    m.stream_begin()
    out = bytearray()
    for chunk in split(f):
        got = m.stream(chunk)
        assert got is not None and len(got) == len(chunk)
        out += got
    m.stream_end()
    return bytes(out)


def _pair(**kw: object) -> tuple[ENC28J60Model, ENC28J60Model]:
    def make() -> ENC28J60Model:
        return ENC28J60Model(clock=ManualClock(), **kw)  # type: ignore[arg-type]

    return make(), make()


def _compare(split: Splitter, batch: Sequence[bytes], **kw: object) -> None:
    whole, streamed = _pair(**kw)
    for f in _setup():
        whole.transfer(f)
        streamed.transfer(f)
    for i, f in enumerate(batch):
        assert _stream(streamed, f, split) == whole.transfer(f), (i, f.hex())
        assert _state(streamed) == _state(whole), (i, f.hex())


def _at(k: int) -> Splitter:
    return lambda f: [f[:k], f[k:]]


def _random_splits(seed: int) -> Splitter:
    rng = random.Random(seed)

    def split(f: bytes) -> list[bytes]:
        cuts = sorted(rng.randrange(len(f) + 1) for _ in range(rng.randrange(4)))
        edges = [0, *cuts, len(f)]
        return [f[a:b] for a, b in itertools.pairwise(edges)]  # empty chunks too

    return split


INSTANT = {"timing": ENC28J60Timing.instant()}


def test_every_split_point_equals_the_whole_transaction() -> None:
    batch = _batch()
    for k in range(max(len(f) for f in batch) + 1):
        _compare(_at(k), batch, **INSTANT)


def test_byte_by_byte_and_random_splits() -> None:
    batch = _batch()
    _compare(lambda f: [f[i : i + 1] for i in range(len(f))], batch, **INSTANT)
    for seed in range(20):
        _compare(_random_splits(seed), batch, **INSTANT)


def test_bit_errors_land_on_the_same_bits() -> None:
    """The gap between flipped bits carries over from chunk to chunk (ChipModel._corrupt)."""
    faults = {"faults": ENC28J60Faults(bit_error_rate=0.02), "seed": 7}
    batch = _batch()
    for seed in range(5):
        _compare(_random_splits(seed), batch, **INSTANT, **faults)
    whole, _ = _pair(**INSTANT, **faults)
    for f in _setup() + batch:
        whole.transfer(f)
    assert whole.stats["bit_errors"] > 0


def test_a_scheduled_reset_lands_on_the_same_transaction() -> None:
    whole, streamed = _pair(**INSTANT)
    for m in (whole, streamed):
        for f in _setup():
            m.transfer(f)
        m.schedule_reset(5)
    split = _random_splits(3)
    for f in _batch():
        assert _stream(streamed, f, split) == whole.transfer(f)
        assert _state(streamed) == _state(whole)
    assert whole.stats["soft_resets"] == 2  # the scheduled one and SRC


def test_unready_and_held_in_reset() -> None:
    """After SRC the clock settles (§2.2); errata item 2 makes ESTAT lie meanwhile."""
    faults = ENC28J60Faults(clkrdy_wrong_after_reset=True)
    whole, streamed = _pair(faults=faults)
    batch = [
        bytes((SRC,)),
        bytes((RCR | ESTAT, 0)),
        bytes((RCR | ESTAT, 0, 0)),
        bytes((RBM,)) + bytes(9),
        bytes((WCR | EIE, 0x80)),
    ]
    for k in range(4):
        for f in batch:
            assert _stream(streamed, f, _at(k)) == whole.transfer(f)
            assert _state(streamed) == _state(whole)
    assert whole.stats["clkrdy_lies"] > 0
    for m in (whole, streamed):
        m.reset_pin.set(False)
    for f in batch[1:]:
        assert _stream(streamed, f, _at(1)) == whole.transfer(f) == b"\xff" * len(f)
    assert _state(streamed) == _state(whole)


def test_long_rbm_and_wbm_stream_in_fifo_sized_chunks() -> None:
    whole, streamed = _pair(**INSTANT)
    data = _pattern(1500, 9)
    split: Splitter = lambda f: [f[i : i + 1024] for i in range(0, len(f), 1024)]  # noqa: E731
    for f in [
        *_wcr16(EWRPTL, 0x0200),
        bytes((WBM,)) + data,
        *_wcr16(ERDPTL, 0x0200),
        bytes((RBM,)) + bytes(1500),
    ]:
        assert _stream(streamed, f, split) == whole.transfer(f)
    assert whole.transfer(bytes((RBM,)) + bytes(0)) == b"\x00"
    assert bytes(streamed.mem[0x200 : 0x200 + 1500]) == data
    assert streamed.counters.transactions == whole.counters.transactions - 1


def test_stream_protocol_edges() -> None:
    m = ENC28J60Model(clock=ManualClock(), timing=ENC28J60Timing.instant())
    with pytest.raises(RuntimeError):
        m.stream(b"\x00")
    before = (m.counters.transactions, m.counters.calls)
    m.stream_begin()
    assert m.stream(b"") == b""
    m.stream_end()  # nothing clocked: no transaction
    assert (m.counters.transactions, m.counters.calls) == before
    m.stream_end()  # a second CS rise does nothing
    m.close()
    with pytest.raises(OSError):
        m.stream_begin()


def test_a_model_that_cannot_stream_declines_without_side_effects() -> None:
    """W5100 frames are 4 bytes, never longer than a bridge's FIFO: it does not stream."""
    m = W5100Model(clock=ManualClock())
    before = (m.counters.transactions, m.counters.bytes, m.counters.calls)
    m.stream_begin()
    assert m.stream(b"\x0f\x00\x01\x00") is None
    m.stream_end()
    assert (m.counters.transactions, m.counters.bytes, m.counters.calls) == before
    assert len(m.transfer(b"\x0f\x00\x01\x00")) == 4  # the fallback: the whole frame
    assert m.counters.transactions == before[0] + 1

"""PacedPtyLine's faults on a pty pair with nothing at either end but this test:
bytes dropped and corrupted at the set rates (counted, reproducible by seed), and the
line down for a while (everything discarded, then bytes flow again)."""

from __future__ import annotations

import contextlib
import os
import select
import time
import tty
from collections.abc import Iterator

import pytest

from hilkit.rig.slirp import LineFaults, PacedPtyLine

N = 20_000


@pytest.fixture
def line() -> Iterator[PacedPtyLine]:
    ln = PacedPtyLine(pace=False, seed=7)
    yield ln
    ln.close()


def _open(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    return fd


def _pass(line: PacedPtyLine, data: bytes, quiet_s: float = 0.3) -> bytes:
    """Write ``data`` into a, read what comes out of b until quiet for ``quiet_s``."""
    a, b = _open(line.a), _open(line.b)
    try:
        got = bytearray()
        off = 0
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            w = [a] if off < len(data) else []
            r, wr, _ = select.select([b], w, [], 0.05)
            if wr:
                with contextlib.suppress(BlockingIOError):
                    off += os.write(a, data[off:off + 1024])
                last = time.monotonic()
            if r:
                with contextlib.suppress(BlockingIOError):
                    got += os.read(b, 65536)
                last = time.monotonic()
        return bytes(got)
    finally:
        os.close(a)
        os.close(b)


def _payload() -> bytes:
    return bytes(i % 251 for i in range(N))


def test_clean_line_moves_every_byte(line: PacedPtyLine) -> None:
    data = _payload()
    assert _pass(line, data) == data
    assert line.moved[0] == N
    assert not any(line.fault_stats.values())


def test_drop_rate_drops_and_counts(line: PacedPtyLine) -> None:
    line.set_faults(drop_rate=0.05, direction="a_to_b")
    got = _pass(line, _payload())
    dropped = line.fault_stats["a_to_b_dropped"]
    assert 0.03 * N < dropped < 0.07 * N
    assert len(got) == N - dropped
    assert line.fault_stats["a_to_b_corrupted"] == 0
    assert line.fault_stats["b_to_a_dropped"] == 0


def test_corrupt_rate_flips_one_bit_and_counts(line: PacedPtyLine) -> None:
    line.set_faults(corrupt_rate=0.02)
    data = _payload()
    got = _pass(line, data)
    assert len(got) == N
    diffs = [(x, y) for x, y in zip(data, got, strict=True) if x != y]
    assert len(diffs) == line.fault_stats["a_to_b_corrupted"]
    assert 0.01 * N < len(diffs) < 0.03 * N
    assert all(bin(x ^ y).count("1") == 1 for x, y in diffs)


def test_same_seed_same_damage() -> None:
    outs = []
    for _ in range(2):
        ln = PacedPtyLine(pace=False, seed=3)
        try:
            ln.set_faults(drop_rate=0.01, corrupt_rate=0.01)
            outs.append(_pass(ln, _payload()[:4000]))
        finally:
            ln.close()
    assert outs[0] == outs[1]


def test_line_down_discards_then_recovers(line: PacedPtyLine) -> None:
    line.down(400)
    assert line.is_down() and line.is_down("b_to_a")
    assert _pass(line, b"x" * 1000, quiet_s=0.1) == b""
    assert line.fault_stats["a_to_b_discarded"] == 1000
    time.sleep(0.45)
    assert not line.is_down()
    assert _pass(line, b"back") == b"back"


def test_faults_are_per_direction_and_cleared(line: PacedPtyLine) -> None:
    line.down(10_000, direction="b_to_a")
    assert line.is_down("b_to_a") and not line.is_down("a_to_b")
    assert _pass(line, b"ok") == b"ok"
    line.clear_faults()
    assert line.faults == [LineFaults(), LineFaults()]
    with pytest.raises(ValueError):
        line.set_faults(drop_rate=1.5)
    with pytest.raises(ValueError):
        line.down(1, direction="sideways")  # type: ignore[arg-type]

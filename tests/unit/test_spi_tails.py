"""``SpiBus.transfer_batch(frames, tails)`` on every bus in the tree that runs here.

The contract (``hilkit.port.spi``): with ``tails`` each reply is exactly the last
``tails[i]`` bytes of the whole reply; bad tails raise ``ValueError`` before anything
is clocked. Every bus is run twice on the same corpus, once whole and once with tails
(two identically seeded chip models where the bus has state), and the replies compared.
"""

from __future__ import annotations

import fcntl
import random
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from hilkit.bus.spidev import SpidevBus, build_transfer_array
from hilkit.drivers import nics
from hilkit.drivers.enc28j60 import ENC28J60Device
from hilkit.drivers.enc28j60.model import ENC28J60Model, ENC28J60Timing
from hilkit.drivers.w5100 import W5100Device
from hilkit.drivers.w5100.model import W5100Model
from hilkit.port import SpiBus, check_tails, reply_tails
from hilkit.port.clock import ManualClock
from tests.fakebus import FillBus
from tests.rig_plugins import LoopbackBus
from tests.unit.test_bus_spidev import FakeSpidev

Corpus = list[tuple[list[bytes], list[int]]]


def corpus(seed: int, cases: int = 40, max_frames: int = 24, max_len: int = 12) -> Corpus:
    """Frame lists with random lengths 0..max_len (now and then a long one) and tails 0..len."""
    rng = random.Random(seed)
    out: Corpus = []
    for _ in range(cases):
        frames = []
        for _ in range(rng.randint(0, max_frames)):
            n = rng.randint(0, max_len) if rng.random() > 0.05 else rng.randint(0, 300)
            frames.append(rng.randbytes(n))
        tails = [rng.choice((0, len(f), rng.randint(0, len(f)))) for f in frames]
        out.append((frames, tails))
    return out


# -- the helpers ----------------------------------------------------------------------------


def test_reply_tails_cuts_each_reply() -> None:
    replies = [b"\x01\x02\x03\x04", b"\xaa", b"", b"\x10\x20"]
    assert reply_tails(replies, [1, 0, 0, 2]) == [b"\x04", b"", b"", b"\x10\x20"]
    assert reply_tails(replies, None) is replies


@pytest.mark.parametrize(
    ("tails", "message"),
    [
        ([1, 1], "tails has 2 entries for 3 frames"),
        ([1, 1, 1, 1], "tails has 4 entries for 3 frames"),
        ([1, 5, 0], r"tails\[1\] = 5 is outside 0..4 \(frame 1 is 4 bytes\)"),
        ([1, 0, -1], r"tails\[2\] = -1 is outside 0..0"),
        ([2, 0, 0], r"tails\[0\] = 2 is outside 0..1"),
    ],
)
def test_bad_tails_name_the_problem(tails: list[int], message: str) -> None:
    frames = [b"\x01", b"\x01\x02\x03\x04", b""]
    with pytest.raises(ValueError, match=message):
        check_tails(frames, tails)
    with pytest.raises(ValueError, match=message):
        reply_tails(list(frames), tails)


# -- every bus: tails equal the tails of the whole replies -----------------------------------


def _spi_nics() -> list[str]:
    return sorted(n for n, nic in nics().items() if nic.transport == "spi" and nic.model)


def _model_maker(name: str, faults: dict[str, Any]) -> Callable[[], SpiBus]:
    nic = nics()[name]
    return lambda: nic.make_model(wire=None, clock=ManualClock(), seed=7, faults=faults,
                                  timing={})


def _toy_model() -> SpiBus:
    toynic_model = pytest.importorskip("toynic.model")
    bus: SpiBus = toynic_model.ToyNicModel(None, ManualClock())
    return bus


BUSES: dict[str, Callable[[], SpiBus]] = {
    **{f"model-{n}": _model_maker(n, {}) for n in _spi_nics()},
    **{f"model-{n}-bit-errors": _model_maker(n, {"bit_error_rate": 0.01}) for n in _spi_nics()},
    "toynic-model": _toy_model,
    "fillbus": lambda: FillBus(0xA5),
    "loopback": lambda: LoopbackBus(None, None, "loop", 1_000_000),
}


@pytest.fixture(params=sorted(BUSES))
def twins(request: pytest.FixtureRequest) -> Iterator[tuple[SpiBus, SpiBus]]:
    """Two buses in the same state: one answers whole, the other with tails."""
    make = BUSES[request.param]
    a, b = make(), make()
    yield a, b
    a.close()
    b.close()


def test_model_factories_are_covered() -> None:
    assert {"w5100", "enc28j60"} <= set(_spi_nics())


def test_tails_are_the_tails_of_whole_replies(twins: tuple[SpiBus, SpiBus]) -> None:
    whole_bus, tail_bus = twins
    for frames, tails in corpus(1):
        whole = whole_bus.transfer_batch(frames)
        assert [len(x) for x in whole] == [len(f) for f in frames]
        got = tail_bus.transfer_batch(frames, tails)
        assert got == reply_tails(whole, tails)
        assert [len(x) for x in got] == tails
    assert tail_bus.counters.bytes == whole_bus.counters.bytes  # tails cut nothing clocked


def test_bad_tails_raise_before_anything_is_clocked(twins: tuple[SpiBus, SpiBus]) -> None:
    bus = twins[0]
    before = (bus.counters.calls, bus.counters.transactions, bus.counters.bytes)
    with pytest.raises(ValueError, match="tails has 1 entries for 2 frames"):
        bus.transfer_batch([b"\x00\x00", b"\x00"], [1])
    with pytest.raises(ValueError, match=r"tails\[1\] = 2 is outside 0..1"):
        bus.transfer_batch([b"\x00\x00", b"\x00"], [1, 2])
    assert (bus.counters.calls, bus.counters.transactions, bus.counters.bytes) == before


# -- spidev: the ioctl struct and the path against a fake kernel ----------------------------

_XFER = struct.Struct("=QQIIHBBBBBB")


def test_transfer_array_leaves_rx_buf_zero_for_write_only_frames() -> None:
    frames = [b"\x01\x02\x03\x04", b"\xaa", b"\x10\x20", b""]
    plain = build_transfer_array(frames, 0x1000, 0x2000, 8_000_000, 8)
    cut = build_transfer_array(frames, 0x1000, 0x2000, 8_000_000, 8, [1, 0, 2, 0])
    a = [_XFER.unpack_from(plain, i) for i in range(0, len(plain), 32)]
    b = [_XFER.unpack_from(cut, i) for i in range(0, len(cut), 32)]
    assert [e[1] for e in a] == [0x2000, 0x2004, 0x2005, 0x2007]
    assert [e[1] for e in b] == [0x2000, 0, 0x2005, 0]
    # nothing else moves: same tx, lengths, CS changes
    assert [e[:1] + e[2:] for e in a] == [e[:1] + e[2:] for e in b]
    assert build_transfer_array(frames, 0x1000, 0x2000, 1, 8, None) == build_transfer_array(
        frames, 0x1000, 0x2000, 1, 8
    )


@pytest.fixture
def spidev(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[SpidevBus,
                                                                               FakeSpidev]]:
    node = tmp_path / "spidev0.0"
    node.write_bytes(b"")
    fake = FakeSpidev(bufsiz=4096, align=128)
    monkeypatch.setattr(fcntl, "ioctl", fake.ioctl)
    bus = SpidevBus(str(node), bufsiz=4096, dma_align=8)  # guessed low: EMSGSIZE halving too
    yield bus, fake
    bus.close()


def test_spidev_tails(spidev: tuple[SpidevBus, FakeSpidev]) -> None:
    bus, fake = spidev
    for frames, tails in corpus(2, max_frames=80):
        whole = bus.transfer_batch(frames)
        assert whole == [bytes(x ^ 0xFF for x in f) for f in frames]
        sent = len(fake.messages)
        got = bus.transfer_batch(frames, tails)
        assert got == reply_tails(whole, tails)
        rx = [e[1] for m in fake.messages[sent:] for e in m]
        assert [r == 0 for r in rx] == [t == 0 for t in tails]  # the kernel copies nothing back
    assert fake.refused >= 1  # the corpus reached the halving path


def test_spidev_bad_tails_issue_no_ioctl(spidev: tuple[SpidevBus, FakeSpidev]) -> None:
    bus, fake = spidev
    with pytest.raises(ValueError, match=r"tails\[0\] = 5 is outside 0..4"):
        bus.transfer_batch([b"\x00" * 4], [5])
    assert fake.messages == [] and bus.counters.calls == 0


# -- the drivers: what they ask for, and that it is what they read ---------------------------


class Twin:
    """Two identical models; answers with tails and checks them against the whole replies."""

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b
        self.counters = b.counters
        self.asked = 0  # reply bytes the driver asked for
        self.clocked = 0

    def transfer(self, data: bytes) -> bytes:
        return self.transfer_batch([data])[0]

    def transfer_batch(self, frames: Sequence[bytes], tails: Sequence[int] | None = None,
                       ) -> list[bytes]:
        whole = self.a.transfer_batch(frames)
        got: list[bytes] = self.b.transfer_batch(frames, tails)
        assert got == reply_tails(whole, tails)
        self.asked += sum(map(len, got))
        self.clocked += sum(map(len, frames))
        return got

    def close(self) -> None:
        pass


def _frame(n: int, k: int) -> bytes:
    return b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + bytes((k,)) * (n - 14)


@pytest.mark.parametrize("chip", ["w5100", "enc28j60"])
def test_drivers_read_only_what_they_ask_for(chip: str) -> None:
    clock = ManualClock()
    if chip == "w5100":
        a: Any = W5100Model(clock=clock, seed=1)
        b: Any = W5100Model(clock=clock, seed=1)
    else:
        a = ENC28J60Model(clock=clock, seed=1, timing=ENC28J60Timing.instant())
        b = ENC28J60Model(clock=clock, seed=1, timing=ENC28J60Timing.instant())
    bus = Twin(a, b)
    dev: Any = (W5100Device if chip == "w5100" else ENC28J60Device)(bus, clock=clock)
    with dev:
        frames = [_frame(n, k) for k, n in enumerate((60, 400, 1514))]
        for f in frames:
            assert a.inject(f) and b.inject(f)
        got: list[bytes] = []
        for _ in range(10):
            got += dev.poll(8)
            clock.advance(1.0)
        assert got == frames
        for f in frames:
            assert dev.send(f)
            clock.advance(1.0)
            dev.poll(1)
        assert b.sent == frames
    # The receive path reads about a byte per byte received, the transmit path nothing
    # back: far less than the bytes clocked (4 per data byte on the W5100).
    assert bus.asked < 1.2 * sum(map(len, frames)) + 2000
    assert bus.asked < bus.clocked / 2


class OldBus:
    """A bus written to the contract before tails: ``transfer_batch(frames)`` only."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.counters = model.counters

    def transfer(self, data: bytes) -> bytes:
        return self.transfer_batch([data])[0]

    def transfer_batch(self, frames: Sequence[bytes]) -> list[bytes]:
        out: list[bytes] = self.model.transfer_batch(frames)
        return out

    def close(self) -> None:
        pass


@pytest.mark.parametrize("chip", ["w5100", "enc28j60"])
def test_a_bus_without_tails_still_drives_the_chip(chip: str) -> None:
    """The driver asks such a bus for whole replies and cuts them itself."""
    clock = ManualClock()
    model: Any = (W5100Model(clock=clock, seed=2) if chip == "w5100" else
                  ENC28J60Model(clock=clock, seed=2, timing=ENC28J60Timing.instant()))
    dev: Any = (W5100Device if chip == "w5100" else ENC28J60Device)(OldBus(model), clock=clock)
    with dev:
        frame = _frame(300, 5)
        assert model.inject(frame)
        got: list[bytes] = []
        for _ in range(10):
            got += dev.poll(8)
            clock.advance(1.0)
        assert got == [frame]
        assert dev.send(frame)
        assert model.sent == [frame]

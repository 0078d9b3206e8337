"""FT232H MPSSE bus without hardware: command streams byte by byte, the clock divisor, chunk
planning, and FtdiSpiBus/FtdiPin against a fake pyftdi ``Ftdi`` that interprets MPSSE."""

from __future__ import annotations

import errno
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

from hilkit.bus import ftdi as fb
from hilkit.bus.ftdi import (
    FtdiPin,
    FtdiSpiBus,
    MpsseChunk,
    build_mpsse_batch,
    build_mpsse_setup,
    mpsse_clock_divisor,
    mpsse_clock_hz,
    plan_mpsse_batch,
)
from hilkit.port import Edge, HardwareNotFound, Pin, SpiBus

H = bytes.fromhex

# --- clock ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("speed", "div", "sck"),
    [
        (40_000_000, 0, 30e6),
        (30_000_000, 0, 30e6),
        (15_000_000, 1, 15e6),
        (14_000_000, 2, 10e6),  # never faster than asked: W5100 max is 14 MHz
        (10_000_000, 2, 10e6),
        (8_000_000, 3, 7.5e6),
        (6_000_000, 4, 6e6),
        (5_000_000, 5, 5e6),
        (1_000_000, 29, 1e6),
        (458, 65502, 30e6 / 65503),  # the slowest integer rate; 457 Hz is below 30e6/65536
    ],
)
def test_clock_divisor(speed: int, div: int, sck: float) -> None:
    assert mpsse_clock_divisor(speed) == div
    assert mpsse_clock_hz(div) == pytest.approx(sck)
    assert mpsse_clock_hz(div) <= speed or div == 0


@pytest.mark.parametrize("speed", [457, 1, 0, -5])
def test_clock_divisor_out_of_range(speed: int) -> None:
    with pytest.raises(ValueError):
        mpsse_clock_divisor(speed)


def test_setup_sequence() -> None:
    assert build_mpsse_setup(6_000_000, 0x0008, 0x000B) == H(
        "8a"  # disable clock divide-by-5: 60 MHz base
        "97"  # adaptive clocking off
        "8d"  # 3-phase clocking off
        "860400"  # divisor 4 -> 6 MHz
        "85"  # loopback off
        "80080b"  # ADBUS: CS high, SCK low; SCK, MOSI, CS outputs
        "820000"  # ACBUS: all inputs
    )
    assert build_mpsse_setup(1_000_000, 0x8018, 0x801B) == H("8a978d861d008580181b828080")
    assert build_mpsse_setup(600, 0, 0)[3:6] == H("864fc3")  # divisor 49999


# --- batch command streams ----------------------------------------------------------------------


def test_batch_two_frames_byte_by_byte() -> None:
    frames = [H("0f0001ff"), H("f0abcd42")]
    # ADBUS4 is a spare output held high (a reset line): it must stay high in every 0x80.
    got = build_mpsse_batch(frames, 3, gpio_value=0x18, gpio_dir=0x1B)
    assert got == H(
        "80101b"  # frame 1: CS (ADBUS3) low, ADBUS4 high, SCK low
        "310300"  # clock 4 bytes out on -ve, in on +ve, MSB first (len - 1 = 3, little endian)
        "0f0001ff"
        "80181b"  # CS high
        "80101b"  # frame 2
        "310300"
        "f0abcd42"
        "80181b"
        "87"  # send immediate: the read-back (8 bytes) comes back at once
    )


def test_batch_forces_spi_pins_and_mode_2() -> None:
    # gpio_value with MOSI/SCK set and a direction without SPI pins: SPI pins are forced
    got = build_mpsse_batch([H("aa")], 5, gpio_value=0x03, gpio_dir=0x04, mode=2)
    # mode 2: SCK idles high, opcode 0x34 (out on +ve, in on -ve); CS on ADBUS5; MISO an input
    assert got == H("800123340000aa80212387")


def test_batch_empty_and_unsupported() -> None:
    assert build_mpsse_batch([], 3, 0x08, 0x0B) == b""
    assert build_mpsse_batch([b""], 3, 0x08, 0x0B) == H("80000b80080b")  # nothing to read
    with pytest.raises(ValueError):
        build_mpsse_batch([b"\x00"], 3, 0, 0, mode=1)
    with pytest.raises(ValueError):
        build_mpsse_batch([b"\x00"], 2, 0, 0)  # ADBUS2 is MISO


def test_batch_frame_longer_than_one_command() -> None:
    frame = bytes(range(256)) * 257  # 65792 bytes: a 65536-byte command then 256
    got = build_mpsse_batch([frame], 3, 0x08, 0x0B)
    assert got[:6] == H("80000b31ffff")
    assert got[6 : 6 + 65536] == frame[:65536]
    assert got[6 + 65536 : 6 + 65536 + 3] == H("31ff00")
    assert got[6 + 65536 + 3 :] == frame[65536:] + H("80080b87")


def test_batch_tails_write_only_heads() -> None:
    frames = [H("f00001aa"), H("0f000200"), H("0102")]
    # a W5100 write reads nothing, a read only its 4th byte; tail 2 of 2 is all full duplex
    got = build_mpsse_batch(frames, 3, 0x08, 0x0B, tails=[0, 1, 2])
    assert got == H(
        "80000b" "110300" "f00001aa" "80080b"  # write-only: 0x11, nothing comes back
        "80000b" "110200" "0f0002" "200000" "80080b"  # 3 bytes written, the 4th read (MOSI low)
        "80000b" "310100" "0102" "80080b"
        "87"
    )
    write_only = build_mpsse_batch(frames[:1], 3, 0x08, 0x0B, tails=[0])
    assert write_only == H("80000b110300f00001aa80080b")
    # mode 2 writes on the rising edge: 0x10
    assert build_mpsse_batch([H("aa")], 3, 0x08, 0x0B, tails=[0], mode=2)[3] == 0x10
    with pytest.raises(ValueError, match="tails"):
        build_mpsse_batch(frames, 3, 0x08, 0x0B, tails=[0, 1])
    with pytest.raises(ValueError, match="tails"):
        build_mpsse_batch(frames, 3, 0x08, 0x0B, tails=[0, 1, 3])


def test_batch_reads_without_writing_what_mosi_holds() -> None:
    # an ENC28J60 RBM: opcode 3A (last bit 0), then dummy zeros: read-only 0x20, no data
    assert build_mpsse_batch([H("3a000000")], 3, 0x08, 0x0B, tails=[3]) == H(
        "80000b" "110000" "3a" "200200" "80080b" "87")
    # after an odd byte MOSI is high: 0xff dummies are what it holds, zeros are not
    assert build_mpsse_batch([H("01ffff")], 3, 0x08, 0x0B, tails=[2])[6:10] == H("01200100")
    assert build_mpsse_batch([H("010000")], 3, 0x08, 0x0B, tails=[2])[6:10] == H("01310100")
    # at CS low MOSI is low (the SET_BITS_LOW clears it): a frame of zeros is read-only
    assert build_mpsse_batch([bytes(4)], 3, 0x08, 0x0B) == H("80000b20030080080b87")
    assert build_mpsse_batch([bytes(4)], 3, 0x08, 0x0B, mode=2)[3] == 0x24


# --- chunks within the FIFO ----------------------------------------------------------------------


def _frame_stream(n: int, data: bytes) -> bytes:
    return H("80000b") + bytes((0x31, (n - 1) & 0xFF, (n - 1) >> 8)) + data + H("80080b")


def test_plan_splits_on_frame_boundaries() -> None:
    frames = [(i | 0x10000).to_bytes(4, "big") for i in range(300)]  # never all zeros
    chunks = plan_mpsse_batch(frames, 3, 0x08, 0x0B, chunk_read=512)
    assert [c.read_len for c in chunks] == [512, 512, 176]
    assert chunks[0].command == b"".join(_frame_stream(4, f) for f in frames[:128]) + H("87")
    assert chunks[2].command == b"".join(_frame_stream(4, f) for f in frames[256:]) + H("87")
    assert plan_mpsse_batch(frames[:128], 3, 0x08, 0x0B, chunk_read=512) == [chunks[0]]
    assert plan_mpsse_batch([], 3, 0x08, 0x0B) == []
    # write-only frames cost no read-back: one chunk, however long
    assert [c.read_len for c in plan_mpsse_batch(frames, 3, 0x08, 0x0B, tails=[0] * 300)] == [0]


def test_plan_big_frame_keeps_cs_low_across_chunks() -> None:
    small = H("01020304")
    big = bytes(i & 0xFF for i in range(2500))
    chunks = plan_mpsse_batch([small, big, small], 3, 0x08, 0x0B, chunk_read=1024)
    assert chunks == [
        # the big frame's read-back cannot fit one chunk: it fills this one, CS stays low
        MpsseChunk(_frame_stream(4, small) + H("80000b31fb03") + big[:1020] + H("87"), 1024),
        MpsseChunk(H("31ff03") + big[1020:2044] + H("87"), 1024),  # CS still low
        # the rest of the big frame, CS high, then the next small frame fits behind it
        MpsseChunk(H("31c701") + big[2044:] + H("80080b") + _frame_stream(4, small) + H("87"),
                   460),
    ]


def test_plan_tails_corpus() -> None:
    """Whatever the frames and tails: the read-back is the tails in order, no chunk reads back
    more than chunk_read, and a tail that fits a chunk is never split."""
    rng = random.Random(7)
    for _ in range(300):
        frames = [bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 4, 33, 700, 1500))))
                  for _ in range(rng.randrange(1, 9))]
        tails = [rng.choice((0, len(f), rng.randrange(len(f) + 1))) for f in frames]
        chunk_read = rng.choice((1, 16, 512, 1024))
        chunks = plan_mpsse_batch(frames, 3, 0x08, 0x0B, tails=tails, chunk_read=chunk_read)
        assert all(0 <= c.read_len <= chunk_read for c in chunks)
        assert sum(c.read_len for c in chunks) == sum(tails)
        assert all(c.command.endswith(H("87")) == (c.read_len > 0) for c in chunks)
        fake = FakeFtdi(fifo=1 << 30)
        fake.low = [0x08, 0x0B]
        for c in chunks:
            fake.write_data(c.command)
        assert fake.frames == frames
        assert bytes(fake.out) == b"".join(
            bytes(b ^ 0xFF for b in f[len(f) - t:]) for f, t in zip(frames, tails, strict=True))


def test_plan_bad_budget() -> None:
    with pytest.raises(ValueError):
        plan_mpsse_batch([b"\x00"], 3, 0, 0, chunk_read=0)


# --- no device here ------------------------------------------------------------------------------


def test_open_without_usb_fails_fast() -> None:
    url = "ftdi://ftdi:232h:HILKIT-NO-SUCH-SERIAL/1"  # never a bench's real FT232H
    t0 = time.monotonic()
    with pytest.raises(HardwareNotFound) as info:
        FtdiSpiBus(url)
    assert time.monotonic() - t0 < 5.0  # missing hardware is reported within 5 s
    err = info.value
    assert err.what == url
    assert err.problem == "FT232H not found"
    assert "0403:6014" in err.hint and "ftdi_sio" in err.hint and "udev" in err.hint


def test_open_without_pyftdi(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pyftdi.ftdi", None)  # import raises ImportError
    with pytest.raises(HardwareNotFound) as info:
        FtdiSpiBus()
    assert info.value.problem == "FT232H not found"
    assert isinstance(info.value.__cause__, ImportError)


# --- a fake FT232H: a small MPSSE interpreter behind pyftdi's Ftdi API ----------------------------


class FakeFtdi:
    """Interprets the MPSSE commands hilkit writes; the SPI slave answers each byte inverted.

    Records every write_data/read_data_bytes call, the bytes of each CS frame as the slave saw
    them, and the pin levels. ``inputs`` feeds GET_BITS_LOW answers for input pins.
    """

    def __init__(self, fifo: int = 1024) -> None:
        self.fifo = fifo
        self.opened: dict[str, Any] = {}
        self.writes: list[bytes] = []
        self.reads: list[int] = []
        self.out: deque[int] = deque()
        self.low = [0, 0]  # value, direction
        self.high = [0, 0]
        self.divisor: int | None = None
        self.frame: bytearray | None = None
        self.frames: list[bytes] = []
        self.inputs: deque[int] = deque()  # successive ADBUS input levels
        self.closed = False
        self.sync_reply: bytes | None = None
        self.timeouts = (5000, 5000)

    # pyftdi API used by hilkit
    def open_mpsse_from_url(self, url: str, **kwargs: Any) -> float:
        self.opened = {"url": url, **kwargs}
        self.low = [kwargs["initial"], kwargs["direction"]]
        return float(kwargs["frequency"])

    @property
    def fifo_sizes(self) -> tuple[int, int]:
        return (self.fifo, self.fifo)

    def write_data(self, data: bytes) -> int:
        data = bytes(data)
        self.writes.append(data)
        self._run(data)
        return len(data)

    def read_data_bytes(self, size: int, attempt: int = 1,
                        request_gen: Callable[[int], bytes] | None = None) -> bytearray:
        """As pyftdi: packet by packet (510 payload bytes), ``request_gen`` asked after each
        for commands to write, with the bytes still wanted."""
        self.reads.append(size)
        data = bytearray()
        while len(data) < size and self.out:
            n = min(size - len(data), len(self.out), 510)
            data += bytes(self.out.popleft() for _ in range(n))
            if request_gen is not None and len(data) < size:
                more = request_gen(size - len(data))
                if more:
                    self.write_data(more)
        return data

    def close(self) -> None:
        self.closed = True

    # the interpreter
    def _cs_low(self) -> bool:
        return not self.low[0] & 0x08

    def _run(self, data: bytes) -> None:
        i = 0
        while i < len(data):
            op = data[i]
            if op in (0x8A, 0x97, 0x8D, 0x85, 0x87):
                i += 1
            elif op == 0x86:
                self.divisor = data[i + 1] | data[i + 2] << 8
                i += 3
            elif op in (0x80, 0x82):
                reg = self.low if op == 0x80 else self.high
                was_low = self._cs_low()
                reg[0], reg[1] = data[i + 1], data[i + 2]
                if op == 0x80 and not was_low and self._cs_low():
                    self.frame = bytearray()
                if op == 0x80 and was_low and not self._cs_low():
                    assert self.frame is not None
                    self.frames.append(bytes(self.frame))
                    self.frame = None
                i += 3
            elif op == 0x81:
                level = self.inputs.popleft() if self.inputs else 0
                outs = self.low[1]
                self.out.append((self.low[0] & outs) | (level & ~outs & 0xFF))
                i += 1
            elif op == 0x83:
                self.out.append(self.high[0] & self.high[1])
                i += 1
            elif op in (0x31, 0x34, 0x11, 0x10, 0x20, 0x24):
                n = (data[i + 1] | data[i + 2] << 8) + 1
                if op & 0x10:
                    payload = data[i + 3 : i + 3 + n]
                    i += 3 + n
                else:  # read-only: MOSI holds the level of the last bit written
                    payload = bytes((0xFF if self.low[0] & 0x02 else 0x00,)) * n
                    i += 3
                assert len(payload) == n
                assert self.frame is not None, "data clocked with CS high"
                self.frame += payload
                self.low[0] = (self.low[0] & ~0x02) | (0x02 if payload[-1] & 1 else 0)
                if op & 0x20:
                    self.out.extend(b ^ 0xFF for b in payload)
                assert len(self.out) <= self.fifo, "read-back overflows the chip's FIFO"
            else:  # bad command
                self.out.extend((0xFA, op) if self.sync_reply is None else self.sync_reply)
                i += 1


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeFtdi:
    dev = FakeFtdi()
    monkeypatch.setattr(fb, "_new_ftdi", lambda: dev)
    return dev


def test_open_sets_up_mpsse(fake: FakeFtdi) -> None:
    bus = FtdiSpiBus("ftdi://ftdi:232h/1", speed_hz=10_000_000, cs_pin=4)
    assert isinstance(bus, SpiBus)
    assert fake.opened["url"] == "ftdi://ftdi:232h/1"
    assert fake.opened["direction"] == 0x13 and fake.opened["initial"] == 0x10
    assert fake.writes == [H("8a978d86020085801013820000aa87")]
    assert fake.divisor == 2 and bus.speed_hz == 10e6
    assert fake.reads == [2] and not fake.out
    assert bus.max_read == 1024
    bus.close()
    assert fake.closed


def test_open_out_of_sync(fake: FakeFtdi) -> None:
    fake.sync_reply = b"\x32\x60"
    with pytest.raises(HardwareNotFound) as info:
        FtdiSpiBus()
    assert "out of sync" in info.value.problem
    assert fake.closed


def test_open_setup_failure_closes(fake: FakeFtdi, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: bytes) -> int:
        raise OSError("UsbError: [Errno 19] No such device")

    monkeypatch.setattr(fake, "write_data", broken)
    with pytest.raises(HardwareNotFound) as info:
        FtdiSpiBus()
    assert info.value.problem == "MPSSE set-up failed"
    assert fake.closed


def test_transfer_batch_one_write_one_read(fake: FakeFtdi) -> None:
    bus = FtdiSpiBus()
    fake.writes.clear()
    fake.reads.clear()
    frames = [H("0f0001ff"), H("f0abcd42")]
    rx = bus.transfer_batch(frames)
    assert rx == [H("f0fffe00"), H("0f5432bd")]
    assert fake.writes == [build_mpsse_batch(frames, 3, 0x08, 0x0B)]
    assert fake.reads == [8]
    assert fake.frames == frames
    assert (bus.counters.bytes, bus.counters.transactions, bus.counters.calls) == (8, 2, 1)
    assert bus.transfer(b"\x55") == b"\xaa"
    assert (bus.counters.bytes, bus.counters.transactions, bus.counters.calls) == (9, 3, 2)
    assert bus.transfer_batch([]) == []
    assert bus.counters.calls == 2


def test_transfer_batch_feeds_chunks_in_one_round_trip(fake: FakeFtdi) -> None:
    bus = FtdiSpiBus()
    fake.writes.clear()
    fake.reads.clear()
    frames = [i.to_bytes(4, "big") for i in range(300)] + [bytes(range(256)) * 10]
    rx = bus.transfer_batch(frames)
    assert rx == [bytes(b ^ 0xFF for b in f) for f in frames]
    assert fake.frames == frames
    # one read for the whole 3760 bytes; the fake asserts the FIFO (1 KiB) never overflows
    assert fake.reads == [1200 + 2560]
    assert len(fake.writes) == bus.stats["usb_writes"] > 1
    assert all(w.endswith(b"\x87") for w in fake.writes)
    assert bus.counters.calls == 1 and bus.counters.transactions == 301
    assert bus.counters.bytes == 1200 + 2560
    assert bus.stats["round_trips"] == 1 and bus.stats["read_back_bytes"] == 3760
    assert bus.stats["command_bytes"] == sum(map(len, fake.writes))


def test_transfer_batch_tails(fake: FakeFtdi) -> None:
    bus = FtdiSpiBus()
    fake.writes.clear()
    fake.reads.clear()
    frames = [H("f00001aa"), H("0f000200"), H("0102")]
    assert bus.transfer_batch(frames, [0, 1, 0]) == [b"", H("ff"), b""]
    assert fake.frames == frames and fake.reads == [1]
    # nothing read back: one USB write, no read, no wait
    fake.reads.clear()
    assert bus.transfer_batch(frames, [0, 0, 0]) == [b"", b"", b""]
    assert fake.reads == [] and bus.stats["write_only_batches"] == 1
    assert bus.counters.calls == 2 and bus.stats["round_trips"] == 1
    with pytest.raises(ValueError, match="tails"):
        bus.transfer_batch(frames, [0, 5, 0])
    with pytest.raises(ValueError, match="tails"):
        bus.transfer_batch([], [1])


def test_tails_corpus_matches_whole_replies(fake: FakeFtdi) -> None:
    bus = FtdiSpiBus()
    rng = random.Random(3)
    for _ in range(200):
        frames = [bytes(rng.randrange(256) for _ in range(rng.choice((1, 4, 100, 1600, 3000))))
                  for _ in range(rng.randrange(1, 8))]
        tails = [rng.choice((0, len(f), rng.randrange(len(f) + 1))) for f in frames]
        whole = bus.transfer_batch(frames)
        assert bus.transfer_batch(frames, tails) == [
            w[len(w) - t:] for w, t in zip(whole, tails, strict=True)]


def test_short_read_raises(fake: FakeFtdi, monkeypatch: pytest.MonkeyPatch) -> None:
    bus = FtdiSpiBus(timeout_ms=10)
    monkeypatch.setattr(fake, "read_data_bytes", lambda size, attempt=1, gen=None: bytearray())
    t0 = time.monotonic()
    with pytest.raises(OSError, match="returned 0 of 4 bytes within 10 ms") as info:
        bus._read_exact(4)
    assert info.value.errno == errno.ETIMEDOUT
    assert time.monotonic() - t0 < 1.0


def test_timeout_reaches_pyftdi(fake: FakeFtdi) -> None:
    FtdiSpiBus(timeout_ms=250)
    assert fake.timeouts == (250, 250)
    with pytest.raises(ValueError, match="timeout_ms"):
        FtdiSpiBus(timeout_ms=0)


class _UsbError(OSError):
    """What pyusb raises: an errno, wrapped by pyftdi in an FtdiError."""


@pytest.mark.parametrize(("code", "says"), [
    (errno.ENODEV, "gone (unplugged?)"),
    (errno.ETIMEDOUT, "did not answer a USB read within 1000 ms (bus.timeout_ms)"),
    (errno.EPIPE, "USB read failed"),
])
def test_usb_errors_name_the_bridge(fake: FakeFtdi, monkeypatch: pytest.MonkeyPatch,
                                    code: int, says: str) -> None:
    bus = FtdiSpiBus()

    def broken(size: int, attempt: int = 1, gen: object = None) -> bytearray:
        try:
            raise _UsbError(code, "libusb says no")
        except OSError:
            raise OSError("UsbError: wrapped") from None  # pyftdi's FtdiError, context kept

    monkeypatch.setattr(fake, "read_data_bytes", broken)
    with pytest.raises(OSError) as info:
        bus.transfer(b"\x00")
    assert info.value.errno == code
    assert says in str(info.value) and "ftdi://ftdi:232h/1" in str(info.value)


def test_closed_bus(fake: FakeFtdi) -> None:
    bus = FtdiSpiBus()
    bus.close()
    bus.close()
    with pytest.raises(OSError):
        bus.transfer(b"\x00")


def test_bad_bus_arguments() -> None:
    with pytest.raises(ValueError):
        FtdiSpiBus(cs_pin=2)
    with pytest.raises(ValueError):
        FtdiSpiBus(mode=3)
    with pytest.raises(ValueError):
        FtdiSpiBus(speed_hz=100)


# --- FtdiPin --------------------------------------------------------------------------------------


def test_pin_drives_and_spi_keeps_it(fake: FakeFtdi) -> None:
    bus = FtdiSpiBus()
    reset = FtdiPin(bus, 4, active_low=True)  # ADBUS4 = /RESET
    assert isinstance(reset, Pin)
    fake.writes.clear()
    reset.set(True)  # assert reset: drive low
    assert fake.writes == [H("80081b")]
    reset.set(False)
    assert fake.writes[-1] == H("80181b")
    assert bus.gpio_calls == 2 and bus.counters.calls == 0
    bus.transfer_batch([b"\x01"])
    assert fake.writes[-1] == H("80101b3100000180181b87")  # ADBUS4 stays high
    assert fake.low == [0x18, 0x1B]
    assert reset.get() is False  # pin high, active low
    reset.close()
    reset.close()
    with pytest.raises(OSError):
        reset.set(True)


def test_pin_on_acbus(fake: FakeFtdi) -> None:
    bus = FtdiSpiBus()
    led = FtdiPin(bus, 9)  # ACBUS1
    led.set(True)
    assert fake.writes[-1] == H("820202")
    assert led.get() is True
    assert fake.writes[-1] == H("8387")


def test_pin_claims(fake: FakeFtdi) -> None:
    bus = FtdiSpiBus(cs_pin=5)
    for bit in (0, 1, 2, 5, 16, -1):
        with pytest.raises(ValueError):
            FtdiPin(bus, bit)
    pin = FtdiPin(bus, 4)
    with pytest.raises(ValueError):
        FtdiPin(bus, 4)
    pin.close()
    FtdiPin(bus, 4)  # free again
    with pytest.raises(ValueError):
        FtdiPin(bus, 6, poll_interval_ms=0)


def test_wait_edge_polls(fake: FakeFtdi) -> None:
    bus = FtdiSpiBus()
    irq = FtdiPin(bus, 6, poll_interval_ms=0.1)  # ADBUS6, an input until set() is called
    fake.inputs.extend([0x40, 0x40, 0x40, 0x00])  # high, high, high, then low
    fake.writes.clear()
    assert irq.wait_edge(Edge.FALLING, 1000) is True
    assert fake.writes == [H("8187")] * 4  # one GET_BITS_LOW + SEND_IMMEDIATE per poll
    assert fake.low[1] & 0x40 == 0  # never made an output


def test_wait_edge_logical_and_timeout(fake: FakeFtdi) -> None:
    bus = FtdiSpiBus()
    irq = FtdiPin(bus, 6, active_low=True, poll_interval_ms=0.5)
    # electrical high -> low is a logical rise for an active-low line
    fake.inputs.extend([0x40, 0x40, 0x00])
    assert irq.wait_edge(Edge.RISING, 1000) is True
    # the line stays low: no edge within 5 ms, and the loop is bounded
    fake.writes.clear()
    t0 = time.monotonic()
    assert irq.wait_edge(Edge.BOTH, 5) is False
    assert time.monotonic() - t0 < 0.5
    assert 1 <= len(fake.writes) <= 5 / 0.5 + 2
    # an edge that happened between two calls is still seen (baseline = last level seen)
    fake.inputs.extend([0x40])
    assert irq.wait_edge(Edge.FALLING, 0) is True
    fake.inputs.extend([0x40])
    assert irq.wait_edge(Edge.FALLING, 0) is False


def test_failed_round_trip_purges(fake: FakeFtdi, monkeypatch: pytest.MonkeyPatch) -> None:
    bus = FtdiSpiBus()
    purged: list[bool] = []
    monkeypatch.setattr(fake, "read_data_bytes", lambda size, attempt=1, gen=None: bytearray())
    monkeypatch.setattr(fake, "purge_buffers", lambda: purged.append(True), raising=False)
    monkeypatch.setattr(bus, "timeout_ms", 10.0)
    with pytest.raises(OSError, match="returned 0 of 1"):
        bus.transfer(b"\x00")
    assert purged == [True]
    assert bus.counters.transactions == 0 and bus.counters.calls == 1


# -- pyftdi URLs: one parser for the rig schema and the hardware check ---------------------


@pytest.mark.parametrize(("url", "want"), [
    ("ftdi://ftdi:232h/1", (0x0403, 0x6014, None, 1)),
    ("ftdi:///2", (0x0403, None, None, 2)),
    ("ftdi://ftdi:232H:FT1ABCDE/1", (0x0403, 0x6014, "FT1ABCDE", 1)),
    ("ftdi://0x0403:0x6014:1/1", (0x0403, 0x6014, "1", 1)),
    ("ftdi://ftdi:6014:1:2a/1", (0x0403, 0x6014, "1:2a", 1)),
    ("ftdi://ftdi:2232h/4", (0x0403, 0x6010, None, 4)),
])
def test_parse_url(url: str, want: tuple[object, ...]) -> None:
    from hilkit.bus.ftdi import FtdiUrl, parse_url

    assert parse_url(url) == FtdiUrl(*want)  # type: ignore[arg-type]


@pytest.mark.parametrize(("url", "says"), [
    ("ftdi://ftdi:232h/5", "expected"), ("usb://ftdi:232h/1", "expected"),
    ("ftdi://acme:232h/1", "vendor"), ("ftdi://ftdi:999x/1", "product"),
    ("ftdi://ftdi:232h:12345/1", "too large"), ("ftdi://ftdi:232h:1:zz/1", "BUS:ADDRESS"),
    ("ftdi://ftdi:232h/" + "1" * 5000, "expected"),
])
def test_parse_url_says_what_is_wrong(url: str, says: str) -> None:
    from hilkit.bus.ftdi import parse_url

    got = parse_url(url)
    assert isinstance(got, str) and says in got and len(got) < 200

"""FT232H MPSSE bus without hardware: command streams byte by byte, the clock divisor, round-trip
planning, and FtdiSpiBus/FtdiPin against a fake pyftdi ``Ftdi`` that interprets MPSSE."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import pytest

from hilkit.bus import ftdi as fb
from hilkit.bus.ftdi import (
    FtdiPin,
    FtdiSpiBus,
    MpsseRoundTrip,
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
    assert build_mpsse_batch([b""], 3, 0x08, 0x0B) == H("80000b80080b87")
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


# --- round trips within the FIFO ---------------------------------------------------------------


def _frame_stream(n: int, data: bytes) -> bytes:
    return H("80000b") + bytes((0x31, (n - 1) & 0xFF, (n - 1) >> 8)) + data + H("80080b")


def test_plan_splits_on_frame_boundaries() -> None:
    frames = [i.to_bytes(4, "big") for i in range(300)]
    trips = plan_mpsse_batch(frames, 3, 0x08, 0x0B, max_read=1024)
    assert [t.read_len for t in trips] == [1024, 176]
    assert trips[0].command == b"".join(_frame_stream(4, f) for f in frames[:256]) + H("87")
    assert trips[1].command == b"".join(_frame_stream(4, f) for f in frames[256:]) + H("87")
    # one round trip when it fits
    assert plan_mpsse_batch(frames[:256], 3, 0x08, 0x0B, max_read=1024) == [trips[0]]
    assert plan_mpsse_batch([], 3, 0x08, 0x0B) == []


def test_plan_respects_write_budget() -> None:
    frames = [b"\x00" * 4] * 10  # 13 command bytes each, plus 0x87 per round trip
    trips = plan_mpsse_batch(frames, 3, 0x08, 0x0B, max_read=1024, max_write=64)
    assert [t.read_len for t in trips] == [16, 16, 8]
    assert all(len(t.command) <= 64 for t in trips)
    assert [len(t.command) for t in trips] == [53, 53, 27]


def test_plan_big_frame_keeps_cs_low_across_round_trips() -> None:
    small = H("01020304")
    big = bytes(i & 0xFF for i in range(2500))
    trips = plan_mpsse_batch([small, big, small], 3, 0x08, 0x0B, max_read=1024)
    assert (
        trips
        == [
            # the small frame alone: the big one starts a fresh round trip
            MpsseRoundTrip(_frame_stream(4, small) + H("87"), 4),
            MpsseRoundTrip(H("80000b31ff03") + big[:1024] + H("87"), 1024),  # CS low, no CS high
            MpsseRoundTrip(H("31ff03") + big[1024:2048] + H("87"), 1024),  # CS still low
            # the rest of the big frame, CS high, then the next small frame fits behind it
            MpsseRoundTrip(
                H("31c301") + big[2048:] + H("80080b") + _frame_stream(4, small) + H("87"), 456
            ),
        ]
    )


def test_plan_bad_budgets() -> None:
    with pytest.raises(ValueError):
        plan_mpsse_batch([b"\x00"], 3, 0, 0, max_read=0)
    with pytest.raises(ValueError):
        plan_mpsse_batch([b"\x00"], 3, 0, 0, max_write=8)


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

    def read_data_bytes(self, size: int, attempt: int = 1) -> bytearray:
        self.reads.append(size)
        n = min(size, len(self.out))
        return bytearray(self.out.popleft() for _ in range(n))

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
            elif op in (0x31, 0x34):
                n = (data[i + 1] | data[i + 2] << 8) + 1
                payload = data[i + 3 : i + 3 + n]
                assert len(payload) == n
                assert self.frame is not None, "data clocked with CS high"
                self.frame += payload
                self.out.extend(b ^ 0xFF for b in payload)
                assert len(self.out) <= self.fifo, "read-back overflows the chip's FIFO"
                i += 3 + n
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


def test_transfer_batch_chunks(fake: FakeFtdi) -> None:
    bus = FtdiSpiBus()
    fake.writes.clear()
    fake.reads.clear()
    frames = [i.to_bytes(4, "big") for i in range(300)] + [bytes(range(256)) * 10]
    rx = bus.transfer_batch(frames)
    assert rx == [bytes(b ^ 0xFF for b in f) for f in frames]
    assert fake.frames == frames
    # 256 small frames; 44 small frames (176 B); the 2560-byte frame in 1024 + 1024 + 512
    assert fake.reads == [1024, 176, 1024, 1024, 512]
    assert len(fake.writes) == 5
    assert all(w.endswith(b"\x87") for w in fake.writes)
    assert bus.counters.calls == 5 and bus.counters.transactions == 301
    assert bus.counters.bytes == 1200 + 2560


def test_short_read_raises(fake: FakeFtdi, monkeypatch: pytest.MonkeyPatch) -> None:
    bus = FtdiSpiBus()
    monkeypatch.setattr(fake, "read_data_bytes", lambda size, attempt=1: bytearray())
    t0 = time.monotonic()
    with pytest.raises(OSError, match="returned 0 of 4"):
        bus._read_exact(4, 0.01)
    assert time.monotonic() - t0 < 1.0


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
    bus.transfer_batch([b"\x00"])
    assert fake.writes[-1] == H("80101b3100000080181b87")  # ADBUS4 stays high
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
    monkeypatch.setattr(fake, "read_data_bytes", lambda size, attempt=1: bytearray())
    monkeypatch.setattr(fake, "purge_buffers", lambda: purged.append(True), raising=False)
    monkeypatch.setattr(bus, "speed_hz", 1e12)  # keeps the read deadline at 0.5 s
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

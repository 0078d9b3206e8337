"""spidev bus without hardware: ioctl numbers, the transfer array byte by byte, message splits,
and the whole ioctl path against a fake ``fcntl.ioctl`` that plays an SPI slave."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hilkit.bus import spidev as sp
from hilkit.bus.spidev import (
    DEFAULT_BUFSIZ,
    SPI_IOC_MAX_TRANSFERS,
    SpidevBus,
    build_transfer_array,
    default_dma_align,
    read_bufsiz,
    spi_ioc_message,
    split_batch,
)
from hilkit.port import HardwareNotFound, SpiBus

little_endian_only = pytest.mark.skipif(
    sys.byteorder != "little", reason="expected bytes are written for a little-endian host"
)


# --- ioctl numbers -------------------------------------------------------------------------


def _iow(type_: str, nr: int, size: int) -> int:
    # <asm-generic/ioctl.h>: dir (2 bits, write = 1) << 30 | size (14 bits) << 16 | type << 8 | nr
    return (1 << 30) | (size << 16) | (ord(type_) << 8) | nr


@pytest.mark.parametrize(
    ("n", "value"),
    [(1, 0x40206B00), (2, 0x40406B00), (4, 0x40806B00), (511, 0x7FE06B00)],
)
def test_spi_ioc_message_values(n: int, value: int) -> None:
    assert spi_ioc_message(n) == value == _iow("k", 0, 32 * n)


@pytest.mark.parametrize("n", [0, -1, 512, 1000])
def test_spi_ioc_message_out_of_range(n: int) -> None:
    # SPI_MSGSIZE(512) = 16384 does not fit 14 bits: the kernel macro yields size 0 (invalid)
    with pytest.raises(ValueError):
        spi_ioc_message(n)


def test_setting_ioctl_numbers() -> None:
    assert sp.SPI_IOC_WR_MODE == 0x40016B01 == _iow("k", 1, 1)
    assert sp.SPI_IOC_WR_BITS_PER_WORD == 0x40016B03 == _iow("k", 3, 1)
    assert sp.SPI_IOC_WR_MAX_SPEED_HZ == 0x40046B04 == _iow("k", 4, 4)
    assert sp.SPI_IOC_RD_MODE == 0x80016B01
    assert sp.SPI_IOC_MAX_TRANSFERS == 511
    assert sp.SPI_IOC_TRANSFER_SIZE == 32


# --- struct spi_ioc_transfer[] ---------------------------------------------------------------


@little_endian_only
def test_transfer_array_bytes() -> None:
    frames = [b"\x01\x02\x03\x04", b"\xaa", b"\x10\x20"]
    got = build_transfer_array(frames, 0x1000, 0x7F00_0000_2000, 8_000_000, 8)
    expected = bytes.fromhex(
        # tx_buf           rx_buf            len      speed    delay bpw cs tx rx wd pad
        "0010000000000000"
        "00200000007f0000"
        "04000000"
        "00127a00"
        "0000"
        "08"
        "01"
        "00"
        "00"
        "00"
        "00"
        # frame 2 starts 4 bytes further in both buffers
        "0410000000000000"
        "04200000007f0000"
        "01000000"
        "00127a00"
        "0000"
        "08"
        "01"
        "00"
        "00"
        "00"
        "00"
        # frame 3, 5 bytes in; the last transfer has cs_change 0
        "0510000000000000"
        "05200000007f0000"
        "02000000"
        "00127a00"
        "0000"
        "08"
        "00"
        "00"
        "00"
        "00"
        "00"
    )
    assert len(got) == 3 * 32
    assert got == expected


@little_endian_only
def test_transfer_array_single_frame_has_no_cs_change() -> None:
    got = build_transfer_array([b"\x00" * 16], 8, 24, 1_000_000, 16)
    assert got == bytes.fromhex("080000000000000018000000000000001000000040420f000000100000000000")


def test_transfer_array_empty() -> None:
    assert build_transfer_array([], 0, 0, 1, 8) == b""


# --- splitting a batch -------------------------------------------------------------------------


def test_split_at_511_transfers() -> None:
    frames = [b"\x00" * 4] * 1200
    groups = split_batch(frames, SPI_IOC_MAX_TRANSFERS, 1 << 20)
    assert [len(g) for g in groups] == [511, 511, 178]
    assert [i for g in groups for i in g] == list(range(1200))


def test_split_at_bufsiz_bytes() -> None:
    frames = [b"\x00" * 1000] * 10
    assert split_batch(frames, 511, 4096) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    # exactly bufsiz fits one message
    assert split_batch([b"\x00" * 1024] * 4, 511, 4096) == [[0, 1, 2, 3]]
    assert split_batch([b"\x00" * 1024] * 4 + [b"\x00"], 511, 4096) == [[0, 1, 2, 3], [4]]


def test_split_with_dma_alignment() -> None:
    # spidev rounds each transfer up to ARCH_DMA_MINALIGN (128 on arm64) in its bufsiz count
    frames = [b"\x00" * 4] * 100
    groups = split_batch(frames, 511, 4096, align=128)
    assert [len(g) for g in groups] == [32, 32, 32, 4]
    assert split_batch([b"\x00" * 129, b"\x00"], 511, 384, align=128) == [[0, 1]]
    assert split_batch([b"\x00" * 129, b"\x00" * 2], 511, 383, align=128) == [[0], [1]]


def test_split_mixed_limits_and_edge_cases() -> None:
    assert split_batch([], 511, 4096) == []
    assert split_batch([b""] * 3, 2, 1) == [[0, 1], [2]]
    with pytest.raises(ValueError, match="bufsiz"):
        split_batch([b"\x00", b"\x00" * 4097], 511, 4096)
    with pytest.raises(ValueError):
        split_batch([b"\x00"], 0, 4096)


def test_read_bufsiz(tmp_path: Path) -> None:
    f = tmp_path / "bufsiz"
    f.write_text("65536\n")
    assert read_bufsiz(str(f)) == 65536
    f.write_text("garbage")
    assert read_bufsiz(str(f)) == DEFAULT_BUFSIZ == 4096
    assert read_bufsiz(str(tmp_path / "missing")) == 4096


def test_default_dma_align() -> None:
    assert default_dma_align("aarch64") == 128
    assert default_dma_align("armv7l") == 64
    assert default_dma_align("armv6l") == 32
    assert default_dma_align("x86_64") == 8
    assert default_dma_align("riscv64") == 128


# --- opening -------------------------------------------------------------------------------------


def test_missing_device_fails_fast_with_hint(tmp_path: Path) -> None:
    path = str(tmp_path / "spidev9.9")  # never a real node: on a Pi, spidev0.0 may be live
    t0 = time.monotonic()
    with pytest.raises(HardwareNotFound) as info:
        SpidevBus(path)
    assert time.monotonic() - t0 < 5.0  # missing hardware is reported within 5 s
    err = info.value
    assert err.what == path
    assert err.problem == "not found"
    assert "dtparam=spi=on" in err.hint and "/boot/firmware/config.txt" in err.hint
    assert "ls /dev/spidev*" in err.hint


def test_permission_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def denied(path: str, flags: int, mode: int = 0o777) -> int:
        if path == "/dev/spidev0.1":
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(HardwareNotFound) as info:
        SpidevBus("/dev/spidev0.1")
    assert info.value.what == "/dev/spidev0.1"
    assert info.value.problem == "permission denied"
    assert "spi group" in info.value.hint


def test_not_a_spidev_node(tmp_path: Path) -> None:
    dev = tmp_path / "spidev9.9"
    dev.write_bytes(b"")
    with pytest.raises(HardwareNotFound) as info:
        SpidevBus(str(dev))  # a regular file: the mode ioctl fails with ENOTTY
    assert "not a usable spidev device" in info.value.problem


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        SpidevBus("/dev/null", mode=4)
    with pytest.raises(ValueError):
        SpidevBus("/dev/null", speed_hz=0)


# --- the ioctl path end to end, against a fake slave ---------------------------------------------

_XFER = struct.Struct("=QQIIHBBBBBB")


class FakeSpidev:
    """Plays the kernel side of spidev: records settings and messages, answers ~tx per byte.

    With ``bufsiz``/``align`` set it answers EMSGSIZE like spidev_message() does.
    """

    def __init__(self, bufsiz: int | None = None, align: int = 1) -> None:
        self.settings: dict[str, int] = {}
        self.messages: list[list[tuple[int, ...]]] = []
        self.frames: list[bytes] = []  # tx of each CS frame, as the slave saw it
        self.refused = 0
        self.bufsiz = bufsiz
        self.align = align

    def ioctl(self, fd: int, request: int, arg: Any = 0, mutate: bool = True) -> Any:
        if request == sp.SPI_IOC_WR_MODE:
            self.settings["mode"] = arg[0]
            return arg
        if request == sp.SPI_IOC_WR_BITS_PER_WORD:
            self.settings["bits"] = arg[0]
            return arg
        if request == sp.SPI_IOC_WR_MAX_SPEED_HZ:
            self.settings["speed"] = struct.unpack("=I", arg)[0]
            return arg
        assert request >> 30 == 1 and request & 0xFFFF == 0x6B00, hex(request)
        size = (request >> 16) & 0x3FFF
        assert isinstance(arg, bytearray) and len(arg) == size and size % 32 == 0
        entries = [_XFER.unpack_from(arg, i) for i in range(0, size, 32)]
        if self.bufsiz is not None:
            total = sum(-(-e[2] // self.align) * self.align for e in entries)
            if total > self.bufsiz:
                self.refused += 1
                raise OSError(errno.EMSGSIZE, os.strerror(errno.EMSGSIZE))
        self.messages.append(entries)
        frame = b""
        for tx, rx, n, _speed, _delay, _bits, cs_change, *_ in entries:
            data = ctypes.string_at(tx, n)
            if rx:  # rx_buf = 0: nothing is copied back (spidev_message())
                ctypes.memmove(rx, bytes(b ^ 0xFF for b in data), n)
            frame += data
            if cs_change:
                self.frames.append(frame)
                frame = b""
        self.frames.append(frame)  # CS rises at the end of every message
        return sum(e[2] for e in entries)


@pytest.fixture
def fake_dev(tmp_path: Path) -> str:
    dev = tmp_path / "spidev0.0"
    dev.write_bytes(b"")
    return str(dev)


def test_loopback_batch_one_ioctl(monkeypatch: pytest.MonkeyPatch, fake_dev: str) -> None:
    fake = FakeSpidev()
    monkeypatch.setattr(fcntl, "ioctl", fake.ioctl)
    bus = SpidevBus(fake_dev, speed_hz=10_000_000, mode=0, bufsiz=4096, dma_align=1)
    assert isinstance(bus, SpiBus)
    assert fake.settings == {"mode": 0, "bits": 8, "speed": 10_000_000}

    frames = [bytes([0xF0, 0x00, i, 0x00]) for i in range(10)] + [b"\x12\x34\x56"]
    rx = bus.transfer_batch(frames)
    assert rx == [bytes(b ^ 0xFF for b in f) for f in frames]
    assert fake.frames == frames
    assert len(fake.messages) == 1
    msg = fake.messages[0]
    assert [e[2] for e in msg] == [4] * 10 + [3]
    assert [e[6] for e in msg] == [1] * 10 + [0]  # cs_change on all but the last
    assert {e[3] for e in msg} == {10_000_000} and {e[5] for e in msg} == {8}
    # one contiguous buffer per direction
    assert [e[0] - msg[0][0] for e in msg] == [4 * i for i in range(11)]
    assert [e[1] - msg[0][1] for e in msg] == [4 * i for i in range(11)]
    assert bus.counters.bytes == 43
    assert bus.counters.transactions == 11
    assert bus.counters.calls == 1

    assert bus.transfer(b"\x00\xff") == b"\xff\x00"
    assert bus.counters.calls == 2 and bus.counters.transactions == 12
    assert bus.transfer_batch([]) == []
    assert bus.counters.calls == 2
    bus.close()
    bus.close()
    with pytest.raises(OSError):
        bus.transfer(b"\x00")


def test_batch_split_over_ioctls(monkeypatch: pytest.MonkeyPatch, fake_dev: str) -> None:
    fake = FakeSpidev(bufsiz=4096, align=128)
    monkeypatch.setattr(fcntl, "ioctl", fake.ioctl)
    bus = SpidevBus(fake_dev, bufsiz=4096, dma_align=128)
    frames = [i.to_bytes(4, "big") for i in range(100)]
    rx = bus.transfer_batch(frames)
    assert rx == [bytes(b ^ 0xFF for b in f) for f in frames]
    assert [len(m) for m in fake.messages] == [32, 32, 32, 4]
    assert fake.frames == frames
    assert bus.counters.calls == 4 and bus.counters.transactions == 100
    assert bus.counters.bytes == 400
    assert fake.refused == 0


def test_511_transfer_limit(monkeypatch: pytest.MonkeyPatch, fake_dev: str) -> None:
    fake = FakeSpidev()
    monkeypatch.setattr(fcntl, "ioctl", fake.ioctl)
    bus = SpidevBus(fake_dev, bufsiz=65536, dma_align=1)
    frames = [b"\x01\x02\x03\x04"] * 600
    assert bus.transfer_batch(frames) == [b"\xfe\xfd\xfc\xfb"] * 600
    assert [len(m) for m in fake.messages] == [511, 89]
    assert bus.counters.calls == 2


def test_emsgsize_halves_and_remembers(monkeypatch: pytest.MonkeyPatch, fake_dev: str) -> None:
    # The kernel aligns to 128 but the bus guessed 8: spidev refuses, the bus halves.
    fake = FakeSpidev(bufsiz=4096, align=128)
    monkeypatch.setattr(fcntl, "ioctl", fake.ioctl)
    bus = SpidevBus(fake_dev, bufsiz=4096, dma_align=8)
    frames = [i.to_bytes(4, "big") for i in range(64)]
    assert bus.transfer_batch(frames) == [bytes(b ^ 0xFF for b in f) for f in frames]
    assert fake.frames == frames
    assert [len(m) for m in fake.messages] == [32, 32]
    assert fake.refused == 1
    assert bus.counters.calls == 3  # the refused ioctl is a syscall too
    assert bus.counters.transactions == 64
    bus.transfer_batch(frames)  # now sized right from the start
    assert fake.refused == 1 and bus.counters.calls == 5


def test_other_ioctl_errors_propagate(monkeypatch: pytest.MonkeyPatch, fake_dev: str) -> None:
    fake = FakeSpidev()
    monkeypatch.setattr(fcntl, "ioctl", fake.ioctl)
    bus = SpidevBus(fake_dev, dma_align=1)

    def broken(fd: int, request: int, arg: Any = 0, mutate: bool = True) -> Any:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(fcntl, "ioctl", broken)
    with pytest.raises(OSError) as info:
        bus.transfer_batch([b"\x00"] * 4)
    assert info.value.errno == errno.EIO
    assert bus.counters.transactions == 0

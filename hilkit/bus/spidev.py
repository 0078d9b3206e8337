"""SpiBus over Linux spidev: one ``SPI_IOC_MESSAGE`` ioctl carries a whole batch of CS frames.

Every frame of a batch becomes one ``struct spi_ioc_transfer``; ``cs_change=1`` on all but the
last transfer of a message makes the controller release chip select between frames (what the
W5100 needs once per 4-byte frame), so hundreds of frames cost one syscall. A batch is split
into several ioctls only where the kernel forces it:

* ``SPI_MSGSIZE(N)`` must fit the 14-bit size field of the ioctl number: at most 511 transfers;
* spidev copies every transfer into a bounce buffer of ``bufsiz`` bytes per direction
  (``/sys/module/spidev/parameters/bufsiz``, 4096 by default), and since Linux 5.9 (backported
  to stable, commit "spi: spidev: Align buffers for DMA") it rounds **each** transfer up to the
  DMA alignment (``ARCH_KMALLOC_MINALIGN``, later ``ARCH_DMA_MINALIGN``: 128 bytes on arm64,
  the L1 line on 32-bit ARM) when it counts against ``bufsiz``. A 4-byte W5100 frame therefore
  costs 128 bytes of ``bufsiz`` on a 64-bit Raspberry Pi OS: 32 frames per ioctl with the
  default ``bufsiz``; boot with ``spidev.bufsiz=65536`` to reach the 511-transfer limit.

The ioctl numbers and the struct layout come from ``<linux/spi/spidev.h>`` and the generic
``<asm-generic/ioctl.h>`` encoding (ARM, arm64, x86, RISC-V; not MIPS/PowerPC/SPARC, whose
direction bits differ). Nothing here imports a third-party module: py-spidev is not needed.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import struct
from collections.abc import Sequence

from hilkit.port.errors import HardwareNotFound
from hilkit.port.spi import BusCounters, check_tails

__all__ = [
    "BUFSIZ_PATH",
    "DEFAULT_BUFSIZ",
    "SPI_IOC_MAX_TRANSFERS",
    "SPI_IOC_TRANSFER_SIZE",
    "SpidevBus",
    "build_transfer_array",
    "default_dma_align",
    "read_bufsiz",
    "spi_ioc_message",
    "split_batch",
]

# --- <asm-generic/ioctl.h> ----------------------------------------------------------------
_IOC_NRBITS = 8
_IOC_TYPEBITS = 8
_IOC_SIZEBITS = 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS  # 8
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS  # 16
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS  # 30
_IOC_WRITE = 1
_IOC_READ = 2


def _IOC(direction: int, type_: int, nr: int, size: int) -> int:  # the kernel macro
    return (
        (direction << _IOC_DIRSHIFT)
        | (type_ << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _IOW(type_: int, nr: int, size: int) -> int:  # the kernel macro
    return _IOC(_IOC_WRITE, type_, nr, size)


def _IOR(type_: int, nr: int, size: int) -> int:  # the kernel macro
    return _IOC(_IOC_READ, type_, nr, size)


# --- <linux/spi/spidev.h> -----------------------------------------------------------------
SPI_IOC_MAGIC = ord("k")
SPI_IOC_RD_MODE = _IOR(SPI_IOC_MAGIC, 1, 1)  # __u8
SPI_IOC_WR_MODE = _IOW(SPI_IOC_MAGIC, 1, 1)  # __u8   = 0x40016B01
SPI_IOC_RD_BITS_PER_WORD = _IOR(SPI_IOC_MAGIC, 3, 1)  # __u8
SPI_IOC_WR_BITS_PER_WORD = _IOW(SPI_IOC_MAGIC, 3, 1)  # __u8   = 0x40016B03
SPI_IOC_RD_MAX_SPEED_HZ = _IOR(SPI_IOC_MAGIC, 4, 4)  # __u32
SPI_IOC_WR_MAX_SPEED_HZ = _IOW(SPI_IOC_MAGIC, 4, 4)  # __u32  = 0x40046B04

# struct spi_ioc_transfer {
#     __u64 tx_buf; __u64 rx_buf; __u32 len; __u32 speed_hz;
#     __u16 delay_usecs; __u8 bits_per_word; __u8 cs_change; __u8 tx_nbits; __u8 rx_nbits;
#     __u8 word_delay_usecs; __u8 pad;
# };  "the struct layout is the same in 64bit and 32bit userspace": 32 bytes, native order.
_SPI_IOC_TRANSFER = struct.Struct("=QQIIHBBBBBB")
SPI_IOC_TRANSFER_SIZE = _SPI_IOC_TRANSFER.size  # 32
assert SPI_IOC_TRANSFER_SIZE == 32

# SPI_MSGSIZE(N) is 0 (an invalid request) unless N * 32 < 1 << _IOC_SIZEBITS.
SPI_IOC_MAX_TRANSFERS = ((1 << _IOC_SIZEBITS) - 1) // SPI_IOC_TRANSFER_SIZE  # 511

# --- drivers/spi/spidev.c -----------------------------------------------------------------
BUFSIZ_PATH = "/sys/module/spidev/parameters/bufsiz"
DEFAULT_BUFSIZ = 4096  # module_param(bufsiz, ...) default

SPI_MODES = (0, 1, 2, 3)  # CPOL | CPHA; flag bits (SPI_CS_HIGH, ...) are not offered here

_HINT_MISSING = (
    "enable SPI: dtparam=spi=on in /boot/firmware/config.txt, then reboot; check ls /dev/spidev*"
)
_HINT_PERMISSION = "add the user to the spi group or run as root"


def spi_ioc_message(n: int) -> int:
    """``SPI_IOC_MESSAGE(n)`` = ``_IOW('k', 0, char[SPI_MSGSIZE(n)])`` for 1 <= n <= 511."""
    if not 1 <= n <= SPI_IOC_MAX_TRANSFERS:
        raise ValueError(f"SPI_IOC_MESSAGE carries 1..{SPI_IOC_MAX_TRANSFERS} transfers, not {n}")
    return _IOW(SPI_IOC_MAGIC, 0, n * SPI_IOC_TRANSFER_SIZE)


def build_transfer_array(
    frames: Sequence[bytes],
    tx_addr: int,
    rx_addr: int,
    speed_hz: int,
    bits: int,
    tails: Sequence[int] | None = None,
) -> bytes:
    """The ``struct spi_ioc_transfer[len(frames)]`` for frames laid end to end in two buffers.

    Frame ``i`` is read from ``tx_addr + offset_i`` and written to ``rx_addr + offset_i`` where
    ``offset_i`` is the total length of the frames before it. ``cs_change`` is 1 on every
    transfer but the last, so CS rises between frames and stays released after the message.
    A frame whose tail is 0 (``hilkit.port.SpiBus``: nothing of its reply is read) gets
    ``rx_buf = 0``: spidev then copies nothing back for it (spidev.c, spidev_message()).
    """
    out = bytearray(len(frames) * SPI_IOC_TRANSFER_SIZE)
    offset = 0
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        n = len(frame)
        _SPI_IOC_TRANSFER.pack_into(
            out,
            i * SPI_IOC_TRANSFER_SIZE,
            tx_addr + offset,  # tx_buf
            rx_addr + offset if tails is None or tails[i] else 0,  # rx_buf
            n,  # len
            speed_hz,  # speed_hz
            0,  # delay_usecs
            bits,  # bits_per_word
            1 if i != last else 0,  # cs_change
            0,  # tx_nbits (0 = single wire)
            0,  # rx_nbits
            0,  # word_delay_usecs
            0,  # pad
        )
        offset += n
    return bytes(out)


def _align_up(n: int, align: int) -> int:
    return -(-n // align) * align


def split_batch(
    frames: Sequence[bytes], max_transfers: int, bufsiz: int, *, align: int = 1
) -> list[list[int]]:
    """Group frame indices, in order, into ioctl-sized messages.

    Each group has at most ``max_transfers`` frames and its frames, each rounded up to
    ``align`` bytes (spidev's per-transfer DMA alignment), total at most ``bufsiz``. A frame
    that cannot fit a message on its own raises ``ValueError``: one CS frame cannot be split.
    """
    if max_transfers < 1 or bufsiz < 1 or align < 1:
        raise ValueError("max_transfers, bufsiz and align must be positive")
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, frame in enumerate(frames):
        cost = _align_up(len(frame), align)
        if cost > bufsiz:
            raise ValueError(
                f"frame {i} of {len(frame)} bytes needs {cost} bytes of spidev's {bufsiz}-byte "
                "buffer; boot with spidev.bufsiz=65536 (kernel command line) to allow it"
            )
        if current and (len(current) == max_transfers or used + cost > bufsiz):
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += cost
    if current:
        groups.append(current)
    return groups


def read_bufsiz(path: str = BUFSIZ_PATH) -> int:
    """spidev's ``bufsiz`` module parameter; ``DEFAULT_BUFSIZ`` if the file is unreadable."""
    try:
        with open(path, encoding="ascii") as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return DEFAULT_BUFSIZ
    return value if value > 0 else DEFAULT_BUFSIZ


def default_dma_align(machine: str | None = None) -> int:
    """The per-transfer alignment spidev applies to ``bufsiz`` accounting, per kernel arch.

    ``uname -m`` names the *kernel's* architecture (a 64-bit kernel under a 32-bit Raspberry Pi
    OS userland reports aarch64). arm64 ``ARCH_DMA_MINALIGN`` is 128; 32-bit ARM uses its L1
    line (64 on ARMv7, 32 on ARMv6); x86 uses 8. Unknown architectures get the safe 128.
    """
    m = (machine if machine is not None else platform.machine()).lower()
    if m in ("aarch64", "arm64"):
        return 128
    if m.startswith("armv7") or m == "armv8l":
        return 64
    if m.startswith("armv6") or m.startswith("armv5"):
        return 32
    if m in ("x86_64", "amd64", "i386", "i486", "i586", "i686"):
        return 8
    return 128


def _buffer_address(buf: bytearray) -> tuple[int, object]:
    """The address of ``buf``'s first byte and the ctypes view that must outlive its use."""
    if not buf:
        return 0, None
    view = (ctypes.c_ubyte * len(buf)).from_buffer(buf)
    return ctypes.addressof(view), view


class SpidevBus:
    """A SpiBus on a spidev node; ``transfer_batch`` issues one ioctl per kernel-sized message.

    ``bufsiz`` defaults to the running kernel's value, ``dma_align`` to ``default_dma_align()``.
    If the kernel still answers ``EMSGSIZE`` (an alignment larger than guessed), the message is
    halved and retried, and later batches use the smaller message; nothing was clocked in that
    case (spidev checks the sizes before it starts the message).
    """

    # What one call (one SPI_IOC_MESSAGE ioctl) costs the host beyond clocking: measured
    # on a Raspberry Pi 4 (syscall + DMA setup); an order of magnitude, not a guarantee.
    call_overhead_us: float = 30.0

    def __init__(
        self,
        path: str = "/dev/spidev0.0",
        speed_hz: int = 8_000_000,
        mode: int = 0,
        bits_per_word: int = 8,
        *,
        bufsiz: int | None = None,
        dma_align: int | None = None,
    ) -> None:
        if mode not in SPI_MODES:
            raise ValueError(f"SPI mode must be 0..3, not {mode}")
        if speed_hz <= 0:
            raise ValueError(f"speed_hz must be positive, not {speed_hz}")
        if not 1 <= bits_per_word <= 32:
            raise ValueError(f"bits_per_word must be 1..32, not {bits_per_word}")
        self.path = path
        self.speed_hz = speed_hz
        self.mode = mode
        self.bits_per_word = bits_per_word
        self.bufsiz = bufsiz if bufsiz is not None else read_bufsiz()
        self.dma_align = dma_align if dma_align is not None else default_dma_align()
        self.counters = BusCounters()
        self._max_transfers = SPI_IOC_MAX_TRANSFERS  # lowered if the kernel says EMSGSIZE
        self._fd: int | None = None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise HardwareNotFound(path, "not found", _HINT_MISSING) from exc
        except PermissionError as exc:
            raise HardwareNotFound(path, "permission denied", _HINT_PERMISSION) from exc
        except OSError as exc:  # ENXIO, ENODEV: a node without a device behind it
            raise HardwareNotFound(
                path, f"cannot open ({os.strerror(exc.errno or 0)})", _HINT_MISSING
            ) from exc
        try:
            fcntl.ioctl(fd, SPI_IOC_WR_MODE, struct.pack("=B", mode))
            fcntl.ioctl(fd, SPI_IOC_WR_BITS_PER_WORD, struct.pack("=B", bits_per_word))
            fcntl.ioctl(fd, SPI_IOC_WR_MAX_SPEED_HZ, struct.pack("=I", speed_hz))
        except OSError as exc:
            os.close(fd)
            raise HardwareNotFound(
                path,
                f"not a usable spidev device ({os.strerror(exc.errno or 0)})",
                "check the path names a spidev node (ls -l /dev/spidev*) and that the "
                "controller supports the mode and word size",
            ) from exc
        self._fd = fd

    # -- SpiBus ----------------------------------------------------------------------------
    def transfer(self, data: bytes) -> bytes:
        return self.transfer_batch([data])[0]

    def transfer_batch(
        self, frames: Sequence[bytes], tails: Sequence[int] | None = None
    ) -> list[bytes]:
        fd = self._require_open()
        if tails is not None:
            check_tails(frames, tails)
        if not frames:
            return []
        results: list[bytes] = []
        for group in split_batch(frames, self._max_transfers, self.bufsiz, align=self.dma_align):
            results.extend(
                self._message(
                    fd,
                    [frames[i] for i in group],
                    None if tails is None else [tails[i] for i in group],
                )
            )
        self.counters.bytes += sum(len(f) for f in frames)
        self.counters.transactions += len(frames)
        return results

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def fileno(self) -> int:
        return self._require_open()

    def __enter__(self) -> SpidevBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------
    def _require_open(self) -> int:
        if self._fd is None:
            raise OSError(errno.EBADF, f"{self.path}: bus is closed")
        return self._fd

    def _message(self, fd: int, frames: list[bytes], tails: list[int] | None) -> list[bytes]:
        """One SPI_IOC_MESSAGE: contiguous tx/rx buffers, one transfer array."""
        tx = bytearray(b"".join(frames))
        rx = bytearray(len(tx))
        tx_addr, tx_view = _buffer_address(tx)
        rx_addr, rx_view = _buffer_address(rx)
        array = bytearray(
            build_transfer_array(
                frames, tx_addr, rx_addr, self.speed_hz, self.bits_per_word, tails
            )
        )
        self.counters.calls += 1
        try:
            # A mutable buffer is passed to the kernel as is (no 1024-byte copy limit).
            fcntl.ioctl(fd, spi_ioc_message(len(frames)), array)
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE or len(frames) == 1:
                raise
            half = len(frames) // 2
            self._max_transfers = min(self._max_transfers, half)
            del tx_view, rx_view
            return self._message(
                fd, frames[:half], None if tails is None else tails[:half]
            ) + self._message(fd, frames[half:], None if tails is None else tails[half:])
        del tx_view, rx_view  # the kernel is done with the addresses
        out: list[bytes] = []
        offset = 0
        for i, frame in enumerate(frames):
            n = len(frame)
            t = n if tails is None else tails[i]
            out.append(bytes(rx[offset + n - t : offset + n]))
            offset += n
        return out

"""SpiBus over an FTDI FT232H in MPSSE mode: a whole batch of CS frames is ONE round trip.

hilkit builds the MPSSE command stream itself (pure functions below, tested byte by byte);
pyftdi only opens the device (``open_mpsse_from_url``) and moves bytes (``write_data``,
``read_data_bytes``, which strips the two modem-status bytes of every USB packet).

Wiring (MPSSE channel A): ADBUS0 SCK, ADBUS1 MOSI, ADBUS2 MISO, ADBUS``cs_pin`` chip select
(active low, driven by software with SET_BITS_LOW). The other ADBUS/ACBUS pins are spare GPIO
(``FtdiPin``): their direction and value are tracked, and every SET_BITS_LOW of a batch writes
them back unchanged, so a reset line keeps its level while SPI runs.

What crosses USB. Bytes the caller reads (the ``tails`` of ``hilkit.port.spi.SpiBus``) are
clocked full duplex; the rest write-only, so they cost no read-back. The FT232H has a 1 KiB
FIFO towards the host: while the host is busy writing, the read-back of what it wrote must
fit in it, or the MPSSE stalls with the write still pending (pyftdi's I2C code sizes its
batches by the same FIFO). So the command stream is cut into chunks of at most half the FIFO
of read-back, and each chunk is written as soon as the read-back already in flight leaves it
room: the first ones before the read, the others from pyftdi's ``request_gen`` hook while the
read goes on. One batch, one wait for the bridge, however much it reads.

Opcodes and their names follow libftdi's ``ftdi.h`` names for the commands of FTDI AN_108;
``docs/hardware/ft232h.md`` (sections cited below as "ft232h §N") says what each does.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from hilkit.port.errors import HardwareNotFound
from hilkit.port.pin import Edge
from hilkit.port.spi import BusCounters, check_tails

__all__ = [
    "MPSSE_BASE_CLOCK_HZ",
    "STAT_KEYS",
    "FtdiPin",
    "FtdiSpiBus",
    "MpsseChunk",
    "build_mpsse_batch",
    "build_mpsse_setup",
    "mpsse_clock_divisor",
    "mpsse_clock_hz",
    "plan_mpsse_batch",
]

# --- AN_108 §3.2 data shifting commands: an opcode is a set of flag bits ------------------
MPSSE_WRITE_NEG = 0x01  # write TDI/DO on the -ve clock edge
MPSSE_BITMODE = 0x02  # bit (not byte) counts
MPSSE_READ_NEG = 0x04  # sample TDO/DI on the -ve clock edge
MPSSE_LSB = 0x08  # LSB first
MPSSE_DO_WRITE = 0x10  # write TDI/DO
MPSSE_DO_READ = 0x20  # read TDO/DI
# Full duplex, MSB first, byte counts "op LenL LenH data..." with Len = nbytes - 1:
RW_BYTES_OUT_NEG_IN_POS = MPSSE_DO_WRITE | MPSSE_DO_READ | MPSSE_WRITE_NEG  # 0x31: SPI mode 0
RW_BYTES_OUT_POS_IN_NEG = MPSSE_DO_WRITE | MPSSE_DO_READ | MPSSE_READ_NEG  # 0x34: SPI mode 2
MPSSE_MAX_BYTES = 0x10000  # a 16-bit length field: 1..65536 bytes per command

# --- AN_108 §3.6 set / read data bits ----------------------------------------------------
SET_BITS_LOW = 0x80  # 0x80 value direction: ADBUS0..7 (direction bit 1 = output)
GET_BITS_LOW = 0x81  # -> 1 byte
SET_BITS_HIGH = 0x82  # 0x82 value direction: ACBUS0..7
GET_BITS_HIGH = 0x83  # -> 1 byte
# --- AN_108 §3.7 loopback, §3.8 clock divisor ---------------------------------------------
LOOPBACK_START = 0x84
LOOPBACK_END = 0x85
TCK_DIVISOR = 0x86  # 0x86 divL divH
# --- AN_108 §5.1 send immediate -----------------------------------------------------------
SEND_IMMEDIATE = 0x87  # flush the chip's read buffer to USB now
# --- AN_108 §6 H-series only commands -----------------------------------------------------
DIS_DIV_5 = 0x8A  # §6.1: 60 MHz master clock
EN_DIV_5 = 0x8B  # §6.2: 12 MHz master clock (reset default)
EN_3_PHASE = 0x8C  # §6.3
DIS_3_PHASE = 0x8D  # §6.4
EN_ADAPTIVE = 0x96  # §6.9
DIS_ADAPTIVE = 0x97  # §6.10
# --- AN_108 §3.1 bad commands --------------------------------------------------------------
BAD_COMMAND_REPLY = 0xFA  # an unknown opcode X is answered with FA X
SYNC_BAD_COMMAND = 0xAA  # an opcode the MPSSE does not know (AN_135's sync byte)

# Clock: with divide-by-5 off, SCK = 60 MHz / ((1 + div) * 2) (ft232h §4).
MPSSE_BASE_CLOCK_HZ = 60_000_000
_SCK_MAX_HZ = MPSSE_BASE_CLOCK_HZ // 2  # 30 MHz, div 0
_DIV_MAX = 0xFFFF

# Pins of the low byte (ft232h §5)
SCK_BIT = 0x01  # ADBUS0
MOSI_BIT = 0x02  # ADBUS1
MISO_BIT = 0x04  # ADBUS2
_SPI_PINS = (0, 1, 2)

DEFAULT_MAX_READ = 1024  # FT232H FIFO towards the host (ft232h §1)
DEFAULT_TIMEOUT_MS = 1000.0  # one wait for the bridge; pyftdi's own default is 5 s

STAT_KEYS = (
    "round_trips",  # batches that waited for read-back
    "write_only_batches",  # batches that read nothing back: one USB write, no wait
    "usb_writes",  # write_data calls of batches (a round trip may feed several)
    "command_bytes",  # MPSSE command bytes written (payload of the bulk OUT pipe)
    "read_back_bytes",  # bytes read back (bulk IN payload, without status bytes)
)

_HINT = (
    "check lsusb for 0403:6014, the udev rule / permissions, and that no ftdi_sio driver holds it"
)


def mpsse_clock_divisor(speed_hz: int) -> int:
    """The TCK divisor for the fastest SCK that does not exceed ``speed_hz`` (60 MHz base).

    ``30 MHz / (1 + div) <= speed_hz``: 30 MHz -> 0, 15 MHz -> 1, 10 MHz -> 2, 8 MHz -> 3
    (7.5 MHz), 6 MHz -> 4, 1 MHz -> 29. Faster requests get 30 MHz (div 0).
    """
    if speed_hz <= 0:
        raise ValueError(f"speed_hz must be positive, not {speed_hz}")
    div = max(0, -(-_SCK_MAX_HZ // speed_hz) - 1)
    if div > _DIV_MAX:
        slowest = _SCK_MAX_HZ / (_DIV_MAX + 1)
        raise ValueError(f"{speed_hz} Hz is below the MPSSE minimum of {slowest:.1f} Hz")
    return div


def mpsse_clock_hz(divisor: int) -> float:
    """The SCK frequency a TCK divisor gives with divide-by-5 disabled."""
    if not 0 <= divisor <= _DIV_MAX:
        raise ValueError(f"divisor must be 0..{_DIV_MAX}, not {divisor}")
    return _SCK_MAX_HZ / (1 + divisor)


def build_mpsse_setup(speed_hz: int, gpio_value: int, gpio_dir: int) -> bytes:
    """The MPSSE set-up stream: 60 MHz clock, no adaptive or 3-phase clocking, the divisor,
    loopback off, then both GPIO bytes (``gpio_value``/``gpio_dir`` are 16-bit: ADBUS low,
    ACBUS high)."""
    div = mpsse_clock_divisor(speed_hz)
    return bytes(
        (
            DIS_DIV_5,
            DIS_ADAPTIVE,
            DIS_3_PHASE,
            TCK_DIVISOR,
            div & 0xFF,
            div >> 8,
            LOOPBACK_END,
            SET_BITS_LOW,
            gpio_value & 0xFF,
            gpio_dir & 0xFF,
            SET_BITS_HIGH,
            (gpio_value >> 8) & 0xFF,
            (gpio_dir >> 8) & 0xFF,
        )
    )


def _rw_opcode(mode: int) -> int:
    if mode == 0:
        return RW_BYTES_OUT_NEG_IN_POS
    if mode == 2:
        return RW_BYTES_OUT_POS_IN_NEG
    raise ValueError(
        f"SPI mode {mode} is not supported on the MPSSE without 3-phase clocking; use 0 or 2"
    )


class MpsseChunk(NamedTuple):
    """A piece of a batch's command stream and the read-back it produces.

    A batch is one round trip: the chunks are written one after the other while the
    read-back comes in, each as soon as the FIFO has room for its read-back (ft232h §1).
    A chunk with read-back ends in SEND_IMMEDIATE, so its bytes leave without waiting for
    the latency timer (ft232h §2).
    """

    command: bytes
    read_len: int


class _Planner:
    def __init__(
        self, cs_bit: int, gpio_value: int, gpio_dir: int, mode: int, chunk_read: int
    ) -> None:
        if not 3 <= cs_bit <= 7:
            raise ValueError(f"cs_bit must be an ADBUS bit 3..7, not {cs_bit}")
        if chunk_read < 1:
            raise ValueError(f"chunk_read must be >= 1, not {chunk_read}")
        cs = 1 << cs_bit
        cpol = SCK_BIT if mode == 2 else 0
        self.rw_op = _rw_opcode(mode)
        # the same write edge, nothing read back (AN_108 §3.3: 0x11 / 0x10); the same read
        # edge, nothing written (§3.4: 0x20 / 0x24): MOSI holds its level
        self.w_op = self.rw_op & (MPSSE_DO_WRITE | MPSSE_WRITE_NEG)
        self.r_op = self.rw_op & (MPSSE_DO_READ | MPSSE_READ_NEG)
        base = (gpio_value & ~(SCK_BIT | MOSI_BIT)) | cpol
        direction = (gpio_dir | SCK_BIT | MOSI_BIT | cs) & ~MISO_BIT & 0xFF
        self.cs_low = bytes((SET_BITS_LOW, base & ~cs & 0xFF, direction))
        self.cs_high = bytes((SET_BITS_LOW, (base | cs) & 0xFF, direction))
        self.lsb = False  # MSB first (hilkit's SPI is)
        self.chunk_read = chunk_read
        self.chunks: list[MpsseChunk] = []
        self.cmd = bytearray()
        self.read_len = 0

    def flush(self) -> None:
        if self.read_len:
            self.cmd.append(SEND_IMMEDIATE)
        if self.cmd:
            self.chunks.append(MpsseChunk(bytes(self.cmd), self.read_len))
            self.cmd = bytearray()
            self.read_len = 0

    def shift(self, op: int, data: bytes | memoryview) -> None:
        for start in range(0, len(data), MPSSE_MAX_BYTES):
            part = data[start : start + MPSSE_MAX_BYTES]
            n = len(part) - 1
            self.cmd += bytes((op, n & 0xFF, n >> 8))
            if op & MPSSE_DO_WRITE:
                self.cmd += part

    def frame(self, frame: bytes, tail: int) -> None:
        """CS low, the head write-only, the ``tail`` full duplex, CS high. A frame whose
        read-back fits in a chunk is not split across chunks (a send-immediate while CS is
        low is visible on the pins, and a bridge model may cut the transaction there)."""
        n = len(frame)
        if 0 < tail <= self.chunk_read and self.read_len + tail > self.chunk_read:
            self.flush()
        self.cmd += self.cs_low  # MOSI low, as every SET_BITS_LOW of the batch leaves it
        view = memoryview(frame)
        if tail < n:
            self.shift(self.w_op, view[: n - tail])
        pos = n - tail
        # A tail that only repeats the level MOSI already holds (an RBM's dummy zeros after
        # an even opcode) is read with nothing written: the wire is the same, USB carries
        # none of it.
        held = frame[pos - 1] & (0x80 if self.lsb else 0x01) if pos else 0
        fill = 0xFF if held else 0x00
        op = self.r_op if tail and frame.count(fill, pos) == tail else self.rw_op
        while pos < n:
            room = self.chunk_read - self.read_len
            if room <= 0:
                self.flush()
                continue
            take = min(n - pos, room)
            self.shift(op, view[pos : pos + take])
            self.read_len += take
            pos += take
        self.cmd += self.cs_high


def plan_mpsse_batch(
    frames: Sequence[bytes],
    cs_bit: int,
    gpio_value: int,
    gpio_dir: int,
    *,
    tails: Sequence[int] | None = None,
    mode: int = 0,
    chunk_read: int = DEFAULT_MAX_READ // 2,
) -> list[MpsseChunk]:
    """Cut a batch's command stream into chunks of at most ``chunk_read`` read-back bytes.

    ``tails[i]``: how many bytes at the end of frame i are read back (the ``SpiBus``
    contract); the bytes before them are clocked with the write-only command (AN_108 §3.2:
    0x11 in mode 0), so nothing crosses USB for them. The chunks' read-backs, concatenated,
    are the frames' tails in order. Chunks are cut on frame boundaries where a frame's tail
    fits in one; a larger tail spans chunks with CS held low.
    """
    if tails is not None:
        check_tails(frames, tails)
    planner = _Planner(cs_bit, gpio_value, gpio_dir, mode, chunk_read)
    for frame, tail in zip(frames, tails if tails is not None else map(len, frames),
                           strict=True):
        planner.frame(frame, tail)
    planner.flush()
    return planner.chunks


def build_mpsse_batch(
    frames: Sequence[bytes],
    cs_bit: int,
    gpio_value: int,
    gpio_dir: int,
    *,
    tails: Sequence[int] | None = None,
    mode: int = 0,
) -> bytes:
    """The whole batch as one MPSSE command stream, in one chunk.

    Per frame: ``80 value&~CS dir`` (CS low), ``11 LenL LenH head`` for the bytes nobody
    reads, ``31 LenL LenH tail`` for those read back (mode 0; 0x10 and 0x34 for mode 2),
    ``80 value|CS dir`` (CS high); then ``87`` once if anything is read back.
    ``gpio_value``/``gpio_dir`` are the ADBUS byte of the spare pins; SCK, MOSI and CS are
    forced to outputs, MISO to an input, SCK to its idle level (low for mode 0, high for
    mode 2).
    """
    if not frames:
        return b""
    chunks = plan_mpsse_batch(
        frames, cs_bit, gpio_value, gpio_dir, tails=tails, mode=mode, chunk_read=1 << 62
    )
    assert len(chunks) == 1
    return chunks[0].command


FTDI_VID = 0x0403  # Future Technology Devices International's USB vendor id
# Product names pyftdi accepts in URLs -> USB product id (FT232H: 6014h, FTDI's datasheet).
FTDI_PRODUCTS: dict[str, int] = {
    "232": 0x6001, "232r": 0x6001, "232h": 0x6014, "2232": 0x6010, "2232d": 0x6010,
    "2232h": 0x6010, "4232": 0x6011, "4232h": 0x6011, "4232ha": 0x6048,
    "ft-x": 0x6015, "230x": 0x6015, "231x": 0x6015, "234x": 0x6015,
}
_URL_RE = re.compile(r"ftdi://([^/:]*)(?::([^/:]*)(?::([^/]*))?)?/([1-4])\Z")
_HEX16_RE = re.compile(r"(0x)?[0-9A-Fa-f]{1,4}\Z")
_HEX_BUS_ADDR_RE = re.compile(r"[0-9A-Fa-f]{1,3}:[0-9A-Fa-f]{1,3}\Z")


class FtdiUrl(NamedTuple):
    """A pyftdi URL, ``ftdi://VENDOR:PRODUCT[:SERIAL]/INTERFACE``, taken apart.

    ``serial`` is pyftdi's third field: a serial number, a device index (digits),
    or ``BUS:ADDRESS`` in hex; None when absent. ``vendor``/``product`` are None
    when the URL leaves them open.
    """

    vendor: int | None
    product: int | None
    serial: str | None
    interface: int


def parse_url(url: str) -> FtdiUrl | str:
    """The parts of ``url``, or why it is not an FTDI URL one can look up."""
    m = _URL_RE.match(url)
    if m is None:
        return 'expected "ftdi://VENDOR:PRODUCT[:SERIAL]/INTERFACE", e.g. "ftdi://ftdi:232h/1"'
    vendor_s, product_s, serial = m.group(1), (m.group(2) or "").lower(), m.group(3) or None
    if vendor_s not in ("", "ftdi") and not _HEX16_RE.match(vendor_s):
        return f'vendor "{vendor_s[:40]}" is neither "ftdi" nor a hex USB vendor id'
    if product_s and product_s not in FTDI_PRODUCTS and not _HEX16_RE.match(product_s):
        return (f'product "{product_s[:40]}" is neither a hex USB product id nor one of '
                f"{', '.join(FTDI_PRODUCTS)}")
    if serial is not None and serial.isdigit() and len(serial) > 3:
        return f"device index {serial[:12]}{'...' if len(serial) > 12 else ''} is too large " \
               "(at most 999)"
    if serial is not None and ":" in serial and not _HEX_BUS_ADDR_RE.match(serial):
        return f'"{serial[:40]}" is not BUS:ADDRESS in hex (e.g. 1:2a)'
    vendor = FTDI_VID if vendor_s in ("", "ftdi") else int(vendor_s, 16)
    product = None if not product_s else FTDI_PRODUCTS.get(product_s) or int(product_s, 16)
    return FtdiUrl(vendor, product, serial, int(m.group(4)))


def _new_ftdi() -> Any:
    """A pyftdi ``Ftdi`` object (imported lazily: hilkit imports without pyftdi/pyusb)."""
    module = importlib.import_module("pyftdi.ftdi")
    return module.Ftdi()


class FtdiSpiBus:
    """SpiBus on an FT232H (or the A channel of an FT2232H) in MPSSE mode.

    ``transfer_batch`` is one round trip: the command stream goes out in chunks, each
    written as soon as the FIFO towards the host has room for its read-back (pyftdi's
    ``request_gen`` hook feeds them while the read goes on), so a batch of any size
    costs one wait for the bridge; a batch that reads nothing back is one USB write and
    no wait. Bytes the caller does not read (``tails``) are clocked write-only.
    ``counters.calls`` counts batches; ``stats`` says what crossed USB. GPIO traffic of
    ``FtdiPin`` is counted in ``gpio_calls``, not in ``counters``.

    ``timeout_ms`` bounds each wait for the bridge (pyftdi's USB timeouts, 5 s by default,
    are set to it): a bridge that stops answering, or is unplugged, fails the batch with
    an ``OSError`` naming the URL within it. Modes 0 and 2 only (modes 1 and 3 need the
    3-phase clock trick, not done here).
    """

    # What one round trip (one USB 2.0 high-speed write + read) costs beyond clocking:
    # USB 2.0 microframes; an order of magnitude, not a guarantee.
    call_overhead_us: float = 125.0

    def __init__(
        self,
        url: str = "ftdi://ftdi:232h/1",
        speed_hz: int = 6_000_000,
        cs_pin: int = 3,
        mode: int = 0,
        *,
        latency_ms: int = 16,
        max_read: int | None = None,
        timeout_ms: float = DEFAULT_TIMEOUT_MS,
    ) -> None:
        if not 3 <= cs_pin <= 7:
            raise ValueError(f"cs_pin must be an ADBUS bit 3..7, not {cs_pin}")
        if not 1 <= timeout_ms <= 600_000:
            raise ValueError(f"timeout_ms must be 1..600000, not {timeout_ms}")
        _rw_opcode(mode)
        self.url = url
        self.mode = mode
        self.cs_pin = cs_pin
        self.divisor = mpsse_clock_divisor(speed_hz)
        self.speed_hz = mpsse_clock_hz(self.divisor)  # what SCK really runs at
        self.max_read = max_read if max_read is not None else DEFAULT_MAX_READ
        self.timeout_ms = float(timeout_ms)
        self.counters = BusCounters()
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self.gpio_calls = 0
        cs = 1 << cs_pin
        # 16-bit GPIO state: ADBUS in the low byte, ACBUS in the high byte.
        self._gpio_value = cs | (SCK_BIT if mode == 2 else 0)
        self._gpio_dir = cs | SCK_BIT | MOSI_BIT
        self._claimed: set[int] = {*_SPI_PINS, cs_pin}
        self._ftdi: Any = None
        try:
            ftdi = _new_ftdi()
            ftdi.open_mpsse_from_url(
                url,
                direction=self._gpio_dir & 0xFF,
                initial=self._gpio_value & 0xFF,
                frequency=self.speed_hz,
                latency=latency_ms,
            )
        except Exception as exc:  # ImportError, pyusb NoBackendError, UsbToolsError, USBError
            raise HardwareNotFound(url, "FT232H not found", _HINT) from exc
        self._ftdi = ftdi
        try:
            wait_ms = max(1, round(self.timeout_ms))
            ftdi.timeouts = (wait_ms, wait_ms)
            if max_read is None:
                self.max_read = min(int(size) for size in ftdi.fifo_sizes)
            setup = build_mpsse_setup(speed_hz, self._gpio_value, self._gpio_dir)
            ftdi.write_data(setup + bytes((SYNC_BAD_COMMAND, SEND_IMMEDIATE)))
            reply = self._read_exact(2)
        except Exception as exc:
            self.close()
            raise HardwareNotFound(url, "MPSSE set-up failed", _HINT) from exc
        if reply != bytes((BAD_COMMAND_REPLY, SYNC_BAD_COMMAND)):
            self.close()
            raise HardwareNotFound(
                url,
                f"MPSSE out of sync (answered {reply.hex()} to the bad-command check)",
                "unplug and replug the FT232H; make sure no other program uses it",
            )

    # -- SpiBus ----------------------------------------------------------------------------
    def transfer(self, data: bytes) -> bytes:
        return self.transfer_batch([data])[0]

    def transfer_batch(
        self, frames: Sequence[bytes], tails: Sequence[int] | None = None
    ) -> list[bytes]:
        ftdi = self._require_open()
        if not frames:
            if tails is not None:
                check_tails(frames, tails)
            return []
        chunks = plan_mpsse_batch(
            frames,
            self.cs_pin,
            self._gpio_value & 0xFF,
            self._gpio_dir & 0xFF,
            tails=tails,
            mode=self.mode,
            chunk_read=max(1, self.max_read // 2),
        )
        feed = _Feed(chunks, self.max_read)
        st = self.stats
        try:
            self._write(feed.first())
            self.counters.calls += 1
            rx = b""
            if feed.total:
                st["round_trips"] += 1
                clock_s = 2 * 8 * sum(map(len, frames)) / self.speed_hz
                rx = self._read_exact(feed.total, clock_s, feed)
            else:
                st["write_only_batches"] += 1
        except OSError:
            # Late bytes of a failed round trip must not be read as the next batch's answer.
            purge = getattr(ftdi, "purge_buffers", None)
            if purge is not None:
                with contextlib.suppress(Exception):
                    purge()
            raise
        st["usb_writes"] += feed.writes
        st["command_bytes"] += feed.sent_bytes
        st["read_back_bytes"] += len(rx)
        out: list[bytes] = []
        offset = 0
        for n in tails if tails is not None else map(len, frames):
            out.append(rx[offset : offset + n])
            offset += n
        self.counters.bytes += sum(map(len, frames))
        self.counters.transactions += len(frames)
        return out

    def close(self) -> None:
        ftdi, self._ftdi = self._ftdi, None
        if ftdi is not None:
            with contextlib.suppress(Exception):  # an unplugged device cannot be released
                ftdi.close()

    def __enter__(self) -> FtdiSpiBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- GPIO, for FtdiPin -----------------------------------------------------------------
    def claim_gpio(self, bit: int) -> None:
        if not 0 <= bit <= 15:
            raise ValueError(f"FT232H GPIO bit must be 0..15 (ADBUS 0..7, ACBUS 8..15), not {bit}")
        if bit in self._claimed:
            raise ValueError(f"bit {bit} is in use (SPI pins are 0, 1, 2 and CS {self.cs_pin})")
        self._claimed.add(bit)

    def release_gpio(self, bit: int) -> None:
        if bit not in (*_SPI_PINS, self.cs_pin):
            self._claimed.discard(bit)

    def drive_gpio(self, bit: int, level: bool) -> None:
        """Make ``bit`` an output at ``level``: one USB write, no read."""
        self._require_open()
        mask = 1 << bit
        self._gpio_dir |= mask
        self._gpio_value = (self._gpio_value | mask) if level else (self._gpio_value & ~mask)
        if bit < 8:
            cmd = (SET_BITS_LOW, self._gpio_value & 0xFF, self._gpio_dir & 0xFF)
        else:
            cmd = (SET_BITS_HIGH, self._gpio_value >> 8 & 0xFF, self._gpio_dir >> 8 & 0xFF)
        self._write(bytes(cmd))
        self.gpio_calls += 1

    def sample_gpio(self, bit: int) -> bool:
        """The level on pin ``bit``: one USB write + one 1-byte read."""
        self._require_open()
        self._write(bytes((GET_BITS_LOW if bit < 8 else GET_BITS_HIGH, SEND_IMMEDIATE)))
        self.gpio_calls += 1
        value = self._read_exact(1)[0]
        return bool(value >> (bit & 7) & 1)

    # -- internals -------------------------------------------------------------------------
    def _require_open(self) -> Any:
        if self._ftdi is None:
            raise OSError(errno.EBADF, f"{self.url}: bus is closed")
        return self._ftdi

    def _write(self, data: bytes) -> None:
        if not data:
            return
        ftdi = self._require_open()
        try:
            ftdi.write_data(data)
        except Exception as exc:
            raise self._usb_error("write", exc) from exc

    def _read_exact(
        self, n: int, clock_s: float = 0.0, feed: Callable[[int], bytes] | None = None
    ) -> bytes:
        """Read exactly ``n`` payload bytes (pyftdi strips the status bytes), feeding more
        commands with ``feed`` as the read-back comes in, within ``timeout_ms`` plus the
        time the bits take to clock (``clock_s``); else raise ETIMEDOUT (EIO when the
        bridge answered in part)."""
        ftdi = self._require_open()
        got = bytearray()
        deadline = time.monotonic() + self.timeout_ms / 1000 + clock_s
        while len(got) < n:
            try:
                got += ftdi.read_data_bytes(n - len(got), 4, feed)
            except Exception as exc:
                raise self._usb_error("read", exc) from exc
            if len(got) < n and time.monotonic() > deadline:
                code = errno.EIO if got else errno.ETIMEDOUT
                raise OSError(
                    code,
                    f"{self.url}: the FT232H returned {len(got)} of {n} bytes within "
                    f"{self.timeout_ms:g} ms (bus.timeout_ms)",
                )
        return bytes(got)

    def _usb_error(self, what: str, exc: BaseException) -> OSError:
        """pyftdi's and pyusb's errors as one OSError naming the bridge and what to check."""
        code = _errno_of(exc)
        if code == errno.ENODEV:
            return OSError(code, f"{self.url}: the FT232H is gone (unplugged?); {_HINT}")
        if code == errno.ETIMEDOUT or "timeout" in str(exc).lower():
            return OSError(
                errno.ETIMEDOUT,
                f"{self.url}: the FT232H did not answer a USB {what} within "
                f"{self.timeout_ms:g} ms (bus.timeout_ms): a wedged bridge; replug it",
            )
        return OSError(code or errno.EIO, f"{self.url}: USB {what} failed: {exc}")


class _Feed:
    """The chunks of one batch, handed out as the FIFO towards the host has room for their
    read-back: the first call writes what fits before anything is read, then pyftdi's
    ``read_data_bytes`` calls it with the bytes it still waits for after every packet."""

    def __init__(self, chunks: list[MpsseChunk], fifo: int) -> None:
        self.chunks = chunks
        self.fifo = fifo
        self.total = sum(c.read_len for c in chunks)
        self.next = 0
        self.sent_read = 0  # read-back of the chunks written so far
        self.sent_bytes = 0
        self.writes = 0

    def _take(self, received: int) -> bytes:
        room = self.fifo - (self.sent_read - received)
        out = bytearray()
        while self.next < len(self.chunks) and self.chunks[self.next].read_len <= room:
            chunk = self.chunks[self.next]
            out += chunk.command
            room -= chunk.read_len
            self.sent_read += chunk.read_len
            self.next += 1
        if out:
            self.sent_bytes += len(out)
            self.writes += 1
        return bytes(out)

    def first(self) -> bytes:
        return self._take(0)

    def __call__(self, still_wanted: int) -> bytes:
        return self._take(self.total - still_wanted)


def _errno_of(exc: BaseException | None) -> int | None:
    """The errno of ``exc`` or of what it was raised from (pyftdi wraps pyusb's USBError)."""
    seen = 0
    while exc is not None and seen < 8:
        code = getattr(exc, "errno", None) or getattr(exc, "backend_error_code", None)
        if isinstance(code, int) and code > 0:
            return code
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


class FtdiPin:
    """A Pin on a spare FT232H GPIO: ``bit`` 0..7 = ADBUS0..7, 8..15 = ACBUS0..7.

    The line is an input until ``set`` is first called, then an output (a reset line).
    ``wait_edge`` polls: it reads the pin every ``poll_interval_ms`` (each read is one USB
    round trip, ~0.1-1 ms) until the edge or ``timeout_ms``; the loop is bounded by both the
    deadline and ``timeout_ms / poll_interval_ms + 2`` reads. Edges are on the logical value
    (``active_low`` swaps them) and are detected against the last level this pin saw, so a
    transition between two calls still counts. Pulses shorter than the poll period are missed:
    for an interrupt line keep re-checking the chip's interrupt registers (facts: rpi.md §4).
    """

    def __init__(
        self,
        bus: FtdiSpiBus,
        bit: int,
        active_low: bool = False,
        *,
        poll_interval_ms: float = 1.0,
    ) -> None:
        if poll_interval_ms <= 0:
            raise ValueError("poll_interval_ms must be positive")
        bus.claim_gpio(bit)
        self.bus = bus
        self.bit = bit
        self.active_low = active_low
        self.poll_interval_ms = poll_interval_ms
        self._last: bool | None = None
        self._closed = False

    def set(self, value: bool) -> None:
        self._check_open()
        self.bus.drive_gpio(self.bit, bool(value) != self.active_low)
        self._last = bool(value)

    def get(self) -> bool:
        self._check_open()
        value = self.bus.sample_gpio(self.bit) != self.active_low
        self._last = value
        return value

    def wait_edge(self, edge: Edge, timeout_ms: float) -> bool:
        self._check_open()
        deadline = time.monotonic() + max(0.0, timeout_ms) / 1000
        max_reads = int(max(0.0, timeout_ms) / self.poll_interval_ms) + 2
        prev = self._last if self._last is not None else self.get()
        for _ in range(max_reads):
            now_value = self.get()
            if _is_edge(edge, prev, now_value):
                return True
            prev = now_value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self.poll_interval_ms / 1000, remaining))
        return False

    def close(self) -> None:
        """Release the bit; an output keeps its level (a reset line must not float)."""
        if not self._closed:
            self._closed = True
            self.bus.release_gpio(self.bit)

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, f"FTDI pin {self.bit} is closed")


def _is_edge(edge: Edge, before: bool, after: bool) -> bool:
    if before == after:
        return False
    if edge is Edge.BOTH:
        return True
    return after if edge is Edge.RISING else not after

"""SpiBus over an FTDI FT232H in MPSSE mode: a whole batch of CS frames is ONE USB write + ONE read.

hilkit builds the MPSSE command stream itself (pure functions below, tested byte by byte);
pyftdi only opens the device (``open_mpsse_from_url``) and moves bytes (``write_data``,
``read_data_bytes``, which strips the two modem-status bytes of every USB packet).

Wiring (MPSSE channel A): ADBUS0 SCK, ADBUS1 MOSI, ADBUS2 MISO, ADBUS``cs_pin`` chip select
(active low, driven by software with SET_BITS_LOW). The other ADBUS/ACBUS pins are spare GPIO
(``FtdiPin``): their direction and value are tracked, and every SET_BITS_LOW of a batch writes
them back unchanged, so a reset line keeps its level while SPI runs.

Buffer limits. The FT232H has a 1 KiB buffer towards the host; while the host is busy writing,
the read-back of a round trip must fit in it, or the MPSSE stalls with the write still pending
(pyftdi's I2C code sizes its batches by the same FIFO). A batch is therefore cut into round
trips whose read-back is at most ``max_read`` bytes (the device's FIFO size, 1024 on FT232H)
and whose command stream is at most ``max_write`` bytes (64 KiB), on frame boundaries where a
frame fits; a frame larger than one round trip is carried over several with CS held low.

Opcodes and their names follow libftdi's ``ftdi.h`` names for the commands of FTDI AN_108;
``docs/hardware/ft232h.md`` (sections cited below as "ft232h §N") says what each does.
"""

from __future__ import annotations

import errno
import importlib
import re
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from hilkit.port.errors import HardwareNotFound
from hilkit.port.pin import Edge
from hilkit.port.spi import BusCounters

__all__ = [
    "MPSSE_BASE_CLOCK_HZ",
    "FtdiPin",
    "FtdiSpiBus",
    "MpsseRoundTrip",
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
DEFAULT_MAX_WRITE = 64 * 1024

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


class MpsseRoundTrip(NamedTuple):
    """One USB write of ``command`` followed by one read of exactly ``read_len`` bytes."""

    command: bytes
    read_len: int


class _Planner:
    def __init__(
        self, cs_bit: int, gpio_value: int, gpio_dir: int, mode: int, max_read: int, max_write: int
    ) -> None:
        if not 3 <= cs_bit <= 7:
            raise ValueError(f"cs_bit must be an ADBUS bit 3..7, not {cs_bit}")
        if max_read < 1 or max_write < 16:
            raise ValueError("max_read must be >= 1 and max_write >= 16")
        cs = 1 << cs_bit
        cpol = SCK_BIT if mode == 2 else 0
        self.op = _rw_opcode(mode)
        base = (gpio_value & ~(SCK_BIT | MOSI_BIT)) | cpol
        direction = (gpio_dir | SCK_BIT | MOSI_BIT | cs) & ~MISO_BIT & 0xFF
        self.cs_low = bytes((SET_BITS_LOW, base & ~cs & 0xFF, direction))
        self.cs_high = bytes((SET_BITS_LOW, (base | cs) & 0xFF, direction))
        self.max_read = max_read
        self.max_write = max_write
        self.trips: list[MpsseRoundTrip] = []
        self.cmd = bytearray()
        self.read_len = 0

    def room_read(self) -> int:
        return self.max_read - self.read_len

    def room_write(self) -> int:
        return self.max_write - len(self.cmd) - 1  # keep a byte for SEND_IMMEDIATE

    def flush(self) -> None:
        if self.cmd:
            self.cmd.append(SEND_IMMEDIATE)
            self.trips.append(MpsseRoundTrip(bytes(self.cmd), self.read_len))
            self.cmd = bytearray()
            self.read_len = 0

    def data(self, chunk: bytes | memoryview) -> None:
        for start in range(0, len(chunk), MPSSE_MAX_BYTES):
            part = chunk[start : start + MPSSE_MAX_BYTES]
            n = len(part) - 1
            self.cmd += bytes((self.op, n & 0xFF, n >> 8))
            self.cmd += part
            self.read_len += len(part)

    @staticmethod
    def frame_cost(n: int) -> int:
        commands = -(-n // MPSSE_MAX_BYTES)
        return 3 + 3 * commands + n + 3

    def frame(self, frame: bytes) -> None:
        n = len(frame)
        cost = self.frame_cost(n)
        fits_empty = n <= self.max_read and cost <= self.max_write - 1
        if fits_empty and (n > self.room_read() or cost > self.room_write()):
            self.flush()
        if fits_empty:
            self.cmd += self.cs_low
            self.data(frame)
            self.cmd += self.cs_high
            return
        # Larger than one round trip: CS stays low from one round trip to the next.
        self.flush()
        self.cmd += self.cs_low
        view = memoryview(frame)
        pos = 0
        while True:
            cap = min(self.room_read(), self.room_write() - 6, MPSSE_MAX_BYTES)
            if cap <= 0:
                self.flush()
                continue
            take = min(n - pos, cap)
            self.data(view[pos : pos + take])
            pos += take
            if pos == n:
                self.cmd += self.cs_high
                return
            self.flush()


def plan_mpsse_batch(
    frames: Sequence[bytes],
    cs_bit: int,
    gpio_value: int,
    gpio_dir: int,
    *,
    mode: int = 0,
    max_read: int = DEFAULT_MAX_READ,
    max_write: int = DEFAULT_MAX_WRITE,
) -> list[MpsseRoundTrip]:
    """Cut a batch into round trips within the FIFO budget (see the module docstring).

    Each round trip is what ``build_mpsse_batch`` produces for its frames (a frame split over
    round trips has its CS-low in the first and its CS-high in the last), ending in
    SEND_IMMEDIATE; the read-backs concatenated are the frames' bytes in order.
    """
    planner = _Planner(cs_bit, gpio_value, gpio_dir, mode, max_read, max_write)
    for frame in frames:
        planner.frame(frame)
    planner.flush()
    return planner.trips


def build_mpsse_batch(
    frames: Sequence[bytes], cs_bit: int, gpio_value: int, gpio_dir: int, *, mode: int = 0
) -> bytes:
    """The whole batch as one MPSSE command stream, ignoring the FIFO budget.

    Per frame: ``80 value&~CS dir`` (CS low), ``31 LenL LenH data`` (mode 0; 0x34 for mode 2),
    ``80 value|CS dir`` (CS high); then ``87`` once. ``gpio_value``/``gpio_dir`` are the ADBUS
    byte of the spare pins; SCK, MOSI and CS are forced to outputs, MISO to an input, SCK to its
    idle level (low for mode 0, high for mode 2). The read-back is ``sum(map(len, frames))``.
    """
    if not frames:
        return b""
    huge = 1 << 62
    trips = plan_mpsse_batch(
        frames, cs_bit, gpio_value, gpio_dir, mode=mode, max_read=huge, max_write=huge
    )
    assert len(trips) == 1
    return trips[0].command


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

    ``transfer_batch`` costs one ``write_data`` + one ``read_data_bytes`` per round trip (one
    round trip unless the batch reads back more than the chip's FIFO; ``counters.calls`` counts
    round trips). GPIO traffic of ``FtdiPin`` is counted in ``gpio_calls``, not in ``counters``.
    Modes 0 and 2 only (modes 1 and 3 need the 3-phase clock trick, not done here).
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
        max_write: int = DEFAULT_MAX_WRITE,
    ) -> None:
        if not 3 <= cs_pin <= 7:
            raise ValueError(f"cs_pin must be an ADBUS bit 3..7, not {cs_pin}")
        _rw_opcode(mode)
        self.url = url
        self.mode = mode
        self.cs_pin = cs_pin
        self.divisor = mpsse_clock_divisor(speed_hz)
        self.speed_hz = mpsse_clock_hz(self.divisor)  # what SCK really runs at
        self.max_write = max_write
        self.max_read = max_read if max_read is not None else DEFAULT_MAX_READ
        self.counters = BusCounters()
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
            if max_read is None:
                self.max_read = min(int(size) for size in ftdi.fifo_sizes)
            setup = build_mpsse_setup(speed_hz, self._gpio_value, self._gpio_dir)
            ftdi.write_data(setup + bytes((SYNC_BAD_COMMAND, SEND_IMMEDIATE)))
            reply = self._read_exact(2, 0.5)
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

    def transfer_batch(self, frames: Sequence[bytes]) -> list[bytes]:
        ftdi = self._require_open()
        if not frames:
            return []
        trips = plan_mpsse_batch(
            frames,
            self.cs_pin,
            self._gpio_value & 0xFF,
            self._gpio_dir & 0xFF,
            mode=self.mode,
            max_read=self.max_read,
            max_write=self.max_write,
        )
        rx = bytearray()
        try:
            for trip in trips:
                ftdi.write_data(trip.command)
                self.counters.calls += 1
                if trip.read_len:
                    timeout_s = 0.5 + 2 * 8 * trip.read_len / self.speed_hz
                    rx += self._read_exact(trip.read_len, timeout_s)
        except OSError:
            # Late bytes of a failed round trip must not be read as the next batch's answer.
            purge = getattr(ftdi, "purge_buffers", None)
            if purge is not None:
                purge()
            raise
        out: list[bytes] = []
        offset = 0
        for frame in frames:
            n = len(frame)
            out.append(bytes(rx[offset : offset + n]))
            offset += n
        self.counters.bytes += offset
        self.counters.transactions += len(frames)
        return out

    def close(self) -> None:
        ftdi, self._ftdi = self._ftdi, None
        if ftdi is not None:
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
        ftdi = self._require_open()
        mask = 1 << bit
        self._gpio_dir |= mask
        self._gpio_value = (self._gpio_value | mask) if level else (self._gpio_value & ~mask)
        if bit < 8:
            cmd = (SET_BITS_LOW, self._gpio_value & 0xFF, self._gpio_dir & 0xFF)
        else:
            cmd = (SET_BITS_HIGH, self._gpio_value >> 8 & 0xFF, self._gpio_dir >> 8 & 0xFF)
        ftdi.write_data(bytes(cmd))
        self.gpio_calls += 1

    def sample_gpio(self, bit: int) -> bool:
        """The level on pin ``bit``: one USB write + one 1-byte read."""
        ftdi = self._require_open()
        ftdi.write_data(bytes((GET_BITS_LOW if bit < 8 else GET_BITS_HIGH, SEND_IMMEDIATE)))
        self.gpio_calls += 1
        value = self._read_exact(1, 0.5)[0]
        return bool(value >> (bit & 7) & 1)

    # -- internals -------------------------------------------------------------------------
    def _require_open(self) -> Any:
        if self._ftdi is None:
            raise OSError(errno.EBADF, f"{self.url}: bus is closed")
        return self._ftdi

    def _read_exact(self, n: int, timeout_s: float) -> bytes:
        """Read exactly ``n`` payload bytes (pyftdi strips the status bytes) or raise EIO."""
        ftdi = self._require_open()
        got = bytearray()
        deadline = time.monotonic() + timeout_s
        while len(got) < n:
            got += ftdi.read_data_bytes(n - len(got), 4)
            if len(got) < n and time.monotonic() > deadline:
                raise OSError(
                    errno.EIO, f"{self.url}: FT232H returned {len(got)} of {n} bytes in time"
                )
        return bytes(got)


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

"""An FTDI FT232H on the virtual USB bus, its MPSSE wired to an SPI slave model
(docs/hardware/ft232h.md, "The FT232H model").

The model is a device (``hilkit.sim.usb.device.UsbDeviceModel``): pyftdi, unmodified,
finds it by its URL, opens it with the vendor requests it sends to silicon and talks
MPSSE commands over the bulk pipes. What the model does is what the chip does as far
as a host can tell: identity and descriptors (FT232H datasheet, DS_FT232H), the
vendor requests (docs/hardware/ft232h.md §1-2), the MPSSE command set (FTDI AN_108),
the two modem-status bytes at the head of every IN packet, the latency timer, the
1 KiB read FIFO, and a bad-command answer of 0xFA + opcode.

The pins are wires: ADBUS0..2 are SCK/MOSI/MISO; ``cs_pin`` frames transactions.
Everything clocked between CS going low and CS going high, however the host split
it over USB packets, is handed to ``spi_slave.transfer`` as one transaction when CS
rises, and its reply fills the MISO positions of the read-back. Read-back of a
transaction still open is held back (it cannot be known yet), which the host cannot
tell apart from the chip because replies only leave at send-immediate, a full
packet or the latency timer -- unless a send-immediate asks for them while CS is
still low: then the transaction is cut there (``stats["split_transactions"]``).

A slave that can stream a transaction (``StreamingSpiSlave``: ``stream_begin`` at
CS low, ``stream`` per shift command, ``stream_end`` at CS high; hilkit's chip
models) gets its bytes as they are clocked, and its MISO bytes go straight into
the read-back, so nothing is held back and nothing is cut: CS stays low across
any number of round trips, as on silicon (``stats["streamed_transactions"]``). If
it declines (``stream`` gives None at the first byte), the transaction is held
back and handed over whole, as above.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, Protocol, cast

from hilkit.sim.usb import descriptors as d
from hilkit.sim.usb.device import BULK_MAX_PACKET, Nak, Setup, Speed, Stall, UsbDeviceModel

__all__ = [
    "BULK_IN", "BULK_OUT", "FT232H_BCD_DEVICE", "FT232H_PID", "FTDI_VID", "READ_FIFO_SIZE",
    "STAT_KEYS", "Ft232hFaults", "Ft232hModel", "SpiSlave", "StreamingSpiSlave",
    "pyftdi_backend",
]

# -- identity (DS_FT232H; docs/hardware/ft232h.md §1) -------------------------------------------
FTDI_VID: Final = 0x0403
FT232H_PID: Final = 0x6014
FT232H_BCD_DEVICE: Final = 0x0900  # the chip generation pyftdi tells FT232H by
BULK_IN: Final = 0x81
BULK_OUT: Final = 0x02
READ_FIFO_SIZE: Final = 1024  # DS_FT232H: 1 KiB each way
_STR_MANUFACTURER, _STR_PRODUCT, _STR_SERIAL = 1, 2, 3

# -- vendor requests, bRequest (docs/hardware/ft232h.md §2; FTDI's SIO request numbers) -------
SIO_RESET: Final = 0x00  # wValue 0 reset, 1 purge host-to-chip, 2 purge chip-to-host
SIO_RESET_SIO: Final = 0
SIO_RESET_PURGE_RX: Final = 1  # the command bytes the host sent and the MPSSE has not run
SIO_RESET_PURGE_TX: Final = 2  # the read-back not yet sent to the host
SIO_SET_MODEM_CTRL: Final = 0x01
SIO_SET_FLOW_CTRL: Final = 0x02
SIO_SET_BAUDRATE: Final = 0x03
SIO_SET_DATA: Final = 0x04
SIO_POLL_MODEM_STATUS: Final = 0x05
SIO_SET_EVENT_CHAR: Final = 0x06
SIO_SET_ERROR_CHAR: Final = 0x07
SIO_SET_LATENCY_TIMER: Final = 0x09
SIO_GET_LATENCY_TIMER: Final = 0x0A
SIO_SET_BITMODE: Final = 0x0B  # wValue = mode << 8 | pin directions
SIO_READ_PINS: Final = 0x0C
_VENDOR_OUT: Final = 0x40
_VENDOR_IN: Final = 0xC0

# bit modes, SET_BITMODE high byte (AN_108 §2; docs/hardware/ft232h.md §2)
BITMODE_RESET: Final = 0x00
BITMODE_BITBANG: Final = 0x01
BITMODE_MPSSE: Final = 0x02

LATENCY_DEFAULT_MS: Final = 16  # the chip's reset value
# Two modem-status bytes at the head of every IN packet (docs/hardware/ft232h.md §2):
# the first carries the modem lines, the second THRE|TEMT (transmitter empty, 0x60).
MODEM_STATUS: Final = bytes((0x32, 0x60))

# -- MPSSE commands (AN_108; names as libftdi and hilkit/bus/ftdi.py give them) --------------
# §3.2-3.5 data shifting: the opcode is a set of flags
MPSSE_WRITE_NEG: Final = 0x01  # write on the -ve edge
MPSSE_BITMODE: Final = 0x02  # bit counts, not byte counts
MPSSE_READ_NEG: Final = 0x04  # read on the -ve edge
MPSSE_LSB: Final = 0x08  # LSB first
MPSSE_DO_WRITE: Final = 0x10
MPSSE_DO_READ: Final = 0x20
MPSSE_WRITE_TMS: Final = 0x40
# §3.6 set / read data bits
SET_BITS_LOW: Final = 0x80
GET_BITS_LOW: Final = 0x81
SET_BITS_HIGH: Final = 0x82
GET_BITS_HIGH: Final = 0x83
# §3.7 loopback, §3.8 clock divisor
LOOPBACK_START: Final = 0x84
LOOPBACK_END: Final = 0x85
TCK_DIVISOR: Final = 0x86
# §5.1 send immediate, §5.2-5.3 wait on I/O
SEND_IMMEDIATE: Final = 0x87
WAIT_ON_HIGH: Final = 0x88
WAIT_ON_LOW: Final = 0x89
# §6 H-series only
DIS_DIV_5: Final = 0x8A
EN_DIV_5: Final = 0x8B
EN_3_PHASE: Final = 0x8C
DIS_3_PHASE: Final = 0x8D
CLK_BITS: Final = 0x8E  # clock n bits, no data
CLK_BYTES: Final = 0x8F  # clock n bytes, no data
CLK_WAIT_HIGH: Final = 0x94
CLK_WAIT_LOW: Final = 0x95
EN_ADAPTIVE: Final = 0x96
DIS_ADAPTIVE: Final = 0x97
CLK_BYTES_OR_HIGH: Final = 0x9C
CLK_BYTES_OR_LOW: Final = 0x9D
DRIVE_OPEN_COLLECTOR: Final = 0x9E  # FT232H only
# §3.1 bad command: answered with this byte and the opcode
BAD_COMMAND: Final = 0xFA

# command lengths in bytes, opcode included, of the fixed-size commands
_FIXED: Final = {
    SET_BITS_LOW: 3, GET_BITS_LOW: 1, SET_BITS_HIGH: 3, GET_BITS_HIGH: 1,
    LOOPBACK_START: 1, LOOPBACK_END: 1, TCK_DIVISOR: 3, SEND_IMMEDIATE: 1,
    WAIT_ON_HIGH: 1, WAIT_ON_LOW: 1, DIS_DIV_5: 1, EN_DIV_5: 1, EN_3_PHASE: 1,
    DIS_3_PHASE: 1, CLK_BITS: 2, CLK_BYTES: 3, CLK_WAIT_HIGH: 1, CLK_WAIT_LOW: 1,
    EN_ADAPTIVE: 1, DIS_ADAPTIVE: 1, CLK_BYTES_OR_HIGH: 3, CLK_BYTES_OR_LOW: 3,
    DRIVE_OPEN_COLLECTOR: 3,
}
_TMS_OPS: Final = frozenset({0x4A, 0x4B, 0x6A, 0x6B, 0x6E, 0x6F})  # §3.5 TMS (JTAG)

# clock (docs/hardware/ft232h.md §4): SCK = base / ((1 + divisor) * 2)
_BASE_HZ_DIV5_OFF: Final = 60_000_000
_BASE_HZ_DIV5_ON: Final = 12_000_000

# pins (docs/hardware/ft232h.md §5)
SCK_BIT: Final = 0x01
MOSI_BIT: Final = 0x02
MISO_BIT: Final = 0x04

STAT_KEYS: Final = (
    "mpsse_commands",  # commands run (bad ones included)
    "bad_commands",  # answered FA + opcode
    "send_immediates",
    "spi_bytes",  # bytes clocked with CS low (a bit command counts as one)
    "spi_bits",  # bits clocked with CS low
    "spi_transactions",  # CS-framed transactions handed to the slave
    "split_transactions",  # transactions cut because the host asked for read-back with CS low
    "streamed_transactions",  # transactions the slave took byte by byte (never cut)
    "spi_mode_mismatch",  # transactions clocked other than SPI mode 0, MSB first
    "clock_over_limit",  # transactions clocked faster than spi_max_hz
    "clocked_without_cs",  # data commands run with CS high (the slave ignores them)
    "slave_errors",  # the slave's transfer raised
    "miso_bit_errors",  # bits flipped by the miso_bit_error_rate fault
    "gpio_writes",  # SET_BITS_LOW / SET_BITS_HIGH
    "gpio_reads",  # GET_BITS_LOW / GET_BITS_HIGH
    "in_packets",  # IN packets sent (each with the two status bytes)
    "status_only_packets",  # of which carried no data
    "latency_flushes",  # IN packets the latency timer sent
    "fifo_full_naks",  # OUT packets refused: the read FIFO was full
    "purges",  # SIO_RESET purges and resets
    "vendor_requests",
    "stalled_requests",  # vendor requests the chip does not know
    "bitbang_bytes",  # OUT bytes in async bitbang mode (set the pins)
    "uart_bytes",  # OUT bytes in UART mode (not modelled: dropped)
)

_REVERSE: Final = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


class SpiSlave(Protocol):
    """What the model drives: one whole CS transaction in, its MISO bytes out
    (``hilkit.port.SpiBus`` has it; so do hilkit's W5100 and ENC28J60 models)."""

    def transfer(self, data: bytes) -> bytes: ...


class StreamingSpiSlave(SpiSlave, Protocol):
    """A slave that also takes a transaction as it is clocked (``hilkit.sim.chip``):
    ``stream`` gives the MISO bytes for exactly its MOSI bytes, or None at the first
    byte if this transaction cannot stream (then it goes to ``transfer`` whole)."""

    def stream_begin(self) -> None: ...

    def stream(self, data: bytes) -> bytes | None: ...

    def stream_end(self) -> None: ...


@dataclass
class Ft232hFaults:
    """Faults of the bridge (unplugging is the bus's: ``bus.unplug(model)``)."""

    miso_bit_error_rate: float = 0.0  # each MISO bit from the slave flips with this probability
    stop_answering: bool = False  # IN requests are NAKed for ever: host reads time out

    def __post_init__(self) -> None:
        if not 0.0 <= self.miso_bit_error_rate <= 1.0:
            raise ValueError(f"miso_bit_error_rate {self.miso_bit_error_rate!r}: want 0..1")


@dataclass
class _Slot:
    """A MISO byte of the open transaction: where it goes in the read-back."""

    pos: int  # index in the held read-back
    index: int  # index in the transaction's bytes
    nbits: int  # 8 for byte commands; 1..8 for bit commands
    lsb: bool  # shifted LSB first


class Ft232hModel(UsbDeviceModel):
    """An FT232H (0403:6014, bcdDevice 0x0900) whose MPSSE drives ``spi_slave``.

    ``cs_pin``: the GPIO bit of chip select (3..7 = ADBUS3..7, 8..15 = ACBUS0..7).
    ``spi_max_hz``: the slave's fastest clock (faster transactions are counted).
    ``on_gpio(value, direction)``: called after every SET_BITS_LOW/HIGH with the
    16-bit pin state (ADBUS low byte, ACBUS high byte).
    ``reset_line = (bit, set_level)``: ``set_level(level)`` is called when that pin's
    level changes (an input reads high); wire a chip's /RESET to it.
    ``int_line = (bit, get_level)``: that pin, as an input, reads ``get_level()``;
    wire a chip's /INT to it.
    """

    speed = Speed.HIGH
    kernel_driver_bound = frozenset({0})  # Linux's ftdi_sio binds it; pyftdi detaches

    def __init__(self, serial: str = "FT0001", *, spi_slave: SpiSlave | None = None,
                 cs_pin: int = 3, spi_max_hz: float | None = None,
                 on_gpio: Callable[[int, int], None] | None = None,
                 reset_line: tuple[int, Callable[[bool], None]] | None = None,
                 int_line: tuple[int, Callable[[], bool]] | None = None,
                 faults: Ft232hFaults | None = None, seed: int = 0) -> None:
        super().__init__()
        if not 3 <= cs_pin <= 15:
            raise ValueError(f"cs_pin {cs_pin}: want 3..7 (ADBUS) or 8..15 (ACBUS)")
        if not serial or len(serial) > 126:
            raise ValueError(f"serial {serial!r}: want 1..126 characters")
        self.serial = serial
        self.spi_slave = spi_slave
        self.cs_pin = cs_pin
        self._cs_mask = 1 << cs_pin
        self.spi_max_hz = spi_max_hz
        self.on_gpio = on_gpio
        self.reset_line = reset_line
        self.int_line = int_line
        self.faults = faults if faults is not None else Ft232hFaults()
        self._rng = random.Random(seed)
        mps = BULK_MAX_PACKET[Speed.HIGH]
        self.device_descriptor = d.device(
            vendor=FTDI_VID, product=FT232H_PID, bcd_device=FT232H_BCD_DEVICE,
            i_manufacturer=_STR_MANUFACTURER, i_product=_STR_PRODUCT, i_serial=_STR_SERIAL)
        self.configurations = (d.configuration(1, [
            d.interface(0, 0, num_endpoints=2, cls=0xFF, subclass=0xFF, protocol=0xFF,
                        i_interface=_STR_PRODUCT),
            d.endpoint(BULK_IN, d.EP_BULK, mps),
            d.endpoint(BULK_OUT, d.EP_BULK, mps),
        ], num_interfaces=1, max_power_ma=90),)
        # DS_FT232H: the product string of a blank EEPROM
        self.strings = {_STR_MANUFACTURER: "FTDI", _STR_PRODUCT: "Single RS232-HS",
                        _STR_SERIAL: serial}
        self._stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._spi_clock_s = 0.0
        # the open transaction as a stream: "off" (whole transactions), "pending"
        # (stream_begin called, no byte yet), "on", "failed" (the slave raised: MISO
        # reads 0xFF until CS rises)
        self._stream = "off"
        self._fed = 0  # MOSI bytes of the open transaction already streamed
        self._reset_chip()

    # -- state ----------------------------------------------------------------------------

    def _reset_chip(self) -> None:
        """Power-on / bus-reset state: UART mode, 16 ms latency, pins inputs."""
        self.latency_ms = LATENCY_DEFAULT_MS
        self.bitmode = BITMODE_RESET
        self.modem_ctrl = 0
        self.flow_ctrl = 0
        self.baud_value = 0
        self.line_props = 0
        self.event_char = 0
        self.error_char = 0
        self.gpio_value = 0  # 16 bits: ADBUS low byte, ACBUS high byte
        self.gpio_dir = 0
        self.divisor = 0
        self.div5 = True  # AN_108 §6.2: divide-by-5 on after reset
        self.three_phase = False
        self.adaptive = False
        self.loopback = False
        self.open_drain = 0
        self._cmd = bytearray()  # command bytes not run yet (a command split over packets)
        self._ready = bytearray()  # read-back the host may be sent
        self._held = bytearray()  # read-back of the open transaction (MISO not known yet)
        self._base = 0  # stream position of _ready[0]
        self._mark = 0  # stream position up to which send-immediate released the read-back
        self._last_in = time.monotonic()  # the latency timer restarts at each IN packet
        self._reset_level = True
        self._end_transaction(resolve=False)

    def _end_transaction(self, *, resolve: bool) -> None:
        if resolve:
            self._resolve()
        elif self._stream != "off":
            self._close_stream()  # CS rises (a reset makes the pin an input): the slave knows
        self._stream = "off"
        self._fed = 0
        self._mosi = bytearray()
        self._slots: list[_Slot] = []
        self._mismatch = False
        self._over_limit = False
        self._mosi_prev = 0

    @property
    def stats(self) -> dict[str, int]:
        with self.lock:
            return dict(self._stats)

    @property
    def sck_hz(self) -> float:
        """SCK at the programmed divisor and divide-by-5 (AN_108 §3.8, §6.1-6.2)."""
        base = _BASE_HZ_DIV5_ON if self.div5 else _BASE_HZ_DIV5_OFF
        return base / ((1 + self.divisor) * 2)

    @property
    def bit_rate_hz(self) -> float:
        """Bits per second: 3-phase clocking spends three phases per bit (AN_108 §6.3)."""
        return self.sck_hz * 2 / 3 if self.three_phase else self.sck_hz

    @property
    def spi_clock_s(self) -> float:
        """What the SPI bits clocked so far took at the clock each was clocked at."""
        with self.lock:
            return self._spi_clock_s

    @property
    def cs_low(self) -> bool:
        mask = self._cs_mask
        return bool(self.gpio_dir & mask and not self.gpio_value & mask)  # an input reads high

    def _level(self, bit: int) -> bool:
        """The level on pin ``bit``: driven if an output, else the line's."""
        mask = 1 << bit
        if self.gpio_dir & mask:
            return bool(self.gpio_value & mask)
        if self.int_line is not None and self.int_line[0] == bit:
            return bool(self.int_line[1]())
        return True  # an input nobody drives reads high

    def _pins(self) -> int:
        return sum(1 << b for b in range(16) if self._level(b))

    # -- standard requests ---------------------------------------------------------------------

    def bus_reset(self) -> None:
        with self.lock:
            self._reset_chip()

    def set_configuration(self, value: int) -> None:
        with self.lock:
            self._purge_in()
            self._cmd.clear()

    # -- vendor requests (docs/hardware/ft232h.md §2) ------------------------------------------

    def control(self, setup: Setup, data: bytes) -> bytes:
        """The SIO requests pyftdi sends; anything else stalls, as the chip does."""
        with self.lock:
            self._stats["vendor_requests"] += 1
            try:
                return self._vendor(setup)
            except Stall:
                self._stats["stalled_requests"] += 1
                raise

    def _vendor(self, s: Setup) -> bytes:
        req, value = s.bRequest, s.wValue
        if s.bmRequestType == _VENDOR_OUT:
            if req not in (SIO_SET_BAUDRATE, SIO_SET_FLOW_CTRL) and s.wIndex & 0xFF not in (0, 1):
                raise Stall(f"no interface {s.wIndex & 0xFF}")
            if req == SIO_RESET and value in (SIO_RESET_SIO, SIO_RESET_PURGE_RX,
                                              SIO_RESET_PURGE_TX):
                self._stats["purges"] += 1
                if value in (SIO_RESET_SIO, SIO_RESET_PURGE_RX):
                    self._cmd.clear()
                if value in (SIO_RESET_SIO, SIO_RESET_PURGE_TX):
                    self._purge_in()
                return b""
            if req == SIO_SET_LATENCY_TIMER:
                self.latency_ms = value & 0xFF
                return b""
            if req == SIO_SET_BITMODE:
                self._set_bitmode(value >> 8, value & 0xFF)
                return b""
            if req == SIO_SET_MODEM_CTRL:
                mask = value >> 8  # which of DTR (bit 0) / RTS (bit 1) to change
                self.modem_ctrl = (self.modem_ctrl & ~mask) | (value & mask & 0xFF)
                return b""
            if req == SIO_SET_FLOW_CTRL:
                self.flow_ctrl = s.wIndex & 0xFF00
                return b""
            if req == SIO_SET_BAUDRATE:
                self.baud_value = value | (s.wIndex & 0xFF00) << 8
                return b""
            if req == SIO_SET_DATA:
                self.line_props = value
                return b""
            if req == SIO_SET_EVENT_CHAR:
                self.event_char = value
                return b""
            if req == SIO_SET_ERROR_CHAR:
                self.error_char = value
                return b""
        elif s.bmRequestType == _VENDOR_IN:
            if req == SIO_GET_LATENCY_TIMER:
                return bytes((self.latency_ms,))
            if req == SIO_POLL_MODEM_STATUS:
                return MODEM_STATUS
            if req == SIO_READ_PINS:
                return bytes((self._pins() & 0xFF,))
        raise Stall(f"vendor request 0x{req:02x} type 0x{s.bmRequestType:02x}")

    def _set_bitmode(self, mode: int, mask: int) -> None:
        """SET_BITMODE: reset (UART), async bitbang, MPSSE; others are not modelled."""
        if mode not in (BITMODE_RESET, BITMODE_BITBANG, BITMODE_MPSSE):
            raise Stall(f"bit mode 0x{mode:02x} not modelled")
        if mode != BITMODE_MPSSE and self.cs_low:
            self._end_transaction(resolve=True)
        self.bitmode = mode
        self._cmd.clear()
        if mode == BITMODE_BITBANG:
            self._set_gpio(self.gpio_value, (self.gpio_dir & 0xFF00) | mask)
        elif mode == BITMODE_RESET:
            self._set_gpio(self.gpio_value, 0)

    def _purge_in(self) -> None:
        """Drop the read-back not yet sent (an open transaction's MISO bytes too)."""
        self._base += len(self._ready) + len(self._held)
        self._mark = self._base
        self._ready.clear()
        self._held.clear()
        self._slots.clear()

    # -- bulk OUT: the command stream -----------------------------------------------------------

    def out_packet(self, endpoint: int, packet: bytes) -> None:
        if endpoint != BULK_OUT:
            raise Stall(f"no OUT endpoint 0x{endpoint:02x}")
        with self.lock:
            if self.bitmode == BITMODE_MPSSE:
                if len(self._ready) >= READ_FIFO_SIZE:
                    # the MPSSE stalls on a full read FIFO; the command FIFO backs up
                    self._stats["fifo_full_naks"] += 1
                    raise Nak
                self._cmd += packet
                self._run()
            elif self.bitmode == BITMODE_BITBANG:
                for b in packet:
                    self._set_gpio((self.gpio_value & 0xFF00) | b, self.gpio_dir)
                self._stats["bitbang_bytes"] += len(packet)
            else:
                self._stats["uart_bytes"] += len(packet)
        self.wake()

    def _run(self) -> None:
        """Run every complete command in ``_cmd``; a partial one waits for its bytes."""
        buf = self._cmd
        i = 0
        while i < len(buf):
            n = self._command_length(buf, i)
            if n is None or i + n > len(buf):
                break
            self._stats["mpsse_commands"] += 1
            self._execute(bytes(buf[i:i + n]))
            i += n
        del buf[:i]

    @staticmethod
    def _command_length(buf: bytearray, i: int) -> int | None:
        """The length of the command at ``buf[i]``, None if its length bytes are not
        here yet; an unknown opcode is one byte (AN_108 §3.1)."""
        op = buf[i]
        if op in _FIXED:
            return _FIXED[op]
        if 0x10 <= op <= 0x3F:
            write = bool(op & MPSSE_DO_WRITE)
            if op & MPSSE_BITMODE:
                return 3 if write else 2
            if i + 3 > len(buf):
                return None
            return 3 + (buf[i + 1] | buf[i + 2] << 8) + 1 if write else 3
        if op in _TMS_OPS:
            return 3
        return 1

    def _execute(self, cmd: bytes) -> None:
        op = cmd[0]
        if 0x10 <= op <= 0x3F:
            self._shift(op, cmd)
        elif op in (SET_BITS_LOW, SET_BITS_HIGH):
            self._stats["gpio_writes"] += 1
            shift = 0 if op == SET_BITS_LOW else 8
            keep = 0xFF00 >> shift
            self._set_gpio((self.gpio_value & keep) | cmd[1] << shift,
                           (self.gpio_dir & keep) | cmd[2] << shift)
        elif op in (GET_BITS_LOW, GET_BITS_HIGH):
            self._stats["gpio_reads"] += 1
            self._emit(self._pins() >> (0 if op == GET_BITS_LOW else 8) & 0xFF)
        elif op == TCK_DIVISOR:
            self.divisor = cmd[1] | cmd[2] << 8
        elif op == SEND_IMMEDIATE:
            self._stats["send_immediates"] += 1
            self._mark = self._base + len(self._ready) + len(self._held)
        elif op in (DIS_DIV_5, EN_DIV_5):
            self.div5 = op == EN_DIV_5
        elif op in (EN_3_PHASE, DIS_3_PHASE):
            self.three_phase = op == EN_3_PHASE
        elif op in (EN_ADAPTIVE, DIS_ADAPTIVE):
            self.adaptive = op == EN_ADAPTIVE
        elif op in (LOOPBACK_START, LOOPBACK_END):
            self.loopback = op == LOOPBACK_START
        elif op == DRIVE_OPEN_COLLECTOR:
            self.open_drain = cmd[1] | cmd[2] << 8
        elif op == CLK_BITS:
            self._clock_idle(cmd[1] + 1, whole_bytes=False)
        elif op in (CLK_BYTES, CLK_BYTES_OR_HIGH, CLK_BYTES_OR_LOW):
            self._clock_idle(8 * ((cmd[1] | cmd[2] << 8) + 1), whole_bytes=True)
        elif op in (WAIT_ON_HIGH, WAIT_ON_LOW, CLK_WAIT_HIGH, CLK_WAIT_LOW):
            pass  # GPIOL1 is not wired to anything: the wait ends at once
        elif op in _TMS_OPS:
            if op & MPSSE_DO_READ:
                self._emit(0xFF >> (7 - (cmd[1] & 7)))  # TDO idles high
        else:
            self._stats["bad_commands"] += 1
            self._emit(BAD_COMMAND)
            self._emit(op)

    # -- pins ---------------------------------------------------------------------------------

    def _set_gpio(self, value: int, direction: int) -> None:
        was_low = self.cs_low
        self.gpio_value, self.gpio_dir = value & 0xFFFF, direction & 0xFFFF
        now_low = self.cs_low
        if was_low and not now_low:
            self._end_transaction(resolve=True)
        elif now_low and not was_low:
            self._end_transaction(resolve=False)
            # SPI mode 0 idles SCK low: a clock idling high at CS fall is mode 2 or 3
            self._mismatch = self._level(0)
            self._begin_stream()
        if self.reset_line is not None:
            level = self._level(self.reset_line[0])
            if level != self._reset_level:
                self._reset_level = level
                self.reset_line[1](level)
        if self.on_gpio is not None:
            self.on_gpio(self.gpio_value, self.gpio_dir)

    # -- data shifting (AN_108 §3.2-3.4) --------------------------------------------------------

    def _emit(self, byte: int) -> None:
        """Append one read-back byte: held back while a transaction is open, since the
        transaction's MISO bytes before it are not known yet."""
        held = self.cs_low and self._stream not in ("on", "failed")  # streamed: all known
        (self._held if held else self._ready).append(byte & 0xFF)

    def _clock_idle(self, nbits: int, *, whole_bytes: bool) -> None:
        """Clocks with no data (AN_108 §6.5-6.6): MOSI holds its level."""
        self._account(nbits)
        if self.cs_low and whole_bytes:
            idle = 0xFF if self.gpio_value & MOSI_BIT else 0x00
            self._mosi += bytes((idle,)) * (nbits // 8)
            self._feed()

    def _account(self, nbits: int) -> None:
        self._spi_clock_s += nbits / self.bit_rate_hz
        if not self.cs_low:
            self._stats["clocked_without_cs"] += 1
            return
        self._stats["spi_bits"] += nbits
        if self.spi_max_hz is not None and self.sck_hz > self.spi_max_hz:
            self._over_limit = True

    def _shift(self, op: int, cmd: bytes) -> None:
        write, read = bool(op & MPSSE_DO_WRITE), bool(op & MPSSE_DO_READ)
        lsb = bool(op & MPSSE_LSB)
        if op & MPSSE_BITMODE:
            nbits = (cmd[1] & 7) + 1
            out = [cmd[2]] if write else []
            count, width = 1, nbits
        else:
            count = (cmd[1] | cmd[2] << 8) + 1
            out = list(cmd[3:]) if write else []
            width = 8
            nbits = 8 * count
        self._account(nbits)
        idle = 0xFF if self.gpio_value & MOSI_BIT else 0x00
        mosi = out if write else [idle] * count
        if write:  # MOSI keeps the level of the last bit clocked out
            level = mosi[-1] >> (width - 1 if lsb else 8 - width) & 1
            self.gpio_value = (self.gpio_value | MOSI_BIT) if level else \
                (self.gpio_value & ~MOSI_BIT)
        if not self.cs_low:
            # the slave ignores the clock; MISO is not driven and reads high
            if read:
                for b in mosi:
                    self._emit(b if self.loopback else 0xFF >> (8 - width))
            return
        self._stats["spi_bytes"] += count
        # SPI mode 0: the slave samples MOSI on the rising edge, MSB first, so the host
        # must change MOSI on the falling edge (AN_108 §3.3; docs/hardware/ft232h.md §3)
        wrong_edge = write and not op & MPSSE_WRITE_NEG
        if lsb or wrong_edge or self.three_phase:
            self._mismatch = True
        for b in mosi:
            seen = b
            if width < 8:  # bit commands send the top bits (MSB first) or the low bits
                seen = b & (0xFF << (8 - width)) & 0xFF if not lsb else b & (0xFF >> (8 - width))
            if lsb:
                seen = _REVERSE[seen]
            if wrong_edge or self.three_phase:
                # MOSI changes on the edge the slave samples: it sees the previous bit
                seen, self._mosi_prev = (self._mosi_prev << 7 | seen >> 1) & 0xFF, seen & 1
            else:
                self._mosi_prev = seen & 1
            index = len(self._mosi)
            self._mosi.append(seen)
            if read:
                if self.loopback:
                    self._held.append(b)
                else:
                    self._slots.append(_Slot(len(self._held), index, width, lsb))
                    self._held.append(0)
        self._feed()

    # -- streaming to the slave -------------------------------------------------------------

    @property
    def spi_slave(self) -> SpiSlave | None:
        return self._slave

    @spi_slave.setter
    def spi_slave(self, slave: SpiSlave | None) -> None:
        self._slave = slave
        streams = slave is not None and all(
            callable(getattr(slave, m, None)) for m in ("stream_begin", "stream", "stream_end"))
        self._stream_slave = cast(StreamingSpiSlave, slave) if streams else None

    def _streamer(self) -> StreamingSpiSlave | None:
        return self._stream_slave

    def _begin_stream(self) -> None:
        """CS fell: offer the slave the transaction as a stream."""
        slave = self._streamer()
        if slave is None:
            return
        try:
            slave.stream_begin()
        except Exception:
            self._stats["slave_errors"] += 1
            return  # whole transactions, then
        self._stream = "pending"

    def _feed(self) -> None:
        """Stream the MOSI bytes clocked since the last feed; their MISO bytes fill the
        read-back at once, which is then all known and released for sending."""
        if self._stream == "off" or self._fed == len(self._mosi):
            return
        chunk = bytes(self._mosi[self._fed:])
        reply: bytes | None = b""
        if self._stream != "failed":
            slave = self._streamer()
            try:
                reply = slave.stream(chunk) if slave is not None else None
            except Exception:
                reply = None
            if reply is None and self._stream == "pending" and slave is not None:
                # declined at the first byte: hold back, hand it over whole at CS high
                self._stream = "off"
                return
            if reply is None:  # raised, or declined after streaming: the rest is lost
                self._stats["slave_errors"] += 1
                self._stream = "failed"
            else:
                self._stream = "on"
        self._fill(bytes(reply or b""), self._fed, len(chunk))
        self._fed = len(self._mosi)
        self._ready += self._held
        self._held.clear()
        self._slots.clear()

    def _close_stream(self) -> None:
        """CS rose on a streamed transaction (or one offered but never clocked)."""
        slave = self._streamer()
        if slave is None:
            return
        try:
            slave.stream_end()
        except Exception:
            self._stats["slave_errors"] += 1

    def _fill(self, reply: bytes, first: int, count: int) -> None:
        """Put the slave's MISO bytes for transaction bytes ``first..first+count`` into
        the held read-back, through the bit-error fault, bit order and bit count."""
        reply = reply[:count].ljust(count, b"\xff")
        rate = self.faults.miso_bit_error_rate
        for slot in self._slots:
            b = reply[slot.index - first]
            if rate > 0:
                for bit in range(8):
                    if self._rng.random() < rate:
                        b ^= 1 << bit
                        self._stats["miso_bit_errors"] += 1
            if slot.lsb:
                b = _REVERSE[b]
            if slot.nbits < 8:
                b = b & (0xFF >> (8 - slot.nbits)) if slot.lsb else b >> (8 - slot.nbits)
            self._held[slot.pos] = b

    def _resolve(self) -> None:
        """CS rose (or the host forced the read-back): hand the transaction to the slave,
        fill its MISO positions, release the read-back for sending."""
        if self._stream != "off":
            self._feed()  # nothing is left unless a command fed none (cannot happen)
            if self._mosi:
                self._stats["spi_transactions"] += 1
                self._stats["streamed_transactions"] += self._stream == "on"
                self._stats["spi_mode_mismatch"] += self._mismatch
                self._stats["clock_over_limit"] += self._over_limit
            self._close_stream()
        elif self._mosi:
            self._stats["spi_transactions"] += 1
            self._stats["spi_mode_mismatch"] += self._mismatch
            self._stats["clock_over_limit"] += self._over_limit
            reply = b""
            if self.spi_slave is not None:
                try:
                    reply = bytes(self.spi_slave.transfer(bytes(self._mosi)))
                except Exception:
                    self._stats["slave_errors"] += 1
                    reply = b""
            self._fill(reply, 0, len(self._mosi))
        self._stream = "off"
        self._ready += self._held
        self._held.clear()
        self._slots.clear()
        self._mosi.clear()

    # -- bulk IN: read-back with modem status ------------------------------------------------

    def in_packet(self, endpoint: int, max_packet: int) -> bytes | None:
        """Status bytes + read-back, when a packet is full, send-immediate released it,
        or the latency timer ran out (a waiting host then gets the status bytes alone)."""
        if endpoint != BULK_IN:
            raise Stall(f"no IN endpoint 0x{endpoint:02x}")
        with self.lock:
            if self.faults.stop_answering:
                return None
            room = max_packet - len(MODEM_STATUS)
            now = time.monotonic()
            released = self._mark - self._base
            if (self._held and released > len(self._ready) and not self._ready
                    and self.cs_low):
                # the host wants read-back of a transaction still open: cut it here
                self._stats["split_transactions"] += 1
                mismatch = self._mismatch
                self._end_transaction(resolve=True)
                self._mismatch = mismatch
            take = 0
            if len(self._ready) >= room:
                take = room
            elif released > 0 and self._ready:
                take = min(released, len(self._ready))
            elif now - self._last_in >= max(1, self.latency_ms) / 1000:
                take = min(room, len(self._ready))
                self._stats["latency_flushes"] += 1
            else:
                return None
            data = bytes(self._ready[:take])
            del self._ready[:take]
            self._base += take
            self._last_in = now
            self._stats["in_packets"] += 1
            self._stats["status_only_packets"] += not take
        if take:
            self.wake()  # a write NAKed on a full FIFO may go on
        return MODEM_STATUS + data

    def wait(self, timeout_s: float, endpoint: int | None = None) -> None:
        """An IN request found nothing: wait for new read-back or the latency timer."""
        if endpoint == BULK_IN:
            with self.lock:
                if not self.faults.stop_answering:
                    left = self._last_in + max(1, self.latency_ms) / 1000 - time.monotonic()
                    timeout_s = min(timeout_s, max(0.0, left))
        if timeout_s > 0:
            super().wait(timeout_s, endpoint)


@contextlib.contextmanager
def pyftdi_backend(module: str) -> Iterator[None]:
    """pyftdi enumerates through the pyusb backend ``module`` (its ``get_backend()``) while
    the block runs: pyftdi loads backends by module name (``UsbTools.BACKENDS``) and caches
    what it found, so the cache is flushed on the way in and out."""
    from pyftdi.usbtools import UsbTools  # type: ignore[import-untyped]

    saved = UsbTools.BACKENDS
    UsbTools.BACKENDS = (module,)
    UsbTools.flush_cache()
    try:
        yield
    finally:
        UsbTools.BACKENDS = saved
        UsbTools.flush_cache()

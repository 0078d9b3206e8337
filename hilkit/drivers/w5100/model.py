"""A register-level model of the WIZnet W5100 on its SPI bus.

Written from the W5100 datasheet as ``docs/hardware/w5100.md`` tells it (its
sections are cited below as "w5100 §N"). The model is an SPI *slave*: it implements
``hilkit.port.SpiBus``, so a driver talks to it exactly as to spidev or an
FT232H. Every CS transaction is one 4-byte frame, ``F0 hi lo data`` (write) or
``0F hi lo dummy`` (read); MISO carries ``00 01 02`` during the opcode and
address and the register value (read) or ``03`` (write) in the last slot.

What is modelled: the common registers, the four sockets' registers, the 8 KB
TX and 8 KB RX buffer memories with the RMSR/TMSR split, socket commands, and
the MACRAW data path on socket 0 (the only socket that can be MACRAW). Frames
sent with SEND go out through ``wire.send``; frames from the wire are pulled
with ``wire.poll`` whenever the model is touched (each ``transfer`` or
``transfer_batch`` call, each look at the /INT pin) and stored in socket 0's RX
buffer as ``[len+2 big-endian][frame]``. The chip's own TCP/UDP/IPRAW engines
are not modelled: OPEN in those modes only sets Sn_SR.

Decisions where the documents leave room:

* Sn_TX_WR and Sn_RX_RD are latched (w5100 §4, notes): a write goes to a latch
  that SEND / RECV commits; reads return the committed value.
* Reserved addresses read 0x00 and ignore writes; every access is counted in
  ``stats["reserved_access"]`` (a correct driver leaves it at 0).
* Writes to read-only registers are ignored and counted in ``stats["ro_writes"]``.
* Soft reset (MR.RST or ``soft_reset()``) and hard reset (/RESET pulse or
  ``hard_reset()``) both restore every register to its reset value and keep the
  buffer RAM (w5100 §3: RAM is not cleared). A hard reset also holds the chip
  deaf while /RESET is low and for ``timing.pll_lock_ms`` after release.
* MF=1 passes frames to SHAR and broadcast; multicast only if
  ``mf_passes_multicast`` (w5100 §13: not confirmed, assume not). MF is latched at
  OPEN, so a driver must re-OPEN after changing Sn_MR (as Linux does).
* Received frames shorter than 60 bytes are padded with zeros to 60, as the
  sending NIC would on a real wire (``pad_rx``); frames shorter than 14 or
  longer than 1514 bytes are dropped (no FCS is stored, w5100 §8).
* A MACRAW SEND longer than Sn_MSSR (1514 after OPEN) is dropped but completes
  with SEND_OK (w5100 §9); SEND with nothing to send completes with SEND_OK.
* RMSR/TMSR asking for more than 8 KB: sockets are allocated in order; one
  that no longer fits gets no memory (w5100 §3, notes).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hilkit.port.clock import Clock
from hilkit.port.device import Device
from hilkit.sim.chip import DEFAULT_WIRE_BUDGET, ChipModel

# -- SPI framing (w5100 §1) ------------------------------------------------------------

OP_WRITE = 0xF0  # write frame: F0 addr_hi addr_lo data
OP_READ = 0x0F  # read frame: 0F addr_hi addr_lo dummy; 4th MISO byte is the value
FRAME_LEN = 4  # one CS assertion per 4-byte frame, no burst mode in SPI
MISO_ECHO = bytes((0x00, 0x01, 0x02, 0x03))  # counter shifted out in slots 0..3

# -- address map (w5100 §2) ------------------------------------------------------------

ADDR_MASK = 0x7FFF  # address bit 15 is ignored
COMMON_REGS_END = 0x0030  # 0x0000-0x002F common registers; 0x0030-0x03FF reserved
SOCKET_REGS = 0x0400  # socket n registers at 0x0400 + n*0x0100
SOCKET_REGS_STRIDE = 0x0100
SOCKET_REGS_END = 0x0800  # 0x0800-0x3FFF reserved
TX_MEM_START = 0x4000  # TX memory, 8 KB
RX_MEM_START = 0x6000  # RX memory, 8 KB
MEM_SIZE = 0x2000
SOCKETS = 4

# -- common registers (w5100 §3) -------------------------------------------------------

MR = 0x0000  # Mode
GAR = 0x0001  # Gateway Address, 4 bytes
SUBR = 0x0005  # Subnet mask, 4 bytes
SHAR = 0x0009  # Source Hardware Address, 6 bytes
SIPR = 0x000F  # Source IP Address, 4 bytes
IR = 0x0015  # Interrupt
IMR = 0x0016  # Interrupt Mask
RTR = 0x0017  # Retry Time, 2 bytes, unit 100 us
RCR = 0x0019  # Retry Count
RMSR = 0x001A  # RX Memory Size, 2 bits per socket
TMSR = 0x001B  # TX Memory Size, 2 bits per socket
PATR = 0x001C  # PPPoE Authentication Type, 2 bytes, read-only
PTIMER = 0x0028  # PPP LCP Request Timer
PMAGIC = 0x0029  # PPP LCP Magic number
UIPR = 0x002A  # Unreachable IP Address, 4 bytes, read-only
UPORT = 0x002E  # Unreachable Port, 2 bytes, read-only

RTR_RESET = 0x07D0  # 2000 x 100 us = 200 ms; Linux probes for this value
RCR_RESET = 0x08
MSR_RESET = 0x55  # RMSR/TMSR: 2 KB per socket
PTIMER_RESET = 0x28

# MR bits (w5100 §3)
MR_RST = 0x80  # soft reset, self-clearing
MR_PB = 0x10  # ping block
MR_PPPOE = 0x08
MR_LB = 0x04  # not used (DS v1.0.1)
MR_AI = 0x02  # address auto-increment, indirect bus only
MR_IND = 0x01  # indirect bus mode
MR_STORED = MR_PB | MR_PPPOE | MR_LB | MR_AI | MR_IND  # bits 6..5 reserved, read 0

# IR / IMR bits (w5100 §3)
IR_CONFLICT = 0x80  # IP conflict: an ARP carrying our SIPR from another MAC
IR_UNREACH = 0x40  # ICMP destination unreachable received
IR_PPPOE = 0x20  # PPPoE connection closed
IR_S_INT = 0x0F  # bits 3..0: socket 3..0 has Sn_IR != 0 (read-only mirror)
IR_W1C = IR_CONFLICT | IR_UNREACH | IR_PPPOE  # cleared by writing 1
IMR_BITS = IR_W1C | IR_S_INT  # bit 4 reserved

# -- socket registers, offsets from the socket base (w5100 §4) --------------------------

Sn_MR = 0x00  # Mode
Sn_CR = 0x01  # Command
Sn_IR = 0x02  # Interrupt, write 1 to clear
Sn_SR = 0x03  # Status, read-only
Sn_PORT = 0x04  # Source Port, 2 bytes
Sn_DHAR = 0x06  # Destination Hardware Address, 6 bytes
Sn_DIPR = 0x0C  # Destination IP Address, 4 bytes
Sn_DPORT = 0x10  # Destination Port, 2 bytes
Sn_MSSR = 0x12  # Maximum Segment Size, 2 bytes
Sn_PROTO = 0x14  # IP protocol in IPRAW mode
Sn_TOS = 0x15  # IP Type Of Service
Sn_TTL = 0x16  # IP Time To Live
Sn_TX_FSR = 0x20  # TX Free Size, 2 bytes, read-only
Sn_TX_RD = 0x22  # TX Read Pointer, 2 bytes, read-only
Sn_TX_WR = 0x24  # TX Write Pointer, 2 bytes
Sn_RX_RSR = 0x26  # RX Received Size, 2 bytes, read-only
Sn_RX_RD = 0x28  # RX Read Pointer, 2 bytes
Sn_RX_WR = 0x2A  # RX Write Pointer, 2 bytes, read-only (W3150A+ core, informative)

Sn_TTL_RESET = 0x80
Sn_DHAR_RESET = b"\xff" * 6  # DS v1.1.1 changed 0x00 -> 0xFF

# Sn_MR (w5100 §4)
Sn_MR_P = 0x0F  # protocol field
Sn_MR_CLOSE = 0x00
Sn_MR_TCP = 0x01
Sn_MR_UDP = 0x02
Sn_MR_IPRAW = 0x03
Sn_MR_MACRAW = 0x04  # socket 0 only
Sn_MR_PPPOE = 0x05  # socket 0 only
Sn_MR_ND = 0x20  # TCP no delayed ACK / UDP IGMP version
Sn_MR_MF = 0x40  # MAC filter, MACRAW only (bit 7 on the W5500)
Sn_MR_MULTI = 0x80  # UDP multicast

# Sn_CR commands (w5100 §5)
Sn_CR_OPEN = 0x01
Sn_CR_LISTEN = 0x02
Sn_CR_CONNECT = 0x04
Sn_CR_DISCON = 0x08
Sn_CR_CLOSE = 0x10
Sn_CR_SEND = 0x20
Sn_CR_SEND_MAC = 0x21
Sn_CR_SEND_KEEP = 0x22
Sn_CR_RECV = 0x40
COMMANDS = frozenset(
    {
        Sn_CR_OPEN,
        Sn_CR_LISTEN,
        Sn_CR_CONNECT,
        Sn_CR_DISCON,
        Sn_CR_CLOSE,
        Sn_CR_SEND,
        Sn_CR_SEND_MAC,
        Sn_CR_SEND_KEEP,
        Sn_CR_RECV,
    }
)

# Sn_IR bits (w5100 §4)
Sn_IR_SEND_OK = 0x10
Sn_IR_TIMEOUT = 0x08
Sn_IR_RECV = 0x04
Sn_IR_DISCON = 0x02
Sn_IR_CON = 0x01
Sn_IR_BITS = 0x1F

# Sn_SR values (w5100 §6)
SOCK_CLOSED = 0x00
SOCK_INIT = 0x13
SOCK_UDP = 0x22
SOCK_IPRAW = 0x32
SOCK_MACRAW = 0x42
SOCK_PPPOE = 0x5F

# -- MACRAW frames (w5100 §8, §9) -------------------------------------------------------

PACKET_INFO_LEN = 2  # big-endian length header; its value includes these 2 bytes
MACRAW_MSS = 1514  # largest frame without FCS; Sn_MSSR 0 or larger becomes this on OPEN
ETH_HEADER_LEN = 14
ETH_MIN_FRAME = 60  # shortest frame without FCS on a real wire (the sender pads)
BROADCAST = b"\xff" * 6

STAT_KEYS = (
    "frames_in",  # frames stored in socket 0's RX buffer
    "bytes_in",  # their stored lengths (after padding), without the 2-byte header
    "frames_out",  # frames SEND put on the wire (or into ``sent``)
    "bytes_out",
    "rx_dropped_full",  # did not fit in the RX buffer (or faults.rx_full)
    "rx_filtered",  # refused by the MF filter
    "rx_not_open",  # arrived while socket 0 was not open in MACRAW
    "rx_runts",  # shorter than an Ethernet header
    "rx_oversize",  # longer than 1514 bytes
    "rx_fill_frames",  # stored by fill_rx()
    "tx_oversize",  # SEND longer than Sn_MSSR: dropped, SEND_OK still set
    "tx_empty",  # SEND with TX_RD == TX_WR
    "tx_short",  # sent frames shorter than 60 bytes (a driver should pad)
    "tx_stalled",  # SENDs swallowed by faults.stall_send
    "wire_tx_refused",  # wire.send returned False
    "wire_errors",  # wire.send / wire.poll raised
    "bad_frames",  # CS transactions not 4 bytes long, or opcode not F0/0F
    "reserved_access",  # reads or writes of reserved addresses
    "ro_writes",  # writes to read-only registers (ignored)
    "access_in_reset",  # frames while the chip was in reset or locking its PLL
    "bad_commands",  # Sn_CR values that are not commands
    "cmd_ignored",  # commands that do not apply (SEND on a closed socket, LISTEN on MACRAW)
    "cmd_while_busy",  # Sn_CR written while the previous command was pending
    "send_while_busy",  # SEND while the previous SEND had not completed
    "pointer_errors",  # TX_WR or RX_RD moved past the other pointer / no memory
    "rx_misaligned",  # RECV left RX_RD inside a frame instead of at a frame boundary
    "resets",  # soft + hard
    "soft_resets",
    "hard_resets",
    "bit_errors",  # MISO bits flipped
    "int_asserts",  # /INT falling edges
    "ip_conflicts",  # ARPs from another MAC carrying our SIPR (IR.CONFLICT)
    "would_arp_reply",  # ARP requests for SIPR the chip's own stack would answer
    "would_echo_reply",  # ICMP echo requests to SIPR it would answer (MR.PB = 0)
)

_READ_REPLY = tuple(MISO_ECHO[:3] + bytes((v,)) for v in range(256))
_BLOCKED_REPLY = bytes(FRAME_LEN)


def _span(start: int, size: int) -> frozenset[int]:
    return frozenset(range(start, start + size))


# Plain storage: readable (and, unless read-only, writable) bytes of the register files.
_COMMON_RW = (
    _span(GAR, 4)
    | _span(SUBR, 4)
    | _span(SHAR, 6)
    | _span(SIPR, 4)
    | _span(RTR, 2)
    | frozenset({IMR, RCR, RMSR, TMSR, PTIMER, PMAGIC})
)
_COMMON_RO = _span(PATR, 2) | _span(UIPR, 4) | _span(UPORT, 2)
_SOCK_RW = (
    _span(Sn_PORT, 2)
    | _span(Sn_DHAR, 6)
    | _span(Sn_DIPR, 4)
    | _span(Sn_DPORT, 2)
    | _span(Sn_MSSR, 2)
    | frozenset({Sn_MR, Sn_PROTO, Sn_TOS, Sn_TTL})
)
_SOCK_RO = (
    _span(Sn_TX_FSR, 2)
    | _span(Sn_TX_RD, 2)
    | _span(Sn_RX_RSR, 2)
    | _span(Sn_RX_WR, 2)
    | frozenset({Sn_SR})
)


def _common_reset() -> bytearray:
    regs = bytearray(COMMON_REGS_END)
    regs[RTR : RTR + 2] = RTR_RESET.to_bytes(2, "big")
    regs[RCR] = RCR_RESET
    regs[RMSR] = MSR_RESET
    regs[TMSR] = MSR_RESET
    regs[PTIMER] = PTIMER_RESET
    return regs


def _socket_reset() -> bytearray:
    regs = bytearray(SOCKET_REGS_STRIDE)
    regs[Sn_DHAR : Sn_DHAR + 6] = Sn_DHAR_RESET
    regs[Sn_TTL] = Sn_TTL_RESET
    return regs


def memory_split(msr: int) -> tuple[tuple[int, int], ...]:
    """(offset, size) of each socket's buffer in 8 KB for an RMSR/TMSR value (w5100 §3).

    Code 0/1/2/3 = 1/2/4/8 KB; sockets are packed in order from offset 0; a socket
    that no longer fits gets size 0.
    """
    out: list[tuple[int, int]] = []
    base = 0
    for n in range(SOCKETS):
        size = 1024 << ((msr >> (2 * n)) & 0x03)
        if base + size <= MEM_SIZE:
            out.append((base, size))
            base += size
        else:
            out.append((base, 0))
    return tuple(out)


@dataclass
class W5100Faults:
    """Faults a test can switch on at any moment; each hit is counted in ``stats``."""

    bit_error_rate: float = 0.0  # probability per MISO bit of being flipped
    rx_full: bool = False  # the RX buffer looks full: every arriving frame is dropped
    stall_send: bool = False  # SEND never completes (no SEND_OK, TX_RD stays) until reset/OPEN


@dataclass
class W5100Timing:
    """How long the chip takes, in ``clock`` milliseconds; 0 means at once."""

    cmd_ms: float = 0.0  # Sn_CR reads back the command this long before it is taken
    send_ms: float = 0.0  # from SEND taken to the frame on the wire and SEND_OK
    soft_reset_ms: float = 0.0  # MR.RST reads 1 this long; other accesses are ignored
    pll_lock_ms: float = 0.0  # after /RESET goes high, the chip ignores the bus this long


@dataclass
class _Socket:
    regs: bytearray = field(default_factory=_socket_reset)
    tx_rd: int = 0
    tx_wr: int = 0  # committed (what the chip uses and what reads return)
    tx_wr_latch: int = 0  # written by the host, committed by SEND
    rx_rd: int = 0
    rx_rd_latch: int = 0  # written by the host, committed by RECV
    rx_wr: int = 0
    rx_ends: deque[int] = field(default_factory=deque)  # RX pointer after each stored frame
    mf: bool = False  # Sn_MR.MF as latched by OPEN
    cmd: int = 0  # command written, not yet taken (timing.cmd_ms)
    cmd_due: float = 0.0
    send_due: float | None = None  # SEND in flight, completes at this time
    send_frame: bytes | None = None
    send_stalled: bool = False


class W5100Model(ChipModel):
    """The W5100 as an SPI slave (``hilkit.port.SpiBus``), with its /INT and /RESET pins.

    ``wire`` is the Ethernet the chip's PHY sits on (a Device, e.g. a TAP); without
    one, frames sent are collected in ``sent`` and frames are fed with ``inject``.
    ``clock`` times the optional delays in ``timing``. What every model shares
    (the bus, the wire pump, the /INT descriptor, faults) is ``ChipModel``'s.
    """

    CHIP = "W5100"
    faults: W5100Faults

    def __init__(
        self,
        wire: Device | None = None,
        clock: Clock | None = None,
        *,
        seed: int = 0,
        timing: W5100Timing | None = None,
        faults: W5100Faults | None = None,
        pad_rx: bool = True,
        mf_passes_multicast: bool = False,
        wire_budget: int = DEFAULT_WIRE_BUDGET,
    ) -> None:
        super().__init__(wire, clock, seed=seed, stat_keys=STAT_KEYS, wire_budget=wire_budget)
        self.timing = timing if timing is not None else W5100Timing()
        self.faults = faults if faults is not None else W5100Faults()
        self.pad_rx = pad_rx
        self.mf_passes_multicast = mf_passes_multicast
        self.tx_mem = bytearray(MEM_SIZE)
        self.rx_mem = bytearray(MEM_SIZE)
        self._deaf_until = 0.0  # PLL locking after a hard reset
        self._rst_until: float | None = None  # MR.RST still reads 1
        self._blocked = False  # /RESET held, the PLL locking or MR.RST, as last seen
        self._timers = False  # a command, SEND or reset is waiting for the clock
        self._registers_reset()

    # -- test and fault hooks -----------------------------------------------------------

    def fill_rx(self, frame: bytes | None = None) -> int:
        """Fill socket 0's RX buffer with copies of ``frame`` until the next would not fit.

        The default frame is a 60-byte broadcast with the local experimental
        EtherType. Returns how many were stored (0 unless socket 0 is open in MACRAW).
        """
        if frame is None:
            frame = BROADCAST + b"\x02\x00\x00\x00\x00\xfe" + b"\x88\xb5" + b"hilkit-fill"
            frame = frame.ljust(ETH_MIN_FRAME, b"\x00")
        count = 0
        with self._lock:
            s0 = self._sockets[0]
            if s0.regs[Sn_SR] != SOCK_MACRAW:
                return 0
            while self._rx_store(s0, frame):
                count += 1
            self.stats["rx_fill_frames"] += count
            self._update_int()
        return count

    def raise_interrupt(self, ir_bits: int) -> None:
        """Set IR bits 7..5 (CONFLICT, UNREACH, PPPoE) as if the chip had seen the event."""
        with self._lock:
            self._ir |= ir_bits & IR_W1C
            self._update_int()

    # -- views for tests and reports ----------------------------------------------------

    def register(self, addr: int) -> int:
        """Peek at a register byte as the bus would read it, without counting a transfer."""
        with self._lock:
            counted = self.stats["reserved_access"]
            value = self._read(addr & ADDR_MASK)
            self.stats["reserved_access"] = counted
            return value

    def buffer_layout(self) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
        """((tx offset, size) per socket, (rx offset, size) per socket) in bytes."""
        return self._tx_split, self._rx_split

    # -- the bus side, frame by frame ---------------------------------------------------

    def _exchange(self, f: bytes) -> bytes:
        if len(f) != FRAME_LEN or (f[0] != OP_READ and f[0] != OP_WRITE):
            self.stats["bad_frames"] += 1
            out = (MISO_ECHO[:3] + bytes(max(0, len(f) - 3)))[: len(f)]
        elif self._blocked:
            out = self._blocked_frame(f)
        else:
            addr = ((f[1] << 8) | f[2]) & ADDR_MASK
            if f[0] == OP_READ:
                out = _READ_REPLY[self._read(addr)]
            else:
                self._write(addr, f[3])
                if addr < TX_MEM_START:
                    self._update_int()  # /INT moves between frames, as on the chip
                out = MISO_ECHO
        return out

    def _blocked_frame(self, f: bytes) -> bytes:
        self.stats["access_in_reset"] += 1
        if self._in_reset or self._rst_until is None:
            return _BLOCKED_REPLY  # chip in reset or its clock not running: MISO idles low
        # Soft reset in progress: the SPI logic answers, MR reads with RST still set.
        addr = ((f[1] << 8) | f[2]) & ADDR_MASK
        if f[0] == OP_READ:
            return _READ_REPLY[(self._mr | MR_RST) if addr == MR else 0]
        return MISO_ECHO

    def _read(self, addr: int) -> int:
        if addr >= RX_MEM_START:
            return self.rx_mem[addr - RX_MEM_START]
        if addr >= TX_MEM_START:
            return self.tx_mem[addr - TX_MEM_START]
        if SOCKET_REGS <= addr < SOCKET_REGS_END:
            n, off = divmod(addr - SOCKET_REGS, SOCKET_REGS_STRIDE)
            return self._read_socket(n, off)
        if addr < COMMON_REGS_END:
            if addr == MR:
                return self._mr
            if addr == IR:
                return self._ir_value()
            if addr in _COMMON_RW or addr in _COMMON_RO:
                return self._common[addr]
        self.stats["reserved_access"] += 1
        return 0x00

    def _write(self, addr: int, value: int) -> None:
        if addr >= RX_MEM_START:
            self.rx_mem[addr - RX_MEM_START] = value
        elif addr >= TX_MEM_START:
            self.tx_mem[addr - TX_MEM_START] = value
        elif SOCKET_REGS <= addr < SOCKET_REGS_END:
            n, off = divmod(addr - SOCKET_REGS, SOCKET_REGS_STRIDE)
            self._write_socket(n, off, value)
        elif addr in _COMMON_RO:
            self.stats["ro_writes"] += 1
        elif addr < COMMON_REGS_END:
            self._write_common(addr, value)
        else:
            self.stats["reserved_access"] += 1

    def _write_common(self, addr: int, value: int) -> None:
        if addr == MR:
            if value & MR_RST:
                self._soft_reset()
            else:
                self._mr = value & MR_STORED
        elif addr == IR:
            # Bits 7..5 are cleared by writing 1; bits 3..0 mirror Sn_IR and ignore writes.
            self._ir &= ~(value & IR_W1C)
        elif addr == IMR:
            self._common[IMR] = value & IMR_BITS
        elif addr in _COMMON_RW:
            self._common[addr] = value
            if addr == RMSR:
                self._rx_split = memory_split(value)
            elif addr == TMSR:
                self._tx_split = memory_split(value)
        else:
            self.stats["reserved_access"] += 1

    def _read_socket(self, n: int, off: int) -> int:
        s = self._sockets[n]
        if off in _SOCK_RW or off in (Sn_IR, Sn_SR):
            return s.regs[off]
        if off == Sn_CR:
            return s.cmd
        word = self._socket_word(n, s, off & ~1)
        if word is None:
            self.stats["reserved_access"] += 1
            return 0x00
        return (word >> 8) if off % 2 == 0 else (word & 0xFF)

    def _socket_word(self, n: int, s: _Socket, off: int) -> int | None:
        if off == Sn_TX_FSR:
            size = self._tx_split[n][1]
            return max(0, size - ((s.tx_wr - s.tx_rd) & 0xFFFF))
        if off == Sn_TX_RD:
            return s.tx_rd
        if off == Sn_TX_WR:
            return s.tx_wr
        if off == Sn_RX_RSR:
            return (s.rx_wr - s.rx_rd) & 0xFFFF
        if off == Sn_RX_RD:
            return s.rx_rd
        if off == Sn_RX_WR:
            return s.rx_wr
        return None

    def _write_socket(self, n: int, off: int, value: int) -> None:
        s = self._sockets[n]
        if off in _SOCK_RW:
            s.regs[off] = value
        elif off == Sn_CR:
            self._command(n, s, value)
        elif off == Sn_IR:
            s.regs[Sn_IR] &= ~value & 0xFF
        elif off in (Sn_TX_WR, Sn_TX_WR + 1):
            s.tx_wr_latch = _set_byte(s.tx_wr_latch, off - Sn_TX_WR, value)
        elif off in (Sn_RX_RD, Sn_RX_RD + 1):
            s.rx_rd_latch = _set_byte(s.rx_rd_latch, off - Sn_RX_RD, value)
        elif off in _SOCK_RO:
            self.stats["ro_writes"] += 1
        else:
            self.stats["reserved_access"] += 1

    # -- commands ---------------------------------------------------------------------------

    def _command(self, n: int, s: _Socket, cmd: int) -> None:
        if cmd not in COMMANDS:
            # Sn_CR still reads 0 afterwards: the chip takes the write and does nothing.
            self.stats["bad_commands"] += 1
            return
        if s.cmd:
            self.stats["cmd_while_busy"] += 1
            return
        if self.timing.cmd_ms > 0:
            s.cmd = cmd
            s.cmd_due = self.clock.now_ms() + self.timing.cmd_ms
            self._timers = True
            return
        self._execute(n, s, cmd)

    def _execute(self, n: int, s: _Socket, cmd: int) -> None:
        if cmd == Sn_CR_OPEN:
            self._open(n, s)
        elif cmd == Sn_CR_CLOSE:
            s.regs[Sn_SR] = SOCK_CLOSED
            s.send_due = None
            s.send_frame = None
            s.send_stalled = False
        elif s.regs[Sn_SR] != SOCK_MACRAW:
            self.stats["cmd_ignored"] += 1  # the TCP/UDP/IPRAW engines are not modelled
        elif cmd == Sn_CR_SEND:
            self._send(n, s)
        elif cmd == Sn_CR_RECV:
            self._recv(n, s)
        else:
            self.stats["cmd_ignored"] += 1  # LISTEN, CONNECT, SEND_MAC... mean nothing in MACRAW

    def _recv(self, n: int, s: _Socket) -> None:
        old, new = s.rx_rd, s.rx_rd_latch
        s.rx_rd = new
        advance = (new - old) & 0xFFFF
        if advance > (s.rx_wr - old) & 0xFFFF:
            self.stats["pointer_errors"] += 1  # RX_RD moved past RX_WR
            s.rx_ends.clear()
            return
        on_boundary = advance == 0
        while s.rx_ends and (s.rx_ends[0] - old) & 0xFFFF <= advance:
            on_boundary = s.rx_ends.popleft() == new
        if not on_boundary:
            self.stats["rx_misaligned"] += 1  # RX_RD left in the middle of a frame
        if s.rx_wr != s.rx_rd:
            s.regs[Sn_IR] |= Sn_IR_RECV  # data still queued: RECV again (w5100 §8)

    def _open(self, n: int, s: _Socket) -> None:
        proto = s.regs[Sn_MR] & Sn_MR_P
        s.tx_rd = s.tx_wr = s.tx_wr_latch = 0
        s.rx_rd = s.rx_rd_latch = s.rx_wr = 0
        s.rx_ends.clear()
        s.send_due = None
        s.send_frame = None
        s.send_stalled = False
        s.mf = bool(s.regs[Sn_MR] & Sn_MR_MF)
        status = {
            Sn_MR_TCP: SOCK_INIT,
            Sn_MR_UDP: SOCK_UDP,
            Sn_MR_IPRAW: SOCK_IPRAW,
            Sn_MR_MACRAW: SOCK_MACRAW if n == 0 else SOCK_CLOSED,
            Sn_MR_PPPOE: SOCK_PPPOE if n == 0 else SOCK_CLOSED,
        }.get(proto, SOCK_CLOSED)
        s.regs[Sn_SR] = status
        if status == SOCK_MACRAW:
            mss = int.from_bytes(s.regs[Sn_MSSR : Sn_MSSR + 2], "big")
            if mss == 0 or mss > MACRAW_MSS:
                s.regs[Sn_MSSR : Sn_MSSR + 2] = MACRAW_MSS.to_bytes(2, "big")

    def _send(self, n: int, s: _Socket) -> None:
        if s.send_due is not None or s.send_stalled:
            self.stats["send_while_busy"] += 1
            return
        s.tx_wr = s.tx_wr_latch
        base, size = self._tx_split[n]
        length = (s.tx_wr - s.tx_rd) & 0xFFFF
        frame: bytes | None = None
        if length > size:
            self.stats["pointer_errors"] += 1  # TX_WR beyond the buffer, or no TX memory
        elif length == 0:
            self.stats["tx_empty"] += 1
        elif length > int.from_bytes(s.regs[Sn_MSSR : Sn_MSSR + 2], "big"):
            self.stats["tx_oversize"] += 1
        else:
            frame = _ring_read(self.tx_mem, base, size, s.tx_rd, length)
        if self.faults.stall_send:
            s.send_stalled = True
            self.stats["tx_stalled"] += 1
            return
        if self.timing.send_ms > 0:
            s.send_frame = frame
            s.send_due = self.clock.now_ms() + self.timing.send_ms
            self._timers = True
            return
        self._send_done(s, frame)

    def _send_done(self, s: _Socket, frame: bytes | None) -> None:
        s.send_due = None
        s.send_frame = None
        if frame is not None:
            self._emit(frame)
        s.tx_rd = s.tx_wr
        s.regs[Sn_IR] |= Sn_IR_SEND_OK

    def _emit(self, frame: bytes) -> None:
        if len(frame) < ETH_MIN_FRAME:
            self.stats["tx_short"] += 1
        self._to_wire(frame)

    # -- receive ----------------------------------------------------------------------------

    def _receive(self, frame: bytes) -> bool:
        self._hw_stack_sees(frame)
        s0 = self._sockets[0]
        if s0.regs[Sn_SR] != SOCK_MACRAW:
            self.stats["rx_not_open"] += 1
            return False
        if len(frame) < ETH_HEADER_LEN:
            self.stats["rx_runts"] += 1
            return False
        if len(frame) > MACRAW_MSS:
            self.stats["rx_oversize"] += 1
            return False
        if s0.mf:
            dst = frame[:6]
            if not (
                dst == self._common[SHAR : SHAR + 6]
                or dst == BROADCAST
                or (self.mf_passes_multicast and dst[0] & 0x01)
            ):
                self.stats["rx_filtered"] += 1
                return False
        if self.pad_rx and len(frame) < ETH_MIN_FRAME:
            frame = frame.ljust(ETH_MIN_FRAME, b"\x00")
        if self.faults.rx_full or not self._rx_store(s0, frame):
            self.stats["rx_dropped_full"] += 1
            return False
        return True

    def _rx_store(self, s: _Socket, frame: bytes) -> bool:
        base, size = self._rx_split[0]
        need = PACKET_INFO_LEN + len(frame)
        if need > size - ((s.rx_wr - s.rx_rd) & 0xFFFF):
            return False
        _ring_write(self.rx_mem, base, size, s.rx_wr, need.to_bytes(2, "big") + frame)
        s.rx_wr = (s.rx_wr + need) & 0xFFFF
        s.rx_ends.append(s.rx_wr)
        s.regs[Sn_IR] |= Sn_IR_RECV
        self.stats["frames_in"] += 1
        self.stats["bytes_in"] += len(frame)
        return True

    def _hw_stack_sees(self, frame: bytes) -> None:
        """Count what the chip's own ARP/ICMP engine would do with this frame (w5100 §14.4)."""
        sipr = bytes(self._common[SIPR : SIPR + 4])
        if sipr == b"\0\0\0\0" or len(frame) < 42:
            return
        ethertype = frame[12:14]
        if ethertype == b"\x08\x06":
            op = frame[20:22]
            if frame[28:32] == sipr and frame[22:28] != self._common[SHAR : SHAR + 6]:
                self.stats["ip_conflicts"] += 1
                self._ir |= IR_CONFLICT
            elif op == b"\x00\x01" and frame[38:42] == sipr:
                self.stats["would_arp_reply"] += 1
        elif ethertype == b"\x08\x00" and frame[30:34] == sipr and frame[23] == 1:
            ihl = (frame[14] & 0x0F) * 4
            if len(frame) > 14 + ihl and frame[14 + ihl] == 8 and not self._mr & MR_PB:
                self.stats["would_echo_reply"] += 1

    # -- time and interrupt -----------------------------------------------------------------

    def _advance(self, now: float) -> None:
        if self._timers or self._blocked:
            self._service(now)

    def _service(self, now: float) -> None:
        if self._rst_until is not None and now >= self._rst_until:
            self._rst_until = None
        if self._deaf_until and now >= self._deaf_until:
            self._deaf_until = 0.0  # the PLL is locked: nothing more is due
        timers = self._rst_until is not None
        for n, s in enumerate(self._sockets):
            if s.cmd and now >= s.cmd_due:
                cmd, s.cmd = s.cmd, 0
                self._execute(n, s, cmd)
            if s.send_due is not None and now >= s.send_due:
                self._send_done(s, s.send_frame)
            timers = timers or bool(s.cmd) or s.send_due is not None
        self._timers = timers
        self._blocked = self._in_reset or now < self._deaf_until or self._rst_until is not None

    def _dues(self) -> list[float]:
        dues = [s.cmd_due for s in self._sockets if s.cmd]
        dues += [s.send_due for s in self._sockets if s.send_due is not None]
        if self._rst_until is not None:
            dues.append(self._rst_until)
        if self._deaf_until > 0:
            dues.append(self._deaf_until)
        return dues

    def _ir_value(self) -> int:
        ir = self._ir
        for n, s in enumerate(self._sockets):
            if s.regs[Sn_IR]:
                ir |= 1 << n
        return ir

    def _int_asserted(self) -> bool:
        return bool(self._ir_value() & self._common[IMR])

    # -- resets -----------------------------------------------------------------------------

    def _registers_reset(self) -> None:
        self._mr = 0x00
        self._ir = 0x00
        self._common = _common_reset()
        self._sockets = [_Socket() for _ in range(SOCKETS)]
        self._rx_split = memory_split(MSR_RESET)
        self._tx_split = memory_split(MSR_RESET)

    def _soft_reset(self) -> None:
        self._registers_reset()
        self.stats["resets"] += 1
        self.stats["soft_resets"] += 1
        if self.timing.soft_reset_ms > 0:
            self._rst_until = self.clock.now_ms() + self.timing.soft_reset_ms
            self._timers = True
            self._blocked = True

    def _hold_reset(self) -> None:
        self._blocked = True
        self._rst_until = None
        self._registers_reset()

    def _release_reset(self, now: float) -> None:
        self._deaf_until = now + self.timing.pll_lock_ms if self.timing.pll_lock_ms else 0
        self._blocked = now < self._deaf_until


def _set_byte(word: int, index: int, value: int) -> int:
    """Replace the high (index 0) or low (index 1) byte of a 16-bit register."""
    if index == 0:
        return (word & 0x00FF) | (value << 8)
    return (word & 0xFF00) | value


def _ring_read(mem: bytearray, base: int, size: int, ptr: int, length: int) -> bytes:
    """``length`` bytes at pointer ``ptr`` of a ring buffer at ``base`` (w5100 §7)."""
    off = ptr & (size - 1)
    first = min(length, size - off)
    data = bytes(mem[base + off : base + off + first])
    if first < length:
        data += mem[base : base + length - first]
    return data


def _ring_write(mem: bytearray, base: int, size: int, ptr: int, data: bytes) -> None:
    off = ptr & (size - 1)
    first = min(len(data), size - off)
    mem[base + off : base + off + first] = data[:first]
    if first < len(data):
        mem[base : base + len(data) - first] = data[first:]

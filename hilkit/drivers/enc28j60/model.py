"""A register-level model of the Microchip ENC28J60 on its SPI bus.

Written from the data sheet DS39662E (section numbers below are its) and the
Rev. B7 silicon errata DS80349 (item numbers are its); the facts a reader needs
are collected in ``docs/hardware/enc28j60.md``. The model is an SPI *slave*: it
implements ``hilkit.port.SpiBus`` and speaks the chip's instruction set
(§4.2, Table 4-1), so a driver runs the code it would run on silicon.

One CS transaction is one instruction: byte 0 is a 3-bit opcode and a 5-bit
argument. RCR of an ETH register returns the value in byte 1; of a MAC/MII
register a dummy byte and then the value in byte 2. RBM/WBM run for the length
of the transaction. MISO carries 0x00 during the opcode byte and the dummy byte,
and 0xFF on every byte while /RESET is held low (SO floats; we read it as a
pulled-up line). A transaction may also stream (``stream_begin``/``stream``/
``stream_end``, for a bridge that reads MISO back while CS is still low): RBM
and WBM move buffer bytes as they are clocked, a short instruction runs at the
byte that completes it, and any split equals ``transfer`` of the whole.

Frames sent go out through ``wire.send`` (without their CRC: the wire is a TAP)
or, with no wire, into ``sent``. Frames from the wire are pulled with
``wire.poll`` whenever the model is touched (each ``transfer`` or
``transfer_batch`` call, each look at the /INT pin) and stored in the receive
ring as the chip stores them (§7.2): next packet pointer, receive status vector,
the frame and its 4-byte CRC, the next packet at an even address.

Time: with ``timing.wire`` (the default) a frame occupies the 10 Mb/s wire for
its preamble, its bytes (at least 60) and CRC, and the inter-packet gap:
ECON1.TXRTS stays set that long, and frames from the wire enter the ring no
faster. MII operations keep MISTAT.BUSY set for 10.24 us (§3.3) and the
oscillator start-up timer keeps the chip deaf after a reset (§2.2). All of it
runs on ``clock``; ``ENC28J60Timing.instant()`` turns it all off.

The /INT descriptor (``fileno()``, also ``int_pin.fileno()``) behaves like a
GPIO line's edge events: an epoll descriptor (itself pollable) over the pin's
eventfd (``SimPin(signal_edge=FALLING)``: readable while a falling edge waits to
be taken by ``int_pin.wait_edge``), the wire's descriptor (frames wait on the
wire for the chip) and an eventfd of the model's, readable while anything is due
on the model's own time (a frame still crossing the 10 Mb/s wire either way, an
MII operation, the clock settling after a reset): it happens on the first touch
after ``next_deadline()``, so the waiter comes back at once and touches it.
Edges made by the host's own bus calls count: a driver that takes an interrupt
must take the edge from the pin too, as it would with a GPIO line.

Decisions where the facts leave room (docs/hardware/enc28j60.md repeats them):

* Registers with no documented reset value reset to 0 (ECOCON, EFLOCON, EPAUS,
  MACON2, MAPHSUP, MICON, the hash and pattern registers). ERXWRPT resets to 0,
  outside the reset ring (ERXST 0x05FA): nothing is received until the driver
  writes ERXST or ERXND, which reloads ERXWRPT (``stats["rx_bad_ring"]``).
* Reserved addresses read 0 and ignore writes (``stats["reserved_access"]``);
  writes to read-only registers are ignored (``stats["ro_writes"]``).
* Receive needs ECON1.RXEN *and* MACON1.MARXEN; ECON1.RXRST holds receive in
  reset, reloads ERXWRPT from ERXST and zeroes EPKTCNT (RXEN is left alone).
* ERXFCON: CRCEN and ANDOR are not filters; with no filter bit set every frame
  passes (promiscuous). The pattern-match filter (PMEN) never matches.
* SRC and /RESET both restore every register, the PHY's included; the buffer
  RAM keeps its contents. After either, the chip ignores the bus (except RCR of
  ESTAT, which reads CLKRDY = 0) for ``timing.reset_us``.
* ECON1.TXRST clears TXRTS (without TXIF) and ESTAT.TXABRT/LATECOL. A
  transmit cancelled by clearing TXRTS sets TXIF and writes a TSV without its
  Done bit. A frame reaches the wire when its transmission starts (a model acts
  only when touched, and a frame must not wait for the host's next bus call);
  TXRTS, TXIF and the TSV wait for its wire time, and neither a cancel nor
  TXRST takes back a frame that has started.
* Without a MAC-appended CRC the last 4 bytes of the buffer are the frame's
  FCS: the frame reaches the wire without them if they are right, and not at all
  if they are wrong (the peer's NIC would drop it; ``stats["tx_bad_crc"]``).
* Half duplex without PHCON2.HDLDIS loops transmitted frames back into the
  receiver (PHCON2.HDLDIS, §3.3); PHCON1.PLOOPBK sends them only there.
"""

from __future__ import annotations

import math
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final

from hilkit.drivers.enc28j60 import regs as r
from hilkit.drivers.enc28j60.regs import Reg
from hilkit.port.clock import Clock
from hilkit.port.device import Device
from hilkit.sim.chip import DEFAULT_WIRE_BUDGET, ChipModel

__all__ = ["STAT_KEYS", "ENC28J60Faults", "ENC28J60Model", "ENC28J60Timing", "wire_time_ms"]

# -- SPI (§4.2) ------------------------------------------------------------------------------

MISO_IDLE = 0x00  # shifted out during the opcode byte and the MAC/MII dummy byte
MISO_IN_RESET = 0xFF  # SO floats while /RESET is low
_OP_RBM_WBM_ARG = 0x1A  # RBM and WBM carry this constant argument (Table 4-1)
_OP_SRC_ARG = 0x1F
_OPCODES = {0: "RCR", 1: "RBM", 2: "WCR", 3: "WBM", 4: "BFS", 5: "BFC", 7: "SRC"}
# What MISO carries for a short instruction of the usual length, made once: an RCR reply
# per register value (a MAC/MII register shifts out a dummy byte first, §4.2.1).
_RCR_REPLY: Final = tuple(bytes((MISO_IDLE, v)) for v in range(256))
_RCR_MAC_REPLY: Final = tuple(bytes((MISO_IDLE, MISO_IDLE, v)) for v in range(256))
_SHORT_REPLY: Final = bytes(2)  # WCR, BFS, BFC

# -- register file layout (§3.1, Table 3-1) --------------------------------------------------

_COMMON = 4  # the common registers 0x1B-0x1F, stored as a fifth "bank"
_ADDR_MASK = 0x1FFF  # 13-bit buffer addresses
_EIR_ENABLED = 0x7B  # EIR/EIE bits that can assert /INT (bit 2 is reserved, bit 7 is INTIE)
_EIR_CLEARABLE = r.EIR_DMAIF | r.EIR_TXIF | r.EIR_TXERIF | r.EIR_RXERIF  # PKTIF, LINKIF: read-only
_ESTAT_CLEARABLE = r.ESTAT_BUFER | r.ESTAT_LATECOL | r.ESTAT_TXABRT
_ECON2_STORED = r.ECON2_AUTOINC | r.ECON2_PWRSV | r.ECON2_VRPS
_EPKTCNT_MAX = 255  # §7.2: an 8-bit count; a frame that would overflow it is dropped


def _ix(reg: Reg) -> int:
    """Index of a register in the flat register file."""
    return (_COMMON if reg.bank is None else reg.bank) * 32 + reg.addr


def _bank_ix(bank: int, addr: int) -> int:
    return (_COMMON if addr >= r.COMMON_FIRST else bank) * 32 + addr


_EIE, _EIR, _ESTAT, _ECON2, _ECON1 = (_ix(x) for x in (r.EIE, r.EIR, r.ESTAT, r.ECON2, r.ECON1))
_TX_STATUS: Final = frozenset((_ECON1, _EIR, _ESTAT))  # registers that show a transmission end
_EPKTCNT, _ERXFCON, _EREVID = _ix(r.EPKTCNT), _ix(r.ERXFCON), _ix(r.EREVID)
_MACON1, _MACON3, _MICMD, _MIREGADR = (_ix(x) for x in (r.MACON1, r.MACON3, r.MICMD, r.MIREGADR))
_MISTAT, _MIRDL, _MIRDH = _ix(r.MISTAT), _ix(r.MIRDL), _ix(r.MIRDH)

# MAC/MII registers: all of bank 2, MAADR1-6 and MISTAT in bank 3 (Table 3-1 footnote).
_MAC_MII = frozenset(range(2 * 32, 2 * 32 + r.COMMON_FIRST)) | frozenset(
    {*(_ix(x) for x in r.MAADR), _MISTAT}
)
# Addresses marked "-" (unimplemented) in Table 3-1; they read 0 and ignore writes.
_RESERVED = frozenset(
    {0 * 32 + a for a in (0x18, 0x19, 0x1A)}
    | {1 * 32 + a for a in (0x12, 0x13, 0x1A)}
    | {2 * 32 + a for a in (0x05, 0x0C, 0x0E, 0x0F, 0x10, 0x13, 0x15, 0x1A)}
    | {3 * 32 + a for a in (*range(0x0B, 0x12), 0x13, 0x14, 0x16, 0x1A)}
)
_READ_ONLY = frozenset(
    {_ix(r.ERXWRPTL), _ix(r.ERXWRPTH), _EPKTCNT, _EREVID, _MISTAT, _MIRDL, _MIRDH}
    | {_ix(r.EBSTCSL), _ix(r.EBSTCSH)}
)
# High bytes of 13-bit buffer pointers keep 5 bits (Table 3-2: "---x xxxx").
_HIGH13 = frozenset(
    _ix(x) for x in (r.ERDPTH, r.EWRPTH, r.ETXSTH, r.ETXNDH, r.ERXSTH, r.ERXNDH, r.ERXRDPTH)
)
_HIGH13 |= frozenset(_ix(x) for x in (r.EDMASTH, r.EDMANDH, r.EDMADSTH))
_WIDTH = {_MIREGADR: 0x1F, _ix(r.MABBIPG): 0x7F, _ix(r.MAIPGL): 0x7F, _ix(r.MAIPGH): 0x7F}

# Reset values (Table 3-2, §11). Registers not listed here reset to 0.
_RESET_VALUES: dict[int, int] = {
    _ix(r.ERDPTL): 0xFA,
    _ix(r.ERDPTH): 0x05,
    _ix(r.ERXSTL): 0xFA,
    _ix(r.ERXSTH): 0x05,
    _ix(r.ERXNDL): 0xFF,
    _ix(r.ERXNDH): 0x1F,
    _ix(r.ERXRDPTL): 0xFA,
    _ix(r.ERXRDPTH): 0x05,
    _ERXFCON: r.ERXFCON_UCEN | r.ERXFCON_CRCEN | r.ERXFCON_BCEN,  # 0xA1
    _ix(r.MACLCON1): 0x0F,
    _ix(r.MACLCON2): 0x37,
    _ix(r.MAMXFLL): 0x00,
    _ix(r.MAMXFLH): 0x06,  # MAMXFL = 0x0600
    _EREVID: r.EREVID_B7,
    _ECON2: r.ECON2_AUTOINC,
}

# -- PHY (§3.3, Table 3-3) --------------------------------------------------------------------

_PHY_RESET = {
    r.PHCON1: 0x0000,
    r.PHSTAT1: r.PHSTAT1_PFDPX | r.PHSTAT1_PHDPX,  # abilities: 10 Mb/s full and half duplex
    r.PHID1: r.PHID1_VALUE,
    r.PHID2: r.PHID2_VALUE,
    r.PHCON2: 0x0000,
    r.PHSTAT2: 0x0000,
    r.PHIE: 0x0000,
    r.PHIR: 0x0000,
    r.PHLCON: r.PHLCON_RESET,
}
_PHY_READ_ONLY = frozenset({r.PHSTAT1, r.PHID1, r.PHID2, r.PHSTAT2, r.PHIR})
_PHCON1_BITS = r.PHCON1_PRST | r.PHCON1_PLOOPBK | r.PHCON1_PPWRSV | r.PHCON1_PDPXMD
_PHCON2_BITS = r.PHCON2_FRCLNK | r.PHCON2_TXDIS | r.PHCON2_JABBER | r.PHCON2_HDLDIS
_PHIE_BITS = r.PHIE_PLNKIE | r.PHIE_PGEIE

# -- Ethernet on the wire (IEEE 802.3 clauses 3, 4; DS39662E §5) ---------------------------------

ETH_MIN_FRAME = 60  # shortest frame without its CRC; the sender pads
ETH_HEADER_LEN = 14
VLAN_MIN_FRAME = 64  # PADCFG 101/x11 pad a VLAN-tagged frame to this
ETHERTYPE_VLAN = b"\x81\x00"
BROADCAST = b"\xff" * 6
PREAMBLE_SFD = 8  # bytes before the frame
IFG = 12  # inter-packet gap, bytes
BYTE_TIME_MS = 0.0008  # 10 Mb/s: 0.8 us per byte
MAX_LENGTH_FIELD = 1500  # a type/length field above this is an EtherType


def wire_time_ms(frame_len: int) -> float:
    """Milliseconds a frame of ``frame_len`` bytes (without CRC) occupies a 10 Mb/s wire."""
    return (PREAMBLE_SFD + max(frame_len, ETH_MIN_FRAME) + r.CRC_LEN + IFG) * BYTE_TIME_MS


def _fcs(frame: bytes) -> bytes:
    """The Ethernet CRC-32 as it follows the frame on the wire (IEEE 802.3 clause 3.2.9)."""
    return (zlib.crc32(frame) & 0xFFFFFFFF).to_bytes(4, "little")


STAT_KEYS = (
    "frames_in",  # frames stored in the receive ring
    "bytes_in",  # their lengths as stored, without header and CRC
    "frames_out",  # frames put on the wire (or into ``sent``)
    "bytes_out",
    "rx_overflow",  # no room in the ring, EPKTCNT at 255, or faults.rx_overflow: RXERIF
    "rx_filtered",  # refused by ERXFCON
    "rx_disabled",  # arrived while ECON1.RXEN or MACON1.MARXEN was clear, or in RXRST
    "rx_no_link",  # arrived while the link was down
    "rx_asleep",  # arrived while the chip was in reset, starting up, or in power save
    "rx_runts",  # shorter than an Ethernet header
    "rx_too_long",  # longer than MAMXFL with its CRC
    "rx_bad_ring",  # ERXND below ERXST, or ERXWRPT outside the ring
    "rx_looped_back",  # own transmissions received (half-duplex loopback, PLOOPBK)
    "rx_wire_dropped",  # frames in flight lost to a reset or RXRST
    "pktdec_underflow",  # ECON2.PKTDEC with EPKTCNT already 0
    "erxrdpt_even",  # ERXRDPT committed with an even value (errata DS80349 item 14)
    "tx_started",  # TXRTS rising edges that started a transmission
    "tx_aborted",  # transmissions that ended with TXERIF
    "tx_cancelled",  # TXRTS cleared by the host during a transmission
    "tx_reset_lost",  # transmissions lost to ECON1.TXRST or a reset
    "tx_bad_bounds",  # ETXND before ETXST+1
    "tx_giant",  # longer than MAMXFL without huge frames enabled: aborted
    "tx_short",  # frames shorter than 60 bytes put on the wire unpadded
    "tx_bad_crc",  # host-supplied CRC wrong: the peer drops the frame
    "tx_no_link",  # sent while the link was down: lost
    "tx_in_reset",  # TXRTS set while ECON1.TXRST or power save held the transmitter
    "duplex_mismatch",  # a transmission with MACON3.FULDPX != PHCON1.PDPXMD
    "wire_tx_refused",  # wire.send returned False
    "wire_errors",  # wire.send / wire.poll raised
    "bad_frames",  # transactions of the wrong length for their instruction
    "bad_opcodes",  # byte 0 is no instruction of Table 4-1
    "reserved_access",  # reads or writes of unimplemented addresses
    "ro_writes",  # writes to read-only registers (ignored)
    "bfs_bfc_on_mac",  # BFS/BFC on a MAC/MII register: the chip does nothing
    "access_in_reset",  # transactions while /RESET was low
    "access_clock_unready",  # transactions in the start-up window after a reset
    "mii_reads",
    "mii_writes",
    "mii_while_busy",  # MII command while MISTAT.BUSY: ignored
    "phy_ro_writes",  # MII writes to read-only PHY registers
    "phy_reserved",  # MII access to PHY addresses that do not exist
    "link_changes",
    "dma_copies",
    "dma_checksums",
    "resets",  # soft + hard
    "soft_resets",
    "hard_resets",
    "int_asserts",  # /INT falling edges
    "bit_errors",  # faults: MISO bits flipped
    "tx_stalls",  # faults: TXRTS that will never clear (errata item 12)
    "false_collisions",  # faults: transmissions aborted by a false late collision (item 13)
    "pktif_missed",  # faults: frames stored without setting EIR.PKTIF
    "ring_corrupted",  # faults: frames stored with a garbled next pointer (ERXRDPT even)
    "clkrdy_lies",  # faults: RCR ESTAT answered CLKRDY = 1 before the clock was ready
    "txerif_after_txrst",  # faults: TXERIF set again by clearing TXRST (item 12)
    "erxwrpt_zero_loads",  # faults: ERXST/ERXND writes that loaded ERXWRPT with 0 (item 5)
    "rx_overflow_forced",  # faults: frames dropped by faults.rx_overflow
)


@dataclass
class ENC28J60Faults:
    """Faults a test can switch on at any moment; each hit is counted in ``stats``."""

    bit_error_rate: float = 0.0  # probability per MISO bit of being flipped
    rx_overflow: bool = False  # the ring looks full: every frame is dropped with RXERIF
    # Errata DS80349 item 12: after an aborted transmission the next TXRTS never clears
    # until ECON1.TXRST is set and cleared; clearing TXRST then sets EIR.TXERIF once more.
    tx_stall_after_abort: bool = False
    # Errata item 5: writing ERXST or ERXND loads 0 into ERXWRPT instead of ERXST (harmless
    # with the ring at 0x0000, as the errata advises).
    erxwrpt_loads_zero: bool = False
    # Errata item 14: with ERXRDPT even the chip garbles the next packet pointer it writes.
    even_erxrdpt_corrupts: bool = False
    unreliable_pktif: float = 0.0  # probability per frame that EIR.PKTIF is not set
    # Errata item 2: after SRC, ESTAT.CLKRDY reads 1 at once, but the chip ignores the bus
    # for clkrdy_unstable_us more.
    clkrdy_wrong_after_reset: bool = False
    clkrdy_unstable_us: float = 1000.0
    # Errata item 13: in half duplex, this share of transmissions ends in a (false) late
    # collision: TSV late collision, ESTAT.TXABRT|LATECOL, EIR.TXERIF.
    false_collision: float = 0.0


@dataclass
class ENC28J60Timing:
    """How long things take on ``clock``; 0 or False means at once."""

    wire: bool = True  # frames take their 10 Mb/s wire time in both directions
    mii_us: float = r.MII_TIME_US  # MISTAT.BUSY after an MII command (§3.3)
    reset_us: float = 300.0  # oscillator start-up timer after a reset or power save (§2.2)
    # How often the PHY looks at the wire's carrier (real time: the wire is real). A PHY
    # sees a cable by its link pulses, one each 16 ms, and declares the link lost after
    # 50-150 ms without them (IEEE 802.3 clause 14.2.1.7); a look each millisecond is
    # finer than that, and spares each bus call the look (a syscall on a TAP).
    carrier_ms: float = 1.0

    @classmethod
    def instant(cls) -> ENC28J60Timing:
        """Everything at once: for tests that want speed, not realism."""
        return cls(wire=False, mii_us=0.0, reset_us=0.0, carrier_ms=0.0)


@dataclass
class _TxJob:
    due: float
    frame: bytes | None  # what reaches the wire, without CRC; None: nothing does
    tsv: int
    aborted: bool
    late_collision: bool


class ENC28J60Model(ChipModel):
    """The ENC28J60 as an SPI slave (``hilkit.port.SpiBus``), with its /INT and /RESET pins.

    ``wire`` is the Ethernet the PHY sits on (a Device, e.g. a TAP); without one,
    frames sent are collected in ``sent`` and frames arrive through ``inject``.
    ``clock`` times everything in ``timing``. What every model shares (the bus,
    the wire pump, the /INT descriptor, faults) is ``ChipModel``'s.
    """

    CHIP = "ENC28J60"
    faults: ENC28J60Faults

    def __init__(
        self,
        wire: Device | None = None,
        clock: Clock | None = None,
        *,
        seed: int = 0,
        timing: ENC28J60Timing | None = None,
        faults: ENC28J60Faults | None = None,
        wire_budget: int = DEFAULT_WIRE_BUDGET,
    ) -> None:
        super().__init__(
            wire, clock, seed=seed, stat_keys=STAT_KEYS, wire_budget=max(1, wire_budget)
        )
        self.timing = timing if timing is not None else ENC28J60Timing()
        self.faults = faults if faults is not None else ENC28J60Faults()
        self.mem = bytearray(r.BUFFER_SIZE)
        self._forced_link: bool | None = None  # set_link() overrides the wire's carrier
        self._link = self._carrier()
        self._carrier_next = 0.0  # when to look at it again (time.monotonic)
        self._rx_flight: deque[tuple[float, bytes]] = deque()  # (lands at, frame) on the wire
        self._rx_wire_free = 0.0  # when the wire into the chip is next idle
        self._phy: dict[int, int] = {}
        self._llstat = False  # PHSTAT1.LLSTAT, latching low
        self._mii_op: str | None = None  # "read", "write", "scan" while MISTAT.BUSY/SCAN
        self._mii_addr = 0
        self._mii_value = 0
        self._mii_due = 0.0
        self._tx: _TxJob | None = None
        self._tx_stalled = False  # faults.tx_stall_after_abort: latched by an abort
        self._txerif_on_release = False  # ... and clearing TXRST will set TXERIF
        self._rdpt_latch = 0  # ERXRDPTL written, waiting for ERXRDPTH
        self._registers_reset()
        self._ready_at = 0.0  # the chip ignores the bus until then (clock start-up)
        self._clkrdy_lies = False  # faults.clkrdy_wrong_after_reset: CLKRDY reads 1 meanwhile
        # a streamed transaction (ChipModel.stream): how far it is, and what it is
        self._sx_mode = ""  # "reset", "unready" or "run": decided at its first byte
        self._sx_len = 0  # bytes passed so far
        self._sx_first = 0  # byte 0: the opcode and argument
        self._sx_need = 0  # bytes a short instruction takes; 0 for RBM/WBM
        self._sx_op = bytearray()  # a short instruction's bytes until it is complete
        self._sx_lies = False  # faults.clkrdy_wrong_after_reset at its start

    # -- test and fault hooks ----------------------------------------------------------------

    def set_link(self, up: bool) -> None:
        """Plug or unplug the cable; from now on the wire's carrier is no longer followed."""
        with self._lock:
            self._forced_link = bool(up)
            self._check_link()
            self._after_call()

    # -- views for tests and reports ----------------------------------------------------------

    def register(self, reg: Reg) -> int:
        """Peek at a control register as RCR would read it, without side effects."""
        with self._lock:
            return self._peek(_ix(reg))

    def phy(self, addr: int) -> int:
        """Peek at a PHY register without the side effects of an MII read."""
        with self._lock:
            return self._phy_value(addr, clear=False)

    @property
    def link(self) -> bool:
        return self._link

    # -- the bus side, transaction by transaction ---------------------------------------------

    def _exchange(self, f: bytes) -> bytes:
        if not f:
            self.stats["bad_frames"] += 1
            return b""
        if self._in_reset:
            self.stats["access_in_reset"] += 1
            return bytes((MISO_IN_RESET,)) * len(f)
        if self._ready_at and self.clock.now_ms() < self._ready_at:
            out = self._unready(f)
        else:
            if self._ready_at or self._clkrdy_lies:
                self._ready_at = 0.0
                self._clkrdy_lies = False
            out = self._execute(f)
        self._update_int()  # /INT moves between transactions, as on the chip
        return out

    # -- the bus side, streamed (ChipModel.stream; §4.2) ------------------------------------------

    def _stream_accepts(self, first: int) -> bool:
        return True  # every instruction: RBM/WBM stream, the others wait for their bytes

    def _stream_start(self) -> None:
        """What ``_exchange`` decides at a transaction's start, before its first byte."""
        self._sx_len = 0
        self._sx_op.clear()
        if self._in_reset:
            self.stats["access_in_reset"] += 1
            self._sx_mode = "reset"
        elif self._ready_at and self.clock.now_ms() < self._ready_at:
            self.stats["access_clock_unready"] += 1
            self._sx_mode = "unready"
            self._sx_lies = self._clkrdy_lies
        else:
            self._ready_at = 0.0
            self._clkrdy_lies = False
            self._sx_mode = "run"

    def _stream_chunk(self, chunk: bytes) -> bytes:
        start = self._sx_len
        if start == 0:
            self._sx_first = chunk[0]
            self._sx_need = self._short_length(chunk[0])
        self._sx_len += len(chunk)
        if self._sx_mode == "reset":
            return bytes((MISO_IN_RESET,)) * len(chunk)
        if self._sx_mode == "unready":  # as _unready: only RCR ESTAT's reply byte may lie
            out = bytearray(len(chunk))
            esr = self._sx_first == r.OP_RCR | r.ESTAT.addr
            if start <= 1 < self._sx_len and self._sx_lies and esr:
                self.stats["clkrdy_lies"] += 1
                out[1 - start] = r.ESTAT_CLKRDY
            return bytes(out)
        if self._sx_need == 0:  # RBM / WBM (§4.2.2, §4.2.4): the opcode byte, then data
            data = chunk[1:] if start == 0 else chunk
            head = bytes((MISO_IDLE,)) if start == 0 else b""
            if self._sx_first >> 5 == 1:
                return head + self._rbm(len(data))
            self._wbm(data)
            return bytes(len(chunk))
        # A short instruction: MISO is idle (0) until the byte that completes it, which
        # carries the last byte of its whole reply; bytes after it read 0 (_execute).
        out = bytearray(len(chunk))
        room = self._sx_need - len(self._sx_op)
        if room > 0:
            self._sx_op += chunk[:room]
            if len(self._sx_op) == self._sx_need:
                out[room - 1] = self._execute(bytes(self._sx_op))[-1]
        return bytes(out)

    def _stream_finish(self) -> None:
        """The length checks ``_execute`` makes of a whole transaction, made at its end."""
        if self._sx_mode != "run" or self._sx_need == 0:
            return
        op = self._sx_first >> 5
        if len(self._sx_op) < self._sx_need:
            self._execute(bytes(self._sx_op))  # cut short: it counts itself a bad frame
        elif self._sx_len != self._sx_need and (
            op in (0, 2, 4, 5) or self._sx_first == (7 << 5 | _OP_SRC_ARG)
        ):
            self.stats["bad_frames"] += 1
        self._sx_op.clear()

    def _short_length(self, first: int) -> int:
        """Bytes of the instruction that ``first`` opens; 0 for RBM and WBM (Table 4-1)."""
        op, arg = first >> 5, first & r.ARG_MASK
        if op in (1, 3) and arg == _OP_RBM_WBM_ARG:
            return 0
        if op == 0:  # RCR: a MAC/MII register needs a dummy byte first
            return 3 if _bank_ix(self._bank(), arg) in _MAC_MII else 2
        if op in (2, 4, 5):
            return 2
        return 1  # SRC, and bad opcodes (answered and counted at once)

    def _unready(self, f: bytes) -> bytes:
        """Clock not running yet: only ESTAT answers (§2.2); everything else is lost."""
        self.stats["access_clock_unready"] += 1
        out = bytearray(len(f))
        if f[0] == r.OP_RCR | r.ESTAT.addr and len(f) >= 2 and self._clkrdy_lies:
            self.stats["clkrdy_lies"] += 1
            out[1] = r.ESTAT_CLKRDY
        return bytes(out)

    def _execute(self, f: bytes) -> bytes:
        op, arg = f[0] >> 5, f[0] & r.ARG_MASK
        if op == 0:  # RCR
            ix = _bank_ix(self._bank(), arg)
            value = self._read(ix)
            mac = ix in _MAC_MII
            if len(f) == (3 if mac else 2):  # the usual case: no more, no fewer bytes
                return (_RCR_MAC_REPLY if mac else _RCR_REPLY)[value]
            if mac:
                self._expect(f, 3)
                return (bytes((MISO_IDLE, MISO_IDLE, value)) + bytes(max(0, len(f) - 3)))[: len(f)]
            self._expect(f, 2)
            return (bytes((MISO_IDLE, value)) + bytes(max(0, len(f) - 2)))[: len(f)]
        if op == 1 and arg == _OP_RBM_WBM_ARG:
            return bytes((MISO_IDLE,)) + self._rbm(len(f) - 1)
        if op == 3 and arg == _OP_RBM_WBM_ARG:
            self._wbm(f[1:])
            return bytes(len(f))
        if op in (2, 4, 5):  # WCR, BFS, BFC
            if len(f) == 2:
                self._write_instruction(op, _bank_ix(self._bank(), arg), f[1])
                return _SHORT_REPLY
            self._expect(f, 2)
            if len(f) >= 2:
                self._write_instruction(op, _bank_ix(self._bank(), arg), f[1])
            return bytes(len(f))
        if op == 7 and arg == _OP_SRC_ARG:
            self._expect(f, 1)
            self._soft_reset()
            return bytes(len(f))
        self.stats["bad_opcodes"] += 1
        return bytes(len(f))

    def _expect(self, f: bytes, n: int) -> None:
        if len(f) != n:
            self.stats["bad_frames"] += 1

    def _bank(self) -> int:
        return self._r[_ECON1] & r.ECON1_BSEL

    def _write_instruction(self, op: int, ix: int, value: int) -> None:
        if op == 2:  # WCR works on every register
            self._write(ix, value)
            return
        if ix in _MAC_MII:
            self.stats["bfs_bfc_on_mac"] += 1  # §4.2: BFS/BFC are for ETH registers only
            return
        old = self._peek(ix)
        self._write(ix, old | value if op == 4 else old & ~value & 0xFF)

    # -- control registers ----------------------------------------------------------------------

    def _peek(self, ix: int) -> int:
        if ix in _RESERVED:
            return 0x00
        if ix == _ESTAT:
            return self._estat()
        return self._r[ix]

    def _read(self, ix: int) -> int:
        if ix in _RESERVED:
            self.stats["reserved_access"] += 1
        elif self._tx is not None and ix in _TX_STATUS:
            # Time passes during a batch, as on silicon: a status read late in a long
            # one (a frame's WBM) sees a transmission that ended meanwhile.
            self._service_tx(self.clock.now_ms())
        return self._peek(ix)

    def _estat(self) -> int:
        value = self._r[_ESTAT] & _ESTAT_CLEARABLE
        if self._r[_EIR] & self._r[_EIE] & _EIR_ENABLED:
            value |= r.ESTAT_INT
        if not self._r[_ECON2] & r.ECON2_PWRSV:
            value |= r.ESTAT_CLKRDY
        return value

    def _write(self, ix: int, value: int) -> None:
        if ix in _RESERVED:
            self.stats["reserved_access"] += 1
            return
        if ix in _READ_ONLY:
            self.stats["ro_writes"] += 1
            return
        if ix in _HIGH13:
            value &= 0x1F
        value &= _WIDTH.get(ix, 0xFF)
        handler = self._write_hooks.get(ix)
        if handler is not None:
            handler(self, ix, value)
        else:
            self._r[ix] = value

    def _w_eir(self, ix: int, value: int) -> None:
        keep = self._r[_EIR] & ~_EIR_CLEARABLE
        self._r[_EIR] = keep | (self._r[_EIR] & value & _EIR_CLEARABLE)

    def _w_estat(self, ix: int, value: int) -> None:
        self._r[_ESTAT] &= value | ~_ESTAT_CLEARABLE

    def _w_eie(self, ix: int, value: int) -> None:
        self._r[_EIE] = value & ~0x04  # bit 2 reserved

    def _w_econ2(self, ix: int, value: int) -> None:
        old = self._r[_ECON2]
        self._r[_ECON2] = value & _ECON2_STORED
        if value & r.ECON2_PKTDEC:
            self._pktdec()
        if old & r.ECON2_PWRSV and not value & r.ECON2_PWRSV and self.timing.reset_us > 0:
            self._ready_at = self.clock.now_ms() + self.timing.reset_us / 1000.0

    def _w_econ1(self, ix: int, value: int) -> None:
        old = self._r[_ECON1]
        rose, fell = value & ~old, old & ~value
        self._r[_ECON1] = value
        if rose & r.ECON1_TXRST:
            self._tx_reset()
        if fell & r.ECON1_TXRST and self._txerif_on_release:
            self._txerif_on_release = False
            self.stats["txerif_after_txrst"] += 1
            self._r[_EIR] |= r.EIR_TXERIF  # errata item 12: clear TXERIF after the reset
        if rose & r.ECON1_RXRST:
            self._rx_reset()
        if rose & r.ECON1_DMAST:
            self._dma()
        if rose & r.ECON1_TXRTS:
            self._tx_start()
        elif fell & r.ECON1_TXRTS and self._tx is not None:
            self._tx_cancel()

    def _w_ring_bound(self, ix: int, value: int) -> None:
        """ERXST/ERXND: any write reloads ERXWRPT from ERXST (§6.1, §7.2)."""
        self._r[ix] = value
        if self.faults.erxwrpt_loads_zero:
            self.stats["erxwrpt_zero_loads"] += 1
            self._set16(r.ERXWRPTL, 0)
        else:
            self._set16(r.ERXWRPTL, self._get16(r.ERXSTL))

    def _w_erxrdptl(self, ix: int, value: int) -> None:
        self._rdpt_latch = value  # held until ERXRDPTH is written

    def _w_erxrdpth(self, ix: int, value: int) -> None:
        self._r[ix] = value
        self._r[_ix(r.ERXRDPTL)] = self._rdpt_latch
        if not self._rdpt_latch & 1:
            self.stats["erxrdpt_even"] += 1

    def _w_micmd(self, ix: int, value: int) -> None:
        old = self._r[_MICMD]
        self._r[_MICMD] = value & (r.MICMD_MIIRD | r.MICMD_MIISCAN)
        rose = value & ~old
        if rose & r.MICMD_MIIRD:
            self._mii_start("read")
        if rose & r.MICMD_MIISCAN:
            self._mii_start("scan")
        elif not value & r.MICMD_MIISCAN and self._mii_op == "scan":
            self._mii_op = None
            self._r[_MISTAT] &= ~(r.MISTAT_SCAN | r.MISTAT_BUSY)

    def _w_miwrh(self, ix: int, value: int) -> None:
        self._r[ix] = value
        self._mii_start("write")

    _write_hooks: ClassVar[dict[int, Callable[[ENC28J60Model, int, int], None]]] = {
        _EIR: _w_eir,
        _ESTAT: _w_estat,
        _EIE: _w_eie,
        _ECON2: _w_econ2,
        _ECON1: _w_econ1,
        _ix(r.ERXSTL): _w_ring_bound,
        _ix(r.ERXSTH): _w_ring_bound,
        _ix(r.ERXNDL): _w_ring_bound,
        _ix(r.ERXNDH): _w_ring_bound,
        _ix(r.ERXRDPTL): _w_erxrdptl,
        _ix(r.ERXRDPTH): _w_erxrdpth,
        _MICMD: _w_micmd,
        _ix(r.MIWRH): _w_miwrh,
    }

    def _get16(self, low: Reg) -> int:
        ix = _ix(low)
        return self._r[ix] | self._r[ix + 1] << 8

    def _set16(self, low: Reg, value: int) -> None:
        ix = _ix(low)
        self._r[ix] = value & 0xFF
        self._r[ix + 1] = value >> 8 & 0xFF

    # -- buffer memory (§3.2, §4.2.2-4.2.4) -----------------------------------------------------

    def _rbm(self, n: int) -> bytes:
        """Read ``n`` bytes at ERDPT; with AUTOINC it wraps ERXND -> ERXST, 0x1FFF -> 0."""
        ptr = self._get16(r.ERDPTL)
        if not self._r[_ECON2] & r.ECON2_AUTOINC:
            return bytes((self.mem[ptr],)) * n
        st, nd = self._get16(r.ERXSTL), self._get16(r.ERXNDL)
        out = bytearray()
        while len(out) < n:
            end = nd if ptr <= nd else _ADDR_MASK  # the next wrap point ahead of ptr
            take = min(n - len(out), end - ptr + 1)
            out += self.mem[ptr : ptr + take]
            ptr += take
            if ptr == end + 1:
                ptr = st if end == nd else 0
        self._set16(r.ERDPTL, ptr & _ADDR_MASK)
        return bytes(out)

    def _wbm(self, data: bytes) -> None:
        """Write at EWRPT; with AUTOINC it wraps 0x1FFF -> 0 (not at the ring end)."""
        ptr = self._get16(r.EWRPTL)
        if not data:
            return
        if not self._r[_ECON2] & r.ECON2_AUTOINC:
            self.mem[ptr] = data[-1]
            return
        self._mem_write(ptr, data)
        self._set16(r.EWRPTL, (ptr + len(data)) & _ADDR_MASK)

    def _mem_write(self, ptr: int, data: bytes) -> None:
        first = min(len(data), r.BUFFER_SIZE - ptr)
        self.mem[ptr : ptr + first] = data[:first]
        rest = len(data) - first
        while rest > 0:  # a write longer than the buffer wraps more than once
            chunk = data[len(data) - rest : len(data) - rest + r.BUFFER_SIZE]
            self.mem[: len(chunk)] = chunk
            rest -= len(chunk)

    # -- receive (§7.2) --------------------------------------------------------------------------

    def _rx_blocked(self) -> str | None:
        """Why an arriving frame cannot be received now, as a stats key, or None."""
        if self._in_reset or self._unready_now() or self._r[_ECON2] & r.ECON2_PWRSV:
            return "rx_asleep"
        if not self._link:
            return "rx_no_link"
        econ1 = self._r[_ECON1]
        if not econ1 & r.ECON1_RXEN or econ1 & r.ECON1_RXRST:
            return "rx_disabled"
        if not self._r[_MACON1] & r.MACON1_MARXEN:
            return "rx_disabled"
        return None

    def _unready_now(self) -> bool:
        return bool(self._ready_at) and self.clock.now_ms() < self._ready_at

    def _receive(self, frame: bytes, *, loopback: bool = False) -> bool:
        blocked = self._rx_blocked()
        if blocked is not None:
            self.stats[blocked] += 1
            return False
        if len(frame) < ETH_HEADER_LEN:
            self.stats["rx_runts"] += 1
            return False
        if len(frame) < ETH_MIN_FRAME:
            frame = frame.ljust(ETH_MIN_FRAME, b"\x00")  # the sending NIC pads
        if len(frame) + r.CRC_LEN > self._get16(r.MAMXFLL):
            self.stats["rx_too_long"] += 1
            return False
        if not self._filter_passes(frame):
            self.stats["rx_filtered"] += 1
            return False
        if self.faults.rx_overflow:
            self.stats["rx_overflow_forced"] += 1
            return self._overflow()
        stored = self._store(frame)
        if stored and loopback:
            self.stats["rx_looped_back"] += 1
        return stored

    def _filter_passes(self, frame: bytes) -> bool:
        """ERXFCON (§8): OR (or with ANDOR, AND) of the enabled filters; none: promiscuous."""
        fcon = self._r[_ERXFCON]
        enabled = fcon & ~(r.ERXFCON_ANDOR | r.ERXFCON_CRCEN)
        if not enabled:
            return True
        dst = frame[:6]
        checks: list[bool] = []
        if enabled & r.ERXFCON_UCEN:
            checks.append(dst == self._mac())
        if enabled & r.ERXFCON_PMEN:
            checks.append(False)  # pattern match: not modelled, never matches
        if enabled & r.ERXFCON_MPEN:
            checks.append(dst == self._mac() and BROADCAST + self._mac() * 16 in frame)
        if enabled & r.ERXFCON_HTEN:
            bit = zlib.crc32(dst) >> 23 & 0x3F  # CRC bits 28:23 index EHT0-7 (§8)
            checks.append(bool(self._r[_ix(r.EHT[bit >> 3])] >> (bit & 7) & 1))
        if enabled & r.ERXFCON_MCEN:
            checks.append(bool(dst[0] & 1) and dst != BROADCAST)
        if enabled & r.ERXFCON_BCEN:
            checks.append(dst == BROADCAST)
        return all(checks) if fcon & r.ERXFCON_ANDOR else any(checks)

    def _mac(self) -> bytes:
        return bytes(self._r[_ix(reg)] for reg in r.MAADR)

    def _ring(self) -> tuple[int, int] | None:
        st, nd = self._get16(r.ERXSTL), self._get16(r.ERXNDL)
        return (st, nd) if st <= nd else None

    def _rx_free(self, st: int, nd: int) -> int:
        """Bytes the chip may still write before ERXRDPT (§7.2; docs/hardware/enc28j60.md §5)."""
        wr, rd = self._get16(r.ERXWRPTL), self._get16(r.ERXRDPTL)
        if wr > rd:
            return (nd - st) - (wr - rd)
        if wr == rd:
            return nd - st
        return rd - wr - 1

    def _store(self, frame: bytes) -> bool:
        ring = self._ring()
        wr = self._get16(r.ERXWRPTL)
        if ring is None or not ring[0] <= wr <= ring[1]:
            self.stats["rx_bad_ring"] += 1  # nowhere sane to write: lost, as in an overflow
            self._r[_EIR] |= r.EIR_RXERIF
            return False
        st, nd = ring
        count = len(frame) + r.CRC_LEN
        need = r.RSV_LEN + count
        need += need & 1  # the next packet starts at an even address (§7.2)
        if self._r[_EPKTCNT] >= _EPKTCNT_MAX or need > self._rx_free(st, nd):
            return self._overflow()
        size = nd - st + 1
        nxt = wr + need
        if nxt > nd:
            nxt -= size
        pointer = nxt
        rdpt = self._get16(r.ERXRDPTL)
        if self.faults.even_erxrdpt_corrupts and not rdpt & 1:
            pointer ^= 0x0101  # garbled: odd and far from the real next packet
            self.stats["ring_corrupted"] += 1
        status = r.RSV_RECEIVED_OK | _rsv_flags(frame)
        header = (
            pointer.to_bytes(2, "little")
            + count.to_bytes(2, "little")
            + (status >> 16).to_bytes(2, "little")
        )
        data = header + frame + _fcs(frame)
        first = min(len(data), nd - wr + 1)
        self.mem[wr : wr + first] = data[:first]
        if first < len(data):
            self.mem[st : st + len(data) - first] = data[first:]
        self._set16(r.ERXWRPTL, nxt)
        self._r[_EPKTCNT] += 1
        if self.faults.unreliable_pktif and self._rng.random() < self.faults.unreliable_pktif:
            self.stats["pktif_missed"] += 1
        else:
            self._r[_EIR] |= r.EIR_PKTIF
        self.stats["frames_in"] += 1
        self.stats["bytes_in"] += len(frame)
        return True

    def _overflow(self) -> bool:
        self._r[_EIR] |= r.EIR_RXERIF
        self.stats["rx_overflow"] += 1
        return False

    def _pktdec(self) -> None:
        if self._r[_EPKTCNT] == 0:
            self.stats["pktdec_underflow"] += 1
            return
        self._r[_EPKTCNT] -= 1
        if self._r[_EPKTCNT] == 0:
            self._r[_EIR] &= ~r.EIR_PKTIF

    def _rx_reset(self) -> None:
        self._set16(r.ERXWRPTL, self._get16(r.ERXSTL))
        self._r[_EPKTCNT] = 0
        self._r[_EIR] &= ~r.EIR_PKTIF
        self.stats["rx_wire_dropped"] += len(self._rx_flight)
        self._rx_flight.clear()

    # -- transmit (§7.1) ------------------------------------------------------------------------

    def _tx_start(self) -> None:
        econ1 = self._r[_ECON1]
        if econ1 & r.ECON1_TXRST or self._r[_ECON2] & r.ECON2_PWRSV:
            self.stats["tx_in_reset"] += 1
            self._r[_ECON1] &= ~r.ECON1_TXRTS
            return
        if self._tx is not None:
            return  # already sending (cannot happen: TXRTS was already set)
        self.stats["tx_started"] += 1
        if self._tx_stalled:
            self.stats["tx_stalls"] += 1
            self._tx = _TxJob(math.inf, None, 0, False, False)  # TXRTS stays set for good
            return
        full = bool(self._r[_MACON3] & r.MACON3_FULDPX)
        if full != bool(self._phy[r.PHCON1] & r.PHCON1_PDPXMD):
            self.stats["duplex_mismatch"] += 1
        st, nd = self._get16(r.ETXSTL), self._get16(r.ETXNDL)
        now = self.clock.now_ms()
        if nd < st + 1:
            self.stats["tx_bad_bounds"] += 1
            self._tx = _TxJob(now, None, 0, True, False)
            self._service_tx(now)
            return
        control = self.mem[st]
        data = bytes(self.mem[st + 1 : nd + 1])
        frame, tsv, aborted = self._tx_frame(control, data)
        late = False
        rate = self.faults.false_collision
        if not aborted and not full and rate and self._rng.random() < rate:
            self.stats["false_collisions"] += 1
            late = aborted = True
            tsv = (tsv & ~r.TSV_DONE) | r.TSV_LATE_COLLISION | 1 << r.TSV_COLLISIONS_SHIFT
            frame = None
        wire_len = len(frame) if frame is not None else len(data)
        due = now + wire_time_ms(wire_len) if self.timing.wire else now
        if frame is not None and due > now:
            # The frame is handed to the wire as it starts, not when its last bit
            # leaves: nothing may depend on the host touching the chip again for a
            # frame to get out (real silicon needs no touch). TXRTS, TXIF and the
            # TSV still wait for the wire time; a cancel or TXRST cannot recall it.
            self._transmit(frame)
            frame = None
        self._tx = _TxJob(due, frame, tsv, aborted, late)
        self._service_tx(now)

    def _tx_frame(self, control: int, data: bytes) -> tuple[bytes | None, int, bool]:
        """(frame for the wire without CRC or None, TSV, aborted) for buffer bytes ``data``."""
        macon3 = self._r[_MACON3]
        if control & r.PCB_POVERRIDE:
            pad = ETH_MIN_FRAME if control & r.PCB_PPADEN else 0
            crc = bool(control & r.PCB_PCRCEN)
            huge = bool(control & r.PCB_PHUGEEN)
        else:
            pad, crc = _padcfg(macon3 >> 5, data)
            crc = crc or bool(macon3 & r.MACON3_TXCRCEN)
            huge = bool(macon3 & r.MACON3_HFRMEN)
        body = data.ljust(pad, b"\x00") if pad else data
        on_wire = len(body) + (r.CRC_LEN if crc else 0)  # bytes after the preamble
        tsv = on_wire | on_wire << r.TSV_TOTAL_SHIFT | _tsv_flags(body)
        if on_wire > self._get16(r.MAMXFLL) and not huge:
            self.stats["tx_giant"] += 1
            return None, tsv | r.TSV_GIANT, True
        tsv |= r.TSV_DONE
        if not crc:  # the host wrote the FCS itself: the last 4 bytes
            body, fcs = body[: -r.CRC_LEN], body[-r.CRC_LEN :]
            if len(fcs) < r.CRC_LEN or _fcs(body) != fcs:
                self.stats["tx_bad_crc"] += 1
                return None, tsv | r.TSV_CRC_ERROR, False
        if len(body) < ETH_MIN_FRAME:
            self.stats["tx_short"] += 1
        return body, tsv, False

    def _service_tx(self, now: float) -> None:
        job = self._tx
        if job is None or now < job.due:
            return
        self._tx = None
        self._r[_ECON1] &= ~r.ECON1_TXRTS
        self._write_tsv(job.tsv)
        self._r[_EIR] |= r.EIR_TXIF
        if job.aborted:
            self.stats["tx_aborted"] += 1
            self._r[_EIR] |= r.EIR_TXERIF
            self._r[_ESTAT] |= r.ESTAT_TXABRT | (r.ESTAT_LATECOL if job.late_collision else 0)
            if self.faults.tx_stall_after_abort:
                self._tx_stalled = self._txerif_on_release = True
            return
        if job.frame is not None:
            self._transmit(job.frame)

    def _transmit(self, frame: bytes) -> None:
        """The frame leaves the MAC: to the PHY's loopback, the wire, or both (PHCON1/2)."""
        phcon1, phcon2 = self._phy[r.PHCON1], self._phy[r.PHCON2]
        full = bool(phcon1 & r.PHCON1_PDPXMD)
        if phcon1 & r.PHCON1_PLOOPBK:
            self._receive(frame.ljust(ETH_MIN_FRAME, b"\x00"), loopback=True)
            return
        if not full and not phcon2 & r.PHCON2_HDLDIS:
            self._receive(frame.ljust(ETH_MIN_FRAME, b"\x00"), loopback=True)
        if phcon2 & r.PHCON2_TXDIS:
            return
        if not self._link:
            self.stats["tx_no_link"] += 1
            return
        self._to_wire(frame)

    def _write_tsv(self, tsv: int) -> None:
        """The 7-byte transmit status vector at ETXND+1 (§7.1, Table 7-1)."""
        self._mem_write((self._get16(r.ETXNDL) + 1) & _ADDR_MASK, tsv.to_bytes(r.TSV_LEN, "little"))

    def _tx_cancel(self) -> None:
        """The host cleared TXRTS mid-frame: TXIF, and a TSV without Done (§7.1)."""
        job, self._tx = self._tx, None
        self.stats["tx_cancelled"] += 1
        if job is not None and job.due != math.inf:
            self._write_tsv(job.tsv & ~r.TSV_DONE)
        self._r[_EIR] |= r.EIR_TXIF

    def _tx_reset(self) -> None:
        if self._tx is not None:
            self.stats["tx_reset_lost"] += 1
        self._tx = None
        self._tx_stalled = False
        self._r[_ECON1] &= ~r.ECON1_TXRTS
        self._r[_ESTAT] &= ~(r.ESTAT_TXABRT | r.ESTAT_LATECOL)

    # -- DMA (§13) -----------------------------------------------------------------------------

    def _dma(self) -> None:
        """Copy EDMAST..EDMAND to EDMADST, or checksum it into EDMACS; done at once."""
        st, nd = self._get16(r.EDMASTL), self._get16(r.EDMANDL)
        ring = self._ring()
        ptr, data = st, bytearray()
        for _ in range(r.BUFFER_SIZE):
            data.append(self.mem[ptr])
            if ptr == nd:
                break
            ptr = ring[0] if ring is not None and ptr == ring[1] else (ptr + 1) & _ADDR_MASK
        if self._r[_ECON1] & r.ECON1_CSUMEN:
            self.stats["dma_checksums"] += 1
            words = data + b"\x00" * (len(data) & 1)
            total = sum(int.from_bytes(words[i : i + 2], "big") for i in range(0, len(words), 2))
            while total > 0xFFFF:
                total = (total & 0xFFFF) + (total >> 16)
            csum = ~total & 0xFFFF
            self._r[_ix(r.EDMACSH)], self._r[_ix(r.EDMACSL)] = csum >> 8, csum & 0xFF
        else:
            self.stats["dma_copies"] += 1
            self._mem_write(self._get16(r.EDMADSTL), bytes(data))
        self._r[_ECON1] &= ~r.ECON1_DMAST
        self._r[_EIR] |= r.EIR_DMAIF

    # -- MII and PHY (§3.3) --------------------------------------------------------------------

    def _mii_start(self, op: str) -> None:
        if self._mii_op is not None and self._mii_op != "scan":
            self.stats["mii_while_busy"] += 1
            return
        self._mii_op = op
        self._mii_addr = self._r[_MIREGADR]
        self._mii_value = self._r[_ix(r.MIWRL)] | self._r[_ix(r.MIWRH)] << 8  # latched at start
        self._r[_MISTAT] |= r.MISTAT_BUSY
        if op == "scan":
            self._r[_MISTAT] |= r.MISTAT_SCAN | r.MISTAT_NVALID
        now = self.clock.now_ms()
        self._mii_due = now + self.timing.mii_us / 1000.0
        self._service_mii(now)

    def _service_mii(self, now: float) -> None:
        op = self._mii_op
        if op is None or now < self._mii_due:
            return
        if op == "write":
            self.stats["mii_writes"] += 1
            self._phy_write(self._mii_addr, self._mii_value)
        else:
            self.stats["mii_reads"] += 1
            value = self._phy_value(self._mii_addr, clear=True)
            self._r[_MIRDL], self._r[_MIRDH] = value & 0xFF, value >> 8
        if op == "scan":  # keeps going: the next sample one MII time later
            self._r[_MISTAT] &= ~(r.MISTAT_NVALID | r.MISTAT_BUSY)
            self._mii_due = now + self.timing.mii_us / 1000.0
            self._mii_addr = self._r[_MIREGADR]
            return
        self._mii_op = None
        self._r[_MISTAT] &= ~r.MISTAT_BUSY

    def _phy_value(self, addr: int, *, clear: bool) -> int:
        if addr not in self._phy:
            if clear:
                self.stats["phy_reserved"] += 1
            return 0
        value = self._phy[addr]
        if addr == r.PHSTAT1:
            value = (value & ~r.PHSTAT1_LLSTAT) | (r.PHSTAT1_LLSTAT if self._llstat else 0)
            if clear:
                self._llstat = self._link  # the latch re-arms on read
        elif addr == r.PHSTAT2:
            value = r.PHSTAT2_LSTAT if self._link else 0
            if self._phy[r.PHCON1] & r.PHCON1_PDPXMD:
                value |= r.PHSTAT2_DPXSTAT
        elif addr == r.PHIR and clear:
            self._phy[r.PHIR] = 0
            self._r[_EIR] &= ~r.EIR_LINKIF
        return value

    def _phy_write(self, addr: int, value: int) -> None:
        if addr not in self._phy:
            self.stats["phy_reserved"] += 1
        elif addr in _PHY_READ_ONLY:
            self.stats["phy_ro_writes"] += 1
        elif addr == r.PHCON1:
            if value & r.PHCON1_PRST:
                self._phy_reset()
                value &= ~r.PHCON1_PRST  # self-clearing
            self._phy[r.PHCON1] = value & _PHCON1_BITS
        elif addr == r.PHCON2:
            self._phy[r.PHCON2] = value & _PHCON2_BITS
        elif addr == r.PHIE:
            self._phy[r.PHIE] = value & _PHIE_BITS
            self._phy_irq()
        else:
            self._phy[addr] = value

    def _phy_reset(self) -> None:
        self._phy = dict(_PHY_RESET)
        self._llstat = False  # the link was "down" during the reset: reads 0 once
        self._r[_EIR] &= ~r.EIR_LINKIF

    def _phy_irq(self) -> None:
        """PHIR.PGIF follows enabled flags; EIR.LINKIF follows PGIF when PGEIE (§12.1)."""
        phie, phir = self._phy[r.PHIE], self._phy[r.PHIR]
        if phie & r.PHIE_PLNKIE and phir & r.PHIR_PLNKIF:
            phir |= r.PHIR_PGIF
        self._phy[r.PHIR] = phir
        if phie & r.PHIE_PGEIE and phir & r.PHIR_PGIF:
            self._r[_EIR] |= r.EIR_LINKIF

    # -- link, wire, time and interrupt ---------------------------------------------------------

    def _carrier(self) -> bool:
        if self._forced_link is not None:
            return self._forced_link
        if self.wire is None or self._wire_dead:
            return self.wire is None  # no wire: a cable to nowhere that is always up
        try:
            return bool(self.wire.link_up)
        except OSError:
            return False

    def _check_link(self) -> None:
        up = self._carrier()
        if up == self._link:
            return
        self._link = up
        self.stats["link_changes"] += 1
        if not up:
            self._llstat = False
        self._phy[r.PHIR] |= r.PHIR_PLNKIF
        self._phy_irq()

    def _advance(self, now: float) -> None:
        if self._forced_link is None and self.wire is not None:
            t = time.monotonic()
            if t >= self._carrier_next:
                self._carrier_next = t + self.timing.carrier_ms / 1000.0
                self._check_link()
        self._service(now)

    def _wire_room(self) -> int:
        """As many frames as may be in flight (they land at wire speed)."""
        return self.wire_budget - len(self._rx_flight)

    def _from_wire(self, frames: list[bytes]) -> None:
        if not self.timing.wire:
            for frame in frames:
                self._receive(frame)
            return
        now = self.clock.now_ms()
        for frame in frames:
            start = max(now, self._rx_wire_free)
            self._rx_wire_free = start + wire_time_ms(len(frame))
            self._rx_flight.append((self._rx_wire_free, frame))
        self._service(now)

    def _service(self, now: float) -> None:
        if self._ready_at and now >= self._ready_at:
            self._ready_at = 0.0
            self._clkrdy_lies = False
        while self._rx_flight and self._rx_flight[0][0] <= now:
            self._receive(self._rx_flight.popleft()[1])
        self._service_mii(now)
        self._service_tx(now)

    def _dues(self) -> list[float]:
        dues = [self._rx_flight[0][0]] if self._rx_flight else []
        if self._mii_op is not None and self._mii_op != "scan":
            dues.append(self._mii_due)
        if self._tx is not None and self._tx.due != math.inf:
            dues.append(self._tx.due)
        if self._ready_at:
            dues.append(self._ready_at)
        return dues

    def _int_asserted(self) -> bool:
        """/INT is low while EIE.INTIE and an enabled flag is set (§12)."""
        eie = self._r[_EIE]
        return bool(eie & r.EIE_INTIE and self._r[_EIR] & eie & _EIR_ENABLED)

    # -- resets (§11) -----------------------------------------------------------------------------

    def _registers_reset(self) -> None:
        self._r = bytearray(5 * 32)
        for ix, value in _RESET_VALUES.items():
            self._r[ix] = value
        self._rdpt_latch = self._r[_ix(r.ERXRDPTL)]  # ERXWRPT resets to 0 (Table 3-2)
        self._phy_reset()
        self._mii_op = None
        self._mii_addr = 0
        self._mii_due = 0.0
        if self._tx is not None:
            self.stats["tx_reset_lost"] += 1
        self._tx = None
        self._tx_stalled = self._txerif_on_release = False
        if self._rx_flight:
            self.stats["rx_wire_dropped"] += len(self._rx_flight)
            self._rx_flight.clear()

    def _soft_reset(self) -> None:
        """SRC (§11.2): registers as after any reset; the clock settles again."""
        self._registers_reset()
        self.stats["resets"] += 1
        self.stats["soft_resets"] += 1
        now = self.clock.now_ms()
        if self.faults.clkrdy_wrong_after_reset and self.faults.clkrdy_unstable_us > 0:
            self._ready_at = now + self.faults.clkrdy_unstable_us / 1000.0
            self._clkrdy_lies = True
        elif self.timing.reset_us > 0:
            self._ready_at = now + self.timing.reset_us / 1000.0

    def _hold_reset(self) -> None:
        self._ready_at = 0.0
        self._clkrdy_lies = False
        self._registers_reset()

    def _release_reset(self, now: float) -> None:
        if self.timing.reset_us > 0:
            self._ready_at = now + self.timing.reset_us / 1000.0
        self._clkrdy_lies = False


def _padcfg(padcfg: int, data: bytes) -> tuple[int, bool]:
    """MACON3.PADCFG2:0 -> (pad to this many bytes or 0, CRC appended) (Register 6-2)."""
    if not padcfg & 0b001:
        return 0, False  # x x0: no automatic padding
    if padcfg == 0b101:  # VLAN frames to 64, others to 60
        return (VLAN_MIN_FRAME if data[12:14] == ETHERTYPE_VLAN else ETH_MIN_FRAME), True
    if padcfg & 0b010:  # 011, 111: everything to 64
        return VLAN_MIN_FRAME, True
    return ETH_MIN_FRAME, True  # 001


def _rsv_flags(frame: bytes) -> int:
    """Receive status vector bits 31:16 a good frame gets (Table 7-3)."""
    flags = 0
    dst = frame[:6]
    if dst == BROADCAST:
        flags |= r.RSV_BROADCAST
    elif dst[0] & 1:
        flags |= r.RSV_MULTICAST
    length = int.from_bytes(frame[12:14], "big")
    if length > MAX_LENGTH_FIELD:
        flags |= r.RSV_LENGTH_OUT_OF_RANGE  # an EtherType, not a length
    if frame[12:14] == ETHERTYPE_VLAN:
        flags |= r.RSV_VLAN
    return flags


def _tsv_flags(frame: bytes) -> int:
    """Transmit status vector address and type bits (Table 7-1)."""
    flags = 0
    dst = frame[:6]
    if dst == BROADCAST:
        flags |= r.TSV_BROADCAST
    elif dst and dst[0] & 1:
        flags |= r.TSV_MULTICAST
    if int.from_bytes(frame[12:14], "big") > MAX_LENGTH_FIELD:
        flags |= r.TSV_LENGTH_OUT_OF_RANGE
    if frame[12:14] == ETHERTYPE_VLAN:
        flags |= r.TSV_VLAN
    return flags

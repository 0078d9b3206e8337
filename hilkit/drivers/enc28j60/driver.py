"""Microchip ENC28J60 over SPI as a hilkit ``Device`` (Ethernet frames, no FCS).

Facts used: data sheet DS39662E (section numbers below are its own) and the
Rev. B7 silicon errata DS80349 (its item numbers). Every SPI instruction is its
own chip-select transaction (§4.2); RBM and WBM move a whole buffer run in one
transaction. The driver builds ``transfer_batch`` lists so that pointer
writes, buffer bursts, flag updates and status reads travel together.

Cost model (what a frame costs on the bus; the unit tests measure it):

* Receive (§7.2). A poll starts with one *status call*: EIR, ESTAT, ECON2,
  ECON1 and EPKTCNT (the errata say count with EPKTCNT, never EIR.PKTIF),
  5 transactions, 10 bytes when idle; while traffic flows it also sets ERDPT
  and reads the 6-byte header at the next-packet pointer. Each frame then
  costs one *frame call*: one RBM of the frame without its FCS, ERXRDPT
  (odd, errata item 14), ECON2.PKTDEC, ERDPT and the next header when more
  are counted, then ECON2 and ECON1 (last: a reset anywhere in the call
  shows there, and the frame is not handed over). A lone frame after an
  idle spell costs 3 calls (status, header, frame) and 34 bytes beyond the
  frame; a burst of n costs n + 1 calls (n + 2 after idle) and about 25
  bytes per frame. On a bus whose calls are dear (``call_overhead_us`` at
  least DEAR_CALL_US: a USB bridge) every status call reads the header,
  12 bytes more per idle poll, and a lone frame costs 2 calls.
* Transmit (§7.1). Two transmit buffers (``r.TX_BUFS``, each on a 256-byte
  boundary): a frame is written (EWRPT, one WBM of the control byte and the
  frame) into the buffer not on the wire, so SPI time overlaps wire time. A
  frame is *started* only when none is in flight: the ETXST/ETXND bytes that
  differ from the last start (two for frames of one length), ECON1.TXRTS,
  then EIR.TXIF/TXERIF cleared; every transmit call ends reading ECON2,
  ECON1, EIR and ESTAT (a frame already done is seen at once). With the
  transmitter idle, one call writes and starts the frame. With a frame in
  flight, the write of the next is timed to end just after that frame leaves
  the 10 Mb/s wire, so the status read that ends it finds the wire free, and
  the start, built beforehand, follows at once: only it lies between one
  frame's end and the next one's start (2 calls a frame). How late to aim is
  learned: a read that comes early costs one short read more, timed for the
  frame's end (3 calls); one on time is late by its delay. Where calls are
  cheap most may come early (a short read's timing is exact where a 1.5 KB
  write's end is not), where they are dear (DEAR_CALL_US) few. A
  read that finds the frame still going past its end (collisions) is
  repeated for at most BUSY_WAIT_MS, else the new frame is refused as busy.
  ``send`` returns with its frame started: no later poll is needed for it to
  go out.
* Banks (§3.1): BSEL is cached; a switch (one BFS and/or one BFC of ECON1)
  is sent only when an access needs another bank; the five common registers
  need none. Idle polls stay in bank 1; a poll with frames switches twice.
* With an interrupt line, the first and last call of a poll also clear and
  set EIE.INTIE (2 transactions each), and a poll with no /INT edge queued
  costs no call at all (``quiet_polls``) unless the last look is IRQ_TRUST_MS
  old. A status call that finds nothing is an ``idle_polls``: the figures count
  it apart from the calls that move frames.

Recovery: a chip reset under us (ECON2 or ECON1.RXEN not as set, or the
periodic health check finding EREVID, MAADR, ERXFCON, MACON or the buffer
split changed) re-initialises the chip; an impossible receive header (next
pointer outside the ring or odd, byte count > 1518) resets the receive logic
and the ring; a TXRTS that never clears resets the transmit logic and sends
the frame again (ETXST/ETXND still bound it: a frame written meanwhile went
only to the other buffer); a chip that reads 0x00/0xFF goes dead until a re-probe
succeeds. Nothing the chip or the bus does raises out of ``send``/``poll``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Final

from hilkit.drivers.enc28j60 import regs as r
from hilkit.drivers.spi_nic import SpiNic, Tx, random_mac
from hilkit.port.clock import Clock
from hilkit.port.device import ETH_HEADER_LEN
from hilkit.port.errors import ChipNotResponding
from hilkit.port.pin import Edge, Pin
from hilkit.port.spi import SpiBus, bus_call_overhead_us

__all__ = [
    "STAT_NAMES",
    "WIRING_HINT",
    "ENC28J60Device",
    "random_mac",
    "ring_add",
    "rx_capacity",
    "rx_read_pointer",
]

log = logging.getLogger(__name__)

WIRING_HINT = "check wiring, CS, SPI mode 0, clock 8-20 MHz"

# The names of ``ENC28J60Device.stats``, in the order they are reported.
STAT_NAMES: Final = (
    "bus_calls",  # transfer_batch calls made
    "bank_switches",  # BSEL changes sent (each one BFS and/or one BFC of ECON1)
    "resets",  # full re-initialisations after a chip reset or lost configuration
    "rx_resets",  # receive logic and ring reset after an impossible header
    "rx_overflows",  # EIR.RXERIF seen (ring full or EPKTCNT at 255)
    "tx_stalls",  # TXRTS did not clear in time: transmit logic reset
    "tx_retries",  # frames sent again after a late collision (errata item 13)
    "tx_aborts",  # transmissions that ended with TXERIF or ESTAT.TXABRT
    "link_changes",  # link up/down seen through EIR.LINKIF
    "health_checks",  # periodic read-backs of the configuration
    "bus_errors",  # reads that looked like a reset but were not on a second look
    "revives",  # a chip that had stopped answering answered again
    "idle_polls",  # polls whose status call found no frame and no transmission's end
    "quiet_polls",  # polls answered by a quiet /INT line, without a bus call
)

_RING_SIZE: Final = r.RX_END - r.RX_START + 1
WIRE_BYTE_MS: Final = 0.0008  # 10BASE-T: 0.8 us a byte
WIRE_OVERHEAD: Final = 8 + 4 + 12  # preamble and SFD, FCS, inter-packet gap (bytes)
_MII_BUSY_POLLS: Final = 50
# EIR flags a BFC may clear (PKTIF and LINKIF are read-only, §12.1).
_EIR_CLEARABLE: Final = r.EIR_DMAIF | r.EIR_TXIF | r.EIR_TXERIF | r.EIR_RXERIF


def rx_capacity(mtu: int) -> int:
    """Bytes of frames the receive ring holds before the chip drops (``rx_buffer_bytes``).

    The ring is RX_START..RX_END; the chip stores each frame after a 6-byte
    header and with its 4-byte FCS, the next one at an even address (§7.2.2),
    and never writes up to ERXRDPT itself, so one byte stays free. The
    contract counts frames without such overhead: the ring is stated less the
    overhead of as many full-size frames as fit (MTU 1500: 3 frames of 1514
    bytes take 3 x 1524 bytes of 5119; 5119 - 3 x 10 = 5089, below 4 frames).
    The ring gave one frame's room to the second transmit buffer.
    """
    frame = mtu + ETH_HEADER_LEN
    overhead = r.RSV_LEN + r.CRC_LEN + (frame + r.RSV_LEN + r.CRC_LEN) % 2
    room = _RING_SIZE - 1
    frames = room // (frame + overhead)
    return min(room - frames * overhead, (frames + 1) * frame - 1)


def ring_add(ptr: int, n: int) -> int:
    """``ptr`` moved ``n`` bytes forward inside the receive ring (RBM wraps ERXND -> ERXST)."""
    return r.RX_START + (ptr - r.RX_START + n) % _RING_SIZE


def rx_read_pointer(next_packet: int) -> int:
    """ERXRDPT for a consumed packet: next - 1, which is odd; ERXND if that leaves the
    ring (errata DS80349 item 14: an even ERXRDPT can corrupt the ring)."""
    rd = next_packet - 1
    return rd if r.RX_START <= rd <= r.RX_END else r.RX_END


# -- SPI instructions ---------------------------------------------------------------------


class _Batch:
    """The instructions of one ``transfer_batch`` call; methods return reply indexes.

    Tracks BSEL from ``bank`` (None: unknown) and adds a switch only when a
    banked register needs another bank. ``tails`` runs parallel to ``items``
    (``hilkit.port.SpiBus``): what is read of each reply, so a USB bridge carries
    back only that: RCR its last byte (after any dummy byte, §4.2.1), RBM the
    data after the opcode (§4.2.2), the rest nothing. ``carry`` holds writes
    (pending common-register writes), so their tails are 0.
    """

    __slots__ = ("bank", "items", "start_bank", "switches", "tails")

    def __init__(self, bank: int | None, carry: Sequence[bytes] = ()) -> None:
        self.items: list[bytes] = list(carry)
        self.tails: list[int] = [0] * len(self.items)
        self.bank = bank
        self.start_bank = bank
        self.switches = 0

    def _select(self, reg: r.Reg) -> None:
        want = reg.bank
        if want is None or want == self.bank:
            return
        old = r.ECON1_BSEL if self.bank is None else self.bank  # unknown: clear both bits
        if clear := old & ~want & r.ECON1_BSEL:
            self.items.append(bytes((r.OP_BFC | r.ECON1.addr, clear)))
            self.tails.append(0)
        if setb := want & ~(0 if self.bank is None else old):
            self.items.append(bytes((r.OP_BFS | r.ECON1.addr, setb)))
            self.tails.append(0)
        self.bank = want
        self.switches += 1

    def rcr(self, reg: r.Reg) -> int:
        """Read Control Register; MAC/MII registers shift out a dummy byte first (§4.2.1)."""
        self._select(reg)
        self.items.append(bytes((r.OP_RCR | reg.addr, 0, 0)) if reg.mac else
                          bytes((r.OP_RCR | reg.addr, 0)))
        self.tails.append(1)
        return len(self.items) - 1

    def wcr(self, reg: r.Reg, value: int) -> None:
        self._select(reg)
        self.items.append(bytes((r.OP_WCR | reg.addr, value & 0xFF)))
        self.tails.append(0)
        if reg is r.ECON1:
            self.bank = value & r.ECON1_BSEL

    def wcr16(self, low: r.Reg, high: r.Reg, value: int) -> None:
        """A 16-bit pair, low byte first (ERXRDPTL is held until ERXRDPTH is written, §6.1)."""
        self.wcr(low, value)
        self.wcr(high, value >> 8)

    def bfs(self, reg: r.Reg, mask: int) -> None:
        """Bit Field Set: ETH registers only (§4.2.5)."""
        assert not reg.mac, reg.name
        self._select(reg)
        self.items.append(bytes((r.OP_BFS | reg.addr, mask)))
        self.tails.append(0)

    def bfc(self, reg: r.Reg, mask: int) -> None:
        assert not reg.mac, reg.name
        self._select(reg)
        self.items.append(bytes((r.OP_BFC | reg.addr, mask)))
        self.tails.append(0)

    def rbm(self, n: int) -> int:
        """Read Buffer Memory: ``n`` bytes from ERDPT in one transaction (§4.2.2)."""
        self.items.append(bytes((r.OP_RBM,)) + bytes(n))
        self.tails.append(n)
        return len(self.items) - 1

    def wbm(self, data: bytes) -> None:
        """Write Buffer Memory at EWRPT, one transaction (§4.2.4)."""
        self.items.append(data)  # the caller put OP_WBM in front (one copy of the frame)
        self.tails.append(0)

    def src(self) -> None:
        """System Reset Command (§11.2); ECON1 resets to 0, so bank 0."""
        self.items.append(bytes((r.OP_SRC,)))
        self.tails.append(0)
        self.bank = 0


class _Replies:
    """The replies of one batch, cut to ``_Batch.tails``."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[bytes]) -> None:
        self.raw = raw

    def byte(self, i: int) -> int:
        """A register read: the value is the last byte clocked in (after any dummy)."""
        return self.raw[i][-1]

    def data(self, i: int) -> bytes:
        """An RBM burst: everything after the opcode byte (its whole tail)."""
        return self.raw[i]


_TX_AIM_STEP_MS: Final = 0.003  # a status read came early: aim this much later
_TX_AIM_MAX_MS: Final = 0.1  # ... within this much of the end the driver reckons, either way
_TX_POINTER_REGS: Final = (r.ETXSTL, r.ETXSTH, r.ETXNDL, r.ETXNDH)
_NO_POINTERS: Final = (-1, -1, -1, -1)


def _tx_pointers(buf: int, n: int) -> tuple[int, ...]:
    """ETXSTL, ETXSTH, ETXNDL, ETXNDH for ``n`` bytes at ``buf`` (ETXND: the last byte)."""
    end = buf + n
    return (buf & 0xFF, buf >> 8, end & 0xFF, end >> 8)


def _aim(aim: float, *, early: bool, share: float) -> float:
    """Learn how late to aim a status read at a frame's reckoned end (ms): later after
    one that came early, sooner after one on time, so that ``share`` of them come early;
    within _TX_AIM_MAX_MS either way."""
    step = _TX_AIM_STEP_MS if early else -_TX_AIM_STEP_MS * share / (1 - share)
    return min(max(aim + step, -_TX_AIM_MAX_MS), _TX_AIM_MAX_MS)


def _started_at(b: _Batch, at: int, t0: float, t1: float) -> float:
    """When the instruction ``b.items[at]`` reached the chip, in a call that ran from
    ``t0`` to ``t1``: the bytes clocked before it and with it take their share of the call."""
    n = sum(map(len, b.items))
    upto = sum(map(len, b.items[: at + 1]))
    return t0 + (t1 - t0) * upto / n


def _u16(b: bytes, i: int) -> int:
    return b[i] | b[i + 1] << 8


class ENC28J60Device(SpiNic):
    """An ENC28J60 on an SPI bus (Ethernet frames without FCS).

    ``bus`` belongs to the caller: ``close()`` leaves it open. ``reset`` (the
    /RESET line, logical: True holds the chip in reset) gives a hard reset
    before the soft reset. ``irq`` (/INT, logical: True = asserted) enables
    the chip's interrupt output and lends its descriptor to ``fileno()``.
    ``full_duplex`` must match the link partner: the PHY has no
    autonegotiation and a partner that autonegotiates falls back to half
    duplex by parallel detection (§9), hence the default. ``mac_filter`` keeps unicast to our MAC
    and broadcast only (ERXFCON UCEN|CRCEN|BCEN, §8); False is promiscuous.
    ``clock`` times the transmit watchdog and re-probes.

    Opening resets and probes the chip (EREVID, §3.1) and raises
    ``ChipNotResponding`` naming the bus when nothing answers. ``stats``
    counts what ``counters`` cannot say (``STAT_NAMES``); ``rx_buffer_bytes``
    (the contract's optional member) is what the receive ring holds in frame
    bytes: see ``rx_capacity``.
    """

    # Tunables (class attributes: a subclass or a test may change them); HARD_RESET_LOW_S
    # (/RESET far past its minimum pulse, §11.1), RESET_SUPERVISOR_S, HEALTH_EVERY and
    # REPROBE_MS are SpiNic's.
    RESET_WAIT_S = 0.002  # after a reset: >= 1 ms, ESTAT.CLKRDY not trusted (errata item 2)
    REPROBE_FIRST_MS = 200.0  # a chip that stopped answering: the first re-probe
    CLKRDY_POLLS = 20  # ESTAT.CLKRDY polls, 0.1 ms apart, when not using the fixed wait
    MII_WAIT_S = 0.000011  # an MII read or write keeps MISTAT.BUSY set 10.24 us (§3.3)
    BUSY_WAIT_MS = 2.0  # how long send waits for the previous frame (1514 B at 10 Mb/s: 1.2 ms)
    BUSY_WAIT_POLLS = 4  # ... in at most this many ECON1 reads
    NAP_SPIN_MS = 0.2  # the end of that wait is spun, not slept (sleeps overshoot)
    TX_MAX_CHECKS = 10_000  # not-done checks that count as a stall whatever the clock says
    IRQ_TRUST_MS = 10.0  # with /INT and no edge, a poll skips the bus this long after a look
    LINK_TTL_MS = 100.0  # link_up trusts what it knows this long between polls
    LATE_COLLISION_RETRIES = 16  # errata item 13: false late collisions in half duplex
    STALL_RETRIES = 1  # sends of a frame again after its TXRTS stalled
    RX_FRAME_MIN = ETH_HEADER_LEN + r.CRC_LEN  # byte counts in the RSV include the FCS
    # A bus whose calls cost this much (call_overhead_us: a USB bridge's round trip) reads
    # the next packet's header in every status call (12 SPI bytes are cheaper than a call),
    # and lets fewer of the status reads that end a write come early (TX_EARLY_DEAR).
    DEAR_CALL_US = 100.0
    # The share of the status reads that end a write that may come early: where calls are
    # cheap, most (the short read after is timed better than a write's end); where they
    # are dear, few. And of those short reads, the share that may come early.
    TX_EARLY_CHEAP = 0.75
    TX_EARLY_DEAR = 0.1
    TX_EARLY_READ = 0.15

    # Errata workarounds (DS80349). Each can be switched off to show what it prevents.
    ERRATA_RESET_WAIT = True  # item 2: wait a fixed time after reset, not for CLKRDY
    ERRATA_EPKTCNT = True  # EIR.PKTIF may stay clear: count packets with EPKTCNT
    ERRATA_ODD_ERXRDPT = True  # item 14: ERXRDPT must be odd
    ERRATA_TXRST = True  # item 12: reset the transmit logic after every aborted transmission
    ERRATA_LATE_COLLISION = True  # item 13: send again after a late collision

    def __init__(
        self,
        bus: SpiBus,
        *,
        mac: bytes | None = None,
        reset: Pin | None = None,
        irq: Pin | None = None,
        name: str = "enc28j60",
        mtu: int = 1500,
        full_duplex: bool = False,
        clock: Clock | None = None,
        mac_filter: bool = True,
        send_timeout_ms: float = 100.0,
    ) -> None:
        super().__init__(
            bus,
            mac=mac,
            reset=reset,
            irq=irq,
            name=name,
            mtu=mtu,
            max_mtu=r.MAX_FRAME - r.CRC_LEN - ETH_HEADER_LEN,
            mtu_why="MAMXFL is 1518 with the FCS",
            clock=clock,
            send_timeout_ms=send_timeout_ms,
        )
        self.rx_buffer_bytes: int | None = rx_capacity(mtu)
        self.full_duplex = full_duplex
        self.revision = 0  # EREVID as read by the probe
        self._stats = dict.fromkeys(STAT_NAMES, 0)
        self._calls_dear = (bus_call_overhead_us(bus) or 0.0) >= self.DEAR_CALL_US
        self._tx_early = self.TX_EARLY_DEAR if self._calls_dear else self.TX_EARLY_CHEAP
        self._erxfcon = (r.ERXFCON_UCEN | r.ERXFCON_CRCEN | r.ERXFCON_BCEN) if mac_filter else 0
        self._eie = (
            r.EIE_INTIE | r.EIE_PKTIE | r.EIE_LINKIE | r.EIE_TXERIE | r.EIE_RXERIE
            if irq is not None else 0
        )
        self._econ2 = r.ECON2_AUTOINC | r.ECON2_VRPS
        self._health: list[tuple[r.Reg, int]] = []
        self._link = False
        self._link_ms = 0.0  # when LINKIF was last looked at
        self._bank: int | None = None
        self._carry: list[bytes] = []  # common-register writes for the next call
        self._armed = True  # the last call ended with EIE.INTIE set (irq only)
        self._looked_ms = float("-inf")  # when a poll last ended with INTIE set (irq only)
        self._forget_state()
        self._probe()
        self._configure()

    # -- the Device contract (the rest is SpiNic's) -------------------------------------

    @property
    def link_up(self) -> bool:
        """PHSTAT2.LSTAT as last read, kept current by EIR.LINKIF (§12.1.5).

        Polls see LINKIF; between polls EIR is read at most every LINK_TTL_MS.
        """
        if self._closed or self._dead:
            return False
        now = self._clock.now_ms()
        if now - self._link_ms >= self.LINK_TTL_MS:
            self._link_ms = now
            try:
                b = self._batch()
                i = b.rcr(r.EIR)
                if self._xfer(b).byte(i) & r.EIR_LINKIF:
                    self._link_changed()
            except OSError:  # ChipNotResponding included (MISTAT stuck)
                self._bus_failed()
                return False
        return self._link

    def _close_frames(self) -> list[bytes]:
        """Interrupts off, reception and any transmission stopped."""
        b = _Batch(self._bank)
        b.wcr(r.EIE, 0)
        b.bfc(r.ECON1, r.ECON1_RXEN | r.ECON1_TXRTS)
        return b.items

    # -- conveniences ---------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Driver events beyond ``counters`` (names in ``STAT_NAMES``)."""
        return dict(self._stats)

    def probe(self) -> int:
        """Read EREVID (read-only); raise ChipNotResponding naming the bus if nothing answers."""
        b = self._batch()
        i = b.rcr(r.EREVID)
        b.tails[i] = len(b.items[i])  # whole: the diagnosis below judges every byte read
        q = self._xfer(b)
        rev = q.byte(i)
        if rev in (0x00, 0xFF):
            raise ChipNotResponding(self._no_chip(rev, q.raw[i:]))
        return rev

    # -- bring-up (DS39662E §6, in its order) ---------------------------------------------

    def _probe(self) -> None:
        """Hard reset (with the pin), soft reset, then EREVID must read like a chip (§3.1)."""
        self._pulse_reset(self.RESET_WAIT_S, self._answers)
        self._soft_reset()
        rev = self.probe()
        if rev != r.EREVID_B7:
            log.warning("%s: EREVID 0x%02X is not Rev. B7 (0x%02X): errata may differ",
                        self.name, rev, r.EREVID_B7)
        self.revision = rev

    def _soft_reset(self) -> None:
        """SRC, then a fixed wait: CLKRDY cannot be trusted after a reset (errata item 2)."""
        b = _Batch(self._bank)
        b.src()
        self._xfer(b)
        if self.ERRATA_RESET_WAIT:
            time.sleep(self.RESET_WAIT_S)
            return
        for _ in range(self.CLKRDY_POLLS):  # what the data sheet alone says (§2.2)
            b = self._batch()
            i = b.rcr(r.ESTAT)
            if self._xfer(b).byte(i) & r.ESTAT_CLKRDY:
                return
            time.sleep(0.0001)

    def _no_chip(self, rev: int, replies: Sequence[bytes]) -> str:
        raw = b"".join(replies)
        if raw and raw == b"\xff" * len(raw):
            why = "every byte read back 0xFF: nothing drives MISO"
        elif raw and raw == bytes(len(raw)):
            why = "every byte read back 0x00: MISO stuck low or the chip held in reset"
        else:
            why = "the bus answers, but not as an ENC28J60"
        return (
            f"no ENC28J60 answered on {self._bus_label}: EREVID read 0x{rev:02X}, "
            f"expected 0x{r.EREVID_B7:02X} (Rev. B7); {why}; {WIRING_HINT}"
        )

    def _configure(self) -> None:
        """Buffers, filters, MAC, PHY, interrupts, RXEN, in the data sheet's order (§6)."""
        fd = self.full_duplex
        b = self._batch()
        b.wcr(r.ECON1, 0)  # bank 0, receive off while we set up
        b.wcr(r.ECON2, self._econ2)
        # §6.1: RX ring at 0x0000 (errata item 5), TX above it. Writing ERXST/ERXND reloads
        # ERXWRPT; ERXRDPT starts at ERXND (odd, item 14): nothing read yet.
        b.wcr16(r.ERXSTL, r.ERXSTH, r.RX_START)
        b.wcr16(r.ERXNDL, r.ERXNDH, r.RX_END)
        b.wcr16(r.ERXRDPTL, r.ERXRDPTH, rx_read_pointer(r.RX_START))
        b.wcr16(r.ETXSTL, r.ETXSTH, r.TX_BUFS[0])
        b.wcr16(r.ETXNDL, r.ETXNDH, r.TX_BUFS[0])
        b.wcr(r.ERXFCON, self._erxfcon)  # §6.3
        # §6.5 MAC: receive on; pause frames only in full duplex; pad to 60 + CRC, check lengths.
        b.wcr(r.MACON1, self._macon1())
        b.wcr(r.MACON3, self._macon3())
        b.wcr(r.MACON4, 0 if fd else r.MACON4_DEFER)  # DEFER: wait for a busy medium (802.3)
        b.wcr(r.MABBIPG, r.MABBIPG_FULL if fd else r.MABBIPG_HALF)
        b.wcr(r.MAIPGL, r.MAIPGL_VALUE)
        if not fd:
            b.wcr(r.MAIPGH, r.MAIPGH_HALF)
        b.wcr16(r.MAMXFLL, r.MAMXFLH, r.MAX_FRAME)
        for reg, octet in zip(r.MAADR, self._mac, strict=True):  # MAADR1 = first octet
            b.wcr(reg, octet)
        self._xfer(b)
        # §6.6 PHY: duplex to match the MAC, no half-duplex loopback, LEDs, link interrupt.
        self._phy_write(r.PHCON1, r.PHCON1_PDPXMD if fd else 0)
        self._phy_write(r.PHCON2, 0 if fd else r.PHCON2_HDLDIS)
        self._phy_write(r.PHLCON, r.PHLCON_VALUE)
        self._phy_write(r.PHIE, r.PHIE_PGEIE | r.PHIE_PLNKIE)
        self._phy_read(r.PHIR)  # clears a link flag left from before
        self._link = bool(self._phy_read(r.PHSTAT2) & r.PHSTAT2_LSTAT)
        self._health = self._health_list()
        b = self._batch()
        b.bfc(r.EIR, _EIR_CLEARABLE)
        b.wcr(r.EIE, self._eie)
        b.bfs(r.ECON1, r.ECON1_RXEN)
        for _ in range(2):  # a second look, in case a bit flipped on the way back
            i = self._health_reads(b)
            q = self._xfer(b)
            bad = self._health_diff(q, i)
            if not bad:
                break
            b = self._batch()
        else:
            raise ChipNotResponding(
                f"{self._bus_label}: ENC28J60 did not keep its configuration: {bad}; "
                f"{WIRING_HINT}"
            )
        self._forget_state()
        self._armed = True

    def _macon1(self) -> int:
        pause = r.MACON1_TXPAUS | r.MACON1_RXPAUS if self.full_duplex else 0
        return r.MACON1_MARXEN | pause

    def _macon3(self) -> int:
        v = r.MACON3_PADCFG0 | r.MACON3_TXCRCEN | r.MACON3_FRMLNEN
        return v | r.MACON3_FULDPX if self.full_duplex else v

    def _health_list(self) -> list[tuple[r.Reg, int]]:
        """What a reset would undo, grouped by bank so a read-back costs few switches.

        ETXST is left out: it moves between the two transmit buffers; a reset still
        shows in ERXND (0x1FFF after one, §11).
        """
        want: list[tuple[r.Reg, int]] = [(r.ECON2, self._econ2), (r.ERXFCON, self._erxfcon)]
        want += [(r.MACON1, self._macon1()), (r.MACON3, self._macon3()),
                 (r.MAMXFLL, r.MAX_FRAME & 0xFF), (r.MAMXFLH, r.MAX_FRAME >> 8)]
        want += [(r.EREVID, self.revision)]
        want += list(zip(r.MAADR, self._mac, strict=True))
        want += [(r.ERXSTL, r.RX_START & 0xFF), (r.ERXSTH, r.RX_START >> 8),
                 (r.ERXNDL, r.RX_END & 0xFF), (r.ERXNDH, r.RX_END >> 8)]
        return want

    def _health_reads(self, b: _Batch) -> list[int]:
        """Read back ``_health`` and EIE; the reply indexes, for ``_health_diff``."""
        return [b.rcr(reg) for reg, _ in self._health] + [b.rcr(r.EIE)]

    def _health_diff(self, q: _Replies, idx: list[int]) -> str:
        """'' if the read-back matches what we wrote, else what differs."""
        diffs = [
            f"{reg.name} 0x{q.byte(i):02X} not 0x{want:02X}"
            for (reg, want), i in zip(self._health, idx, strict=False)
            if q.byte(i) != want
        ]
        eie = q.byte(idx[-1])
        if eie & ~r.EIE_INTIE != self._eie & ~r.EIE_INTIE:  # INTIE moves with each poll
            diffs.append(f"EIE 0x{eie:02X} not 0x{self._eie:02X}")
        return ", ".join(diffs[:4])

    def _forget_state(self) -> None:
        """The ring and the transmitter start afresh (after configure or an RX reset)."""
        self._next = r.RX_START  # where the next packet's header is
        self._hdr: bytes | None = None  # that header, when already read
        self._erdpt: int | None = None  # where ERDPT points, when known
        self._rx_left = 0  # packets counted by EPKTCNT and not yet taken
        self._rx_hint = False  # the last count was not zero: read a header with it
        self._tx_pending = False  # TXRTS was set and the end not yet seen
        self._tx_buf = r.TX_BUFS[1]  # the buffer last started (so the first frame uses [0])
        self._tx_ptrs: tuple[int, ...] | None = None  # ETXSTL/H, ETXNDL/H as last started
        self._tx_len = 0
        self._tx_since = 0.0
        self._tx_due = 0.0  # the earliest the frame can be off the wire
        self._write_ms = 0.0  # how long writing a frame and reading the status takes (mean)
        self._tx_aim_ms = 0.0  # how long after the reckoned end that write should end
        self._tx_read_aim_ms = 0.0  # ... and a short status read after an early one
        self._tx_checks = 0
        self._tx_tries = 0  # late-collision sends again of the frame in the buffer
        self._tx_stall_tries = 0

    # -- PHY through the MII (§3.3) -------------------------------------------------------

    def _phy_write(self, reg: int, value: int) -> None:
        """MIREGADR, MIWRL, MIWRH (writing MIWRH starts it), then MISTAT.BUSY (§3.3.2)."""
        b = self._batch()
        b.wcr(r.MIREGADR, reg)
        b.wcr(r.MIWRL, value)
        b.wcr(r.MIWRH, value >> 8)
        i = b.rcr(r.MISTAT)
        self._mii_wait(self._xfer(b).byte(i))

    def _phy_read(self, reg: int) -> int:
        """MIREGADR, MICMD.MIIRD, MISTAT.BUSY clear, MICMD = 0, MIRDL/H (§3.3.1)."""
        b = self._batch()
        b.wcr(r.MIREGADR, reg)
        b.wcr(r.MICMD, r.MICMD_MIIRD)
        i = b.rcr(r.MISTAT)
        self._mii_wait(self._xfer(b).byte(i))
        b = self._batch()
        b.wcr(r.MICMD, 0)
        i_lo = b.rcr(r.MIRDL)
        i_hi = b.rcr(r.MIRDH)
        q = self._xfer(b)
        return q.byte(i_lo) | q.byte(i_hi) << 8

    def _mii_wait(self, mistat: int) -> None:
        for _ in range(_MII_BUSY_POLLS):
            if not mistat & r.MISTAT_BUSY:
                return
            time.sleep(self.MII_WAIT_S)
            b = self._batch()
            i = b.rcr(r.MISTAT)
            mistat = self._xfer(b).byte(i)
        raise ChipNotResponding(f"{self._bus_label}: MISTAT.BUSY stuck (0x{mistat:02X})")

    # -- receive ----------------------------------------------------------------------------

    def _poll(self, budget: int, out: list[bytes]) -> None:
        if self._dead and not self._try_revive():
            return
        if self._irq_quiet():
            self._stats["quiet_polls"] += 1
            return
        tx_was = self._tx_pending
        if not self._status_call(health=self._health_due()):
            self._finish()
            return
        if not self._rx_left and self._tx_pending == tx_was:
            self._stats["idle_polls"] += 1
        while len(out) < budget and self._rx_left > 0 and not self._dead:
            if self._hdr is None:
                self._header_call()
                continue
            final = self._rx_left == 1 or len(out) + 1 >= budget
            self._frame_call(out, final=final)
        self._finish()
        if self._irq is not None and not self._dead:
            self._looked_ms = self._clock.now_ms()

    def _irq_quiet(self) -> bool:
        """True when /INT says there is nothing to read, so the poll needs no bus call.

        The last poll ended with EIE.INTIE set, so anything the chip flags (PKTIF,
        LINKIF, TXERIF, RXERIF, §12) since then made a falling edge; no edge is
        queued, nothing was left behind, and that poll is under IRQ_TRUST_MS old.
        The bound keeps in view what raises no interrupt: a reset clears EIE
        (§11), PKTIF may stay clear (errata DS80349: count with EPKTCNT).
        """
        irq = self._irq
        if irq is None or self._rx_left or self._carry or getattr(irq, "fileno", None) is None:
            return False
        if self._clock.now_ms() - self._looked_ms >= self.IRQ_TRUST_MS:
            return False
        return not irq.wait_edge(Edge.RISING, 0)  # logical: an edge means /INT was asserted

    def _status_call(self, *, health: bool) -> bool:
        """EIR, ESTAT, ECON2, ECON1, EPKTCNT (+ the next header while traffic flows).

        False when the chip was found reset or gone (handled here).
        """
        b = self._batch(arm=True)
        i_eir = b.rcr(r.EIR)
        i_estat = b.rcr(r.ESTAT)
        i_econ2 = b.rcr(r.ECON2)
        i_econ1 = b.rcr(r.ECON1)
        bank = b.start_bank
        i_cnt = b.rcr(r.EPKTCNT)  # after the flags: a packet counted here is complete
        i_h = self._health_reads(b) if health else []
        along = self._rx_hint or self._calls_dear
        i_hdr = self._read_header(b) if along and self._hdr is None else -1
        q = self._xfer(b, armed=True)
        if not self._chip_ok(q.byte(i_econ2), q.byte(i_econ1), bank):
            return False
        if health:
            self._stats["health_checks"] += 1
            bad = self._health_diff(q, i_h)
            if bad and self._chip_changed(f"configuration changed: {bad}", confirm=True):
                return False
        eir, estat = q.byte(i_eir), q.byte(i_estat)
        if eir & r.EIR_RXERIF:  # ring full or 255 packets: the chip dropped a frame (§7.2.4)
            self._stats["rx_overflows"] += 1
            self.counters.rx_dropped += 1
            self._carry.append(bytes((r.OP_BFC | r.EIR.addr, r.EIR_RXERIF)))
        self._link_ms = self._clock.now_ms()
        if eir & r.EIR_LINKIF:
            self._link_changed()
        if self._tx_pending:
            self._tx_observe(q.byte(i_econ1), eir, estat)
        cnt = q.byte(i_cnt)
        if not self.ERRATA_EPKTCNT and not eir & r.EIR_PKTIF:
            cnt = 0  # trusting PKTIF alone (what the errata warns against)
        self._rx_left = cnt
        self._rx_hint = cnt > 0
        if i_hdr >= 0 and cnt:
            self._hdr = q.data(i_hdr)
        return True

    def _read_header(self, b: _Batch) -> int:
        """ERDPT <- next packet (if not already there), RBM of its 6-byte header (§7.2.2)."""
        if self._erdpt != self._next:
            b.wcr16(r.ERDPTL, r.ERDPTH, self._next)
        self._erdpt = ring_add(self._next, r.RSV_LEN)
        return b.rbm(r.RSV_LEN)

    def _header_call(self) -> None:
        b = self._batch()
        i = self._read_header(b)
        self._hdr = self._xfer(b).data(i)

    def _frame_call(self, out: list[bytes], *, final: bool) -> None:
        """The frame, ERXRDPT, PKTDEC and the next header, in one call (§7.2.4)."""
        hdr = self._hdr
        assert hdr is not None
        nxt, count, status = _u16(hdr, 0), _u16(hdr, 2), _u16(hdr, 4) << 16
        if (
            not r.RX_START <= nxt <= r.RX_END
            or nxt & 1
            or count > r.MAX_FRAME
            or nxt not in self._next_candidates(count)
        ):
            self._rx_reset(f"header {hdr.hex(' ')} at 0x{self._next:04X}")
            return
        ok = bool(status & r.RSV_RECEIVED_OK) and count >= self.RX_FRAME_MIN
        n = count - r.CRC_LEN
        b = self._batch(arm=final)
        i_data = -1
        if ok:
            start = ring_add(self._next, r.RSV_LEN)
            if self._erdpt != start:
                b.wcr16(r.ERDPTL, r.ERDPTH, start)
            i_data = b.rbm(n)
            self._erdpt = ring_add(start, n)
        rd = rx_read_pointer(nxt) if self.ERRATA_ODD_ERXRDPT else nxt
        b.wcr16(r.ERXRDPTL, r.ERXRDPTH, rd)
        b.bfs(r.ECON2, r.ECON2_PKTDEC)
        more = self._rx_left > 1
        if more:
            self._next = nxt  # _read_header reads at _next
            i_hdr = self._read_header(b)
        bank = b.bank
        i_econ2 = b.rcr(r.ECON2)  # last: the data and the header came from an unreset chip
        i_econ1 = b.rcr(r.ECON1)
        q = self._xfer(b, armed=final)
        if not self._chip_ok(q.byte(i_econ2), q.byte(i_econ1), bank):
            return  # the frame read across a reset is not handed over
        self._next = nxt
        self._rx_left -= 1
        self._hdr = q.data(i_hdr) if more else None
        if ok:
            out.append(q.data(i_data))
            self.counters.rx_frames += 1
            self.counters.rx_bytes += n
        else:
            self.counters.rx_errors += 1  # CRC, length or runt: counted, skipped

    def _next_candidates(self, count: int) -> tuple[int, int]:
        """Where the next packet can start: right after this one, or at the next even
        address (packets start on even addresses, §7.2.2)."""
        end = ring_add(self._next, r.RSV_LEN + count)
        return end, ring_add(end, end & 1)

    def _rx_reset(self, why: str) -> None:
        """Impossible header: reset the receive logic and the ring; waiting frames are lost."""
        log.warning("%s: receive ring out of step, resetting it: %s", self.name, why)
        self._stats["rx_resets"] += 1
        self.counters.rx_errors += 1
        b = self._batch()
        b.bfc(r.ECON1, r.ECON1_RXEN)
        i_lost = b.rcr(r.EPKTCNT)  # what the reset throws away
        b.bfs(r.ECON1, r.ECON1_RXRST)
        b.bfc(r.ECON1, r.ECON1_RXRST)
        b.wcr16(r.ERXSTL, r.ERXSTH, r.RX_START)  # reloads ERXWRPT
        b.wcr16(r.ERXNDL, r.ERXNDH, r.RX_END)
        b.wcr16(r.ERXRDPTL, r.ERXRDPTH, rx_read_pointer(r.RX_START))
        i_left = b.rcr(r.EPKTCNT)
        q = self._xfer(b)
        lost = q.byte(i_lost)
        b = self._batch()
        for _ in range(q.byte(i_left)):  # if RXRST left a count, only PKTDEC lowers it
            b.bfs(r.ECON2, r.ECON2_PKTDEC)
        b.bfc(r.EIR, r.EIR_RXERIF)
        b.bfs(r.ECON1, r.ECON1_RXEN)
        self._xfer(b)
        self.counters.rx_dropped += max(lost - 1, 0)  # the bad one is the rx_errors above
        self._next, self._hdr, self._erdpt = r.RX_START, None, None
        self._rx_left, self._rx_hint = 0, False

    def _link_changed(self) -> None:
        """EIR.LINKIF: read PHIR to clear it, PHSTAT2.LSTAT for the state (§12.1.5)."""
        self._phy_read(r.PHIR)
        up = bool(self._phy_read(r.PHSTAT2) & r.PHSTAT2_LSTAT)
        if up != self._link:
            self._stats["link_changes"] += 1
            log.info("%s: link %s", self.name, "up" if up else "down")
        self._link = up

    # -- interrupt line ---------------------------------------------------------------------

    def _finish(self) -> None:
        """End a poll with EIE.INTIE set by its last call, so /INT falls again if anything
        is still pending after the edges we consumed (an edge-triggered line, §12)."""
        if self._irq is None:
            if self._carry and not self._dead:
                self._xfer(self._batch())
            return
        if (self._armed and not self._carry) or self._dead:
            return
        b = self._batch(arm=True)
        self._xfer(b, armed=True)

    # -- transmit ---------------------------------------------------------------------------

    def _send(self, frame: bytes, *, retry: bool) -> Tx:
        if self._dead and not self._try_revive():
            return Tx.DROPPED
        if not self._link:
            return Tx.DROPPED
        n = len(frame)
        buf = r.TX_BUFS[1] if self._tx_buf == r.TX_BUFS[0] else r.TX_BUFS[0]
        in_flight = self._tx_pending
        b = self._batch()
        b.wcr16(r.EWRPTL, r.EWRPTH, buf)  # the buffer not on the wire
        # Control byte 0: MACON3 decides padding and CRC (§7.1, Figure 7-1).
        b.wbm(bytes((r.OP_WBM, 0)) + frame)
        reads: int | None = None
        if in_flight:
            # Its start is built now, so that it follows the status read that finds the
            # wire free at once: between the two, every microsecond is wire time lost.
            start = _Batch(b.bank)
            at = self._start_tx(start, buf, n)
            reads = self._tx_reads(start)
            # The write carries the status read, timed to end just after the frame on the
            # wire does; if it comes early, one short read follows at that end.
            self._nap_until(self._tx_due + self._tx_aim_ms - self._write_ms)
            t0 = self._clock.now_ms()
            q = self._tx_call(b)
            if q is None:
                return self._tx_void(frame, retry)
            self._write_ms += (self._clock.now_ms() - t0 - self._write_ms) / 4
            self._tx_observe(*q)
            # A read too early costs a short read more, timed for the frame's end; one on
            # time is late by its delay, and a 1.5 KB write's end is not exact.
            self._tx_aim_ms = _aim(self._tx_aim_ms, early=self._tx_pending,
                                   share=self._tx_early)
            done = not self._tx_pending or self._wait_tx()
            if not done:
                return Tx.DROPPED  # the previous frame is still going out: this copy is left
            if start.start_bank != self._bank or self._carry:
                start = self._batch()  # the chip was touched meanwhile: build it afresh
                at = self._start_tx(start, buf, n)
                reads = self._tx_reads(start)
            b = start
        else:
            at = self._start_tx(b, buf, n)
        t0 = self._clock.now_ms()
        q = self._tx_call(b, reads)
        if q is None:
            return self._tx_void(frame, retry)
        self._tx_begun(buf, n, _started_at(b, at, t0, self._clock.now_ms()))
        self._tx_observe(*q)
        return Tx.SENT

    def _tx_void(self, frame: bytes, retry: bool) -> Tx:
        """A transmit call found the chip reset or gone: once re-initialised, the frame
        goes once more; else it is dropped (the chip is dead) or an error."""
        if retry and not self._dead:
            return self._send(frame, retry=False)
        return Tx.DROPPED if self._dead else Tx.ERROR

    @staticmethod
    def _tx_reads(b: _Batch) -> int:
        """End a transmit call with ECON2, ECON1, EIR, ESTAT (common registers: in a row,
        in any bank); the index of the first."""
        i = b.rcr(r.ECON2)
        b.rcr(r.ECON1)
        b.rcr(r.EIR)
        b.rcr(r.ESTAT)
        return i

    def _tx_call(self, b: _Batch, i: int | None = None) -> tuple[int, int, int] | None:
        """Make a transmit call that ends with ``_tx_reads`` (at ``i``; None: add them now);
        (ECON1, EIR, ESTAT), or None when the chip was found reset or gone (handled: the
        call is void)."""
        if i is None:
            i = self._tx_reads(b)
        q = self._xfer(b)
        if not self._chip_ok(q.byte(i), q.byte(i + 1), b.bank):
            return None
        return q.byte(i + 1), q.byte(i + 2), q.byte(i + 3)

    def _start_tx(self, b: _Batch, buf: int, n: int) -> int:
        """Start the frame of ``n`` bytes in ``buf``; only when no frame is in flight.
        Returns the index of the TXRTS instruction.

        Only the pointer bytes that differ from the chip's are written (``TX_BUFS``).
        EIR.TXIF/TXERIF are cleared after TXRTS, not before: the frame just started
        cannot end within the call (a minimum frame holds the wire 67 us), and an abort
        of the last one was handled already. No TXRST here: errata item 12 allows
        resetting the transmit logic whenever TXERIF is seen instead of before each
        transmission, and every abort already ends in one (``_tx_failed``).
        """
        want = _tx_pointers(buf, n)
        have = self._tx_ptrs
        for reg, value, old in zip(_TX_POINTER_REGS, want, have or _NO_POINTERS, strict=True):
            if value != old:
                b.wcr(reg, value)
        b.bfs(r.ECON1, r.ECON1_TXRTS)
        at = len(b.items) - 1
        b.bfc(r.EIR, r.EIR_TXIF | r.EIR_TXERIF)
        return at

    def _tx_begun(self, buf: int, n: int, since: float) -> None:
        """TXRTS was set at ``since`` for the frame in ``buf``: it is the one in flight now."""
        self._tx_pending = True
        self._tx_buf = buf
        self._tx_len = n
        self._tx_ptrs = _tx_pointers(buf, n)
        self._tx_tries = self._tx_stall_tries = 0
        self._tx_started(since)

    def _wait_tx(self) -> bool:
        """Read ECON1/EIR/ESTAT until the frame in flight is done, sleeping until its
        expected end first (plus the learned ``_tx_read_aim_ms``): at most BUSY_WAIT_MS
        and BUSY_WAIT_POLLS reads."""
        t0 = self._clock.now_ms()
        for polls in range(self.BUSY_WAIT_POLLS):
            now = self._clock.now_ms()
            if now - t0 >= self.BUSY_WAIT_MS:
                break
            due = self._tx_due + (self._tx_read_aim_ms if polls == 0 else 0.0)
            nap = min(due - now, self.BUSY_WAIT_MS - (now - t0))
            if nap > 0:
                self._nap(nap)  # until its expected end, and no later
            elif polls:
                self._nap(0.01 * 5 ** (polls - 1))  # past it and still going: a little more
            b = self._batch()
            i_econ1 = b.rcr(r.ECON1)
            i_eir = b.rcr(r.EIR)
            i_estat = b.rcr(r.ESTAT)
            q = self._xfer(b)
            self._tx_observe(q.byte(i_econ1), q.byte(i_eir), q.byte(i_estat))
            if polls == 0:
                self._tx_read_aim_ms = _aim(self._tx_read_aim_ms, early=self._tx_pending,
                                            share=self.TX_EARLY_READ)
            if not self._tx_pending:
                return True
        return False

    def _nap_until(self, t: float) -> None:
        """``_nap`` until ``t`` on the driver's clock (at most BUSY_WAIT_MS)."""
        lead = t - self._clock.now_ms()
        if lead > 0:
            self._nap(min(lead, self.BUSY_WAIT_MS))

    def _nap(self, ms: float) -> None:
        """Sleep ``ms``, the last NAP_SPIN_MS of it spinning: a sleep overshoots by tens of
        microseconds, and between two frames every one of them is wire time lost."""
        end = time.monotonic() + ms / 1000.0
        if ms > self.NAP_SPIN_MS:
            time.sleep((ms - self.NAP_SPIN_MS) / 1000.0)
        while time.monotonic() < end:
            pass

    def _tx_started(self, since: float | None = None) -> None:
        """TXRTS was set for the frame in flight (at ``since``, else just now): when it
        should be done, at the earliest."""
        now = self._clock.now_ms() if since is None else since
        self._tx_since = now
        self._tx_due = now + (WIRE_OVERHEAD + max(self._tx_len, 60)) * WIRE_BYTE_MS
        self._tx_checks = 0

    def _tx_observe(self, econ1: int, eir: int, estat: int) -> None:
        """Note how the frame in flight is doing: still going, done, failed or stalled."""
        if econ1 & r.ECON1_TXRTS:
            self._tx_checks += 1
            waited = self._clock.now_ms() - self._tx_since
            if waited >= self._send_timeout_ms or self._tx_checks >= self.TX_MAX_CHECKS:
                self._tx_stall()
            return
        if eir & r.EIR_TXERIF or estat & r.ESTAT_TXABRT:
            self._tx_failed(estat)
            return
        self._tx_pending = False  # TXIF stays set until the next start clears it

    def _tx_failed(self, estat: int) -> None:
        """The transmission aborted: read the TSV (§7.1, Table 7-1); after a late collision
        send the same frame again, ETXND unchanged (errata item 13), up to 16 times."""
        self._stats["tx_aborts"] += 1
        tsv_at = self._tx_buf + self._tx_len + 1  # after the frame in flight
        b = self._batch()
        b.wcr16(r.ERDPTL, r.ERDPTH, tsv_at)
        i = b.rbm(r.TSV_LEN)
        self._erdpt = tsv_at + r.TSV_LEN
        tsv = int.from_bytes(self._xfer(b).data(i), "little")
        late = bool(tsv & r.TSV_LATE_COLLISION or estat & r.ESTAT_LATECOL)
        if late and self.ERRATA_LATE_COLLISION and self._tx_tries < self.LATE_COLLISION_RETRIES:
            self._tx_tries += 1
            self._stats["tx_retries"] += 1
            self._restart_tx(reset=self.ERRATA_TXRST)
            return
        log.info("%s: frame not sent (TSV %014X)", self.name, tsv)
        self._tx_abandon(reset=self.ERRATA_TXRST)

    def _tx_stall(self) -> None:
        """TXRTS never cleared (errata item 12 without its workaround, or worse): reset the
        transmit logic and send the frame again; a second stall loses it."""
        self._stats["tx_stalls"] += 1
        log.warning("%s: transmission stalled, resetting the transmit logic", self.name)
        if self._tx_stall_tries < self.STALL_RETRIES:
            self._tx_stall_tries += 1
            self._restart_tx(reset=True)
        else:
            self._tx_abandon(reset=True)

    def _restart_tx(self, *, reset: bool) -> None:
        """Send the frame in flight again: ETXST/ETXND stay at its ends (item 13), as a
        frame written meanwhile went to the other buffer without touching them."""
        b = self._batch()
        b.bfc(r.ECON1, r.ECON1_TXRTS)
        if reset:
            b.bfs(r.ECON1, r.ECON1_TXRST)
            b.bfc(r.ECON1, r.ECON1_TXRST)
        b.bfc(r.EIR, r.EIR_TXIF | r.EIR_TXERIF)  # after the reset (item 12)
        b.bfs(r.ECON1, r.ECON1_TXRTS)
        self._xfer(b)
        self._tx_started()

    def _tx_abandon(self, *, reset: bool) -> None:
        """The frame in flight will not go out: count it, leave the transmitter clean."""
        self.counters.tx_errors += 1
        b = self._batch()
        b.bfc(r.ECON1, r.ECON1_TXRTS)
        if reset:
            b.bfs(r.ECON1, r.ECON1_TXRST)
            b.bfc(r.ECON1, r.ECON1_TXRST)
        b.bfc(r.EIR, r.EIR_TXIF | r.EIR_TXERIF)
        self._xfer(b)
        self._tx_pending = False

    # -- recovery ---------------------------------------------------------------------------

    def _chip_ok(self, econ2: int, econ1: int, bank: int | None) -> bool:
        """ECON2, ECON1 as the driver left them (else find out why: True if it was a misread).

        False: the chip was re-initialised or is gone, and the caller's call is void.
        """
        if self._as_set(econ2, econ1, bank):
            return True
        why = f"ECON2 0x{econ2:02X}, ECON1 0x{econ1:02X} (bank {bank})"
        return not self._chip_changed(why, confirm=True)

    def _as_set(self, econ2: int, econ1: int, bank: int | None) -> bool:
        """ECON2 as set (a reset makes it 0x80), RXEN on, BSEL where the driver put it
        (another bank means someone else spoke to the chip: the call's reads are void)."""
        bsel_ok = bank is None or econ1 & r.ECON1_BSEL == bank
        return econ2 & ~r.ECON2_PKTDEC == self._econ2 and bool(econ1 & r.ECON1_RXEN) and bsel_ok

    def _chip_changed(self, why: str, *, confirm: bool) -> bool:
        """Look again (a misread is not a reset); re-initialise or give up. True if it was
        a real change (the caller's data is void), False if it was a misread."""
        if confirm:
            bank = self._bank
            b = self._batch()
            i_e2 = b.rcr(r.ECON2)  # common registers first: BSEL as the last call left it
            i_e1 = b.rcr(r.ECON1)
            h = self._health_reads(b) if self._health else []
            q = self._xfer(b)
            same = self._as_set(q.byte(i_e2), q.byte(i_e1), bank)
            if same and not (h and self._health_diff(q, h)):
                self._stats["bus_errors"] += 1
                return False
        self.counters.rx_errors += 1
        self._reinit(why)
        return True

    def _reinit(self, why: str) -> None:
        log.warning("%s: re-initialising the chip: %s", self.name, why)
        try:
            self._soft_reset()
            self.revision = self.probe()
            self._configure()
        except ChipNotResponding as e:
            self._go_dead(str(e))
            return
        self._stats["resets"] += 1
        self._dead = False

    def _forget_chip(self) -> None:
        self._forget_state()
        self._bank = None
        self._carry.clear()

    def _answers(self) -> bool:
        """EREVID reads like a chip (not 0x00, not 0xFF); the bank is not trusted."""
        self._bank = None
        b = self._batch()
        i = b.rcr(r.EREVID)
        return self._xfer(b).byte(i) not in (0x00, 0xFF)

    def _try_revive(self) -> bool:
        revived = super()._try_revive()
        if revived:
            self._stats["revives"] += 1
        return revived

    def _bus_failed(self) -> None:
        """A transfer raised: trust nothing cached about the chip's pointers or bank."""
        self._bank = None
        self._tx_ptrs = None
        self._erdpt = None
        self._hdr = None
        self._rx_left = 0
        self._armed = False
        self._looked_ms = float("-inf")

    # -- plumbing ---------------------------------------------------------------------------

    def _batch(self, *, arm: bool = False) -> _Batch:
        """A new batch, starting with pending common-register writes. ``arm``: this call may
        end the poll, so it clears EIE.INTIE first (and ``_xfer`` sets it last)."""
        b = _Batch(self._bank, self._carry)
        self._carry = []
        if arm and self._irq is not None:
            self._drain_irq()
            b.bfc(r.EIE, r.EIE_INTIE)
        return b

    def _xfer(self, b: _Batch, *, armed: bool = False) -> _Replies:
        if armed and self._irq is not None:
            b.bfs(r.EIE, r.EIE_INTIE)
        self._stats["bus_calls"] += 1
        try:
            raw = self._transfer(b.items, b.tails)
        except OSError:
            self._bank = None
            raise
        self._bank = b.bank
        self._stats["bank_switches"] += b.switches
        if self._irq is not None:
            self._armed = armed
        return _Replies(raw)

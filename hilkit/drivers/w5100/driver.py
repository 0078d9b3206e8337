"""WIZnet W5100 over SPI: socket 0 in MACRAW mode as a hilkit ``Device``.

Facts used (``docs/hardware/w5100.md``, cited as "w5100 §N"): every register
or buffer byte is its own 4-byte SPI frame with its own chip select (§1), so a
frame of N bytes costs at least 4·N SPI bytes. The driver therefore never
touches the bus one byte at a time: it builds whole ``transfer_batch`` lists
in which status reads, buffer copies, pointer updates and commands travel
together.

Receive (§8): one call reads the status, ``Sn_RX_RSR`` (twice, §10) and the
2-byte MACRAW header at ``Sn_RX_RD``; one call per frame then reads the frame,
writes ``Sn_RX_RD``, issues RECV, and reads back the status, the new
``Sn_RX_RSR`` and the next header, so a burst costs one bus call per frame.

Transmit (§9): a SEND is in flight until ``Sn_IR.SEND_OK``. When the last
SEND is known to be done, one call copies the frame, writes ``Sn_TX_WR`` and
issues SEND; otherwise one call copies the frame and reads the status (the
copy gives the previous SEND time to finish), a second one commits it.

Recovery: a chip reset under us (``Sn_SR`` no longer ``SOCK_MACRAW``, or the
common registers not what we set) re-initialises the chip; a receive buffer
out of step (an impossible header or size) or a SEND that never completes
re-opens the socket. Nothing the chip or the bus does raises out of
``send``/``poll``; it is counted (``counters``, ``resets``, ``reopens``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from hilkit.drivers.spi_nic import SpiNic, Tx, random_mac
from hilkit.drivers.w5100 import regs as r
from hilkit.port.clock import Clock
from hilkit.port.device import ETH_HEADER_LEN
from hilkit.port.errors import ChipNotResponding
from hilkit.port.pin import Pin
from hilkit.port.spi import SpiBus

__all__ = ["WIRING_HINT", "W5100Device", "random_mac", "rx_capacity"]

log = logging.getLogger(__name__)

WIRING_HINT = "check wiring, CS, SPI mode 0, clock <= 14 MHz"


# -- SPI frames ---------------------------------------------------------------------------


def _read_frame(addr: int) -> bytes:
    return bytes((r.OP_READ, addr >> 8, addr & 0xFF, 0))


def _write_frame(addr: int, value: int) -> bytes:
    return bytes((r.OP_WRITE, addr >> 8, addr & 0xFF, value & 0xFF))


# Read frames are the same every time: build them once (registers, and the RX buffer).
_REG_READ: tuple[bytes, ...] = tuple(_read_frame(a) for a in range(0x0800))
_RX_READ: tuple[bytes, ...] = tuple(_read_frame(r.RX_BASE + i) for i in range(r.BUF_SIZE))
# Write frames for the TX buffer with a zero data byte: a copy fills in every 4th byte.
_ONES: list[int] = [1] * r.BUF_SIZE  # tails of buffer reads and copies, sliced to length
_ZEROS: list[int] = [0] * r.BUF_SIZE
_TX_TEMPLATE = b"".join(
    bytes((r.OP_WRITE, a >> 8, a & 0xFF, 0)) for a in range(r.TX_BASE, r.TX_BASE + r.BUF_SIZE)
)


class _Batch:
    """A list of 4-byte frames for one ``transfer_batch`` call; methods return reply indexes.

    ``tails`` runs parallel to ``frames`` (``hilkit.port.SpiBus``): a read needs only the
    data byte its frame clocks in last (§1), a write nothing, so a USB bridge carries back
    one byte per read instead of four per frame. ``whole`` reads keep all 4 bytes: the
    bring-up probe shows them (and the 00 01 02 preamble) when no W5100 answers.
    """

    __slots__ = ("frames", "read_tail", "tails")

    def __init__(self, *, whole: bool = False) -> None:
        self.frames: list[bytes] = []
        self.tails: list[int] = []
        self.read_tail = 4 if whole else 1

    def read(self, addr: int) -> int:
        self.frames.append(_REG_READ[addr])
        self.tails.append(self.read_tail)
        return len(self.frames) - 1

    def read16(self, addr: int) -> int:
        """A 16-bit register, high byte first (§10)."""
        i = len(self.frames)
        self.frames += (_REG_READ[addr], _REG_READ[addr + 1])
        self.tails += (self.read_tail, self.read_tail)
        return i

    def write(self, addr: int, value: int) -> None:
        self.frames.append(_write_frame(addr, value))
        self.tails.append(0)

    def write16(self, addr: int, value: int) -> None:
        self.frames += (_write_frame(addr, value >> 8), _write_frame(addr + 1, value))
        self.tails += (0, 0)

    def read_rx(self, ptr: int, n: int) -> int:
        """``n`` bytes of the RX buffer from pointer ``ptr``, wrapping at its end (§7)."""
        assert self.read_tail == 1, "buffer reads take the data byte only (_Replies.data)"
        i = len(self.frames)
        off = ptr & r.BUF_MASK
        first = min(n, r.BUF_SIZE - off)
        self.frames += _RX_READ[off : off + first]
        if first < n:
            self.frames += _RX_READ[: n - first]
        self.tails += _ONES[:n]
        return i

    def write_tx(self, ptr: int, data: bytes) -> None:
        """``data`` into the TX buffer from pointer ``ptr``, in two runs if it wraps (§7)."""
        off = ptr & r.BUF_MASK
        first = min(len(data), r.BUF_SIZE - off)
        self._tx_run(off, data[:first])
        if first < len(data):
            self._tx_run(0, data[first:])

    def _tx_run(self, off: int, data: bytes) -> None:
        buf = bytearray(_TX_TEMPLATE[4 * off : 4 * (off + len(data))])
        buf[3::4] = data
        raw = bytes(buf)
        self.frames += [raw[i : i + 4] for i in range(0, len(raw), 4)]
        self.tails += _ZEROS[: len(data)]


class _Replies:
    """The replies of one batch, cut to ``_Batch.tails``: a read's data byte (the 4th of its
    frame) is the last byte of its reply, and a write's reply is empty."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[bytes]) -> None:
        self.raw = raw

    def byte(self, i: int) -> int:
        return self.raw[i][-1]

    def u16(self, i: int) -> int:
        return self.raw[i][-1] << 8 | self.raw[i + 1][-1]

    def stable16(self, i: int) -> int | None:
        """Two consecutive 16-bit reads at ``i``; their value if they agree (§10), else None."""
        a, b = self.u16(i), self.u16(i + 2)
        return a if a == b else None

    def data(self, i: int, n: int) -> bytes:
        """``n`` buffer reads from ``i`` (``_Batch.read_rx``: one byte each)."""
        return b"".join(self.raw[i : i + n])


class W5100Device(SpiNic):
    """A W5100 on an SPI bus, socket 0 in MACRAW mode (Ethernet frames, no FCS).

    ``bus`` belongs to the caller: ``close()`` leaves it open. ``reset`` (the
    chip's /RESET line; driven low, then high) gives a hard reset before the
    probe. ``irq`` (the /INT line) enables the socket 0 interrupt and lends its
    descriptor to ``fileno()``. ``mac_filter`` sets ``Sn_MR.MF``: only frames
    to our MAC or broadcast come in (clear it for promiscuous reception, e.g.
    for IPv6 multicast). ``clock`` times SEND completion
    (``send_timeout_ms``) and re-probes of a chip that stopped answering.

    Opening probes the chip (soft reset, ``RTR`` must read 0x07D0) and raises
    ``ChipNotResponding`` with what was read when it is not there.

    Beyond ``counters``: ``resets`` (chip re-initialised after a reset or lost
    configuration was seen; each also counts one ``rx_errors``), ``reopens``
    (socket 0 re-opened: RX out of step, SEND stalled, command stuck),
    ``tx_stalls`` (SENDs that never completed; each counts one ``tx_errors``)
    and ``bus_errors`` (reads that disagreed, or writes that did not take, and
    were redone: a measure of the wiring, nothing was lost) and ``idle_polls``
    (polls whose one status call found nothing: the throughput figures leave those
    calls out of the calls per frame, see ``hilkit.hil.report``).

    ``rx_buffer_bytes`` (the contract's optional member) is what socket 0's RX
    buffer holds before the chip drops: see ``rx_capacity``.
    """

    # Tunables (class attributes: a subclass or a test may change them); HARD_RESET_LOW_S
    # (/RESET low >= 2 us), RESET_SUPERVISOR_S (w5100 §14.2), HEALTH_EVERY (MR, IMR,
    # RMSR, TMSR, Sn_MR, SHAR) and REPROBE_MS are SpiNic's.
    HARD_RESET_SETTLE_S = 0.010  # PLL lock after /RESET rises: <= 10 ms
    SOFT_RESET_POLLS = 20  # MR polls after MR.RST, 1 ms apart (§3, as Arduino)
    COMMAND_POLLS = 40  # Sn_CR / Sn_SR polls after OPEN or CLOSE, 0.5 ms apart
    BUSY_WAIT_MS = 2.0  # how long send waits for the previous SEND (1514 B at 10 Mb/s: 1.2 ms)
    BUSY_WAIT_POLLS = 32  # ... in at most this many reads; poll waits as long for Sn_CR
    SEND_MAX_CHECKS = 10_000  # not-done SEND checks that count as a stall whatever the clock says
    COMMAND_TIMEOUT_MS = 100.0  # Sn_CR != 0 this long: the command is stuck (Linux: 100 ms)
    CR_BUSY_LIMIT = 1000  # ... or in this many polls in a row, whatever the clock says
    STATUS_TTL_MS = 100.0  # link_up trusts a status read this recent
    RX_FRAME_MIN = ETH_HEADER_LEN
    RX_FRAME_MAX = r.ETH_MAX_FRAME + 4  # tolerate an FCS left in the buffer (§8)

    def __init__(
        self,
        bus: SpiBus,
        *,
        mac: bytes | None = None,
        reset: Pin | None = None,
        irq: Pin | None = None,
        name: str = "w5100",
        mtu: int = 1500,
        mac_filter: bool = True,
        clock: Clock | None = None,
        send_timeout_ms: float = 100.0,
    ) -> None:
        super().__init__(
            bus,
            mac=mac,
            reset=reset,
            irq=irq,
            name=name,
            mtu=mtu,
            max_mtu=r.ETH_MAX_FRAME - ETH_HEADER_LEN,
            mtu_why="the W5100 sends at most 1514 bytes",
            clock=clock,
            send_timeout_ms=send_timeout_ms,
        )
        self.rx_buffer_bytes: int | None = rx_capacity(mtu)
        self.resets = 0  # chip re-initialisations after a reset or corruption was seen
        self.reopens = 0  # socket 0 re-opens (RX out of step, SEND stalled)
        self.tx_stalls = 0  # SENDs that never completed
        self.bus_errors = 0  # reads that disagreed or writes that did not take, then redone
        self.idle_polls = 0  # polls whose one status call found nothing to receive
        self._sn_mr = r.Sn_MR_MACRAW | (r.Sn_MR_MF if mac_filter else 0)
        self._imr = r.IR_S0 if irq is not None else 0
        self._status_ms = -1e18  # when Sn_SR last read SOCK_MACRAW
        self._forget_socket()
        self._probe()
        self._configure()
        self._open_socket()

    # -- the Device contract (the rest is SpiNic's) -------------------------------------

    @property
    def link_up(self) -> bool:
        """True while the chip answers and socket 0 is in MACRAW mode.

        The W5100 has no PHY status register reachable over SPI (§11): link
        means "the chip is there and the socket is open", not carrier.
        """
        if self._closed or self._dead:
            return False
        if self._clock.now_ms() - self._status_ms <= self.STATUS_TTL_MS:
            return True
        try:
            sr = self._bus.transfer(_REG_READ[r.S0_SR])
        except OSError:
            return False
        if len(sr) == 4 and sr[3] == r.SOCK_MACRAW:
            self._status_ms = self._clock.now_ms()
            return True
        return False

    def _close_frames(self) -> list[bytes]:
        """Mask the interrupt and close socket 0."""
        b = _Batch()
        b.write(r.IMR, 0)
        b.write(r.S0_CR, r.Sn_CR_CLOSE)
        return b.frames

    # -- bring-up -------------------------------------------------------------------------

    def _probe(self) -> None:
        """Hard reset (if we have the pin), soft reset, then RTR must read 0x07D0 (§3)."""
        self._pulse_reset(self.HARD_RESET_SETTLE_S, self._rtr_reads_reset)
        self._soft_reset(init=True)
        b = _Batch(whole=True)  # the message below shows every byte read
        i = b.read16(r.RTR)
        q = self._xfer(b)
        rtr = q.u16(i)
        if rtr != r.RTR_RESET:
            raise ChipNotResponding(
                self._no_chip(f"RTR read 0x{rtr:04X}, expected 0x{r.RTR_RESET:04X}", q.raw)
            )

    def _rtr_reads_reset(self) -> bool:
        """Out of reset: modules with a reset supervisor (CAT811/MAX811) hold /RESET up
        to 560 ms after we release it (w5100 §14.2); RTR reads 0x07D0 once it lets go."""
        b = _Batch()
        i = b.read16(r.RTR)
        return self._xfer(b).u16(i) == r.RTR_RESET

    def _soft_reset(self, *, init: bool) -> None:
        b = _Batch(whole=init)  # at bring-up the message shows every byte read
        b.write(r.MR, r.MR_RST)
        i = b.read(r.MR)
        q = self._xfer(b)
        seen = [q.raw[i]]
        for _ in range(self.SOFT_RESET_POLLS):
            if not q.byte(i) & r.MR_RST:
                return
            time.sleep(0.001)
            b = _Batch(whole=init)
            i = b.read(r.MR)
            q = self._xfer(b)
            seen.append(q.raw[i])
        problem = f"MR.RST did not clear (MR reads 0x{q.byte(i):02X})"
        raise ChipNotResponding(self._no_chip(problem, seen) if init else problem)

    def _no_chip(self, problem: str, replies: Sequence[bytes]) -> str:
        raw = b"".join(replies)
        if raw and raw == b"\xff" * len(raw):
            why = "every byte read back 0xFF: nothing drives MISO (no chip answering)"
        elif raw and raw == bytes(len(raw)):
            why = "every byte read back 0x00: MISO stuck low (no chip answering)"
        elif any(rep[:3] != r.SPI_PREAMBLE for rep in replies):
            why = "the replies lack the W5100's 00 01 02 preamble: the bus is garbled"
        else:
            why = "a chip answers, but not as a W5100 fresh out of reset"
        shown = " ".join(rep.hex() for rep in replies[:4])
        return (
            f"no W5100 answered on {self._bus_label}: {problem}; SPI replies [{shown}]; "
            f"{why}; {WIRING_HINT}"
        )

    def _configure(self) -> None:
        """Common registers, as Linux does it (§12): PB, no interrupts, SHAR, 8 KB to socket 0."""
        b = _Batch()
        b.write(r.MR, r.MR_PB)  # the chip's own stack must not answer pings (§14.4)
        b.write(r.IMR, 0)
        for k, v in enumerate(self._mac):
            b.write(r.SHAR + k, v)
        for k in range(4):
            b.write(r.SIPR + k, 0)  # SIPR stays 0.0.0.0: the chip's ARP stays quiet (§14.4)
        b.write(r.RMSR, r.MSR_S0_8K)
        b.write(r.TMSR, r.MSR_S0_8K)
        want = bytes((r.MR_PB, r.MSR_S0_8K, r.MSR_S0_8K)) + self._mac
        for _ in range(2):  # a second look, in case a bit flipped on the way back
            i = self._common_reads(b, with_imr=False)
            q = self._xfer(b)
            got = bytes(q.byte(i + k) for k in range(9))
            if got == want:
                break
            b = _Batch()
        else:
            raise ChipNotResponding(
                f"{self._bus_label}: W5100 did not keep its configuration: MR, RMSR, TMSR, SHAR "
                f"read {got.hex(' ')}, wrote {want.hex(' ')}; {WIRING_HINT}"
            )

    @staticmethod
    def _common_reads(b: _Batch, *, with_imr: bool) -> int:
        """MR, RMSR, TMSR, SHAR[0..5] (and IMR, S0_MR): the registers a reset would undo."""
        i = b.read(r.MR)
        b.read(r.RMSR)
        b.read(r.TMSR)
        for k in range(6):
            b.read(r.SHAR + k)
        if with_imr:
            b.read(r.IMR)
            b.read(r.S0_MR)
        return i

    def _open_socket(self) -> None:
        """CLOSE, Sn_MR = MACRAW (+MF), OPEN, until Sn_SR reads SOCK_MACRAW (§5, §6, §12)."""
        self._forget_socket()
        b = _Batch()
        b.write(r.IMR, 0)
        b.write(r.S0_CR, r.Sn_CR_CLOSE)
        self._command(b, "CLOSE")
        b = _Batch()
        b.write(r.S0_IR, r.Sn_IR_ALL)
        b.write(r.S0_MR, self._sn_mr)
        b.write(r.S0_CR, r.Sn_CR_OPEN)
        self._command(b, "OPEN")
        sr = -1
        for _ in range(self.COMMAND_POLLS):
            b = _Batch()
            i = b.read(r.S0_SR)
            sr = self._xfer(b).byte(i)
            if sr == r.SOCK_MACRAW:
                break
            time.sleep(0.0005)
        else:
            raise ChipNotResponding(
                f"{self._bus_label}: S0_SR is 0x{sr:02X} after OPEN, "
                f"want 0x{r.SOCK_MACRAW:02X} (SOCK_MACRAW)"
            )
        for _ in range(self.COMMAND_POLLS):  # our copies of the pointers must be right
            b = _Batch()
            i_txwr = b.read16(r.S0_TX_WR)
            b.read16(r.S0_TX_WR)
            i_rxrd = b.read16(r.S0_RX_RD)
            b.read16(r.S0_RX_RD)
            q = self._xfer(b)
            tx_wr, rx_rd = q.stable16(i_txwr), q.stable16(i_rxrd)
            if tx_wr is not None and rx_rd is not None:
                break
        else:
            raise ChipNotResponding(f"{self._bus_label}: S0_TX_WR/S0_RX_RD reads do not agree")
        self._tx_wr, self._rx_rd = tx_wr, rx_rd
        if self._imr:
            b = _Batch()
            b.write(r.IMR, self._imr)
            self._xfer(b)
        self._status_ms = self._clock.now_ms()

    def _command(self, b: _Batch, what: str) -> None:
        """Run ``b`` (which ends with a command write) and wait for Sn_CR to read 0 (§5)."""
        i = b.read(r.S0_CR)
        q = self._xfer(b)
        for _ in range(self.COMMAND_POLLS):
            if q.byte(i) == 0:
                return
            time.sleep(0.0005)
            b = _Batch()
            i = b.read(r.S0_CR)
            q = self._xfer(b)
        raise ChipNotResponding(
            f"{self._bus_label}: S0_CR still 0x{q.byte(i):02X} after {what}: command not taken"
        )

    def _forget_socket(self) -> None:
        self._tx_wr = 0
        self._rx_rd = 0
        self._tx_pending = False  # a SEND went out and SEND_OK was not seen yet
        self._tx_since = 0.0
        self._tx_checks = 0
        self._sendok_dirty = False  # SEND_OK seen but still set in the chip
        self._cr_busy = False  # a command was written and Sn_CR == 0 was not seen since
        self._cr_busy_since = 0.0
        self._cr_busy_polls = 0
        self._rx_avail = -1  # bytes known to be in the RX buffer at _rx_rd; -1: unknown
        self._rx_hdr: int | None = None  # the MACRAW header at _rx_rd, when read and trusted

    # -- receive --------------------------------------------------------------------------

    def _poll(self, budget: int, out: list[bytes]) -> None:
        self._drain_irq()
        if self._dead and not self._try_revive():
            return
        health = self._health_due()
        calls = self._bus.counters.calls
        if self._rx_avail <= 0 or self._rx_hdr is None or self._cr_busy or health:
            self._status_call(health)
            if self._rx_avail == 0 and self._bus.counters.calls == calls + 1:
                self.idle_polls += 1  # one status call that found nothing
        steps = 0
        while len(out) < budget and self._rx_avail != 0 and steps < 2 * budget + 4:
            steps += 1
            if self._dead:
                break
            if self._rx_avail < 0 or self._rx_hdr is None or self._cr_busy:
                self._status_call(False)
                if self._rx_avail < 0:
                    break  # nothing trustworthy this time; the next poll tries again
                continue
            self._frame_call(out)
        if self._tx_pending and self._tx_stalled():
            self.counters.tx_errors += 1
            self._tx_stall()
        if self._irq is not None and self._sendok_dirty and not self._dead:
            b = _Batch()
            b.write(r.S0_IR, r.Sn_IR_SEND_OK)  # /INT must go high again, or no edge comes
            self._xfer(b)
            self._sendok_dirty = False

    def _status_call(self, health: bool) -> None:
        """One bus call: Sn_SR, Sn_CR, Sn_IR, Sn_RX_RD, Sn_RX_RSR twice, the header twice."""
        self._rx_avail, self._rx_hdr = -1, None
        for _ in range(3):  # a torn or mismatched read is retried a bounded number of times
            b = _Batch()
            i_sr = b.read(r.S0_SR)
            i_cr = b.read(r.S0_CR)
            i_ir = b.read(r.S0_IR)
            self._clear_ir(b)  # before reading RSR: a frame after this sets RECV again
            i_rd = b.read16(r.S0_RX_RD)
            i_rsr = b.read16(r.S0_RX_RSR)
            b.read16(r.S0_RX_RSR)
            i_hdr = b.read_rx(self._rx_rd, 2)
            b.read_rx(self._rx_rd, 2)
            i_h = self._common_reads(b, with_imr=True) if health else -1
            q = self._xfer(b)
            if not self._status_ok(q.byte(i_sr)):
                return
            if health:
                health = False
                if not self._health_ok(q, i_h):
                    return
            self._observe_ir(q.byte(i_ir))
            if q.byte(i_cr) != 0:
                # A command not yet taken: RX_RSR may be stale. Wait for it, boundedly.
                self._set_cr_busy(True)
                if self._wait_cr_idle():
                    continue
                self._cr_busy_polls += 1
                waited = self._clock.now_ms() - self._cr_busy_since
                if waited >= self.COMMAND_TIMEOUT_MS or self._cr_busy_polls >= self.CR_BUSY_LIMIT:
                    self.counters.rx_errors += 1
                    self._reopen(f"S0_CR stuck at 0x{q.byte(i_cr):02X}")
                return
            self._set_cr_busy(False)
            if q.u16(i_rd) != self._rx_rd:
                self.bus_errors += 1
                self._commit_rx()  # our last RX_RD/RECV did not take: say it again
                continue
            rsr = q.stable16(i_rsr)
            if rsr is None:
                self.bus_errors += 1  # torn by the chip, or a bad bit: read again
                continue
            if rsr > r.BUF_SIZE:
                self._rx_desync(f"S0_RX_RSR reads 0x{rsr:04X}")
                return
            hdr = q.stable16(i_hdr) if rsr else None
            if rsr and hdr is None:
                self.bus_errors += 1
                continue
            self._rx_avail, self._rx_hdr = rsr, hdr
            return

    def _frame_call(self, out: list[bytes]) -> None:
        """One bus call: the frame, Sn_RX_RD + RECV, then status, Sn_RX_RSR and the next header."""
        hdr = self._rx_hdr
        assert hdr is not None
        if not self.RX_FRAME_MIN + r.MACRAW_HEADER <= hdr <= self.RX_FRAME_MAX + r.MACRAW_HEADER:
            self._rx_desync(f"MACRAW header says {hdr} bytes")
            return
        if hdr > self._rx_avail and not self._recheck_rsr(hdr):
            self._rx_desync(f"MACRAW header says {hdr} bytes, S0_RX_RSR {self._rx_avail}")
            return
        ptr = self._rx_rd
        n = hdr - r.MACRAW_HEADER
        new_rd = (ptr + hdr) & r.PTR_MASK
        b = _Batch()
        i_data = b.read_rx(ptr + r.MACRAW_HEADER, n)
        i_sr = b.read(r.S0_SR)  # after the data: the data came from an open socket
        b.write16(r.S0_RX_RD, new_rd)
        b.write(r.S0_CR, r.Sn_CR_RECV)
        i_cr = b.read(r.S0_CR)
        i_rd = b.read16(r.S0_RX_RD)
        i_ir = b.read(r.S0_IR)
        self._clear_ir(b)
        i_rsr = b.read16(r.S0_RX_RSR)
        b.read16(r.S0_RX_RSR)
        i_hdr = b.read_rx(new_rd, 2)
        b.read_rx(new_rd, 2)
        q = self._xfer(b)
        self._rx_avail, self._rx_hdr = -1, None
        if not self._status_ok(q.byte(i_sr)):
            return  # reset under us: the frame is lost, the socket starts afresh
        frame = q.data(i_data, n)
        self._rx_rd = new_rd
        out.append(frame)
        self.counters.rx_frames += 1
        self.counters.rx_bytes += n
        self._observe_ir(q.byte(i_ir))
        if q.byte(i_cr) != 0:
            self._set_cr_busy(True)  # RECV not yet taken: RSR is stale, the status call decides
            return
        if q.u16(i_rd) != new_rd:
            self.bus_errors += 1
            return  # RECV did not take (or a misread): the status call checks and re-commits
        rsr = q.stable16(i_rsr)
        if rsr is None:
            self.bus_errors += 1
            return
        if rsr > r.BUF_SIZE:
            self._rx_desync(f"S0_RX_RSR reads 0x{rsr:04X}")
            return
        self._rx_avail = rsr
        if rsr:
            self._rx_hdr = q.stable16(i_hdr)
            if self._rx_hdr is None:
                self.bus_errors += 1

    def _recheck_rsr(self, need: int) -> bool:
        """RSR was smaller than the header claims: read it again before calling it a desync."""
        b = _Batch()
        i = b.read16(r.S0_RX_RSR)
        b.read16(r.S0_RX_RSR)
        rsr = self._xfer(b).stable16(i)
        if rsr is None or rsr > r.BUF_SIZE:
            return False
        self._rx_avail = rsr
        return rsr >= need

    def _commit_rx(self) -> None:
        b = _Batch()
        b.write16(r.S0_RX_RD, self._rx_rd)
        b.write(r.S0_CR, r.Sn_CR_RECV)
        i = b.read(r.S0_CR)
        q = self._xfer(b)
        self._set_cr_busy(q.byte(i) != 0)

    def _wait_cr_idle(self) -> bool:
        """Read Sn_CR until it is 0, for at most BUSY_WAIT_MS / BUSY_WAIT_POLLS reads."""
        t0 = self._clock.now_ms()
        for polls in range(self.BUSY_WAIT_POLLS):
            if polls and self._clock.now_ms() - t0 >= self.BUSY_WAIT_MS:
                break
            if polls:
                time.sleep(0.00005)
            b = _Batch()
            i = b.read(r.S0_CR)
            if self._xfer(b).byte(i) == 0:
                self._set_cr_busy(False)
                return True
        return False

    def _set_cr_busy(self, busy: bool) -> None:
        """Note whether a command is outstanding (Sn_CR != 0), and since when."""
        if busy and not self._cr_busy:
            self._cr_busy_since = self._clock.now_ms()
        if not busy:
            self._cr_busy_polls = 0
        self._cr_busy = busy

    def _clear_ir(self, b: _Batch) -> None:
        """With an interrupt line, clear what is ours to clear so /INT can fall again.

        SEND_OK of a SEND in flight is left alone: it is how we learn the SEND is done.
        """
        if self._irq is None:
            return
        if self._tx_pending:
            b.write(r.S0_IR, r.Sn_IR_ALL & ~r.Sn_IR_SEND_OK)
        else:
            b.write(r.S0_IR, r.Sn_IR_ALL)
            self._sendok_dirty = False

    # -- transmit -------------------------------------------------------------------------

    def _send(self, data: bytes, *, retry: bool) -> Tx:
        if self._dead and not self._try_revive():
            return Tx.DROPPED
        if len(data) < r.ETH_MIN_FRAME:
            data += bytes(r.ETH_MIN_FRAME - len(data))  # pad in software (§9)
        if self._tx_pending or self._cr_busy:
            return self._send_after_wait(data, retry=retry)
        # The last SEND is known done and no command is outstanding: one call.
        new_wr = (self._tx_wr + len(data)) & r.PTR_MASK
        b = _Batch()
        b.write_tx(self._tx_wr, data)
        i_sr = b.read(r.S0_SR)
        i_cr, i_wr = self._commit(b, new_wr)
        q = self._xfer(b)
        if not self._status_ok(q.byte(i_sr)):
            return self._send(data, retry=False) if retry and not self._dead else Tx.DROPPED
        return self._committed(q, i_cr, i_wr, new_wr, len(data), retry=retry)

    def _send_after_wait(self, data: bytes, *, retry: bool) -> Tx:
        """Copy first (the previous SEND finishes meanwhile), then check, then commit."""
        new_wr = (self._tx_wr + len(data)) & r.PTR_MASK
        b = _Batch()
        b.write_tx(self._tx_wr, data)  # free space: beyond the committed TX_WR
        i_sr = b.read(r.S0_SR)
        i_cr = b.read(r.S0_CR)
        i_ir = b.read(r.S0_IR)
        i_fsr = b.read16(r.S0_TX_FSR)
        q = self._xfer(b)
        if not self._status_ok(q.byte(i_sr)):
            return self._send(data, retry=False) if retry and not self._dead else Tx.DROPPED
        self._observe_ir(q.byte(i_ir))
        cr, fsr = q.byte(i_cr), q.u16(i_fsr)
        t0 = self._clock.now_ms()
        polls = 0
        while self._tx_pending or cr != 0:
            if self._tx_pending and self._tx_stalled():
                self._tx_stall()
                return Tx.ERROR
            if polls >= self.BUSY_WAIT_POLLS or self._clock.now_ms() - t0 >= self.BUSY_WAIT_MS:
                self._set_cr_busy(cr != 0)
                return Tx.DROPPED  # the chip is still busy with the previous frame
            if polls:
                time.sleep(0.00005)
            polls += 1
            b = _Batch()
            i_cr = b.read(r.S0_CR)
            i_ir = b.read(r.S0_IR)
            i_fsr = b.read16(r.S0_TX_FSR)
            q = self._xfer(b)
            self._observe_ir(q.byte(i_ir))
            cr, fsr = q.byte(i_cr), q.u16(i_fsr)
        self._set_cr_busy(False)
        if fsr < len(data):
            return Tx.DROPPED  # no room in the TX buffer (§9 step 1)
        b = _Batch()
        i_cr, i_wr = self._commit(b, new_wr)
        q = self._xfer(b)
        return self._committed(q, i_cr, i_wr, new_wr, len(data), retry=retry)

    @staticmethod
    def _commit(b: _Batch, new_wr: int) -> tuple[int, int]:
        """Clear SEND_OK, write TX_WR, SEND; read back Sn_CR, TX_WR, Sn_IR (§9 steps 3-5).

        A short frame on a fast wire may be done by the time Sn_IR is read: then
        the next send knows it and needs only one bus call.
        """
        b.write(r.S0_IR, r.Sn_IR_SEND_OK)
        b.write16(r.S0_TX_WR, new_wr)
        b.write(r.S0_CR, r.Sn_CR_SEND)
        i_cr = b.read(r.S0_CR)
        b.read16(r.S0_TX_WR)
        b.read(r.S0_IR)
        return i_cr, i_cr + 1

    def _committed(
        self, q: _Replies, i_cr: int, i_wr: int, new_wr: int, size: int, *, retry: bool
    ) -> Tx:
        """Check that TX_WR took (it commits on SEND); retry the commit once if it did not.

        Only once Sn_CR reads 0: until the chip has taken SEND, TX_WR reads the old value.
        """
        cr_busy = q.byte(i_cr) != 0
        if not cr_busy and q.u16(i_wr) != new_wr:
            self.bus_errors += 1
            wr2: int | None = None
            for _ in range(3):
                b = _Batch()
                i_sr = b.read(r.S0_SR)
                i = b.read16(r.S0_TX_WR)
                b.read16(r.S0_TX_WR)
                q2 = self._xfer(b)
                if not self._status_ok(q2.byte(i_sr)):
                    return Tx.ERROR
                wr2 = q2.stable16(i)
                if wr2 is not None:
                    break
                self.bus_errors += 1
            if wr2 == self._tx_wr and retry:  # the SEND (or TX_WR) write was lost
                b = _Batch()
                i_cr, i_wr = self._commit(b, new_wr)
                return self._committed(self._xfer(b), i_cr, i_wr, new_wr, size, retry=False)
            if wr2 != new_wr:
                seen = "unstable" if wr2 is None else str(wr2)
                self._reopen(f"S0_TX_WR reads {seen}, wrote {new_wr}")
                return Tx.ERROR
        self._tx_wr = new_wr
        self._tx_pending = True
        self._tx_since = self._clock.now_ms()
        self._tx_checks = 0
        self._sendok_dirty = False
        self._set_cr_busy(cr_busy)
        if not cr_busy:
            self._observe_ir(q.byte(i_wr + 2))  # Sn_IR, read after TX_WR
        return Tx.SENT

    def _observe_ir(self, ir: int) -> None:
        if not self._tx_pending:
            return
        if ir & r.Sn_IR_SEND_OK:
            self._tx_pending = False
            self._sendok_dirty = True
        else:
            self._tx_checks += 1

    def _tx_stalled(self) -> bool:
        waited = self._clock.now_ms() - self._tx_since
        return waited >= self._send_timeout_ms or self._tx_checks >= self.SEND_MAX_CHECKS

    def _tx_stall(self) -> None:
        """The SEND in flight never completed: count it (the caller) and re-open the socket."""
        self.tx_stalls += 1
        self._reopen("SEND did not complete")

    # -- recovery -------------------------------------------------------------------------

    def _status_ok(self, sr: int) -> bool:
        """Sn_SR read SOCK_MACRAW (or that was a misread); else re-initialise or give up."""
        if sr == r.SOCK_MACRAW:
            self._status_ms = self._clock.now_ms()
            return True
        b = _Batch()
        i1 = b.read(r.S0_SR)
        i2 = b.read(r.S0_SR)
        i_rtr = b.read16(r.RTR)
        b.read16(r.RTR)
        q = self._xfer(b)
        if r.SOCK_MACRAW in (q.byte(i1), q.byte(i2)):
            # A reset chip reads 0x00, and two flipped bits do not make that 0x42:
            # the first read was a bad bit on the way back, nothing more.
            self.bus_errors += 1
            self._status_ms = self._clock.now_ms()
            return True
        self.counters.rx_errors += 1
        if r.RTR_RESET in (q.u16(i_rtr), q.u16(i_rtr + 2)):
            self._reinit(f"S0_SR reads 0x{q.byte(i1):02X}: the chip was reset")
        else:
            self._go_dead(f"S0_SR 0x{q.byte(i1):02X}, RTR 0x{q.u16(i_rtr):04X}")
        return False

    def _health_ok(self, q: _Replies, i: int) -> bool:
        want = self._health_want()
        got = bytes(q.byte(i + k) for k in range(len(want)))
        if got == want:
            return True
        b = _Batch()
        i = self._common_reads(b, with_imr=True)
        q = self._xfer(b)
        got = bytes(q.byte(i + k) for k in range(len(want)))
        if got == want:
            self.bus_errors += 1
            return True  # a misread
        self.counters.rx_errors += 1
        self._reinit(f"common registers read {got.hex(' ')}, want {want.hex(' ')}")
        return False

    def _health_want(self) -> bytes:
        return (
            bytes((r.MR_PB, r.MSR_S0_8K, r.MSR_S0_8K))
            + self._mac
            + bytes((self._imr, self._sn_mr))
        )

    def _rx_desync(self, why: str) -> None:
        """The RX buffer is out of step with us: count it, re-open (pointers restart)."""
        self.counters.rx_errors += 1
        self._reopen(f"RX out of step: {why}")

    def _reopen(self, why: str) -> None:
        log.warning("%s: re-opening socket 0: %s", self.name, why)
        self.reopens += 1
        try:
            self._open_socket()
        except ChipNotResponding:
            self._reinit(why, soft_reset=True)

    def _reinit(self, why: str, *, soft_reset: bool = False) -> None:
        log.warning("%s: re-initialising the chip: %s", self.name, why)
        try:
            if soft_reset:
                self._soft_reset(init=False)
            self._configure()
            self._open_socket()
        except ChipNotResponding as e:
            self._go_dead(str(e))
            return
        self.resets += 1
        self._dead = False

    def _forget_chip(self) -> None:
        self._forget_socket()

    def _answers(self) -> bool:
        """RTR, twice: one of them reads 0x07D0 (a flipped bit is no chip gone)."""
        b = _Batch()
        i = b.read16(r.RTR)
        b.read16(r.RTR)
        q = self._xfer(b)
        return r.RTR_RESET in (q.u16(i), q.u16(i + 2))

    def _bus_failed(self) -> None:
        """A transfer raised: trust nothing we cached about the chip."""
        self._rx_avail, self._rx_hdr = -1, None
        self._set_cr_busy(True)

    # -- plumbing -------------------------------------------------------------------------

    def _xfer(self, b: _Batch) -> _Replies:
        return _Replies(self._transfer(b.frames, b.tails))


def rx_capacity(mtu: int) -> int:
    """Bytes of frames socket 0's RX buffer holds before the chip drops (``rx_buffer_bytes``).

    ``_configure`` gives socket 0 all 8 KB (RMSR, §3); in MACRAW each frame is
    stored after a 2-byte length header (§8). The contract counts frames
    without such overhead, so the 8 KB is stated less the headers of as many
    full-size frames as fit: with MTU 1500, 5 frames of 1514 bytes take
    5 x 1516 = 7580 bytes, and 8192 - 5 x 2 = 8182 still floors to 5 frames.
    (Capped below one more frame, for the rare MTU where that floor would round up.)
    """
    frame = mtu + ETH_HEADER_LEN
    frames = r.BUF_SIZE // (frame + r.MACRAW_HEADER)
    return min(r.BUF_SIZE - frames * r.MACRAW_HEADER, (frames + 1) * frame - 1)


"""The ENC28J60 model against DS39662E and errata DS80349, over raw SPI instructions.

Addresses, bits and values are written out here from the data sheet (see
docs/hardware/enc28j60.md), not taken from regs.py, so a wrong constant fails a test.
"""

from __future__ import annotations

import os
import select
import threading
import time
import zlib
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hilkit.drivers.enc28j60.model import (
    STAT_KEYS,
    ENC28J60Faults,
    ENC28J60Model,
    ENC28J60Timing,
    wire_time_ms,
)
from hilkit.drivers.enc28j60.regs import EPKTCNT as EPKTCNT_REG
from hilkit.drivers.enc28j60.regs import EREVID as EREVID_REG
from hilkit.port import (
    BusCounters,
    DeviceClosed,
    DeviceCounters,
    Edge,
    LinkType,
    ManualClock,
    Pin,
    SpiBus,
)

# -- the data sheet's numbers (Table 3-1, 3-2, 4-1) ------------------------------------------

RCR, RBM, WCR, WBM, BFS, BFC, SRC = 0x00, 0x3A, 0x40, 0x7A, 0x80, 0xA0, 0xFF
EIE, EIR, ESTAT, ECON2, ECON1 = 0x1B, 0x1C, 0x1D, 0x1E, 0x1F
# (bank, address, MAC/MII?)
ERDPT, EWRPT, ETXST, ETXND = ((0, a, False) for a in (0x00, 0x02, 0x04, 0x06))
ERXST, ERXND, ERXRDPT, ERXWRPT = ((0, a, False) for a in (0x08, 0x0A, 0x0C, 0x0E))
EDMAST, EDMAND, EDMADST, EDMACS = ((0, a, False) for a in (0x10, 0x12, 0x14, 0x16))
EHT0, ERXFCON, EPKTCNT = ((1, a, False) for a in (0x00, 0x18, 0x19))
MACON1, MACON3, MACON4, MABBIPG = ((2, a, True) for a in (0x00, 0x02, 0x03, 0x04))
MACLCON1, MACLCON2, MAMXFL = ((2, a, True) for a in (0x08, 0x09, 0x0A))
MICMD, MIREGADR, MIWR, MIRD = ((2, a, True) for a in (0x12, 0x14, 0x16, 0x18))
MAADR_OCTETS = ((3, 0x04), (3, 0x05), (3, 0x02), (3, 0x03), (3, 0x00), (3, 0x01))  # octet 1..6
MISTAT, EREVID = (3, 0x0A, True), (3, 0x12, False)

INTIE, PKTIE, DMAIE, LINKIE, TXIE, TXERIE, RXERIE = 0x80, 0x40, 0x20, 0x10, 0x08, 0x02, 0x01
PKTIF, DMAIF, LINKIF, TXIF, TXERIF, RXERIF = 0x40, 0x20, 0x10, 0x08, 0x02, 0x01
CLKRDY, TXABRT, LATECOL = 0x01, 0x02, 0x10
AUTOINC, PKTDEC, PWRSV = 0x80, 0x40, 0x20
TXRST, RXRST, DMAST, CSUMEN, TXRTS, RXEN = 0x80, 0x40, 0x20, 0x10, 0x08, 0x04
UCEN, ANDOR, CRCEN, HTEN, MCEN, BCEN = 0x80, 0x40, 0x20, 0x04, 0x02, 0x01
MARXEN, FULDPX, TXCRCEN, PADCFG0, HFRMEN = 0x01, 0x01, 0x10, 0x20, 0x04
BUSY, NVALID, SCAN, MIIRD, MIISCAN = 0x01, 0x04, 0x02, 0x01, 0x02
PHCON1, PHSTAT1, PHID1, PHID2, PHCON2, PHSTAT2, PHIE, PHIR, PHLCON = (
    0x00, 0x01, 0x02, 0x03, 0x10, 0x11, 0x12, 0x13, 0x14,
)  # fmt: skip
PDPXMD, PLOOPBK, LLSTAT, LSTAT, HDLDIS = 0x0100, 0x4000, 0x0004, 0x0400, 0x0100
PLNKIE, PGEIE, PLNKIF, PGIF = 0x0010, 0x0002, 0x0010, 0x0004
RXOK = 1 << 7  # RSV bit 23, in the status word
TSV_DONE, TSV_LATE_COLLISION, TSV_GIANT, TSV_CRC_ERROR = 1 << 23, 1 << 29, 1 << 30, 1 << 20

MAC = bytes.fromhex("020000000001")
OTHER = bytes.fromhex("020000000099")
RX_ST, RX_ND, TX_ST = 0x0000, 0x19FF, 0x1A00


# -- raw SPI helpers (no driver) -------------------------------------------------------------


class Spi:
    """Instructions as a driver sends them, one transaction each."""

    def __init__(self, m: SpiBus) -> None:
        self.m = m

    def x(self, *data: int) -> bytes:
        return self.m.transfer(bytes(data))

    def bank(self, b: int) -> None:
        self.x(BFC | ECON1, 0x03)
        if b:
            self.x(BFS | ECON1, b)

    def rd(self, reg: tuple[int, int, bool], off: int = 0) -> int:
        bank, addr, mac = reg
        self.bank(bank)
        out = self.x(RCR | (addr + off), 0, *((0,) if mac else ()))
        return out[-1]

    def wr(self, reg: tuple[int, int, bool], value: int, off: int = 0) -> None:
        bank, addr, _ = reg
        self.bank(bank)
        assert self.x(WCR | (addr + off), value) == b"\x00\x00"

    def rd16(self, reg: tuple[int, int, bool]) -> int:
        return self.rd(reg) | self.rd(reg, 1) << 8

    def wr16(self, reg: tuple[int, int, bool], value: int) -> None:
        self.wr(reg, value & 0xFF)
        self.wr(reg, value >> 8, 1)

    def common(self, addr: int) -> int:
        return self.x(RCR | addr, 0)[1]

    def rbm(self, n: int) -> bytes:
        out = self.x(RBM, *bytes(n))
        assert out[0] == 0
        return out[1:]

    def wbm(self, data: bytes) -> None:
        self.m.transfer(bytes((WBM,)) + data)

    def phy_read(self, addr: int, clock: ManualClock | None = None) -> int:
        self.wr(MIREGADR, addr)
        self.wr(MICMD, MIIRD)
        self.wait_mii(clock)
        self.wr(MICMD, 0)
        return self.rd(MIRD) | self.rd(MIRD, 1) << 8

    def phy_write(self, addr: int, value: int, clock: ManualClock | None = None) -> None:
        self.wr(MIREGADR, addr)
        self.wr(MIWR, value & 0xFF)
        self.wr(MIWR, value >> 8, 1)
        self.wait_mii(clock)

    def wait_mii(self, clock: ManualClock | None) -> None:
        for _ in range(100):
            if not self.rd(MISTAT) & BUSY:
                return
            if clock is not None:
                clock.advance(0.002)
        raise AssertionError("MISTAT.BUSY stuck")


def init(s: Spi, *, fcon: int = UCEN | CRCEN | BCEN, macon3: int = 0x32, rx: bool = True) -> None:
    """The bring-up a driver does: ring, TX start, MAC, address, receive on."""
    s.wr16(ERXST, RX_ST)
    s.wr16(ERXND, RX_ND)
    s.wr16(ERXRDPT, RX_ND)
    s.wr16(ETXST, TX_ST)
    s.wr(ERXFCON, fcon)
    s.wr(MACON1, MARXEN)
    s.wr(MACON3, macon3)
    for (bank, addr), octet in zip(MAADR_OCTETS, MAC, strict=True):
        s.wr((bank, addr, True), octet)
    s.x(BFS | ECON2, AUTOINC)
    if rx:
        s.x(BFS | ECON1, RXEN)


def ring_addr(p: int, st_: int = RX_ST, nd: int = RX_ND) -> int:
    return p if p <= nd else p - (nd - st_ + 1)


class Reader:
    """The receive procedure of §7.2 with the errata's odd ERXRDPT."""

    def __init__(self, s: Spi, st_: int = RX_ST, nd: int = RX_ND) -> None:
        self.s, self.st, self.nd, self.next = s, st_, nd, st_

    def recv(self) -> tuple[bytes, int, bytes] | None:
        s = self.s
        if s.rd(EPKTCNT) == 0:
            return None
        s.wr16(ERDPT, self.next)
        hdr = s.rbm(6)
        nxt = int.from_bytes(hdr[0:2], "little")
        count = int.from_bytes(hdr[2:4], "little")
        status = int.from_bytes(hdr[4:6], "little")
        data = s.rbm(count)
        assert nxt % 2 == 0 and self.st <= nxt <= self.nd
        self.next = nxt
        s.wr16(ERXRDPT, nxt - 1 if nxt - 1 >= self.st else self.nd)
        s.x(BFS | ECON2, PKTDEC)
        return data[:-4], status, data[-4:]


def eth(dst: bytes, n: int = 60, fill: int = 0, src: bytes = OTHER) -> bytes:
    body = bytes((fill + i) & 0xFF for i in range(n - 14))
    return dst + src + b"\x88\xb5" + body


def fcs(frame: bytes) -> bytes:
    return (zlib.crc32(frame) & 0xFFFFFFFF).to_bytes(4, "little")


def send(s: Spi, frame: bytes, control: int = 0x00) -> None:
    s.wr16(EWRPT, TX_ST)
    s.wbm(bytes((control,)) + frame)
    s.wr16(ETXND, TX_ST + len(frame))
    s.x(BFC | EIR, TXIF | TXERIF)
    s.x(BFS | ECON1, TXRTS)


def tsv(s: Spi, frame_len: int) -> int:
    s.wr16(ERDPT, TX_ST + frame_len + 1)
    return int.from_bytes(s.rbm(7), "little")


class FakeWire:
    """A Device on the far side of the PHY; optional pipe so it has a descriptor."""

    def __init__(self, with_fd: bool = False) -> None:
        self.name = "fakewire"
        self.link_type = LinkType.ETHERNET
        self.mac: bytes | None = OTHER
        self.mtu = 1500
        self.counters = DeviceCounters()
        self.rx: deque[bytes] = deque()
        self.sent: list[bytes] = []
        self.up = True
        self.carrier_looks = 0
        self.closed = False
        self._pipe = os.pipe() if with_fd else None

    def push(self, frame: bytes) -> None:
        self.rx.append(frame)
        if self._pipe is not None:
            os.write(self._pipe[1], b"x")

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        if self.closed:
            raise DeviceClosed(self.name)
        self.sent.append(bytes(frame))
        return True

    def poll(self, budget: int) -> list[bytes]:
        if self.closed:
            raise DeviceClosed(self.name)
        out: list[bytes] = []
        while self.rx and len(out) < budget:
            out.append(self.rx.popleft())
            if self._pipe is not None:
                os.read(self._pipe[0], 1)
        return out

    @property
    def link_up(self) -> bool:
        self.carrier_looks += 1
        return self.up

    def fileno(self) -> int | None:
        return self._pipe[0] if self._pipe is not None else None

    def close(self) -> None:
        self.closed = True
        if self._pipe is not None:
            os.close(self._pipe[0])
            os.close(self._pipe[1])
            self._pipe = None


def readable(fd: int | None) -> bool:
    assert fd is not None
    return bool(select.select([fd], [], [], 0)[0])


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
def m(clock: ManualClock) -> ENC28J60Model:
    return ENC28J60Model(clock=clock, timing=ENC28J60Timing.instant())


@pytest.fixture
def s(m: ENC28J60Model) -> Spi:
    return Spi(m)


# -- contract and reset values ---------------------------------------------------------------


def test_model_speaks_the_port_contracts(m: ENC28J60Model) -> None:
    assert isinstance(m, SpiBus)
    assert isinstance(m.counters, BusCounters)
    assert isinstance(m.int_pin, Pin) and isinstance(m.reset_pin, Pin)
    assert m.int_pin.name == "enc28j60./INT" and m.reset_pin.name == "enc28j60./RESET"
    assert m.int_pin.level is True and m.reset_pin.level is True
    assert set(m.stats) == set(STAT_KEYS) and not any(m.stats.values())
    fd = m.fileno()
    assert fd is not None and m.int_pin.fileno() == fd
    m.close()
    assert m.fileno() is None


def test_reset_values(s: Spi, m: ENC28J60Model) -> None:
    assert s.rd16(ERDPT) == 0x05FA
    assert s.rd16(ERXST) == 0x05FA
    assert s.rd16(ERXND) == 0x1FFF
    assert s.rd16(ERXRDPT) == 0x05FA
    assert s.rd16(ERXWRPT) == 0x0000
    assert s.rd16(EWRPT) == 0 and s.rd16(ETXST) == 0 and s.rd16(ETXND) == 0
    assert s.rd(ERXFCON) == 0xA1
    assert s.rd(EPKTCNT) == 0
    assert s.rd(MACON1) == 0 and s.rd(MACON3) == 0 and s.rd(MABBIPG) == 0
    assert s.rd(MACLCON1) == 0x0F and s.rd(MACLCON2) == 0x37
    assert s.rd16(MAMXFL) == 0x0600
    assert s.rd(EREVID) == 0x06  # Rev. B7
    assert m.register(EREVID_REG) == 0x06
    assert s.common(ECON2) == 0x80
    assert s.common(ECON1) & ~0x03 == 0 and s.common(EIE) == 0 and s.common(EIR) == 0
    assert s.common(ESTAT) == CLKRDY
    assert s.rd(MISTAT) == 0
    assert s.phy_read(PHID1) == 0x0083 and s.phy_read(PHID2) == 0x1400
    assert s.phy_read(PHLCON) == 0x3422
    assert s.phy_read(PHCON1) == 0 and s.phy_read(PHIE) == 0


def test_banks_and_common_registers(s: Spi) -> None:
    s.wr(ERXFCON, 0x55)  # bank 1, 0x18
    s.wr(EHT0, 0x11)  # bank 1, 0x00
    s.wr16(ERDPT, 0x0123)  # bank 0, 0x00
    s.bank(1)
    assert s.x(RCR | 0x00, 0)[1] == 0x11
    s.bank(0)
    assert s.x(RCR | 0x00, 0)[1] == 0x23
    for bank in range(4):
        s.bank(bank)
        s.x(WCR | EIE, 0x40 | bank)
        assert s.common(ECON1) & 0x03 == bank  # ECON1 is in every bank
        for other in range(4):
            s.bank(other)
            assert s.common(EIE) == 0x40 | bank


def test_mac_mii_reads_shift_a_dummy_byte(s: Spi, m: ENC28J60Model) -> None:
    s.wr(MACON3, 0x32)
    s.bank(2)
    assert s.x(RCR | 0x02, 0xAA, 0xAA) == b"\x00\x00\x32"
    assert m.stats["bad_frames"] == 0
    assert s.x(RCR | 0x02, 0) == b"\x00\x00"  # read like an ETH register: the dummy byte
    assert m.stats["bad_frames"] == 1
    s.bank(3)
    assert s.x(RCR | 0x12, 0) == b"\x00\x06"  # EREVID in bank 3 is an ETH register
    assert s.x(RCR | 0x0A, 0, 0) == b"\x00\x00\x00"  # MISTAT is a MII register


def test_bfs_bfc_act_on_eth_registers_only(s: Spi, m: ENC28J60Model) -> None:
    s.x(BFS | EIE, 0x41)
    s.x(BFS | EIE, 0x10)
    s.x(BFC | EIE, 0x01)
    assert s.common(EIE) == 0x50
    s.wr(MACON3, 0x30)
    s.bank(2)
    s.x(BFS | 0x02, 0x01)
    s.x(BFC | 0x02, 0x30)
    assert s.rd(MACON3) == 0x30
    assert m.stats["bfs_bfc_on_mac"] == 2


def test_reserved_read_only_and_bad_instructions(s: Spi, m: ENC28J60Model) -> None:
    s.bank(0)
    s.x(WCR | 0x18, 0x12)  # bank 0 has nothing at 0x18
    assert s.x(RCR | 0x18, 0)[1] == 0
    assert m.stats["reserved_access"] == 2
    s.wr(EREVID, 0x99)
    s.wr(EPKTCNT, 3)
    s.wr(ERXWRPT, 0x10)
    assert s.rd(EREVID) == 0x06 and s.rd(EPKTCNT) == 0 and s.rd16(ERXWRPT) == 0
    assert m.stats["ro_writes"] == 3
    assert s.x(0x3B, 0, 0) == b"\x00\x00\x00"  # 001 with an argument other than 1Ah
    assert s.x(0xC5, 0) == b"\x00\x00"  # opcode 110 is not an instruction
    assert m.stats["bad_opcodes"] == 2


def test_pointer_high_bytes_keep_13_bits(s: Spi) -> None:
    s.wr16(ERDPT, 0xFFFF)
    s.wr16(ETXND, 0xE234)
    assert s.rd16(ERDPT) == 0x1FFF and s.rd16(ETXND) == 0x0234


def test_bus_counters(m: ENC28J60Model) -> None:
    m.transfer(bytes((RCR | ESTAT, 0)))
    m.transfer_batch([bytes((RCR | EIR, 0)), bytes((RBM,)) + bytes(10)])
    assert (m.counters.calls, m.counters.transactions, m.counters.bytes) == (2, 3, 15)


# -- MII and PHY -----------------------------------------------------------------------------------


def test_mii_read_keeps_busy_for_10_24_us(clock: ManualClock) -> None:
    m = ENC28J60Model(clock=clock, timing=ENC28J60Timing(wire=False, reset_us=0))
    s = Spi(m)
    s.wr(MIREGADR, PHID1)
    s.wr(MICMD, MIIRD)
    assert s.rd(MISTAT) & BUSY
    clock.advance(0.010)
    assert s.rd(MISTAT) & BUSY
    assert s.rd16(MIRD) == 0  # not there yet
    clock.advance(0.0003)
    assert not s.rd(MISTAT) & BUSY
    s.wr(MICMD, 0)
    assert s.rd16(MIRD) == 0x0083
    assert m.stats["mii_reads"] == 1


def test_mii_write_starts_on_miwrh(clock: ManualClock) -> None:
    m = ENC28J60Model(clock=clock, timing=ENC28J60Timing(wire=False, reset_us=0))
    s = Spi(m)
    s.wr(MIREGADR, PHLCON)
    s.wr(MIWR, 0x76)
    assert not s.rd(MISTAT) & BUSY  # MIWRL alone starts nothing
    s.wr(MIWR, 0x34, 1)
    assert s.rd(MISTAT) & BUSY
    assert m.phy(PHLCON) == 0x3422
    s.wr(MIWR, 0x35, 1)  # another command while busy is ignored
    assert m.stats["mii_while_busy"] == 1
    clock.advance(0.011)
    assert not s.rd(MISTAT) & BUSY
    assert m.phy(PHLCON) == 0x3476
    assert s.phy_read(PHLCON, clock) == 0x3476


def test_phy_read_only_and_reserved(s: Spi, m: ENC28J60Model) -> None:
    s.phy_write(PHID1, 0x1234)
    s.phy_write(0x05, 0x1234)
    assert s.phy_read(PHID1) == 0x0083 and s.phy_read(0x05) == 0
    assert m.stats["phy_ro_writes"] == 1 and m.stats["phy_reserved"] == 2


def test_mii_scan_refreshes_mird(s: Spi, m: ENC28J60Model) -> None:
    s.wr(MIREGADR, PHSTAT2)
    s.wr(MICMD, MIISCAN)
    assert s.rd(MISTAT) & SCAN and not s.rd(MISTAT) & NVALID
    assert s.rd16(MIRD) & LSTAT
    m.set_link(False)
    assert not s.rd16(MIRD) & LSTAT
    s.wr(MICMD, 0)
    assert s.rd(MISTAT) == 0


def test_phstat_link_bits(s: Spi, m: ENC28J60Model) -> None:
    assert s.phy_read(PHSTAT2) & LSTAT
    assert not s.phy_read(PHSTAT1) & LLSTAT  # latched low across the reset
    assert s.phy_read(PHSTAT1) & LLSTAT
    m.set_link(False)
    m.set_link(True)
    assert s.phy_read(PHSTAT2) & LSTAT
    assert not s.phy_read(PHSTAT1) & LLSTAT  # it went down since the last read
    assert s.phy_read(PHSTAT1) & LLSTAT
    assert s.phy_read(PHSTAT1) & 0x1800 == 0x1800  # 10 Mb/s full and half duplex able


def test_link_change_interrupt_and_phir_read_clears(s: Spi, m: ENC28J60Model) -> None:
    s.phy_write(PHIE, PGEIE | PLNKIE)
    s.x(WCR | EIE, INTIE | LINKIE)
    m.set_link(False)
    assert s.common(EIR) & LINKIF
    assert m.int_pin.get() is False
    s.x(BFC | EIR, LINKIF)  # LINKIF is read-only: clearing it takes a PHIR read
    assert s.common(EIR) & LINKIF
    assert s.phy_read(PHIR) & (PLNKIF | PGIF) == PLNKIF | PGIF
    assert not s.common(EIR) & LINKIF
    assert m.int_pin.get() is True
    assert s.phy_read(PHIR) == 0
    assert s.phy_read(PHSTAT2) & LSTAT == 0
    assert m.stats["link_changes"] == 1


def test_link_change_without_phie_sets_only_plnkif(s: Spi, m: ENC28J60Model) -> None:
    m.set_link(False)
    assert not s.common(EIR) & LINKIF
    assert m.phy(PHIR) == PLNKIF  # a peek does not clear it
    assert s.phy_read(PHIR) == PLNKIF
    assert m.phy(PHIR) == 0


def test_link_follows_the_wire_carrier() -> None:
    wire = FakeWire()
    m = ENC28J60Model(wire, ManualClock(), timing=ENC28J60Timing.instant())
    s = Spi(m)
    assert s.phy_read(PHSTAT2) & LSTAT
    wire.up = False
    assert not s.phy_read(PHSTAT2) & LSTAT
    m.set_link(True)  # set_link overrides the wire from now on
    assert s.phy_read(PHSTAT2) & LSTAT


def test_the_phy_looks_at_the_carrier_once_per_period_and_sees_it_change() -> None:
    wire = FakeWire()
    timing = ENC28J60Timing(mii_us=0.0, reset_us=0.0, carrier_ms=50.0)
    m = ENC28J60Model(wire, ManualClock(), timing=timing)
    s = Spi(m)
    assert s.phy_read(PHSTAT2) & LSTAT
    looks = wire.carrier_looks
    t0 = time.monotonic()
    wire.up = False
    for _ in range(200):
        s.common(EIR)
    if time.monotonic() - t0 < 0.05:  # within one period: not looked at again
        assert wire.carrier_looks == looks and s.phy_read(PHSTAT2) & LSTAT
    end = t0 + 0.05
    while time.monotonic() < end:  # the rest of the period, measured, not hoped for
        time.sleep(end - time.monotonic())
    assert not s.phy_read(PHSTAT2) & LSTAT and wire.carrier_looks == looks + 1


def test_phy_reset_and_duplex_status(s: Spi, m: ENC28J60Model) -> None:
    s.phy_write(PHCON1, PDPXMD)
    assert s.phy_read(PHSTAT2) & 0x0200  # DPXSTAT
    s.phy_write(PHLCON, 0x3476)
    s.phy_write(PHCON1, 0x8000)  # PRST
    assert s.phy_read(PHLCON) == 0x3422 and s.phy_read(PHCON1) == 0


# -- receive -------------------------------------------------------------------------------------


def test_frame_stored_as_the_chip_stores_it(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    frame = eth(MAC, 71)  # odd length: the next packet is padded to an even address
    assert m.inject(frame)
    assert s.rd(EPKTCNT) == 1 and s.common(EIR) & PKTIF
    s.wr16(ERDPT, 0)
    hdr = s.rbm(6)
    nxt = int.from_bytes(hdr[0:2], "little")
    count = int.from_bytes(hdr[2:4], "little")
    status = int.from_bytes(hdr[4:6], "little")
    assert count == 71 + 4
    assert nxt == 6 + 75 + 1 and s.rd16(ERXWRPT) == nxt
    assert status & RXOK and status & (1 << 6)  # RXOK, length out of range (an EtherType)
    assert not status & (3 << 8)  # not multicast, not broadcast
    data = s.rbm(count)
    assert data == frame + fcs(frame)
    m.inject(b"\xff" * 6 + frame[6:])
    s.wr16(ERDPT, nxt + 4)
    assert int.from_bytes(s.rbm(2), "little") & (1 << 9)  # broadcast
    assert m.stats["frames_in"] == 2


def test_short_frames_are_padded_runts_dropped(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    assert m.inject(eth(MAC, 42))
    data, _, crc = Reader(s).recv() or (b"", 0, b"")
    assert len(data) == 60 and data[42:] == bytes(18) and crc == fcs(data)
    assert not m.inject(MAC + OTHER)
    assert m.stats["rx_runts"] == 1


def test_frames_longer_than_mamxfl_are_dropped(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    s.wr16(MAMXFL, 1518)
    assert m.inject(eth(MAC, 1514))
    assert not m.inject(eth(MAC, 1515))
    assert m.stats["rx_too_long"] == 1


def test_ring_wraps_and_rbm_follows(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    rd = Reader(s)
    sent = []
    for i in range(30):  # 30 x 1000-byte frames go round the 6.5 KB ring several times
        frame = eth(MAC, 1000 + i, fill=i)
        assert m.inject(frame)
        got = rd.recv()
        assert got is not None and got[0] == frame and got[2] == fcs(frame)
        sent.append(frame)
    assert s.rd(EPKTCNT) == 0 and not s.common(EIR) & PKTIF
    assert m.stats["rx_overflow"] == 0


def test_pktdec_and_pktif(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    m.inject(eth(MAC))
    m.inject(eth(MAC))
    s.x(BFC | EIR, PKTIF)  # read-only
    assert s.common(EIR) & PKTIF
    s.x(BFS | ECON2, PKTDEC)
    assert s.rd(EPKTCNT) == 1 and s.common(EIR) & PKTIF
    assert s.common(ECON2) & PKTDEC == 0  # reads back 0
    s.x(BFS | ECON2, PKTDEC)
    assert s.rd(EPKTCNT) == 0 and not s.common(EIR) & PKTIF
    s.x(BFS | ECON2, PKTDEC)
    assert m.stats["pktdec_underflow"] == 1


def test_overflow_never_writes_past_erxrdpt(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    m.mem[RX_ND] = 0xEE  # ERXRDPT = ERXND: the byte the chip must not touch
    n = 0
    while m.inject(eth(MAC, 500, fill=n)):
        n += 1
    assert n == 13  # 13 x 510 bytes fit in 6654 free bytes, a 14th does not
    assert s.common(EIR) & RXERIF and m.stats["rx_overflow"] == 1
    assert m.mem[RX_ND] == 0xEE
    rd = Reader(s)
    assert rd.recv() is not None  # one read frees room for one more
    assert m.inject(eth(MAC, 500))
    assert not m.inject(eth(MAC, 500))
    frames = 0
    while rd.recv() is not None:
        frames += 1
    assert frames == 13


def test_epktcnt_stops_at_255(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    for _ in range(255):
        assert m.inject(eth(MAC))
        s.wr16(ERXRDPT, ring_addr(s.rd16(ERXWRPT) - 1 + RX_ND + 1))  # free it, no PKTDEC
    assert s.rd(EPKTCNT) == 255
    assert not m.inject(eth(MAC))
    assert s.common(EIR) & RXERIF


@pytest.mark.parametrize(
    ("fcon", "dst", "passes"),
    [
        (UCEN | CRCEN | BCEN, MAC, True),
        (UCEN | CRCEN | BCEN, OTHER, False),
        (UCEN | CRCEN | BCEN, b"\xff" * 6, True),
        (UCEN | CRCEN | BCEN, bytes.fromhex("01005e000001"), False),
        (UCEN | CRCEN | BCEN | MCEN, bytes.fromhex("01005e000001"), True),
        (BCEN, MAC, False),
        (0, OTHER, True),  # promiscuous
        (CRCEN, OTHER, True),  # CRCEN is no filter
        (UCEN | ANDOR | BCEN, b"\xff" * 6, False),  # AND: broadcast is not our unicast
        (UCEN | ANDOR, MAC, True),
    ],
)
def test_receive_filters(s: Spi, m: ENC28J60Model, fcon: int, dst: bytes, passes: bool) -> None:
    init(s, fcon=fcon)
    assert m.inject(eth(dst)) is passes
    assert m.stats["rx_filtered"] == (0 if passes else 1)


def test_hash_table_filter(s: Spi, m: ENC28J60Model) -> None:
    init(s, fcon=HTEN)
    group = bytes.fromhex("01005e000001")
    assert not m.inject(eth(group))
    bit = zlib.crc32(group) >> 23 & 0x3F
    s.wr(EHT0, 1 << (bit & 7), bit >> 3)
    assert m.inject(eth(group))


def test_nothing_received_without_rxen_marxen_or_link(s: Spi, m: ENC28J60Model) -> None:
    init(s, rx=False)
    assert not m.inject(eth(MAC))
    s.x(BFS | ECON1, RXEN)
    s.wr(MACON1, 0)
    assert not m.inject(eth(MAC))
    assert m.stats["rx_disabled"] == 2
    s.wr(MACON1, MARXEN)
    m.set_link(False)
    assert not m.inject(eth(MAC))
    assert m.stats["rx_no_link"] == 1


def test_rbm_wraps_at_1fff_outside_the_ring_and_autoinc(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    m.mem[0x1FFE:0x2000] = b"\x01\x02"
    m.mem[0:2] = b"\x03\x04"
    s.wr16(ERDPT, 0x1FFE)
    assert s.rbm(4) == b"\x01\x02\x03\x04"
    assert s.rd16(ERDPT) == 2
    m.mem[RX_ND - 1 : RX_ND + 2] = b"\x0a\x0b\x0c"
    s.wr16(ERDPT, RX_ND - 1)
    assert s.rbm(3) == b"\x0a\x0b" + bytes((m.mem[RX_ST],))  # ERXND -> ERXST
    s.x(BFC | ECON2, AUTOINC)
    s.wr16(ERDPT, 0x1FFE)
    assert s.rbm(3) == b"\x01\x01\x01" and s.rd16(ERDPT) == 0x1FFE


def test_wbm_wraps_at_1fff_only(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    s.wr16(EWRPT, RX_ND)
    s.wbm(b"\x11\x22")
    assert m.mem[RX_ND] == 0x11 and m.mem[RX_ND + 1] == 0x22  # no ring wrap on write
    s.wr16(EWRPT, 0x1FFF)
    s.wbm(b"\x33\x44")
    assert m.mem[0x1FFF] == 0x33 and m.mem[0] == 0x44 and s.rd16(EWRPT) == 1


def test_erxrdpt_low_byte_is_latched(s: Spi, m: ENC28J60Model) -> None:
    s.wr(ERXRDPT, 0x33)
    assert s.rd16(ERXRDPT) == 0x05FA
    s.wr(ERXRDPT, 0x01, 1)
    assert s.rd16(ERXRDPT) == 0x0133
    assert m.stats["erxrdpt_even"] == 0
    s.wr16(ERXRDPT, 0x0200)
    assert m.stats["erxrdpt_even"] == 1  # errata item 14: it must be odd


def test_erxwrpt_reloads_on_erxst_erxnd_and_rxrst(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    m.inject(eth(MAC))
    assert s.rd16(ERXWRPT) == 70
    s.wr16(ERXND, RX_ND)
    assert s.rd16(ERXWRPT) == RX_ST
    s.wr16(ERXST, 0x0100)
    assert s.rd16(ERXWRPT) == 0x0100
    m.inject(eth(MAC))
    assert s.rd16(ERXWRPT) == 0x0100 + 70 and s.rd(EPKTCNT) == 2
    s.x(BFS | ECON1, RXRST)
    assert not m.inject(eth(MAC))  # held in reset
    s.x(BFC | ECON1, RXRST)
    assert s.rd16(ERXWRPT) == 0x0100 and s.rd(EPKTCNT) == 0


def test_erxwrpt_outside_the_ring_drops(m: ENC28J60Model) -> None:
    s = Spi(m)
    s.wr(MACON1, MARXEN)
    s.x(BFS | ECON1, RXEN)
    assert not m.inject(b"\xff" * 6 + eth(MAC)[6:])  # ERXWRPT 0 is outside 05FA..1FFF
    assert m.stats["rx_bad_ring"] == 1


# -- transmit ------------------------------------------------------------------------------------


def test_transmit_with_tsv_and_txif(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    s.x(WCR | EIE, INTIE | TXIE)
    frame = eth(OTHER, 100, src=MAC)
    send(s, frame)
    assert m.sent == [frame]
    assert not s.common(ECON1) & TXRTS
    assert s.common(EIR) & TXIF and not s.common(EIR) & TXERIF
    assert m.int_pin.get() is False
    v = tsv(s, len(frame))
    assert v & 0xFFFF == 104  # with the CRC the MAC appended
    assert v & TSV_DONE and not v & TSV_LATE_COLLISION
    assert v >> 32 & 0xFFFF == 104
    assert s.rd16(ETXST) == TX_ST and s.rd16(ETXND) == TX_ST + 100  # unchanged
    assert m.stats["frames_out"] == 1 and m.stats["bytes_out"] == 100


def test_transmit_pads_per_macon3_or_control_byte(s: Spi, m: ENC28J60Model) -> None:
    init(s)  # MACON3 = PADCFG0 | TXCRCEN | FRMLNEN
    short = eth(OTHER, 42, src=MAC)
    send(s, short)
    assert m.sent[-1] == short + bytes(18)
    assert tsv(s, len(short)) & 0xFFFF == 64
    s.wr(MACON3, TXCRCEN)  # no padding
    send(s, short)
    assert m.sent[-1] == short and m.stats["tx_short"] == 1
    send(s, short, control=0x01 | 0x04 | 0x02)  # POVERRIDE, PPADEN, PCRCEN
    assert m.sent[-1] == short + bytes(18)


def test_host_supplied_crc(s: Spi, m: ENC28J60Model) -> None:
    init(s, macon3=0)  # no padding, no CRC: the host writes the FCS
    frame = eth(OTHER, 60, src=MAC)
    send(s, frame + fcs(frame))
    assert m.sent == [frame]
    send(s, frame + b"\0\0\0\0")
    assert m.sent == [frame] and m.stats["tx_bad_crc"] == 1
    assert tsv(s, 64) & TSV_CRC_ERROR


def test_giant_frames_abort(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    s.wr16(MAMXFL, 1518)
    send(s, eth(OTHER, 1515, src=MAC))
    assert m.sent == [] and s.common(EIR) & TXERIF and s.common(ESTAT) & TXABRT
    assert tsv(s, 1515) & TSV_GIANT
    s.wr(MACON3, 0x32 | HFRMEN)
    send(s, eth(OTHER, 1515, src=MAC))
    assert len(m.sent) == 1


def test_txrst_holds_the_transmitter(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    s.x(BFS | ECON1, TXRST)
    send(s, eth(OTHER, src=MAC))
    assert m.sent == [] and m.stats["tx_in_reset"] == 1
    assert not s.common(ECON1) & TXRTS
    s.x(BFC | ECON1, TXRST)
    send(s, eth(OTHER, src=MAC))
    assert len(m.sent) == 1


def test_wire_time_and_cancel(clock: ManualClock) -> None:
    m = ENC28J60Model(clock=clock, timing=ENC28J60Timing(mii_us=0, reset_us=0))
    s = Spi(m)
    init(s)
    frame = eth(OTHER, 1000, src=MAC)
    send(s, frame)
    assert wire_time_ms(1000) == pytest.approx((8 + 1000 + 4 + 12) * 0.0008)
    assert wire_time_ms(10) == wire_time_ms(60)
    assert s.common(ECON1) & TXRTS and m.sent == [frame]  # on the wire as it starts
    assert m.next_deadline() == pytest.approx(clock.now_ms() + wire_time_ms(1000))
    clock.advance(wire_time_ms(1000) * 0.99)
    assert s.common(ECON1) & TXRTS  # done only after its wire time
    clock.advance(wire_time_ms(1000) * 0.02)
    assert not s.common(ECON1) & TXRTS and m.sent == [frame]
    send(s, frame)
    s.x(BFC | ECON1, TXRTS)  # cancel: TXIF, TSV without Done
    assert s.common(EIR) & TXIF and m.stats["tx_cancelled"] == 1
    assert not tsv(s, 1000) & TSV_DONE
    clock.advance(1)
    assert len(m.sent) == 2  # handed to the wire as it started: a cancel cannot recall it
    assert not s.common(ECON1) & TXRTS


def test_duplex_mismatch_is_counted(s: Spi, m: ENC28J60Model) -> None:
    init(s, macon3=0x33)  # MAC full duplex, PHY half
    send(s, eth(OTHER, src=MAC))
    assert m.stats["duplex_mismatch"] == 1
    s.phy_write(PHCON1, PDPXMD)
    send(s, eth(OTHER, src=MAC))
    assert m.stats["duplex_mismatch"] == 1


def test_half_duplex_loopback_unless_hdldis(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    bcast = eth(b"\xff" * 6, src=MAC)
    send(s, bcast)
    assert s.rd(EPKTCNT) == 1 and m.stats["rx_looped_back"] == 1  # own broadcast comes back
    s.phy_write(PHCON2, HDLDIS)
    send(s, bcast)
    assert s.rd(EPKTCNT) == 1 and len(m.sent) == 2
    s.phy_write(PHCON1, PLOOPBK)
    send(s, bcast)
    assert s.rd(EPKTCNT) == 2 and len(m.sent) == 2  # PHY loopback: only to ourselves


def test_no_link_no_frames(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    m.set_link(False)
    send(s, eth(OTHER, src=MAC))
    assert m.sent == [] and m.stats["tx_no_link"] == 1 and s.common(EIR) & TXIF


def test_dma_copy_and_checksum(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    m.mem[0x1B00:0x1B04] = b"\x45\x00\x00\x1c"
    s.wr16(EDMAST, 0x1B00)
    s.wr16(EDMAND, 0x1B03)
    s.wr16(EDMADST, 0x1C00)
    s.x(BFS | ECON1, DMAST)
    assert m.mem[0x1C00:0x1C04] == b"\x45\x00\x00\x1c"
    assert not s.common(ECON1) & DMAST and s.common(EIR) & DMAIF
    s.x(BFS | ECON1, CSUMEN | DMAST)
    s.bank(0)
    assert s.x(RCR | 0x17, 0)[1] == 0xBA and s.x(RCR | 0x16, 0)[1] == 0xE3  # ~(4500h + 001Ch)
    assert m.stats["dma_copies"] == 1 and m.stats["dma_checksums"] == 1


# -- /INT and its descriptor ---------------------------------------------------------------------


def test_int_follows_eie_and_eir(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    m.inject(eth(MAC))
    assert m.int_pin.get() is True  # INTIE off
    s.x(WCR | EIE, PKTIE)
    assert m.int_pin.get() is True
    s.x(BFS | EIE, INTIE)
    assert m.int_pin.get() is False
    assert s.common(ESTAT) & 0x80  # ESTAT.INT
    s.x(BFC | EIE, INTIE)  # the handler's dance: INTIE off and on gives a new edge
    s.x(BFS | EIE, INTIE)
    assert m.int_pin.falling == 2 and m.stats["int_asserts"] == 2
    Reader(s).recv()
    assert m.int_pin.get() is True


def test_int_edges_inside_one_batch(m: ENC28J60Model) -> None:
    init(Spi(m))
    m.inject(eth(MAC))
    m.transfer_batch([bytes((WCR | EIE, INTIE | PKTIE)), bytes((BFC | EIE, INTIE))] * 3)
    assert m.int_pin.falling == 3 and m.int_pin.level is True


def test_fileno_is_readable_while_an_edge_is_queued(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    fd = m.fileno()
    assert not readable(fd)
    s.x(WCR | EIE, INTIE | PKTIE)
    m.inject(eth(MAC))
    assert readable(fd)  # the edge came from inject; bus calls would do as well
    Reader(s).recv()
    assert readable(fd)  # the line went high again, but the falling edge is still queued
    assert m.int_pin.falling_queued()
    assert m.int_pin.wait_edge(Edge.FALLING, 0) is True
    assert not readable(fd) and not m.int_pin.falling_queued()
    s.x(BFC | EIE, INTIE)
    m.inject(eth(MAC))
    s.x(BFS | EIE, INTIE)  # an edge made by the host's own bus call
    assert readable(fd)
    assert m.int_pin.wait_edge(Edge.FALLING, 0) is True
    assert not readable(fd)


def test_fileno_wakes_for_frames_on_the_wire() -> None:
    wire = FakeWire(with_fd=True)
    clock = ManualClock()
    m = ENC28J60Model(wire, clock, timing=ENC28J60Timing(mii_us=0, reset_us=0))
    try:
        s = Spi(m)
        init(s)
        fd = m.fileno()
        assert not readable(fd)
        wire.push(eth(MAC))
        assert readable(fd)  # the wire's descriptor is a member of the epoll set
        s.common(EIR)  # the model takes the frame off the wire; it is in flight
        assert readable(fd) and s.rd(EPKTCNT) == 0
        clock.advance(wire_time_ms(60))
        assert s.rd(EPKTCNT) == 1
        assert not readable(fd)
    finally:
        m.close()
        wire.close()


def test_a_sent_frame_needs_no_further_touch() -> None:
    """A frame reaches the wire without the host touching the chip again, and the
    descriptor stays readable until its transmission is done (TXRTS clears on the
    first touch after the wire time), so a waiting host sees the completion at once.
    Before, the frame itself waited for that touch: an ARP request could sit in
    the chip for a whole ARP retry interval."""
    wire = FakeWire(with_fd=True)
    clock = ManualClock()
    m = ENC28J60Model(wire, clock, timing=ENC28J60Timing(mii_us=0, reset_us=0))
    try:
        s = Spi(m)
        init(s)
        fd = m.fileno()
        assert not readable(fd)
        frame = eth(OTHER, 1000, src=MAC)
        send(s, frame)
        assert wire.sent == [frame]
        assert readable(fd) and s.common(ECON1) & TXRTS
        clock.advance(wire_time_ms(1000))
        assert not s.common(ECON1) & TXRTS  # the touch the waiter makes when it wakes
        assert not readable(fd)
    finally:
        m.close()
        wire.close()


def test_wait_edge_sleeps_on_the_descriptor() -> None:
    wire = FakeWire(with_fd=True)
    m = ENC28J60Model(wire, timing=ENC28J60Timing(mii_us=0, reset_us=0))
    try:
        s = Spi(m)
        init(s)
        s.x(WCR | EIE, INTIE | PKTIE)
        t0 = time.monotonic()
        assert m.int_pin.wait_edge(Edge.FALLING, 30) is False
        assert 0.025 < time.monotonic() - t0 < 1.0
        timer = threading.Timer(0.03, wire.push, (eth(MAC),))
        timer.start()
        t0 = time.monotonic()
        assert m.int_pin.wait_edge(Edge.FALLING, 2000) is True
        assert time.monotonic() - t0 < 1.0
        assert s.rd(EPKTCNT) == 1
        timer.join()
    finally:
        m.close()
        wire.close()


# -- the wire ------------------------------------------------------------------------------------


def test_frames_enter_no_faster_than_the_wire(clock: ManualClock) -> None:
    wire = FakeWire()
    m = ENC28J60Model(wire, clock, timing=ENC28J60Timing(mii_us=0, reset_us=0))
    s = Spi(m)
    init(s)
    for i in range(3):
        wire.push(eth(MAC, 1000, fill=i))
    assert s.rd(EPKTCNT) == 0
    step = wire_time_ms(1000)
    clock.advance(step)
    assert s.rd(EPKTCNT) == 1
    clock.advance(step)
    assert s.rd(EPKTCNT) == 2
    clock.advance(10 * step)
    assert s.rd(EPKTCNT) == 3
    assert m.next_deadline() is None


def test_wire_send_and_closed_wire() -> None:
    wire = FakeWire()
    m = ENC28J60Model(wire, ManualClock(), timing=ENC28J60Timing.instant())
    s = Spi(m)
    init(s)
    frame = eth(OTHER, 80, src=MAC)
    send(s, frame)
    assert wire.sent == [frame] and m.sent == []
    wire.close()
    s.common(EIR)
    s.common(EIR)
    assert m.stats["wire_errors"] == 1


def test_wire_budget_bounds_frames_in_flight(clock: ManualClock) -> None:
    wire = FakeWire()
    m = ENC28J60Model(wire, clock, timing=ENC28J60Timing(mii_us=0, reset_us=0), wire_budget=2)
    s = Spi(m)
    init(s)
    for _ in range(5):
        wire.push(eth(MAC))
    s.common(EIR)
    assert len(wire.rx) == 3  # the rest waits on the wire
    clock.advance(1)
    assert s.rd(EPKTCNT) == 2
    clock.advance(1)
    assert s.rd(EPKTCNT) == 4


# -- resets --------------------------------------------------------------------------------------


def test_src_resets_registers_keeps_memory(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    m.inject(eth(MAC))
    s.phy_write(PHLCON, 0x3476)
    s.x(SRC)
    assert s.rd16(ERXST) == 0x05FA and s.rd(EPKTCNT) == 0 and s.rd(MACON1) == 0
    assert s.phy_read(PHLCON) == 0x3422
    assert m.mem[6:12] == MAC  # buffer RAM is not cleared
    assert m.stats["soft_resets"] == 1


def test_reset_start_up_window(clock: ManualClock) -> None:
    m = ENC28J60Model(clock=clock, timing=ENC28J60Timing(wire=False, mii_us=0))
    s = Spi(m)
    s.x(SRC)
    assert s.common(ESTAT) & CLKRDY == 0  # trustworthy without the fault
    s.x(WCR | EIE, 0x40)  # lost
    clock.advance(0.31)
    assert s.common(ESTAT) & CLKRDY and s.common(EIE) == 0
    assert m.stats["access_clock_unready"] == 2


def test_reset_pin_held_low_is_deaf(m: ENC28J60Model) -> None:
    s = Spi(m)
    init(s)
    m.reset_pin.set(False)
    assert s.x(RCR | ESTAT, 0) == b"\xff\xff"
    assert not m.inject(eth(MAC)) and m.stats["rx_asleep"] == 1
    m.hard_reset()  # no release while the host holds the line
    assert m.stats["hard_resets"] == 0
    m.reset_pin.set(True)
    assert s.rd16(ERXST) == 0x05FA and m.stats["hard_resets"] == 1
    assert m.stats["access_in_reset"] >= 1
    with pytest.raises(OSError):
        m.int_pin.set(False)


@pytest.mark.parametrize("hard", [False, True])
def test_scheduled_reset_inside_a_batch(m: ENC28J60Model, hard: bool) -> None:
    s = Spi(m)
    s.x(WCR | EIE, 0x50)
    m.schedule_reset(2, hard=hard)
    out = m.transfer_batch([bytes((RCR | EIE, 0))] * 4)
    assert [o[1] for o in out] == [0x50, 0x50, 0, 0]
    assert m.stats["hard_resets" if hard else "soft_resets"] == 1


def test_power_save(clock: ManualClock) -> None:
    m = ENC28J60Model(clock=clock, timing=ENC28J60Timing(wire=False, mii_us=0))
    s = Spi(m)
    init(s)
    s.x(BFS | ECON2, PWRSV)
    assert not s.common(ESTAT) & CLKRDY
    assert not m.inject(eth(MAC))
    s.x(BFC | ECON2, PWRSV)
    assert not s.common(ESTAT) & CLKRDY
    clock.advance(0.5)
    assert s.common(ESTAT) & CLKRDY and m.inject(eth(MAC))


def test_close(m: ENC28J60Model) -> None:
    m.fileno()
    m.close()
    m.close()
    with pytest.raises(OSError):
        m.transfer(bytes((RCR | EIR, 0)))


# -- faults and errata ---------------------------------------------------------------------------


def test_bit_errors_are_seeded_and_counted() -> None:
    def run(seed: int) -> list[bytes]:
        m = ENC28J60Model(
            clock=ManualClock(), seed=seed, timing=ENC28J60Timing.instant(),
            faults=ENC28J60Faults(bit_error_rate=0.01),
        )  # fmt: skip
        out = [m.transfer(bytes((RBM,)) + bytes(64)) for _ in range(20)]
        assert m.stats["bit_errors"] > 0
        assert m.mem == bytearray(8192)  # MISO only: the chip's state is intact
        return out

    assert run(1) == run(1) != run(2)


def test_rx_overflow_fault(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    m.faults.rx_overflow = True
    assert not m.inject(eth(MAC))
    assert s.common(EIR) & RXERIF and m.stats["rx_overflow_forced"] == 1
    m.faults.rx_overflow = False
    assert m.inject(eth(MAC))


def test_false_collision_and_tx_stall_errata(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    m.faults.false_collision = 1.0
    m.faults.tx_stall_after_abort = True
    frame = eth(OTHER, src=MAC)
    send(s, frame)
    assert s.common(EIR) & (TXERIF | TXIF) == TXERIF | TXIF
    assert s.common(ESTAT) & (TXABRT | LATECOL) == TXABRT | LATECOL
    assert tsv(s, len(frame)) & TSV_LATE_COLLISION and m.sent == []
    m.faults.false_collision = 0.0
    send(s, frame)  # item 12: this one never completes
    assert s.common(ECON1) & TXRTS and m.stats["tx_stalls"] == 1
    s.x(BFC | ECON1, TXRTS)
    s.x(BFC | EIR, TXERIF)
    s.x(BFS | ECON1, TXRST)  # the workaround
    s.x(BFC | ECON1, TXRST)
    assert not s.common(ESTAT) & TXABRT
    assert s.common(EIR) & TXERIF  # set again by clearing TXRST: clear it after the reset
    assert m.stats["txerif_after_txrst"] == 1
    send(s, frame)
    assert m.sent == [frame]


def test_false_collision_only_in_half_duplex(s: Spi, m: ENC28J60Model) -> None:
    init(s, macon3=0x33)
    s.phy_write(PHCON1, PDPXMD)
    m.faults.false_collision = 1.0
    send(s, eth(OTHER, src=MAC))
    assert len(m.sent) == 1 and m.stats["false_collisions"] == 0


def test_even_erxrdpt_corrupts_the_ring(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    m.faults.even_erxrdpt_corrupts = True
    m.inject(eth(MAC))  # ERXRDPT = 19FFh, odd: fine
    s.wr16(ERXRDPT, 0x1000)
    m.inject(eth(MAC))
    s.wr16(ERDPT, 70)
    assert int.from_bytes(s.rbm(2), "little") != 140
    assert m.stats["ring_corrupted"] == 1 and m.stats["erxrdpt_even"] == 1


def test_erxwrpt_loads_zero(s: Spi, m: ENC28J60Model) -> None:
    m.faults.erxwrpt_loads_zero = True
    init(s)  # the ring at 0x0000, as item 5 advises: no harm done
    assert s.rd16(ERXWRPT) == 0 and m.inject(eth(MAC))
    s.wr16(ERXST, 0x0100)  # elsewhere the write pointer lands outside the ring
    assert s.rd16(ERXWRPT) == 0 and not m.inject(eth(MAC))
    assert m.stats["erxwrpt_zero_loads"] == 6 and m.stats["rx_bad_ring"] == 1


def test_unreliable_pktif(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    m.faults.unreliable_pktif = 1.0
    m.inject(eth(MAC))
    assert s.rd(EPKTCNT) == 1 and not s.common(EIR) & PKTIF
    assert m.stats["pktif_missed"] == 1


def test_clkrdy_wrong_after_reset(clock: ManualClock) -> None:
    faults = ENC28J60Faults(clkrdy_wrong_after_reset=True)
    m = ENC28J60Model(clock=clock, timing=ENC28J60Timing.instant(), faults=faults)
    s = Spi(m)
    s.x(SRC)
    assert s.common(ESTAT) & CLKRDY  # lies
    s.x(WCR | EIE, 0x40)
    assert s.common(EIE) == 0  # ignored
    clock.advance(1.0)
    s.x(WCR | EIE, 0x40)
    assert s.common(EIE) == 0x40
    assert m.stats["clkrdy_lies"] == 1 and m.stats["access_clock_unready"] == 3


def test_link_flap(s: Spi, m: ENC28J60Model) -> None:
    init(s)
    s.phy_write(PHIE, PGEIE | PLNKIE)
    s.x(WCR | EIE, INTIE | LINKIE)
    for _ in range(3):
        m.set_link(False)
        m.set_link(True)
    assert m.stats["link_changes"] == 6
    assert m.int_pin.falling == 1  # LINKIF stayed set: one edge until PHIR is read
    assert not s.phy_read(PHSTAT1) & LLSTAT


# -- properties ----------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.one_of(st.integers(min_value=1, max_value=1514), st.just(0)),
        min_size=1,
        max_size=60,
    )
)
def test_ring_stays_consistent(ops: list[int]) -> None:
    """Frames in (n > 0) and reads (0), in any order: what comes out is what went in."""
    m = ENC28J60Model(clock=ManualClock(), timing=ENC28J60Timing.instant())
    s = Spi(m)
    init(s, fcon=0)
    rd = Reader(s)
    queued: deque[bytes] = deque()
    for i, n in enumerate(ops):
        if n:
            frame = eth(MAC, max(n, 14), fill=i)[:n] if n >= 14 else bytes(n)
            if m.inject(frame):
                queued.append(frame.ljust(60, b"\0"))
        else:
            got = rd.recv()
            if queued:
                assert got is not None and got[0] == queued.popleft() and got[1] & RXOK
            else:
                assert got is None
        assert s.rd(EPKTCNT) == len(queued)
    while queued:
        got = rd.recv()
        assert got is not None and got[0] == queued.popleft() and got[2] == fcs(got[0])
    assert rd.recv() is None


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.integers(min_value=0, max_value=0x1FFF))
def test_wbm_then_rbm_round_trips_outside_the_ring(data: bytes, start: int) -> None:
    m = ENC28J60Model(clock=ManualClock(), timing=ENC28J60Timing.instant())
    s = Spi(m)
    s.wr16(ERXST, 0)
    s.wr16(ERXND, 0)  # a one-byte ring at 0: RBM wraps only at 1FFFh elsewhere
    start = max(start, 1)
    s.wr16(EWRPT, start)
    s.wbm(data)
    s.wr16(ERDPT, start)
    expect = data if start + len(data) <= 0x2000 else None
    got = s.rbm(len(data))
    if expect is not None:
        assert got == expect
    assert s.rd16(EWRPT) == (start + len(data)) & 0x1FFF


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=12), max_size=40), st.lists(st.binary(max_size=80)))
def test_any_bus_traffic_is_survived(transactions: list[bytes], frames: list[bytes]) -> None:
    """Whatever the host clocks and the wire sends, nothing raises and replies fit."""
    m = ENC28J60Model(clock=ManualClock(), timing=ENC28J60Timing.instant())
    init(Spi(m), fcon=0)
    replies = m.transfer_batch(transactions)
    assert [len(x) for x in replies] == [len(x) for x in transactions]
    for frame in frames:
        m.inject(frame)
    assert 0 <= m.register(EPKTCNT_REG) <= 255
    m.close()

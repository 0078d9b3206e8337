"""ENC28J60 registers, instructions and buffer layout, named as Microchip's
data sheet DS39662E names them (section numbers are that document's; errata
items are those of the Rev. B7 silicon errata DS80349). Both the driver and
the register-level model read this module; neither imports the other.

A control register lives in one of four banks at a 5-bit address, except the
five common registers (EIE, EIR, ESTAT, ECON2, ECON1 at 0x1B-0x1F), which are
in every bank (DS39662E §3.1, Table 3-1). MAC and MII registers shift out a
dummy byte before their value on RCR (§4.2.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Reg:
    """One 8-bit control register: its bank (None: every bank), 5-bit address, and
    whether it is a MAC/MII register (an RCR of it returns a dummy byte first)."""

    name: str
    bank: int | None
    addr: int
    mac: bool = False


def _eth(name: str, bank: int | None, addr: int) -> Reg:
    return Reg(name, bank, addr)


def _mac(name: str, bank: int, addr: int) -> Reg:
    return Reg(name, bank, addr, mac=True)


# -- SPI instruction set (DS39662E §4.2, Table 4-1) ---------------------------------------
OP_RCR: Final = 0x00  # Read Control Register: 000a aaaa
OP_RBM: Final = 0x3A  # Read Buffer Memory: 0011 1010, then data for as long as clocked
OP_WCR: Final = 0x40  # Write Control Register: 010a aaaa, data
OP_WBM: Final = 0x7A  # Write Buffer Memory: 0111 1010, data...
OP_BFS: Final = 0x80  # Bit Field Set: 100a aaaa, mask (ETH registers only)
OP_BFC: Final = 0xA0  # Bit Field Clear: 101a aaaa, mask (ETH registers only)
OP_SRC: Final = 0xFF  # System Reset Command (soft reset)
OPCODE_MASK: Final = 0xE0
ARG_MASK: Final = 0x1F
SPI_MAX_HZ: Final = 20_000_000  # DS39662E cover page: "SPI Interface ... up to 20 MHz"

# -- common registers, every bank (Table 3-2) ---------------------------------------------
EIE = _eth("EIE", None, 0x1B)
EIE_INTIE: Final = 0x80
EIE_PKTIE: Final = 0x40
EIE_DMAIE: Final = 0x20
EIE_LINKIE: Final = 0x10
EIE_TXIE: Final = 0x08
EIE_TXERIE: Final = 0x02
EIE_RXERIE: Final = 0x01
EIR = _eth("EIR", None, 0x1C)
EIR_PKTIF: Final = 0x40
EIR_DMAIF: Final = 0x20
EIR_LINKIF: Final = 0x10  # read-only: cleared by reading PHIR (§12.1.5)
EIR_TXIF: Final = 0x08
EIR_TXERIF: Final = 0x02
EIR_RXERIF: Final = 0x01
ESTAT = _eth("ESTAT", None, 0x1D)
ESTAT_INT: Final = 0x80
ESTAT_BUFER: Final = 0x40
ESTAT_LATECOL: Final = 0x10
ESTAT_RXBUSY: Final = 0x04
ESTAT_TXABRT: Final = 0x02
ESTAT_CLKRDY: Final = 0x01
ECON2 = _eth("ECON2", None, 0x1E)
ECON2_AUTOINC: Final = 0x80
ECON2_PKTDEC: Final = 0x40
ECON2_PWRSV: Final = 0x20
ECON2_VRPS: Final = 0x08
ECON1 = _eth("ECON1", None, 0x1F)
ECON1_TXRST: Final = 0x80
ECON1_RXRST: Final = 0x40
ECON1_DMAST: Final = 0x20
ECON1_CSUMEN: Final = 0x10
ECON1_TXRTS: Final = 0x08
ECON1_RXEN: Final = 0x04
ECON1_BSEL: Final = 0x03  # BSEL1:BSEL0, the bank of addresses 0x00-0x1A
COMMON_FIRST: Final = 0x1B  # 0x1B-0x1F are the same registers in every bank

# -- bank 0: buffer pointers (Table 3-2; 16-bit pairs low byte first) ----------------------
ERDPTL, ERDPTH = _eth("ERDPTL", 0, 0x00), _eth("ERDPTH", 0, 0x01)
EWRPTL, EWRPTH = _eth("EWRPTL", 0, 0x02), _eth("EWRPTH", 0, 0x03)
ETXSTL, ETXSTH = _eth("ETXSTL", 0, 0x04), _eth("ETXSTH", 0, 0x05)
ETXNDL, ETXNDH = _eth("ETXNDL", 0, 0x06), _eth("ETXNDH", 0, 0x07)
ERXSTL, ERXSTH = _eth("ERXSTL", 0, 0x08), _eth("ERXSTH", 0, 0x09)
ERXNDL, ERXNDH = _eth("ERXNDL", 0, 0x0A), _eth("ERXNDH", 0, 0x0B)
ERXRDPTL, ERXRDPTH = _eth("ERXRDPTL", 0, 0x0C), _eth("ERXRDPTH", 0, 0x0D)
ERXWRPTL, ERXWRPTH = _eth("ERXWRPTL", 0, 0x0E), _eth("ERXWRPTH", 0, 0x0F)  # read-only
EDMASTL, EDMASTH = _eth("EDMASTL", 0, 0x10), _eth("EDMASTH", 0, 0x11)
EDMANDL, EDMANDH = _eth("EDMANDL", 0, 0x12), _eth("EDMANDH", 0, 0x13)
EDMADSTL, EDMADSTH = _eth("EDMADSTL", 0, 0x14), _eth("EDMADSTH", 0, 0x15)
EDMACSL, EDMACSH = _eth("EDMACSL", 0, 0x16), _eth("EDMACSH", 0, 0x17)

# -- bank 1: filters, packet count --------------------------------------------------------
EHT = tuple(_eth(f"EHT{i}", 1, i) for i in range(8))  # hash table
EPMM = tuple(_eth(f"EPMM{i}", 1, 0x08 + i) for i in range(8))  # pattern match mask
EPMCSL, EPMCSH = _eth("EPMCSL", 1, 0x10), _eth("EPMCSH", 1, 0x11)
EPMOL, EPMOH = _eth("EPMOL", 1, 0x14), _eth("EPMOH", 1, 0x15)
ERXFCON = _eth("ERXFCON", 1, 0x18)  # receive filters (§8); 0 = promiscuous
ERXFCON_UCEN: Final = 0x80
ERXFCON_ANDOR: Final = 0x40
ERXFCON_CRCEN: Final = 0x20
ERXFCON_PMEN: Final = 0x10
ERXFCON_MPEN: Final = 0x08
ERXFCON_HTEN: Final = 0x04
ERXFCON_MCEN: Final = 0x02
ERXFCON_BCEN: Final = 0x01
EPKTCNT = _eth("EPKTCNT", 1, 0x19)  # packets waiting in the receive ring

# -- bank 2: MAC and MII (dummy byte on RCR) -----------------------------------------------
MACON1 = _mac("MACON1", 2, 0x00)
MACON1_TXPAUS: Final = 0x08
MACON1_RXPAUS: Final = 0x04
MACON1_PASSALL: Final = 0x02
MACON1_MARXEN: Final = 0x01
MACON3 = _mac("MACON3", 2, 0x02)
MACON3_PADCFG2: Final = 0x80  # PADCFG2:0 choose automatic padding, Register 6-2
MACON3_PADCFG1: Final = 0x40
MACON3_PADCFG0: Final = 0x20  # with PADCFG2:1 = 00: pad short frames to 60 bytes + CRC
MACON3_PADCFG: Final = 0xE0  # the whole PADCFG2:0 field
MACON3_TXCRCEN: Final = 0x10
MACON3_PHDREN: Final = 0x08  # proprietary header before the frame (not modelled)
MACON3_HFRMEN: Final = 0x04  # huge frames: do not abort frames longer than MAMXFL
MACON3_FRMLNEN: Final = 0x02
MACON3_FULDPX: Final = 0x01
MACON4 = _mac("MACON4", 2, 0x03)
MACON4_DEFER: Final = 0x40
MABBIPG = _mac("MABBIPG", 2, 0x04)  # back-to-back inter-packet gap
MAIPGL, MAIPGH = _mac("MAIPGL", 2, 0x06), _mac("MAIPGH", 2, 0x07)
MACLCON1 = _mac("MACLCON1", 2, 0x08)  # retransmission maximum
MACLCON2 = _mac("MACLCON2", 2, 0x09)  # collision window
MAMXFLL, MAMXFLH = _mac("MAMXFLL", 2, 0x0A), _mac("MAMXFLH", 2, 0x0B)
MICMD = _mac("MICMD", 2, 0x12)
MICMD_MIISCAN: Final = 0x02
MICMD_MIIRD: Final = 0x01
MIREGADR = _mac("MIREGADR", 2, 0x14)
MIWRL, MIWRH = _mac("MIWRL", 2, 0x16), _mac("MIWRH", 2, 0x17)  # writing MIWRH starts it
MIRDL, MIRDH = _mac("MIRDL", 2, 0x18), _mac("MIRDH", 2, 0x19)

# -- bank 3: MAC address, MII status, revision ----------------------------------------------
# MAADR1 is the first octet on the wire; the addresses run 5, 6, 3, 4, 1, 2 (Table 3-2).
MAADR5, MAADR6 = _mac("MAADR5", 3, 0x00), _mac("MAADR6", 3, 0x01)
MAADR3, MAADR4 = _mac("MAADR3", 3, 0x02), _mac("MAADR4", 3, 0x03)
MAADR1, MAADR2 = _mac("MAADR1", 3, 0x04), _mac("MAADR2", 3, 0x05)
MAADR: Final = (MAADR1, MAADR2, MAADR3, MAADR4, MAADR5, MAADR6)  # in octet order
EBSTSD = _eth("EBSTSD", 3, 0x06)
EBSTCON = _eth("EBSTCON", 3, 0x07)
EBSTCSL, EBSTCSH = _eth("EBSTCSL", 3, 0x08), _eth("EBSTCSH", 3, 0x09)
MISTAT = _mac("MISTAT", 3, 0x0A)
MISTAT_NVALID: Final = 0x04
MISTAT_SCAN: Final = 0x02
MISTAT_BUSY: Final = 0x01
EREVID = _eth("EREVID", 3, 0x12)  # silicon revision, read-only
EREVID_B7: Final = 0x06  # errata DS80349: the Rev. B7 part reads 0b00000110
ECOCON = _eth("ECOCON", 3, 0x15)
EFLOCON = _eth("EFLOCON", 3, 0x17)
EPAUSL, EPAUSH = _eth("EPAUSL", 3, 0x18), _eth("EPAUSH", 3, 0x19)

# -- PHY registers, 16 bits, reached through MIREGADR/MICMD/MIWR/MIRD (§3.3) ---------------
PHCON1: Final = 0x00
PHCON1_PRST: Final = 0x8000
PHCON1_PLOOPBK: Final = 0x4000
PHCON1_PPWRSV: Final = 0x0800
PHCON1_PDPXMD: Final = 0x0100  # full duplex
PHSTAT1: Final = 0x01
PHSTAT1_PFDPX: Final = 0x1000
PHSTAT1_PHDPX: Final = 0x0800
PHSTAT1_LLSTAT: Final = 0x0004  # link status, latching low
PHID1: Final = 0x02
PHID2: Final = 0x03
PHID1_VALUE: Final = 0x0083
PHID2_VALUE: Final = 0x1400
PHCON2: Final = 0x10
PHCON2_FRCLNK: Final = 0x4000
PHCON2_TXDIS: Final = 0x2000
PHCON2_JABBER: Final = 0x0400
PHCON2_HDLDIS: Final = 0x0100  # no loopback of transmitted frames in half duplex
PHSTAT2: Final = 0x11
PHSTAT2_TXSTAT: Final = 0x2000
PHSTAT2_RXSTAT: Final = 0x1000
PHSTAT2_COLSTAT: Final = 0x0800
PHSTAT2_LSTAT: Final = 0x0400  # link up, not latching
PHSTAT2_DPXSTAT: Final = 0x0200
PHIE: Final = 0x12
PHIE_PLNKIE: Final = 0x0010
PHIE_PGEIE: Final = 0x0002
PHIR: Final = 0x13  # reading it clears its flags
PHIR_PLNKIF: Final = 0x0010
PHIR_PGIF: Final = 0x0004
PHLCON: Final = 0x14
PHLCON_RESET: Final = 0x3422
MII_TIME_US: Final = 10.24  # one MII read or write keeps MISTAT.BUSY set this long

# -- buffer memory (§3.2, §6) ---------------------------------------------------------------
BUFFER_SIZE: Final = 0x2000  # 8 KB dual-port SRAM, 0x0000-0x1FFF
RSV_LEN: Final = 6  # next-packet pointer (2) + receive status vector (4), §7.2.1
TSV_LEN: Final = 7  # transmit status vector written after the frame, §7.1
MAX_FRAME: Final = 1518  # with its CRC; MAMXFL is set to it
CRC_LEN: Final = 4

# Receive status vector bits, counted in the 32-bit vector (Table 7-3)
RSV_LONG_DROP: Final = 1 << 16
RSV_CARRIER_SEEN: Final = 1 << 18
RSV_CRC_ERROR: Final = 1 << 20
RSV_LENGTH_CHECK_ERROR: Final = 1 << 21
RSV_LENGTH_OUT_OF_RANGE: Final = 1 << 22
RSV_RECEIVED_OK: Final = 1 << 23
RSV_MULTICAST: Final = 1 << 24
RSV_BROADCAST: Final = 1 << 25
RSV_VLAN: Final = 1 << 30

# Transmit status vector bits, counted in the 56-bit vector (Table 7-1)
TSV_COLLISIONS_SHIFT: Final = 16  # 4-bit collision count
TSV_CRC_ERROR: Final = 1 << 20
TSV_LENGTH_OUT_OF_RANGE: Final = 1 << 22
TSV_DONE: Final = 1 << 23
TSV_MULTICAST: Final = 1 << 24
TSV_BROADCAST: Final = 1 << 25
TSV_EXCESSIVE_COLLISION: Final = 1 << 28
TSV_LATE_COLLISION: Final = 1 << 29
TSV_GIANT: Final = 1 << 30
TSV_TOTAL_SHIFT: Final = 32  # bits 47:32, bytes on the wire including collided attempts
TSV_VLAN: Final = 1 << 51

# Per-packet control byte written before a frame at ETXST (§7.1, Figure 7-1)
PCB_PHUGEEN: Final = 0x08
PCB_PPADEN: Final = 0x04
PCB_PCRCEN: Final = 0x02
PCB_POVERRIDE: Final = 0x01  # bits 3..1 instead of MACON3's

# The layout the driver programs: receive ring at 0x0000 (errata DS80349 item 5: the ring
# must start at 0000h), two transmit buffers above it, each for one MTU frame with its
# control byte and TSV (§7.1), so one frame is written while the other is on the wire.
# Each buffer (1 + 1514 + 7 = 1522 bytes) starts on a 256-byte boundary, so ETXST is even
# as §7.1 recommends, and frames of one length differ only in ETXSTH and ETXNDH: a start
# writes two pointer bytes, not four.
TX_BUF_LEN: Final = 1 + 1514 + TSV_LEN
TX_STRIDE: Final = (TX_BUF_LEN + 0xFF) & ~0xFF  # 0x600
TX_START: Final = BUFFER_SIZE - 2 * TX_STRIDE  # the first transmit buffer, 0x1400
TX_BUFS: Final = (TX_START, TX_START + TX_STRIDE)  # 0x1400 and 0x1A00
RX_START: Final = 0x0000
RX_END: Final = TX_START - 1  # 0x13FF, odd (ERXRDPT may rest there, errata item 14)

# MAC timing the data sheet recommends (§6.5 steps 5-7): inter-packet gaps for 10 Mb/s.
MABBIPG_HALF: Final = 0x12  # back-to-back gap, half duplex (9.6 us)
MABBIPG_FULL: Final = 0x15  # back-to-back gap, full duplex (9.6 us)
MAIPGL_VALUE: Final = 0x12  # non-back-to-back gap, either duplex
MAIPGH_HALF: Final = 0x0C  # non-back-to-back gap high byte, half duplex only

# PHLCON fields (§2.6, Register 2-2): bits 13:12 read and write as 1; LEDA shows link
# status, LEDB transmit and receive activity, pulses stretched to about 73 ms. This avoids
# the duplex-and-collision setting that errata DS80349 item 11 says shows duplex only.
PHLCON_RESERVED: Final = 0x3000
PHLCON_LACFG_LINK: Final = 0x0400  # LACFG = 0100: link status
PHLCON_LBCFG_TXRX: Final = 0x0070  # LBCFG = 0111: transmit and receive activity
PHLCON_LFRQ_73MS: Final = 0x0004  # LFRQ = 01: stretch by about 73 ms
PHLCON_STRCH: Final = 0x0002
PHLCON_VALUE: Final = (
    PHLCON_RESERVED | PHLCON_LACFG_LINK | PHLCON_LBCFG_TXRX | PHLCON_LFRQ_73MS | PHLCON_STRCH
)

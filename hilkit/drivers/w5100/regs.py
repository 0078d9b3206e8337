"""W5100 register map, as far as a MACRAW driver on socket 0 needs it.

Names follow the WIZnet W5100 datasheet (v1.2.x): common registers carry
their datasheet name (``MR``, ``SHAR``, ...), socket registers the ``Sn_``
name with n = 0 (``S0_MR`` is the datasheet's ``S0_MR``/``Sn_MR`` of socket 0).
Section references are to the datasheet's chapters and, in brackets, to
``docs/hardware/w5100.md``, which says what the values mean.
"""

from __future__ import annotations

from typing import Final

# -- SPI frame (datasheet "SPI Mode: Serial Peripheral Interface") [w5100 §1] -----------
# Every access is one 4-byte frame with its own chip-select assertion:
# opcode, address bits 15..8, address bits 7..0, data (or a dummy byte on a read).
OP_WRITE: Final = 0xF0
OP_READ: Final = 0x0F
# Bytes the chip shifts out during the opcode and the two address bytes.
SPI_PREAMBLE: Final = b"\x00\x01\x02"

# -- Common registers (datasheet "Register Descriptions: Common Registers") [w5100 §3] -------
MR: Final = 0x0000  # Mode Register
MR_RST: Final = 0x80  # software reset; reads back 0 when done
MR_PB: Final = 0x10  # ping block: the chip's own stack does not answer ICMP echo
GAR: Final = 0x0001  # Gateway IP Address Register (4 bytes)
SUBR: Final = 0x0005  # Subnet Mask Register (4 bytes)
SHAR: Final = 0x0009  # Source Hardware Address Register (6 bytes)
SIPR: Final = 0x000F  # Source IP Address Register (4 bytes)
IR: Final = 0x0015  # Interrupt Register
IMR: Final = 0x0016  # Interrupt Mask Register
IR_S0: Final = 0x01  # socket 0 interrupt (set while S0_IR != 0)
RTR: Final = 0x0017  # Retry Time-value Register (2 bytes)
RTR_RESET: Final = 0x07D0  # its reset value (2000 x 100 us): the chip-present probe
RCR: Final = 0x0019  # Retry Count Register
RMSR: Final = 0x001A  # RX Memory Size Register (2 bits per socket)
TMSR: Final = 0x001B  # TX Memory Size Register (2 bits per socket)
MSR_S0_8K: Final = 0x03  # socket 0 gets all 8 KB (sockets 1..3 unusable)

# -- Socket 0 registers (datasheet "Register Descriptions: Socket Registers") [w5100 §4] -----
S0_BASE: Final = 0x0400
S0_MR: Final = 0x0400  # Socket 0 Mode Register
Sn_MR_MACRAW: Final = 0x04  # protocol: MAC raw (socket 0 only)
Sn_MR_MF: Final = 0x40  # MAC filter (MACRAW): only our MAC and broadcast come in
S0_CR: Final = 0x0401  # Socket 0 Command Register (reads 0 once accepted) [w5100 §5]
Sn_CR_OPEN: Final = 0x01
Sn_CR_CLOSE: Final = 0x10
Sn_CR_SEND: Final = 0x20
Sn_CR_RECV: Final = 0x40
S0_IR: Final = 0x0402  # Socket 0 Interrupt Register (write 1 to clear)
Sn_IR_SEND_OK: Final = 0x10
Sn_IR_TIMEOUT: Final = 0x08
Sn_IR_RECV: Final = 0x04
Sn_IR_DISCON: Final = 0x02
Sn_IR_CON: Final = 0x01
Sn_IR_ALL: Final = 0x1F
S0_SR: Final = 0x0403  # Socket 0 Status Register [w5100 §6]
SOCK_CLOSED: Final = 0x00
SOCK_MACRAW: Final = 0x42
S0_TX_FSR: Final = 0x0420  # Socket 0 TX Free Size Register (2 bytes)
S0_TX_RD: Final = 0x0422  # Socket 0 TX Read Pointer Register (2 bytes, read-only)
S0_TX_WR: Final = 0x0424  # Socket 0 TX Write Pointer Register (2 bytes)
S0_RX_RSR: Final = 0x0426  # Socket 0 RX Received Size Register (2 bytes)
S0_RX_RD: Final = 0x0428  # Socket 0 RX Read Pointer Register (2 bytes)

# -- Memory map (datasheet "Memory Map") [w5100 §2, §7] ---------------------------------------
TX_BASE: Final = 0x4000  # socket 0 TX buffer with TMSR = 0x03
RX_BASE: Final = 0x6000  # socket 0 RX buffer with RMSR = 0x03
BUF_SIZE: Final = 0x2000  # 8 KB each way
BUF_MASK: Final = BUF_SIZE - 1
PTR_MASK: Final = 0xFFFF  # the pointers are free-running 16-bit counters

# -- MACRAW (datasheet "MACRAW" in "Functional Descriptions") [w5100 §8, §9] -----------------
MACRAW_HEADER: Final = 2  # big-endian PACKET-INFO length, counting itself
ETH_MAX_FRAME: Final = 1514  # Sn_MSSR of a MACRAW socket: no FCS, no VLAN tag
ETH_MIN_FRAME: Final = 60  # short frames are padded in software

"""The TN4's programming model: an invented SPI Ethernet chip, small enough to read in a
sitting, that hilkit's porting kit is tried on (``README.md`` of this directory is its
data sheet).

Every transaction is one chip-select assertion: an opcode byte, an address byte, then
data. Reads shift the addressed bytes out from the third byte on (the first two
answer 0x00); addresses auto-increment.

- ``OP_READ  addr n*00``   registers ``addr``, ``addr+1``, ...
- ``OP_WRITE addr data..`` registers ``addr``, ``addr+1``, ...
- ``OP_RXREAD 00 n*00``    the oldest received frame, from its first byte
- ``OP_TXWRITE 00 data..`` the transmit buffer from its first byte; ``TXLEN`` = len(data)

The receive buffer is ``RXSLOTS`` slots of one frame each (4): a frame that arrives
while every slot is full is dropped and counted in ``DROPS``.
"""

from __future__ import annotations

from typing import Final

OP_READ: Final = 0x0A
OP_WRITE: Final = 0x0B
OP_RXREAD: Final = 0x0C
OP_TXWRITE: Final = 0x0D

ID: Final = 0x00  # reads CHIP_ID
REV: Final = 0x01  # reads CHIP_REV
CTRL: Final = 0x02  # RXEN | RST
STATUS: Final = 0x03  # LINK
RXCNT: Final = 0x04  # frames waiting, 0..RXSLOTS
RXLEN_H: Final = 0x05  # length of the oldest frame (0: none)
RXLEN_L: Final = 0x06
CMD: Final = 0x07  # write-only: CMD_RX_POP, CMD_TX_SEND
DROPS: Final = 0x08  # frames dropped since the last read (saturates at 255; read clears)
RXSLOTS: Final = 0x09  # how many frames the receive buffer holds
MAC: Final = 0x10  # MAC0..MAC5: the unicast address the chip accepts
NREGS: Final = 0x16

CHIP_ID: Final = 0x7E
CHIP_REV: Final = 0x01
CTRL_RXEN: Final = 0x01  # receive frames (cleared by any reset)
CTRL_RST: Final = 0x80  # write 1: soft reset (reads 0)
STATUS_LINK: Final = 0x01
CMD_RX_POP: Final = 0x01  # free the oldest slot
CMD_TX_SEND: Final = 0x02  # send TXLEN bytes of the transmit buffer

SLOTS: Final = 4
MAX_FRAME: Final = 1518  # a slot, and the transmit buffer (Ethernet II without FCS, VLAN)
SPI_MAX_HZ: Final = 20_000_000
WIRE_BPS: Final = 10_000_000  # a 10BASE-T PHY

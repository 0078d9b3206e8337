"""The ENC28J60's registration (``hilkit.port.nic.Nic``): the one place the rig
schema, the builder, the runner and the HIL suites learn what an ENC28J60 is.

Figures, from data sheet DS39662E as ``docs/hardware/enc28j60.md`` tells it:

- SPI (§4.2): up to 20 MHz; RBM/WBM move a buffer run in one chip-select
  transaction, so a frame byte costs just over one SPI byte.
- Buffer (§3.2): 8 KB of dual-port RAM, which the driver splits into a receive
  ring at 0x0000 (errata DS80349 item 5) and two transmit buffers of one frame each
  (one is written while the other is on the wire).
- PHY: 10BASE-T only, no autonegotiation; PHSTAT2.LSTAT reports the carrier.
"""

from __future__ import annotations

from hilkit.drivers.enc28j60 import regs as r
from hilkit.drivers.enc28j60.driver import STAT_NAMES
from hilkit.port.nic import Nic
from hilkit.port.spi import SpiBus

__all__ = ["NIC", "identify"]


def identify(bus: SpiBus) -> str | None:
    """Is an ENC28J60 on ``bus``? Reads EREVID and leaves the bank as it found it.

    EREVID is in bank 3: read ECON1 for the bank in use, select bank 3, read
    EREVID, select the old bank again; a driver that caches its bank sees no change.
    """
    econ1_read = bytes((r.OP_RCR | r.ECON1.addr, 0))
    (econ1,) = [bytes(x) for x in bus.transfer_batch([econ1_read])]
    if len(econ1) != 2:
        return f"no ENC28J60 answered on the bus: ECON1 read {econ1.hex()} (2 bytes expected)"
    bank = econ1[1] & r.ECON1_BSEL
    replies = [bytes(x) for x in bus.transfer_batch([
        bytes((r.OP_BFS | r.ECON1.addr, r.ECON1_BSEL)),
        bytes((r.OP_RCR | r.EREVID.addr, 0)),
        bytes((r.OP_BFC | r.ECON1.addr, r.ECON1_BSEL & ~bank)),
    ])]
    rev = replies[1][1] if len(replies) == 3 and len(replies[1]) == 2 else None
    if rev is None or rev in (0x00, 0xFF):
        seen = "nothing" if rev is None else f"0x{rev:02X}"
        return (f"no ENC28J60 answered on the bus: EREVID read {seen}, expected "
                f"0x{r.EREVID_B7:02X} (Rev. B7); check wiring, CS, SPI mode 0, 8-20 MHz")
    return None


NIC = Nic(
    name="enc28j60",
    title="Microchip ENC28J60",
    driver="hilkit.drivers.enc28j60:ENC28J60Device",
    model="hilkit.drivers.enc28j60.model:ENC28J60Model",
    model_faults="hilkit.drivers.enc28j60.model:ENC28J60Faults",
    model_timing="hilkit.drivers.enc28j60.model:ENC28J60Timing",
    identify="hilkit.drivers.enc28j60.nic:identify",
    spi_max_hz=r.SPI_MAX_HZ,
    spi_bytes_per_data_byte=1.0,
    rx_buffer_bytes=r.RX_END - r.RX_START + 1,
    tx_buffer_bytes=r.BUFFER_SIZE - r.TX_START,  # both transmit buffers
    wire_bps=10_000_000,
    stat_names=STAT_NAMES,
    link_detect=True,
    reset_pulse_ms=1.0,
)

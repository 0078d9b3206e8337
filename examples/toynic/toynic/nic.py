"""The TN4's registration (``hilkit.port.nic.Nic``, docs/porting.md "Registering a NIC"):
what hilkit's rig schema, runner and suites learn about the chip, under the entry-point
group ``hilkit.nics`` (``pyproject.toml``).

The model is no part of it: a rig reaches it as a ``kind = "python"`` bus factory
(``toynic.model:open_model``), so the registration names no ``model``.
"""

from __future__ import annotations

from hilkit.port import SpiBus
from hilkit.port.nic import Nic

from toynic import regs as r
from toynic.driver import STAT_NAMES

__all__ = ["NIC", "identify"]


def identify(bus: SpiBus) -> str | None:
    """Is a TN4 on ``bus``? One read of ID and REV, which nothing writes."""
    reply = bytes(bus.transfer(bytes((r.OP_READ, r.ID, 0, 0))))
    if len(reply) != 4 or reply[2:] != bytes((r.CHIP_ID, r.CHIP_REV)):
        return (f"no TN4 answered on the bus: ID/REV read {reply[2:].hex() or 'nothing'}, "
                f"expected {r.CHIP_ID:02x}{r.CHIP_REV:02x}")
    return None


NIC = Nic(
    name="toynic",
    title="Toy TN4",
    driver="toynic.driver:ToyNicDevice",
    identify="toynic.nic:identify",
    spi_max_hz=r.SPI_MAX_HZ,
    spi_bytes_per_data_byte=1.0,  # RXREAD/TXWRITE move a frame in one transaction
    rx_buffer_bytes=r.SLOTS * r.MAX_FRAME,
    tx_buffer_bytes=r.MAX_FRAME,
    wire_bps=r.WIRE_BPS,
    stat_names=STAT_NAMES,
    link_detect=True,
    reset_pulse_ms=1.0,
)

"""The W5100's registration (``hilkit.port.nic.Nic``): the one place the rig schema,
the builder, the runner and the HIL suites learn what a W5100 is.

Figures, from the WIZnet W5100 datasheet (v1.2.x) as ``docs/hardware/w5100.md``
tells it:

- SPI (w5100 §1): every data byte is one 4-byte frame with its own chip select,
  so 4 SPI bytes per frame byte is the floor; the datasheet gives no round
  maximum clock, 14 MHz is what users report working.
- Buffers (w5100 §2, §7): 8 KB of RX and 8 KB of TX memory; the driver gives them
  all to socket 0 (RMSR = TMSR = 0x03).
- PHY: 10BaseT/100BaseTX (datasheet, "Features").
- Link (w5100 §11): no register reports carrier; the link is assumed up.
- Reset: /RESET low for at least 2 us; the recovery suite holds it 1 ms, which is
  plenty and still lands in the middle of a transfer.
"""

from __future__ import annotations

from hilkit.drivers.w5100 import regs as r
from hilkit.port.nic import Nic
from hilkit.port.spi import SpiBus

__all__ = ["NIC", "identify"]


def identify(bus: SpiBus) -> str | None:
    """Is a W5100 on ``bus``? Read-only: RTR through two raw read frames in one batch.

    RTR reads 0x07D0 after reset (the driver's own probe; nothing writes it), and
    while the opcode and address go out the chip shifts out 00 01 02. None when
    both hold, else what was seen.
    """
    frames = [bytes((r.OP_READ, a >> 8, a & 0xFF, 0)) for a in (r.RTR, r.RTR + 1)]
    replies = [bytes(x) for x in bus.transfer_batch(frames)]
    if len(replies) != 2 or any(len(x) != 4 for x in replies):
        return (f"no W5100 answered on the bus: 2 replies of 4 bytes expected, got "
                f"{[x.hex() for x in replies]}")
    rtr = (replies[0][3] << 8) | replies[1][3]
    if rtr != r.RTR_RESET:
        return (f"no W5100 answered on the bus: RTR read 0x{rtr:04X}, expected "
                f"0x{r.RTR_RESET:04X} (check wiring, CS, SPI mode 0)")
    if any(x[:3] != r.SPI_PREAMBLE for x in replies):
        return (f"the W5100's replies lack its 00 01 02 preamble: "
                f"{[x.hex() for x in replies]} (a garbled bus)")
    return None


NIC = Nic(
    name="w5100",
    title="WIZnet W5100",
    driver="hilkit.drivers.w5100:W5100Device",
    model="hilkit.drivers.w5100.model:W5100Model",
    model_faults="hilkit.drivers.w5100.model:W5100Faults",
    model_timing="hilkit.drivers.w5100.model:W5100Timing",
    identify="hilkit.drivers.w5100.nic:identify",
    spi_max_hz=14_000_000,
    spi_bytes_per_data_byte=4.0,
    rx_buffer_bytes=r.BUF_SIZE,
    tx_buffer_bytes=r.BUF_SIZE,
    wire_bps=100_000_000,
    stat_names=("resets", "reopens", "tx_stalls", "bus_errors", "idle_polls"),
    link_detect=False,
    reset_pulse_ms=1.0,
)

"""PPP over a serial line, registered as a NIC (``hilkit.port.nic.Nic``).

There is no chip: the "bus" is a serial port (a UART, a USB-serial adapter, a modem, or
any pyserial URL) and the driver speaks pyserial itself (``transport = "serial"``). The
far end is a PPP peer (slirp for tests and rigs, ``hilkit.rig.slirp``). The wire rate is
the line's: 10 bits a byte on 8N1, so 11520 B/s at 115200 baud; it depends on the rig's
baud rate, so none is registered here. No model: a simulated PPP rig uses slirp on a
pty, which is real.
"""

from __future__ import annotations

from hilkit.drivers.ppp.device import STAT_NAMES
from hilkit.port.nic import Nic

__all__ = ["NIC"]

NIC = Nic(
    name="ppp",
    title="PPP over a serial line (RFC 1661/1662)",
    driver="hilkit.drivers.ppp.device:PppDevice",
    transport="serial",
    stat_names=STAT_NAMES,
    link_detect=False,  # link_up follows IPCP, not a carrier (unless watch_dcd)
)

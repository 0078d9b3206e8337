"""The USB CDC-ECM function's registration (``hilkit.port.nic.Nic``): what the rig schema,
the builder, the runner and the HIL suites know about an ECM device
(``docs/hardware/cdc_ecm.md``).

An ECM device is reached over USB, not SPI (``transport = "usb"``): its driver gets a
``hilkit.port.usb.UsbTarget`` and speaks pyusb; its model is a device on the virtual
USB bus (``[bus] kind = "usb"``, ``model = "cdc_ecm"``). It has no wire rate of its own
to compare with: the bus is what limits it, and the throughput suite reports the
share of the USB bus's bulk ceiling instead.
"""

from __future__ import annotations

from hilkit.drivers.cdc_ecm.driver import STAT_NAMES
from hilkit.port.nic import Nic

__all__ = ["NIC"]

NIC = Nic(
    name="cdc_ecm",
    title="USB CDC-ECM device",
    driver="hilkit.drivers.cdc_ecm:CdcEcmDevice",
    model="hilkit.drivers.cdc_ecm.model:CdcEcmModel",
    model_faults="hilkit.drivers.cdc_ecm.model:CdcEcmFaults",
    model_options="hilkit.drivers.cdc_ecm.model:CdcEcmOptions",
    transport="usb",
    stat_names=STAT_NAMES,
    link_detect=True,
)

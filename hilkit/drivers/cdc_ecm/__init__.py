"""USB CDC-ECM (Ethernet Control Model) NICs, spoken through pyusb (docs/hardware/cdc_ecm.md).

``CdcEcmDevice`` is the host driver. The device model the simulated rigs plug into
the virtual USB bus lives in ``hilkit.drivers.cdc_ecm.model`` and is not imported
here: a driver package never pulls in ``hilkit.sim``.
"""

from __future__ import annotations

from hilkit.drivers.cdc_ecm.driver import STAT_NAMES, CdcEcmDevice

__all__ = ["STAT_NAMES", "CdcEcmDevice"]

"""What every chip model shares: ``hilkit.sim.chip.ChipModel`` (bus, wire pump, pins,
/INT descriptor, bit errors, scheduled resets, counters) and ``SimPin``.

Each chip's own model lives in its NIC package (``hilkit/drivers/<chip>/model.py``,
docs/porting.md "Chip models") and is named by its ``Nic`` registration. A model
never imports its driver, and a driver never imports a model or this package.

``hilkit.sim.usb`` is the virtual USB bus, a pyusb backend, with the FT232H model
(docs/hardware/usb.md, docs/hardware/ft232h.md); USB NICs' device models plug into it.
"""

from hilkit.sim.chip import ChipModel
from hilkit.sim.pins import SimPin

__all__ = ["ChipModel", "SimPin"]

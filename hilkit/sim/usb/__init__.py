"""The virtual USB bus, loadable by name as a pyusb backend (docs/hardware/usb.md).

pyusb takes a backend object (``usb.core.find(backend=get_backend())``); pyftdi and
the rig load one by module name and call ``get_backend()`` on every enumeration, so
it returns the backend of one shared bus, ``default_bus()``, every time. A rig names
this module (``"hilkit.sim.usb"``) and plugs its models into ``default_bus()``.
"""

from __future__ import annotations

import threading

from hilkit.sim.usb.bus import VirtualBackend, VirtualUsbBus, ceiling_bps
from hilkit.sim.usb.device import BULK_MAX_PACKET, Nak, Setup, Speed, Stall, UsbDeviceModel

__all__ = [
    "BULK_MAX_PACKET", "Nak", "Setup", "Speed", "Stall", "UsbDeviceModel", "VirtualBackend",
    "VirtualUsbBus", "ceiling_bps", "default_bus", "get_backend",
]

_default: VirtualUsbBus | None = None
_default_lock = threading.Lock()


def default_bus() -> VirtualUsbBus:
    """The process's shared bus (number 1), made on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = VirtualUsbBus(1)
        return _default


def get_backend() -> VirtualBackend:
    """The default bus's backend -- the same object every call, as pyftdi needs."""
    return default_bus().backend

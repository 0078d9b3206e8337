"""Where a USB NIC is: the pyusb backend to enumerate with and how to pick the device.

A USB driver speaks pyusb and nothing else (docs/porting.md, "USB drivers"): it
gets a ``UsbTarget`` from the rig and calls ``usb.core.find(backend=target.backend,
...)`` with it. On hardware the backend is libusb's; on a simulated rig it is
the virtual bus (``hilkit.sim.usb``), which pyusb drives through the same
``IBackend`` interface -- the driver's code path is the same on both.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

__all__ = ["UsbTarget", "load_backend"]


@dataclass(frozen=True)
class UsbTarget:
    """A USB device as a rig names it. Criteria left None match anything."""

    backend: Any  # a usb.backend.IBackend; None: pyusb's default (libusb1, libusb0, openusb)
    vendor: int | None = None
    product: int | None = None
    serial: str | None = None  # iSerialNumber
    port_path: str | None = None  # "<bus>-<port>[.<port>...]", as in /sys/bus/usb/devices
    backend_module: str | None = None  # the module the backend came from, for messages

    def describe(self) -> str:
        """How the device is named in messages: "0525:a4a2 serial 123 at 1-1.2"."""
        parts = []
        if self.vendor is not None or self.product is not None:
            v = "*" if self.vendor is None else f"{self.vendor:04x}"
            p = "*" if self.product is None else f"{self.product:04x}"
            parts.append(f"{v}:{p}")
        if self.serial is not None:
            parts.append(f"serial {self.serial}")
        if self.port_path is not None:
            parts.append(f"at {self.port_path}")
        return " ".join(parts) or "any USB device"

    def matches(self, dev: Any) -> bool:
        """Does pyusb's ``usb.core.Device`` ``dev`` meet the criteria other than serial?

        (The serial is a string descriptor: reading it is a control transfer, left
        to the caller, who can tell a device that will not answer from one that differs.)
        """
        if self.vendor is not None and dev.idVendor != self.vendor:
            return False
        if self.product is not None and dev.idProduct != self.product:
            return False
        return self.port_path is None or port_path_of(dev) == self.port_path


def port_path_of(dev: Any) -> str | None:
    """``"<bus>-<p1>.<p2>..."`` of a pyusb device, as Linux names it in sysfs; None if
    the backend does not say."""
    try:
        ports = dev.port_numbers
    except Exception:  # libusb0 and some backends: not supported
        return None
    if not ports:
        return None
    return f"{dev.bus}-" + ".".join(str(p) for p in ports)


def load_backend(module: str | None) -> Any:
    """``module.get_backend()`` (the way pyusb and pyftdi load backends); None -> libusb1.

    Raises ``LookupError`` saying what is missing when the module or its library is absent.
    """
    name = module or "usb.backend.libusb1"
    try:
        mod = importlib.import_module(name)
    except ImportError as e:
        raise LookupError(f"cannot import the pyusb backend {name!r}: {e}") from None
    get = getattr(mod, "get_backend", None)
    if not callable(get):
        raise LookupError(f"module {name!r} has no get_backend(): not a pyusb backend")
    backend = get()
    if backend is None:
        lib = "libusb-1.0" if name == "usb.backend.libusb1" else name
        raise LookupError(f"the pyusb backend {name!r} found no library ({lib}); "
                          "install it: apt install libusb-1.0-0")
    return backend

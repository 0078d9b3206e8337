"""What libusb hands pyusb, for the virtual bus (docs/hardware/usb.md, "The backend"):
the descriptor objects parsed from a model's bytes (USB 2.0 §9.6), as libusb splits them,
and libusb's error codes with the exceptions pyusb raises for them on Linux.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field, replace
from typing import Final

import usb.core  # type: ignore[import-untyped]

from hilkit.sim.usb.descriptors import DT_CONFIG, DT_DEVICE, DT_ENDPOINT, DT_INTERFACE

__all__ = [
    "ConfigDesc", "DeviceDesc", "EndpointDesc", "InterfaceDesc", "fresh_interface",
    "parse_configuration", "parse_device", "usb_error",
]

# libusb's error codes (``enum libusb_error``), the errno pyusb pairs with each on
# Linux, and libusb's English message for it.
ERROR_IO: Final = -1
ERROR_INVALID_PARAM: Final = -2
ERROR_NO_DEVICE: Final = -4
ERROR_NOT_FOUND: Final = -5
ERROR_BUSY: Final = -6
ERROR_TIMEOUT: Final = -7
ERROR_OVERFLOW: Final = -8
ERROR_PIPE: Final = -9

_ERRORS: Final[dict[int, tuple[int, str]]] = {
    ERROR_IO: (errno.EIO, "Input/Output Error"),
    ERROR_INVALID_PARAM: (errno.EINVAL, "Invalid parameter"),
    ERROR_NO_DEVICE: (errno.ENODEV, "No such device (it may have been disconnected)"),
    ERROR_NOT_FOUND: (errno.ENOENT, "Entity not found"),
    ERROR_BUSY: (errno.EBUSY, "Resource busy"),
    ERROR_TIMEOUT: (errno.ETIMEDOUT, "Operation timed out"),
    ERROR_OVERFLOW: (errno.EOVERFLOW, "Overflow"),
    ERROR_PIPE: (errno.EPIPE, "Pipe error"),
}


def usb_error(code: int) -> Exception:
    """The exception pyusb's libusb1 backend raises for libusb ``code``: a
    ``USBTimeoutError`` for a timeout, a ``USBError(strerror, code, errno)`` otherwise."""
    err, text = _ERRORS[code]
    cls = usb.core.USBTimeoutError if code == ERROR_TIMEOUT else usb.core.USBError
    exc: Exception = cls(text, code, err)
    return exc


# -- descriptors as pyusb reads them (USB 2.0 §9.6) -------------------------------------------


@dataclass
class EndpointDesc:
    """An endpoint descriptor (USB 2.0 §9.6.6); ``extra_descriptors`` are the bytes of the
    class-specific descriptors after it, as libusb splits them."""

    bLength: int
    bDescriptorType: int
    bEndpointAddress: int
    bmAttributes: int
    wMaxPacketSize: int
    bInterval: int
    bRefresh: int = 0
    bSynchAddress: int = 0
    extra_descriptors: list[int] = field(default_factory=list)

    @property
    def packet_size(self) -> int:
        """Bits 10..0 of wMaxPacketSize (USB 2.0 §9.6.6); 12..11 are extra HS transactions."""
        return self.wMaxPacketSize & 0x7FF


@dataclass
class InterfaceDesc:
    """One alternate setting of an interface (USB 2.0 §9.6.5)."""

    bLength: int
    bDescriptorType: int
    bInterfaceNumber: int
    bAlternateSetting: int
    bNumEndpoints: int
    bInterfaceClass: int
    bInterfaceSubClass: int
    bInterfaceProtocol: int
    iInterface: int
    extra_descriptors: list[int] = field(default_factory=list)
    endpoints: list[EndpointDesc] = field(default_factory=list)


@dataclass
class ConfigDesc:
    """A configuration (USB 2.0 §9.6.3); ``interfaces[i]`` lists the alternate settings
    of the i-th interface in the order they appear (pyusb's logical indexes)."""

    bLength: int
    bDescriptorType: int
    wTotalLength: int
    bNumInterfaces: int
    bConfigurationValue: int
    iConfiguration: int
    bmAttributes: int
    bMaxPower: int
    extra_descriptors: list[int] = field(default_factory=list)
    interfaces: list[list[InterfaceDesc]] = field(default_factory=list)
    raw: bytes = b""

    def find_interface(self, number: int, alt: int) -> InterfaceDesc | None:
        for alts in self.interfaces:
            for i in alts:
                if i.bInterfaceNumber == number and i.bAlternateSetting == alt:
                    return i
        return None

    def interface_numbers(self) -> set[int]:
        return {alts[0].bInterfaceNumber for alts in self.interfaces if alts}


@dataclass
class DeviceDesc:
    """The device descriptor (USB 2.0 §9.6.1) plus where the device is, as libusb adds."""

    bLength: int
    bDescriptorType: int
    bcdUSB: int
    bDeviceClass: int
    bDeviceSubClass: int
    bDeviceProtocol: int
    bMaxPacketSize0: int
    idVendor: int
    idProduct: int
    bcdDevice: int
    iManufacturer: int
    iProduct: int
    iSerialNumber: int
    bNumConfigurations: int
    bus: int = 0
    address: int = 0
    port_number: int = 0
    port_numbers: tuple[int, ...] = ()
    speed: int = 0


def parse_device(blob: bytes) -> DeviceDesc:
    """The 18-byte device descriptor; ValueError if it is not one."""
    if len(blob) < 18 or blob[0] != 18 or blob[1] != DT_DEVICE:
        raise ValueError(f"not a device descriptor: {blob.hex()}")
    return DeviceDesc(*struct.unpack_from("<BBHBBBBHHHBBBB", blob))


def _descriptors(blob: bytes) -> list[bytes]:
    """Split a configuration blob at the bLength of each descriptor (USB 2.0 §9.5)."""
    out: list[bytes] = []
    pos = 0
    while pos < len(blob):
        n = blob[pos]
        if n < 2 or pos + n > len(blob):
            raise ValueError(f"bad descriptor length {n} at offset {pos} of a configuration")
        out.append(blob[pos:pos + n])
        pos += n
    return out


def parse_configuration(blob: bytes) -> ConfigDesc:
    """A whole configuration, split the way libusb does: what follows a descriptor up
    to the next interface or endpoint descriptor is that descriptor's extra
    (USB CDC functional descriptors after an interface, an IAD before one)."""
    descs = _descriptors(blob)
    if not descs or descs[0][1] != DT_CONFIG or len(descs[0]) < 9:
        raise ValueError("a configuration must start with a configuration descriptor")
    head = struct.unpack_from("<BBHBBBBB", descs[0])
    if head[2] != len(blob):
        raise ValueError(f"wTotalLength {head[2]} but the configuration is {len(blob)} bytes")
    cfg = ConfigDesc(*head)
    cfg.raw = bytes(blob)
    extra: list[int] = cfg.extra_descriptors
    current: InterfaceDesc | None = None
    for d in descs[1:]:
        kind = d[1]
        if kind == DT_INTERFACE:
            if len(d) < 9:
                raise ValueError("short interface descriptor")
            current = InterfaceDesc(*struct.unpack_from("<BBBBBBBBB", d))
            last = cfg.interfaces[-1] if cfg.interfaces else None
            if last and last[0].bInterfaceNumber == current.bInterfaceNumber:
                last.append(current)
            else:
                cfg.interfaces.append([current])
            extra = current.extra_descriptors
        elif kind == DT_ENDPOINT:
            if current is None or len(d) < 7:
                raise ValueError("an endpoint descriptor outside an interface")
            ep = EndpointDesc(*struct.unpack_from("<BBBBHB", d))
            if len(d) >= 9:
                ep.bRefresh, ep.bSynchAddress = d[7], d[8]
            current.endpoints.append(ep)
            extra = ep.extra_descriptors
        elif kind in (DT_CONFIG, DT_DEVICE):
            raise ValueError(f"descriptor type {kind} inside a configuration")
        else:
            extra.extend(d)
    for alts in cfg.interfaces:
        for i in alts:
            if len(i.endpoints) != i.bNumEndpoints:
                raise ValueError(f"interface {i.bInterfaceNumber} alt {i.bAlternateSetting}: "
                                 f"bNumEndpoints {i.bNumEndpoints}, {len(i.endpoints)} follow")
    return cfg


# -- the backend -------------------------------------------------------------------------------


def fresh_interface(i: InterfaceDesc) -> InterfaceDesc:
    return replace(i, extra_descriptors=list(i.extra_descriptors))

"""USB descriptors as bytes (USB 2.0 §9.6), for device models on the virtual bus.

A model states its descriptors the way the silicon stores them: the 18-byte
device descriptor, each configuration as one blob (the 9-byte header, then its
interfaces, class-specific descriptors and endpoints in order, ``wTotalLength``
covering all), string descriptors by index. The virtual bus serves these bytes
to GET_DESCRIPTOR and parses them into what pyusb sees, so a model cannot say
one thing to enumeration and another to a request.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

__all__ = [
    "DT_CONFIG",
    "DT_CS_INTERFACE",
    "DT_DEVICE",
    "DT_ENDPOINT",
    "DT_INTERFACE",
    "DT_STRING",
    "EP_BULK",
    "EP_CONTROL",
    "EP_IN",
    "EP_INTERRUPT",
    "EP_ISOCHRONOUS",
    "configuration",
    "device",
    "endpoint",
    "interface",
    "langids",
    "string",
]

# USB 2.0 Table 9-5: descriptor types
DT_DEVICE: Final = 0x01
DT_CONFIG: Final = 0x02
DT_STRING: Final = 0x03
DT_INTERFACE: Final = 0x04
DT_ENDPOINT: Final = 0x05
DT_CS_INTERFACE: Final = 0x24  # USB CDC 1.2 §5.2.3: class-specific interface

# USB 2.0 §9.6.6 bmAttributes bits 1..0: transfer type; bEndpointAddress bit 7: IN
EP_CONTROL: Final = 0
EP_ISOCHRONOUS: Final = 1
EP_BULK: Final = 2
EP_INTERRUPT: Final = 3
EP_IN: Final = 0x80


def device(*, vendor: int, product: int, bcd_device: int = 0x0100, bcd_usb: int = 0x0200,
           cls: int = 0, subclass: int = 0, protocol: int = 0, max_packet0: int = 64,
           i_manufacturer: int = 0, i_product: int = 0, i_serial: int = 0,
           num_configurations: int = 1) -> bytes:
    """The device descriptor (USB 2.0 §9.6.1, 18 bytes)."""
    return struct.pack("<BBHBBBBHHHBBBB", 18, DT_DEVICE, bcd_usb, cls, subclass, protocol,
                       max_packet0, vendor, product, bcd_device, i_manufacturer, i_product,
                       i_serial, num_configurations)


def configuration(value: int, body: Iterable[bytes], *, num_interfaces: int,
                  i_configuration: int = 0, attributes: int = 0x80,
                  max_power_ma: int = 100) -> bytes:
    """A whole configuration (USB 2.0 §9.6.3): header + ``body`` (interfaces, class
    descriptors, endpoints in the order the host reads them). bMaxPower is in 2 mA units."""
    blob = b"".join(body)
    return struct.pack("<BBHBBBBB", 9, DT_CONFIG, 9 + len(blob), num_interfaces, value,
                       i_configuration, attributes, max_power_ma // 2) + blob


def interface(number: int, alt: int, *, num_endpoints: int, cls: int, subclass: int = 0,
              protocol: int = 0, i_interface: int = 0) -> bytes:
    """An interface descriptor (USB 2.0 §9.6.5, 9 bytes)."""
    return struct.pack("<BBBBBBBBB", 9, DT_INTERFACE, number, alt, num_endpoints, cls,
                       subclass, protocol, i_interface)


def endpoint(address: int, kind: int, max_packet: int, interval: int = 0) -> bytes:
    """An endpoint descriptor (USB 2.0 §9.6.6, 7 bytes); ``kind`` is EP_BULK etc."""
    return struct.pack("<BBBBHB", 7, DT_ENDPOINT, address, kind, max_packet, interval)


def string(text: str) -> bytes:
    """A string descriptor (USB 2.0 §9.6.7): UTF-16LE, at most 126 characters."""
    data = text.encode("utf-16-le")
    if len(data) > 252:
        raise ValueError(f"string descriptor too long: {len(text)} characters")
    return bytes((2 + len(data), DT_STRING)) + data


def langids(ids: Iterable[int] = (0x0409,)) -> bytes:
    """String descriptor 0: the LANGID table (USB 2.0 §9.6.7); 0x0409 is US English."""
    body = b"".join(struct.pack("<H", i) for i in ids)
    return bytes((2 + len(body), DT_STRING)) + body

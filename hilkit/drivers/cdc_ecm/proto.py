"""USB CDC / ECM constants and small pure helpers, shared by the host driver and the
device model (docs/hardware/cdc_ecm.md).

Names follow the USB CDC 1.2 and ECM 1.2 specifications; each group cites its
section. Nothing here does I/O.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "BCD_CDC",
    "CDC_CLASS_COMM",
    "CDC_CLASS_DATA",
    "CDC_PROTO_NONE",
    "CDC_PROTO_VENDOR",
    "CDC_SUBCLASS_ACM",
    "CDC_SUBCLASS_ECM",
    "CDC_SUBCLASS_NCM",
    "CONNECTION_SPEED_CHANGE",
    "CS_INTERFACE",
    "FD_ETHERNET",
    "FD_ETHERNET_LEN",
    "FD_HEADER",
    "FD_HEADER_LEN",
    "FD_NCM",
    "FD_UNION",
    "FD_UNION_LEN",
    "GET_ETHERNET_PM_PATTERN_FILTER",
    "GET_ETHERNET_STATISTIC",
    "MAC_STRING_LEN",
    "MAX_SEGMENT_SIZE",
    "MC_FILTERS_IMPERFECT",
    "NETWORK_CONNECTION",
    "NOTIFICATION_HEADER_LEN",
    "PACKET_TYPE_ALL",
    "PACKET_TYPE_ALL_MULTICAST",
    "PACKET_TYPE_BROADCAST",
    "PACKET_TYPE_DIRECTED",
    "PACKET_TYPE_MULTICAST",
    "PACKET_TYPE_PROMISCUOUS",
    "REQ_TYPE_CLASS_IFACE_IN",
    "REQ_TYPE_CLASS_IFACE_OUT",
    "RESPONSE_AVAILABLE",
    "SET_ETHERNET_MULTICAST_FILTERS",
    "SET_ETHERNET_PACKET_FILTER",
    "SET_ETHERNET_PM_PATTERN_FILTER",
    "ethernet_descriptor",
    "header_descriptor",
    "notification",
    "parse_functional",
    "parse_notification",
    "union_descriptor",
]

# USB CDC 1.2 §4.2 Table 3 / §4.5 Table 6: interface class codes
CDC_CLASS_COMM: Final = 0x02  # Communications Interface Class
CDC_CLASS_DATA: Final = 0x0A  # Data Interface Class
# USB CDC 1.2 §4.3 Table 4: Communications Class subclass codes
CDC_SUBCLASS_ACM: Final = 0x02  # Abstract Control Model (RNDIS uses it with protocol 0xFF)
CDC_SUBCLASS_ECM: Final = 0x06  # Ethernet Networking Control Model
CDC_SUBCLASS_NCM: Final = 0x0D  # Network Control Model
# USB CDC 1.2 §4.4 Table 5: Communications Class protocol codes
CDC_PROTO_NONE: Final = 0x00
CDC_PROTO_VENDOR: Final = 0xFF  # vendor specific (RNDIS's control interface)

# USB CDC 1.2 §5.2.3 Table 12: bDescriptorType of a functional descriptor
CS_INTERFACE: Final = 0x24
# USB CDC 1.2 §5.2.3 Table 13: bDescriptorSubtype
FD_HEADER: Final = 0x00  # §5.2.3.1
FD_UNION: Final = 0x06  # §5.2.3.2
FD_ETHERNET: Final = 0x0F  # ECM 1.2 §5.4
FD_NCM: Final = 0x1A  # NCM 1.0 §5.2.1
# bLength of the ones ECM needs (one slave interface in the Union)
FD_HEADER_LEN: Final = 5
FD_UNION_LEN: Final = 5
FD_ETHERNET_LEN: Final = 13
BCD_CDC: Final = 0x0120  # CDC release 1.2
# ECM 1.2 §5.4 Table 3: wNumberMCFilters bit 15 = imperfect (hashed) filtering
MC_FILTERS_IMPERFECT: Final = 0x8000
# ECM 1.2 §5.4: iMACAddress names a string of 12 hexadecimal digits
MAC_STRING_LEN: Final = 12
# ECM 1.2 §5.4: the usual wMaxSegmentSize, an Ethernet frame without FCS
MAX_SEGMENT_SIZE: Final = 1514

# USB CDC 1.2 §6.2 bmRequestType of class requests to an interface
REQ_TYPE_CLASS_IFACE_OUT: Final = 0x21
REQ_TYPE_CLASS_IFACE_IN: Final = 0xA1
# ECM 1.2 §6.2 Table 6: class-specific requests
SET_ETHERNET_MULTICAST_FILTERS: Final = 0x40  # §6.2.1
SET_ETHERNET_PM_PATTERN_FILTER: Final = 0x41  # §6.2.2
GET_ETHERNET_PM_PATTERN_FILTER: Final = 0x42  # §6.2.3
SET_ETHERNET_PACKET_FILTER: Final = 0x43  # §6.2.4
GET_ETHERNET_STATISTIC: Final = 0x44  # §6.2.5

# ECM 1.2 §6.2.4 Table 8: packet filter bitmap (wValue of SET_ETHERNET_PACKET_FILTER)
PACKET_TYPE_PROMISCUOUS: Final = 0x01
PACKET_TYPE_ALL_MULTICAST: Final = 0x02
PACKET_TYPE_DIRECTED: Final = 0x04
PACKET_TYPE_BROADCAST: Final = 0x08
PACKET_TYPE_MULTICAST: Final = 0x10
PACKET_TYPE_ALL: Final = 0x1F

# ECM 1.2 §6.3 Table 11 / CDC 1.2 §6.3: notification codes
NETWORK_CONNECTION: Final = 0x00  # ECM §6.3.1
RESPONSE_AVAILABLE: Final = 0x01  # CDC §6.3.2 (encapsulated commands; RNDIS)
CONNECTION_SPEED_CHANGE: Final = 0x2A  # ECM §6.3.3
NOTIFICATION_HEADER_LEN: Final = 8


def parse_functional(extra: bytes) -> list[tuple[int, bytes]]:
    """The CS_INTERFACE descriptors in an interface's extra bytes (CDC 1.2 §5.2.3):
    ``(subtype, whole descriptor)`` in order. Other descriptor types are skipped;
    a truncated or zero-length descriptor ends the walk (a host must not loop)."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i + 2 <= len(extra):
        length = extra[i]
        if length < 2 or i + length > len(extra):
            break
        if extra[i + 1] == CS_INTERFACE and length >= 3:
            out.append((extra[i + 2], bytes(extra[i:i + length])))
        i += length
    return out


def notification(code: int, value: int, index: int, data: bytes = b"") -> bytes:
    """A notification as sent on the interrupt IN endpoint (CDC 1.2 §6.3): the
    8-byte header (bmRequestType 0xA1, code, wValue, wIndex, wLength) then ``data``."""
    return struct.pack("<BBHHH", REQ_TYPE_CLASS_IFACE_IN, code, value, index,
                       len(data)) + data


def parse_notification(blob: bytes) -> tuple[int, int, int, bytes]:
    """``(code, wValue, wIndex, data)`` of a notification (CDC 1.2 §6.3); ValueError
    if shorter than its header. ``data`` is what follows, possibly less than wLength
    (a split CONNECTION_SPEED_CHANGE, ECM 1.2 §6.3.3, brings the rest in the next packet)."""
    if len(blob) < NOTIFICATION_HEADER_LEN:
        raise ValueError(f"notification of {len(blob)} bytes, header is 8")
    _, code, value, index, length = struct.unpack_from("<BBHHH", blob)
    return code, value, index, bytes(blob[8:8 + length])


def header_descriptor(bcd_cdc: int = BCD_CDC) -> bytes:
    """Header functional descriptor (CDC 1.2 §5.2.3.1)."""
    return struct.pack("<BBBH", FD_HEADER_LEN, CS_INTERFACE, FD_HEADER, bcd_cdc)


def union_descriptor(master: int, slave: int) -> bytes:
    """Union functional descriptor with one slave interface (CDC 1.2 §5.2.3.2)."""
    return struct.pack("<BBBBB", FD_UNION_LEN, CS_INTERFACE, FD_UNION, master, slave)


def ethernet_descriptor(*, i_mac: int, statistics: int = 0,
                        max_segment: int = MAX_SEGMENT_SIZE, mc_filters: int = 0,
                        power_filters: int = 0) -> bytes:
    """Ethernet Networking functional descriptor (ECM 1.2 §5.4, 13 bytes)."""
    return struct.pack("<BBBBIHHB", FD_ETHERNET_LEN, CS_INTERFACE, FD_ETHERNET, i_mac,
                       statistics, max_segment, mc_filters, power_filters)

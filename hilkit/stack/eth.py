"""Ethernet II framing (IEEE 802.3 clause 3.2.6 with the EtherType interpretation)."""

from __future__ import annotations

import struct

HEADER_LEN = 14
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
BROADCAST_MAC = b"\xff" * 6

_HDR = struct.Struct("!6s6sH")


def header(dst: bytes, src: bytes, ethertype: int) -> bytes:
    return _HDR.pack(dst, src, ethertype)


def is_group(mac: bytes | memoryview) -> bool:
    """Broadcast or multicast: the I/G bit, first bit on the wire."""
    return bool(mac[0] & 1)


def mac_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)

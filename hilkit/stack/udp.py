"""UDP (RFC 768): header parse and build, and what a received datagram is."""

from __future__ import annotations

import struct
from typing import NamedTuple

from hilkit.port import checksum
from hilkit.stack.ipv4 import PROTO_UDP

HEADER_LEN = 8
EPHEMERAL_FIRST = 49152  # RFC 6335 §6 dynamic ports
EPHEMERAL_LAST = 65535

_HDR = struct.Struct("!HHHH")


def parse(seg: memoryview, src: int, dst: int, checked: bool = False,
          ) -> tuple[int, int, memoryview] | str:
    """(source port, destination port, payload) or the reason it is refused; ``checked``:
    the device vouched for the checksum (``Offloads.rx_checksum``)."""
    if len(seg) < HEADER_LEN:
        return "udp.short"
    sport, dport, length, csum = _HDR.unpack_from(seg)
    if length < HEADER_LEN or length > len(seg):
        return "udp.bad_length"
    seg = seg[:length]
    if csum and not checked and not checksum.verify(
            seg, checksum.pseudo_header_sum(src, dst, PROTO_UDP, length)):
        return "udp.bad_checksum"
    if dport == 0:
        return "udp.port_zero"
    return sport, dport, seg[HEADER_LEN:]


def header(src: int, sport: int, dst: int, dport: int, payload: checksum.Buffer) -> bytes:
    """The 8-byte header for ``payload`` with its checksum."""
    length = HEADER_LEN + len(payload)
    pseudo = checksum.pseudo_header_sum(src, dst, PROTO_UDP, length)
    c = checksum.checksum(payload, checksum.ones_sum(_HDR.pack(sport, dport, length, 0), pseudo))
    # RFC 768: a computed zero is sent as all ones; zero means "no checksum".
    return _HDR.pack(sport, dport, length, c or 0xFFFF)


class Datagram(NamedTuple):
    """A received datagram and where it was going, as ``IP_PKTINFO`` tells on Linux.

    A service that answers checks ``broadcast`` first: answering a datagram
    sent to a broadcast or multicast address turns one spoofed packet into
    many (reflection, amplification).
    """

    data: bytes
    addr: tuple[str, int]  # the sender
    dst: str  # the destination address in its IP header
    broadcast: bool  # sent to a broadcast or multicast address, at the IP or the link layer

"""IPv4 addresses as ints inside the stack; dotted strings at the API edge."""

from __future__ import annotations

import socket
import struct

BROADCAST = 0xFFFFFFFF
ANY = 0


def ip_to_int(addr: str | int) -> int:
    if isinstance(addr, int):
        if not 0 <= addr <= BROADCAST:
            raise ValueError(f"not an IPv4 address: {addr!r}")
        return addr
    try:
        return int.from_bytes(socket.inet_aton(addr), "big") if addr.count(".") == 3 else _bad(addr)
    except OSError:
        return _bad(addr)


def _bad(addr: str) -> int:
    raise ValueError(f"not an IPv4 address: {addr!r}")


def int_to_ip(addr: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", addr))


def prefix_to_mask(prefix: int) -> int:
    if not 0 <= prefix <= 32:
        raise ValueError(f"prefix length out of range: {prefix}")
    return (BROADCAST << (32 - prefix)) & BROADCAST


def mask_to_prefix(mask: int) -> int:
    prefix = bin(mask).count("1")
    if prefix_to_mask(prefix) != mask:
        raise ValueError(f"not a contiguous netmask: {int_to_ip(mask)}")
    return prefix


def parse_cidr(text: str) -> tuple[int, int]:
    """'192.168.5.4/24' -> (address, netmask)."""
    addr, sep, plen = text.partition("/")
    if not sep or not plen.isdigit():
        raise ValueError(f"expected ADDRESS/PREFIXLEN, got {text!r}")
    return ip_to_int(addr), prefix_to_mask(int(plen))


def is_multicast(addr: int) -> bool:
    return addr >> 28 == 0xE  # 224.0.0.0/4 (RFC 5771)

"""Interface names and IPv4 host addresses as a person writes them (rig files,
command lines): why one is refused, in words that name the problem.

One place, so `hilkit serve`, the rig schema and the TAP driver refuse the
same things the same way. Every function returns a reason or a value and never
raises: its input comes from a file or a command line.
"""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Final

IFNAMSIZ: Final = 16  # <linux/if.h>: a name is at most 15 bytes and a NUL
_SPACE_BYTES: Final = frozenset(b" \t\n\v\f\r\xa0")  # the kernel's isspace()
_LIMITED_BROADCAST: Final = ipaddress.IPv4Address("255.255.255.255")


def show(value: str, limit: int = 40) -> str:
    """``value`` quoted as TOML and JSON write it, shortened: a bad value may be megabytes long."""
    if len(value) <= limit:
        return json.dumps(value)
    return f"{json.dumps(value[:limit])}... ({len(value)} characters)"


def ifname_problem(name: str) -> str | None:
    """Why Linux would refuse ``name`` as an interface name (``dev_valid_name``), or None.

    Any whitespace is refused, also where the kernel would take it (a UTF-8
    em space): no ``ip link`` command could name such an interface plainly.
    """
    if not name:
        return "is empty"
    if "\0" in name:
        return f"{show(name)} holds a NUL character"
    try:
        raw = os.fsencode(name)
    except UnicodeError:
        return f"{show(name)} cannot be encoded as a name"
    if len(raw) >= IFNAMSIZ:
        return (f"{show(name)} is {len(raw)} bytes long; an interface name has at most "
                f"{IFNAMSIZ - 1} (IFNAMSIZ)")
    if name in (".", ".."):
        return f"{show(name)} is not an interface name"
    if "/" in name or ":" in name:
        return f"{show(name)} holds {show('/' if '/' in name else ':')}, which a name cannot"
    if any(c.isspace() for c in name) or _SPACE_BYTES.intersection(raw):
        return f"{show(name)} holds whitespace, which a name cannot"
    return None


def parse_ipv4(text: str) -> ipaddress.IPv4Address | str:
    """A dotted-quad IPv4 address, strictly (no octal, hex or short forms), or why not."""
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return f"{show(text)} is not an IPv4 address (a.b.c.d)"


def host_problem(a: ipaddress.IPv4Address,
                 net: ipaddress.IPv4Network | None = None) -> str | None:
    """Why ``a`` cannot be one host's address (on ``net``, when known), or None."""
    if a.is_unspecified:
        return "0.0.0.0 is the unspecified address, not a host's"
    if a == _LIMITED_BROADCAST:
        return "255.255.255.255 is the limited broadcast address, not a host's"
    if a.is_loopback:
        return f"{a} is a loopback address (127.0.0.0/8), not for a link"
    if a.is_multicast:
        return f"{a} is a multicast address (224.0.0.0/4), not a host's"
    if a.is_reserved:
        return f"{a} is reserved (240.0.0.0/4, RFC 1112 §4), not a host's"
    if net is not None and net.prefixlen <= 30:  # /31 and /32 have no such addresses (RFC 3021)
        if a == net.network_address:
            return f"{a} is the network address of {net}, not a host"
        if a == net.broadcast_address:
            return f"{a} is the broadcast address of {net}"
    return None


def host_interface(text: str) -> ipaddress.IPv4Interface | str:
    """``ADDRESS/PREFIX`` naming one host on its network (``192.168.5.4/24``), or why not."""
    addr, sep, plen = text.partition("/")
    if not sep:
        return f'expected ADDRESS/PREFIX such as "192.168.5.4/24", got {show(text)}'
    if not (plen.isascii() and plen.isdigit()):
        return (f"prefix length {show(plen)} in {show(text)} is not a number (write the "
                f"prefix length, e.g. /24, not a netmask)")
    if len(plen) > 2 or int(plen) > 32:  # never int() of thousands of digits
        shown = plen if len(plen) <= 12 else f"{plen[:12]}... ({len(plen)} characters)"
        return f"prefix length {shown} in {show(text)} is out of range 0..32"
    a = parse_ipv4(addr)
    if isinstance(a, str):
        return a
    iface = ipaddress.IPv4Interface(f"{a}/{int(plen)}")
    why = host_problem(a, iface.network)
    return why if why is not None else iface

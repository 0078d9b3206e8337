"""The few Linux ioctls a TUN/TAP driver needs, as plain constants and helpers.

Names follow the kernel headers they come from, so a reader can grep them.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

from hilkit.port.names import IFNAMSIZ, ifname_problem

TUN_PATH = "/dev/net/tun"

# <linux/if_tun.h>
TUNSETIFF = 0x400454CA  # _IOW('T', 202, int)
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000

# <linux/sockios.h>
SIOCGIFFLAGS = 0x8913
SIOCGIFMTU = 0x8921

# <linux/if.h>
IFF_UP = 0x0001
IFF_RUNNING = 0x0040

# struct ifreq: a 16-byte name, then a 24-byte union (flags: short, mtu: int, ...);
# native byte order, no padding added by struct.
_IFREQ_SHORT = struct.Struct(f"={IFNAMSIZ}sH22x")
_IFREQ_INT = struct.Struct(f"={IFNAMSIZ}si20x")


def check_ifname(name: str) -> bytes:
    """Encode an interface name, refusing what the kernel would refuse."""
    why = ifname_problem(name)
    if why is not None:
        raise ValueError(f"bad interface name: {why}")
    return os.fsencode(name)


def tun_set_iff(fd: int, name: bytes, flags: int) -> str:
    """Attach ``fd`` to interface ``name`` (created if absent); return the kernel's name."""
    res = fcntl.ioctl(fd, TUNSETIFF, _IFREQ_SHORT.pack(name, flags))
    kernel_name: bytes = _IFREQ_SHORT.unpack(res)[0]
    return kernel_name.rstrip(b"\0").decode()


def if_mtu(ctl: socket.socket, name: str) -> int:
    res = fcntl.ioctl(ctl.fileno(), SIOCGIFMTU, _IFREQ_INT.pack(name.encode(), 0))
    return int(_IFREQ_INT.unpack(res)[1])


def if_flags(ctl: socket.socket, name: str) -> int:
    res = fcntl.ioctl(ctl.fileno(), SIOCGIFFLAGS, _IFREQ_SHORT.pack(name.encode(), 0))
    return int(_IFREQ_SHORT.unpack(res)[1])

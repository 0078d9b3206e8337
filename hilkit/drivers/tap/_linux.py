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
TUNSETOFFLOAD = 0x400454D0  # _IOW('T', 208, unsigned int)
TUNSETVNETHDRSZ = 0x400454D8  # _IOW('T', 216, int)
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01  # we take frames with partial checksums
TUN_F_TSO4 = 0x02  # and IPv4 TCP segments longer than the MTU

# <linux/virtio_net.h>: struct virtio_net_hdr, in the host's byte order on a TAP
# (the legacy layout: virtio 1.2 §5.1.6, "Legacy Interface: Device Operation").
VIRTIO_NET_HDR = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size,
VIRTIO_NET_HDR_LEN = VIRTIO_NET_HDR.size  # csum_start, csum_offset: 10 bytes
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1

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


def tun_set_offload(fd: int) -> None:
    """Take the kernel's partial checksums and unsegmented TCP (``TUNSETOFFLOAD``)."""
    fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("=i", VIRTIO_NET_HDR_LEN))
    fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4)


def if_mtu(ctl: socket.socket, name: str) -> int:
    res = fcntl.ioctl(ctl.fileno(), SIOCGIFMTU, _IFREQ_INT.pack(name.encode(), 0))
    return int(_IFREQ_INT.unpack(res)[1])


def if_flags(ctl: socket.socket, name: str) -> int:
    res = fcntl.ioctl(ctl.fileno(), SIOCGIFFLAGS, _IFREQ_SHORT.pack(name.encode(), 0))
    return int(_IFREQ_SHORT.unpack(res)[1])

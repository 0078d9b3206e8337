"""TAP (Ethernet frames) and TUN (raw IPv4 packets) devices on Linux.

The descriptor comes from ``/dev/net/tun`` and is non-blocking. A name that
names a persistent interface (``ip tuntap add dev tap0 mode tap``) attaches to
it; otherwise the kernel creates the interface, and removes it on ``close()``,
unless ``create=False`` asks for an existing interface only.

The interface is born in the network namespace of the thread that opens the
device, and the control socket used for MTU and link state is made in the
same call, so it looks at the same namespace (see ``hilkit.rig.netns``).
"""

from __future__ import annotations

import errno
import os
import socket
from typing import ClassVar, Self

from hilkit.drivers.tap import _linux as lx
from hilkit.port.device import (
    ETH_HEADER_LEN,
    NO_OFFLOADS,
    DeviceClosed,
    DeviceCounters,
    LinkType,
    Offloads,
    random_mac,
)
from hilkit.port.offload import l4_checksum_ok, partial_checksum_at

DEFAULT_MTU = 1500
_READ_SIZE = 65536 + ETH_HEADER_LEN
# With offloads: the largest IPv4 datagram we hand the kernel to cut (its own TSO
# limit, GSO_MAX_SIZE, is 64 KiB less a little).
TSO_MAX = 65535 - ETH_HEADER_LEN
_VNET = lx.VIRTIO_NET_HDR
_VNET_LEN = lx.VIRTIO_NET_HDR_LEN
_NO_VNET = bytes(_VNET_LEN)
_ETHERTYPE_IPV4 = b"\x08\x00"
_KERNEL_CHECKED = lx.VIRTIO_NET_HDR_F_NEEDS_CSUM | lx.VIRTIO_NET_HDR_F_DATA_VALID
# A full queue or a link that is down: the frame is refused, not damaged.
_DROP_ERRNOS = frozenset({errno.EAGAIN, errno.ENOBUFS, errno.EIO, errno.ENETDOWN})


class _TunTap:
    _IFF_MODE: ClassVar[int]
    _HEADER_LEN: ClassVar[int]  # link header the MTU does not include

    name: str
    link_type: LinkType
    mac: bytes | None
    mtu: int
    counters: DeviceCounters

    def __init__(self, name: str, mtu: int | None, create: bool, offload: bool = False) -> None:
        raw_name = lx.check_ifname(name)
        if mtu is not None and mtu < 68:
            raise ValueError(f"mtu {mtu} is below the IPv4 minimum of 68")
        if not create:
            try:
                socket.if_nametoindex(name)  # looks in the calling thread's namespace
            except OSError:
                raise FileNotFoundError(
                    errno.ENODEV, f"no interface {name!r} in this network namespace "
                    f"(create it: ip tuntap add dev {name} mode "
                    f"{'tap' if self._IFF_MODE == lx.IFF_TAP else 'tun'})") from None
        fd = os.open(lx.TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        ctl: socket.socket | None = None
        try:
            try:
                self.name = lx.tun_set_iff(fd, raw_name, self._IFF_MODE | lx.IFF_NO_PI | (
                    lx.IFF_VNET_HDR if offload else 0))
            except OSError as e:
                raise OSError(e.errno, f"TUNSETIFF {name}: {e.strerror}") from e
            if offload:
                try:
                    lx.tun_set_offload(fd)
                except OSError as e:
                    raise OSError(e.errno, f"TUNSETOFFLOAD {name}: {e.strerror}") from e
            ctl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            if mtu is None:
                try:
                    mtu = lx.if_mtu(ctl, self.name)
                except OSError:
                    mtu = DEFAULT_MTU
        except BaseException:
            os.close(fd)
            if ctl is not None:
                ctl.close()
            raise
        self._fd: int | None = fd
        self._ctl: socket.socket | None = ctl
        self.mtu = mtu
        self.counters = DeviceCounters()
        self.offloads: Offloads = NO_OFFLOADS
        if offload:
            self.offloads = Offloads(rx_checksum=True, tx_checksum=True,
                                     tso=TSO_MAX if self._HEADER_LEN else 0)
            self.send = self._send_vnet  # type: ignore[method-assign]
            self._read_size = _VNET_LEN + _READ_SIZE
        else:
            self._read_size = _READ_SIZE

    # -- the Device contract -------------------------------------------------

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        fd = self._open_fd()
        n = frame.nbytes if isinstance(frame, memoryview) else len(frame)
        c = self.counters
        if n < max(self._HEADER_LEN, 1) or n > self.mtu + self._HEADER_LEN:
            c.tx_errors += 1
            return False
        return self._write(fd, (frame,), n, n)

    def _write(self, fd: int, parts: tuple[bytes | bytearray | memoryview, ...], n: int,
               total: int) -> bool:
        """Write one frame of ``n`` bytes as ``parts`` (``total`` bytes with any header)."""
        c = self.counters
        try:
            written = os.writev(fd, parts)
        except OSError as e:
            if e.errno in _DROP_ERRNOS:
                c.tx_dropped += 1
            else:
                c.tx_errors += 1
            return False
        if written != total:
            c.tx_errors += 1
            return False
        c.tx_frames += 1
        c.tx_bytes += n
        return True

    def poll(self, budget: int) -> list[bytes]:
        fd = self._open_fd()
        c = self.counters
        out: list[bytes] = []
        vnet = self.offloads is not NO_OFFLOADS
        size = self._read_size
        for _ in range(budget):  # frames we drop use up budget too: bounded work
            try:
                data = os.read(fd, size)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno != errno.EIO:  # EIO: the interface is down, nothing to read
                    c.rx_errors += 1
                break
            if not data:
                c.rx_errors += 1
                break
            if vnet:
                flags = data[0]
                data = data[_VNET_LEN:]
                # The kernel made it (partial checksum) or checked it (data valid); else
                # it came from a wire through a bridge, and we vouch for nothing unseen.
                l3 = self._HEADER_LEN
                if not flags & _KERNEL_CHECKED and (not l3 or data[12:14] == _ETHERTYPE_IPV4) \
                        and not l4_checksum_ok(data, l3):
                    c.rx_errors += 1
                    continue
            if not self._accept(data):
                c.rx_dropped += 1
                continue
            c.rx_frames += 1
            c.rx_bytes += len(data)
            out.append(data)
        return out

    def _send_vnet(self, frame: bytes | bytearray | memoryview) -> bool:
        """``send`` with a virtio-net header before the frame (``offload=True``): it tells
        the kernel which checksum to complete and whether to cut a long TCP segment."""
        fd = self._open_fd()
        n = frame.nbytes if isinstance(frame, memoryview) else len(frame)
        c = self.counters
        l3 = self._HEADER_LEN
        hdr: bytes | None = _NO_VNET
        if n > self.mtu + l3 or (n >= l3 + 40 and (
                not l3 or frame[12:14] == _ETHERTYPE_IPV4)):
            hdr = self._vnet_header(frame, n, l3)
        if hdr is None or n < max(l3, 1):
            c.tx_errors += 1
            return False
        return self._write(fd, (hdr, frame), n, n + _VNET_LEN)

    def _vnet_header(self, frame: bytes | bytearray | memoryview, n: int, l3: int
                     ) -> bytes | None:
        """The header for an IPv4 frame, or None when it is too long and not a TCP
        segment the kernel can cut."""
        where = partial_checksum_at(frame, l3) if n >= l3 + 20 and frame[l3] >> 4 == 4 \
            else None
        if n <= self.mtu + l3:
            if where is None:
                return _NO_VNET
            return _VNET.pack(lx.VIRTIO_NET_HDR_F_NEEDS_CSUM, lx.VIRTIO_NET_HDR_GSO_NONE,
                              0, 0, where[0], where[1])
        if where is None or frame[l3 + 9] != 6 or n > l3 + self.offloads.tso:
            return None  # only partial TCP is cut (the kernel completes each checksum)
        start = where[0]
        hdr_len = start + (frame[start + 12] >> 4) * 4
        return _VNET.pack(lx.VIRTIO_NET_HDR_F_NEEDS_CSUM, lx.VIRTIO_NET_HDR_GSO_TCPV4,
                          hdr_len, self.mtu + l3 - hdr_len, start, where[1])

    @property
    def link_up(self) -> bool:
        """Administratively up and running (carrier and operational state)."""
        if self._ctl is None:
            return False
        try:
            flags = lx.if_flags(self._ctl, self.name)
        except OSError:  # the interface is gone
            return False
        want = lx.IFF_UP | lx.IFF_RUNNING
        return flags & want == want

    def fileno(self) -> int | None:
        """The TUN/TAP descriptor; None once closed."""
        return self._fd

    def close(self) -> None:
        fd, self._fd = self._fd, None
        ctl, self._ctl = self._ctl, None
        if ctl is not None:
            ctl.close()
        if fd is not None:
            os.close(fd)

    # -- conveniences --------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._fd is None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else f"fd={self._fd}"
        return f"{type(self).__name__}({self.name!r}, mtu={self.mtu}, {state})"

    # -- internals -----------------------------------------------------------

    def _open_fd(self) -> int:
        if self._fd is None:
            raise DeviceClosed(errno.EBADF, f"{self.name} is closed")
        return self._fd

    def _accept(self, data: bytes) -> bool:
        return True


class TapDevice(_TunTap):
    """A TAP interface: Ethernet II frames (no FCS) in both directions.

    ``mac`` is hilkit's own address on the wire, not the kernel interface's;
    by default a random locally administered one. ``mtu`` defaults to the
    interface's MTU. ``offload=True`` opens it with a virtio-net header
    (``IFF_VNET_HDR``, ``TUNSETOFFLOAD``): checksums and TCP segmentation are left to
    the kernel, both ways (``offloads``; docs/porting.md, "Offloads").
    """

    link_type = LinkType.ETHERNET
    _IFF_MODE: ClassVar[int] = lx.IFF_TAP
    _HEADER_LEN: ClassVar[int] = ETH_HEADER_LEN

    def __init__(
        self, name: str = "tap0", *, mac: bytes | None = None, mtu: int | None = None,
        create: bool = True, offload: bool = False,
    ) -> None:
        if mac is None:
            mac = random_mac()
        elif len(mac) != 6 or mac[0] & 0x01:
            raise ValueError(f"mac must be 6 bytes and unicast, got {bytes(mac).hex(':')}")
        super().__init__(name, mtu, create, offload)
        self.mac = bytes(mac)

    def _accept(self, data: bytes) -> bool:
        return len(data) >= ETH_HEADER_LEN


class TunDevice(_TunTap):
    """A TUN interface: bare IPv4 packets, no link header (other packets are dropped)."""

    link_type = LinkType.RAW_IP
    _IFF_MODE: ClassVar[int] = lx.IFF_TUN
    _HEADER_LEN: ClassVar[int] = 0

    def __init__(self, name: str = "tun0", *, mtu: int | None = None, create: bool = True) -> None:
        super().__init__(name, mtu, create)
        self.mac = None

    def _accept(self, data: bytes) -> bool:
        return len(data) >= 20 and data[0] >> 4 == 4

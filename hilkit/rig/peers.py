"""The far end of a wire, as the conformance suite sees it: an AF_PACKET socket
on the peer's interface inside the rig's private namespace."""

from __future__ import annotations

import errno
import selectors
import socket
import time

from hilkit.port.device import LinkType
from hilkit.rig.netns import Netns

ETH_P_ALL = 0x0003  # <linux/if_ether.h>
ETH_P_IP = 0x0800


class PacketPeer:
    """A ``hilkit.port.conformance.LinkPeer``: raw frames in and out of ``ifname``.

    It skips what the kernel itself transmits on the interface (PACKET_OUTGOING);
    ``can_set_link`` says whether taking the interface down is something the
    device under test can observe.
    """

    def __init__(self, ns: Netns, ifname: str, *, peer_ipv4: str, device_ipv4: str,
                 link_type: LinkType = LinkType.ETHERNET, can_set_link: bool = True) -> None:
        self._ns = ns
        self._ifname = ifname
        self._raw_ip = link_type is LinkType.RAW_IP
        kind = socket.SOCK_DGRAM if self._raw_ip else socket.SOCK_RAW
        self._sock = ns.socket(socket.AF_PACKET, kind, socket.htons(ETH_P_ALL))
        self._sock.bind((ifname, ETH_P_ALL))
        self._sock.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._sock, selectors.EVENT_READ)
        self.can_set_link = can_set_link
        self.peer_mac: bytes | None = None
        if not self._raw_ip:
            self.peer_mac = ns.mac_of(ifname)
        self.peer_ipv4 = peer_ipv4
        self.device_ipv4 = device_ipv4

    def send(self, frame: bytes) -> None:
        if self._raw_ip:
            self._sock.sendto(frame, (self._ifname, ETH_P_IP))
        else:
            self._sock.send(frame)

    def recv(self, timeout_s: float) -> bytes | None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                data, addr = self._sock.recvfrom(65536)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._sel.select(left)
                continue
            except OSError as e:
                if e.errno == errno.ENETDOWN:  # reported once after the link went down
                    continue
                raise
            if addr[2] != socket.PACKET_OUTGOING:  # not the kernel's own transmissions
                return data

    def set_link(self, up: bool) -> None:
        self._ns.ip("link", "set", self._ifname, "up" if up else "down")
        if up:  # forget the ENETDOWN the socket noted while the link was down
            self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

    def close(self) -> None:
        self._sel.close()
        self._sock.close()

"""conformance: the porting suite (``hilkit.port.conformance.DeviceConformance``) on the
rig's device, with an AF_PACKET socket in the rig's namespace as the far end of the wire.

``test_close`` closes the rig's device for real; the plugin runs it after every other
check of the run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import time
from collections.abc import Iterator

import pytest

from hilkit.hil.plugin import Capture, HilSession, is_slow_sim
from hilkit.port.conformance import DeviceConformance, DevicePair
from hilkit.port.device import DeviceClosed

ETH_P_ALL = 0x0003  # <linux/if_ether.h>


class PacketPeer:
    """The kernel's end of the wire, seen through an AF_PACKET socket in the namespace."""

    def __init__(self, hil: HilSession, can_set_link: bool) -> None:
        built = hil.built
        self._ns = built.ns
        self._ifname = hil.peer_ifname
        self._sock = built.ns.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind((self._ifname, ETH_P_ALL))
        self._sock.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._sock, selectors.EVENT_READ)
        self.can_set_link = can_set_link
        self.peer_mac = self._mac()
        self.peer_ipv4 = built.kernel_ip
        self.device_ipv4 = built.dut_ip

    def _mac(self) -> bytes:
        info = json.loads(self._ns.ip("-j", "link", "show", self._ifname))
        return bytes.fromhex(info[0]["address"].replace(":", ""))

    def send(self, frame: bytes) -> None:
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


def _link_follows_peer(hil: HilSession) -> bool:
    """Simulated rigs whose device reports the peer's link state (probed once per run)."""
    if not getattr(hil.built.rig, "simulated", False):
        return False
    known = hil.shared.get("link_follows_peer")
    if known is None:
        dev = hil.built.device
        ns, ifname = hil.built.ns, hil.peer_ifname
        ns.ip("link", "set", ifname, "down")
        try:
            end = time.monotonic() + 2.0
            while dev.link_up and time.monotonic() < end:
                time.sleep(0.01)
            known = not dev.link_up
        finally:
            ns.ip("link", "set", ifname, "up")
        end = time.monotonic() + 3.0
        while not dev.link_up and time.monotonic() < end:
            time.sleep(0.01)
        hil.shared["link_follows_peer"] = known
    return bool(known)


class TestDevice(DeviceConformance):
    @pytest.fixture(autouse=True)
    def _timeouts(self, hil: HilSession) -> None:
        p = hil.params("conformance")
        self.timeout_s = float(p.get("timeout_s", 10.0 if is_slow_sim(hil.built) else 3.0))

    @pytest.fixture
    def conformance_pair(self, hil: HilSession, hil_capture: Capture) -> Iterator[DevicePair]:
        dev = hil.built.device
        with contextlib.suppress(DeviceClosed):  # closed: a repeated test_close
            for _ in range(1000):  # what earlier checks left behind is not this test's
                if not dev.poll(64):
                    break
        peer = PacketPeer(hil, _link_follows_peer(hil))
        try:
            yield hil_capture.wrap(dev), peer
        finally:
            peer.close()

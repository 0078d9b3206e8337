"""conformance: the porting suite (``hilkit.port.conformance.DeviceConformance``) on the
rig's device, with an AF_PACKET socket in the rig's namespace as the far end of the wire.

``test_close`` closes the rig's device for real; the plugin runs it after every other
check of the run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from hilkit.hil.plugin import Capture, HilSession, require_kernel_interface, require_kernel_peer
from hilkit.port.conformance import DeviceConformance, DevicePair
from hilkit.port.device import DeviceClosed
from hilkit.rig.peers import PacketPeer


def _link_follows_peer(hil: HilSession) -> bool:
    """Simulated rigs whose device reports the peer's link state: never a NIC registered
    with ``link_detect=False``; otherwise probed once per run."""
    if not getattr(hil.built.rig, "simulated", False):
        return False
    if hil.nic is not None and not hil.nic.link_detect:
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
        self.timeout_s = hil.params("conformance").number("timeout_s")

    @pytest.fixture
    def conformance_pair(self, hil: HilSession, hil_capture: Capture) -> Iterator[DevicePair]:
        require_kernel_peer(hil.built, "the conformance suite's raw-frame peer")
        require_kernel_interface(hil.built, "the conformance suite's raw-frame peer work",
                                 "it needs raw access to the far end of the line")
        dev = hil.built.device
        with contextlib.suppress(DeviceClosed):  # closed: a repeated test_close
            for _ in range(1000):  # what earlier checks left behind is not this test's
                if not dev.poll(64):
                    break
        peer = PacketPeer(hil.built.ns, hil.peer_ifname, peer_ipv4=hil.built.kernel_ip,
                      device_ipv4=hil.built.dut_ip, can_set_link=_link_follows_peer(hil))
        try:
            yield hil_capture.wrap(dev), peer
        finally:
            peer.close()

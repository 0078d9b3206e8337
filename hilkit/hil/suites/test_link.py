"""link: the device reports link up; on simulated rigs the link goes down and up again.

Whether the device can see the peer's carrier at all is the NIC's ``link_detect``
(``hilkit.port.nic.Nic``): one that cannot is skipped, its link assumed up; one
registered as able to must follow the peer. A driver without a registration is
tried, and skipped if it does not follow.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from hilkit.hil.plugin import BuiltRigLike, HilSession, Kernel, require_kernel_interface
from hilkit.port.nic import Nic
from hilkit.stack import PingError, PingStats, Stack


def _until(pred: Callable[[], bool], timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return bool(pred())


def test_link_up(rig: BuiltRigLike) -> None:
    assert isinstance(rig.device.link_up, bool), "link_up is not a bool"
    assert _until(lambda: rig.device.link_up, 3.0), f"{rig.device.name}: link is down"


def test_peer_has_carrier(rig: BuiltRigLike, kernel: Kernel) -> None:
    require_kernel_interface(rig, "its carrier be looked at")
    flags = kernel.link_flags()
    assert "UP" in flags, f"{kernel.ifname} is administratively down: {flags}"
    assert "LOWER_UP" in flags, f"{kernel.ifname} has no carrier (cable?): {flags}"


def _ping_once(stack: Stack, dst: str, timeout_ms: float = 3000) -> bool:
    got: list[PingStats] = []
    stack.ping(dst, 1, 0, timeout_ms, 56, got.append)
    stack.run(until=lambda: bool(got), timeout=timeout_ms / 1000 + 2)
    return bool(got) and got[0].err is PingError.REPLIED


def test_link_down_and_up(rig: BuiltRigLike, kernel: Kernel, hil: HilSession,
                          stack: Stack, nic: Nic | None) -> None:
    require_kernel_interface(rig, "the kernel take the link down",
                             "a slirp restart would drop it: that needs SlirpPeer to restart "
                             "slirp on the same pty, hilkit/rig/slirp.py")
    if not getattr(rig.rig, "simulated", False):
        pytest.skip("taking the link down needs the cable pulled: not automated on real rigs")
    if nic is not None and not nic.link_detect:
        hil.shared["link_follows_peer"] = False
        pytest.skip(f"{nic.title} cannot see the carrier (its Nic has link_detect=False): "
                    "link is assumed up")
    dev = rig.device
    assert _until(lambda: dev.link_up, 3.0), "link is not up to begin with"
    kernel.set_link(False)
    try:
        followed = _until(lambda: not dev.link_up, 2.0)
    finally:
        kernel.set_link(True)
    hil.shared["link_follows_peer"] = followed
    if not followed:
        if nic is not None:
            pytest.fail(f"{nic.title} registers link_detect=True, but {dev.name} stayed up "
                        "while the peer's link was down")
        pytest.skip(f"{type(dev).__name__} does not report link state (and registers no "
                    "Nic that says whether it can): link is assumed up")
    assert _until(lambda: dev.link_up, 3.0), "link did not come back up"
    assert _ping_once(stack, rig.kernel_ip), "no traffic after the link came back"

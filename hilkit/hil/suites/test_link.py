"""link: the device reports link up; on simulated rigs the link goes down and up again.

Whether the device can see the peer's carrier at all is the NIC's ``link_detect``
(``hilkit.port.nic.Nic``): one that cannot is skipped, its link assumed up; one
registered as able to must follow the peer. A driver without a registration is
tried, and skipped if it does not follow.

Behind slirp (a PPP line, no interface to take down) the line itself is disturbed
instead: it goes down for longer than the link's LCP echoes allow, or slirp is killed
and started again on the same pty (it comes back silent, waiting for a
Configure-Request); either way the link must go down and renegotiate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from hilkit.hil.plugin import (
    BuiltRigLike,
    FigureFn,
    HilSession,
    Kernel,
    require_kernel_interface,
    slirp_peer,
)
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
                             "test_line_drop_and_renegotiation drops the line instead")
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


LINE_DOWN_S = 7.0  # longer than the rig's LCP echoes allow (sim-ppp: 4 x 1 s)
RENEGOTIATE_LIMIT_S = 30.0  # from the fault to IP flowing again


@pytest.mark.parametrize("how", ["line", "peer"])
def test_line_drop_and_renegotiation(rig: BuiltRigLike, stack: Stack, hil: HilSession,
                                     figure: FigureFn, how: str) -> None:
    """slirp rigs: the line goes down for LINE_DOWN_S (``line``) or slirp is restarted
    (``peer``); link_up goes False, then True again once LCP and IPCP have renegotiated,
    within RENEGOTIATE_LIMIT_S; traffic flows after."""
    peer = slirp_peer(rig)
    if peer is None:
        pytest.skip("only behind slirp (the builder's SlirpPeer drops the line or restarts "
                    "slirp); other rigs take the link down through the kernel")
    dev = rig.device
    assert stack.run(until=lambda: dev.link_up, timeout=5.0), "link is not up to begin with"
    seen = {"downs": 0, "ups": 0}
    marks: dict[str, float] = {}
    last = [True]

    def watch() -> bool:
        up = bool(dev.link_up)
        if up != last[0]:
            seen["ups" if up else "downs"] += 1
            marks.setdefault("up" if up else "down", time.monotonic())
            last[0] = up
        return "up" in marks

    restarts0 = peer.restarts
    t0 = time.monotonic()
    if how == "line":
        peer.line.down(LINE_DOWN_S * 1000.0)
    else:
        peer.restart()
    try:
        back = stack.run(until=watch, timeout=RENEGOTIATE_LIMIT_S)
    finally:
        peer.line.clear_faults()
    figure(f"link_{how}_downs", seen["downs"], "")
    figure(f"link_{how}_ups", seen["ups"], "")
    if "down" in marks:
        figure(f"link_{how}_noticed_ms", (marks["down"] - t0) * 1000.0, "ms")
    if "down" in marks and "up" in marks:
        figure(f"link_{how}_renegotiation_ms", (marks["up"] - marks["down"]) * 1000.0, "ms")
    stats = getattr(getattr(rig, "driver_device", dev), "stats", {})
    if isinstance(stats, dict) and "relinks" in stats:
        figure(f"link_{how}_relinks_total", stats["relinks"], "")
    if how == "peer":
        assert peer.restarts == restarts0 + 1, "slirp was not restarted"
    assert seen["downs"] >= 1, (f"link_up stayed True for {RENEGOTIATE_LIMIT_S:g} s after the "
                                f"{how} fault: the link did not notice (LCP echoes?)")
    assert back, (f"the link went down but did not come back within {RENEGOTIATE_LIMIT_S:g} s"
                  f" (phase {getattr(dev, 'phase', '?')}; a PPP device needs persist_ms to "
                  "bring the link up again after it ended)")
    assert _ping_once(stack, rig.kernel_ip), "no traffic after the link came back"

"""identity: the device opened, its MAC is a usable unicast address, the chip answers; on a
point-to-point (PPP) link, what LCP and IPCP negotiated, as figures."""

from __future__ import annotations

from typing import Any

import pytest

from hilkit.hil.plugin import BuiltRigLike, FigureFn, require_ethernet
from hilkit.port.device import Device, LinkType, device_probe, unwrap_chain
from hilkit.port.nic import Nic


def test_device_opened(rig: BuiltRigLike, figure: FigureFn) -> None:
    dev = rig.device
    assert isinstance(dev, Device), f"{dev!r} lacks members of hilkit.port.Device"
    assert isinstance(dev.name, str) and dev.name, f"bad device name {dev.name!r}"
    p2p = bool(getattr(getattr(rig.rig, "peer", None), "point_to_point", False))
    want = LinkType.RAW_IP if p2p else LinkType.ETHERNET
    assert dev.link_type is want, f"link type {dev.link_type}, this rig's is {want}"
    assert not getattr(dev, "closed", False), f"{dev.name} is closed"
    dev.poll(1)  # must not raise: the device answers
    figure("device", dev.name, "")
    figure("driver", type(dev).__module__ + "." + type(dev).__qualname__, "")


def test_mac_is_unicast(rig: BuiltRigLike, figure: FigureFn) -> None:
    require_ethernet(rig, "a MAC address")
    mac = rig.device.mac
    assert isinstance(mac, bytes) and len(mac) == 6, f"bad MAC {mac!r}"
    figure("mac", mac.hex(":"), "")
    assert not mac[0] & 0x01, f"MAC {mac.hex(':')} is multicast"
    assert mac != b"\0" * 6, "MAC is all zeros"
    assert mac != b"\xff" * 6, "MAC is broadcast"


def test_mtu(rig: BuiltRigLike, figure: FigureFn) -> None:
    mtu = rig.device.mtu
    figure("mtu", mtu, "B")
    assert 576 <= mtu <= 9000, f"MTU {mtu} is outside 576..9000"
    want = getattr(rig.rig, "mtu", None)
    if want:
        assert mtu == want, f"the rig file says MTU {want}, the device has {mtu}"


def test_chip_probe(rig: BuiltRigLike, nic: Nic | None, figure: FigureFn) -> None:
    """The chip behind the bus answers as it should: the NIC's registered ``identify``
    (a raw, read-only probe on the bus), else the driver's own ``probe()``."""
    if nic is not None and nic.transport == "serial":
        pytest.skip(f"{nic.title}: no chip behind a serial line; the link's identity is what "
                    "it negotiated (test_negotiated)")
    bus = getattr(rig, "bus", None)
    identify = nic.load_identify() if nic is not None else None
    if identify is not None and bus is not None:
        assert nic is not None
        figure("chip", nic.title, "")
        problem = identify(bus)
        assert problem is None, problem
        return
    probe = device_probe(rig.device)
    if probe is not None:
        result = probe()  # raises ChipNotResponding naming the bus when no chip answers
        assert result is not False, (
            f"{rig.device.name}: the chip did not answer its probe() (expected anything "
            "but False)")
        return
    pytest.skip(f"{type(rig.device).__name__}: nothing identifies its chip: register a Nic "
                "with identify=... (hilkit.port.nic), or give the driver a probe() method "
                "(hilkit.port.device, docs/porting.md)")


def test_negotiated(rig: BuiltRigLike, figure: FigureFn) -> None:
    """A point-to-point link: what LCP and IPCP agreed (addresses, DNS, VJ, MRU, ACCM) and
    how long the builder's bring-up took, as figures; the addresses are the rig's."""
    dev: Any = next((d for d in unwrap_chain(rig.device) if hasattr(d, "link")), None)
    link = getattr(dev, "link", None)
    ipcp = getattr(link, "ipcp_result", None)
    lcp = getattr(link, "lcp_result", None)
    if dev is None or ipcp is None or lcp is None:
        pytest.skip(f"{type(rig.device).__name__} negotiates nothing (not a PPP link)")
    cfg = dev.link_config()
    assert cfg is not None, f"{dev.name}: IPCP is not open"
    figure("ppp_address", str(ipcp.address), "")
    figure("ppp_peer", str(ipcp.peer_address), "")
    figure("ppp_dns", ",".join(str(d) for d in ipcp.dns) or "none", "")
    figure("ppp_vj", ipcp.vj_tx is not None, "")
    figure("ppp_mru", lcp.mru, "B")
    figure("ppp_peer_mru", lcp.peer_mru, "B")
    figure("ppp_tx_accm", f"0x{lcp.tx_accm:08x}", "")
    figure("ppp_rx_accm", f"0x{lcp.rx_accm:08x}", "")
    figure("ppp_auth", str(lcp.peer_auth or lcp.our_auth or "none"), "")
    bringup = getattr(rig, "bringup_ms", None)
    if bringup is not None:
        figure("ppp_bringup_ms", float(bringup), "ms")
    assert cfg.address == rig.dut_ip, f"IPCP gave {cfg.address}, the rig has {rig.dut_ip}"
    if getattr(rig.rig.peer, "kind", None) == "slirp":
        assert cfg.peer == rig.kernel_ip, f"IPCP's peer is {cfg.peer}, slirp is {rig.kernel_ip}"

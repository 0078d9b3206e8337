"""identity: the device opened, its MAC is a usable unicast address, the chip answers."""

from __future__ import annotations

import pytest

from hilkit.hil.plugin import BuiltRigLike, FigureFn
from hilkit.port.device import Device, LinkType, device_probe
from hilkit.port.nic import Nic


def test_device_opened(rig: BuiltRigLike, figure: FigureFn) -> None:
    dev = rig.device
    assert isinstance(dev, Device), f"{dev!r} lacks members of hilkit.port.Device"
    assert isinstance(dev.name, str) and dev.name, f"bad device name {dev.name!r}"
    assert dev.link_type is LinkType.ETHERNET, f"link type {dev.link_type}, rigs are Ethernet"
    assert not getattr(dev, "closed", False), f"{dev.name} is closed"
    dev.poll(1)  # must not raise: the device answers
    figure("device", dev.name, "")
    figure("driver", type(dev).__module__ + "." + type(dev).__qualname__, "")


def test_mac_is_unicast(rig: BuiltRigLike, figure: FigureFn) -> None:
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

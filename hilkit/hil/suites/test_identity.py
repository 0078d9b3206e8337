"""identity: the device opened, its MAC is a usable unicast address, the chip answers."""

from __future__ import annotations

import pytest

from hilkit.hil.plugin import BuiltRigLike, FigureFn, is_w5100
from hilkit.port.device import Device, LinkType


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


W5100_RTR = 0x0017  # Retry Time register: 0x07D0 after reset (W5100 datasheet)
W5100_READ = 0x0F  # read frame: 0F addr_hi addr_lo dummy


def test_chip_probe(rig: BuiltRigLike, figure: FigureFn) -> None:
    """The chip behind the bus answers its probe (W5100: RTR reads 0x07D0)."""
    probe = getattr(rig.device, "probe", None)
    if callable(probe):
        result = probe()  # raises ChipNotResponding naming the bus when no chip answers
        assert result is not False, "the chip did not answer its probe"
        return
    bus = getattr(rig, "bus", None)
    if bus is None or not is_w5100(rig):
        pytest.skip(f"{type(rig.device).__name__} has no chip to probe")
    # The driver's own probe, read-only: two read frames, RTR high and low byte.
    frames = [bytes((W5100_READ, (a >> 8) & 0xFF, a & 0xFF, 0)) for a in (W5100_RTR,
                                                                          W5100_RTR + 1)]
    replies = bus.transfer_batch(frames)
    rtr = (replies[0][3] << 8) | replies[1][3]
    figure("rtr", f"0x{rtr:04X}", "")
    assert rtr == 0x07D0, f"no W5100 answered on the bus: RTR read 0x{rtr:04X}, " \
                          "expected 0x07D0 (check wiring, CS, SPI mode 0)"
    # While the opcode and address go out, the chip shifts out 0x00 0x01 0x02.
    assert all(bytes(r[:3]) == b"\x00\x01\x02" for r in replies), \
        f"unexpected MISO bytes {[bytes(r).hex() for r in replies]}"

"""The Device conformance suite against TapDevice and TunDevice.

Every interface is born inside a private network namespace (the device is
opened by a thread that entered it), and the peer is an AF_PACKET socket made
in the same namespace: no frame touches the machine's own namespace.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from hilkit.drivers.tap import TapDevice, TunDevice
from hilkit.port.conformance import DeviceConformance, DevicePair, LinkPeer, ipv4_udp_packet
from hilkit.port.device import Device, LinkType
from hilkit.rig.netns import Netns
from hilkit.rig.peers import PacketPeer

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
    reason="needs root and /dev/net/tun",
)

IFNAME = "hkt0"
KERNEL_IP = "192.168.77.1"
HILKIT_IP = "192.168.77.2"


def _root_ifnames() -> set[str]:
    return {name for _, name in socket.if_nameindex()}


@pytest.fixture
def ns() -> Iterator[Netns]:
    with Netns("hkt") as n:
        yield n


@contextmanager
def opened_pair(ns: Netns, link_type: LinkType, ifname: str = IFNAME) -> Iterator[DevicePair]:
    """Open the device inside ``ns``, bring the link up, address the kernel side."""
    if link_type is LinkType.ETHERNET:
        dev: TapDevice | TunDevice = ns.call(lambda: TapDevice(ifname))
    else:
        dev = ns.call(lambda: TunDevice(ifname))
    peer: PacketPeer | None = None
    try:
        ns.ip("link", "set", ifname, "up")
        if link_type is LinkType.ETHERNET:
            ns.ip("addr", "add", f"{KERNEL_IP}/24", "dev", ifname)
        else:
            ns.ip("addr", "add", KERNEL_IP, "peer", HILKIT_IP, "dev", ifname)
        peer = PacketPeer(ns, ifname, peer_ipv4=KERNEL_IP, device_ipv4=HILKIT_IP,
                          link_type=link_type)
        yield dev, peer
    finally:
        if peer is not None:
            peer.close()
        dev.close()


class TestTapConformance(DeviceConformance):
    @pytest.fixture
    def conformance_pair(self, ns: Netns) -> Iterator[DevicePair]:
        with opened_pair(ns, LinkType.ETHERNET) as pair:
            yield pair


class TestTunConformance(DeviceConformance):
    @pytest.fixture
    def conformance_pair(self, ns: Netns) -> Iterator[DevicePair]:
        with opened_pair(ns, LinkType.RAW_IP) as pair:
            yield pair


# -- the driver itself, beyond the contract -------------------------------------------


def _wait_frame(dev: Device, want: bytes, timeout_s: float = 3.0) -> bool:
    fd = dev.fileno()
    assert fd is not None
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if want in dev.poll(16):
                return True
            sel.select(max(0.0, deadline - time.monotonic()))
    return False


def _recv_match(peer: LinkPeer, want: bytes, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if peer.recv(left) == want:
            return True
    return False


@pytest.mark.parametrize("link_type", [LinkType.ETHERNET, LinkType.RAW_IP])
def test_interface_is_born_in_the_namespace(ns: Netns, link_type: LinkType) -> None:
    with opened_pair(ns, link_type) as (dev, _):
        assert dev.name == IFNAME
        assert IFNAME not in _root_ifnames()
        assert IFNAME in ns.ip("link", "show", IFNAME)


def test_interface_goes_away_on_close(ns: Netns) -> None:
    dev = ns.call(lambda: TapDevice(IFNAME))
    assert IFNAME in ns.ip("link", "show")
    dev.close()
    assert IFNAME not in ns.ip("link", "show")
    assert dev.fileno() is None
    assert dev.link_up is False


def test_persistent_tap_by_name(ns: Netns) -> None:
    ns.ip("tuntap", "add", "dev", "tap0", "mode", "tap")
    ns.ip("link", "set", "tap0", "up", "mtu", "1400")
    assert "NO-CARRIER" in ns.ip("link", "show", "tap0")  # nobody attached yet
    mac = b"\x02\x11\x22\x33\x44\x55"
    dev = ns.call(lambda: TapDevice("tap0", mac=mac))
    peer = PacketPeer(ns, "tap0", peer_ipv4=KERNEL_IP, device_ipv4=HILKIT_IP)
    try:
        assert dev.name == "tap0" and dev.mac == mac and dev.mtu == 1400
        assert dev.link_up
        assert peer.peer_mac is not None
        inbound = mac + peer.peer_mac + b"\x88\xb5" + b"to-hilkit".ljust(46, b".")
        peer.send(inbound)
        assert _wait_frame(dev, inbound)
        outbound = peer.peer_mac + mac + b"\x88\xb5" + b"to-kernel".ljust(46, b".")
        assert dev.send(outbound)
        assert _recv_match(peer, outbound)
    finally:
        peer.close()
        dev.close()
    # persistent: still there, but without a reader it has no carrier
    assert "NO-CARRIER" in ns.ip("link", "show", "tap0")


def test_attach_refuses_wrong_mode_and_second_reader(ns: Netns) -> None:
    ns.ip("tuntap", "add", "dev", "tap0", "mode", "tap")
    with pytest.raises(OSError) as wrong:
        ns.call(lambda: TunDevice("tap0"))
    assert wrong.value.errno == errno.EINVAL
    dev = ns.call(lambda: TapDevice("tap0"))
    try:
        with pytest.raises(OSError) as busy:
            ns.call(lambda: TapDevice("tap0"))
        assert busy.value.errno == errno.EBUSY
    finally:
        dev.close()


def test_explicit_mtu_overrides_interface(ns: Netns) -> None:
    dev = ns.call(lambda: TunDevice(IFNAME, mtu=1280))
    try:
        assert dev.mtu == 1280 and dev.mac is None
        ns.ip("link", "set", IFNAME, "up")
        ns.ip("addr", "add", KERNEL_IP, "peer", HILKIT_IP, "dev", IFNAME)
        too_big = ipv4_udp_packet(HILKIT_IP, KERNEL_IP, bytes(1281 - 28))
        assert dev.send(too_big) is False
        assert dev.counters.tx_errors == 1
        assert dev.send(ipv4_udp_packet(HILKIT_IP, KERNEL_IP, bytes(1280 - 28))) is True
    finally:
        dev.close()


def test_tun_drops_what_is_not_ipv4(ns: Netns) -> None:
    with opened_pair(ns, LinkType.RAW_IP) as (dev, peer):
        not_ipv4 = b"\x60" + bytes(47)  # an IPv6-looking header
        good = ipv4_udp_packet(KERNEL_IP, HILKIT_IP, b"after-the-drop")
        peer.send(not_ipv4)
        peer.send(good)
        assert _wait_frame(dev, good)
        assert dev.counters.rx_dropped == 1


def test_bad_arguments_rejected(ns: Netns) -> None:
    # Run inside the namespace too: should a check ever let one through, the
    # interface must not appear in the machine's own namespace.
    bad: list[Callable[[], object]] = [
        lambda: TapDevice("x" * 16),
        lambda: TapDevice(""),
        lambda: TapDevice("hkt9", mac=b"\x01\0\0\0\0\1"),  # multicast
        lambda: TapDevice("hkt9", mac=b"\x02\0\0"),
        lambda: TunDevice("hkt9", mtu=40),
    ]
    for make in bad:
        with pytest.raises(ValueError):
            ns.call(make)
    assert "hkt9" not in ns.ip("link", "show")

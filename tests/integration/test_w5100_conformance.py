"""The Device conformance suite against W5100Device on the W5100 model.

The model's wire is a TAP born inside a private network namespace, and the
peer is an AF_PACKET socket on that TAP in the same namespace: the driver
speaks SPI frames to the model, the model puts Ethernet frames on the TAP,
and the kernel is at the far end. No frame touches the machine's own
namespace. The descriptor the suite selects on is the model's /INT pin's,
which is the TAP's.

The W5100 has no PHY status register reachable over SPI, so the peer offers
no link control: the link-state tests are skipped (``can_set_link = False``).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from hilkit.drivers.tap import TapDevice
from hilkit.drivers.w5100 import W5100Device
from hilkit.drivers.w5100.model import W5100Model
from hilkit.port.conformance import DeviceConformance, DevicePair
from hilkit.port.pin import InvertedPin
from hilkit.rig.netns import Netns
from hilkit.rig.peers import PacketPeer
from hilkit.stack import PingError, PingStats, Stack

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
    reason="needs root and /dev/net/tun",
)

IFNAME = "hk0"
KERNEL_IP = "192.168.78.1"
HILKIT_IP = "192.168.78.2"


@pytest.fixture
def ns() -> Iterator[Netns]:
    with Netns("hkw") as n:
        yield n


@pytest.fixture
def wire(ns: Netns) -> Iterator[TapDevice]:
    tap = ns.call(lambda: TapDevice(IFNAME))
    try:
        ns.ip("link", "set", IFNAME, "up")
        ns.ip("addr", "add", f"{KERNEL_IP}/24", "dev", IFNAME)
        yield tap
    finally:
        tap.close()


@pytest.fixture
def model(wire: TapDevice) -> W5100Model:
    return W5100Model(wire=wire, seed=1)


class TestW5100Conformance(DeviceConformance):
    @pytest.fixture
    def conformance_pair(self, ns: Netns, model: W5100Model) -> Iterator[DevicePair]:
        dev = W5100Device(model, irq=InvertedPin(model.int_pin),
                          reset=InvertedPin(model.reset_pin), name="w5100@sim")
        peer = PacketPeer(ns, IFNAME, peer_ipv4=KERNEL_IP, device_ipv4=HILKIT_IP,
                          can_set_link=False)  # the W5100 cannot see carrier
        try:
            yield dev, peer
        finally:
            peer.close()
            dev.close()


# -- the driver under the stack, against the kernel ----------------------------------------


@pytest.fixture
def stack(model: W5100Model) -> Iterator[Stack]:
    st = Stack()
    dev = st.add_device(W5100Device(model, irq=InvertedPin(model.int_pin), name="w5100@sim"))
    st.link_add(dev, HILKIT_IP, "255.255.255.0")
    yield st
    st.close()


@pytest.mark.parametrize("size", [56, 1472, 4000])
def test_hilkit_pings_the_kernel_through_the_w5100(
    stack: Stack, model: W5100Model, size: int
) -> None:
    got: list[PingStats] = []
    stack.ping(KERNEL_IP, 5, 10, 3000, size, got.append)
    assert stack.run(until=lambda: len(got) == 5, timeout=30)
    assert [(s.seq, s.err, s.size) for s in got] == [
        (i, PingError.REPLIED, size) for i in range(1, 6)]
    assert not stack.drops
    dev = stack.interfaces[0].dev
    assert dev.counters.rx_errors == 0 and dev.counters.tx_errors == 0
    assert model.stats["send_while_busy"] == 0 and model.stats["rx_misaligned"] == 0


def test_the_kernel_pings_hilkit_through_the_w5100(ns: Netns, stack: Stack) -> None:
    proc = ns.popen(["ping", "-c", "20", "-i", "0.01", "-W", "3", "-q", HILKIT_IP],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    env={**os.environ, "LC_ALL": "C"})
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            stack.run(timeout=0.05)  # a child's exit does not wake select: look often
        out = proc.communicate(timeout=5)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "20 packets transmitted, 20 received" in out, out
    assert stack.stats["icmp.echo_replies_sent"] == 20

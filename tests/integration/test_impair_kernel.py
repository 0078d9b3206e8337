"""A hilkit stack on an impaired TAP, with the Linux kernel at the far end.

The TAP is born inside a private network namespace and wrapped in an
ImpairedDevice *before* ``stack.add_device``: every frame between hilkit and
the kernel crosses the impairment, and nothing touches the machine's own
namespace.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hilkit.drivers.tap import TapDevice
from hilkit.port import ManualClock
from hilkit.port.conformance import DeviceConformance, DevicePair
from hilkit.port.device import LinkType
from hilkit.port.impair import ImpairedDevice, Impairment
from hilkit.rig.netns import Netns
from hilkit.stack import PingError, PingStats, Stack
from tests.integration.conftest import HILKIT_IP, KERNEL_IP, TAP, kernel_side
from tests.unit.test_impair import FakeDevice, frame

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
    reason="needs root and /dev/net/tun",
)



@dataclass
class ImpairedLink:
    ns: Netns
    stack: Stack
    dev: ImpairedDevice  # the wrapper; the stack holds it inside its CaptureDevice


def hping(lk: ImpairedLink, count: int, size: int = 56, interval_ms: float = 5,
          timeout_ms: float = 1000) -> list[PingStats]:
    got: list[PingStats] = []
    lk.stack.ping(KERNEL_IP, count, interval_ms, timeout_ms, size, got.append)
    assert lk.stack.run(until=lambda: len(got) == count, timeout=60)
    return sorted(got, key=lambda s: s.seq)


@pytest.fixture
def ilink(netns: Netns, tmp_path: Path) -> Iterator[ImpairedLink]:
    """A stack on ImpairedDevice(TapDevice) with a perfect link, ARP already resolved.

    Tests then set ``dev.impairment``. Because ARP is done before that, the only
    frames crossing the impairment are the test's pings and replies.
    """
    tap = netns.call(lambda: TapDevice(TAP))
    try:
        kernel_side(netns, persistent=False)
    except BaseException:
        tap.close()
        raise
    stack = Stack(pcap=str(tmp_path / "impaired.pcapng"))
    try:
        dev = ImpairedDevice(tap, Impairment(), clock=stack.clock)
        outer = stack.add_device(dev)  # a CaptureDevice around our wrapper
        stack.link_add(outer, HILKIT_IP, "255.255.255.0")
        lk = ImpairedLink(netns, stack, dev)
        warm = hping(lk, 1)
        assert warm[0].err is PingError.REPLIED, warm
        yield lk
        assert stack.drops["internal_error"] == 0
    finally:
        stack.close()


def _binomial_ok(count: int, n: int, p: float, sds: float = 4.5) -> bool:
    return abs(count - n * p) <= sds * math.sqrt(n * p * (1 - p))


def _simulated_losses(imp: Impairment, direction: str, n: int) -> int:
    """How many of ``n`` frames ``imp`` drops in ``direction``, replayed on a fake device."""
    clock = ManualClock()
    fake = FakeDevice(clock)
    dev = ImpairedDevice(fake, imp, clock)
    if direction == "tx":
        for i in range(n):
            dev.send(frame(i))
        return n - len(fake.sent)
    fake.rx.extend(frame(i) for i in range(n))
    return n - len(dev.poll(n))


def test_loss_both_ways(ilink: ImpairedLink) -> None:
    imp = Impairment.parse("loss=20%,seed=7")
    ilink.dev.impairment = imp
    got = hping(ilink, 200, interval_ms=5, timeout_ms=500)
    replied = sum(s.err is PingError.REPLIED for s in got)
    timeouts = sum(s.err is PingError.TIMEOUT for s in got)
    assert replied + timeouts == 200, got
    # A round trip survives only if the request (tx) and then the reply (rx) do:
    # P(replied) = 0.8 * 0.8 = 0.64, so about 36 % time out, not 20 %.
    assert _binomial_ok(replied, 200, 0.8 * 0.8), f"{replied} of 200 replied"
    tx, rx = ilink.dev.impair_counters_tx, ilink.dev.impair_counters_rx
    # Only the pings crossed the link, so the seed replays exactly: the same
    # frames were lost as on a fake device.
    assert tx.frames == 200, tx
    assert tx.dropped == _simulated_losses(imp, "tx", 200)
    assert rx.frames == 200 - tx.dropped, rx  # the kernel answered every request it got
    assert rx.dropped == _simulated_losses(imp, "rx", rx.frames)
    assert replied == rx.frames - rx.dropped
    assert all(s.time > 0 for s in got if s.err is PingError.REPLIED)


@pytest.mark.parametrize(("direction", "one_way_trips"), [("both", 2), ("tx", 1), ("rx", 1)])
def test_delay(ilink: ImpairedLink, direction: str, one_way_trips: int) -> None:
    ilink.dev.impairment = Impairment.parse(f"delay=20ms,direction={direction}")
    got = hping(ilink, 20, interval_ms=10, timeout_ms=2000)
    assert [s.err for s in got] == [PingError.REPLIED] * 20, got
    floor = 20.0 * one_way_trips
    rtts = [s.time for s in got]
    assert min(rtts) >= floor, rtts  # exact: a frame is never released before it is due
    # Stack.run wakes for the wrapper's next_deadline(); were it not to, a
    # frame would wait for the next ping timer.
    assert statistics.median(rtts) < floor + 50, rtts
    c = ilink.dev.impair_counters
    assert c.delayed == 20 * one_way_trips and c.dropped == 0


def test_lone_delayed_ping_is_not_stuck(ilink: ImpairedLink) -> None:
    """No other timer is due for 2 s, so only the device's deadline can wake the loop."""
    ilink.dev.impairment = Impairment.parse("delay=20ms")
    got = hping(ilink, 1, timeout_ms=2000)
    assert got[0].err is PingError.REPLIED
    assert 40.0 <= got[0].time < 40.0 + 100, got  # stuck frames would show ~2000 ms


def test_rate_limit_serialises_pings(ilink: ImpairedLink) -> None:
    ilink.dev.impairment = Impairment.parse("rate=1mbit,direction=tx")
    size = 1000
    line_ms = (14 + 20 + 8 + size) * 8 / 1e6 * 1000  # 1042 bytes at 1 Mbit/s: 8.336 ms
    got = hping(ilink, 10, size=size, interval_ms=1, timeout_ms=2000)
    assert [s.err for s in got] == [PingError.REPLIED] * 10, got
    assert min(s.time for s in got) >= line_ms
    tx = ilink.dev.impair_counters_tx
    assert tx.rate_limited >= 1  # sent every 1 ms, each needs 8.3 ms of line: a queue formed
    assert tx.queue_dropped == 0


@pytest.mark.parametrize(("direction", "extra_replies"), [("tx", 1), ("rx", 1), ("both", 3)])
def test_duplicates_reach_the_stack(ilink: ImpairedLink, direction: str,
                                    extra_replies: int) -> None:
    ilink.dev.impairment = Impairment.parse(f"dup=100%,direction={direction}")
    got = hping(ilink, 10, interval_ms=10, timeout_ms=2000)
    assert [s.err for s in got] == [PingError.REPLIED] * 10
    # Wait for the last duplicates to arrive, then count the replies nobody waited for.
    ilink.stack.run(until=lambda: ilink.stack.stats["icmp.echo_reply_unmatched"]
                    >= 10 * extra_replies, timeout=2)
    assert ilink.stack.stats["icmp.echo_reply_unmatched"] == 10 * extra_replies


def test_corrupted_replies_are_caught_by_the_stack(ilink: ImpairedLink) -> None:
    ilink.dev.impairment = Impairment.parse("corrupt=100%,direction=rx,seed=3")
    got = hping(ilink, 20, interval_ms=5, timeout_ms=300)
    assert {s.err for s in got} <= {PingError.REPLIED, PingError.TIMEOUT}
    rx = ilink.dev.impair_counters_rx
    assert rx.frames == rx.corrupted == 20  # the kernel answered all 20; every answer was hit
    st = ilink.stack
    caught = sum(st.drops.values()) + sum(
        st.stats[k] for k in ("eth.not_for_us", "eth.multicast_ignored", "eth.unknown_ethertype"))
    replied = sum(s.err is PingError.REPLIED for s in got)
    # Every bad frame is counted somewhere. The only ones accepted are flips in a
    # field no checksum covers: the Ethernet source MAC is 48 of the 784 bits.
    assert caught + replied + st.stats["icmp.echo_reply_unmatched"] == 20, (st.drops, st.stats)
    assert caught >= 10
    assert st.drops["internal_error"] == 0


def test_corrupted_requests_are_dropped_by_the_kernel(ilink: ImpairedLink) -> None:
    ilink.dev.impairment = Impairment.parse("corrupt=100%,direction=tx,seed=3")
    before = ilink.dev.counters.rx_frames  # the TAP's own counters: what really came in
    got = hping(ilink, 20, interval_ms=5, timeout_ms=300)
    assert ilink.dev.impair_counters_tx.corrupted == 20
    answered = ilink.dev.counters.rx_frames - before
    replied = sum(s.err is PingError.REPLIED for s in got)
    assert replied == answered < 10  # the kernel answers only flips it cannot see (source MAC)
    assert sum(s.err is PingError.TIMEOUT for s in got) == 20 - replied


# -- the wrapper is a Device: a perfect link passes the conformance suite -------------


class TestTransparentImpairedTapConformance(DeviceConformance):
    @pytest.fixture
    def conformance_pair(self, netns: Netns) -> Iterator[DevicePair]:
        from tests.integration.test_tap_conformance import opened_pair

        with opened_pair(netns, LinkType.ETHERNET) as (dev, peer):
            yield ImpairedDevice(dev, Impairment()), peer

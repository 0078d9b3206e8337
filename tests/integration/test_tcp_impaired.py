"""TCP through a bad link (the impairment wrapper) against the kernel, both directions.

The kernel here has no netem: hilkit's ImpairedDevice loses, reorders, duplicates
and corrupts frames both ways between hilkit and the TAP.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hilkit.drivers.tap import TapDevice
from hilkit.hil.plugin import KernelThread
from hilkit.port import ImpairedDevice, Impairment
from hilkit.rig.netns import Netns
from hilkit.stack import Stack
from hilkit.stack.sockets import SHUT_WR, create_connection
from tests.integration.conftest import HILKIT_IP, KERNEL_IP, TAP, kernel_side
from tests.integration.tcp_helpers import (
    h_recv_all,
    k_recv_all,
    kernel_listener,
    pattern,
    sha,
)

BAD_LINK = "loss=2%,reorder=1%,dup=0.5%,corrupt=0.1%"
SIZE = 8 << 20


@pytest.fixture(params=[1, 2])
def bad(request: pytest.FixtureRequest,
        netns: Netns) -> Iterator[tuple[Netns, Stack, ImpairedDevice]]:
    tap = netns.call(lambda: TapDevice(TAP))
    kernel_side(netns, persistent=False)
    stack = Stack()
    dev = ImpairedDevice(tap, Impairment.parse(f"{BAD_LINK},seed={request.param}"),
                         clock=stack.clock)
    stack.link_add(stack.add_device(dev), HILKIT_IP, "255.255.255.0")
    yield netns, stack, dev
    assert stack.drops["internal_error"] == 0
    stack.close()


def test_8mib_each_way_through_a_bad_link(bad: tuple[Netns, Stack, ImpairedDevice],
                                          tmp_path: Path) -> None:
    ns, stack, dev = bad
    up, down = pattern(SIZE, 1), pattern(SIZE, 2)
    lst = kernel_listener(ns, 5001)

    def kernel() -> tuple[int, str]:
        k, _ = lst.accept()
        got = k_recv_all(k)  # until hilkit's FIN
        k.sendall(down)
        k.close()
        return got

    kt = KernelThread(stack, kernel)
    kt.start()
    s = create_connection(stack, (KERNEL_IP, 5001), timeout=60)
    s.sendall(up)
    s.shutdown(SHUT_WR)
    n, digest = h_recv_all(s)
    assert kt.wait() == (SIZE, sha(up))
    assert (n, digest) == (SIZE, sha(down))
    info = s.tcp.info()
    s.close()
    lst.close()
    c = dev.impair_counters
    assert c.dropped > 0 and c.reordered > 0 and c.duplicated > 0  # the link was bad
    assert info["fast_retransmits"] > 0  # losses were repaired by SACK/NewReno ...
    # ... and no loss cost more than two RTOs in a row (200 ms, then 400 ms).
    assert info.get("max_backoff", 0) <= 2, info
    print(f"\n    [{BAD_LINK}: {info['retransmits']} retransmits, {info['timeouts']} RTOs, "
          f"{info.get('tail_loss_probes', 0)} TLPs, {info.get('lost_retransmits', 0)} lost "
          f"retransmissions; impairment {c.as_dict()}]")

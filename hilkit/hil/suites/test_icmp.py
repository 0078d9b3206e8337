"""icmp: ping both ways at sizes up to fragmented datagrams; hilkit's ping API and the
kernel's ``ping`` in the rig's namespace."""

from __future__ import annotations

import statistics

import pytest

from hilkit.hil.plugin import (
    BuiltRigLike,
    FigureFn,
    HilSession,
    Kernel,
    require_kernel_interface,
    require_peer_service,
    suite_params_of,
)
from hilkit.stack import PingError, PingStats, Stack


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "size" in metafunc.fixturenames:
        sizes = suite_params_of(metafunc.config, "icmp").integers("sizes")
        metafunc.parametrize("size", sizes, ids=[str(s) for s in sizes])


def _count(hil: HilSession) -> int:
    return hil.params("icmp").integer("count")


def test_hilkit_pings_kernel(rig: BuiltRigLike, stack: Stack, hil: HilSession, size: int,
                             figure: FigureFn) -> None:
    require_peer_service(rig, "ping")
    count = _count(hil)
    timeout_ms = hil.params("icmp").number("timeout_s") * 1000
    got: list[PingStats] = []
    stack.ping(rig.kernel_ip, count, 100, timeout_ms, size, got.append)
    assert stack.run(until=lambda: len(got) == count, timeout=count * timeout_ms / 1000 + 10), \
        f"{len(got)} of {count} results after the timeout"
    bad = [f"seq {p.seq}: {p.err.name}" for p in got if p.err is not PingError.REPLIED]
    assert not bad, f"ping {rig.kernel_ip} size {size}: {', '.join(bad)}"
    rtts = [p.time for p in got]
    figure(f"ping_rtt_ms_{size}", statistics.median(rtts), "ms")


def test_kernel_pings_hilkit(rig: BuiltRigLike, stack: Stack, kernel: Kernel, hil: HilSession,
                             size: int, figure: FigureFn) -> None:
    require_kernel_interface(rig, "the kernel ping hilkit",
                             "slirp forwards no ICMP from the namespace to its client")
    count = _count(hil)
    wait = hil.params("icmp").number("timeout_s")
    th = kernel.start(stack, lambda: kernel.ping(rig.dut_ip, count=count, size=size, wait=wait))
    received, out = th.wait(count * (0.2 + wait) + 30)
    assert received == count, f"kernel ping -s {size} {rig.dut_ip}: {received} of {count}:\n{out}"
    assert stack.stats["icmp.echo_replies_sent"] >= count, dict(stack.stats)

"""arp: hilkit resolves the kernel, and the kernel learns hilkit's MAC."""

from __future__ import annotations

from hilkit.hil.plugin import BuiltRigLike, Kernel, require_ethernet
from hilkit.stack import PingError, PingStats, Stack
from hilkit.stack.addr import ip_to_int


def test_hilkit_resolves_kernel(rig: BuiltRigLike, kernel: Kernel, stack: Stack) -> None:
    require_ethernet(rig, "ARP")
    want = kernel.mac()
    iface = stack.interfaces[0]
    assert iface.arp.lookup(ip_to_int(rig.kernel_ip), stack.clock.now_ms()) is None
    got: list[PingStats] = []
    stack.ping(rig.kernel_ip, 1, 0, 3000, 8, got.append)  # needs the kernel's MAC first
    assert stack.run(until=lambda: bool(got), timeout=10), "ping never finished"
    mac = iface.arp.lookup(ip_to_int(rig.kernel_ip), stack.clock.now_ms())
    assert mac is not None, f"hilkit did not resolve {rig.kernel_ip} (ping: {got[0].err.name})"
    assert mac == want, f"hilkit resolved {rig.kernel_ip} to {mac.hex(':')}, " \
                        f"the kernel's interface is {want.hex(':')}"
    assert got[0].err is PingError.REPLIED, f"resolved, but ping got {got[0].err.name}"


def test_kernel_learns_hilkit_mac(rig: BuiltRigLike, kernel: Kernel, stack: Stack) -> None:
    require_ethernet(rig, "ARP")
    kernel.flush_neigh()
    assert (kernel.neigh(rig.dut_ip) or {}).get("lladdr") is None
    th = kernel.start(stack, lambda: kernel.ping(rig.dut_ip, count=1, wait=3))
    received, out = th.wait(30)
    entry = kernel.neigh(rig.dut_ip)
    assert entry is not None, f"the kernel has no neighbour entry for {rig.dut_ip}:\n{out}"
    mac = rig.device.mac or b""
    assert entry.get("lladdr") == mac.hex(":"), \
        f"kernel neighbour entry {entry}, hilkit's MAC is {mac.hex(':')}"
    states = set(entry.get("state", []))
    assert states & {"REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT"}, \
        f"neighbour entry in state {sorted(states)}"
    assert received == 1, f"the kernel learnt the MAC but its ping failed:\n{out}"

"""``hilkit rigs`` and ``hilkit rig check NAME``: list rigs; validate and probe one.

They live with the runner because the probe pings through the stack, and the
rig layer stays below the stack (hil -> rig -> drivers/bus/sim -> port).

``add_rig_commands(subparsers)`` adds both to the ``hilkit`` command's parser.
Exit status: 0 all well, 2 a rig is broken or its hardware is not there (the
message on stderr).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from hilkit.hil.preflight import NotRunnable, check_rig, failure_lines, load_checked, say
from hilkit.port.device import device_probe
from hilkit.port.errors import ChipNotResponding
from hilkit.rig.builder import BuiltRig, build
from hilkit.rig.loader import rig_dirs, scan_rigs
from hilkit.rig.schema import Rig, display_path

__all__ = ["add_rig_commands", "cmd_rig_check", "cmd_rigs", "rigs_table"]

PROBE_PING_TIMEOUT_MS = 3000.0
PROG = "hilkit rig check"


def rigs_table(rigs: list[Rig]) -> str:
    """The rigs as a plain-text table: name, driver, bus, peer, description."""
    rows = [("NAME", "DRIVER", "BUS", "PEER", "DESCRIPTION")]
    for r in rigs:
        rows.append((
            r.name, r.driver.name, r.bus.describe() if r.bus is not None else "-",
            r.peer.describe(), r.description.strip().splitlines()[0] if r.description else "",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    ).rstrip() + "\n"


def cmd_rigs(args: argparse.Namespace) -> int:
    """List every rig found by name (``$HILKIT_RIGS``, the repository's rigs/, ./rigs/)."""
    rigs, errors = scan_rigs()
    out: TextIO = sys.stdout
    if not rigs and not errors:
        dirs = ", ".join(str(d) for d in rig_dirs()) or "no rigs directory found"
        print(f"hilkit rigs: no rig files ({dirs}; set $HILKIT_RIGS)", file=sys.stderr)
        return 2
    out.write(rigs_table(sorted(rigs, key=lambda r: r.name)))
    for e in errors:
        for line in e.lines():
            print(f"hilkit rigs: {line}", file=sys.stderr)
    return 2 if errors else 0


def cmd_rig_check(args: argparse.Namespace) -> int:
    """Validate the rig, check its hardware, and for a simulated rig (or with
    ``--probe``) build it and probe the chip: the driver's reset and probe, then
    one ping from a hilkit stack to the kernel peer. No suite runs."""
    t0 = time.monotonic()
    try:
        rig = load_checked(args.rig)
    except NotRunnable as e:
        say(sys.stderr, PROG, e.lines)
        return 2
    bus = f"on {rig.bus.describe()}" if rig.bus is not None else "no bus"
    print(f"{rig.name}: {display_path(rig.path)}: valid (driver {rig.driver.name}, {bus}, "
          f"peer {rig.peer.describe()}; suites: {', '.join(rig.suites)})")
    try:
        check_rig(rig)
    except NotRunnable as e:
        say(sys.stderr, PROG, e.lines)
        return 2
    print(f"{rig.name}: hardware present ({time.monotonic() - t0:.2f} s)"
          if not rig.simulated else f"{rig.name}: simulated, no hardware to look for")
    if not (rig.simulated or getattr(args, "probe", False)):
        return 0
    try:
        with build(rig) as built:
            _probe(built)
    except Exception as e:  # the same words as ``hilkit hil`` for the same failure
        say(sys.stderr, PROG, failure_lines(e, rig, "probe failed"))
        return 2
    return 0


def _probe(built: BuiltRig) -> None:
    from hilkit.stack import PingError, PingStats, Stack

    dev = built.device
    mac = dev.mac.hex(":") if dev.mac is not None else "none"
    print(f"{built.rig.name}: device {dev.name}: mac {mac}, mtu {dev.mtu}, "
          f"link {'up' if dev.link_up else 'down'}")
    print(f"{built.rig.name}: chip: {_identify(built)}")
    stack = Stack()
    try:
        stack.add_device(dev)
        stack.link_add(dev, built.dut_ip, built.dut_netmask)
        got: list[PingStats] = []
        stack.ping(built.kernel_ip, 1, 0, PROBE_PING_TIMEOUT_MS, 56, got.append)
        stack.run(until=lambda: bool(got), timeout=PROBE_PING_TIMEOUT_MS / 1000 + 2)
    finally:
        stack.close()  # closes the device too; the rig closes it again, which is allowed
    if not got or got[0].err is not PingError.REPLIED:
        what = got[0].err.name.lower() if got else "no answer"
        raise OSError(f"ping {built.kernel_ip} from {built.dut_ip}: {what}")
    print(f"{built.rig.name}: ping {built.kernel_ip} from {built.dut_ip}: "
          f"{got[0].time:.2f} ms")
    counters = getattr(built.bus, "counters", None)
    if counters is not None:
        print(f"{built.rig.name}: bus: {counters.bytes} bytes, {counters.transactions} CS "
              f"transactions, {counters.calls} calls")


def _identify(built: BuiltRig) -> str:
    """The identity check of the identity suite: the NIC's ``identify`` on the bus, else the
    driver's ``probe()``; ``ChipNotResponding`` when the chip does not answer as it should."""
    nic = built.nic
    identify = nic.load_identify() if nic is not None else None
    if identify is not None and built.bus is not None:
        assert nic is not None
        problem = identify(built.bus)
        if problem is not None:
            raise ChipNotResponding(problem)
        return f"{nic.title} answered its identity probe"
    probe = device_probe(built.driver_device or built.device)
    if probe is not None:
        if probe() is False:
            raise ChipNotResponding(f"{built.device.name}: the chip did not answer probe()")
        return "answered the driver's probe()"
    return ("nothing identifies it (register a Nic with identify=..., or give the driver "
            "a probe() method)")


def add_rig_commands(subparsers: Any) -> None:
    """Add ``rigs`` and ``rig check NAME`` to the ``hilkit`` parser's subcommands.

    ``subparsers`` is what ``ArgumentParser.add_subparsers()`` returned; each
    command sets ``fn`` (called with the parsed args, returns the exit status).
    """
    p = subparsers.add_parser(
        "rigs", help="list the rigs: name, driver, bus, peer",
        description="List the rig files found in $HILKIT_RIGS, the repository's rigs/ "
                    "and ./rigs/.")
    p.set_defaults(fn=cmd_rigs)
    rig = subparsers.add_parser("rig", help="rig files: check NAME")
    rig_sub = rig.add_subparsers(dest="rig_cmd", required=True)
    c = rig_sub.add_parser(
        "check", help="validate a rig, check its hardware, probe it (no suites run)",
        description="Validate the rig file, check that its hardware is there, and for a "
                    "simulated rig (or with --probe) build it and probe the chip.")
    c.add_argument("rig", metavar="NAME|PATH", help="a rig name (rigs/NAME.toml) or a path")
    c.add_argument("--probe", action="store_true",
                   help="also build a real rig (its host interface is moved into a private "
                        "namespace and back) and probe the chip")
    c.set_defaults(fn=cmd_rig_check)

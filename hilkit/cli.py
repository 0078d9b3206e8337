"""The `hilkit` command: serve, hil, rigs, rig check."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import stat
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from hilkit.port.impair import Impairment
from hilkit.port.names import host_interface, host_problem, ifname_problem, parse_ipv4
from hilkit.port.names import show as _show


def check_gw(text: str, iface: ipaddress.IPv4Interface | None) -> str | None:
    """``--gw``: why it cannot be the gateway of ``iface`` (None when unknown), or None."""
    g = parse_ipv4(text)
    if isinstance(g, str):
        return g
    why = host_problem(g, None if iface is None else iface.network)
    if why:
        return why
    if iface is not None:
        if g not in iface.network:
            return f"{g} is not on the link of --ip {iface} ({iface.network})"
        if g == iface.ip:
            return f"{g} is the address of --ip itself"
    return None


def check_pcap(path: str) -> str | None:
    """Why a capture file cannot be created at ``path``, or None; opens nothing."""
    if not path:
        return "is empty; give a file name"
    if "\0" in path:
        return f"{_show(path)} holds a NUL character"
    try:
        os.fsencode(path)
    except UnicodeError:
        return f"{_show(path)} cannot be encoded as a file name"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        parent = os.path.dirname(path) or "."
        if path.endswith(os.sep):
            return f"{_show(path)} names a directory, not a file"
        try:
            pst = os.stat(parent)
        except FileNotFoundError:
            return f"directory {_show(parent)} does not exist"
        except OSError as e:
            return f"directory {_show(parent)}: {e.strerror}"
        if not stat.S_ISDIR(pst.st_mode):
            return f"{_show(parent)} is not a directory"
        if not os.access(parent, os.W_OK):
            return f"directory {_show(parent)} is not writable"
        return None
    except OSError as e:  # a file where a directory should be, a name too long, ...
        return f"{_show(path)}: {e.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return f"{_show(path)} is a directory; give a file name"
    if stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):
        return f"{_show(path)} is a FIFO or a socket, not a file"
    if not os.access(path, os.W_OK):
        return f"{_show(path)} is not writable"
    return None


@dataclass
class ServeArgs:
    """``hilkit serve``'s arguments, checked."""

    tap: str
    iface: ipaddress.IPv4Interface
    gw: str | None
    pcap: str | None
    impairment: Impairment | None


def check_serve_args(args: argparse.Namespace) -> ServeArgs | list[str]:
    """Every problem with the arguments (``--arg: what is wrong``), or the checked values.

    Checks everything before anything is opened, so a bad argument never
    leaves a half-made server, and reports all problems at once.
    """
    problems: list[str] = []
    if (why := ifname_problem(args.tap)) is not None:
        problems.append(f"--tap: {why}")
    checked_ip = host_interface(args.ip)
    iface = None if isinstance(checked_ip, str) else checked_ip
    if isinstance(checked_ip, str):
        problems.append(f"--ip: {checked_ip}")
    if args.gw is not None and (why := check_gw(args.gw, iface)) is not None:
        problems.append(f"--gw: {why}")
    if args.pcap is not None and (why := check_pcap(args.pcap)) is not None:
        problems.append(f"--pcap: {why}")
    impairment = None
    if args.impair:
        try:
            impairment = Impairment.parse(args.impair)
        except (ValueError, OverflowError) as e:
            problems.append(f"--impair: {e}")
    if problems or iface is None:
        return problems
    return ServeArgs(args.tap, iface, args.gw, args.pcap, impairment)


def cmd_serve(args: argparse.Namespace) -> int:
    checked = check_serve_args(args)
    if isinstance(checked, list):
        for problem in checked:
            print(f"hilkit serve: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="hilkit serve: %(levelname)s: %(message)s")

    from hilkit.drivers.tap import TapDevice
    from hilkit.port.impair import ImpairedDevice
    from hilkit.services import start_tcp_services, start_udp_services
    from hilkit.stack import Stack

    try:  # the TAP first: a missing one must not leave an empty capture file behind
        tap = TapDevice(checked.tap, create=False)
    except OSError as e:
        print(f"hilkit serve: --tap: cannot open TAP {checked.tap!r}: {e.strerror or e}\n"
              f"  check: ip link show {checked.tap}", file=sys.stderr)
        return 2
    try:
        stack = Stack(pcap=checked.pcap)
    except OSError as e:
        tap.close()
        print(f"hilkit serve: --pcap: cannot create {_show(checked.pcap or '')}: "
              f"{e.strerror or e}", file=sys.stderr)
        return 2
    dev = stack.add_device(tap if checked.impairment is None
                           else ImpairedDevice(tap, checked.impairment, clock=stack.clock))
    stack.link_add(dev, str(checked.iface.ip), str(checked.iface.netmask))
    if checked.gw:
        stack.route_add("0.0.0.0", "0.0.0.0", checked.gw)
    services: Counter[str] = Counter()
    start_udp_services(stack, services)
    start_tcp_services(stack)
    stop: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)
        stack.wake()  # the loop sees ``stop`` at once; a second signal is harmless

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"ready {args.ip} on {args.tap} mac {(tap.mac or b'').hex(':')}", flush=True)
    try:
        stack.run(until=lambda: bool(stop))
    finally:
        stack.close()  # first: closing the capture may still count a failed write
    counters = stack.counters()
    counters["services"] = dict(sorted(services.items()))
    print(json.dumps(counters, indent=2), flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hilkit", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run a stack on an existing TAP: ARP, ping, "
                       "echo/discard (UDP, TCP), chargen (TCP)")
    s.add_argument("--tap", required=True, help="name of an existing TAP interface")
    s.add_argument("--ip", required=True, metavar="ADDR/LEN", help="e.g. 192.168.5.4/24")
    s.add_argument("--gw", metavar="ADDR", help="default gateway")
    s.add_argument("--pcap", metavar="FILE", help="write a pcapng capture of the TAP")
    s.add_argument("--impair", metavar="SPEC",
                   help="a bad link, e.g. loss=2%%,reorder=1%%,dup=0.5%%,corrupt=0.1%%,"
                   "delay=5ms,rate=10mbit,seed=1")
    s.set_defaults(fn=cmd_serve)
    from hilkit.hil.rig_commands import add_rig_commands
    from hilkit.hil.runner import add_hil_command

    add_hil_command(sub)
    add_rig_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())

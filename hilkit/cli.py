"""The `hilkit` command: serve, hil, rigs, rig check."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from hilkit.stack.addr import int_to_ip, parse_cidr


def cmd_serve(args: argparse.Namespace) -> int:
    from hilkit.drivers.tap import TapDevice
    from hilkit.port.impair import ImpairedDevice, Impairment
    from hilkit.services import start_tcp_services, start_udp_services
    from hilkit.stack import Stack

    try:
        addr, mask = parse_cidr(args.ip)
    except ValueError as e:
        print(f"hilkit serve: --ip: {e}", file=sys.stderr)
        return 2
    impairment = None
    if args.impair:
        try:
            impairment = Impairment.parse(args.impair)
        except ValueError as e:
            print(f"hilkit serve: --impair: {e}", file=sys.stderr)
            return 2
    try:
        tap = TapDevice(args.tap, create=False)
    except OSError as e:
        print(f"hilkit serve: cannot open TAP {args.tap!r}: {e.strerror or e}\n"
              f"  check: ip link show {args.tap}", file=sys.stderr)
        return 2
    stack = Stack(pcap=args.pcap)
    dev = stack.add_device(tap if impairment is None
                           else ImpairedDevice(tap, impairment, clock=stack.clock))
    stack.link_add(dev, int_to_ip(addr), int_to_ip(mask))
    if args.gw:
        stack.route_add("0.0.0.0", "0.0.0.0", args.gw)
    start_udp_services(stack)
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
        counters = stack.counters()
        stack.close()
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

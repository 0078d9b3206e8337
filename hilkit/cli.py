"""The `hilkit` command: serve, hil, rigs, rig check."""

from __future__ import annotations

import argparse
import faulthandler
import ipaddress
import json
import logging
import os
import re
import signal
import stat
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from hilkit.port.impair import Impairment
from hilkit.port.names import host_interface, host_problem, ifname_problem, parse_ipv4
from hilkit.port.names import show as _show

if TYPE_CHECKING:
    from hilkit.drivers.ppp.chat import ChatScript
    from hilkit.drivers.ppp.device import PppDevice
    from hilkit.drivers.ppp.link import PppConfig
    from hilkit.stack import Stack

DEFAULT_BAUD = 115200
DEFAULT_PASSWORD_ENV = "HILKIT_PPP_PASSWORD"


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
    """``hilkit serve --tap``'s arguments, checked."""

    tap: str
    iface: ipaddress.IPv4Interface
    gw: str | None
    pcap: str | None
    impairment: Impairment | None
    busy_poll_us: int = 0
    offload: bool = False


@dataclass
class PppServeArgs:
    """``hilkit serve --ppp``'s arguments, checked. ``password`` never shows in a repr."""

    port: str
    baud: int
    rtscts: bool
    serve: bool  # --ppp-serve: we authenticate the peer and give it its address
    address: str | None  # ours: asked for (client) or given (server)
    peer_address: str | None  # server: what the peer gets
    user: str | None
    password: str | None = field(repr=False)
    vj: bool
    echo_ms: int
    passive: bool
    chat: ChatScript | None
    pcap: str | None
    impairment: Impairment | None
    busy_poll_us: int = 0


# Options that only a PPP link takes (dest, option), for the --tap refusals.
_PPP_ONLY = (("baud", "--baud"), ("rtscts", "--rtscts"), ("user", "--user"),
             ("password_env", "--password-env"), ("no_vj", "--no-vj"),
             ("echo_ms", "--echo-ms"), ("passive", "--passive"), ("chat", "--chat"),
             ("ppp_serve", "--ppp-serve"), ("peer_ip", "--peer-ip"))


def _host_address(text: str) -> str | None:
    """Why ``text`` is not one host's IPv4 address, or None."""
    a = parse_ipv4(text)
    return a if isinstance(a, str) else host_problem(a, None)


def _check_ppp_args(args: argparse.Namespace, problems: list[str]) -> PppServeArgs | None:
    """The PPP half of ``check_serve_args``: problems appended, checked values or None."""
    from hilkit.drivers.ppp.chat import ChatError, ChatScript

    before = len(problems)
    port: str = args.ppp
    if not port:
        problems.append("--ppp: is empty; give a serial port such as /dev/ttyUSB0")
    elif "\0" in port:
        problems.append(f"--ppp: {_show(port)} holds a NUL character")
    if args.ip is not None and (why := _host_address(args.ip)) is not None:
        problems.append(f"--ip: {why} (a PPP link's address is one host: ADDR, no /LEN)")
    if args.ppp_serve:
        if args.ip is None:
            problems.append("--ip: --ppp-serve needs our address (--ip ADDR)")
        if args.peer_ip is None:
            problems.append("--peer-ip: --ppp-serve needs the address to give the peer")
    elif args.peer_ip is not None:
        problems.append("--peer-ip: only with --ppp-serve (a client is told the peer's)")
    if args.peer_ip is not None:
        if (why := _host_address(args.peer_ip)) is not None:
            problems.append(f"--peer-ip: {why}")
        elif args.ip is not None and args.peer_ip == args.ip:
            problems.append(f"--peer-ip: {args.peer_ip} is our own address (--ip)")
    if args.gw is not None:
        problems.append("--gw: not with --ppp: the link's peer is the gateway (IPCP)")
    user: str | None = args.user
    password: str | None = None
    env_name = args.password_env or DEFAULT_PASSWORD_ENV
    if user is not None:
        try:
            raw_user = user.encode()
        except UnicodeError:
            raw_user = b""
        if not 0 < len(raw_user) <= 255:
            problems.append(f"--user: {_show(user)} must be 1 to 255 bytes of UTF-8")
        password = os.environ.get(env_name) if _ENV_NAME.fullmatch(env_name) else None
        if not _ENV_NAME.fullmatch(env_name):  # perhaps the password itself: not shown
            problems.append("--password-env: takes the NAME of an environment variable "
                            "(letters, digits, _), not the password")
        elif password is None:
            problems.append(f"--password-env: the environment variable {_show(env_name)} "
                            f"is not set; put the password there, never on the command line")
        else:
            try:
                too_long = len(password.encode()) > 255
            except UnicodeError:
                too_long = True
            if too_long:
                problems.append(f"--password-env: the password in {_show(env_name)} must be "
                                f"at most 255 bytes of UTF-8")
    elif args.password_env is not None:
        problems.append("--password-env: only with --user (the name to authenticate with)")
    chat = None
    if args.chat is not None:
        try:
            chat = ChatScript.parse(args.chat)
        except ChatError as e:
            problems.append(f"--chat: {e}")
    if len(problems) != before:
        return None
    return PppServeArgs(
        port=port, baud=args.baud or DEFAULT_BAUD, rtscts=args.rtscts, serve=args.ppp_serve,
        address=args.ip, peer_address=args.peer_ip, user=user, password=password,
        vj=not args.no_vj, echo_ms=args.echo_ms or 0, passive=args.passive, chat=chat,
        pcap=None, impairment=None)


def check_serve_args(args: argparse.Namespace) -> ServeArgs | PppServeArgs | list[str]:
    """Every problem with the arguments (``--arg: what is wrong``), or the checked values.

    Checks everything before anything is opened, so a bad argument never
    leaves a half-made server, and reports all problems at once.
    """
    problems: list[str] = []
    ppp: PppServeArgs | None = None
    iface = None
    if getattr(args, "ppp", None) is not None:
        ppp = _check_ppp_args(args, problems)
        if getattr(args, "offload", False):
            problems.append("--offload: only with --tap (a serial line has no kernel to "
                            "hand checksums and segmentation to)")
    else:
        if (why := ifname_problem(args.tap)) is not None:
            problems.append(f"--tap: {why}")
        if args.ip is None:
            problems.append("--ip: required with --tap (ADDR/LEN, e.g. 192.168.5.4/24)")
        else:
            checked_ip = host_interface(args.ip)
            iface = None if isinstance(checked_ip, str) else checked_ip
            if isinstance(checked_ip, str):
                problems.append(f"--ip: {checked_ip}")
        if args.gw is not None and (why := check_gw(args.gw, iface)) is not None:
            problems.append(f"--gw: {why}")
        for dest, option in _PPP_ONLY:
            if getattr(args, dest, None) not in (None, False):
                problems.append(f"{option}: only with --ppp")
    if args.pcap is not None and (why := check_pcap(args.pcap)) is not None:
        problems.append(f"--pcap: {why}")
    impairment = None
    if args.impair:
        try:
            impairment = Impairment.parse(args.impair)
        except (ValueError, OverflowError) as e:
            problems.append(f"--impair: {e}")
    if impairment is not None and impairment.corrupt and getattr(args, "offload", False):
        problems.append("--impair: corrupt needs the stack to check checksums, which "
                        "--offload leaves to the kernel: drop one of them")
    if problems:
        return problems
    busy = getattr(args, "busy_poll_us", None) or 0
    if ppp is not None:
        ppp.pcap, ppp.impairment, ppp.busy_poll_us = args.pcap, impairment, busy
        return ppp
    assert iface is not None
    return ServeArgs(args.tap, iface, args.gw, args.pcap, impairment, busy,
                     bool(getattr(args, "offload", False)))


def _catch_stop_signals(stack: Stack) -> list[int]:
    """From now on SIGINT/SIGTERM land in the returned list and wake ``stack``.

    Called before ``ready`` is printed: a signal sent as soon as the line is read
    must end the loop, not find the default action (or an inherited SIG_IGN).
    SIGUSR1 prints every thread's stack to stderr, to ask a stuck server where it is.
    """
    stop: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.append(signum)
        stack.wake()  # the loop sees ``stop`` at once; a second signal is harmless

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    return stop


def _serve_loop(stack: Stack, stop: list[int], ended: Callable[[], bool] | None = None) -> bool:
    """Run ``stack`` until a signal lands in ``stop`` (True) or ``ended()`` (False)."""
    stack.run(until=lambda: (ended is not None and ended()) or bool(stop))
    return bool(stop)


def _print_counters(stack: Stack, services: Counter[str],
                    extra: dict[str, object] | None = None) -> None:
    counters = stack.counters()
    counters["services"] = dict(sorted(services.items()))
    counters.update(extra or {})
    print(json.dumps(counters, indent=2), flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    checked = check_serve_args(args)
    if isinstance(checked, list):
        for problem in checked:
            print(f"hilkit serve: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="hilkit serve: %(levelname)s: %(message)s")
    if isinstance(checked, PppServeArgs):
        return serve_ppp(checked)

    from hilkit.drivers.tap import TapDevice
    from hilkit.port.impair import ImpairedDevice
    from hilkit.services import start_tcp_services, start_udp_services
    from hilkit.stack import Stack, StackConfig

    try:  # the TAP first: a missing one must not leave an empty capture file behind
        tap = TapDevice(checked.tap, create=False, offload=checked.offload)
    except OSError as e:
        print(f"hilkit serve: --tap: cannot open TAP {checked.tap!r}: {e.strerror or e}\n"
              f"  check: ip link show {checked.tap}", file=sys.stderr)
        return 2
    try:
        stack = Stack(config=StackConfig(busy_poll_us=checked.busy_poll_us), pcap=checked.pcap)
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
    stop = _catch_stop_signals(stack)
    print(f"ready {args.ip} on {args.tap} mac {(tap.mac or b'').hex(':')}", flush=True)
    try:
        _serve_loop(stack, stop)
    finally:
        stack.close()  # first: closing the capture may still count a failed write
    _print_counters(stack, services)
    return 0


def ppp_config(a: PppServeArgs) -> PppConfig:
    """The ``PppConfig`` for ``a``: a client of the peer, or (``--ppp-serve``) its server."""
    from hilkit.drivers.ppp.auth import Credentials
    from hilkit.drivers.ppp.lcp import AuthProtocol
    from hilkit.drivers.ppp.link import PppConfig

    if not a.serve:
        creds = (Credentials.of(a.user, a.password or "") if a.user is not None else None)
        return PppConfig(credentials=creds, address=a.address, vj=a.vj,
                         echo_interval_ms=a.echo_ms, passive=a.passive)
    demand: tuple[AuthProtocol, ...] = ()
    secrets: dict[bytes, bytes] = {}
    if a.user is not None:
        demand = (AuthProtocol.CHAP_MD5, AuthProtocol.PAP)  # CHAP first: no clear text
        secrets = {a.user.encode(): (a.password or "").encode()}
    return PppConfig(address=a.address, peer_address=a.peer_address, dns_servers=(),
                     request_dns=False, demand_auth=demand, secrets=secrets, vj=a.vj,
                     echo_interval_ms=a.echo_ms, passive=a.passive)


class _LinkWatch:
    """Turns the device's link events into one line each on stdout; knows when it ended."""

    def __init__(self, dev: PppDevice) -> None:
        self.dev = dev
        self.was_up = False
        self.ended = False
        self.failure: str | None = None  # why the link never came up

    def __call__(self) -> bool:
        from hilkit.drivers.ppp.chat import ChatFailed
        from hilkit.drivers.ppp.link import AuthFailedEvent, LinkDown, LinkUp, Terminated

        for ev in self.dev.take_events():
            if isinstance(ev, LinkUp):
                self.was_up = True
                r = ev.result
                dns = ",".join(str(d) for d in r.dns if int(d) != 0) or "-"
                print(f"link up: {r.address} peer {r.peer_address or '-'} dns {dns}",
                      flush=True)
            elif isinstance(ev, LinkDown):
                print(f"link down: {ev.reason}", flush=True)
            elif isinstance(ev, AuthFailedEvent):
                self.failure = f"authentication failed: {ev.message}"
                print(self.failure, flush=True)
            elif isinstance(ev, Terminated):
                self.ended = True
                if not self.was_up and self.failure is None:
                    self.failure = f"the link never came up: {ev.reason}"
        if isinstance(self.dev.chat_outcome, ChatFailed) and not self.ended:
            self.ended = True
            self.failure = f"--chat: {self.dev.chat_outcome}"
        return self.ended


def serve_ppp(a: PppServeArgs) -> int:
    """``hilkit serve --ppp``: the services over a PPP link on a serial port.

    Exit 0 on SIGINT/SIGTERM (the link closed with LCP Terminate, the line hung up) or
    when the peer ends a link that was up; 1 when it never came up (negotiation or
    authentication failed, the chat script failed); 2 when the port cannot be opened.
    """
    from hilkit.drivers.ppp.device import PppDevice
    from hilkit.port.clock import MonotonicClock
    from hilkit.port.errors import HardwareNotFound
    from hilkit.port.impair import ImpairedDevice
    from hilkit.services import start_tcp_services, start_udp_services
    from hilkit.stack import Stack, StackConfig

    config = ppp_config(a)
    clock = MonotonicClock()  # one clock: the device's deadlines are read by the stack
    try:  # the port first: a missing one must not leave an empty capture file behind
        dev = PppDevice(a.port, baudrate=a.baud, rtscts=a.rtscts, config=config,
                        chat=a.chat, clock=clock, default_route=not a.serve)
    except HardwareNotFound as e:
        print(f"hilkit serve: --ppp: {e}", file=sys.stderr)
        return 2
    try:
        stack = Stack(clock=clock, config=StackConfig(busy_poll_us=a.busy_poll_us), pcap=a.pcap)
    except OSError as e:
        dev.close()
        print(f"hilkit serve: --pcap: cannot create {_show(a.pcap or '')}: "
              f"{e.strerror or e}", file=sys.stderr)
        return 2
    stack.add_device(dev if a.impairment is None
                     else ImpairedDevice(dev, a.impairment, clock=clock))
    services: Counter[str] = Counter()
    start_udp_services(stack, services)
    start_tcp_services(stack)
    watch = _LinkWatch(dev)
    role = "server, giving the peer " + str(a.peer_address) if a.serve else "client"
    stop = _catch_stop_signals(stack)
    print(f"ready on {a.port} ppp {a.baud} baud ({role}); waiting for the link", flush=True)
    signalled = False
    try:
        signalled = _serve_loop(stack, stop, watch)
    finally:
        stack.close()  # closes the device: LCP Terminate-Request, then the hang-up
        watch()  # the link down that closing brought
    _print_counters(stack, services, {"ppp": dev.stats})
    if not signalled and not watch.was_up:
        print(f"hilkit serve: {watch.failure or 'the link ended'}", file=sys.stderr)
        return 1
    return 0


class _NoPassword(argparse.Action):
    """``--password``: refused without showing it; it belongs in the environment."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        parser.error("--password is not taken: a command line shows in ps; put the password "
                     f"in an environment variable and name it with --password-env "
                     f"(default {DEFAULT_PASSWORD_ENV})")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _positive_int(text: str) -> int:
    try:
        n = int(text) if len(text) <= 12 else -1
    except ValueError:
        n = -1
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{_show(text)} is not a positive whole number")
    return n


def _non_negative_int(text: str) -> int:
    return 0 if text.strip() == "0" else _positive_int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hilkit", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser(
        "serve", help="run a stack on an existing TAP or a PPP serial line: ARP (TAP), ping, "
        "echo/discard (UDP, TCP), chargen (TCP)",
        description="Serve ping, echo and discard (UDP, TCP) and chargen (TCP) on a TAP "
        "(--tap NAME --ip ADDR/LEN) or over PPP on a serial port (--ppp PORT). Runs until "
        "SIGINT/SIGTERM, then prints its counters as JSON and exits 0.")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--tap", help="name of an existing TAP interface")
    where.add_argument("--ppp", metavar="PORT",
                       help="PPP over this serial port (/dev/ttyUSB0, or a pyserial URL); "
                       "our address comes from IPCP. Exit 0 on a signal or when the peer ends "
                       "a link that was up, 1 when the link never comes up")
    s.add_argument("--ip", metavar="ADDR[/LEN]",
                   help="--tap: ADDR/LEN, e.g. 192.168.5.4/24 (required); --ppp: the address "
                   "to ask the peer for; --ppp-serve: ours (required)")
    s.add_argument("--gw", metavar="ADDR", help="default gateway (--tap only)")
    s.add_argument("--pcap", metavar="FILE", help="write a pcapng capture of the link")
    s.add_argument("--busy-poll-us", type=_non_negative_int, metavar="US", default=0,
                   help="after traffic, keep polling this long before sleeping (as Linux's "
                   "net.core.busy_poll): lower latency for CPU while traffic flows; idle "
                   "still costs nothing (default 0)")
    s.add_argument("--offload", action="store_true",
                   help="--tap: leave TCP/UDP checksums and TCP segmentation to the kernel "
                   "(IFF_VNET_HDR, TUNSETOFFLOAD): segments of up to 64 KB each way; the "
                   "capture still shows wire-sized frames (docs/porting.md, Offloads)")
    s.add_argument("--impair", metavar="SPEC",
                   help="a bad link, e.g. loss=2%%,reorder=1%%,dup=0.5%%,corrupt=0.1%%,"
                   "delay=5ms,rate=10mbit,seed=1")
    pg = s.add_argument_group("PPP (with --ppp)")
    pg.add_argument("--baud", type=_positive_int, metavar="N",
                    help=f"line speed (default {DEFAULT_BAUD})")
    pg.add_argument("--rtscts", action="store_true", help="hardware flow control (RTS/CTS)")
    pg.add_argument("--user", metavar="NAME",
                    help="PAP/CHAP name: ours (client), or the one the peer must give "
                    "(--ppp-serve); the password is read from --password-env")
    pg.add_argument("--password-env", metavar="VAR",
                    help=f"environment variable holding the password (default "
                    f"{DEFAULT_PASSWORD_ENV}); never on the command line, where ps shows it")
    pg.add_argument("--password", action=_NoPassword, help=argparse.SUPPRESS)
    pg.add_argument("--no-vj", action="store_true", help="no Van Jacobson header compression")
    pg.add_argument("--echo-ms", type=_non_negative_int, metavar="MS",
                    help="LCP echo keepalive interval (default 0: off)")
    pg.add_argument("--passive", action="store_true",
                    help="send nothing until the peer's first LCP packet")
    pg.add_argument("--chat", metavar="SCRIPT",
                    help="modem dialogue before PPP, e.g. \"'' AT OK ATD*99# CONNECT\"")
    pg.add_argument("--ppp-serve", action="store_true",
                    help="be the server of the link (hilkit to hilkit): give the peer "
                    "--peer-ip, take --ip, and with --user demand CHAP/PAP")
    pg.add_argument("--peer-ip", metavar="ADDR", help="--ppp-serve: the peer's address")
    s.set_defaults(fn=cmd_serve)
    from hilkit.hil.rig_commands import add_rig_commands
    from hilkit.hil.runner import add_hil_command

    hil = add_hil_command(sub, target=_add_place_argument, epilog=PLACE_EPILOG)
    hil.add_argument("--place-timeout", metavar="S", type=float, default=None,
                     help="--place: how long to wait for the place to be free (default "
                     "300 s; 0: do not wait)")
    hil.add_argument("--coordinator", metavar="HOST[:PORT]", default=None,
                     help="--place: the labgrid coordinator (default $LG_COORDINATOR, else "
                     "127.0.0.1:20408)")
    hil.set_defaults(fn=cmd_hil)
    add_rig_commands(sub)
    return p


PLACE_EPILOG = """\
A lab's rigs are labgrid places (docs/lab.md):

    hilkit hil --place NAME|tag:KEY[=VALUE] [--place-timeout S] [--coordinator HOST:PORT]

reserves the place through the coordinator, waits for it, locks it, runs the rig its
"rig" tag names on the rig host its NetworkService resource names (over SSH), brings
the report into --out (default reports/<place>-<UTC time>/) and unlocks the place,
also on Ctrl-C and SIGTERM. A place held by someone else: exit 2, naming the holder.
"""


def _add_place_argument(group: argparse._MutuallyExclusiveGroup) -> None:
    group.add_argument("--place", metavar="NAME|tag:KEY",
                       help="a labgrid place of the lab, or any free place with a tag "
                       "(tag:KEY or tag:KEY=VALUE, several joined by ,)")


def cmd_hil(args: argparse.Namespace) -> int:
    """``hilkit hil``: a rig here (``--rig``), or a lab place's rig (``--place``)."""
    if args.place is None:
        for opt, value in (("--place-timeout", args.place_timeout),
                           ("--coordinator", args.coordinator)):
            if value is not None:
                print(f"hilkit hil: {opt}: only with --place", file=sys.stderr)
                return 2
        from hilkit.hil.runner import cmd_hil as run_rig

        return run_rig(args)
    from hilkit.hil.runner import with_sigterm
    from hilkit.lab.run import DEFAULT_PLACE_TIMEOUT_S, quiet_logging, run_place

    quiet_logging()

    timeout = DEFAULT_PLACE_TIMEOUT_S if args.place_timeout is None else args.place_timeout
    return with_sigterm(lambda: run_place(
        args.place, coordinator=args.coordinator, timeout=timeout, suites=args.suite,
        keyword=args.keyword, out=args.out, repeat=args.repeat))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())

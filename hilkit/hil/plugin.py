"""The pytest plugin behind the HIL suites: fixtures, live progress, results.

Two ways in:

- ``hilkit hil --rig NAME`` (``hilkit.hil.runner``) builds the rig and runs
  ``pytest.main([...suites...], plugins=[RigPlugin(built, out)])``;
- ``pytest --rig NAME`` inside a lab's own pytest setup: this module is a
  pytest11 entry point; with ``--rig`` its ``pytest_configure`` validates the
  rig, checks the hardware, builds it (torn down in ``pytest_unconfigure``),
  registers a ``RigPlugin`` and adds the hilkit suites to the run
  (``--hil-suite a,b`` picks some, ``--hil-suite none`` only lends the
  fixtures to the lab's own tests). Reports go to ``--hil-out``.

Fixtures (every one needs a rig):

``rig``           the ``BuiltRig``: ``.rig`` (the rig file), ``.ns`` (its network
                  namespace), ``.device``, ``.bus``, ``.model``, ``.pins``,
                  ``.kernel_ip``, ``.dut_ip``, ...
``nic``           the driver's registration (``hilkit.port.nic.Nic``: its identity
                  probe, figures, stat names, whether it sees carrier), or None for a
                  driver without one. Suites read chip facts here, never a chip's name.
``stack``         a fresh hilkit ``Stack`` on the rig's device, the device wrapped
                  in a capture that writes ``<out>/<test>.pcapng``, the DUT
                  address configured. The rig's device is lent, not given: closing
                  the stack leaves it open for the next test.
``kernel``        the Linux kernel at the far end of the wire, in the rig's
                  namespace: kernel sockets, ``ping``, ``ip neigh``, link control,
                  and ``start(stack, fn)`` to run blocking kernel code in a thread
                  while the test drives the stack.
``figure``        ``figure(name, value, unit)`` records a figure: a JUnit property
                  and an entry in results.json.
``suite_params``  the test's suite's parameters (``SuiteParams``): validated with the rig
                  file, typed, with their declared defaults (``hilkit.rig.suite_params``).
``hil_capture``   (autouse) the per-test pcapng; ``wrap(device)`` taps a device.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from socket import socket as KernelSocket
from typing import Any, Protocol, TextIO

import pytest

from hilkit.hil import report
from hilkit.hil.report import Check
from hilkit.hil.suites import SUITES, SUITES_DIR, suite_of
from hilkit.port.capture import CaptureDevice, PcapngWriter
from hilkit.port.device import Device, LinkType, link_config_reader
from hilkit.port.middleware import DeviceMiddleware
from hilkit.port.model import model_stats as port_model_stats
from hilkit.port.nic import Nic, NicError
from hilkit.rig.netns import Netns
from hilkit.rig.suite_params import SuiteParams
from hilkit.stack import Stack, StackConfig

log = logging.getLogger("hilkit.hil")

KERNEL_TIMEOUT_S = 60.0  # no kernel socket call in a suite may block longer
FigureValue = float | int | str | bool
FigureFn = Callable[[str, FigureValue, str], None]  # the ``figure`` fixture


# -- what the suites need from the rig layer ------------------------------------------------


class RigLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def suites(self) -> Mapping[str, Mapping[str, Any]]: ...

    @property
    def simulated(self) -> bool: ...


class BuiltRigLike(Protocol):
    """What ``hilkit.rig.builder.build`` yields (``BuiltRig``), as far as the suites use it."""

    @property
    def rig(self) -> Any: ...

    @property
    def ns(self) -> Netns: ...

    @property
    def device(self) -> Device: ...

    @property
    def bus(self) -> Any: ...

    @property
    def model(self) -> Any: ...

    @property
    def pins(self) -> Mapping[str, Any]: ...

    @property
    def kernel_ip(self) -> str: ...

    @property
    def kernel_prefix(self) -> int: ...

    @property
    def dut_ip(self) -> str: ...

    @property
    def dut_netmask(self) -> str: ...

    @property
    def gateway(self) -> str | None: ...


def is_spi_rig(built: BuiltRigLike) -> bool:
    """The device sits behind an SPI bus whose traffic is counted."""
    return getattr(getattr(built, "bus", None), "counters", None) is not None


_OWN_STACK_PEERS = {"board": "the board's own stack", "remote": "the remote PPP peer"}


def peer_kind(built: BuiltRigLike) -> str | None:
    """The rig file's ``peer.kind`` ("tap", "host", "board", "slirp", ...)."""
    kind = getattr(getattr(getattr(built, "rig", None), "peer", None), "kind", None)
    return kind if isinstance(kind, str) else None


def is_slirp(built: BuiltRigLike) -> bool:
    """The far end is slirp: a user-space stack that relays hilkit's TCP and UDP to the
    namespace's sockets on 127.0.0.1 (and ``redir``s the namespace's to hilkit)."""
    return peer_kind(built) == "slirp"


def slirp_peer(built: BuiltRigLike) -> Any | None:
    """The rig's ``SlirpPeer`` (``hilkit.rig.slirp``: ``restart()``, ``line`` faults) when
    the far end is slirp started by the builder; None otherwise."""
    peer = getattr(built, "line_peer", None)
    if not is_slirp(built) or peer is None or getattr(peer, "line", None) is None:
        return None
    return peer


def require_peer_service(built: BuiltRigLike, service: str) -> None:
    """Skip, saying why, when the peer is a board (``[peer] kind = "board"``) or a remote
    PPP peer whose own stack does not run ``service``; the Linux kernel (and slirp, which
    relays to it) runs them all."""
    peer = getattr(getattr(built, "rig", None), "peer", None)
    kind = peer_kind(built)
    if kind in _OWN_STACK_PEERS and service not in getattr(peer, "services", ()):
        pytest.skip(f"the peer is {_OWN_STACK_PEERS[kind]} at {built.kernel_ip}, which runs "
                    f"no {service} (peer.services of the rig file)")


def require_kernel_peer(built: BuiltRigLike, what: str) -> None:
    """Skip, saying why, when the peer is a board or a remote PPP peer: ``what`` needs the
    kernel's namespace."""
    kind = peer_kind(built)
    if kind in _OWN_STACK_PEERS:
        pytest.skip(f"the peer is {_OWN_STACK_PEERS[kind]} at {built.kernel_ip}: {what} needs "
                    "the Linux kernel in the rig's namespace at the far end of the wire")


def require_ethernet(built: BuiltRigLike, what: str) -> None:
    """Skip, saying why, when the device is a point-to-point link (PPP: raw IP, no MAC,
    no ARP): ``what`` needs Ethernet frames."""
    if built.device.link_type is not LinkType.ETHERNET:
        pytest.skip(f"{built.device.name} is a point-to-point link (raw IP packets, no MAC "
                    f"addresses): {what} needs Ethernet")


def require_kernel_interface(built: BuiltRigLike, what: str, why: str = "") -> None:
    """Skip, saying why, when the far end is slirp: the namespace has no interface on the
    wire (slirp is a user-space stack on a pty; the namespace holds only ``lo``)."""
    if is_slirp(built):
        pytest.skip(f"the peer is slirp, a user-space stack on the line: the rig's namespace "
                    f"has no interface on it, so {what} cannot be done"
                    + (f" ({why})" if why else ""))


def usb_stats(built: BuiltRigLike) -> dict[str, float]:
    """The virtual USB bus's counters for the rig's device model ({} on other rigs):
    ``docs/hardware/usb.md``, "Stats"."""
    bus = getattr(built, "usb_bus", None)
    model = getattr(built, "usb_model", None) or getattr(built, "model", None)
    if bus is None or model is None or not callable(getattr(bus, "stats", None)):
        return {}
    try:
        return {k: v for k, v in bus.stats(model).items() if isinstance(v, (int, float))}
    except Exception:  # unplugged for good, or a bus of another package's making
        return {}


def bridge_stats(built: BuiltRigLike) -> dict[str, float]:
    """What the rig's SPI bus says crossed its USB bridge ({} on buses without one): the
    bus's ``stats`` (``hilkit.bus.ftdi.STAT_KEYS``), and ``spi_clock_s`` of the FT232H
    model when the bridge is one (``docs/hardware/ft232h.md``, "The FT232H model")."""
    bus = getattr(built, "bus", None)
    st = getattr(bus, "stats", None)
    if not isinstance(st, Mapping) or "round_trips" not in st:
        return {}
    out = {k: float(v) for k, v in st.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    try:
        clock = getattr(getattr(built, "usb_model", None), "spi_clock_s", None)
    except Exception:  # a model of another package's making
        clock = None
    if isinstance(clock, (int, float)) and not isinstance(clock, bool):
        out["spi_clock_s"] = float(clock)
    return out


def is_slow_sim(built: BuiltRigLike) -> bool:
    """A chip model on a simulated bus: every data byte is a 4-byte SPI frame in Python."""
    return bool(getattr(built.rig, "simulated", False)) and is_spi_rig(built)


def driver_name(built: BuiltRigLike) -> str:
    """The rig's driver name (``rig.driver.name``), else the device's module."""
    d = getattr(built.rig, "driver", None)
    name = d if isinstance(d, str) else getattr(d, "name", None)
    return str(name or type(built.device).__module__)


_UNSET: Any = object()


def nic_of(built: BuiltRigLike) -> Nic | None:
    """The registration of the rig's driver: the builder's (``BuiltRig.nic``), else looked
    up by ``driver_name``; None for a driver that registers no NIC."""
    nic = getattr(built, "nic", _UNSET)
    if nic is not _UNSET:
        return nic if isinstance(nic, Nic) else None
    from hilkit.drivers import find_nic

    try:
        return find_nic(driver_name(built))
    except NicError:
        return None


def driver_stats(dev: Any, names: tuple[str, ...]) -> dict[str, int]:
    """Counters a driver keeps besides its ``DeviceCounters``: those of ``names``
    (``Nic.stat_names``) that it has as integer attributes or in a ``stats`` mapping."""
    out: dict[str, int] = {}
    stats = getattr(dev, "stats", None)
    for name in names:
        v = getattr(dev, name, None)
        if v is None and isinstance(stats, Mapping):
            v = stats.get(name)
        if isinstance(v, int) and not isinstance(v, bool):
            out[name] = v
    return out


def model_stats(model: Any) -> dict[str, Any]:
    """A chip model's own statistics (``ChipModel.stats``), else its ``counters``."""
    if isinstance(getattr(model, "stats", None), Mapping):
        return port_model_stats(model)
    return counters_dict(getattr(model, "counters", None))


def counters_dict(obj: Any) -> dict[str, Any]:
    """Counters of any shape (dataclass, ``as_dict()``, mapping, plain object) as a dict."""
    if obj is None:
        return {}
    fn = getattr(obj, "as_dict", None)
    if callable(fn):
        return dict(fn())
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items()
                if not k.startswith("_") and isinstance(v, (int, float, str, bool))}
    return {}


# -- lending the rig's device to a test ------------------------------------------------------


class BorrowedDevice(DeviceMiddleware):
    """The rig's device, lent to one test's stack: ``close`` leaves the real device open.

    Everything else is the inner device's (``DeviceMiddleware``), so the stack's
    ``unwrap_chain`` still finds it.
    """

    def close(self) -> None:
        """Not ours to close: the rig closes its device when it is torn down."""

    def __repr__(self) -> str:
        return f"<BorrowedDevice {self.inner!r}>"


class Capture:
    """One test's pcapng. ``wrap`` taps a device into it; a test that touched no
    device still leaves a valid file naming the rig's interface."""

    def __init__(self, path: Path, device: Device | None, snaplen: int = 0) -> None:
        self.path = path
        self.device = device
        self.snaplen = snaplen
        self.writer = PcapngWriter(path)
        self._tapped = False

    def wrap(self, dev: Device) -> CaptureDevice:
        self._tapped = True
        return CaptureDevice(dev, self.writer, snaplen=self.snaplen)

    def close(self) -> None:
        if self.writer.closed:
            return
        try:
            if not self._tapped and self.device is not None:
                with contextlib.suppress(Exception):
                    self.writer.add_interface(self.device.name, self.device.link_type,
                                              self.snaplen, mac=self.device.mac)
        finally:
            self.writer.close()


# -- the kernel at the far end ---------------------------------------------------------------


class KernelThread(threading.Thread):
    """Run blocking kernel-side code while the test's thread drives the stack.

    The thread wakes the stack when it ends, so ``wait()`` (a ``Stack.run``
    until the thread is done) returns at once.
    """

    def __init__(self, stack: Stack, fn: Callable[[], Any], name: str = "kernel") -> None:
        super().__init__(name=name, daemon=True)
        self.stack = stack
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.ended_at = 0.0

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as e:  # handed to the test by wait()
            self.error = e
        finally:
            self.ended_at = time.monotonic()
            self.done.set()
            with contextlib.suppress(OSError):  # the stack may be closed already
                self.stack.wake()

    def wait(self, timeout: float = KERNEL_TIMEOUT_S) -> Any:
        """Drive the stack until the thread ends; its result, or its exception raised here."""
        finished = self.stack.run(until=self.done.is_set, timeout=timeout)
        self.join(5)
        if self.error is not None:
            raise self.error
        assert finished, f"{self.name}: the kernel side did not finish within {timeout} s"
        return self.result


class Kernel:
    """The Linux kernel in the rig's namespace, on interface ``ifname`` at ``ip``.

    Behind slirp (a PPP rig) the kernel's sockets bind ``127.0.0.1`` (``ip``), which hilkit
    reaches as 10.0.2.2, and the kernel reaches hilkit's fixed ports through slirp's
    redirections (``redirs``: (proto, hilkit's port) -> port on 127.0.0.1): always address
    hilkit with ``to_hilkit(port)``, never ``(dut_ip, port)``.
    """

    def __init__(self, ns: Netns, ip: str, prefix: int, ifname: str, *, dut_ip: str = "",
                 redirs: Mapping[tuple[str, int], int] | None = None) -> None:
        self.ns = ns
        self.ip = ip
        self.prefix = prefix
        self.ifname = ifname
        self.dut_ip = dut_ip
        self.redirs = redirs
        self._socks: list[KernelSocket] = []
        self._threads: list[KernelThread] = []

    # slirp's UDP redirection answers only the first address that used it: a kernel
    # client reaching hilkit's UDP through it binds this port, the same in every check.
    SLIRP_UDP_CLIENT_PORT = 29_999

    def udp_client(self) -> KernelSocket:
        """A kernel UDP socket for talking to hilkit (``to_hilkit``): behind slirp bound to
        ``SLIRP_UDP_CLIENT_PORT``, else to any port."""
        s = self.socket(type=socket.SOCK_DGRAM)
        if self.redirs is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.ip, self.SLIRP_UDP_CLIENT_PORT if self.redirs is not None else 0))
        return s

    def to_hilkit(self, port: int, proto: str = "tcp") -> tuple[str, int]:
        """Where the kernel sends to reach hilkit's ``proto`` port ``port``: (dut_ip, port)
        on a wire, slirp's redirection on 127.0.0.1 behind slirp (a check skips, saying so,
        when slirp forwards no such port)."""
        if self.redirs is None:
            return self.dut_ip, port
        host = self.redirs.get((proto, port))
        if host is None:
            pytest.skip(f"slirp forwards no {proto} port {port} to hilkit (the builder's "
                        f"SLIRP_REDIRS lists the fixed ports the suites use; an ephemeral "
                        f"port cannot be forwarded)")
        return "127.0.0.1", host

    # sockets -----------------------------------------------------------------------------
    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM,
               proto: int = 0, timeout: float | None = KERNEL_TIMEOUT_S) -> KernelSocket:
        s = self.ns.socket(family, type, proto)
        s.settimeout(timeout)
        self._socks.append(s)
        return s

    def tcp_listener(self, port: int = 0, backlog: int = 8) -> KernelSocket:
        s = self.socket(type=socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.ip, port))
        s.listen(backlog)
        return s

    def tcp_client(self) -> KernelSocket:
        return self.socket(type=socket.SOCK_STREAM)

    def udp(self, port: int = 0) -> KernelSocket:
        s = self.socket(type=socket.SOCK_DGRAM)
        s.bind((self.ip, port))
        return s

    def start(self, stack: Stack, fn: Callable[[], Any], name: str = "kernel") -> KernelThread:
        t = KernelThread(stack, fn, name)
        self._threads.append(t)
        t.start()
        return t

    # commands ----------------------------------------------------------------------------
    def run(self, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace (``ip netns exec``); never raises on exit status."""
        return subprocess.run(["ip", "netns", "exec", self.ns.name, *argv], capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "LC_ALL": "C"},
                              check=False)

    def ping(self, target: str, count: int = 3, size: int = 56, interval: float = 0.2,
             wait: float = 2.0) -> tuple[int, str]:
        """The kernel's ``ping``: (replies received, output)."""
        res = self.run("ping", "-n", "-c", str(count), "-i", str(interval), "-W", str(wait),
                       "-s", str(size), target, timeout=count * (interval + wait) + 10)
        out = res.stdout + res.stderr
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        return (int(m[2]) if m else 0), out

    def mac(self) -> bytes:
        return self.ns.mac_of(self.ifname)

    def neigh(self, ip: str) -> dict[str, Any] | None:
        """The kernel's neighbour entry for ``ip`` on the wire (``ip neigh``), or None."""
        rows = json.loads(self.ns.ip("-j", "neigh", "show", "to", ip, "dev", self.ifname) or "[]")
        return rows[0] if rows else None

    def flush_neigh(self) -> None:
        self.ns.ip("neigh", "flush", "dev", self.ifname)

    def set_link(self, up: bool) -> None:
        self.ns.ip("link", "set", self.ifname, "up" if up else "down")

    def link_flags(self) -> list[str]:
        info = json.loads(self.ns.ip("-j", "link", "show", self.ifname))
        return list(info[0].get("flags", []))

    def close(self) -> None:
        for s in self._socks:
            s.close()
        self._socks.clear()
        for t in self._threads:
            t.join(2)


def find_peer_ifname(built: BuiltRigLike) -> str:
    """The interface in the rig's namespace that carries the kernel's address."""
    for attr in ("peer_interface", "peer_ifname"):
        name = getattr(built, attr, None)
        if isinstance(name, str) and name:
            return name
    rows = json.loads(built.ns.ip("-j", "-4", "addr", "show") or "[]")
    for row in rows:
        for a in row.get("addr_info", []):
            if a.get("local") == built.kernel_ip:
                return str(row["ifname"])
    raise RuntimeError(f"no interface in namespace {built.ns.name} has {built.kernel_ip}")


# -- one run's state ---------------------------------------------------------------------------


def _utc(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _safe_name(text: str) -> str:
    text = text.replace("::", "-").replace("[", "-").replace("]", "")
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", text).strip("_")[:180] or "test"


def suite_name(path: str | os.PathLike[str]) -> str:
    """The suite a test file belongs to: ``test_icmp.py`` -> ``icmp``; a lab's own
    ``test_foo.py`` -> ``foo``."""
    return suite_of(os.fspath(path)) or Path(path).stem.removeprefix("test_")


def check_id(nodeid: str, path: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """(suite, "suite::test[param]") for a test item."""
    file, _, rest = nodeid.partition("::")
    suite = suite_name(path if path is not None else file)
    return suite, f"{suite}::{rest}" if rest else suite


def _message(rep: pytest.TestReport | pytest.CollectReport) -> str:
    lr = rep.longrepr
    if lr is None:
        return ""
    if isinstance(lr, tuple):  # a skip: (file, line, reason)
        return str(lr[2]).removeprefix("Skipped: ")
    crash = getattr(lr, "reprcrash", None)
    text = str(crash.message) if crash is not None else str(lr).strip()
    first = text.strip().splitlines()
    return first[0][:500] if first else ""


class HilSession:
    """Everything one run records: checks, figures, stack counters, notes."""

    def __init__(self, built: BuiltRigLike, out: Path, progress: TextIO | None = None,
                 repeat: int = 1) -> None:
        self.built = built
        self.out = out
        self.progress = progress
        self.repeat = max(1, repeat)
        self.started = dt.datetime.now(dt.UTC)
        self.ended: dt.datetime | None = None
        self.checks: dict[str, Check] = {}
        self.figures: dict[str, FigureValue] = {}
        self.units: dict[str, str] = {}
        self.stack_drops: Counter[str] = Counter()
        self.stack_stats: Counter[str] = Counter()
        self.notes: list[str] = []
        self.collect_errors: list[str] = []
        self.shared: dict[str, Any] = {}  # state a suite keeps across its checks
        self._peer_ifname: str | None = None
        self._pcap: dict[str, str] = {}
        self._paths: dict[str, str] = {}  # nodeid -> test file, from collection
        self._bus_start = counters_dict(getattr(getattr(built, "bus", None), "counters", None))
        self._dev_start = counters_dict(built.device.counters)
        self.nic: Nic | None = nic_of(built)  # the driver's registration, if it has one

    # rig facts ---------------------------------------------------------------------------
    @property
    def rig_name(self) -> str:
        return str(getattr(self.built.rig, "name", "rig"))

    @property
    def stat_names(self) -> tuple[str, ...]:
        """The driver stats to report: the NIC's ``stat_names``; none without a NIC."""
        return self.nic.stat_names if self.nic is not None else ()

    def params(self, suite: str) -> SuiteParams:
        """The suite's validated parameters, with their defaults for this rig."""
        got = getattr(self.built.rig, "suite_params", None)
        p = got(suite) if callable(got) else None
        return p if isinstance(p, SuiteParams) else SuiteParams(
            suite, slow_sim=is_slow_sim(self.built))

    @property
    def peer_ifname(self) -> str:
        if self._peer_ifname is None:
            self._peer_ifname = find_peer_ifname(self.built)
        return self._peer_ifname

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            log.info("note: %s", text)

    # recording ----------------------------------------------------------------------------
    def collected(self, item: pytest.Item) -> None:
        self._paths[item.nodeid] = str(item.path)

    def check_id(self, nodeid: str) -> tuple[str, str]:
        return check_id(nodeid, self._paths.get(nodeid))

    def check(self, nodeid: str) -> Check:
        c = self.checks.get(nodeid)
        if c is None:
            suite, cid = self.check_id(nodeid)
            c = self.checks[nodeid] = Check(cid, nodeid, suite, outcome="error",
                                            message="did not finish")
            c.pcapng = self._pcap.get(nodeid)
        return c

    def pcap_path(self, nodeid: str) -> Path:
        cid = self.check_id(nodeid)[1]
        name = _safe_name(cid) + ".pcapng"
        taken = set(self._pcap.values())
        n = 1
        while name in taken:
            n += 1
            name = f"{_safe_name(cid)}.{n}.pcapng"
        self._pcap[nodeid] = name
        if nodeid in self.checks:
            self.checks[nodeid].pcapng = name
        return self.out / name

    def record_figure(self, nodeid: str, name: str, value: FigureValue, unit: str) -> None:
        if isinstance(value, float):
            value = round(value, 6)
        self.check(nodeid).figures[name] = {"value": value, "unit": unit}
        self.figures[name] = value
        self.units[name] = unit
        log.info("figure %s = %s %s (%s)", name, value, unit, self.check_id(nodeid)[1])

    def add_stack_counters(self, stack: Stack) -> None:
        self.stack_drops.update(stack.drops)
        self.stack_stats.update(stack.stats)

    def on_report(self, rep: pytest.TestReport) -> None:
        c = self.check(rep.nodeid)
        c.duration_s += rep.duration
        if rep.when == "setup":
            if rep.failed:
                c.outcome, c.message = "error", _message(rep)
            elif rep.skipped:
                c.outcome, c.message = "skipped", _message(rep)
        elif rep.when == "call":
            c.message = ""
            if hasattr(rep, "wasxfail"):
                c.outcome, c.message = "skipped", f"xfail: {rep.wasxfail}"
            elif rep.failed:
                c.outcome, c.message = "failed", _message(rep)
            elif rep.skipped:
                c.outcome, c.message = "skipped", _message(rep)
            else:
                c.outcome = "passed"
        elif rep.when == "teardown":
            if rep.failed and c.outcome in ("passed", "skipped"):
                c.outcome, c.message = "error", "teardown: " + _message(rep)
            self._finished(c)
        if rep.failed:
            log.error("%s (%s):\n%s", c.id, rep.when, rep.longreprtext)

    def _finished(self, c: Check) -> None:
        word = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP"}
        line = f"{word.get(c.outcome, c.outcome.upper()):<5} {c.id}  " \
               f"{report.fmt_duration(c.duration_s)}"
        if c.message and c.outcome != "passed":
            line += f"  -- {c.message}"
        log.info("%s", line)
        if self.progress is not None:
            print(line, file=self.progress, flush=True)

    def on_collect_error(self, rep: pytest.CollectReport) -> None:
        msg = f"ERROR collecting {rep.nodeid}: {_message(rep)}"
        self.collect_errors.append(msg)
        log.error("%s\n%s", msg, rep.longreprtext)
        if self.progress is not None:
            print(msg, file=self.progress, flush=True)

    # the end ------------------------------------------------------------------------------
    def counters(self) -> dict[str, Any]:
        """Device, stack, bus and model counters of the whole run."""
        built = self.built
        out: dict[str, Any] = {
            "device": counters_dict(built.device.counters) | driver_stats(built.device,
                                                                          self.stat_names),
            "stack": {"drops": dict(sorted(self.stack_drops.items())),
                      "stats": dict(sorted(self.stack_stats.items()))},
        }
        bus = getattr(built, "bus", None)
        if bus is not None and getattr(bus, "counters", None) is not None:
            out["bus"] = counters_dict(bus.counters)
        model = getattr(built, "model", None)
        if model is not None:
            out["model"] = model_stats(model)
        usb = usb_stats(built)
        if usb:
            out["usb"] = usb
        bridge = bridge_stats(built)
        if bridge:
            out["bridge"] = bridge
        return out

    def run_bus_figures(self) -> dict[str, tuple[float, str]]:
        """The section 6 ratios over the whole run (idle polling and probing included)."""
        bus = getattr(self.built, "bus", None)
        if bus is None or getattr(bus, "counters", None) is None:
            return {}
        b1, d1 = counters_dict(bus.counters), counters_dict(self.built.device.counters)
        b0, d0 = self._bus_start, self._dev_start

        def delta(a: dict[str, Any], z: dict[str, Any], k: str) -> int:
            return int(z.get(k, 0)) - int(a.get(k, 0))

        return report.bus_figures(
            spi_bytes=delta(b0, b1, "bytes"), transactions=delta(b0, b1, "transactions"),
            calls=delta(b0, b1, "calls"),
            frames=delta(d0, d1, "rx_frames") + delta(d0, d1, "tx_frames"),
            frame_bytes=delta(d0, d1, "rx_bytes") + delta(d0, d1, "tx_bytes"),
            speed_hz=None, bus_kind=None)

    def results(self, exit_code: int | None = None) -> dict[str, Any]:
        self.ended = self.ended or dt.datetime.now(dt.UTC)
        rig = self.built.rig
        bus = getattr(rig, "bus", None)
        checks = list(self.checks.values())
        figures: dict[str, Any] = dict(self.figures)
        units = dict(self.units)
        for name, (value, unit) in self.run_bus_figures().items():
            if name in ("spi_bytes_per_payload_byte", "cs_transactions_per_frame",
                        "bus_calls_per_frame") and name not in figures:
                figures[name] = round(value, 6)
                units[name] = unit
                self.note(f"{name} is over the whole run (the throughput suite did not "
                          "measure it): idle polling counts too")
            figures[f"run_{name}"] = round(value, 6)
            units[f"run_{name}"] = unit
        figures["units"] = units
        figures["counters"] = self.counters()
        return {
            "format": report.FORMAT,
            "rig": self.rig_name,
            "driver": driver_name(self.built),
            "bus": getattr(bus, "kind", None),
            "simulated": bool(getattr(rig, "simulated", False)),
            "started": _utc(self.started),
            "ended": _utc(self.ended),
            "duration_s": round((self.ended - self.started).total_seconds(), 3),
            "exit_code": exit_code,
            "verdict": report.verdict(checks) if not self.collect_errors else "failed",
            "suites": report.summarize(checks, SUITES),
            "checks": [c.as_dict() for c in checks],
            "figures": figures,
            "notes": list(self.notes),
            "collect_errors": list(self.collect_errors),
        }


# -- the plugin object -----------------------------------------------------------------------

SESSION_KEY = pytest.StashKey[HilSession]()


class RigPlugin:
    """Registered by the runner (``pytest.main(..., plugins=[RigPlugin(built, out)])``)."""

    def __init__(self, built: BuiltRigLike, out: str | os.PathLike[str],
                 progress: TextIO | None = None, repeat: int = 1,
                 suites: list[str] | None = None) -> None:
        """``suites``: when the suites directory itself is collected, only these."""
        self.suites = suites
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.session = HilSession(built, self.out, progress, repeat)

    # hooks -----------------------------------------------------------------------------
    def pytest_configure(self, config: pytest.Config) -> None:
        config.stash[SESSION_KEY] = self.session
        config.addinivalue_line("markers", "hil_suite(name): a hilkit HIL suite check")

    def pytest_ignore_collect(self, collection_path: Path, config: pytest.Config) -> bool | None:
        if self.suites is None or collection_path.parent != SUITES_DIR:
            return None
        suite = suite_of(str(collection_path))
        return True if suite is not None and suite not in self.suites else None

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        n = self.session.repeat
        if n > 1:
            metafunc.fixturenames.append("hil_repeat")
            metafunc.parametrize("hil_repeat", range(1, n + 1), indirect=True,
                                 ids=[f"r{i}" for i in range(1, n + 1)])

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        rank = {s: i for i, s in enumerate(SUITES)}

        def key(item: pytest.Item) -> int:
            suite = suite_of(str(item.path))
            if suite is None:
                return len(SUITES)
            if suite == "conformance" and getattr(item, "originalname", item.name) == "test_close":
                return len(SUITES) + 1  # closes the rig's device: nothing may come after it
            return rank[suite]

        items.sort(key=key)
        for item in items:
            self.session.collected(item)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.session.on_report(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.session.on_collect_error(report)

    # fixtures ----------------------------------------------------------------------------
    @pytest.fixture(scope="session")
    def rig(self) -> BuiltRigLike:
        return self.session.built

    @pytest.fixture(scope="session")
    def hil(self) -> HilSession:
        return self.session

    @pytest.fixture(scope="session")
    def nic(self) -> Nic | None:
        return self.session.nic

    @pytest.fixture
    def hil_repeat(self, request: pytest.FixtureRequest) -> int:
        return int(request.param)

    @pytest.fixture
    def suite_params(self, request: pytest.FixtureRequest) -> SuiteParams:
        return self.session.params(suite_name(request.node.path))

    @pytest.fixture(autouse=True)
    def hil_capture(self, request: pytest.FixtureRequest) -> Iterator[Capture]:
        s = self.session
        suite = suite_name(request.node.path)
        p = s.params(suite)  # a lab's own suite declares no snaplen: whole frames
        snaplen = p.integer("snaplen") if p.declares("snaplen") else 0
        cap = Capture(s.pcap_path(request.node.nodeid), s.built.device, snaplen)
        try:
            yield cap
        finally:
            cap.close()

    @pytest.fixture
    def stack(self, hil_capture: Capture, request: pytest.FixtureRequest) -> Iterator[Stack]:
        s = self.session
        built = s.built
        dev = built.device
        for _ in range(1000):  # stale frames of the previous test are not this test's input
            if not dev.poll(64):
                break
        st = Stack(config=StackConfig())
        try:
            wrapped = st.add_device(hil_capture.wrap(BorrowedDevice(dev)))
            if link_config_reader(dev) is not None:
                # a point-to-point link (PPP) tells the stack its address itself, from what
                # IPCP negotiated: wait for it rather than set one by hand
                st.run(until=lambda: bool(st.interfaces and st.interfaces[0].addrs),
                       timeout=10)
            else:
                st.link_add(wrapped, built.dut_ip, built.dut_netmask)
            if built.gateway:
                st.route_add("0.0.0.0", "0.0.0.0", built.gateway)
            yield st
        finally:
            s.add_stack_counters(st)
            st.close()

    @pytest.fixture
    def kernel(self) -> Iterator[Kernel]:
        s = self.session
        require_kernel_peer(s.built, "this check")
        if is_slirp(s.built):  # the namespace's loopback, which slirp's 10.0.2.2 reaches
            k = Kernel(s.built.ns, "127.0.0.1", 8, "lo", dut_ip=s.built.dut_ip,
                       redirs=getattr(s.built, "redirs", None) or {})
        else:
            k = Kernel(s.built.ns, s.built.kernel_ip, s.built.kernel_prefix, s.peer_ifname,
                       dut_ip=s.built.dut_ip)
        try:
            yield k
        finally:
            k.close()

    @pytest.fixture
    def figure(self, request: pytest.FixtureRequest,
               record_property: Callable[[str, object], None],
               ) -> FigureFn:
        nodeid = request.node.nodeid

        def record(name: str, value: FigureValue, unit: str = "") -> None:
            self.session.record_figure(nodeid, name, value, unit)
            shown = round(value, 6) if isinstance(value, float) else value
            record_property(f"{name}[{unit}]" if unit else name, shown)

        return record


def session_of(config: pytest.Config) -> HilSession:
    """The run's ``HilSession`` (for a suite's ``pytest_generate_tests``)."""
    return config.stash[SESSION_KEY]


def suite_params_of(config: pytest.Config, suite: str) -> SuiteParams:
    """The suite's parameters at collection time (the defaults when no rig is configured)."""
    s = config.stash.get(SESSION_KEY, None)
    return s.params(suite) if s is not None else SuiteParams(suite)


# -- `pytest --rig NAME`: the entry point's own hooks ------------------------------------------

_EXIT_KEY = pytest.StashKey[contextlib.ExitStack]()
_PLUGIN_KEY = pytest.StashKey[RigPlugin]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("hilkit", "hilkit hardware-in-the-loop suites")
    g.addoption("--rig", metavar="NAME|PATH", default=None,
                help="build this rig and run the hilkit HIL suites on it")
    g.addoption("--hil-suite", metavar="a,b", default=None,
                help="suites to add to the run (default: the rig's; 'none': fixtures only)")
    g.addoption("--hil-out", metavar="DIR", default=None,
                help="report directory (default reports/<rig>-<UTC time>)")
    g.addoption("--hil-repeat", metavar="N", type=int, default=1,
                help="run every check N times")


def default_out(rig_name: str) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path("reports") / f"{rig_name}-{stamp}"


def select_suites(rig: Any, wanted: str | None) -> list[str]:
    """Suites to run, in the canonical order; ValueError naming an unknown one."""
    if wanted:
        names = [w.strip() for w in wanted.split(",") if w.strip()]
        if names == ["none"]:
            return []
        if names == ["all"]:
            return list(SUITES)
        unknown = [n for n in names if n not in SUITES]
        if unknown:
            raise ValueError(f"unknown suite {', '.join(unknown)}; known: {', '.join(SUITES)}")
        return [s for s in SUITES if s in names]
    listed = [s for s in (getattr(rig, "suites", None) or {}) if s in SUITES]
    return [s for s in SUITES if s in listed] if listed else list(SUITES)


def pytest_configure(config: pytest.Config) -> None:
    name = config.getoption("--rig", None)
    if not name or SESSION_KEY in config.stash:
        return
    from hilkit.hil.preflight import NotRunnable, check_rig, failure_lines, load_checked
    from hilkit.rig.builder import build

    try:
        rig = load_checked(name)
        suites = select_suites(rig, config.getoption("--hil-suite"))
        check_rig(rig)
    except (NotRunnable, ValueError) as e:
        raise pytest.UsageError(f"--rig {name}: {e}") from e
    out = Path(config.getoption("--hil-out") or default_out(rig.name))
    out.mkdir(parents=True, exist_ok=True)
    es = contextlib.ExitStack()
    handler = logging.FileHandler(out / "hil.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("hilkit").addHandler(handler)
    es.callback(logging.getLogger("hilkit").removeHandler, handler)
    es.callback(handler.close)
    try:
        built = es.enter_context(build(rig))
    except Exception as e:
        es.close()
        lines = failure_lines(e, rig, "could not be built")
        raise pytest.UsageError(f"--rig {name}: " + "\n".join(lines)) from e
    except BaseException:
        es.close()
        raise
    plugin = RigPlugin(built, out, progress=None, repeat=config.getoption("--hil-repeat"),
                       suites=suites)
    config.stash[_EXIT_KEY] = es
    config.stash[_PLUGIN_KEY] = plugin
    config.pluginmanager.register(plugin, "hilkit-hil-rig")
    if suites:  # the directory, not its files: node ids stay "test_icmp.py::..."
        config.args.append(str(SUITES_DIR))


def pytest_unconfigure(config: pytest.Config) -> None:
    es = config.stash.get(_EXIT_KEY, None)
    if es is None:
        return
    plugin = config.stash[_PLUGIN_KEY]
    try:
        res = plugin.session.results()
        report.write_json(plugin.out / "results.json", res)
        print(f"\nhilkit: {plugin.out}/results.json\n"
              + report.summary_table(list(plugin.session.checks.values()), SUITES),
              file=sys.stderr)
    finally:
        es.close()

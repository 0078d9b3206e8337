"""What a rig file may say, and the frozen dataclasses it becomes.

A rig file is TOML (``rigs/*.toml``, documented key by key in ``docs/rigs.md``).
``parse_rig`` checks every key before anything is touched and collects every
problem of a file into one ``RigError``; each line of its message names the
file, the key as a dotted path, and what is wrong::

    rigs/lab-spi.toml: bus.speed_hz: expected an integer, got "8MHz"

Nothing here opens a device or a namespace: that is ``hilkit.rig.builder``.
"""

from __future__ import annotations

import difflib
import inspect
import ipaddress
import json
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from hilkit.bus.ftdi import parse_url as parse_ftdi_url
from hilkit.port.names import host_interface, host_problem, ifname_problem, parse_ipv4
from hilkit.port.nic import Nic, NicError
from hilkit.rig.suite_params import SUITE_NAMES, SUITE_PARAMS, Param, SuiteParams

__all__ = [
    "BUS_KINDS",
    "DEFAULT_SUITES",
    "PEER_KINDS",
    "PIN_KINDS",
    "PIN_NAMES",
    "SUITE_NAMES",
    "BusSpec",
    "DriverSpec",
    "DutSpec",
    "PeerSpec",
    "PinSpec",
    "Problem",
    "Rig",
    "RigError",
    "Secret",
    "SuiteParams",
    "display_path",
    "parse_rig",
    "parse_rig_text",
    "suggest",
]

DEFAULT_SUITES: Final = SUITE_NAMES
BUS_KINDS: Final = ("spidev", "ftdi", "sim", "usb", "python", "serial")
PIN_KINDS: Final = ("gpiod", "ftdi", "sim")
PIN_NAMES: Final = ("reset", "irq")
PEER_KINDS: Final = ("tap", "host", "board", "slirp", "pppd", "remote")
# Peers at the far end of a point-to-point (PPP) serial line: the DUT's address is what
# IPCP hands out, not the rig file's.
PPP_PEER_KINDS: Final = ("slirp", "pppd", "remote")
PEER_AUTHS: Final = ("none", "pap", "chap")
PPP_HANGUPS: Final = ("dtr", "ath", "none")
# slirp's fixed addresses (slirp(1)): itself (an alias of its host's loopback), the client
SLIRP_PEER_ADDRESS: Final = "10.0.2.2/24"
SLIRP_DUT_ADDRESS: Final = "10.0.2.15/24"
# pppd's addresses in the rig's namespace when the rig file gives none (local:remote)
PPPD_PEER_ADDRESS: Final = "10.0.5.1/24"
PPPD_DUT_ADDRESS: Final = "10.0.5.2/24"
DEFAULT_BAUDRATE: Final = 115200
BAUDRATE_RANGE: Final = (50, 4_000_000)
# [driver] keys of a driver on a serial line (a NIC registered with transport "serial"):
# what its PPP link negotiates. The builder turns them into the driver's ``config`` (and
# ``chat``); the driver's own keyword options (hangup, watch_dcd, name, ...) pass through.
PPP_LINK_KEYS: Final = ("username", "password", "password_env", "vj", "echo_interval_ms",
                        "echo_failure", "chat")
# ... and the parameters the builder passes a serial driver itself (from [bus], the link).
SERIAL_BUILDER_PARAMS: Final = frozenset({"port", "baudrate", "rtscts", "config"})
_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# What a board peer (its own stack at a fixed address) may say it runs: ICMP echo,
# and the RFC 862 echo / RFC 863 discard / RFC 864 chargen services on UDP and TCP.
BOARD_SERVICES: Final = ("ping", "udp-echo", "tcp-echo", "tcp-discard", "tcp-chargen")
GPIO_BIASES: Final = ("as_is", "pull_up", "pull_down", "disabled")

DEFAULT_MTU: Final = 1500
MIN_MTU: Final = 576  # every IPv4 host must take datagrams this large (RFC 791)
MAX_MTU: Final = 9216
DEFAULT_TAP_NAME: Final = "hk0"
# sim: the NIC's own spi_max_hz when it registers one, else this
DEFAULT_SPEED_HZ: Final = {"spidev": 8_000_000, "ftdi": 6_000_000, "sim": 8_000_000}
DEFAULT_FTDI_TIMEOUT_MS: Final = 1000.0  # bus.timeout_ms of an ftdi bus (pyftdi's own: 5 s)
FTDI_SPI_BITS: Final = (0, 1, 2)  # ADBUS0..2: SCK, MOSI, MISO (docs/hardware/ft232h.md §5)

# Parameters the builder supplies to a driver itself; a rig file cannot set them.
BUILDER_DRIVER_PARAMS: Final = frozenset({"bus", "reset", "irq", "mtu", "create", "clock"})
# ... and to a ``python`` bus factory (the TAP a chip model puts its frames on, the clock).
BUILDER_FACTORY_PARAMS: Final = frozenset({"wire", "clock"})

_TOP_KEYS: Final = (
    "name", "description", "driver", "bus", "pins", "peer", "dut", "mtu", "suites",
)
_BUS_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "spidev": ("kind", "device", "speed_hz", "mode"),
    "ftdi": ("kind", "url", "speed_hz", "cs_pin", "mode", "timeout_ms", "backend", "model", "seed",
             "faults", "timing"),
    "sim": ("kind", "model", "speed_hz", "seed", "faults", "timing"),
    "usb": ("kind", "id", "serial", "port", "backend", "model", "seed", "faults", "options"),
    "python": ("kind", "factory"),  # plus free parameters
    "serial": ("kind", "port", "baudrate", "rtscts"),
}
_PIN_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "gpiod": ("kind", "chip", "line", "active_low", "bias"),
    "ftdi": ("kind", "bit", "active_low"),
    "sim": ("kind",),
}
_PEER_KEYS: Final = ("kind", "address", "interface", "services", "auth", "port")
_DUT_KEYS: Final = ("address", "gateway")

_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_IDENT: Final = r"[A-Za-z_][A-Za-z0-9_]*"
_FACTORY_RE: Final = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*\Z")
_MAC_RE: Final = re.compile(r"[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}\Z")
_USB_ID_RE: Final = re.compile(r"[0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}\Z")
_USB_PORT_RE: Final = re.compile(r"[1-9][0-9]{0,2}-[1-9][0-9]{0,2}(\.[1-9][0-9]{0,2}){0,6}\Z")
_MODULE_RE: Final = re.compile(rf"{_IDENT}(\.{_IDENT})*\Z")
VIRTUAL_USB_BACKEND: Final = "hilkit.sim.usb"  # a simulated USB device's bus, by default

# Limits every rig file obeys, whatever the key: a rig file is a page of settings.
MAX_FILE_BYTES: Final = 1 << 20
MAX_DEPTH: Final = 16  # tables and arrays nested deeper than this are no rig file's
INT_RANGE: Final = (-(1 << 63), (1 << 63) - 1)  # TOML integers are 64-bit (toml.io, Integer)
MAX_MODEL_MS: Final = 60_000.0  # a chip model's timings: a minute is already absurd
SEED_RANGE: Final = (0, (1 << 63) - 1)

_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+\Z")
_SHOW_MAX: Final = 60  # characters of a value quoted in a message


# -- errors -------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a rig file: the key (dotted path, "" for the file) and what."""

    key: str
    message: str


class RigError(ValueError):
    """A rig file that cannot be used, with every problem found in it.

    ``str(err)`` has one line per problem: ``FILE: KEY: PROBLEM``.
    """

    def __init__(self, file: str, problems: Sequence[Problem]) -> None:
        self.file = file
        self.problems = tuple(problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [
            f"{self.file}: {p.key}: {p.message}" if p.key else f"{self.file}: {p.message}"
            for p in self.problems
        ]


# -- the data model -----------------------------------------------------------------


def _frozen(d: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class DriverSpec:
    """``[driver]``: a registered driver and the options passed to it.

    ``options`` holds the file's values, except ``mac``, which is converted
    to 6 bytes.
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=_frozen)


@dataclass(frozen=True)
class BusSpec:
    """``[bus]``: how the chip is reached. Fields a kind does not use are None."""

    kind: str
    device: str | None = None  # spidev: /dev/spidevB.C
    url: str | None = None  # ftdi: ftdi://ftdi:232h/1
    speed_hz: int | None = None  # spidev, ftdi; sim: the clock figures assume
    mode: int = 0  # SPI mode 0..3 (spidev, ftdi)
    cs_pin: int | None = None  # ftdi: ADBUS bit driven as chip select
    timeout_ms: float | None = None  # ftdi: one wait for the bridge before it counts as wedged
    factory: str | None = None  # python: "module:callable"
    model: str | None = None  # sim, usb: the registered NIC whose model is the device
    seed: int | None = None  # sim, usb: seed of the model's fault randomness
    faults: Mapping[str, Any] = field(default_factory=_frozen)  # the NIC's model_faults
    timing: Mapping[str, Any] = field(default_factory=_frozen)  # sim: the NIC's model_timing
    options: Mapping[str, Any] = field(default_factory=_frozen)  # usb: the NIC's model_options
    params: Mapping[str, Any] = field(default_factory=_frozen)  # python: the factory's kwargs
    usb_id: tuple[int, int] | None = None  # usb: (vendor, product) to find
    serial: str | None = None  # usb: the iSerialNumber to find
    port: str | None = None  # usb: the port path to find, "1-1.2" (/sys/bus/usb/devices)
    backend: str | None = None  # usb: the pyusb backend module (get_backend()); None: libusb1
    baudrate: int | None = None  # serial: the line's speed (8N1: 10 bits a byte)
    rtscts: bool = False  # serial: hardware flow control

    @property
    def simulated(self) -> bool:
        """The device is a model: ``sim``, or a ``usb`` or ``ftdi`` bus with a model on it
        (an ``ftdi`` bus's USB made virtual: the FT232H model with the chip's on its pins)."""
        return self.kind == "sim" or (self.kind in ("usb", "ftdi") and self.model is not None)

    def describe(self) -> str:
        """One short line for tables: ``spidev /dev/spidev0.0 @ 8 MHz``."""
        ftdi = self.url if self.model is None else f"{self.url} (virtual, model {self.model})"
        where = {"spidev": self.device, "ftdi": ftdi, "python": self.factory,
                 "sim": self.model, "usb": self.usb_where(),
                 "serial": self.port or "(the peer's line)"}.get(self.kind)
        if self.kind == "serial":
            return f"serial {where} @ {self.baudrate} baud" + (" rtscts" if self.rtscts
                                                                else "")
        text = self.kind if where is None else f"{self.kind} {where}"
        if self.speed_hz is not None and self.kind not in ("python", "usb"):
            text += f" @ {_hz(self.speed_hz)}"
        return text

    def usb_where(self) -> str:
        """What a ``usb`` bus looks for: ``0525:a4a2 serial X at 1-1.2``, or its model."""
        parts = [] if self.usb_id is None else [f"{self.usb_id[0]:04x}:{self.usb_id[1]:04x}"]
        if self.serial is not None:
            parts.append(f"serial {self.serial}")
        if self.port is not None:
            parts.append(f"at {self.port}")
        if self.model is not None:
            parts.append(f"(model {self.model})")
        return " ".join(parts) or "any device"


class _VirtualUsb(NamedTuple):
    """What ``Validator.virtual_usb`` read: the backend module, the model and its tables."""

    backend: str | None
    model: str | None
    seed: int | None
    tables: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class PinSpec:
    """``[pins.NAME]``: a GPIO line (gpiod), an FT232H pin (ftdi), or the model's (sim)."""

    name: str  # "reset" or "irq"
    kind: str
    chip: str | None = None  # gpiod: /dev/gpiochipN, gpiochipN, or the chip's label
    line: int | None = None  # gpiod: line offset (BCM GPIO number on a Pi's header chip)
    bit: int | None = None  # ftdi: 4..7 = ADBUS4..7 (GPIOL0..3), 8..15 = ACBUS0..7
    active_low: bool = False
    bias: str = "as_is"  # gpiod: as_is, pull_up, pull_down, disabled

    def describe(self) -> str:
        if self.kind == "gpiod":
            where = f"gpiod {self.chip} line {self.line}"
        elif self.kind == "ftdi":
            where = f"ftdi bit {self.bit}"
        else:
            where = self.kind
        return where + (" active-low" if self.active_low else "")


@dataclass(frozen=True)
class PeerSpec:
    """``[peer]``: the Linux kernel at the far end of the wire, in the rig's namespace.

    ``tap``: a TAP the builder creates in the namespace (the model's wire, or
    the device itself for the tap driver). ``host``: a host NIC cabled to the
    DUT, moved into the namespace for the run and always moved back.
    """

    kind: str
    address: str  # the kernel's address with prefix, "192.168.7.1/24"
    interface: str  # host: the NIC's name; tap: the TAP's name in the namespace; board: ""
    services: tuple[str, ...] = ()  # board, remote: what its own stack runs (BOARD_SERVICES)
    auth: str = "none"  # slirp: the authentication it demands ("none", "pap", "chap")
    port: str | None = None  # pppd: the serial port it runs on (the cable's far end)

    @property
    def ip(self) -> str:
        return str(ipaddress.IPv4Interface(self.address).ip)

    @property
    def prefix(self) -> int:
        return ipaddress.IPv4Interface(self.address).network.prefixlen

    @property
    def point_to_point(self) -> bool:
        """The far end of a PPP serial line (slirp, pppd, a remote peer)."""
        return self.kind in PPP_PEER_KINDS

    @property
    def own_stack(self) -> bool:
        """The far end is a stack of its own (a board, a remote PPP peer), not the Linux
        kernel in the rig's namespace: only its ``services`` can be tested."""
        return self.kind in ("board", "remote")

    def describe(self) -> str:
        if self.kind in ("slirp", "pppd"):
            auth = "" if self.auth == "none" else f", {self.auth}"
            return f"{self.kind} {self.address}{auth}"
        if self.kind == "remote":
            return f"remote {self.address} ({', '.join(self.services) or 'no services'})"
        if self.kind == "board":
            return f"board {self.address} ({', '.join(self.services) or 'no services'})"
        return (f"host {self.interface} {self.address}" if self.kind == "host"
                else f"tap {self.address}")


@dataclass(frozen=True)
class DutSpec:
    """``[dut]``: hilkit's side: its address with prefix, and an optional gateway."""

    address: str
    gateway: str | None = None
    negotiated: bool = False  # a PPP rig: the address is what IPCP hands out (this: the
    # one expected, or 0.0.0.0/0 when not known before the link is up)

    @property
    def ip(self) -> str:
        return str(ipaddress.IPv4Interface(self.address).ip)

    @property
    def prefix(self) -> int:
        return ipaddress.IPv4Interface(self.address).network.prefixlen

    @property
    def netmask(self) -> str:
        return str(ipaddress.IPv4Interface(self.address).netmask)


@dataclass(frozen=True)
class Rig:
    """A validated rig file."""

    name: str
    path: Path
    description: str
    driver: DriverSpec
    bus: BusSpec | None
    pins: Mapping[str, PinSpec]
    peer: PeerSpec
    dut: DutSpec
    mtu: int
    suites: Mapping[str, SuiteParams]  # suite name -> parameters, in run order

    @property
    def simulated(self) -> bool:
        """No hardware: the bus is a model (or a python bus, or none) and the peer a TAP.

        A simulated bus (``sim``) always has a TAP peer, and a real one a host
        peer (validation sees to it), so this is also "the bus kind is sim"
        for every rig that has a built-in bus.
        """
        if self.bus is not None and self.bus.simulated:
            return True
        return self.peer.kind in ("tap", "slirp")

    def suite_params(self, suite: str) -> SuiteParams:
        """The parameters of ``suite``: the file's, with the declared defaults for this rig."""
        given = self.suites.get(suite)
        if given is not None:
            return given
        return SuiteParams(suite, slow_sim=self.bus is not None and self.simulated)


# -- parsing ------------------------------------------------------------------------


def parse_rig(path: str | Path, *, display: str | None = None) -> Rig:
    """Read and validate the rig file at ``path``; raise ``RigError`` with every problem.

    Whatever the file holds (binary, another encoding, a directory, a device,
    TOML no parser can take), the outcome is a ``Rig`` or a ``RigError``.
    """
    path = Path(path)
    shown = display if display is not None else display_path(path)
    return parse_rig_text(read_rig_text(path, shown), path, display=shown)


def read_rig_text(path: Path, shown: str) -> str:
    """The file's text; ``RigError`` naming the file when it cannot be a rig file."""

    def fail(problem: str) -> RigError:
        return RigError(shown, [Problem("", problem)])

    try:
        if path.is_dir():
            raise fail("is a directory, not a rig file")
        if path.exists() and not path.is_file():
            raise fail("is not a regular file")
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise fail("no such file") from None
    except (OSError, ValueError) as e:
        raise fail(f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise fail(f"larger than {MAX_FILE_BYTES // 1024} KiB: not a rig file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise fail(f"not UTF-8 text: byte 0x{raw[e.start]:02x} on line {line} cannot be "
                   f"decoded (TOML files are UTF-8)") from None


def parse_rig_text(text: str, path: str | Path, *, display: str | None = None) -> Rig:
    """Validate rig TOML ``text`` as if read from ``path``."""
    path = Path(path)
    shown = display if display is not None else display_path(path)
    data = _load_toml(text, shown)
    v = _Validator()
    try:
        v.scan(data)
        rig = v.rig(data, path)
    except Exception as e:  # a validator bug must still name the file, never crash the caller
        raise RigError(shown, [*v.problems, Problem(
            "", f"cannot validate this file ({type(e).__name__}: {_clip(str(e))})")]) from None
    if v.problems or rig is None:
        raise RigError(shown, v.problems)
    return rig


def _load_toml(text: str, shown: str) -> dict[str, Any]:
    """``tomllib.loads``; any failure of the parser is a file-level ``RigError``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problem = f"not valid TOML: {e}"
    except RecursionError:
        problem = "not valid TOML: tables or arrays nested too deeply"
    except ValueError as e:  # e.g. an integer too long for Python's int() to read
        m = re.search(r"[0-9_]{4000,}", text)
        where = "" if m is None else f" (line {text.count(chr(10), 0, m.start()) + 1})"
        problem = f"not valid TOML{where}: {_clip(str(e))}"
    except Exception as e:  # the parser has no other documented errors; still no traceback
        problem = f"not valid TOML: {type(e).__name__}: {_clip(str(e))}"
    raise RigError(shown, [Problem("", problem)])


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError, RuntimeError):
        return str(path)


def _clip(text: str, limit: int = _SHOW_MAX) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _show(value: object, depth: int = 0) -> str:
    """A value as it looks in TOML, for messages: short, whatever the value."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if len(value) <= _SHOW_MAX:
            return json.dumps(value)
        return json.dumps(value[:_SHOW_MAX]) + f"... ({len(value)} characters)"
    if isinstance(value, int):
        if value.bit_length() > 200:  # str() of a long one is slow, and fails past 4300 digits
            return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        if len(value) > 8 or depth >= 2:
            return "an array"
        return "[" + ", ".join(_show(x, depth + 1) for x in value) + "]"
    return type(value).__name__


def _hz(hz: int) -> str:
    if hz % 1_000_000 == 0:
        return f"{hz // 1_000_000} MHz"
    if hz >= 1_000_000:
        return f"{hz / 1e6:g} MHz"
    if hz % 1000 == 0:
        return f"{hz // 1000} kHz"
    return f"{hz} Hz"


def _key(key: str) -> str:
    """A key as TOML writes it: bare if it can be, else quoted (and short)."""
    return key if _BARE_KEY_RE.match(key) and len(key) <= _SHOW_MAX else _show(key)


def _join(path: str, key: str) -> str:
    return f"{path}.{_key(key)}" if path else _key(key)


def suggest(word: str, known: Iterable[str]) -> str:
    """``; did you mean "x"?`` or `` (known: a, b, c)``."""
    known = list(known)
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    if close:
        return f'; did you mean "{close[0]}"?'
    return f" (known: {', '.join(known)})" if known else ""


_MISSING: Final = object()
_TYPE_NAMES: Final = {"str": "a string", "int": "an integer", "bool": "true or false",
                      "float": "a number", "table": "a table"}


def _type_problem(raw: object, kind: str) -> str | None:
    """None if ``raw`` is a TOML value of ``kind`` (str, int, bool, float, table), else why not."""
    ok = {
        "str": isinstance(raw, str),
        "int": isinstance(raw, int) and not isinstance(raw, bool),
        "bool": isinstance(raw, bool),
        "float": isinstance(raw, (int, float)) and not isinstance(raw, bool),
        "table": isinstance(raw, dict),
    }[kind]
    if not ok:
        return f"expected {_TYPE_NAMES[kind]}, got {_show(raw)}"
    return _number_problem(raw)


def _number_problem(raw: object) -> str | None:
    """Why a number cannot be in any rig file (not finite, beyond 64 bits), or None."""
    if isinstance(raw, float) and not math.isfinite(raw):
        return f"{_show(raw)} is not a finite number"
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and not (
            INT_RANGE[0] <= raw <= INT_RANGE[1]):
        return f"{_show(raw)} is out of range: numbers in a rig file fit 64 bits"
    return None


def _text_problem(raw: str) -> str | None:
    """Control characters (NUL above all) have no place in names, paths or addresses."""
    bad = next((c for c in raw if (ord(c) < 0x20 and c not in "\t\n") or ord(c) == 0x7F), None)
    return None if bad is None else f"{_show(raw)} contains the control character U+{ord(bad):04X}"


class _Validator:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.scanned: set[str] = set()  # keys ``scan`` found wrong: said once, not again

    def err(self, key: str, message: str) -> None:
        if key not in self.scanned:
            self.problems.append(Problem(key, message))

    def scan(self, data: dict[str, Any]) -> None:
        """What no value anywhere in a rig file may be, whatever its key: a number that
        is not finite or beyond 64 bits, text with control characters, nesting deeper
        than ``MAX_DEPTH``. Keys found here get no second problem from the checks of
        their own key (``err``)."""
        todo: list[tuple[str, object, int]] = [("", data, 0)]
        while todo:
            path, value, depth = todo.pop()
            problem: str | None = None
            if depth > MAX_DEPTH:
                problem = f"nested {MAX_DEPTH}+ levels deep: no rig file needs that"
            elif isinstance(value, dict):
                for k in reversed(list(value)):
                    text = _text_problem(k)
                    if text is not None:
                        self.err(_join(path, k), f"the key {text.removeprefix(_show(k) + ' ')}")
                        self.scanned.add(_join(path, k))
                        continue
                    todo.append((_join(path, k), value[k], depth + 1))
            elif isinstance(value, list):
                todo += [(f"{path}[{i}]", x, depth + 1) for i, x in reversed(list(
                    enumerate(value)))]
            elif isinstance(value, str):
                problem = _text_problem(value)
            else:
                problem = _number_problem(value)
            if problem is not None:
                self.err(path, problem)
                self.scanned.add(path)

    # -- generic checks ------------------------------------------------------------

    def table(self, value: object, key: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.err(key, f"expected a table, got {_show(value)}")
        return None

    def unknown(self, tbl: Mapping[str, Any], path: str, known: Sequence[str]) -> None:
        for k in tbl:
            if k in known:
                continue
            if path and k in _TOP_KEYS and not isinstance(tbl[k], dict):
                self.err(_join(path, k), f'unknown key "{k}": in TOML a key written after '
                                         f"[{path}] belongs to [{path}]; move {k} above the "
                                         f"first [table] to make it the rig's")
            else:
                self.err(_join(path, k), f"unknown key {_show(k)}{suggest(k, known)}")

    def value(
        self, tbl: Mapping[str, Any], path: str, key: str, kind: str, *,
        required: bool = False, default: Any = None, why: str = "",
    ) -> Any:
        """``tbl[key]`` if it has type ``kind`` (str, int, bool, float, table); else default."""
        raw = tbl.get(key, _MISSING)
        dotted = _join(path, key)
        if raw is _MISSING:
            if required:
                self.err(dotted, f"missing{why}")
            return default
        problem = _type_problem(raw, kind)
        if problem is not None:
            self.err(dotted, problem)
            return default
        if kind == "str" and required and not raw.strip():
            self.err(dotted, "must not be empty")
            return default
        return float(raw) if kind == "float" else raw

    def int_in(
        self, tbl: Mapping[str, Any], path: str, key: str, lo: int, hi: int, *,
        required: bool = False, default: int | None = None, why: str = "",
    ) -> int | None:
        n: int | None = self.value(tbl, path, key, "int", required=required, default=None, why=why)
        if n is None:
            return default
        if not lo <= n <= hi:
            self.err(_join(path, key), f"{_show(n)} is out of range {lo}..{hi}")
            return default
        return n

    def float_in(
        self, tbl: Mapping[str, Any], path: str, key: str, lo: float, hi: float, *,
        default: float | None = None,
    ) -> float | None:
        x: float | None = self.value(tbl, path, key, "float", default=None)
        if x is None:
            return default
        if not lo <= x <= hi:
            self.err(_join(path, key), f"{_show(x)} is out of range {lo:g}..{hi:g}")
            return default
        return x

    def choice(
        self, tbl: Mapping[str, Any], path: str, key: str, choices: Sequence[str], what: str,
    ) -> str | None:
        s: str | None = self.value(tbl, path, key, "str", required=True,
                                   why=f" (one of: {', '.join(choices)})")
        if s is None:
            return None
        if s not in choices:
            self.err(_join(path, key), f"unknown {what} {_show(s)}{suggest(s, choices)}")
            return None
        return s

    def interface(self, value: str, key: str) -> bool:
        why = ifname_problem(value)
        if why is not None:
            self.err(key, f"not an interface name: {why}")
            return False
        return True

    def cidr(self, value: str, key: str) -> ipaddress.IPv4Interface | None:
        iface = host_interface(value)
        if isinstance(iface, str):
            self.err(key, iface)
            return None
        return iface

    def ipv4(self, value: str, key: str) -> ipaddress.IPv4Address | None:
        ip = parse_ipv4(value)
        why = ip if isinstance(ip, str) else host_problem(ip)
        if why is not None:
            self.err(key, why)
            return None
        assert not isinstance(ip, str)
        return ip

    # -- the file ------------------------------------------------------------------

    def rig(self, data: dict[str, Any], path: Path) -> Rig | None:
        self.unknown(data, "", _TOP_KEYS)
        name = self.value(data, "", "name", "str", default=path.stem)
        if name is not None and not _NAME_RE.match(name):
            self.err("name", f"{_show(name)} is not a rig name (letters, digits, '.', '_', '-')")
        description = self.value(data, "", "description", "str", default="")
        mtu = self.int_in(data, "", "mtu", MIN_MTU, MAX_MTU, default=DEFAULT_MTU)

        driver_tbl = self.section(data, "driver", required=True)
        bus_tbl = self.section(data, "bus")
        peer_tbl = self.section(data, "peer", required=True)
        p2p = isinstance(peer_tbl, dict) and peer_tbl.get("kind") in PPP_PEER_KINDS
        dut_tbl = self.section(data, "dut", required=not p2p)
        pins_tbl = self.section(data, "pins")

        bus = self.bus(bus_tbl) if bus_tbl is not None else None
        peer = self.peer(peer_tbl) if peer_tbl is not None else None
        pins = self.pins(pins_tbl, bus) if pins_tbl is not None else {}
        driver = (self.driver(driver_tbl, bus_tbl is not None, peer, pins, bus)
                  if driver_tbl is not None else None)
        if p2p:
            dut = self.ppp_dut(dut_tbl or {}, peer)
        else:
            dut = self.dut(dut_tbl, peer) if dut_tbl is not None else None
        self.serial_line(bus, peer, driver)
        slow_sim = bus is not None and (bus.simulated or (peer is not None
                                                          and peer.kind == "tap"))
        suites = self.suites(data.get("suites", _MISSING), slow_sim)

        if peer is not None and peer.kind == "board" and (bus is None or bus.simulated):
            self.err("peer.kind", 'a "board" peer is a real board at the end of a real bus '
                                  '(a USB gadget); a simulated rig\'s peer is a "tap"')
        elif bus is not None and bus.simulated and peer is not None and peer.kind != "tap":
            self.err("peer.kind", f'a simulated bus (the {bus.model} model) needs a "tap" '
                                  f"peer: the model's wire is a TAP")
        if bus is not None and not bus.simulated and bus.kind in ("usb", "ftdi") and (
                peer is not None and peer.kind == "tap"):
            self.err("bus.model", 'missing: a "tap" peer is the cable of a model (add model '
                                  f'= "..."); a real {bus.kind} device needs a "host" peer')
        elif bus is not None and not bus.simulated and bus.kind != "python" and (
                peer is not None and peer.kind == "tap"):
            self.err("peer.kind", f'a real bus ({bus.kind}) needs a "host" peer: '
                                  f"the NIC's cable goes to a host interface")

        if (self.problems or driver is None or peer is None or dut is None or suites is None
                or mtu is None):
            return None
        return Rig(
            name=name, path=path, description=description, driver=driver, bus=bus,
            pins=MappingProxyType(pins), peer=peer, dut=dut, mtu=mtu, suites=suites,
        )

    def serial_line(self, bus: BusSpec | None, peer: PeerSpec | None,
                    driver: DriverSpec | None) -> None:
        """A serial bus and a PPP peer go together: the line's two ends."""
        if peer is not None and peer.point_to_point:
            if bus is not None and bus.kind != "serial":
                self.err("bus.kind", f'a {peer.kind} peer is the far end of a serial line: '
                                     f'write kind = "serial"')
            elif peer.kind == "slirp" and bus is not None and bus.port is not None:
                self.err("bus.port", "a slirp peer provides the line (a pty slirp talks PPP "
                                     "on): remove the key")
            elif peer.kind != "slirp" and (bus is None or bus.port is None):
                self.err("bus.port", f'missing: a {peer.kind} peer is at the end of a real '
                                     f'serial line (add [bus] kind = "serial" and port = '
                                     f'"/dev/serial0", a device path or a pyserial URL)')
            if driver is not None and _driver_transport(driver.name) not in (None, "serial"):
                self.err("driver.name", f"driver {driver.name} does not speak PPP on a serial "
                                        f'line; a {peer.kind} peer needs one (name = "ppp")')
        elif bus is not None and bus.kind == "serial" and peer is not None:
            self.err("peer.kind", f'a serial line needs a PPP peer at its far end ("slirp", '
                                  f'"pppd" or "remote"), not a {_show(peer.kind)} peer')
        elif (peer is not None and driver is not None and bus is None
              and _driver_transport(driver.name) == "serial"):
            self.err("peer.kind", f'driver {driver.name} speaks PPP on a serial line: its peer '
                                  f'is "slirp", "pppd" or "remote"')

    def ppp_dut(self, tbl: Mapping[str, Any], peer: PeerSpec | None) -> DutSpec | None:
        """``[dut]`` of a PPP rig: optional; the address is what IPCP hands out (slirp:
        10.0.2.15), and one the file gives is the address hilkit asks for."""
        self.unknown(tbl, "dut", ("address",))
        address = self.value(tbl, "dut", "address", "str")
        default = {"slirp": SLIRP_DUT_ADDRESS, "pppd": PPPD_DUT_ADDRESS}.get(
            peer.kind if peer is not None else "", "0.0.0.0/0")
        if address is None:
            return DutSpec(default, negotiated=True)
        iface = self.cidr(address, "dut.address")
        if iface is None:
            return None
        ip = iface.ip
        if peer is not None and peer.kind == "slirp" and str(ip) != SLIRP_DUT_ADDRESS[:-3]:
            self.err("dut.address", f"slirp hands out {SLIRP_DUT_ADDRESS[:-3]} and no other "
                                    f"address (remove the key)")
            return None
        if peer is not None and str(ip) == peer.ip:
            self.err("dut.address", f"{ip} is also the peer's address (peer.address)")
            return None
        if peer is not None and ip not in ipaddress.IPv4Interface(peer.address).network and (
                iface.network.prefixlen < 32):
            self.err("dut.address", f"{address} is not on the peer's network "
                                    f"{ipaddress.IPv4Interface(peer.address).network} "
                                    f"(peer.address = {peer.address})")
            return None
        return DutSpec(str(iface), negotiated=True)

    def section(self, data: Mapping[str, Any], key: str, *, required: bool = False,
                ) -> dict[str, Any] | None:
        raw = data.get(key, _MISSING)
        if raw is _MISSING:
            if required:
                self.err(key, f"missing (add a [{key}] table)")
            return None
        return self.table(raw, key)

    def driver(self, tbl: dict[str, Any], has_bus: bool, peer: PeerSpec | None,
               pins: Mapping[str, PinSpec], bus: BusSpec | None = None) -> DriverSpec | None:
        from hilkit.drivers import available_drivers

        known = available_drivers()
        name: str | None = self.value(tbl, "driver", "name", "str", required=True,
                                      why=f" (one of: {', '.join(known)})")
        if name is None:
            return None
        if name not in known:
            self.err("driver.name", f"unknown driver {_show(name)}{suggest(name, known)}"
                     + ("" if difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                        else "; other drivers register under the entry-point group "
                             '"hilkit.drivers"'))
            return None
        options: dict[str, Any] = {k: v for k, v in tbl.items() if k != "name"}
        if "mac" in options:
            options["mac"] = self.mac(options["mac"], "driver.mac")
        serial = _driver_transport(name) == "serial"
        if serial:  # a PPP link's keys: checked here, made into the driver's config
            link: dict[str, Any] = {k: options.pop(k) for k in PPP_LINK_KEYS if k in options}
            options |= self.ppp_options(link)
            if "hangup" in options and options["hangup"] not in PPP_HANGUPS:
                self.err("driver.hangup", f"unknown hangup {_show(options['hangup'])}"
                         + (suggest(options["hangup"], PPP_HANGUPS)
                            if isinstance(options["hangup"], str) else "")
                         + f" (one of: {', '.join(PPP_HANGUPS)})")
        sig = _driver_signature(name)
        in_netns = not has_bus and peer is not None and peer.kind == "tap"
        if sig is not None:
            params = sig.parameters
            takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
            provided = set(BUILDER_DRIVER_PARAMS) | ({"name"} if in_netns else set())
            if serial:
                provided |= SERIAL_BUILDER_PARAMS
            settable = [p.name for p in params.values()
                        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                        and p.name not in provided]
            if not takes_any:
                for k in options:
                    if serial and k in PPP_LINK_KEYS:
                        continue
                    if k in provided:
                        self.err(_join("driver", k), "set by the rig itself, not a driver option"
                                 + (" (the TAP's name is peer.interface)" if k == "name" else ""))
                    elif k not in settable:
                        self.err(_join("driver", k),
                                 f"driver {name} has no option {_show(k)}{suggest(k, settable)}")
                    elif k != "mac":
                        self.option_type(_join("driver", k), options[k], params[k].annotation)
            first = next(iter(params.values()), None)
            wants_bus = (first is not None and first.name == "bus"
                         and first.default is inspect.Parameter.empty)
            if wants_bus and not has_bus:
                self.err("bus", f"missing: driver {name} needs a bus (add a [bus] table)")
            if has_bus and "bus" not in params and not takes_any and not serial:
                self.err("bus", f"driver {name} takes no bus (remove the [bus] table)")
            for pin in pins:
                if pin not in params and not takes_any:
                    self.err(f"pins.{pin}", f"driver {name} takes no {pin} pin")
        if peer is not None and peer.kind == "host" and not has_bus and name in ("tap", "tun"):
            self.err("peer.kind", f'driver {name} needs a "tap" peer')
        return DriverSpec(name, _frozen(options))

    def ppp_options(self, tbl: Mapping[str, Any]) -> dict[str, Any]:
        """The PPP link keys of ``[driver]`` (``PPP_LINK_KEYS``), checked: the password
        is kept as a ``Secret`` (its repr hides it) and never shown in a message."""
        out: dict[str, Any] = {}
        user = self.value(tbl, "driver", "username", "str")
        if user is not None:
            if not user or len(user) > 255:
                self.err("driver.username", "must be 1..255 characters")
            else:
                out["username"] = user
        if "password" in tbl:
            raw = tbl["password"]
            if not isinstance(raw, str):  # never echo it: it may be a mistyped secret
                self.err("driver.password", f"expected a string, got {_kind_of(raw)}")
            elif len(raw.encode()) > 255:
                self.err("driver.password", "longer than 255 bytes (PAP and CHAP carry at "
                                            "most 255)")
            else:
                out["password"] = Secret(raw)
        env = self.value(tbl, "driver", "password_env", "str")
        if env is not None:
            if not _ENV_NAME_RE.match(env):
                self.err("driver.password_env", f"{_show(env)} is not the name of an "
                                                f'environment variable (e.g. "PPP_PASSWORD")')
            else:
                out["password_env"] = env
        if "password" in tbl and env is not None:
            self.err("driver.password_env", "give the password or password_env, not both")
        if user is None and ("password" in tbl or env is not None):
            self.err("driver.username", "missing: a password goes with a username")
        if user is not None and "password" not in tbl and env is None:
            self.err("driver.password", "missing: a username goes with a password (or "
                                        "password_env, the environment variable holding it)")
        vj = self.value(tbl, "driver", "vj", "bool")
        if vj is not None:
            out["vj"] = vj
        n = self.int_in(tbl, "driver", "echo_interval_ms", 0, 3_600_000)
        if n is not None:
            out["echo_interval_ms"] = n
        n = self.int_in(tbl, "driver", "echo_failure", 1, 1000)
        if n is not None:
            out["echo_failure"] = n
        if "chat" in tbl:
            chat = self.chat(tbl["chat"])
            if chat is not None:
                out["chat"] = chat
        return out

    def chat(self, raw: object) -> str | tuple[tuple[str, ...], ...] | None:
        """``driver.chat``: a chat script (``"'' AT OK ATD*99#"``) or a list of [expect,
        send] pairs, checked by parsing it as the driver will."""
        from hilkit.drivers.ppp.chat import ChatScript

        spec: Any
        if isinstance(raw, str):
            spec = raw
        elif isinstance(raw, list) and all(
                isinstance(x, list) and all(isinstance(w, str) for w in x) for x in raw):
            spec = tuple(tuple(x) for x in raw)
        else:
            self.err("driver.chat", f"expected a chat script (a string such as \"'' AT OK "
                                    f"ATD*99# CONNECT\") or a list of [expect, send] "
                                    f"pairs, got {_show(raw)}")
            return None
        try:
            ChatScript.parse(spec)
        except ValueError as e:
            self.err("driver.chat", f"not a chat script: {_clip(str(e), 200)}")
            return None
        return spec  # type: ignore[no-any-return]

    def factory_params(self, factory: str, sig: inspect.Signature,
                       params: Mapping[str, Any]) -> None:
        """A ``python`` bus's keys against its factory's signature, as driver options are
        checked against the driver's: an unknown key (with the closest suggested), one
        the builder passes itself, a missing one without a default, a simple type."""
        ps = sig.parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in ps.values())
        settable = [p.name for p in ps.values()
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                    and p.name not in BUILDER_FACTORY_PARAMS]
        for k, v in params.items():
            key = _join("bus", k)
            if k in BUILDER_FACTORY_PARAMS:
                self.err(key, f"set by the rig itself, not a bus parameter (the builder "
                              f"passes {k} to a factory that takes it)")
            elif k in settable:
                if k != "speed_hz":  # range-checked above
                    self.option_type(key, v, ps[k].annotation)
            elif not takes_any:
                self.err(key, f"factory {factory} has no parameter {_show(k)}"
                         + suggest(k, settable))
        for name in settable:
            p = ps[name]
            if p.default is inspect.Parameter.empty and name not in params:
                self.err(_join("bus", name), f"missing: factory {factory} needs it "
                                             f"(a parameter without a default)")

    def option_type(self, key: str, value: object, annotation: object) -> None:
        """Check a driver option against a simple annotation (bool, int, float, str)."""
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        simple = text.removesuffix(" | None") if isinstance(text, str) else ""
        kind = {"bool": "bool", "int": "int", "float": "float", "str": "str"}.get(simple)
        problem = None if kind is None else _type_problem(value, kind)
        if problem is not None:
            self.err(key, problem)

    def mac(self, value: object, key: str) -> bytes | None:
        if not isinstance(value, str):
            self.err(key, f'expected a string such as "02:00:00:00:00:01", got {_show(value)}')
            return None
        if not _MAC_RE.match(value):
            self.err(key, f"{_show(value)} is not a MAC address (six hex octets, "
                          f'"02:00:00:00:00:01")')
            return None
        raw = bytes.fromhex(value.replace(":", "").replace("-", ""))
        if raw[0] & 0x01:
            self.err(key, f"{value} is a multicast address; the first octet must be even")
            return None
        return raw

    def bus(self, tbl: dict[str, Any]) -> BusSpec | None:
        raw_kind = tbl.get("kind")
        if isinstance(raw_kind, str) and raw_kind.startswith("sim-") and len(raw_kind) > 4:
            # The chip's name was once part of the bus kind; say what to write now, and
            # check the rest of the table as what it means.
            old = raw_kind.removeprefix("sim-")
            self.err("bus.kind", f'{_show(raw_kind)} is gone: write kind = "sim" and '
                                 f"model = {_show(old)}")
            tbl = {k: v for k, v in tbl.items() if k != "kind"}
            tbl = {"kind": "sim", "model": old, **tbl}
        kind = self.choice(tbl, "bus", "kind", BUS_KINDS, "bus kind")
        if kind is None:
            return None
        if kind != "python":
            self.unknown(tbl, "bus", _BUS_KEYS[kind])
        speed_default = DEFAULT_SPEED_HZ.get(kind)
        if kind == "spidev":
            device = self.value(tbl, "bus", "device", "str", required=True,
                                why=' (e.g. "/dev/spidev0.0")')
            if device is not None and not device.startswith("/dev/"):
                self.err("bus.device", f'{_show(device)} is not a device node '
                                       f'(e.g. "/dev/spidev0.0")')
            return BusSpec(
                kind, device=device,
                speed_hz=self.int_in(tbl, "bus", "speed_hz", 1_000, 200_000_000,
                                     default=speed_default),
                mode=self.int_in(tbl, "bus", "mode", 0, 3, default=0) or 0,
            )
        if kind == "ftdi":
            url = self.value(tbl, "bus", "url", "str", required=True,
                             why=' (e.g. "ftdi://ftdi:232h/1")')
            problem = None if url is None else _ftdi_url_problem(url)
            if problem is not None:
                self.err("bus.url", f"{_show(url)} is not an FTDI URL: {problem}")
            cs = self.int_in(tbl, "bus", "cs_pin", 3, 7, default=3)  # ADBUS3..7
            v = self.virtual_usb(tbl, "spi", ("faults", "timing"),
                                 "the chip on the FT232H's SPI pins, a model")
            return BusSpec(
                kind, url=url,
                speed_hz=self.int_in(tbl, "bus", "speed_hz", 458, 30_000_000,
                                     default=speed_default),
                mode=self.ftdi_mode(tbl),
                cs_pin=cs,
                timeout_ms=self.float_in(tbl, "bus", "timeout_ms", 1, 600_000,
                                         default=DEFAULT_FTDI_TIMEOUT_MS),
                backend=v.backend, model=v.model, seed=v.seed,
                faults=_frozen(v.tables.get("faults")), timing=_frozen(v.tables.get("timing")),
            )
        if kind == "sim":
            why = "" if "model" in tbl else f" (the NIC whose chip model runs; {_models_known()})"
            model = self.value(tbl, "bus", "model", "str", required=True, why=why)
            nic = None if model is None else self.sim_model(model)
            if nic is not None and nic.spi_max_hz is not None:
                speed_default = nic.spi_max_hz
            return BusSpec(
                kind,
                model=model,
                speed_hz=self.int_in(tbl, "bus", "speed_hz", 1_000, 200_000_000,
                                     default=speed_default),
                seed=self.int_in(tbl, "bus", "seed", *SEED_RANGE),
                faults=_frozen(self.model_table(tbl, "faults", nic)),
                timing=_frozen(self.model_table(tbl, "timing", nic)),
            )
        if kind == "usb":
            return self.usb_bus(tbl)
        if kind == "serial":
            port = self.value(tbl, "bus", "port", "str")
            if port is not None and not port.strip():
                self.err("bus.port", 'empty (a device path such as "/dev/serial0" or a '
                                     'pyserial URL such as "rfc2217://host:port")')
                port = None
            elif port is not None and "://" not in port and not port.startswith("/"):
                self.err("bus.port", f'{_show(port)} is neither a device path (e.g. '
                                     f'"/dev/serial0") nor a pyserial URL (e.g. '
                                     f'"socket://host:port")')
                port = None
            return BusSpec(
                kind, port=port,
                baudrate=self.int_in(tbl, "bus", "baudrate", *BAUDRATE_RANGE,
                                     default=DEFAULT_BAUDRATE),
                rtscts=bool(self.value(tbl, "bus", "rtscts", "bool", default=False)),
            )
        factory = self.value(tbl, "bus", "factory", "str", required=True,
                             why=' (e.g. "mypackage.bridge:open_bus")')
        if factory is not None and not _FACTORY_RE.match(factory):
            self.err("bus.factory", f'{_show(factory)} is not "module:callable" '
                                    f'(e.g. "mypackage.bridge:open_bus")')
        params = {k: v for k, v in tbl.items() if k not in ("kind", "factory")}
        # The factory's own keyword, but hilkit reads it too: for figures and listings.
        speed = self.int_in(tbl, "bus", "speed_hz", 1, 1_000_000_000)
        sig = None if factory is None or not _FACTORY_RE.match(factory) else (
            _factory_signature(factory))
        if sig is not None:
            self.factory_params(factory, sig, params)
        return BusSpec(kind, factory=factory, params=_frozen(params), speed_hz=speed)

    def usb_bus(self, tbl: dict[str, Any]) -> BusSpec:
        """``kind = "usb"``: a USB device found by id, serial and port (any that are
        given), through a pyusb backend; with ``model``, a device model of a registered
        NIC plugged into the virtual bus (``hilkit.sim.usb``) whose cable is the rig's TAP."""
        usb_id: tuple[int, int] | None = None
        raw_id = self.value(tbl, "bus", "id", "str")
        if raw_id is not None:
            if _USB_ID_RE.match(raw_id):
                v, _, p = raw_id.partition(":")
                usb_id = (int(v, 16), int(p, 16))
            else:
                self.err("bus.id", f'{_show(raw_id)} is not a USB id: vendor:product in hex, '
                                   f'as lsusb prints it (e.g. "0525:a4a2")')
        serial = self.value(tbl, "bus", "serial", "str")
        if serial is not None and not serial.strip():
            self.err("bus.serial", "empty (leave it out to take any serial)")
        port = self.value(tbl, "bus", "port", "str")
        if port is not None and not _USB_PORT_RE.match(port):
            self.err("bus.port", f'{_show(port)} is not a USB port path: bus-port[.port...], '
                                 f'as in /sys/bus/usb/devices (e.g. "1-1.2")')
        v = self.virtual_usb(tbl, "usb", ("faults", "options"),
                             "a NIC whose device model runs on the virtual bus")
        return BusSpec(
            "usb", usb_id=usb_id, serial=serial, port=port, backend=v.backend, model=v.model,
            seed=v.seed, faults=_frozen(v.tables.get("faults")),
            options=_frozen(v.tables.get("options")),
        )

    def virtual_usb(self, tbl: Mapping[str, Any], transport: str, tables: tuple[str, ...],
                    what: str) -> _VirtualUsb:
        """``backend``, ``model`` and the model's tables of a bus reached over USB (``usb``,
        ``ftdi``): with a model (a NIC on ``transport``), the USB is the virtual bus unless
        ``backend`` names another; without one, the model's keys are refused."""
        backend = self.value(tbl, "bus", "backend", "str")
        if backend is not None and not _MODULE_RE.match(backend):
            self.err("bus.backend", f"{_show(backend)} is not a module name (a pyusb backend "
                                    f'module with get_backend(), e.g. "{VIRTUAL_USB_BACKEND}")')
        model = self.value(tbl, "bus", "model", "str")
        if model is None:
            for key in (*tables, "seed"):
                if key in tbl:
                    self.err(f"bus.{key}", f'only a model takes it: add model = "..." ({what})')
            return _VirtualUsb(backend, None, None, {})
        nic = self.sim_model(model, transport=transport)
        return _VirtualUsb(backend or VIRTUAL_USB_BACKEND, model,
                           self.int_in(tbl, "bus", "seed", *SEED_RANGE),
                           {t: self.model_table(tbl, t, nic) for t in tables})

    def ftdi_mode(self, tbl: Mapping[str, Any]) -> int:
        """MPSSE clocks SPI modes 0 and 2 only (1 and 3 need three-phase clocking)."""
        mode = self.int_in(tbl, "bus", "mode", 0, 3, default=0) or 0
        if mode not in (0, 2):
            self.err("bus.mode", f"{mode}: an FT232H clocks SPI modes 0 and 2 only")
        return mode

    def sim_model(self, name: str, transport: str = "spi") -> Nic | None:
        """``bus.model``: a registered NIC that has a model on ``transport``; None (and
        said) if not."""
        from hilkit.drivers import NIC_ENTRY_POINT_GROUP, find_nic, nics

        try:
            nic = find_nic(name)
        except NicError as e:
            self.err("bus.model", f"{_show(name)}: its registration cannot be used: {e}")
            return None
        if nic is None:
            known = [n for n, x in nics().items()
                     if x.model is not None and x.transport == transport]
            self.err("bus.model", f"unknown model {_show(name)}{suggest(name, known)}"
                     + ("" if difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                        else f"; a chip model comes with a NIC registered under the "
                             f'entry-point group "{NIC_ENTRY_POINT_GROUP}"'))
            return None
        if nic.model is None:
            self.err("bus.model", f"{nic.title} ({_show(name)}) registers no chip model; "
                                  f"{_models_known(transport)}")
            return None
        if nic.transport != transport:
            if nic.transport == "usb":
                self.err("bus.model", f"{nic.title} ({_show(name)}) is a USB device: write "
                                      f'kind = "usb" and model = {_show(name)}')
            else:
                self.err("bus.model", f"{nic.title} ({_show(name)}) is an SPI chip: write "
                                      f'kind = "sim" and model = {_show(name)}')
            return None
        return nic

    def model_table(self, bus: Mapping[str, Any], key: str, nic: Nic | None) -> dict[str, Any]:
        """``bus.faults`` / ``bus.timing`` / ``bus.options``: the fields of the dataclass
        the NIC registers."""
        tbl: dict[str, Any] = self.value(bus, "bus", key, "table", default={})
        path = f"bus.{key}"
        if nic is None:  # no usable model: bus.model says so already
            return dict(tbl)
        fields_ = _model_fields(nic, key)
        if fields_ is None:  # the class is not importable here: the builder will say so
            return dict(tbl)
        if not fields_ and tbl:
            self.err(path, f"the {nic.name} model takes no {key} (its Nic registers no "
                           f"model_{key})")
            return {}
        self.unknown(tbl, path, list(fields_))
        out: dict[str, Any] = {}
        for name, kind in fields_.items():
            if name not in tbl:
                continue
            if kind in ("float", "int"):  # rates are probabilities; the rest are times in ms
                hi = 1.0 if name.endswith("_rate") else MAX_MODEL_MS
                if key == "options":  # numbers of any kind (ids, counts): 32 bits
                    hi = float(0xFFFF_FFFF)
                v = self.float_in(tbl, path, name, 0.0, hi)
                if v is not None and kind == "int":
                    v = self.int_in(tbl, path, name, 0, int(hi))
            else:
                v = self.value(tbl, path, name, kind)
            if v is not None:
                out[name] = v
        return out

    def pins(self, tbl: dict[str, Any], bus: BusSpec | None) -> dict[str, PinSpec]:
        out: dict[str, PinSpec] = {}
        for name, raw in tbl.items():
            key = _join("pins", name)
            if name not in PIN_NAMES:
                self.err(key, f"unknown pin {_show(name)}{suggest(name, PIN_NAMES)}")
                continue
            sub = self.table(raw, key)
            if sub is None:
                continue
            kind = self.choice(sub, key, "kind", PIN_KINDS, "pin kind")
            if kind is None:
                continue
            self.unknown(sub, key, _PIN_KEYS[kind])
            active_low = bool(self.value(sub, key, "active_low", "bool", default=False))
            if kind == "gpiod":
                chip = self.value(sub, key, "chip", "str", required=True,
                                  why=' (e.g. "/dev/gpiochip0" or a chip label)')
                line = self.int_in(sub, key, "line", 0, 4095, required=True,
                                   why=" (the line offset, e.g. 25)")
                bias = "as_is"
                if "bias" in sub:
                    bias = self.choice(sub, key, "bias", GPIO_BIASES, "bias") or "as_is"
                out[name] = PinSpec(name, kind, chip=chip, line=line, active_low=active_low,
                                    bias=bias)
            elif kind == "ftdi":
                bit = self.int_in(sub, key, "bit", 0, 15, required=True,
                                  why=" (4..7 = ADBUS4..7, 8..15 = ACBUS0..7)")
                if bus is None or bus.kind != "ftdi":
                    self.err(f"{key}.kind", 'an "ftdi" pin needs an ftdi bus '
                                            '([bus] kind = "ftdi")')
                elif bit in FTDI_SPI_BITS:
                    self.err(f"{key}.bit", f"bit {bit} is an SPI line "
                                           f"(ADBUS0..2 = SCK, MOSI, MISO)")
                elif bit is not None and bit == bus.cs_pin:
                    self.err(f"{key}.bit", f"bit {bit} is the bus's chip select (bus.cs_pin)")
                out[name] = PinSpec(name, kind, bit=bit, active_low=active_low)
            else:
                if bus is None or not (bus.simulated or bus.kind == "python"):
                    self.err(f"{key}.kind", 'a "sim" pin needs a simulated bus '
                                            '(or a python bus whose object has the pin)')
                out[name] = PinSpec(name, kind, active_low=active_low)
        gp = [(p.chip, p.line) for p in out.values() if p.kind == "gpiod"]
        if len(gp) == 2 and gp[0] == gp[1]:
            self.err("pins.irq.line", "the irq and reset pins are the same line")
        fb = [p.bit for p in out.values() if p.kind == "ftdi"]
        if len(fb) == 2 and fb[0] == fb[1]:
            self.err("pins.irq.bit", "the irq and reset pins are the same bit")
        return out

    def peer(self, tbl: dict[str, Any]) -> PeerSpec | None:
        kind = self.choice(tbl, "peer", "kind", PEER_KINDS, "peer kind")
        self.unknown(tbl, "peer", _PEER_KEYS)
        if kind in PPP_PEER_KINDS:
            return self.ppp_peer(kind, tbl)
        if "auth" in tbl:
            self.err("peer.auth", f'only a PPP peer ("slirp", "pppd") demands authentication; '
                                  f"a {kind} peer takes no auth")
        address = self.value(tbl, "peer", "address", "str", required=True,
                             why=' (the kernel\'s address, e.g. "192.168.7.1/24")')
        iface = None if address is None else self.cidr(address, "peer.address")
        services: tuple[str, ...] = ()
        ifname: str | None
        if kind == "board":
            ifname = ""
            if "interface" in tbl:
                self.err("peer.interface", "a board peer has no interface on this machine: "
                                           "its cable is the USB device's (remove the key)")
            services = self.services(tbl)
        elif kind == "host":
            ifname = self.value(tbl, "peer", "interface", "str", required=True,
                                why=' (the host NIC cabled to the DUT, e.g. "eth1")')
        else:
            ifname = self.value(tbl, "peer", "interface", "str", default=DEFAULT_TAP_NAME)
        if kind != "board" and ifname is not None and not self.interface(ifname,
                                                                           "peer.interface"):
            ifname = None
        if kind != "board" and "services" in tbl:
            self.err("peer.services", f"only a board peer lists services (a {kind} peer "
                                      "is the Linux kernel, which runs them all)")
        if kind is None or iface is None or ifname is None:
            return None
        return PeerSpec(kind, address, ifname, services)

    def ppp_peer(self, kind: str, tbl: Mapping[str, Any]) -> PeerSpec | None:
        """``[peer]`` at the far end of a PPP line: ``slirp`` (on a pty in the rig's
        namespace; fixed addresses), ``pppd`` (the host's, in the namespace, on the serial
        port), ``remote`` (already running at the far end; its stack runs ``services``)."""
        if "interface" in tbl:
            self.err("peer.interface", f"a {kind} peer has no interface to name: the line is "
                                       f"the serial port (remove the key)")
        auth = "none"
        port: str | None = None
        if kind == "pppd":
            port = self.value(tbl, "peer", "port", "str", required=True,
                              why=' (the serial port pppd runs on, the far end of the cable '
                                  'from bus.port, e.g. "/dev/ttyUSB0")')
            if port is not None and not port.startswith("/dev/"):
                self.err("peer.port", f'{_show(port)} is not a device path (e.g. '
                                      f'"/dev/ttyUSB0")')
                port = None
        elif "port" in tbl:
            line = "its own pty" if kind == "slirp" else "bus.port"
            self.err("peer.port", f"only a pppd peer runs on a port of this machine; a {kind} "
                                  f"peer's line is {line} (remove the key)")
        if kind == "pppd" and "auth" in tbl and tbl["auth"] != "none":
            self.err("peer.auth", "pppd's secrets are the system's (/etc/ppp/pap-secrets, "
                                  "chap-secrets), which hilkit does not edit: set auth in "
                                  "pppd's own configuration and use a remote peer, or leave "
                                  "peer.auth out")
        elif kind == "remote":
            if "auth" in tbl:
                self.err("peer.auth", "a remote peer's demands are its own: hilkit answers "
                                      "PAP or CHAP with driver.username and the password "
                                      "(remove the key)")
        elif "auth" in tbl:
            auth = self.choice(tbl, "peer", "auth", PEER_AUTHS, "authentication") or "none"
        services: tuple[str, ...] = ()
        if kind == "remote":
            services = self.services(tbl)
        elif "services" in tbl:
            self.err("peer.services", f"only a remote or board peer lists services (a {kind} "
                                      f"peer is the Linux kernel's sockets in the rig's "
                                      f"namespace, which run them all)")
        default = {"slirp": SLIRP_PEER_ADDRESS, "pppd": PPPD_PEER_ADDRESS}.get(kind)
        why = ' (the far end\'s address, e.g. "10.64.64.64/32")'
        address = self.value(tbl, "peer", "address", "str", required=default is None, why=why,
                             default=default)
        if address is None:
            return None
        iface = self.cidr(address, "peer.address")
        if iface is None:
            return None
        if kind == "slirp" and str(iface.ip) != SLIRP_PEER_ADDRESS[:-3]:
            self.err("peer.address", f"slirp is {SLIRP_PEER_ADDRESS[:-3]} and no other address "
                                     f"(remove the key)")
            return None
        if kind == "pppd" and port is None:
            return None
        return PeerSpec(kind, str(iface), "", services, auth, port)

    def services(self, tbl: Mapping[str, Any]) -> tuple[str, ...]:
        """``peer.services``: a list of BOARD_SERVICES, each once."""
        raw = tbl.get("services", [])
        if not isinstance(raw, list):
            self.err("peer.services", f'expected a list such as ["ping", "udp-echo"], '
                                      f"got {_show(raw)}")
            return ()
        out: list[str] = []
        for i, item in enumerate(raw):
            key = f"peer.services[{i}]"
            if not isinstance(item, str):
                self.err(key, f"expected a service name, got {_show(item)}")
            elif item not in BOARD_SERVICES:
                self.err(key, f"unknown service {_show(item)}{suggest(item, BOARD_SERVICES)} "
                              f"(known: {', '.join(BOARD_SERVICES)})")
            elif item in out:
                self.err(key, f"{_show(item)} is listed twice")
            else:
                out.append(item)
        return tuple(out)

    def dut(self, tbl: dict[str, Any], peer: PeerSpec | None) -> DutSpec | None:
        self.unknown(tbl, "dut", _DUT_KEYS)
        address = self.value(tbl, "dut", "address", "str", required=True,
                             why=' (hilkit\'s address, e.g. "192.168.7.2/24")')
        iface = None if address is None else self.cidr(address, "dut.address")
        gateway = self.value(tbl, "dut", "gateway", "str")
        gw = None if gateway is None else self.ipv4(gateway, "dut.gateway")
        if iface is not None and gw is not None:
            if gw not in iface.network:
                self.err("dut.gateway", f"{gw} is not on the DUT's network {iface.network}")
            elif gw == iface.ip:
                self.err("dut.gateway", f"{gw} is the DUT's own address")
        if iface is not None and peer is not None:
            kernel = ipaddress.IPv4Interface(peer.address)
            if kernel.ip == iface.ip:
                self.err("dut.address", f"{iface.ip} is also the peer's address (peer.address)")
            elif kernel.network != iface.network:
                self.err("dut.address", f"{address} is not on the peer's network "
                                        f"{kernel.network} (peer.address = {peer.address})")
        if address is None or iface is None or (gateway is not None and gw is None):
            return None
        return DutSpec(address, gateway)

    def suites(self, raw: object, slow_sim: bool) -> Mapping[str, SuiteParams] | None:
        if raw is _MISSING:
            return MappingProxyType({s: SuiteParams(s, slow_sim=slow_sim)
                                     for s in DEFAULT_SUITES})
        chosen: dict[str, SuiteParams] = {}
        ok = True
        if isinstance(raw, list):
            for i, s in enumerate(raw):
                if not isinstance(s, str):
                    self.err(f"suites[{i}]", f"expected a suite name, got {_show(s)}")
                    ok = False
                elif s not in SUITE_NAMES:
                    self.err(f"suites[{i}]",
                             f"unknown suite {_show(s)}{suggest(s, SUITE_NAMES)}")
                    ok = False
                else:
                    chosen[s] = SuiteParams(s, slow_sim=slow_sim)
        elif isinstance(raw, dict):
            for s, params in raw.items():
                key = _join("suites", s)
                if s not in SUITE_NAMES:
                    self.err(key, f"unknown suite {_show(s)}{suggest(s, SUITE_NAMES)}")
                    ok = False
                    continue
                sub = self.table(params, key)
                if sub is None:
                    ok = False
                    continue
                chosen[s] = SuiteParams(s, self.suite_params(s, sub, key), slow_sim=slow_sim)
        else:
            self.err("suites", f"expected a table of suites ([suites.NAME]) or an array of "
                               f"suite names, got {_show(raw)}")
            return None
        if ok and not chosen:
            self.err("suites", f"no suite chosen (known: {', '.join(SUITE_NAMES)})")
            return None
        return MappingProxyType({s: chosen[s] for s in SUITE_NAMES if s in chosen})

    def suite_params(self, suite: str, tbl: Mapping[str, Any], path: str) -> dict[str, Any]:
        """``[suites.NAME]`` against the suite's declarations (``hilkit.rig.suite_params``)."""
        specs = SUITE_PARAMS[suite]
        names = [p.name for p in specs]
        for k in tbl:
            if k not in names:
                self.err(_join(path, k), f"unknown parameter {_show(k)} of suite {suite}"
                         + suggest(k, names))
        out: dict[str, Any] = {}
        for p in specs:
            if p.name in tbl:
                v = self.param(tbl[p.name], _join(path, p.name), p)
                if v is not None:
                    out[p.name] = v
        return out

    def param(self, raw: object, key: str, p: Param) -> Any:
        """A declared parameter's value, type- and range-checked; None if it is wrong."""
        if p.kind == "ints":
            if not isinstance(raw, list):
                self.err(key, f"expected an array of integers such as "
                              f"[{', '.join(str(x) for x in p.default[:3])}], got {_show(raw)}")
                return None
            if not 1 <= len(raw) <= p.max_len:
                self.err(key, f"expected 1..{p.max_len} values, got {len(raw)}")
                return None
            items = [self.in_range(x, f"{key}[{i}]", p, "int") for i, x in enumerate(raw)]
            if any(x is None for x in items):
                return None
            dup = next((x for i, x in enumerate(items) if x in items[:i]), None)
            if dup is not None:
                self.err(key, f"{dup} is listed twice")
                return None
            return tuple(items)
        return self.in_range(raw, key, p, p.kind)

    def in_range(self, raw: object, key: str, p: Param, kind: str) -> Any:
        problem = _type_problem(raw, kind)
        if problem is not None:
            self.err(key, problem)
            return None
        assert isinstance(raw, (int, float))
        lo, hi = (int(p.lo), int(p.hi)) if kind == "int" else (p.lo, p.hi)
        if not lo <= raw <= hi:
            self.err(key, f"{_show(raw)} is out of range {lo:g}..{hi:g}" if kind == "float"
                     else f"{_show(raw)} is out of range {lo}..{hi}")
            return None
        return float(raw) if kind == "float" else raw


def _ftdi_url_problem(url: str) -> str | None:
    """Why ``url`` is not a pyftdi URL the hardware check can look up, or None."""
    parsed = parse_ftdi_url(url)
    return parsed if isinstance(parsed, str) else None


def _models_known(transport: str = "spi") -> str:
    """``known: a, b`` for messages: the registered NICs that have a model on ``transport``."""
    from hilkit.drivers import nics

    known = [n for n, x in nics().items() if x.model is not None and x.transport == transport]
    return f"known: {', '.join(known)}" if known else "no NIC with a chip model is registered"


def _model_fields(nic: Nic, table: str) -> dict[str, str] | None:
    """{field: "float" | "int" | "bool" | "str"} of the NIC's ``model_<table>`` dataclass;
    {} when it registers none (the table then takes no keys), None when it won't load."""
    import dataclasses

    try:
        cls = nic.model_table(table)
    except NicError:
        return None
    if cls is None:
        return {}
    kinds = {"float": "float", "int": "int", "bool": "bool", "str": "str",
             float: "float", int: "int", bool: "bool", str: "str"}
    return {f.name: kinds.get(f.type, "float") for f in dataclasses.fields(cls)}


def _factory_signature(ref: str) -> inspect.Signature | None:
    """A ``python`` bus factory's signature, or None if it cannot be imported or inspected
    (``check_hardware`` and the builder then say why, on ``bus.factory``)."""
    from hilkit.port.nic import load_ref

    try:
        factory: Callable[..., Any] = load_ref(ref)
        return inspect.signature(factory)
    except Exception:  # another package's import: reported when the rig is checked
        return None


def _driver_transport(name: str) -> str | None:
    """The transport of the NIC registered under ``name`` (``"serial"`` for PPP), or None."""
    from hilkit.drivers import find_nic

    try:
        nic = find_nic(name)
    except Exception:  # a broken registration is reported elsewhere
        return None
    return None if nic is None else nic.transport


def _kind_of(value: object) -> str:
    """What a value is, without showing it (for secrets)."""
    return {bool: "true or false", int: "an integer", float: "a number", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


class Secret:
    """A password from a rig file: ``str()`` and ``repr()`` never show it; ``reveal()``
    does, for the one place that needs it (the PPP link's credentials)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


def _driver_signature(name: str) -> inspect.Signature | None:
    """The driver factory's signature, or None if it cannot be loaded or inspected."""
    from hilkit.drivers import load_driver

    try:
        factory: Callable[..., Any] = load_driver(name)
        return inspect.signature(factory)
    except Exception:  # an unimportable plug-in is reported when the rig is built
        return None

"""From a rig file to a live device: namespace, peer, bus, pins, driver.

``check_hardware(rig)`` says within a few seconds whether what the rig names
is there (device node, USB device, GPIO chip, host interface), without
opening a namespace. ``build(rig)`` is a context manager that makes
everything and always takes it down again::

    with build(load_rig("sim-mychip")) as b:
        stack = Stack()
        dev = stack.add_device(b.device)
        stack.link_add(dev, b.dut_ip, b.dut_netmask)
        stack.ping(b.kernel_ip, ...)

Network safety: the kernel peer lives in a private namespace made for the
run. A TAP peer is born inside it; a host peer (a real NIC) is moved into it
and, in a ``finally``, moved back to the namespace it came from -- also on an
exception or Ctrl-C. Nothing is configured in the machine's own namespace,
and the private namespace is always deleted.

Buses, pins, models and drivers are imported only when a rig needs them, so
this module imports without them. A ``kind = "sim"`` bus is the chip model the
NIC named by ``bus.model`` registers (``hilkit.port.nic.Nic``): no chip is named here.
"""

from __future__ import annotations

import errno
import fcntl
import importlib
import inspect
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from hilkit.bus.ftdi import parse_url as parse_ftdi_url
from hilkit.bus.gpio import resolve_chip
from hilkit.port.clock import Clock, MonotonicClock
from hilkit.port.device import Device
from hilkit.port.errors import HardwareNotFound
from hilkit.port.model import is_chip_model, model_pin, pin_attrs
from hilkit.port.nic import Nic, NicError
from hilkit.port.pin import Pin
from hilkit.port.spi import SpiBus
from hilkit.port.usb import UsbTarget, load_backend
from hilkit.rig.netns import Netns, NetnsError
from hilkit.rig.schema import (
    BusSpec,
    PinSpec,
    Problem,
    Rig,
    RigError,
    display_path,
)

__all__ = ["BuiltRig", "build", "check_hardware", "resolve_factory"]

NETNS_PREFIX = "hkr"
_IP_TIMEOUT_S = 5.0

# <linux/gpio.h>: struct gpiochip_info { char name[32]; char label[32]; __u32 lines; }
_GPIOCHIP_INFO = struct.Struct("=32s32sI")
GPIO_GET_CHIPINFO_IOCTL = (2 << 30) | (_GPIOCHIP_INFO.size << 16) | (0xB4 << 8) | 0x01

SYSFS_USB = Path("/sys/bus/usb/devices")


@dataclass
class BuiltRig:
    """A rig, live. Everything here is torn down when ``build`` exits."""

    rig: Rig
    ns: Netns  # the private namespace holding the kernel peer
    device: Device  # what the stack adds (wrapped in a CaptureDevice if capturing)
    bus: SpiBus | None  # the SPI bus (or the model, for a simulated bus); None for tap
    model: Any  # the chip model of a simulated rig, else None
    pins: dict[str, Pin]  # "reset", "irq": as the rig names them
    kernel_ip: str  # the peer's (Linux kernel's) address, e.g. "192.168.7.1"
    kernel_prefix: int
    dut_ip: str  # hilkit's address, for Stack.link_add
    dut_netmask: str
    gateway: str | None
    peer_interface: str = ""  # the kernel's interface in ``ns`` (TAP or moved host NIC);
    # "" for a board peer, whose stack is on the board at ``kernel_ip``
    wire: Device | None = None  # the TAP a chip model puts its frames on
    driver_device: Device | None = None  # the driver's device, under any capture wrapper
    nic: Nic | None = None  # the driver's NIC registration; None for a driver without one
    usb: UsbTarget | None = None  # a USB NIC: the backend and what the driver looks for
    usb_bus: Any = None  # the virtual USB bus a device model is plugged into, else None
    usb_model: Any = None  # the device model plugged into it: the NIC's, or an FT232H's
    # A PPP rig (a serial bus, a slirp/pppd/remote peer): the peer's process (SlirpPeer,
    # PppdPeer) or None, how long LCP+IPCP took, and the slirp redirections that let the
    # namespace reach hilkit: (proto, hilkit's port) -> port on the namespace's 127.0.0.1.
    line_peer: Any = None
    bringup_ms: float | None = None
    redirs: Mapping[tuple[str, int], int] | None = None

    @property
    def point_to_point(self) -> bool:
        return self.rig.peer.point_to_point

    def kernel_mac(self) -> bytes:
        """The MAC address of the kernel's interface in the namespace."""
        return self.ns.mac_of(self.peer_interface)


# -- check_hardware -------------------------------------------------------------------


def check_hardware(rig: Rig, *, home: Netns | str | None = None) -> None:
    """Raise ``HardwareNotFound`` if anything the rig names is absent or cannot be opened.

    Looks, without opening a namespace or touching the chip: the spidev node,
    the FTDI USB device, the GPIO chips and lines, the host interface (in
    ``home``, the namespace it lives in: the machine's own when None), the
    TUN device for TAP peers. Returns within a few seconds. A ``python`` bus
    factory that cannot be imported raises ``RigError``.
    """
    _check_tools(rig)
    if rig.peer.point_to_point:
        _check_serial(rig)
    if rig.bus is not None:
        if rig.bus.kind == "spidev":
            assert rig.bus.device is not None
            _check_spidev(rig.bus.device)
        elif rig.bus.kind == "ftdi" and rig.bus.model is not None:
            _usb_backend(rig, rig.bus)  # a virtual USB bus: only its backend to load
        elif rig.bus.kind == "ftdi":
            assert rig.bus.url is not None
            _check_ftdi(rig.bus.url)
        elif rig.bus.kind == "python":
            resolve_factory(rig)
        elif rig.bus.kind == "usb":
            _check_usb(rig, rig.bus)
    for pin in rig.pins.values():
        if pin.kind == "gpiod":
            _check_gpiod(pin)
    if rig.peer.kind == "host":
        _check_host_interface(rig, home.name if isinstance(home, Netns) else home)


def _check_tools(rig: Rig) -> None:
    if shutil.which("ip") is None:
        raise HardwareNotFound("ip", "command not found", "install iproute2")
    if rig.peer.kind == "tap" and not os.path.exists("/dev/net/tun"):
        raise HardwareNotFound("/dev/net/tun", "not found", "load the tun module: modprobe tun")


_SERIAL_HINT = ("check the port: ls -l {port} (a Pi's UART: enable_uart=1 in config.txt, "
                "no serial console in cmdline.txt); your user needs the dialout group "
                "(id; sudo usermod -aG dialout $USER); who holds it: fuser -v {port}")


def _check_serial(rig: Rig) -> None:
    """A PPP rig: the serial port opens (a URL is left to the driver), the peer's program
    is installed, and pppd has ``/dev/ppp``."""
    peer = rig.peer
    if peer.kind == "slirp" and shutil.which("slirp") is None:
        raise HardwareNotFound("slirp", "not installed", "apt-get install -y slirp")
    ports = [p for p in (rig.bus.port if rig.bus is not None else None,
                         peer.port if peer.kind == "pppd" else None) if p]
    for port in ports:
        if "://" in port:
            continue
        hint = _SERIAL_HINT.format(port=port)
        if not os.path.exists(port):
            raise HardwareNotFound(port, "no such serial port", hint)
        try:
            fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise HardwareNotFound(port, f"cannot open the serial port: {e.strerror}",
                                   hint) from None
        os.close(fd)
    if peer.kind == "pppd":
        if shutil.which("pppd") is None:
            raise HardwareNotFound("pppd", "not installed", "apt-get install -y ppp")
        if not os.path.exists("/dev/ppp"):
            raise HardwareNotFound(
                "/dev/ppp", "not found: pppd needs the kernel's PPP driver",
                "load it: modprobe ppp_generic (check: ls -l /dev/ppp; lsmod | grep ppp); "
                "in a container, pass /dev/ppp through (--device /dev/ppp)")


def _check_node(path: str, what: str, absent_hint: str, perm_hint: str) -> None:
    if not os.path.exists(path):
        raise HardwareNotFound(path, "not found", absent_hint)
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        hint = perm_hint if e.errno in (errno.EACCES, errno.EPERM) else absent_hint
        raise HardwareNotFound(path, f"cannot open {what}: {e.strerror}", hint) from None
    os.close(fd)


def _check_spidev(path: str) -> None:
    m = re.fullmatch(r"/dev/spidev(\d+)\.(\d+)", path)
    absent = ("enable SPI (dtparam=spi=on in config.txt, then reboot); "
              "list the SPI devices: ls /dev/spidev*")
    if m is not None and m.group(1) != "0":
        absent = (f"enable SPI{m.group(1)} (dtoverlay=spi{m.group(1)}-1cs in config.txt); "
                  "list the SPI devices: ls /dev/spidev*")
    _check_node(path, "the SPI device", absent,
                "add the user to the spi group (or run as root): ls -l " + path)


def _chip_info(path: str) -> tuple[str, int]:
    """(label, lines) from the kernel's GPIO_GET_CHIPINFO ioctl; raises OSError."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        info = fcntl.ioctl(fd, GPIO_GET_CHIPINFO_IOCTL, bytes(_GPIOCHIP_INFO.size))
    finally:
        os.close(fd)
    _name, label_b, lines = _GPIOCHIP_INFO.unpack(info)
    return label_b.rstrip(b"\0").decode(errors="replace"), lines


def _chip_label(path: str) -> str | None:
    try:
        return _chip_info(path)[0]
    except OSError:
        return None


def _check_gpiod(pin: PinSpec) -> None:
    """The chip is found the way ``GpiodPin`` finds it, without libgpiod: by ioctl."""
    assert pin.chip is not None and pin.line is not None
    path = resolve_chip(pin.chip, _chip_label)
    try:
        _label, lines = _chip_info(path)
    except PermissionError as e:
        raise HardwareNotFound(path, f"cannot open the GPIO chip: {e.strerror}",
                               "add the user to the gpio group (or run as root): ls -l " + path
                               ) from None
    except OSError as e:
        raise HardwareNotFound(path, f"not a GPIO chip ({e.strerror})",
                               "list the chips: gpiodetect") from None
    if pin.line >= lines:
        raise HardwareNotFound(f"{path} line {pin.line}", f"the chip has only {lines} lines",
                               "check pins." + pin.name + ".line; list them: gpioinfo")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _check_ftdi(url: str) -> None:
    parsed = parse_ftdi_url(url)
    if isinstance(parsed, str):
        raise HardwareNotFound(url, parsed, "ftdi://ftdi:232h/1")
    vendor, product, serial = parsed.vendor, parsed.product, parsed.serial
    hint = ("plug in the FT232H; check: lsusb -d 0403: (an FT232H is 0403:6014); "
            "in a container, pass the USB device through")
    if not SYSFS_USB.is_dir():
        raise HardwareNotFound(url, "no USB bus visible (/sys/bus/usb is missing)", hint)
    matches: list[Path] = []
    for dev in sorted(SYSFS_USB.iterdir()):
        vid, pid = _read(dev / "idVendor"), _read(dev / "idProduct")
        if not vid or not pid:
            continue
        if vendor is not None and int(vid, 16) != vendor:
            continue
        if product is not None and int(pid, 16) != product:
            continue
        matches.append(dev)
    if serial is not None:
        if serial.isdigit():
            matches = matches[int(serial):int(serial) + 1]
        elif ":" in serial:
            bus_s, _, addr_s = serial.partition(":")
            matches = [d for d in matches if _read(d / "busnum") == str(int(bus_s, 16))
                       and _read(d / "devnum") == str(int(addr_s, 16))]
        else:
            matches = [d for d in matches if _read(d / "serial") == serial]
    if not matches:
        want = f"{vendor or 0:04x}:{product:04x}" if product is not None else f"{vendor or 0:04x}:*"
        raise HardwareNotFound(url, f"no USB device {want}"
                               + (f" with serial {serial}" if serial else "") + " found", hint)
    _check_usb_node(matches[0], url)
    try:
        import usb.backend.libusb1 as libusb1  # type: ignore[import-untyped]
    except ImportError:
        raise HardwareNotFound(url, "pyusb is not installed", "pip install pyftdi") from None
    if libusb1.get_backend() is None:
        raise HardwareNotFound(url, "libusb-1.0 not found", "apt install libusb-1.0-0")


def _usb_hint(spec: BusSpec) -> str:
    if spec.usb_id is not None:
        return (f"plug the device in; check: lsusb -d {spec.usb_id[0]:04x}:{spec.usb_id[1]:04x}"
                " (in a container, pass the USB device through)")
    return "plug the device in; list what is there: lsusb -t"


def _check_usb(rig: Rig, spec: BusSpec) -> None:
    """A USB device as the rig names it: a simulated one needs only its backend to load;
    a real one behind libusb is looked for in sysfs (present, readable), then libusb."""
    what = spec.usb_where()
    if spec.model is not None or (spec.backend not in (None, "usb.backend.libusb1")):
        _usb_backend(rig, spec)  # RigError on bus.backend if it will not load
        if spec.model is None:
            _check_usb_enumerates(rig, spec)
        return
    hint = _usb_hint(spec)
    if not SYSFS_USB.is_dir():
        raise HardwareNotFound(what, "no USB bus visible (/sys/bus/usb is missing)", hint)
    matches = [d for d in sorted(SYSFS_USB.iterdir()) if _sysfs_usb_matches(d, spec)]
    if not matches:
        raise HardwareNotFound(what, "no such USB device found", hint)
    _check_usb_node(matches[0], what)
    try:
        load_backend(None)
    except LookupError as e:
        raise HardwareNotFound(what, str(e), "apt install libusb-1.0-0") from None


def _check_usb_node(dev: Path, what: str) -> None:
    """The sysfs device ``dev``'s node in /dev/bus/usb can be opened, else the udev rule."""
    busnum, devnum = _read(dev / "busnum"), _read(dev / "devnum")
    if not (busnum.isdigit() and devnum.isdigit()):
        return
    node = f"/dev/bus/usb/{int(busnum):03d}/{int(devnum):03d}"
    if os.path.exists(node) and not os.access(node, os.R_OK | os.W_OK):
        vid, pid = _read(dev / "idVendor"), _read(dev / "idProduct")
        raise HardwareNotFound(
            what, f"{node}: permission denied",
            f'add a udev rule: SUBSYSTEM=="usb", ATTR{{idVendor}}=="{vid}", '
            f'ATTR{{idProduct}}=="{pid}", MODE="0660", GROUP="plugdev" '
            "(in /etc/udev/rules.d/, then udevadm control --reload), or run as root")


def _sysfs_usb_matches(dev: Path, spec: BusSpec) -> bool:
    vid, pid = _read(dev / "idVendor"), _read(dev / "idProduct")
    if not vid or not pid:
        return False  # an interface directory, not a device
    if spec.usb_id is not None and (int(vid, 16), int(pid, 16)) != spec.usb_id:
        return False
    if spec.serial is not None and _read(dev / "serial") != spec.serial:
        return False
    return spec.port is None or dev.name == spec.port


def _usb_backend(rig: Rig, spec: BusSpec) -> Any:
    """The pyusb backend the rig names (a module with ``get_backend()``)."""
    try:
        return load_backend(spec.backend)
    except LookupError as e:
        raise _factory_error(rig, str(e), "bus.backend") from None
    except Exception as e:  # another package's code
        raise _factory_error(rig, f"{spec.backend}.get_backend() raised "
                                  f"{type(e).__name__}: {e}", "bus.backend") from None


def _check_usb_enumerates(rig: Rig, spec: BusSpec) -> None:
    """Through a backend other than libusb: ask pyusb whether the device is there."""
    import usb.core  # type: ignore[import-untyped]

    target = _usb_target(spec, _usb_backend(rig, spec))
    try:
        found = [d for d in usb.core.find(find_all=True, backend=target.backend)
                 if target.matches(d)]
    except Exception as e:
        raise HardwareNotFound(spec.usb_where(), f"the backend {spec.backend} failed to "
                                                 f"enumerate: {type(e).__name__}: {e}",
                               _usb_hint(spec)) from None
    if not found:
        raise HardwareNotFound(spec.usb_where(), f"no such USB device on {spec.backend}",
                               _usb_hint(spec))


def _usb_target(spec: BusSpec, backend: Any) -> UsbTarget:
    vendor, product = spec.usb_id if spec.usb_id is not None else (None, None)
    return UsbTarget(backend=backend, vendor=vendor, product=product, serial=spec.serial,
                     port_path=spec.port, backend_module=spec.backend)


def _check_host_interface(rig: Rig, home: str | None) -> None:
    ifname = rig.peer.interface
    argv = ["ip", "-j", "link", "show", "dev", ifname]
    res = _ip(argv if home is None else ["ip", "-n", home, *argv[1:]])
    if res.returncode != 0:
        where = "this machine" if home is None else f"namespace {home}"
        stale = _stale_holder(ifname)
        hint = (f"it is in namespace {stale}, left by an interrupted run: "
                f"ip -n {stale} link set dev {ifname} netns 1" if stale else
                "list the interfaces: ip link; set peer.interface to the NIC cabled to the DUT")
        raise HardwareNotFound(ifname, f"no such network interface on {where}", hint)
    _refuse_uplink(ifname, home)


def _refuse_uplink(ifname: str, home: str | None) -> None:
    argv = ["ip", "-j", "route", "show", "default"]
    res = _ip(argv if home is None else ["ip", "-n", home, *argv[1:]])
    try:
        routes = json.loads(res.stdout or "[]")
    except json.JSONDecodeError:
        routes = []
    if any(r.get("dev") == ifname for r in routes):
        raise HardwareNotFound(
            ifname, "carries this machine's default route; refusing to move it into the "
                    "rig's namespace", "set peer.interface to a NIC used only for the DUT")
    # A move into another namespace drops the NIC's addresses, routes and bridge/bond
    # membership, which moving back cannot restore: take only a NIC that has none.
    argv = ["ip", "-j", "addr", "show", "dev", ifname]
    res = _ip(argv if home is None else ["ip", "-n", home, *argv[1:]])
    try:
        info = json.loads(res.stdout or "[]")
    except json.JSONDecodeError:
        info = []
    for link in info:
        addrs = [a for a in link.get("addr_info", []) if a.get("scope") != "link"]
        if addrs or link.get("master"):
            what = "has addresses" if addrs else f"belongs to {link.get('master')}"
            raise HardwareNotFound(
                ifname, f"{what}; moving it into the rig's namespace would lose that",
                f"give the DUT a NIC of its own: ip addr flush dev {ifname}, or pick another")


def _stale_holder(ifname: str) -> str | None:
    res = _ip(["ip", "-j", "netns", "list"])
    try:
        names = [n["name"] for n in json.loads(res.stdout or "[]")]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    for name in names:
        if name.startswith(f"{NETNS_PREFIX}-") and _ip(
                ["ip", "-n", name, "link", "show", "dev", ifname]).returncode == 0:
            return str(name)
    return None


def _ip(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=_IP_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", "timed out")


# -- build ------------------------------------------------------------------------------


def _factory_error(rig: Rig, problem: str, key: str = "bus.factory") -> RigError:
    return RigError(display_path(rig.path), [Problem(key, problem)])


def resolve_factory(rig: Rig) -> Callable[..., Any]:
    """The callable a ``python`` bus names; ``RigError`` if it cannot be imported.

    Importing runs another package's code: whatever it raises is that
    package's problem, reported against ``bus.factory``.
    """
    assert rig.bus is not None and rig.bus.factory is not None
    module_name, _, attr = rig.bus.factory.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise _factory_error(rig, f"cannot import module {module_name!r}: {e}") from None
    except Exception as e:
        raise _factory_error(rig, f"importing module {module_name!r} failed: "
                                  f"{type(e).__name__}: {e}") from None
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise _factory_error(rig, f"module {module_name!r} has no {attr!r}") from None
    if not callable(obj):
        raise _factory_error(rig, f"{rig.bus.factory} is not callable")
    return obj  # type: ignore[no-any-return]


def _call_factory(rig: Rig, factory: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``factory(**kwargs)``; what it raises becomes a ``RigError`` on ``bus.factory``.

    A lab's bridge or model failing to open is "the rig cannot be run", told
    the same way by every command, never a traceback. Hardware errors keep
    their own type (they say what to plug in).
    """
    try:
        return factory(**kwargs)
    except (HardwareNotFound, RigError):
        raise
    except Exception as e:
        assert rig.bus is not None
        raise _factory_error(rig, f"{rig.bus.factory} raised {type(e).__name__}: {e}") from None


@contextmanager
def build(
    rig: Rig,
    *,
    capture: str | os.PathLike[str] | None = None,
    clock: Clock | None = None,
    home: Netns | str | None = None,
) -> Iterator[BuiltRig]:
    """Make the rig live; tear it all down on exit, whatever happens in the body.

    ``capture``: a pcapng path recording the device's frames (the yielded
    ``device`` is then a ``CaptureDevice``). ``clock``: the chip model's clock.
    ``home``: the namespace (a ``Netns`` or the name of one in /run/netns) a
    host peer's interface lives in and returns to: the process's own when None;
    tests pass a namespace standing in for the host.

    Raises ``HardwareNotFound`` (checked first, before anything is touched),
    ``RigError`` for a factory that cannot be used, ``NetnsError`` when
    ``ip`` fails, and whatever a driver raises on probe.
    """
    check_hardware(rig, home=home)
    clock = clock or MonotonicClock()
    with ExitStack() as es:
        ns = Netns(NETNS_PREFIX)
        es.callback(_shielded, lambda: _delete_netns(ns))
        ns.create()
        peer, dut = rig.peer, rig.dut
        in_netns_driver = rig.bus is None and peer.kind == "tap"
        wire: Device | None = None

        if peer.point_to_point:
            yield _build_ppp(es, rig, ns, clock, capture)
            return
        if peer.kind == "host":
            es.enter_context(_sigterm_unwinds())  # a cancelled CI job still brings it home
            _move_host_interface(es, ns, peer.interface, rig.mtu,
                                 home.name if isinstance(home, Netns) else home)
        elif not in_netns_driver and peer.kind == "tap":
            from hilkit.drivers.tap import TapDevice

            wire_tap = ns.call(lambda: TapDevice(peer.interface, mtu=rig.mtu))
            es.callback(wire_tap.close)
            wire = wire_tap

        bus: SpiBus | None = None
        model: Any = None
        usb: UsbTarget | None = None
        usb_bus: Any = None
        usb_model: Any = None
        if rig.bus is not None and rig.bus.kind == "usb":
            usb, model, usb_bus = _make_usb(es, rig, rig.bus, wire, clock)
            usb_model = model if usb_bus is not None else None
        elif rig.bus is not None:
            bus, model, usb_bus, usb_model = _make_bus(es, rig, rig.bus, wire, clock)
        pins = _make_pins(es, rig, bus, model)

        device = _make_driver(es, rig, ns, bus or usb, pins, in_netns_driver, clock)
        if peer.kind == "tap":
            ns.ip("link", "set", "dev", peer.interface, "mtu", str(rig.mtu))
        if peer.kind != "board":  # a board's own stack has its address already
            ns.ip("addr", "add", peer.address, "dev", peer.interface)
            ns.ip("link", "set", "dev", peer.interface, "up")

        driver_device = device
        device = _captured(es, device, capture)

        yield BuiltRig(
            rig=rig, ns=ns, device=device, bus=bus, model=model, pins=pins,
            kernel_ip=peer.ip, kernel_prefix=peer.prefix,
            dut_ip=dut.ip, dut_netmask=dut.netmask, gateway=dut.gateway,
            peer_interface=peer.interface, wire=wire, driver_device=driver_device,
            nic=_driver_nic(rig), usb=usb, usb_bus=usb_bus, usb_model=usb_model,
        )


def _captured(es: ExitStack, device: Device, capture: str | os.PathLike[str] | None) -> Device:
    """``device`` wrapped to write every frame to the pcapng file ``capture`` (if any);
    both closed when the rig comes down."""
    if capture is None:
        return device
    from hilkit.port.capture import CaptureDevice, PcapngWriter

    writer = PcapngWriter(os.fspath(capture))
    es.callback(writer.close)
    wrapped = CaptureDevice(device, writer)
    es.callback(wrapped.close)
    return wrapped


def _move_host_interface(es: ExitStack, ns: Netns, ifname: str, mtu: int,
                         home: str | None) -> None:
    """Move ``ifname`` from ``home`` into ``ns``; register its return on ``es``."""
    home_ip = ["ip"] if home is None else ["ip", "-n", home]
    # Back to the namespace it came from: this process's (its main thread never
    # changes namespace), or the injected home.
    home_target = str(os.getpid()) if home is None else home
    info = json.loads(_run([*home_ip, "-j", "link", "show", "dev", ifname]))[0]
    was_up = "UP" in info.get("flags", [])
    old_mtu = int(info.get("mtu", 0))

    def move_back() -> None:
        if _ip(["ip", "-n", ns.name, "link", "show", "dev", ifname]).returncode != 0:
            return  # never moved, or already back
        if old_mtu and old_mtu != mtu:
            _ip(["ip", "-n", ns.name, "link", "set", "dev", ifname, "mtu", str(old_mtu)])
        _ip(["ip", "-n", ns.name, "addr", "flush", "dev", ifname])
        _run(["ip", "-n", ns.name, "link", "set", "dev", ifname, "netns", home_target])
        if was_up:  # leaving a namespace takes an interface down; restore what it was
            _ip([*home_ip, "link", "set", "dev", ifname, "up"])

    es.callback(_shielded, move_back)
    _run([*home_ip, "link", "set", "dev", ifname, "netns", ns.name])
    if old_mtu != mtu:
        ns.ip("link", "set", "dev", ifname, "mtu", str(mtu))


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While a host NIC is away, SIGTERM raises SystemExit so the ``finally`` blocks run.

    Only in the main thread and only if nobody else handles SIGTERM; the old
    disposition is restored on exit. (SIGKILL cannot be caught: ``check_hardware``
    then finds the NIC in the stale namespace and says how to bring it back.)
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def unwind(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _delete_netns(ns: Netns) -> None:
    ns.delete()
    if os.path.exists(ns.path):  # created, but interrupted before ``Netns`` knew it
        _ip(["ip", "netns", "delete", ns.name])


def _shielded(fn: Callable[[], None], attempts: int = 5) -> None:
    """Run ``fn`` to the end even if Ctrl-C arrives meanwhile; re-raise the Ctrl-C after."""
    interrupted: KeyboardInterrupt | None = None
    for _ in range(attempts):
        try:
            fn()
            break
        except KeyboardInterrupt as e:
            interrupted = e
    if interrupted is not None:
        raise interrupted


def _run(argv: list[str]) -> str:
    res = _ip(argv)
    if res.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {res.stderr.strip() or res.returncode}")
    return res.stdout


def _make_bus(es: ExitStack, rig: Rig, spec: BusSpec, wire: Device | None,
              clock: Clock) -> tuple[SpiBus, Any, Any, Any]:
    """(the bus, the chip model or None, the virtual USB bus and the FT232H model on it when
    an ftdi bus's USB is made virtual, else None, None)."""
    bus: Any
    model: Any = None
    vbus: Any = None
    bridge: Any = None
    if spec.kind == "spidev":
        bus = _load("hilkit.bus.spidev", "SpidevBus")(spec.device, spec.speed_hz, spec.mode)
    elif spec.kind == "ftdi":
        if spec.model is not None:  # the USB made virtual: an FT232H model, the chip on it
            model = _make_model(rig, spec, wire, clock)
            vbus, bridge = _plug_ft232h(es, rig, spec, model)
        bus = _load("hilkit.bus.ftdi", "FtdiSpiBus")(
            spec.url, spec.speed_hz, spec.cs_pin, spec.mode, timeout_ms=spec.timeout_ms)
    elif spec.kind == "sim":
        model = bus = _make_model(rig, spec, wire, clock)
    else:
        factory = resolve_factory(rig)
        kwargs: dict[str, Any] = dict(spec.params)
        params = _parameters(factory)
        if wire is not None and "wire" in params:
            kwargs["wire"] = wire
        if "clock" in params:
            kwargs["clock"] = clock
        bus = _call_factory(rig, factory, kwargs)
        if is_chip_model(bus):  # pins or resets of its own: the chip model contract
            model = bus
    if callable(getattr(bus, "close", None)):
        es.callback(bus.close)
    if not isinstance(bus, SpiBus):
        raise RigError(display_path(rig.path), [Problem(
            {"python": "bus.factory", "sim": "bus.model"}.get(spec.kind, "bus.kind"),
            f"{type(bus).__name__} is not an SpiBus (needs counters, transfer, "
            f"transfer_batch, close)")])
    return bus, model, vbus, bridge


def _make_usb(es: ExitStack, rig: Rig, spec: BusSpec, wire: Device | None,
              clock: Clock) -> tuple[UsbTarget, Any, Any]:
    """A USB bus: (what the driver looks for, the device model or None, the virtual bus
    it is plugged into or None). The model is unplugged when the rig comes down."""
    backend = _usb_backend(rig, spec)
    model: Any = None
    vbus: Any = None
    if spec.model is not None:
        vbus = _virtual_bus(rig, spec, f"the {spec.model} model")
        model = _make_model(rig, spec, wire, clock)
        es.callback(model.close)
        vbus.plug(model)
        es.callback(_shielded, lambda: vbus.unplug(model) if vbus.plugged(model) else None)
    return _usb_target(spec, backend), model, vbus


def _virtual_bus(rig: Rig, spec: BusSpec, what: str) -> Any:
    """The bus of ``spec.backend`` that models plug into (its module's ``default_bus()``)."""
    _usb_backend(rig, spec)  # RigError on bus.backend if it will not load
    default_bus = getattr(importlib.import_module(spec.backend or ""), "default_bus", None)
    if not callable(default_bus):
        raise _factory_error(rig, f"{spec.backend} has no default_bus() to plug {what} into",
                             "bus.backend")
    return default_bus()


def _plug_ft232h(es: ExitStack, rig: Rig, spec: BusSpec, chip: Any) -> tuple[Any, Any]:
    """An FT232H model on the virtual USB bus with ``chip`` (an SPI chip model) on its pins,
    and pyftdi pointed at that bus for the rig's lifetime (``docs/hardware/ft232h.md``): the
    ``ftdi`` bus code and pyftdi then run as on hardware. The rig's ftdi pins reach the
    chip's /RESET and /INT lines through the FT232H's GPIO bits. (the bus, the model)"""
    from hilkit.bus.ftdi import parse_url
    from hilkit.sim.usb.ft232h import Ft232hModel, pyftdi_backend

    vbus = _virtual_bus(rig, spec, "the FT232H model")
    reset = rig.pins.get("reset")
    irq = rig.pins.get("irq")
    reset_pin = getattr(chip, "reset_pin", None)
    int_pin = getattr(chip, "int_pin", None) or getattr(chip, "irq_pin", None)
    url = parse_url(spec.url or "")
    serial = url.serial if not isinstance(url, str) and url.serial and not (
        url.serial.isdigit() or ":" in url.serial) else "FT0001"
    nic = _driver_nic(rig)
    try:
        ft = Ft232hModel(
            serial, spi_slave=chip, cs_pin=spec.cs_pin or 3,
            spi_max_hz=nic.spi_max_hz if nic is not None else None,
            reset_line=(reset.bit, reset_pin.set) if (
                reset is not None and reset.kind == "ftdi" and reset.bit is not None
                and reset_pin is not None) else None,
            int_line=(irq.bit, int_pin.get) if (
                irq is not None and irq.kind == "ftdi" and irq.bit is not None
                and int_pin is not None) else None,
        )
    except ValueError as e:  # a serial in the URL no FT232H could carry, say
        raise _factory_error(rig, f"the FT232H model cannot be made: {e}", "bus.url") from None
    es.enter_context(pyftdi_backend(spec.backend or ""))
    vbus.plug(ft)
    es.callback(_shielded, lambda: vbus.unplug(ft, close=True) if vbus.plugged(ft) else None)
    return vbus, ft


def _make_model(rig: Rig, spec: BusSpec, wire: Device | None, clock: Clock) -> Any:
    """The chip model registered by the NIC ``bus.model`` names; ``RigError`` on bus.model.

    Validation found the NIC and its option classes; what can still go wrong is the
    registration's own code (an import, a constructor), told like a bus factory's.
    """
    from hilkit.drivers import find_nic

    assert spec.model is not None
    try:
        nic = find_nic(spec.model)
        if nic is None:
            raise NicError(f"no NIC {spec.model!r} is registered")
        return nic.make_model(wire=wire, clock=clock, seed=spec.seed or 0,
                              faults=spec.faults, timing=spec.timing, options=spec.options)
    except (HardwareNotFound, RigError):
        raise
    except Exception as e:
        problem = str(e) if isinstance(e, NicError) else f"{type(e).__name__}: {e}"
        raise _factory_error(rig, f"the {spec.model} model cannot be made: {problem}",
                             "bus.model") from None


def _driver_nic(rig: Rig) -> Nic | None:
    """The registration of the rig's driver, for the runner and the suites."""
    from hilkit.drivers import find_nic

    try:
        return find_nic(rig.driver.name)
    except NicError:  # a driver from hilkit.drivers whose NIC entry is broken: no figures
        return None


def _make_pins(es: ExitStack, rig: Rig, bus: SpiBus | None, model: Any) -> dict[str, Pin]:
    pins: dict[str, Pin] = {}
    for name, spec in rig.pins.items():
        pin: Any
        if spec.kind == "gpiod":
            pin = _gpiod_pin(_load("hilkit.bus.gpio", "GpiodPin"), spec)
        elif spec.kind == "ftdi":
            pin = _load("hilkit.bus.ftdi", "FtdiPin")(bus, spec.bit, spec.active_low)
        else:
            pin = model_pin(model, name)  # logical: active-low lines come inverted
            if pin is None:
                attrs = " or ".join(pin_attrs(name))
                where = ("the bus is no chip model" if model is None else
                         f"the chip model {type(model).__name__} has no {attrs}")
                raise RigError(display_path(rig.path), [Problem(
                    f"pins.{name}.kind",
                    f"{where}: a sim pin is a chip model's {attrs} "
                    f'(hilkit.port.model.ChipModel, docs/porting.md "Chip models")')])
            pins[name] = pin
            continue  # the model owns its pins
        es.callback(pin.close)
        pins[name] = pin
    return pins


def _gpiod_pin(cls: Callable[..., Any], spec: PinSpec) -> Any:
    """A GpiodPin as the driver needs it: reset an output (released), irq an input with edges."""
    if spec.name == "reset":
        return cls(spec.chip, spec.line, direction="out", active_low=spec.active_low,
                   initial=False, bias=spec.bias)
    from hilkit.port.pin import Edge

    return cls(spec.chip, spec.line, direction="in", active_low=spec.active_low,
               edge=Edge.BOTH, bias=spec.bias)


def _load(module: str, attr: str) -> Any:
    """``module.attr``, imported only when a rig needs it."""
    return getattr(importlib.import_module(module), attr)


def _parameters(fn: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}


def _make_driver(es: ExitStack, rig: Rig, ns: Netns, bus: SpiBus | UsbTarget | None,
                 pins: dict[str, Pin],
                 in_netns: bool, clock: Clock | None = None) -> Device:
    from hilkit.drivers import load_driver

    factory = load_driver(rig.driver.name)
    params = _parameters(factory)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs: dict[str, Any] = dict(rig.driver.options)
    if "mtu" in params or takes_any:
        kwargs.setdefault("mtu", rig.mtu)
    if "clock" in params:  # the same clock as the chip model's
        kwargs["clock"] = clock
    for name, pin in pins.items():
        kwargs[name] = pin
    device: Device
    if bus is not None:
        device = factory(bus, **kwargs)
    elif in_netns:  # a driver that is a kernel interface (tap, tun): born inside the namespace
        ifname = rig.peer.interface
        device = ns.call(lambda: factory(ifname, **kwargs))
    else:
        device = factory(**kwargs)
    es.callback(device.close)
    return device


# -- PPP rigs: a serial line with slirp, pppd or a remote peer at the far end ----------------

# hilkit's fixed ports the suites listen on (udp echo, the tcp/throughput/recovery suites'
# PORT constants), and where slirp forwards them from on the namespace's 127.0.0.1 ("redir",
# slirp(1)): the kernel side reaches hilkit's port P at 127.0.0.1:REDIR_BASE + P.
SLIRP_REDIRS: tuple[tuple[str, int], ...] = (
    ("udp", 7), ("tcp", 7), ("tcp", 5001), ("tcp", 5002), ("tcp", 5003), ("tcp", 5004),
    ("udp", 5002),
)
REDIR_BASE = 20000
BRINGUP_TIMEOUT_S = 10.0  # LCP + IPCP (+ PAP/CHAP) against a peer that is there
CHAT_ALLOWANCE_S = 60.0  # ... plus a modem's dialogue, when the rig has one


class PppdPeer:
    """The host's pppd in the rig's namespace on ``port`` (the far end of a null-modem
    cable from the DUT's port): it gives the DUT ``remote`` and is ``local`` itself."""

    def __init__(self, ns: Netns, port: str, baudrate: int, rtscts: bool, local: str,
                 remote: str, mtu: int, auth: str, secrets: Mapping[str, str]) -> None:
        self.ns = ns
        self.argv = ["pppd", port, str(baudrate), "nodetach", "local", "noipdefault",
                     "nodefaultroute", "noproxyarp", "persist", "maxfail", "0",
                     "mtu", str(mtu), "mru", str(mtu), f"{local}:{remote}",
                     "crtscts" if rtscts else "nocrtscts"]
        self.secrets = dict(secrets)
        self.auth = auth
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = list(self.argv)
        argv.append("noauth")  # pppd's secrets are /etc/ppp's: the schema refuses peer.auth
        self.proc = self.ns.popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _ppp_secret(rig: Rig) -> str | None:
    """The rig's PPP password: ``driver.password``, or the environment variable
    ``driver.password_env`` names (``RigError`` naming the variable, never a value)."""
    opts = rig.driver.options
    if "password" in opts:
        pw = opts["password"]
        return pw.reveal() if hasattr(pw, "reveal") else str(pw)
    env = opts.get("password_env")
    if env is None:
        return None
    value = os.environ.get(str(env))
    if value is None:
        raise RigError(display_path(rig.path), [Problem(
            "driver.password_env", f"the environment variable {env} is not set (export it "
                                   f"with the PPP password before the run)")])
    return value


def _build_ppp(es: ExitStack, rig: Rig, ns: Netns, clock: Clock,
               capture: str | os.PathLike[str] | None) -> BuiltRig:
    """The line's far end (slirp on a pty in ``ns``, pppd in ``ns`` on its port, or a
    remote peer that is there already), the PPP driver on the DUT's end, and the link up:
    LCP and IPCP done (what IPCP gave is ``link_config()``, which the stack applies)."""
    import time

    from hilkit.drivers import load_driver
    from hilkit.drivers.ppp.auth import Credentials
    from hilkit.drivers.ppp.chat import ChatScript
    from hilkit.drivers.ppp.link import PppConfig

    peer, bus = rig.peer, rig.bus
    baud = bus.baudrate if bus is not None and bus.baudrate else 115200
    rtscts = bool(bus.rtscts) if bus is not None else False
    opts = dict(rig.driver.options)
    user = opts.pop("username", None)
    secret = _ppp_secret(rig)
    opts.pop("password", None)
    opts.pop("password_env", None)
    creds = Credentials.of(user, secret) if user is not None and secret is not None else None
    cfg: dict[str, Any] = {k: opts.pop(k) for k in ("vj", "echo_interval_ms", "echo_failure")
                           if k in opts}
    chat_spec = opts.pop("chat", None)
    chat = ChatScript.parse(chat_spec) if chat_spec is not None else None
    line_peer: Any = None
    redirs: dict[tuple[str, int], int] | None = None
    if peer.kind == "slirp":
        from hilkit.rig.slirp import SlirpPeer

        redirs = {(proto, p): REDIR_BASE + p for proto, p in SLIRP_REDIRS}
        words = [f"redir {proto} {host} {p}" for (proto, p), host in redirs.items()]
        auth = None if peer.auth == "none" else peer.auth
        if auth is not None and creds is None:
            raise RigError(display_path(rig.path), [Problem(
                "driver.username", f"missing: peer.auth = {auth!r} needs a username and "
                                   f"password for slirp to check")])
        line_peer = es.enter_context(SlirpPeer(
            ns, baudrate=baud, extra_args=words, auth=auth,  # type: ignore[arg-type]
            secrets={user: secret} if auth is not None and user and secret else None))
        port = line_peer.port
        cfg.setdefault("address", None)
    else:
        assert bus is not None and bus.port is not None
        port = bus.port
        if peer.kind == "pppd":
            assert peer.port is not None
            pppd = PppdPeer(ns, peer.port, baud, rtscts, peer.ip, rig.dut.ip, rig.mtu,
                            peer.auth, {user: secret} if user and secret else {})
            es.callback(pppd.stop)
            pppd.start()
            line_peer = pppd
    factory = load_driver(rig.driver.name)
    params = _parameters(factory)
    kwargs: dict[str, Any] = {k: v for k, v in opts.items()}
    kwargs.setdefault("mtu", rig.mtu)
    if "clock" in params:
        kwargs["clock"] = clock
    if peer.kind == "slirp" and "default_route" in params:
        kwargs.setdefault("default_route", False)  # hilkit sends only to 10.0.2.2
    config = PppConfig(credentials=creds, **cfg)
    device: Device = factory(port, baudrate=baud, rtscts=rtscts, config=config, chat=chat,
                             **kwargs)
    es.callback(device.close)
    limit = BRINGUP_TIMEOUT_S + (CHAT_ALLOWANCE_S if chat is not None else 0.0)
    t0 = time.monotonic()
    while not device.link_up and time.monotonic() - t0 < limit:
        device.poll(64)
        time.sleep(0.002)
    if not device.link_up:
        phase = getattr(getattr(device, "phase", None), "name", "?")
        far = {"slirp": "slirp", "pppd": f"pppd on {getattr(peer, 'port', '?')}",
               "remote": f"the remote peer on {port}"}[peer.kind]
        detail = ""
        if peer.kind == "slirp" and line_peer is not None:
            detail = "; slirp said: " + " | ".join(line_peer.output().splitlines()[-4:])
        raise HardwareNotFound(
            f"{rig.driver.name} link on {port}",
            f"LCP/IPCP did not come up with {far} within {limit:g} s (phase {phase})"
            + detail,
            "check the cable, the baud rate (bus.baudrate), the peer's authentication "
            "(peer.auth, driver.username/password) and the chat script")
    bringup_ms = (time.monotonic() - t0) * 1000.0
    lc_fn = getattr(device, "link_config", None)
    lc = lc_fn() if callable(lc_fn) else None
    dut_ip = lc.address if lc is not None else rig.dut.ip
    kernel_ip = (lc.peer if lc is not None and lc.peer and peer.kind != "slirp"
                 else peer.ip)
    driver_device = device
    device = _captured(es, device, capture)
    return BuiltRig(
        rig=rig, ns=ns, device=device, bus=None, model=None, pins={},
        kernel_ip=kernel_ip, kernel_prefix=32, dut_ip=dut_ip, dut_netmask="255.255.255.255",
        gateway=None, peer_interface="", wire=None, driver_device=driver_device,
        nic=_driver_nic(rig), line_peer=line_peer, bringup_ms=bringup_ms, redirs=redirs)

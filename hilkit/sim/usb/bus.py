"""A virtual USB bus: host controller, hub ports and USB 2.0 device framework in one
(docs/hardware/usb.md).

Device models (``hilkit.sim.usb.device``) are plugged into ports; pyusb drives them
through ``VirtualUsbBus.backend``, an ``IBackend``. The bus does what the host and
the device framework do -- addresses, standard requests (USB 2.0 §9.4), splitting
transfers into packets (§5.8.3), halts, NAK retries, timeouts -- and accounts every
transaction at the device's speed: the bus-time model of docs/hardware/usb.md
("Bus time") both paces transfers in real time and feeds ``stats``.

Locks: the bus lock guards the bus's own bookkeeping and is held only briefly;
model methods run under ``model.lock``, taken after the bus lock when both are
needed and never the other way round; nothing waits holding either.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Final

import usb.backend  # type: ignore[import-untyped]
import usb.core  # type: ignore[import-untyped]

from hilkit.sim.usb import descriptors as D
from hilkit.sim.usb.device import Nak, Setup, Speed, Stall, UsbDeviceModel
from hilkit.sim.usb.libusb import (
    ERROR_BUSY,
    ERROR_INVALID_PARAM,
    ERROR_IO,
    ERROR_NO_DEVICE,
    ERROR_NOT_FOUND,
    ERROR_OVERFLOW,
    ERROR_PIPE,
    ERROR_TIMEOUT,
    ConfigDesc,
    DeviceDesc,
    EndpointDesc,
    InterfaceDesc,
    fresh_interface,
    parse_configuration,
    parse_device,
    usb_error,
)

__all__ = [
    "FRAME_BYTES", "OVERHEAD_BYTES", "STATS_KEYS", "VirtualBackend", "VirtualUsbBus",
    "bulk_transactions_per_frame", "ceiling_bps", "transaction_time_s",
]

# -- the bus-time model (docs/hardware/usb.md, "Bus time") -------------------------------------

# Time is counted in ticks of 1/480 MHz, a high-speed bit time: every speed's bit time
# and frame are whole ticks, so accounting is exact and does not drift.
_TICK_HZ: Final = 480_000_000
_BIT_TICKS: Final = {Speed.LOW: 320, Speed.FULL: 40, Speed.HIGH: 1}
# USB 2.0 §8.4.3.1 / §5.8.4: a 1 ms frame at low and full speed, a 125 µs microframe at high
_FRAME_TICKS: Final = {Speed.LOW: 480_000, Speed.FULL: 480_000, Speed.HIGH: 60_000}
#: bytes of bus time in one (micro)frame: 1 ms at 1.5 / 12 Mb/s, 125 µs at 480 Mb/s
FRAME_BYTES: Final = {s: _FRAME_TICKS[s] // (8 * _BIT_TICKS[s]) for s in Speed}
#: protocol overhead of one non-isochronous transaction beyond its payload (USB 2.0 §5.8.4,
#: Tables 5-9 and 5-10): token + data packet + handshake, with SYNC, PID, address/endpoint
#: and CRC fields, EOPs and inter-packet gaps. Low speed uses the full-speed figure.
OVERHEAD_BYTES: Final = {Speed.LOW: 13, Speed.FULL: 13, Speed.HIGH: 55}
_SETUP_BYTES: Final = 8  # USB 2.0 §9.3: the SETUP packet's data

#: the keys of ``VirtualUsbBus.stats`` (each described in docs/hardware/usb.md, "Stats")
STATS_KEYS: Final = (
    "usb_transfers_in", "usb_transfers_out", "usb_packets_in", "usb_packets_out",
    "usb_zlps_in", "usb_zlps_out", "usb_payload_bytes_in", "usb_payload_bytes_out",
    "usb_bus_bytes_in", "usb_bus_bytes_out", "usb_control_transfers",
    "usb_control_bytes_in", "usb_control_bytes_out", "usb_control_bus_bytes",
    "usb_bus_time_s", "usb_stalls", "usb_timeouts", "usb_overflows", "usb_nodev",
    "usb_dropped_in", "usb_duplicated_in",
    # the bulk pipes alone (the data of a network function, without its notifications)
    "usb_bulk_transfers_in", "usb_bulk_transfers_out", "usb_bulk_zlps_in", "usb_bulk_zlps_out",
    "usb_bulk_payload_bytes_in", "usb_bulk_payload_bytes_out", "usb_bulk_bus_bytes_in",
    "usb_bulk_bus_bytes_out",
)

_PACE_DEBT_S: Final = 1e-3  # sleep only when the bus is this far behind (docs: "Pacing")
_WAIT_SLICE_S: Final = 0.25  # longest single model.wait: re-check unplug even if not woken
_NAK_RETRY_S: Final = 0.002  # an OUT packet refused with Nak is offered again this soon
_FIRST_ADDRESS: Final = 2  # Linux gives address 1 to the root hub of each bus


def transaction_time_s(speed: Speed, payload: int) -> float:
    """Bus time of one bulk/interrupt transaction carrying ``payload`` bytes (USB 2.0 §5.8.4)."""
    return (payload + OVERHEAD_BYTES[speed]) * 8 * _BIT_TICKS[speed] / _TICK_HZ


def bulk_transactions_per_frame(speed: Speed, max_packet: int) -> int:
    """How many full ``max_packet`` bulk transactions fit in one (micro)frame (USB 2.0
    §5.8.4 Tables 5-9/5-10: 19 x 64 at full speed, 13 x 512 at high speed)."""
    return FRAME_BYTES[speed] // (max_packet + OVERHEAD_BYTES[speed])


def ceiling_bps(speed: Speed, max_packet: int) -> float:
    """The bulk payload ceiling in bits per second of one endpoint alone on the bus:
    whole transactions per (micro)frame times the payload (docs/hardware/usb.md)."""
    frame_s = _FRAME_TICKS[speed] / _TICK_HZ
    return bulk_transactions_per_frame(speed, max_packet) * max_packet * 8 / frame_s


# -- bookkeeping ----------------------------------------------------------------------------------


class _Stats:
    """Counters of one device model (kept across replugs)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {k: 0 for k in STATS_KEYS if k != "usb_bus_time_s"}
        self.ticks = 0

    def snapshot(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.counts)
        out["usb_bus_time_s"] = self.ticks / _TICK_HZ
        return out


@dataclass(eq=False)
class _Device:
    """One enumeration of a model: what pyusb's device id names. A replug makes a new one;
    handles on the old one fail with ENODEV."""

    model: UsbDeviceModel
    port: int
    address: int
    speed: Speed
    device_desc: DeviceDesc
    configs: list[ConfigDesc]
    stats: _Stats
    gone: bool = False
    config_value: int = 0
    alts: dict[int, int] = field(default_factory=dict)
    halted: set[int] = field(default_factory=set)
    kernel_bound: set[int] = field(default_factory=set)
    claims: dict[int, _Handle] = field(default_factory=dict)
    nak_until: dict[int, float] = field(default_factory=dict)
    babble: set[int] = field(default_factory=set)
    drop: dict[int, int] = field(default_factory=dict)
    dup: dict[int, int] = field(default_factory=dict)
    dup_pending: dict[int, bytes] = field(default_factory=dict)

    def active_config(self) -> ConfigDesc | None:
        for c in self.configs:
            if c.bConfigurationValue == self.config_value and self.config_value:
                return c
        return None

    def endpoint(self, address: int) -> tuple[int, EndpointDesc] | None:
        """(interface number, descriptor) of ``address`` in the current configuration and
        alternate settings; None if it is not there."""
        cfg = self.active_config()
        if cfg is None:
            return None
        for alts in cfg.interfaces:
            number = alts[0].bInterfaceNumber
            i = cfg.find_interface(number, self.alts.get(number, 0))
            if i is None:
                continue
            for ep in i.endpoints:
                if ep.bEndpointAddress == address:
                    return number, ep
        return None

    def has_interface(self, number: int) -> bool:
        cfg = self.active_config()
        return cfg is not None and number in cfg.interface_numbers()


@dataclass(eq=False)
class _Handle:
    """An open device handle (``libusb_device_handle``)."""

    dev: _Device
    claimed: set[int] = field(default_factory=set)
    closed: bool = False


@dataclass
class _Tally:
    """What one transfer put on the bus, committed to the stats when it ends."""

    ticks: int = 0
    bulk: bool = False  # a bulk pipe's transfer (else interrupt)


def _deadline(timeout_ms: int) -> float | None:
    """libusb: a timeout of 0 waits for ever."""
    return None if not timeout_ms else time.monotonic() + timeout_ms / 1000


# -- the bus ---------------------------------------------------------------------------------


class VirtualUsbBus:
    """One USB bus (``bus`` number as in ``/dev/bus/usb/<bus>``) with numbered ports.

    ``realtime`` (default True) paces transfers to the bus-time model; False lets them
    complete at once (the figures in ``stats`` are the same).
    """

    def __init__(self, number: int = 1, *, realtime: bool = True) -> None:
        self.number = number
        self.realtime = realtime
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._devices: list[_Device] = []  # plugged, in port order
        self._stats: list[tuple[UsbDeviceModel, _Stats]] = []
        self._last_address = _FIRST_ADDRESS - 1
        self._frame_pos = 0  # ticks used of the current (micro)frame
        self._busy_until = 0.0  # time.monotonic() when the bus has carried what it was given
        self.backend = VirtualBackend(self)

    # -- plugging ------------------------------------------------------------------------------

    def plug(self, model: UsbDeviceModel, *, port: int | None = None, configure: bool = True,
             kernel_driver: Iterable[int] | None = None) -> int:
        """Attach ``model``; its new address. ``port`` defaults to the lowest free one.

        Like Linux, the host then selects the first configuration (``configure``) and
        binds kernel drivers to the interfaces in ``kernel_driver`` (default: the
        model's ``kernel_driver_bound``): pyusb must detach them before claiming.
        """
        dev_desc = parse_device(bytes(model.device_descriptor))
        configs = [parse_configuration(bytes(c)) for c in model.configurations]
        with self._lock:
            if self._slot(model) is not None:
                raise ValueError("the model is already plugged in")
            used = {d.port for d in self._devices}
            if port is None:
                port = next(p for p in range(1, len(used) + 2) if p not in used)
            elif port < 1 or port in used:
                raise ValueError(f"port {port} is not free")
            address = self._next_address()
            speed = Speed(model.speed)
            dev_desc.bus, dev_desc.address, dev_desc.speed = self.number, address, int(speed)
            dev_desc.port_number, dev_desc.port_numbers = port, (port,)
            dev = _Device(model, port, address, speed, dev_desc, configs, self._stats_of(model))
            bound = getattr(model, "kernel_driver_bound", ()) if kernel_driver is None \
                else kernel_driver
            dev.kernel_bound = set(bound)
            with model.lock:
                model.bus_reset()
                if configure and configs:
                    dev.config_value = configs[0].bConfigurationValue
                    model.set_configuration(dev.config_value)
            self._devices.append(dev)
            self._devices.sort(key=lambda d: d.port)
            return address

    def unplug(self, model: UsbDeviceModel, *, close: bool = False) -> None:
        """Detach ``model``: its handles fail with ENODEV, blocked transfers end with ENODEV.
        ``close``: for good -- the model's ``close`` is called too."""
        with self._lock:
            dev = self._require(model)
            dev.gone = True
            self._devices.remove(dev)
            self._changed.notify_all()
        model.wake()
        if close:
            model.close()

    def replug(self, model: UsbDeviceModel) -> int:
        """Unplug and plug again on the same port: a new address, as Linux gives one."""
        port = self.port_of(model)
        self.unplug(model)
        return self.plug(model, port=port)

    def device_reset(self, model: UsbDeviceModel) -> None:
        """The device resets its function by itself (a watchdog, firmware restarting its
        stack) without leaving the bus: it forgets its configuration and alternate
        settings while the host still thinks them set, and the host finds out from
        its transfers (a recovery check's "soft" reset)."""
        with self._lock:
            self._require(model)
        with model.lock:
            model.bus_reset()
        model.wake()

    def close(self) -> None:
        """Unplug every device for good."""
        with self._lock:
            models = [d.model for d in self._devices]
        for m in models:
            self.unplug(m, close=True)

    def plugged(self, model: UsbDeviceModel) -> bool:
        with self._lock:
            return self._slot(model) is not None

    def address_of(self, model: UsbDeviceModel) -> int:
        with self._lock:
            return self._require(model).address

    def port_of(self, model: UsbDeviceModel) -> int:
        with self._lock:
            return self._require(model).port

    def port_path_of(self, model: UsbDeviceModel) -> str:
        """``"<bus>-<port>"``, as Linux names the device in sysfs."""
        return f"{self.number}-{self.port_of(model)}"

    # -- faults (docs/hardware/usb.md, "Faults") ----------------------------------------------

    def stall(self, model: UsbDeviceModel, endpoint: int) -> None:
        """Halt ``endpoint``: transfers fail with EPIPE until CLEAR_FEATURE(ENDPOINT_HALT)."""
        with self._lock:
            self._require(model).halted.add(endpoint)
            self._changed.notify_all()
        model.wake()

    def nak(self, model: UsbDeviceModel, endpoint: int, seconds: float) -> None:
        """The device NAKs ``endpoint`` for ``seconds`` (0 ends it): transfers wait, and time
        out if their timeout is shorter."""
        with self._lock:
            dev = self._require(model)
            if seconds > 0:
                dev.nak_until[endpoint] = time.monotonic() + seconds
            else:
                dev.nak_until.pop(endpoint, None)
            self._changed.notify_all()

    def babble(self, model: UsbDeviceModel, endpoint: int) -> None:
        """The next packet of IN ``endpoint`` is babble: lost, and its transfer fails with
        EOVERFLOW (USB 2.0 §8.4.5 / libusb LIBUSB_ERROR_OVERFLOW)."""
        with self._lock:
            self._require(model).babble.add(endpoint)

    def drop_in(self, model: UsbDeviceModel, endpoint: int, n: int = 1) -> None:
        """The data of the next ``n`` IN transfers of ``endpoint`` is lost on the way up."""
        with self._lock:
            dev = self._require(model)
            dev.drop[endpoint] = dev.drop.get(endpoint, 0) + n

    def duplicate_in(self, model: UsbDeviceModel, endpoint: int, n: int = 1) -> None:
        """Each of the next ``n`` IN transfers of ``endpoint`` is delivered twice."""
        with self._lock:
            dev = self._require(model)
            dev.dup[endpoint] = dev.dup.get(endpoint, 0) + n

    # -- accounting --------------------------------------------------------------------------------

    def stats(self, model: UsbDeviceModel) -> dict[str, int | float]:
        """The counters of ``model`` since it was first plugged (docs/hardware/usb.md, "Stats")."""
        with self._lock:
            for m, s in self._stats:
                if m is model:
                    return s.snapshot()
        raise ValueError("the model was never plugged into this bus")

    def reset_stats(self, model: UsbDeviceModel) -> None:
        with self._lock:
            for i, (m, _) in enumerate(self._stats):
                if m is model:
                    self._stats[i] = (m, _Stats())
                    dev = self._slot(model)
                    if dev is not None:
                        dev.stats = self._stats[i][1]

    # -- internals: lookup -------------------------------------------------------------------------

    def _slot(self, model: UsbDeviceModel) -> _Device | None:
        for d in self._devices:
            if d.model is model:
                return d
        return None

    def _require(self, model: UsbDeviceModel) -> _Device:
        dev = self._slot(model)
        if dev is None:
            raise ValueError("the model is not plugged into this bus")
        return dev

    def _stats_of(self, model: UsbDeviceModel) -> _Stats:
        for m, s in self._stats:
            if m is model:
                return s
        s = _Stats()
        self._stats.append((model, s))
        return s

    def _next_address(self) -> int:
        """Round robin over 2..127 skipping addresses in use, as Linux allocates them."""
        used = {d.address for d in self._devices}
        a = self._last_address
        for _ in range(127):
            a = a + 1 if a < 127 else _FIRST_ADDRESS
            if a not in used:
                self._last_address = a
                return a
        raise RuntimeError("no free USB address on the bus")

    def _live(self, h: _Handle) -> _Device:
        """The device of an open handle; ENODEV once it is gone. Call with the lock."""
        if h.closed or h.dev.gone:
            h.dev.stats.counts["usb_nodev"] += 1
            raise usb_error(ERROR_NO_DEVICE)
        return h.dev

    # -- internals: what the backend calls -------------------------------------------------------

    def _enumerate(self) -> list[_Device]:
        with self._lock:
            return list(self._devices)

    def _open(self, dev: _Device) -> _Handle:
        with self._lock:
            if dev.gone:
                raise usb_error(ERROR_NO_DEVICE)
            return _Handle(dev)

    def _close(self, h: _Handle) -> None:
        """Closing releases the handle's interfaces (usbfs does on close)."""
        with self._lock:
            for i in h.claimed:
                if h.dev.claims.get(i) is h:
                    del h.dev.claims[i]
            h.claimed.clear()
            h.closed = True

    def _get_configuration(self, h: _Handle) -> int:
        with self._lock:
            return self._live(h).config_value

    def _host_set_configuration(self, h: _Handle, value: int) -> None:
        """libusb_set_configuration: an unknown value is NOT_FOUND (the kernel checks it)."""
        with self._lock:
            dev = self._live(h)
            if value and all(c.bConfigurationValue != value for c in dev.configs):
                raise usb_error(ERROR_NOT_FOUND)
            self._set_configuration(dev, value)

    def _set_configuration(self, dev: _Device, value: int) -> None:
        """SET_CONFIGURATION (USB 2.0 §9.4.7): refused with EBUSY while any interface is
        claimed, by a program or a kernel driver, as usbfs refuses it; resets alternate
        settings and halts (§9.1.1.5)."""
        if value and all(c.bConfigurationValue != value for c in dev.configs):
            raise Stall(f"no configuration {value}")
        if dev.claims or any(dev.has_interface(i) for i in dev.kernel_bound):
            raise usb_error(ERROR_BUSY)
        with dev.model.lock:
            dev.model.set_configuration(value)
        dev.config_value = value
        dev.alts.clear()
        dev.halted.clear()

    def _host_set_interface(self, h: _Handle, number: int, alt: int) -> None:
        """libusb_set_interface_alt_setting: the interface must be claimed by this handle."""
        with self._lock:
            dev = self._live(h)
            if number not in h.claimed:
                raise usb_error(ERROR_NOT_FOUND)
            try:
                self._set_interface(dev, number, alt)
            except Stall:
                raise usb_error(ERROR_NOT_FOUND) from None

    def _set_interface(self, dev: _Device, number: int, alt: int) -> None:
        """SET_INTERFACE (USB 2.0 §9.4.10): the alternate setting must exist; the
        interface's endpoints return to their defaults (§9.1.1.5)."""
        cfg = dev.active_config()
        i = cfg.find_interface(number, alt) if cfg else None
        if cfg is None or i is None:
            raise Stall(f"no interface {number} alternate setting {alt}")
        with dev.model.lock:
            dev.model.set_interface(number, alt)
        old = cfg.find_interface(number, dev.alts.get(number, 0))
        for ep in (old.endpoints if old else []) + i.endpoints:
            dev.halted.discard(ep.bEndpointAddress)
        dev.alts[number] = alt

    def _claim(self, h: _Handle, number: int) -> None:
        """usbfs: NOT_FOUND for an interface not in the configuration, BUSY if another
        handle or a kernel driver holds it; claiming twice is fine."""
        with self._lock:
            dev = self._live(h)
            if not dev.has_interface(number):
                raise usb_error(ERROR_NOT_FOUND)
            holder = dev.claims.get(number)
            if holder is h:
                return
            if holder is not None or number in dev.kernel_bound:
                raise usb_error(ERROR_BUSY)
            dev.claims[number] = h
            h.claimed.add(number)

    def _release(self, h: _Handle, number: int) -> None:
        with self._lock:
            dev = self._live(h)
            if number not in h.claimed:
                raise usb_error(ERROR_NOT_FOUND)
            h.claimed.discard(number)
            if dev.claims.get(number) is h:
                del dev.claims[number]

    def _kernel_driver_active(self, h: _Handle, number: int) -> bool:
        with self._lock:
            dev = self._live(h)
            if not dev.has_interface(number):
                raise usb_error(ERROR_NOT_FOUND)
            return number in dev.kernel_bound

    def _detach_kernel_driver(self, h: _Handle, number: int) -> None:
        with self._lock:
            dev = self._live(h)
            if not dev.has_interface(number) or number not in dev.kernel_bound:
                raise usb_error(ERROR_NOT_FOUND)
            dev.kernel_bound.discard(number)

    def _attach_kernel_driver(self, h: _Handle, number: int) -> None:
        with self._lock:
            dev = self._live(h)
            if not dev.has_interface(number):
                raise usb_error(ERROR_NOT_FOUND)
            if number in dev.claims or number in dev.kernel_bound:
                raise usb_error(ERROR_BUSY)
            dev.kernel_bound.add(number)

    def _host_clear_halt(self, h: _Handle, ep: int) -> None:
        """libusb_clear_halt: CLEAR_FEATURE(ENDPOINT_HALT); NOT_FOUND for an endpoint that is
        not in the current configuration."""
        with self._lock:
            dev = self._live(h)
            if ep & 0x7F and dev.endpoint(ep) is None:
                raise usb_error(ERROR_NOT_FOUND)
            self._clear_halt(dev, ep)

    def _clear_halt(self, dev: _Device, ep: int) -> None:
        with dev.model.lock:
            dev.model.clear_halt(ep)
        dev.halted.discard(ep)
        self._changed.notify_all()

    def _reset(self, h: _Handle) -> None:
        """libusb_reset_device: a port reset, after which Linux restores the configuration
        and alternate settings; the address and handles stay."""
        with self._lock:
            dev = self._live(h)
            with dev.model.lock:
                dev.model.bus_reset()
                if dev.config_value:
                    dev.model.set_configuration(dev.config_value)
                    for number, alt in dev.alts.items():
                        if alt:
                            dev.model.set_interface(number, alt)
            dev.halted.clear()
            dev.nak_until.clear()
            dev.babble.clear()
            self._changed.notify_all()

    # -- internals: data transfers ---------------------------------------------------------------

    def _prepare(self, h: _Handle, ep: int) -> tuple[_Device, int, bool]:
        """The device, packet size and whether it is a bulk pipe, for a transfer on ``ep``.
        usbfs claims the interface for the handle if nobody holds it; an endpoint outside
        the current configuration or an interface held elsewhere fails the submission
        (libusb: EIO)."""
        with self._lock:
            dev = self._live(h)
            found = dev.endpoint(ep)
            if found is None:
                raise usb_error(ERROR_IO)
            number, desc = found
            holder = dev.claims.get(number)
            if holder is None and number not in dev.kernel_bound:
                dev.claims[number] = h
                h.claimed.add(number)
            elif holder is not h:
                raise usb_error(ERROR_IO)
            return dev, max(1, desc.packet_size), desc.bmAttributes & 3 == D.EP_BULK

    def _gate(self, h: _Handle, ep: int, deadline: float | None) -> _Device:
        """Before each packet: ENODEV if gone, EPIPE if halted; wait out a NAK window
        (timing out at the deadline)."""
        with self._lock:
            while True:
                dev = self._live(h)
                if ep in dev.halted:
                    raise usb_error(ERROR_PIPE)
                now = time.monotonic()
                until = dev.nak_until.get(ep)
                if until is None or until <= now:
                    return dev
                if deadline is not None and now >= deadline:
                    raise usb_error(ERROR_TIMEOUT)
                end = until if deadline is None else min(until, deadline)
                self._changed.wait(end - now)

    def _halt(self, dev: _Device, ep: int) -> Exception:
        with self._lock:
            dev.halted.add(ep)
        return usb_error(ERROR_PIPE)

    def _charge(self, dev: _Device, payload: int) -> int:
        """Put one transaction on the bus (call with the lock): its ticks, including the
        rest of a (micro)frame it did not fit in (USB 2.0 §5.8.4)."""
        speed = dev.speed
        frame = _FRAME_TICKS[speed]
        need = (payload + OVERHEAD_BYTES[speed]) * 8 * _BIT_TICKS[speed]
        pos = self._frame_pos % frame
        waste = frame - pos if pos + need > frame else 0
        self._frame_pos = (pos + waste + need) % frame if need <= frame else 0
        ticks = waste + need
        dev.stats.ticks += ticks
        return ticks

    def _packet(self, dev: _Device, tally: _Tally, payload: int, *, into: bool) -> None:
        d = "in" if into else "out"
        with self._lock:
            c = dev.stats.counts
            ticks = self._charge(dev, payload)
            tally.ticks += ticks
            c[f"usb_packets_{d}"] += 1
            c[f"usb_zlps_{d}"] += payload == 0
            c[f"usb_payload_bytes_{d}"] += payload
            c[f"usb_bus_bytes_{d}"] += payload + OVERHEAD_BYTES[dev.speed]
            if tally.bulk:
                c[f"usb_bulk_zlps_{d}"] += payload == 0
                c[f"usb_bulk_payload_bytes_{d}"] += payload
                c[f"usb_bulk_bus_bytes_{d}"] += payload + OVERHEAD_BYTES[dev.speed]

    def _count_error(self, dev: _Device, exc: Exception) -> None:
        key = {ERROR_PIPE: "usb_stalls", ERROR_TIMEOUT: "usb_timeouts",
               ERROR_OVERFLOW: "usb_overflows"}.get(getattr(exc, "backend_error_code", 0))
        if key:
            with self._lock:
                dev.stats.counts[key] += 1

    def _pace(self, tally: _Tally) -> None:
        """A transfer completes no earlier than the bus could have carried it, give or take
        ~1 ms: callers sleep only what the bus is more than that behind. The margin is the
        host controller's queue: the next transfer is ready when the bus frees, so a
        caller that keeps up keeps the bus busy, and fast transfers cost no sleeps."""
        with self._lock:
            now = time.monotonic()
            self._busy_until = max(now, self._busy_until) + tally.ticks / _TICK_HZ
            debt = self._busy_until - now
        if self.realtime and debt > _PACE_DEBT_S:
            time.sleep(debt - _PACE_DEBT_S)

    def _write(self, h: _Handle, ep: int, data: bytes, timeout_ms: int) -> int:
        """A bulk or interrupt OUT transfer: wMaxPacketSize packets, the last short; nothing
        is added after an exact multiple (write ``b""`` for a ZLP, USB 2.0 §5.8.3)."""
        if ep & D.EP_IN:
            raise usb_error(ERROR_INVALID_PARAM)
        dev, mps, bulk = self._prepare(h, ep)
        deadline = _deadline(timeout_ms)
        packets = [data[i:i + mps] for i in range(0, len(data), mps)] or [b""]
        tally = _Tally(bulk=bulk)
        sent = 0
        try:
            for pkt in packets:
                while True:
                    dev = self._gate(h, ep, deadline)
                    try:
                        with dev.model.lock:
                            dev.model.out_packet(ep, pkt)
                        break
                    except Nak:
                        pass
                    except Stall:
                        raise self._halt(dev, ep) from None
                    wait = _NAK_RETRY_S
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            raise usb_error(ERROR_TIMEOUT) from None
                    dev.model.wait(wait, ep)
                self._packet(dev, tally, len(pkt), into=False)
                sent += len(pkt)
        except usb.core.USBError as e:
            self._count_error(dev, e)
            if not (sent and isinstance(e, usb.core.USBTimeoutError)):
                raise
        with self._lock:
            dev.stats.counts["usb_transfers_out"] += 1
            dev.stats.counts["usb_bulk_transfers_out"] += tally.bulk
        self._pace(tally)
        return sent

    def _read(self, h: _Handle, ep: int, size: int, timeout_ms: int) -> bytes:
        """A bulk or interrupt IN transfer of at most ``size`` bytes: packets until a short
        one (a ZLP included) or the buffer is full (USB 2.0 §5.8.3). A packet longer than
        wMaxPacketSize or than the room left is babble (EOVERFLOW); a timeout after some
        data returns the data, as libusb does."""
        if not ep & D.EP_IN:
            raise usb_error(ERROR_INVALID_PARAM)
        dev, mps, bulk = self._prepare(h, ep)
        deadline = _deadline(timeout_ms)
        tally = _Tally(bulk=bulk)
        got = bytearray()
        try:
            with self._lock:
                again = dev.dup_pending.pop(ep, None)
            if again is not None:
                if len(again) > size:
                    raise usb_error(ERROR_OVERFLOW)
                for i in range(0, len(again), mps):
                    self._packet(dev, tally, len(again[i:i + mps]), into=True)
                if len(again) % mps == 0 and len(again) < size:
                    self._packet(dev, tally, 0, into=True)
                got += again
            while again is None:
                dev = self._gate(h, ep, deadline)
                try:
                    with dev.model.lock:
                        pkt = dev.model.in_packet(ep, mps)
                except Stall:
                    raise self._halt(dev, ep) from None
                if pkt is None:
                    wait = _WAIT_SLICE_S
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                        if wait <= 0:
                            raise usb_error(ERROR_TIMEOUT)
                    dev.model.wait(wait, ep)
                    continue
                self._packet(dev, tally, len(pkt), into=True)
                with self._lock:
                    babble = ep in dev.babble
                    dev.babble.discard(ep)
                if babble or len(pkt) > mps or len(pkt) > size - len(got):
                    raise usb_error(ERROR_OVERFLOW)
                got += pkt
                if len(pkt) < mps or len(got) == size:
                    with self._lock:
                        if dev.drop.get(ep):
                            dev.drop[ep] -= 1
                            dev.stats.counts["usb_dropped_in"] += 1
                            got.clear()
                            continue
                        if dev.dup.get(ep):
                            dev.dup[ep] -= 1
                            dev.stats.counts["usb_duplicated_in"] += 1
                            dev.dup_pending[ep] = bytes(got)
                    break
        except usb.core.USBError as e:
            self._count_error(dev, e)
            if not (got and isinstance(e, usb.core.USBTimeoutError)):
                raise
        with self._lock:
            dev.stats.counts["usb_transfers_in"] += 1
            dev.stats.counts["usb_bulk_transfers_in"] += tally.bulk
        self._pace(tally)
        return bytes(got)

    # -- internals: control transfers --------------------------------------------------------------

    def _control(self, h: _Handle, setup: Setup, data: bytes, timeout_ms: int) -> bytes:
        """A control transfer on endpoint 0: standard requests answered by the bus (USB 2.0
        §9.4), class and vendor ones by the model; a Stall is EPIPE. Accounted as a SETUP
        transaction, bMaxPacketSize0 data transactions and a status ZLP (§8.5.3)."""
        with self._lock:
            dev = self._live(h)
        try:
            reply = self._request(dev, setup, data)
        except Stall:
            reply = None
        except usb.core.USBError as e:
            self._count_error(dev, e)
            raise
        tally = _Tally()
        mps0 = max(8, dev.device_desc.bMaxPacketSize0)
        stage = data if not setup.device_to_host else (reply or b"")[:setup.wLength]
        with self._lock:
            c = dev.stats.counts
            n_stage = [mps0] * (len(stage) // mps0) + ([len(stage) % mps0] if len(stage) % mps0
                                                       else [])
            for payload in [_SETUP_BYTES, *n_stage, 0]:
                tally.ticks += self._charge(dev, payload)
                c["usb_control_bus_bytes"] += payload + OVERHEAD_BYTES[dev.speed]
            c["usb_control_transfers"] += 1
            c["usb_control_bytes_in" if setup.device_to_host else "usb_control_bytes_out"] += \
                len(stage)
            if reply is None:
                c["usb_stalls"] += 1
        self._pace(tally)
        if reply is None:
            raise usb_error(ERROR_PIPE)
        return bytes(stage) if setup.device_to_host else b""

    def _request(self, dev: _Device, s: Setup, data: bytes) -> bytes:
        """Standard requests the device framework answers (USB 2.0 §9.4); the rest, and any
        standard request it does not know, go to the model."""
        if s.type == 0:
            with self._lock:
                answered = self._standard(dev, s)
            if answered is not None:
                return answered
        with dev.model.lock:
            return bytes(dev.model.control(s, data))

    def _standard(self, dev: _Device, s: Setup) -> bytes | None:
        """Call with the lock. None: not a request the bus answers."""
        req, rcp = s.bRequest, s.recipient
        if req == 6 and rcp == 0 and s.device_to_host:  # GET_DESCRIPTOR, §9.4.3
            return self._descriptor(dev, s.wValue >> 8, s.wValue & 0xFF, s.wIndex)
        if req == 9 and rcp == 0 and not s.device_to_host:  # SET_CONFIGURATION, §9.4.7
            self._set_configuration(dev, s.wValue & 0xFF)
            return b""
        if req == 8 and rcp == 0 and s.device_to_host:  # GET_CONFIGURATION, §9.4.2
            return bytes((dev.config_value,))
        if req == 11 and rcp == 1 and not s.device_to_host:  # SET_INTERFACE, §9.4.10
            self._set_interface(dev, s.wIndex & 0xFF, s.wValue)
            return b""
        if req == 10 and rcp == 1 and s.device_to_host:  # GET_INTERFACE, §9.4.4
            if not dev.has_interface(s.wIndex & 0xFF):
                raise Stall("no such interface")
            return bytes((dev.alts.get(s.wIndex & 0xFF, 0),))
        if req == 0 and s.device_to_host:  # GET_STATUS, §9.4.5
            return self._status(dev, rcp, s.wIndex)
        if req in (1, 3) and rcp == 2 and s.wValue == 0:  # CLEAR/SET_FEATURE(ENDPOINT_HALT)
            ep = s.wIndex & 0xFF
            if ep & 0x7F and dev.endpoint(ep) is None:
                raise Stall("no such endpoint")
            if req == 1:
                self._clear_halt(dev, ep)
            elif ep & 0x7F:
                dev.halted.add(ep)
            return b""
        if req in (1, 3) and rcp == 0:  # DEVICE_REMOTE_WAKEUP, TEST_MODE: accepted
            return b""
        return None

    def _descriptor(self, dev: _Device, kind: int, index: int, langid: int) -> bytes | None:
        m = dev.model
        if kind == D.DT_DEVICE:
            return bytes(m.device_descriptor)
        if kind == D.DT_CONFIG:
            if index >= len(dev.configs):
                raise Stall(f"no configuration index {index}")
            return dev.configs[index].raw
        if kind == D.DT_STRING:
            if index == 0:
                return D.langids(m.langids)
            if index not in m.strings or langid not in m.langids:
                raise Stall(f"no string {index} in language 0x{langid:04x}")
            return D.string(m.strings[index])
        return None  # device qualifier, BOS, ...: the model's to answer

    def _status(self, dev: _Device, recipient: int, index: int) -> bytes:
        """GET_STATUS (USB 2.0 §9.4.5, Figures 9-4..9-6)."""
        if recipient == 0:
            cfg = dev.active_config()
            self_powered = bool(cfg and cfg.bmAttributes & 0x40)
            return bytes((int(self_powered), 0))
        if recipient == 1:
            if not dev.has_interface(index & 0xFF):
                raise Stall("no such interface")
            return b"\0\0"
        if recipient == 2:
            ep = index & 0xFF
            if ep & 0x7F and dev.endpoint(ep) is None:
                raise Stall("no such endpoint")
            return bytes((int(ep in dev.halted), 0))
        raise Stall("GET_STATUS to another recipient")


# -- the bus as pyusb sees it ----------------------------------------------------------------


class VirtualBackend(usb.backend.IBackend):  # type: ignore[misc]
    """``usb.backend.IBackend`` over a ``VirtualUsbBus``: what pyusb calls, answered by the
    bus (libusb's semantics on Linux; docs/hardware/usb.md, "Errors")."""

    def __init__(self, bus: VirtualUsbBus) -> None:
        super().__init__()
        self.bus = bus

    # -- enumeration and descriptors --------------------------------------------------------

    def enumerate_devices(self) -> list[_Device]:
        return self.bus._enumerate()

    def get_parent(self, dev: _Device) -> None:
        """The root hub is not modelled: devices hang off the bus directly."""
        return None

    def get_device_descriptor(self, dev: _Device) -> DeviceDesc:
        return replace(dev.device_desc)

    def get_configuration_descriptor(self, dev: _Device, config: int) -> ConfigDesc:
        if not 0 <= config < len(dev.configs):
            raise usb_error(ERROR_NOT_FOUND)
        c = dev.configs[config]
        return replace(c, extra_descriptors=list(c.extra_descriptors))

    def get_interface_descriptor(self, dev: _Device, intf: int, alt: int,
                                 config: int) -> InterfaceDesc:
        cfg = self.get_configuration_descriptor(dev, config)
        if not 0 <= intf < len(cfg.interfaces):
            raise IndexError(f"Invalid interface index {intf}")
        alts = cfg.interfaces[intf]
        if not 0 <= alt < len(alts):
            raise IndexError(f"Invalid alternate setting index {alt}")
        return fresh_interface(alts[alt])

    def get_endpoint_descriptor(self, dev: _Device, ep: int, intf: int, alt: int,
                                config: int) -> EndpointDesc:
        i = self.get_interface_descriptor(dev, intf, alt, config)
        if not 0 <= ep < len(i.endpoints):
            raise IndexError(f"Invalid endpoint index {ep}")
        e = i.endpoints[ep]
        return replace(e, extra_descriptors=list(e.extra_descriptors))

    # -- handles, configurations, interfaces ------------------------------------------------

    def open_device(self, dev: _Device) -> _Handle:
        return self.bus._open(dev)

    def close_device(self, dev_handle: _Handle) -> None:
        self.bus._close(dev_handle)

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        self.bus._host_set_configuration(dev_handle, config_value)

    def get_configuration(self, dev_handle: _Handle) -> int:
        return self.bus._get_configuration(dev_handle)

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        self.bus._host_set_interface(dev_handle, intf, altsetting)

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        self.bus._claim(dev_handle, intf)

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        self.bus._release(dev_handle, intf)

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return self.bus._kernel_driver_active(dev_handle, intf)

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        self.bus._detach_kernel_driver(dev_handle, intf)

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        self.bus._attach_kernel_driver(dev_handle, intf)

    # -- transfers ------------------------------------------------------------------------------

    def bulk_write(self, dev_handle: _Handle, ep: int, intf: int, data: Any, timeout: int) -> int:
        return self.bus._write(dev_handle, ep, _bytes_of(data), timeout)

    def intr_write(self, dev_handle: _Handle, ep: int, intf: int, data: Any, timeout: int) -> int:
        return self.bus._write(dev_handle, ep, _bytes_of(data), timeout)

    def bulk_read(self, dev_handle: _Handle, ep: int, intf: int, buff: Any, timeout: int) -> int:
        return _fill(buff, self.bus._read(dev_handle, ep, _byte_len(buff), timeout))

    def intr_read(self, dev_handle: _Handle, ep: int, intf: int, buff: Any, timeout: int) -> int:
        return _fill(buff, self.bus._read(dev_handle, ep, _byte_len(buff), timeout))

    def ctrl_transfer(self, dev_handle: _Handle, bmRequestType: int, bRequest: int,
                      wValue: int, wIndex: int, data: Any, timeout: int) -> int:
        from hilkit.sim.usb.device import Setup

        length = _byte_len(data)
        setup = Setup(bmRequestType, bRequest, wValue, wIndex, length)
        if setup.device_to_host:
            return _fill(data, self.bus._control(dev_handle, setup, b"", timeout))
        self.bus._control(dev_handle, setup, _bytes_of(data), timeout)
        return length

    def clear_halt(self, dev_handle: _Handle, ep: int) -> None:
        self.bus._host_clear_halt(dev_handle, ep)

    def reset_device(self, dev_handle: _Handle) -> None:
        self.bus._reset(dev_handle)


def _byte_len(buff: Any) -> int:
    return len(buff) * getattr(buff, "itemsize", 1)


def _bytes_of(data: Any) -> bytes:
    return memoryview(data).cast("B").tobytes() if data is not None else b""


def _fill(buff: Any, got: bytes) -> int:
    """Copy ``got`` into pyusb's buffer (an ``array``), as libusb fills it; the count."""
    if got:
        memoryview(buff).cast("B")[:len(got)] = got
    return len(got)

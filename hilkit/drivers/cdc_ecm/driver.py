"""A USB CDC-ECM network function as a hilkit ``Device``, through pyusb alone.

Facts used: ``docs/hardware/cdc_ecm.md`` and the USB CDC 1.2 / ECM 1.2 and
USB 2.0 specifications (cited by section).

Bring-up (docs/hardware/cdc_ecm.md §1-§4): find the configuration holding a communications
interface 02/06/00 whose Header, Union and Ethernet functional descriptors
(CDC 1.2 §5.2.3) name a data interface (class 0x0A) with an alternate
setting of one bulk IN and one bulk OUT endpoint; detach a bound kernel
driver, select the configuration, claim both interfaces, read the MAC string
(ECM 1.2 §5.4), select alt 0 then the bulk alt (ECM 1.2 §5.3: alt 0 resets
the function's data path) and set the packet filter (ECM 1.2 §6.2.4).

Data (ECM 1.2 §3.3): one Ethernet frame (no FCS) per bulk transfer each
way. A transfer ends with a short packet, so a frame whose length is a whole
number of packets is followed by a zero-length packet (USB 2.0 §5.8.3).

Threads, so that ``send`` and ``poll`` never block (the stack sleeps in
``select`` on ``fileno()``): a reader does blocking bulk IN reads into a
bounded queue, a notifier reads the interrupt endpoint (link, speed: ECM 1.2
§6.3), a writer drains a bounded TX queue. All of them wait in the USB
transfer or on a condition: an idle device costs no CPU. An unplugged
device (ENODEV) takes the link down and starts a rediscovery thread that
looks for the same device (serial, else port path) every ``REDISCOVER_S``
and brings it up again under the same ``CdcEcmDevice``.

Nothing but pyusb, the standard library and ``hilkit.port`` is used here;
never ``hilkit.sim`` (docs/porting.md).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import struct
import threading
import weakref
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Self

import usb.core  # type: ignore[import-untyped]
import usb.util  # type: ignore[import-untyped]

from hilkit.drivers.cdc_ecm.proto import (
    CDC_CLASS_COMM,
    CDC_CLASS_DATA,
    CDC_PROTO_NONE,
    CDC_SUBCLASS_ECM,
    CDC_SUBCLASS_NCM,
    CONNECTION_SPEED_CHANGE,
    FD_ETHERNET,
    FD_HEADER,
    FD_UNION,
    MAC_STRING_LEN,
    NETWORK_CONNECTION,
    NOTIFICATION_HEADER_LEN,
    PACKET_TYPE_ALL_MULTICAST,
    PACKET_TYPE_BROADCAST,
    PACKET_TYPE_DIRECTED,
    PACKET_TYPE_PROMISCUOUS,
    REQ_TYPE_CLASS_IFACE_IN,
    REQ_TYPE_CLASS_IFACE_OUT,
    SET_ETHERNET_PACKET_FILTER,
    parse_functional,
)
from hilkit.port.clock import Clock, MonotonicClock
from hilkit.port.device import ETH_HEADER_LEN, DeviceClosed, DeviceCounters, LinkType
from hilkit.port.errors import ChipNotResponding, HardwareNotFound
from hilkit.port.usb import UsbTarget, port_path_of

__all__ = [
    "STAT_NAMES",
    "CdcEcmDevice",
    "EcmFunction",
    "NotificationParser",
    "find_ecm_function",
    "parse_mac_string",
    "rx_transfer_size",
    "udev_rule",
]

log = logging.getLogger(__name__)

# The driver's own counters, beyond DeviceCounters (``CdcEcmDevice.stats``).
STAT_NAMES: Final = (
    "stalls_cleared",  # CLEAR_FEATURE(ENDPOINT_HALT) after a STALL on a bulk/interrupt pipe
    "unplugs",  # the device was lost: ENODEV, no answer, or it stalls after every clear
    "replugs",  # ... and found and brought up again
    "notifications",  # notifications parsed (ECM 1.2 §6.3)
    "link_changes",  # link_up changed (notification, unplug, replug)
    "speed_changes",  # CONNECTION_SPEED_CHANGE received
    "rx_queue_drops",  # received frames dropped: the RX queue was full (also rx_dropped)
    "tx_queue_drops",  # send refused: the TX queue was full (also tx_dropped)
    "zlps_sent",  # zero-length packets after frames of a whole number of packets
    "rx_overflows",  # babble (EOVERFLOW) on bulk IN (also rx_errors)
    "rx_zlps",  # empty bulk IN transfers, ignored
    "tx_timeouts",  # bulk OUT writes the device did not take in time (frame lost)
    "tx_lost",  # frames send accepted that never reached the device
    "usb_errors",  # other transfer errors (I/O errors, failed clear_halt)
)

# Interface triples of network functions this driver does not speak, for messages.
_RNDIS: Final = {(0x02, 0x02, 0xFF): "RNDIS (class 02/02/ff)",
                 (0xE0, 0x01, 0x03): "RNDIS (class e0/01/03)"}

_EP_BULK: Final = 2  # USB 2.0 §9.6.6 bmAttributes bits 1..0
_EP_INTERRUPT: Final = 3
_EP_IN: Final = 0x80
_GET_DESCRIPTOR: Final = 0x06  # USB 2.0 §9.4.3
_DT_DEVICE: Final = 0x01


def udev_rule(vendor: int, product: int) -> str:
    """The udev rule that lets the plugdev group open the device (no root needed)."""
    return (f'SUBSYSTEM=="usb", ATTR{{idVendor}}=="{vendor:04x}", '
            f'ATTR{{idProduct}}=="{product:04x}", MODE="0660", GROUP="plugdev"')


def parse_mac_string(text: str | None) -> bytes:
    """The MAC in an iMACAddress string: exactly 12 hex digits, most significant octet
    first (ECM 1.2 §5.4). ValueError saying what is wrong otherwise."""
    if text is None:
        raise ValueError("no MAC string (iMACAddress reads empty)")
    if len(text) != MAC_STRING_LEN:
        raise ValueError(f"MAC string {text!r} has {len(text)} characters, "
                         f"ECM 1.2 §5.4 wants {MAC_STRING_LEN} hex digits")
    try:
        if not all(c in "0123456789abcdefABCDEF" for c in text):
            raise ValueError
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"MAC string {text!r} is not {MAC_STRING_LEN} hex digits "
                         "(ECM 1.2 §5.4)") from None


def rx_transfer_size(max_segment: int, max_packet: int) -> int:
    """Bytes to ask for per bulk IN read: the largest frame rounded up to whole
    packets, plus one packet, so a frame never fills the request exactly (it then
    ends on its short packet or ZLP, USB 2.0 §5.8.3) and a padding byte fits."""
    packets = -(-max_segment // max_packet)
    return (packets + 1) * max_packet


@dataclass(frozen=True)
class EcmFunction:
    """Where an ECM function sits in a device (ECM 1.2 §5: descriptors)."""

    config: int  # bConfigurationValue
    control_if: int
    data_if: int
    data_alt: int  # the alternate setting with the bulk pair
    ep_in: int
    ep_out: int
    in_max_packet: int
    out_max_packet: int
    ep_notify: int | None  # interrupt IN of the control interface, if any
    notify_max_packet: int
    mac_index: int  # iMACAddress
    max_segment: int  # wMaxSegmentSize


def _eps(intf: Any) -> Iterator[Any]:
    with contextlib.suppress(Exception):
        yield from intf


def _bulk_pair(intf: Any) -> tuple[Any, Any] | None:
    """The first bulk IN and bulk OUT endpoints of an alternate setting, or None."""
    ep_in = ep_out = None
    for ep in _eps(intf):
        if ep.bmAttributes & 3 != _EP_BULK:
            continue
        if ep.bEndpointAddress & _EP_IN:
            ep_in = ep_in or ep
        else:
            ep_out = ep_out or ep
    return (ep_in, ep_out) if ep_in is not None and ep_out is not None else None


def _ecm_in_config(cfg: Any) -> EcmFunction | str | None:
    """The ECM function of one configuration; a string saying why a control interface
    02/06/00 there is unusable; None when it has none (CDC 1.2 §5.2.3, ECM 1.2 §5)."""
    intfs = list(cfg)
    problem: str | None = None
    for ctl in intfs:
        if (ctl.bInterfaceClass, ctl.bInterfaceSubClass,
                ctl.bInterfaceProtocol) != (CDC_CLASS_COMM, CDC_SUBCLASS_ECM, CDC_PROTO_NONE):
            continue
        extra = bytes(ctl.extra_descriptors or b"")
        if not extra:  # some devices put them in the configuration's extra bytes
            extra = bytes(getattr(cfg, "extra_descriptors", None) or b"")
        fds: dict[int, bytes] = {}
        for subtype, blob in parse_functional(extra):
            fds.setdefault(subtype, blob)
        header, union, eth = fds.get(FD_HEADER), fds.get(FD_UNION), fds.get(FD_ETHERNET)
        where = f"configuration {cfg.bConfigurationValue} interface {ctl.bInterfaceNumber}"
        if header is None or union is None or eth is None or len(union) < 5 or len(eth) < 13:
            missing = [n for n, d in (("Header", header), ("Union", union),
                                      ("Ethernet", eth)) if d is None]
            problem = (f"ECM control interface at {where} lacks its "
                       f"{', '.join(missing) or 'well-formed'} functional descriptor(s)")
            continue
        slave = union[4]
        mac_index = eth[3]
        (max_segment,) = struct.unpack_from("<H", eth, 8)
        data = None
        for d in intfs:
            if (d.bInterfaceNumber == slave and d.bInterfaceClass == CDC_CLASS_DATA
                    and (pair := _bulk_pair(d)) is not None):
                data = (d, pair)
                break
        if data is None:
            problem = (f"ECM control interface at {where}: its Union names data interface "
                       f"{slave}, which has no alternate setting of class 0x0a with a "
                       "bulk IN and a bulk OUT endpoint")
            continue
        d, (ep_in, ep_out) = data
        notify = None
        for ep in _eps(ctl):
            if ep.bmAttributes & 3 == _EP_INTERRUPT and ep.bEndpointAddress & _EP_IN:
                notify = ep
                break
        return EcmFunction(
            config=cfg.bConfigurationValue,
            control_if=ctl.bInterfaceNumber,
            data_if=slave,
            data_alt=d.bAlternateSetting,
            ep_in=ep_in.bEndpointAddress,
            ep_out=ep_out.bEndpointAddress,
            in_max_packet=ep_in.wMaxPacketSize,
            out_max_packet=ep_out.wMaxPacketSize,
            ep_notify=None if notify is None else notify.bEndpointAddress,
            notify_max_packet=8 if notify is None else max(8, notify.wMaxPacketSize),
            mac_index=mac_index,
            max_segment=max_segment or 1514,
        )
    return problem


def find_ecm_function(dev: Any) -> tuple[EcmFunction | None, list[str]]:
    """The first ECM function among ``dev``'s configurations, and what else it offers
    that looks like a network function (RNDIS, NCM, a broken ECM), for messages."""
    seen: list[str] = []
    try:
        configs = list(dev)
    except (usb.core.USBError, ValueError, NotImplementedError) as e:
        return None, [f"configurations unreadable ({e})"]
    for cfg in configs:
        found = _ecm_in_config(cfg)
        if isinstance(found, EcmFunction):
            return found, seen
        if found is not None:
            seen.append(found)
        for intf in cfg:
            triple = (intf.bInterfaceClass, intf.bInterfaceSubClass, intf.bInterfaceProtocol)
            where = f"in configuration {cfg.bConfigurationValue}"
            if triple in _RNDIS:
                seen.append(f"{_RNDIS[triple]} {where}")
            elif triple[:2] == (CDC_CLASS_COMM, CDC_SUBCLASS_NCM):
                seen.append(f"CDC-NCM (class 02/0d) {where}")
    return None, seen


class NotificationParser:
    """Notifications from the interrupt pipe as a byte stream (CDC 1.2 §6.3).

    A notification is an 8-byte header plus wLength bytes; a device with an 8-byte
    wMaxPacketSize sends CONNECTION_SPEED_CHANGE (8 + 8 bytes) as two transfers
    (ECM 1.2 §6.3.3), and a read may also hold more than one notification. Bytes
    that are no notification (bmRequestType not 0xA1) are dropped (``errors``).
    """

    MAX_DATA = 64  # longer than any CDC notification: the stream is out of step

    def __init__(self) -> None:
        self._buf = bytearray()
        self.errors = 0

    def feed(self, data: bytes) -> list[tuple[int, int, int, bytes]]:
        """``(code, wValue, wIndex, data)`` of every notification completed by ``data``."""
        self._buf += data
        out: list[tuple[int, int, int, bytes]] = []
        while len(self._buf) >= NOTIFICATION_HEADER_LEN:
            rtype, code, value, index, length = struct.unpack_from("<BBHHH", self._buf)
            if rtype != REQ_TYPE_CLASS_IFACE_IN or length > self.MAX_DATA:
                self.errors += 1
                self._buf.clear()
                break
            end = NOTIFICATION_HEADER_LEN + length
            if len(self._buf) < end:
                break  # the rest comes in the next transfer
            out.append((code, value, index, bytes(self._buf[NOTIFICATION_HEADER_LEN:end])))
            del self._buf[:end]
        return out

    def reset(self) -> None:
        self._buf.clear()


def _errno_of(e: BaseException) -> int | None:
    if isinstance(e, usb.core.USBTimeoutError):
        return errno.ETIMEDOUT
    return getattr(e, "errno", None)


def _as_bytes(frame: bytes | bytearray | memoryview) -> bytes:
    if isinstance(frame, bytes):
        return frame
    if isinstance(frame, memoryview) and frame.format != "B":
        return frame.tobytes()
    return bytes(frame)


class _Session:
    """One bring-up of one pyusb device: its endpoints, threads and the interfaces
    whose kernel driver we detached (re-attached at close)."""

    def __init__(self, dev: Any, fn: EcmFunction, device_mac: bytes, detached: list[int],
                 port_path: str | None, serial: str | None) -> None:
        self.dev = dev
        self.fn = fn
        self.device_mac = device_mac
        self.detached = detached
        self.port_path = port_path
        self.serial = serial
        self.rx_size = rx_transfer_size(fn.max_segment, fn.in_max_packet)
        self.stop = threading.Event()
        self.lost = False
        self.threads: list[threading.Thread] = []


def _close_at_exit(ref: weakref.ReferenceType[CdcEcmDevice]) -> None:
    """Interpreter exit without ``close()``: still re-attach the kernel driver."""
    dev = ref()
    if dev is not None:
        with contextlib.suppress(Exception):
            dev.close()


class CdcEcmDevice:
    """A USB CDC-ECM device (a gadget, a dongle) as an Ethernet ``hilkit.port.Device``.

    ``bus`` (``hilkit.port.usb.UsbTarget``) names the device and the pyusb
    backend. ``mac``: hilkit's own address; by default the device's
    (iMACAddress). A ``mac`` that differs from the device's also turns on
    PROMISCUOUS in the packet filter: an ECM function may filter directed frames
    by its own address (ECM 1.2 §6.2.4), which would drop those sent to ours.

    Opening raises ``HardwareNotFound`` (no device, permission denied, no ECM
    function: RNDIS or NCM only) or ``ChipNotResponding`` (a bad MAC string,
    a request the device refused), each naming the device.

    ``link_up`` follows NETWORK_CONNECTION (down until the first one when the
    device has a notification endpoint, up when it has none); ``speed_bps`` is
    (downlink, uplink) from CONNECTION_SPEED_CHANGE, or None. ``stats`` holds the
    counters named in ``STAT_NAMES`` (also attributes, as ``Nic.stat_names`` wants).
    ``rx_buffer_bytes`` (the window TCP keeps within, docs/porting.md) is
    ``device_buffer_frames`` frames of 1514 bytes: the frames the *device* can hold
    towards the host, which ECM descriptors do not state, so the rig says (the
    default 32 is a gadget's typical request queue; ``rx_queue_frames`` on the host
    side is larger, the device's queue is what a burst from the wire overflows).
    ``clock`` is taken for the builder's sake; the driver's timing is USB transfer
    timeouts, which are real time.

    ``close()`` (also run at interpreter exit if forgotten) stops the threads and
    hands the device back: alt 0, interfaces released, kernel driver re-attached.
    """

    link_type = LinkType.ETHERNET

    # Tunables (class attributes: a subclass or a test may change them).
    RX_TIMEOUT_MS = 250  # a bulk IN read that times out is just looped
    NOTIFY_TIMEOUT_MS = 250
    TX_TIMEOUT_MS = 1000  # a bulk OUT the device NAKs this long: the frame is lost
    CONTROL_TIMEOUT_MS = 1000
    REDISCOVER_S = 0.2  # how often an unplugged device is looked for
    ERROR_BACKOFF_S = 0.05  # after an unexpected transfer error, before the next try
    MAX_ERRORS_IN_A_ROW = 20  # ... so many in a row: the device is taken for lost
    STALLS_IN_A_ROW = 5  # an endpoint that stalls again after each clear: bound again
    JOIN_TIMEOUT_S = 2.0
    LINK_WAIT_S = 0.5  # opening waits this long for the first NETWORK_CONNECTION
    SEND_WAIT_MS = 20.0  # send waits this long for room in a full TX queue, then drops

    def __init__(
        self,
        bus: UsbTarget,
        *,
        mac: bytes | None = None,
        mtu: int = 1500,
        name: str | None = None,
        clock: Clock | None = None,
        rx_queue_frames: int = 256,
        tx_queue_frames: int = 64,
        device_buffer_frames: int = 32,
    ) -> None:
        if mac is not None:
            mac = bytes(mac)
            if len(mac) != 6 or mac[0] & 0x01 or mac == bytes(6):
                raise ValueError(f"mac must be 6 bytes, unicast, not zero; got {mac.hex(':')}")
        if not 68 <= mtu <= 65535:
            raise ValueError(f"mtu {mtu} outside 68..65535")
        if min(rx_queue_frames, tx_queue_frames, device_buffer_frames) < 1:
            raise ValueError("rx_queue_frames, tx_queue_frames and device_buffer_frames "
                             "must be at least 1")
        if name is not None and not name:
            raise ValueError("name must not be empty")
        self.mtu = mtu
        self.counters = DeviceCounters()
        self.rx_buffer_bytes: int | None = device_buffer_frames * (ETH_HEADER_LEN + 1500)
        self.speed_bps: tuple[int, int] | None = None  # (downlink, uplink), ECM 1.2 §6.3.3
        self.stalls_cleared = 0
        self.unplugs = 0
        self.replugs = 0
        self.notifications = 0
        self.link_changes = 0
        self.speed_changes = 0
        self.rx_queue_drops = 0
        self.tx_queue_drops = 0
        self.zlps_sent = 0
        self.rx_overflows = 0
        self.rx_zlps = 0
        self.tx_timeouts = 0
        self.tx_lost = 0
        self.usb_errors = 0
        self._target = bus
        self._given_mac = mac
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._rx_cap = rx_queue_frames
        self._tx_cap = tx_queue_frames
        self._lock = threading.Lock()  # queues, link, counters, eventfd state, session
        self._tx_ready = threading.Condition(self._lock)
        self._tx_room = threading.Condition(self._lock)  # the writer took a frame
        self._rx: deque[bytes] = deque()
        self._tx: deque[bytes] = deque()
        self._link = False
        self._link_event = False  # a link change the stack has not polled yet
        self._closed = False
        self._closing = threading.Event()
        self._told_link = threading.Event()  # a NETWORK_CONNECTION has arrived
        self._session: _Session | None = None
        self._rediscovery: threading.Thread | None = None
        self._known_serial: str | None = None  # what identifies the device on a replug
        self._known_port: str | None = None
        self._serial_cache: dict[tuple[Any, ...], str | None] = {}
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._efd_set = False
        try:
            dev, fn = self._find()
            session = self._open(dev, fn, first=True)
        except BaseException:
            os.close(self._efd)
            raise
        self.mac: bytes = mac if mac is not None else session.device_mac
        self._known_serial = bus.serial or session.serial
        self._known_port = None if self._known_serial else session.port_path
        label = session.port_path or f"{dev.bus}.{dev.address}"
        self.name = name if name is not None else f"cdc_ecm@{label}"
        self._install(session)
        self._finalizer = weakref.finalize(self, _close_at_exit, weakref.ref(self))
        if session.fn.ep_notify is not None:
            # A device says its link state right after alt 1 (ECM 1.2 §6.3.1): wait for
            # it briefly, so a stack that starts at once does not see a down link.
            self._told_link.wait(self.LINK_WAIT_S)

    # -- the Device contract ------------------------------------------------------------

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        """Queue one frame for the writer thread; False (counted) when it cannot go."""
        self._check_open()
        data = _as_bytes(frame)
        n = len(data)
        c = self.counters
        with self._lock:
            if self._closed:
                raise DeviceClosed(errno.EBADF, f"{self.name} is closed")
            if n < ETH_HEADER_LEN or n > self.mtu + ETH_HEADER_LEN:
                c.tx_errors += 1
                return False
            if self._session is None or not self._link:
                c.tx_dropped += 1
                return False
            if len(self._tx) >= self._tx_cap:
                # The bus drains the queue a frame at a time: wait for room briefly (as a
                # chip's driver waits for its transmitter) rather than drop what TCP would
                # have to send again.
                self._tx_room.wait_for(lambda: len(self._tx) < self._tx_cap or self._closed
                                       or self._session is None, self.SEND_WAIT_MS / 1000)
                if self._closed:
                    raise DeviceClosed(errno.EBADF, f"{self.name} is closed")
            if self._session is None or not self._link:
                c.tx_dropped += 1
                return False
            if len(self._tx) >= self._tx_cap:
                c.tx_dropped += 1
                self.tx_queue_drops += 1
                return False
            self._tx.append(data)
            c.tx_frames += 1
            c.tx_bytes += n
            self._tx_ready.notify()
        return True

    def poll(self, budget: int) -> list[bytes]:
        """Up to ``budget`` received frames, oldest first; clears ``fileno()`` when none
        are left."""
        self._check_open()
        out: list[bytes] = []
        if budget <= 0:
            return out
        with self._lock:
            if self._closed:
                raise DeviceClosed(errno.EBADF, f"{self.name} is closed")
            rx = self._rx
            while rx and len(out) < budget:
                out.append(rx.popleft())
            self.counters.rx_frames += len(out)
            self.counters.rx_bytes += sum(len(f) for f in out)
            self._link_event = False
            self._quiet_locked()
        return out

    @property
    def link_up(self) -> bool:
        """Carrier as the device last said (NETWORK_CONNECTION, ECM 1.2 §6.3.1), and the
        device on the bus."""
        return self._link and self._session is not None and not self._closed

    def fileno(self) -> int | None:
        """An eventfd, readable while frames wait or a link change is pending; None once
        closed."""
        return None if self._closed else self._efd

    def close(self) -> None:
        """Stop the threads, select alt 0, release the interfaces and re-attach the
        kernel driver we detached. Closing twice is fine."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            session, self._session = self._session, None
            if session is not None:
                session.stop.set()
            self._link = False
            self.tx_lost += len(self._tx)
            self._tx.clear()
            self._tx_ready.notify_all()
            self._tx_room.notify_all()
        self._closing.set()
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
        r = self._rediscovery
        if r is not None and r is not threading.current_thread():
            r.join(self.JOIN_TIMEOUT_S)
        if session is not None:
            self._join(session)
            self._release(session, gone=False)
        with self._lock:
            os.close(self._efd)

    # -- optional members and conveniences --------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """The driver's own counters (``STAT_NAMES``)."""
        with self._lock:
            return {n: int(getattr(self, n)) for n in STAT_NAMES}

    def probe(self) -> dict[str, object]:
        """Read the device descriptor and the MAC string again (USB 2.0 §9.4.3): what
        answered. ``ChipNotResponding`` when the device is off the bus or silent."""
        self._check_open()
        s = self._session
        where = f"{self.name} ({self._target.describe()})"
        if s is None:
            raise ChipNotResponding(f"{where}: the device is not on the bus "
                                    f"(looking for it every {self.REDISCOVER_S:g} s)")
        try:
            raw = bytes(s.dev.ctrl_transfer(0x80, _GET_DESCRIPTOR, _DT_DEVICE << 8, 0, 18,
                                            self.CONTROL_TIMEOUT_MS))
            mac_text = usb.util.get_string(s.dev, s.fn.mac_index)
        except (usb.core.USBError, ValueError, NotImplementedError) as e:
            raise ChipNotResponding(f"{where}: no answer to GET_DESCRIPTOR: {e}") from None
        if len(raw) < 18 or raw[1] != _DT_DEVICE:
            raise ChipNotResponding(f"{where}: device descriptor reads {raw.hex()}")
        vendor, product, bcd = struct.unpack_from("<HHH", raw, 8)
        try:
            mac = parse_mac_string(mac_text).hex(":")
        except ValueError as e:
            raise ChipNotResponding(f"{where}: {e}") from None
        return {"vendor": f"{vendor:04x}", "product": f"{product:04x}",
                "bcdDevice": f"{bcd:04x}", "mac": mac, "function": "cdc-ecm"}

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def function(self) -> EcmFunction | None:
        """Where the ECM function was found (None while the device is off the bus)."""
        s = self._session
        return None if s is None else s.fn

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._session else "unplugged")
        return f"{type(self).__name__}({getattr(self, 'name', '?')!r}, {state})"

    # -- finding the device -------------------------------------------------------------

    def _lsusb_hint(self) -> str:
        t = self._target
        if t.vendor is None and t.product is None:
            return "check: lsusb"
        v = "" if t.vendor is None else f"{t.vendor:04x}"
        p = "" if t.product is None else f"{t.product:04x}"
        return f"check: lsusb -d {v}:{p}"

    def _serial_of(self, dev: Any) -> str | None:
        """iSerialNumber's string, None when there is none or it cannot be read
        (EACCES re-raised: that is a message of its own)."""
        key = (dev.bus, dev.address, dev.idVendor, dev.idProduct)
        if key in self._serial_cache:
            return self._serial_cache[key]
        serial: str | None = None
        if dev.iSerialNumber:
            try:
                serial = dev.serial_number
            except usb.core.USBError as e:
                if _errno_of(e) == errno.EACCES:
                    raise
                serial = None
            except (ValueError, NotImplementedError):
                serial = None
        self._serial_cache[key] = serial
        return serial

    def _denied(self, dev: Any) -> HardwareNotFound:
        return HardwareNotFound(
            self._target.describe(),
            f"permission denied opening USB {dev.idVendor:04x}:{dev.idProduct:04x} "
            f"at bus {dev.bus} address {dev.address}",
            f"add a udev rule to /etc/udev/rules.d/50-hilkit-usb.rules: "
            f"{udev_rule(dev.idVendor, dev.idProduct)}; then run "
            "'udevadm control --reload' and replug the device",
        )

    def _find(self) -> tuple[Any, EcmFunction]:
        """The device the target names that has an ECM function (on a replug: the same
        serial, else the same port path). HardwareNotFound saying what was seen."""
        t = self._target
        what = t.describe()
        try:
            found = list(usb.core.find(find_all=True, backend=t.backend))
        except usb.core.NoBackendError as e:
            raise HardwareNotFound(what, f"no pyusb backend ({e})",
                                   "install libusb-1.0: apt install libusb-1.0-0") from None
        except usb.core.USBError as e:
            raise HardwareNotFound(what, f"enumerating USB devices failed: {e}",
                                   self._lsusb_hint()) from None
        candidates = [d for d in found if t.matches(d)]
        if not candidates:
            raise HardwareNotFound(what, "no USB device found", self._lsusb_hint())
        want_serial = self._known_serial or t.serial
        want_port = self._known_port
        serials: list[str] = []
        seen: list[str] = []
        denied: Any = None
        for dev in candidates:
            if want_port is not None and port_path_of(dev) != want_port:
                continue
            if want_serial is not None:
                try:
                    serial = self._serial_of(dev)
                except usb.core.USBError:
                    denied = denied or dev
                    continue
                if serial != want_serial:
                    serials.append(repr(serial))
                    continue
            fn, others = find_ecm_function(dev)
            if fn is not None:
                return dev, fn
            label = f"{dev.idVendor:04x}:{dev.idProduct:04x}"
            seen += [f"{label} {o}" for o in others] or [f"{label} (no network function)"]
        if denied is not None:
            raise self._denied(denied)
        if want_serial is not None and not seen:
            raise HardwareNotFound(
                what, f"no USB device with serial {want_serial!r} "
                f"(serials seen: {', '.join(serials) or 'none'})",
                self._lsusb_hint() + " -v | grep iSerial")
        if want_port is not None and not seen:
            raise HardwareNotFound(what, f"no USB device at {want_port}", self._lsusb_hint())
        net = [s for s in seen if "RNDIS" in s or "NCM" in s]
        if net:
            raise HardwareNotFound(
                what, f"found only {'; '.join(seen)}: this driver needs CDC-ECM "
                "(communications interface 02/06/00, USB CDC ECM 1.2)",
                "configure the device or gadget for ECM (Linux gadget: the 'ecm' "
                "function, or g_ether without RNDIS)")
        raise HardwareNotFound(
            what, f"no CDC-ECM function (communications interface 02/06/00 with Header, "
            f"Union and Ethernet descriptors) on {'; '.join(seen)}",
            self._lsusb_hint() + " -v")

    # -- bring-up ---------------------------------------------------------------------------

    def _open(self, dev: Any, fn: EcmFunction, *, first: bool) -> _Session:
        """Bring the function up (docs/hardware/cdc_ecm.md §1-§4); on failure leave the
        device as it was found and raise what a person must be told."""
        what = self._target.describe()
        detached: list[int] = []
        try:
            if not first:
                # Found again after it was lost: it may have reset itself, and the host's
                # idea of its configuration (what libusb reports) is then stale. A port
                # reset (USB 2.0 §7.1.7.5) makes the host set it up again as it knows it.
                dev.reset()
            self._bring_up(dev, fn, detached)
            try:
                mac_text = usb.util.get_string(dev, fn.mac_index)
            except (usb.core.USBError, ValueError) as e:
                raise ChipNotResponding(f"{what}: cannot read the MAC string "
                                        f"(iMACAddress {fn.mac_index}): {e}") from None
            try:
                device_mac = parse_mac_string(mac_text)
            except ValueError as e:
                raise ChipNotResponding(
                    f"{what} (USB {dev.idVendor:04x}:{dev.idProduct:04x}): {e}") from None
            if first and self.mtu + ETH_HEADER_LEN > fn.max_segment:
                raise ValueError(f"mtu {self.mtu} too large: {what} carries frames of at "
                                 f"most {fn.max_segment} bytes (wMaxSegmentSize)")
            # ECM 1.2 §5.3: alt 0 stops and resets the data path, the bulk alt starts it.
            dev.set_interface_altsetting(interface=fn.data_if, alternate_setting=0)
            dev.set_interface_altsetting(interface=fn.data_if, alternate_setting=fn.data_alt)
            wanted = self._given_mac if first else getattr(self, "mac", None)
            filt = PACKET_TYPE_DIRECTED | PACKET_TYPE_BROADCAST | PACKET_TYPE_ALL_MULTICAST
            if wanted is not None and wanted != device_mac:
                filt |= PACKET_TYPE_PROMISCUOUS
            try:
                dev.ctrl_transfer(REQ_TYPE_CLASS_IFACE_OUT, SET_ETHERNET_PACKET_FILTER, filt,
                                  fn.control_if, None, self.CONTROL_TIMEOUT_MS)
            except usb.core.USBError as e:
                if _errno_of(e) in (errno.ENODEV, errno.EACCES):
                    raise
                # Optional for a device to honour; Linux ignores the outcome as well.
                log.warning("%s: SET_ETHERNET_PACKET_FILTER 0x%02x refused: %s", what, filt, e)
        except usb.core.USBError as e:
            self._undo(dev, fn, detached)
            code = _errno_of(e)
            if code == errno.EACCES:
                raise self._denied(dev) from None
            if code == errno.EBUSY:
                raise HardwareNotFound(what, f"interface busy: {e}",
                                       "another program has claimed it; close it") from None
            if code == errno.ENODEV:
                raise HardwareNotFound(what, "the device left the bus during bring-up",
                                       self._lsusb_hint()) from None
            raise ChipNotResponding(f"{what}: bring-up failed: {e}") from None
        except BaseException:
            self._undo(dev, fn, detached)
            raise
        serial = None
        with contextlib.suppress(usb.core.USBError):
            serial = self._serial_of(dev)
        return _Session(dev, fn, device_mac, detached, port_path_of(dev), serial)

    def _bring_up(self, dev: Any, fn: EcmFunction, detached: list[int]) -> None:
        """Kernel driver off, configuration (USB 2.0 §9.4.7), both interfaces claimed."""
        active: int | None
        try:
            active = dev.get_active_configuration().bConfigurationValue
        except usb.core.USBError as e:
            if _errno_of(e) in (errno.ENODEV, errno.EACCES):
                raise
            active = None  # unconfigured (Address state)
        if active is not None and active != fn.config:
            # A driver bound in the other configuration would refuse SET_CONFIGURATION.
            with contextlib.suppress(usb.core.USBError, ValueError, NotImplementedError):
                for intf in dev.get_active_configuration():
                    if intf.bAlternateSetting == 0:
                        self._detach(dev, intf.bInterfaceNumber, [])
        if active != fn.config:
            dev.set_configuration(fn.config)
        for i in (fn.control_if, fn.data_if):
            self._detach(dev, i, detached)
        for i in (fn.control_if, fn.data_if):
            usb.util.claim_interface(dev, i)

    @staticmethod
    def _detach(dev: Any, interface: int, detached: list[int]) -> None:
        try:
            bound = dev.is_kernel_driver_active(interface)
        except NotImplementedError:
            return
        except usb.core.USBError as e:
            if _errno_of(e) in (errno.ENODEV, errno.EACCES):
                raise
            return  # not supported on this platform or backend
        if bound:
            dev.detach_kernel_driver(interface)
            detached.append(interface)

    def _undo(self, dev: Any, fn: EcmFunction, detached: list[int]) -> None:
        for i in (fn.data_if, fn.control_if):
            with contextlib.suppress(Exception):
                usb.util.release_interface(dev, i)
        for i in detached:
            with contextlib.suppress(Exception):
                dev.attach_kernel_driver(i)
        with contextlib.suppress(Exception):
            usb.util.dispose_resources(dev)

    def _release(self, s: _Session, *, gone: bool) -> None:
        """Hand the device back: alt 0, interfaces released, kernel driver re-attached."""
        dev, fn = s.dev, s.fn
        if not gone:
            with contextlib.suppress(Exception):
                dev.set_interface_altsetting(interface=fn.data_if, alternate_setting=0)
        for i in (fn.data_if, fn.control_if):
            with contextlib.suppress(Exception):
                usb.util.release_interface(dev, i)
        if not gone:
            for i in s.detached:
                try:
                    dev.attach_kernel_driver(i)
                except Exception as e:  # close must not raise
                    log.warning("%s: could not re-attach the kernel driver of interface "
                                "%d: %s", self.name, i, e)
        with contextlib.suppress(Exception):
            usb.util.dispose_resources(dev)

    def _install(self, s: _Session, *, replug: bool = False) -> bool:
        """Make ``s`` the live session and start its threads; False if closed meanwhile."""
        with self._lock:
            if self._closed:
                return False
            self._session = s
            self.replugs += replug
            self._set_link_locked(s.fn.ep_notify is None)
        threads = [("rx", self._reader), ("tx", self._writer)]
        if s.fn.ep_notify is not None:
            threads.append(("notify", self._notifier))
        for role, body in threads:
            t = threading.Thread(target=body, args=(s,), name=f"{self.name}-{role}", daemon=True)
            s.threads.append(t)
            t.start()
        return True

    def _join(self, s: _Session) -> None:
        me = threading.current_thread()
        for t in s.threads:
            if t is not me:
                t.join(self.JOIN_TIMEOUT_S)

    # -- the threads --------------------------------------------------------------------

    def _reader(self, s: _Session) -> None:
        """Bulk IN: one completed read is one frame (ECM 1.2 §3.3)."""
        buf = usb.util.create_buffer(s.rx_size)
        failures = 0
        while not s.stop.is_set():
            try:
                n = s.dev.read(s.fn.ep_in, buf, self.RX_TIMEOUT_MS)
            except Exception as e:  # everything is counted, nothing escapes
                code = _errno_of(e)
                if code == errno.ETIMEDOUT:
                    continue
                if code == errno.EOVERFLOW:  # babble: more than we asked for
                    with self._lock:
                        self.counters.rx_errors += 1
                        self.rx_overflows += 1
                    continue
                if self._transfer_failed(s, e, s.fn.ep_in, failures):
                    failures += 1
                    continue
                return
            failures = 0
            self._received(s, buf[:n].tobytes())

    def _received(self, s: _Session, data: bytes) -> None:
        n = len(data)
        if n == 0:
            with self._lock:
                self.rx_zlps += 1
            return
        if n > s.fn.max_segment and (n - 1) % s.fn.in_max_packet == 0:
            data = data[:-1]  # a device that pads a whole-packet frame by one byte
        with self._lock:
            if n < ETH_HEADER_LEN:
                self.counters.rx_errors += 1
                return
            if s.stop.is_set():
                return
            if len(self._rx) >= self._rx_cap:
                self.counters.rx_dropped += 1
                self.rx_queue_drops += 1
                return
            self._rx.append(data)
            self._signal_locked()

    def _writer(self, s: _Session) -> None:
        """Bulk OUT: the frame, then a ZLP if it filled its last packet (USB 2.0 §5.8.3)."""
        while True:
            with self._lock:
                while not self._tx and not s.stop.is_set():
                    self._tx_ready.wait()
                if s.stop.is_set():
                    return
                frame = self._tx.popleft()
                self._tx_room.notify()
            if not self._write(s, frame):
                with self._lock:
                    self.tx_lost += 1
                continue
            if len(frame) % s.fn.out_max_packet == 0 and self._write(s, b""):
                with self._lock:
                    self.zlps_sent += 1

    def _write(self, s: _Session, data: bytes) -> bool:
        """One bulk OUT transfer; a STALL is cleared and the transfer tried again once."""
        failures = 0
        for _ in range(2):
            if s.stop.is_set():
                return False
            try:
                s.dev.write(s.fn.ep_out, data, self.TX_TIMEOUT_MS)
                return True
            except Exception as e:  # everything is counted, nothing escapes
                if _errno_of(e) == errno.ETIMEDOUT:
                    with self._lock:
                        self.tx_timeouts += 1
                    return False
                if not self._transfer_failed(s, e, s.fn.ep_out, failures):
                    return False
                failures += 1
        return False

    def _notifier(self, s: _Session) -> None:
        """Interrupt IN, one wMaxPacketSize at a time (ECM 1.2 §6.3)."""
        assert s.fn.ep_notify is not None
        parser = NotificationParser()
        failures = 0
        while not s.stop.is_set():
            try:
                data = s.dev.read(s.fn.ep_notify, s.fn.notify_max_packet, self.NOTIFY_TIMEOUT_MS)
            except Exception as e:  # everything is counted, nothing escapes
                code = _errno_of(e)
                if code == errno.ETIMEDOUT:
                    continue
                if code == errno.EOVERFLOW:
                    parser.reset()
                    with self._lock:
                        self.usb_errors += 1
                    continue
                if self._transfer_failed(s, e, s.fn.ep_notify, failures):
                    failures += 1
                    continue
                return
            failures = 0
            for code, value, _index, payload in parser.feed(bytes(data)):
                self._notified(s, code, value, payload)

    def _notified(self, s: _Session, code: int, value: int, payload: bytes) -> None:
        with self._lock:
            if s is not self._session:
                return
            self.notifications += 1
            if code == NETWORK_CONNECTION:
                self._set_link_locked(value != 0)
                self._told_link.set()
            elif code == CONNECTION_SPEED_CHANGE and len(payload) >= 8:
                down, up = struct.unpack_from("<II", payload)
                self.speed_bps = (down, up)
                self.speed_changes += 1

    def _transfer_failed(self, s: _Session, e: BaseException, ep: int, failures: int) -> bool:
        """A transfer on ``ep`` raised ``e`` (not a timeout): count it, clear a STALL,
        back off after anything else. False when the session is over."""
        if s.stop.is_set():
            return False
        code = _errno_of(e)
        if code == errno.ENODEV:
            self._lost(s, "unplugged")
            return False
        if code == errno.EPIPE:  # STALL: halted until CLEAR_FEATURE(ENDPOINT_HALT), USB 2.0 §9.4.1
            try:
                s.dev.clear_halt(ep)
                with self._lock:
                    self.stalls_cleared += 1
                if failures + 1 >= self.STALLS_IN_A_ROW:
                    # Stalled again after every clear: the function lost its state (a
                    # device that reset itself): bind it again from the start.
                    self._lost(s, f"endpoint 0x{ep:02x} stalled {failures + 1} times in a row")
                    return False
                if failures:  # stalled again at once: do not spin on it
                    s.stop.wait(self.ERROR_BACKOFF_S)
                return not s.stop.is_set()
            except Exception as e2:
                if _errno_of(e2) == errno.ENODEV:
                    self._lost(s, "unplugged")
                    return False
                e = e2
        with self._lock:
            self.usb_errors += 1
        if failures + 1 >= self.MAX_ERRORS_IN_A_ROW:
            self._lost(s, f"{failures + 1} transfer errors in a row, last: {e}")
            return False
        log.debug("%s: transfer on 0x%02x failed: %s", self.name, ep, e)
        s.stop.wait(self.ERROR_BACKOFF_S)
        return not s.stop.is_set()

    # -- losing and finding the device again ------------------------------------------------

    def _lost(self, s: _Session, why: str) -> None:
        """The device went away: link down, threads stop, rediscovery starts."""
        with self._lock:
            if s.lost or s.stop.is_set():
                return
            s.lost = True
            s.stop.set()
            self._tx_ready.notify_all()
            self._tx_room.notify_all()
            if self._session is s:
                self._session = None
            self.unplugs += 1
            self.tx_lost += len(self._tx)
            self._tx.clear()
            self._set_link_locked(False)
            if self._closed:
                return
            log.warning("%s: device lost (%s); looking for it again every %g s",
                        self.name, why, self.REDISCOVER_S)
            t = threading.Thread(target=self._rediscover, args=(s,),
                                 name=f"{self.name}-rediscover", daemon=True)
            self._rediscovery = t
            t.start()

    def _rediscover(self, old: _Session) -> None:
        """Find the device again (a replugged device has a new address), bring it up and
        resume traffic under the same ``CdcEcmDevice``."""
        self._join(old)
        self._release(old, gone=True)
        self._serial_cache.clear()
        while not self._closing.wait(self.REDISCOVER_S):
            try:
                dev, fn = self._find()
                s = self._open(dev, fn, first=False)
            except Exception as e:  # not back yet: try again
                log.debug("%s: not back yet: %s", self.name, e)
                self._serial_cache.clear()
                continue
            if s.device_mac != self.mac and self._given_mac is None:
                log.warning("%s: the device came back with MAC %s (was %s)", self.name,
                            s.device_mac.hex(":"), self.mac.hex(":"))
            if not self._install(s, replug=True):
                self._release(s, gone=False)
                return
            log.warning("%s: device back (%s); traffic resumes", self.name,
                        s.port_path or "unknown port")
            return

    # -- plumbing ---------------------------------------------------------------------------

    def _set_link_locked(self, up: bool) -> None:
        if up == self._link:
            return
        self._link_event = True
        self._signal_locked()  # readable before link_up shows the change
        self.link_changes += 1
        self._link = up

    def _signal_locked(self) -> None:
        """Make the eventfd readable (at most one write while it is)."""
        if not self._efd_set and not self._closed:
            os.eventfd_write(self._efd, 1)
            self._efd_set = True

    def _quiet_locked(self) -> None:
        """Make the eventfd unreadable once nothing is pending."""
        if self._efd_set and not self._rx and not self._link_event:
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(self._efd)
            self._efd_set = False

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceClosed(errno.EBADF, f"{getattr(self, 'name', 'cdc_ecm')} is closed")

"""A USB CDC-ECM gadget on the virtual USB bus: an Ethernet adapter whose far side is a wire.

Written from the USB CDC 1.2 and ECM 1.2 specifications (section numbers below
are theirs); what a reader needs is collected in ``docs/hardware/cdc_ecm.md``,
which also states every choice made where the specifications leave room. The
model is a device (``hilkit.sim.usb.device.UsbDeviceModel``): the virtual bus
hands it packets, and it frames them the way an ECM function's silicon does, so
a host driver runs the code it would run against a real adapter.

Layout (every configuration uses the same interface and endpoint numbers):

* interface 0, the Communications interface (ECM: class 0x02/0x06/0x00) with
  the Header, Union and Ethernet Networking functional descriptors, and the
  interrupt IN notification endpoint 0x83 (unless ``options.notifications`` is off);
* interface 1, the Data interface (0x0A): alternate setting 0 has no endpoints,
  alternate setting 1 has bulk IN 0x81 and bulk OUT 0x02 (ECM 1.2 §5.3).

Frames from the host (bulk OUT) go to ``wire.send``; frames from the wire
(``wire.poll``, pulled whenever the model is touched and while a host thread
waits) pass the packet filter (ECM 1.2 §6.2.4) and queue towards the host. The
wire's carrier is reported with NETWORK_CONNECTION notifications (ECM 1.2 §6.3.1).
Without a wire, frames sent are collected in ``sent`` and frames arrive through
``inject``. A model never imports a driver.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import Final

from hilkit.drivers.cdc_ecm import proto as p
from hilkit.port.clock import Clock, MonotonicClock
from hilkit.port.device import Device, DeviceClosed
from hilkit.sim.usb import descriptors as d
from hilkit.sim.usb.device import BULK_MAX_PACKET, Setup, Speed, Stall, UsbDeviceModel

__all__ = [
    "BULK_IN", "BULK_OUT", "CONTROL_INTERFACE", "DATA_INTERFACE", "NOTIFY_IN",
    "STAT_KEYS", "CdcEcmFaults", "CdcEcmModel", "CdcEcmOptions", "content_length",
    "parse_mac",
]

CONTROL_INTERFACE: Final = 0
DATA_INTERFACE: Final = 1
BULK_IN: Final = 0x81
BULK_OUT: Final = 0x02
NOTIFY_IN: Final = 0x83

MC_FILTERS: Final = 16  # wNumberMCFilters: 16 perfect filters (bit 15 clear), ECM 1.2 §5.4
# Packet filter after reset and after SET_INTERFACE(data, 0): what a host needs to talk
# IP at once; the specifications leave it to the device (docs/hardware/cdc_ecm.md).
RESET_PACKET_FILTER: Final = p.PACKET_TYPE_DIRECTED | p.PACKET_TYPE_BROADCAST
NOTIFY_MAX_PACKET: Final = 16  # a whole CONNECTION_SPEED_CHANGE (8 + 8 bytes) in one packet
NOTIFY_MAX_PACKET_SPLIT: Final = 8
# bInterval of the notification endpoint: 32 ms either way (USB 2.0 §9.6.6: frames at
# full speed; 2**(n-1) microframes at high speed, 2**8 * 125 us = 32 ms).
NOTIFY_INTERVAL: Final = {Speed.FULL: 32, Speed.HIGH: 9}
# CONNECTION_SPEED_CHANGE reports the USB signalling rate: the wire behind the model (a
# TAP) has no speed of its own, and the bus is what bounds the adapter.
BUS_BIT_RATE: Final = {Speed.FULL: 12_000_000, Speed.HIGH: 480_000_000}
NOTIFY_QUEUE: Final = 32  # notifications held for a host that does not read them
WIRE_BUDGET: Final = 64  # frames pulled from the wire per touch
WAIT_SLICE_S: Final = 0.05  # carrier has no descriptor: look at it this often in ``wait``
_BROADCAST: Final = b"\xff" * 6
_ETH_HLEN: Final = 14

_STR_MANUFACTURER, _STR_PRODUCT, _STR_SERIAL, _STR_MAC, _STR_ECM, _STR_RNDIS, _STR_NCM = range(1, 8)

STAT_KEYS: Final = (
    "to_wire_frames",  # frames from the host put on the wire
    "to_wire_bytes",
    "to_host_frames",  # frames the host has read whole from bulk IN
    "to_host_bytes",
    "wire_send_failed",  # ``wire.send`` refused the frame (False or a closed wire)
    "filtered_frames",  # frames from the wire the packet filter dropped
    "queue_full_drops",  # frames from the wire dropped: rx_queue_frames were waiting
    "flushed_frames",  # frames dropped unread by SET_INTERFACE, SET_CONFIGURATION, reset
    "data_off_drops",  # frames from the wire while the data interface was at alt 0
    "wire_oversize_drops",  # frames from the wire longer than wMaxSegmentSize
    "wire_runt_drops",  # frames from the wire shorter than an Ethernet header
    "oversize_frames",  # bulk OUT transfers longer than wMaxSegmentSize, dropped
    "runt_frames",  # bulk OUT transfers shorter than an Ethernet header, dropped
    "merged_transfers",  # transfers that held more than one frame (no ZLP or pad)
    "pad_bytes_stripped",  # one-byte pads after an exact multiple of wMaxPacketSize
    "zlps_received",  # ZLPs that ended a bulk OUT transfer
    "stray_zlps",  # ZLPs with no transfer to end
    "zlps_sent",  # ZLPs that ended a bulk IN transfer
    "notifications_sent",
    "notifications_dropped",  # the drop_notifications fault
    "notifications_duplicated",  # the duplicate_notifications fault
    "notifications_overflow",  # oldest dropped: NOTIFY_QUEUE were unread
    "carrier_changes",
    "packet_filter",  # the current SET_ETHERNET_PACKET_FILTER bitmap (a value, not a count)
)


def parse_mac(text: str) -> bytes:
    """A MAC from "02:00:de:ad:be:ef", "02-00-..." or "0200deadbeef"; ValueError otherwise."""
    digits = text.replace(":", "").replace("-", "")
    if len(digits) != 12:
        raise ValueError(f"MAC {text!r}: want 12 hex digits")
    try:
        mac = bytes.fromhex(digits)
    except ValueError:
        raise ValueError(f"MAC {text!r}: not hexadecimal") from None
    if mac[0] & 1:
        raise ValueError(f"MAC {text!r} is a multicast address")
    return mac


def content_length(frame: bytes | bytearray) -> int | None:
    """How long ``frame`` must be by its own headers (IPv4 total length, IPv6 payload
    length, ARP, an 802.3 length field), or None if they do not say. What follows is
    padding, so a device may drop it; it decides pad bytes and merged transfers with this."""
    if len(frame) < _ETH_HLEN:
        return None
    etype = int.from_bytes(frame[12:14], "big")
    if etype <= 1500:  # IEEE 802.3 clause 3.2.6: a length, not a type
        return _ETH_HLEN + etype
    if etype == 0x0800 and len(frame) >= _ETH_HLEN + 4 and frame[14] >> 4 == 4:
        return _ETH_HLEN + int.from_bytes(frame[16:18], "big")
    if etype == 0x86DD and len(frame) >= _ETH_HLEN + 6 and frame[14] >> 4 == 6:
        return _ETH_HLEN + 40 + int.from_bytes(frame[18:20], "big")
    if etype == 0x0806 and len(frame) >= _ETH_HLEN + 6:  # RFC 826: 8 + 2 * (hln + pln)
        return _ETH_HLEN + 8 + 2 * (frame[18] + frame[19])
    return None


@dataclass
class CdcEcmOptions:
    """What the adapter is (rig table ``bus.options``); docs/hardware/cdc_ecm.md."""

    speed: str = "high"  # "full" (12 Mb/s, bulk 64) or "high" (480 Mb/s, bulk 512)
    vendor: int = 0x0525  # the ids Linux's Ethernet gadget offers for CDC Ethernet
    product: int = 0xA4A2
    serial: str = "hilkit-ecm-0001"
    mac: str = ""  # iMACAddress; empty: from the seed, locally administered
    rndis_first: bool = False  # configuration 1 RNDIS, configuration 2 ECM
    notifications: bool = True  # False: no interrupt endpoint on the control interface
    speed_change_split: bool = False  # notification endpoint of 8 bytes: speed change in two
    kernel_driver_bound: bool = False  # both interfaces start bound (cdc_ether would be)
    ncm_only: bool = False  # the only configuration is NCM (no ECM)
    rndis_only: bool = False  # the only configuration is RNDIS (no ECM)

    def __post_init__(self) -> None:
        if self.speed not in ("full", "high"):
            raise ValueError(f"speed {self.speed!r}: want 'full' or 'high'")
        for name in ("vendor", "product"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFF:
                raise ValueError(f"{name} {v!r}: want a 16-bit id")
        if not self.serial or len(self.serial) > 126:
            raise ValueError(f"serial {self.serial!r}: want 1..126 characters")
        if self.mac:
            parse_mac(self.mac)
        if self.ncm_only and self.rndis_only:
            raise ValueError("ncm_only and rndis_only exclude each other")
        if self.rndis_first and (self.ncm_only or self.rndis_only):
            raise ValueError("rndis_first needs the ECM configuration (not ncm_only/rndis_only)")
        if self.speed_change_split and not self.notifications:
            raise ValueError("speed_change_split needs notifications")

    @property
    def usb_speed(self) -> Speed:
        return Speed.FULL if self.speed == "full" else Speed.HIGH


@dataclass
class CdcEcmFaults:
    """Faults and limits (rig table ``bus.faults``); each hit is counted in ``stats``."""

    drop_notifications: int = 0  # the first n notifications never reach the host
    duplicate_notifications: int = 0  # the first n notifications (not dropped) come twice
    # An exact multiple of wMaxPacketSize with neither ZLP nor pad runs into the next
    # frame's transfer (USB 2.0 §5.8.3: only a short packet ends it), as on silicon.
    # False: the model ends the frame there when its own headers say it is complete.
    no_pad_merge: bool = True
    rx_queue_frames: int = 32  # frames queued towards the host before it drops (its requests)

    def __post_init__(self) -> None:
        for name in ("drop_notifications", "duplicate_notifications"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} {v!r}: want a count >= 0")
        q = self.rx_queue_frames
        if isinstance(q, bool) or not isinstance(q, int) or q < 1:
            raise ValueError(f"rx_queue_frames {q!r}: want at least 1")


class CdcEcmModel(UsbDeviceModel):
    """A CDC-ECM adapter (ECM 1.2) bridging the host's bulk pipes to ``wire``.

    ``mac`` is the iMACAddress MAC: the address the host interface takes, and the one
    DIRECTED frames must carry. ``kernel_driver_bound`` holds the interface numbers a
    kernel driver has when the device is plugged (the bus reads it on ``plug``).
    ``stats`` counts what happened.
    """

    def __init__(self, *, wire: Device | None, clock: Clock, seed: int = 0,
                 faults: CdcEcmFaults | None = None, timing: None = None,
                 options: CdcEcmOptions | None = None) -> None:
        super().__init__()
        del timing  # nothing here takes time of its own
        self.wire = wire
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.faults = faults if faults is not None else CdcEcmFaults()
        self.options = opts = options if options is not None else CdcEcmOptions()
        self.speed = opts.usb_speed
        self.bulk_max_packet: int = BULK_MAX_PACKET[self.speed]
        self.notify_max_packet = NOTIFY_MAX_PACKET_SPLIT if opts.speed_change_split \
            else NOTIFY_MAX_PACKET
        if opts.mac:
            self.mac = parse_mac(opts.mac)
        else:
            raw = bytearray(random.Random(seed).randbytes(6))
            raw[0] = (raw[0] & 0xFC) | 0x02  # IEEE 802: locally administered, unicast
            self.mac = bytes(raw)
        self.kernel_driver_bound = frozenset(
            {CONTROL_INTERFACE, DATA_INTERFACE} if opts.kernel_driver_bound else ())
        self.sent: list[bytes] = []  # frames sent while there is no wire
        self._build_descriptors()
        self._stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._config = 0
        self._data_on = False
        self._filter = RESET_PACKET_FILTER
        self._multicast: set[bytes] = set()
        self._rx: deque[bytes] = deque()
        self._in_cur: bytes | None = None  # the frame bulk IN is handing out
        self._in_off = 0
        self._out = bytearray()  # the bulk OUT transfer so far
        self._out_discard = False  # too long already: swallow until its short packet
        self._out_lenient_end = False  # no_pad_merge=False ended a frame on a full packet
        self._notify: deque[list[bytes]] = deque()  # notifications, as packets
        self._notify_cur: list[bytes] = []
        self._notified = 0  # notifications made so far (the faults count these)
        self._wire_dead = False
        self._carrier = self._wire_carrier()
        self._closed = False
        self._news = 0  # things queued for the host; ``wait`` returns when it moves
        self._waiters: set[int] = set()  # the eventfd of each thread in ``wait``

    # -- descriptors (USB 2.0 §9.6, CDC 1.2 §5.2.3, ECM 1.2 §5) ------------------------------

    @property
    def ecm_config(self) -> int | None:
        """bConfigurationValue of the ECM configuration, None if the device has none."""
        if self.options.ncm_only or self.options.rndis_only:
            return None
        return 2 if self.options.rndis_first else 1

    def _build_descriptors(self) -> None:
        o = self.options
        self.strings = {
            _STR_MANUFACTURER: "hilkit",
            _STR_PRODUCT: "hilkit virtual CDC Ethernet",
            _STR_SERIAL: o.serial,
            _STR_MAC: self.mac.hex().upper(),  # ECM 1.2 §5.4: 12 hex digits, MSB first
            _STR_ECM: "CDC Ethernet (ECM)",
            _STR_RNDIS: "RNDIS",
            _STR_NCM: "CDC Network (NCM)",
        }
        if o.ncm_only:
            configs = [self._ncm_config(1)]
        elif o.rndis_only:
            configs = [self._rndis_config(1)]
        elif o.rndis_first:
            configs = [self._rndis_config(1), self._ecm_config(2)]
        else:
            configs = [self._ecm_config(1)]
        self.configurations = configs
        self.device_descriptor = d.device(
            vendor=o.vendor, product=o.product, cls=p.CDC_CLASS_COMM,
            i_manufacturer=_STR_MANUFACTURER, i_product=_STR_PRODUCT, i_serial=_STR_SERIAL,
            num_configurations=len(configs))

    def _notify_endpoint(self) -> bytes:
        return d.endpoint(NOTIFY_IN, d.EP_INTERRUPT, self.notify_max_packet,
                          NOTIFY_INTERVAL[self.speed])

    def _bulk_endpoints(self) -> list[bytes]:
        mp = self.bulk_max_packet
        return [d.endpoint(BULK_IN, d.EP_BULK, mp), d.endpoint(BULK_OUT, d.EP_BULK, mp)]

    def _ethernet(self) -> bytes:
        return p.ethernet_descriptor(i_mac=_STR_MAC, statistics=0, mc_filters=MC_FILTERS)

    def _ecm_config(self, value: int) -> bytes:
        """ECM 1.2 §5: control interface with its functional descriptors, data
        interface with alt 0 (no endpoints) and alt 1 (the bulk pair)."""
        notify = self.options.notifications
        body = [
            d.interface(CONTROL_INTERFACE, 0, num_endpoints=int(notify), cls=p.CDC_CLASS_COMM,
                        subclass=p.CDC_SUBCLASS_ECM, protocol=p.CDC_PROTO_NONE),
            p.header_descriptor(),
            p.union_descriptor(CONTROL_INTERFACE, DATA_INTERFACE),
            self._ethernet(),
            *([self._notify_endpoint()] if notify else []),
            d.interface(DATA_INTERFACE, 0, num_endpoints=0, cls=p.CDC_CLASS_DATA),
            d.interface(DATA_INTERFACE, 1, num_endpoints=2, cls=p.CDC_CLASS_DATA),
            *self._bulk_endpoints(),
        ]
        return d.configuration(value, body, num_interfaces=2, i_configuration=_STR_ECM)

    def _ncm_config(self, value: int) -> bytes:
        """NCM 1.0 §5: like ECM, subclass 0x0D, an NCM functional descriptor, and the
        data interface's alt 1 speaking NTBs (protocol 0x01). Not modelled past descriptors."""
        ncm = struct.pack("<BBBHB", 6, p.CS_INTERFACE, p.FD_NCM, 0x0100, 0)
        body = [
            d.interface(CONTROL_INTERFACE, 0, num_endpoints=1, cls=p.CDC_CLASS_COMM,
                        subclass=p.CDC_SUBCLASS_NCM, protocol=p.CDC_PROTO_NONE),
            p.header_descriptor(), p.union_descriptor(CONTROL_INTERFACE, DATA_INTERFACE),
            self._ethernet(), ncm, self._notify_endpoint(),
            d.interface(DATA_INTERFACE, 0, num_endpoints=0, cls=p.CDC_CLASS_DATA),
            d.interface(DATA_INTERFACE, 1, num_endpoints=2, cls=p.CDC_CLASS_DATA, protocol=0x01),
            *self._bulk_endpoints(),
        ]
        return d.configuration(value, body, num_interfaces=2, i_configuration=_STR_NCM)

    def _rndis_config(self, value: int) -> bytes:
        """RNDIS as gadgets offer it: class 0x02/0x02/0xFF control interface (Header, Call
        Management, ACM, Union) and one data interface with the bulk pair. Not modelled
        past descriptors: a host driver must pick the ECM configuration."""
        call_mgmt = struct.pack("<BBBBB", 5, p.CS_INTERFACE, 0x01, 0x00, DATA_INTERFACE)
        acm = struct.pack("<BBBB", 4, p.CS_INTERFACE, 0x02, 0x00)
        body = [
            d.interface(CONTROL_INTERFACE, 0, num_endpoints=1, cls=p.CDC_CLASS_COMM,
                        subclass=p.CDC_SUBCLASS_ACM, protocol=p.CDC_PROTO_VENDOR),
            p.header_descriptor(0x0110), call_mgmt, acm,
            p.union_descriptor(CONTROL_INTERFACE, DATA_INTERFACE),
            d.endpoint(NOTIFY_IN, d.EP_INTERRUPT, 8, NOTIFY_INTERVAL[self.speed]),
            d.interface(DATA_INTERFACE, 0, num_endpoints=2, cls=p.CDC_CLASS_DATA),
            *self._bulk_endpoints(),
        ]
        return d.configuration(value, body, num_interfaces=2, i_configuration=_STR_RNDIS)

    # -- state ------------------------------------------------------------------------------

    @property
    def configuration(self) -> int:
        """The current bConfigurationValue (0: not configured)."""
        return self._config

    @property
    def data_on(self) -> bool:
        """The data interface is at alt 1 in the ECM configuration: frames flow."""
        return self._data_on

    @property
    def packet_filter(self) -> int:
        return self._filter

    @property
    def multicast_filters(self) -> frozenset[bytes]:
        return frozenset(self._multicast)

    @property
    def stats(self) -> dict[str, int]:
        with self.lock:
            self._stats["packet_filter"] = self._filter
            return dict(self._stats)

    def _in_ecm(self) -> bool:
        return self._config != 0 and self._config == self.ecm_config

    def _flush(self) -> None:
        """Drop everything in flight on the data pipes (counted)."""
        n = len(self._rx) + (self._in_cur is not None)
        self._stats["flushed_frames"] += n
        self._rx.clear()
        self._in_cur, self._in_off = None, 0
        self._out.clear()
        self._out_discard = self._out_lenient_end = False

    def _stop(self) -> None:
        """Data interface back to alt 0 (ECM 1.2 §5.3): no traffic, filters reset."""
        self._flush()
        self._data_on = False
        self._filter = RESET_PACKET_FILTER
        self._multicast.clear()
        self._notify.clear()
        self._notify_cur = []

    def set_configuration(self, value: int) -> None:
        with self.lock:
            self._stop()
            self._config = value

    def bus_reset(self) -> None:
        with self.lock:
            self._stop()
            self._config = 0

    def set_interface(self, interface: int, alt: int) -> None:
        """SET_INTERFACE(data, 1) starts the data path and reports speed and carrier
        (ECM 1.2 §6.3); SET_INTERFACE(data, 0) stops and flushes it (ECM 1.2 §5.3)."""
        with self.lock:
            self._pump()
            if not self._in_ecm() or interface != DATA_INTERFACE:
                return
            if alt == 0:
                self._stop()
                return
            self._flush()
            self._data_on = True
            self._carrier = self._wire_carrier()
            rate = BUS_BIT_RATE[self.speed]
            self._queue_notification(p.CONNECTION_SPEED_CHANGE, 0,
                                     struct.pack("<II", rate, rate))
            self._queue_notification(p.NETWORK_CONNECTION, int(self._carrier))

    def clear_halt(self, endpoint: int) -> None:
        """A halt cleared resets the pipe; what was in flight on it is gone."""
        with self.lock:
            num = endpoint & 0x7F
            if num == BULK_OUT & 0x7F and not endpoint & d.EP_IN:
                self._out.clear()
                self._out_discard = self._out_lenient_end = False
            elif num == BULK_IN & 0x7F and self._in_cur is not None:
                self._stats["flushed_frames"] += 1
                self._in_cur, self._in_off = None, 0

    # -- class requests (ECM 1.2 §6.2) ---------------------------------------------------

    def control(self, setup: Setup, data: bytes) -> bytes:
        with self.lock:
            self._pump()
            if (not self._in_ecm() or setup.type != 1 or setup.recipient != 1
                    or setup.wIndex & 0xFF != CONTROL_INTERFACE):
                raise Stall(f"request 0x{setup.bRequest:02x} type 0x{setup.bmRequestType:02x}")
            req = setup.bRequest
            if req == p.SET_ETHERNET_PACKET_FILTER and not setup.device_to_host:
                self._filter = setup.wValue & p.PACKET_TYPE_ALL  # reserved bits ignored
                return b""
            if req == p.SET_ETHERNET_MULTICAST_FILTERS and not setup.device_to_host:
                n = setup.wValue
                if n > MC_FILTERS or len(data) != 6 * n:
                    raise Stall(f"SET_ETHERNET_MULTICAST_FILTERS: {n} filters, {len(data)} "
                                f"bytes (at most {MC_FILTERS}, 6 bytes each)")
                self._multicast = {bytes(data[i:i + 6]) for i in range(0, len(data), 6)}
                return b""
            # GET_ETHERNET_STATISTIC: bmEthernetStatistics is 0, no counter is offered;
            # power-management pattern filters: bNumberPowerFilters is 0.
            raise Stall(f"request 0x{req:02x} not supported")

    # -- bulk OUT: host -> wire ---------------------------------------------------------------

    def out_packet(self, endpoint: int, packet: bytes) -> None:
        """USB 2.0 §5.8.3: a short packet (or a ZLP) ends a transfer; one transfer is one
        frame (ECM 1.2 §3.3), with the host's one-byte pad dropped (cdc_ecm.md, framing)."""
        with self.lock:
            self._pump()
            if endpoint & 0x7F != BULK_OUT or not self._in_ecm() or not self._data_on:
                raise Stall(f"no OUT endpoint 0x{endpoint:02x}")
            mp = self.bulk_max_packet
            if len(packet) > mp:
                raise Stall(f"babble: {len(packet)}-byte packet, wMaxPacketSize {mp}")
            if not packet:
                if not self._out:
                    self._stats["stray_zlps"] += 1
                    self._out_lenient_end = False
                    return
                self._stats["zlps_received"] += 1
                self._end_out(pad=False)
                return
            if self._out_lenient_end and len(packet) == 1 and not self._out:
                self._out_lenient_end = False  # the pad of a frame already sent
                self._stats["pad_bytes_stripped"] += 1
                return
            self._out_lenient_end = False
            if not self._out_discard:
                self._out += packet
                if len(self._out) > p.MAX_SEGMENT_SIZE + mp:
                    self._out_discard = True
            if len(packet) < mp:
                self._end_out(pad=len(packet) == 1 and len(self._out) % mp == 1)
            elif not self.faults.no_pad_merge and not self._out_discard:
                need = content_length(self._out)
                if need is not None and need <= len(self._out):
                    self._end_out(pad=False)
                    self._out_lenient_end = True

    def _end_out(self, *, pad: bool) -> None:
        frame = bytes(self._out)
        self._out.clear()
        if self._out_discard:
            self._out_discard = False
            self._stats["oversize_frames"] += 1
            return
        need = content_length(frame)
        if (pad and (need is None or need < len(frame))) or len(frame) == p.MAX_SEGMENT_SIZE + 1:
            frame = frame[:-1]  # the byte a host adds instead of a ZLP
            self._stats["pad_bytes_stripped"] += 1
        mp = self.bulk_max_packet
        if need is not None and need > 0 and -(-need // mp) * mp < len(frame):
            self._stats["merged_transfers"] += 1  # the frame ended a full packet earlier
        if len(frame) > p.MAX_SEGMENT_SIZE:
            self._stats["oversize_frames"] += 1
        elif len(frame) < _ETH_HLEN:
            self._stats["runt_frames"] += 1
        else:
            self._to_wire(frame)

    def _to_wire(self, frame: bytes) -> None:
        ok = True
        if self.wire is None:
            self.sent.append(frame)
        elif self._wire_dead:
            ok = False
        else:
            try:
                ok = bool(self.wire.send(frame))
            except DeviceClosed:
                self._wire_dead = True
                ok = False
        if ok:
            self._stats["to_wire_frames"] += 1
            self._stats["to_wire_bytes"] += len(frame)
        else:
            self._stats["wire_send_failed"] += 1

    # -- bulk IN and notifications: wire -> host --------------------------------------------

    def in_packet(self, endpoint: int, max_packet: int) -> bytes | None:
        with self.lock:
            self._pump()
            num = endpoint & 0x7F
            if num == NOTIFY_IN & 0x7F and self._config != 0 and (
                    self.options.notifications or not self._in_ecm()):
                return self._notify_packet()
            if num != BULK_IN & 0x7F or not self._in_ecm() or not self._data_on:
                raise Stall(f"no IN endpoint 0x{endpoint:02x}")
            if self._in_cur is None:
                if not self._rx:
                    return None
                self._in_cur, self._in_off = self._rx.popleft(), 0
            mp = min(self.bulk_max_packet, max_packet)
            cur, off = self._in_cur, self._in_off
            chunk = cur[off:off + mp]
            self._in_off = off + len(chunk)
            if len(chunk) < mp:  # a short packet (a ZLP after an exact multiple) ends it
                if not chunk:
                    self._stats["zlps_sent"] += 1
                self._stats["to_host_frames"] += 1
                self._stats["to_host_bytes"] += len(cur)
                self._in_cur, self._in_off = None, 0
            return chunk

    def _notify_packet(self) -> bytes | None:
        if not self._notify_cur:
            if not self._notify:
                return None
            self._notify_cur = self._notify.popleft()
        pkt = self._notify_cur.pop(0)
        if not self._notify_cur:
            self._stats["notifications_sent"] += 1
        return pkt

    def _queue_notification(self, code: int, value: int, data: bytes = b"") -> None:
        """CDC 1.2 §6.3: one notification, cut into wMaxPacketSize packets (ECM 1.2
        §6.3.3 allows a speed change in two 8-byte packets); faults apply here."""
        if not self.options.notifications:
            return
        self._notified += 1
        f = self.faults
        if self._notified <= f.drop_notifications:
            self._stats["notifications_dropped"] += 1
            return
        blob = p.notification(code, value, CONTROL_INTERFACE, data)
        mp = self.notify_max_packet
        packets = [blob[i:i + mp] for i in range(0, len(blob), mp)]
        copies = 1
        if self._notified - f.drop_notifications <= f.duplicate_notifications:
            copies = 2
            self._stats["notifications_duplicated"] += 1
        for _ in range(copies):
            if len(self._notify) >= NOTIFY_QUEUE:
                self._notify.popleft()
                self._stats["notifications_overflow"] += 1
            self._notify.append(list(packets))
        self._news += 1
        self._signal()

    # -- the wire ------------------------------------------------------------------------------

    def _wire_carrier(self) -> bool:
        if self.wire is None:
            return True
        if self._wire_dead:
            return False
        try:
            return bool(self.wire.link_up)
        except DeviceClosed:
            return False

    def inject(self, frame: bytes) -> bool:
        """A frame arrives from the wire now (for a model without one); True if queued."""
        with self.lock:
            return self._receive(bytes(frame))

    def _receive(self, frame: bytes) -> bool:
        if not self._data_on:
            self._stats["data_off_drops"] += 1
            return False
        if len(frame) > p.MAX_SEGMENT_SIZE:
            self._stats["wire_oversize_drops"] += 1
            return False
        if len(frame) < _ETH_HLEN:
            self._stats["wire_runt_drops"] += 1
            return False
        if not self._passes(frame[:6]):
            self._stats["filtered_frames"] += 1
            return False
        if len(self._rx) >= self.faults.rx_queue_frames:
            self._stats["queue_full_drops"] += 1
            return False
        self._rx.append(frame)
        self._news += 1
        self._signal()
        return True

    def _passes(self, dst: bytes) -> bool:
        """The packet filter, ECM 1.2 §6.2.4 (multicast list: §6.2.1)."""
        f = self._filter
        if f & p.PACKET_TYPE_PROMISCUOUS:
            return True
        if dst == _BROADCAST:
            return bool(f & p.PACKET_TYPE_BROADCAST)
        if dst[0] & 1:
            if f & p.PACKET_TYPE_ALL_MULTICAST:
                return True
            return bool(f & p.PACKET_TYPE_MULTICAST) and dst in self._multicast
        return bool(f & p.PACKET_TYPE_DIRECTED) and dst == self.mac

    def _pump(self) -> None:
        """Catch up with the wire: its carrier, then what waits on it."""
        if self._closed:
            return
        up = self._wire_carrier()
        if up != self._carrier:
            self._carrier = up
            self._stats["carrier_changes"] += 1
            if self._data_on:
                self._queue_notification(p.NETWORK_CONNECTION, int(up))
        if self.wire is None or self._wire_dead:
            return
        try:
            frames = self.wire.poll(WIRE_BUDGET)
        except DeviceClosed:
            self._wire_dead = True
            return
        for frame in frames:
            self._receive(bytes(frame))

    # -- waiting ---------------------------------------------------------------------------------

    def wait(self, timeout_s: float, endpoint: int | None = None) -> None:
        """Block (without ``lock``) until ``endpoint`` has something (None: until a frame
        or a notification is queued), ``wake`` is called, or ``timeout_s`` passes.

        Each waiting thread has an eventfd of its own that ``_signal`` pokes whenever
        something is queued, whichever thread's pump queued it (one drains the wire's
        descriptor for all); a shared one would let one waiter take another's signal.
        The carrier has no descriptor: it is looked at every WAIT_SLICE_S.
        """
        end = time.monotonic() + max(0.0, timeout_s)
        with self._wakeup:
            gen = self._generation
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            with self.lock:
                news = self._news
                self._waiters.add(fd)
            while True:
                with self.lock:
                    self._pump()
                    if self._news != news or self._closed or self._has_data(endpoint):
                        return
                with self._wakeup:
                    if self._generation != gen:
                        return
                left = end - time.monotonic()
                if left <= 0:
                    return
                fds = [fd]
                if self.wire is not None and not self._wire_dead:
                    with contextlib.suppress(Exception):
                        wire_fd = self.wire.fileno()
                        if wire_fd is not None:
                            fds.append(wire_fd)
                try:
                    ready, _, _ = select.select(fds, [], [], min(left, WAIT_SLICE_S))
                except (OSError, ValueError):  # the wire's descriptor closed under us
                    ready = []
                    time.sleep(min(left, WAIT_SLICE_S))
                if fd in ready:
                    return  # something was queued, or ``wake``: let the caller look
        finally:
            with self.lock:
                self._waiters.discard(fd)
            os.close(fd)

    def _signal(self) -> None:
        """Poke every waiting thread (call with ``lock``)."""
        for fd in self._waiters:
            with contextlib.suppress(OSError):
                os.eventfd_write(fd, 1)

    def _has_data(self, endpoint: int | None) -> bool:
        """Something waits on IN ``endpoint`` (queued by whichever thread pumped)."""
        if endpoint == BULK_IN:
            return bool(self._rx) or self._in_cur is not None
        if endpoint == NOTIFY_IN:
            return bool(self._notify) or bool(self._notify_cur)
        return False

    def wake(self) -> None:
        super().wake()
        with self.lock:
            self._signal()

    def close(self) -> None:
        """Stop for good; the wire is the rig's and stays as it is."""
        with self.lock:
            self._closed = True
            self._stop()
        self.wake()

"""The CDC-ECM host driver against the virtual USB bus and the ECM gadget model.

The driver speaks pyusb only; here pyusb runs on the virtual bus's backend, so every
descriptor, request and packet goes the way it would on silicon. Waits are bounded
and wait for a condition; every device is closed (its threads joined) by the fixture.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import os
import queue
import select
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import usb.core  # type: ignore[import-untyped]
import usb.util  # type: ignore[import-untyped]

from hilkit.drivers.cdc_ecm import proto as p
from hilkit.drivers.cdc_ecm.driver import (
    STAT_NAMES,
    CdcEcmDevice,
    NotificationParser,
    find_ecm_function,
    parse_mac_string,
    rx_transfer_size,
    udev_rule,
)
from hilkit.port import (
    ChipNotResponding,
    DeviceClosed,
    DeviceCounters,
    HardwareNotFound,
    LinkType,
    MonotonicClock,
)
from hilkit.port.conformance import DeviceConformance, DevicePair
from hilkit.port.usb import UsbTarget

bus_mod = pytest.importorskip("hilkit.sim.usb.bus")
model_mod = pytest.importorskip("hilkit.drivers.cdc_ecm.model")
CdcEcmModel = model_mod.CdcEcmModel
CdcEcmOptions = model_mod.CdcEcmOptions
CdcEcmFaults = model_mod.CdcEcmFaults
BULK_IN, BULK_OUT = model_mod.BULK_IN, model_mod.BULK_OUT

DRIVER_PY = Path(__file__).resolve().parents[2] / "hilkit" / "drivers" / "cdc_ecm" / "driver.py"
PEER_MAC = b"\x02\x00\x00\x00\x00\x0b"
TIMEOUT_S = 5.0


class FastEcm(CdcEcmDevice):
    """Shorter transfer timeouts: close() and rediscovery are quicker in tests."""

    RX_TIMEOUT_MS = 60
    NOTIFY_TIMEOUT_MS = 60
    TX_TIMEOUT_MS = 300
    REDISCOVER_S = 0.05


class FakeWire:
    """The wire behind the model: a Device whose far end is this test. ``fileno`` is an
    eventfd, readable while frames wait, so the model wakes at once for them."""

    name = "wire"
    link_type = LinkType.ETHERNET
    mtu = 1500
    mac = PEER_MAC

    def __init__(self) -> None:
        self.counters = DeviceCounters()
        self.up = True
        self.sent: queue.Queue[bytes] = queue.Queue()  # what the model put on the wire
        self._inbox: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.closed = False

    def push(self, frame: bytes) -> None:
        """A frame arrives from the far end."""
        with self._lock:
            self._inbox.append(frame)
            os.eventfd_write(self._efd, 1)

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        self.sent.put(bytes(frame))
        return True

    def poll(self, budget: int) -> list[bytes]:
        with self._lock:
            out = [self._inbox.popleft() for _ in range(min(budget, len(self._inbox)))]
            if not self._inbox:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self._efd)
            return out

    @property
    def link_up(self) -> bool:
        return self.up

    def fileno(self) -> int | None:
        return self._efd

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._efd)


class Rig:
    """A fresh bus with one ECM model on a FakeWire; ``open()`` makes the driver."""

    def __init__(self, **options: Any) -> None:
        faults = options.pop("faults", None)
        self.wire = FakeWire()
        self.bus = bus_mod.VirtualUsbBus()
        self.model = CdcEcmModel(wire=self.wire, clock=MonotonicClock(), seed=1,
                                 faults=faults, options=CdcEcmOptions(**options))
        self.bus.plug(self.model)
        self.target = UsbTarget(backend=self.bus.backend)
        self.devices: list[CdcEcmDevice] = []

    def open(self, cls: type[CdcEcmDevice] = FastEcm, **kw: Any) -> CdcEcmDevice:
        dev = cls(kw.pop("target", self.target), **kw)
        self.devices.append(dev)
        return dev

    def close(self) -> None:
        for d in self.devices:
            d.close()
        for d in self.devices:
            for t in threading.enumerate():
                if t.name.startswith(f"{d.name}-"):
                    t.join(TIMEOUT_S)
        self.wire.close()


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(**options: Any) -> Rig:
        r = Rig(**options)
        rigs.append(r)
        return r

    yield make
    for r in rigs:
        r.close()


def wait_until(cond: Callable[[], object], what: str, timeout_s: float = TIMEOUT_S) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.002)


def readable(fd: int | None, timeout_s: float = 0.0) -> bool:
    assert fd is not None
    r, _, _ = select.select([fd], [], [], timeout_s)
    return bool(r)


def receive(dev: CdcEcmDevice, n: int = 1, timeout_s: float = TIMEOUT_S) -> list[bytes]:
    """``n`` frames from ``dev``, sleeping in select on its fileno as the stack does."""
    out: list[bytes] = []
    end = time.monotonic() + timeout_s
    while len(out) < n:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"got {len(out)} of {n} frames in {timeout_s} s")
        readable(dev.fileno(), left)
        out += dev.poll(n - len(out))
    return out


def frame(size: int, seq: int = 0, dst: bytes = b"\xff" * 6) -> bytes:
    """An Ethernet frame of exactly ``size`` bytes (an 802.3 length field that says so)."""
    body = bytes((seq + i) & 0xFF for i in range(size - 14))
    return dst + PEER_MAC + struct.pack(">H", size - 14) + body


def kernel_bound(rig: Rig) -> set[int]:
    """Interfaces a kernel driver holds, asked through a second pyusb handle."""
    other = usb.core.find(backend=rig.bus.backend)
    try:
        return {i for i in (0, 1) if other.is_kernel_driver_active(i)}
    finally:
        usb.util.dispose_resources(other)


def claimed_elsewhere(rig: Rig, interface: int) -> bool:
    """Does a second handle find ``interface`` taken (EBUSY)?"""
    other = usb.core.find(backend=rig.bus.backend)
    try:
        usb.util.claim_interface(other, interface)
    except usb.core.USBError as e:
        return bool(e.errno == errno.EBUSY)
    finally:
        usb.util.dispose_resources(other)
    return False


def up(rig: Rig, **kw: Any) -> CdcEcmDevice:
    dev = rig.open(**kw)
    wait_until(lambda: dev.link_up, "link up after bring-up")
    dev.poll(64)  # take the link event
    return dev


# -- pure parts ------------------------------------------------------------------------------


def test_parse_mac_string() -> None:
    assert parse_mac_string("0200DEADBEEF") == bytes.fromhex("0200deadbeef")
    assert parse_mac_string("0200deadbeef") == bytes.fromhex("0200deadbeef")
    for bad in ("0200DEADBEE", "0200DEADBEEF0", "02:00:de:ad:b", "0200DEADBEEG", " 200DEADBEEF"):
        with pytest.raises(ValueError, match="12 hex digits"):
            parse_mac_string(bad)
    with pytest.raises(ValueError, match="no MAC string"):
        parse_mac_string(None)


def test_rx_transfer_size() -> None:
    assert rx_transfer_size(1514, 512) == 2048
    assert rx_transfer_size(1514, 64) == 1600
    assert rx_transfer_size(1536, 512) == 2048  # a whole-packet frame still ends short


def test_udev_rule() -> None:
    assert udev_rule(0x0525, 0xA4A2) == ('SUBSYSTEM=="usb", ATTR{idVendor}=="0525", '
                                        'ATTR{idProduct}=="a4a2", MODE="0660", GROUP="plugdev"')


def test_notification_parser_whole_split_glued_and_garbage() -> None:
    speed = p.notification(p.CONNECTION_SPEED_CHANGE, 0, 0, struct.pack("<II", 100, 50))
    conn = p.notification(p.NETWORK_CONNECTION, 1, 0)
    n = NotificationParser()
    assert n.feed(conn) == [(p.NETWORK_CONNECTION, 1, 0, b"")]
    assert n.feed(speed[:8]) == []  # ECM 1.2 §6.3.3: the data comes in the next packet
    assert n.feed(speed[8:]) == [(p.CONNECTION_SPEED_CHANGE, 0, 0, struct.pack("<II", 100, 50))]
    assert [c for c, *_ in n.feed(conn + speed)] == [p.NETWORK_CONNECTION,
                                                     p.CONNECTION_SPEED_CHANGE]
    assert n.feed(b"\x00" * 8) == [] and n.errors == 1  # not a notification: dropped
    assert n.feed(conn) == [(p.NETWORK_CONNECTION, 1, 0, b"")]  # back in step



class _Desc:
    """Just enough of a pyusb descriptor object for ``find_ecm_function``."""

    def __init__(self, children: list[Any] | None = None, **fields: Any) -> None:
        self._children = children or []
        self.extra_descriptors: list[int] = []
        self.__dict__.update(fields)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._children)


def _intf(num: int, alt: int, triple: tuple[int, int, int], eps: list[Any] | None = None,
          extra: bytes = b"") -> _Desc:
    i = _Desc(eps, bInterfaceNumber=num, bAlternateSetting=alt, bInterfaceClass=triple[0],
              bInterfaceSubClass=triple[1], bInterfaceProtocol=triple[2])
    i.extra_descriptors = list(extra)
    return i


def _ep(addr: int, kind: int, mp: int) -> _Desc:
    return _Desc(bEndpointAddress=addr, bmAttributes=kind, wMaxPacketSize=mp)


def test_find_ecm_function_descriptor_cases() -> None:
    fds = (p.header_descriptor() + p.union_descriptor(0, 1)
           + p.ethernet_descriptor(i_mac=4, max_segment=1514))
    bulk = [_ep(0x81, 2, 512), _ep(0x02, 2, 512)]
    data = [_intf(1, 0, (0x0A, 0, 0)), _intf(1, 1, (0x0A, 0, 0), bulk)]
    rndis = _Desc([_intf(0, 0, (0xE0, 0x01, 0x03)), _intf(1, 0, (0x0A, 0, 0), bulk)],
                  bConfigurationValue=1)
    # the functional descriptors in the configuration's extra bytes (a quirk hosts accept)
    ecm = _Desc([_intf(0, 0, (0x02, 0x06, 0x00)), *data], bConfigurationValue=2)
    ecm.extra_descriptors = list(fds)
    fn, seen = find_ecm_function(_Desc([rndis, ecm]))
    assert fn is not None and (fn.config, fn.data_alt, fn.ep_notify) == (2, 1, None)
    assert (fn.mac_index, fn.max_segment, fn.in_max_packet) == (4, 1514, 512)
    assert seen == ["RNDIS (class e0/01/03) in configuration 1"]
    fn, seen = find_ecm_function(_Desc([rndis]))
    assert fn is None and seen == ["RNDIS (class e0/01/03) in configuration 1"]
    no_union = _Desc([_intf(0, 0, (0x02, 0x06, 0x00), extra=p.header_descriptor()), *data],
                     bConfigurationValue=1)
    fn, seen = find_ecm_function(_Desc([no_union]))
    assert fn is None and "lacks its Union, Ethernet functional descriptor" in seen[0]


def test_driver_imports_only_stdlib_usb_and_port() -> None:
    tree = ast.parse(DRIVER_PY.read_text())
    allowed_local = ("hilkit.port", "hilkit.drivers.cdc_ecm.proto")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top == "hilkit":
                assert name.startswith(allowed_local), f"driver.py imports {name}"
            else:
                assert top == "usb" or top in sys.stdlib_module_names, f"driver.py imports {name}"
    proto_src = (DRIVER_PY.parent / "proto.py").read_text()
    assert "hilkit.sim" not in proto_src and "hilkit.stack" not in proto_src


# -- bring-up ----------------------------------------------------------------------------------


def test_bring_up(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(kernel_driver_bound=True)
    m = rig.model
    dev = up(rig)
    assert dev.mac == m.mac
    assert dev.link_type is LinkType.ETHERNET and dev.mtu == 1500
    assert dev.name.startswith("cdc_ecm@")
    assert m.configuration == 1 and m.data_on
    assert m.packet_filter == (p.PACKET_TYPE_DIRECTED | p.PACKET_TYPE_BROADCAST
                               | p.PACKET_TYPE_ALL_MULTICAST)
    assert kernel_bound(rig) == set()  # detached from both interfaces
    assert claimed_elsewhere(rig, 0) and claimed_elsewhere(rig, 1)
    fn = dev.function
    assert fn is not None
    assert (fn.control_if, fn.data_if, fn.data_alt) == (0, 1, 1)
    assert (fn.ep_in, fn.ep_out, fn.ep_notify) == (BULK_IN, BULK_OUT, 0x83)
    assert dev.speed_bps == (480_000_000, 480_000_000)
    assert dev.rx_buffer_bytes == 32 * 1514
    assert set(dev.stats) == set(STAT_NAMES)
    info = dev.probe()
    assert info["mac"] == m.mac.hex(":") and info["vendor"] == "0525"
    dev.close()
    assert kernel_bound(rig) == {0, 1}  # handed back to the kernel
    assert not m.data_on


def test_own_mac_turns_on_promiscuous(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    own = b"\x02\x11\x22\x33\x44\x55"
    dev = up(rig, mac=own)
    assert dev.mac == own
    assert rig.model.packet_filter & p.PACKET_TYPE_PROMISCUOUS
    rig.wire.push(frame(100, dst=own))
    assert receive(dev)[0][:6] == own


def test_rndis_first_picks_the_ecm_configuration(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(rndis_first=True)
    dev = up(rig)
    assert dev.function is not None and dev.function.config == 2
    assert rig.model.configuration == 2
    assert dev.send(frame(60))
    assert rig.wire.sent.get(timeout=TIMEOUT_S) == frame(60)


@pytest.mark.parametrize("option,found", [("rndis_only", "RNDIS"), ("ncm_only", "NCM")])
def test_rndis_or_ncm_only_is_refused(make_rig: Callable[..., Rig], option: str,
                                      found: str) -> None:
    rig = make_rig(**{option: True})
    with pytest.raises(HardwareNotFound) as e:
        rig.open()
    msg = str(e.value)
    assert found in msg and "needs CDC-ECM" in msg


def test_no_device_names_the_target_and_lsusb() -> None:
    bus = bus_mod.VirtualUsbBus()
    target = UsbTarget(backend=bus.backend, vendor=0x0525, product=0xA4A2, serial="X1")
    with pytest.raises(HardwareNotFound) as e:
        FastEcm(target)
    msg = str(e.value)
    assert "0525:a4a2 serial X1" in msg and "no USB device found" in msg
    assert "lsusb -d 0525:a4a2" in msg
    with pytest.raises(HardwareNotFound, match=r"any USB device.*\(check: lsusb\)"):
        FastEcm(UsbTarget(backend=bus.backend))


def test_serial_mismatch(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(serial="abc")
    target = UsbTarget(backend=rig.bus.backend, serial="other")
    with pytest.raises(HardwareNotFound, match=r"serial 'other'.*'abc'"):
        rig.open(target=target)
    dev = rig.open(target=UsbTarget(backend=rig.bus.backend, serial="abc"))
    assert dev.mac == rig.model.mac


def test_malformed_mac_string(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    m = rig.model
    m.strings = {**m.strings, 4: "02:00:5e:00:01"}  # iMACAddress (string 4): not 12 digits
    with pytest.raises(ChipNotResponding) as e:
        rig.open()
    msg = str(e.value)
    assert "'02:00:5e:00:01'" in msg and "0525:a4a2" in msg and "12 hex digits" in msg
    assert not m.data_on  # left alone


def test_mtu_beyond_max_segment(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    with pytest.raises(ValueError, match="wMaxSegmentSize"):
        rig.open(mtu=1600)


# -- data ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("speed,mp", [("high", 512), ("full", 64)])
def test_frames_both_ways_with_zlps(make_rig: Callable[..., Rig], speed: str, mp: int) -> None:
    rig = make_rig(speed=speed)
    dev = up(rig)
    assert dev.function is not None and dev.function.out_max_packet == mp
    sizes = [14, 60, 63, 64, 65, 128, 511, 512, 513, 1024, 1500, 1514]
    whole = sum(1 for s in sizes if s % mp == 0)
    for i, size in enumerate(sizes):  # host -> wire
        f = frame(size, i)
        assert dev.send(f)
        assert rig.wire.sent.get(timeout=TIMEOUT_S) == f, f"size {size}"
    wait_until(lambda: dev.stats["zlps_sent"] == whole, f"{whole} ZLPs")
    sent = [frame(size, i) for i, size in enumerate(sizes)]
    for f in sent:  # wire -> host
        rig.wire.push(f)
    assert receive(dev, len(sent)) == sent
    c = dev.counters
    assert (c.tx_frames, c.tx_bytes) == (len(sizes), sum(sizes))
    assert (c.rx_frames, c.rx_bytes) == (len(sizes), sum(sizes))
    assert c.tx_dropped == c.tx_errors == c.rx_dropped == c.rx_errors == 0
    assert rig.model.stats["merged_transfers"] == 0


def test_fileno_readable_only_while_frames_wait(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    dev = up(rig)
    fd = dev.fileno()
    assert not readable(fd)
    for i in range(3):
        rig.wire.push(frame(60, i))
    assert readable(fd, TIMEOUT_S)
    wait_until(lambda: len(dev._rx) == 3, "3 frames queued")
    assert len(dev.poll(2)) == 2
    assert readable(fd)  # one still waits
    assert dev.poll(0) == []
    assert len(dev.poll(8)) == 1
    assert not readable(fd)


def test_send_checks_and_counts_exactly_once(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    dev = up(rig)
    c = dev.counters
    cases: list[tuple[bytes | bytearray | memoryview, bool]] = [
        (b"", False), (b"x" * 13, False), (frame(1515), False), (frame(60), True),
        (bytearray(frame(61)), True), (memoryview(frame(62)), True)]
    for f, ok in cases:
        before = c.tx_frames + c.tx_dropped + c.tx_errors
        assert dev.send(f) is ok
        assert c.tx_frames + c.tx_dropped + c.tx_errors == before + 1
    assert (c.tx_frames, c.tx_errors) == (3, 3)


def test_send_never_blocks_full_queue(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    dev = up(rig, tx_queue_frames=4)
    rig.bus.nak(rig.model, BULK_OUT, 1.0)  # the device takes nothing for a while
    results = []
    t0 = time.monotonic()
    for i in range(20):
        s = time.monotonic()
        results.append(dev.send(frame(100, i)))
        assert time.monotonic() - s < 0.2, "send blocked"  # the writer waits 300 ms
    assert time.monotonic() - t0 < 1.0
    assert False in results
    refused = results.count(False)
    assert dev.counters.tx_dropped == refused == dev.stats["tx_queue_drops"]
    assert dev.counters.tx_frames == 20 - refused


def test_rx_queue_overflow_counted(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    dev = up(rig, rx_queue_frames=4)
    for i in range(10):
        rig.wire.push(frame(60, i))
    wait_until(lambda: dev.counters.rx_dropped + len(dev._rx) == 10, "10 frames seen")
    assert len(dev.poll(64)) == 4
    assert dev.counters.rx_dropped == dev.stats["rx_queue_drops"] == 6


# -- link and notifications ---------------------------------------------------------------------


def test_link_follows_the_carrier(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    dev = up(rig)
    fd = dev.fileno()
    changes = dev.stats["link_changes"]
    rig.wire.up = False
    wait_until(lambda: not dev.link_up, "link down")
    assert readable(fd)  # the stack is woken to see it
    dev.poll(8)
    assert not readable(fd)
    assert not dev.send(frame(60)) and dev.counters.tx_dropped == 1
    rig.wire.up = True
    wait_until(lambda: dev.link_up, "link up")
    assert dev.stats["link_changes"] == changes + 2
    assert dev.send(frame(60))


def test_split_speed_change(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(speed="full", speed_change_split=True)
    dev = up(rig)
    assert dev.function is not None and dev.function.notify_max_packet == 8
    wait_until(lambda: dev.speed_bps is not None, "speed")
    assert dev.speed_bps == (12_000_000, 12_000_000)
    assert dev.stats["speed_changes"] >= 1


def test_no_notification_endpoint_link_assumed_up(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(notifications=False)
    dev = rig.open()
    assert dev.function is not None and dev.function.ep_notify is None
    assert dev.link_up
    assert dev.send(frame(60))
    assert rig.wire.sent.get(timeout=TIMEOUT_S) == frame(60)


# -- faults ------------------------------------------------------------------------------------


def test_stall_on_bulk_out_cleared_and_counted(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    dev = up(rig)
    rig.bus.stall(rig.model, BULK_OUT)
    assert dev.send(frame(100, 1))
    assert rig.wire.sent.get(timeout=TIMEOUT_S) == frame(100, 1)
    assert dev.stats["stalls_cleared"] == 1


def test_stall_on_bulk_in_cleared_and_counted(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    dev = up(rig)
    rig.bus.stall(rig.model, BULK_IN)
    wait_until(lambda: dev.stats["stalls_cleared"] >= 1, "IN stall cleared")
    rig.wire.push(frame(100, 2))
    assert receive(dev) == [frame(100, 2)]


def test_babble_on_bulk_in_counted(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    dev = up(rig)
    rig.bus.babble(rig.model, BULK_IN)
    rig.wire.push(frame(100, 3))
    wait_until(lambda: dev.counters.rx_errors >= 1, "babble counted")
    assert dev.stats["rx_overflows"] >= 1
    rig.wire.push(frame(100, 4))
    assert frame(100, 4) in receive(dev)


def test_unplug_and_replug_resume_traffic(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig(kernel_driver_bound=True)
    dev = up(rig)
    port, address = rig.bus.port_of(rig.model), rig.bus.address_of(rig.model)
    rig.bus.unplug(rig.model)
    wait_until(lambda: not dev.link_up, "link down on unplug")
    assert dev.stats["unplugs"] == 1
    assert not dev.send(frame(60))
    assert dev.poll(8) == []  # nothing raises while it is gone
    with pytest.raises(ChipNotResponding):
        dev.probe()
    assert rig.bus.plug(rig.model, port=port) != address  # a new address, as on Linux
    wait_until(lambda: dev.link_up, "link up after replug")
    assert dev.stats["replugs"] == 1
    assert kernel_bound(rig) == set()  # detached again on the new device
    assert dev.send(frame(70, 5))
    assert rig.wire.sent.get(timeout=TIMEOUT_S) == frame(70, 5)
    rig.wire.push(frame(80, 6))
    assert frame(80, 6) in receive(dev)
    assert dev.probe()["mac"] == rig.model.mac.hex(":")
    rig.bus.replug(rig.model)  # out and back in at once
    wait_until(lambda: dev.stats["replugs"] == 2 and dev.link_up, "second replug")
    assert dev.stats["unplugs"] == 2
    assert dev.send(frame(90, 7))
    assert rig.wire.sent.get(timeout=TIMEOUT_S) == frame(90, 7)


def test_close_is_idempotent(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    dev = up(rig)
    name = dev.name
    dev.close()
    dev.close()
    assert dev.fileno() is None and not dev.link_up
    with pytest.raises(DeviceClosed):
        dev.send(frame(60))
    with pytest.raises(DeviceClosed):
        dev.poll(1)
    assert not [t for t in threading.enumerate() if t.name.startswith(f"{name}-")]
    assert rig.model.configuration == 1 and not rig.model.data_on


def test_forgotten_close_runs_at_exit(make_rig: Callable[..., Rig]) -> None:
    """The interpreter-exit backstop (weakref.finalize) closes and re-attaches."""
    rig = make_rig(kernel_driver_bound=True)
    dev = up(rig)
    assert kernel_bound(rig) == set()
    dev._finalizer()  # what atexit calls
    assert dev.closed and kernel_bound(rig) == {0, 1}


def test_close_while_unplugged(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    dev = up(rig)
    rig.bus.unplug(rig.model)
    wait_until(lambda: dev.stats["unplugs"] == 1, "unplug seen")
    dev.close()
    assert not [t for t in threading.enumerate() if t.name.startswith(f"{dev.name}-")]




def test_idle_costs_no_cpu(make_rig: Callable[..., Rig]) -> None:
    """Threads wait in transfers and on conditions, never in a loop of their own."""
    rig = make_rig()
    dev = up(rig, cls=CdcEcmDevice)
    t0, c0 = time.monotonic(), time.process_time()
    assert not readable(dev.fileno(), 0.5)  # the stack asleep in select
    cpu = time.process_time() - c0
    assert cpu < 0.1 * (time.monotonic() - t0), f"{cpu:.3f} s of CPU in 0.5 s idle"


def test_default_close_is_prompt(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    dev = up(rig, cls=CdcEcmDevice)
    t0 = time.monotonic()
    dev.close()
    assert time.monotonic() - t0 < 1.0


def test_tx_timeout_counted_as_lost(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    dev = up(rig)
    rig.bus.nak(rig.model, BULK_OUT, 0.6)  # longer than FastEcm.TX_TIMEOUT_MS
    assert dev.send(frame(100, 1))
    wait_until(lambda: dev.stats["tx_timeouts"] == 1, "write timed out")
    wait_until(lambda: dev.stats["tx_lost"] == 1, "frame counted lost")
    assert dev.counters.tx_frames == 1 and dev.counters.tx_errors == 0
    rig.bus.nak(rig.model, BULK_OUT, 0)
    assert dev.send(frame(100, 2))
    assert rig.wire.sent.get(timeout=TIMEOUT_S) == frame(100, 2)


def _eacces() -> usb.core.USBError:
    return usb.core.USBError("Access denied (insufficient permissions)", -3, errno.EACCES)


def test_permission_denied_says_which_udev_rule(make_rig: Callable[..., Rig],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    rig = make_rig()

    def denied(dev: Any, interface: int) -> None:
        raise _eacces()

    monkeypatch.setattr(usb.util, "claim_interface", denied)
    with pytest.raises(HardwareNotFound) as e:
        rig.open()
    msg = str(e.value)
    assert "permission denied" in msg
    assert udev_rule(0x0525, 0xA4A2) in msg


def test_permission_denied_reading_the_serial(make_rig: Callable[..., Rig],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    rig = make_rig()
    monkeypatch.setattr(usb.core.Device, "serial_number",
                        property(lambda self: (_ for _ in ()).throw(_eacces())))
    with pytest.raises(HardwareNotFound, match=r"permission denied.*idProduct.*a4a2"):
        rig.open(target=UsbTarget(backend=rig.bus.backend, serial="hilkit-ecm-0001"))


# -- the porting contract's conformance suite, on the virtual bus -------------------------------


class WirePeer:
    """The FakeWire as the suite's ``LinkPeer``: what the device sent, and frames to it."""

    can_set_link = True
    peer_mac = PEER_MAC

    def __init__(self, wire: FakeWire) -> None:
        self.wire = wire

    def send(self, frame: bytes) -> None:
        self.wire.push(frame)

    def recv(self, timeout_s: float) -> bytes | None:
        try:
            return self.wire.sent.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def set_link(self, up: bool) -> None:
        self.wire.up = up


class TestCdcEcmConformance(DeviceConformance):
    timeout_s = 3.0

    @pytest.fixture
    def conformance_pair(self, make_rig: Callable[..., Rig]) -> Iterator[DevicePair]:
        rig = make_rig()
        dev = up(rig)
        yield dev, WirePeer(rig.wire)

"""The virtual USB bus driven by pyusb's own API (docs/hardware/usb.md).

Small device models are written here; every check goes through ``usb.core`` /
``usb.util`` the way a host driver would, so what is tested is what pyusb sees.
Figures (packet sizes, overheads, frame lengths) are written out from
docs/hardware/usb.md, not taken from the bus's constants.
"""

from __future__ import annotations

import errno
import struct
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest
import usb.core  # type: ignore[import-untyped]
import usb.util  # type: ignore[import-untyped]

import hilkit.sim.usb as simusb
from hilkit.port.usb import port_path_of
from hilkit.sim.usb import Nak, Setup, Speed, Stall, UsbDeviceModel, VirtualUsbBus
from hilkit.sim.usb import descriptors as D
from hilkit.sim.usb.bus import bulk_transactions_per_frame, ceiling_bps
from hilkit.sim.usb.ft232h import pyftdi_backend

VID, PID = 0x1209, 0x0001
IAD = bytes((8, 0x0B, 0, 2, 0xFF, 0, 0, 0))  # an interface association, before interface 0
CS_IF = bytes((5, D.DT_CS_INTERFACE, 0x00, 0x20, 0x01))  # a class-specific interface blob
CS_EP = bytes((4, 0x25, 0x01, 0x07))  # a class-specific endpoint descriptor


class Loopback(UsbDeviceModel):
    """Bulk OUT 0x01 echoes each packet on bulk IN 0x81; interrupt IN 0x82 sends queued
    notifications; interface 1 alt 1 has a bulk IN 0x83; configuration 2 is a plain
    64-byte bulk pair."""

    speed = Speed.HIGH
    device_descriptor = D.device(vendor=VID, product=PID, bcd_device=0x0102, cls=0xEF,
                                 subclass=2, protocol=1, i_manufacturer=1, i_product=2,
                                 i_serial=3, num_configurations=2)
    configurations = (
        D.configuration(1, [
            IAD,
            D.interface(0, 0, num_endpoints=3, cls=0xFF, subclass=1, protocol=2, i_interface=4),
            CS_IF,
            D.endpoint(0x01, D.EP_BULK, 512),
            D.endpoint(0x81, D.EP_BULK, 512),
            D.endpoint(0x82, D.EP_INTERRUPT, 16, interval=4),
            CS_EP,
            D.interface(1, 0, num_endpoints=0, cls=0x0A),
            D.interface(1, 1, num_endpoints=1, cls=0x0A),
            D.endpoint(0x83, D.EP_BULK, 512),
        ], num_interfaces=2, attributes=0xC0, max_power_ma=200),
        D.configuration(2, [
            D.interface(0, 0, num_endpoints=2, cls=0xFF),
            D.endpoint(0x01, D.EP_BULK, 64),
            D.endpoint(0x81, D.EP_BULK, 64),
        ], num_interfaces=1, i_configuration=5),
    )
    langids = (0x0409, 0x0407)

    def __init__(self) -> None:
        super().__init__()
        self.strings = {1: "hilkit", 2: "Loopback", 3: "SN0001", 4: "echo", 5: "small"}
        self.echo: deque[bytes] = deque()
        self.notes: deque[bytes] = deque()
        self.alt_in: deque[bytes] = deque()
        self.received: list[bytes] = []
        self.refuse = 0  # Nak this many OUT packets (-1: all)
        self.budget = 0  # accept this many before refusing
        self.stall_out = False
        self.stored = b""
        self.calls: list[tuple[str, int, int]] = []
        self.waiting = threading.Event()

    def set_configuration(self, value: int) -> None:
        self.calls.append(("config", value, 0))

    def set_interface(self, interface: int, alt: int) -> None:
        self.calls.append(("interface", interface, alt))

    def clear_halt(self, endpoint: int) -> None:
        self.calls.append(("clear", endpoint, 0))

    def bus_reset(self) -> None:
        self.calls.append(("reset", 0, 0))

    def control(self, setup: Setup, data: bytes) -> bytes:
        if setup.type == 2 and setup.bRequest == 1 and setup.device_to_host:
            return b"pong" + struct.pack("<HH", setup.wValue, setup.wIndex)
        if setup.type == 2 and setup.bRequest == 2 and not setup.device_to_host:
            self.stored = data
            return b""
        return super().control(setup, data)

    def out_packet(self, endpoint: int, packet: bytes) -> None:
        if endpoint != 0x01:
            super().out_packet(endpoint, packet)
        if self.stall_out:
            raise Stall("told to")
        if self.budget:
            self.budget -= 1
        elif self.refuse:
            self.refuse -= self.refuse > 0
            raise Nak()
        self.received.append(packet)
        self.echo.append(packet)
        self.wake()

    def in_packet(self, endpoint: int, max_packet: int) -> bytes | None:
        q = {0x81: self.echo, 0x82: self.notes, 0x83: self.alt_in}.get(endpoint)
        if q is None:
            return super().in_packet(endpoint, max_packet)
        return q.popleft() if q else None

    def queue(self, q: deque[bytes], *packets: bytes) -> None:
        with self.lock:
            q.extend(packets)
        self.wake()

    def wait(self, timeout_s: float, endpoint: int | None = None) -> None:
        self.waiting.set()
        super().wait(timeout_s, endpoint)


class FullSpeedSink(UsbDeviceModel):
    """A full-speed device with a 64-byte bulk OUT sink: for the bus-time figures."""

    speed = Speed.FULL
    device_descriptor = D.device(vendor=VID, product=0x0002, max_packet0=8)
    configurations = (D.configuration(1, [
        D.interface(0, 0, num_endpoints=1, cls=0xFF),
        D.endpoint(0x01, D.EP_BULK, 64),
    ], num_interfaces=1),)

    def out_packet(self, endpoint: int, packet: bytes) -> None:
        pass


@pytest.fixture
def bus() -> Iterator[VirtualUsbBus]:
    b = VirtualUsbBus(realtime=False)
    yield b
    b.close()


@pytest.fixture
def model(bus: VirtualUsbBus) -> Loopback:
    m = Loopback()
    bus.plug(m)
    return m


@pytest.fixture
def dev(bus: VirtualUsbBus, model: Loopback) -> Iterator[Any]:
    d = usb.core.find(backend=bus.backend, idVendor=VID, idProduct=PID)
    assert d is not None
    yield d
    usb.util.dispose_resources(d)


def err(exc: pytest.ExceptionInfo[Any]) -> tuple[int, int]:
    return exc.value.backend_error_code, exc.value.errno


# -- enumeration and descriptors ---------------------------------------------------------------


def test_enumeration_and_device_descriptor(bus: VirtualUsbBus, model: Loopback) -> None:
    devs = list(usb.core.find(find_all=True, backend=bus.backend))
    assert len(devs) == 1
    d = devs[0]
    assert (d.bLength, d.bDescriptorType, d.bcdUSB) == (18, 1, 0x0200)
    assert (d.bDeviceClass, d.bDeviceSubClass, d.bDeviceProtocol) == (0xEF, 2, 1)
    assert (d.bMaxPacketSize0, d.idVendor, d.idProduct, d.bcdDevice) == (64, VID, PID, 0x0102)
    assert (d.iManufacturer, d.iProduct, d.iSerialNumber, d.bNumConfigurations) == (1, 2, 3, 2)
    assert (d.bus, d.address, d.port_number, d.port_numbers, d.speed) == (1, 2, 1, (1,), 3)
    assert port_path_of(d) == "1-1" == bus.port_path_of(model)
    assert bus.address_of(model) == 2 and bus.plugged(model)
    second = Loopback()
    assert bus.plug(second) == 3
    assert [x.port_number for x in usb.core.find(find_all=True, backend=bus.backend)] == [1, 2]
    for x in devs:
        usb.util.dispose_resources(x)


def test_configurations_interfaces_endpoints_and_extras(dev: Any) -> None:
    cfgs = list(dev)
    assert [c.bConfigurationValue for c in cfgs] == [1, 2]
    c1 = cfgs[0]
    assert (c1.bLength, c1.bDescriptorType, c1.bNumInterfaces) == (9, 2, 2)
    assert c1.wTotalLength == 9 + 8 + 9 + 5 + 7 + 7 + 7 + 4 + 9 + 9 + 7
    assert (c1.bmAttributes, c1.bMaxPower, c1.iConfiguration) == (0xC0, 100, 0)
    assert list(c1.extra_descriptors) == list(IAD)
    intfs = [(i.bInterfaceNumber, i.bAlternateSetting) for i in c1]
    assert intfs == [(0, 0), (1, 0), (1, 1)]
    i0 = c1[(0, 0)]
    assert (i0.bLength, i0.bDescriptorType, i0.bNumEndpoints) == (9, 4, 3)
    assert (i0.bInterfaceClass, i0.bInterfaceSubClass, i0.bInterfaceProtocol) == (0xFF, 1, 2)
    assert i0.iInterface == 4
    assert list(i0.extra_descriptors) == list(CS_IF)
    eps = list(i0)
    assert [e.bEndpointAddress for e in eps] == [0x01, 0x81, 0x82]
    assert [e.wMaxPacketSize for e in eps] == [512, 512, 16]
    assert [e.bmAttributes for e in eps] == [2, 2, 3]
    assert [e.bInterval for e in eps] == [0, 0, 4]
    assert [(e.bLength, e.bDescriptorType, e.bRefresh, e.bSynchAddress) for e in eps] == \
        [(7, 5, 0, 0)] * 3
    assert [list(e.extra_descriptors) for e in eps] == [[], [], list(CS_EP)]
    assert [e.bEndpointAddress for e in c1[(1, 1)]] == [0x83]
    c2 = cfgs[1]
    assert c2.iConfiguration == 5 and c2.bNumInterfaces == 1 and list(c2.extra_descriptors) == []
    assert [e.wMaxPacketSize for e in c2[(0, 0)]] == [64, 64]


def test_strings_and_langids(dev: Any) -> None:
    assert dev.langids == (0x0409, 0x0407)
    assert (dev.manufacturer, dev.product, dev.serial_number) == ("hilkit", "Loopback", "SN0001")
    assert usb.util.get_string(dev, 4) == "echo"
    assert usb.util.get_string(dev, 5, 0x0407) == "small"
    with pytest.raises(usb.core.USBError) as e:
        usb.util.get_string(dev, 9)
    assert err(e) == (-9, errno.EPIPE)
    with pytest.raises(usb.core.USBError) as e:
        usb.util.get_string(dev, 1, 0x040C)
    assert err(e) == (-9, errno.EPIPE)


def test_get_descriptor_requests(dev: Any, model: Loopback) -> None:
    assert bytes(dev.ctrl_transfer(0x80, 6, 0x0100, 0, 18)) == model.device_descriptor
    assert bytes(dev.ctrl_transfer(0x80, 6, 0x0200, 0, 9)) == model.configurations[0][:9]
    full = bytes(dev.ctrl_transfer(0x80, 6, 0x0201, 0, 1024))
    assert full == model.configurations[1]
    with pytest.raises(usb.core.USBError) as e:
        dev.ctrl_transfer(0x80, 6, 0x0202, 0, 9)
    assert err(e) == (-9, errno.EPIPE)
    assert bytes(dev.ctrl_transfer(0x80, 6, 0x0300, 0, 255)) == bytes((6, 3, 9, 4, 7, 4))


def test_linux_selects_the_first_configuration_and_set_configuration(
        dev: Any, model: Loopback) -> None:
    assert dev.get_active_configuration().bConfigurationValue == 1
    assert model.calls[:2] == [("reset", 0, 0), ("config", 1, 0)]
    dev.set_configuration(2)
    assert dev.get_active_configuration().bConfigurationValue == 2
    assert bytes(dev.ctrl_transfer(0x80, 8, 0, 0, 1)) == b"\x02"
    assert model.calls[-1] == ("config", 2, 0)
    ep = usb.util.find_descriptor(dev.get_active_configuration()[(0, 0)],
                                  bEndpointAddress=0x81)
    assert ep.wMaxPacketSize == 64
    with pytest.raises(ValueError):  # pyusb's own check: 0x82 is not in configuration 2
        dev.write(0x82, b"x")
    # below pyusb: the bus refuses an endpoint outside the configuration like usbfs (EIO)
    with pytest.raises(usb.core.USBError) as e:
        dev.backend.intr_read(dev._ctx.handle, 0x82, 0, usb.util.create_buffer(16), 10)
    assert err(e) == (-1, errno.EIO)
    with pytest.raises(usb.core.USBError) as e:
        dev.ctrl_transfer(0x00, 9, 7, 0)  # no configuration 7: the device stalls
    assert err(e) == (-9, errno.EPIPE)
    dev.set_configuration(0)
    with pytest.raises(usb.core.USBError):
        dev.get_active_configuration()  # pyusb: "Configuration not set"


def test_alternate_settings(dev: Any, model: Loopback) -> None:
    model.queue(model.alt_in, b"alt")
    with pytest.raises(ValueError):
        dev.read(0x83, 16, 10)  # alt 0 has no endpoint
    with pytest.raises(usb.core.USBError) as e:
        dev.backend.bulk_read(dev._ctx.handle, 0x83, 1, usb.util.create_buffer(16), 10)
    assert err(e) == (-1, errno.EIO)
    dev.set_interface_altsetting(interface=1, alternate_setting=1)
    assert model.calls[-1] == ("interface", 1, 1)
    assert bytes(dev.ctrl_transfer(0x81, 10, 0, 1, 1)) == b"\x01"  # GET_INTERFACE
    assert bytes(dev.read(0x83, 16, 100)) == b"alt"
    with pytest.raises(usb.core.USBError) as e:
        dev.ctrl_transfer(0x01, 11, 2, 1)  # SET_INTERFACE to a missing alternate setting
    assert err(e) == (-9, errno.EPIPE)
    dev.set_interface_altsetting(interface=1, alternate_setting=0)
    with pytest.raises(usb.core.USBError) as e:
        dev.backend.bulk_read(dev._ctx.handle, 0x83, 1, usb.util.create_buffer(16), 10)
    assert err(e) == (-1, errno.EIO)


# -- data --------------------------------------------------------------------------------------


def test_loopback_and_packet_accounting(bus: VirtualUsbBus, dev: Any, model: Loopback) -> None:
    usb.util.claim_interface(dev, 0)
    assert dev.write(0x01, b"hello", 100) == 5
    assert bytes(dev.read(0x81, 512, 100)) == b"hello"
    s = bus.stats(model)
    assert (s["usb_transfers_out"], s["usb_transfers_in"]) == (1, 1)
    assert (s["usb_packets_out"], s["usb_packets_in"]) == (1, 1)
    assert (s["usb_payload_bytes_out"], s["usb_payload_bytes_in"]) == (5, 5)
    # high speed: 55 bytes of protocol overhead per transaction (docs/hardware/usb.md)
    assert (s["usb_bus_bytes_out"], s["usb_bus_bytes_in"]) == (60, 60)
    assert (s["usb_zlps_out"], s["usb_zlps_in"]) == (0, 0)


def test_packet_splitting_and_zlps(bus: VirtualUsbBus, dev: Any, model: Loopback) -> None:
    assert dev.write(0x01, bytes(1300), 100) == 1300
    assert [len(p) for p in model.received] == [512, 512, 276]
    assert dev.write(0x01, bytes(512), 100) == 512  # exactly one packet: no ZLP added
    assert [len(p) for p in model.received[3:]] == [512]
    assert dev.write(0x01, b"", 100) == 0  # the host's own ZLP
    assert model.received[4:] == [b""]
    s = bus.stats(model)
    assert (s["usb_packets_out"], s["usb_zlps_out"], s["usb_transfers_out"]) == (5, 1, 3)
    assert s["usb_payload_bytes_out"] == 1812
    assert s["usb_bus_bytes_out"] == 1812 + 5 * 55
    # the echo: 1300 = 512 + 512 + 276 ends at the short packet
    assert len(dev.read(0x81, 2048, 100)) == 1300
    # 512 then the ZLP: the ZLP ends the transfer (USB 2.0 §5.8.3)
    assert len(dev.read(0x81, 2048, 100)) == 512
    s = bus.stats(model)
    assert (s["usb_packets_in"], s["usb_zlps_in"], s["usb_transfers_in"]) == (5, 1, 2)


def test_read_fills_the_buffer_then_stops(dev: Any, model: Loopback) -> None:
    model.queue(model.echo, bytes(512), bytes(512), b"tail")
    assert len(dev.read(0x81, 1024, 100)) == 1024  # full buffer: no short packet needed
    assert bytes(dev.read(0x81, 1024, 100)) == b"tail"


def test_timeout_and_partial_data(bus: VirtualUsbBus, dev: Any, model: Loopback) -> None:
    with pytest.raises(usb.core.USBTimeoutError) as e:
        dev.read(0x81, 512, 20)
    assert err(e) == (-7, errno.ETIMEDOUT)
    model.queue(model.echo, bytes(512))  # a full packet, then nothing: not the end yet
    assert len(dev.read(0x81, 1024, 20)) == 512  # a timeout after data returns the data
    s = bus.stats(model)
    assert s["usb_timeouts"] == 2 and s["usb_transfers_in"] == 1


def test_stall_and_clear_halt(bus: VirtualUsbBus, dev: Any, model: Loopback) -> None:
    bus.stall(model, 0x81)
    model.queue(model.echo, b"x")
    with pytest.raises(usb.core.USBError) as e:
        dev.read(0x81, 64, 100)
    assert err(e) == (-9, errno.EPIPE)
    assert bytes(dev.ctrl_transfer(0x82, 0, 0, 0x81, 2)) == b"\x01\x00"  # GET_STATUS: halted
    dev.clear_halt(0x81)
    assert ("clear", 0x81, 0) in model.calls
    assert bytes(dev.ctrl_transfer(0x82, 0, 0, 0x81, 2)) == b"\x00\x00"
    assert bytes(dev.read(0x81, 64, 100)) == b"x"
    # the model stalls: the endpoint stays halted until CLEAR_FEATURE(ENDPOINT_HALT)
    model.stall_out = True
    with pytest.raises(usb.core.USBError) as e:
        dev.write(0x01, b"y", 100)
    assert err(e) == (-9, errno.EPIPE)
    model.stall_out = False
    with pytest.raises(usb.core.USBError) as e:
        dev.write(0x01, b"y", 100)
    assert err(e) == (-9, errno.EPIPE)
    dev.ctrl_transfer(0x02, 1, 0, 0x01)  # CLEAR_FEATURE(ENDPOINT_HALT) by hand
    assert dev.write(0x01, b"y", 100) == 1
    assert bus.stats(model)["usb_stalls"] == 3


def test_control_requests(bus: VirtualUsbBus, dev: Any, model: Loopback) -> None:
    assert bytes(dev.ctrl_transfer(0xC0, 1, 0x1234, 7, 64)) == b"pong\x34\x12\x07\x00"
    assert bytes(dev.ctrl_transfer(0xC0, 1, 0, 0, 4)) == b"pong"  # trimmed to wLength
    assert dev.ctrl_transfer(0x40, 2, 0, 0, b"abc") == 3
    assert model.stored == b"abc"
    with pytest.raises(usb.core.USBError) as e:
        dev.ctrl_transfer(0xC0, 0x55, 0, 0, 4)
    assert err(e) == (-9, errno.EPIPE)
    assert bytes(dev.ctrl_transfer(0x80, 0, 0, 0, 2)) == b"\x01\x00"  # self-powered (0xC0)
    s = bus.stats(model)
    assert s["usb_control_transfers"] == 5 and s["usb_stalls"] == 1
    assert s["usb_control_bytes_in"] == 8 + 4 + 2 and s["usb_control_bytes_out"] == 3


def test_control_accounting_figures(bus: VirtualUsbBus, dev: Any, model: Loopback) -> None:
    bus.reset_stats(model)
    dev.ctrl_transfer(0x80, 6, 0x0100, 0, 18)
    s = bus.stats(model)
    # SETUP (8) + one 18-byte data packet + status ZLP, 55 bytes overhead each at high speed
    assert s["usb_control_bus_bytes"] == (8 + 55) + (18 + 55) + (0 + 55)
    assert s["usb_bus_time_s"] == pytest.approx(((8 + 55) + (18 + 55) + 55) * 8 / 480e6)


# -- unplug and replug -------------------------------------------------------------------------


def test_unplug_fails_handles_and_ends_a_blocked_reader(
        bus: VirtualUsbBus, dev: Any, model: Loopback) -> None:
    usb.util.claim_interface(dev, 0)
    outcome: list[BaseException] = []

    def reader() -> None:
        try:
            dev.read(0x81, 512, 0)  # 0: wait for ever
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=reader)
    t.start()
    assert model.waiting.wait(5)
    bus.unplug(model)
    t.join(5)
    assert not t.is_alive()
    assert isinstance(outcome[0], usb.core.USBError)
    assert (outcome[0].backend_error_code, outcome[0].errno) == (-4, errno.ENODEV)
    with pytest.raises(usb.core.USBError) as e:
        dev.write(0x01, b"x", 100)
    assert err(e) == (-4, errno.ENODEV)
    assert not bus.plugged(model)
    assert list(usb.core.find(find_all=True, backend=bus.backend)) == []


def test_replug_new_address_same_port(bus: VirtualUsbBus, dev: Any, model: Loopback) -> None:
    old = (dev.address, port_path_of(dev))
    assert bus.replug(model) != old[0]
    with pytest.raises(usb.core.USBError) as e:
        dev.ctrl_transfer(0x80, 6, 0x0100, 0, 18)
    assert err(e) == (-4, errno.ENODEV)
    new = usb.core.find(backend=bus.backend, idVendor=VID)
    assert new.address == bus.address_of(model) == old[0] + 1
    assert port_path_of(new) == old[1] == "1-1"
    assert new.write(0x01, b"again", 100) == 5
    usb.util.dispose_resources(new)


# -- faults ------------------------------------------------------------------------------------


def test_babble(bus: VirtualUsbBus, dev: Any, model: Loopback) -> None:
    bus.babble(model, 0x81)
    model.queue(model.echo, b"lost", b"kept")
    with pytest.raises(usb.core.USBError) as e:
        dev.read(0x81, 512, 100)
    assert err(e) == (-8, errno.EOVERFLOW)
    assert bytes(dev.read(0x81, 512, 100)) == b"kept"
    model.queue(model.echo, bytes(600))  # longer than wMaxPacketSize
    with pytest.raises(usb.core.USBError) as e:
        dev.read(0x81, 1024, 100)
    assert err(e) == (-8, errno.EOVERFLOW)
    model.queue(model.echo, bytes(200))  # longer than the buffer
    with pytest.raises(usb.core.USBError) as e:
        dev.read(0x81, 100, 100)
    assert err(e) == (-8, errno.EOVERFLOW)
    assert bus.stats(model)["usb_overflows"] == 3


def test_busy_with_kernel_driver_and_other_handle(bus: VirtualUsbBus) -> None:
    m = Loopback()
    bus.plug(m, kernel_driver={0})
    a = usb.core.find(backend=bus.backend)
    b = usb.core.find(backend=bus.backend)
    try:
        assert a.is_kernel_driver_active(0) and not a.is_kernel_driver_active(1)
        with pytest.raises(usb.core.USBError) as e:
            usb.util.claim_interface(a, 0)
        assert err(e) == (-6, errno.EBUSY)
        with pytest.raises(usb.core.USBError) as e:
            a.set_configuration()  # a kernel driver holds an interface
        assert err(e) == (-6, errno.EBUSY)
        a.detach_kernel_driver(0)
        assert not a.is_kernel_driver_active(0)
        with pytest.raises(usb.core.USBError) as e:
            a.detach_kernel_driver(0)
        assert err(e) == (-5, errno.ENOENT)
        usb.util.claim_interface(a, 0)
        with pytest.raises(usb.core.USBError) as e:
            usb.util.claim_interface(b, 0)  # another handle holds it
        assert err(e) == (-6, errno.EBUSY)
        with pytest.raises(usb.core.USBError) as e:
            b.set_configuration()  # an interface is claimed
        assert err(e) == (-6, errno.EBUSY)
        with pytest.raises(usb.core.USBError) as e:
            a.attach_kernel_driver(0)
        assert err(e) == (-6, errno.EBUSY)
        usb.util.release_interface(a, 0)
        usb.util.claim_interface(b, 0)
        usb.util.release_interface(b, 0)
        b.set_configuration()
        a.attach_kernel_driver(0)
        assert b.is_kernel_driver_active(0)
    finally:
        usb.util.dispose_resources(a)
        usb.util.dispose_resources(b)


def test_kernel_driver_from_the_model(bus: VirtualUsbBus) -> None:
    class Bound(Loopback):
        kernel_driver_bound = frozenset({0, 1})

    bus.plug(Bound())
    d = usb.core.find(backend=bus.backend)
    assert d.is_kernel_driver_active(0) and d.is_kernel_driver_active(1)
    usb.util.dispose_resources(d)


def test_nak_fault(bus: VirtualUsbBus, dev: Any, model: Loopback) -> None:
    bus.nak(model, 0x01, 30)
    with pytest.raises(usb.core.USBTimeoutError):
        dev.write(0x01, b"x", 20)
    bus.nak(model, 0x01, 0)
    assert dev.write(0x01, b"x", 100) == 1
    bus.nak(model, 0x81, 0.02)  # shorter than the read's timeout: the read waits it out
    assert bytes(dev.read(0x81, 64, 5000)) == b"x"
    assert bus.stats(model)["usb_timeouts"] == 1


def test_device_naks_out_packets(bus: VirtualUsbBus, dev: Any, model: Loopback) -> None:
    model.refuse = 3
    assert dev.write(0x01, b"ok", 5000) == 2  # retried until accepted
    assert model.received == [b"ok"] and model.refuse == 0
    model.refuse = -1
    with pytest.raises(usb.core.USBTimeoutError):
        dev.write(0x01, b"no", 20)
    # a write that gets some packets through before timing out returns their count
    model.refuse, model.budget = -1, 2
    assert dev.write(0x01, bytes(1300), 20) == 1024
    assert [len(p) for p in model.received[1:]] == [512, 512]
    s = bus.stats(model)
    assert s["usb_timeouts"] == 2 and s["usb_transfers_out"] == 2


def test_drop_and_duplicate(bus: VirtualUsbBus, dev: Any, model: Loopback) -> None:
    bus.drop_in(model, 0x82)
    model.queue(model.notes, b"A", b"B")
    assert bytes(dev.read(0x82, 16, 100)) == b"B"  # A was lost
    bus.duplicate_in(model, 0x82)
    model.queue(model.notes, b"C")
    assert bytes(dev.read(0x82, 16, 100)) == b"C"
    assert bytes(dev.read(0x82, 16, 100)) == b"C"
    with pytest.raises(usb.core.USBTimeoutError):
        dev.read(0x82, 16, 10)
    s = bus.stats(model)
    assert (s["usb_dropped_in"], s["usb_duplicated_in"]) == (1, 1)
    assert s["usb_transfers_in"] == 3 and s["usb_packets_in"] == 4


def test_reset_keeps_configuration_and_clears_halts(
        bus: VirtualUsbBus, dev: Any, model: Loopback) -> None:
    dev.set_interface_altsetting(interface=1, alternate_setting=1)
    bus.stall(model, 0x81)
    dev.reset()
    assert model.calls[-3:] == [("reset", 0, 0), ("config", 1, 0), ("interface", 1, 1)]
    assert dev.get_active_configuration().bConfigurationValue == 1
    model.queue(model.echo, b"r")
    assert bytes(dev.read(0x81, 64, 100)) == b"r"


def test_concurrent_readers_and_writer(bus: VirtualUsbBus, dev: Any, model: Loopback) -> None:
    n = 50
    bulk: list[bytes] = []
    notes: list[bytes] = []
    errors: list[BaseException] = []

    def read_into(ep: int, out: list[bytes]) -> None:
        try:
            while len(out) < n:
                out.append(bytes(dev.read(ep, 512, 5000)))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=read_into, args=(0x81, bulk)),
               threading.Thread(target=read_into, args=(0x82, notes))]
    for t in threads:
        t.start()
    for i in range(n):
        dev.write(0x01, b"m%d" % i, 1000)
        model.queue(model.notes, b"n%d" % i)
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads) and not errors
    assert bulk == [b"m%d" % i for i in range(n)]
    assert notes == [b"n%d" % i for i in range(n)]


# -- bus time (docs/hardware/usb.md, "Bus time") -----------------------------------------------


def test_bus_time_figures() -> None:
    assert bulk_transactions_per_frame(Speed.FULL, 64) == 19
    assert bulk_transactions_per_frame(Speed.HIGH, 512) == 13
    assert ceiling_bps(Speed.FULL, 64) == pytest.approx(19 * 64 * 8 * 1000)  # 9.728 Mb/s
    assert ceiling_bps(Speed.HIGH, 512) == pytest.approx(13 * 512 * 8 * 8000)  # 425.984 Mb/s


def test_full_speed_frame_of_19_packets(bus: VirtualUsbBus) -> None:
    m = FullSpeedSink()
    bus.plug(m)
    d = usb.core.find(backend=bus.backend, idProduct=0x0002)
    bus.reset_stats(m)
    d.write(0x01, bytes(64 * 19), 100)
    s = bus.stats(m)
    assert s["usb_packets_out"] == 19 and s["usb_bus_bytes_out"] == 19 * (64 + 13)
    # 19 x 77 bytes at 12 Mb/s: 975 µs, within one 1 ms frame
    assert s["usb_bus_time_s"] == pytest.approx(19 * 77 * 8 / 12e6)
    assert s["usb_bus_time_s"] <= 1e-3
    first = s["usb_bus_time_s"]
    d.write(0x01, bytes(64 * 19), 100)
    # the 20th transaction does not fit in the 37 bytes left of the frame: the second
    # transfer is charged them and a whole frame of its own -- exactly 1 ms, so a
    # sustained stream moves 19 x 64 bytes per frame, the ceiling
    assert bus.stats(m)["usb_bus_time_s"] - first == pytest.approx(1e-3)
    usb.util.dispose_resources(d)


def test_high_speed_microframe_of_13_packets(bus: VirtualUsbBus, model: Loopback) -> None:
    d = usb.core.find(backend=bus.backend)
    bus.reset_stats(model)
    d.write(0x01, bytes(512 * 13), 100)
    t = bus.stats(model)["usb_bus_time_s"]
    assert t == pytest.approx(13 * 567 * 8 / 480e6) and t <= 125e-6
    usb.util.dispose_resources(d)


# -- loading by module name --------------------------------------------------------------------


def test_default_bus_and_get_backend() -> None:
    assert simusb.get_backend() is simusb.get_backend() is simusb.default_bus().backend
    m = Loopback()
    simusb.default_bus().plug(m)
    try:
        d = usb.core.find(backend=simusb.get_backend(), idVendor=VID)
        assert d is not None and d.product == "Loopback"
        usb.util.dispose_resources(d)
    finally:
        simusb.default_bus().unplug(m)


def test_pyftdi_loads_the_backend_by_module_name() -> None:
    from pyftdi.usbtools import UsbTools  # type: ignore[import-untyped]

    with pyftdi_backend("hilkit.sim.usb"):  # UsbTools.BACKENDS = ("hilkit.sim.usb",)
        assert UsbTools.find_all([(0x0403, 0x6014)]) == []


def test_pacing_sleeps_only_for_a_debt_over_a_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    import hilkit.sim.usb.bus as bus_module

    slept: list[float] = []
    monkeypatch.setattr(bus_module.time, "sleep", slept.append)
    b = VirtualUsbBus(2)  # realtime
    fs, hs = FullSpeedSink(), Loopback()
    b.plug(fs)
    b.plug(hs)
    try:
        h = b.backend.open_device(b.backend.enumerate_devices()[1])
        b.backend.bulk_write(h, 0x01, 0, bytes(512 * 13), 100)  # 123 µs of bus time
        assert slept == []
        b.backend.close_device(h)
        h = b.backend.open_device(b.backend.enumerate_devices()[0])
        b.backend.bulk_write(h, 0x01, 0, bytes(64 * 19 * 3), 100)  # ~3 ms at full speed
        assert len(slept) == 1 and 1e-3 < slept[0] <= b.stats(fs)["usb_bus_time_s"] + 1e-3
        b.backend.close_device(h)
    finally:
        b.close()


class FtdiLike(UsbDeviceModel):
    """Enough of an FT232H's identity for pyftdi to find and open it (docs/hardware/ft232h.md)."""

    device_descriptor = D.device(vendor=0x0403, product=0x6014, bcd_device=0x0900,
                                 i_manufacturer=1, i_product=2, i_serial=3)
    configurations = (D.configuration(1, [
        D.interface(0, 0, num_endpoints=2, cls=0xFF, subclass=0xFF, protocol=0xFF, i_interface=2),
        D.endpoint(0x81, D.EP_BULK, 512),
        D.endpoint(0x02, D.EP_BULK, 512),
    ], num_interfaces=1),)
    kernel_driver_bound = frozenset({0})  # ftdi_sio

    def __init__(self) -> None:
        super().__init__()
        self.strings = {1: "FTDI", 2: "Single RS232-HS", 3: "FT1234"}


def test_pyftdi_finds_and_opens_a_device_on_the_default_bus() -> None:
    from pyftdi.usbtools import UsbTools

    m = FtdiLike()
    with pyftdi_backend("hilkit.sim.usb"):
        simusb.default_bus().plug(m)
        try:
            found = UsbTools.find_all([(0x0403, 0x6014)])
            assert len(found) == 1
            desc, interfaces = found[0]
            assert (desc.vid, desc.pid, desc.sn, desc.description, interfaces) == \
                (0x0403, 0x6014, "FT1234", "Single RS232-HS", 1)
            assert (desc.bus, desc.address) == (1, simusb.default_bus().address_of(m))
            dev = UsbTools.get_device(desc)
            assert dev.get_active_configuration().bConfigurationValue == 1
            assert dev.is_kernel_driver_active(0)  # what pyftdi detaches before claiming
            UsbTools.release_device(dev)
        finally:
            simusb.default_bus().unplug(m)

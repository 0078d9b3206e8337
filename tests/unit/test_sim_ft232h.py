"""The FT232H model on the virtual USB bus, driven by pyftdi's own code
(docs/hardware/ft232h.md, "The FT232H model")."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

import pytest
import usb.core  # type: ignore[import-untyped]
from pyftdi.ftdi import Ftdi, FtdiError  # type: ignore[import-untyped]
from pyftdi.gpio import GpioMpsseController  # type: ignore[import-untyped]
from pyftdi.spi import SpiController  # type: ignore[import-untyped]
from pyftdi.usbtools import UsbTools  # type: ignore[import-untyped]

import hilkit.sim.usb as simusb
from hilkit.bus.ftdi import FtdiSpiBus
from hilkit.sim.usb.ft232h import Ft232hFaults, Ft232hModel, pyftdi_backend

URL = "ftdi://ftdi:232h/1"


class Echo:
    """An SPI slave answering each byte with the byte + 1; keeps the transactions."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def transfer(self, data: bytes) -> bytes:
        self.seen.append(bytes(data))
        return bytes((b + 1) & 0xFF for b in data)


@pytest.fixture
def slave() -> Echo:
    return Echo()


@pytest.fixture
def model(slave: Echo) -> Iterator[Ft232hModel]:
    with _plugged(Ft232hModel("FT0001", spi_slave=slave, spi_max_hz=14e6)) as m:
        yield m


def _close(obj: object) -> None:
    with contextlib.suppress(Exception):
        obj.close()  # type: ignore[attr-defined]


@contextlib.contextmanager
def spi(url: str = URL, **kw: object) -> Iterator[SpiController]:
    ctrl = SpiController()
    ctrl.configure(url, **kw)
    try:
        yield ctrl
    finally:
        _close(ctrl)


# -- identity and vendor requests ---------------------------------------------------------------


def test_found_by_url_serial_and_bus_address(model: Ft232hModel) -> None:
    found = UsbTools.find_all([(0x0403, 0x6014)])
    assert len(found) == 1
    desc, interfaces = found[0]
    assert (desc.sn, desc.description, interfaces) == ("FT0001", "Single RS232-HS", 1)
    address = simusb.default_bus().address_of(model)
    for url in (URL, "ftdi://ftdi:232h:FT0001/1", f"ftdi://ftdi:232h:1:{address:x}/1"):
        f = Ftdi()
        f.open_from_url(url)
        try:
            assert f.device_version == 0x0900 and f.is_H_series and f.has_mpsse
            assert f.fifo_sizes == (1024, 1024)
            assert f.usb_dev.manufacturer == "FTDI"
            assert f.usb_dev.serial_number == "FT0001"
        finally:
            f.close()
            UsbTools.flush_cache()


def test_latency_round_trip_and_unknown_request_stalls(model: Ft232hModel) -> None:
    f = Ftdi()
    f.open_from_url(URL)
    try:
        f.set_latency_timer(7)
        assert f.get_latency_timer() == 7 and model.latency_ms == 7
        assert f.poll_modem_status() == 0x6032
        f.set_dtr_rts(True, True)
        assert model.modem_ctrl == 3
        with pytest.raises(usb.core.USBError) as e:
            f.usb_dev.ctrl_transfer(0x40, 0x42, 0, 1, b"", 100)
        assert e.value.errno is not None  # EPIPE
        assert model.stats["stalled_requests"] == 1
    finally:
        f.close()


def test_bad_command_answers_fa_and_the_opcode(model: Ft232hModel) -> None:
    f = Ftdi()
    f.open_from_url(URL)
    try:
        f.set_bitmode(0, Ftdi.BitMode.MPSSE)
        f.write_data(bytes((0xAB, 0x87)))
        assert bytes(f.read_data_bytes(2, 4)) == b"\xfa\xab"
        assert model.stats["bad_commands"] == 1
    finally:
        f.close()


# -- SPI through pyftdi's SpiController ------------------------------------------------------------


def test_spi_exchange_write_read(model: Ft232hModel, slave: Echo) -> None:
    with spi() as ctrl:
        port = ctrl.get_port(cs=0, freq=6e6, mode=0)
        base = model.stats["spi_transactions"]
        assert port.exchange(b"\x01\x02\x03", duplex=True) == b"\x02\x03\x04"
        assert model.stats["spi_transactions"] == base + 1
        port.write(b"\x10\x20")
        assert slave.seen[-1] == b"\x10\x20"
        got = port.read(3)  # the slave sees MOSI idle low during the read
        assert got == b"\x01\x01\x01" and slave.seen[-1] == b"\x00\x00\x00"
        # write then read, one transaction; MOSI keeps the last bit written (0x05: high)
        assert port.exchange(b"\x05", 2) == b"\x00\x00"
        assert slave.seen[-1] == b"\x05\xff\xff"
        assert model.stats["spi_transactions"] == base + 4
        assert model.sck_hz == pytest.approx(6e6)
        s = model.stats
        assert s["spi_mode_mismatch"] == s["clock_over_limit"] == s["clocked_without_cs"] == 0


def test_a_transaction_over_many_usb_packets_is_one(model: Ft232hModel, slave: Echo) -> None:
    data = bytes(i & 0xFF for i in range(2000))
    with spi() as ctrl:
        port = ctrl.get_port(cs=0, freq=6e6, mode=0)
        base = model.stats["spi_transactions"]
        assert port.exchange(data, duplex=True) == bytes((b + 1) & 0xFF for b in data)
        assert model.stats["spi_transactions"] == base + 1 and slave.seen[-1] == data
        assert model.stats["split_transactions"] == 0


def test_mode_mismatch_and_clock_over_limit_are_counted(model: Ft232hModel,
                                                        slave: Echo) -> None:
    with spi() as ctrl:
        port = ctrl.get_port(cs=0, freq=6e6, mode=1)
        port.exchange(b"\x81", duplex=True)
        assert model.stats["spi_mode_mismatch"] == 1 and model.three_phase
        assert slave.seen[-1] != b"\x81"  # the slave saw MOSI a bit late
        port.set_mode(0)
        port.set_frequency(30e6)
        port.exchange(b"\x00", duplex=True)
        assert model.sck_hz == pytest.approx(30e6) and not model.three_phase
        assert model.stats["clock_over_limit"] == 1
        assert model.stats["spi_mode_mismatch"] == 1


def test_gpio_and_the_reset_hook(slave: Echo) -> None:
    levels: list[bool] = []
    int_level = [False]
    m = Ft232hModel("FT0002", spi_slave=slave, reset_line=(4, levels.append),
                    int_line=(5, lambda: int_level[0]))
    with _plugged(m):
        with spi(direction=0x10, initial=0x10) as ctrl:
            gpio = ctrl.get_gpio()
            gpio.set_direction(0x30, 0x10)  # ADBUS4 out (reset), ADBUS5 in (int)
            gpio.write(0x00)
            assert levels[-1] is False
            gpio.write(0x10)
            assert levels[-1] is True
            assert gpio.read() & 0x20 == 0
            int_level[0] = True
            assert gpio.read() & 0x20
        g = GpioMpsseController()
        g.configure("ftdi://ftdi:232h:FT0002/1", direction=0x0100, frequency=1e6)
        try:
            g.write(0x0100)
            assert m.gpio_value & 0x0100 and m.gpio_dir & 0x0100
            assert g.read(1)[0] & 0x0100
        finally:
            _close(g)


# -- hilkit's own bus ------------------------------------------------------------------------------


def test_hilkit_ftdi_spi_bus_batch(model: Ft232hModel, slave: Echo) -> None:
    b = FtdiSpiBus(URL, 6_000_000, 3, 0)
    try:
        frames = [b"\x0f\x00\x01\x00", b"\xf0\x00\x02\x7f", bytes(range(100))]
        base = model.stats["spi_transactions"]
        assert b.transfer_batch(frames) == [bytes((x + 1) & 0xFF for x in f) for f in frames]
        assert model.stats["spi_transactions"] == base + 3
        assert slave.seen[-3:] == frames
        big = bytes(i & 0xFF for i in range(3000))  # over the FIFO: CS held across trips
        assert b.transfer(big) == bytes((x + 1) & 0xFF for x in big)
        assert model.stats["split_transactions"] >= 2  # the model had to cut it
    finally:
        b.close()


# -- limits and faults -----------------------------------------------------------------------------


def test_a_full_read_fifo_naks_writes(model: Ft232hModel) -> None:
    f = Ftdi()
    f.open_mpsse_from_url(URL)
    try:
        f.timeouts = (1000, 100)
        with pytest.raises(FtdiError):
            f.write_data(bytes((0x81,)) * 1100)  # 1100 bytes of read-back, none read
        assert model.stats["fifo_full_naks"] > 0
        assert len(f.read_data_bytes(1024, 4)) == 1024
        f.write_data(bytes((0xAA, 0x87)))  # accepted again once read
        assert bytes(f.read_data_bytes(2, 4)) == b"\xfa\xaa"
    finally:
        f.close()


def test_stop_answering_times_out(model: Ft232hModel) -> None:
    with spi() as ctrl:
        port = ctrl.get_port(cs=0, freq=6e6, mode=0)
        ctrl.ftdi.timeouts = (200, 100)
        model.faults.stop_answering = True
        with pytest.raises(FtdiError):
            port.exchange(b"\x01", duplex=True)
        model.faults.stop_answering = False


def test_miso_bit_errors(slave: Echo) -> None:
    m = Ft232hModel("FT0003", spi_slave=slave, faults=Ft232hFaults(miso_bit_error_rate=0.5))
    with _plugged(m), spi("ftdi://ftdi:232h:FT0003/1") as ctrl:
        port = ctrl.get_port(cs=0, freq=6e6, mode=0)
        assert port.exchange(bytes(64), duplex=True) != b"\x01" * 64
        assert m.stats["miso_bit_errors"] > 0


def test_unplug_mid_batch_raises(model: Ft232hModel, slave: Echo) -> None:
    b = FtdiSpiBus(URL, 6_000_000, 3, 0)

    def unplug_on_transfer(data: bytes) -> bytes:
        simusb.default_bus().unplug(model)
        return data

    model.spi_slave = type("Unplugger", (), {"transfer": staticmethod(unplug_on_transfer)})()
    try:
        with pytest.raises(OSError, match=r"gone \(unplugged\?\)") as info:
            b.transfer_batch([b"\x01\x02", b"\x03\x04", b"\x05\x06"])
        assert info.value.errno == errno.ENODEV
    finally:
        _close(b)


def test_read_back_of_an_open_transaction_waits_for_cs_high(model: Ft232hModel,
                                                            slave: Echo) -> None:
    f = Ftdi()
    f.open_mpsse_from_url(URL, direction=0x0B, initial=0x08)
    try:
        base = model.stats["spi_transactions"]
        f.write_data(bytes((0x80, 0x00, 0x0B, 0x31, 0x01, 0x00, 0xAA, 0xBB)))  # CS low, 2 bytes
        f.write_data(bytes((0x31, 0x00, 0x00, 0xCC, 0x87)))  # another packet, CS still low
        f.write_data(bytes((0x80, 0x08, 0x0B)))  # CS high: the slave gets all three bytes
        assert bytes(f.read_data_bytes(3, 4)) == b"\xab\xbc\xcd"
        assert slave.seen[-1] == b"\xaa\xbb\xcc"
        assert model.stats["spi_transactions"] == base + 1
        assert model.stats["split_transactions"] == 0
        flushes = model.stats["latency_flushes"]
        assert f.read_data_bytes(1, 2) == b""  # nothing: status bytes on each latency expiry
        assert model.stats["latency_flushes"] >= flushes + 2
        f.write_data(bytes((0x31, 0x00, 0x00, 0x11, 0x87)))  # clocked with CS high: ignored
        assert bytes(f.read_data_bytes(1, 4)) == b"\xff"
        assert model.stats["clocked_without_cs"] == 1
        assert model.stats["spi_transactions"] == base + 1
    finally:
        f.close()


# -- slaves that stream a transaction (hilkit.sim.chip.ChipModel.stream) -------------------------


@contextlib.contextmanager
def _plugged(m: Ft232hModel) -> Iterator[Ft232hModel]:
    """``m`` on the default virtual bus, pyftdi enumerating it; unplugged after."""
    bus = simusb.default_bus()
    with pyftdi_backend("hilkit.sim.usb"):
        bus.plug(m)
        try:
            yield m
        finally:
            if bus.plugged(m):
                bus.unplug(m)


def test_enc28j60_wbm_and_rbm_over_the_fifo_are_one_transaction_each() -> None:
    """CS stays low across round trips and the chip sees one RBM/WBM (DS39662E §4.2.2,
    §4.2.4), as on silicon: the model streams instead of cutting."""
    from hilkit.drivers.enc28j60 import regs as r
    from hilkit.drivers.enc28j60.model import ENC28J60Model, ENC28J60Timing

    enc = ENC28J60Model(timing=ENC28J60Timing.instant())
    data = bytes((i * 7 + 3) & 0xFF for i in range(1500))
    with _plugged(Ft232hModel("FT0004", spi_slave=enc)) as m:
        b = FtdiSpiBus("ftdi://ftdi:232h:FT0004/1", 6_000_000, 3, 0)
        try:
            calls = enc.counters.transactions
            b.transfer_batch([bytes((r.OP_WCR | r.EWRPTL.addr, 0x00)),
                              bytes((r.OP_WCR | r.EWRPTH.addr, 0x02))])
            assert b.transfer(bytes((r.OP_WBM,)) + data) == bytes(1501)
            b.transfer_batch([bytes((r.OP_WCR | r.ERDPTL.addr, 0x00)),
                              bytes((r.OP_WCR | r.ERDPTH.addr, 0x02))])
            back = b.transfer(bytes((r.OP_RBM,)) + bytes(1500))
            assert back == b"\x00" + data
            assert bytes(enc.mem[0x200:0x200 + 1500]) == data
            assert enc.counters.transactions == calls + 6
            s = m.stats
            assert s["split_transactions"] == 0
            assert s["streamed_transactions"] >= 2
            assert s["spi_transactions"] == 6 and enc.stats["bad_frames"] == 0
        finally:
            b.close()


def test_a_slave_that_declines_to_stream_gets_whole_transactions() -> None:
    """The W5100 model's 4-byte frames do not stream: held back, handed over at CS high."""
    from hilkit.drivers.w5100.model import W5100Model

    w = W5100Model()
    with _plugged(Ft232hModel("FT0005", spi_slave=w)) as m:
        b = FtdiSpiBus("ftdi://ftdi:232h:FT0005/1", 6_000_000, 3, 0)
        try:
            b.transfer_batch([b"\xf0\x00\x09\x12", b"\xf0\x00\x0a\x34"])  # SHAR0, SHAR1
            got = b.transfer_batch([b"\x0f\x00\x09\x00", b"\x0f\x00\x0a\x00"])
            assert [g[3] for g in got] == [0x12, 0x34]
            s = m.stats
            assert s["streamed_transactions"] == 0 and s["split_transactions"] == 0
            assert w.counters.transactions == 4 and s["slave_errors"] == 0
        finally:
            b.close()


# -- a bridge that stops answering, or goes away, under a driver -------------------------------


@pytest.mark.parametrize("fault", ["wedged", "unplugged"])
def test_a_lost_bridge_is_a_counted_error_and_the_chip_is_probed_again(fault: str) -> None:
    """The driver over FtdiSpiBus over the model: whatever the bridge does, ``poll`` and
    ``send`` return (errors counted, the chip taken for dead, link down), each wait bounded
    by ``bus.timeout_ms`` rather than pyftdi's 5 s, and the error names the bridge."""
    from hilkit.drivers.enc28j60.driver import ENC28J60Device
    from hilkit.drivers.enc28j60.model import ENC28J60Model, ENC28J60Timing

    enc = ENC28J60Model(timing=ENC28J60Timing.instant())
    m = Ft232hModel("FT0006", spi_slave=enc)
    vbus = simusb.default_bus()
    with _plugged(m):
        b = FtdiSpiBus("ftdi://ftdi:232h:FT0006/1", 15_000_000, 3, 0, timeout_ms=50)
        try:
            assert b._ftdi.timeouts == (50, 50)
            dev = ENC28J60Device(b, mac=bytes.fromhex("020000000001"))
            dev.poll(8)
            assert dev.link_up
            if fault == "wedged":
                m.faults.stop_answering = True
            else:
                vbus.unplug(m)
            with pytest.raises(OSError) as info:
                b.transfer(b"\x00\x00")
            assert "ftdi://ftdi:232h:FT0006/1" in str(info.value)
            want = errno.ETIMEDOUT if fault == "wedged" else errno.ENODEV
            assert info.value.errno == want
            errors = dev.counters.rx_errors
            assert dev.poll(8) == []
            assert dev.counters.rx_errors == errors + 1 and not dev.link_up
            assert dev.send(bytes(60)) is False
            assert dev.poll(8) == []  # dead: probed again only every REPROBE_MS
            if fault == "wedged":
                m.faults.stop_answering = False
                b.transfer_batch([b"\x00"])  # the bridge answers again: so does the bus
        finally:
            with contextlib.suppress(Exception):
                dev.close()
            b.close()
            if vbus.plugged(m):
                vbus.unplug(m)

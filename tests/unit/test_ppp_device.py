"""PppDevice over a real pseudo-terminal, with a second PppLink (or device) as the server."""

from __future__ import annotations

import contextlib
import os
import random
import select
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from hilkit.drivers.ppp.chat import ChatDone, ChatFailed, parse_chat
from hilkit.drivers.ppp.device import TX_CONTROL_SLACK, PppDevice
from hilkit.drivers.ppp.link import LinkDown, LinkUp, Phase, PppConfig, PppLink
from hilkit.port.conformance import DeviceConformance, DevicePair
from hilkit.port.device import Device, LinkConfig, LinkType
from hilkit.port.errors import HardwareNotFound
from hilkit.rig.slirp import PacedPtyLine
from hilkit.stack import Stack

SERVER = PppConfig(address="10.64.0.1", peer_address="10.64.0.2", dns_servers=("10.64.0.53",),
                   restart_ms=500)
CLIENT = PppConfig(restart_ms=500)


def now_ms() -> int:
    return int(time.monotonic() * 1000)


def udp_packet(payload: bytes, src: str = "10.64.0.2", dst: str = "10.64.0.1") -> bytes:
    """An IPv4/UDP packet (checksums zero: the link does not look inside)."""
    total = 20 + 8 + len(payload)
    ip = bytes([0x45, 0, total >> 8, total & 0xFF, 0, 1, 0, 0, 64, 17, 0, 0])
    ip += bytes(int(x) for x in src.split(".")) + bytes(int(x) for x in dst.split("."))
    udp = (4000).to_bytes(2, "big") + (7).to_bytes(2, "big") + (8 + len(payload)).to_bytes(
        2, "big") + b"\0\0"
    return ip + udp + payload


class Server:
    """The far end of a pty: a PppLink fed from the master side, optionally a modem first.

    ``modem`` maps a command line to its answer; after ``dial`` is answered the line
    speaks PPP. ``pump()`` once, or ``start()`` a thread that pumps until ``stop()``.
    """

    def __init__(self, master: int, config: PppConfig = SERVER,
                 modem: dict[str, str] | None = None, dial: str = "ATD*99#") -> None:
        self.master = master
        self.link = PppLink(config)
        self.modem = modem
        self.dial = dial
        self.heard = bytearray()  # everything read, for the hang-up test
        self.events: list[object] = []
        self.packets: list[bytes] = []
        self.reading = True
        self._cmd = b""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if modem is None:
            self.link.line_up(now_ms())

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:
                time.sleep(0.001)

    def pump(self) -> None:
        t = now_ms()
        if self.reading:
            try:
                data = os.read(self.master, 65536)
            except (BlockingIOError, OSError):
                data = b""
            self.heard += data
            if data:
                if self.modem is not None:
                    self._modem(data, t)
                else:
                    self.link.receive(data, t)
        self.link.poll(t)
        out = self.link.take_output()
        if out:
            self.write(out)
        self.packets += self.link.take_packets()
        self.events += self.link.take_events()

    def _modem(self, data: bytes, t: int) -> None:
        assert self.modem is not None
        self._cmd += data
        while b"\r" in self._cmd:
            line, _, self._cmd = self._cmd.partition(b"\r")
            cmd = line.decode(errors="replace").strip()
            self.write(self.modem.get(cmd, "\r\nERROR\r\n").encode())
            if cmd == self.dial and "CONNECT" in self.modem.get(cmd, ""):
                self.modem = None
                self.link.line_up(t)
                rest, self._cmd = self._cmd, b""
                if rest:
                    self.link.receive(rest, t)
                return

    def start(self) -> Server:
        def run() -> None:
            while not self._stop.is_set():
                select.select([self.master], [], [], 0.005)
                self.pump()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    os.set_blocking(master, False)
    import tty
    tty.setraw(slave)
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def bring_up(dev: PppDevice, server: Server, limit_s: float = 5.0) -> None:
    end = time.monotonic() + limit_s
    while not (dev.link_up and server.link.ip_open):
        assert time.monotonic() < end, f"link did not come up: {dev.stats}"
        dev.poll(8)
        server.pump()
        time.sleep(0.002)


def test_is_a_raw_ip_device(pty: tuple[int, str]) -> None:
    _, path = pty
    dev = PppDevice(path, config=CLIENT, hangup="none")
    try:
        assert isinstance(dev, Device)
        assert dev.link_type is LinkType.RAW_IP and dev.mac is None and dev.name == "ppp0"
        assert dev.fileno() is not None and not dev.link_up
        assert dev.link_config() is None
        assert dev.next_deadline() is not None  # LCP's restart timer
    finally:
        dev.close()
    dev.close()  # twice is allowed
    assert dev.fileno() is None


def test_comes_up_ip_flows_link_config(pty: tuple[int, str]) -> None:
    master, path = pty
    server = Server(master)
    dev = PppDevice(path, config=CLIENT, hangup="none")
    try:
        bring_up(dev, server)
        cfg = dev.link_config()
        assert cfg == LinkConfig("10.64.0.2", "10.64.0.1", ("10.64.0.53",), True)
        assert dev.link_config() is cfg  # the same object while nothing changes
        assert any(isinstance(e, LinkUp) for e in dev.take_events())

        out = udp_packet(b"from the device" * 20)
        assert dev.send(out)
        back = udp_packet(b"to the device" * 30, src="10.64.0.1", dst="10.64.0.2")
        assert server.link.send_ip(back, now_ms())
        got: list[bytes] = []
        end = time.monotonic() + 3
        while (not got or not server.packets) and time.monotonic() < end:
            server.pump()
            got += dev.poll(8)
            time.sleep(0.002)
        assert server.packets == [out]
        assert got == [back]
        c = dev.counters
        assert (c.tx_frames, c.tx_bytes, c.rx_frames, c.rx_bytes) == (
            1, len(out), 1, len(back))
        assert dev.stats["link.hdlc_rx_frames"] >= 3 and dev.stats["tx_pending_bytes"] == 0

        server.link.line_down(now_ms())  # the server drops the link: no addresses now
        server.link.line_up(now_ms())
        server.pump()
        end = time.monotonic() + 3
        while dev.link_up and time.monotonic() < end:
            dev.poll(8)
            server.pump()
        bring_up(dev, server)
        assert dev.link_config() == cfg
    finally:
        dev.close()


def test_close_sends_terminate_and_waits_for_the_ack(pty: tuple[int, str]) -> None:
    master, path = pty
    server = Server(master)
    dev = PppDevice(path, config=CLIENT, hangup="dtr")  # a pty has no DTR: logged, no error
    bring_up(dev, server)
    server.start()
    try:
        t0 = time.monotonic()
        dev.close()
        took = time.monotonic() - t0
    finally:
        server.stop()
    assert dev.phase is Phase.DEAD
    assert took < 1.0 + 0.2 + 0.3  # Terminate wait, DTR hold, slack
    assert any(isinstance(e, LinkDown) for e in server.events)
    with pytest.raises(OSError):
        dev.send(b"x")
    with pytest.raises(OSError):
        dev.poll(1)


def test_chat_dials_then_ppp_and_ath_hangs_up(pty: tuple[int, str]) -> None:
    master, path = pty
    ok = "\r\nOK\r\n"
    modem = {"AT": ok, "ATE0": ok, 'AT+CGDCONT=1,"IP","internet"': ok,
             "ATD*99#": "\r\nCONNECT 115200\r\n"}
    server = Server(master, modem=modem)
    chat = parse_chat("'' AT OK ATE0 OK AT+CGDCONT=1,\"IP\",\"internet\" OK ATD*99# CONNECT",
                      timeout_s=3)
    dev = PppDevice(path, config=CLIENT, chat=chat, hangup="ath")
    try:
        bring_up(dev, server)
        assert isinstance(dev.chat_outcome, ChatDone)
        # the in-band hang-up: after Terminate, +++ after a guard time, then ATH
        server.heard.clear()

        def modem_answers() -> None:  # the server stays PPP; the commands are answered here
            for cmd in (b"+++", b"ATH\r"):
                end = time.monotonic() + 6
                while time.monotonic() < end and cmd not in server.heard:
                    time.sleep(0.01)
                server.write(ok.encode())

        server.start()
        helper = threading.Thread(target=modem_answers, daemon=True)
        helper.start()
        t0 = time.monotonic()
        dev.close()
        took = time.monotonic() - t0
        helper.join(7)
    finally:
        server.stop()
        dev.close()
    assert took < 2.0  # Terminate answered at once, 1 s guard, OKs at once
    heard = bytes(server.heard)
    assert b"+++" in heard and heard.index(b"+++") < heard.index(b"ATH\r")


def test_chat_failure_names_the_step_and_keeps_the_link_down(pty: tuple[int, str]) -> None:
    master, path = pty
    server = Server(master, modem={"AT": "\r\nOK\r\n", "ATD*99#": "\r\nNO CARRIER\r\n"})
    dev = PppDevice(path, config=CLIENT, chat=parse_chat("'' AT OK ATD*99# CONNECT"),
                    hangup="none")
    try:
        end = time.monotonic() + 3
        while dev.chat_outcome is None and time.monotonic() < end:
            dev.poll(8)
            server.pump()
            time.sleep(0.002)
        out = dev.chat_outcome
        assert isinstance(out, ChatFailed)
        assert out.step_index == 2 and "NO CARRIER" in out.reason
        assert out.modem_said == "NO CARRIER"
        assert not dev.link_up and dev.stats["chat_failures"] == 1
    finally:
        dev.close()


def test_missing_port_is_hardware_not_found() -> None:
    with pytest.raises(HardwareNotFound) as e:
        PppDevice("/dev/ttyNOSUCH9")
    assert e.value.what == "/dev/ttyNOSUCH9"
    assert "no such serial port" in e.value.problem
    assert "dialout" in e.value.hint and "fuser" in e.value.hint
    assert "ls -l /dev/ttyNOSUCH9" in e.value.hint


def test_busy_port_is_hardware_not_found(pty: tuple[int, str]) -> None:
    _, path = pty
    first = PppDevice(path, config=CLIENT, hangup="none")
    try:
        with pytest.raises(HardwareNotFound) as e:
            PppDevice(path)
        assert "busy" in e.value.problem and path in str(e.value)
    finally:
        first.close()


def test_garbage_on_the_line_never_raises(pty: tuple[int, str]) -> None:
    master, path = pty
    rng = random.Random(1661)
    dev = PppDevice(path, config=CLIENT, hangup="none")
    server = Server(master)
    flag_heavy = [b"\x7e", b"\x7d", b"\xff\x03", b"\xc0\x21", b"\x7d\x7e"]
    try:
        for case in range(200):
            if rng.random() < 0.5:
                junk = rng.randbytes(rng.randrange(1, 2048))
            else:
                junk = b"".join(rng.choice(flag_heavy) + rng.randbytes(rng.randrange(0, 40))
                                for _ in range(rng.randrange(1, 50)))
            server.write(junk)
            dev.poll(rng.choice([1, 8, 64]))
            dev.next_deadline()
            dev.link_config()
            if case % 50 == 0:
                dev.send(udp_packet(b"x"))
        assert dev.counters.rx_errors > 0
        # and the line still works afterwards
        os.read(master, 1 << 20)
        bring_up(dev, server)
    finally:
        dev.close()


def test_pending_output_stays_bounded_when_nobody_reads(pty: tuple[int, str]) -> None:
    master, path = pty
    server = Server(master)
    dev = PppDevice(path, config=CLIENT, hangup="none", tx_buffer_bytes=8192)
    try:
        bring_up(dev, server)
        server.reading = False  # the far end stops reading: the pty fills, then our buffer
        big = udp_packet(bytes(1400))
        results = [dev.send(big) for _ in range(2000)]
        for _ in range(20):
            dev.poll(8)
        assert not all(results) and dev.counters.tx_dropped > 0
        assert dev.stats["tx_pending_bytes"] <= 8192 + TX_CONTROL_SLACK
        assert dev.next_deadline() is not None  # it will come back to flush
        # the reader returns: the backlog drains
        server.reading = True
        end = time.monotonic() + 10
        while dev.stats["tx_pending_bytes"] and time.monotonic() < end:
            server.pump()
            dev.poll(8)
        assert dev.stats["tx_pending_bytes"] == 0
    finally:
        with contextlib.suppress(OSError):
            dev.close()


def test_two_devices_two_stacks_udp() -> None:
    """Two hilkit stacks joined by a PPP line: the stack applies link_config by itself."""
    line = PacedPtyLine(115200, pace=False)
    a = PppDevice(line.a, config=SERVER, name="ppp-srv", hangup="none")
    b = PppDevice(line.b, config=CLIENT, name="ppp-cli", hangup="none")
    sa, sb = Stack(), Stack()
    try:
        sa.add_device(a)
        sb.add_device(b)
        end = time.monotonic() + 5
        while not (a.link_up and b.link_up) and time.monotonic() < end:
            sa.tick()
            sb.tick()
            time.sleep(0.002)
        assert b.link_config() == LinkConfig("10.64.0.2", "10.64.0.1", ("10.64.0.53",))
        srv = sa.udp_socket()
        srv.bind(("0.0.0.0", 7))
        cli = sb.udp_socket()
        payload = bytes(range(256)) * 4
        cli.sendto(payload, ("10.64.0.1", 7))
        got = None
        end = time.monotonic() + 5
        while got is None and time.monotonic() < end:
            sa.tick()
            sb.tick()
            d = srv.recvfrom()
            if d is not None:
                srv.sendto(d[0], d[1])
            got = cli.recvfrom()
            time.sleep(0.001)
        assert got is not None and got[0] == payload and got[1] == ("10.64.0.1", 7)
    finally:
        sa.close()
        sb.close()
        line.close()


class ThreadedPeer:
    """A ``LinkPeer`` for the conformance suite: a server PppLink pumped in a thread."""

    peer_ipv4 = "192.0.2.1"
    device_ipv4 = "192.0.2.2"
    can_set_link = False  # link_up changes only in poll(), which the suite does not call

    def __init__(self, master: int) -> None:
        self.server = Server(master)
        self.lock = threading.Lock()
        self.server.pump = self._locked(self.server.pump)  # type: ignore[method-assign]

    def _locked(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with self.lock:
                fn()
        return run

    def send(self, frame: bytes) -> None:
        with self.lock:
            assert self.server.link.send_ip(bytes(frame), now_ms())
            self.server.write(self.server.link.take_output())

    def recv(self, timeout_s: float) -> bytes | None:
        end = time.monotonic() + timeout_s
        while True:
            with self.lock:
                if self.server.packets:
                    return self.server.packets.pop(0)
            if time.monotonic() >= end:
                return None
            time.sleep(0.002)


@pytest.fixture
def conformance_pair(pty: tuple[int, str]) -> Iterator[DevicePair]:
    master, path = pty
    peer = ThreadedPeer(master)
    dev = PppDevice(path, config=CLIENT, hangup="none")
    try:
        bring_up(dev, peer.server)
        peer.server.start()
        yield dev, peer
    finally:
        dev.close()  # while the server still answers its Terminate-Request
        peer.server.stop()


class TestPppDeviceConformance(DeviceConformance):
    """The Device contract's suite, over a pty with a PPP server at the far end."""


def test_url_handler_without_descriptor() -> None:
    """``loop://`` (pyserial's loopback URL): no descriptor, polled; our own frames come
    back, which LCP takes for a looped-back line. Nothing raises."""
    dev = PppDevice("loop://", config=CLIENT, hangup="none")
    try:
        assert dev.fileno() is None
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            assert dev.poll(8) == []
            time.sleep(0.01)
        assert dev.stats["serial_read_bytes"] > 0 and not dev.link_up
    finally:
        t0 = time.monotonic()
        dev.close()
        assert time.monotonic() - t0 < 1.5  # Terminate waits at most 1 s

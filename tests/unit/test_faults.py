"""Faults that are not the wire's are contained: a device whose poll or send raises,
an application callback that raises, a UDP service fed datagrams it must not answer."""

from __future__ import annotations

import logging
import os
import struct
from collections import Counter

import pytest

from hilkit.port import LinkType, MonotonicClock, checksum
from hilkit.port.middleware import DeviceMiddleware
from hilkit.services import ECHO_PORT, start_udp_services
from hilkit.stack import (
    PingError,
    PingStats,
    SocketEvent,
    Stack,
    StackConfig,
    UdpSocket,
    eth,
    ipv4,
    udp,
)
from hilkit.stack.addr import ip_to_int
from tests.memwire import A_IP, B_IP, StackPair, WireEnd, wire

CONFIG = StackConfig(device_max_failures=3, device_retry_ms=1000.0, fault_log_interval_ms=5000.0)


class Flaky(DeviceMiddleware):
    """A device whose ``poll``/``send`` raise while told to, as a buggy driver's would."""

    def __init__(self, inner: WireEnd) -> None:
        super().__init__(inner)
        self.poll_fails = False
        self.send_fails = False
        self.polls = 0
        self.sends = 0

    def poll(self, budget: int) -> list[bytes]:
        self.polls += 1
        if self.poll_fails:
            raise RuntimeError("bus error while reading the RX ring")
        return self.inner.poll(budget)

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        self.sends += 1
        if self.send_fails:
            raise RuntimeError("driver bug in send")
        return self.inner.send(frame)


class FlakyPair(StackPair):
    """``StackPair`` with stack a's device wrapped in ``Flaky``."""

    def __init__(self, config: StackConfig = CONFIG) -> None:
        from hilkit.port import ManualClock

        self.clock = ManualClock(1000.0)
        self.wa, self.wb = wire()
        self.flaky = Flaky(self.wa)
        self.a = Stack(self.clock, config)
        self.b = Stack(self.clock, config)
        self.a.add_device(self.flaky)
        self.b.add_device(self.wb)
        self.a.link_add(self.flaky, A_IP, "255.255.255.0")
        self.b.link_add(self.wb, B_IP, "255.255.255.0")

    def faults(self) -> dict[str, int]:
        f = self.a.counters()["device_faults"]
        assert isinstance(f, dict)
        return f["a"]  # type: ignore[no-any-return]

    def ping_ok(self) -> bool:
        got: list[PingStats] = []
        self.b.ping(A_IP, 1, 100, 500, 8, got.append)
        self.settle()
        self.advance(600)
        return [s.err for s in got] == [PingError.REPLIED]


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info is not None]


def test_a_raising_poll_is_counted_and_the_tick_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    p = FlakyPair(StackConfig(device_max_failures=1000))
    p.flaky.poll_fails = True
    with caplog.at_level(logging.ERROR):
        for _ in range(200):
            p.a.tick()  # never raises
    assert p.faults()["poll_exceptions"] == 200 and p.faults()["down"] == 0
    assert len(tracebacks(caplog)) == 1, "the first is logged with its traceback, once"
    assert len(caplog.records) == 1, "repeats within the interval are not logged"
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        p.clock.advance(5000)
        p.a.tick()
        p.a.tick()
    assert [r.exc_info for r in caplog.records] == [None], "one short line per interval"
    assert "again: 200 times since the last report" in caplog.records[0].getMessage()
    p.flaky.poll_fails = False
    assert p.ping_ok()


def test_a_device_that_keeps_failing_goes_down_and_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = FlakyPair()
    assert p.ping_ok()
    p.flaky.poll_fails = True
    with caplog.at_level(logging.WARNING):
        for _ in range(10):
            p.a.tick()
    f = p.faults()
    assert (f["poll_exceptions"], f["down"], f["went_down"]) == (3, 1, 1)
    polls = p.flaky.polls
    for _ in range(50):
        p.a.tick()
    assert p.flaky.polls == polls, "a down device is not polled on every tick"
    p.clock.advance(1000)
    p.a.tick()
    p.a.tick()
    assert p.flaky.polls == polls + 1, "one trial poll per retry interval"
    downs = [r for r in caplog.records if "down after 3 failed poll calls" in r.getMessage()]
    assert len(downs) == 1
    # Down is link down: what the stack sends is not offered to the device.
    sends = p.flaky.sends
    s = p.a.udp_socket()
    s.sendto(b"x", (B_IP, 9))
    assert p.flaky.sends == sends and p.faults()["tx_while_down"] == 1
    p.flaky.poll_fails = False
    with caplog.at_level(logging.WARNING):
        p.clock.advance(1000)
        p.a.tick()
    assert p.faults()["down"] == 0 and p.faults()["went_down"] == 1
    assert any("back up" in r.getMessage() for r in caplog.records)
    assert p.ping_ok()


def test_a_raising_send_costs_the_frame_not_the_stack(caplog: pytest.LogCaptureFixture) -> None:
    p = FlakyPair()
    assert p.ping_ok()
    p.flaky.send_fails = True
    got: list[PingStats] = []
    with caplog.at_level(logging.ERROR):
        p.b.ping(A_IP, 5, 100, 300, 8, got.append)  # a's replies raise in send
        p.settle()
        p.advance(1000, step=100)
    assert [s.err for s in got] == [PingError.TIMEOUT] * 5
    f = p.faults()
    assert (f["send_exceptions"], f["down"], f["went_down"]) == (3, 1, 1)
    assert len(tracebacks(caplog)) == 1
    p.flaky.send_fails = False
    p.advance(1000)  # the trial poll brings it back
    assert p.faults()["down"] == 0
    assert p.ping_ok()


class AlwaysReadable:
    """A device with a descriptor that stays readable and a ``poll`` that always raises:
    without care, ``run()`` either dies or spins on it."""

    name = "stuck"
    link_type = LinkType.ETHERNET
    mac = b"\x02\x00\x00\x00\x00\x0c"
    mtu = 1500

    def __init__(self) -> None:
        from hilkit.port import DeviceCounters

        self.counters = DeviceCounters()
        self.fd = os.eventfd(1, os.EFD_CLOEXEC)  # never drained
        self.polls = 0

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        return True

    def poll(self, budget: int) -> list[bytes]:
        self.polls += 1
        raise OSError(5, "Input/output error")

    @property
    def link_up(self) -> bool:
        return True

    def fileno(self) -> int | None:
        return self.fd

    def close(self) -> None:
        os.close(self.fd)


def test_run_neither_dies_nor_spins_on_a_failing_device(caplog: pytest.LogCaptureFixture) -> None:
    stack = Stack(MonotonicClock(), StackConfig(device_max_failures=3, device_retry_ms=100.0))
    dev = AlwaysReadable()
    stack.add_device(dev)
    with caplog.at_level(logging.ERROR):
        assert stack.run(timeout=0.5) is False
    # 3 to go down, then one trial per 100 ms: about 8 polls, not millions.
    assert 4 <= dev.polls <= 12, dev.polls
    assert len(tracebacks(caplog)) == 1
    stack.close()


def test_a_raising_socket_callback_is_logged_once_per_socket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = StackPair()

    def boom(sock: UdpSocket, ev: SocketEvent) -> None:
        raise ValueError("application bug")

    servers = []
    for port in (5000, 5001):
        s = p.b.udp_socket(boom)
        s.bind(("0.0.0.0", port))
        servers.append(s)
    cli = p.a.udp_socket()
    with caplog.at_level(logging.ERROR):
        for i in range(300):
            cli.sendto(b"x", (B_IP, 5000 + i % 2))
            p.settle(2)
    assert p.b.stats["callback_error"] == 300
    assert len(tracebacks(caplog)) == 2, "one traceback per socket"
    assert len(caplog.records) == 2
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        p.clock.advance(5000)
        cli.sendto(b"x", (B_IP, 5000))
        p.settle(2)
    assert [r.exc_info for r in caplog.records] == [None]
    assert "UdpSocket 0.0.0.0:5000" in caplog.records[0].getMessage()


def test_a_raising_ping_callback_is_logged_once_per_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = StackPair()
    calls: list[int] = []

    def boom(st: PingStats) -> None:
        calls.append(st.seq)
        raise RuntimeError("callback bug")

    with caplog.at_level(logging.ERROR):
        p.a.ping(B_IP, 20, 10, 1000, 8, boom)
        p.settle()
        p.advance(300, step=10)
    assert calls == list(range(1, 21))
    assert p.a.stats["callback_error"] == 20
    assert len(tracebacks(caplog)) == 1 and len(caplog.records) == 1


# --- UDP services: what they must not answer ------------------------------------


def udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes,
              eth_dst: bytes) -> bytes:
    s, d = ip_to_int(src), ip_to_int(dst)
    seg = udp.header(s, sport, d, dport, payload) + payload
    ip_hdr = ipv4.build_header(s, d, ipv4.PROTO_UDP, len(seg), 1)
    return eth.header(eth_dst, b"\x02\x00\x00\x00\x00\x0b", eth.ETHERTYPE_IPV4) + ip_hdr + seg


def test_udp_echo_drops_and_counts_what_it_must_not_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = StackPair()
    counters: Counter[str] = Counter()
    start_udp_services(p.a, counters)
    p.settle()
    mac = p.wa.mac
    assert mac is not None
    cases = [
        (B_IP, A_IP, 0, mac, "source_port_zero"),
        ("0.0.0.0", A_IP, 4000, mac, "bad_source"),
        ("8.8.8.8", A_IP, 4000, mac, "send_failed"),  # no route back: no gateway
        (B_IP, "10.0.0.255", 4000, eth.BROADCAST_MAC, "to_broadcast"),
        (B_IP, "255.255.255.255", 4000, eth.BROADCAST_MAC, "to_broadcast"),
        (B_IP, A_IP, 4000, eth.BROADCAST_MAC, None),  # unicast IP in a link broadcast: IP drops it
    ]
    p.wa.sent.clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(500):
            for src, dst, sport, eth_dst, _why in cases:
                p.wa.rx.append(udp_frame(src, dst, sport, ECHO_PORT, b"reflect me", eth_dst))
            p.a.tick()
    assert caplog.records == [], "nothing here is worth a log line, let alone a traceback"
    assert p.wa.sent == [], "not one answer"
    assert counters == Counter({f"udp.echo.not_answered.{why}": 500 * n for why, n in
                                Counter(c[4] for c in cases if c[4]).items()})
    assert p.a.stats.get("callback_error", 0) == 0
    assert p.a.drops["ipv4.unicast_in_link_broadcast"] == 500
    cli = p.b.udp_socket()
    cli.sendto(b"still there?", (A_IP, ECHO_PORT))
    p.settle()
    assert cli.recvfrom() == (b"still there?", (A_IP, ECHO_PORT))
    assert counters["udp.echo.answered"] == 1


def test_recvmsg_tells_the_destination_and_recvfrom_is_unchanged() -> None:
    p = StackPair()
    srv = p.a.udp_socket()
    srv.bind(("0.0.0.0", 5353))
    cli = p.b.udp_socket()
    cli.sendto(b"one", (A_IP, 5353))
    p.b.tick()
    p.wa.rx.append(udp_frame(B_IP, "10.0.0.255", 4000, 5353, b"two", eth.BROADCAST_MAC))
    p.wa.rx.append(udp_frame(B_IP, "255.255.255.255", 4000, 5353, b"three", eth.BROADCAST_MAC))
    p.wa.rx.append(udp_frame(B_IP, A_IP, 4000, 5353, b"four", p.wa.mac or b""))
    p.settle()
    port = cli.getsockname()[1]
    one = srv.recvmsg()
    assert one is not None
    assert (one.data, one.addr, one.dst, one.broadcast) == (b"one", (B_IP, port), A_IP, False)
    two, three = srv.recvmsg(), srv.recvmsg()
    assert two is not None and three is not None
    assert (two.dst, two.broadcast) == ("10.0.0.255", True)
    assert (three.dst, three.broadcast) == ("255.255.255.255", True)
    assert srv.recvfrom() == (b"four", (B_IP, 4000))
    assert srv.recvmsg() is None and srv.recvfrom() is None


def test_udp_sendto_0_0_0_0_is_refused_locally() -> None:
    p = StackPair()
    p.a.route_add("0.0.0.0", "0.0.0.0", B_IP)  # a default route must not carry it either
    s = p.a.udp_socket()
    sent = len(p.wa.sent)
    with pytest.raises(OSError):
        s.sendto(b"x", ("0.0.0.0", 7))
    assert len(p.wa.sent) == sent


def test_hand_built_udp_frame_is_valid() -> None:
    f = udp_frame(B_IP, A_IP, 1234, 7, b"abc", b"\x02" * 6)
    ip_part = memoryview(f)[14:]
    assert checksum.verify(ip_part[:20])
    assert struct.unpack("!HH", ip_part[20:24]) == (1234, 7)

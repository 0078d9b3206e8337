"""The stack against the Linux kernel over a TAP, in a namespace each test makes."""

from __future__ import annotations

import errno
import re
import socket
import struct
from pathlib import Path

import pytest

from hilkit.stack import PingError, PingStats, StackConfig
from hilkit.stack import arp as arp_mod
from tests.integration.conftest import (
    HILKIT_IP,
    KERNEL_IP,
    TAP,
    Link,
    Server,
    kping,
    make_link,
)
from tests.tshark import assert_capture_clean

SIZES = [0, 56, 1472, 1473, 4000, 65000]


def received(out: str) -> tuple[int, int]:
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


def hping(link: Link, count: int, size: int, interval_ms: float = 10,
          timeout_ms: float = 3000) -> list[PingStats]:
    got: list[PingStats] = []
    link.stack.ping(KERNEL_IP, count, interval_ms, timeout_ms, size, got.append)
    assert link.stack.run(until=lambda: len(got) == count, timeout=30)
    return got


@pytest.mark.parametrize("size", SIZES)
def test_kernel_pings_hilkit(server: Server, size: int) -> None:
    out = kping(server.ns, "-c", "3", "-i", "0.05", "-W", "5", "-s", str(size), HILKIT_IP)
    assert received(out) == (3, 3), out
    c = server.stop()
    assert c["stats"]["icmp.echo_replies_sent"] == 3
    assert not c["drops"]
    assert (c["stats"].get("ipv4.reassembled", 0) == 3) == (size > 1472)
    assert assert_capture_clean(server.pcap) >= 6


@pytest.mark.parametrize("size", SIZES)
def test_hilkit_pings_kernel(link: Link, size: int) -> None:
    got = hping(link, 3, size)
    assert [(s.seq, s.err, s.size, s.ttl) for s in got] == [
        (i, PingError.REPLIED, size, 64) for i in (1, 2, 3)]
    assert all(0 < s.time < 3000 for s in got)
    assert (link.stack.stats["ipv4.reassembled"] == 3) == (size > 1472)
    assert not link.stack.drops
    link.stack.close()
    assert assert_capture_clean(link.pcap) >= 6


def test_thousand_pings_at_1ms_without_loss(server: Server) -> None:
    out = kping(server.ns, "-c", "1000", "-i", "0.001", "-W", "2", "-q", HILKIT_IP)
    assert received(out) == (1000, 1000), out
    assert server.stop()["stats"]["icmp.echo_replies_sent"] == 1000


def test_hilkit_thousand_pings_at_1ms(link: Link) -> None:
    got = hping(link, 1000, 56, interval_ms=1)
    assert [s.err for s in got] == [PingError.REPLIED] * 1000
    assert sorted(s.seq for s in got) == list(range(1, 1001))


def test_arp_both_ways(link: Link) -> None:
    hping(link, 1, 8)
    iface = link.stack.interfaces[0]
    assert iface.arp.entries(link.stack.clock.now_ms()) == {0xC0A80505: link.kernel_mac()}
    neigh = link.ns.ip("neigh", "show", "dev", TAP)
    assert HILKIT_IP in neigh and link.tap.mac.hex(":") in neigh, neigh
    # The gratuitous ARP from link_add is on the wire too.
    link.stack.close()
    from tests.tshark import tshark_fields
    rows = tshark_fields(link.pcap, ["arp.opcode", "arp.src.proto_ipv4", "arp.dst.proto_ipv4"],
                         "arp.isgratuitous")
    assert ["1", HILKIT_IP, HILKIT_IP] in rows


def test_expired_arp_entry_is_refreshed(netns, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = StackConfig(arp=arp_mod.ArpConfig(timeout_ms=300))
    link = make_link(netns, tmp_path, cfg)
    try:
        assert [s.err for s in hping(link, 1, 8)] == [PingError.REPLIED]
        sent = link.stack.stats["arp.requests_sent"]
        link.stack.run(timeout=0.4)  # past the entry's lifetime
        assert link.stack.interfaces[0].arp.entries(link.stack.clock.now_ms()) == {}
        assert [s.err for s in hping(link, 1, 8)] == [PingError.REPLIED]
        assert link.stack.stats["arp.requests_sent"] == sent + 1
    finally:
        link.stack.close()


def test_unresolvable_neighbour_is_unreachable(link: Link) -> None:
    got: list[PingStats] = []
    link.stack.ping("192.168.5.77", 1, 1000, 10_000, 8, got.append)
    assert link.stack.run(until=lambda: bool(got), timeout=10)
    assert got[0].err is PingError.UNREACH
    assert link.stack.stats["arp.requests_sent"] == 3


def test_udp_echo_from_kernel_socket(server: Server) -> None:
    s = server.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(b"into the void", (HILKIT_IP, 9))  # first: the echoes below prove it was handled
    for payload in (b"", b"hello", bytes(range(256)) * 5, b"z" * 4000):
        s.sendto(payload, (HILKIT_IP, 7))
        data, addr = s.recvfrom(70000)
        assert (data, addr) == (payload, (HILKIT_IP, 7))
    s.close()
    c = server.stop()
    assert c["stats"]["udp.datagrams_in"] == 5
    assert assert_capture_clean(server.pcap) >= 10


def test_kernel_socket_to_closed_hilkit_port_is_refused(server: Server) -> None:
    s = server.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.connect((HILKIT_IP, 4242))
    s.send(b"anyone?")
    with pytest.raises(ConnectionRefusedError):
        s.recv(100)
    s.close()
    assert server.stop()["stats"]["icmp.errors_sent"] == 1


def test_connected_hilkit_socket_refused_by_closed_kernel_port(link: Link) -> None:
    s = link.stack.udp_socket()
    s.connect((KERNEL_IP, 4242))
    s.send(b"anyone?")
    assert link.stack.run(until=lambda: s.error != 0, timeout=5)
    assert s.error == errno.ECONNREFUSED
    with pytest.raises(ConnectionRefusedError):
        s.recvfrom()


def test_hilkit_udp_to_kernel_socket(link: Link) -> None:
    k = link.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    k.bind((KERNEL_IP, 5555))
    k.setblocking(False)
    s = link.stack.udp_socket()
    s.sendto(b"x" * 3000, (KERNEL_IP, 5555))  # fragmented by hilkit, reassembled by Linux

    def arrived() -> bool:
        try:
            arrived.data = k.recvfrom(10000)  # type: ignore[attr-defined]
            return True
        except BlockingIOError:
            return False

    assert link.stack.run(until=arrived, timeout=5)
    data, addr = arrived.data  # type: ignore[attr-defined]
    assert data == b"x" * 3000 and addr == (HILKIT_IP, s.getsockname()[1])
    k.sendto(b"back", addr)
    assert link.stack.run(until=lambda: s.pending() > 0, timeout=5)
    assert s.recvfrom() == (b"back", (KERNEL_IP, 5555))
    k.close()


def test_kernel_broadcast_reaches_hilkit(link: Link) -> None:
    k = link.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    k.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    k.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, TAP.encode())
    s = link.stack.udp_socket()
    s.bind(("0.0.0.0", 6000))
    k.sendto(b"all", ("192.168.5.255", 6000))
    k.sendto(b"everyone", ("255.255.255.255", 6000))
    assert link.stack.run(until=lambda: s.pending() == 2, timeout=5)
    assert [s.recvfrom()[0], s.recvfrom()[0]] == [b"all", b"everyone"]  # type: ignore[index]
    k.close()


def _frame_struct() -> struct.Struct:
    return struct.Struct("!6s6sH")


def test_point_to_point_tun_both_ways(netns, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The raw-IP path PPP will use: no Ethernet, no ARP."""
    from hilkit.drivers.tap import TunDevice
    from hilkit.stack import Stack

    tun = netns.call(lambda: TunDevice("hkp0"))
    netns.ip("addr", "add", "10.66.0.1", "peer", "10.66.0.2", "dev", "hkp0")
    netns.ip("link", "set", "hkp0", "up")
    pcap = tmp_path / "tun.pcapng"
    stack = Stack(pcap=str(pcap))
    dev = stack.add_device(tun)
    stack.link_add(dev, "10.66.0.2", "255.255.255.0")
    try:
        got: list[PingStats] = []
        stack.ping("10.66.0.1", 2, 10, 3000, 2000, got.append)
        assert stack.run(until=lambda: len(got) == 2, timeout=10)
        assert [s.err for s in got] == [PingError.REPLIED] * 2
        import threading

        done = threading.Event()
        result: list[str] = []
        t = threading.Thread(target=lambda: (result.append(
            kping(netns, "-c", "2", "-i", "0.05", "-W", "5", "-s", "3000", "10.66.0.2")),
            done.set(), stack.wake()))
        t.start()
        stack.run(until=done.is_set, timeout=20)
        t.join()
        assert received(result[0]) == (2, 2), result[0]
        assert stack.stats["arp.requests_sent"] == 0
    finally:
        stack.close()
    assert assert_capture_clean(pcap) >= 8

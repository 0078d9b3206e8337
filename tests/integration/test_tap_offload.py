"""A TAP opened with offloads (``TapDevice(offload=True)``) against the kernel in a private
namespace: long segments both ways, partial checksums both ways, the capture still a wire,
and a frame the kernel did not make or check is checked by the device."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hilkit.drivers.tap import TapDevice
from hilkit.port.middleware import DeviceMiddleware
from hilkit.rig.netns import Netns
from hilkit.services import ECHO_PORT, start_tcp_services, start_udp_services
from hilkit.stack import Stack, eth, ipv4, tcp
from hilkit.stack.addr import ip_to_int
from hilkit.stack.sockets import create_connection
from tests.integration.conftest import HILKIT_IP, KERNEL_IP, TAP, kernel_side, start_server
from tests.tshark import assert_capture_clean, requires_tshark, tshark_fields

SINK_PORT = 5001
ETH_P_ALL = 0x0003
MTU_FRAME = 1500 + eth.HEADER_LEN


class Longest(DeviceMiddleware):
    """Notes the longest frame each way, under the capture (what the TAP really moved)."""

    def __init__(self, inner: TapDevice) -> None:
        super().__init__(inner)
        self.rx_longest = self.tx_longest = 0

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        self.tx_longest = max(self.tx_longest, len(frame))
        return self.inner.send(frame)

    def poll(self, budget: int) -> list[bytes]:
        frames = self.inner.poll(budget)
        for f in frames:
            self.rx_longest = max(self.rx_longest, len(f))
        return frames


@dataclass
class OffLink:
    ns: Netns
    stack: Stack
    tap: TapDevice
    dev: Longest
    pcap: Path


@pytest.fixture
def off(netns: Netns, tmp_path: Path) -> Iterator[OffLink]:
    tap = netns.call(lambda: TapDevice(TAP, offload=True))
    kernel_side(netns, persistent=False)
    pcap = tmp_path / "offload.pcapng"
    stack = Stack(pcap=str(pcap))
    dev = Longest(tap)
    stack.add_device(dev)
    stack.link_add(dev, HILKIT_IP, "255.255.255.0")
    yield OffLink(netns, stack, tap, dev, pcap)
    stack.close()


def test_the_tap_says_what_it_offloads(off: OffLink) -> None:
    o = off.tap.offloads
    assert o.rx_checksum and o.tx_checksum and o.tso > 60_000
    assert off.dev.offloads == o  # a plain wrapper passes them on


@requires_tshark
def test_bulk_both_ways_moves_long_segments_and_the_capture_is_a_wire(off: OffLink) -> None:
    data = os.urandom(4 << 20)
    got = bytearray()
    srv = off.ns.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((KERNEL_IP, SINK_PORT))
    srv.listen(1)
    srv.settimeout(20)

    def kernel_echo() -> None:  # the kernel reads everything and sends it back
        c, _ = srv.accept()
        c.settimeout(20)
        with c:
            while chunk := c.recv(1 << 20):
                c.sendall(chunk)

    t = threading.Thread(target=kernel_echo, daemon=True)
    t.start()
    s = create_connection(off.stack, (KERNEL_IP, SINK_PORT), timeout=20)
    sent = 0
    while len(got) < len(data):
        if sent < len(data):
            sent += s.send(data[sent:sent + (1 << 20)])
        got += s.recv(1 << 20)
    s.close()
    t.join(20)
    srv.close()
    assert bytes(got) == data
    assert off.dev.tx_longest > 20_000, "hilkit sent no long segment for the kernel to cut"
    assert off.dev.rx_longest > MTU_FRAME, "the kernel sent no long segment"
    assert off.stack.drops.total() == 0
    assert off.tap.counters.rx_errors == off.tap.counters.tx_errors == 0
    off.stack.close()
    frames = assert_capture_clean(off.pcap)  # IP and TCP checksums checked by tshark
    assert frames > 2 * len(data) // 1448
    lengths = [int(v[0]) for v in tshark_fields(off.pcap, ["frame.len"])]
    assert max(lengths) <= MTU_FRAME


def test_udp_with_the_kernels_partial_checksum_is_answered(off: OffLink) -> None:
    start_udp_services(off.stack)
    k = off.ns.socket(socket.AF_INET, socket.SOCK_DGRAM)
    k.setblocking(False)
    try:
        for i in range(5):
            k.sendto(b"ping %d" % i, (HILKIT_IP, ECHO_PORT))
            off.stack.run(until=lambda: bool(select.select([k], [], [], 0)[0]), timeout=5)
            assert k.recv(100) == b"ping %d" % i
    finally:
        k.close()
    assert off.stack.drops["udp.bad_checksum"] == 0


def test_a_frame_the_kernel_did_not_check_is_checked_by_the_tap(off: OffLink) -> None:
    """A packet socket on the kernel's end of the TAP sends frames the kernel neither made
    a checksum for nor checked (as a bridged wire would): the device checks them."""
    start_tcp_services(off.stack)
    raw = off.ns.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    raw.bind((TAP, 0))
    kmac, hmac = raw.getsockname()[4], off.tap.mac
    k, h = ip_to_int(KERNEL_IP), ip_to_int(HILKIT_IP)

    def syn(port: int, damaged: bool) -> bytes:
        hdr = bytearray(tcp.header(k, h, 40000 + port, ECHO_PORT, 1, 0, 0x02, 1000, b"", b""))
        if damaged:
            hdr[4] ^= 0x01  # the sequence number, after the checksum was made
        ip = ipv4.build_header(k, h, ipv4.PROTO_TCP, len(hdr), 1)
        return eth.header(hmac, kmac, eth.ETHERTYPE_IPV4) + ip + bytes(hdr)

    errors = off.tap.counters.rx_errors
    answered: set[int] = set()
    try:
        raw.settimeout(0.02)
        raw.send(syn(1, damaged=True))
        raw.send(syn(2, damaged=False))
        for _ in range(50):
            off.stack.run(timeout=0.01)
            with contextlib.suppress(TimeoutError):
                f = raw.recv(4096)
                if f[12:14] == b"\x08\x00" and f[eth.HEADER_LEN + 9] == ipv4.PROTO_TCP:
                    t = eth.HEADER_LEN + (f[eth.HEADER_LEN] & 0x0F) * 4
                    if f[t + 13] & 0x12 == 0x12:  # SYN+ACK
                        answered.add(struct.unpack_from("!H", f, t + 2)[0])
            if 40002 in answered:
                break
    finally:
        raw.close()
    assert off.tap.counters.rx_errors == errors + 1  # the damaged SYN, dropped by the device
    assert answered == {40002}  # the sound one was answered, with a checksum the kernel made


@requires_tshark
def test_serve_with_offload_echoes_bulk_and_its_capture_is_a_wire(netns: Netns,
                                                                    tmp_path: Path) -> None:
    srv = start_server(netns, tmp_path, "--offload")
    data = os.urandom(2 << 20)
    got = bytearray()
    with netns.socket(socket.AF_INET, socket.SOCK_STREAM) as c:
        c.settimeout(20)
        c.connect((HILKIT_IP, ECHO_PORT))
        sent = 0
        while len(got) < len(data):
            if sent < len(data):
                sent += c.send(data[sent:sent + 65536])
            if select.select([c], [], [], 0 if sent < len(data) else 20)[0]:
                chunk = c.recv(1 << 20)
                assert chunk, "hilkit closed the echo early"
                got += chunk
    counters = srv.stop()
    assert bytes(got) == data
    dev = counters["devices"][TAP]
    assert dev["tx_bytes"] / dev["tx_frames"] > MTU_FRAME  # long segments went to the kernel
    assert assert_capture_clean(srv.pcap) > 2 * len(data) // 1448
    assert max(int(v[0]) for v in tshark_fields(srv.pcap, ["frame.len"])) <= MTU_FRAME

"""Two stacks on an in-memory wire, with a manual clock: every timer is exact."""

from __future__ import annotations

import errno
import struct

import pytest

from hilkit.port import LinkType
from hilkit.stack import PingError, PingStats, SocketEvent, StackConfig, eth, icmp4, ipv4
from hilkit.stack import arp as arp_mod
from tests.memwire import StackPair

A_IP, B_IP = "10.0.0.1", "10.0.0.2"
A_MAC, B_MAC = b"\x02\x00\x00\x00\x00\x0a", b"\x02\x00\x00\x00\x00\x0b"


Pair = StackPair


def collect() -> tuple[list[PingStats], object]:
    got: list[PingStats] = []
    return got, got.append


def test_gratuitous_arp_on_link_add() -> None:
    p = Pair()
    frame = p.wa.sent[0]
    assert frame[:6] == eth.BROADCAST_MAC and frame[12:14] == b"\x08\x06"
    a = arp_mod.parse(memoryview(frame)[14:])
    assert not isinstance(a, str)
    assert a.op == arp_mod.OP_REQUEST and a.spa == a.tpa == 0x0A000001


@pytest.mark.parametrize("size", [0, 56, 1472, 1473, 4000, 65000])
def test_ping_sizes(size: int) -> None:
    p = Pair()
    got, cb = collect()
    p.a.ping(B_IP, 2, 100, 1000, size, cb)  # type: ignore[arg-type]
    p.settle()
    p.advance(100)
    assert [(s.seq, s.err, s.size, s.ttl, s.dst) for s in got] == [
        (1, PingError.REPLIED, size, 64, B_IP), (2, PingError.REPLIED, size, 64, B_IP)]
    frags = size + 28 > 1500
    assert (p.b.stats["ipv4.reassembled"] > 0) == frags
    assert (p.a.stats["ipv4.reassembled"] > 0) == frags
    assert not p.a.drops and not p.b.drops


def test_ping_rtt_is_clock_time() -> None:
    p = Pair()
    got, cb = collect()
    p.a.ping(B_IP, 1, 1000, 5000, 8, cb)  # type: ignore[arg-type]
    p.a.tick()  # request sent (ARP first), B has not answered yet
    p.clock.advance(7)
    p.settle()
    assert got[0].err is PingError.REPLIED and got[0].time == 7.0


def test_ping_interval_and_count() -> None:
    p = Pair()
    got, cb = collect()
    p.a.ping(B_IP, 5, 1000, 500, 8, cb)  # type: ignore[arg-type]
    p.settle()
    assert [s.seq for s in got] == [1]
    p.advance(999)
    assert [s.seq for s in got] == [1]
    p.advance(1)
    assert [s.seq for s in got] == [1, 2]
    p.advance(3000)
    assert [s.seq for s in got] == [1, 2, 3, 4, 5]
    assert not p.a.icmp.pings and len(p.a.timers) == 0


def test_ping_timeout_and_unreachable_from_arp() -> None:
    p = Pair()
    got, cb = collect()
    p.a.ping("10.0.0.99", 1, 1000, 10_000, 8, cb)  # type: ignore[arg-type]
    p.settle()
    reqs = lambda: p.a.stats["arp.requests_sent"]  # noqa: E731
    assert reqs() == 1
    p.advance(999)
    assert reqs() == 1 and not got
    p.advance(1)
    assert reqs() == 2
    p.advance(1000)
    assert reqs() == 3 and not got
    p.advance(1000)  # three requests 1 s apart, then the queued packet fails
    assert reqs() == 3
    assert [(s.seq, s.err) for s in got] == [(1, PingError.UNREACH)]

    got2, cb2 = collect()
    p.wb.up = False  # B resolved but now silent: the request times out
    p.a.ping(B_IP, 1, 1000, 2000, 8, cb2)  # type: ignore[arg-type]
    p.settle()
    p.advance(1999)
    assert not got2
    p.advance(1)
    assert [(s.seq, s.err) for s in got2] == [(1, PingError.TIMEOUT)]


def test_ping_abort_reports_outstanding() -> None:
    p = Pair()
    p.wb.up = False
    got, cb = collect()
    pid = p.a.ping(B_IP, 3, 1000, 5000, 8, cb)  # type: ignore[arg-type]
    p.settle()
    p.advance(1000)
    p.a.ping_abort(pid)
    assert [(s.seq, s.err) for s in got] == [(1, PingError.ABORTED), (2, PingError.ABORTED)]
    p.advance(10_000)
    assert len(got) == 2 and len(p.a.timers) == 0


def test_arp_entry_expires_and_is_refreshed() -> None:
    cfg = StackConfig(arp=arp_mod.ArpConfig(timeout_ms=5000))
    p = Pair(config=cfg)
    got, cb = collect()
    p.a.ping(B_IP, 1, 1000, 1000, 8, cb)  # type: ignore[arg-type]
    p.settle()
    assert p.a.stats["arp.requests_sent"] == 1
    assert p.a.interfaces[0].arp.entries(p.clock.now_ms()) == {0x0A000002: p.wb.mac}
    p.advance(6000)
    p.a.ping(B_IP, 1, 1000, 1000, 8, cb)  # type: ignore[arg-type]
    p.settle()
    assert p.a.stats["arp.requests_sent"] == 2
    assert [s.err for s in got] == [PingError.REPLIED, PingError.REPLIED]


def test_arp_pending_queue_is_bounded() -> None:
    cfg = StackConfig(arp=arp_mod.ArpConfig(max_pending=4))
    p = Pair(config=cfg)
    s = p.a.udp_socket()
    s.connect(("10.0.0.77", 5000))
    for i in range(10):
        s.send(b"x%d" % i)
    assert p.a.stats["arp.queue_overflow"] == 6
    assert p.a.stats["arp.requests_sent"] == 1


def test_arp_answers_only_for_own_address() -> None:
    p = Pair()
    n = len(p.wb.sent)
    req = arp_mod.build(arp_mod.OP_REQUEST, p.wa.mac, 0x0A000001, b"\0" * 6, 0x0A000063)  # type: ignore[arg-type]
    p.wa.send(eth.header(eth.BROADCAST_MAC, p.wa.mac, eth.ETHERTYPE_ARP) + req)  # type: ignore[arg-type]
    p.settle()
    assert len(p.wb.sent) == n  # not ours: silent


def test_udp_echo_and_events() -> None:
    p = Pair()
    events: list[SocketEvent] = []
    srv = p.b.udp_socket(lambda s, ev: events.append(ev))
    srv.bind(("0.0.0.0", 7))
    cli = p.a.udp_socket()
    cli.sendto(b"hello", (B_IP, 7))
    p.settle()
    assert events == [SocketEvent.RD]
    item = srv.recvfrom()
    assert item is not None
    data, addr = item
    assert data == b"hello" and addr == (A_IP, cli.getsockname()[1])
    assert 49152 <= addr[1] <= 65535
    srv.sendto(data, addr)
    p.settle()
    assert cli.recvfrom() == (b"hello", (B_IP, 7))
    assert cli.recvfrom() is None


def test_udp_connected_gets_econnrefused() -> None:
    p = Pair()
    s = p.a.udp_socket()
    s.connect((B_IP, 9999))
    s.send(b"anyone?")
    p.settle()
    assert s.error == errno.ECONNREFUSED
    with pytest.raises(ConnectionRefusedError):
        s.recvfrom()
    assert s.recvfrom() is None  # reported once, as Linux does
    assert p.b.stats["icmp.errors_sent"] == 1


def test_unconnected_udp_ignores_port_unreachable() -> None:
    p = Pair()
    s = p.a.udp_socket()
    s.sendto(b"x", (B_IP, 9999))
    p.settle()
    assert s.error == 0 and p.a.stats["udp.error_for_unconnected"] == 1


def test_icmp_errors_are_rate_limited() -> None:
    cfg = StackConfig(icmp_error_rate=10, icmp_error_burst=3)
    p = Pair(config=cfg)
    s = p.a.udp_socket()
    for _ in range(10):
        s.sendto(b"x", (B_IP, 9999))
    p.settle()
    assert p.b.stats["icmp.errors_sent"] == 3
    assert p.b.stats["icmp.errors_rate_limited"] == 7
    p.clock.advance(100)  # 10/s -> one token back
    s.sendto(b"x", (B_IP, 9999))
    p.settle()
    assert p.b.stats["icmp.errors_sent"] == 4


def test_udp_bind_rules() -> None:
    p = Pair()
    s1 = p.a.udp_socket()
    s1.bind(("0.0.0.0", 5000))
    with pytest.raises(OSError) as e:
        p.a.udp_socket().bind((A_IP, 5000))
    assert e.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as e:
        p.a.udp_socket().bind(("10.9.9.9", 5001))
    assert e.value.errno == errno.EADDRNOTAVAIL
    s1.close()
    p.a.udp_socket().bind((A_IP, 5000))  # free again after close


def test_udp_broadcast_is_delivered_and_not_answered_with_errors() -> None:
    p = Pair()
    srv = p.b.udp_socket()
    srv.bind(("0.0.0.0", 4000))
    cli = p.a.udp_socket()
    cli.sendto(b"all", ("255.255.255.255", 4000))
    cli.sendto(b"subnet", ("10.0.0.255", 4000))
    cli.sendto(b"nobody", ("255.255.255.255", 4001))
    p.settle()
    assert [srv.recvfrom(), srv.recvfrom()] == [(b"all", (A_IP, cli.getsockname()[1])),
                                                 (b"subnet", (A_IP, cli.getsockname()[1]))]
    assert p.b.stats["icmp.errors_sent"] == 0
    assert all(f[:6] == eth.BROADCAST_MAC for f in p.wa.sent[1:])


def test_no_route_and_default_gateway() -> None:
    p = Pair()
    s = p.a.udp_socket()
    with pytest.raises(OSError) as e:
        s.sendto(b"x", ("192.0.2.1", 9))
    assert e.value.errno == errno.ENETUNREACH
    p.a.route_add("0.0.0.0", "0.0.0.0", B_IP)
    s.sendto(b"x", ("192.0.2.1", 9))
    p.settle()
    ip = p.wa.sent[-1][14:]
    assert p.wa.sent[-1][:6] == p.wb.mac  # via the gateway's MAC
    assert ip[16:20] == bytes([192, 0, 2, 1])
    with pytest.raises(OSError):
        p.a.route_add("0.0.0.0", "0.0.0.0", "172.16.0.1")  # gateway not on link


def test_raw_ip_link_has_no_arp() -> None:
    p = Pair(link_type=LinkType.RAW_IP)
    got, cb = collect()
    p.a.ping(B_IP, 1, 1000, 1000, 3000, cb)  # type: ignore[arg-type]
    p.settle()
    assert [s.err for s in got] == [PingError.REPLIED]
    assert all(f[0] >> 4 == 4 for f in p.wa.sent + p.wb.sent)


def test_icmp_error_routes_to_ping_session() -> None:
    p = Pair()
    got, cb = collect()
    p.b.udp_socket()  # nothing
    p.a.ping(B_IP, 1, 1000, 5000, 8, cb)  # type: ignore[arg-type]
    p.a.tick()
    p.b.tick()  # B learns A from the ARP request, answers; A sends the echo
    p.a.tick()
    req = p.wa.sent[-1][14:]
    assert req[9] == ipv4.PROTO_ICMP
    # B says host unreachable about A's echo request instead of replying.
    p.wb.rx.clear()
    body = req[:28]
    msg = icmp4.header(icmp4.TYPE_DEST_UNREACH, icmp4.CODE_HOST_UNREACH, 0, body) + body
    pkt = ipv4.build_header(0x0A000002, 0x0A000001, ipv4.PROTO_ICMP, len(msg), 1) + msg
    p.wb.send(eth.header(p.wa.mac, p.wb.mac, eth.ETHERTYPE_IPV4) + pkt)  # type: ignore[arg-type]
    p.a.tick()
    assert [(s.seq, s.err) for s in got] == [(1, PingError.UNREACH)]


def test_protocol_unreachable_and_no_error_about_errors() -> None:
    p = Pair()
    p.settle()
    pkt = ipv4.build_header(0x0A000001, 0x0A000002, 99, 4, 7) + b"abcd"
    p.wa.send(eth.header(p.wb.mac, p.wa.mac, eth.ETHERTYPE_IPV4) + pkt)  # type: ignore[arg-type]
    p.settle()
    assert p.b.stats["icmp.errors_sent"] == 1
    err = p.wb.sent[-1][14:]
    assert err[20] == icmp4.TYPE_DEST_UNREACH and err[21] == icmp4.CODE_PROTO_UNREACH
    assert err[28:48] == pkt[:20]


def test_reassembly_timeout_sends_time_exceeded() -> None:
    p = Pair()
    p.settle()
    payload = bytes(100)
    hdr = ipv4.build_header(0x0A000001, 0x0A000002, ipv4.PROTO_UDP, 48, 0x1234,
                            flags_frag=ipv4.FLAG_MF)
    p.wa.send(eth.header(B_MAC, A_MAC, eth.ETHERTYPE_IPV4) + hdr + payload[:48])
    p.settle()
    assert len(p.b.ip.reasm) == 1
    p.advance(30_000)
    assert len(p.b.ip.reasm) == 0
    assert p.b.drops["ipv4.reasm_timeout"] == 1
    err = p.wb.sent[-1][14:]
    assert (err[20], err[21]) == (icmp4.TYPE_TIME_EXCEEDED, icmp4.CODE_REASSEMBLY_EXCEEDED)


def test_frames_for_other_hosts_are_ignored() -> None:
    p = Pair()
    p.settle()
    before = len(p.wb.sent)
    pkt = ipv4.build_header(0x0A000001, 0x0A000003, ipv4.PROTO_ICMP, 8, 1)
    echo = icmp4.echo_header(False, 1, 1, b"")
    p.wa.send(eth.header(b"\x02\x99\x99\x99\x99\x99", A_MAC, eth.ETHERTYPE_IPV4) + pkt + echo)
    p.wa.send(eth.header(B_MAC, A_MAC, eth.ETHERTYPE_IPV4) + pkt + echo)
    p.settle()
    assert len(p.wb.sent) == before
    assert p.b.stats["eth.not_for_us"] == 1 and p.b.stats["ipv4.not_for_us"] == 1


def test_bad_input_counted_per_reason() -> None:
    p = Pair()
    p.settle()
    mac = p.wb.mac
    assert mac is not None

    def inject(payload: bytes, etype: int = eth.ETHERTYPE_IPV4) -> None:
        p.wb.rx.append(eth.header(mac, b"\x02\0\0\0\0\x0a", etype) + payload)

    good = ipv4.build_header(0x0A000001, 0x0A000002, ipv4.PROTO_ICMP, 8, 1) + icmp4.echo_header(
        False, 1, 1, b"")
    inject(b"\x01\x02")
    p.wb.rx.append(b"\x00" * 5)
    bad_csum = bytearray(good)
    bad_csum[10] ^= 0xFF
    inject(bytes(bad_csum))
    bad_ihl = bytearray(good)
    bad_ihl[0] = 0x43
    inject(bytes(bad_ihl))
    bad_len = bytearray(good)
    struct.pack_into("!H", bad_len, 2, 200)
    struct.pack_into("!H", bad_len, 10, 0)
    from hilkit.port import checksum
    struct.pack_into("!H", bad_len, 10, checksum.checksum(bad_len[:20]))
    inject(bytes(bad_len))
    bad_icmp = bytearray(good)
    bad_icmp[-1] ^= 1
    inject(bytes(bad_icmp))
    inject(b"\x00\x01\x08\x00\x06\x04\x00\x09" + bytes(20), eth.ETHERTYPE_ARP)
    inject(b"\x00\x01", eth.ETHERTYPE_ARP)
    p.b.tick()
    assert p.b.drops == {
        "ipv4.short": 1, "eth.short": 1, "ipv4.bad_checksum": 1, "ipv4.bad_ihl": 1,
        "ipv4.bad_total_length": 1, "icmp.bad_checksum": 1, "arp.bad_op": 1, "arp.short": 1,
    }


FORGED_MAC = b"\x02\x66\x66\x66\x66\x66"


@pytest.mark.parametrize("how", ["unsolicited_reply", "reply_to_another", "gratuitous_request",
                                 "request_for_us"])
def test_arp_entry_is_not_redirected_while_fresh(how: str) -> None:
    p = Pair()
    _, cb = collect()
    p.a.ping(B_IP, 1, 1000, 1000, 8, cb)  # type: ignore[arg-type]
    p.settle()
    cache = p.a.interfaces[0].arp
    assert cache.entries(p.clock.now_ms()) == {0x0A000002: B_MAC}
    spa, tpa, op = {
        "unsolicited_reply": (0x0A000002, 0x0A000001, arp_mod.OP_REPLY),
        "reply_to_another": (0x0A000002, 0x0A000063, arp_mod.OP_REPLY),
        "gratuitous_request": (0x0A000002, 0x0A000002, arp_mod.OP_REQUEST),
        "request_for_us": (0x0A000002, 0x0A000001, arp_mod.OP_REQUEST),
    }[how]
    dst = eth.BROADCAST_MAC if op == arp_mod.OP_REQUEST else A_MAC

    def forge() -> None:
        pkt = arp_mod.build(op, FORGED_MAC, spa, bytes(6), tpa)
        p.wa.rx.append(eth.header(dst, FORGED_MAC, eth.ETHERTYPE_ARP) + pkt)
        p.a.tick()

    forge()
    assert cache.entries(p.clock.now_ms()) == {0x0A000002: B_MAC}
    assert p.a.drops["arp.locked"] == 1
    p.advance(999)
    forge()
    assert cache.entries(p.clock.now_ms()) == {0x0A000002: B_MAC}
    assert p.a.drops["arp.locked"] == 2
    p.advance(1)  # the lock (1 s) is over: RFC 826's merge applies again
    forge()
    assert cache.entries(p.clock.now_ms()) == {0x0A000002: FORGED_MAC}
    assert p.a.drops["arp.locked"] == 2


def test_datagrams_from_our_own_address_are_dropped() -> None:
    p = Pair()
    p.settle()
    mac = p.wb.mac
    assert mac is not None
    before = len(p.wb.sent)
    for proto, body in ((ipv4.PROTO_ICMP, icmp4.echo_header(False, 7, 1, b"hi")),
                        (ipv4.PROTO_UDP, bytes(8)), (ipv4.PROTO_TCP, bytes(20))):
        pkt = ipv4.build_header(0x0A000002, 0x0A000002, proto, len(body), 1) + body
        p.wb.rx.append(eth.header(mac, A_MAC, eth.ETHERTYPE_IPV4) + pkt)
    p.b.tick()
    assert p.b.drops["ipv4.own_source"] == 3
    assert len(p.wb.sent) == before  # no echo reply, RST or port unreachable to ourselves


def test_link_del_removes_address_and_on_link_route() -> None:
    p = Pair()
    p.a.link_add(p.wa, "10.0.1.1", "255.255.255.0")
    p.a.link_add(p.wa, "10.0.1.2", "255.255.255.0")
    p.a.link_del(p.wa, "10.0.1.1")
    assert p.a.ip.route(0x0A000109) is not None  # 10.0.1.2 still keeps 10.0.1.0/24
    p.a.link_del(p.wa, "10.0.1.2")
    assert p.a.ip.route(0x0A000109) is None
    assert p.a.ip.route(0x0A000002) is not None
    with pytest.raises(OSError):
        p.a.udp_socket().bind(("10.0.1.2", 1000))

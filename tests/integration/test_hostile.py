"""Hostile frames written into the TAP: each is counted under its reason, and pings go on."""

from __future__ import annotations

import random
import socket
import struct

from hilkit.port import checksum
from hilkit.rig.netns import Netns
from hilkit.stack import eth, icmp4, ipv4, udp
from hilkit.stack.addr import ip_to_int
from tests.integration.conftest import HILKIT_IP, KERNEL_IP, TAP, Server, kping
from tests.integration.test_kernel import received

ETH_P_ALL = 0x0003
K, H = ip_to_int(KERNEL_IP), ip_to_int(HILKIT_IP)


def raw_socket(ns: Netns) -> socket.socket:
    s = ns.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((TAP, 0))
    return s


def with_header(hdr: bytearray) -> bytes:
    """Recompute the header checksum of ``hdr`` (all of it, options included)."""
    struct.pack_into("!H", hdr, 10, 0)
    struct.pack_into("!H", hdr, 10, checksum.checksum(hdr))
    return bytes(hdr)


def echo(ident: int = 0x77, payload: bytes = b"hostile") -> bytes:
    return icmp4.echo_header(False, ident, 1, payload) + payload


def ip(proto: int, body: bytes, ident: int = 1, flags_frag: int = 0) -> bytes:
    return ipv4.build_header(K, H, proto, len(body), ident, flags_frag=flags_frag) + body


def test_hostile_frames_are_counted_and_dropped(server: Server) -> None:
    hmac = bytes.fromhex(server.ready_line.split("mac ")[1].strip().replace(":", ""))
    raw = raw_socket(server.ns)
    kmac = raw.getsockname()[4]
    rng = random.Random(1)
    frames: list[bytes] = []

    def add(payload: bytes, ethertype: int = eth.ETHERTYPE_IPV4, n: int = 1) -> None:
        frames.extend([eth.header(hmac, kmac, ethertype) + payload] * n)

    good = ip(ipv4.PROTO_ICMP, echo())
    add(good[:12])  # ipv4.short
    bad = bytearray(good)
    bad[10] ^= 0x5A
    add(bytes(bad))  # ipv4.bad_checksum
    add(with_header(bytearray([0x43]) + bytearray(good[1:20])) + good[20:])  # ipv4.bad_ihl
    add(with_header(bytearray([0x4F]) + bytearray(good[1:20])) + good[20:])  # IHL 60 > 35 bytes
    long = bytearray(good[:20])
    struct.pack_into("!H", long, 2, 1400)
    add(with_header(long) + good[20:])  # ipv4.bad_total_length
    add(with_header(bytearray([0x65]) + bytearray(good[1:20])) + good[20:])  # ipv4.bad_version
    bad = bytearray(good)
    bad[-1] ^= 1
    add(bytes(bad))  # icmp.bad_checksum
    seg = udp.header(K, 5000, H, 7, b"data") + b"data"
    bad = bytearray(seg)
    bad[6] ^= 0xFF
    add(ip(ipv4.PROTO_UDP, bytes(bad)))  # udp.bad_checksum
    bad = bytearray(seg)
    struct.pack_into("!H", bad, 4, 400)
    add(ip(ipv4.PROTO_UDP, bytes(bad)))  # udp.bad_length
    # Overlapping fragments: 0..16 then 8..24 of the same datagram.
    add(ip(ipv4.PROTO_UDP, bytes(16), ident=500, flags_frag=ipv4.FLAG_MF))
    add(ip(ipv4.PROTO_UDP, bytes(16), ident=500, flags_frag=ipv4.FLAG_MF | 1))
    # Endless fragments: 100 datagrams that never complete (the table holds 64) ...
    for i in range(100):
        add(ip(ipv4.PROTO_UDP, bytes(8), ident=1000 + i, flags_frag=ipv4.FLAG_MF | 5))
    # ... and one that never ends: 300 eight-byte pieces (256 allowed per datagram).
    for i in range(300):
        add(ip(ipv4.PROTO_UDP, bytes(8), ident=2000, flags_frag=ipv4.FLAG_MF | (i + 1)))
    # ARP garbage.
    add(b"\x00\x01\x08\x00\x06\x04\x00\x07" + bytes(20), eth.ETHERTYPE_ARP)  # arp.bad_op
    add(b"\x00\x01\x08\x00\x08\x04\x00\x01" + bytes(20), eth.ETHERTYPE_ARP)  # arp.bad_format
    add(b"\x00\x01\x08\x00", eth.ETHERTYPE_ARP)  # arp.short
    # Random bytes after a valid Ethernet header, both EtherTypes, and no header at all.
    for _ in range(200):
        add(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200))),
            rng.choice([eth.ETHERTYPE_IPV4, eth.ETHERTYPE_ARP, 0x1234]))
    # Hostile options: IHL 15 with option bytes that claim absurd lengths; skipped, answered.
    opts = bytearray(good[:20]) + bytes([0x44, 0xFF, 0x00, 0x01] * 10)
    opts[0] = 0x4F
    struct.pack_into("!H", opts, 2, 60 + len(echo()))
    add(with_header(opts) + echo(ident=0x99))

    for f in frames:
        raw.send(f)
    raw.close()

    out = kping(server.ns, "-c", "3", "-i", "0.05", "-W", "5", HILKIT_IP)
    assert received(out) == (3, 3), out
    c = server.stop()
    d = c["drops"]
    for reason, n in {
        "ipv4.short": 1, "ipv4.bad_checksum": 1, "ipv4.bad_ihl": 2,
        "ipv4.bad_total_length": 1, "ipv4.bad_version": 1, "icmp.bad_checksum": 1,
        "udp.bad_checksum": 1, "udp.bad_length": 1, "ipv4.frag_overlap": 1,
        "ipv4.frag_too_many": 1, "arp.bad_op": 1, "arp.bad_format": 1,
    }.items():
        assert d.get(reason, 0) >= n, (reason, d)
    assert d["ipv4.reasm_evicted"] >= 100 - 64
    assert d.get("arp.short", 0) >= 1
    assert "internal_error" not in d
    # The echo with hostile options was answered, like the three real pings.
    assert c["stats"]["icmp.echo_replies_sent"] == 4

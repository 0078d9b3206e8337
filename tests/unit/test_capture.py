"""pcapng capture: byte layout, and what tshark makes of the files."""

from __future__ import annotations

import errno
import io
import logging
import os
import struct
import time
from decimal import Decimal
from pathlib import Path

import pytest

from hilkit.port import Device, DeviceCounters, LinkType
from hilkit.port.capture import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    CaptureDevice,
    PcapngWriter,
    capture_devices,
)
from tests.tshark import (
    DIRECTION_INBOUND,
    DIRECTION_OUTBOUND,
    ENCAP_ETHERNET,
    ENCAP_RAW_IP,
    assert_capture_clean,
    requires_tshark,
    tshark_fields,
)

# ---------------------------------------------------------------------------
# Hand-built frames with correct checksums
# ---------------------------------------------------------------------------

MAC_A = bytes.fromhex("02000000000a")
MAC_B = bytes.fromhex("02000000000b")
BROADCAST = b"\xff" * 6
IP_A = bytes([192, 0, 2, 10])
IP_B = bytes([192, 0, 2, 11])
TS0 = 1_700_000_000_123_456  # µs since the epoch


def inet_checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def arp(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    # htype Ethernet, ptype IPv4, hlen 6, plen 4 (RFC 826)
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sha + spa + tha + tpa


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int = 1) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto, 0, src, dst
    )
    csum = inet_checksum(header)
    return header[:10] + struct.pack("!H", csum) + header[12:] + payload


def icmp_echo(type_: int, ident: int, seq: int, data: bytes) -> bytes:
    msg = struct.pack("!BBHHH", type_, 0, 0, ident, seq) + data
    return msg[:2] + struct.pack("!H", inet_checksum(msg)) + msg[4:]


def udp(src: bytes, dst: bytes, sport: int, dport: int, data: bytes) -> bytes:
    length = 8 + len(data)
    seg = struct.pack("!HHHH", sport, dport, length, 0) + data
    pseudo = src + dst + struct.pack("!BBH", 0, 17, length)
    csum = inet_checksum(pseudo + seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", csum) + seg[8:]


ARP_REQUEST = ethernet(BROADCAST, MAC_A, 0x0806, arp(1, MAC_A, IP_A, bytes(6), IP_B))
ARP_REPLY = ethernet(MAC_A, MAC_B, 0x0806, arp(2, MAC_B, IP_B, MAC_A, IP_A))
ECHO_REQUEST = ethernet(
    MAC_B, MAC_A, 0x0800, ipv4(IP_A, IP_B, 1, icmp_echo(8, 0x1234, 1, b"hilkit ping!!"))
)
ECHO_REPLY = ethernet(
    MAC_A, MAC_B, 0x0800, ipv4(IP_B, IP_A, 1, icmp_echo(0, 0x1234, 1, b"hilkit ping!!"), 2)
)
RAW_UDP_OUT = ipv4(IP_A, IP_B, 17, udp(IP_A, IP_B, 40000, 7, b"echo me"))
RAW_UDP_IN = ipv4(IP_B, IP_A, 17, udp(IP_B, IP_A, 7, 40000, b"echo me"), 3)
RAW_ICMP_OUT = ipv4(IP_A, IP_B, 1, icmp_echo(8, 7, 9, b"x"))


def test_hand_built_frames_are_well_formed() -> None:
    assert len(ARP_REQUEST) == 42
    ip = ECHO_REQUEST[14:]
    assert inet_checksum(ip[:20]) == 0  # a header with its checksum sums to zero
    assert inet_checksum(ip[20:]) == 0
    # Odd lengths, so the writer has to pad.
    assert {len(f) % 4 for f in (ARP_REQUEST, ECHO_REQUEST, RAW_UDP_OUT, RAW_ICMP_OUT)} - {0}


# ---------------------------------------------------------------------------
# A minimal pcapng reader for the byte-level tests
# ---------------------------------------------------------------------------


def parse_blocks(data: bytes) -> tuple[str, list[tuple[int, bytes]]]:
    """Split a pcapng section into (block type, body); check the framing."""
    assert data[:4] == b"\x0a\x0d\x0d\x0a"
    magic = data[8:12]
    if magic == struct.pack("<I", 0x1A2B3C4D):
        bo = "<"
    else:
        assert magic == struct.pack(">I", 0x1A2B3C4D)
        bo = ">"
    blocks = []
    off = 0
    while off < len(data):
        btype, total = struct.unpack_from(bo + "II", data, off)
        assert total % 4 == 0, "block length is a multiple of 4"
        assert total >= 12
        assert off + total <= len(data), "block runs past the end of the file"
        (trailer,) = struct.unpack_from(bo + "I", data, off + total - 4)
        assert trailer == total, "block total length repeated at the end"
        blocks.append((btype, data[off + 8 : off + total - 4]))
        off += total
    assert off == len(data)
    return bo, blocks


def parse_options(bo: str, raw: bytes) -> list[tuple[int, bytes]]:
    opts: list[tuple[int, bytes]] = []
    off = 0
    while True:
        code, length = struct.unpack_from(bo + "HH", raw, off)
        off += 4
        if code == 0:
            assert length == 0
            assert off == len(raw), "opt_endofopt is the last option"
            return opts
        padded = (length + 3) & ~3
        value = raw[off : off + length]
        assert raw[off + length : off + padded] == bytes(padded - length), "zero padding"
        opts.append((code, value))
        off += padded


def test_block_layout() -> None:
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    eth = w.add_interface("eth0", LinkType.ETHERNET)
    w.write(eth, ARP_REQUEST, inbound=False, ts_us=TS0)
    raw = w.add_interface("ppp0", LinkType.RAW_IP, snaplen=1500)  # after a packet
    w.write(raw, RAW_UDP_IN, inbound=True, ts_us=TS0 + (1 << 32) + 5)
    w.write(eth, memoryview(ECHO_REPLY), inbound=True, ts_us=TS0 + 7)
    w.close()
    assert not buf.closed, "the writer does not close a file it was given"
    data = buf.getvalue()
    assert len(data) % 4 == 0

    bo, blocks = parse_blocks(data)
    assert [t for t, _ in blocks] == [0x0A0D0D0A, 1, 6, 1, 6, 6]

    shb = blocks[0][1]
    magic, major, minor, section_len = struct.unpack_from(bo + "IHHq", shb)
    assert (magic, major, minor, section_len) == (0x1A2B3C4D, 1, 0, -1)
    assert parse_options(bo, shb[16:]) == [(4, b"hilkit")]

    for (_, idb), linktype, snaplen, name in (
        (blocks[1], LINKTYPE_ETHERNET, 0, b"eth0"),
        (blocks[3], LINKTYPE_RAW, 1500, b"ppp0"),
    ):
        assert struct.unpack_from(bo + "HHI", idb) == (linktype, 0, snaplen)
        assert parse_options(bo, idb[8:]) == [(2, name), (9, b"\x06")]

    expected = [
        (0, TS0, ARP_REQUEST, 0b10),
        (1, TS0 + (1 << 32) + 5, RAW_UDP_IN, 0b01),
        (0, TS0 + 7, ECHO_REPLY, 0b01),
    ]
    epbs = [body for t, body in blocks if t == 6]
    for body, (iface, ts, frame, flags) in zip(epbs, expected, strict=True):
        iface_id, ts_hi, ts_lo, cap_len, orig_len = struct.unpack_from(bo + "5I", body)
        assert iface_id == iface
        assert (ts_hi << 32) | ts_lo == ts
        assert cap_len == orig_len == len(frame)
        padded = (cap_len + 3) & ~3
        assert body[20 : 20 + cap_len] == frame
        assert body[20 + cap_len : 20 + padded] == bytes(padded - cap_len)
        opts = parse_options(bo, body[20 + padded :])
        assert opts == [(2, struct.pack(bo + "I", flags))]


def test_snaplen_truncates_but_keeps_original_length() -> None:
    buf = io.BytesIO()
    w = PcapngWriter(buf)
    iface = w.add_interface("eth0", LinkType.ETHERNET, snaplen=20)
    w.write(iface, ECHO_REQUEST, inbound=False, ts_us=TS0)
    w.flush()
    bo, blocks = parse_blocks(buf.getvalue())
    body = blocks[-1][1]
    _, _, _, cap_len, orig_len = struct.unpack_from(bo + "5I", body)
    assert (cap_len, orig_len) == (20, len(ECHO_REQUEST))
    assert body[20:40] == ECHO_REQUEST[:20]


def test_writer_rejects_misuse(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    w = PcapngWriter(path)
    assert w.path == str(path)
    with pytest.raises(ValueError):
        w.write(0, ARP_REQUEST, inbound=True)  # no interface yet
    iface = w.add_interface("eth0", LinkType.ETHERNET)
    with pytest.raises(ValueError):
        w.write(iface + 1, ARP_REQUEST, inbound=True)
    with pytest.raises(ValueError):
        w.write(-1, ARP_REQUEST, inbound=True)
    w.write(iface, ARP_REQUEST, inbound=True)
    assert w.frames_written == 1
    w.close()
    w.close()  # idempotent
    assert w.closed
    w.flush()  # harmless once closed
    with pytest.raises(ValueError):
        w.write(iface, ARP_REQUEST, inbound=True)
    with pytest.raises(ValueError):
        w.add_interface("eth1", LinkType.ETHERNET)
    _, blocks = parse_blocks(path.read_bytes())
    assert [t for t, _ in blocks] == [0x0A0D0D0A, 1, 6]


def test_context_manager_closes(tmp_path: Path) -> None:
    with PcapngWriter(tmp_path / "c.pcapng") as w:
        w.write(w.add_interface("eth0", LinkType.ETHERNET), ARP_REQUEST, inbound=False)
    assert w.closed
    _, blocks = parse_blocks((tmp_path / "c.pcapng").read_bytes())
    assert len(blocks) == 3


# ---------------------------------------------------------------------------
# What tshark reads
# ---------------------------------------------------------------------------

# (interface, frame, inbound, timestamp)
TRAFFIC: list[tuple[str, bytes, bool, int]] = [
    ("eth", ARP_REQUEST, False, TS0),
    ("eth", ARP_REPLY, True, TS0 + 1),
    ("eth", ECHO_REQUEST, False, TS0 + 250),
    ("raw", RAW_UDP_OUT, False, TS0 + 999_999),
    ("eth", ECHO_REPLY, True, TS0 + 1_000_000),
    ("raw", RAW_UDP_IN, True, TS0 + 1_000_001),
    ("raw", RAW_ICMP_OUT, False, TS0 + 86_400_000_000),
]


@pytest.fixture
def two_interface_capture(tmp_path: Path) -> Path:
    path = tmp_path / "two.pcapng"
    with PcapngWriter(path) as w:
        ids = {"eth": w.add_interface("eth0", LinkType.ETHERNET)}
        for iface, frame, inbound, ts in TRAFFIC:
            if iface not in ids:  # the raw interface shows up after eth0's first frames
                ids[iface] = w.add_interface("ppp0", LinkType.RAW_IP)
            w.write(ids[iface], frame, inbound, ts)
    return path


@requires_tshark
def test_tshark_reads_clean_capture(two_interface_capture: Path) -> None:
    assert assert_capture_clean(two_interface_capture) == len(TRAFFIC)


@requires_tshark
def test_tshark_decodes_interfaces_directions_and_times(two_interface_capture: Path) -> None:
    rows = tshark_fields(
        two_interface_capture,
        [
            "frame.interface_id",
            "frame.interface_name",
            "frame.encap_type",
            "frame.packet_flags_direction",
            "frame.time_epoch",
            "frame.len",
            "frame.protocols",
        ],
    )
    assert len(rows) == len(TRAFFIC)
    for row, (iface, frame, inbound, ts) in zip(rows, TRAFFIC, strict=True):
        iface_id, name, encap, direction, epoch, length, protocols = row
        if iface == "eth":
            assert (iface_id, name, int(encap)) == ("0", "eth0", ENCAP_ETHERNET)
            assert protocols.startswith("eth:ethertype:")
        else:
            assert (iface_id, name, int(encap)) == ("1", "ppp0", ENCAP_RAW_IP)
            assert protocols.startswith("raw:ip:")
        assert int(direction, 0) == (DIRECTION_INBOUND if inbound else DIRECTION_OUTBOUND)
        assert Decimal(epoch) * 1_000_000 == ts, "microsecond timestamp kept exactly"
        assert int(length) == len(frame)

    stacks = [row[-1] for row in rows]
    assert stacks[0] == stacks[1] == "eth:ethertype:arp"
    assert stacks[2] == stacks[4] == "eth:ethertype:ip:icmp:data"
    assert stacks[3].startswith("raw:ip:udp")
    assert stacks[6] == "raw:ip:icmp:data"


@requires_tshark
def test_tshark_decodes_the_frames_we_built(two_interface_capture: Path) -> None:
    arp_rows = tshark_fields(
        two_interface_capture, ["arp.opcode", "arp.src.proto_ipv4", "arp.dst.proto_ipv4"], "arp"
    )
    assert arp_rows == [["1", "192.0.2.10", "192.0.2.11"], ["2", "192.0.2.11", "192.0.2.10"]]
    icmp_rows = tshark_fields(
        two_interface_capture,
        ["icmp.type", "icmp.checksum.status", "ip.checksum.status"],
        "icmp",
        check_checksums=True,
    )
    # checksum status: 0 bad, 1 good, 2 unverified (Wireshark's PROTO_CHECKSUM_E_*)
    assert icmp_rows == [["8", "1", "1"], ["0", "1", "1"], ["8", "1", "1"]]
    udp_rows = tshark_fields(
        two_interface_capture, ["udp.srcport", "udp.checksum.status"], "udp", check_checksums=True
    )
    assert udp_rows == [["40000", "1"], ["7", "1"]]


@requires_tshark
def test_default_timestamp_is_wall_clock(tmp_path: Path) -> None:
    path = tmp_path / "now.pcapng"
    before = time.time_ns() // 1000
    with PcapngWriter(path) as w:
        w.write(w.add_interface("eth0", LinkType.ETHERNET), ARP_REQUEST, inbound=False)
    after = time.time_ns() // 1000
    ((epoch,),) = tshark_fields(path, ["frame.time_epoch"])
    assert before <= Decimal(epoch) * 1_000_000 <= after


@requires_tshark
def test_tshark_reads_snaplen_truncated_frames(tmp_path: Path) -> None:
    path = tmp_path / "snap.pcapng"
    with PcapngWriter(path) as w:
        w.write(w.add_interface("eth0", LinkType.ETHERNET, snaplen=34), ECHO_REQUEST, True, TS0)
    assert tshark_fields(path, ["frame.len", "frame.cap_len"]) == [[str(len(ECHO_REQUEST)), "34"]]


@requires_tshark
def test_empty_capture_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcapng"
    with PcapngWriter(path) as w:
        w.add_interface("eth0", LinkType.ETHERNET)
    assert assert_capture_clean(path) == 0


# The checker must not be vacuous: it has to reject bad captures.


@requires_tshark
def test_clean_check_rejects_malformed_frame(tmp_path: Path) -> None:
    path = tmp_path / "malformed.pcapng"
    with PcapngWriter(path) as w:
        eth = w.add_interface("eth0", LinkType.ETHERNET)
        w.write(eth, ARP_REQUEST, inbound=False, ts_us=TS0)
        w.write(eth, ECHO_REQUEST[: 14 + 12], inbound=True, ts_us=TS0 + 1)  # half an IP header
    with pytest.raises(AssertionError, match="frame 2"):
        assert_capture_clean(path)


@requires_tshark
def test_clean_check_rejects_bad_checksum(tmp_path: Path) -> None:
    bad = bytearray(RAW_UDP_OUT)
    bad[10] ^= 0xFF  # IPv4 header checksum
    path = tmp_path / "badsum.pcapng"
    with PcapngWriter(path) as w:
        w.write(w.add_interface("ppp0", LinkType.RAW_IP), bad, inbound=False, ts_us=TS0)
    with pytest.raises(AssertionError, match=r"[Cc]hecksum"):
        assert_capture_clean(path)
    assert assert_capture_clean(path, check_checksums=False) == 1


@requires_tshark
def test_clean_check_rejects_unreadable_files(two_interface_capture: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(two_interface_capture.read_bytes()[:-10])
    with pytest.raises(AssertionError, match="tshark failed"):
        assert_capture_clean(cut)
    junk = tmp_path / "junk.pcapng"
    junk.write_bytes(b"not a capture file\n" * 10)
    with pytest.raises(AssertionError, match="tshark failed"):
        assert_capture_clean(junk)
    with pytest.raises(AssertionError):
        assert_capture_clean(tmp_path / "missing.pcapng")


# ---------------------------------------------------------------------------
# CaptureDevice
# ---------------------------------------------------------------------------


class FakeDevice:
    """Just enough Device: a queue of frames to receive, a list of sent ones."""

    def __init__(self, name: str, link_type: LinkType, mac: bytes | None) -> None:
        self.name = name
        self.link_type = link_type
        self.mac = mac
        self.mtu = 1500
        self.counters = DeviceCounters()
        self.rx: list[bytes] = []
        self.sent: list[bytes] = []
        self.accept = True
        self.closed = False

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        if not self.accept:
            self.counters.tx_dropped += 1
            return False
        self.sent.append(bytes(frame))
        self.counters.tx_frames += 1
        return True

    def poll(self, budget: int) -> list[bytes]:
        out, self.rx = self.rx[:budget], self.rx[budget:]
        return out

    @property
    def link_up(self) -> bool:
        return not self.closed

    def fileno(self) -> int | None:
        return 42

    def close(self) -> None:
        self.closed = True


def test_capture_device_delegates() -> None:
    inner = FakeDevice("eth0", LinkType.ETHERNET, MAC_A)
    dev = CaptureDevice(inner, PcapngWriter(io.BytesIO()))
    assert isinstance(dev, Device)
    assert (dev.name, dev.link_type, dev.mac, dev.mtu) == ("eth0", LinkType.ETHERNET, MAC_A, 1500)
    assert dev.counters is inner.counters
    assert dev.link_up and dev.fileno() == 42
    dev.mtu = 1400
    assert inner.mtu == 1400
    typed: Device = dev  # mypy checks CaptureDevice against the protocol here
    assert typed.poll(4) == []


def test_capture_device_records_sends_and_polls() -> None:
    clock = iter(range(TS0, TS0 + 1000))
    buf = io.BytesIO()
    writer = PcapngWriter(buf, now_us=lambda: next(clock))
    eth_inner = FakeDevice("eth0", LinkType.ETHERNET, MAC_A)
    ppp_inner = FakeDevice("ppp0", LinkType.RAW_IP, None)
    eth = CaptureDevice(eth_inner, writer)
    ppp = CaptureDevice(ppp_inner, writer)
    assert (eth.iface_id, ppp.iface_id) == (0, 1)

    assert eth.send(ARP_REQUEST)
    eth_inner.rx = [ARP_REPLY, ECHO_REPLY, ARP_REPLY]
    assert eth.poll(2) == [ARP_REPLY, ECHO_REPLY]
    eth_inner.accept = False
    assert not eth.send(ECHO_REQUEST)  # refused: never went out, not recorded
    assert eth_inner.counters.tx_dropped == 1
    assert ppp.send(bytearray(RAW_UDP_OUT))
    ppp_inner.rx = [RAW_UDP_IN]
    assert ppp.poll(8) == [RAW_UDP_IN]
    assert eth.poll(8) == [ARP_REPLY]
    assert eth.poll(8) == []

    eth.close()
    ppp.close()
    assert eth_inner.closed and ppp_inner.closed
    assert not writer.closed, "closing a device leaves the shared writer open"
    writer.close()

    bo, blocks = parse_blocks(buf.getvalue())
    assert [t for t, _ in blocks] == [0x0A0D0D0A, 1, 1, 6, 6, 6, 6, 6, 6]
    idb_opts = parse_options(bo, blocks[1][1][8:])
    assert (6, MAC_A) in idb_opts  # if_MACaddr from the device
    got = []
    for _, body in blocks[3:]:
        iface_id, ts_hi, ts_lo, cap_len, _ = struct.unpack_from(bo + "5I", body)
        ((_, flags),) = parse_options(bo, body[20 + ((cap_len + 3) & ~3) :])
        direction = struct.unpack(bo + "I", flags)[0]
        got.append((iface_id, body[20 : 20 + cap_len], direction, (ts_hi << 32) | ts_lo))
    assert got == [
        (0, ARP_REQUEST, 0b10, TS0),
        (0, ARP_REPLY, 0b01, TS0 + 1),
        (0, ECHO_REPLY, 0b01, TS0 + 2),
        (1, RAW_UDP_OUT, 0b10, TS0 + 3),
        (1, RAW_UDP_IN, 0b01, TS0 + 4),
        (0, ARP_REPLY, 0b01, TS0 + 5),
    ]


@requires_tshark
def test_capture_devices_helper(tmp_path: Path) -> None:
    path = tmp_path / "devs.pcapng"
    eth_inner = FakeDevice("eth0", LinkType.ETHERNET, MAC_A)
    ppp_inner = FakeDevice("ppp0", LinkType.RAW_IP, None)
    writer, (eth, ppp) = capture_devices([eth_inner, ppp_inner], path)
    eth.send(ECHO_REQUEST)
    eth_inner.rx = [ECHO_REPLY]
    eth.poll(1)
    ppp.send(RAW_UDP_OUT)
    eth_inner.accept = False
    eth.send(ARP_REQUEST)  # refused
    for dev in (eth, ppp):
        dev.close()
    writer.close()

    assert assert_capture_clean(path) == 3
    rows = tshark_fields(
        path, ["frame.interface_name", "frame.packet_flags_direction", "frame.p2p_dir"]
    )
    assert [(n, int(d, 0), p) for n, d, p in rows] == [
        ("eth0", DIRECTION_OUTBOUND, "0"),
        ("eth0", DIRECTION_INBOUND, "1"),
        ("ppp0", DIRECTION_OUTBOUND, "0"),
    ]
    assert tshark_fields(path, ["frame.number"], "frame.packet_flags_direction == 1") == [["2"]]


def test_capture_device_keeps_working_after_writer_closed() -> None:
    buf = io.BytesIO()
    writer = PcapngWriter(buf)
    inner = FakeDevice("eth0", LinkType.ETHERNET, MAC_A)
    dev = CaptureDevice(inner, writer)
    writer.close()
    assert dev.send(ARP_REQUEST)
    inner.rx = [ARP_REPLY]
    assert dev.poll(1) == [ARP_REPLY]
    assert inner.sent == [ARP_REQUEST]
    assert [t for t, _ in parse_blocks(buf.getvalue())[1]] == [0x0A0D0D0A, 1]


# ---------------------------------------------------------------------------
# A file that stops taking writes: the capture stops, traffic goes on
# ---------------------------------------------------------------------------


class FillingFile(io.RawIOBase):
    """A file with room for ``room`` bytes; then every write fails as a full disk does."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.data = bytearray()
        self.failed_writes = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        n = len(memoryview(b))
        if len(self.data) + n > self.room:
            self.failed_writes += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.data += bytes(b)
        return n


def test_writer_stops_on_a_full_disk_with_one_error_and_counters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = FillingFile(room=400)
    writer = PcapngWriter(f)  # type: ignore[arg-type]
    iface = writer.add_interface("eth0", LinkType.ETHERNET, mac=MAC_A)
    with caplog.at_level(logging.ERROR, logger="hilkit.port.capture"):
        for _ in range(50):
            writer.write(iface, ECHO_REQUEST, False)  # never raises
        writer.flush()
        writer.close()
    assert writer.write_errors == 1 and isinstance(writer.error, OSError)
    assert writer.error.errno == errno.ENOSPC
    assert writer.frames_written + writer.frames_not_captured == 50
    assert writer.frames_not_captured >= 45
    assert f.failed_writes == 1, "a failed file is not written to again"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "No space left on device" in errors[0].getMessage()
    assert writer.counters() == {"frames_written": writer.frames_written,
                                 "frames_not_captured": writer.frames_not_captured,
                                 "write_errors": 1}


def test_writer_on_dev_full_fails_once_and_closes_quietly(caplog: pytest.LogCaptureFixture) -> None:
    """A path the writer owns and buffers: the failure shows at a flush, and at close."""
    with caplog.at_level(logging.ERROR, logger="hilkit.port.capture"):
        writer = PcapngWriter("/dev/full")
        iface = writer.add_interface("eth0", LinkType.ETHERNET)
        for _ in range(200):  # more than the buffer holds
            writer.write(iface, bytes(1500), True)
        writer.close()
    assert writer.write_errors == 1 and writer.frames_not_captured > 0
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1

    quiet = PcapngWriter("/dev/full")  # buffered and never flushed before close
    quiet.close()
    assert quiet.write_errors == 1 and quiet.closed


def test_capture_device_passes_frames_after_the_file_failed() -> None:
    inner = FakeDevice("eth0", LinkType.ETHERNET, MAC_A)
    writer = PcapngWriter(FillingFile(room=200))  # type: ignore[arg-type]
    dev = CaptureDevice(inner, writer)
    inner.rx = [ARP_REPLY] * 10
    assert dev.poll(10) == [ARP_REPLY] * 10, "frames polled are the stack's, capture or not"
    assert all(dev.send(ARP_REQUEST) for _ in range(5))
    assert inner.sent == [ARP_REQUEST] * 5
    assert writer.write_errors == 1
    assert writer.frames_written + writer.frames_not_captured == 15


def test_stack_serves_on_while_its_capture_fails(caplog: pytest.LogCaptureFixture) -> None:
    from hilkit.port import ManualClock
    from hilkit.stack import PingError, PingStats, Stack
    from tests.memwire import A_IP, B_IP, wire

    clock = ManualClock(1000.0)
    wa, wb = wire()
    a, b = Stack(clock, pcap="/dev/full"), Stack(clock)
    a.add_device(wa)
    b.add_device(wb)
    a.link_add(wa, A_IP, "255.255.255.0")
    b.link_add(wb, B_IP, "255.255.255.0")
    got: list[PingStats] = []
    with caplog.at_level(logging.ERROR):
        b.ping(A_IP, 10, 100, 1000, 8000, got.append)  # ~170 kB through a's capture
        for _ in range(10):
            for _ in range(20):
                a.tick()
                b.tick()
            clock.advance(100)
        a.close()
    assert [s.err for s in got] == [PingError.REPLIED] * 10
    cap = a.counters()["capture"]
    assert isinstance(cap, dict)
    assert cap["write_errors"] == 1 and cap["frames_not_captured"] > 0
    assert "internal_error" not in a.drops
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "capture /dev/full" in errors[0].getMessage()

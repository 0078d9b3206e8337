"""Offloads (docs/porting.md, "Offloads"): what a wire would carry for an offloaded frame,
and the stack on a device that completes checksums and cuts long TCP segments."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hilkit.port import DeviceClosed, LinkType, ManualClock, Offloads
from hilkit.port.capture import CaptureDevice, PcapngWriter
from hilkit.port.checksum import checksum, ones_sum, pseudo_header_sum
from hilkit.port.impair import ImpairedDevice, Impairment
from hilkit.port.offload import l4_checksum_ok, partial_checksum_at, wire_frames
from hilkit.stack import Stack, eth, ipv4, tcp, udp
from hilkit.stack.addr import ip_to_int
from tests.memwire import WireEnd, tcp_connect

SRC, DST = ip_to_int("10.0.0.1"), ip_to_int("10.0.0.2")
MAC_A, MAC_B = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b")
FIN, SYN, RST, PSH, ACK, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x80
TSO = 65535 - eth.HEADER_LEN


def tcp_frame(payload: bytes, flags: int = ACK | PSH, options: bytes = b"",
              partial: bool = True, seq: int = 1000, ident: int = 7) -> bytes:
    hdr = tcp.header(SRC, DST, 4000, 80, seq, 1, flags, 512, options, payload, partial)
    ip = ipv4.build_header(SRC, DST, ipv4.PROTO_TCP, len(hdr) + len(payload), ident)
    return MAC_B + MAC_A + b"\x08\x00" + ip + hdr + payload


def udp_frame(payload: bytes, partial: bool) -> bytes:
    length = udp.HEADER_LEN + len(payload)
    dgram = bytearray(struct.pack("!HHHH", 5000, 7, length, 0) + payload)
    pseudo = pseudo_header_sum(SRC, DST, ipv4.PROTO_UDP, length)
    value = ones_sum(b"", pseudo) if partial else (checksum(dgram, pseudo) or 0xFFFF)
    struct.pack_into("!H", dgram, 6, value)
    ip = ipv4.build_header(SRC, DST, ipv4.PROTO_UDP, length, 9)
    return MAC_B + MAC_A + b"\x08\x00" + ip + bytes(dgram)


def tcp_sound(frame: bytes) -> tcp.Segment:
    """The frame's TCP segment, its IP and TCP checksums checked the stack's way."""
    h = ipv4.parse(memoryview(frame)[eth.HEADER_LEN:])
    seg = tcp.parse(memoryview(frame)[eth.HEADER_LEN + h.ihl:eth.HEADER_LEN + h.total_len],
                    h.src, h.dst)
    assert isinstance(seg, tcp.Segment), seg
    return seg


TS_OPTS = tcp.build_options(ts=(1, 2))


@settings(max_examples=150, deadline=None)
@given(size=st.integers(1, 60_000), mtu=st.integers(200, 9000),
       options=st.sampled_from([b"", TS_OPTS]),
       flags=st.sampled_from([ACK, ACK | PSH, ACK | PSH | FIN, ACK | CWR | PSH]))
def test_a_long_segment_becomes_mtu_sized_segments_a_peer_accepts(
        size: int, mtu: int, options: bytes, flags: int) -> None:
    payload = bytes(i * 7 & 0xFF for i in range(size))
    frame = tcp_frame(payload, flags, options)
    out = wire_frames(frame, eth.HEADER_LEN, mtu)
    assert all(len(f) <= mtu + eth.HEADER_LEN for f in out)
    segs = [tcp_sound(f) for f in out]
    assert b"".join(bytes(s.payload) for s in segs) == payload
    step = mtu - 20 - (20 + len(options))
    assert len(out) == max(-(-size // step), 1)
    for i, (f, s) in enumerate(zip(out, segs, strict=True)):
        assert s.seq == 1000 + i * step
        assert struct.unpack_from("!H", f, eth.HEADER_LEN + 4)[0] == 7 + i  # IP ID
        last = i == len(out) - 1
        assert s.flags & (FIN | PSH) == (flags & (FIN | PSH) if last else 0)
        assert s.flags & CWR == (flags & CWR if i == 0 else 0)
        assert s.flags & ACK


@pytest.mark.parametrize("make", [
    lambda p: tcp_frame(b"x" * 100, partial=p),
    lambda p: udp_frame(b"y" * 101, partial=p),
], ids=["tcp", "udp"])
def test_a_partial_checksum_is_completed_and_a_full_one_left_alone(make: object) -> None:
    full, partial = make(False), make(True)  # type: ignore[operator]
    assert partial_checksum_at(full, eth.HEADER_LEN) is None
    assert partial_checksum_at(partial, eth.HEADER_LEN) is not None
    assert not l4_checksum_ok(partial, eth.HEADER_LEN)  # what a peer would refuse
    assert wire_frames(partial, eth.HEADER_LEN, 1500) == [full]
    assert wire_frames(full, eth.HEADER_LEN, 1500) == [full]
    assert l4_checksum_ok(full, eth.HEADER_LEN)


def test_a_damaged_segment_is_found_a_fragment_and_no_checksum_are_not_judged() -> None:
    good = tcp_frame(b"data" * 50, partial=False)
    bad = bytearray(good)
    bad[-1] ^= 0x10
    assert l4_checksum_ok(good, eth.HEADER_LEN) and not l4_checksum_ok(bytes(bad), 14)
    frag = bytearray(bad)
    struct.pack_into("!H", frag, eth.HEADER_LEN + 6, 0x2000)  # MF: the rest comes later
    assert l4_checksum_ok(bytes(frag), eth.HEADER_LEN)
    none = bytearray(udp_frame(b"z" * 10, partial=False))
    struct.pack_into("!H", none, eth.HEADER_LEN + 20 + 6, 0)  # RFC 768: no checksum
    assert l4_checksum_ok(bytes(none), eth.HEADER_LEN)


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=300), l3=st.sampled_from([0, eth.HEADER_LEN, -1]),
       mtu=st.integers(1, 2000))
def test_any_bytes_are_answered_never_raised(data: bytes, l3: int, mtu: int) -> None:
    wire_frames(data, l3, mtu)
    if l3 >= 0:
        partial_checksum_at(data, l3)
        l4_checksum_ok(data, l3)


@settings(max_examples=400, deadline=None)
@given(at=st.integers(0, 200), value=st.integers(0, 255), cut=st.integers(0, 3000),
       mtu=st.integers(1, 2000))
def test_damaged_offloaded_frames_are_answered_never_raised(at: int, value: int, cut: int,
                                                             mtu: int) -> None:
    frame = bytearray(tcp_frame(bytes(2000), options=TS_OPTS))
    frame[at % len(frame)] = value
    f = bytes(frame[:cut])
    for out in wire_frames(f, eth.HEADER_LEN, mtu):
        assert isinstance(out, bytes)
    partial_checksum_at(f, eth.HEADER_LEN)
    l4_checksum_ok(f, eth.HEADER_LEN)


# -- the stack on an offloading device -------------------------------------------------


class OffloadEnd(WireEnd):
    """A wire end that offloads as a TAP with ``offload=True`` does: what it sends
    crosses to the peer as it is (memory to memory, as between a TAP and its kernel),
    unless the peer does not offload: then it goes as a wire carries it."""

    def __init__(self, name: str, mac: bytes, mtu: int, offloads: Offloads) -> None:
        super().__init__(name, mac, LinkType.ETHERNET, mtu)
        self.offloads = offloads
        self.longest = 0

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        if self.closed:
            raise DeviceClosed(self.name)
        data = bytes(frame)
        self.longest = max(self.longest, len(data))
        self.sent.append(data)
        peer = self.peer
        if peer is not None and self.up:
            if isinstance(peer, OffloadEnd) and peer.offloads.rx_checksum:
                peer.rx.append(data)
            else:
                peer.rx.extend(wire_frames(data, eth.HEADER_LEN, self.mtu))
        return True


def pair(off_a: Offloads, off_b: Offloads | None, mtu_b: int = 1500,
         capture: PcapngWriter | None = None,
         ) -> tuple[Stack, Stack, OffloadEnd, WireEnd]:
    clock = ManualClock(1000.0)
    wa = OffloadEnd("a", MAC_A, 1500, off_a)
    wb: WireEnd = OffloadEnd("b", MAC_B, mtu_b, off_b) if off_b is not None else WireEnd(
        "b", MAC_B, LinkType.ETHERNET, mtu_b)
    wa.peer, wb.peer = wb, wa
    a, b = Stack(clock), Stack(clock)
    dev_a = CaptureDevice(wa, capture) if capture is not None else wa
    a.add_device(dev_a)
    b.add_device(wb)
    a.link_add(dev_a, "10.0.0.1", "255.255.255.0")
    b.link_add(wb, "10.0.0.2", "255.255.255.0")
    return a, b, wa, wb


def exchange(a: Stack, b: Stack, size: int) -> tuple[bytes, bytes]:
    """``size`` bytes each way at once over a connection from a to b; what each got."""
    clock = a.clock
    assert isinstance(clock, ManualClock)

    def step() -> None:
        clock.advance(1.0)
        for _ in range(4):
            a.tick()
            b.tick()

    c, child = tcp_connect(a, b, step)
    data = bytes(i * 13 & 0xFF for i in range(size))
    sent_a = sent_b = 0
    got_a, got_b = bytearray(), bytearray()
    for _ in range(20_000):
        step()
        if sent_a < size:
            sent_a += c.send(data[sent_a:sent_a + 262144])
        if sent_b < size:
            sent_b += child.send(data[sent_b:sent_b + 262144])
        got_b += child.recv(1 << 20)
        got_a += c.recv(1 << 20)
        if len(got_a) == len(got_b) == size:
            break
    assert bytes(got_b) == data, "a -> b"
    assert bytes(got_a) == data, "b -> a"
    return bytes(got_a), bytes(got_b)


FULL = Offloads(rx_checksum=True, tx_checksum=True, tso=TSO)


def test_both_ends_offloading_move_long_segments_with_partial_checksums() -> None:
    a, b, wa, wb = pair(FULL, FULL)
    exchange(a, b, 1 << 20)
    assert isinstance(wb, OffloadEnd)
    assert wa.longest > 30_000 and wb.longest > 30_000  # segments of many MSS
    assert any(partial_checksum_at(f, eth.HEADER_LEN) for f in wa.sent)
    assert a.drops.total() == b.drops.total() == 0


def test_an_offloading_end_talks_to_a_plain_one_with_wire_frames() -> None:
    a, b, wa, wb = pair(FULL, None)
    exchange(a, b, 1 << 20)
    assert wa.longest > 30_000  # a handed long segments to its device ...
    assert b.drops.total() == 0  # ... and b got sound frames of the MTU, one per MSS
    assert wb.counters.rx_frames > (1 << 20) // 1448


def test_no_long_segments_for_a_peer_that_asked_for_a_smaller_mss() -> None:
    a, b, wa, _ = pair(FULL, None, mtu_b=1000)  # b's SYN says MSS 960
    exchange(a, b, 256 * 1024)
    assert wa.longest <= 1000 + eth.HEADER_LEN
    assert b.drops.total() == 0


def test_a_capture_behind_an_offloading_device_records_a_wire(tmp_path: Path) -> None:
    path = tmp_path / "off.pcapng"
    with PcapngWriter(path) as w:
        a, b, wa, _ = pair(FULL, FULL, capture=w)
        exchange(a, b, 256 * 1024)
    assert wa.longest > 30_000
    frames = _pcapng_frames(path.read_bytes())
    assert len(frames) > 2 * 256 * 1024 // 1448
    for f in frames:
        assert len(f) <= 1500 + eth.HEADER_LEN
        if f[12:14] == b"\x08\x00" and f[eth.HEADER_LEN + 9] == ipv4.PROTO_TCP:
            tcp_sound(f)  # every checksum complete


def _pcapng_frames(raw: bytes) -> list[bytes]:
    """The packet data of every Enhanced Packet Block (pcapng 4.3), host byte order."""
    out, pos = [], 0
    while pos + 12 <= len(raw):
        btype, blen = struct.unpack_from("=II", raw, pos)
        if btype == 6:
            caplen = struct.unpack_from("=I", raw, pos + 20)[0]
            out.append(raw[pos + 28:pos + 28 + caplen])
        pos += blen
    return out


def test_impairment_cuts_no_long_segments_and_refuses_to_corrupt_unchecked_frames() -> None:
    end = OffloadEnd("a", MAC_A, 1500, FULL)
    dev = ImpairedDevice(end, Impairment.parse("loss=1%"))
    assert dev.offloads == Offloads(rx_checksum=True, tx_checksum=True, tso=0)
    with pytest.raises(ValueError, match="offloads checksums"):
        dev.impairment = Impairment.parse("corrupt=1%")
    with pytest.raises(ValueError, match="offloads checksums"):
        ImpairedDevice(end, Impairment.parse("corrupt=1%"))
    assert ImpairedDevice(WireEnd("p", MAC_B, LinkType.ETHERNET, 1500),
                          Impairment.parse("corrupt=1%")).offloads == Offloads()


def test_a_device_without_offloads_gets_wire_frames_only() -> None:
    a, b, wa, _ = pair(Offloads(), None)
    exchange(a, b, 64 * 1024)
    assert wa.longest <= 1500 + eth.HEADER_LEN
    assert all(partial_checksum_at(f, eth.HEADER_LEN) is None for f in wa.sent)

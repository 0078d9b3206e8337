"""TCP keeps its window within a device's receive buffer (``rx_buffer_bytes``).

A device that holds only a few frames before it drops (the W5100's 8 KB) must
never be offered a burst larger than that: B's device states 8192 bytes, so
every window B advertises, from its SYN on, must arrive in frames that fit,
while A, on an unbounded device, keeps its full window. B also keeps what it
has in flight to what the room beside that window holds of the ACKs coming
back. Two stacks on an in-memory wire with a manual clock (``tests/memwire.py``),
and two connections by hand (``Pipe`` of ``test_tcp_conn``).
"""

from __future__ import annotations

import io
import math
import random
from pathlib import Path

import pytest

from hilkit.port import LinkType, ManualClock
from hilkit.port.capture import CaptureDevice, PcapngWriter
from hilkit.port.device import Device, device_rx_buffer
from hilkit.port.impair import ImpairedDevice, Impairment
from hilkit.port.middleware import DeviceMiddleware
from hilkit.stack import Stack, StackConfig, TcpConfig, TcpSocket, eth, ipv4, tcp
from hilkit.stack.tcp import SYN, Segment, seq_diff
from hilkit.stack.tcp_conn import rx_window_clamp, tx_flight_clamp
from tests.memwire import StackPair, WireEnd, wire
from tests.unit.test_tcp_conn import Pipe

B_IP = "10.0.0.2"
A_IP = "10.0.0.1"
PORT = 80
RX_BUFFER = 8192
FRAME = 1500 + 14  # the largest frame the peer sends: MTU + Ethernet header
MIN_FULL_PAYLOAD = 1460 - 40  # a full-size segment with 40 bytes of TCP options
WINDOW = 4 * MIN_FULL_PAYLOAD  # 5 frames of 1514 fit in 8 KB; one is kept for ACKs


def tcp_segments(frames: list[bytes]) -> list[Segment]:
    out = []
    for f in frames:
        if f[12:14] != eth.ETHERTYPE_IPV4.to_bytes(2, "big"):
            continue
        ip = memoryview(f)[14:]
        if ip[9] != ipv4.PROTO_TCP:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = int.from_bytes(ip[2:4], "big")
        src, dst = int.from_bytes(ip[12:16], "big"), int.from_bytes(ip[16:20], "big")
        seg = tcp.parse(ip[ihl:total], src, dst)
        assert isinstance(seg, Segment), seg
        out.append(seg)
    return out


def windows(frames: list[bytes]) -> list[tuple[int, int]]:
    """(right edge, window in bytes) of every segment one side sent, scale applied after the
    SYN (RFC 7323 §2.2: a SYN's window is never scaled)."""
    out = []
    shift = 0
    for seg in tcp_segments(frames):
        if seg.flags & SYN:
            shift = seg.wscale or 0
            if seg.flags & tcp.ACK:
                out.append(((seg.ack + seg.wnd) & 0xFFFFFFFF, seg.wnd))
            continue
        w = seg.wnd << shift
        out.append(((seg.ack + w) & 0xFFFFFFFF, w))
    return out


def bound(dev: WireEnd, nbytes: int | None) -> None:
    dev.rx_buffer_bytes = nbytes  # type: ignore[attr-defined]  # the optional member


def transfer(p: StackPair, client_on_a: bool, nbytes: int = 300_000) -> None:
    """``nbytes`` each way at once between A and B, the application reading at once."""
    srv_stack, cli_stack = (p.b, p.a) if client_on_a else (p.a, p.b)
    srv = srv_stack.tcp_socket()
    srv.bind(("0.0.0.0", PORT))
    srv.listen(4)
    c = cli_stack.tcp_socket()
    c.connect((B_IP if client_on_a else A_IP, PORT))
    p.settle()
    child = srv.accept()
    assert c.connected and child is not None
    up, down = random.Random(1).randbytes(nbytes), random.Random(2).randbytes(nbytes)
    pairs: list[tuple[TcpSocket, bytes, TcpSocket, bytearray]] = [
        (c, up, child, bytearray()), (child, down, c, bytearray())]
    offs = [0, 0]
    for _ in range(200_000):
        for i, (tx, data, _, _) in enumerate(pairs):
            while offs[i] < len(data) and tx.writable:
                n = tx.send(data[offs[i]:offs[i] + 65536])
                if n == 0:
                    break
                offs[i] += n
        p.settle(4)
        for _, _, rx, got in pairs:
            while chunk := rx.recv(1 << 20):
                got += chunk
        if all(len(got) >= len(data) for _, data, _, got in pairs):
            break
        p.clock.advance(1)
    for _, data, _, got in pairs:
        assert got == data


def assert_fits(wins: list[tuple[int, int]]) -> None:
    """Every window arrives in frames that fit the buffer; the right edge never moves left
    (RFC 9293 §3.8.6, RFC 7323 §2.4)."""
    edge = None
    for right, w in wins:
        assert math.ceil(w / MIN_FULL_PAYLOAD) * FRAME <= RX_BUFFER, w
        if edge is not None:
            assert seq_diff(right, edge) >= 0, "the advertised right edge moved left"
        edge = right


@pytest.mark.parametrize("client_on_a", [True, False], ids=["b-accepts", "b-connects"])
def test_window_fits_a_bounded_device_and_not_an_unbounded_one(client_on_a: bool) -> None:
    p = StackPair()
    bound(p.wb, RX_BUFFER)
    transfer(p, client_on_a)
    b_wins, a_wins = windows(p.wb.sent), windows(p.wa.sent)
    assert_fits(b_wins)
    b_syn = next(s for s in tcp_segments(p.wb.sent) if s.flags & SYN)
    assert b_syn.wnd == WINDOW and b_syn.wscale == 0  # from the SYN on; exact, not rounded
    assert max(w for _, w in b_wins) == WINDOW
    assert max(w for _, w in a_wins) == TcpConfig().rcvbuf  # A keeps its full window
    assert not p.a.drops and not p.b.drops


def test_syn_cookie_window_fits_too() -> None:
    """A SYN-ACK carrying a cookie offers a window too: the same limit applies."""
    p = StackPair(config=StackConfig(tcp_max_syn_backlog=0))
    bound(p.wb, RX_BUFFER)
    transfer(p, client_on_a=True, nbytes=100_000)
    assert p.b.stats["tcp.syncookies_accepted"] == 1
    assert_fits(windows(p.wb.sent))


def test_window_clamp_counts_whole_frames() -> None:
    """Whole frames of MTU + link header, less one kept for what the window does not
    govern (ACKs, ARP), each counted with the least payload a full segment carries."""
    assert rx_window_clamp(None, 1500, 14) is None
    assert rx_window_clamp(8192, 1500, 14) == 4 * 1420
    assert rx_window_clamp(8182, 1500, 14) == 4 * 1420  # the W5100 less its 2-byte headers
    assert rx_window_clamp(7569, 1500, 14) == 3 * 1420  # 4 frames of 1514 need 7570
    assert rx_window_clamp(1000, 1500, 14) == 1420  # never less than one segment
    assert rx_window_clamp(3000, 1500, 0) == 1420  # raw IP: no link header, 2 fit
    assert rx_window_clamp(4500, 1500, 0) == 2 * 1420
    assert rx_window_clamp(8192, 576, 14) == 12 * 496  # 13 frames of 590 fit


# -- wrappers pass it through ----------------------------------------------------------------


def bounded_device() -> WireEnd:
    dev = WireEnd("w", b"\x02\x00\x00\x00\x00\x0a", LinkType.ETHERNET, 1500)
    bound(dev, RX_BUFFER)
    return dev


@pytest.mark.parametrize("wrap", ["middleware", "capture", "impair", "capture+impair"])
def test_wrappers_pass_rx_buffer_bytes_through(wrap: str) -> None:
    inner = bounded_device()
    dev: Device = inner
    if "impair" in wrap:
        dev = ImpairedDevice(dev, Impairment.parse("loss=1%,seed=1"))
    if "capture" in wrap:
        dev = CaptureDevice(dev, PcapngWriter(io.BytesIO()))
    if wrap == "middleware":
        dev = DeviceMiddleware(dev)
    assert dev.rx_buffer_bytes == RX_BUFFER  # type: ignore[attr-defined]
    assert device_rx_buffer(dev) == RX_BUFFER
    bound(inner, None)
    assert device_rx_buffer(dev) is None  # unbounded below: unbounded through the wrapper


class CapturedPair(StackPair):
    """A StackPair whose B records a pcapng: ``Stack(pcap=...)`` wraps B's device."""

    def __init__(self, pcap: str) -> None:
        self.clock = ManualClock(1000.0)
        self.wa, self.wb = wire()
        bound(self.wb, RX_BUFFER)
        self.a = Stack(self.clock)
        self.b = Stack(self.clock, pcap=pcap)
        self.a.add_device(self.wa)
        self.dev_b = self.b.add_device(self.wb)
        self.a.link_add(self.wa, A_IP, "255.255.255.0")
        self.b.link_add(self.dev_b, B_IP, "255.255.255.0")


def test_stack_sees_the_limit_through_a_capture(tmp_path: Path) -> None:
    """The limit is read through the wrapper the stack itself puts around B's device."""
    p = CapturedPair(str(tmp_path / "b.pcapng"))
    assert isinstance(p.dev_b, CaptureDevice)
    transfer(p, client_on_a=True, nbytes=50_000)
    assert_fits(windows(p.wb.sent))
    assert max(w for _, w in windows(p.wb.sent)) == WINDOW


# -- and keeps its flight within what the ACKs coming back can take --------------------------


def test_flight_clamp_leaves_room_for_the_acks() -> None:
    """Beside a full window (4 x 1514 of 8182 bytes) the buffer has 2126 bytes for the ACKs
    of what we send, up to one per segment, each up to 94 bytes (every TCP option)."""
    assert tx_flight_clamp(None, 1500, 14) is None
    assert tx_flight_clamp(8182, 1500, 14) == (8182 - 4 * 1514) // 94 == 22
    assert tx_flight_clamp(1000, 1500, 14) == 1  # never nothing


def test_flight_never_exceeds_the_clamp() -> None:
    """However large the peer's window and our cwnd, no more than ``snd_clamp_segs``
    segments are unacknowledged; each ACK lets out as many as it acknowledged."""
    p = Pipe()
    p.a.snd_clamp_segs = 3
    p.open()
    p.a.cc.cwnd = 1 << 30
    p.hold = lambda src, seg: src == "a" and bool(seg.payload)
    assert p.a.send(bytes(200_000), p.now) == 200_000
    for _ in range(20):
        p.run()
        segs = [seg for src, seg in p.held if src == "a"]
        assert 0 < len(segs) <= 3 and seq_diff(p.a.snd_max, p.a.snd_una) <= 3 * p.a.mss
        p.release()
        p.read_all()
    assert seq_diff(p.a.snd_una, p.a.iss) > 20 * 3 * 1000  # it kept going

"""Receive coalescing (``hilkit.stack.gro``): what may be joined is joined, what may not
passes untouched, and no batch of frames makes it raise."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hilkit.port.checksum import checksum, verify
from hilkit.stack import StackConfig, eth, ipv4, tcp
from hilkit.stack.addr import ip_to_int
from hilkit.stack.gro import coalesce
from hilkit.stack.ipv4 import MAX_DATAGRAM
from tests.memwire import StackPair, tcp_connect

SRC, DST = ip_to_int("10.0.0.2"), ip_to_int("10.0.0.1")
MAC_A, MAC_B = bytes.fromhex("02000000000a"), bytes.fromhex("02000000000b")
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
TS = tcp.build_options(ts=(100, 200))
L3 = eth.HEADER_LEN


def seg(seq: int, payload: bytes, flags: int = ACK, *, sport: int = 5000, ack: int = 77,
        wnd: int = 1000, options: bytes = TS, tos: int = 0, ttl: int = 64, src: int = SRC,
        flags_frag: int = 0x4000, mac: bytes = MAC_B) -> bytes:
    hdr = tcp.header(src, DST, sport, 80, seq, ack, flags, wnd, options, payload)
    ip = bytearray(ipv4.build_header(src, DST, ipv4.PROTO_TCP, len(hdr) + len(payload), 1,
                                     ttl, tos, flags_frag))
    return MAC_A + mac + b"\x08\x00" + bytes(ip) + hdr + payload


def run(n: int, size: int = 1000, start: int = 1, last: int = ACK) -> list[bytes]:
    return [seg(start + i * size, bytes([i]) * size, last if i == n - 1 else ACK)
            for i in range(n)]


def parsed(frame: bytes, checked: bool) -> tcp.Segment:
    h = ipv4.parse(memoryview(frame)[L3:])  # the IP header checksum is checked here
    s = tcp.parse(memoryview(frame)[L3 + h.ihl:L3 + h.total_len], h.src, h.dst, checked)
    assert isinstance(s, tcp.Segment), s
    return s


@pytest.mark.parametrize(("n", "last"), [(2, ACK), (5, ACK | PSH), (64, ACK)])
def test_consecutive_segments_of_a_flow_become_one(n: int, last: int) -> None:
    frames = run(n, last=last)
    out = list(coalesce(frames, L3, False))
    assert len(out) == 1 and out[0][1] is True
    s = parsed(out[0][0], checked=True)
    assert bytes(s.payload) == b"".join(bytes([i]) * 1000 for i in range(n))
    assert s.seq == 1 and s.ack == 77 and s.wnd == 1000 and s.ts == (100, 200)
    assert s.flags == last


def test_a_single_segment_passes_as_it_came_marked_checked() -> None:
    f = seg(1, b"x" * 10)
    assert list(coalesce([f], L3, False)) == [(f, True)]


def test_psh_ends_a_run_and_the_next_starts_a_new_one() -> None:
    frames = run(3, last=ACK | PSH) + run(2, start=3001)
    out = list(coalesce(frames, L3, False))
    assert [parsed(f, True).seq for f, _ in out] == [1, 3001]


def test_runs_stop_at_the_datagram_limit() -> None:
    frames = run(100, size=1400)
    out = list(coalesce(frames, L3, False))
    assert len(out) > 1
    assert all(len(f) - L3 <= MAX_DATAGRAM for f, _ in out)
    assert b"".join(bytes(parsed(f, True).payload) for f, _ in out) == \
        b"".join(bytes([i]) * 1400 for i in range(100))


# Each makes the second of two otherwise joinable segments one that must not join.
BREAKERS: dict[str, Callable[[], bytes]] = {
    "gap in sequence": lambda: seg(1002, b"b" * 1000),
    "overlap": lambda: seg(900, b"b" * 1000),
    "other source port": lambda: seg(1001, b"b" * 1000, sport=5001),
    "other source address": lambda: seg(1001, b"b" * 1000, src=SRC + 1),
    "other ack": lambda: seg(1001, b"b" * 1000, ack=78),
    "other window": lambda: seg(1001, b"b" * 1000, wnd=999),
    "other timestamp": lambda: seg(1001, b"b" * 1000, options=tcp.build_options(ts=(101, 200))),
    "no options": lambda: seg(1001, b"b" * 1000, options=b""),
    "other TOS (ECN CE)": lambda: seg(1001, b"b" * 1000, tos=3),
    "other TTL": lambda: seg(1001, b"b" * 1000, ttl=63),
    "other source MAC": lambda: seg(1001, b"b" * 1000, mac=bytes.fromhex("02000000000c")),
    "FIN": lambda: seg(1001, b"b" * 1000, ACK | FIN),
    "SYN": lambda: seg(1001, b"b" * 1000, ACK | SYN),
    "RST": lambda: seg(1001, b"b" * 1000, ACK | RST),
    "URG": lambda: seg(1001, b"b" * 1000, ACK | URG),
    "ECE": lambda: seg(1001, b"b" * 1000, ACK | ECE),
    "CWR": lambda: seg(1001, b"b" * 1000, ACK | CWR),
    "no ACK": lambda: seg(1001, b"b" * 1000, 0),
    "no payload": lambda: seg(1001, b""),
    "a fragment": lambda: seg(1001, b"b" * 1000, flags_frag=0x2000),
    "IP options": lambda: _with_ip_options(seg(1001, b"b" * 1000)),
    "bad checksum": lambda: _damaged(seg(1001, b"b" * 1000)),
    "UDP": lambda: _as_udp(seg(1001, b"b" * 1000)),
}


def _damaged(f: bytes) -> bytes:
    b = bytearray(f)
    b[-1] ^= 1
    return bytes(b)


def _as_udp(f: bytes) -> bytes:
    b = bytearray(f)
    b[L3 + 9] = ipv4.PROTO_UDP
    struct.pack_into("!H", b, L3 + 10, 0)
    struct.pack_into("!H", b, L3 + 10, checksum(bytes(b[L3:L3 + 20])))
    return bytes(b)


def _with_ip_options(f: bytes) -> bytes:
    ip = bytearray(f[L3:L3 + 20])
    ip[0] = 0x46
    struct.pack_into("!H", ip, 2, len(f) - L3 + 4)
    ip += b"\x01\x01\x01\x00"  # NOP NOP NOP EOL
    struct.pack_into("!H", ip, 10, 0)
    struct.pack_into("!H", ip, 10, checksum(bytes(ip)))
    return f[:L3] + bytes(ip) + f[L3 + 20:]


@pytest.mark.parametrize("why", sorted(BREAKERS))
def test_what_a_receiver_could_tell_apart_is_not_joined(why: str) -> None:
    first, second = seg(1, b"a" * 1000), BREAKERS[why]()
    out = list(coalesce([first, second], L3, False))
    assert [f for f, _ in out] == [first, second]  # untouched, in order
    assert out[0][1] is True
    if why in ("bad checksum", "IP options", "a fragment", "UDP", "FIN", "SYN", "RST",
               "URG", "ECE", "CWR", "no ACK"):
        assert out[1][1] is False  # left for the stack to check and judge


def acks(*numbers: int, **kw: object) -> list[bytes]:
    return [seg(500, b"", ACK, ack=a, **kw) for a in numbers]  # type: ignore[arg-type]


def test_a_run_of_advancing_pure_acks_is_answered_by_its_last() -> None:
    frames = acks(1000, 2000, 3000, 4000)
    assert list(coalesce(frames, L3, False)) == [(frames[-1], True)]


def test_duplicate_acks_all_pass_for_loss_recovery_to_count() -> None:
    frames = acks(1000, 1000, 1000, 2000, 3000)
    # every duplicate passes; the 2000 says nothing the 3000 does not
    assert [f for f, _ in coalesce(frames, L3, False)] == frames[:3] + frames[4:]


def test_acks_that_say_different_things_all_pass_in_order() -> None:
    sack = tcp.build_options(ts=(100, 200), sack=[(5000, 6000)])
    cases = [
        acks(1000) + acks(2000, options=sack),  # a SACK block: news of its own
        acks(1000) + acks(2000, sport=5001),  # another flow
        acks(2000) + acks(1000),  # going back: an old ACK, for TCP to judge
        [*acks(1000), seg(2000, b"data"), *acks(3000)],  # data between them
        [*acks(1000), _damaged(acks(2000)[0])],  # a damaged one supersedes nothing
        [*acks(1000), seg(500, b"", ACK | ECE, ack=2000)],  # ECN echo
    ]
    for frames in cases:
        assert [f for f, _ in coalesce(frames, L3, False)] == frames


def test_a_device_that_vouches_spares_the_check_and_still_joins() -> None:
    frames = [_damaged(f) for f in run(3)]  # only a vouching device may hand these over
    out = list(coalesce(frames, L3, True))
    assert len(out) == 1 and out[0][1] is True


def test_raw_ip_frames_join_too() -> None:
    frames = [f[L3:] for f in run(4)]
    out = list(coalesce(frames, 0, False))
    assert len(out) == 1
    h = ipv4.parse(memoryview(out[0][0]))
    assert h.total_len == 20 + 32 + 4000 and verify(out[0][0][:20])


frame_lists = st.lists(st.one_of(
    st.binary(max_size=80),
    st.builds(lambda i, d: seg(1 + i * 100, d), st.integers(0, 5), st.binary(max_size=100)),
    st.builds(lambda f, at, v: f[:at] + bytes([v]) + f[at + 1:],
              st.sampled_from(run(3, size=50)), st.integers(0, 140), st.integers(0, 255)),
), max_size=12)


@settings(max_examples=500, deadline=None)
@given(frames=frame_lists, l3=st.sampled_from([0, L3]), checked=st.booleans())
def test_any_batch_is_answered_never_raised_and_what_is_not_joined_passes_as_it_came(
        frames: list[bytes], l3: int, checked: bool) -> None:
    out = list(coalesce(frames, l3, checked))
    assert len(out) <= len(frames)
    assert sum(len(f) for f, _ in out) <= sum(len(f) for f in frames)
    assert all(isinstance(f, bytes) for f, _ in out)
    # frames handed on unchecked are inputs, untouched and in their order
    unchecked = [f for f, ok in out if not ok]
    it = iter(frames)
    assert all(any(f is g for g in it) for f in unchecked)


def test_the_stack_takes_joined_segments_intact_with_fewer_tcp_calls() -> None:
    """Bulk from a to b on the in-memory wire, with and without coalescing at b."""
    segs_in = {}
    for on in (False, True):
        p = StackPair(config=StackConfig(gro=on))
        c, child = tcp_connect(p.a, p.b, p.settle)
        data = bytes(i * 7 & 0xFF for i in range(2 << 20))
        sent, got = 0, bytearray()
        for _ in range(100_000):
            if sent < len(data):
                sent += c.send(data[sent:sent + 65536])
            p.a.tick()  # a sends a window's worth; b then polls many frames at once
            p.b.tick()
            got += child.recv(1 << 20)
            if len(got) == len(data):
                break
            p.clock.advance(0.2)
        assert bytes(got) == data
        assert p.b.drops.total() == 0
        assert child.conn is not None
        segs_in[on] = child.conn.stats["segs_in"]
    assert segs_in[True] * 4 < segs_in[False], segs_in

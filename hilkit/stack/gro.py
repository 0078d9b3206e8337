"""Receive coalescing (Linux's GRO, in software): consecutive TCP segments of one flow
in a batch of polled frames become one segment before the stack sees them.

The stack's cost is per segment, not per byte; under load a device hands over a full
poll budget of frames at a time, most of them the next segments of the same
connection. Joined, TCP takes them in one call and acknowledges them once.

Only what the receiver could not tell apart is joined: IPv4 without options and not
fragmented, the same addresses, ports, TOS, TTL, ACK number, window and TCP options
(timestamps included) and the sequence numbers continuing each other; flags ACK, with
PSH allowed on the last segment of a run (it ends the run), nothing else (no SYN, FIN,
RST, URG, ECE or CWR). The checksum of each segment is checked before it is joined; a
frame that fails the check, or anything else, passes untouched for the stack to judge.
The joined segment's own checksum is not computed: it is handed on as checked.

A run of pure ACKs of one flow (flags exactly ACK, no data, the same options) whose
acknowledgment numbers each move forward is answered by its last one alone: it says
everything the others said (the window is the newest), and none of them is a duplicate
ACK, which loss recovery counts (a duplicate is always handed on).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from hilkit.port.checksum import checksum, ones_sum, pseudo_header_sum
from hilkit.stack.ipv4 import MAX_DATAGRAM, PROTO_TCP

__all__ = ["coalesce"]

_IP_TCP = struct.Struct("!BBHHHBBHIIHHIIBBHHH")  # a 20-byte IPv4 and a TCP header
_IP_TCP_LEN = 40
_ACK, _PSH = 0x10, 0x08
_OTHER_FLAGS = 0xFF & ~(_ACK | _PSH)  # FIN SYN RST URG ECE CWR: never joined


class _Run:
    """Segments joined so far: the first one's headers, the payloads in order."""

    __slots__ = ("end_seq", "frame", "key", "l4", "parts", "psh", "size")

    def __init__(self, frame: bytes, key: tuple[object, ...], l4: int, end_seq: int,
                 payload: memoryview, psh: bool) -> None:
        self.frame = frame
        self.key = key
        self.l4 = l4  # where the payload starts in ``frame``
        self.end_seq = end_seq
        self.parts = [payload]
        self.size = len(payload)
        self.psh = psh


def coalesce(frames: list[bytes], l3: int, checked: bool) -> Iterator[tuple[bytes, bool]]:
    """Each frame, or the joined segment it became part of, with whether its TCP/UDP
    checksum is known good (``checked``: the device vouched for every frame).

    ``l3`` is where the IPv4 header starts (14 behind Ethernet, 0 on a raw-IP link).
    Order is kept: a frame that cannot join ends the run before it.
    """
    run: _Run | None = None
    # the newest pure ACK of a run: (frame, key, ack, whether it duplicates the one before)
    acked: tuple[bytes, tuple[object, ...], int, bool] | None = None

    def pending() -> list[tuple[bytes, bool]]:
        """What is held (a run of data or of ACKs: never both), handed on now."""
        nonlocal run, acked
        out = [] if run is None else [_flush(run, l3)]
        if acked is not None:
            out.append((acked[0], True))
        run = acked = None
        return out

    unpack = _IP_TCP.unpack_from
    for frame in frames:
        n = len(frame)
        if n < l3 + _IP_TCP_LEN or frame[l3] != 0x45 or (l3 and frame[12:14] != b"\x08\x00"):
            yield from pending()
            yield frame, False
            continue
        (_vihl, tos, total, _ident, ff, ttl, proto, _csum, src, dst, sport, dport, seq, ack,
         off, flags, wnd, _tcsum, _urp) = unpack(frame, l3)
        thl = (off >> 4) * 4
        l4 = l3 + 20 + thl
        end = l3 + total
        pure_ack = flags == _ACK and l4 == end
        if proto != PROTO_TCP or ff & 0x3FFF or flags & _OTHER_FLAGS or not flags & _ACK \
                or thl < 20 or end > n or (l4 >= end and not pure_ack):
            yield from pending()
            yield frame, False
            continue
        mv = memoryview(frame)
        if not checked:
            pseudo = pseudo_header_sum(src, dst, PROTO_TCP, total - 20)
            if ones_sum(mv[l3 + 20:end], pseudo) != 0xFFFF:
                yield from pending()
                yield frame, False  # the stack counts it
                continue
        if pure_ack:
            if run is not None:
                yield _flush(run, l3)
                run = None
            akey = (frame[:l3], src, dst, sport, dport, tos, frame[l3 + 40:l4])
            dup = False
            if acked is not None:
                same = acked[1] == akey
                dup = same and ack == acked[2]
                if not same or acked[3] or not 0 < (ack - acked[2]) & 0xFFFFFFFF < 0x80000000:
                    yield acked[0], True  # (a duplicate ACK is never superseded)
            acked = (frame, akey, ack, dup)
            continue
        if acked is not None:
            yield acked[0], True
            acked = None
        key = (frame[:l3], src, dst, sport, dport, tos, ttl, ack, wnd, frame[l3 + 40:l4])
        payload = mv[l4:end]
        psh = bool(flags & _PSH)
        if run is not None and run.key == key and run.end_seq == seq and \
                l4 - l3 + run.size + len(payload) <= MAX_DATAGRAM:
            run.parts.append(payload)
            run.size += len(payload)
            run.end_seq = (seq + len(payload)) & 0xFFFFFFFF
            run.psh = psh
        else:
            if run is not None:
                yield _flush(run, l3)
            run = _Run(frame, key, l4, (seq + len(payload)) & 0xFFFFFFFF, payload, psh)
        if psh:  # the sender's end of a message: hand it on now
            yield _flush(run, l3)
            run = None
    yield from pending()


def _flush(run: _Run, l3: int) -> tuple[bytes, bool]:
    frame = run.frame
    if len(run.parts) == 1:
        return frame, True
    head = bytearray(frame[:run.l4])
    struct.pack_into("!H", head, l3 + 2, run.l4 - l3 + run.size)
    struct.pack_into("!H", head, l3 + 10, 0)
    struct.pack_into("!H", head, l3 + 10, checksum(memoryview(head)[l3:l3 + 20]))
    if run.psh:
        head[l3 + 33] |= _PSH
    return b"".join([head, *run.parts]), True

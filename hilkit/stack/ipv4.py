"""IPv4 (RFC 791, RFC 1122 §3.2): header parse and build, fragmentation, reassembly.

Sans-I/O: functions take and return bytes; ``Reassembler`` takes fragments
and the time and returns whole datagrams. Every reason a packet is refused
is a short string the stack counts.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from hilkit.port import checksum

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

MIN_HEADER_LEN = 20
MAX_DATAGRAM = 65535
DEFAULT_TTL = 64  # RFC 1700 / Linux default
FLAG_DF = 0x4000
FLAG_MF = 0x2000
OFFSET_MASK = 0x1FFF

_HDR = struct.Struct("!BBHHHBBH4s4s")


class Drop(Exception):
    """A packet refused for ``reason`` (a counter name)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class Header:
    ihl: int  # header length in bytes
    tos: int
    total_len: int
    ident: int
    flags_frag: int
    ttl: int
    proto: int
    src: int
    dst: int
    # The device vouched for the TCP/UDP checksum (``Offloads.rx_checksum``): the data
    # never crossed a wire, the checksum may be partial.
    csum_checked: bool = False

    @property
    def offset(self) -> int:
        return (self.flags_frag & OFFSET_MASK) * 8

    @property
    def more_fragments(self) -> bool:
        return bool(self.flags_frag & FLAG_MF)

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags_frag & (FLAG_MF | OFFSET_MASK))


def parse(pkt: memoryview) -> Header:
    """Validate an IPv4 header; raise ``Drop`` with the reason if it is not sound.

    Options are skipped by IHL, never interpreted, so hostile options cannot
    steer the parser.
    """
    if len(pkt) < MIN_HEADER_LEN:
        raise Drop("ipv4.short")
    vihl, tos, total, ident, ff, ttl, proto, _csum, src, dst = _HDR.unpack_from(pkt)
    if vihl >> 4 != 4:
        raise Drop("ipv4.bad_version")
    ihl = (vihl & 0xF) * 4
    if ihl < MIN_HEADER_LEN or ihl > len(pkt):
        raise Drop("ipv4.bad_ihl")
    if not checksum.verify(pkt[:ihl]):
        raise Drop("ipv4.bad_checksum")
    if total < ihl or total > len(pkt):
        raise Drop("ipv4.bad_total_length")
    if ff & 0x8000:
        raise Drop("ipv4.reserved_flag")
    return Header(
        ihl, tos, total, ident, ff, ttl, proto, int.from_bytes(src, "big"),
        int.from_bytes(dst, "big"),
    )


def build_header(
    src: int, dst: int, proto: int, payload_len: int, ident: int,
    ttl: int = DEFAULT_TTL, tos: int = 0, flags_frag: int = 0,
) -> bytes:
    hdr = bytearray(
        _HDR.pack(
            0x45, tos, MIN_HEADER_LEN + payload_len, ident, flags_frag, ttl, proto, 0,
            src.to_bytes(4, "big"), dst.to_bytes(4, "big"),
        )
    )
    struct.pack_into("!H", hdr, 10, checksum.checksum(hdr))
    return bytes(hdr)


Buffer = bytes | bytearray | memoryview


def packets(
    src: int, dst: int, proto: int, parts: list[Buffer], ident: int, mtu: int,
    ttl: int = DEFAULT_TTL, tos: int = 0, df: bool = False,
) -> Iterator[list[Buffer]]:
    """The datagram as packets that fit ``mtu`` (RFC 791 §3.2), each a list of buffers.

    Parts are sliced, not joined: the link layer makes the one copy of a frame.
    """
    size = sum(len(p) for p in parts)
    if MIN_HEADER_LEN + size <= mtu:
        yield [build_header(src, dst, proto, size, ident, ttl, tos, FLAG_DF if df else 0), *parts]
        return
    if df:
        raise Drop("ipv4.needs_fragmentation_df")
    if MIN_HEADER_LEN + size > MAX_DATAGRAM:
        raise Drop("ipv4.too_big")
    step = (mtu - MIN_HEADER_LEN) & ~7
    for off in range(0, size, step):
        end = min(off + step, size)
        more = FLAG_MF if end < size else 0
        hdr = build_header(src, dst, proto, end - off, ident, ttl, tos, more | (off >> 3))
        yield [hdr, *_slice(parts, off, end)]


def _slice(parts: list[Buffer], start: int, end: int) -> list[Buffer]:
    out: list[Buffer] = []
    pos = 0
    for p in parts:
        n = len(p)
        if pos < end and pos + n > start:
            out.append(memoryview(p)[max(0, start - pos):min(n, end - pos)])
        pos += n
    return out


@dataclass
class _Partial:
    header: Header  # of the first fragment seen; replaced by offset 0's
    first: bytes | None  # offset-0 header + 8 bytes, for an ICMP time-exceeded
    deadline: float
    pieces: dict[int, bytes] = field(default_factory=dict)  # offset -> data
    total: int | None = None
    have: int = 0
    poisoned: bool = False
    broadcast: bool = False  # a fragment came as a broadcast: never answer with an error


@dataclass(frozen=True)
class ReassemblyLimits:
    max_datagram: int = MAX_DATAGRAM  # bytes of payload + header
    timeout_ms: float = 30_000.0  # Linux ipfrag_time
    max_concurrent: int = 64
    max_fragments: int = 256  # per datagram; a 65 KiB datagram at MTU 576 needs 118


class Reassembler:
    """Puts fragments back together (RFC 791 §3.2, RFC 815).

    Any overlap that is not an exact duplicate discards the whole datagram
    (and later fragments of it until the timeout), as RFC 5722 demands for
    IPv6 and Linux does for IPv4: overlaps are an attack, never a real path.
    """

    def __init__(self, limits: ReassemblyLimits | None = None) -> None:
        self.limits = limits or ReassemblyLimits()
        self._partials: OrderedDict[tuple[int, int, int, int], _Partial] = OrderedDict()

    def __len__(self) -> int:
        return len(self._partials)

    def add(
        self, hdr: Header, pkt: memoryview, now: float, drops: dict[str, int],
        broadcast: bool = False,
    ) -> tuple[Header, bytes, bytes] | None:
        """Take one fragment (``pkt`` is the whole packet).

        Returns (header, header bytes, payload) of the first fragment once whole.
        """
        key = (hdr.src, hdr.dst, hdr.ident, hdr.proto)
        data = pkt[hdr.ihl:hdr.total_len]
        start = hdr.offset
        end = start + len(data)
        lim = self.limits
        p = self._partials.get(key)
        if p is None:
            if len(self._partials) >= lim.max_concurrent:
                self._partials.popitem(last=False)
                _count(drops, "ipv4.reasm_evicted")
            p = _Partial(hdr, None, now + lim.timeout_ms)
            self._partials[key] = p
        if p.poisoned:
            _count(drops, "ipv4.frag_of_discarded")
            return None
        p.broadcast |= broadcast
        reason = None
        if hdr.more_fragments and len(data) % 8:
            reason = "ipv4.frag_bad_length"
        elif end > lim.max_datagram - MIN_HEADER_LEN or (
            start == 0 and hdr.ihl + (p.total or end) > lim.max_datagram
        ) or (p.first is not None and p.header.ihl + end > lim.max_datagram):
            reason = "ipv4.frag_too_big"  # the datagram is the first fragment's header + data
        elif self._inconsistent(p, end, last=not hdr.more_fragments):
            reason = "ipv4.frag_inconsistent"
        elif len(p.pieces) >= lim.max_fragments:
            reason = "ipv4.frag_too_many"
        if reason is None and not data:
            reason = "ipv4.frag_empty"
        if reason is None:
            old = p.pieces.get(start)
            if old is not None and old == data:
                _count(drops, "ipv4.frag_duplicate")
                return None
            for off, piece in p.pieces.items():
                if off < end and start < off + len(piece):
                    reason = "ipv4.frag_overlap"
                    break
        if reason is not None:
            _count(drops, reason)
            p.poisoned = True
            p.pieces.clear()
            return None
        p.pieces[start] = bytes(data)
        p.have += len(data)
        if not hdr.more_fragments:
            p.total = end
        if start == 0:
            p.header = hdr
            p.first = bytes(pkt[:hdr.ihl + min(8, len(data))])
        if p.total is None or p.have != p.total:
            return None
        del self._partials[key]
        payload = b"".join(p.pieces[o] for o in sorted(p.pieces))
        assert p.first is not None  # offset 0 arrived, or ``have`` could not reach ``total``
        return p.header, p.first[:p.header.ihl], payload

    @staticmethod
    def _inconsistent(p: _Partial, end: int, last: bool) -> bool:
        """The fragment contradicts the datagram's known or implied length."""
        if p.total is not None and (end > p.total or (last and end != p.total)):
            return True
        return last and any(o + len(d) > end for o, d in p.pieces.items())

    def expire(self, now: float, drops: dict[str, int]) -> list[tuple[Header, bytes]]:
        """Drop timed-out datagrams; return (header, header + 8 bytes) of first fragments.

        Only those an ICMP time-exceeded may be sent about: fragment zero
        arrived (RFC 792) and no fragment came as a broadcast (RFC 1122 §3.2.2).
        """
        firsts = []
        for key in [k for k, p in self._partials.items() if p.deadline <= now]:
            p = self._partials.pop(key)
            if p.poisoned:
                continue  # already counted when it was discarded
            _count(drops, "ipv4.reasm_timeout")
            if p.first is not None and not p.broadcast:
                firsts.append((p.header, p.first))
        return firsts

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._partials.values()), default=None)


def _count(drops: dict[str, int], reason: str) -> None:
    drops[reason] = drops.get(reason, 0) + 1

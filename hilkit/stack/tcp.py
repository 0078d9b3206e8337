"""TCP segments (RFC 9293 §3.1) and their options: parse and build, sans-I/O.

Options understood: MSS (RFC 9293 §3.2), window scale and timestamps
(RFC 7323), SACK-permitted and SACK blocks (RFC 2018). Anything else is
skipped by its length; a length that would run past the header refuses the
segment.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from hilkit.port import checksum
from hilkit.stack.ipv4 import PROTO_TCP

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20

HEADER_LEN = 20

OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_OK = 4
OPT_SACK = 5
OPT_TS = 8

MAX_WSCALE = 14  # RFC 7323 §2.3
DEFAULT_MSS = 536  # RFC 9293 §3.7.1: assumed when the peer sends no MSS option
TS_OPTION_LEN = 12  # NOP NOP + kind, len, TSval, TSecr: what timestamps take per segment

_HDR = struct.Struct("!HHIIBBHHH")
_SACK_PACK = [struct.Struct(f"!BBBB{2 * n}I") for n in range(5)]  # NOP NOP kind len, n blocks


def seq_lt(a: int, b: int) -> bool:
    """a < b in sequence space (RFC 9293 §3.4: arithmetic mod 2**32)."""
    return ((a - b) & 0xFFFFFFFF) > 0x7FFFFFFF


def seq_le(a: int, b: int) -> bool:
    return a == b or seq_lt(a, b)


def seq_add(a: int, n: int) -> int:
    return (a + n) & 0xFFFFFFFF


def seq_diff(a: int, b: int) -> int:
    """a - b as a signed distance in sequence space."""
    d = (a - b) & 0xFFFFFFFF
    return d - 0x100000000 if d > 0x7FFFFFFF else d


@dataclass(slots=True)
class Segment:
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    wnd: int
    payload: memoryview
    mss: int | None = None
    wscale: int | None = None
    sack_ok: bool = False
    ts: tuple[int, int] | None = None  # (TSval, TSecr)
    sack: list[tuple[int, int]] = field(default_factory=list)

    @property
    def seg_len(self) -> int:
        """Sequence space the segment takes: data, plus one each for SYN and FIN."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)


def parse(data: memoryview, src: int, dst: int, checked: bool = False) -> Segment | str:
    """The segment, or the reason (a counter name) it is refused; ``checked``: the
    device vouched for the checksum (``Offloads.rx_checksum``)."""
    if len(data) < HEADER_LEN:
        return "tcp.short"
    sport, dport, seq, ack, off, flags, wnd, _csum, _urp = _HDR.unpack_from(data)
    hlen = (off >> 4) * 4
    if hlen < HEADER_LEN or hlen > len(data):
        return "tcp.bad_offset"
    if not checked and not checksum.verify(
            data, checksum.pseudo_header_sum(src, dst, PROTO_TCP, len(data))):
        return "tcp.bad_checksum"
    if sport == 0 or dport == 0:
        return "tcp.port_zero"
    seg = Segment(sport, dport, seq, ack, flags, wnd, data[hlen:])
    if hlen > HEADER_LEN and not _options(data[HEADER_LEN:hlen], seg):
        return "tcp.bad_option"
    return seg


def _options(opts: memoryview, seg: Segment) -> bool:
    i, n = 0, len(opts)
    while i < n:
        kind = opts[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            return False
        length = opts[i + 1]
        if length < 2 or i + length > n:
            return False
        body = opts[i + 2:i + length]
        if kind == OPT_MSS and length == 4:
            seg.mss = int.from_bytes(body, "big")
        elif kind == OPT_WSCALE and length == 3:
            seg.wscale = min(body[0], MAX_WSCALE)  # RFC 7323 §2.3: larger is taken as 14
        elif kind == OPT_SACK_OK and length == 2:
            seg.sack_ok = True
        elif kind == OPT_TS and length == 10:
            seg.ts = (int.from_bytes(body[:4], "big"), int.from_bytes(body[4:], "big"))
        elif kind == OPT_SACK and (length - 2) % 8 == 0:
            seg.sack = [
                (int.from_bytes(body[j:j + 4], "big"), int.from_bytes(body[j + 4:j + 8], "big"))
                for j in range(0, length - 2, 8)
            ]
        i += length
    return True


def build_options(
    mss: int | None = None, wscale: int | None = None, sack_ok: bool = False,
    ts: tuple[int, int] | None = None, sack: list[tuple[int, int]] | None = None,
) -> bytes:
    """Options padded to a multiple of 4 with NOPs, in the order Linux sends them."""
    out = bytearray()
    if mss is not None:
        out += struct.pack("!BBH", OPT_MSS, 4, mss)
    if sack_ok and ts is not None:
        out += struct.pack("!BBBBII", OPT_SACK_OK, 2, OPT_TS, 10, ts[0], ts[1])
    else:
        if ts is not None:
            out += struct.pack("!BBBBII", OPT_NOP, OPT_NOP, OPT_TS, 10, ts[0], ts[1])
        if sack_ok:
            out += struct.pack("!BBBB", OPT_NOP, OPT_NOP, OPT_SACK_OK, 2)
    if wscale is not None:
        out += struct.pack("!BBBB", OPT_NOP, OPT_WSCALE, 3, wscale)
    if sack:  # one pack for all blocks: every out-of-order segment's ACK carries them
        n = len(sack)
        packer = _SACK_PACK[n] if n < len(_SACK_PACK) else struct.Struct(f"!BBBB{2 * n}I")
        out += packer.pack(OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * n,
                           *[x for block in sack for x in block])
    while len(out) % 4:
        out.append(OPT_NOP)
    return bytes(out)


def header(
    src: int, dst: int, sport: int, dport: int, seq: int, ack: int, flags: int, wnd: int,
    options: bytes, payload: checksum.Buffer, partial: bool = False,
) -> bytes:
    """The TCP header (options included) with its checksum over ``payload``; ``partial``:
    the pseudo-header's sum only, for a device that completes it (``Offloads``)."""
    hlen = HEADER_LEN + len(options)
    hdr = _HDR.pack(sport, dport, seq, ack, (hlen // 4) << 4, flags, wnd, 0, 0) + options
    pseudo = checksum.pseudo_header_sum(src, dst, PROTO_TCP, hlen + len(payload))
    if partial:  # folded, not complemented: where the device's sum starts
        return hdr[:16] + struct.pack("!H", checksum.ones_sum(b"", pseudo)) + hdr[18:]
    c = checksum.checksum(payload, checksum.ones_sum(hdr, pseudo))  # hdr is 4-byte aligned
    return hdr[:16] + struct.pack("!H", c) + hdr[18:]

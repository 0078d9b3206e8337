"""Frames of an offloading device, and what a wire would carry instead.

A device that offloads (``Offloads``) passes frames no wire would carry: TCP
segments longer than the MTU, and TCP/UDP checksums left partial. Two facts make
such a frame self-describing, so no side channel travels with it:

- A partial checksum field holds the folded sum of the RFC 768 / RFC 9293 §3.1
  pseudo-header (not complemented), as Linux and virtio-net leave it (virtio 1.2
  §5.1.6.2). A full checksum that happens to equal that value is made right by
  completing it again, so treating it as partial is never wrong.
- A TCP frame longer than the MTU is cut into segments that fill the MTU, each
  with the first one's headers (RFC 9293 §3.7.1: options come out of the segment).

``wire_frames`` turns one such frame into the frames a wire would carry: the
capture wrapper records those, so a capture file still shows a wire.
"""

from __future__ import annotations

import struct

from hilkit.port.checksum import Buffer, checksum, ones_sum, pseudo_header_sum

__all__ = [
    "csum_field_offset",
    "l4_checksum_ok",
    "partial_checksum_at",
    "pseudo_fold",
    "wire_frames",
]

PROTO_TCP, PROTO_UDP = 6, 17
TCP_CSUM_OFFSET, UDP_CSUM_OFFSET = 16, 6  # RFC 9293 §3.1, RFC 768
_TCP_FIN, _TCP_PSH, _TCP_CWR = 0x01, 0x08, 0x80
_MIN_IP, _MIN_TCP = 20, 20


def pseudo_fold(src: int, dst: int, proto: int, length: int) -> int:
    """The pseudo-header sum, folded to 16 bits: what a partial checksum field holds."""
    return ones_sum(b"", pseudo_header_sum(src, dst, proto, length))


def csum_field_offset(proto: int) -> int | None:
    """Where the checksum sits in a ``proto`` header, or None (not TCP or UDP)."""
    return TCP_CSUM_OFFSET if proto == PROTO_TCP else UDP_CSUM_OFFSET if proto == PROTO_UDP \
        else None


def partial_checksum_at(frame: Buffer, l3: int) -> tuple[int, int] | None:
    """``(csum_start, csum_offset)`` when the frame's IPv4 TCP/UDP checksum is partial.

    ``l3`` is where the IPv4 header starts (14 behind Ethernet, 0 on a raw-IP link).
    None for anything else, including a frame too short to say.
    """
    if len(frame) < l3 + _MIN_IP or frame[l3] >> 4 != 4:
        return None
    ihl = (frame[l3] & 0x0F) * 4
    proto = frame[l3 + 9]
    off = csum_field_offset(proto)
    start = l3 + ihl
    if off is None or ihl < _MIN_IP or len(frame) < start + off + 2:
        return None
    total = int.from_bytes(frame[l3 + 2:l3 + 4], "big")
    l4len = min(total, len(frame) - l3) - ihl
    src = int.from_bytes(frame[l3 + 12:l3 + 16], "big")
    dst = int.from_bytes(frame[l3 + 16:l3 + 20], "big")
    field = int.from_bytes(frame[start + off:start + off + 2], "big")
    return (start, off) if field == pseudo_fold(src, dst, proto, l4len) else None


def l4_checksum_ok(frame: Buffer, l3: int) -> bool:
    """False only for an unfragmented IPv4 TCP/UDP packet whose checksum is wrong: what a
    device that vouches for checksums (``Offloads.rx_checksum``) checks itself of a
    frame it cannot vouch for otherwise. Anything else (a fragment, another protocol,
    a header too broken to say) is left to the stack's own checks."""
    if len(frame) < l3 + _MIN_IP or frame[l3] >> 4 != 4:
        return True
    ihl = (frame[l3] & 0x0F) * 4
    proto = frame[l3 + 9]
    total = int.from_bytes(frame[l3 + 2:l3 + 4], "big")
    off = csum_field_offset(proto)
    if off is None or ihl < _MIN_IP or total < ihl + off + 2 or total > len(frame) - l3 \
            or int.from_bytes(frame[l3 + 6:l3 + 8], "big") & 0x3FFF:  # MF or an offset
        return True
    start = l3 + ihl
    if proto == PROTO_UDP and frame[start + 6] == frame[start + 7] == 0:
        return True  # RFC 768: no checksum was computed
    src = int.from_bytes(frame[l3 + 12:l3 + 16], "big")
    dst = int.from_bytes(frame[l3 + 16:l3 + 20], "big")
    seg = memoryview(frame)[start:l3 + total]
    return ones_sum(seg, pseudo_header_sum(src, dst, proto, len(seg))) == 0xFFFF


def wire_frames(frame: bytes, l3: int, mtu: int) -> list[bytes]:
    """The frames a wire of ``mtu`` would carry for ``frame``: cut to the MTU if it is
    a longer TCP segment, with every partial checksum completed; anything else as is.

    ``l3`` is where the IPv4 header starts, or -1 when the frame is not IPv4.
    """
    if l3 < 0 or len(frame) < l3 + _MIN_IP or frame[l3] >> 4 != 4:
        return [frame]
    ihl = (frame[l3] & 0x0F) * 4
    proto = frame[l3 + 9]
    total = int.from_bytes(frame[l3 + 2:l3 + 4], "big")
    if ihl < _MIN_IP or total < ihl or total > len(frame) - l3:
        return [frame]
    if proto == PROTO_TCP and total > mtu:
        return _segments(frame, l3, ihl, total, mtu)
    where = partial_checksum_at(frame, l3)
    if where is None:
        return [frame]
    start, off = where
    out = bytearray(frame[:l3 + total])
    _complete(out, l3, start, off, proto)
    return [bytes(out) + frame[l3 + total:]]


def _complete(buf: bytearray, l3: int, start: int, off: int, proto: int) -> None:
    """Replace the partial checksum at ``start + off`` in ``buf`` with the full one."""
    src = int.from_bytes(buf[l3 + 12:l3 + 16], "big")
    dst = int.from_bytes(buf[l3 + 16:l3 + 20], "big")
    length = len(buf) - start
    buf[start + off:start + off + 2] = b"\0\0"
    c = checksum(memoryview(buf)[start:], pseudo_header_sum(src, dst, proto, length))
    if proto == PROTO_UDP and c == 0:
        c = 0xFFFF  # RFC 768: a computed zero goes out as all ones
    struct.pack_into("!H", buf, start + off, c)


def _segments(frame: bytes, l3: int, ihl: int, total: int, mtu: int) -> list[bytes]:
    """Cut a long TCP segment; each piece's checksums come from sums of the parts that
    stay the same plus the few fields that change (RFC 1071 §2(4), RFC 1624)."""
    start = l3 + ihl
    if total < ihl + _MIN_TCP:
        return [frame]
    thl = (frame[start + 12] >> 4) * 4
    step = mtu - ihl - thl
    if thl < _MIN_TCP or total < ihl + thl or step <= 0:
        return [frame]
    head = bytearray(frame[:start + thl])  # the template each piece's headers come from
    seq, = struct.unpack_from("!I", frame, start + 4)
    ident, = struct.unpack_from("!H", frame, l3 + 4)
    src, dst = struct.unpack_from("!II", frame, l3 + 12)
    flags, off = frame[start + 13], frame[start + 12]
    # what the sums hold whatever the piece: the IP header without length, ID and
    # checksum; the TCP header without sequence number, flags and checksum, plus the
    # pseudo-header without the length
    struct.pack_into("!HH", head, l3 + 2, 0, 0)
    head[l3 + 10] = head[l3 + 11] = 0
    ip_base = ones_sum(memoryview(head)[l3:start])
    struct.pack_into("!I", head, start + 4, 0)
    head[start + 12] = head[start + 13] = head[start + 16] = head[start + 17] = 0
    tcp_base = ones_sum(memoryview(head)[start:], pseudo_header_sum(src, dst, PROTO_TCP, 0))
    head[start + 12] = off
    data, end = memoryview(frame), l3 + total
    out: list[bytes] = []
    for i, pos in enumerate(range(start + thl, end, step)):
        chunk = data[pos:pos + step] if pos + step < end else data[pos:end]
        n = len(chunk)
        f = flags
        if pos + step < end:
            f &= ~(_TCP_FIN | _TCP_PSH)  # they belong to the end of the data
        if i:
            f &= ~_TCP_CWR  # RFC 3168 §6.1.2: CWR on the first segment only
        length = ihl + thl + n
        pid = (ident + i) & 0xFFFF  # as Linux's TSO counts; the caller numbers on past these
        s = (seq + pos - start - thl) & 0xFFFFFFFF
        ip_sum = ip_base + length + pid
        ip_sum = (ip_sum & 0xFFFF) + (ip_sum >> 16)
        _IP_LEN_ID.pack_into(head, l3 + 2, length, pid)
        _U16.pack_into(head, l3 + 10, ~((ip_sum & 0xFFFF) + (ip_sum >> 16)) & 0xFFFF)
        _U32.pack_into(head, start + 4, s)
        head[start + 13] = f
        c = checksum(chunk, tcp_base + (s >> 16) + (s & 0xFFFF) + (off << 8 | f) + thl + n)
        _U16.pack_into(head, start + 16, c)
        out.append(b"".join((head, chunk)))
    return out


_IP_LEN_ID = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

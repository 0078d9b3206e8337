"""Van Jacobson TCP/IP header compression (RFC 1144), both directions, sans-I/O.

A TCP/IP header of 40 octets shrinks to 3-16 by sending, per connection
"slot", only what changed since that connection's previous packet. IPCP
negotiates it (RFC 1332 §3.2: IP-Compression-Protocol 0x002D with Max-Slot-Id
and Comp-Slot-Id); PPP then carries three kinds of IPv4 packet:

- ``PPP_IP`` (0x0021): the packet as is (not TCP, a fragment, SYN/FIN/RST...);
- ``PPP_VJUC`` (0x002F): the whole packet with the IP protocol octet replaced
  by the slot number; it (re)sets that slot's state on both sides;
- ``PPP_VJC`` (0x002D): the compressed header then the TCP data.

The compressor and the decompressor keep the same saved header per slot, so a
lost frame desynchronises them; RFC 1144 §4 recovers: the framing layer calls
``VjDecompressor.frame_error()``, compressed packets are tossed until one
names its slot explicitly or an uncompressed one arrives, and TCP's own
retransmission (never compressible: its sequence number goes backwards)
brings one. Every state table is a fixed number of slots; bad input is
counted and dropped, never raised.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from typing import Final

from hilkit.drivers.ppp.proto import PPP_IP, PPP_VJC, PPP_VJUC
from hilkit.port.checksum import checksum as inet_checksum
from hilkit.port.checksum import pseudo_header_sum, verify

__all__ = [
    "COMPRESSOR_STATS",
    "DECOMPRESSOR_STATS",
    "MAX_STATES",
    "VjCompressor",
    "VjDecompressor",
]

Buffer = bytes | bytearray | memoryview

# RFC 1144 §3.2.2 / Appendix A.1: the change mask, first octet of a compressed header
NEW_C: Final = 0x40  # C: connection (slot) number present
NEW_I: Final = 0x20  # I: IP ID delta present (otherwise the ID grew by 1)
TCP_PUSH_BIT: Final = 0x10  # P: the TCP PSH flag
NEW_S: Final = 0x08  # S: sequence number delta present
NEW_A: Final = 0x04  # A: acknowledgment delta present
NEW_W: Final = 0x02  # W: window delta present
NEW_U: Final = 0x01  # U: urgent pointer present (URG set)
# RFC 1144 §3.2.2 / Appendix A.1: combinations that cannot occur in practice reused
# for the two commonest cases, with no delta octets at all
SPECIAL_I: Final = NEW_S | NEW_W | NEW_U  # echoed interactive: seq and ack grow by last data
SPECIAL_D: Final = NEW_S | NEW_A | NEW_W | NEW_U  # unidirectional data: seq grows by it
SPECIALS_MASK: Final = NEW_S | NEW_A | NEW_W | NEW_U

MAX_STATES: Final = 16  # RFC 1144 Appendix A.1: default number of slots
MAX_HDR: Final = 128  # RFC 1144 Appendix A.1: longest IP + TCP header kept per slot

# RFC 9293 §3.1: TCP flags
_FIN = 0x01
_SYN = 0x02
_RST = 0x04
_PSH = 0x08
_ACK = 0x10
_URG = 0x20
_PROTO_TCP = 6  # RFC 790
_IP_FRAGMENT = 0x3FFF  # RFC 791 §3.1: MF flag + fragment offset

_TCP = struct.Struct("!HHIIBBHHH")  # ports, seq, ack, offset, flags, window, checksum, urgent
_SEQ_ACK_FLAGS_WIN = struct.Struct("!IIBBH")  # seq, ack, data offset, flags, window
_U16 = struct.Struct("!H")

COMPRESSOR_STATS: Final = (
    "packets",  # packets offered
    "ip",  # sent as plain IPv4 (not compressible)
    "uncompressed",  # sent as uncompressed TCP (sets a slot)
    "compressed",  # sent compressed
    "misses",  # connections that took a slot (new or evicted, least recently used first)
    "header_bytes_saved",
)

DECOMPRESSOR_STATS: Final = (
    "uncompressed_in",  # uncompressed TCP packets accepted
    "compressed_in",  # compressed packets rebuilt
    "tossed",  # compressed packets discarded while resynchronising (RFC 1144 §4)
    "frame_errors",  # lost or garbled frames reported by the framing layer
    "errors",  # packets refused, one of the reasons below
    "short",  # ends before its headers or deltas do
    "bad_header",  # not IPv4/TCP, or header lengths out of range
    "bad_slot",  # slot number beyond the negotiated ones
    "no_state",  # compressed packet for a slot no uncompressed packet set
    "too_long",  # rebuilt packet longer than an IPv4 datagram can be
    "bad_tcp_checksum",  # rebuilt against stale state: a whole frame vanished unseen
)


def _delta(value: int) -> bytes:
    """RFC 1144 §3.2.2: 1-255 in one octet, 0 or 256-65535 as 0 then two octets."""
    if 0 < value < 256:
        return bytes((value,))
    return b"\x00" + _U16.pack(value)


def _tcp_checksum_ok(packet: bytes, ihl: int) -> bool:
    """RFC 9293 §3.1: the TCP checksum over the pseudo-header and the segment."""
    segment = memoryview(packet)[ihl:]
    src, dst = int.from_bytes(packet[12:16], "big"), int.from_bytes(packet[16:20], "big")
    return verify(segment, pseudo_header_sum(src, dst, _PROTO_TCP, len(segment)))


class VjCompressor:
    """IPv4 packets out -> (PPP protocol, payload) per RFC 1144 §3.2.

    ``slots`` is the peer's Max-Slot-Id + 1 and ``compress_slot_id`` its
    Comp-Slot-Id (RFC 1332 §3.2): whether the slot number may be left out when
    it is the same as in the previous packet sent.
    """

    def __init__(self, slots: int = MAX_STATES, compress_slot_id: bool = True) -> None:
        if not 1 <= slots <= 256:
            raise ValueError(f"VJ slots must be 1..256 (Max-Slot-Id + 1), not {slots}")
        self.slots = slots
        self.compress_slot_id = compress_slot_id
        self._conns: OrderedDict[bytes, int] = OrderedDict()  # least recently used first
        self._saved: list[bytes] = [b""] * slots  # last header sent per slot
        self._last_xmit = -1
        self.stats: dict[str, int] = dict.fromkeys(COMPRESSOR_STATS, 0)

    def compress(self, ip_packet: Buffer) -> tuple[int, bytes]:
        """The PPP protocol to send ``ip_packet`` under, and the payload."""
        pkt = bytes(ip_packet)
        stats = self.stats
        stats["packets"] += 1
        n = len(pkt)
        # RFC 1144 §3.2.3: only whole IPv4 TCP segments with ACK and no SYN/FIN/RST
        if n < 40 or pkt[0] >> 4 != 4 or pkt[9] != _PROTO_TCP:
            return self._plain(pkt)
        ihl = (pkt[0] & 0x0F) * 4
        if ihl < 20 or _U16.unpack_from(pkt, 6)[0] & _IP_FRAGMENT or n < ihl + 20:
            return self._plain(pkt)
        thl = (pkt[ihl + 12] >> 4) * 4
        hlen = ihl + thl
        flags = pkt[ihl + 13]
        if (
            thl < 20 or hlen > n or hlen > MAX_HDR
            or flags & (_SYN | _FIN | _RST | _ACK) != _ACK
            or _U16.unpack_from(pkt, 2)[0] != n  # padded or truncated: length is implicit
        ):
            return self._plain(pkt)

        key = pkt[12:20] + pkt[ihl:ihl + 4]  # addresses and ports
        slot = self._conns.get(key)
        if slot is None:
            stats["misses"] += 1
            if len(self._conns) < self.slots:
                slot = len(self._conns)
            else:
                _, slot = self._conns.popitem(last=False)
            self._conns[key] = slot
            return self._uncompressed(pkt, slot, hlen)
        self._conns.move_to_end(key)

        old = self._saved[slot]
        # Fields the compressed header cannot carry must not have changed: version,
        # IHL, TOS; fragment word, TTL, protocol; IP options; data offset; flags
        # other than PSH and URG; TCP options (RFC 1144 §3.2.3).
        if (
            old[0:2] != pkt[0:2] or old[6:10] != pkt[6:10] or len(old) != hlen
            or old[20:ihl] != pkt[20:ihl] or old[ihl + 12] != pkt[ihl + 12]
            or (old[ihl + 13] ^ flags) & ~(_PSH | _URG)
            or old[ihl + 20:hlen] != pkt[ihl + 20:hlen]
        ):
            return self._uncompressed(pkt, slot, hlen)

        _, _, seq, ack, _, _, win, _, urp = _TCP.unpack_from(pkt, ihl)
        _, _, o_seq, o_ack, _, _, o_win, _, o_urp = _TCP.unpack_from(old, ihl)
        changes = 0
        fields = b""
        if flags & _URG:
            fields += _delta(urp)
            changes |= NEW_U
        elif urp != o_urp:  # an urgent pointer without URG cannot be encoded
            return self._uncompressed(pkt, slot, hlen)
        d_win = (win - o_win) & 0xFFFF
        if d_win:
            fields += _delta(d_win)
            changes |= NEW_W
        d_ack = (ack - o_ack) & 0xFFFFFFFF
        if d_ack:
            if d_ack > 0xFFFF:  # backwards or a big jump
                return self._uncompressed(pkt, slot, hlen)
            fields += _delta(d_ack)
            changes |= NEW_A
        d_seq = (seq - o_seq) & 0xFFFFFFFF
        if d_seq:
            if d_seq > 0xFFFF:  # a retransmission goes backwards: resynchronises the peer
                return self._uncompressed(pkt, slot, hlen)
            fields += _delta(d_seq)
            changes |= NEW_S

        old_len = _U16.unpack_from(old, 2)[0]
        old_data = old_len - hlen
        if changes == 0:
            # Nothing moved: only the first data after a pure ACK is new; anything
            # else is a duplicate ACK or a retransmitted probe, sent whole in case
            # the peer lost the previous one.
            if not (n != old_len and old_data == 0):
                return self._uncompressed(pkt, slot, hlen)
        elif changes in (SPECIAL_I, SPECIAL_D):  # would read as a special case
            return self._uncompressed(pkt, slot, hlen)
        elif changes == NEW_S | NEW_A and d_seq == d_ack == old_data:
            changes = SPECIAL_I
            fields = b""
        elif changes == NEW_S and d_seq == old_data:
            changes = SPECIAL_D
            fields = b""

        d_id = (_U16.unpack_from(pkt, 4)[0] - _U16.unpack_from(old, 4)[0]) & 0xFFFF
        if d_id != 1:
            fields += _delta(d_id)
            changes |= NEW_I
        if flags & _PSH:
            changes |= TCP_PUSH_BIT

        self._saved[slot] = pkt[:hlen]
        if self.compress_slot_id and self._last_xmit == slot:
            head = bytes((changes,))
        else:
            self._last_xmit = slot
            head = bytes((changes | NEW_C, slot))
        header = head + pkt[ihl + 16:ihl + 18] + fields  # the TCP checksum, verbatim
        stats["compressed"] += 1
        stats["header_bytes_saved"] += hlen - len(header)
        return PPP_VJC, header + pkt[hlen:]

    def _plain(self, pkt: bytes) -> tuple[int, bytes]:
        self.stats["ip"] += 1
        return PPP_IP, pkt

    def _uncompressed(self, pkt: bytes, slot: int, hlen: int) -> tuple[int, bytes]:
        self._saved[slot] = pkt[:hlen]
        self._last_xmit = slot
        self.stats["uncompressed"] += 1
        return PPP_VJUC, pkt[:9] + bytes((slot,)) + pkt[10:]


class VjDecompressor:
    """Received 0x002F/0x002D payloads -> IPv4 packets, per RFC 1144 §3.2.4 and §4.

    ``slots`` is our Max-Slot-Id + 1 as offered in IPCP. Each method returns
    the rebuilt IPv4 packet, or None when the input was refused (counted in
    ``stats``, keys ``DECOMPRESSOR_STATS``).
    """

    def __init__(self, slots: int = MAX_STATES) -> None:
        if not 1 <= slots <= 256:
            raise ValueError(f"VJ slots must be 1..256 (Max-Slot-Id + 1), not {slots}")
        self.slots = slots
        self._saved: list[bytearray | None] = [None] * slots  # last header rebuilt per slot
        self._last_recv = -1
        self._toss = False
        self.stats: dict[str, int] = dict.fromkeys(DECOMPRESSOR_STATS, 0)

    @property
    def tossing(self) -> bool:
        """True while compressed packets without a slot number are being discarded."""
        return self._toss

    def toss(self) -> None:
        """Discard compressed packets until one names its slot or an uncompressed one comes."""
        self._toss = True

    def frame_error(self) -> None:
        """The framing layer lost or refused a frame (bad FCS, abort, too long): RFC 1144 §4."""
        self.stats["frame_errors"] += 1
        self._toss = True

    def uncompressed(self, packet: Buffer) -> bytes | None:
        """A 0x002F payload: remember its header in the slot it names; the IPv4 packet."""
        pkt = bytearray(packet)
        n = len(pkt)
        if n < 40:
            self._error("short")
            return None
        ihl = (pkt[0] & 0x0F) * 4
        if pkt[0] >> 4 != 4 or ihl < 20 or n < ihl + 20:
            self._error("bad_header")
            return None
        hlen = ihl + (pkt[ihl + 12] >> 4) * 4
        if hlen < ihl + 20 or hlen > n or hlen > MAX_HDR:
            self._error("bad_header")
            return None
        slot = pkt[9]
        if slot >= self.slots:
            self._error("bad_slot")
            return None
        pkt[9] = _PROTO_TCP
        self._saved[slot] = pkt[:hlen]
        self._last_recv = slot
        self._toss = False
        self.stats["uncompressed_in"] += 1
        return bytes(pkt)

    def compressed(self, packet: Buffer) -> bytes | None:
        """A 0x002D payload: the IPv4 packet rebuilt from the slot's saved header."""
        pkt = bytes(packet)
        n = len(pkt)
        if n < 3:
            self._error("short")
            return None
        changes = pkt[0]
        pos = 1
        if changes & NEW_C:
            slot = pkt[1]
            pos = 2
            if slot >= self.slots:
                self._error("bad_slot")
                return None
            self._toss = False
            self._last_recv = slot
        elif self._toss:
            self.stats["tossed"] += 1
            return None
        else:
            slot = self._last_recv
        hdr = self._saved[slot] if slot >= 0 else None
        if hdr is None:
            self._error("no_state")
            return None
        if changes & 0x80:  # not defined by RFC 1144
            self._error("bad_header")
            return None
        if n < pos + 2:
            self._error("short")
            return None
        checksum = pkt[pos:pos + 2]
        pos += 2

        ihl = (hdr[0] & 0x0F) * 4
        hlen = len(hdr)
        old_data = _U16.unpack_from(hdr, 2)[0] - hlen
        seq, ack, offset, flags, win = _SEQ_ACK_FLAGS_WIN.unpack_from(hdr, ihl + 4)
        urp = _U16.unpack_from(hdr, ihl + 18)[0]
        ident = _U16.unpack_from(hdr, 4)[0]
        flags = flags | _PSH if changes & TCP_PUSH_BIT else flags & ~_PSH
        try:
            special = changes & SPECIALS_MASK
            if special == SPECIAL_I:
                ack += old_data
                seq += old_data
                flags &= ~_URG
            elif special == SPECIAL_D:
                seq += old_data
                flags &= ~_URG
            else:
                if changes & NEW_U:
                    urp, pos = self._read(pkt, pos)
                    flags |= _URG
                else:
                    flags &= ~_URG
                if changes & NEW_W:
                    d, pos = self._read(pkt, pos)
                    win += d
                if changes & NEW_A:
                    d, pos = self._read(pkt, pos)
                    ack += d
                if changes & NEW_S:
                    d, pos = self._read(pkt, pos)
                    seq += d
            if changes & NEW_I:
                d, pos = self._read(pkt, pos)
                ident += d
            else:
                ident += 1
        except IndexError:
            self._error("short")
            return None
        total = hlen + n - pos
        if total > 0xFFFF:
            self._error("too_long")
            return None

        _U16.pack_into(hdr, 2, total)
        _U16.pack_into(hdr, 4, ident & 0xFFFF)
        hdr[10:12] = b"\x00\x00"
        _U16.pack_into(hdr, 10, inet_checksum(memoryview(hdr)[:ihl]))
        _SEQ_ACK_FLAGS_WIN.pack_into(
            hdr, ihl + 4, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, offset, flags, win & 0xFFFF
        )
        hdr[ihl + 16:ihl + 18] = checksum
        _U16.pack_into(hdr, ihl + 18, urp)
        rebuilt = bytes(hdr) + pkt[pos:]
        if not _tcp_checksum_ok(rebuilt, ihl):
            # A frame lost whole (a line down between two flags) leaves no FCS error to
            # report: the deltas then apply to stale state, and the carried TCP checksum is
            # what shows it (RFC 1144 §4.1). Toss until resynchronised, as for a frame error.
            self._error("bad_tcp_checksum")
            return None
        self.stats["compressed_in"] += 1
        return rebuilt

    @staticmethod
    def _read(pkt: bytes, pos: int) -> tuple[int, int]:
        """One delta (RFC 1144 §3.2.2) at ``pos``; IndexError past the end."""
        v = pkt[pos]
        if v:
            return v, pos + 1
        if pos + 3 > len(pkt):
            raise IndexError(pos)
        return _U16.unpack_from(pkt, pos + 1)[0], pos + 3

    def _error(self, reason: str) -> None:
        """RFC 1144 §4: a refused packet also desynchronises: toss until resynchronised."""
        self.stats["errors"] += 1
        self.stats[reason] += 1
        self._toss = True

"""Asynchronous HDLC-like framing for PPP (RFC 1662 §3-§4, §7), sans-I/O.

``FrameEncoder.encode`` turns a (protocol, information) pair into the bytes
to write to the serial line; ``FrameDecoder.feed`` turns whatever the line
delivered, in chunks of any size, into the complete frames it contains. No
I/O, no clock: the PPP device feeds them.

This is the hot path of a 115200 baud to 4 Mbaud line run from Python, so no
step loops over the bytes of a frame in Python:

- the FCS runs in C: FCS-16 is the bit-reflected form of the CRC that
  ``binascii.crc_hqx`` computes, so it is that CRC over bit-reversed octets
  (one ``bytes.translate``), bit-reversed back; FCS-32 is ``zlib.crc32``
  without its final complement. The RFC 1662 §C table-driven step,
  ``fcs_by_table``, is kept as the reference the tests hold them to;
- transmit escaping is one ``bytes.replace`` per character actually present
  that needs an escape (found with one ``bytes.translate``), and none at all
  when the frame has none;
- receive splits on the flag with ``bytes.split``, drops line-inserted
  control characters with ``bytes.translate`` and undoes escapes with one
  ``re.split``, skipping each step when the octets it deals with are absent.
"""

from __future__ import annotations

import binascii
import re
import zlib
from functools import lru_cache
from typing import Final

from hilkit.drivers.ppp.proto import PPP_LCP

__all__ = [
    "ADDRESS",
    "CONTROL",
    "DECODER_STATS",
    "DEFAULT_ACCM",
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MRU",
    "ESCAPE",
    "FCS16_GOOD",
    "FCS16_INIT",
    "FCS16_TABLE",
    "FCS32_GOOD",
    "FCS32_INIT",
    "FCS32_TABLE",
    "FLAG",
    "FrameDecoder",
    "FrameEncoder",
    "fcs16",
    "fcs32",
    "fcs_by_table",
]

Buffer = bytes | bytearray | memoryview

# RFC 1662 §3.1 / §4.2: framing octets
FLAG: Final = 0x7E  # Flag Sequence
ESCAPE: Final = 0x7D  # Control Escape
ESCAPE_XOR: Final = 0x20  # the escaped octet is sent XOR 0x20 (§4.2)
ADDRESS: Final = 0xFF  # All-Stations address (§3.1)
CONTROL: Final = 0x03  # Unnumbered Information, P/F bit zero (§3.1)

# RFC 1662 §7.1: Async-Control-Character-Map, bit n <-> octet n (0x00-0x1F)
DEFAULT_ACCM: Final = 0xFFFFFFFF

# RFC 1661 §6.1: Maximum-Receive-Unit default
DEFAULT_MRU: Final = 1500
DEFAULT_MAX_FRAME: Final = DEFAULT_MRU + 8
"""Longest frame (between flags, unescaped) accepted by default: address and
control (2) + protocol (2) + MRU + FCS-32 (4)."""

# RFC 1662 §C.2: 16-bit FCS, x**16 + x**12 + x**5 + 1 processed low bit first
FCS16_POLY: Final = 0x8408
FCS16_INIT: Final = 0xFFFF
FCS16_GOOD: Final = 0xF0B8  # residue over a frame that includes its FCS
# RFC 1662 §C.3: 32-bit FCS, the Ethernet CRC processed low bit first
FCS32_POLY: Final = 0xEDB88320
FCS32_INIT: Final = 0xFFFFFFFF
FCS32_GOOD: Final = 0xDEBB20E3


def _fcs_table(poly: int) -> tuple[int, ...]:
    table = []
    for octet in range(256):
        v = octet
        for _ in range(8):
            v = (v >> 1) ^ poly if v & 1 else v >> 1
        table.append(v)
    return tuple(table)


FCS16_TABLE: Final = _fcs_table(FCS16_POLY)
FCS32_TABLE: Final = _fcs_table(FCS32_POLY)

_REVERSE = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))  # octet bit reversal


def _reverse16(v: int) -> int:
    return (_REVERSE[v & 0xFF] << 8) | _REVERSE[v >> 8]


def fcs_by_table(table: tuple[int, ...], data: Buffer, fcs: int) -> int:
    """The RFC 1662 §C.1-§C.3 table-driven FCS, one octet at a time (reference, slow)."""
    for octet in bytes(data):
        fcs = (fcs >> 8) ^ table[(fcs ^ octet) & 0xFF]
    return fcs


def fcs16(data: Buffer, fcs: int = FCS16_INIT) -> int:
    """FCS-16 register after ``data`` (RFC 1662 §C.2), computed in C.

    Not complemented: transmit ``fcs16(frame) ^ 0xFFFF`` low octet first; a
    received frame with its FCS is good when this returns ``FCS16_GOOD``.
    """
    if isinstance(data, memoryview):
        data = data.tobytes()
    return _reverse16(binascii.crc_hqx(data.translate(_REVERSE), _reverse16(fcs)))


def fcs32(data: Buffer, fcs: int = FCS32_INIT) -> int:
    """FCS-32 register after ``data`` (RFC 1662 §C.3), computed in C; as ``fcs16``."""
    return zlib.crc32(data, fcs ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


# Escape forms, indexed by octet: the octet alone and ``7D, octet ^ 0x20``.
_ONE = [bytes((c,)) for c in range(256)]
_ESCAPED = [bytes((ESCAPE, c ^ ESCAPE_XOR)) for c in range(256)]
_FLAG_B: Final = _ONE[FLAG]
_ESCAPE_B: Final = _ONE[ESCAPE]
_ADDR_CTRL: Final = bytes((ADDRESS, CONTROL))


@lru_cache(maxsize=64)
def _unescaped_octets(accm: int) -> bytes:
    """``translate`` delete table: every octet that is sent as is under ``accm``."""
    escaped = {FLAG, ESCAPE} | {c for c in range(32) if accm >> c & 1}
    return bytes(c for c in range(256) if c not in escaped)


class FrameEncoder:
    """(protocol, information) -> the octets of one frame on the line (RFC 1662 §3-§4).

    ``tx_accm`` is the peer's receive ACCM (what it asked us to escape),
    ``acfc``/``pfc`` whether the peer allowed address/control and protocol
    field compression, ``fcs32`` the FCS in use; all settable at any time,
    typically when LCP opens. LCP frames ignore all three compressions and
    the negotiated map: they always go out with address and control, a
    two-octet protocol and the default ACCM (RFC 1661 §5, §6.5, §6.6; RFC
    1662 §7.1), so a renegotiation works whatever the peer currently believes.

    Flags: every frame opens and closes with a flag. With ``share_flags`` the
    closing flag of one frame also opens the next (RFC 1662 §3.1 allows it),
    saving an octet per frame on a busy line. The encoder cannot see the
    line, so it assumes its frames are written back to back; call
    ``line_idle()`` when the line has been idle or other bytes went out, and
    the next frame opens with its own flag again (a fresh flag after idle
    time flushes any noise the receiver collected). Off by default: one octet
    per frame buys robustness on a noisy line.
    """

    def __init__(
        self, *, tx_accm: int = DEFAULT_ACCM, acfc: bool = False, pfc: bool = False,
        fcs32: bool = False, share_flags: bool = False,
    ) -> None:
        self.tx_accm = tx_accm
        self.acfc = acfc
        self.pfc = pfc
        self.fcs32 = fcs32
        self.share_flags = share_flags
        self._flag_last = False
        self.stats: dict[str, int] = {"frames": 0, "bytes_out": 0, "escaped": 0}

    @property
    def tx_accm(self) -> int:
        return self._tx_accm

    @tx_accm.setter
    def tx_accm(self, accm: int) -> None:
        self._tx_accm = accm & 0xFFFFFFFF
        self._plain = _unescaped_octets(self._tx_accm)

    def line_idle(self) -> None:
        """The line was idle or carried other bytes: the next frame opens with a flag."""
        self._flag_last = False

    def encode(self, protocol: int, info: Buffer) -> bytes:
        """The frame carrying ``info`` under ``protocol``, flags included."""
        if not 0 <= protocol <= 0xFFFF:
            raise ValueError(f"PPP protocol out of range: {protocol:#x}")
        if protocol == PPP_LCP:
            head = _ADDR_CTRL + protocol.to_bytes(2, "big")
            plain = _unescaped_octets(DEFAULT_ACCM)
        else:
            head = b"" if self.acfc else _ADDR_CTRL
            if self.pfc and protocol < 0x100:
                head += _ONE[protocol]
            else:
                head += protocol.to_bytes(2, "big")
            plain = self._plain
        if self.fcs32:
            fcs = (fcs32(info, fcs32(head)) ^ 0xFFFFFFFF).to_bytes(4, "little")
        else:
            fcs = (fcs16(info, fcs16(head)) ^ 0xFFFF).to_bytes(2, "little")
        raw = b"".join((head, info, fcs))
        special = raw.translate(None, plain)
        if special:
            self.stats["escaped"] += len(special)
            present = set(special)
            if ESCAPE in present:  # first: the later replacements insert escapes
                raw = raw.replace(_ESCAPE_B, _ESCAPED[ESCAPE])
                present.discard(ESCAPE)
            for c in present:
                raw = raw.replace(_ONE[c], _ESCAPED[c])
        if self.share_flags and self._flag_last:
            out = raw + _FLAG_B
        else:
            out = b"".join((_FLAG_B, raw, _FLAG_B))
        self._flag_last = True
        self.stats["frames"] += 1
        self.stats["bytes_out"] += len(out)
        return out


DECODER_STATS: Final = (
    "frames",  # good frames returned
    "bad_fcs",  # FCS check failed (RFC 1662 §4.3: silently discarded)
    "too_short",  # fewer octets than an FCS and a protocol need
    "too_long",  # longer than max_frame: discarded without being buffered
    "aborts",  # ended by 7D 7E (RFC 1662 §4.3)
    "bad_address_control",  # starts with 0xFF but not FF 03
    "bad_protocol",  # two-octet protocol whose last octet is even (RFC 1661 §2)
    "dropped_ctrl_bytes",  # control characters in rx_accm dropped (RFC 1662 §7.1)
    "bytes_in",  # octets fed
)

_UNESCAPE_RE = re.compile(rb"\x7d(.)", re.DOTALL)
_UNESCAPE = {_ONE[c]: _ONE[c ^ ESCAPE_XOR] for c in range(256)}


class FrameDecoder:
    """Line octets in, complete (protocol, information) frames out (RFC 1662 §3-§4, §7.1).

    ``rx_accm`` is our receive ACCM: control characters whose bit is set are
    dropped on arrival, before escapes are undone, because the peer escapes
    every such character, so a raw one was inserted by the line or a modem
    (RFC 1662 §7.1). Address/control and protocol compression are accepted
    whatever was negotiated: FF 03 is stripped when present, a first
    protocol octet with its low bit set is a one-octet protocol (RFC 1661
    §6.5, §6.6). ``fcs32`` selects the FCS to check.

    Memory is bounded by ``max_frame`` (unescaped octets between flags; set it
    from the negotiated MRU + 8): a frame that grows past it is dropped at
    once and the rest of it skipped up to the next flag, so the partial frame
    held between ``feed`` calls never exceeds ``max_frame`` octets whatever
    the peer sends. Every refusal is counted in ``stats`` (keys
    ``DECODER_STATS``); nothing is raised for any input.
    """

    def __init__(
        self, max_frame: int = DEFAULT_MAX_FRAME, *, rx_accm: int = DEFAULT_ACCM,
        fcs32: bool = False,
    ) -> None:
        self.max_frame = max_frame
        self.rx_accm = rx_accm
        self.fcs32 = fcs32
        self.stats: dict[str, int] = dict.fromkeys(DECODER_STATS, 0)
        self._buf = bytearray()  # unescaped octets of the frame in progress
        self._esc = False  # the last octet seen was an unpaired Control Escape
        self._skip = False  # the frame in progress is too long: skip to the next flag

    @property
    def rx_accm(self) -> int:
        return self._rx_accm

    @rx_accm.setter
    def rx_accm(self, accm: int) -> None:
        self._rx_accm = accm & 0xFFFFFFFF
        self._drop = bytes(c for c in range(32) if self._rx_accm >> c & 1)

    @property
    def buffered(self) -> int:
        """Octets of the frame in progress held until the next ``feed``."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget the frame in progress (the line was reopened)."""
        self._buf.clear()
        self._esc = False
        self._skip = False

    def feed(self, data: Buffer) -> list[tuple[int, bytes]]:
        """Take the next octets from the line; return the frames they completed."""
        if not data:
            return []
        if not isinstance(data, bytes):
            data = bytes(data)
        self.stats["bytes_in"] += len(data)
        frames: list[tuple[int, bytes]] = []
        pieces = data.split(_FLAG_B)
        tail = pieces.pop()  # after the last flag: the start of the next frame
        for piece in pieces:  # each of these is closed by a flag
            if self._buf or self._esc or self._skip:
                self._extend(piece)
                content: bytes | None = bytes(self._buf)
            else:
                content = self._unstuff(piece, self.max_frame)
            if self._esc:
                self.stats["aborts"] += 1
            elif content is None or self._skip:
                self.stats["too_long"] += 1
            elif content:  # back-to-back flags delimit nothing: ignored
                self._check(content, frames)
            self.reset()
        if tail:
            self._extend(tail)
        return frames

    def _extend(self, piece: bytes) -> None:
        if self._skip:
            return
        more = self._unstuff(piece, self.max_frame - len(self._buf))
        if more is None:
            self._skip = True
            self._buf.clear()
            self._esc = False
        else:
            self._buf += more

    def _unstuff(self, piece: bytes, room: int) -> bytes | None:
        """Drop line-inserted controls, undo escapes; None if more than ``room`` octets.

        An escape left open at the end of ``piece`` is remembered in ``_esc``
        and applied to the first octet of the next piece.
        """
        if self._drop:
            n = len(piece)
            piece = piece.translate(None, self._drop)
            self.stats["dropped_ctrl_bytes"] += n - len(piece)
        if not piece:
            return piece
        if len(piece) > 2 * room + 1:  # even fully escaped it cannot fit
            return None
        head = b""
        if self._esc:
            head = _ONE[piece[0] ^ ESCAPE_XOR]
            piece = piece[1:]
            self._esc = False
        if _ESCAPE_B in piece:
            if piece[-1] == ESCAPE and (len(piece) - len(piece.rstrip(_ESCAPE_B))) & 1:
                piece = piece[:-1]
                self._esc = True
            parts = _UNESCAPE_RE.split(piece)
            parts[1::2] = map(_UNESCAPE.__getitem__, parts[1::2])
            piece = b"".join(parts)
        if head:
            piece = head + piece
        return piece if len(piece) <= room else None

    def _check(self, frame: bytes, out: list[tuple[int, bytes]]) -> None:
        """Validate one unescaped frame; append (protocol, information) if good."""
        stats = self.stats
        n = len(frame)
        fcs_len = 4 if self.fcs32 else 2
        if n < fcs_len + 2:  # RFC 1662 §4.3: under 4 octets with FCS-16; 2 + FCS in general
            stats["too_short"] += 1
            return
        if (fcs32(frame) != FCS32_GOOD) if self.fcs32 else (fcs16(frame) != FCS16_GOOD):
            stats["bad_fcs"] += 1
            return
        end = n - fcs_len
        start = 0
        if frame[0] == ADDRESS:
            if frame[1] != CONTROL:
                stats["bad_address_control"] += 1
                return
            start = 2
        if start >= end:
            stats["too_short"] += 1
            return
        first = frame[start]
        if first & 1:  # one-octet (compressed) protocol
            protocol = first
            start += 1
        else:
            if end - start < 2:
                stats["too_short"] += 1
                return
            last = frame[start + 1]
            if not last & 1:
                stats["bad_protocol"] += 1
                return
            protocol = (first << 8) | last
            start += 2
        stats["frames"] += 1
        out.append((protocol, frame[start:end]))

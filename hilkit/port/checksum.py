"""The Internet checksum (RFC 1071) without a Python loop over 16-bit words.

Because 2**16 == 1 (mod 0xFFFF), a buffer read as one big-endian integer is
congruent mod 0xFFFF to the sum of its 16-bit words, so ``int.from_bytes``
plus one modulo computes the one's-complement sum in C.
"""

from __future__ import annotations

Buffer = bytes | bytearray | memoryview


def ones_sum(data: Buffer, initial: int = 0) -> int:
    """One's-complement sum of ``data`` (zero-padded to even length) plus ``initial``."""
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    total = n + initial
    if total == 0:
        return 0
    r = total % 0xFFFF
    return r if r else 0xFFFF  # a non-zero sum folds to "negative zero"


def checksum(data: Buffer, initial: int = 0) -> int:
    """The value to put in a checksum field (the field itself zero in ``data``)."""
    return ~ones_sum(data, initial) & 0xFFFF


def verify(data: Buffer, initial: int = 0) -> bool:
    """True if ``data``, checksum field included, sums to all ones."""
    return ones_sum(data, initial) == 0xFFFF


def pseudo_header_sum(src: int, dst: int, proto: int, length: int) -> int:
    """Sum of the IPv4 pseudo-header (RFC 768, RFC 9293 §3.1) as an ``initial`` value."""
    return (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + length

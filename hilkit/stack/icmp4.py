"""ICMPv4 (RFC 792, RFC 1122 §3.2.2): messages, the ping session, error rate limit."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from hilkit.port import checksum

TYPE_ECHO_REPLY = 0
TYPE_DEST_UNREACH = 3
TYPE_SOURCE_QUENCH = 4
TYPE_REDIRECT = 5
TYPE_ECHO_REQUEST = 8
TYPE_TIME_EXCEEDED = 11
TYPE_PARAM_PROBLEM = 12
ERROR_TYPES = frozenset(
    {TYPE_DEST_UNREACH, TYPE_SOURCE_QUENCH, TYPE_REDIRECT, TYPE_TIME_EXCEEDED, TYPE_PARAM_PROBLEM}
)

# Destination unreachable codes (RFC 792)
CODE_NET_UNREACH = 0
CODE_HOST_UNREACH = 1
CODE_PROTO_UNREACH = 2
CODE_PORT_UNREACH = 3
CODE_FRAG_NEEDED = 4
# Time exceeded codes
CODE_TTL_EXCEEDED = 0
CODE_REASSEMBLY_EXCEEDED = 1

HEADER_LEN = 8
ERROR_MAX_LEN = 576  # RFC 1812 §4.3.2.3: an error carries as much as fits in 576 bytes

_HDR_REST = struct.Struct("!BBHI")


def header(icmp_type: int, code: int, rest: int, payload: checksum.Buffer) -> bytes:
    """The 8-byte header for ``payload``; ``rest`` is the second word (id/seq, unused, ...)."""
    c = checksum.checksum(payload, checksum.ones_sum(_HDR_REST.pack(icmp_type, code, 0, rest)))
    return _HDR_REST.pack(icmp_type, code, c, rest)


def echo_header(reply: bool, ident: int, seq: int, payload: checksum.Buffer) -> bytes:
    return header(TYPE_ECHO_REPLY if reply else TYPE_ECHO_REQUEST, 0, (ident << 16) | seq, payload)


class PingError(enum.IntEnum):
    """``err`` of a ping result; the values of picoTCP's PICO_PING_ERR_*."""

    REPLIED = 0
    TIMEOUT = 1
    UNREACH = 2
    ABORTED = 3


@dataclass(frozen=True, slots=True)
class PingStats:
    """One request's outcome, as picoTCP's ``struct pico_icmp4_stats``."""

    dst: str
    size: int  # payload bytes after the 8-byte ICMP header
    seq: int
    ttl: int
    time: float  # round trip in ms (0.0 unless REPLIED)
    err: PingError


_PATTERN = bytes(range(256))


@dataclass
class PingSession:
    ident: int
    dst: int
    count: int
    interval_ms: float
    timeout_ms: float
    size: int
    next_seq: int = 1
    outstanding: dict[int, float] = field(default_factory=dict)  # seq -> time sent
    finished: bool = False
    _payload: bytes = b""

    def payload(self) -> bytes:
        if len(self._payload) != self.size:  # the 0, 1, 2, ... 255, 0, ... pattern, made once
            self._payload = (_PATTERN * (self.size // 256 + 1))[:self.size]
        return self._payload


class TokenBucket:
    """Rate limit for generated ICMP errors (RFC 1812 §4.3.2.8)."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s / 1000.0
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp: float | None = None

    def take(self, now: float) -> bool:
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

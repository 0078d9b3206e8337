"""What all TCP connections of one stack share: memory for buffers, and challenge ACKs.

Memory works like Linux's ``tcp_mem`` (three thresholds over the bytes held in
every send buffer, receive buffer and out-of-order queue):

- below ``pressure`` (and, once there, until back under ``low``): each
  connection may use its configured ``sndbuf``/``rcvbuf``;
- under pressure: each may hold at most a fair share, ``high / connections``;
- at ``high``: nothing grows, except that every connection keeps a small
  guaranteed room (``sndbuf_min``, ``rcvbuf_min``), so a new client is still
  served. The total stays under ``high + connections * (sndbuf_min + rcvbuf_min)``,
  and connections are capped (``TcpConfig.max_connections``).

The receive side shrinks the window it offers, never its right edge (RFC 9293
§3.8.6, RFC 7323 §2.4): data already invited that no longer fits is dropped
and counted, as any receiver may drop a segment.

Challenge ACKs and ACKs for unacceptable segments (RFC 5961 §3.2, §4.2, §5.2;
RFC 9293 §3.10.7.4) cost the sender nothing; RFC 5961 §7 asks to throttle
them. Each connection sends at most one per ``invalid_ack_interval_ms`` (like
Linux's ``tcp_invalid_ratelimit``), and the stack at most
``challenge_acks_per_s`` a second over all connections (like
``tcp_challenge_ack_limit``).
"""

from __future__ import annotations

from collections import Counter


class TcpBudget:
    def __init__(self, low: int, pressure: int, high: int, challenge_acks_per_s: int,
                 stats: Counter[str] | None = None) -> None:
        self.low, self.pressure_at, self.high = low, pressure, high
        self.held = 0  # bytes in all buffers of all connections
        self.users = 0  # connections that may hold buffers (not CLOSED, not TIME-WAIT)
        self.pressure = False
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.ack_rate = float(challenge_acks_per_s)
        self.ack_tokens = self.ack_rate
        self.ack_stamp: float | None = None

    def charge(self, delta: int) -> None:
        """A connection's buffers grew (or shrank) by ``delta`` bytes."""
        self.held += delta
        if self.held >= self.pressure_at:
            if not self.pressure:
                self.stats["tcp.mem_pressure_entered"] += 1
            self.pressure = True
        elif self.held < self.low:
            self.pressure = False

    def room(self, side: int, own: int, cap: int, floor: int) -> int:
        """How many more bytes one side of a connection may take.

        ``side`` is what that side holds now, ``own`` what the whole connection
        holds, ``cap`` the configured size of the side, ``floor`` its guaranteed room.
        """
        room = cap - side
        if self.pressure:
            room = min(room, self.high // max(self.users, 1) - own)
        room = min(room, self.high - self.held)
        return max(room, min(floor, cap) - side, 0)

    def challenge_ack_ok(self, now: float) -> bool:
        """The stack-wide token bucket: ``challenge_acks_per_s`` a second, as a burst too."""
        if self.ack_stamp is not None:
            self.ack_tokens = min(self.ack_rate, self.ack_tokens
                                  + max(now - self.ack_stamp, 0.0) * self.ack_rate / 1000.0)
        self.ack_stamp = now
        if self.ack_tokens >= 1.0:
            self.ack_tokens -= 1.0
            return True
        return False

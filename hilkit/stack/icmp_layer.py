"""The ICMP layer (RFC 792, RFC 1122 §3.2.2): echo, ping sessions, errors both ways.

Errors we receive are decoded here and handed, through the IPv4 layer, to the
protocol that sent the datagram they quote; errors we send (``error``) are
rate-limited (RFC 1812 §4.3.2.8) and never sent about broadcasts, fragments
other than the first, or other errors.
"""

from __future__ import annotations

import errno
import random
from collections import Counter
from collections.abc import Callable

from hilkit.port import checksum
from hilkit.port.clock import Clock
from hilkit.stack import icmp4, ipv4
from hilkit.stack.addr import ANY, int_to_ip, ip_to_int, is_multicast
from hilkit.stack.faults import Callbacks
from hilkit.stack.icmp4 import PingError, PingSession, PingStats
from hilkit.stack.ip_layer import Ipv4Layer
from hilkit.stack.netif import Buffer
from hilkit.stack.timers import Timer, TimerQueue

# RFC 1122 §3.2.2.1 / Linux icmp_err_convert: unreachable code -> errno
_UNREACH_ERRNO = {
    icmp4.CODE_NET_UNREACH: errno.ENETUNREACH,
    icmp4.CODE_HOST_UNREACH: errno.EHOSTUNREACH,
    icmp4.CODE_PROTO_UNREACH: errno.ENOPROTOOPT,
    icmp4.CODE_PORT_UNREACH: errno.ECONNREFUSED,
    icmp4.CODE_FRAG_NEEDED: errno.EMSGSIZE,
}


class IcmpLayer:
    def __init__(self, ip: Ipv4Layer, clock: Clock, timers: TimerQueue, stats: Counter[str],
                 drops: Counter[str], callbacks: Callbacks, rng: random.Random,
                 error_rate: float, error_burst: int) -> None:
        self.ip = ip
        self.pings: dict[int, PingSession] = {}  # by identifier
        self._clock = clock
        self._timers = timers
        self._stats = stats
        self._drops = drops
        self._callbacks = callbacks
        self._rng = rng
        self._bucket = icmp4.TokenBucket(error_rate, error_burst)
        self._ping_cbs: dict[int, Callable[[PingStats], None]] = {}
        self._ping_timers: dict[int, list[Timer]] = {}
        ip.register(ipv4.PROTO_ICMP, self.input, self._ping_error)
        ip.no_protocol = self._no_protocol

    # -- errors we send ------------------------------------------------------------
    def error(self, h: ipv4.Header, hbytes: Buffer, payload: Buffer, bcast: bool,
              kind: int, code: int) -> None:
        """Send an ICMP error about a datagram we received (RFC 1122 §3.2.2), rate-limited."""
        ip = self.ip
        if bcast or ip.is_broadcast(h.dst) or is_multicast(h.dst) or h.offset:
            return
        if h.src == ANY or ip.is_broadcast(h.src) or is_multicast(h.src):
            return
        if h.proto == ipv4.PROTO_ICMP and (len(payload) < 1 or payload[0] in icmp4.ERROR_TYPES):
            return  # never an error about an error
        if not self._bucket.take(self._clock.now_ms()):
            self._stats["icmp.errors_rate_limited"] += 1
            return
        quote = memoryview(payload)[:icmp4.ERROR_MAX_LEN - 20 - 8 - len(hbytes)]
        hdr = icmp4.header(kind, code, 0, bytes(hbytes) + bytes(quote))
        self._stats["icmp.errors_sent"] += 1
        ip.output(h.src, ipv4.PROTO_ICMP, [hdr, hbytes, quote],
                  src=h.dst if ip.is_local(h.dst) else None)

    def _no_protocol(self, h: ipv4.Header, hbytes: Buffer, payload: memoryview,
                     bcast: bool) -> None:
        self.error(h, hbytes, payload, bcast, icmp4.TYPE_DEST_UNREACH, icmp4.CODE_PROTO_UNREACH)

    def reassembly_expired(self, firsts: list[tuple[ipv4.Header, bytes]]) -> None:
        """Time exceeded for datagrams whose fragments stopped coming (RFC 792)."""
        for hdr, first in firsts:
            self.error(hdr, first[:hdr.ihl], first[hdr.ihl:], False,
                       icmp4.TYPE_TIME_EXCEEDED, icmp4.CODE_REASSEMBLY_EXCEEDED)

    # -- input ---------------------------------------------------------------------
    def input(self, h: ipv4.Header, hbytes: Buffer, msg: memoryview, bcast: bool) -> None:
        if len(msg) < icmp4.HEADER_LEN:
            self._drops["icmp.short"] += 1
            return
        if not checksum.verify(msg):
            self._drops["icmp.bad_checksum"] += 1
            return
        kind = msg[0]
        if kind == icmp4.TYPE_ECHO_REQUEST:
            if bcast:  # as Linux's icmp_echo_ignore_broadcasts=1
                self._stats["icmp.echo_broadcast_ignored"] += 1
                return
            rest = int.from_bytes(msg[4:8], "big")
            body = msg[icmp4.HEADER_LEN:]
            hdr = icmp4.header(icmp4.TYPE_ECHO_REPLY, 0, rest, body)
            self._stats["icmp.echo_replies_sent"] += 1
            self.ip.output(h.src, ipv4.PROTO_ICMP, [hdr, body], src=h.dst)
        elif kind == icmp4.TYPE_ECHO_REPLY:
            self._ping_reply(h, msg)
        elif kind in (icmp4.TYPE_DEST_UNREACH, icmp4.TYPE_TIME_EXCEEDED,
                      icmp4.TYPE_PARAM_PROBLEM, icmp4.TYPE_SOURCE_QUENCH):
            self._error_input(kind, msg[1], msg[icmp4.HEADER_LEN:])
        else:
            self._stats["icmp.type_ignored"] += 1

    def _error_input(self, kind: int, code: int, inner: memoryview) -> None:
        """Hand an ICMP error to whatever sent the datagram it quotes (RFC 1122 §3.2.2)."""
        if len(inner) < ipv4.MIN_HEADER_LEN or inner[0] >> 4 != 4:
            self._drops["icmp.error_bad_quote"] += 1
            return
        ihl = (inner[0] & 0xF) * 4
        if ihl < ipv4.MIN_HEADER_LEN or len(inner) < ihl + 8:
            self._drops["icmp.error_bad_quote"] += 1
            return
        src = int.from_bytes(inner[12:16], "big")
        if not self.ip.is_local(src):
            self._drops["icmp.error_not_ours"] += 1
            return
        if kind == icmp4.TYPE_SOURCE_QUENCH:  # deprecated by RFC 6633: ignore
            self._stats["icmp.source_quench_ignored"] += 1
            return
        if kind == icmp4.TYPE_DEST_UNREACH:
            err = _UNREACH_ERRNO.get(code, errno.EHOSTUNREACH)
        elif kind == icmp4.TYPE_PARAM_PROBLEM:
            err = errno.EPROTO
        else:
            err = errno.EHOSTUNREACH
        self._stats["icmp.errors_received"] += 1
        self.ip.report_error(err, src, int.from_bytes(inner[16:20], "big"), inner[9],
                             inner[ihl:])

    # -- ICMP echo: the ping API -------------------------------------------------------
    def ping(
        self, dst: str, count: int, interval_ms: float, timeout_ms: float, size: int,
        callback: Callable[[PingStats], None],
    ) -> int:
        """Ping ``dst`` like ``pico_icmp4_ping``; ``callback`` gets one ``PingStats`` per request.

        Returns the session id for ``ping_abort``.
        """
        if count < 1 or size < 0 or size > 65507 or interval_ms < 0 or timeout_ms <= 0:
            raise ValueError("ping: need count >= 1, 0 <= size <= 65507, timeout > 0")
        ident = self._rng.randrange(1, 0x10000)
        while ident in self.pings:
            ident = self._rng.randrange(1, 0x10000)
        s = PingSession(ident, ip_to_int(dst), count, interval_ms, timeout_ms, size)
        self.pings[ident] = s
        self._ping_cbs[ident] = callback
        now = self._clock.now_ms()
        self._ping_timers[ident] = [self._timers.at(now, lambda: self._ping_send(s, now))]
        return ident

    def ping_abort(self, ident: int) -> None:
        s = self.pings.get(ident)
        if s is None:
            return
        for t in self._ping_timers.get(ident, []):
            t.cancel()
        for seq in sorted(s.outstanding):
            self._ping_result(s, seq, 0, PingError.ABORTED)
        self._ping_end(s)

    def close(self) -> None:
        """End every ping session (``Stack.close``)."""
        for ident in list(self.pings):
            self.ping_abort(ident)

    def _ping_send(self, s: PingSession, due: float) -> None:
        """Send request ``next_seq``; the next one is due ``interval`` after this one was."""
        if s.finished:
            return
        seq = s.next_seq
        s.next_seq += 1
        now = self._clock.now_ms()
        timers = self._ping_timers[s.ident]
        timers[:] = [t for t in timers if not t.cancelled and t.deadline > now]
        if s.next_seq <= s.count:
            nxt = due + s.interval_ms
            timers.append(self._timers.at(nxt, lambda: self._ping_send(s, nxt)))
        s.outstanding[seq] = now
        timers.append(self._timers.at(now + s.timeout_ms, lambda: self._ping_timeout(s, seq)))
        body = s.payload()
        hdr = icmp4.echo_header(False, s.ident, seq, body)
        err = self.ip.output(s.dst, ipv4.PROTO_ICMP, [hdr, body])
        if err:
            self._ping_result(s, seq, 0, PingError.UNREACH)

    def _ping_reply(self, h: ipv4.Header, msg: memoryview) -> None:
        ident = int.from_bytes(msg[4:6], "big")
        seq = int.from_bytes(msg[6:8], "big")
        s = self.pings.get(ident)
        if s is None or seq not in s.outstanding or h.src != s.dst:
            self._stats["icmp.echo_reply_unmatched"] += 1
            return
        self._ping_result(s, seq, h.ttl, PingError.REPLIED)

    def _ping_error(self, err: int, src: int, dst: int, transport: memoryview) -> None:
        if transport[0] != icmp4.TYPE_ECHO_REQUEST:
            return
        s = self.pings.get(int.from_bytes(transport[4:6], "big"))
        seq = int.from_bytes(transport[6:8], "big")
        if s is not None and seq in s.outstanding and dst == s.dst:
            self._ping_result(s, seq, 0, PingError.UNREACH)

    def _ping_timeout(self, s: PingSession, seq: int) -> None:
        if seq in s.outstanding:
            self._ping_result(s, seq, 0, PingError.TIMEOUT)

    def _ping_result(self, s: PingSession, seq: int, ttl: int, err: PingError) -> None:
        sent = s.outstanding.pop(seq)
        rtt = self._clock.now_ms() - sent if err is PingError.REPLIED else 0.0
        cb = self._ping_cbs[s.ident]
        if not s.outstanding and s.next_seq > s.count:
            self._ping_end(s)
        try:
            cb(PingStats(int_to_ip(s.dst), s.size, seq, ttl, rtt, err))
        except Exception:
            self._callbacks.failed(s, f"callback of ping {s.ident} to {int_to_ip(s.dst)} raised")

    def _ping_end(self, s: PingSession) -> None:
        s.finished = True
        for t in self._ping_timers.pop(s.ident, []):
            t.cancel()
        self.pings.pop(s.ident, None)
        self._ping_cbs.pop(s.ident, None)

"""One TCP connection (RFC 9293 §3.3.2, §3.10): the state machine, sans-I/O.

A ``Connection`` takes segments, application calls and the time; it puts
segments to send in ``outbox`` and socket events in ``events``, and says in
``next_deadline()`` when it next wants ``on_timer``. The stack moves bytes and
time in and out; a unit test can do the same with a manual clock.

Names follow RFC 9293 (SND.UNA is ``snd_una`` ...). Sequence numbers are
compared mod 2**32 everywhere (``seq_lt`` and friends).
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hilkit.stack import tcp
from hilkit.stack.events import SocketEvent
from hilkit.stack.tcp import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    Segment,
    seq_add,
    seq_diff,
    seq_le,
    seq_lt,
)
from hilkit.stack.tcp_budget import TcpBudget
from hilkit.stack.tcp_cc import CongestionControl, NewReno
from hilkit.stack.tcp_ooo import OutOfOrder


class State(enum.Enum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"


MIN_SND_MSS = 48  # the smallest MSS we honour, as Linux's TCP_MIN_SND_MSS
IP_TCP_HEADERS = 40  # IPv4 and TCP headers without options: MSS = MTU - 40 (RFC 9293 §3.7.1)
TCP_OPTIONS_MAX = 40  # a data offset of 15 words (RFC 9293 §3.1): what options may take


def rx_window_clamp(rx_buffer_bytes: int | None, mtu: int, link_header: int) -> int | None:
    """The largest receive window whose segments all fit a device's receive buffer.

    ``rx_buffer_bytes`` is the device's (``hilkit.port.device.device_rx_buffer``),
    counted in frames with their headers. A peer sends at most MTU + link header
    bytes per frame, and a full-size segment carries at least the MSS less the
    option space (RFC 9293 §3.7.1: options come out of the MSS; timestamps and
    SACK blocks do), so a window of ``frames * (MSS - 40)`` bytes arrives in at
    most ``frames`` frames.

    One full-size frame of the buffer is left out of the window when two or more
    fit: the window governs data only, and the peer's ACKs of what we send it
    (one per two segments, RFC 5681 §4.2), its probes and ARP arrive while a
    full window waits in the buffer. At least one segment is always offered.
    None: no limit.
    """
    if rx_buffer_bytes is None:
        return None
    mss = max(mtu - IP_TCP_HEADERS, 64)
    return _window_frames(rx_buffer_bytes, mtu + link_header) * max(mss - TCP_OPTIONS_MAX,
                                                                    MIN_SND_MSS)


def tx_flight_clamp(rx_buffer_bytes: int | None, mtu: int, link_header: int) -> int | None:
    """How many segments may be in flight to a peer whose ACKs come back through a
    device with a small receive buffer; None: no limit.

    The peer answers up to one ACK per segment (RFC 5681 §4.2 asks for at least one
    per two; a receiver in quick-ACK mode sends one for each), and they arrive while
    the device may already hold a full receive window (``rx_window_clamp``). Only
    the room left beside that window is theirs, each ACK counted with every TCP
    option (timestamps and SACK blocks): a flight larger than that would have the
    device drop ACKs, and ACKs lost make the next one acknowledge more, which
    releases a larger burst still.
    """
    if rx_buffer_bytes is None:
        return None
    frame = mtu + link_header
    room = rx_buffer_bytes - _window_frames(rx_buffer_bytes, frame) * frame
    return max(room // (IP_TCP_HEADERS + TCP_OPTIONS_MAX + link_header), 1)


def _window_frames(rx_buffer_bytes: int, frame: int) -> int:
    """Full-size frames a receive window may take: all that fit, less one when two or
    more do (``rx_window_clamp``); never less than one."""
    fit = rx_buffer_bytes // frame
    return fit - 1 if fit >= 2 else 1


SYNCHRONIZED = frozenset(State) - {State.CLOSED, State.LISTEN, State.SYN_SENT}
CAN_RECEIVE = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2})
CAN_SEND = frozenset({State.ESTABLISHED, State.CLOSE_WAIT})


@dataclass(frozen=True)
class TcpConfig:
    sndbuf: int = 512 * 1024  # the most one connection queues to send ...
    rcvbuf: int = 512 * 1024  # ... and holds received (in order and out of order)
    # Memory of all connections together, as Linux's tcp_mem (see ``tcp_budget``): under
    # pressure each connection gets a fair share of mem_high; at mem_high only the minimums.
    mem_low: int = 4 * 1024 * 1024
    mem_pressure: int = 6 * 1024 * 1024
    mem_high: int = 8 * 1024 * 1024  # 8 connections with full sndbuf and rcvbuf
    sndbuf_min: int = 4096  # room every connection keeps, whatever the pressure (tcp_wmem[0])
    rcvbuf_min: int = 4096  # (tcp_rmem[0]): a new client is served even at mem_high
    max_connections: int = 4096  # TCBs in the stack (TIME-WAIT included); then refused
    listener_max_connections: int = 2048  # connections one listener's port may have at once
    rto_initial_ms: float = 1000.0  # RFC 6298 §2.1
    rto_min_ms: float = 200.0  # Linux's TCP_RTO_MIN (RFC 6298 says 1 s; configurable)
    rto_max_ms: float = 60_000.0  # RFC 6298 §2.5: at least 60 s
    delack_ms: float = 40.0  # RFC 1122 §4.2.3.2: under 500 ms; RFC 5681: at most 200
    msl_ms: float = 30_000.0  # TIME-WAIT lasts 2*MSL
    fin_wait2_ms: float = 60_000.0  # an orphan waits this long for the peer's FIN (Linux)
    syn_retries: int = 7  # 1+2+...+128 s: over the 3 minutes RFC 9293 §3.8.3 asks for
    data_retries: int = 15
    persist_max_ms: float = 60_000.0
    ooo_max_segments: int = 1024  # disjoint out-of-order ranges kept
    keepalive_idle_ms: float = 7_200_000.0  # RFC 1122 §4.2.3.6: two hours by default
    keepalive_interval_ms: float = 75_000.0
    keepalive_count: int = 9
    timestamps: bool = True
    sack: bool = True
    window_scaling: bool = True
    challenge_acks_per_s: int = 1000  # RFC 5961 §7: per stack, as Linux's challenge_ack_limit
    invalid_ack_interval_ms: float = 500.0  # per connection, as Linux's tcp_invalid_ratelimit
    congestion: Callable[[int], CongestionControl] = NewReno  # made with the MSS
    tail_loss_probe: bool = True  # RFC 8985 §7: probe a silent tail before the RTO
    # A slow link's device that says how much line time it holds (Device.tx_queue_ms) gets
    # new data only while it holds less than this; the rest waits in the send buffer.
    device_queue_ms: float = 200.0
    # Segmentation late (Linux's GSO): hand the IP layer segments of many MSS, cut into
    # MSS-sized ones just before the device (``netif.Transmit``), so the per-segment work
    # of TCP is done once for them all. The frames on the wire are the same.
    gso: bool = True


class Connection:
    """A TCB. ``local``/``remote`` are (IPv4 address as int, port)."""

    # A TCB per connection, a thousand idle ones on a small host: slots, not a dict.
    __slots__ = (
        "ack_now",
        "budget",
        "budget_user",
        "cc",
        "cfg",
        "charged",
        "context",
        "delack_deadline",
        "dev_queue_ms",
        "dupacks",
        "error",
        "events",
        "fin_queued",
        "fin_received",
        "fin_sent",
        "fin_seq",
        "high_rxt",
        "in_recovery",
        "irs",
        "iss",
        "keepalive",
        "keepalive_deadline",
        "keepalive_probes",
        "last_ack_sent",
        "last_oow_ack",
        "local",
        "max_snd_wnd",
        "mss",
        "mss_local",
        "nodelay",
        "now",
        "ooo",
        "ooo_fin",
        "orphaned",
        "outbox",
        "passive",
        "peer_ws",
        "persist_backoff",
        "persist_deadline",
        "queue_deadline",
        "rack_deadline",
        "rcv_adv",
        "rcv_clamp",
        "rcv_mss",
        "rcv_nxt",
        "rcv_wscale",
        "rcvbuf",
        "recover",
        "remote",
        "retries",
        "rto",
        "rto_deadline",
        "rtt_seq",
        "rtt_time",
        "rttvar",
        "rxt_una_time",
        "sack_ok",
        "sacked",
        "snd_clamp_segs",
        "snd_max",
        "snd_nxt",
        "snd_una",
        "snd_wl1",
        "snd_wl2",
        "snd_wnd",
        "snd_wscale",
        "sndbuf",
        "srtt",
        "state",
        "stats",
        "syn_acked",
        "syn_wnd",
        "timewait_deadline",
        "tlp_deadline",
        "tlp_sent",
        "ts_offset",
        "ts_ok",
        "ts_recent",
        "tso_max",
        "tx_partial",
        "unacked_bytes",
    )

    def __init__(
        self, local: tuple[int, int], remote: tuple[int, int], iss: int, mtu: int,
        config: TcpConfig, now: float, ts_offset: int = 0, budget: TcpBudget | None = None,
        rcv_clamp: int | None = None, snd_clamp_segs: int | None = None,
    ) -> None:
        """``rcv_clamp``: the most the window may ever offer (``rx_window_clamp`` of the
        route's device), fixed before the SYN since a window never shrinks;
        ``snd_clamp_segs``: the most segments in flight (``tx_flight_clamp``)."""
        self.local = local
        self.remote = remote
        self.cfg = config
        # what the stack's connections share (a connection of its own when none is given)
        self.budget = budget if budget is not None else TcpBudget(
            config.mem_low, config.mem_pressure, config.mem_high, config.challenge_acks_per_s)
        self.budget.users += 1
        self.budget_user = True
        self.charged = 0  # bytes of buffers this connection has told the budget about
        self.state = State.CLOSED
        self.outbox: list[tuple[bytes, memoryview | bytes]] = []
        self.events = SocketEvent(0)
        self.error = 0
        self.stats: dict[str, int] = {"retransmits": 0, "timeouts": 0, "fast_retransmits": 0,
                                      "segs_out": 0, "segs_in": 0, "dupacks_in": 0}
        self.nodelay = False
        self.keepalive = False
        self.context: Any = None  # the socket that owns this connection
        self.passive = False  # opened by a listener (RFC 9293: RST in SYN-RECEIVED differs)
        self.orphaned = False  # the application closed: nobody will read what comes in
        # send side
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_max = iss  # highest sequence number sent (snd_nxt backs off on timeout)
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0
        self.snd_wscale = 0
        self.snd_clamp_segs = snd_clamp_segs
        self.sndbuf = bytearray()  # starts at snd_una (after the SYN)
        self.syn_acked = False
        self.fin_queued = False  # the application has no more to send
        self.fin_seq: int | None = None  # the sequence number our FIN takes, once sent
        self.fin_sent = False
        # receive side
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0  # right edge of the window we advertised
        self.rcv_wscale = 0
        self.rcv_clamp = rcv_clamp
        self.rcvbuf = bytearray()
        self.ooo = OutOfOrder(config.ooo_max_segments)  # data beyond a hole, and its SACK
        self.syn_wnd = 0  # the window our SYN offered
        self.ooo_fin: int | None = None  # where a FIN that came early sits
        self.fin_received = False
        self.last_ack_sent = 0
        # options
        self.mss_local = max(mtu - 40, 64)
        self.mss = tcp.DEFAULT_MSS  # what we send per segment (data bytes)
        self.ts_ok = False
        self.ts_offset = ts_offset
        self.ts_recent = 0
        self.sack_ok = False
        self.peer_ws = False
        self.sacked: list[tuple[int, int]] = []  # peer's SACK scoreboard, sorted, merged
        # timers
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = config.rto_initial_ms
        self.rto_deadline: float | None = None
        self.delack_deadline: float | None = None
        self.persist_deadline: float | None = None
        self.persist_backoff = 0
        self.keepalive_deadline: float | None = None
        self.keepalive_probes = 0
        self.timewait_deadline: float | None = None
        self.retries = 0
        self.rtt_seq: int | None = None  # segment being timed (no timestamps), Karn-safe
        self.rtt_time = 0.0
        self.unacked_bytes = 0  # data received since our last ACK
        self.rcv_mss = tcp.DEFAULT_MSS  # largest segment the peer has sent
        self.ack_now = False
        self.last_oow_ack: float | None = None  # when we last answered an invalid segment
        self.now = now  # the time of the call being handled: what timestamps carry
        # congestion control
        self.cc: CongestionControl = config.congestion(self.mss)
        self.dupacks = 0
        self.in_recovery = False
        self.recover = iss
        self.high_rxt = iss  # RFC 6675 HighRxt: highest sequence retransmitted in recovery
        self.rxt_una_time: float | None = None  # when SND.UNA was last retransmitted
        self.rack_deadline: float | None = None  # check that retransmission arrived
        self.tlp_deadline: float | None = None  # tail loss probe (RFC 8985 §7)
        self.tlp_sent = False  # one probe per flight
        # line time (ms) the route's device still holds of what it accepted (``tcp_layer``)
        self.dev_queue_ms: Callable[[], float] | None = None
        self.queue_deadline: float | None = None  # look at that queue again
        # what the route's device does for us (``tcp_layer``; docs/porting.md, "Offloads"):
        # leave the checksum partial; send up to ``tso_max`` bytes of IP datagram at once
        # (cut by the device, or by the stack before it: ``TcpConfig.gso``)
        self.tx_partial = False
        self.tso_max = 0

    # -- application side --------------------------------------------------------
    def connect(self, now: float) -> None:
        """Active open: send a SYN (RFC 9293 §3.10.1)."""
        self.now = now
        self.state = State.SYN_SENT
        self.rcv_wscale = self._wscale_for(self._rcv_cap())
        self._send_syn(now, ack=False)

    def accept_syn(self, seg: Segment, now: float) -> None:
        """Passive open from a SYN a listener took (RFC 9293 §3.10.7.2)."""
        self.now = now
        self.state = State.SYN_RECEIVED
        self.passive = True
        self.irs = seg.seq
        self.rcv_nxt = seq_add(seg.seq, 1)
        self._take_syn_options(seg, now)
        self.snd_wnd = seg.wnd  # never scaled in a SYN
        self.snd_wl1, self.snd_wl2 = seg.seq, self.iss
        self._send_syn(now, ack=True)

    def establish_from_cookie(self, seg: Segment, mss: int, now: float) -> None:
        """A listener validated a SYN cookie in ``seg`` (an ACK): start ESTABLISHED."""
        self.now = now
        self.passive = True
        self.state = State.ESTABLISHED
        self.syn_acked = True
        self.irs = seq_add(seg.seq, -1)
        self.rcv_nxt = seg.seq
        self.snd_una = self.snd_nxt = self.snd_max = seq_add(self.iss, 1)
        self.mss = min(mss, self.mss_local)
        self.cc = self.cfg.congestion(self.mss)
        self.snd_wnd = self.max_snd_wnd = seg.wnd
        self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack
        self.rcv_adv = seq_add(self.rcv_nxt, min(self._rcv_cap(), 0xFFFF))
        self.events |= SocketEvent.CONN | SocketEvent.WR

    def send(self, data: bytes | bytearray | memoryview, now: float) -> int:
        """Queue what fits of ``data``; returns how many bytes were taken."""
        self.now = now
        if self.state not in CAN_SEND and self.state not in (State.SYN_SENT,
                                                              State.SYN_RECEIVED):
            raise OSError(self.error or errno.EPIPE, "connection not open for sending")
        if self.fin_queued:
            raise OSError(errno.EPIPE, "send after shutdown")
        room = self._snd_room()
        n = min(room, len(data))
        if n < len(data) and room < self.cfg.sndbuf - len(self.sndbuf):
            self._count("snd_mem_limited")  # memory pressure took room this socket had
        if n > 0:
            try:
                self.sndbuf += memoryview(data)[:n]
            except BufferError:  # a view of it is still alive somewhere: grow a copy
                self.sndbuf = self.sndbuf + memoryview(data)[:n]
            self.output(now)
        self._account()
        return n

    def recv(self, n: int, now: float) -> bytes:
        """Up to ``n`` bytes in order; b"" if none (see ``eof`` for the end)."""
        self.now = now
        data = bytes(self.rcvbuf[:n])
        del self.rcvbuf[:n]
        self._account()
        if data and self.state in SYNCHRONIZED and not self.fin_received:
            self._maybe_window_update(now)  # after the peer's FIN it has nothing to send
        return data

    @property
    def readable(self) -> int:
        return len(self.rcvbuf)

    @property
    def eof(self) -> bool:
        return self.fin_received and not self.rcvbuf

    @property
    def writable(self) -> int:
        """Room in the send buffer: ``sndbuf``, less under memory pressure (``tcp_budget``)."""
        return self._snd_room() if self.state in CAN_SEND else 0

    # -- memory (tcp_budget) -------------------------------------------------------
    def _held(self) -> int:
        return len(self.sndbuf) + len(self.rcvbuf) + self.ooo.nbytes

    def _snd_room(self) -> int:
        return self.budget.room(len(self.sndbuf), self._held(), self.cfg.sndbuf,
                                self.cfg.sndbuf_min)

    def _rcv_room(self) -> int:
        """Bytes more this connection may take in, in order or out of order."""
        return self.budget.room(len(self.rcvbuf) + self.ooo.nbytes, self._held(),
                                self.cfg.rcvbuf, self.cfg.rcvbuf_min)

    def _account(self) -> None:
        """Tell the budget what the buffers hold now (after each call that changed them)."""
        held = len(self.sndbuf) + len(self.rcvbuf) + self.ooo.nbytes
        if held != self.charged:
            self.budget.charge(held - self.charged)
            self.charged = held

    def _leave_budget(self) -> None:
        """No more buffers (TIME-WAIT or CLOSED): stop counting in the fair share."""
        if self.budget_user:
            self.budget_user = False
            self.budget.users -= 1

    def drop_buffers(self) -> None:
        """The socket of a closed connection went away: unread data goes with it."""
        self._release_buffers(keep_rcv=False)

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1
        self.budget.stats["tcp." + what] += 1

    def shutdown_write(self, now: float) -> None:
        """Send FIN after the queued data (RFC 9293 §3.10.4 CLOSE)."""
        self.now = now
        if self.fin_queued or self.state in (State.CLOSED, State.TIME_WAIT):
            return
        self.fin_queued = True
        if self.state in (State.SYN_SENT,):
            self._become_closed(0)
            return
        if self.state == State.ESTABLISHED:
            self.state = State.FIN_WAIT_1
        elif self.state == State.CLOSE_WAIT:
            self.state = State.LAST_ACK
        self.output(now)

    def orphan(self, now: float) -> None:
        """The application closed the socket; the connection finishes on its own, bounded:
        data that still arrives draws a RST, and FIN-WAIT-2 lasts at most ``fin_wait2_ms``."""
        self.now = now
        self.orphaned = True
        self.context = None
        if self.state == State.FIN_WAIT_2:
            self.timewait_deadline = now + self.cfg.fin_wait2_ms

    def abort(self, now: float, err: int = errno.ECONNABORTED) -> None:
        """Reset the connection (RFC 9293 §3.10.5 ABORT)."""
        self.now = now
        if self.state in SYNCHRONIZED and self.state != State.TIME_WAIT:
            self._emit(self.snd_nxt, 0, RST, b"")
        self._become_closed(err if self.error == 0 else self.error)

    # -- timers --------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        ds = [d for d in (self.rto_deadline, self.delack_deadline, self.persist_deadline,
                          self.keepalive_deadline, self.timewait_deadline, self.rack_deadline,
                          self.tlp_deadline, self.queue_deadline)
              if d is not None]
        return min(ds) if ds else None

    def on_timer(self, now: float) -> None:
        self.now = now
        if self.timewait_deadline is not None and now >= self.timewait_deadline:
            self._become_closed(0)
            return
        if self.delack_deadline is not None and now >= self.delack_deadline:
            self.delack_deadline = None
            self.ack_now = True
        if self.queue_deadline is not None and now >= self.queue_deadline:
            self.queue_deadline = None  # output() below looks at the device's queue again
        if self.tlp_deadline is not None and now >= self.tlp_deadline:
            self.tlp_deadline = None
            self._tail_loss_probe(now)
        if self.rack_deadline is not None and now >= self.rack_deadline:
            self.rack_deadline = None
            if self.in_recovery and self.sack_ok and self._is_lost(self.snd_una):
                self._resend_lost_retransmission(now)
        if self.rto_deadline is not None and now >= self.rto_deadline:
            self._on_rto(now)
        if self.persist_deadline is not None and now >= self.persist_deadline:
            self._on_persist(now)
        if self.keepalive_deadline is not None and now >= self.keepalive_deadline:
            self._on_keepalive(now)
        if self.state != State.CLOSED:
            self.output(now)
        self._account()

    def _on_rto(self, now: float) -> None:
        self.rto_deadline = self.tlp_deadline = None
        self.retries += 1
        self.stats["timeouts"] += 1
        limit = self.cfg.syn_retries if self.state in (State.SYN_SENT, State.SYN_RECEIVED) \
            else self.cfg.data_retries
        if self.retries > limit:
            self.abort(now, errno.ETIMEDOUT)
            return
        self.rto = min(self.rto * 2, self.cfg.rto_max_ms)  # back off (RFC 6298 §5.5)
        self.stats["max_backoff"] = max(self.stats.get("max_backoff", 0), self.retries)
        self.rtt_seq = None  # Karn: no sample from a retransmitted segment
        if self.state in (State.SYN_SENT, State.SYN_RECEIVED):
            self.stats["retransmits"] += 1
            self._send_syn(now, ack=self.state == State.SYN_RECEIVED)
            return
        flight = seq_diff(self.snd_max, self.snd_una)
        self.cc.on_timeout(flight, self.mss)
        self.in_recovery = False
        self.dupacks = 0
        self.sacked.clear()  # RFC 6675 §5.1 / RFC 2018: after a timeout, forget SACK state
        self.recover = self.snd_max
        # Go back to the first unacknowledged byte and send again from there.
        self.snd_nxt = self.snd_una
        self.fin_sent = False
        self.output(now)

    def _on_persist(self, now: float) -> None:
        """Zero-window probe: an old sequence number draws an ACK with the window."""
        self.persist_deadline = None
        if self.snd_wnd == 0 and self._unsent() > 0:
            self._emit(seq_add(self.snd_una, -1), self.rcv_nxt, ACK, b"")
            self.stats["window_probes"] = self.stats.get("window_probes", 0) + 1
            self.persist_backoff += 1
            self._arm_persist(now)

    def _on_keepalive(self, now: float) -> None:
        self.keepalive_deadline = None
        if not self.keepalive or self.state not in SYNCHRONIZED:
            return
        if self.keepalive_probes >= self.cfg.keepalive_count:
            self.abort(now, errno.ETIMEDOUT)
            return
        self.keepalive_probes += 1
        self._emit(seq_add(self.snd_una, -1), self.rcv_nxt, ACK, b"")
        self.keepalive_deadline = now + self.cfg.keepalive_interval_ms

    def set_keepalive(self, on: bool, now: float) -> None:
        self.keepalive = on
        self.keepalive_probes = 0
        self.keepalive_deadline = now + self.cfg.keepalive_idle_ms if on else None

    # -- segment arrival (RFC 9293 §3.10.7) ---------------------------------------------
    def input(self, seg: Segment, now: float) -> None:
        self.now = now
        self.stats["segs_in"] += 1
        if self.keepalive:
            self.keepalive_probes = 0
            self.keepalive_deadline = now + self.cfg.keepalive_idle_ms
        if self.state == State.SYN_SENT:
            self._input_syn_sent(seg, now)
        elif self.state in SYNCHRONIZED:
            self._input_synchronized(seg, now)
        if self.state != State.CLOSED:
            self.output(now)
        self._account()

    def _input_syn_sent(self, seg: Segment, now: float) -> None:
        f = seg.flags
        if f & ACK and not (seq_lt(self.iss, seg.ack) and seq_le(seg.ack, self.snd_max)):
            if not f & RST:
                self._emit(seg.ack, 0, RST, b"")
            return
        if f & RST:
            if f & ACK:  # RFC 5961 §3.2 keeps this check for SYN-SENT
                self._become_closed(errno.ECONNREFUSED)
            return
        if not f & SYN:
            return
        self.irs = seg.seq
        self.rcv_nxt = seq_add(seg.seq, 1)
        self.rcv_adv = seq_add(self.rcv_nxt, self.syn_wnd)  # as our SYN said
        self._take_syn_options(seg, now)
        if f & ACK:
            self._ack_advance(seg.ack, now, seg)
            self.snd_wnd = seg.wnd  # never scaled in a SYN-ACK (RFC 7323 §2.2)
            self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
            self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack
            self.state = State.ESTABLISHED
            self._after_handshake()
            self.rto_deadline = None
            self.retries = 0
            self.events |= SocketEvent.CONN | SocketEvent.WR
            self.ack_now = True
        else:  # simultaneous open (RFC 9293 §3.5, figure 8)
            self.state = State.SYN_RECEIVED
            self.snd_wnd = seg.wnd
            self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack
            self.snd_nxt = self.iss
            self._send_syn(now, ack=True)

    def _after_handshake(self) -> None:
        """RFC 6298 §5.7: after a SYN timed out, with no RTT sample, data starts at 3 s."""
        if self.stats["timeouts"] and self.srtt is None:
            self.rto = max(self.rto, 3000.0)
        elif self.srtt is None:
            self.rto = self.cfg.rto_initial_ms

    def _acceptable(self, seg: Segment, rcv_wnd: int) -> bool:
        n = len(seg.payload) + (1 if seg.flags & FIN else 0)
        if n == 0:
            if rcv_wnd == 0:
                return seg.seq == self.rcv_nxt
            right = seq_add(self.rcv_nxt, rcv_wnd)
            if seg.seq == right and not seg.flags & RST:
                # The ACKs of a peer that filled our window carry SEQ at its right edge.
                # RFC 9293's table refuses them; Linux and BSD take them, and so must we:
                # when that data was lost and our RTO had gone back (our SEQ now behind
                # the peer's RCV.NXT, which it refuses too), no ACK would ever be heard.
                return True
            return seq_le(self.rcv_nxt, seg.seq) and seq_lt(seg.seq, right)
        if rcv_wnd == 0:
            return False
        right = seq_add(self.rcv_nxt, rcv_wnd)
        last = seq_add(seg.seq, n - 1)
        return (seq_le(self.rcv_nxt, seg.seq) and seq_lt(seg.seq, right)) or (
            seq_le(self.rcv_nxt, last) and seq_lt(last, right))

    def _input_synchronized(self, seg: Segment, now: float) -> None:
        f = seg.flags
        rcv_wnd = max(seq_diff(self.rcv_adv, self.rcv_nxt), 0)
        # PAWS (RFC 7323 §5.3): an old timestamp marks an old duplicate.
        if self.ts_ok and seg.ts is not None and not f & RST and seq_lt(seg.ts[0],
                                                                         self.ts_recent):
            self.stats["paws_drops"] = self.stats.get("paws_drops", 0) + 1
            self._oow_ack(seg, now)
            return
        if not self._acceptable(seg, rcv_wnd):
            if rcv_wnd == 0 and seg.seq == self.rcv_nxt and f & ACK:
                self._process_ack(seg, now)  # RFC 9293: a zero window still takes ACKs
            if not f & RST:
                self.stats["out_of_window"] = self.stats.get("out_of_window", 0) + 1
                if f & SYN:
                    self._challenge_ack(now)  # RFC 5961 §4.2: any SYN, in window or not
                else:
                    self._oow_ack(seg, now)
                if self.state == State.TIME_WAIT and f & FIN:  # RFC 9293 §3.10.7.4
                    self.timewait_deadline = now + 2 * self.cfg.msl_ms
            return
        if f & RST and self.state == State.TIME_WAIT:
            # RFC 1337: a RST must not cut TIME-WAIT short (and the socket closed cleanly).
            self.stats["timewait_rst_ignored"] = self.stats.get("timewait_rst_ignored", 0) + 1
            return
        if f & RST:  # RFC 5961 §3.2
            if seg.seq == self.rcv_nxt:
                refused = self.state == State.SYN_RECEIVED and not self.passive
                self._become_closed(errno.ECONNREFUSED if refused else errno.ECONNRESET)
            else:
                self._challenge_ack(now)
            return
        if f & SYN:  # RFC 5961 §4.2, in every synchronized state
            if self.state == State.SYN_RECEIVED and seg.seq == self.irs:
                self._send_syn(now, ack=True)  # our SYN-ACK was lost
            else:
                self._challenge_ack(now)
            return
        if not f & ACK:
            return
        if self.ts_ok and seg.ts is not None and seq_le(seg.seq, self.last_ack_sent):
            self.ts_recent = seg.ts[0]  # RFC 7323 §4.3
        if self.state == State.SYN_RECEIVED:
            if not (seq_lt(self.snd_una, seg.ack) and seq_le(seg.ack, self.snd_max)):
                self._emit(seg.ack, 0, RST, b"")
                return
            self.state = State.ESTABLISHED
            self._after_handshake()
            self.snd_wnd = seg.wnd << self.snd_wscale
            self.snd_wl1, self.snd_wl2 = seg.seq, seg.ack
            self.events |= SocketEvent.CONN | SocketEvent.WR
            if self.fin_queued:
                self.state = State.FIN_WAIT_1
        if not self._process_ack(seg, now):
            return
        if self.state == State.TIME_WAIT:
            if f & FIN:  # the peer did not hear our ACK of its FIN
                self.ack_now = True
                self.timewait_deadline = now + 2 * self.cfg.msl_ms
            return
        if self.state in CAN_RECEIVE and (seg.payload or f & FIN):
            self._receive(seg, now)

    def _process_ack(self, seg: Segment, now: float) -> bool:
        """RFC 9293 §3.10.7.4 fifth check, with RFC 5961 §5.2; False to stop processing."""
        ack = seg.ack
        low = seq_add(self.snd_una, -max(self.max_snd_wnd, 1))
        if seq_lt(self.snd_max, ack):
            self.stats["ack_beyond_snd_max"] = self.stats.get("ack_beyond_snd_max", 0) + 1
            self._challenge_ack(now)
            return False
        if seq_lt(ack, low):
            self.stats["ack_too_old"] = self.stats.get("ack_too_old", 0) + 1
            self._challenge_ack(now)
            return False
        new_sack = self._take_sack(seg.sack) if self.sack_ok and seg.sack else False
        wnd = seg.wnd << self.snd_wscale
        if seq_lt(self.snd_una, ack):
            self._ack_advance(ack, now, seg)
        elif (ack == self.snd_una and not seg.payload and not seg.flags & (SYN | FIN)
              and self.snd_una != self.snd_max and (wnd == self.snd_wnd or new_sack)):
            # RFC 5681 §2 asks for an unchanged window; with SACK, new SACK information
            # is what makes a duplicate (RFC 6675 §2), as receivers move the window often.
            self._dupack(now)
        # Window update (RFC 9293 §3.10.7.4: SND.WL1/WL2 guard against old segments).
        if seq_lt(self.snd_wl1, seg.seq) or (self.snd_wl1 == seg.seq and seq_le(self.snd_wl2,
                                                                                  ack)):
            opened = wnd > 0 and self.snd_wnd == 0
            self.snd_wnd = wnd
            self.max_snd_wnd = max(self.max_snd_wnd, wnd)
            self.snd_wl1, self.snd_wl2 = seg.seq, ack
            if opened:
                self.persist_deadline = None
                self.persist_backoff = 0
        self._maybe_sack_recovery(now)
        fin_acked = self._fin_acked(ack)
        if self.state == State.FIN_WAIT_1 and fin_acked:
            self.state = State.FIN_WAIT_2
            if self.orphaned:
                self.timewait_deadline = now + self.cfg.fin_wait2_ms
        elif self.state == State.CLOSING and fin_acked:
            self._enter_time_wait(now)
            return False
        elif self.state == State.LAST_ACK and fin_acked:
            self._become_closed(0)
            return False
        return True

    def _ack_advance(self, ack: int, now: float, seg: Segment) -> None:
        """New data acknowledged: free it, sample the RTT, grow the window."""
        acked = seq_diff(ack, self.snd_una)
        flight_before = seq_diff(self.snd_max, self.snd_una)
        fin_in_ack = self._fin_acked(ack) and not self._fin_acked(self.snd_una)
        if fin_in_ack:
            self.fin_sent = True  # even if a timeout had us about to send it again
        data_acked = acked - (1 if fin_in_ack else 0)
        if not self.syn_acked:
            self.syn_acked = True
            data_acked -= 1  # the SYN
        if data_acked > 0:
            self._free_sndbuf(data_acked)
        self.snd_una = ack
        self.rxt_una_time = self.rack_deadline = None
        if self.in_recovery and self.sack_ok and seq_lt(ack, self.high_rxt):
            # The new SND.UNA is a hole already resent in this recovery (RFC 6675 NextSeg
            # went past it): watch that copy as one resent now, or its loss waits for the
            # RTO, since NextSeg does not go back below HighRxt.
            self.rxt_una_time = now
            self.rack_deadline = now + self._rexmit_wait()
        self.tlp_sent = False
        if seq_lt(self.snd_nxt, ack):
            self.snd_nxt = ack
        self.sacked = [(a, b) for a, b in self.sacked if seq_lt(ack, b)]
        self.retries = 0
        # RTT (RFC 6298 §3 / RFC 7323 §4.1), never from retransmissions (Karn).
        echoed = (self._ts_now(now) - seg.ts[1]) & 0xFFFFFFFF if self.ts_ok and seg.ts else None
        if echoed is not None and seg.ts and seg.ts[1] and echoed < self.cfg.rto_max_ms:
            self._rtt_sample(float(echoed))
        elif self.rtt_seq is not None and seq_lt(self.rtt_seq, ack):
            self._rtt_sample(now - self.rtt_time)
            self.rtt_seq = None
        # Loss recovery (RFC 6582 NewReno, helped by SACK holes) or window growth.
        if self.in_recovery:
            if seq_le(self.recover, ack):
                self.in_recovery = False
                self.cc.on_recovery_end(seq_diff(self.snd_max, ack), self.mss)
                # The next loss may be the very next segment: let it trigger recovery.
                self.recover = seq_add(ack, -1)
            elif not self.sack_ok:  # NewReno partial ACK: the next hole is at SND.UNA
                self.cc.on_partial_ack(max(acked, 0), self.mss)
                self._retransmit(self.snd_una, now)
            elif seq_le(self.high_rxt, self.snd_una) and self._next_hole() is None:
                # A partial ACK with no SACK evidence beyond: SND.UNA is the hole (RFC 6582).
                self.high_rxt = seq_add(self.snd_una, self._retransmit(self.snd_una, now))
        elif flight_before * 2 >= self.cc.cwnd:  # grow only when the window was used (RFC 7661)
            self.cc.on_ack(max(acked, 0), self.mss)
        self.dupacks = 0
        self.rto_deadline = now + self.rto if self.snd_una != self.snd_max else None
        self._arm_tlp(now)
        if data_acked > 0 and self.state in CAN_SEND:
            self.events |= SocketEvent.WR

    def _fin_acked(self, ack: int) -> bool:
        """Our FIN is acknowledged by ``ack`` (it stays where it was first sent, RTO or not)."""
        return self.fin_seq is not None and seq_lt(self.fin_seq, ack)

    def _dupack(self, now: float) -> None:
        self.dupacks += 1
        self.stats["dupacks_in"] += 1
        if self.in_recovery:
            if not self.sack_ok:
                self.cc.on_dupack_in_recovery(self.mss)  # NewReno inflation (RFC 6582)
        elif self.dupacks >= self._dupthresh() and seq_lt(self.recover, self.snd_una):
            self._enter_recovery(now)  # RFC 6582 §3.2 step 1: not for losses before a timeout

    def _dupthresh(self) -> int:
        """3, or fewer when too little is in flight to draw three (RFC 5827 early retransmit)."""
        if self._unsent() > 0 and self.snd_wnd > seq_diff(self.snd_max, self.snd_una):
            return 3
        segs = -(-seq_diff(self.snd_max, self.snd_una) // self.mss)
        return max(1, min(3, segs - 1))

    def _maybe_sack_recovery(self, now: float) -> None:
        """RFC 6675 §5: SACK can show loss before three duplicate ACKs (IsLost(SND.UNA)).

        SACK names what arrived, so unlike RFC 6582's duplicate-ACK rule this does
        not wait for SND.UNA to pass ``recover`` after a timeout.
        """
        if not self.sack_ok or not self.sacked:
            return
        if not self.in_recovery:
            if self._is_lost(self.snd_una):
                self._enter_recovery(now)
        elif (self.rxt_una_time is not None and now - self.rxt_una_time > self._rexmit_wait()
              and self._is_lost(self.snd_una)):
            self._resend_lost_retransmission(now)

    def link_queued(self, delay_ms: float, now: float) -> None:
        """The device still holds ``delay_ms`` of line time of what was handed to it (a
        slow link's own queue, ``Device.tx_queue_ms``). What waits there has not been
        sent: no answer can come for it sooner, so the retransmission timer (RFC 6298
        §5: it times a segment from its sending) and the probe timeout (RFC 8985 §7.2)
        count from when it leaves, not from when it was queued."""
        if delay_ms <= 0.0:
            return
        if self.rto_deadline is not None:
            self.rto_deadline = max(self.rto_deadline, now + delay_ms + self.rto)
        if self.tlp_deadline is not None and self.srtt is not None:
            self.tlp_deadline = max(self.tlp_deadline, now + delay_ms + self._pto())

    def _pto(self) -> float:
        """RFC 8985 §7.2: 2*SRTT, plus the peer's delayed-ACK time with one segment out."""
        flight = seq_diff(self.snd_max, self.snd_una)
        return max(2.0 * (self.srtt or 0.0), 10.0) + (
            self.cfg.delack_ms if flight <= self.mss else 0.0)

    def _arm_tlp(self, now: float) -> None:
        """RFC 8985 §7.2: a probe timeout of 2*SRTT (more with one segment out, for
        the peer's delayed ACK), so a lost tail costs a round trip, not an RTO."""
        flight = seq_diff(self.snd_max, self.snd_una)
        if (flight <= 0 or self.in_recovery or self.srtt is None or self.tlp_sent
                or not self.cfg.tail_loss_probe):
            self.tlp_deadline = None
            return
        self.tlp_deadline = now + self._pto()

    def _tail_loss_probe(self, now: float) -> None:
        """Send the last segment again: its ACK (or SACK) tells what the tail lost."""
        if self.snd_una == self.snd_max or self.in_recovery or self.state not in SYNCHRONIZED:
            return
        data_end = self.fin_seq if self.fin_seq is not None else self.snd_max
        start = seq_add(data_end, -min(self.mss, seq_diff(data_end, self.snd_una)))
        if seq_lt(start, data_end):
            self.tlp_sent = True
            self.stats["tail_loss_probes"] = self.stats.get("tail_loss_probes", 0) + 1
            self._retransmit(start, now)

    def _rexmit_wait(self) -> float:
        """How long a retransmission of SND.UNA may go unanswered in recovery (ms)."""
        return max(2.0 * (self.srtt or 1.0) + 4.0 * self.rttvar, 5.0)

    def _resend_lost_retransmission(self, now: float) -> None:
        """A retransmission can be lost too. When SACKs for later data show it did not
        arrive in time, send it again rather than wait for the RTO: the idea of RACK
        (RFC 8985), applied to SND.UNA, on an ACK or on its own short timer."""
        self.stats["lost_retransmits"] = self.stats.get("lost_retransmits", 0) + 1
        self._retransmit(self.snd_una, now)

    def _enter_recovery(self, now: float) -> None:
        """Fast retransmit (RFC 5681 §3.2; RFC 6675 §5 with SACK, RFC 6582 without)."""
        self.in_recovery = True
        self.recover = self.snd_max
        self.cc.on_loss(seq_diff(self.snd_max, self.snd_una), self.mss)
        if self.sack_ok:
            self.cc.cwnd = self.cc.ssthresh  # RFC 6675: the pipe, not inflation, paces sending
        self.stats["fast_retransmits"] += 1
        self.high_rxt = seq_add(self.snd_una, self._retransmit(self.snd_una, now))

    def _retransmit(self, start: int, now: float) -> int:
        """Resend up to one MSS from ``start``, stopping at the next SACKed block."""
        n = min(self.mss, seq_diff(self.snd_max, start))
        for a, _ in self.sacked:
            if seq_lt(start, a):
                n = min(n, seq_diff(a, start))
                break
        off = seq_diff(start, self.snd_una)
        data = memoryview(self.sndbuf)[off:off + n]
        if not data:
            return 0
        if self.rtt_seq is not None and seq_le(start, self.rtt_seq) and seq_lt(
                self.rtt_seq, seq_add(start, len(data))):
            self.rtt_seq = None  # Karn (RFC 6298 §3): no sample from a retransmitted segment
        if off == 0:
            self.rxt_una_time = now
            if self.in_recovery and self.sack_ok:
                self.rack_deadline = now + self._rexmit_wait()
        self._emit(start, self.rcv_nxt, ACK | (PSH if off + n == len(self.sndbuf) else 0), data)
        self.stats["retransmits"] += 1
        if self.rto_deadline is None:
            self.rto_deadline = now + self.rto
        return len(data)

    def _sacked_above(self, seq: int) -> tuple[int, int]:
        """(SACKed bytes, SACKed blocks) above ``seq``."""
        nbytes = nblocks = 0
        for a, b in self.sacked:
            if seq_lt(seq, b):
                nbytes += seq_diff(b, a if seq_lt(seq, a) else seq)
                nblocks += 1
        return nbytes, nblocks

    def _is_lost(self, seq: int) -> bool:
        """RFC 6675 §4 IsLost: DupThresh SACKed segments' worth lies above ``seq``."""
        nbytes, nblocks = self._sacked_above(seq)
        thresh = self._dupthresh()
        return nblocks >= thresh or nbytes > (thresh - 1) * self.mss

    def _next_hole(self) -> tuple[int, int] | None:
        """RFC 6675 §4 NextSeg rule 1: the first unSACKed range past HighRxt that is lost."""
        if not self.sacked:
            return None
        start = self.high_rxt if seq_lt(self.snd_una, self.high_rxt) else self.snd_una
        for a, b in self.sacked:
            if seq_le(a, start) and seq_lt(start, b):
                start = b
            elif seq_lt(start, a):
                return (start, seq_diff(a, start)) if self._is_lost(start) else None
        return None

    def _pipe(self) -> int:
        """RFC 6675 §4 SetPipe, with every hole below the highest SACK taken as lost."""
        highest = self.sacked[-1][1] if self.sacked else self.snd_una
        pipe = max(seq_diff(self.snd_nxt, highest), 0)  # sent beyond what the peer reported
        if seq_lt(self.snd_una, self.high_rxt):  # plus retransmissions still out
            pipe += seq_diff(self.high_rxt, self.snd_una) - self._sacked_between(
                self.snd_una, self.high_rxt)
        return pipe

    def _sacked_between(self, lo: int, hi: int) -> int:
        total = 0
        for a, b in self.sacked:
            a2 = a if seq_lt(lo, a) else lo
            b2 = b if seq_lt(b, hi) else hi
            if seq_lt(a2, b2):
                total += seq_diff(b2, a2)
        return total

    def _recovery_output(self, now: float) -> bool:
        """Send during SACK recovery while the pipe has room (RFC 6675 §5 step 4)."""
        sent = False
        for _ in range(64):  # bounded: one ACK never releases more than a window
            if min(self.cc.cwnd, self._flight_cap()) - self._pipe() < self.mss:
                break
            hole = self._next_hole()
            if hole is not None:
                n = self._retransmit(hole[0], now)
                if n == 0:
                    break
                self.high_rxt = seq_add(hole[0], n)
                sent = True
                continue
            flight = seq_diff(self.snd_nxt, self.snd_una)
            n = min(self.mss, len(self.sndbuf) - flight, self.snd_wnd - flight)
            if n <= 0 or not seq_le(self.snd_max, self.snd_nxt):
                break
            self._emit(self.snd_nxt, self.rcv_nxt, ACK, memoryview(self.sndbuf)[flight:flight + n])
            self.snd_nxt = self.snd_max = seq_add(self.snd_nxt, n)
            sent = True
        return sent

    def _take_sack(self, blocks: list[tuple[int, int]]) -> bool:
        """Merge valid SACK blocks into the scoreboard; ignore ones that lie (RFC 2018 §4).

        Returns whether the scoreboard learned something new.
        """
        before = self._sacked_between(self.snd_una, self.snd_max)
        for left, right in blocks:
            if seq_le(right, self.snd_una) or (seq_lt(left, self.snd_una)
                                               and seq_le(right, self.snd_max)):
                self.stats["dsack"] = self.stats.get("dsack", 0) + 1  # RFC 2883: a duplicate
                continue
            if not (seq_lt(left, right) and seq_le(right, self.snd_max)):
                self.stats["sack_invalid"] = self.stats.get("sack_invalid", 0) + 1
                continue
            merged = sorted([*self.sacked, (left, right)],
                            key=lambda r: seq_diff(r[0], self.snd_una))
            out: list[tuple[int, int]] = []
            for a, b in merged:
                if out and seq_le(a, out[-1][1]):
                    if seq_lt(out[-1][1], b):
                        out[-1] = (out[-1][0], b)
                else:
                    out.append((a, b))
            self.sacked = out[:32]
        return self._sacked_between(self.snd_una, self.snd_max) > before

    def _receive(self, seg: Segment, now: float) -> None:
        """Take in-window data and a FIN (RFC 9293 §3.10.7.4, seventh and eighth checks)."""
        if self.orphaned and seg.payload and seq_lt(self.rcv_nxt, seq_add(seg.seq,
                                                                              len(seg.payload))):
            self.stats["data_after_close"] = self.stats.get("data_after_close", 0) + 1
            self.abort(now, errno.ECONNRESET)  # RFC 1122 §4.2.2.13: nobody will read it
            return
        data = seg.payload
        seq = seg.seq
        fin = bool(seg.flags & FIN)
        skip = seq_diff(self.rcv_nxt, seq)
        if skip > 0:  # already have the start
            data = data[skip:]
            seq = self.rcv_nxt
        room = max(seq_diff(self.rcv_adv, seq), 0)
        if len(data) > room:
            data = data[:room]
            fin = False  # the FIN lies beyond what we can take
        bud = self.budget
        if data and (bud.pressure or bud.held + len(data) > bud.high) and (
                len(data) > self._rcv_room()):  # (otherwise the window alone decides)
            data, fin = self._rcv_over_budget(seq, data, fin)
        if seq == self.rcv_nxt:
            if data:
                self.rcvbuf += data
                self.rcv_nxt = seq_add(self.rcv_nxt, len(data))
                self.events |= SocketEvent.RD
            if self.ooo:
                self._drain_ooo()
                self.ack_now = True  # a filled hole is acknowledged at once (RFC 5681 §4.2)
            if fin or self.ooo_fin == self.rcv_nxt:
                self._take_fin(now)
                return
            if data:
                # ACK at least every second full-sized segment, else within delack_ms
                # (RFC 5681 §4.2); "full-sized" is the largest the peer has sent.
                self.rcv_mss = max(self.rcv_mss, len(data))
                self.unacked_bytes += len(data)
                if self.unacked_bytes >= 2 * self.rcv_mss:
                    self.ack_now = True
                elif self.delack_deadline is None:
                    self.delack_deadline = now + self.cfg.delack_ms
        else:  # a hole before it: keep it, say so at once with a duplicate ACK and SACK
            if data and not self.ooo.add(seq, data, self.rcv_nxt):
                self.stats["ooo_dropped"] = self.stats.get("ooo_dropped", 0) + 1
            if fin:
                self.ooo_fin = seq_add(seq, len(data))
            self.ack_now = True

    def _rcv_over_budget(self, seq: int, data: memoryview, fin: bool
                         ) -> tuple[memoryview, bool]:
        """Memory is short: keep what the budget allows of in-order data (after letting
        out-of-order data go, which RFC 2018 §8 allows), none of out-of-order data. The
        window we offered stays (RFC 9293 §3.8.6): the peer sends the rest again."""
        if seq == self.rcv_nxt and self.ooo:
            self._count("ooo_pruned")
            self.ooo.clear()
            self._account()
        room = self._rcv_room() if seq == self.rcv_nxt else 0
        if len(data) > room:
            self._count("rcv_mem_dropped")
            data, fin = data[:room], False
            self.ack_now = True  # tell the peer where we are (and the window we offer now)
        return data, fin

    def _drain_ooo(self) -> None:
        """Move data that now continues RCV.NXT into the receive buffer."""
        nxt = self.ooo.drain(self.rcv_nxt, self.rcvbuf)
        if nxt != self.rcv_nxt:
            self.rcv_nxt = nxt
            self.events |= SocketEvent.RD

    def _take_fin(self, now: float) -> None:
        self.rcv_nxt = seq_add(self.rcv_nxt, 1)
        self.fin_received = True
        self.ooo.clear()
        self.ooo_fin = None
        self.ack_now = True
        self.events |= SocketEvent.CLOSE | SocketEvent.RD
        if self.state == State.ESTABLISHED:
            self.state = State.CLOSE_WAIT
        elif self.state == State.FIN_WAIT_1:
            if self._fin_acked(self.snd_una):
                self._enter_time_wait(now)
            else:
                self.state = State.CLOSING
        elif self.state == State.FIN_WAIT_2:
            self._enter_time_wait(now)

    # -- sending -------------------------------------------------------------------------
    def _unsent(self) -> int:
        return len(self.sndbuf) - seq_diff(self.snd_nxt, self.snd_una)

    def output(self, now: float) -> None:
        """Send what the windows and Nagle allow, then any ACK that is owed."""
        sent_any = False
        if self.state in (State.ESTABLISHED, State.CLOSE_WAIT, State.FIN_WAIT_1,
                          State.CLOSING, State.LAST_ACK):
            if self.in_recovery and self.sack_ok:
                sent_any = self._recovery_output(now)
                if self._unsent() <= 0 and self.fin_queued and not self.fin_sent:
                    sent_any = self._output_data(now) or sent_any
            else:
                sent_any = self._output_data(now)
        if self.ack_now and not sent_any and self.state in SYNCHRONIZED:
            self._emit(self.snd_nxt, self.rcv_nxt, ACK, b"")
        if self.state != State.CLOSED and self.snd_una != self.snd_max and \
                self.rto_deadline is None and self.persist_deadline is None:
            self.rto_deadline = now + self.rto

    def _output_data(self, now: float) -> bool:
        sent = False
        while True:
            flight = seq_diff(self.snd_nxt, self.snd_una)
            unsent = len(self.sndbuf) - flight
            # Limited transmit (RFC 3042): each of the first two duplicate ACKs lets
            # one new segment out, so a small window can still draw three.
            extra = min(self.dupacks, 2) * self.mss if not self.in_recovery else 0
            wnd = min(self.snd_wnd, self.cc.cwnd + extra, self._flight_cap())
            if unsent <= 0:
                if self.fin_queued and not self.fin_sent and flight == len(self.sndbuf):
                    self._emit(self.snd_nxt, self.rcv_nxt, FIN | ACK, b"")
                    self.fin_sent = True
                    self.fin_seq = self.snd_nxt
                    self.snd_nxt = seq_add(self.snd_nxt, 1)
                    self.snd_max = self._max(self.snd_max, self.snd_nxt)
                    sent = True
                break
            avail = wnd - flight
            if self.snd_wnd == 0:
                if flight == 0 and self.persist_deadline is None:
                    self._arm_persist(now)
                break
            if avail <= 0:
                break
            if self.dev_queue_ms is not None and not self._device_room(now, sent):
                break
            n = min(self.mss, unsent, avail)
            if n == self.mss and self.tso_max:
                n = min(self._tso_bytes(), unsent, avail)  # the device cuts it to the MSS
            if n < self.mss and n < unsent:
                # Sender silly-window avoidance (RFC 9293 §3.8.6.2.1).
                if flight > 0 and n < self.max_snd_wnd // 2:
                    break
            elif n < self.mss and flight > 0 and not self.nodelay and not self.fin_queued:
                break  # Nagle (RFC 896): one small segment in flight at a time
            last = n == unsent
            flags = ACK | (PSH if last else 0)
            fin = last and self.fin_queued
            if fin:
                flags |= FIN
            self._emit(self.snd_nxt, self.rcv_nxt, flags,
                       memoryview(self.sndbuf)[flight:flight + n])
            if seq_lt(self.snd_nxt, self.snd_max):
                self.stats["retransmits"] += 1  # going back over data after a timeout
            elif self.rtt_seq is None and not self.ts_ok:
                self.rtt_seq, self.rtt_time = self.snd_nxt, now
            if fin:
                self.fin_sent = True
                self.fin_seq = seq_add(self.snd_nxt, n)
            self.snd_nxt = seq_add(self.snd_nxt, n + (1 if fin else 0))
            self.snd_max = self._max(self.snd_max, self.snd_nxt)
            sent = True
            if self.rto_deadline is None:
                self.rto_deadline = now + self.rto
            if self.tlp_deadline is None:
                self._arm_tlp(now)
        return sent

    def _tso_bytes(self) -> int:
        """The most data one segment may carry for the device to cut: whole MSS-sized
        pieces. Only when the MSS fills the MTU, as the device cuts at the MTU (a peer
        that asked for less gets segments of its size, one by one)."""
        opts = tcp.TS_OPTION_LEN if self.ts_ok else 0
        if self.mss + opts < self.mss_local:
            return self.mss
        room = self.tso_max - IP_TCP_HEADERS - TCP_OPTIONS_MAX
        return max(room // self.mss, 1) * self.mss

    def _device_room(self, now: float, sent: bool) -> bool:
        """May one more data segment go to a slow link's device now? Only while it holds
        under ``device_queue_ms`` of line time, one segment per look (what this call
        emits reaches the device after it: the next look, at once, sees it there). So
        a window larger than the device's queue waits here instead of being refused
        there (a refusal is a loss to repair), and the line still never idles (the
        spirit of Linux's TCP Small Queues)."""
        if sent:
            self.queue_deadline = now
            return False
        assert self.dev_queue_ms is not None
        held = self.dev_queue_ms()
        if held < self.cfg.device_queue_ms:
            return True
        self.queue_deadline = now + held - self.cfg.device_queue_ms
        return False

    @staticmethod
    def _max(a: int, b: int) -> int:
        return b if seq_lt(a, b) else a

    def _arm_persist(self, now: float) -> None:
        delay = min(self.rto * (1 << min(self.persist_backoff, 16)), self.cfg.persist_max_ms)
        self.persist_deadline = now + max(delay, self.cfg.rto_min_ms)
        self.rto_deadline = None

    def _send_syn(self, now: float, ack: bool) -> None:
        ts = (self._ts_now(now), self.ts_recent if ack else 0) if (
            self.cfg.timestamps and (not ack or self.ts_ok)) else None
        opts = tcp.build_options(
            mss=self.mss_local,
            wscale=self.rcv_wscale if self.cfg.window_scaling and (not ack or self.peer_ws)
            else None,
            sack_ok=self.cfg.sack and (not ack or self.sack_ok),
            ts=ts,
        )
        wnd = self.syn_wnd = min(self._rcv_space(), 0xFFFF)
        hdr = tcp.header(self.local[0], self.remote[0], self.local[1], self.remote[1], self.iss,
                         self.rcv_nxt if ack else 0, SYN | (ACK if ack else 0), wnd, opts, b"")
        self.outbox.append((hdr, b""))
        self.stats["segs_out"] += 1
        if ack:  # before the peer's SYN there is no RCV.NXT to measure a window from
            self.rcv_adv = seq_add(self.rcv_nxt, wnd)
            self.last_ack_sent = self.rcv_nxt  # RFC 7323 §4.3 compares against it
        self.snd_nxt = seq_add(self.iss, 1)
        self.snd_max = self._max(self.snd_max, self.snd_nxt)
        if self.rtt_seq is None and self.retries == 0:
            self.rtt_seq, self.rtt_time = self.iss, now
        self.rto_deadline = now + self.rto

    def _take_syn_options(self, seg: Segment, now: float) -> None:
        # A hostile MSS option must not shrink segments to nothing (Linux: TCP_MIN_SND_MSS).
        self.mss = max(min(seg.mss or tcp.DEFAULT_MSS, self.mss_local), MIN_SND_MSS)
        if self.cfg.window_scaling and seg.wscale is not None:
            self.peer_ws = True
            self.snd_wscale = seg.wscale
            if self.state == State.SYN_RECEIVED:
                self.rcv_wscale = self._wscale_for(self._rcv_cap())
        else:
            self.snd_wscale = 0
            self.rcv_wscale = 0
        self.sack_ok = self.cfg.sack and seg.sack_ok
        self.ts_ok = self.cfg.timestamps and seg.ts is not None
        if self.ts_ok and seg.ts is not None:
            self.ts_recent = seg.ts[0]
            self.mss = max(self.mss - tcp.TS_OPTION_LEN, MIN_SND_MSS)
        self.cc = self.cfg.congestion(self.mss)

    def _flight_cap(self) -> int:
        """Bytes we may have in flight whatever the windows say (``snd_clamp_segs``)."""
        segs = self.snd_clamp_segs
        return 1 << 62 if segs is None else segs * self.mss

    def _rcv_cap(self) -> int:
        """The largest window this connection offers: the receive buffer, within the clamp.

        The window scale is picked for it (RFC 7323 §2.3: fixed in the SYN), so a
        clamped window stays exact rather than rounded down to a coarse scale.
        """
        clamp = self.rcv_clamp
        return self.cfg.rcvbuf if clamp is None else min(self.cfg.rcvbuf, clamp)

    @staticmethod
    def _wscale_for(buf: int) -> int:
        shift = 0
        while (0xFFFF << shift) < buf and shift < tcp.MAX_WSCALE:
            shift += 1
        return shift

    def _ts_now(self, now: float) -> int:
        return (int(now) + self.ts_offset) & 0xFFFFFFFF  # a 1 ms timestamp clock

    def _rcv_space(self) -> int:
        """The window we may offer from RCV.NXT: the buffer's room, within the budget
        and within what the device can take in one burst (``rcv_clamp``)."""
        space = max(self.cfg.rcvbuf - len(self.rcvbuf), 0)
        bud = self.budget
        if bud.pressure or bud.held > bud.high - space:  # only then can the budget say less
            space = min(space, self.ooo.nbytes + self._rcv_room())
        if self.rcv_clamp is not None:
            space = min(space, self.rcv_clamp)
        return space

    def _advertise(self) -> int:
        """The window field to send, never shrinking the right edge (RFC 9293 §3.8.6.2.2):
        under memory pressure the offered space shrinks, the edge only stops moving."""
        space = self._rcv_space()
        edge = seq_add(self.rcv_nxt, space)
        grow = seq_diff(edge, self.rcv_adv)
        if grow >= min(self._rcv_cap() // 2, self.mss_local) or seq_lt(self.rcv_adv,
                                                                        self.rcv_nxt):
            self.rcv_adv = edge
        wnd = max(seq_diff(self.rcv_adv, self.rcv_nxt), 0) >> self.rcv_wscale
        return min(wnd, 0xFFFF)

    def _maybe_window_update(self, now: float) -> None:
        before = self.rcv_adv
        self._advertise()
        if seq_diff(self.rcv_adv, before) >= 2 * self.mss_local or (
                seq_diff(before, self.rcv_nxt) < self.mss_local <= seq_diff(self.rcv_adv,
                                                                              self.rcv_nxt)):
            self.ack_now = True
            self.output(now)

    def _sack_blocks(self) -> list[tuple[int, int]] | None:
        """Up to 3 (4 without timestamps) blocks, the newest first (RFC 2018 §4)."""
        if not self.sack_ok or not self.ooo:
            return None
        return self.ooo.sack_blocks(3 if self.ts_ok else 4)

    def _emit(self, seq: int, ack: int, flags: int, payload: memoryview | bytes) -> None:
        if flags & ACK:
            wnd = self._advertise()
            self.last_ack_sent = ack
            self.ack_now = False
            self.delack_deadline = None
            self.unacked_bytes = 0
        else:
            wnd = 0
        ts = (self._ts_now(self.now), self.ts_recent) if self.ts_ok else None
        sack = self._sack_blocks() if flags & ACK else None
        if sack:  # options come out of the MSS (RFC 9293 §3.7.1): SACK only where it fits
            room = (self.mss - len(payload) - 4) // 8
            sack = sack[:max(room, 0)]
        opts = tcp.build_options(ts=ts, sack=sack)
        hdr = tcp.header(self.local[0], self.remote[0], self.local[1], self.remote[1], seq, ack,
                         flags, wnd, opts, payload,
                         self.tx_partial or len(payload) > self.mss)  # cut and completed later
        self.outbox.append((hdr, payload))
        self.stats["segs_out"] += 1

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 §3.2/§4.2/§5.2, rate-limited (§7)."""
        if self._ack_allowed(now, "challenge_acks"):
            self._emit(self.snd_nxt, self.rcv_nxt, ACK, b"")

    def _oow_ack(self, seg: Segment, now: float) -> None:
        """An unacceptable segment draws an ACK (RFC 9293 §3.10.7.4, RFC 7323 §5.3),
        rate-limited like a challenge ACK (RFC 5961 §5.2, §7), unless its sender is in
        step with us: a zero-window probe at RCV.NXT (RFC 9293 §3.8.6.1), a keep-alive
        or a retransmitted FIN just below it (RFC 1122 §4.2.3.6). A blind sender cannot
        know RCV.NXT, so these exemptions cost it the whole sequence space."""
        in_step = len(seg.payload) <= 1 and seq_diff(self.rcv_nxt, seg.seq) in (0, 1)
        if in_step or self._ack_allowed(now, "oow_acks"):
            self.ack_now = True

    def _ack_allowed(self, now: float, what: str) -> bool:
        """One per ``invalid_ack_interval_ms`` per connection, and the stack's
        ``challenge_acks_per_s`` over all (``tcp_budget``); refusals are counted."""
        last = self.last_oow_ack
        if last is not None and 0 <= now - last < self.cfg.invalid_ack_interval_ms:
            self._count(what + "_limited")
            return False
        self.last_oow_ack = now
        if not self.budget.challenge_ack_ok(now):
            self._count(what + "_limited_stack")
            return False
        self.stats[what] = self.stats.get(what, 0) + 1
        return True

    def _free_sndbuf(self, n: int) -> None:
        try:
            del self.sndbuf[:n]
        except BufferError:  # a view of it is still alive somewhere: copy instead
            self.sndbuf = bytearray(memoryview(self.sndbuf)[n:])

    def _rtt_sample(self, r: float) -> None:
        """RFC 6298 §2.2-2.3, with a clock granularity G of 1 ms."""
        if self.srtt is None:
            self.srtt, self.rttvar = r, r / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
            self.srtt = 0.875 * self.srtt + 0.125 * r
        self.rto = min(max(self.srtt + max(1.0, 4 * self.rttvar), self.cfg.rto_min_ms),
                       self.cfg.rto_max_ms)

    def _enter_time_wait(self, now: float) -> None:
        self.state = State.TIME_WAIT
        self._release_buffers()
        self._leave_budget()
        self.rto_deadline = self.persist_deadline = self.keepalive_deadline = None
        self.rack_deadline = self.tlp_deadline = None
        self.timewait_deadline = now + 2 * self.cfg.msl_ms
        self.events |= SocketEvent.FIN

    def _become_closed(self, err: int) -> None:
        was = self.state
        self.state = State.CLOSED
        self._release_buffers(keep_rcv=err == 0)
        self._leave_budget()
        self.rto_deadline = self.delack_deadline = self.persist_deadline = None
        self.keepalive_deadline = self.timewait_deadline = None
        self.rack_deadline = self.tlp_deadline = self.queue_deadline = None
        if err:
            self.error = err
            self.events |= SocketEvent.ERR
        if was != State.CLOSED:
            self.events |= SocketEvent.FIN

    def _release_buffers(self, keep_rcv: bool = True) -> None:
        self.sndbuf = bytearray()
        self.ooo.clear()
        self.sacked.clear()
        if not keep_rcv:
            self.rcvbuf = bytearray()
        self._account()

    def info(self) -> dict[str, object]:
        """Per-connection figures, like Linux's tcp_info."""
        return {
            "state": self.state.value, "mss": self.mss, "cwnd": self.cc.cwnd,
            "ssthresh": self.cc.ssthresh, "srtt_ms": self.srtt, "rttvar_ms": self.rttvar,
            "rto_ms": self.rto, "snd_wnd": self.snd_wnd, "snd_wscale": self.snd_wscale,
            "rcv_wscale": self.rcv_wscale, "timestamps": self.ts_ok, "sack": self.sack_ok,
            "rcv_clamp": self.rcv_clamp, "snd_clamp_segs": self.snd_clamp_segs,
            **self.stats,
        }

"""PPP over a serial line as a hilkit ``Device`` (RFC 1661/1662 over pyserial).

``PppDevice`` owns the serial port and a sans-I/O ``PppLink``; it moves bytes between
them and never blocks. What a frame costs: an IP packet is framed once by the link
(HDLC escaping, FCS) into ``take_output`` bytes that go to the port in one
``write``; what the OS does not take at once waits in a bounded pending buffer,
flushed on every later call (and, while anything waits, ``next_deadline`` asks the
stack to come back soon). Received bytes are read in one non-blocking ``read`` per
chunk and fed whole to the link, whose packets wait in a bounded queue for ``poll``.

Bring-up: with a ``ChatScript`` the modem dialogue runs first (``chat_outcome`` says
how it ended), then the link's lower layer is brought up (``line_up``); without one,
at once. ``link_config()`` reports what IPCP negotiated (our address, the peer, the
DNS servers) for the stack to apply, the same object until it changes. With
``watch_dcd`` a dropped carrier (DCD) takes the link's lower layer down.

With ``persist_ms`` a link that has ended (LCP closed: the peer terminated it, or its
echoes went unanswered) while the port is open is brought up again that many ms later,
as pppd's ``persist`` does; without it the link stays DEAD until the device is made again.

``close()`` sends LCP Terminate-Request and waits for its answer (at most
``CLOSE_WAIT_S``), hangs up (DTR dropped, ``+++``/``ATH``, or nothing), closes the port.

Serial ports: anything ``serial.serial_for_url`` opens (``/dev/ttyUSB0``,
``socket://host:port``, ``rfc2217://``, ``loop://``). A POSIX port is used through its
descriptor (non-blocking ``os.read``/``os.write``; the stack sleeps on it); a URL
handler without one is polled (``fileno()`` is None). On a tty the device paces its
writes by the baud rate so the OS holds no more than ``line_backlog_s`` of line time
(plus one frame): the rest waits in the device's own bounded buffer, where ``send``
refuses IP beyond ``tx_buffer_bytes`` (a pty or UART queue would otherwise hide
seconds of data from TCP's round-trip estimate). ``tx_queue_ms()`` tells the stack how
much line time all that still is, so TCP's retransmission and probe timers count from
when a segment goes on the line, not from when it was queued.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import select
import time
from collections import deque
from typing import Any, Final, Literal

import serial  # type: ignore[import-untyped]  # pyserial ships no types

from hilkit.drivers.ppp.chat import ChatDone, ChatFailed, ChatRunner, ChatScript, hangup_script
from hilkit.drivers.ppp.link import PppConfig, PppLink, Terminated
from hilkit.port.clock import Clock, MonotonicClock
from hilkit.port.device import DeviceClosed, DeviceCounters, LinkConfig, LinkType
from hilkit.port.errors import HardwareNotFound

__all__ = ["STAT_NAMES", "PppDevice"]

log = logging.getLogger(__name__)

Hangup = Literal["dtr", "ath", "none"]

READ_CHUNK: Final = 4096  # bytes per read; a 115200 baud line brings ~11.5 per ms
READ_MAX_PER_POLL: Final = 64 * 1024  # a busy line cannot keep poll from returning
RX_QUEUE_PACKETS: Final = 64  # received packets held for poll before they are dropped
# Pending output beyond which IP packets are refused, by default: half a second of line
# time, at least two full frames. Measured against slirp at 115200 baud: TCP goodput
# hilkit->slirp 60-70% of the line with this, under 50% with 16 KiB (a deeper queue
# makes TCP's timers fire spuriously).
TX_BUFFER_S: Final = 0.5
TX_BUFFER_MIN: Final = 2 * 1600
TX_CONTROL_SLACK: Final = 4096  # more room for the link's own frames (LCP, IPCP)
FLUSH_SOON_MS: Final = 10.0  # how soon to come back while output waits
LINE_BACKLOG_S: Final = 0.05  # line time a tty's own output queue may hold (see _flush)
FRAME_ALLOWANCE: Final = 3 * 1024  # beyond it: one MTU frame, escaped, goes out whole
DCD_CHECK_MS: Final = 250.0  # how often the carrier is looked at when watched
CLOSE_WAIT_S: Final = 1.0  # Terminate-Request out and its Ack back, at most
DTR_DROP_S: Final = 0.2  # DTR held low so a modem sees it (V.24 needs some ms)

# Driver counters beyond DeviceCounters (``PppDevice.stats``), for the runner.
STAT_NAMES: Final = (
    "tx_pending_bytes", "tx_overflow_bytes", "tx_refused", "serial_read_bytes",
    "serial_write_bytes", "carrier_lost", "chat_failures", "relinks",
)

# The link's decoder counters of damaged frames (hdlc.FrameDecoder): the device's rx_errors.
_LINE_ERRORS: Final = tuple(f"hdlc_rx_{k}" for k in (
    "bad_fcs", "too_short", "too_long", "aborts", "bad_address_control", "bad_protocol"))

_HINT: Final = ("check the port: ls -l {port}; your user needs the dialout group "
                "(id; sudo usermod -aG dialout $USER, then log in again); "
                "who holds it: fuser -v {port}")


def open_port(port: str, *, baudrate: int, rtscts: bool) -> serial.SerialBase:
    """Open ``port`` (a path or a pyserial URL) non-blocking; ``HardwareNotFound`` if not."""
    hint = _HINT.format(port=port)
    kw: dict[str, Any] = {"baudrate": baudrate, "rtscts": rtscts, "timeout": 0,
                          "write_timeout": 0}
    if "://" not in port:
        kw["exclusive"] = True  # flock: a second user (ModemManager, a getty) is refused
    try:
        return serial.serial_for_url(port, **kw)
    except serial.SerialException as e:
        code = e.errno
        if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            problem = "no such serial port"
        elif code in (errno.EACCES, errno.EPERM):
            problem = "permission denied"
        elif code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "lock" in str(e):
            problem = "port is busy (another program has it open)"
        else:
            problem = f"cannot open: {e}"
        raise HardwareNotFound(port, problem, hint) from e
    except (OSError, ValueError) as e:  # a bad URL, a socket:// peer that is not there
        raise HardwareNotFound(port, f"cannot open: {e}", hint) from e


class PppDevice:
    """A PPP link on a serial port, as the stack sees it (``LinkType.RAW_IP``).

    ``port``: a device path or pyserial URL, opened at ``baudrate`` (``rtscts``: hardware
    flow control); ``HardwareNotFound`` when it is absent, busy or not allowed.
    ``config``: what the link negotiates (``PppConfig``: credentials, addresses, VJ,
    timers). ``chat``: a modem dialogue to run before PPP. ``hangup``: on ``close``,
    drop DTR (``"dtr"``), escape and ``ATH`` (``"ath"``), or nothing. ``watch_dcd``:
    carrier loss takes the link down (and its return starts it again, chat included).
    ``default_route``: what ``link_config()`` asks of the stack. ``clock``: the stack's
    clock, for the link's timers. ``tx_buffer_bytes``/``line_backlog_s``: the output
    queue and pacing (module docstring); ``rx_queue_packets``: received packets held
    for ``poll``. ``persist_ms``: bring the link up again this long after it ended
    (None: it stays down).
    """

    link_type = LinkType.RAW_IP
    mac = None

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 115200,
        rtscts: bool = False,
        config: PppConfig | None = None,
        chat: ChatScript | None = None,
        hangup: Hangup = "dtr",
        name: str = "ppp0",
        mtu: int = 1500,
        clock: Clock | None = None,
        watch_dcd: bool = False,
        default_route: bool = True,
        tx_buffer_bytes: int | None = None,
        line_backlog_s: float | None = LINE_BACKLOG_S,
        rx_queue_packets: int = RX_QUEUE_PACKETS,
        rng: random.Random | None = None,
        persist_ms: float | None = None,
    ) -> None:
        if hangup not in ("dtr", "ath", "none"):
            raise ValueError(f"hangup {hangup!r} is not 'dtr', 'ath' or 'none'")
        self.name = name
        self.mtu = mtu
        self.port_name = port
        self.counters = DeviceCounters()
        self.clock: Clock = clock or MonotonicClock()
        self.hangup: Hangup = hangup
        self.watch_dcd = watch_dcd
        self.default_route = default_route
        self.tx_buffer_bytes = tx_buffer_bytes if tx_buffer_bytes is not None else max(
            TX_BUFFER_MIN, int(baudrate / 10 * TX_BUFFER_S))
        self.chat_script = chat
        self.chat_outcome: ChatDone | ChatFailed | None = None
        self.link = PppLink(config or PppConfig(), rng=rng)
        self._stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        self._rx: deque[bytes] = deque()
        self._rx_max = rx_queue_packets
        self._pending = bytearray()
        self._events: deque[object] = deque(maxlen=64)
        self._link_cfg: LinkConfig | None = None
        self._link_cfg_key: tuple[object, ...] | None = None
        self._closed = False
        self._own_rx_errors = 0
        self._chat: ChatRunner | None = None
        self._carrier = True
        self._next_dcd = 0.0
        self.persist_ms = persist_ms
        self._relink_at: float | None = None
        self._closing = False
        self._port = open_port(port, baudrate=baudrate, rtscts=rtscts)
        try:
            fd = self._port.fileno() if hasattr(self._port, "fileno") else None
        except Exception:  # pyserial raises on handlers that have no descriptor
            fd = None
        self._fd: int | None = fd if isinstance(fd, int) and fd >= 0 else None
        # Output pacing for a tty (None for sockets, URL handlers, or line_backlog_s None).
        self._line_rate = baudrate / 10.0  # 8N1: 10 bits a byte
        self._backlog_max: float | None = None
        if line_backlog_s is not None and self._fd is not None and os.isatty(self._fd):
            # plus a frame: one send of a full frame goes on the line at once, without
            # waiting for the next poll, as into a UART's buffer
            self._backlog_max = self._line_rate * line_backlog_s + FRAME_ALLOWANCE
        self._backlog = 0.0  # bytes the OS may still hold, by the line rate
        self._backlog_t = time.monotonic()
        if self._fd is None and port.startswith("loop://"):
            self._port.write_timeout = None  # its queue never blocks; 0 refuses everything
        self._start(self._now())

    # -- the Device contract -------------------------------------------------------------

    @property
    def link_up(self) -> bool:
        return not self._closed and bool(self.link.ip_open)

    def fileno(self) -> int | None:
        return None if self._closed else self._fd

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        if self._closed:
            raise DeviceClosed(f"{self.name} is closed")
        now = self._now()
        self._flush()
        n = len(frame)
        if n > self.mtu:
            self.counters.tx_errors += 1
            return False
        if len(self._pending) >= self.tx_buffer_bytes:
            self.counters.tx_dropped += 1
            self._stats["tx_refused"] += 1
            return False
        if not self.link.send_ip(bytes(frame), self._ms(now)):
            self.counters.tx_dropped += 1
            self._pump(now)
            return False
        self.counters.tx_frames += 1
        self.counters.tx_bytes += n
        self._pump(now)
        return True

    def poll(self, budget: int) -> list[bytes]:
        if self._closed:
            raise DeviceClosed(f"{self.name} is closed")
        now = self._now()
        self._flush()
        self._watch_carrier(now)
        got = 0
        while got < READ_MAX_PER_POLL:
            data = self._read()
            if not data:
                break
            got += len(data)
            self._input(data, now)
        if self._chat is not None:
            self._chat.poll(now)
            self._chat_step(now)
        if self._relink_at is not None and now >= self._relink_at:
            self._relink_at = None
            self._stats["relinks"] += 1
            log.info("%s: bringing the link up again (persist)", self.name)
            self._start(now)
        self._pump(now)
        out: list[bytes] = []
        while self._rx and len(out) < budget:
            out.append(self._rx.popleft())
        return out

    def next_deadline(self) -> float | None:
        if self._closed:
            return None
        cands: list[float] = []
        d = self.link.next_deadline()
        if d is not None:
            cands.append(float(d))
        if self._chat is not None:
            c = self._chat.next_deadline()
            if c is not None:
                cands.append(c)
        now = self._now()
        if self._pending or self.link.output_pending:
            cands.append(now + self._flush_wait_ms())
        if self._rx:
            cands.append(now)
        if self.watch_dcd:
            cands.append(max(self._next_dcd, now))
        if self._relink_at is not None:
            cands.append(self._relink_at)
        return min(cands, default=None)

    def tx_queue_ms(self) -> float:
        """Line time (ms) of output this device has accepted and not yet put on the line:
        its pending buffer, the link's unframed output, and on a paced tty what the OS
        still holds by the line rate. Optional in the contract: TCP counts its timers
        from when a segment leaves, not from when it was handed over (``tcp_layer``)."""
        if self._closed:
            return 0.0
        held = float(len(self._pending) + self.link.output_pending)
        if self._backlog_max is not None:
            held += max(0.0, self._backlog - (time.monotonic() - self._backlog_t)
                        * self._line_rate)
        return 1000.0 * held / self._line_rate

    def link_config(self) -> LinkConfig | None:
        """What IPCP negotiated, None while IP is not open; the same object until it
        changes."""
        res = self.link.ipcp_result if self.link_up else None
        if res is None or res.address is None:
            self._link_cfg, self._link_cfg_key = None, None
            return None
        dns = tuple(str(d) for d in res.dns if int(d) != 0)  # an Acked 0.0.0.0 is none
        peer = res.peer_address
        key = (str(res.address), None if peer is None else str(peer), dns)
        if key != self._link_cfg_key:
            self._link_cfg_key = key
            self._link_cfg = LinkConfig(address=key[0], peer=key[1], dns=dns,
                                        default_route=self.default_route)
        return self._link_cfg

    def close(self) -> None:
        if self._closed:
            return
        self._closing = True
        self._relink_at = None
        try:
            self._terminate()
            self._hang_up()
        finally:
            self._closed = True
            with contextlib.suppress(Exception):
                self._port.close()

    # -- more for people and the runner ----------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """The driver's counters and the link's (``link.*``)."""
        out = dict(self._stats)
        out["tx_pending_bytes"] = len(self._pending)
        for k, v in self.link.stats.items():
            out[f"link.{k}"] = v
        return out

    def take_events(self) -> list[object]:
        """The link's events (LinkUp, LinkDown, ...) since the last call (the last 64)."""
        out = list(self._events)
        self._events.clear()
        return out

    @property
    def phase(self) -> object:
        return self.link.phase

    # -- inside ------------------------------------------------------------------------

    def _now(self) -> float:
        return self.clock.now_ms()

    def _ms(self, now: float) -> int:
        return int(now)

    def _start(self, now: float) -> None:
        """Dial (if there is a chat) or bring the link's lower layer up at once."""
        if self.chat_script is not None:
            self._chat = self.chat_script.runner(now)
            self._chat_step(now)
        else:
            self.link.line_up(self._ms(now))
            self._pump(now)

    def _chat_step(self, now: float) -> None:
        ch = self._chat
        if ch is None:
            return
        out = ch.take_output()
        if out:
            self._queue(out, control=True)
            self._flush()
        if ch.outcome is None:
            return
        self._chat = None
        self.chat_outcome = ch.outcome
        if isinstance(ch.outcome, ChatFailed):
            self._stats["chat_failures"] += 1
            log.warning("%s: %s", self.name, ch.outcome)
            return
        log.info("%s: chat done in %.0f ms (%s)", self.name, ch.outcome.elapsed_ms,
                 ch.outcome.modem_said)
        self.link.line_up(self._ms(now))
        if ch.outcome.leftover:
            self.link.receive(ch.outcome.leftover, self._ms(now))
        self._pump(now)

    def _input(self, data: bytes, now: float) -> None:
        self._stats["serial_read_bytes"] += len(data)
        if self._chat is not None:
            self._chat.feed(data, now)
            self._chat_step(now)
            return
        if self.chat_outcome is not None and isinstance(self.chat_outcome, ChatFailed):
            return  # no call: nothing on the line is PPP
        try:
            self.link.receive(data, self._ms(now))
        except Exception:  # the link is sans-I/O and should never raise; if it does, count
            self._own_rx_errors += 1
            log.exception("%s: link.receive raised", self.name)

    def _pump(self, now: float) -> None:
        """Run the link's timers, move its output to the port and its packets to the queue."""
        self.link.poll(self._ms(now))
        out = self.link.take_output()
        if out:
            self._queue(out, control=False)
        self._flush()
        for pkt in self.link.take_packets():
            if len(self._rx) >= self._rx_max:
                self.counters.rx_dropped += 1
                continue
            self._rx.append(pkt)
            self.counters.rx_frames += 1
            self.counters.rx_bytes += len(pkt)
        for ev in self.link.take_events():
            self._events.append(ev)
            log.info("%s: %s", self.name, ev)
            if (isinstance(ev, Terminated) and self.persist_ms is not None
                    and not self._closing and self._carrier):
                self._relink_at = now + self.persist_ms
        link_stats = self.link.stats
        self.counters.rx_errors = self._own_rx_errors + sum(
            link_stats.get(k, 0) for k in _LINE_ERRORS)

    def _queue(self, data: bytes, *, control: bool) -> None:
        room = self.tx_buffer_bytes + TX_CONTROL_SLACK - len(self._pending)
        if len(data) > room:  # whole frames dropped, never a part of one
            self._stats["tx_overflow_bytes"] += len(data)
            self.counters.tx_dropped += 1
            return
        self._pending += data

    def _flush(self) -> None:
        """Write pending output. On a tty no more than ``line_backlog_s`` of line time (and
        a frame) is handed to the OS: a tty's queue (4 KiB for a UART, ~18 KiB for a pty) would
        otherwise hold seconds of data at 115200 baud, which TCP reads as a long RTT and
        overshoots; the queue stays here, bounded, where ``send`` refuses beyond it."""
        if not self._pending:
            return
        view = memoryview(self._pending)
        if self._backlog_max is not None:
            t = time.monotonic()
            self._backlog = max(0.0, self._backlog - (t - self._backlog_t) * self._line_rate)
            self._backlog_t = t
            room = int(self._backlog_max - self._backlog)
            if room <= 0:
                return
            view = view[:room]
        n = self._write(view)
        view.release()
        if n:
            del self._pending[:n]
            self._stats["serial_write_bytes"] += n
            self._backlog += n

    def _flush_wait_ms(self) -> float:
        """How soon pending output can go: when the paced backlog is half drained."""
        if self._backlog_max is None:
            return FLUSH_SOON_MS
        excess = self._backlog - (self._backlog_max - FRAME_ALLOWANCE / 2)
        return max(1.0, min(FLUSH_SOON_MS, 1000.0 * excess / self._line_rate))

    def _write(self, data: memoryview) -> int:
        """Write what the OS takes now; the count. (pyserial 3.5's POSIX ``write`` spins
        on EAGAIN with ``write_timeout=0``, so a descriptor is written directly.)"""
        if self._fd is not None:
            try:
                return os.write(self._fd, data)
            except (BlockingIOError, InterruptedError):
                return 0
            except OSError:
                self.counters.tx_errors += 1
                raise
        try:
            return int(self._port.write(bytes(data)) or 0)
        except serial.SerialTimeoutException:
            return 0

    def _read(self) -> bytes:
        if self._fd is not None:
            try:
                return os.read(self._fd, READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                return b""
            except OSError as e:
                if e.errno == errno.EIO:  # a pty whose other end is closed: no line
                    return b""
                self._own_rx_errors += 1
                raise
        data = self._port.read(READ_CHUNK)
        return bytes(data)

    def _watch_carrier(self, now: float) -> None:
        if not self.watch_dcd or now < self._next_dcd:
            return
        self._next_dcd = now + DCD_CHECK_MS
        try:
            cd = bool(self._port.cd)
        except Exception:  # a pty or a URL handler without modem lines
            log.warning("%s: %s reports no carrier line; not watching DCD", self.name,
                        self.port_name)
            self.watch_dcd = False
            return
        if cd == self._carrier:
            return
        self._carrier = cd
        if not cd:
            self._stats["carrier_lost"] += 1
            log.warning("%s: carrier lost", self.name)
            self._chat = None
            self.link.line_down(self._ms(now))
        else:
            log.info("%s: carrier back", self.name)
            self._start(now)
        self._pump(now)

    def _wait_io(self, seconds: float) -> None:
        if self._fd is not None:
            want_w = [self._fd] if self._pending else []
            with contextlib.suppress(OSError, ValueError):
                select.select([self._fd], want_w, [], seconds)
        else:
            time.sleep(seconds)

    def _terminate(self) -> None:
        """LCP Terminate-Request out, and wait (bounded) for the Ack or the link to end."""
        now = self._now()
        started = self._chat is None and not isinstance(self.chat_outcome, ChatFailed)
        self._chat = None
        if not started:
            return
        try:
            self.link.close(self._ms(now), reason="device closed")
            self._pump(now)
            end = time.monotonic() + CLOSE_WAIT_S
            while time.monotonic() < end:
                self._flush()
                data = self._read()
                if data:
                    self._input(data, self._now())
                self._pump(self._now())
                if not self._pending and _phase_name(self.link.phase) == "DEAD":
                    break
                self._wait_io(0.02)
        except Exception:  # closing must go on: the port is released whatever happens
            log.exception("%s: terminating the link failed", self.name)
        self._pending.clear()

    def _hang_up(self) -> None:
        if self.hangup == "dtr":
            try:
                self._port.dtr = False
                time.sleep(DTR_DROP_S)
            except Exception:  # a pty or socket has no DTR
                log.debug("%s: %s has no DTR to drop", self.name, self.port_name)
        elif self.hangup == "ath":
            self._run_blocking(hangup_script(), limit_s=8.0)

    def _run_blocking(self, script: ChatScript, limit_s: float) -> ChatDone | ChatFailed | None:
        """Play a short script to the end (a hang-up): bounded by ``limit_s``."""
        runner = script.runner(time.monotonic() * 1000.0)  # real time: guard times are
        end = time.monotonic() + limit_s
        with contextlib.suppress(OSError):
            while runner.outcome is None and time.monotonic() < end:
                now = time.monotonic() * 1000.0
                data = self._read()
                if data:
                    runner.feed(data, now)
                runner.poll(now)
                out = runner.take_output()
                if out:
                    self._pending += out
                self._flush()
                self._wait_io(0.02)
        return runner.outcome


def _phase_name(phase: object) -> str:
    return str(getattr(phase, "name", phase))


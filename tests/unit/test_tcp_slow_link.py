"""TCP over a slow point-to-point link with a deep transmit queue, on a manual clock.

Two hilkit stacks joined by a simulated serial-like RAW_IP link: each end serialises
its frames one after another at ``rate`` bytes per ms from a bounded queue (as a PPP
device on a 115200 baud line), so a window of segments waits seconds in the sender's
device. With ``tx_queue_ms`` (how much line time the device still holds) TCP times its
retransmission and probe timers from when segments leave, and a bulk transfer has no
spurious retransmission. All times are simulated (the ManualClock), never wall-clock.
"""

from __future__ import annotations

from collections import deque

import pytest

from hilkit.port import Device, DeviceCounters, LinkType, ManualClock
from hilkit.port.middleware import DeviceMiddleware
from hilkit.stack import Stack, StackConfig, TcpConfig
from tests.memwire import tcp_connect

RATE = 11.52  # bytes per ms: 115200 baud, 8N1
PROP_MS = 5.0


class SlowLinkEnd:
    """A RAW_IP device whose frames go out one at a time at ``rate`` bytes/ms."""

    link_type = LinkType.RAW_IP
    mac = None

    def __init__(self, name: str, clock: ManualClock, rate: float, queue_bytes: int,
                 report_queue: bool) -> None:
        self.name, self.mtu, self.clock, self.rate = name, 1500, clock, rate
        self.queue_bytes = queue_bytes
        self.counters = DeviceCounters()
        self.peer: SlowLinkEnd | None = None
        self.rx: deque[tuple[float, bytes]] = deque()  # (arrival time, frame)
        self.line_free = 0.0  # when the line has sent everything accepted so far
        self.refused = 0
        self.line_busy_ms = 0.0
        if report_queue:
            self.tx_queue_ms = self._tx_queue_ms

    def _tx_queue_ms(self) -> float:
        return max(0.0, self.line_free - self.clock.now_ms())

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        now = self.clock.now_ms()
        if (self.line_free - now) * self.rate > self.queue_bytes:
            self.refused += 1
            return False
        start = max(now, self.line_free)
        self.line_free = start + len(frame) / self.rate
        self.line_busy_ms += len(frame) / self.rate
        assert self.peer is not None
        self.peer.rx.append((self.line_free + PROP_MS, bytes(frame)))
        self.counters.tx_frames += 1
        return True

    def poll(self, budget: int) -> list[bytes]:
        now = self.clock.now_ms()
        out: list[bytes] = []
        while self.rx and self.rx[0][0] <= now and len(out) < budget:
            out.append(self.rx.popleft()[1])
        return out

    def next_deadline(self) -> float | None:
        return self.rx[0][0] if self.rx else None

    @property
    def link_up(self) -> bool:
        return True

    def fileno(self) -> int | None:
        return None

    def close(self) -> None:
        pass


def transfer(size: int, report_queue: bool, queue_bytes: int = 16 * 1024,
             peer_window: int = 8760, wrapped: bool = False,
             ) -> tuple[float, dict[str, int], SlowLinkEnd]:
    """``size`` bytes from stack A to B, whose receive buffer (the window it offers) is
    ``peer_window`` (slirp's is 8760); (simulated seconds, A's connection stats, A's end).
    ``wrapped``: A's device sits inside a middleware (as a capture wraps it in a HIL run)."""
    clock = ManualClock(1000.0)
    wa = SlowLinkEnd("a", clock, RATE, queue_bytes, report_queue)
    wb = SlowLinkEnd("b", clock, RATE, queue_bytes, report_queue)
    wa.peer, wb.peer = wb, wa
    a = Stack(clock)
    b = Stack(clock, StackConfig(tcp=TcpConfig(rcvbuf=peer_window)))
    dev_a: Device = DeviceMiddleware(wa) if wrapped else wa
    a.add_device(dev_a)
    b.add_device(wb)
    a.link_add(dev_a, "10.0.0.1", "255.255.255.0")
    b.link_add(wb, "10.0.0.2", "255.255.255.0")

    def step(ms: float = 1.0) -> None:
        clock.advance(ms)
        for _ in range(3):
            a.tick()
            b.tick()

    c, child = tcp_connect(a, b, step)
    data = bytes(range(256)) * (size // 256)
    t0 = clock.now_ms()
    sent = got = 0
    while got < len(data):
        assert clock.now_ms() - t0 < 600_000, "transfer stalled"
        if sent < len(data):
            sent += c.send(data[sent:sent + 65536])
        got += len(child.recv(1 << 20))
        step()
    conn = c.conn
    assert conn is not None
    return (clock.now_ms() - t0) / 1000.0, dict(conn.stats), wa


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "wrapped"])
@pytest.mark.parametrize("peer_window", [8760, 16 * 1024])
def test_bulk_over_slow_link_has_no_spurious_retransmission(peer_window: int,
                                                            wrapped: bool) -> None:
    """The window fits in the device's queue (PppDevice refuses beyond it, which TCP
    takes as loss): the queue holds seconds of line time and no timer fires, also with
    the device inside a wrapper (a capture), which must not hide ``tx_queue_ms``."""
    size = 64 * 1024
    secs, stats, end = transfer(size, report_queue=True, queue_bytes=peer_window + 1600,
                                peer_window=peer_window, wrapped=wrapped)
    assert stats["retransmits"] == 0, stats
    assert stats["timeouts"] == 0 and stats.get("tail_loss_probes", 0) == 0, stats
    assert end.refused == 0
    # goodput against the link rate, IP+TCP headers counted as line time spent
    assert size / secs >= 0.90 * RATE * 1000, (size / secs, stats)


def test_without_queue_report_the_deep_queue_fires_timers() -> None:
    """The cause, kept visible: a device that hides its queue makes TCP time out on
    segments that merely wait in it (the first flight of 10 segments takes 1.3 s of
    line time, the RTO after a 20 ms handshake is 200 ms)."""
    _, stats, _ = transfer(32 * 1024, report_queue=False)
    assert stats["timeouts"] + stats.get("tail_loss_probes", 0) > 0, stats


def test_link_queued_pushes_timers_past_the_queue() -> None:
    from hilkit.stack.tcp_conn import Connection, TcpConfig

    conn = Connection((1, 1000), (2, 80), 0, 1500, TcpConfig(), 0.0)
    conn.rto, conn.srtt = 300.0, 20.0
    conn.snd_max = 1461
    conn.rto_deadline, conn.tlp_deadline = 300.0, 40.0
    conn.link_queued(1000.0, 0.0)
    assert conn.rto_deadline == 1300.0
    assert conn.tlp_deadline == 1040.0  # 2*SRTT after the queue drains
    conn.link_queued(0.0, 10.0)  # an empty queue never pulls a deadline in
    assert conn.rto_deadline == 1300.0
    conn.rto_deadline = conn.tlp_deadline = None
    conn.link_queued(500.0, 0.0)  # no timer running: none is started
    assert conn.rto_deadline is None and conn.tlp_deadline is None


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "wrapped"])
def test_a_window_larger_than_the_device_queue_waits_in_the_send_buffer(
        wrapped: bool) -> None:
    """A peer offering more window than the device can queue (a pppd or a modem's network
    peer offers 64 KiB; PppDevice holds half a second of line): TCP hands the device no
    more than ``TcpConfig.device_queue_ms`` of line time and keeps the rest, so nothing is
    refused (a refusal is a loss TCP must repair) and the line never idles."""
    size = 96 * 1024
    secs, stats, end = transfer(size, report_queue=True, queue_bytes=6 * 1024,
                                peer_window=64 * 1024, wrapped=wrapped)
    assert end.refused == 0, stats
    assert stats["retransmits"] == 0 and stats["timeouts"] == 0, stats
    assert size / secs >= 0.90 * RATE * 1000, (size / secs, stats)


def test_without_queue_report_a_large_window_overflows_the_device() -> None:
    """The cause, kept visible: a device that hides its queue gets a whole window at once
    and refuses what does not fit."""
    _, stats, end = transfer(96 * 1024, report_queue=False, queue_bytes=6 * 1024,
                             peer_window=64 * 1024)
    assert end.refused > 0, stats

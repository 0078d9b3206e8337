"""Link state: the stack reads ``dev.link_up`` (at most once per tick, and while the
link is up at most every ``link_check_ms``) and honours it.

On a down link nothing is sent (``stats["link_down_drops"]``) and the
interface's ARP entries go; when it comes back its addresses are announced
(RFC 5227 §2.3). Sockets see what a kernel's would: a connect over a down link
times out after its SYN retries, an established connection survives a short
flap by retransmitting.
"""

from __future__ import annotations

import errno

from hilkit.port import ManualClock
from hilkit.port.middleware import DeviceMiddleware
from hilkit.stack import PingError, PingStats, Stack, StackConfig, TcpConfig, arp, eth
from hilkit.stack.addr import ip_to_int
from tests.memwire import A_IP, B_IP, StackPair, WireEnd, wire

A_INT = ip_to_int(A_IP)


def announcements(frames: list[bytes]) -> list[int]:
    """The addresses announced in ``frames``: broadcast ARP requests with spa == tpa."""
    out = []
    for f in frames:
        if f[12:14] != eth.ETHERTYPE_ARP.to_bytes(2, "big") or f[:6] != eth.BROADCAST_MAC:
            continue
        p = arp.parse(memoryview(f)[14:])
        assert not isinstance(p, str)
        if p.op == arp.OP_REQUEST and p.spa == p.tpa:
            out.append(p.spa)
    return out


def flap(p: StackPair, up: bool) -> None:
    """Both ends of the wire go down (or up) together, like a pulled cable; noticed
    within ``link_check_ms``."""
    p.wa.up = p.wb.up = up
    p.advance(StackConfig().link_check_ms)


def ping_once(p: StackPair, timeout_ms: float = 500) -> PingError:
    got: list[PingStats] = []
    p.a.ping(B_IP, 1, 100, timeout_ms, 8, got.append)
    p.advance(timeout_ms + 100, step=50)
    assert len(got) == 1
    return got[0].err


def test_nothing_is_sent_on_a_down_link() -> None:
    p = StackPair()
    assert ping_once(p) is PingError.REPLIED
    flap(p, False)
    sent = len(p.wa.sent)
    assert ping_once(p) is PingError.TIMEOUT  # not UNREACH: dropped as a kernel's qdisc would
    assert len(p.wa.sent) == sent
    assert p.a.stats["link_down_drops"] >= 1 and p.a.stats["link.went_down"] == 1
    assert p.a.stats["arp.requests_sent"] == 1  # nothing asked while down
    flap(p, True)
    assert p.a.stats["link.came_up"] == 1
    assert ping_once(p) is PingError.REPLIED


def test_arp_entries_go_when_the_link_goes_down() -> None:
    p = StackPair()
    assert ping_once(p) is PingError.REPLIED
    cache = p.a.interfaces[0].arp
    assert cache.entries(p.clock.now_ms()) != {}
    flap(p, False)
    assert cache.entries(p.clock.now_ms()) == {}
    assert p.a.stats["arp.flushed_link_down"] == 1
    flap(p, True)
    assert ping_once(p) is PingError.REPLIED
    assert p.a.stats["arp.requests_sent"] == 2  # resolved afresh


def test_addresses_are_announced_when_the_link_comes_back() -> None:
    p = StackPair()
    p.a.link_add(p.wa, "10.0.1.1", "255.255.255.0")
    assert announcements(p.wa.sent) == [A_INT, ip_to_int("10.0.1.1")]  # as each was added
    flap(p, False)
    p.a.link_add(p.wa, "10.0.2.1", "255.255.255.0")  # not announced on a down link
    n = len(p.wa.sent)
    flap(p, True)
    assert announcements(p.wa.sent[n:]) == [A_INT, ip_to_int("10.0.1.1"),
                                           ip_to_int("10.0.2.1")]
    assert p.a.stats["arp.announcements_sent"] == 5


class Counting(DeviceMiddleware):
    """Counts reads of ``link_up``; raises from it while ``broken``."""

    def __init__(self, inner: WireEnd) -> None:
        super().__init__(inner)
        self.wire = inner
        self.reads = 0
        self.broken = False

    @property
    def link_up(self) -> bool:
        self.reads += 1
        if self.broken:
            raise OSError(5, "bus error reading the PHY")
        return bool(self.inner.link_up)


def counting_pair() -> tuple[Stack, Counting, WireEnd]:
    wa, wb = wire()
    dev = Counting(wa)
    st = Stack(ManualClock(1000.0), StackConfig())
    st.add_device(dev)
    st.link_add(dev, A_IP, "255.255.255.0")
    return st, dev, wb


def test_link_up_is_read_once_per_tick_not_per_frame_and_rarely_while_up() -> None:
    st, dev, wb = counting_pair()
    clock = st.clock
    assert isinstance(clock, ManualClock)
    every = StackConfig().link_check_ms
    clock.advance(every)
    reads = dev.reads
    for _ in range(50):  # 50 frames in one poll
        wb.send(eth.header(eth.BROADCAST_MAC, wb.mac or b"", 0x88B5) + b"x" * 46)
    st.tick()
    assert dev.reads == reads + 1
    for _ in range(10):
        clock.advance(every / 10)
        st.tick()
    assert dev.reads == reads + 2  # up: once per link_check_ms
    dev.wire.up = False
    clock.advance(every)
    st.tick()
    assert not st.interfaces[0].link_up
    reads = dev.reads
    for _ in range(10):
        st.tick()
    assert dev.reads == reads + 10  # down: every tick, so it is used as soon as it is back
    dev.wire.up = True
    st.tick()
    assert st.interfaces[0].link_up and st.stats["link.came_up"] == 1


def test_a_raising_link_up_is_counted_and_keeps_the_last_state() -> None:
    st, dev, _ = counting_pair()
    dev.broken = True
    clock = st.clock
    assert isinstance(clock, ManualClock)
    for _ in range(5):
        clock.advance(StackConfig().link_check_ms)
        st.tick()  # never raises
    assert st.stats["link_state.failed"] == 5
    assert st.interfaces[0].link_up and st.stats["link.went_down"] == 0
    dev.broken = False
    st.tick()
    assert st.interfaces[0].link_up


def test_tcp_connect_over_a_down_link_times_out_after_its_syn_retries() -> None:
    cfg = StackConfig(tcp=TcpConfig(syn_retries=3))
    p = StackPair(config=cfg)
    flap(p, False)
    n = len(p.wa.sent)
    c = p.a.tcp_socket()
    c.connect((B_IP, 80))  # no immediate error
    t0 = p.clock.now_ms()
    p.advance(2000, step=100)
    assert c.error == 0 and not c.connected
    p.advance(60_000, step=100)
    assert c.error == errno.ETIMEDOUT
    assert p.clock.now_ms() - t0 > 7000  # 1 + 2 + 4 s of retries, then the last wait
    assert p.a.stats["link_down_drops"] >= 4  # the SYN and its retransmissions
    assert len(p.wa.sent) == n and p.a.stats["arp.requests_sent"] == 0


def test_an_established_connection_survives_a_short_flap() -> None:
    p = StackPair()
    srv = p.b.tcp_socket()
    srv.bind((B_IP, 80))
    srv.listen(1)
    c = p.a.tcp_socket()
    c.connect((B_IP, 80))
    p.advance(10, step=1)
    child = srv.accept()
    assert child is not None and c.connected
    flap(p, False)
    assert c.send(b"lost while down") == 15
    p.advance(300, step=10)
    assert p.a.stats["link_down_drops"] >= 1 and child.readable == 0
    flap(p, True)
    p.advance(5000, step=10)  # the RTO fires; ARP resolves afresh; the segment goes again
    assert child.recv() == b"lost while down"
    assert c.connected and child.connected
    assert c.info()["retransmits"] >= 1  # type: ignore[operator]

"""hilkit's TCP against the Linux kernel over a TAP, in a namespace each test makes.

The stack runs in the test's thread (blocking facade or ``Stack.run``); the
kernel's sockets run in helper threads (``tcp_helpers.KernelThread``). Figures
(MB/s) are printed, never asserted.
"""

from __future__ import annotations

import errno
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hilkit.hil.plugin import KernelThread
from hilkit.rig.netns import Netns
from hilkit.stack import TcpState, tcp
from hilkit.stack.sockets import SHUT_WR, Socket, create_connection, create_server
from hilkit.stack.tcp import seq_diff
from tests.integration.conftest import HILKIT_IP, KERNEL_IP, Link
from tests.integration.tcp_helpers import (
    Crafter,
    EchoClients,
    EchoServer,
    KernelEchoServer,
    h_recv_all,
    h_recv_exactly,
    k_recv_all,
    k_recv_exactly,
    kernel_client,
    kernel_echo_clients,
    kernel_listener,
    pattern,
    settle,
    sha,
    tcp_link,
)
from tests.tshark import assert_capture_clean, tshark_fields

MiB = 1 << 20
BULK = 64 * MiB
KPORT = 5001  # kernel listeners
HPORT = 7001  # hilkit listeners


@pytest.fixture
def plain(netns: Netns, tmp_path: Path) -> Iterator[Link]:
    """A link without a capture: for the big transfers."""
    lk = tcp_link(netns, tmp_path, capture=False)
    yield lk
    lk.stack.close()


@pytest.fixture
def clink(netns: Netns, tmp_path: Path) -> Iterator[Link]:
    """A link with a capture (``link.pcap``)."""
    lk = tcp_link(netns, tmp_path, capture=True)
    yield lk
    lk.stack.close()


@pytest.fixture(scope="module")
def bulk() -> tuple[bytes, str]:
    data = pattern(BULK, 64)
    return data, sha(data)


def report(capsys: pytest.CaptureFixture[str], msg: str) -> None:
    with capsys.disabled():
        print(f"\n    [{msg}]", end="")


# -- bulk transfers ----------------------------------------------------------------------
@pytest.mark.parametrize("direction", ["hilkit_sends", "hilkit_receives"])
@pytest.mark.parametrize("role", ["client", "server"])
def test_bulk_64mib(plain: Link, bulk: tuple[bytes, str], role: str, direction: str,
                    capsys: pytest.CaptureFixture[str]) -> None:
    data, digest = bulk
    stack = plain.stack

    def kernel_conn() -> socket.socket:
        if role == "client":  # the kernel is the server
            k, _ = lst.accept()
        else:
            k = kernel_client(plain.ns)
            k.connect((HILKIT_IP, HPORT))
        k.settimeout(60)
        return k

    def kernel_side() -> Any:
        k = kernel_conn()
        try:
            if direction == "hilkit_sends":
                return k_recv_all(k)
            k.sendall(data)
            return None
        finally:
            k.close()

    if role == "client":
        lst = kernel_listener(plain.ns, KPORT)
        kt = KernelThread(stack, kernel_side)
        kt.start()
        s = create_connection(stack, (KERNEL_IP, KPORT), timeout=60)
    else:
        srv = create_server(stack, ("0.0.0.0", HPORT))
        srv.settimeout(60)
        kt = KernelThread(stack, kernel_side)
        kt.start()
        s, peer = srv.accept()
        assert peer[0] == KERNEL_IP
    t0 = time.monotonic()
    if direction == "hilkit_sends":
        s.sendall(data)
        s.shutdown(SHUT_WR)
        n, kdigest = kt.wait(120)
        elapsed = kt.ended_at - t0
        assert (n, kdigest) == (BULK, digest)
        assert s.recv(10) == b""  # the kernel's FIN after ours
    else:
        n, hdigest = h_recv_all(s)
        elapsed = time.monotonic() - t0
        kt.wait(30)
        assert (n, hdigest) == (BULK, digest)
    info = s.tcp.info()
    s.close()
    report(capsys, f"64 MiB, hilkit {role} {direction.replace('_', ' ')}: "
                   f"{BULK / elapsed / 1e6:.1f} MB/s, retransmits {info['retransmits']}, "
                   f"mss {info['mss']}")


def test_capture_of_1mib_both_ways_is_clean(clink: Link) -> None:
    """A 1 MiB transfer each way on one connection (half-close between): tshark finds it clean."""
    stack = clink.stack
    up, down = pattern(MiB, 1), pattern(MiB, 2)
    lst = kernel_listener(clink.ns, KPORT)

    def kernel_side() -> str:
        k, _ = lst.accept()
        with k:
            k.settimeout(30)
            got = k_recv_all(k)
            k.sendall(down)
        return got

    kt = KernelThread(stack, kernel_side)
    kt.start()
    s = create_connection(stack, (KERNEL_IP, KPORT), timeout=30)
    s.sendall(up)
    s.shutdown(SHUT_WR)
    assert h_recv_all(s) == (MiB, sha(down))
    assert kt.wait(30) == (MiB, sha(up))
    s.close()
    stack.run(timeout=0.3)  # the last ACKs
    stack.close()
    frames = assert_capture_clean(clink.pcap)
    assert frames > 2 * MiB // 1448
    # Both SYNs carried the options the two stacks agreed on.
    syns = tshark_fields(clink.pcap, ["ip.src", "tcp.options.mss_val", "tcp.options.wscale.shift",
                                      "tcp.options.sack_perm", "tcp.options.timestamp.tsval"],
                         "tcp.flags.syn == 1")
    assert {r[0] for r in syns} == {HILKIT_IP, KERNEL_IP}
    assert all(r[1] and r[2] and r[3] and r[4] for r in syns), syns
    fins = tshark_fields(clink.pcap, ["ip.src"], "tcp.flags.fin == 1")
    assert {r[0] for r in fins} == {HILKIT_IP, KERNEL_IP}


# -- many connections --------------------------------------------------------------------
def test_200_kernel_clients_against_hilkit_event_echo_server(plain: Link,
                                                               capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    stack = plain.stack
    srv = EchoServer(stack, HPORT, backlog=256)
    count, size = 200, 64 * 1024
    t0 = time.monotonic()
    kt = KernelThread(stack, lambda: kernel_echo_clients(plain.ns, count, size,
                                                         (HILKIT_IP, HPORT)))
    kt.start()
    res = kt.wait(120)
    elapsed = time.monotonic() - t0
    assert res["bad"] == [] and res["ok"] == count, res
    stack.run(until=lambda: srv.closed == count, timeout=10)
    assert (srv.accepted, srv.closed, srv.errors) == (count, count, [])
    assert srv.echoed == count * size
    assert stack.stats["tcp.listen_overflow"] == 0
    assert stack.stats["tcp.syncookies_sent"] == 0  # 200 half-open fit in 256
    report(capsys, f"200 x 64 KiB echoed by hilkit in {elapsed:.2f} s, "
                   f"{2 * count * size / elapsed / 1e6:.1f} MB/s both ways")


def test_200_hilkit_clients_against_kernel_echo_server(plain: Link,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    stack = plain.stack
    count, size = 200, 64 * 1024
    ks = KernelEchoServer(plain.ns, KPORT, expect=count)
    kt = KernelThread(stack, ks.serve)
    kt.start()
    t0 = time.monotonic()
    clients = EchoClients(stack, count, size, (KERNEL_IP, KPORT))
    assert stack.run(until=clients.finished, timeout=90), (
        f"{len(clients.done)} of {count} finished")
    elapsed = time.monotonic() - t0
    outcomes = list(clients.done.values())
    assert outcomes == ["ok"] * count, {o: outcomes.count(o) for o in set(outcomes)}
    assert kt.wait(20) == count
    report(capsys, f"200 hilkit clients x 64 KiB echoed by the kernel in {elapsed:.2f} s")


# -- flow control --------------------------------------------------------------------------
def test_zero_window_probes_then_resume(clink: Link) -> None:
    stack = clink.stack
    total = 2 * MiB
    data = pattern(total, 3)
    lst = kernel_listener(clink.ns, KPORT, rcvbuf=64 * 1024)

    def kernel_side() -> tuple[int, str]:
        k, _ = lst.accept()
        with k:
            k.settimeout(30)
            time.sleep(5.0)  # not reading: its window fills and closes
            return k_recv_all(k)

    kt = KernelThread(stack, kernel_side)
    kt.start()
    s = create_connection(stack, (KERNEL_IP, KPORT), timeout=30)
    s.sendall(data)  # returns only after the kernel reads again
    s.shutdown(SHUT_WR)
    assert kt.wait(30) == (total, sha(data))
    info = s.tcp.info()
    assert info["window_probes"] > 0, info  # type: ignore[operator]
    assert info["timeouts"] == 0, info  # a closed window is not a loss
    s.close()
    stack.close()
    zero = tshark_fields(clink.pcap, ["frame.number"],
                         f"ip.src == {KERNEL_IP} && tcp.window_size_value == 0")
    assert zero, "the kernel never advertised a zero window"


@pytest.mark.parametrize("role", ["server", "client"])
def test_unread_data_is_bounded_by_rcvbuf(plain: Link, role: str) -> None:
    """An application that does not read: the kernel may fill hilkit's receive buffer, no more.
    The advertised right edge never lies beyond RCV.NXT + rcvbuf (RFC 9293 §3.8.6.2.2), on
    active opens as on passive ones. Eight connections, as the initial sequence numbers are
    the kernel's to choose."""
    stack = plain.stack
    rcvbuf = stack.config.tcp.rcvbuf
    count, cap = 8, 4 * MiB
    chunk = pattern(64 * 1024, 16)
    if role == "client":
        lst = kernel_listener(plain.ns, KPORT)
    else:
        srv = create_server(stack, ("0.0.0.0", HPORT))
        srv.settimeout(10)

    def kernel_side() -> list[int]:
        if role == "client":
            ks = [lst.accept()[0] for _ in range(count)]
        else:
            ks = []
            for _ in range(count):
                k = kernel_client(plain.ns, 10)
                k.connect((HILKIT_IP, HPORT))
                ks.append(k)
        for k in ks:
            k.setblocking(False)
        sent = [0] * count
        end = time.monotonic() + 1.5
        while time.monotonic() < end:  # push as much as hilkit's windows let in
            progressed = False
            for i, k in enumerate(ks):
                if sent[i] < cap:
                    try:
                        sent[i] += k.send(chunk)
                        progressed = True
                    except BlockingIOError:
                        pass
            if not progressed:
                time.sleep(0.01)
        for k in ks:
            k.close()
        return sent

    kt = KernelThread(stack, kernel_side)
    kt.start()
    if role == "client":
        socks = [create_connection(stack, (KERNEL_IP, KPORT), timeout=10) for _ in range(count)]
    else:
        socks = [srv.accept()[0] for _ in range(count)]
    edges = [seq_diff(s.tcp.conn.rcv_adv, s.tcp.conn.rcv_nxt) for s in socks]
    kt.wait(30)
    held = [s.tcp.readable for s in socks]
    assert max(edges) <= rcvbuf and max(held) <= rcvbuf, (
        f"advertised window right after the handshake {edges}, bytes held {held}, "
        f"rcvbuf {rcvbuf}")


# -- half-close ----------------------------------------------------------------------------
def test_hilkit_half_closes_kernel_keeps_sending(clink: Link) -> None:
    stack = clink.stack
    request, response = pattern(100_000, 4), pattern(4 * MiB, 5)
    lst = kernel_listener(clink.ns, KPORT)

    def kernel_side() -> tuple[int, str]:
        k, _ = lst.accept()
        with k:
            k.settimeout(30)
            got = k_recv_all(k)  # ends at hilkit's FIN
            k.sendall(response)  # the other direction is still open
        return got

    kt = KernelThread(stack, kernel_side)
    kt.start()
    s = create_connection(stack, (KERNEL_IP, KPORT), timeout=30)
    s.sendall(request)
    s.shutdown(SHUT_WR)
    got = bytearray(s.recv(1000))
    assert got and s.tcp.state in (TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2)
    while d := s.recv(MiB):
        got += d
    assert s.tcp.state == TcpState.TIME_WAIT  # EOF: both FINs are in and ACKed
    assert sha(got) == sha(response)
    assert kt.wait(30) == (len(request), sha(request))
    s.close()
    stack.close()
    assert_capture_clean(clink.pcap)


def test_kernel_half_closes_hilkit_keeps_sending(clink: Link) -> None:
    stack = clink.stack
    request, response = pattern(100_000, 6), pattern(4 * MiB, 7)
    srv = create_server(stack, ("0.0.0.0", HPORT))
    srv.settimeout(30)

    def kernel_side() -> tuple[int, str]:
        k = kernel_client(clink.ns, 30)
        with k:
            k.connect((HILKIT_IP, HPORT))
            k.sendall(request)
            k.shutdown(socket.SHUT_WR)
            return k_recv_all(k)

    kt = KernelThread(stack, kernel_side)
    kt.start()
    s, _ = srv.accept()
    assert h_recv_all(s) == (len(request), sha(request))
    assert s.tcp.state == TcpState.CLOSE_WAIT
    s.sendall(response)
    s.close()
    assert kt.wait(30) == (len(response), sha(response))
    assert stack.run(until=lambda: s.tcp.state == TcpState.CLOSED, timeout=5), s.tcp.state
    stack.close()
    assert_capture_clean(clink.pcap)


def test_reading_after_peer_fin_sends_nothing_more(clink: Link) -> None:
    """hilkit (the server) half-closes, the kernel sends 300 KiB and closes; hilkit reads only
    once it is in TIME-WAIT. Reading must not put another segment on the wire: the peer can
    send nothing more (its FIN is in), and its socket is gone once our ACK of that FIN
    arrived, so anything more draws a RST (Linux sends no window update after a FIN:
    tcp_cleanup_rbuf checks RCV_SHUTDOWN)."""
    stack = clink.stack
    response = pattern(300 * 1024, 15)
    srv = create_server(stack, ("0.0.0.0", HPORT))
    srv.settimeout(10)

    def kernel_side() -> None:
        k = kernel_client(clink.ns, 30)
        with k:
            k.connect((HILKIT_IP, HPORT))
            assert k_recv_all(k) == (0, sha(b""))
            k.sendall(response)

    kt = KernelThread(stack, kernel_side)
    kt.start()
    s, _ = srv.accept()
    s.shutdown(SHUT_WR)
    kt.wait(30)
    conn = s.tcp.conn
    assert stack.run(until=lambda: conn.state == TcpState.TIME_WAIT, timeout=5), conn.state
    assert s.tcp.readable == len(response)
    segs_out = conn.stats["segs_out"]
    assert s.recv(MiB) == response
    stack.run(timeout=0.5)
    sent_after = conn.stats["segs_out"] - segs_out
    state, error = conn.state, s.tcp.error
    stack.close()
    resets = tshark_fields(clink.pcap, ["frame.number", "ip.src"], "tcp.flags.reset == 1")
    assert (sent_after, resets) == (0, []), "segments after the peer's FIN, and the peer's RST"
    assert (state, error) == (TcpState.TIME_WAIT, 0)
    assert s.recv(10) == b""  # EOF, not ConnectionResetError


# -- resets and refusals ---------------------------------------------------------------------
def _rst(k: socket.socket) -> None:
    k.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    k.close()


def test_kernel_rst_while_hilkit_sends(plain: Link) -> None:
    stack = plain.stack
    lst = kernel_listener(plain.ns, KPORT)

    def kernel_side() -> int:
        k, _ = lst.accept()
        k.settimeout(30)
        got = len(k_recv_exactly(k, 256 * 1024))
        _rst(k)
        return got

    kt = KernelThread(stack, kernel_side)
    kt.start()
    s = create_connection(stack, (KERNEL_IP, KPORT), timeout=30)
    s.settimeout(30)
    with pytest.raises(ConnectionResetError):
        s.sendall(pattern(16 * MiB, 8))
    assert kt.wait(10) == 256 * 1024
    assert s.tcp.state == TcpState.CLOSED
    with pytest.raises(ConnectionResetError):
        s.recv(10)


def test_kernel_rst_while_hilkit_receives(plain: Link) -> None:
    stack = plain.stack
    lst = kernel_listener(plain.ns, KPORT)
    sent = threading.Event()

    def kernel_side() -> None:
        k, _ = lst.accept()
        k.settimeout(30)
        k.sendall(pattern(4 * MiB, 9))
        sent.set()
        time.sleep(0.05)
        _rst(k)

    kt = KernelThread(stack, kernel_side)
    kt.start()
    s = create_connection(stack, (KERNEL_IP, KPORT), timeout=30)
    s.settimeout(30)
    got = 0
    with pytest.raises(ConnectionResetError):
        while True:
            d = s.recv(MiB)
            assert d, "EOF instead of a reset"
            got += len(d)
    assert sent.is_set() and got > 0
    kt.wait(10)
    assert s.tcp.state == TcpState.CLOSED


def test_connect_to_closed_kernel_port_is_refused(plain: Link) -> None:
    t0 = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        create_connection(plain.stack, (KERNEL_IP, 4242), timeout=5)
    assert time.monotonic() - t0 < 2
    assert not plain.stack.tcp.conns


def test_connect_timeout_to_silent_neighbour(plain: Link) -> None:
    """sockets.py: "Timeouts raise TimeoutError"."""
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        create_connection(plain.stack, ("192.168.5.77", 80), timeout=1.0)
    assert 0.9 < time.monotonic() - t0 < 2
    assert not plain.stack.tcp.conns


def test_connect_to_unresolvable_neighbour_is_host_unreachable(plain: Link) -> None:
    """ARP gives up after 3 requests; a SYN-SENT connection takes that as a hard error
    (Ipv4Layer.local_error -> TcpLayer.icmp_error): EHOSTUNREACH, well before the SYN
    retries end."""
    t0 = time.monotonic()
    with pytest.raises(OSError) as ei:
        create_connection(plain.stack, ("192.168.5.77", 80), timeout=15)
    assert ei.value.errno == errno.EHOSTUNREACH
    assert time.monotonic() - t0 < 6
    assert plain.stack.stats["arp.unresolved"] >= 1
    assert not plain.stack.tcp.conns


# -- listener limits ---------------------------------------------------------------------------
def test_listen_backlog_full_drops_extra_syns(clink: Link) -> None:
    """tcp_layer.py: SYNs that find a full accept queue are dropped without an answer."""
    stack = clink.stack
    srv = create_server(stack, ("0.0.0.0", HPORT), backlog=2)

    def kernel_side() -> list[str]:
        outcome = []
        socks = []
        for _ in range(2):  # one after the other: each completes before the next SYN
            k = kernel_client(clink.ns, 2.0)
            k.connect((HILKIT_IP, HPORT))
            k.sendall(b"hello %d" % len(socks))
            socks.append(k)
            outcome.append("connected")
        extra = []  # then three at once, into the full queue

        def one() -> None:
            k = kernel_client(clink.ns, 2.0)
            try:
                k.connect((HILKIT_IP, HPORT))
                extra.append("connected")
            except TimeoutError:
                extra.append("timeout")
            except OSError as e:
                extra.append(errno.errorcode.get(e.errno or 0, str(e)))
            finally:
                k.close()

        ts = [threading.Thread(target=one) for _ in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for k in socks:
            k.close()
        return outcome + sorted(extra)

    kt = KernelThread(stack, kernel_side)
    kt.start()
    assert kt.wait(20) == ["connected"] * 2 + ["timeout"] * 3
    assert len(srv.tcp.accept_queue) == 2
    assert stack.stats["tcp.listen_overflow"] >= 3  # each SYN (and its retransmission)
    assert stack.stats["tcp.syncookies_sent"] == 0
    # The two queued connections are real: their data is there.
    srv.settimeout(5)
    got = []
    for _ in range(2):
        c, _ = srv.accept()
        got.append(c.recv(100))
        c.close()
    assert sorted(got) == [b"hello 0", b"hello 1"]
    stack.close()
    synacks = tshark_fields(clink.pcap, ["tcp.dstport"],
                            f"ip.src == {HILKIT_IP} && tcp.flags.syn == 1 && tcp.flags.ack == 1")
    syns = tshark_fields(clink.pcap, ["tcp.srcport"],
                         f"ip.src == {KERNEL_IP} && tcp.flags.syn == 1 && tcp.flags.ack == 0")
    assert len(synacks) == 2, synacks  # one per completed connection, none for the rest
    assert len({r[0] for r in syns}) == 5


# -- SYN flood -------------------------------------------------------------------------------------
def test_syn_flood_answered_with_cookies_and_legit_clients_get_through(
        plain: Link, capsys: pytest.CaptureFixture[str]) -> None:
    stack = plain.stack
    cfg = stack.config
    srv = EchoServer(stack, HPORT)
    flood_n = 10_000
    halfway = threading.Event()
    rng = random.Random(10)
    hosts = [h for h in range(1, 255) if h not in (4, 5)]

    def echo_once(seed: int) -> bool:
        data = pattern(256 * 1024, seed)
        k = kernel_client(plain.ns, 20)
        with k:
            k.connect((HILKIT_IP, HPORT))
            k.sendall(data)
            k.shutdown(socket.SHUT_WR)
            n, digest = k_recv_all(k)
        return (n, digest) == (len(data), sha(data))

    # Before the flood: the kernel knows hilkit's MAC and the server works.
    kt = KernelThread(stack, lambda: echo_once(11))
    kt.start()
    assert kt.wait(20)

    crafter = Crafter(plain.ns)
    mss_opt = tcp.build_options(mss=1460)

    def flood() -> int:
        for i in range(flood_n):
            src = f"192.168.5.{rng.choice(hosts)}"
            crafter.send(src, rng.randrange(1024, 65536), HILKIT_IP, HPORT,
                         rng.getrandbits(32), 0, tcp.SYN, 64240, mss_opt)
            if i % 100 == 99:
                time.sleep(0.003)  # keep the TAP's queue from overflowing
            if i == flood_n // 3:
                halfway.set()
        return flood_n

    legit_result: list[bool] = []

    def legit_during() -> None:
        halfway.wait(30)
        legit_result.append(echo_once(12))

    ft = KernelThread(stack, flood, "flood")
    lt = KernelThread(stack, legit_during, "legit")
    peak = {"conns": 0, "arp_addrs": 0, "arp_pkts": 0}
    iface = stack.interfaces[0]

    def sample() -> bool:
        peak["conns"] = max(peak["conns"], len(stack.tcp.conns))
        pend = iface.arp._pending
        peak["arp_addrs"] = max(peak["arp_addrs"], len(pend))
        peak["arp_pkts"] = max(peak["arp_pkts"], sum(len(p.packets) for p in pend.values()))
        return ft.done.is_set() and lt.done.is_set()

    ft.start()
    lt.start()
    t0 = time.monotonic()
    assert stack.run(until=sample, timeout=60)
    elapsed = time.monotonic() - t0
    ft.wait(1)
    lt.wait(1)
    assert legit_result == [True]
    # After the flood (the half-open table still full of the flood's connections).
    kt = KernelThread(stack, lambda: echo_once(13))
    kt.start()
    assert kt.wait(20)
    sample()
    crafter.close()

    st = stack.stats
    seen = plain.tap.counters.rx_frames
    report(capsys, f"SYN flood: {flood_n} sent in {elapsed:.2f} s, hilkit read {seen} frames; "
                   f"cookies {st['tcp.syncookies_sent']}, accepted "
                   f"{st['tcp.syncookies_accepted']}, peak conns {peak['conns']}, "
                   f"ARP pending {peak['arp_addrs']} addrs/{peak['arp_pkts']} pkts")
    assert st["tcp.syncookies_sent"] > 0
    assert peak["conns"] <= cfg.tcp_max_syn_backlog + 5
    assert peak["arp_addrs"] <= cfg.arp.max_unresolved
    assert peak["arp_pkts"] <= cfg.arp.max_unresolved * cfg.arp.max_pending
    assert srv.listener.half_open <= cfg.tcp_max_syn_backlog
    assert srv.errors == [] and srv.closed == 3
    assert "internal_error" not in stack.drops


# -- crafted segments against an established connection -------------------------------------------
@pytest.fixture
def established(plain: Link) -> Iterator[tuple[Link, Socket, socket.socket, Crafter]]:
    """A kernel socket connected to hilkit (a passive open: see
    test_unread_data_is_bounded_by_rcvbuf for why not an active one), data exchanged both
    ways, everything ACKed."""
    srv = create_server(plain.stack, ("0.0.0.0", HPORT))
    srv.settimeout(10)
    k = kernel_client(plain.ns, 10)
    k.setblocking(False)
    assert k.connect_ex((HILKIT_IP, HPORT)) == errno.EINPROGRESS
    s, _ = srv.accept()
    k.settimeout(10)
    k.sendall(b"hello hilkit")
    assert h_recv_exactly(s, 12) == b"hello hilkit"
    s.sendall(b"hello kernel")
    assert k_recv_exactly(k, 12) == b"hello kernel"
    conn = s.tcp.conn
    assert conn is not None
    settle(plain.stack, conn)
    assert conn.ts_ok and conn.sack_ok
    crafter = Crafter(plain.ns)
    crafter.drain()
    yield plain, s, k, crafter
    crafter.close()
    k.close()


def still_works(link: Link, s: Socket, k: socket.socket, tag: bytes) -> None:
    k.sendall(b"from kernel " + tag)
    assert h_recv_exactly(s, 12 + len(tag)) == b"from kernel " + tag
    s.sendall(b"from hilkit " + tag)
    assert k_recv_exactly(k, 12 + len(tag)) == b"from hilkit " + tag


def challenge_acks_seen(crafter: Crafter, conn: Any) -> list[dict[str, Any]]:
    return [p for p in crafter.drain()
            if p["src"] == HILKIT_IP and p["sport"] == conn.local[1]
            and p["flags"] == tcp.ACK and p["ack"] == conn.rcv_nxt and p["seq"] == conn.snd_nxt
            and not p["payload"]]


def test_rfc5961_in_window_rst_draws_challenge_ack(established: Any) -> None:
    link, s, k, crafter = established
    conn = s.tcp.conn
    # Out of the window: dropped in silence (RFC 5961 §3.2), no ACK of any kind.
    segs_in, segs_out = conn.stats["segs_in"], conn.stats["segs_out"]
    crafter.as_peer(conn, conn.rcv_nxt + (1 << 30), 0, tcp.RST)
    assert link.stack.run(until=lambda: conn.stats["segs_in"] > segs_in, timeout=3)
    link.stack.run(timeout=0.1)
    assert conn.state == TcpState.ESTABLISHED
    assert conn.stats["segs_out"] == segs_out and not challenge_acks_seen(crafter, conn)
    # In the window but not at RCV.NXT: a challenge ACK, and the connection stays.
    before = conn.stats.get("challenge_acks", 0)
    crafter.as_peer(conn, conn.rcv_nxt + 1000, 0, tcp.RST)
    assert link.stack.run(until=lambda: conn.stats.get("challenge_acks", 0) > before,
                          timeout=3), conn.info()
    assert conn.state == TcpState.ESTABLISHED and s.tcp.error == 0
    time.sleep(0.05)
    assert challenge_acks_seen(crafter, conn), "no challenge ACK reached the kernel"
    still_works(link, s, k, b"after rst")


def test_rfc5961_in_window_syn_draws_challenge_ack(established: Any) -> None:
    link, s, k, crafter = established
    conn = s.tcp.conn
    before = conn.stats.get("challenge_acks", 0)
    opts = tcp.build_options(mss=1460, ts=(conn.ts_recent, 0))
    crafter.as_peer(conn, conn.rcv_nxt + 10, 0, tcp.SYN, opts=opts)
    assert link.stack.run(until=lambda: conn.stats.get("challenge_acks", 0) > before,
                          timeout=3), conn.info()
    assert conn.state == TcpState.ESTABLISHED and s.tcp.error == 0
    time.sleep(0.05)
    assert challenge_acks_seen(crafter, conn), "no challenge ACK reached the kernel"
    still_works(link, s, k, b"after syn")


def test_rfc5961_exact_rst_resets(established: Any) -> None:
    link, s, _, crafter = established
    conn = s.tcp.conn
    crafter.as_peer(conn, conn.rcv_nxt, 0, tcp.RST)
    s.settimeout(3)
    with pytest.raises(ConnectionResetError):
        s.recv(100)
    assert conn.state == TcpState.CLOSED
    assert conn.stats.get("challenge_acks", 0) == 0
    assert not link.stack.tcp.conns


def test_paws_drops_segment_with_old_timestamp(established: Any) -> None:
    link, s, k, crafter = established
    conn = s.tcp.conn
    before = conn.stats.get("paws_drops", 0)
    old = (conn.ts_recent - 1000) & 0xFFFFFFFF
    crafter.as_peer(conn, conn.rcv_nxt, conn.snd_nxt, tcp.ACK | tcp.PSH,
                    wnd=conn.snd_wnd >> conn.snd_wscale,
                    opts=tcp.build_options(ts=(old, 0)), payload=b"EVIL")
    assert link.stack.run(until=lambda: conn.stats.get("paws_drops", 0) > before,
                          timeout=3), conn.info()
    assert s.tcp.readable == 0  # the old duplicate's bytes were not taken
    still_works(link, s, k, b"after paws")  # the stream is the kernel's bytes only


def test_lying_sack_blocks_are_ignored(established: Any) -> None:
    link, s, k, crafter = established
    conn = s.tcp.conn
    before = conn.stats.get("sack_invalid", 0)
    una, smax = conn.snd_una, conn.snd_max
    blocks = [(una, (smax + 100_000) & 0xFFFFFFFF),  # right edge beyond what was sent
              ((smax + 1000) & 0xFFFFFFFF, (smax + 2000) & 0xFFFFFFFF)]  # wholly beyond
    crafter.as_peer(conn, conn.rcv_nxt, una, tcp.ACK, wnd=conn.snd_wnd >> conn.snd_wscale,
                    opts=tcp.build_options(ts=(conn.ts_recent, 0), sack=blocks))
    assert link.stack.run(until=lambda: conn.stats.get("sack_invalid", 0) >= before + 2,
                          timeout=3), conn.info()
    assert conn.sacked == []
    assert conn.state == TcpState.ESTABLISHED
    # A transfer afterwards is intact.
    data = pattern(MiB, 14)
    kt = KernelThread(link.stack, lambda: k_recv_exactly(k, MiB))
    kt.start()
    s.sendall(data)
    assert kt.wait(30) == data


def test_rfc5961_ack_beyond_snd_max_is_not_taken(established: Any) -> None:
    """Blind data injection (RFC 5961 §5.2): an ACK for bytes never sent draws a challenge ACK
    and the segment's data is dropped."""
    link, s, k, crafter = established
    conn = s.tcp.conn
    before = conn.stats.get("challenge_acks", 0)
    crafter.as_peer(conn, conn.rcv_nxt, conn.snd_max + 100_000, tcp.ACK | tcp.PSH,
                    wnd=conn.snd_wnd >> conn.snd_wscale,
                    opts=tcp.build_options(ts=(conn.ts_recent, 0)), payload=b"EVIL")
    assert link.stack.run(until=lambda: conn.stats.get("challenge_acks", 0) > before,
                          timeout=3), conn.info()
    assert conn.stats.get("ack_beyond_snd_max", 0) == 1
    assert s.tcp.readable == 0
    still_works(link, s, k, b"after blind data")


def test_rfc5961_challenge_acks_are_rate_limited(established: Any) -> None:
    """RFC 5961 §7: a connection sends at most one challenge ACK per
    ``invalid_ack_interval_ms`` (500 ms by default, as Linux); the rest are counted."""
    link, s, k, crafter = established
    conn = s.tcp.conn
    interval = link.stack.config.tcp.invalid_ack_interval_ms
    n = 30
    t0 = time.monotonic()
    for i in range(n):
        crafter.as_peer(conn, conn.rcv_nxt + 1000 + i, 0, tcp.RST)
    stats = conn.stats
    assert link.stack.run(until=lambda: stats.get("challenge_acks", 0)
                          + stats.get("challenge_acks_limited", 0) == n, timeout=3), stats
    most = int((time.monotonic() - t0) * 1000 / interval) + 1
    assert 1 <= stats.get("challenge_acks", 0) <= most, stats
    assert conn.state == TcpState.ESTABLISHED
    still_works(link, s, k, b"after the storm")

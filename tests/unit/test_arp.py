"""ARP (RFC 826) packets and the sans-I/O ``ArpCache``, with explicit times."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hilkit.stack import arp, eth

MAC_A = b"\x02\x00\x00\x00\x00\x0a"
MAC_B = b"\x02\x00\x00\x00\x00\x0b"
MAC_C = b"\x02\x00\x00\x00\x00\x0c"
IP_A, IP_B, IP_C = 0x0A000001, 0x0A000002, 0x0A000003
T0 = 5000.0


def cache(**kw: Any) -> arp.ArpCache:
    return arp.ArpCache(arp.ArpConfig(**kw))


# -- packets -----------------------------------------------------------------


@given(st.sampled_from([arp.OP_REQUEST, arp.OP_REPLY]),
       st.binary(min_size=6, max_size=6).map(lambda m: bytes([m[0] & 0xFE]) + m[1:]),
       st.integers(0, 0xFFFFFFFF), st.binary(min_size=6, max_size=6),
       st.integers(0, 0xFFFFFFFF))
def test_build_parse_round_trip(op: int, sha: bytes, spa: int, tha: bytes, tpa: int) -> None:
    pkt = arp.build(op, sha, spa, tha, tpa)
    assert len(pkt) == arp.PACKET_LEN
    got = arp.parse(memoryview(pkt))
    assert got == arp.Packet(op, sha, spa, tha, tpa)
    # Ethernet pads short frames: trailing bytes are ignored.
    assert arp.parse(memoryview(pkt + bytes(18))) == got


def test_parse_reasons() -> None:
    good = arp.build(arp.OP_REQUEST, MAC_A, IP_A, bytes(6), IP_B)
    assert arp.parse(memoryview(good[:27])) == "arp.short"
    assert arp.parse(memoryview(b"")) == "arp.short"
    for off, fmt, value in [(0, "!H", 6), (2, "!H", 0x86DD), (4, "!B", 8), (5, "!B", 16)]:
        bad = bytearray(good)
        struct.pack_into(fmt, bad, off, value)
        assert arp.parse(memoryview(bad)) == "arp.bad_format", (off, value)
    for op in (0, 3, 4, 0xFFFF):
        bad = bytearray(good)
        struct.pack_into("!H", bad, 6, op)
        assert arp.parse(memoryview(bad)) == "arp.bad_op"
    for sha in (eth.BROADCAST_MAC, b"\x01\x00\x5e\x00\x00\x01", b"\x03" + MAC_A[1:]):
        assert arp.parse(memoryview(arp.build(arp.OP_REPLY, sha, IP_A, MAC_B, IP_B))) == (
            "arp.bad_sender")


# -- lookup and expiry -----------------------------------------------------------


def test_lookup_and_expiry() -> None:
    c = cache(timeout_ms=60_000)
    assert c.lookup(IP_B, T0) is None
    assert c.update(IP_B, MAC_B, T0, create=True) == []
    assert c.lookup(IP_B, T0) == MAC_B
    assert c.lookup(IP_B, T0 + 59_999.9) == MAC_B
    assert c.entries(T0 + 59_999.9) == {IP_B: MAC_B}
    assert c.entries(T0 + 60_000) == {}
    assert c.lookup(IP_B, T0 + 60_000) is None  # expires exactly at the deadline
    assert len(c) == 0  # and the stale entry is gone
    assert c.lookup(IP_B, T0 + 60_000) is None


def test_update_refreshes_expiry_and_mac() -> None:
    c = cache(timeout_ms=1000, locktime_ms=500)
    c.update(IP_B, MAC_B, T0, create=True)
    c.update(IP_B, MAC_C, T0 + 900, create=False)  # an existing entry is updated
    assert c.lookup(IP_B, T0 + 1500) == MAC_C
    assert c.lookup(IP_B, T0 + 1900) is None


# -- lock time: a fresh entry keeps its MAC ------------------------------------------


@pytest.mark.parametrize("create", [False, True])
def test_fresh_entry_refuses_another_mac_for_locktime(create: bool) -> None:
    c = cache()  # locktime 1 s by default, as Linux's
    assert c.config.locktime_ms == 1000.0
    c.update(IP_B, MAC_B, T0, create=True)
    for dt in (0.0, 1.0, 500.0, 999.9):
        assert c.refuses(IP_B, MAC_C, T0 + dt)
        assert c.update(IP_B, MAC_C, T0 + dt, create=create) == []
        assert c.lookup(IP_B, T0 + dt) == MAC_B
    assert not c.refuses(IP_B, MAC_B, T0 + 10)  # the same MAC is never refused
    assert not c.refuses(IP_C, MAC_C, T0 + 10)  # nor an address we do not know
    assert not c.refuses(IP_B, MAC_C, T0 + 1000)  # the lock is over
    c.update(IP_B, MAC_C, T0 + 1000, create=create)
    assert c.lookup(IP_B, T0 + 1000) == MAC_C


def test_lock_runs_from_the_last_change_not_the_last_confirmation() -> None:
    c = cache(locktime_ms=1000)
    c.update(IP_B, MAC_B, T0, create=True)
    c.update(IP_B, MAC_B, T0 + 900, create=True)  # a no-op update does not move the window
    assert not c.refuses(IP_B, MAC_C, T0 + 1000)
    c.update(IP_B, MAC_C, T0 + 1000, create=False)  # a change does
    assert c.refuses(IP_B, MAC_A, T0 + 1999)
    assert not c.refuses(IP_B, MAC_A, T0 + 2000)


def test_expired_entry_is_not_locked() -> None:
    c = cache(timeout_ms=100, locktime_ms=1000)
    c.update(IP_B, MAC_B, T0, create=True)
    assert not c.refuses(IP_B, MAC_C, T0 + 100)
    c.update(IP_B, MAC_C, T0 + 100, create=True)
    assert c.lookup(IP_B, T0 + 100) == MAC_C


@given(st.lists(st.tuples(st.integers(0, 5000), st.sampled_from([MAC_A, MAC_B, MAC_C])),
                max_size=30), st.integers(0, 3000))
def test_an_entry_never_changes_mac_inside_its_lock(
        ops: list[tuple[int, bytes]], lock: int) -> None:
    c = cache(locktime_ms=lock, timeout_ms=60_000)
    changed_at, mac_now = None, None
    for t, mac in sorted(ops):
        c.update(IP_B, mac, T0 + t, create=True)
        got = c.lookup(IP_B, T0 + t)
        if got != mac_now:
            assert changed_at is None or t >= changed_at + lock
            changed_at, mac_now = t, got


# -- the RFC 826 merge rule --------------------------------------------------------


def test_merge_rule_creates_only_when_for_us() -> None:
    c = cache()
    assert c.update(IP_C, MAC_C, T0, create=False) == []
    assert c.lookup(IP_C, T0) is None and len(c) == 0  # overheard: not learned
    c.update(IP_C, MAC_C, T0, create=True)  # addressed to us: learned
    assert c.lookup(IP_C, T0) == MAC_C
    c.update(IP_C, MAC_A, T0 + 1000, create=False)  # overheard, but known: merged
    assert c.lookup(IP_C, T0 + 1000) == MAC_A
    assert len(c) == 1


def test_update_of_pending_address_releases_queue_in_order() -> None:
    c = cache()
    assert c.enqueue(IP_B, b"p1", T0) == (True, None)
    assert c.enqueue(IP_B, b"p2", T0 + 1) == (False, None)
    assert c.enqueue(IP_C, b"q1", T0 + 2) == (True, None)
    # A reply we asked for is learned even if (as a gratuitous one) it names someone else.
    assert c.update(IP_B, MAC_B, T0 + 10, create=False) == [b"p1", b"p2"]
    assert c.lookup(IP_B, T0 + 10) == MAC_B
    assert c.update(IP_B, MAC_B, T0 + 11, create=True) == []  # nothing waits any more
    assert c.next_deadline() == T0 + 2 + 1000  # only IP_C still pending
    again, failed = c.due(T0 + 5000)
    assert again == [IP_C] and failed == []


# -- eviction -------------------------------------------------------------------------


def test_eviction_at_max_entries_drops_oldest() -> None:
    c = cache(max_entries=3)
    for i in range(3):
        c.update(100 + i, bytes([2, 0, 0, 0, 0, i]), T0 + i, create=True)
    c.update(100, bytes([2, 0, 0, 0, 0, 0]), T0 + 5, create=False)  # refreshed: now the youngest
    c.update(200, MAC_C, T0 + 6, create=True)
    assert len(c) == 3
    assert c.lookup(101, T0 + 7) is None  # the oldest (least recently updated) went
    assert set(c.entries(T0 + 7)) == {100, 102, 200}
    for i in range(50):
        c.update(1000 + i, MAC_A, T0 + 10 + i, create=True)
        assert len(c) <= 3
    assert set(c.entries(T0 + 100)) == {1047, 1048, 1049}


@given(st.lists(st.tuples(st.integers(0, 40), st.booleans(), st.floats(0, 5000)), max_size=200),
       st.integers(1, 8))
def test_never_more_than_max_entries(ops: list[tuple[int, bool, float]], limit: int) -> None:
    c = cache(max_entries=limit, timeout_ms=2000)
    now = 0.0
    for ip, create, dt in ops:
        now += dt
        c.update(ip, MAC_A, now, create)
        assert len(c) <= limit
        assert len(c.entries(now)) <= limit


# -- retries --------------------------------------------------------------------------


def test_retry_schedule_three_tries_one_second_apart() -> None:
    c = cache(retries=3, retry_ms=1000)
    assert c.next_deadline() is None
    assert c.enqueue(IP_B, b"first", T0) == (True, None)  # the caller sends request 1 now
    assert c.enqueue(IP_B, b"second", T0 + 400) == (False, None)  # no second request
    assert c.next_deadline() == T0 + 1000
    assert c.due(T0 + 999.9) == ([], [])
    assert c.due(T0 + 1000) == ([IP_B], [])  # request 2
    assert c.due(T0 + 1000) == ([], [])
    assert c.next_deadline() == T0 + 2000
    assert c.due(T0 + 1999) == ([], [])
    assert c.due(T0 + 2000) == ([IP_B], [])  # request 3
    assert c.next_deadline() == T0 + 3000
    assert c.due(T0 + 2999) == ([], [])
    assert c.due(T0 + 3000) == ([], [(IP_B, [b"first", b"second"])])  # gave up
    assert c.next_deadline() is None
    assert c.due(T0 + 10_000) == ([], [])
    assert c.lookup(IP_B, T0 + 3000) is None
    assert c.enqueue(IP_B, b"again", T0 + 3001) == (True, None)  # a fresh attempt


def test_retry_schedule_when_due_is_called_late() -> None:
    """A late tick does not bunch requests: the next one is a full interval later."""
    c = cache(retries=3, retry_ms=1000)
    c.enqueue(IP_B, b"x", 0.0)
    assert c.due(1500) == ([IP_B], [])
    assert c.due(2400) == ([], [])
    assert c.due(2500) == ([IP_B], [])
    assert c.due(3499) == ([], [])
    assert c.due(3500) == ([], [(IP_B, [b"x"])])


@pytest.mark.parametrize("retries", [1, 2, 5])
def test_retry_count_is_configurable(retries: int) -> None:
    c = cache(retries=retries, retry_ms=100)
    c.enqueue(IP_B, b"x", 0.0)
    requests = 1
    t = 0.0
    while True:
        t += 100
        again, failed = c.due(t)
        requests += len(again)
        if failed:
            break
    assert requests == retries and t == 100 * retries


def test_several_addresses_retry_independently() -> None:
    c = cache(retries=2, retry_ms=1000)
    c.enqueue(IP_B, b"b", 0.0)
    c.enqueue(IP_C, b"c", 500.0)
    assert c.next_deadline() == 1000
    assert c.due(1000) == ([IP_B], [])
    assert c.due(1500) == ([IP_C], [])
    assert c.due(2000) == ([], [(IP_B, [b"b"])])
    assert c.due(2500) == ([], [(IP_C, [b"c"])])


# -- the pending queue -------------------------------------------------------------------


def test_pending_queue_is_bounded_oldest_go() -> None:
    c = cache(max_pending=4)
    pushed = []
    for i in range(10):
        new, out = c.enqueue(IP_B, b"p%d" % i, T0 + i)
        assert new == (i == 0)
        if out is not None:
            pushed.append(out)
    assert pushed == [b"p0", b"p1", b"p2", b"p3", b"p4", b"p5"]
    assert c.update(IP_B, MAC_B, T0 + 20, create=False) == [b"p6", b"p7", b"p8", b"p9"]


def test_pending_queue_bound_applies_per_address_and_to_failures() -> None:
    c = cache(max_pending=2, retries=1, retry_ms=10)
    for i in range(5):
        c.enqueue(IP_B, b"b%d" % i, 0.0)
        c.enqueue(IP_C, b"c%d" % i, 0.0)
    again, failed = c.due(10)
    assert again == []
    assert dict(failed) == {IP_B: [b"b3", b"b4"], IP_C: [b"c3", b"c4"]}


def test_unresolved_addresses_are_bounded() -> None:
    cache = arp.ArpCache(arp.ArpConfig(max_unresolved=2))
    assert cache.enqueue(1, b"a", 0.0) == (True, None)
    assert cache.enqueue(2, b"b", 0.0) == (True, None)
    assert cache.enqueue(3, b"c", 0.0) == (False, b"c")  # refused: no request, packet back
    assert cache.enqueue(1, b"a2", 0.0) == (False, None)  # an address already waiting still queues
    assert cache.next_deadline() == 1000.0

"""The Device conformance suite: pytest tests that any driver must pass.

Use it from a test module of your own::

    from hilkit.port.conformance import DeviceConformance

    @pytest.fixture
    def conformance_pair():
        dev, peer = ...          # your Device, and a LinkPeer at the far end
        yield dev, peer
        dev.close()

    class TestMyChip(DeviceConformance):
        pass

The peer is whatever sits on the other end of the wire (an AF_PACKET socket
in a network namespace, a host NIC, a model's wire): see ``LinkPeer``.

This module is also a pytest plugin (entry point ``hilkit-conformance``): it
registers the ``hilkit_conformance`` marker, puts it on every test inherited
from ``DeviceConformance`` (so ``-m hilkit_conformance`` selects the suite),
and supplies a default ``conformance_pair`` fixture that explains what to do.

Nothing here sleeps and hopes: waits are selector waits on ``fileno()`` or
polling loops bounded by a deadline.
"""

from __future__ import annotations

import secrets
import selectors
import socket
import struct
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import pytest

from hilkit.port.checksum import checksum
from hilkit.port.device import (
    ETH_HEADER_LEN,
    Device,
    DeviceClosed,
    DeviceCounters,
    LinkType,
    device_rx_buffer,
    max_frame_len,
)

MARKER = "hilkit_conformance"
ETHERTYPE_LOCAL_EXPERIMENTAL = 0x88B5  # IEEE 802 local experimental EtherType 1
BROADCAST_MAC = b"\xff" * 6
ETH_MIN_FRAME = 60  # shortest Ethernet frame without FCS; a real wire pads to this
IPV4_MIN_MTU = 576  # every IPv4 host must accept datagrams this large (RFC 791)
_MAGIC = b"hkCF"
_SEQ = struct.Struct("!I")
_UDP_SRC_PORT = 48_879
_UDP_DST_PORT = 9  # discard
DEVICE_MEMBERS = ("name", "link_type", "mac", "mtu", "counters", "send", "poll", "link_up",
                  "fileno", "close")


@runtime_checkable
class LinkPeer(Protocol):
    """The far end of the wire the device under test is attached to.

    Required: ``send`` puts one whole frame (or, on a RAW_IP link, one IPv4
    packet) on the wire towards the device; ``recv`` returns the next frame
    the peer received from the device, or None after ``timeout_s`` seconds.
    ``recv`` may return frames that are not from the suite (kernel noise):
    the suite filters them out.

    Optional attributes the suite looks for with ``getattr``:

    - ``can_set_link: bool`` and ``set_link(up: bool) -> None``: the peer can
      take the link down and up (enables the link-state tests);
    - ``peer_mac: bytes``: the peer's MAC, used as destination instead of
      broadcast (ETHERNET);
    - ``peer_ipv4: str`` / ``device_ipv4: str``: addresses of the two ends
      (RAW_IP); defaults are from TEST-NET-1.
    """

    def send(self, frame: bytes) -> None: ...

    def recv(self, timeout_s: float) -> bytes | None: ...


DevicePair = tuple[Device, LinkPeer]


# -- frames the suite can recognise ---------------------------------------------


def ipv4_udp_packet(src: str, dst: str, payload: bytes) -> bytes:
    """A valid IPv4 packet (no options, DF set) carrying a UDP datagram."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    udp_len = 8 + len(payload)
    pseudo = s + d + struct.pack("!BBH", 0, socket.IPPROTO_UDP, udp_len)
    udp = struct.pack("!HHHH", _UDP_SRC_PORT, _UDP_DST_PORT, udp_len, 0) + payload
    udp_sum = checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", udp_sum) + udp[8:]
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, socket.IPPROTO_UDP, 0, s, d
    )
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return hdr + udp


class _Frames:
    """Builds and recognises the suite's frames for one device/peer pair."""

    def __init__(self, dev: Device, peer: LinkPeer) -> None:
        self.dev = dev
        self.token = secrets.token_bytes(8)  # one per test: stale frames never match
        self.link_type = dev.link_type
        self.peer_mac: bytes = getattr(peer, "peer_mac", None) or BROADCAST_MAC
        self.peer_ip: str = getattr(peer, "peer_ipv4", None) or "192.0.2.1"
        self.dev_ip: str = getattr(peer, "device_ipv4", None) or "192.0.2.2"
        self.fake_peer_mac = b"\x02hkcf\x01"  # locally administered, unicast

    @property
    def min_size(self) -> int:
        body = len(_MAGIC) + len(self.token) + _SEQ.size
        return ETH_MIN_FRAME if self.link_type is LinkType.ETHERNET else 28 + body

    def outbound(self, seq: int, size: int | None = None) -> bytes:
        """A frame for the device to send, ``size`` bytes long (default: small)."""
        return self._build(seq, size, to_peer=True)

    def inbound(self, seq: int, size: int | None = None) -> bytes:
        """A frame for the peer to send to the device."""
        return self._build(seq, size, to_peer=False)

    def seq_of(self, frame: bytes) -> int | None:
        """The sequence number if ``frame`` is one of this test's, else None."""
        at = frame.find(_MAGIC + self.token)
        if at < 0:
            return None
        at += len(_MAGIC) + len(self.token)
        seq: int = _SEQ.unpack_from(frame, at)[0]
        return seq

    def _build(self, seq: int, size: int | None, *, to_peer: bool) -> bytes:
        size = max(self.min_size, size or 0)
        body = _MAGIC + self.token + _SEQ.pack(seq)
        if self.link_type is LinkType.ETHERNET:
            mac = self.dev.mac or b"\x02\0\0\0\0\0"
            dst, src = (self.peer_mac, mac) if to_peer else (mac, self.fake_peer_mac)
            head = dst + src + struct.pack("!H", ETHERTYPE_LOCAL_EXPERIMENTAL)
            return head + _fill(body, size - ETH_HEADER_LEN)
        src_ip, dst_ip = (self.dev_ip, self.peer_ip) if to_peer else (self.peer_ip, self.dev_ip)
        return ipv4_udp_packet(src_ip, dst_ip, _fill(body, size - 28))


def _fill(body: bytes, length: int) -> bytes:
    pattern = bytes(range(256))
    out = body + pattern * (max(0, length - len(body)) // 256 + 1)
    return out[:length]


# -- bounded waits ----------------------------------------------------------------


class _Waiter:
    """Waits for a device to have work: selector on fileno(), else a short bounded nap."""

    def __init__(self, dev: Device) -> None:
        self._sel: selectors.BaseSelector | None = None
        fd = dev.fileno()
        if fd is not None:
            self._sel = selectors.DefaultSelector()
            self._sel.register(fd, selectors.EVENT_READ)

    def wait(self, timeout_s: float) -> bool:
        timeout_s = max(0.0, timeout_s)
        if self._sel is None:
            time.sleep(min(timeout_s, 0.002))
            return True
        return bool(self._sel.select(timeout_s))

    def close(self) -> None:
        if self._sel is not None:
            self._sel.close()


def _until(pred: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)


def _delta(before: dict[str, int], after: DeviceCounters) -> dict[str, int]:
    return {k: v - before[k] for k, v in after.as_dict().items()}


def rx_burst(dev: Device) -> tuple[int, str]:
    """How many frames the suite sends the device before it polls, and why.

    A device that states ``rx_buffer_bytes`` (``hilkit.port.device.device_rx_buffer``)
    drops what does not fit, as a chip with a small receive buffer must: the suite
    counts every frame at the largest size, ``max_frame_len(dev)``, so a chip that
    holds N frames of any size is never sent more than N at once.
    """
    cap = device_rx_buffer(dev)
    if cap is None:
        return 1 << 30, "the device states no rx_buffer_bytes: its receive queue is unbounded"
    size = max_frame_len(dev)
    n = max(1, cap // size)
    return n, (f"sent in bursts of at most {n}: the device's rx_buffer_bytes = {cap} "
               f"holds {n} frame{'s' if n != 1 else ''} of up to {size} bytes")


_REFUSED = "send refused a valid {}-byte frame: expected True"


def _changed(i: int, sent: bytes, got: bytes) -> str:
    at = next((k for k, (a, b) in enumerate(zip(sent, got, strict=False)) if a != b),
              min(len(sent), len(got)))
    return (f"frame {i} changed on the way: expected {len(sent)} bytes as sent, got "
            f"{len(got)} differing from byte {at}")


# -- the suite --------------------------------------------------------------------


class DeviceConformance:
    """Subclass this in a test module that provides a ``conformance_pair`` fixture.

    Class attributes may be overridden to fit a slow link.
    """

    timeout_s: float = 3.0  # how long any one frame or state change may take
    poll_budget: int = 64  # budget used when the test is not about budgets

    # helpers -----------------------------------------------------------------

    def _recv_at_peer(self, peer: LinkPeer, fr: _Frames, count: int) -> dict[int, bytes]:
        """Collect ``count`` of this test's frames at the peer, keyed by sequence."""
        got: dict[int, bytes] = {}
        deadline = time.monotonic() + self.timeout_s
        while len(got) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            frame = peer.recv(left)
            if frame is None:
                continue
            seq = fr.seq_of(frame)
            if seq is not None:
                got[seq] = frame
        return got

    def _poll_for(
        self, dev: Device, fr: _Frames, count: int, budget: int | None = None
    ) -> tuple[list[int], list[bytes], list[bytes]]:
        """Poll until ``count`` of this test's frames came in, or the deadline.

        Returns their sequence numbers in arrival order, the frames themselves,
        and every frame ``poll`` returned (noise included).
        """
        budget = self.poll_budget if budget is None else budget
        seqs: list[int] = []
        ours: list[bytes] = []
        everything: list[bytes] = []
        waiter = _Waiter(dev)
        try:
            deadline = time.monotonic() + self.timeout_s
            while len(seqs) < count:
                frames = dev.poll(budget)
                assert isinstance(frames, list), (
                    f"poll returned {type(frames).__name__}: expected a list")
                assert len(frames) <= budget, (
                    f"poll({budget}) returned {len(frames)} frames: expected at most {budget}")
                for f in frames:
                    assert isinstance(f, bytes), (
                        f"poll returned a {type(f).__name__} frame: expected bytes")
                    everything.append(f)
                    seq = fr.seq_of(f)
                    if seq is not None:
                        seqs.append(seq)
                        ours.append(f)
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if not frames:
                    waiter.wait(left)
        finally:
            waiter.close()
        return seqs, ours, everything

    def _send_in_bursts(
        self, dev: Device, peer: LinkPeer, fr: _Frames, frames: list[bytes], *,
        budget: int | None = None, skip_first: int = 0, all_frames: bool = False,
    ) -> tuple[list[int], list[bytes], str]:
        """The peer sends ``frames`` no more at once than the device holds (``rx_burst``),
        and the device is polled for each burst before the next goes out.

        Returns the sequence numbers that came in, in order; this test's frames (every
        frame ``poll`` returned, noise included, with ``all_frames``); and what a failing
        check says: what was expected, how it was sent, what came and what was dropped.
        ``skip_first``: how many of ``frames`` the test sent already (they are pending).
        """
        burst, how = rx_burst(dev)
        budget = self.poll_budget if budget is None else budget
        before = dev.counters.as_dict()
        seqs: list[int] = []
        got: list[bytes] = []
        pending = at = skip_first
        while True:
            chunk = frames[at:at + max(0, burst - pending)]
            for frame in chunk:
                peer.send(frame)
            at += len(chunk)
            want = pending + len(chunk)
            pending = 0
            s, ours, everything = self._poll_for(dev, fr, want, budget)
            seqs += s
            got += everything if all_frames else ours
            if len(s) < want or at >= len(frames):
                break
        d = _delta(before, dev.counters)
        expected = list(range(len(frames)))
        why = (f"frames arrived as {seqs}: expected {expected} in order, {how}, each burst "
               f"polled with budget {budget} for up to {self.timeout_s} s; meanwhile "
               f"rx_dropped rose by {d['rx_dropped']} and rx_errors by {d['rx_errors']}")
        return seqs, got, why

    def _drain(self, dev: Device) -> None:
        """Poll until nothing is pending; fail if that never happens."""
        deadline = time.monotonic() + self.timeout_s
        while dev.poll(self.poll_budget):
            assert time.monotonic() < deadline, (
                f"poll never ran dry: expected it to return [] within {self.timeout_s} s")

    def _wait_link(self, dev: Device, up: bool) -> None:
        ok = _until(lambda: dev.link_up is up, self.timeout_s)
        assert ok, f"expected link_up to become {up} within {self.timeout_s} s; it did not"

    @staticmethod
    def _require_link_control(peer: LinkPeer) -> Callable[[bool], None]:
        set_link = getattr(peer, "set_link", None)
        if not getattr(peer, "can_set_link", set_link is not None) or set_link is None:
            pytest.skip("the peer cannot take the link down")
        assert callable(set_link)
        return set_link  # type: ignore[no-any-return]

    # identity ----------------------------------------------------------------

    def test_identity(self, conformance_pair: DevicePair) -> None:
        dev, _ = conformance_pair
        missing = [m for m in DEVICE_MEMBERS if not hasattr(dev, m)]
        assert isinstance(dev, Device), (
            f"expected the members of hilkit.port.Device; missing: {', '.join(missing)}")
        assert isinstance(dev.name, str) and dev.name, (
            f"name {dev.name!r}: expected a non-empty str")
        assert isinstance(dev.link_type, LinkType), (
            f"link_type {dev.link_type!r}: expected a hilkit.port.LinkType")
        if dev.link_type is LinkType.ETHERNET:
            assert isinstance(dev.mac, bytes) and len(dev.mac) == 6, (
                f"mac {dev.mac!r}: expected 6 bytes (a rig's driver.mac reaches the driver "
                f"as bytes)")
            assert not dev.mac[0] & 0x01, (
                f"mac {dev.mac.hex(':')}: expected unicast (first octet even)")
            assert dev.mac != b"\0" * 6, "mac is all zeros: expected a usable unicast address"
        else:
            assert dev.mac is None, f"mac {dev.mac!r}: expected None on a RAW_IP device"
        assert isinstance(dev.mtu, int) and dev.mtu >= IPV4_MIN_MTU, (
            f"mtu {dev.mtu!r}: expected an int of at least {IPV4_MIN_MTU} (RFC 791)")
        assert isinstance(dev.counters, DeviceCounters), (
            f"counters is a {type(dev.counters).__name__}: expected a DeviceCounters")
        fd = dev.fileno()
        assert fd is None or (isinstance(fd, int) and fd >= 0), (
            f"fileno() returned {fd!r}: expected None or a descriptor >= 0")

    # frames out ----------------------------------------------------------------

    def test_sent_frame_arrives_intact(self, conformance_pair: DevicePair) -> None:
        dev, peer = conformance_pair
        fr = _Frames(dev, peer)
        sizes = [fr.min_size, 100, 333, 1000]
        sent = [fr.outbound(i, size) for i, size in enumerate(sizes)]
        for frame in sent:
            assert dev.send(frame) is True, _REFUSED.format(len(frame))
        got = self._recv_at_peer(peer, fr, len(sent))
        assert sorted(got) == list(range(len(sent))), (
            f"the peer got frames {sorted(got)}: expected {list(range(len(sent)))} "
            f"(sizes {sizes}) within {self.timeout_s} s")
        for i, frame in enumerate(sent):
            assert got[i] == frame, _changed(i, frame, got[i])

    def test_send_accepts_any_buffer(self, conformance_pair: DevicePair) -> None:
        dev, peer = conformance_pair
        fr = _Frames(dev, peer)
        frames = [fr.outbound(i) for i in range(3)]
        big = bytearray(b"\0" * 7 + frames[2] + b"\0" * 5)
        buffers: list[bytes | bytearray | memoryview] = [
            frames[0],
            bytearray(frames[1]),
            memoryview(big)[7 : 7 + len(frames[2])],
        ]
        for buf in buffers:
            assert dev.send(buf) is True, (
                f"send refused a valid frame given as {type(buf).__name__}: expected True "
                f"for bytes, bytearray and memoryview alike")
        got = self._recv_at_peer(peer, fr, 3)
        for i, frame in enumerate(frames):
            assert got.get(i) == frame, (
                f"frame {i} (sent as {type(buffers[i]).__name__}) "
                + ("lost" if i not in got else "changed")
                + f": expected it at the peer, unchanged, within {self.timeout_s} s")

    def test_mtu_sized_frame_goes_out(self, conformance_pair: DevicePair) -> None:
        dev, peer = conformance_pair
        fr = _Frames(dev, peer)
        frame = fr.outbound(0, max_frame_len(dev))
        assert dev.send(frame) is True, _REFUSED.format(len(frame))
        got = self._recv_at_peer(peer, fr, 1).get(0)
        assert got == frame, (
            f"the {len(frame)}-byte frame (mtu {dev.mtu} + link header) "
            + ("was lost" if got is None else "changed")
            + f": expected it at the peer, unchanged, within {self.timeout_s} s")

    def test_oversize_frame_refused(self, conformance_pair: DevicePair) -> None:
        dev, peer = conformance_pair
        fr = _Frames(dev, peer)
        before = dev.counters.as_dict()
        big = max_frame_len(dev) + 1
        assert dev.send(fr.outbound(0, big)) is False, (
            f"send accepted a {big}-byte frame: expected False above max_frame_len = {big - 1}")
        d = _delta(before, dev.counters)
        assert d["tx_errors"] == 1, f"expected tx_errors to rise by 1, counter deltas {d}"
        assert d["tx_frames"] == 0 and d["tx_bytes"] == 0, (
            f"expected tx_frames and tx_bytes unchanged for a refused frame, deltas {d}")
        # still usable afterwards
        frame = fr.outbound(1)
        assert dev.send(frame) is True, _REFUSED.format(len(frame))
        got = self._recv_at_peer(peer, fr, 1)
        assert got == {1: frame}, (
            f"the peer got frames {sorted(got)}: expected only frame 1 (the one after the "
            f"refused oversize frame 0) within {self.timeout_s} s")

    # frames in ----------------------------------------------------------------

    def test_peer_frames_arrive_in_order(self, conformance_pair: DevicePair) -> None:
        dev, peer = conformance_pair
        fr = _Frames(dev, peer)
        sent = [fr.inbound(i, fr.min_size + 7 * i) for i in range(5)]
        seqs, ours, why = self._send_in_bursts(dev, peer, fr, sent)
        assert seqs == list(range(len(sent))), why
        assert ours == sent, "frames changed on the way: expected them byte for byte as sent"

    def test_mtu_sized_frame_comes_in(self, conformance_pair: DevicePair) -> None:
        dev, peer = conformance_pair
        fr = _Frames(dev, peer)
        frame = fr.inbound(0, max_frame_len(dev))
        peer.send(frame)
        _, ours, _ = self._poll_for(dev, fr, 1)
        assert ours == [frame], (
            f"the {len(frame)}-byte frame (mtu {dev.mtu} + link header) "
            + ("was lost" if not ours else "changed")
            + f": expected poll to return it, unchanged, within {self.timeout_s} s")

    def test_poll_honours_budget(self, conformance_pair: DevicePair) -> None:
        dev, peer = conformance_pair
        fr = _Frames(dev, peer)
        sent = [fr.inbound(i) for i in range(10)]
        peer.send(sent[0])
        got0 = dev.poll(0)
        assert got0 == [], f"poll(0) returned {len(got0)} frames: expected []"
        # frame 0 waits already; _poll_for asserts at most 3 frames a call
        seqs, _, why = self._send_in_bursts(dev, peer, fr, sent, budget=3, skip_first=1)
        assert seqs == list(range(10)), why

    def test_poll_with_nothing_pending(self, conformance_pair: DevicePair) -> None:
        dev, _ = conformance_pair
        self._drain(dev)
        t0 = time.monotonic()
        left = dev.poll(self.poll_budget)
        assert left == [], f"poll returned {len(left)} frames with nothing pending: expected []"
        took = time.monotonic() - t0
        assert took < 0.5, f"poll took {took:.2f} s with nothing pending: expected it not to wait"

    def test_fileno_turns_readable(self, conformance_pair: DevicePair) -> None:
        dev, peer = conformance_pair
        fd = dev.fileno()
        if fd is None:
            pytest.skip("device has no descriptor")
        fr = _Frames(dev, peer)
        self._drain(dev)
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            assert not sel.select(0), (
                "fileno() is readable with nothing pending: expected it quiet until a frame "
                "arrives (a poll loop would spin)")
            peer.send(fr.inbound(0))
            assert sel.select(self.timeout_s), (
                f"fileno() not readable with a frame pending: expected it readable within "
                f"{self.timeout_s} s of the peer's frame")
        _, ours, _ = self._poll_for(dev, fr, 1)
        assert len(ours) == 1, (
            f"expected the pending frame from poll within {self.timeout_s} s; got none")

    # counters ----------------------------------------------------------------

    def test_tx_counters(self, conformance_pair: DevicePair) -> None:
        dev, peer = conformance_pair
        fr = _Frames(dev, peer)
        frames = [fr.outbound(i, size) for i, size in enumerate([0, 200, max_frame_len(dev)])]
        before = dev.counters.as_dict()
        for frame in frames:
            assert dev.send(frame) is True, _REFUSED.format(len(frame))
        d = _delta(before, dev.counters)
        want = {"tx_frames": len(frames), "tx_bytes": sum(map(len, frames))}
        want |= {"tx_errors": 0, "tx_dropped": 0}
        assert {k: d[k] for k in want} == want, f"expected counter deltas {want}, got {d}"
        got = self._recv_at_peer(peer, fr, len(frames))
        assert len(got) == len(frames), (
            f"the peer got frames {sorted(got)}: expected {list(range(len(frames)))} within "
            f"{self.timeout_s} s")

    def test_rx_counters(self, conformance_pair: DevicePair) -> None:
        dev, peer = conformance_pair
        fr = _Frames(dev, peer)
        self._drain(dev)
        frames = [fr.inbound(i, size) for i, size in enumerate([0, 150, 999, max_frame_len(dev)])]
        before = dev.counters.as_dict()
        seqs, everything, why = self._send_in_bursts(dev, peer, fr, frames, all_frames=True)
        assert seqs == list(range(len(frames))), why
        d = _delta(before, dev.counters)
        # rx_* count exactly what poll handed over (noise, if any, included)
        want = {"rx_frames": len(everything), "rx_bytes": sum(map(len, everything)), "rx_errors": 0}
        assert {k: d[k] for k in want} == want, (
            f"expected counter deltas {want} (what poll returned), got {d}")

    # link state ----------------------------------------------------------------

    def test_link_up(self, conformance_pair: DevicePair) -> None:
        dev, _ = conformance_pair
        assert isinstance(dev.link_up, bool), (
            f"link_up is {dev.link_up!r}: expected a bool")
        self._wait_link(dev, True)

    def test_link_down_and_up(self, conformance_pair: DevicePair) -> None:
        dev, peer = conformance_pair
        set_link = self._require_link_control(peer)
        self._wait_link(dev, True)
        set_link(False)
        self._wait_link(dev, False)
        set_link(True)
        self._wait_link(dev, True)
        fr = _Frames(dev, peer)
        frame = fr.outbound(0)
        assert dev.send(frame) is True, _REFUSED.format(len(frame))
        assert self._recv_at_peer(peer, fr, 1).get(0) == frame, (
            f"no traffic after the link came back: expected the frame at the peer within "
            f"{self.timeout_s} s")

    def test_send_while_link_down(self, conformance_pair: DevicePair) -> None:
        dev, peer = conformance_pair
        set_link = self._require_link_control(peer)
        fr = _Frames(dev, peer)
        set_link(False)
        try:
            self._wait_link(dev, False)
            before = dev.counters.as_dict()
            ok = dev.send(fr.outbound(0))  # must not raise
            assert isinstance(ok, bool), f"send returned {ok!r}: expected True or False"
            d = _delta(before, dev.counters)
            if ok:
                assert d["tx_frames"] == 1, f"expected tx_frames +1 for an accepted frame: {d}"
            else:
                assert d["tx_frames"] == 0, f"expected tx_frames unchanged for a refusal: {d}"
                assert d["tx_dropped"] + d["tx_errors"] == 1, (
                    f"expected tx_dropped or tx_errors +1 for a refused frame: {d}")
            got = dev.poll(self.poll_budget)
            assert isinstance(got, list), (
                f"poll with the link down returned {type(got).__name__}: expected a list")
        finally:
            set_link(True)
        self._wait_link(dev, True)

    # close ----------------------------------------------------------------------

    def test_close(self, conformance_pair: DevicePair) -> None:
        dev, peer = conformance_pair
        frame = _Frames(dev, peer).outbound(0)
        dev.close()
        with pytest.raises(DeviceClosed):
            dev.send(frame)
        with pytest.raises(DeviceClosed):
            dev.poll(1)
        dev.close()  # twice is fine


# -- pytest plugin hooks ------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: a test from hilkit's Device conformance suite")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        cls = getattr(item, "cls", None)
        if isinstance(cls, type) and issubclass(cls, DeviceConformance):
            item.add_marker(MARKER)


@pytest.fixture
def conformance_pair() -> DevicePair:
    """Default that only explains itself: override it next to your suite subclass."""
    pytest.fail(
        "define a fixture named 'conformance_pair' that yields (device, peer) "
        "for the DeviceConformance tests",
        pytrace=False,
    )

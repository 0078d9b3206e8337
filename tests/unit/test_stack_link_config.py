"""A point-to-point device that learns its addresses (PPP's IPCP) configures the stack itself.

The fake device stands in for a PPP driver: RAW_IP frames in in-memory queues, and a
``link_config()`` the test sets as IPCP would (RFC 1332 addresses, RFC 1877 DNS).
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from hilkit.port import (
    ImpairedDevice,
    Impairment,
    LinkConfig,
    LinkType,
    ManualClock,
    device_link_config,
)
from hilkit.port.device import link_config_reader
from hilkit.stack import Stack, icmp4, ipv4, udp
from hilkit.stack.addr import ip_to_int
from tests.memwire import WireEnd

OURS, PEER, DNS = "10.0.2.15", "10.0.2.2", "10.0.2.3"
FAR = "192.0.2.7"  # off-link: reachable only through the default route
LINK = LinkConfig(OURS, PEER, (DNS,))


class PppLike(WireEnd):
    """A RAW_IP device whose link negotiated (or lost) addresses: ``config`` is what IPCP got."""

    def __init__(self, config: LinkConfig | None = None) -> None:
        super().__init__("ppp0", None, LinkType.RAW_IP, 1500)
        self.config = config
        self.calls = 0

    def link_config(self) -> LinkConfig | None:
        self.calls += 1
        return self.config


def make(config: LinkConfig | None = LINK) -> tuple[Stack, PppLike]:
    dev = PppLike(config)
    st = Stack(ManualClock(1000.0))
    st.add_device(dev)
    st.tick()
    return st, dev


def echo_request(src: str, dst: str, seq: int = 1) -> bytes:
    body = b"hilkit" * 4
    msg = icmp4.echo_header(False, 0x4242, seq, body) + body
    return ipv4.build_header(ip_to_int(src), ip_to_int(dst), ipv4.PROTO_ICMP, len(msg), seq) + msg


def answered(st: Stack, dev: PppLike, dst: str, src: str = PEER) -> bool:
    """Feed an echo request for ``dst`` in; True if an echo reply from ``dst`` came out."""
    before = len(dev.sent)
    dev.rx.append(echo_request(src, dst))
    st.tick()
    for pkt in dev.sent[before:]:
        h = ipv4.parse(memoryview(pkt))
        if (h.proto == ipv4.PROTO_ICMP and pkt[h.ihl] == icmp4.TYPE_ECHO_REPLY
                and h.src == ip_to_int(dst) and h.dst == ip_to_int(src)):
            return True
    return False


def sent_udp(st: Stack, dev: PppLike, dst: str) -> ipv4.Header:
    """Send one datagram to ``dst``; the header of the packet that left ``dev``."""
    before = len(dev.sent)
    sock = st.udp_socket()
    try:
        sock.sendto(b"hello", (dst, 53))
    finally:
        sock.close()
    assert len(dev.sent) == before + 1
    pkt = dev.sent[-1]
    assert pkt[0] >> 4 == 4  # a bare IPv4 packet: no link header, no ARP on RAW_IP
    h = ipv4.parse(memoryview(pkt))
    assert h.proto == ipv4.PROTO_UDP and h.dst == ip_to_int(dst)
    return h


def no_route(st: Stack, dst: str) -> None:
    sock = st.udp_socket()
    with pytest.raises(OSError) as e:
        sock.sendto(b"x", (dst, 53))
    sock.close()
    assert e.value.errno == errno.ENETUNREACH


def test_the_stack_applies_what_the_link_negotiated(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hilkit.stack.link_config")
    st, dev = make()
    assert answered(st, dev, OURS)
    assert answered(st, dev, OURS, src=FAR)  # the reply to an off-link host takes the default
    assert sent_udp(st, dev, PEER).src == ip_to_int(OURS)
    assert sent_udp(st, dev, FAR).src == ip_to_int(OURS)
    assert st.dns_servers == (DNS,)
    assert st.interfaces[0].link is LINK
    assert "ppp0: 10.0.2.15 peer 10.0.2.2 dns 10.0.2.3" in caplog.messages
    kinds = sorted((r.net, r.mask, r.gateway) for r in st.routes)
    assert kinds == [(0, 0, 0), (ip_to_int(PEER), 0xFFFFFFFF, 0), (ip_to_int(OURS), 0xFFFFFFFF, 0)]


def test_a_config_present_at_add_device_is_usable_before_the_first_tick() -> None:
    dev = PppLike(LINK)
    st = Stack(ManualClock(1000.0))
    st.add_device(dev)
    assert sent_udp(st, dev, FAR).src == ip_to_int(OURS)


def test_the_same_or_an_equal_object_is_applied_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hilkit.stack.link_config")
    st, dev = make()
    for _ in range(5):
        st.tick()
    dev.config = LinkConfig(OURS, PEER, (DNS,))  # new object, same contents
    for _ in range(5):
        st.tick()
    assert dev.calls >= 10  # asked every tick ...
    assert st.stats["link_config.applied"] == 1  # ... applied once
    assert sum("peer" in m for m in caplog.messages) == 1
    assert len(st.routes) == 3


def test_renegotiated_addresses_replace_the_old_ones(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hilkit.stack.link_config")
    st, dev = make()
    dev.config = LinkConfig("10.0.3.9", "10.0.3.1", ("10.0.3.53", "10.0.3.54"))
    st.tick()
    assert not answered(st, dev, OURS)
    assert st.stats["ipv4.not_for_us"] == 1
    assert answered(st, dev, "10.0.3.9", src="10.0.3.1")
    assert sent_udp(st, dev, "10.0.3.1").src == ip_to_int("10.0.3.9")
    assert sent_udp(st, dev, PEER).src == ip_to_int("10.0.3.9")  # now off-link: the default
    assert st.dns_servers == ("10.0.3.53", "10.0.3.54")
    assert "ppp0: 10.0.3.9 peer 10.0.3.1 dns 10.0.3.53,10.0.3.54" in caplog.messages
    assert len(st.routes) == 3  # nothing of the old config is left
    assert st.interfaces[0].addrs == [(ip_to_int("10.0.3.9"), 0xFFFFFFFF)]
    with pytest.raises(OSError):
        st.udp_socket().bind((OURS, 1000))


def test_link_down_removes_everything_it_added() -> None:
    st, dev = make()
    dev.config = None
    st.tick()
    assert not answered(st, dev, OURS)
    no_route(st, PEER)
    no_route(st, FAR)
    assert st.routes == [] and st.interfaces[0].addrs == []
    assert st.dns_servers == ()
    dev.config = LINK  # and back up
    st.tick()
    assert answered(st, dev, OURS)
    assert len(st.routes) == 3


def test_without_default_route_only_the_peer_is_reachable() -> None:
    st, dev = make(LinkConfig(OURS, PEER, default_route=False))
    assert sent_udp(st, dev, PEER).src == ip_to_int(OURS)
    no_route(st, FAR)
    assert st.dns_servers == ()


def test_a_hand_configured_address_on_the_same_device_stays() -> None:
    st, dev = make(None)
    st.link_add(dev, "192.168.7.1", "255.255.255.0")
    dev.config = LINK
    st.tick()
    assert answered(st, dev, "192.168.7.1", src="192.168.7.2")
    assert sent_udp(st, dev, PEER).src == ip_to_int(OURS)  # the link's address, not the first
    assert sent_udp(st, dev, "192.168.7.2").src == ip_to_int("192.168.7.1")
    dev.config = LinkConfig("10.0.3.9", "10.0.3.1")
    st.tick()
    dev.config = None
    st.tick()
    assert answered(st, dev, "192.168.7.1", src="192.168.7.2")
    assert st.interfaces[0].addrs == [(ip_to_int("192.168.7.1"), 0xFFFFFF00)]
    assert [(r.net, r.mask) for r in st.routes] == [(ip_to_int("192.168.7.0"), 0xFFFFFF00)]


def test_removing_a_hand_address_leaves_the_links_routes() -> None:
    st, dev = make()
    st.link_add(dev, "192.168.7.1", "255.255.255.0")
    st.link_del(dev, "192.168.7.1")
    assert sent_udp(st, dev, FAR).src == ip_to_int(OURS)
    assert len(st.routes) == 3


def test_an_address_also_set_by_hand_is_left_to_the_hand() -> None:
    st, dev = make(None)
    st.link_add(dev, OURS, "255.255.255.255")
    dev.config = LINK
    st.tick()
    assert sent_udp(st, dev, FAR).src == ip_to_int(OURS)
    dev.config = None
    st.tick()
    assert st.interfaces[0].addrs == [(ip_to_int(OURS), 0xFFFFFFFF)]  # the link did not add it
    assert len(st.routes) == 1  # its own /32, set by hand too
    no_route(st, FAR)


def test_a_config_the_stack_cannot_apply_is_counted_not_raised() -> None:
    st, dev = make(LinkConfig("10.0.2.300", PEER))
    assert st.stats["link_config.rejected"] == 1
    assert st.routes == []
    other = PppLike(None)
    other.name = "ppp1"
    st.add_device(other)
    st.link_add(other, OURS, "255.255.255.255")
    dev.config = LINK  # its address is another device's
    st.tick()
    assert st.stats["link_config.rejected"] == 2
    assert [r.iface.dev for r in st.routes] == [other]
    assert st.dns_servers == ()


def test_a_raising_link_config_is_counted_and_keeps_what_is_applied() -> None:
    st, dev = make()

    def boom() -> LinkConfig | None:
        raise RuntimeError("driver bug")

    st.interfaces[0].link_config = boom
    st.tick()
    st.tick()
    assert st.stats["link_config.failed"] == 2
    assert answered(st, dev, OURS)


def test_devices_without_the_member_cost_no_lookup() -> None:
    st = Stack(ManualClock(1000.0))
    plain = WireEnd("tun0", None, LinkType.RAW_IP, 1500)
    st.add_device(plain)
    assert st.interfaces[0].link_config is None
    assert device_link_config(plain) is None and link_config_reader(plain) is None


def test_a_wrapped_device_still_configures_the_stack(tmp_path: Path) -> None:
    dev = PppLike(LINK)
    wrapped = ImpairedDevice(dev, Impairment())
    assert device_link_config(wrapped) is LINK
    st = Stack(ManualClock(1000.0), pcap=str(tmp_path / "ppp.pcapng"))  # wraps in a capture too
    st.add_device(wrapped)
    st.tick()
    assert answered(st, dev, OURS)
    assert sent_udp(st, dev, FAR).src == ip_to_int(OURS)
    dev.config = None
    st.tick()
    assert not answered(st, dev, OURS)
    st.close()


def test_datagrams_sent_over_the_link_have_valid_checksums() -> None:
    """The source picked from the link's route is the one in UDP's pseudo-header (RFC 768)."""
    st, dev = make()
    sent_udp(st, dev, FAR)
    pkt = memoryview(dev.sent[-1])
    h = ipv4.parse(pkt)
    assert not isinstance(udp.parse(pkt[h.ihl:h.total_len], h.src, h.dst), str)


def test_something_that_is_not_a_link_config_is_rejected_not_raised() -> None:
    st, dev = make()
    dev.config = {"address": OURS}  # type: ignore[assignment]
    st.tick()
    assert st.stats["link_config.rejected"] == 1
    assert st.routes == []

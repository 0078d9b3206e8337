"""The ARP layer: the IPv4 layer's way down to a link (RFC 826, RFC 1122 §2.3.2).

On Ethernet a next hop is resolved to a MAC first (packets wait in the
interface's ``ArpCache`` meanwhile); on a point-to-point link a packet goes
straight down. This layer also answers ARP requests, learns from what it
hears, and announces the interface's addresses (RFC 5227 §2.3).
"""

from __future__ import annotations

import logging
from collections import Counter

from hilkit.port.clock import Clock
from hilkit.stack import arp, eth
from hilkit.stack.addr import ANY, BROADCAST, int_to_ip, is_multicast
from hilkit.stack.netif import Addresses, Buffer, Interface, Transmit

log = logging.getLogger(__name__)


class ArpLayer:
    def __init__(self, tx: Transmit, addrs: Addresses, clock: Clock, stats: Counter[str],
                 drops: Counter[str]) -> None:
        self._send = tx.send
        self._bcast = addrs.bcast  # updated in place by ``Addresses.refresh``
        self._clock = clock
        self._stats = stats
        self._drops = drops

    # -- output ------------------------------------------------------------------
    def output(self, iface: Interface, hop: int, pkt: list[Buffer]) -> None:
        """Send one IPv4 packet to ``hop`` on ``iface``, resolving its MAC if need be."""
        if not iface.link_up:  # before ARP: nothing queued nor asked on a down link
            self._stats["link_down_drops"] += 1
            return
        if not iface.ethernet:
            self._send(iface, b"".join(pkt))
            return
        if hop == BROADCAST:
            mac = eth.BROADCAST_MAC
        elif is_multicast(hop):  # RFC 1112 §6.4
            mac = b"\x01\x00\x5e" + (hop & 0x7FFFFF).to_bytes(3, "big")
        else:
            now = self._clock.now_ms()
            found = iface.arp.lookup(hop, now)
            if found is None:
                new, pushed_out = iface.arp.enqueue(hop, b"".join(pkt), now)
                if pushed_out is not None:  # silently, as Linux's unres_qlen overflow
                    self._stats["arp.queue_overflow"] += 1
                if new:
                    self.request(iface, hop)
                return
            mac = found
        self._eth_send(iface, mac, eth.ETHERTYPE_IPV4, pkt)

    def _eth_send(self, iface: Interface, dst: bytes, ethertype: int,
                  parts: list[Buffer]) -> None:
        self._send(iface, b"".join([eth.header(dst, iface.mac, ethertype), *parts]))

    def _arp_send(self, iface: Interface, op: int, eth_dst: bytes, tha: bytes, spa: int,
                  tpa: int) -> None:
        self._eth_send(iface, eth_dst, eth.ETHERTYPE_ARP,
                       [arp.build(op, iface.mac, spa, tha, tpa)])

    def request(self, iface: Interface, ip: int) -> None:
        """Ask who has ``ip``, from the interface's address on its subnet."""
        spa = next((a for a, m in iface.addrs if a & m == ip & m), iface.addrs[0][0]
                   if iface.addrs else ANY)
        self._stats["arp.requests_sent"] += 1
        self._arp_send(iface, arp.OP_REQUEST, eth.BROADCAST_MAC, b"\0" * 6, spa, ip)

    def announce(self, iface: Interface, addr: int) -> None:
        """Gratuitous ARP (an ARP Announcement, RFC 5227 §2.3): says we have ``addr``
        and refreshes the neighbours' caches. Nothing on a down link: it is said
        again when the link comes up."""
        if iface.ethernet and iface.link_up:
            self._stats["arp.announcements_sent"] += 1
            self._arp_send(iface, arp.OP_REQUEST, eth.BROADCAST_MAC, b"\0" * 6, addr, addr)

    # -- link state --------------------------------------------------------------
    def link_down(self, iface: Interface) -> None:
        """The link went down: what we knew of its neighbours may be stale when it comes
        back (a cable moved to another switch), so all of it goes, queued packets too."""
        entries, packets = iface.arp.flush()
        self._stats["arp.flushed_link_down"] += entries
        self._stats["arp.queue_dropped_link_down"] += packets

    def link_up(self, iface: Interface) -> None:
        """The link came back: announce every address (Linux with ``arp_notify`` set)."""
        for a, _ in iface.addrs:
            self.announce(iface, a)

    # -- input -------------------------------------------------------------------
    def input(self, iface: Interface, data: memoryview) -> None:
        p = arp.parse(data)
        if isinstance(p, str):
            self._drops[p] += 1
            return
        mine = {a for a, _ in iface.addrs}
        if p.spa in mine:
            self._drops["arp.address_conflict"] += 1
            log.warning("%s: another host (%s) claims %s", iface.dev.name,
                        eth.mac_str(p.sha), int_to_ip(p.spa))
            return
        now = self._clock.now_ms()
        for_us = p.tpa in mine
        if p.spa != ANY and p.spa not in self._bcast and not is_multicast(p.spa):
            if iface.arp.refuses(p.spa, p.sha, now):
                self._drops["arp.locked"] += 1  # a fresh entry keeps its MAC (locktime_ms)
            else:
                for pkt in iface.arp.update(p.spa, p.sha, now, create=for_us):
                    self._eth_send(iface, p.sha, eth.ETHERTYPE_IPV4, [pkt])
        if for_us and p.op == arp.OP_REQUEST:
            self._stats["arp.replies_sent"] += 1
            self._arp_send(iface, arp.OP_REPLY, p.sha, p.sha, p.tpa, p.spa)

    # -- timers ------------------------------------------------------------------
    def expire(self, interfaces: list[Interface], now: float) -> list[bytes]:
        """Ask again for addresses still unresolved; return the packets that gave up."""
        lost: list[bytes] = []
        for iface in interfaces:
            again, failed = iface.arp.due(now)
            for ip in again:
                self.request(iface, ip)
            for ip, pkts in failed:
                self._stats["arp.unresolved"] += 1
                log.debug("%s: %s did not answer ARP", iface.dev.name, int_to_ip(ip))
                lost.extend(pkts)
        return lost

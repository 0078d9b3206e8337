"""The IPv4 layer: addresses, the routing table, input dispatch, output (RFC 791, RFC 1122 §3.2).

The protocols above register with ``register``: their input is called with
each datagram for them, their error handler with each error about a datagram
they sent (an ICMP error the ICMP layer decoded, or a local failure such as
ARP giving up). Arrows point down: this layer knows the ARP layer below it and
nothing above it but those registered callables.
"""

from __future__ import annotations

import errno
import random
from collections import Counter
from typing import Protocol

from hilkit.port.clock import Clock
from hilkit.stack import ipv4
from hilkit.stack.addr import ANY, BROADCAST, int_to_ip, ip_to_int, is_multicast, mask_to_prefix
from hilkit.stack.arp_layer import ArpLayer
from hilkit.stack.netif import Addresses, Buffer, Interface, Route


class InputHandler(Protocol):
    """Takes a datagram for its protocol: header, header bytes, payload, and whether it
    came to a broadcast address (at the IP or the link layer)."""

    def __call__(self, h: ipv4.Header, hbytes: Buffer, payload: memoryview, bcast: bool,
                 /) -> None: ...


class ErrorHandler(Protocol):
    """Told of an ICMP error (or a local failure) about a datagram we sent."""

    def __call__(self, err: int, src: int, dst: int, transport: memoryview, /) -> None: ...


class Ipv4Layer:
    def __init__(self, link: ArpLayer, addrs: Addresses, clock: Clock, stats: Counter[str],
                 drops: Counter[str], ttl: int, reassembly: ipv4.ReassemblyLimits,
                 rng: random.Random) -> None:
        self.addrs = addrs
        self.routes: list[Route] = []
        self.reasm = ipv4.Reassembler(reassembly)
        self.ttl = ttl
        self._link = link
        self._link_output = link.output
        self._local = addrs.local  # the same sets ``addrs.refresh`` updates in place
        self._bcast = addrs.bcast
        self._clock = clock
        self._stats = stats
        self._drops = drops
        self._ident = rng.randrange(0x10000)
        self._handlers: dict[int, InputHandler] = {}
        self._error_handlers: dict[int, ErrorHandler] = {}
        # A datagram for a protocol nobody registered (the ICMP layer answers it)
        self.no_protocol: InputHandler | None = None

    def register(self, proto: int, on_input: InputHandler | None,
                 on_error: ErrorHandler | None) -> None:
        if on_input is not None:
            self._handlers[proto] = on_input
        if on_error is not None:
            self._error_handlers[proto] = on_error

    # -- addresses and routes --------------------------------------------------
    def is_local(self, addr: int) -> bool:
        return addr in self._local

    def is_broadcast(self, addr: int) -> bool:
        return addr in self._bcast

    def addr_add(self, iface: Interface, addr: int, mask: int) -> None:
        """Give ``iface`` an address and its on-link route, and announce it."""
        mask_to_prefix(mask)  # raises on a non-contiguous mask
        if addr in self._local:
            raise OSError(errno.EADDRINUSE, f"{int_to_ip(addr)} is already configured")
        iface.addrs.append((addr, mask))
        self.addrs.refresh()
        self.routes.append(Route(addr & mask, mask, ANY, iface))
        self._link.announce(iface, addr)  # announces us, refreshes neighbours' caches

    def addr_del(self, iface: Interface, addr: int) -> None:
        """Remove an address; its on-link route goes unless another address keeps the subnet."""
        gone = {(a & m, m) for a, m in iface.addrs if a == addr}
        iface.addrs = [(a, m) for a, m in iface.addrs if a != addr]
        gone -= {(a & m, m) for a, m in iface.addrs}  # subnets another address keeps

        def keep(r: Route) -> bool:  # only the subnet routes: a link config's routes stay
            return r.iface is not iface or r.gateway != ANY or (r.net, r.mask) not in gone

        self.routes[:] = [r for r in self.routes if keep(r)]
        self.addrs.refresh()

    def route_add(self, dest: str, netmask: str, gateway: str) -> None:
        gw = ip_to_int(gateway)
        via = self.route(gw)
        if via is None or via.gateway != ANY:
            raise OSError(errno.ENETUNREACH, f"gateway {gateway} is not on a local link")
        mask = ip_to_int(netmask)
        self.routes.append(Route(ip_to_int(dest) & mask, mask, gw, via.iface))

    def routes_del(self, routes: list[Route]) -> None:
        """Remove exactly these routes (by identity)."""
        self.routes[:] = [r for r in self.routes if not any(r is m for m in routes)]

    def route(self, dst: int) -> Route | None:
        """The longest-prefix match for ``dst``, or None."""
        best: Route | None = None
        for r in self.routes:
            if dst & r.mask == r.net and (best is None or r.mask > best.mask):
                best = r
        return best

    def source_for(self, dst: int) -> tuple[Route | None, int]:
        """The route to ``dst`` and the source address a datagram to it should carry."""
        if dst == BROADCAST:
            for i in self.addrs.interfaces:
                if i.addrs:
                    return Route(0, 0, ANY, i), i.addrs[0][0]
            return None, ANY
        r = self.route(dst)
        if r is None or not r.iface.addrs:
            return r, ANY
        if r.src != ANY and r.src in self._local:  # a link config's route: its address
            return r, r.src
        hop = r.gateway or dst
        for a, m in r.iface.addrs:
            if a & m == hop & m:
                return r, a
        return r, r.iface.addrs[0][0]

    # -- output ----------------------------------------------------------------
    def output(
        self, dst: int, proto: int, parts: list[Buffer], src: int | None = None,
        df: bool = False, routed: tuple[Route | None, int] | None = None,
    ) -> int:
        """Send a datagram; 0, or the errno of why it could not go.

        ``routed`` is ``source_for(dst)`` when the caller already looked it up.
        """
        route, default_src = routed or self.source_for(dst)
        if route is None:
            self._stats["ipv4.no_route"] += 1
            return errno.ENETUNREACH
        if src is None or src == ANY:
            src = default_src
        iface = route.iface
        hop = BROADCAST if dst in self._bcast else (route.gateway or dst)
        self._ident = ident = (self._ident + 1) & 0xFFFF
        mtu = iface.dev.mtu
        if proto == ipv4.PROTO_TCP:  # a longer segment is cut before the device, or by it
            mtu = max(mtu, iface.offloads.tso or ipv4.MAX_DATAGRAM)  # (TSO, GSO), not by IP
        try:
            for pkt in ipv4.packets(src, dst, proto, parts, ident, mtu, self.ttl, 0, df):
                self._link_output(iface, hop, pkt)
        except ipv4.Drop as d:
            self._stats[d.reason] += 1
            return errno.EMSGSIZE
        if proto == ipv4.PROTO_TCP and (size := ipv4.MIN_HEADER_LEN + sum(
                len(p) for p in parts)) > iface.dev.mtu:  # each piece takes the next IP ID
            self._ident = (ident + -(-size // max(iface.dev.mtu - 80, 8))) & 0xFFFF
        return 0

    # -- input -----------------------------------------------------------------
    def input(self, iface: Interface, mv: memoryview, link_group: bool,
              csum_checked: bool = False) -> None:
        """One IPv4 packet from ``iface`` (``link_group``: sent to a link-layer group;
        ``csum_checked``: its TCP/UDP checksum is known good)."""
        try:
            h = ipv4.parse(mv)
        except ipv4.Drop as d:
            self._drops[d.reason] += 1
            return
        if (csum_checked or iface.offloads.rx_checksum) and not h.is_fragment:
            h.csum_checked = True  # (a fragment's whole is checked once reassembled)
        pkt = mv[:h.total_len]
        bcast = h.dst in self._bcast
        if not bcast and h.dst not in self._local:
            self._stats["ipv4.not_for_us" if not is_multicast(h.dst) else "ipv4.multicast"] += 1
            return
        if h.src in self._bcast or is_multicast(h.src):
            self._drops["ipv4.bad_source"] += 1
            return
        if h.src in self._local:  # our own address from the wire: a martian, as Linux has it
            self._drops["ipv4.own_source"] += 1
            return
        if link_group and not bcast and not is_multicast(h.dst):
            self._drops["ipv4.unicast_in_link_broadcast"] += 1  # RFC 1122 §3.3.6
            return
        bcast = bcast or link_group
        if h.is_fragment:
            whole = self.reasm.add(h, pkt, self._clock.now_ms(), self._drops, bcast)
            if whole is None:
                return
            self._stats["ipv4.reassembled"] += 1
            h, hdr_bytes, data = whole
            hbytes: Buffer = hdr_bytes
            payload = memoryview(data)
        else:
            hbytes, payload = pkt[:h.ihl], pkt[h.ihl:]
        handler = self._handlers.get(h.proto)
        if handler is not None:
            handler(h, hbytes, payload, bcast)
            return
        self._stats["ipv4.unknown_protocol"] += 1
        if self.no_protocol is not None:
            self.no_protocol(h, hbytes, payload, bcast)

    # -- errors ----------------------------------------------------------------
    def report_error(self, err: int, src: int, dst: int, proto: int,
                     transport: memoryview) -> None:
        """Hand an error about a datagram we sent to the protocol that sent it."""
        handler = self._error_handlers.get(proto)
        if handler is not None:
            handler(err, src, dst, transport)

    def local_error(self, pkt: Buffer, err: int) -> None:
        """A datagram we sent failed here (ARP gave up): report it as ICMP would."""
        view = memoryview(pkt)
        ihl = (view[0] & 0xF) * 4
        if (int.from_bytes(view[6:8], "big") & ipv4.OFFSET_MASK) != 0:
            return  # only the first fragment says who sent it
        self.report_error(err, int.from_bytes(view[12:16], "big"),
                          int.from_bytes(view[16:20], "big"), view[9], view[ihl:])

    def next_deadline(self) -> float | None:
        return self.reasm.next_deadline()


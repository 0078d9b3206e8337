"""What a link negotiated (``Device.link_config``: PPP's IPCP, RFC 1332, RFC 1877),
applied to its interface as addresses, routes and DNS servers.

Only what the last config added is ever taken away: addresses and routes
set by hand on the same device stay.
"""

from __future__ import annotations

import logging
from collections import Counter

from hilkit.port.clock import Clock
from hilkit.port.device import LinkConfig
from hilkit.stack.addr import ANY, BROADCAST, int_to_ip, ip_to_int, is_multicast
from hilkit.stack.faults import LogThrottle
from hilkit.stack.ip_layer import Ipv4Layer
from hilkit.stack.netif import Interface, Route

log = logging.getLogger(__name__)


class LinkConfigs:
    def __init__(self, ip: Ipv4Layer, clock: Clock, stats: Counter[str],
                 log_interval_ms: float) -> None:
        self._ip = ip
        self._clock = clock
        self._stats = stats
        self._log_interval_ms = log_interval_ms

    def check(self, iface: Interface) -> None:
        """Apply the device's ``link_config()`` if it changed since the last tick.

        Devices return the same object until something changes, so the common case
        is one call and one identity test.
        """
        assert iface.link_config is not None
        try:
            cfg = iface.link_config()
        except Exception:  # a driver bug: keep what is applied, try again next tick
            self._stats["link_config.failed"] += 1
            if iface.link_faults is None:
                iface.link_faults = LogThrottle(self._log_interval_ms)
            iface.link_faults.report(log, self._clock.now_ms(),
                                     f"{iface.dev.name}: link_config() raised")
            return
        if cfg is iface.link:
            return
        if cfg == iface.link:  # an equal new object: nothing to do but remember it
            iface.link = cfg
            return
        self._remove(iface)
        iface.link = cfg
        if cfg is None:
            log.info("%s: link has no addresses now", iface.dev.name)
            return
        try:
            self._apply(iface, cfg)
        except Exception as e:  # bad addresses, one in use elsewhere, not a LinkConfig
            self._remove(iface)
            self._stats["link_config.rejected"] += 1
            log.warning("%s: link config %s not applied: %s", iface.dev.name, cfg, e)
            return
        self._stats["link_config.applied"] += 1
        log.info("%s: %s peer %s dns %s", iface.dev.name, cfg.address, cfg.peer or "-",
                 ",".join(iface.dns) or "-")

    def _apply(self, iface: Interface, cfg: LinkConfig) -> None:
        """Our address as a /32, a host route to the peer, and the default route via the link.

        On a RAW_IP link every route is on-link (gateway ANY): a packet goes down the
        link whatever its destination, with no ARP and no next-hop address. The routes
        name the link's address as their source, so hand-set addresses on the same
        device do not leak onto the link.
        """
        addr = ip_to_int(cfg.address)
        peer = ip_to_int(cfg.peer) if cfg.peer else None
        dns = tuple(int_to_ip(ip_to_int(d)) for d in cfg.dns)  # validate before any change
        if addr in (ANY, BROADCAST) or is_multicast(addr):
            raise ValueError(f"{cfg.address} cannot be a host's address")
        if peer in (ANY, addr):
            peer = None
        if addr not in {a for a, _ in iface.addrs}:  # set by hand to the same: leave it so
            self._ip.addr_add(iface, addr, BROADCAST)  # raises if another device has it
            iface.link_addr = addr
        routes: list[Route] = []
        if peer is not None:
            routes.append(Route(peer, BROADCAST, ANY, iface, addr))
        if cfg.default_route:  # an Ethernet point-to-point link resolves the peer by ARP
            gw = peer if iface.ethernet and peer is not None else ANY
            routes.append(Route(ANY, ANY, gw, iface, addr))
        self._ip.routes.extend(routes)
        iface.link_routes = routes
        iface.dns = dns

    def _remove(self, iface: Interface) -> None:
        """Take away what the last link config added, and nothing else."""
        if iface.link_routes:
            self._ip.routes_del(iface.link_routes)
            iface.link_routes = []
        if iface.link_addr is not None:
            self._ip.addr_del(iface, iface.link_addr)
            iface.link_addr = None
        iface.dns = ()

"""The stack: devices, addresses, routes, and the tick that drives them all.

Single-threaded, like picoTCP: ``tick()`` polls every device with a budget,
runs the timers that are due and returns; ``run()`` loops over ``tick()`` and
between ticks waits on the devices' descriptors until the next timer is due,
so it answers at once and idles without spinning.

Nothing a wire sends may raise out of ``tick()``: every refusal is counted in
``drops`` under its reason.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import selectors
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hilkit.port.capture import CaptureDevice, PcapngWriter
from hilkit.port.clock import Clock, MonotonicClock
from hilkit.port.device import (
    Device,
    LinkConfig,
    LinkType,
    device_deadline,
    link_config_reader,
    unwrap_chain,
)
from hilkit.stack import arp, checksum, eth, icmp4, ipv4, udp
from hilkit.stack.addr import (
    ANY,
    BROADCAST,
    int_to_ip,
    ip_to_int,
    is_multicast,
    mask_to_prefix,
)
from hilkit.stack.events import SocketEvent
from hilkit.stack.faults import DeviceGuard, LogThrottle
from hilkit.stack.icmp4 import PingError, PingSession, PingStats
from hilkit.stack.tcp_conn import TcpConfig
from hilkit.stack.tcp_layer import TcpLayer
from hilkit.stack.tcp_socket import TcpSocket
from hilkit.stack.timers import Timer, TimerQueue
from hilkit.stack.udp import UdpSocket

log = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class StackConfig:
    poll_budget: int = 64  # frames per device per tick: one busy NIC cannot starve the rest
    ttl: int = ipv4.DEFAULT_TTL
    arp: arp.ArpConfig = field(default_factory=arp.ArpConfig)
    reassembly: ipv4.ReassemblyLimits = field(default_factory=ipv4.ReassemblyLimits)
    icmp_error_rate: float = 100.0  # generated ICMP errors per second ...
    icmp_error_burst: int = 50  # ... with this burst
    idle_poll_ms: float = 1.0  # wait cap when a device has no descriptor to wait on
    tcp: TcpConfig = field(default_factory=TcpConfig)
    tcp_max_syn_backlog: int = 256  # half-open connections per listener, then SYN cookies
    tcp_syncookies: bool = True
    device_max_failures: int = 8  # poll or send raising this often in a row takes a device down
    device_retry_ms: float = 1000.0  # a down device gets a trial poll this often
    fault_log_interval_ms: float = 5000.0  # after the first traceback, one line per this


@dataclass
class Interface:
    dev: Device
    ethernet: bool
    mac: bytes
    arp: arp.ArpCache
    guard: DeviceGuard  # what went wrong with ``dev``: counted, down after repeated failures
    addrs: list[tuple[int, int]] = field(default_factory=list)  # (address, netmask)
    # The device's ``link_config`` (looked up once, at add_device), or None: it has none.
    link_config: Callable[[], LinkConfig | None] | None = field(default=None, compare=False)
    link: LinkConfig | None = field(default=None, compare=False)  # the last one it returned
    dns: tuple[str, ...] = ()  # what ``link`` said, once applied
    # What applying ``link`` added, so exactly that goes when it changes; hand-made
    # addresses and routes on the same device stay.
    link_addr: int | None = field(default=None, compare=False, repr=False)
    link_routes: list[Route] = field(default_factory=list, compare=False, repr=False)
    link_faults: LogThrottle | None = field(default=None, compare=False, repr=False)

    def subnet_broadcasts(self) -> set[int]:
        return {(a & m) | (~m & BROADCAST) for a, m in self.addrs if m != BROADCAST}


@dataclass(frozen=True)
class Route:
    net: int
    mask: int
    gateway: int  # ANY for on-link
    iface: Interface
    src: int = ANY  # preferred source (as ``ip route ... src``): a link config's address


class ErrorHandler(Protocol):
    """Told of an ICMP error (or a local failure) about a datagram we sent."""

    def __call__(self, err: int, src: int, dst: int, transport: memoryview) -> None: ...


# RFC 1122 §3.2.2.1 / Linux icmp_err_convert: unreachable code -> errno
_UNREACH_ERRNO = {
    icmp4.CODE_NET_UNREACH: errno.ENETUNREACH,
    icmp4.CODE_HOST_UNREACH: errno.EHOSTUNREACH,
    icmp4.CODE_PROTO_UNREACH: errno.ENOPROTOOPT,
    icmp4.CODE_PORT_UNREACH: errno.ECONNREFUSED,
    icmp4.CODE_FRAG_NEEDED: errno.EMSGSIZE,
}


_MAX_TIMER_ROUNDS = 64


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        os.eventfd_read(fd)


def _sock_name(sock: Any) -> str:
    """'UdpSocket 0.0.0.0:7' for a log line; never raises, it runs in an ``except``."""
    try:
        host, port = sock.getsockname()
        return f"{type(sock).__name__} {host}:{port}"
    except Exception:
        return type(sock).__name__


class Stack:
    def __init__(
        self, clock: Clock | None = None, config: StackConfig | None = None,
        pcap: str | None = None,
    ) -> None:
        self.clock: Clock = clock or MonotonicClock()
        self.config = config or StackConfig()
        self.drops: Counter[str] = Counter()  # refused input, by reason
        self.stats: Counter[str] = Counter()  # everything else worth counting
        self.interfaces: list[Interface] = []
        self.routes: list[Route] = []
        self.timers = TimerQueue()
        self._reasm = ipv4.Reassembler(self.config.reassembly)
        self._icmp_bucket = icmp4.TokenBucket(
            self.config.icmp_error_rate, self.config.icmp_error_burst
        )
        self._rng = random.SystemRandom()
        self._ident = self._rng.randrange(0x10000)
        self._local: set[int] = set()
        self._bcast: set[int] = {BROADCAST}
        self._udp: dict[int, list[UdpSocket]] = {}
        self._pings: dict[int, PingSession] = {}
        self._ping_cbs: dict[int, Callable[[PingStats], None]] = {}
        self._ping_timers: dict[int, list[Timer]] = {}
        self.tcp = TcpLayer(self, self.config.tcp, self.config.tcp_max_syn_backlog,
                            self.config.tcp_syncookies)
        self._error_handlers: dict[int, ErrorHandler] = {
            ipv4.PROTO_UDP: self._udp_error,
            ipv4.PROTO_ICMP: self._ping_error,
            ipv4.PROTO_TCP: self.tcp.icmp_error,
        }
        self._selector: selectors.BaseSelector | None = None
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._no_fd = False
        self._more = False
        self._callback_logs: dict[int, LogThrottle] = {}  # by id() of socket or ping session
        self._capture: PcapngWriter | None = None
        if pcap is not None:
            self._capture = PcapngWriter(pcap)

    # -- configuration ------------------------------------------------------
    def add_device(self, dev: Device) -> Device:
        """Attach a device (``pico_device_init``); returns it, wrapped if capturing."""
        if self._capture is not None:
            dev = CaptureDevice(dev, self._capture)
        ethernet = dev.link_type is LinkType.ETHERNET
        if ethernet and (dev.mac is None or len(dev.mac) != 6):
            raise ValueError(f"{dev.name}: an Ethernet device needs a 6-byte MAC")
        c = self.config
        guard = DeviceGuard(dev.name, log, c.device_max_failures, c.device_retry_ms,
                            c.fault_log_interval_ms)
        iface = Interface(dev, ethernet, bytes(dev.mac or b""), arp.ArpCache(c.arp), guard,
                          link_config=link_config_reader(dev))
        self.interfaces.append(iface)
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if iface.link_config is not None:  # a link that is up already is usable at once
            self._link_config_check(iface)
        return dev

    def _iface(self, dev: Device | str) -> Interface:
        for i in self.interfaces:
            if dev == i.dev.name or any(dev is d for d in unwrap_chain(i.dev)):
                return i
        raise ValueError(f"device {getattr(dev, 'name', dev)!r} was not added to this stack")

    def link_add(self, dev: Device | str, address: str, netmask: str) -> None:
        """Give ``dev`` an address (``pico_ipv4_link_add``) and its on-link route."""
        addr, mask = ip_to_int(address), ip_to_int(netmask)
        self._addr_add(self._iface(dev), addr, mask)

    def _addr_add(self, iface: Interface, addr: int, mask: int) -> None:
        mask_to_prefix(mask)  # raises on a non-contiguous mask
        if addr in self._local:
            raise OSError(errno.EADDRINUSE, f"{int_to_ip(addr)} is already configured")
        iface.addrs.append((addr, mask))
        self._refresh_addrs()
        self.routes.append(Route(addr & mask, mask, ANY, iface))
        if iface.ethernet:  # gratuitous ARP announces us and refreshes neighbours' caches
            self._arp_send(iface, arp.OP_REQUEST, eth.BROADCAST_MAC, b"\0" * 6, addr, addr)

    def link_del(self, dev: Device | str, address: str) -> None:
        """Remove an address; its on-link route goes unless another address keeps the subnet."""
        self._addr_del(self._iface(dev), ip_to_int(address))

    def _addr_del(self, iface: Interface, addr: int) -> None:
        gone = {(a & m, m) for a, m in iface.addrs if a == addr}
        iface.addrs = [(a, m) for a, m in iface.addrs if a != addr]
        gone -= {(a & m, m) for a, m in iface.addrs}  # subnets another address keeps

        def keep(r: Route) -> bool:  # only the subnet routes: a link config's routes stay
            return r.iface is not iface or r.gateway != ANY or (r.net, r.mask) not in gone

        self.routes = [r for r in self.routes if keep(r)]
        self._refresh_addrs()

    def route_add(self, dest: str, netmask: str, gateway: str) -> None:
        """Route ``dest/netmask`` via ``gateway`` (``0.0.0.0/0.0.0.0`` is the default)."""
        gw = ip_to_int(gateway)
        via = self._route(gw)
        if via is None or via.gateway != ANY:
            raise OSError(errno.ENETUNREACH, f"gateway {gateway} is not on a local link")
        mask = ip_to_int(netmask)
        self.routes.append(Route(ip_to_int(dest) & mask, mask, gw, via.iface))

    @property
    def dns_servers(self) -> tuple[str, ...]:
        """DNS servers the links said (RFC 1877), in interface order, each once."""
        return tuple(dict.fromkeys(d for i in self.interfaces for d in i.dns))

    def _link_config_check(self, iface: Interface) -> None:
        """Apply the device's ``link_config()`` if it changed since the last tick.

        Devices return the same object until something changes, so the common case
        is one call and one identity test.
        """
        assert iface.link_config is not None
        try:
            cfg = iface.link_config()
        except Exception:  # a driver bug: keep what is applied, try again next tick
            self.stats["link_config.failed"] += 1
            if iface.link_faults is None:
                iface.link_faults = LogThrottle(self.config.fault_log_interval_ms)
            iface.link_faults.report(log, self.clock.now_ms(),
                                     f"{iface.dev.name}: link_config() raised")
            return
        if cfg is iface.link:
            return
        if cfg == iface.link:  # an equal new object: nothing to do but remember it
            iface.link = cfg
            return
        self._link_config_remove(iface)
        iface.link = cfg
        if cfg is None:
            log.info("%s: link has no addresses now", iface.dev.name)
            return
        try:
            self._link_config_apply(iface, cfg)
        except Exception as e:  # bad addresses, one in use elsewhere, not a LinkConfig
            self._link_config_remove(iface)
            self.stats["link_config.rejected"] += 1
            log.warning("%s: link config %s not applied: %s", iface.dev.name, cfg, e)
            return
        self.stats["link_config.applied"] += 1
        log.info("%s: %s peer %s dns %s", iface.dev.name, cfg.address, cfg.peer or "-",
                 ",".join(iface.dns) or "-")

    def _link_config_apply(self, iface: Interface, cfg: LinkConfig) -> None:
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
            self._addr_add(iface, addr, BROADCAST)  # raises if another device has it
            iface.link_addr = addr
        routes: list[Route] = []
        if peer is not None:
            routes.append(Route(peer, BROADCAST, ANY, iface, addr))
        if cfg.default_route:  # an Ethernet point-to-point link resolves the peer by ARP
            gw = peer if iface.ethernet and peer is not None else ANY
            routes.append(Route(ANY, ANY, gw, iface, addr))
        self.routes.extend(routes)
        iface.link_routes = routes
        iface.dns = dns

    def _link_config_remove(self, iface: Interface) -> None:
        """Take away what the last link config added, and nothing else."""
        if iface.link_routes:
            mine = iface.link_routes
            self.routes = [r for r in self.routes if not any(r is m for m in mine)]
            iface.link_routes = []
        if iface.link_addr is not None:
            self._addr_del(iface, iface.link_addr)
            iface.link_addr = None
        iface.dns = ()

    def _refresh_addrs(self) -> None:
        self._local = {a for i in self.interfaces for a, _ in i.addrs}
        self._bcast = {BROADCAST}.union(*(i.subnet_broadcasts() for i in self.interfaces))

    def _route(self, dst: int) -> Route | None:
        best: Route | None = None
        for r in self.routes:
            if dst & r.mask == r.net and (best is None or r.mask > best.mask):
                best = r
        return best

    # -- the loop ------------------------------------------------------------
    def tick(self) -> None:
        """Poll devices (with budgets), apply what their links negotiated, run due timers;
        like ``pico_stack_tick``."""
        budget = self.config.poll_budget
        more = False
        start = self.clock.now_ms()
        for iface in self.interfaces:
            guard = iface.guard
            if not guard.may_poll(start):
                continue
            try:  # a driver bug or a bus error must not take the loop down
                frames = iface.dev.poll(budget)
            except Exception:
                if guard.failed("poll", start):
                    self._device_state_changed()
                continue
            if guard.succeeded("poll"):
                self._device_state_changed()
            if iface.link_config is not None:  # before input: the poll may have negotiated it
                self._link_config_check(iface)
            more = more or len(frames) >= budget
            for frame in frames:
                try:
                    self._input(iface, frame)
                except Exception:  # a bug, not bad input: count it loudly, keep running
                    self.drops["internal_error"] += 1
                    log.exception("%s: frame handling failed", iface.dev.name)
        self._more = more
        now = self.clock.now_ms()
        for _ in range(_MAX_TIMER_ROUNDS):  # timers may schedule timers that are due too
            due = self.timers.pop_due(now)
            if not due:
                break
            for t in due:
                if t.cancelled:  # cancelled by an earlier callback of this same batch
                    continue
                try:
                    t.fn()
                except Exception:
                    self.drops["internal_error"] += 1
                    log.exception("timer callback failed")
        self._maintain(now)

    def next_deadline(self) -> float | None:
        cands = [self.timers.next_deadline(), self._reasm.next_deadline()]
        cands += [i.arp.next_deadline() for i in self.interfaces]
        cands += [device_deadline(i.dev) for i in self.interfaces]
        cands += [i.guard.retry_deadline() for i in self.interfaces]  # down devices' trials
        return min((c for c in cands if c is not None), default=None)

    def run(self, until: Callable[[], bool] | None = None, timeout: float | None = None) -> bool:
        """Tick until ``until()`` is true (returns True) or ``timeout`` seconds pass (False).

        Between ticks it sleeps in ``select`` on the devices' descriptors until
        the next timer is due: frames are answered as they arrive, and an idle
        stack costs no CPU.
        """
        start = self.clock.now_ms()
        end = None if timeout is None else start + timeout * 1000.0
        while True:
            self.tick()
            if until is not None and until():
                return True
            now = self.clock.now_ms()
            if end is not None and now >= end:
                return False
            if self._more:
                continue
            sel = self._get_selector()  # remade when a device goes down or comes back
            deadline = self.next_deadline()
            if end is not None:
                deadline = end if deadline is None else min(deadline, end)
            wait = None if deadline is None else max(0.0, deadline - now)
            if self._no_fd:
                cap = self.config.idle_poll_ms
                wait = cap if wait is None else min(wait, cap)
            for key, _ in sel.select(None if wait is None else wait / 1000.0):
                if key.fd == self._wake_fd:
                    _drain(self._wake_fd)

    def wake(self) -> None:
        """Make a ``run()`` in another thread look at ``until`` now; safe from any thread."""
        os.eventfd_write(self._wake_fd, 1)

    def _get_selector(self) -> selectors.BaseSelector:
        if self._selector is None:
            sel = selectors.DefaultSelector()
            sel.register(self._wake_fd, selectors.EVENT_READ)
            self._no_fd = False
            for i in self.interfaces:
                if i.guard.down:  # its descriptor may stay readable: retried by deadline
                    continue
                fd = i.dev.fileno()
                if fd is None:
                    self._no_fd = True
                else:
                    sel.register(fd, selectors.EVENT_READ)
            self._selector = sel
        return self._selector

    def _device_state_changed(self) -> None:
        """A device went down or came back: wait on the descriptors of the live ones only."""
        if self._selector is not None:
            self._selector.close()
            self._selector = None

    def call_later(self, delay_ms: float, fn: Callable[[], None]) -> Timer:
        return self.timers.at(self.clock.now_ms() + delay_ms, fn)

    def close(self) -> None:
        """Abort every connection, end pings, close sockets, devices and the capture."""
        self.tcp.close_all()
        for ident in list(self._pings):
            self.ping_abort(ident)
        for s in [s for socks in self._udp.values() for s in socks]:
            s.close()
        for i in self.interfaces:
            i.dev.close()
        if self._capture is not None:
            self._capture.close()
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if self._wake_fd >= 0:
            os.close(self._wake_fd)
            self._wake_fd = -1

    def counters(self) -> dict[str, object]:
        """Everything counted, for a person or a report: the drivers' counters per device,
        what the stack saw go wrong with each device, drops by reason, stats, the capture."""
        out: dict[str, object] = {
            "devices": {i.dev.name: i.dev.counters.as_dict() for i in self.interfaces},
            "device_faults": {i.dev.name: i.guard.faults.as_dict()
                              for i in self.interfaces},
            "drops": dict(sorted(self.drops.items())),
            "stats": dict(sorted(self.stats.items())),
        }
        if self._capture is not None:
            out["capture"] = self._capture.counters()
        return out

    def _maintain(self, now: float) -> None:
        for iface in self.interfaces:
            again, failed = iface.arp.due(now)
            for ip in again:
                self._arp_request(iface, ip)
            for ip, pkts in failed:
                self.stats["arp.unresolved"] += 1
                log.debug("%s: %s did not answer ARP", iface.dev.name, int_to_ip(ip))
                for pkt in pkts:
                    self._local_error(pkt, errno.EHOSTUNREACH)
        for hdr, first in self._reasm.expire(now, self.drops):
            self._icmp_error(hdr, first[:hdr.ihl], first[hdr.ihl:], False,
                             icmp4.TYPE_TIME_EXCEEDED, icmp4.CODE_REASSEMBLY_EXCEEDED)

    def _notify(self, sock: Any, events: SocketEvent) -> None:
        cb = sock.on_event
        if cb is None:
            return
        try:
            cb(sock, events)
        except Exception:
            self._callback_failed(sock, f"event callback of {_sock_name(sock)} raised")

    def _callback_failed(self, owner: object, what: str) -> None:
        """An application callback raised: count it; log it once per ``owner``, then rarely."""
        self.stats["callback_error"] += 1
        throttle = self._callback_logs.get(id(owner))
        if throttle is None:
            throttle = LogThrottle(self.config.fault_log_interval_ms)
            self._callback_logs[id(owner)] = throttle
            weakref.finalize(owner, self._callback_logs.pop, id(owner), None)  # goes with it
        throttle.report(log, self.clock.now_ms(), what)

    # -- input -----------------------------------------------------------------
    def _input(self, iface: Interface, frame: bytes) -> None:
        mv = memoryview(frame)
        if not iface.ethernet:
            self._ipv4_input(iface, mv, False)
            return
        if len(mv) < eth.HEADER_LEN:
            self.drops["eth.short"] += 1
            return
        dst = bytes(mv[0:6])
        group = eth.is_group(dst)
        if dst != iface.mac and dst != eth.BROADCAST_MAC:
            self.stats["eth.not_for_us" if not group else "eth.multicast_ignored"] += 1
            return
        etype = (mv[12] << 8) | mv[13]
        if etype == eth.ETHERTYPE_IPV4:
            self._ipv4_input(iface, mv[eth.HEADER_LEN:], group)
        elif etype == eth.ETHERTYPE_ARP:
            self._arp_input(iface, mv[eth.HEADER_LEN:])
        else:
            self.stats["eth.unknown_ethertype"] += 1

    def _arp_input(self, iface: Interface, data: memoryview) -> None:
        p = arp.parse(data)
        if isinstance(p, str):
            self.drops[p] += 1
            return
        mine = {a for a, _ in iface.addrs}
        if p.spa in mine:
            self.drops["arp.address_conflict"] += 1
            log.warning("%s: another host (%s) claims %s", iface.dev.name,
                        eth.mac_str(p.sha), int_to_ip(p.spa))
            return
        now = self.clock.now_ms()
        for_us = p.tpa in mine
        if p.spa != ANY and p.spa not in self._bcast and not is_multicast(p.spa):
            if iface.arp.refuses(p.spa, p.sha, now):
                self.drops["arp.locked"] += 1  # a fresh entry keeps its MAC (ArpConfig.locktime_ms)
            else:
                for pkt in iface.arp.update(p.spa, p.sha, now, create=for_us):
                    self._eth_send(iface, p.sha, eth.ETHERTYPE_IPV4, [pkt])
        if for_us and p.op == arp.OP_REQUEST:
            self.stats["arp.replies_sent"] += 1
            self._arp_send(iface, arp.OP_REPLY, p.sha, p.sha, p.tpa, p.spa)

    def _ipv4_input(self, iface: Interface, mv: memoryview, link_group: bool) -> None:
        try:
            h = ipv4.parse(mv)
        except ipv4.Drop as d:
            self.drops[d.reason] += 1
            return
        pkt = mv[:h.total_len]
        bcast = h.dst in self._bcast
        if not bcast and h.dst not in self._local:
            self.stats["ipv4.not_for_us" if not is_multicast(h.dst) else "ipv4.multicast"] += 1
            return
        if h.src in self._bcast or is_multicast(h.src):
            self.drops["ipv4.bad_source"] += 1
            return
        if h.src in self._local:  # our own address from the wire: a martian, as Linux has it
            self.drops["ipv4.own_source"] += 1
            return
        if link_group and not bcast and not is_multicast(h.dst):
            self.drops["ipv4.unicast_in_link_broadcast"] += 1  # RFC 1122 §3.3.6
            return
        bcast = bcast or link_group
        if h.is_fragment:
            whole = self._reasm.add(h, pkt, self.clock.now_ms(), self.drops, bcast)
            if whole is None:
                return
            self.stats["ipv4.reassembled"] += 1
            h, hdr_bytes, data = whole
            hbytes: Buffer = hdr_bytes
            payload = memoryview(data)
        else:
            hbytes, payload = pkt[:h.ihl], pkt[h.ihl:]
        if h.proto == ipv4.PROTO_ICMP:
            self._icmp_input(h, payload, bcast)
        elif h.proto == ipv4.PROTO_TCP:
            self.tcp.input(h, payload, bcast)
        elif h.proto == ipv4.PROTO_UDP:
            self._udp_input(h, hbytes, payload, bcast)
        else:
            self.stats["ipv4.unknown_protocol"] += 1
            self._icmp_error(h, hbytes, payload, bcast, icmp4.TYPE_DEST_UNREACH,
                             icmp4.CODE_PROTO_UNREACH)

    def _icmp_input(self, h: ipv4.Header, msg: memoryview, bcast: bool) -> None:
        if len(msg) < icmp4.HEADER_LEN:
            self.drops["icmp.short"] += 1
            return
        if not checksum.verify(msg):
            self.drops["icmp.bad_checksum"] += 1
            return
        kind = msg[0]
        if kind == icmp4.TYPE_ECHO_REQUEST:
            if bcast:  # as Linux's icmp_echo_ignore_broadcasts=1
                self.stats["icmp.echo_broadcast_ignored"] += 1
                return
            rest = int.from_bytes(msg[4:8], "big")
            body = msg[icmp4.HEADER_LEN:]
            hdr = icmp4.header(icmp4.TYPE_ECHO_REPLY, 0, rest, body)
            self.stats["icmp.echo_replies_sent"] += 1
            self._ip_output(h.src, ipv4.PROTO_ICMP, [hdr, body], src=h.dst)
        elif kind == icmp4.TYPE_ECHO_REPLY:
            self._ping_reply(h, msg)
        elif kind in (icmp4.TYPE_DEST_UNREACH, icmp4.TYPE_TIME_EXCEEDED,
                      icmp4.TYPE_PARAM_PROBLEM, icmp4.TYPE_SOURCE_QUENCH):
            self._icmp_error_input(kind, msg[1], msg[icmp4.HEADER_LEN:])
        else:
            self.stats["icmp.type_ignored"] += 1

    def _icmp_error_input(self, kind: int, code: int, inner: memoryview) -> None:
        """Hand an ICMP error to whatever sent the datagram it quotes (RFC 1122 §3.2.2)."""
        if len(inner) < ipv4.MIN_HEADER_LEN or inner[0] >> 4 != 4:
            self.drops["icmp.error_bad_quote"] += 1
            return
        ihl = (inner[0] & 0xF) * 4
        if ihl < ipv4.MIN_HEADER_LEN or len(inner) < ihl + 8:
            self.drops["icmp.error_bad_quote"] += 1
            return
        src = int.from_bytes(inner[12:16], "big")
        if src not in self._local:
            self.drops["icmp.error_not_ours"] += 1
            return
        if kind == icmp4.TYPE_SOURCE_QUENCH:  # deprecated by RFC 6633: ignore
            self.stats["icmp.source_quench_ignored"] += 1
            return
        if kind == icmp4.TYPE_DEST_UNREACH:
            err = _UNREACH_ERRNO.get(code, errno.EHOSTUNREACH)
        elif kind == icmp4.TYPE_PARAM_PROBLEM:
            err = errno.EPROTO
        else:
            err = errno.EHOSTUNREACH
        self.stats["icmp.errors_received"] += 1
        handler = self._error_handlers.get(inner[9])
        if handler is not None:
            handler(err, src, int.from_bytes(inner[16:20], "big"), inner[ihl:])

    def _local_error(self, pkt: Buffer, err: int) -> None:
        """A datagram we sent failed here (ARP gave up): report it as ICMP would."""
        view = memoryview(pkt)
        ihl = (view[0] & 0xF) * 4
        if (int.from_bytes(view[6:8], "big") & ipv4.OFFSET_MASK) != 0:
            return  # only the first fragment says who sent it
        handler = self._error_handlers.get(view[9])
        if handler is not None:
            handler(err, int.from_bytes(view[12:16], "big"), int.from_bytes(view[16:20], "big"),
                    view[ihl:])

    # -- output ----------------------------------------------------------------
    def _next_ident(self) -> int:
        self._ident = (self._ident + 1) & 0xFFFF
        return self._ident

    def _source_for(self, dst: int) -> tuple[Route | None, int]:
        if dst == BROADCAST:
            for i in self.interfaces:
                if i.addrs:
                    return Route(0, 0, ANY, i), i.addrs[0][0]
            return None, ANY
        r = self._route(dst)
        if r is None or not r.iface.addrs:
            return r, ANY
        if r.src != ANY and r.src in self._local:  # a link config's route: its address
            return r, r.src
        hop = r.gateway or dst
        for a, m in r.iface.addrs:
            if a & m == hop & m:
                return r, a
        return r, r.iface.addrs[0][0]

    def _ip_output(
        self, dst: int, proto: int, parts: list[Buffer], src: int | None = None,
        df: bool = False, routed: tuple[Route | None, int] | None = None,
    ) -> int:
        """Send a datagram; 0, or the errno of why it could not go.

        ``routed`` is ``_source_for(dst)`` when the caller already looked it up.
        """
        route, default_src = routed or self._source_for(dst)
        if route is None:
            self.stats["ipv4.no_route"] += 1
            return errno.ENETUNREACH
        if src is None or src == ANY:
            src = default_src
        iface = route.iface
        hop = BROADCAST if dst in self._bcast else (route.gateway or dst)
        try:
            for pkt in ipv4.packets(src, dst, proto, parts, self._next_ident(), iface.dev.mtu,
                                    self.config.ttl, 0, df):
                self._link_output(iface, hop, pkt)
        except ipv4.Drop as d:
            self.stats[d.reason] += 1
            return errno.EMSGSIZE
        return 0

    def _link_output(self, iface: Interface, hop: int, pkt: list[Buffer]) -> None:
        if not iface.ethernet:
            self._dev_send(iface, b"".join(pkt))
            return
        if hop == BROADCAST:
            mac = eth.BROADCAST_MAC
        elif is_multicast(hop):  # RFC 1112 §6.4
            mac = b"\x01\x00\x5e" + (hop & 0x7FFFFF).to_bytes(3, "big")
        else:
            now = self.clock.now_ms()
            found = iface.arp.lookup(hop, now)
            if found is None:
                new, pushed_out = iface.arp.enqueue(hop, b"".join(pkt), now)
                if pushed_out is not None:  # silently, as Linux's unres_qlen overflow
                    self.stats["arp.queue_overflow"] += 1
                if new:
                    self._arp_request(iface, hop)
                return
            mac = found
        self._eth_send(iface, mac, eth.ETHERTYPE_IPV4, pkt)

    def _eth_send(self, iface: Interface, dst: bytes, ethertype: int, parts: list[Buffer]) -> None:
        self._dev_send(iface, b"".join([eth.header(dst, iface.mac, ethertype), *parts]))

    def _dev_send(self, iface: Interface, frame: bytes) -> None:
        """Hand a frame to the device; a raising driver costs the frame, never the stack."""
        guard = iface.guard
        if guard.down:  # as a link that is down: nothing is sent on it
            guard.faults.tx_while_down += 1
            return
        try:
            ok = iface.dev.send(frame)
        except Exception:
            if guard.failed("send", self.clock.now_ms()):
                self._device_state_changed()
            return
        guard.succeeded("send")
        if not ok:
            self.stats["tx.device_refused"] += 1

    def _arp_send(self, iface: Interface, op: int, eth_dst: bytes, tha: bytes, spa: int,
                  tpa: int) -> None:
        self._eth_send(iface, eth_dst, eth.ETHERTYPE_ARP,
                       [arp.build(op, iface.mac, spa, tha, tpa)])

    def _arp_request(self, iface: Interface, ip: int) -> None:
        spa = next((a for a, m in iface.addrs if a & m == ip & m), iface.addrs[0][0]
                   if iface.addrs else ANY)
        self.stats["arp.requests_sent"] += 1
        self._arp_send(iface, arp.OP_REQUEST, eth.BROADCAST_MAC, b"\0" * 6, spa, ip)

    def _icmp_error(self, h: ipv4.Header, hbytes: Buffer, payload: Buffer, bcast: bool,
                    kind: int, code: int) -> None:
        """Send an ICMP error about a datagram we received (RFC 1122 §3.2.2), rate-limited."""
        if bcast or h.dst in self._bcast or is_multicast(h.dst) or h.offset:
            return
        if h.src == ANY or h.src in self._bcast or is_multicast(h.src):
            return
        if h.proto == ipv4.PROTO_ICMP and (len(payload) < 1 or payload[0] in icmp4.ERROR_TYPES):
            return  # never an error about an error
        if not self._icmp_bucket.take(self.clock.now_ms()):
            self.stats["icmp.errors_rate_limited"] += 1
            return
        quote = memoryview(payload)[:icmp4.ERROR_MAX_LEN - 20 - 8 - len(hbytes)]
        hdr = icmp4.header(kind, code, 0, bytes(hbytes) + bytes(quote))
        self.stats["icmp.errors_sent"] += 1
        self._ip_output(h.src, ipv4.PROTO_ICMP, [hdr, hbytes, quote],
                        src=h.dst if h.dst in self._local else None)

    # -- ICMP echo: the ping API ---------------------------------------------------
    def ping(
        self, dst: str, count: int, interval_ms: float, timeout_ms: float, size: int,
        callback: Callable[[PingStats], None],
    ) -> int:
        """Ping ``dst`` like ``pico_icmp4_ping``; ``callback`` gets one ``PingStats`` per request.

        Returns the session id for ``ping_abort``.
        """
        if count < 1 or size < 0 or size > 65507 or interval_ms < 0 or timeout_ms <= 0:
            raise ValueError("ping: need count >= 1, 0 <= size <= 65507, timeout > 0")
        ident = self._rng.randrange(1, 0x10000)
        while ident in self._pings:
            ident = self._rng.randrange(1, 0x10000)
        s = PingSession(ident, ip_to_int(dst), count, interval_ms, timeout_ms, size)
        self._pings[ident] = s
        self._ping_cbs[ident] = callback
        now = self.clock.now_ms()
        self._ping_timers[ident] = [self.timers.at(now, lambda: self._ping_send(s, now))]
        return ident

    def ping_abort(self, ident: int) -> None:
        s = self._pings.get(ident)
        if s is None:
            return
        for t in self._ping_timers.get(ident, []):
            t.cancel()
        for seq in sorted(s.outstanding):
            self._ping_result(s, seq, 0, PingError.ABORTED)
        self._ping_end(s)

    def _ping_send(self, s: PingSession, due: float) -> None:
        """Send request ``next_seq``; the next one is due ``interval`` after this one was."""
        if s.finished:
            return
        seq = s.next_seq
        s.next_seq += 1
        timers = self._ping_timers[s.ident]
        timers[:] = [t for t in timers if not t.cancelled and t.deadline > self.clock.now_ms()]
        if s.next_seq <= s.count:
            nxt = due + s.interval_ms
            timers.append(self.timers.at(nxt, lambda: self._ping_send(s, nxt)))
        s.outstanding[seq] = self.clock.now_ms()
        timers.append(self.call_later(s.timeout_ms, lambda: self._ping_timeout(s, seq)))
        body = s.payload()
        hdr = icmp4.echo_header(False, s.ident, seq, body)
        err = self._ip_output(s.dst, ipv4.PROTO_ICMP, [hdr, body])
        if err:
            self._ping_result(s, seq, 0, PingError.UNREACH)

    def _ping_reply(self, h: ipv4.Header, msg: memoryview) -> None:
        ident = int.from_bytes(msg[4:6], "big")
        seq = int.from_bytes(msg[6:8], "big")
        s = self._pings.get(ident)
        if s is None or seq not in s.outstanding or h.src != s.dst:
            self.stats["icmp.echo_reply_unmatched"] += 1
            return
        self._ping_result(s, seq, h.ttl, PingError.REPLIED)

    def _ping_error(self, err: int, src: int, dst: int, transport: memoryview) -> None:
        if transport[0] != icmp4.TYPE_ECHO_REQUEST:
            return
        s = self._pings.get(int.from_bytes(transport[4:6], "big"))
        seq = int.from_bytes(transport[6:8], "big")
        if s is not None and seq in s.outstanding and dst == s.dst:
            self._ping_result(s, seq, 0, PingError.UNREACH)

    def _ping_timeout(self, s: PingSession, seq: int) -> None:
        if seq in s.outstanding:
            self._ping_result(s, seq, 0, PingError.TIMEOUT)

    def _ping_result(self, s: PingSession, seq: int, ttl: int, err: PingError) -> None:
        sent = s.outstanding.pop(seq)
        rtt = self.clock.now_ms() - sent if err is PingError.REPLIED else 0.0
        cb = self._ping_cbs[s.ident]
        if not s.outstanding and s.next_seq > s.count:
            self._ping_end(s)
        try:
            cb(PingStats(int_to_ip(s.dst), s.size, seq, ttl, rtt, err))
        except Exception:
            self._callback_failed(s, f"callback of ping {s.ident} to {int_to_ip(s.dst)} raised")

    def _ping_end(self, s: PingSession) -> None:
        s.finished = True
        for t in self._ping_timers.pop(s.ident, []):
            t.cancel()
        self._pings.pop(s.ident, None)
        self._ping_cbs.pop(s.ident, None)

    # -- UDP -----------------------------------------------------------------------
    def tcp_socket(
        self, on_event: Callable[[TcpSocket, SocketEvent], None] | None = None
    ) -> TcpSocket:
        return TcpSocket(self, on_event)

    def udp_socket(
        self, on_event: Callable[[UdpSocket, SocketEvent], None] | None = None
    ) -> UdpSocket:
        return UdpSocket(self, on_event)

    def _udp_bind(self, sock: UdpSocket, addr: int, port: int) -> None:
        if addr not in (ANY, BROADCAST) and addr not in self._local:
            raise OSError(errno.EADDRNOTAVAIL, f"{int_to_ip(addr)} is not a local address")
        if port == 0:
            port = self._ephemeral_port()
        if not 0 < port <= 0xFFFF:
            raise OSError(errno.EINVAL, f"bad port {port}")
        for other in self._udp.get(port, []):
            if other.local and (other.local[0] in (ANY, addr) or addr == ANY):
                raise OSError(errno.EADDRINUSE, f"UDP port {port} is in use")
        sock.local = (addr, port)
        self._udp.setdefault(port, []).append(sock)

    def _udp_unbind(self, sock: UdpSocket) -> None:
        if sock.local is None:
            return
        socks = self._udp.get(sock.local[1], [])
        if sock in socks:
            socks.remove(sock)
        if not socks:
            self._udp.pop(sock.local[1], None)

    def _ephemeral_port(self) -> int:
        """A random free port from the dynamic range (RFC 6056 §3.3.1)."""
        span = udp.EPHEMERAL_LAST - udp.EPHEMERAL_FIRST + 1
        start = self._rng.randrange(span)
        for i in range(span):
            port = udp.EPHEMERAL_FIRST + (start + i) % span
            if port not in self._udp:
                return port
        raise OSError(errno.EADDRNOTAVAIL, "no free UDP port")

    def _udp_output(self, laddr: int, lport: int, dst: int, dport: int, data: Buffer) -> None:
        if dst == ANY:  # "this host" as a source only (RFC 1122 §3.2.1.3): never on a wire
            raise OSError(errno.EINVAL, "cannot send to 0.0.0.0")
        routed = self._source_for(dst)
        if routed[0] is None:
            raise OSError(errno.ENETUNREACH, f"no route to {int_to_ip(dst)}")
        src = laddr if laddr not in (ANY, BROADCAST) else routed[1]
        hdr = udp.header(src, lport, dst, dport, data)
        err = self._ip_output(dst, ipv4.PROTO_UDP, [hdr, data], src=src, routed=routed)
        if err:
            raise OSError(err, f"cannot send to {int_to_ip(dst)}")

    def _udp_lookup(self, dst: int, dport: int, src: int, sport: int) -> UdpSocket | None:
        best, best_score = None, -1
        for s in self._udp.get(dport, []):
            assert s.local is not None
            if s.local[0] not in (ANY, dst):
                continue
            score = 1 if s.local[0] == dst else 0
            if s.remote is not None:
                if s.remote != (src, sport):
                    continue
                score += 2
            if score > best_score:
                best, best_score = s, score
        return best

    def _udp_input(self, h: ipv4.Header, hbytes: Buffer, seg: memoryview, bcast: bool) -> None:
        r = udp.parse(seg, h.src, h.dst)
        if isinstance(r, str):
            self.drops[r] += 1
            return
        sport, dport, payload = r
        sock = self._udp_lookup(h.dst, dport, h.src, sport)
        if sock is None:
            self.stats["udp.no_socket"] += 1
            self._icmp_error(h, hbytes, seg, bcast, icmp4.TYPE_DEST_UNREACH,
                             icmp4.CODE_PORT_UNREACH)
        elif not sock._deliver(payload, h.src, sport, h.dst, bcast or is_multicast(h.dst)):
            self.drops["udp.rcvbuf_full"] += 1
        else:
            self.stats["udp.datagrams_in"] += 1

    def _udp_error(self, err: int, src: int, dst: int, transport: memoryview) -> None:
        sport = int.from_bytes(transport[0:2], "big")
        dport = int.from_bytes(transport[2:4], "big")
        for s in self._udp.get(sport, []):
            if s.remote == (dst, dport):  # only connected sockets hear errors, as on Linux
                s._set_error(err)
                return
        self.stats["udp.error_for_unconnected"] += 1

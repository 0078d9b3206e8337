"""The stack: devices, addresses, routes, and the tick that drives them all.

Single-threaded, like picoTCP: ``tick()`` polls every device with a budget,
runs the timers that are due and returns; ``run()`` loops over ``tick()`` and
between ticks waits on the devices' descriptors until the next timer is due,
so it answers at once and idles without spinning.

Nothing a wire sends may raise out of ``tick()``: every refusal is counted in
``drops`` under its reason.

The protocols are layers, each in its own module, wired together here; each
is handed the layer below it, so imports point down only: ``tcp_layer`` ->
``ip_layer``; ``udp_layer`` -> ``icmp_layer`` -> ``ip_layer`` -> ``arp_layer``
-> ``netif`` (interfaces, routes, the one way to a device). A layer hears from
the one above through what that one registered with it. The stack keeps the
devices, the interfaces, the clock, the timers and the loop, follows each
device's link state, and applies what links negotiated (``link_config``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import selectors
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from hilkit.port.capture import CaptureDevice, PcapngWriter
from hilkit.port.clock import Clock, MonotonicClock
from hilkit.port.device import (
    Device,
    LinkType,
    device_deadline,
    device_offloads,
    link_config_reader,
    unwrap_chain,
)
from hilkit.stack import arp, eth, gro, ipv4
from hilkit.stack.addr import ip_to_int
from hilkit.stack.arp_layer import ArpLayer
from hilkit.stack.events import SocketEvent
from hilkit.stack.faults import Callbacks, DeviceGuard, LogThrottle
from hilkit.stack.icmp4 import PingStats
from hilkit.stack.icmp_layer import IcmpLayer
from hilkit.stack.ip_layer import Ipv4Layer
from hilkit.stack.link_config import LinkConfigs
from hilkit.stack.netif import Addresses, Interface, Route, Transmit
from hilkit.stack.tcp_conn import TcpConfig
from hilkit.stack.tcp_layer import TcpLayer
from hilkit.stack.tcp_socket import TcpSocket
from hilkit.stack.timers import Timer, TimerQueue
from hilkit.stack.udp_layer import UdpLayer
from hilkit.stack.udp_socket import UdpSocket

__all__ = ["Interface", "Route", "Stack", "StackConfig"]

log = logging.getLogger(__name__)


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
    # ``link_up`` of a link that is up is read at most this often (it may be an ioctl or
    # a bus transaction); a link that is down is read every tick, so it is used at once
    # when it comes back.
    link_check_ms: float = 50.0
    # After a tick that moved frames, run() keeps polling without sleeping this long (as
    # Linux's net.core.busy_poll): a request arriving meanwhile finds the loop awake
    # instead of paying a wake-up. 0: sleep at once. Idle costs nothing either way.
    busy_poll_us: float = 0.0
    # Join consecutive TCP segments of one flow in a poll's frames before TCP sees them
    # (``hilkit.stack.gro``): the stack's cost is per segment, not per byte.
    gro: bool = True


_MAX_TIMER_ROUNDS = 64


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        os.eventfd_read(fd)


class Stack:
    def __init__(
        self, clock: Clock | None = None, config: StackConfig | None = None,
        pcap: str | None = None,
    ) -> None:
        self.clock: Clock = clock or MonotonicClock()
        self.config = c = config or StackConfig()
        self.drops: Counter[str] = Counter()  # refused input, by reason
        self.stats: Counter[str] = Counter()  # everything else worth counting
        self.interfaces: list[Interface] = []
        self.timers = TimerQueue()
        rng = random.SystemRandom()
        callbacks = Callbacks(self.clock, self.stats, log, c.fault_log_interval_ms)
        addrs = Addresses(self.interfaces)
        # The layers, bottom up: each is handed the one below it, never the stack.
        tx = Transmit(self.clock, self.stats, self._device_state_changed)
        self.arp = ArpLayer(tx, addrs, self.clock, self.stats, self.drops)
        self.ip = Ipv4Layer(self.arp, addrs, self.clock, self.stats, self.drops, c.ttl,
                            c.reassembly, rng)
        self.icmp = IcmpLayer(self.ip, self.clock, self.timers, self.stats, self.drops,
                              callbacks, rng, c.icmp_error_rate, c.icmp_error_burst)
        self.udp = UdpLayer(self.ip, self.icmp, self.stats, self.drops, callbacks, rng)
        self.tcp = TcpLayer(self.ip, self.clock, self.timers, self.stats, self.drops, callbacks,
                            c.tcp, c.tcp_max_syn_backlog, c.tcp_syncookies)
        self._link_configs = LinkConfigs(self.ip, self.clock, self.stats,
                                         c.fault_log_interval_ms)
        self._ip_input = self.ip.input  # per frame: bound once
        self._selector: selectors.BaseSelector | None = None
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._no_fd = False
        self._more = False
        self._busy_until = 0.0  # run() polls without sleeping until then (busy_poll_us)
        self._capture: PcapngWriter | None = None
        if pcap is not None:
            self._capture = PcapngWriter(pcap)

    @property
    def routes(self) -> list[Route]:
        """The routing table (the IPv4 layer's), longest prefix wins."""
        return self.ip.routes

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
                          link_config=link_config_reader(dev), offloads=device_offloads(dev))
        up = self._read_link_up(iface)
        iface.link_up = True if up is None else up
        iface.link_checked_at = self.clock.now_ms()
        self.interfaces.append(iface)
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if iface.link_config is not None:  # a link that is up already is usable at once
            self._link_configs.check(iface)
        return dev

    def _iface(self, dev: Device | str) -> Interface:
        for i in self.interfaces:
            if dev == i.dev.name or any(dev is d for d in unwrap_chain(i.dev)):
                return i
        raise ValueError(f"device {getattr(dev, 'name', dev)!r} was not added to this stack")

    def link_add(self, dev: Device | str, address: str, netmask: str) -> None:
        """Give ``dev`` an address (``pico_ipv4_link_add``) and its on-link route."""
        self.ip.addr_add(self._iface(dev), ip_to_int(address), ip_to_int(netmask))

    def link_del(self, dev: Device | str, address: str) -> None:
        """Remove an address; its on-link route goes unless another address keeps the subnet."""
        self.ip.addr_del(self._iface(dev), ip_to_int(address))

    def route_add(self, dest: str, netmask: str, gateway: str) -> None:
        """Route ``dest/netmask`` via ``gateway`` (``0.0.0.0/0.0.0.0`` is the default)."""
        self.ip.route_add(dest, netmask, gateway)

    @property
    def dns_servers(self) -> tuple[str, ...]:
        """DNS servers the links said (RFC 1877), in interface order, each once."""
        return tuple(dict.fromkeys(d for i in self.interfaces for d in i.dns))

    def _read_link_up(self, iface: Interface) -> bool | None:
        """``dev.link_up``, or None if it raised (a driver bug: counted, logged rarely)."""
        try:
            return bool(iface.dev.link_up)
        except Exception:
            self.stats["link_state.failed"] += 1
            if iface.link_up_faults is None:
                iface.link_up_faults = LogThrottle(self.config.fault_log_interval_ms)
            iface.link_up_faults.report(log, self.clock.now_ms(),
                                        f"{iface.dev.name}: link_up raised")
            return None

    def _link_state_check(self, iface: Interface, now: float) -> None:
        """Follow the device's link state (read at most once per tick: it may cost an
        ioctl or a bus transaction). Down: nothing is sent on it and its ARP entries go.
        Up again: its addresses are announced (gratuitous ARP). A read that raises keeps
        the last state. Sockets see what the kernel's would: segments lost while the
        link was down are retransmitted by TCP, a connect over a down link times out."""
        iface.link_checked_at = now
        up = self._read_link_up(iface)
        if up is None or up == iface.link_up:
            return
        iface.link_up = up
        if up:
            self.stats["link.came_up"] += 1
            log.info("%s: link up", iface.dev.name)
            self.arp.link_up(iface)
        else:
            self.stats["link.went_down"] += 1
            log.info("%s: link down", iface.dev.name)
            self.arp.link_down(iface)

    # -- the loop ------------------------------------------------------------
    def tick(self) -> None:
        """Poll devices (with budgets), follow their link state, apply what their links
        negotiated, run due timers; like ``pico_stack_tick``."""
        budget = self.config.poll_budget
        link_check_ms = self.config.link_check_ms
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
            if not iface.link_up or start >= iface.link_checked_at + link_check_ms:
                self._link_state_check(iface, start)  # after the poll: it may have seen it
            if iface.link_config is not None:  # before input: the poll may have negotiated it
                self._link_configs.check(iface)
            more = more or len(frames) >= budget
            if frames and self.config.busy_poll_us:
                self._busy_until = start + self.config.busy_poll_us / 1000.0
            try:
                if len(frames) > 1 and self.config.gro:
                    for frame, checked in gro.coalesce(
                            frames, eth.HEADER_LEN if iface.ethernet else 0,
                            iface.offloads.rx_checksum):
                        self._input_guarded(iface, frame, checked)
                else:
                    for frame in frames:
                        self._input_guarded(iface, frame, False)
            except Exception:  # a bug in coalescing: the rest of this poll is lost, counted
                self.drops["internal_error"] += 1
                log.exception("%s: coalescing failed", iface.dev.name)
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
        cands = [self.timers.next_deadline(), self.ip.next_deadline()]
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
            if now < self._busy_until:
                wait = 0.0  # traffic a moment ago: look again at once (busy_poll_us)
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
        self.icmp.close()
        self.udp.close_all()
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
        for pkt in self.arp.expire(self.interfaces, now):
            self.ip.local_error(pkt, errno.EHOSTUNREACH)
        self.icmp.reassembly_expired(self.ip.reasm.expire(now, self.drops))

    # -- input -----------------------------------------------------------------
    def _input_guarded(self, iface: Interface, frame: bytes, checked: bool) -> None:
        try:
            self.input(iface, frame, checked)
        except Exception:  # a bug, not bad input: count it loudly, keep running
            self.drops["internal_error"] += 1
            log.exception("%s: frame handling failed", iface.dev.name)

    def input(self, iface: Interface, frame: bytes, csum_checked: bool = False) -> None:
        """One frame from ``iface``'s device, as ``tick`` hands each one it polled;
        ``csum_checked``: its TCP/UDP checksum is known good (``hilkit.stack.gro``)."""
        mv = memoryview(frame)
        if not iface.ethernet:
            self._ip_input(iface, mv, False, csum_checked)
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
            self._ip_input(iface, mv[eth.HEADER_LEN:], group, csum_checked)
        elif etype == eth.ETHERTYPE_ARP:
            self.arp.input(iface, mv[eth.HEADER_LEN:])
        else:
            self.stats["eth.unknown_ethertype"] += 1

    # -- ICMP echo and sockets: the application's API ---------------------------------
    def ping(
        self, dst: str, count: int, interval_ms: float, timeout_ms: float, size: int,
        callback: Callable[[PingStats], None],
    ) -> int:
        """Ping ``dst`` like ``pico_icmp4_ping``; ``callback`` gets one ``PingStats`` per request.

        Returns the session id for ``ping_abort``.
        """
        return self.icmp.ping(dst, count, interval_ms, timeout_ms, size, callback)

    def ping_abort(self, ident: int) -> None:
        self.icmp.ping_abort(ident)

    def tcp_socket(
        self, on_event: Callable[[TcpSocket, SocketEvent], None] | None = None
    ) -> TcpSocket:
        return TcpSocket(self.tcp, on_event)

    def udp_socket(
        self, on_event: Callable[[UdpSocket, SocketEvent], None] | None = None
    ) -> UdpSocket:
        return UdpSocket(self.udp, on_event)

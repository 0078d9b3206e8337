"""ARP for IPv4 over Ethernet (RFC 826), with RFC 1122 §2.3.2 queueing.

``ArpCache`` is sans-I/O: the stack tells it what arrived and what time it
is; it answers with MACs, packets to release, and addresses to ask for.

RFC 826's merge rule lets any ARP packet rewrite an entry, so one forged
reply or gratuitous request would redirect our traffic. Like Linux's neighbour
``locktime``, an entry learnt less than ``locktime_ms`` ago keeps its MAC:
a different one inside that window is refused (the stack counts it).
"""

from __future__ import annotations

import struct
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from hilkit.stack import eth

OP_REQUEST = 1
OP_REPLY = 2
HTYPE_ETHERNET = 1
PACKET_LEN = 28  # for Ethernet/IPv4: 8 fixed + 2*6 + 2*4

_PKT = struct.Struct("!HHBBH6s4s6s4s")


@dataclass(slots=True)
class Packet:
    op: int
    sha: bytes
    spa: int
    tha: bytes
    tpa: int


def parse(data: memoryview) -> Packet | str:
    """The packet, or the reason (a counter name) it is refused."""
    if len(data) < PACKET_LEN:
        return "arp.short"
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _PKT.unpack_from(data)
    if htype != HTYPE_ETHERNET or ptype != eth.ETHERTYPE_IPV4 or hlen != 6 or plen != 4:
        return "arp.bad_format"
    if op not in (OP_REQUEST, OP_REPLY):
        return "arp.bad_op"
    if eth.is_group(sha):
        return "arp.bad_sender"
    return Packet(op, sha, int.from_bytes(spa, "big"), tha, int.from_bytes(tpa, "big"))


def build(op: int, sha: bytes, spa: int, tha: bytes, tpa: int) -> bytes:
    return _PKT.pack(
        HTYPE_ETHERNET, eth.ETHERTYPE_IPV4, 6, 4, op, sha, spa.to_bytes(4, "big"), tha,
        tpa.to_bytes(4, "big"),
    )


@dataclass(frozen=True)
class ArpConfig:
    max_entries: int = 256
    timeout_ms: float = 60_000.0  # an entry is re-resolved after this
    retries: int = 3  # requests before the queued packets fail (RFC 1122: rate-limited)
    retry_ms: float = 1_000.0
    max_pending: int = 64  # queued packets per address (a 64 KiB datagram is 45); oldest go
    max_unresolved: int = 64  # addresses being resolved at once; more are refused
    locktime_ms: float = 1_000.0  # a fresh entry's MAC is not replaced (Linux: locktime)


@dataclass(slots=True)
class _Entry:
    mac: bytes
    expires: float
    learnt: float  # when ``mac`` was set: the start of its lock time


@dataclass
class _Pending:
    next_at: float
    tries: int = 1
    packets: deque[bytes] = field(default_factory=deque)


class ArpCache:
    def __init__(self, config: ArpConfig | None = None) -> None:
        self.config = config or ArpConfig()
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._pending: dict[int, _Pending] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, ip: int, now: float) -> bytes | None:
        hit = self._entries.get(ip)
        if hit is None:
            return None
        if hit.expires <= now:
            del self._entries[ip]
            return None
        return hit.mac

    def refuses(self, ip: int, mac: bytes, now: float) -> bool:
        """Whether learning ``ip`` -> ``mac`` now would overwrite a locked entry."""
        hit = self._entries.get(ip)
        return (hit is not None and hit.mac != mac and hit.expires > now
                and now < hit.learnt + self.config.locktime_ms)

    def update(self, ip: int, mac: bytes, now: float, create: bool) -> list[bytes]:
        """Learn ``ip`` -> ``mac`` (RFC 826 merge; ``create`` if it was addressed to us).

        Returns the packets that were waiting for this address; nothing changes
        if the entry is locked (``refuses``).
        """
        if ip not in self._entries and not create and ip not in self._pending:
            return []
        if self.refuses(ip, mac, now):
            return []
        old = self._entries.pop(ip, None)
        if len(self._entries) >= self.config.max_entries:
            self._entries.popitem(last=False)
        same = old is not None and old.mac == mac and old.expires > now
        self._entries[ip] = _Entry(mac, now + self.config.timeout_ms,
                                   old.learnt if same and old is not None else now)
        waiting = self._pending.pop(ip, None)
        return list(waiting.packets) if waiting else []

    def enqueue(self, ip: int, pkt: bytes, now: float) -> tuple[bool, bytes | None]:
        """Hold ``pkt`` until ``ip`` resolves.

        Returns (send a request now, a packet pushed out of a full queue).
        """
        p = self._pending.get(ip)
        new = p is None
        if p is None and len(self._pending) >= self.config.max_unresolved:
            return False, pkt
        if p is None:
            p = self._pending[ip] = _Pending(now + self.config.retry_ms)
        dropped = p.packets.popleft() if len(p.packets) >= self.config.max_pending else None
        p.packets.append(pkt)
        return new, dropped

    def due(self, now: float) -> tuple[list[int], list[tuple[int, list[bytes]]]]:
        """Addresses to ask again, and (address, packets) that gave up."""
        again: list[int] = []
        failed: list[tuple[int, list[bytes]]] = []
        for ip, p in list(self._pending.items()):
            if p.next_at > now:
                continue
            if p.tries >= self.config.retries:
                del self._pending[ip]
                failed.append((ip, list(p.packets)))
            else:
                p.tries += 1
                p.next_at = now + self.config.retry_ms
                again.append(ip)
        return again, failed

    def next_deadline(self) -> float | None:
        return min((p.next_at for p in self._pending.values()), default=None)

    def flush(self) -> tuple[int, int]:
        """Forget every entry and every queued packet (the link went down, as Linux's
        ``neigh_ifdown``); returns how many entries and packets went."""
        entries = len(self._entries)
        packets = sum(len(p.packets) for p in self._pending.values())
        self._entries.clear()
        self._pending.clear()
        return entries, packets

    def entries(self, now: float) -> dict[int, bytes]:
        """The live entries at ``now``."""
        return {ip: e.mac for ip, e in self._entries.items() if e.expires > now}

"""The Device contract: a NIC as the stack sees it.

A driver implements this and nothing else of the stack. Frames are whole
link-layer frames (Ethernet II without FCS) or, for point-to-point links,
bare IP packets. No method blocks: ``poll`` returns what is already there.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable


class LinkType(enum.Enum):
    """What a frame on this device starts with."""

    ETHERNET = "ethernet"  # Ethernet II header, no FCS
    RAW_IP = "raw-ip"  # an IPv4 packet, no link header (TUN, PPP)


class DeviceClosed(OSError):
    """Raised by ``send``/``poll`` on a device that was closed."""


@dataclass(frozen=True)
class LinkConfig:
    """What a point-to-point link negotiated (PPP's IPCP): the stack applies it.

    The device learns these (RFC 1332 addresses, RFC 1877 DNS servers) and may
    learn new ones on renegotiation; the stack owns addresses and routes, so it
    installs them itself (docs/porting.md). Frozen: a device hands out the same
    object until something changes, which keeps the stack's per-tick check cheap.
    """

    address: str  # ours, dotted quad
    peer: str | None  # the far end of the link: a /32 host route through it
    dns: tuple[str, ...] = ()
    default_route: bool = True  # route 0.0.0.0/0 through this link (PPP: the peer is the gateway)


@dataclass
class DeviceCounters:
    """Counters every driver fills; the stack and the runner only read them."""

    rx_frames: int = 0
    rx_bytes: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0
    rx_dropped: int = 0  # lost before the stack saw them (ring full, filtered)
    tx_dropped: int = 0  # refused by ``send`` (queue full, link down)
    rx_errors: int = 0  # damaged frames (bad length, bus errors)
    tx_errors: int = 0  # oversize frames, write failures

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@runtime_checkable
class Device(Protocol):
    """A network interface.

    ``send`` returns False (and counts the drop or error) rather than raising
    when a frame cannot go out; only a closed device raises ``DeviceClosed``.
    Should ``send`` or ``poll`` raise anyway (a driver bug, a bus error), the
    stack counts it in its own per-device faults and keeps running; it takes
    a device that keeps raising down and retries it (docs/porting.md).

    Optional members (read with the helpers below, so a device without them
    still is one): ``next_deadline()``; ``rx_buffer_bytes: int | None``,
    how many bytes of frames the device holds on receive before it drops
    (``None`` or absent: as good as unbounded, e.g. a TAP's queue); and
    ``probe() -> object``, a check that the chip behind the driver answers (raise
    ``ChipNotResponding``, or return False, when it does not), which the identity
    suite calls when the NIC registers no ``identify``; and
    ``link_config() -> LinkConfig | None``, the addresses a point-to-point link
    negotiated (None while it has none), which the stack applies; and
    ``offloads: Offloads``, the checksum and segmentation work it does for the stack.
    """

    name: str
    link_type: LinkType
    mtu: int  # largest IP packet, without link header
    counters: DeviceCounters

    @property
    def mac(self) -> bytes | None:
        """6 bytes for Ethernet, None for RAW_IP; read-only here, so a driver may declare
        ``mac: bytes``."""
        ...

    def send(self, frame: bytes | bytearray | memoryview) -> bool: ...

    def poll(self, budget: int) -> list[bytes]:
        """Return at most ``budget`` received frames, oldest first; never blocks."""
        ...

    @property
    def link_up(self) -> bool:
        """True when frames can flow. The stack reads it once per tick and sends nothing
        while it is False (docs/porting.md): keep it cheap."""
        ...

    def fileno(self) -> int | None:
        """A descriptor that turns readable when ``poll`` has work, or None."""
        ...

    def close(self) -> None:
        """Release the device; closing twice is allowed."""
        ...


ETH_HEADER_LEN = 14  # destination, source, EtherType (IEEE 802.3 clause 3.2)


@dataclass(frozen=True)
class Offloads:
    """Work a device does for the stack, as a virtio-net device offers it (virtio 1.2
    §5.1.6.2): the kernel behind a TAP never puts these frames on a wire, so checksums
    and segmentation over memory are work no one needs done twice (docs/porting.md,
    "Offloads").

    ``rx_checksum``: frames the device delivers need no TCP/UDP checksum check, and
    may carry a partial one (the pseudo-header sum only). ``tx_checksum``: the stack
    leaves the TCP checksum partial (RFC 9293 §3.1's pseudo-header sum, folded, not
    complemented) and the device completes it. ``tso``: the largest IPv4 datagram
    carrying TCP the device takes and cuts into segments that fill its MTU (each with
    the first one's headers; 0 when it cannot). Received frames may be longer than the
    MTU on such a device too (the kernel's segmentation, not done).
    """

    rx_checksum: bool = False
    tx_checksum: bool = False
    tso: int = 0


NO_OFFLOADS = Offloads()


def device_offloads(dev: Device) -> Offloads:
    """What ``dev`` offloads (its optional ``offloads``), or ``NO_OFFLOADS``.

    Wrappers decide for themselves what they pass on (``DeviceMiddleware``).
    """
    off = getattr(dev, "offloads", None)
    return off if isinstance(off, Offloads) else NO_OFFLOADS


def max_frame_len(dev: Device) -> int:
    """Largest frame ``send`` must accept for this device."""
    return dev.mtu + (ETH_HEADER_LEN if dev.link_type is LinkType.ETHERNET else 0)


def device_deadline(dev: Device) -> float | None:
    """When ``dev`` next needs ``poll`` though its descriptor stays quiet (ms), or None.

    Optional in the contract: a device that holds frames for later (the
    impairment wrapper's delay line, a chip model's timer) offers
    ``next_deadline()`` in the stack clock's milliseconds; ``Stack.run`` wakes
    for it. Wrappers forward it.
    """
    fn = getattr(dev, "next_deadline", None)
    return fn() if fn is not None else None


def device_rx_buffer(dev: Device) -> int | None:
    """Bytes of received frames ``dev`` can hold before it drops, or None (unbounded).

    Optional in the contract (``rx_buffer_bytes``): a chip with a small receive
    buffer (a few KB of on-chip RAM, a ring) states it, counted in whole
    frames with their link, IP and TCP headers and less any per-frame overhead
    of its own, so TCP can keep the window it offers within it (a peer's burst
    of one window must fit). Wrappers forward it.
    """
    n = getattr(dev, "rx_buffer_bytes", None)
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        return None
    return n


def device_probe(dev: Device) -> Callable[[], object] | None:
    """The device's optional ``probe()`` (does the chip answer?), or None if it has none.

    ``probe()`` raises ``ChipNotResponding`` naming the bus (or returns False) when no
    chip answers; anything else means it did. Wrappers are looked through.
    """
    for d in unwrap_chain(dev):
        fn = getattr(d, "probe", None)
        if callable(fn):
            return fn  # type: ignore[no-any-return]
    return None


def device_link_config(dev: Device) -> LinkConfig | None:
    """What ``dev``'s link negotiated now (its optional ``link_config()``), or None.

    None both when the device has no such member and when its link has no
    addresses now (down, or still negotiating). Wrappers are looked through.
    """
    fn = link_config_reader(dev)
    return fn() if fn is not None else None


def link_config_reader(dev: Device) -> Callable[[], LinkConfig | None] | None:
    """The device's ``link_config`` method, found through wrappers, or None if it has none.

    The stack looks it up once per device and calls it every tick, so a device
    without the member costs nothing; a captured or impaired PPP device still
    configures the stack.
    """
    return _optional_member(dev, "link_config")  # type: ignore[no-any-return]


def tx_queue_reader(dev: Device) -> Callable[[], float] | None:
    """The device's ``tx_queue_ms`` method, found through wrappers, or None if it has none.

    How much line time (ms) of output the device has accepted and still holds: a slow
    link (PPP on a serial line) queues seconds, and TCP's timers count from when a
    segment leaves, not from when it was handed over. A capture or impairment wrapper
    around the device must not hide it.
    """
    return _optional_member(dev, "tx_queue_ms")  # type: ignore[no-any-return]


def _optional_member(dev: Device, name: str) -> Any:
    """The first callable ``name`` along ``dev``'s wrapper chain, or None."""
    for d in unwrap_chain(dev):
        fn = getattr(d, name, None)
        if callable(fn):
            return fn
    return None


def unwrap_chain(dev: Device) -> list[Device]:
    """``dev`` and every device it wraps (middleware keeps the wrapped one in ``inner``)."""
    chain = [dev]
    while (inner := getattr(chain[-1], "inner", None)) is not None and len(chain) < 16:
        chain.append(inner)
    return chain


def random_mac() -> bytes:
    """A random locally administered, unicast MAC address, for a device that has none
    of its own (IEEE 802: bit 1 of the first octet set, bit 0 clear)."""
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return bytes(raw)

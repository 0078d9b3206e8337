"""Two Devices joined by an in-memory wire: for unit tests of the stack on bytes."""

from __future__ import annotations

from collections import deque

from hilkit.port import DeviceClosed, DeviceCounters, LinkType


class WireEnd:
    def __init__(self, name: str, mac: bytes | None, link_type: LinkType, mtu: int) -> None:
        self.name = name
        self.mac = mac
        self.link_type = link_type
        self.mtu = mtu
        self.counters = DeviceCounters()
        self.rx: deque[bytes] = deque()
        self.peer: WireEnd | None = None
        self.sent: list[bytes] = []  # everything this end put on the wire
        self.closed = False
        self.up = True

    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        if self.closed:
            raise DeviceClosed(self.name)
        data = bytes(frame)
        self.counters.tx_frames += 1
        self.counters.tx_bytes += len(data)
        self.sent.append(data)
        if self.peer is not None and self.up:
            self.peer.rx.append(data)
        return True

    def poll(self, budget: int) -> list[bytes]:
        if self.closed:
            raise DeviceClosed(self.name)
        out = []
        while self.rx and len(out) < budget:
            f = self.rx.popleft()
            self.counters.rx_frames += 1
            self.counters.rx_bytes += len(f)
            out.append(f)
        return out

    @property
    def link_up(self) -> bool:
        return self.up

    def fileno(self) -> int | None:
        return None

    def close(self) -> None:
        self.closed = True


def wire(mtu: int = 1500, link_type: LinkType = LinkType.ETHERNET) -> tuple[WireEnd, WireEnd]:
    eth = link_type is LinkType.ETHERNET
    a = WireEnd("a", b"\x02\x00\x00\x00\x00\x0a" if eth else None, link_type, mtu)
    b = WireEnd("b", b"\x02\x00\x00\x00\x00\x0b" if eth else None, link_type, mtu)
    a.peer, b.peer = b, a
    return a, b

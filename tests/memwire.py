"""Two Devices joined by an in-memory wire: for unit tests of the stack on bytes."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from hilkit.port import DeviceClosed, DeviceCounters, LinkType, ManualClock
from hilkit.stack import Stack, StackConfig, TcpSocket


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


A_IP, B_IP = "10.0.0.1", "10.0.0.2"


class StackPair:
    """Stacks ``a`` (10.0.0.1) and ``b`` (10.0.0.2) on one in-memory wire, sharing a
    ManualClock: every timer fires exactly when the test moves the clock."""

    def __init__(self, mtu: int = 1500, link_type: LinkType = LinkType.ETHERNET,
                 config: StackConfig | None = None) -> None:
        self.clock = ManualClock(1000.0)
        self.wa, self.wb = wire(mtu, link_type)
        self.a = Stack(self.clock, config)
        self.b = Stack(self.clock, config)
        self.a.add_device(self.wa)
        self.b.add_device(self.wb)
        self.a.link_add(self.wa, A_IP, "255.255.255.0")
        self.b.link_add(self.wb, B_IP, "255.255.255.0")

    def settle(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            self.a.tick()
            self.b.tick()

    def advance(self, ms: float, step: float | None = None) -> None:
        """Move the clock by ``ms`` in steps no longer than ``step`` (default: one go)."""
        left = ms
        while left > 0:
            d = left if step is None else min(step, left)
            self.clock.advance(d)
            left -= d
            self.settle()


def tcp_connect(a: Stack, b: Stack, step: Callable[[], None], addr: str = B_IP,
                port: int = 80, tries: int = 5000) -> tuple[TcpSocket, TcpSocket]:
    """A TCP connection from ``a`` to a listener made on ``b`` at ``addr:port``, moved on
    by ``step`` (the test's clock and ticks); (a's socket, the one ``b`` accepted)."""
    srv = TcpSocket(b)
    srv.bind((addr, port))
    srv.listen(1)
    c = TcpSocket(a)
    c.connect((addr, port))
    child = None
    for _ in range(tries):
        step()
        child = child or srv.accept()
        if child is not None and c.connected:
            return c, child
    raise AssertionError(f"no connection to {addr}:{port} after {tries} steps")

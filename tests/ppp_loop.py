"""PPP layers talking over an in-memory line, for the sans-I/O tests: control protocols
packet by packet (``converse``), whole links byte by byte (``pump``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from hilkit.drivers.ppp.fsm import Automaton, Option, Packet, State, parse_options


def converse(a: Automaton, b: Automaton, drop: set[int] | None = None,
             limit_ms: int = 200_000) -> int:
    """Move packets both ways (dropping the n-th ones in ``drop``) and time on, until both
    are Opened, nothing is left to do or ``limit_ms`` passed; the time it stopped at."""
    drop = drop or set()
    now, n = 0, 0
    while now <= limit_ms:
        moved = False
        for src, dst in ((a, b), (b, a)):
            out, src.send = src.send, []
            for raw in out:
                n += 1
                moved = True
                if n not in drop:
                    dst.receive(raw, now)
        if moved:
            continue
        if a.state is State.OPENED and b.state is State.OPENED:
            return now
        deadlines = [d for d in (a.next_deadline(), b.next_deadline()) if d is not None]
        if not deadlines:
            return now
        now = min(deadlines)
        a.poll(now)
        b.poll(now)
    return now


class ByteLink(Protocol):
    """What ``pump`` needs of a PPP link: bytes in and out, and its timers."""

    def receive(self, data: bytes, now_ms: int) -> None: ...
    def poll(self, now_ms: int) -> None: ...
    def next_deadline(self) -> int | None: ...
    def take_output(self) -> bytes: ...


def pump(a: ByteLink, b: ByteLink, *, now: int = 0, until: Callable[[], bool] | None = None,
         limit_ms: int = 200_000, line: Callable[[bytes], bytes] | None = None,
         chunk: int = 0) -> int:
    """Move line bytes both ways (through ``line``, e.g. noise, and in ``chunk``-sized reads
    when set) and time on to the next deadline, until ``until()`` holds, nothing is left
    to do, or ``limit_ms`` passed; the time it stopped at."""
    while now <= limit_ms:
        moved = False
        for src, dst in ((a, b), (b, a)):
            data = src.take_output()
            if line is not None:
                data = line(data)
            if data:
                moved = True
                step = chunk or len(data)
                for i in range(0, len(data), step):
                    dst.receive(data[i:i + step], now)
        if until is not None and until():
            return now
        if moved:
            continue
        deadlines = [d for d in (a.next_deadline(), b.next_deadline()) if d is not None]
        if not deadlines:
            return now
        now = max(now, min(deadlines))
        a.poll(now)
        b.poll(now)
    return now


def pkt(code: int, ident: int, data: bytes = b"") -> bytes:
    """A control packet (RFC 1661 §5) as it goes on the line, without the protocol field."""
    return Packet(code, ident, data).encode()


def options_of(raw: bytes) -> list[Option]:
    """The options of a Configure-* packet."""
    packet = Packet.parse(raw)
    assert packet is not None
    opts = parse_options(packet.data)
    assert opts is not None
    return opts

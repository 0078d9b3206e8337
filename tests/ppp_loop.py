"""Two PPP control protocols talking over an in-memory line, for the sans-I/O tests."""

from __future__ import annotations

from hilkit.drivers.ppp.fsm import Automaton, State


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

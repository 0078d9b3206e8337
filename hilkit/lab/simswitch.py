"""A simulated network power switch and a simulated board plugged into it (docs/lab.md,
"Power") -- the test lab's stand-in for a PDU, stdlib only.

``SimSwitch`` speaks what labgrid's ``rest`` power backend speaks (labgrid docs,
"NetworkPowerPort", model ``rest``): ``GET URL`` answers ``0`` or ``1``, ``PUT URL``
with body ``0`` or ``1`` switches the outlet, where URL is ``/outlet/INDEX``. So an
exporter file exports it as any PDU::

    NetworkPowerPort:
      model: rest
      host: 'http://127.0.0.1:PORT/outlet/{index}'
      index: 1

and the CI side drives it with labgrid's own ``NetworkPowerDriver``. One addition for
the simulated board, which must follow every change and miss none, not even a cut
shorter than a poll: ``GET URL?since=N`` waits (at most ``wait`` seconds, default 1)
until the outlet has changed more than N times and answers ``COUNT STATE`` -- how
many changes so far and the state now -- so a board that saw both an off and an on
it slept through still knows the power went away.

``follow_outlet`` is that board's side: a thread that long-polls the outlet and calls
``on_change(False)`` / ``on_change(True)`` (a chip model's ``set_power``) as the
outlet goes off and on.

Run one by hand: ``python -m hilkit.lab.simswitch --port 8123`` (loopback only).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import http.server
import re
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

OUTLETS = 8  # outlets 1..OUTLETS
MAX_WAIT_S = 10.0
_PATH = re.compile(r"/outlet/([0-9]{1,3})")


@dataclass
class Outlet:
    on: bool = True  # a PDU's outlets come up on
    changes: int = 0
    history: list[tuple[float, bool]] = field(default_factory=list)  # (monotonic, state)


class SimSwitch:
    """A switch with OUTLETS outlets served on ``host:port`` (0: a free port) until
    ``close()``; ``outlets[i].history`` is every switching it saw, in order."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.outlets = {i: Outlet() for i in range(1, OUTLETS + 1)}
        self._cond = threading.Condition()
        self._server = http.server.ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="sim-power-switch", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, index: int | None = None) -> str:
        """The outlet's URL; without ``index``, the template an exporter file gives."""
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}/outlet/" + ("{index}" if index is None
                                                      else str(index))

    def set(self, index: int, on: bool) -> None:
        with self._cond:
            o = self.outlets[index]
            o.history.append((time.monotonic(), on))
            if o.on != on:
                o.on = on
                o.changes += 1
            self._cond.notify_all()

    def state(self, index: int) -> tuple[int, bool]:
        with self._cond:
            o = self.outlets[index]
            return o.changes, o.on

    def wait_change(self, index: int, since: int, timeout: float) -> tuple[int, bool]:
        """``(changes, state)`` once the outlet changed more than ``since`` times, or at
        ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            o = self.outlets[index]
            while o.changes <= since:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return o.changes, o.on

    def switched(self, index: int) -> list[bool]:
        """The states the outlet was switched to, in order (repeats included)."""
        with self._cond:
            return [s for _, s in self.outlets[index].history]

    def close(self) -> None:
        with self._cond:
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> SimSwitch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler(switch: SimSwitch) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a follower's long polls reuse one

        def _outlet(self) -> tuple[int, dict[str, list[str]]] | None:
            url = urllib.parse.urlsplit(self.path)
            m = _PATH.fullmatch(url.path)
            if m is None or int(m.group(1)) not in switch.outlets:
                self._reply(404, f"no such outlet: {url.path} (outlets "
                                 f"/outlet/1../outlet/{OUTLETS})")
                return None
            return int(m.group(1)), urllib.parse.parse_qs(url.query)

        def do_GET(self) -> None:
            got = self._outlet()
            if got is None:
                return
            index, query = got
            if "since" not in query:
                self._reply(200, "1" if switch.state(index)[1] else "0")
                return
            try:
                since = int(query["since"][0])
                wait = min(MAX_WAIT_S, max(0.0, float(query.get("wait", ["1"])[0])))
            except ValueError:
                self._reply(400, "since=N (an integer) and wait=SECONDS")
                return
            changes, on = switch.wait_change(index, since, wait)
            self._reply(200, f"{changes} {int(on)}")

        def do_PUT(self) -> None:
            got = self._outlet()
            if got is None:
                return
            try:
                n = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                n = -1
            body = self.rfile.read(n).strip() if 0 <= n <= 16 else b""
            if body not in (b"0", b"1"):
                self._reply(400, "PUT 0 (off) or 1 (on)")
                return
            switch.set(got[0], body == b"1")
            self._reply(200, body.decode())

        def _reply(self, code: int, text: str) -> None:
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a follower
                self.wfile.write(data)  # that stopped waiting is no error

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the history is the record."""

    return Handler


# -- the board's side ------------------------------------------------------------------------


class OutletFollower:
    """A thread that keeps ``on_change`` told of outlet ``url``'s state (see the module
    docstring); ``changes`` counts the switchings it passed on, ``error`` is why it
    stopped early, if it did."""

    def __init__(self, url: str, on_change: Callable[[bool], None], *,
                 wait_s: float = 1.0) -> None:
        split = urllib.parse.urlsplit(url)
        if split.scheme != "http" or not split.hostname or not _PATH.fullmatch(split.path):
            raise ValueError(f"{url!r} is not a simulated switch's outlet "
                             "(http://HOST:PORT/outlet/N)")
        self.url = url
        self._split = split
        self._on_change = on_change
        self._wait_s = wait_s
        self._stop = threading.Event()
        self.changes = 0
        self.error: str | None = None
        self._conn = http.client.HTTPConnection(split.hostname, split.port or 80, timeout=10)
        self._seen, self.on = self._get(-1)  # where the outlet is now, before we follow
        if not self.on:
            on_change(False)  # plugged into an outlet that is off
        self._thread = threading.Thread(target=self._run, name="sim-power-follower",
                                        daemon=True)
        self._thread.start()

    def _get(self, since: int) -> tuple[int, bool]:
        """``(changes, state)``: at once for ``since`` -1, else after a change or the wait."""
        self._conn.request("GET", f"{self._split.path}?since={since}&wait={self._wait_s:g}")
        resp = self._conn.getresponse()
        text = resp.read().decode(errors="replace").strip()
        if resp.status != 200:
            raise OSError(f"GET {self.url}: HTTP {resp.status} {text[:80]}")
        count, _, on = text.partition(" ")
        if not count.isdigit() or on not in ("0", "1"):
            raise OSError(f"GET {self.url}: expected COUNT 0|1, got {text[:80]!r}")
        return int(count), on == "1"

    def _run(self) -> None:
        try:
            seen = self._seen
            while not self._stop.is_set():
                count, on = self._get(seen)
                if count == seen:
                    continue
                if (count - seen) % 2 == 0 and on == self.on:
                    # off and on again (or more) between two looks: the board lost power
                    self._tell(not on)
                self._tell(on)
                seen = count
        except (OSError, ValueError, http.client.HTTPException) as e:
            if not self._stop.is_set():
                self.error = f"{type(e).__name__}: {e}"
        finally:
            self._conn.close()

    def _tell(self, on: bool) -> None:
        self.on = on
        self.changes += 1
        self._on_change(on)

    def close(self) -> None:
        self._stop.set()
        sock = self._conn.sock
        if sock is not None:  # wake a long poll now rather than at its end
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(self._wait_s + 5)


@contextlib.contextmanager
def following(url: str, on_change: Callable[[bool], None]) -> Iterator[OutletFollower]:
    """``OutletFollower`` for the ``with`` block."""
    f = OutletFollower(url, on_change)
    try:
        yield f
    finally:
        f.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hilkit.lab.simswitch",
                                 description="A simulated power switch (labgrid model rest) "
                                             "on loopback.")
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free)")
    args = ap.parse_args(argv)
    if not 0 <= args.port < 65536:
        print(f"{ap.prog}: --port must be 0..65535", file=sys.stderr)
        return 2
    try:
        switch = SimSwitch(port=args.port)
    except OSError as e:
        print(f"{ap.prog}: cannot listen on 127.0.0.1:{args.port}: {e.strerror or e}",
              file=sys.stderr)
        return 2
    print(f"simulated power switch: {switch.url()} (outlets 1..{OUTLETS}); Ctrl-C stops it",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        switch.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

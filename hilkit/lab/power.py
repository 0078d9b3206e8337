"""The power channel: the rig host asks, the CI side switches the place's power (docs/lab.md,
"Power"). Stdlib only: the recovery suite on the rig host imports the client half.

Why a channel: the lock is the CI side's (``hilkit hil --place``), and so are the
coordinator session and the place's resources; the rig host runs pytest and has
neither. So the CI side serves a unix socket, ``ssh -R`` forwards it into the run's
SSH session (sshd makes it mode 0600, ``StreamLocalBindMask``), and the run is told its
path in ``$HILKIT_POWER_CHANNEL``. Each request is a connection with one line each way:

=============  ==========================================================
request        reply
=============  ==========================================================
``info``       ``ok {JSON}``: the place and its power resource (class, model,
               host, index)
``off``        ``ok off`` once the switch has switched the outlet off
``on``         ``ok on``
``get``        ``ok on`` / ``ok off``: the switch's own answer
=============  ==========================================================

Anything that fails answers ``error TEXT`` (one line). The switching itself is the
CI side's ``Switch``: labgrid's ``NetworkPowerDriver`` on the place's
``NetworkPowerPort`` (``hilkit.lab.coordinator.LabgridPower``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hilkit.lab.place import LabError, PlaceInfo, Resource

POWER_ENV = "HILKIT_POWER_CHANNEL"  # the channel's socket path, in the run on the rig host
POWER_CLASS = "NetworkPowerPort"  # the power resource hilkit drives (labgrid's class)
# labgrid's other power resources: named in the message that says they are not driven
OTHER_POWER_CLASSES = ("PDUDaemonPort", "NetworkUSBPowerPort", "NetworkSiSPMPowerPort",
                       "TasmotaPowerPort", "NetworkYKUSHPowerPort", "USBPowerPort",
                       "SiSPMPowerPort", "YKUSHPowerPort")
REQUESTS = ("info", "off", "on", "get")
MAX_LINE = 512
REQUEST_TIMEOUT_S = 30.0  # a PDU may take seconds; labgrid's backends have their own limits
RESTORE_TIMEOUT_S = 30.0  # switching on again at the end, before the unlock


class ChannelError(Exception):
    """The power channel failed, in one line."""


# -- the place's power resource (CI side, pure) ----------------------------------------------


def power_resource(place: PlaceInfo) -> Resource | None:
    """The place's ``NetworkPowerPort``, or None without one; ``LabError`` if it matches
    several (which one is the board's?) or one that is not available."""
    found = [r for r in place.resources if r.cls == POWER_CLASS]
    if not found:
        return None
    if len(found) > 1:
        raise LabError(f"place {place.name} matches {len(found)} {POWER_CLASS} resources "
                       f"({', '.join(map(str, found))}); the recovery suite's power check "
                       "needs exactly one: narrow the match, e.g. labgrid-client -p "
                       f"{place.name} add-match EXPORTER/GROUP/{POWER_CLASS}/NAME")
    r = found[0]
    if not r.avail:
        raise LabError(f"place {place.name}: resource {r} is not available (its exporter "
                       f"{r.path[0]} is offline?); check: labgrid-client resources")
    return r


def unsupported_power(place: PlaceInfo) -> list[Resource]:
    """The place's power resources of classes hilkit does not drive (yet)."""
    return [r for r in place.resources if r.cls in OTHER_POWER_CLASSES]


def describe(place: str, r: Resource) -> dict[str, Any]:
    """What ``info`` answers: which place and which resource switches the board."""
    p = r.params
    return {"place": place, "resource": str(r), "class": r.cls, "model": p.get("model"),
            "host": p.get("host"), "index": p.get("index")}


# -- the CI side: serving the channel ---------------------------------------------------------


class Switch(Protocol):
    """What the channel switches: a power driver (labgrid's ``PowerProtocol``)."""

    def on(self) -> None: ...
    def off(self) -> None: ...
    def get(self) -> bool: ...


@dataclass
class PowerEvent:
    t: float  # seconds since the server started
    request: str
    reply: str


@dataclass
class PowerServer:
    """Serves the channel on a unix socket in a private directory until ``close()``,
    one request at a time; ``events`` is every request and its reply; ``say`` is told
    of every switching. ``close()`` switches the power back on if it was left off."""

    switch: Switch
    info: Mapping[str, Any]
    say: Callable[[str], None] = lambda s: None
    events: list[PowerEvent] = field(default_factory=list)
    left_off: bool = False

    def __post_init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="hilkit-power.")  # 0700: ours alone
        self.path = os.path.join(self._dir, "power.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(4)
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="hilkit-power", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.2)
            if not ready:
                continue
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(10)
                try:
                    line = _read_line(conn)
                except (OSError, ChannelError):
                    continue
                reply = self.handle(line)
                with contextlib.suppress(OSError):
                    conn.sendall(reply.encode() + b"\n")

    def handle(self, request: str) -> str:
        """One request's reply (also for tests: no socket needed)."""
        req = request.strip()
        try:
            if req == "info":
                reply = "ok " + json.dumps(dict(self.info), sort_keys=True)
            elif req in ("off", "on"):
                (self.switch.off if req == "off" else self.switch.on)()
                self.left_off = req == "off"
                reply = f"ok {req}"
                self.say(f"power {req} ({self.info.get('resource')}), asked by the rig host")
            elif req == "get":
                reply = "ok " + ("on" if self.switch.get() else "off")
            else:
                reply = (f"error unknown request {req[:40]!r}; requests: "
                         + ", ".join(REQUESTS))
        except Exception as e:  # a backend's failure of any kind: one line back
            reply = f"error power {req} failed: {_one_line(e)}"
        self.events.append(PowerEvent(round(time.monotonic() - self._t0, 3), req, reply))
        return reply

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.rmdir(self._dir)
        if self.left_off:
            problem = _bounded(self.switch.on, RESTORE_TIMEOUT_S)
            if problem is None:
                self.left_off = False
                self.say(f"power on again ({self.info.get('resource')}): the run had left "
                         "it off")
            else:
                self.say(f"the power may stay OFF ({self.info.get('resource')}): switching "
                         f"it on failed: {problem}; switch it on: labgrid-client -p "
                         f"{self.info.get('place')} power on")

    def summary(self) -> dict[str, Any]:
        """For results.json's ``lab`` entry."""
        return {"resource": self.info.get("resource"),
                "requests": [{"t": e.t, "request": e.request, "reply": e.reply}
                             for e in self.events]}


def _bounded(fn: Callable[[], None], timeout: float) -> str | None:
    """Run ``fn`` for at most ``timeout`` s (a power backend may wait on a dead PDU with
    no time limit of its own, and the place must still be unlocked); why it failed, or
    None."""
    why: list[str] = []

    def call() -> None:
        try:
            fn()
        except Exception as e:
            why.append(_one_line(e))

    t = threading.Thread(target=call, name="hilkit-power-restore", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return f"no answer within {timeout:g} s"
    return why[0] if why else None


def _read_line(conn: socket.socket) -> str:
    buf = b""
    while b"\n" not in buf:
        chunk = conn.recv(MAX_LINE)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_LINE:
            raise ChannelError("line too long")
    return buf.split(b"\n", 1)[0].decode("utf-8", errors="replace")


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# -- the rig host: asking -----------------------------------------------------------------------


class PowerChannel:
    """The client: ``PowerChannel(path).request("off")``."""

    def __init__(self, path: str, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.path = path
        self.timeout = timeout

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PowerChannel | None:
        path = env.get(POWER_ENV)
        return cls(path) if path else None

    def exists(self) -> bool:
        return Path(self.path).is_socket()

    def request(self, what: str) -> str:
        """The reply's text after ``ok``; ``ChannelError`` with the reason otherwise."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            try:
                s.connect(self.path)
                s.sendall(what.encode() + b"\n")
                line = _read_line(s)
            except (OSError, ChannelError) as e:
                raise ChannelError(f"power channel {self.path}: {what}: "
                                   f"{getattr(e, 'strerror', None) or e}") from None
        status, _, text = line.partition(" ")
        if status == "ok":
            return text
        if status == "error":
            raise ChannelError(text)
        raise ChannelError(f"power channel {self.path}: {what}: no reply"
                           if not line else f"power channel {self.path}: {what}: "
                           f"unexpected reply {line[:80]!r}")

    def info(self) -> dict[str, Any]:
        try:
            data = json.loads(self.request("info"))
        except ValueError:
            raise ChannelError(f"power channel {self.path}: info: not JSON") from None
        if not isinstance(data, dict):
            raise ChannelError(f"power channel {self.path}: info: not an object")
        return data

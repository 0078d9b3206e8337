"""Places, selectors and claiming a place through a coordinator -- no I/O of its own.

A place is a labgrid place (docs/lab.md): its tags say which rig file it is
(``rig=rpi-w5100``) and optionally where hilkit is on the rig host
(``hilkit=/opt/hilkit/.venv/bin/hilkit``); its matches select the exporter's
resources, among them the ``NetworkService`` that is the rig host over SSH.

Claiming (``claim``) is labgrid's own sequence: a reservation per candidate place
(filter ``name=PLACE``; the coordinator's scheduler allocates a free place to the
oldest reservation that wants it), a poll until one is allocated or the timeout
passes, then the lock (acquire). The reservations not used are cancelled, also
when the wait is interrupted. Everything the coordinator is asked goes through
the small ``Coordinator`` protocol, so this module is tested with a fake.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

RIG_TAG = "rig"  # the place tag naming the rig file on the rig host
HILKIT_TAG = "hilkit"  # the place tag naming the hilkit command there (default "hilkit")
SSH_CLASS = "NetworkService"  # labgrid's resource class of a host reached over SSH
DEFAULT_PORT = 20408  # labgrid's coordinator port
_TAG_KEY = re.compile(r"[a-z][a-z0-9_]+")  # labgrid's rule for tag keys
_PLACE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_RIG_NAME = re.compile(r"[A-Za-z0-9._-]+")


class LabError(Exception):
    """A lab problem, said in one line (``hilkit hil`` prints it and exits 2)."""


@dataclass(frozen=True)
class Resource:
    """An exported resource a place's matches select."""

    path: tuple[str, str, str, str]  # exporter, group, class, name
    params: Mapping[str, Any]
    avail: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)  # the exporter's proxy settings

    @property
    def cls(self) -> str:
        return self.path[2]

    def __str__(self) -> str:
        return "/".join(self.path)


@dataclass(frozen=True)
class PlaceInfo:
    name: str
    tags: Mapping[str, str] = field(default_factory=dict)
    acquired: str | None = None  # "host/user" of the lock holder
    reservation: str | None = None  # token of the reservation it is allocated to
    changed: float = 0.0  # when the coordinator last changed it (Unix time)
    resources: tuple[Resource, ...] = ()


@dataclass(frozen=True)
class ReservationInfo:
    token: str
    owner: str  # "host/user"
    state: str  # waiting, allocated, acquired, expired, invalid
    place: str | None = None  # the place allocated to it


class Coordinator(Protocol):
    """What ``claim`` asks of a labgrid coordinator."""

    address: str
    me: str  # "host/user": how the coordinator names this client

    def places(self) -> dict[str, PlaceInfo]: ...
    def reservations(self) -> dict[str, ReservationInfo]: ...
    def reserve(self, place: str) -> str: ...
    def poll(self, token: str) -> ReservationInfo: ...
    def cancel(self, token: str) -> None: ...
    def acquire(self, place: str) -> None: ...
    def release(self, place: str) -> None: ...


# -- selectors -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selector:
    """``NAME`` (one place) or ``tag:KEY[=VALUE][,KEY[=VALUE]...]`` (any place with them)."""

    name: str | None = None
    tags: tuple[tuple[str, str | None], ...] = ()

    def matches(self, place: PlaceInfo) -> bool:
        if self.name is not None:
            return place.name == self.name
        return all(k in place.tags and (v is None or place.tags[k] == v) for k, v in self.tags)

    def __str__(self) -> str:
        if self.name is not None:
            return self.name
        return "tag:" + ",".join(k if v is None else f"{k}={v}" for k, v in self.tags)

    def describe(self) -> str:
        if self.name is not None:
            return f"place {self.name}"
        what = " and ".join(f"tag {k}" if v is None else f"tag {k}={v}" for k, v in self.tags)
        return f"a place with {what}"


def parse_selector(text: str) -> Selector:
    """``--place``'s value; ``LabError`` naming what is wrong."""
    if text.startswith("tag:"):
        body = text[4:]
        if not body:
            raise LabError("--place: tag: needs a tag, e.g. tag:w5100 or tag:rig=rpi-w5100")
        tags: list[tuple[str, str | None]] = []
        for item in body.split(","):
            key, eq, value = item.partition("=")
            if not _TAG_KEY.fullmatch(key):
                raise LabError(f"--place: {item!r}: a tag key is a lowercase letter, then "
                               "lowercase letters, digits or _ (labgrid's rule)")
            if eq and (not value or any(c.isspace() for c in value)):
                raise LabError(f"--place: {item!r}: give KEY=VALUE with a value, or KEY alone")
            tags.append((key, value if eq else None))
        return Selector(tags=tuple(tags))
    if not _PLACE_NAME.fullmatch(text):
        raise LabError(f"--place: {text!r} is not a place name (letters, digits, . _ -) "
                       "nor tag:KEY[=VALUE]")
    return Selector(name=text)


def coordinator_address(text: str | None, env: Mapping[str, str]) -> str:
    """``--coordinator``, else ``$LG_COORDINATOR``, else labgrid's default; HOST:PORT."""
    value = text or env.get("LG_COORDINATOR") or f"127.0.0.1:{DEFAULT_PORT}"
    value = value.strip()
    if "://" in value or not value or any(c.isspace() for c in value):
        raise LabError(f"--coordinator: {value!r} is not HOST[:PORT]")
    host, sep, port = value.rpartition(":")
    if not sep or (host.endswith(":") and not host.startswith("[")):  # no port, or bare IPv6
        return f"{value}:{DEFAULT_PORT}"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise LabError(f"--coordinator: {value!r}: the port must be 1..65535")
    return value


# -- what a place is -------------------------------------------------------------------------


@dataclass(frozen=True)
class SshService:
    """A ``NetworkService`` resource: the rig host."""

    host: str
    user: str
    port: int = 22


def rig_of(place: PlaceInfo) -> str:
    rig = place.tags.get(RIG_TAG)
    if not rig:
        raise LabError(f"place {place.name} has no {RIG_TAG} tag naming its rig file; set it: "
                       f"labgrid-client -p {place.name} set-tags {RIG_TAG}=RIGNAME")
    if not _RIG_NAME.fullmatch(rig):
        raise LabError(f"place {place.name}: tag {RIG_TAG}={rig!r} is not a rig name "
                       "(letters, digits, . _ -)")
    return rig


def hilkit_of(place: PlaceInfo) -> str:
    cmd = place.tags.get(HILKIT_TAG) or "hilkit"
    if any(c.isspace() or c in "\0'\"" for c in cmd):
        raise LabError(f"place {place.name}: tag {HILKIT_TAG}={cmd!r}: give the path of the "
                       "hilkit command, without spaces or quotes")
    return cmd


def ssh_service(place: PlaceInfo) -> SshService:
    found = [r for r in place.resources if r.cls == SSH_CLASS]
    if not found:
        raise LabError(f"place {place.name} has no {SSH_CLASS} resource (the rig host over "
                       f"SSH); match one: labgrid-client -p {place.name} add-match "
                       f"EXPORTER/GROUP/{SSH_CLASS}")
    if len(found) > 1:
        raise LabError(f"place {place.name} matches {len(found)} {SSH_CLASS} resources "
                       f"({', '.join(map(str, found))}); it needs exactly one")
    r = found[0]
    if not r.avail:
        raise LabError(f"place {place.name}: resource {r} is not available (its exporter "
                       f"{r.path[0]} is offline?); check: labgrid-client resources")
    host, user, port = r.params.get("address"), r.params.get("username"), r.params.get("port", 22)
    if not isinstance(host, str) or not host or not isinstance(user, str) or not user:
        raise LabError(f"place {place.name}: resource {r} needs an address and a username")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise LabError(f"place {place.name}: resource {r}: port {port!r} is not 1..65535")
    return SshService(host=host, user=user, port=port)


# -- messages --------------------------------------------------------------------------------


def _when(t: float, now: float) -> str:
    if t <= 0:
        return ""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
    return f" since {stamp} ({_ago(max(0.0, now - t))} ago)"


def _ago(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def holder(place: PlaceInfo, reservations: Mapping[str, ReservationInfo], now: float) -> str:
    """Who keeps ``place`` from being ours: ``held by HOST/USER since ...``, ..."""
    if place.acquired:
        return f"held by {place.acquired}{_when(place.changed, now)}"
    if place.reservation:
        res = reservations.get(place.reservation)
        owner = res.owner if res is not None else "another client"
        return f"reserved for {owner} (reservation {place.reservation})"
    return "free, but not allocated (is its exporter connected?)"


def no_match(selector: Selector, places: Mapping[str, PlaceInfo], address: str) -> str:
    if selector.name is not None:
        known = ", ".join(sorted(places)[:12]) or "none"
        return (f"no place {selector.name} on the coordinator at {address} (places: {known}); "
                f"create it: labgrid-client -x {address} -p {selector.name} create")
    what = selector.describe().removeprefix("a place with ")
    return (f"no place on the coordinator at {address} has {what}; "
            f"list them: labgrid-client -x {address} places")


def busy(selector: Selector, candidates: Sequence[PlaceInfo],
         reservations: Mapping[str, ReservationInfo], address: str, waited: float,
         now: float) -> str:
    held = "; ".join(f"{p.name} {holder(p, reservations, now)}" for p in candidates)
    first = next((p for p in candidates if p.acquired), None)
    free = ""
    if first is not None and first.acquired:
        free = (f"; if that run is gone (killed), free it: labgrid-client -x {address} "
                f"-p {first.name} release-from {first.acquired}")
    return (f"{selector.describe()} was not free within {waited:.0f} s (--place-timeout): "
            f"{held}{free}")


# -- claiming --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    place: PlaceInfo
    token: str


def claim(coord: Coordinator, selector: Selector, timeout: float, *,
          say: Callable[[str], None] = lambda s: None,
          sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic,
          wall: Callable[[], float] = time.time, poll_s: float = 1.0) -> Claim:
    """Reserve, wait (at most ``timeout`` s) and lock a place ``selector`` picks.

    ``LabError`` when no place matches, none became free in time (naming who holds
    them), or the lock failed. Reservations not used are cancelled, also on errors
    and interrupts; the lock is left to the caller (``coord.release``).
    """
    places = coord.places()
    candidates = [places[n] for n in sorted(places) if selector.matches(places[n])]
    if not candidates:
        raise LabError(no_match(selector, places, coord.address))
    tokens: dict[str, str] = {}
    kept: str | None = None
    try:
        for p in candidates:
            tokens[coord.reserve(p.name)] = p.name
        start = clock()
        announced = False
        while True:
            allocated: list[ReservationInfo] = []
            for token in list(tokens):
                res = coord.poll(token)
                if res.state in ("allocated", "acquired") and res.place:
                    allocated.append(res)
                elif res.state in ("expired", "invalid"):
                    name = tokens.pop(token)
                    if res.state == "expired":  # a poll came too late: ask again
                        tokens[coord.reserve(name)] = name
            if allocated:
                res = allocated[0]
                assert res.place is not None
                try:
                    coord.acquire(res.place)
                except LabError as e:
                    raise LabError(f"place {res.place}: the lock failed: {e}") from None
                kept = res.token
                now_places = coord.places()
                return Claim(place=now_places.get(res.place, places[res.place]), token=kept)
            if not tokens:
                raise LabError(f"{selector.describe()}: the coordinator dropped every "
                               "reservation (places deleted?)")
            waited = clock() - start
            if waited >= timeout:
                now_places = coord.places()
                current = [now_places.get(p.name, p) for p in candidates]
                raise LabError(busy(selector, current, coord.reservations(), coord.address,
                                    waited, wall()))
            if not announced:
                now_places = coord.places()
                current = [now_places.get(p.name, p) for p in candidates]
                who = "; ".join(f"{p.name} {holder(p, coord.reservations(), wall())}"
                                for p in current)
                say(f"waiting up to {timeout:.0f} s for {selector.describe()}: {who}")
                announced = True
            sleep(min(poll_s, max(0.0, timeout - waited)))
    finally:
        for token in tokens:
            if token != kept:
                with contextlib.suppress(Exception):  # else it expires in 60 s
                    coord.cancel(token)

"""NIC drivers: one package per chip or kernel interface, each speaking only ``hilkit.port``.

Two registries, both open to other packages through entry points:

- drivers (``hilkit.drivers``): a name -> a callable that returns a
  ``hilkit.port.Device``;
- NICs (``hilkit.nics``): a name -> a ``hilkit.port.nic.Nic``, everything the rig
  schema, the builder, the runner and the suites know about a chip (its driver,
  its model, its identity probe, its figures, its driver stats)::

    [project.entry-points."hilkit.nics"]
    mychip = "mychip_hilkit.nic:NIC"

``load_driver(name)`` finds a driver: an installed ``hilkit.drivers`` entry point
first, then a registered NIC's ``driver``, then the drivers shipped here that
are no NIC (``tap``, ``tun``). ``find_nic(name)`` finds a NIC: an entry point
first, then the NICs shipped here (``BUILTIN_NICS``).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, cast

from hilkit.port.device import Device
from hilkit.port.nic import Nic, NicError, load_ref

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hilkit.drivers"
NIC_ENTRY_POINT_GROUP = "hilkit.nics"

# Drivers shipped with hilkit that are no NIC (a kernel interface has no chip to describe).
BUILTIN_DRIVERS: dict[str, str] = {
    "tap": "hilkit.drivers.tap:TapDevice",
    "tun": "hilkit.drivers.tap:TunDevice",
}

# NICs shipped with hilkit: name -> "module:attr" of its ``Nic``. A NIC package adds
# one line here (or, out of tree, an entry point under ``hilkit.nics``).
BUILTIN_NICS: dict[str, str] = {
    "w5100": "hilkit.drivers.w5100.nic:NIC",
    "enc28j60": "hilkit.drivers.enc28j60.nic:NIC",
    "cdc_ecm": "hilkit.drivers.cdc_ecm.nic:NIC",
    "ppp": "hilkit.drivers.ppp.nic:NIC",
}

DriverFactory = Callable[..., Device]


def _nic_refs() -> dict[str, str]:
    """name -> "module:attr" of every registered NIC; an entry point hides a built-in."""
    refs = dict(BUILTIN_NICS)
    for ep in entry_points(group=NIC_ENTRY_POINT_GROUP):
        refs[ep.name] = ep.value
    return refs


def _load_nic(name: str, ref: str) -> Nic:
    obj = load_ref(ref)
    if not isinstance(obj, Nic):
        raise NicError(f"NIC {name!r}: {ref} is a {type(obj).__name__}, not a "
                       "hilkit.port.nic.Nic")
    if obj.name != name:
        raise NicError(f"NIC {name!r}: {ref} is registered as {name!r} but names itself "
                       f"{obj.name!r}")
    return obj


def find_nic(name: str) -> Nic | None:
    """The NIC registered as ``name``, or None; ``NicError`` when its registration is broken."""
    ref = _nic_refs().get(name)
    if ref is None:
        return None
    try:
        return _load_nic(name, ref)
    except NicError as e:
        msg = str(e)
        raise NicError(msg if msg.startswith(f"NIC {name!r}") else
                       f"NIC {name!r} ({ref}): {msg}") from None


def nics() -> dict[str, Nic]:
    """Every NIC that loads, by name; a broken registration is logged and left out."""
    out: dict[str, Nic] = {}
    for name, ref in sorted(_nic_refs().items()):
        try:
            out[name] = _load_nic(name, ref)
        except NicError as e:
            log.warning("NIC %r (%s) left out: %s", name, ref, e)
    return out


def available_drivers() -> list[str]:
    """Names ``load_driver`` accepts."""
    names = set(BUILTIN_DRIVERS) | set(_nic_refs())
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def load_driver(name: str) -> DriverFactory:
    """The factory registered as ``name``; raise LookupError if there is none."""
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        return cast(DriverFactory, ep.load())
    nic = find_nic(name)
    if nic is not None:
        return nic.load_driver()
    target = BUILTIN_DRIVERS.get(name)
    if target is None:
        raise LookupError(f"no driver {name!r}; known: {', '.join(available_drivers())}")
    module, _, attr = target.partition(":")
    obj: Any = getattr(importlib.import_module(module), attr)
    return cast(DriverFactory, obj)


__all__ = [
    "BUILTIN_DRIVERS",
    "BUILTIN_NICS",
    "ENTRY_POINT_GROUP",
    "NIC_ENTRY_POINT_GROUP",
    "DriverFactory",
    "Nic",
    "NicError",
    "available_drivers",
    "find_nic",
    "load_driver",
    "nics",
]

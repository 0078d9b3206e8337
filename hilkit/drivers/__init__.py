"""NIC drivers: one package per chip or kernel interface, each speaking only ``hilkit.port``.

Out-of-tree drivers plug in through the entry-point group ``hilkit.drivers``;
each entry names a callable that returns a ``hilkit.port.Device``::

    [project.entry-points."hilkit.drivers"]
    mychip = "mychip_hilkit:MyChipDevice"

``load_driver(name)`` finds a driver by that name: an installed entry point
first, then the drivers shipped in this package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, cast

from hilkit.port.device import Device

ENTRY_POINT_GROUP = "hilkit.drivers"

# Drivers shipped with hilkit, usable without installing the package.
BUILTIN_DRIVERS: dict[str, str] = {
    "tap": "hilkit.drivers.tap:TapDevice",
    "tun": "hilkit.drivers.tap:TunDevice",
    "w5100": "hilkit.drivers.w5100:W5100Device",
}

DriverFactory = Callable[..., Device]


def available_drivers() -> list[str]:
    """Names ``load_driver`` accepts."""
    names = set(BUILTIN_DRIVERS)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def load_driver(name: str) -> DriverFactory:
    """The factory registered as ``name``; raise LookupError if there is none."""
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        return cast(DriverFactory, ep.load())
    target = BUILTIN_DRIVERS.get(name)
    if target is None:
        raise LookupError(f"no driver {name!r}; known: {', '.join(available_drivers())}")
    module, _, attr = target.partition(":")
    obj: Any = getattr(importlib.import_module(module), attr)
    return cast(DriverFactory, obj)


__all__ = [
    "BUILTIN_DRIVERS",
    "ENTRY_POINT_GROUP",
    "DriverFactory",
    "available_drivers",
    "load_driver",
]

"""A NIC, registered once: what the rig schema, the builder, the runner and the suites
know about a chip without naming it (``docs/porting.md``, "Registering a NIC").

A NIC package holds one ``Nic`` object and registers it, either in hilkit's own
table (``hilkit.drivers.BUILTIN_NICS``) or, from another package, under the
entry-point group ``hilkit.nics``::

    [project.entry-points."hilkit.nics"]
    mychip = "mychip_hilkit.nic:NIC"

References to code are ``"module:callable"`` strings, so describing a NIC imports
nothing: a rig file can be validated on a machine where the driver's or the
model's imports would fail, and only what a rig uses is ever loaded.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from hilkit.port.clock import Clock
from hilkit.port.device import Device
from hilkit.port.spi import SpiBus

__all__ = ["ChipModelFactory", "Identify", "Nic", "NicError", "load_ref"]

_IDENT: Final = r"[A-Za-z_][A-Za-z0-9_]*"
_REF_RE: Final = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*\Z")
_NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
TRANSPORTS: Final = ("spi", "usb", "serial")

Identify = Callable[[SpiBus], str | None]
"""``identify(bus)``: None when the chip answered as it should, else what is wrong."""


class ChipModelFactory(Protocol):
    """How the builder makes a chip model for ``[bus] kind = "sim"``.

    ``wire`` is the Ethernet the model's PHY sits on (the rig's TAP), ``clock`` the
    rig's clock, ``seed`` the rig's ``bus.seed`` (0 when absent). ``faults`` and
    ``timing`` are instances of the NIC's ``model_faults`` / ``model_timing``
    classes made from the rig's ``bus.faults`` / ``bus.timing`` tables, or None
    when the NIC registers no such class. The result is a ``hilkit.port.model.ChipModel``:
    an ``SpiBus`` with any of its optional members (pins, resets, ``stats``,
    ``call_overhead_us``).
    """

    def __call__(self, *, wire: Device | None, clock: Clock, seed: int, faults: Any,
                 timing: Any) -> SpiBus: ...


class NicError(ValueError):
    """A registration that cannot be used: a malformed field, or a reference that
    does not import."""


def load_ref(ref: str) -> Any:
    """The object a ``"module:attr.attr"`` reference names; ``NicError`` if there is none."""
    if not _REF_RE.match(ref):
        raise NicError(f"{ref!r} is not \"module:callable\"")
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # another package's import: whatever it raises is its problem
        raise NicError(f"cannot import {module_name!r}: {type(e).__name__}: {e}") from None
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise NicError(f"module {module_name!r} has no {attr!r}") from None
    return obj


@dataclass(frozen=True)
class Nic:
    """One NIC: its driver, its chip model, its identity probe and its physical figures.

    Figures left None are ones the chip's documents do not give; whatever needs
    them (a ceiling percentage, a floor check) is then left out and said so.
    """

    name: str  # the driver name rig files use ([driver] name, [bus] model)
    title: str  # for people: "Vendor Chip"
    driver: str  # "module:callable" returning a hilkit.port.Device (load_driver's factory)
    model: str | None = None  # "module:callable", a ChipModelFactory; None: no model
    model_faults: str | None = None  # "module:Class": a dataclass, the keys of bus.faults
    model_timing: str | None = None  # "module:Class": a dataclass, the keys of bus.timing
    model_options: str | None = None  # "module:Class": a dataclass, the keys of bus.options
    # what the driver speaks: "spi" (an SpiBus), "usb" (pyusb) or "serial" (a pyserial port)
    transport: str = "spi"
    identify: str | None = None  # "module:callable", an Identify: a raw, read-only probe
    spi_max_hz: int | None = None  # the fastest SPI clock the chip takes
    spi_bytes_per_data_byte: float | None = None  # SPI bytes clocked per frame byte, at best
    rx_buffer_bytes: int | None = None  # the chip's receive buffer as the driver uses it
    tx_buffer_bytes: int | None = None  # ... and its transmit buffer
    wire_bps: int | None = None  # the Ethernet line rate of its PHY
    stat_names: tuple[str, ...] = ()  # driver counters the runner reports (attrs or .stats)
    link_detect: bool = True  # the driver's link_up follows the carrier
    reset_pulse_ms: float = 1.0  # how long the recovery suite holds the reset pin

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise NicError(f"Nic {self.name!r}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with the fields (empty when nothing): checked at construction."""
        out: list[str] = []
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            out.append(f"name {self.name!r} is not a driver name (lowercase letters, "
                       "digits, '.', '_', '-')")
        if not isinstance(self.title, str) or not self.title.strip():
            out.append("title is empty")
        for f in ("driver", "model", "model_faults", "model_timing", "model_options",
                  "identify"):
            ref = getattr(self, f)
            if (ref is not None or f == "driver") and not (
                    isinstance(ref, str) and _REF_RE.match(ref)):
                out.append(f'{f} {ref!r} is not "module:callable"')
        if self.model is None and (self.model_faults or self.model_timing
                                   or self.model_options):
            out.append("model_faults/model_timing/model_options without a model")
        if self.transport not in TRANSPORTS:
            out.append(f"transport {self.transport!r} is not one of {', '.join(TRANSPORTS)}")
        for f in ("spi_max_hz", "rx_buffer_bytes", "tx_buffer_bytes", "wire_bps"):
            v = getattr(self, f)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                out.append(f"{f} {v!r} is not a positive integer")
        v = self.spi_bytes_per_data_byte
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not v > 0):
            out.append(f"spi_bytes_per_data_byte {v!r} is not a positive number")
        if not isinstance(self.stat_names, tuple) or not all(
                isinstance(s, str) and s.isidentifier() for s in self.stat_names):
            out.append("stat_names is not a tuple of attribute names")
        if not isinstance(self.reset_pulse_ms, (int, float)) or not self.reset_pulse_ms > 0:
            out.append(f"reset_pulse_ms {self.reset_pulse_ms!r} is not a positive number")
        return out

    # -- loading what the strings name ---------------------------------------------------

    def load_driver(self) -> Callable[..., Device]:
        fn: Callable[..., Device] = load_ref(self.driver)
        return fn

    def load_model(self) -> ChipModelFactory | None:
        return None if self.model is None else load_ref(self.model)

    def load_identify(self) -> Identify | None:
        return None if self.identify is None else load_ref(self.identify)

    def model_table(self, table: str) -> type[Any] | None:
        """The dataclass whose fields are the keys of ``bus.<table>`` ("faults", "timing",
        "options")."""
        ref = {"faults": self.model_faults, "timing": self.model_timing,
               "options": self.model_options}[table]
        if ref is None:
            return None
        cls = load_ref(ref)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise NicError(f"{ref} is not a dataclass")
        return cls

    def make_model(self, *, wire: Device | None, clock: Clock, seed: int,
                   faults: Mapping[str, Any], timing: Mapping[str, Any],
                   options: Mapping[str, Any] | None = None) -> Any:
        """The model (an ``SpiBus`` for an SPI chip, a ``hilkit.sim.usb.UsbDeviceModel``
        for a USB device), its option objects made from the rig's ``bus.faults``,
        ``bus.timing`` and ``bus.options``; ``options`` is passed only to a NIC that
        registers ``model_options``."""
        factory = self.load_model()
        if factory is None:
            raise NicError(f"NIC {self.name!r} registers no chip model")
        opts: dict[str, Any] = {}
        tables = [("faults", faults), ("timing", timing)]
        if self.model_options is not None or options:
            tables.append(("options", options or {}))
        for table, given in tables:
            cls = self.model_table(table)
            if cls is None and given:
                raise NicError(f"NIC {self.name!r} takes no bus.{table}")
            opts[table] = None if cls is None else cls(**given)
        return factory(wire=wire, clock=clock, seed=seed, **opts)

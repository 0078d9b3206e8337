"""The chip-model contract: what makes a bus "a chip model" to the builder and the suites
(``docs/porting.md``, "Chip models").

A chip model is an ``SpiBus`` that *is* the chip: a register-level stand-in that
speaks the chip's bus protocol and puts its frames on the rig's wire. It comes
from a NIC's registration (``Nic.model``, ``[bus] kind = "sim"``) or from any
package as a bus factory (``[bus] kind = "python"``). Beyond the ``SpiBus``
members everything is optional, and each member a model has turns on what needs it:

==================================  ===============================================
member                              what needs it
==================================  ===============================================
``reset_pin: Pin | None``           ``[pins.reset] kind = "sim"``; the recovery
                                    suite's ``pin`` check (through the rig's pin)
``int_pin`` / ``irq_pin: Pin``      ``[pins.irq] kind = "sim"``; its ``fileno()``
                                    is what a driver hands the stack
``pins_active_low: bool``           how the builder sees the pins: True (the
                                    default) wraps each in ``InvertedPin``, as a
                                    chip's /RESET and /INT are active low
``soft_reset()``, ``hard_reset()``  the recovery suite's ``soft`` / ``hard``
                                    checks: reset the chip from outside, now
``set_power(on: bool)``              the recovery suite's ``power`` check on a
                                    simulated rig: the board's supply, driven by
                                    a power switch (docs/lab.md, "Power")
``stats: Mapping[str, int]``        results.json ``counters.model``; with
                                    ``soft_resets`` / ``hard_resets`` the recovery
                                    suite checks the model counted its reset
``call_overhead_us: float``         the bus figures' per-call cost (0: no bridge)
==================================  ===============================================

A bus is taken for a model when it has any of the pin or reset members
(``is_chip_model``); a chip without pins needs no ``reset_pin = None``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, Protocol, runtime_checkable

from hilkit.port.pin import InvertedPin, Pin
from hilkit.port.spi import SpiBus

__all__ = [
    "MODEL_MEMBERS",
    "ChipModel",
    "ResetKind",
    "is_chip_model",
    "missing_reset_hint",
    "model_pin",
    "model_power",
    "model_reset",
    "model_stats",
    "pin_attrs",
]

ResetKind = Literal["soft", "hard"]

PIN_ATTRS: Final[Mapping[str, tuple[str, ...]]] = {
    "reset": ("reset_pin",),
    "irq": ("irq_pin", "int_pin"),
}
MODEL_MEMBERS: Final = ("reset_pin", "int_pin", "irq_pin", "soft_reset", "hard_reset")


@runtime_checkable
class ChipModel(SpiBus, Protocol):
    """A register-level chip model: an ``SpiBus`` (``counters``, ``transfer``,
    ``transfer_batch``, ``close``) plus any of the optional members the module docstring
    lists (``reset_pin``, ``int_pin``/``irq_pin``, ``pins_active_low``, ``soft_reset()``,
    ``hard_reset()``, ``set_power()``, ``stats``, ``call_overhead_us``), read through the
    helpers below so a model without them still is one."""


def pin_attrs(name: str) -> tuple[str, ...]:
    """The model attributes that can serve rig pin ``name`` ("reset", "irq")."""
    return PIN_ATTRS.get(name, ())


def is_chip_model(bus: object) -> bool:
    """``bus`` offers any model member (a pin or a reset): the builder then treats it as
    the rig's chip model (``BuiltRig.model``)."""
    return any(hasattr(bus, a) for a in MODEL_MEMBERS)


def model_pin(model: object, name: str) -> Pin | None:
    """Rig pin ``name`` as the model offers it, logical (asserted = True), or None.

    A model's pins are the chip's raw lines; unless it says ``pins_active_low = False``
    they are active low and come back wrapped in ``InvertedPin``.
    """
    pin = next((getattr(model, a) for a in pin_attrs(name)
                if getattr(model, a, None) is not None), None)
    if pin is None:
        return None
    if getattr(model, "pins_active_low", True):
        return InvertedPin(pin)
    return pin  # type: ignore[no-any-return]


def model_reset(model: object, how: ResetKind) -> Callable[[], None] | None:
    """The model's ``soft_reset`` / ``hard_reset``, or None if it has none."""
    fn = getattr(model, f"{how}_reset", None)
    return fn if callable(fn) else None


def model_power(model: object) -> Callable[[bool], None] | None:
    """The model's ``set_power`` (the board's supply on or off), or None if it has none."""
    fn = getattr(model, "set_power", None)
    return fn if callable(fn) else None


def model_stats(model: object) -> dict[str, Any]:
    """The model's ``stats`` mapping as a dict ({} without one)."""
    stats = getattr(model, "stats", None)
    return dict(stats) if isinstance(stats, Mapping) else {}


def missing_reset_hint(model: object, how: ResetKind) -> str:
    """Why there is no ``how`` reset to inject, and what to implement: for skip messages."""
    if model is None:
        return (f"no {how} reset to inject: the rig's bus is no chip model; a model "
                f"(hilkit.port.model.ChipModel, docs/porting.md \"Chip models\") that "
                f"offers {how}_reset() gets this check")
    return (f"no {how} reset to inject: the chip model {type(model).__name__} has no "
            f"{how}_reset(); implement it (hilkit.port.model.ChipModel, docs/porting.md "
            f"\"Chip models\") to get this check")

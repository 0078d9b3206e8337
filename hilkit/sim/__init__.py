"""Hardware models: chips as the driver sees them on their real bus (docs/porting.md).

A model never imports a driver; drivers never import a model. What every chip
model shares (bus, wire pump, pins, /INT descriptor, bit errors, scheduled
resets, counters) is ``hilkit.sim.chip.ChipModel``.
"""

from hilkit.sim.chip import ChipModel
from hilkit.sim.pins import SimPin
from hilkit.sim.w5100 import W5100Faults, W5100Model, W5100Timing, memory_split

__all__ = ["ChipModel", "SimPin", "W5100Faults", "W5100Model", "W5100Timing", "memory_split"]

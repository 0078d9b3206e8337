"""Hardware models: chips as the driver sees them on their real bus (docs/porting.md).

A model never imports a driver; drivers never import a model. Each model counts
bus bytes and transactions and can inject faults.
"""

from hilkit.sim.pins import SimPin
from hilkit.sim.w5100 import W5100Faults, W5100Model, W5100Timing, memory_split

__all__ = ["SimPin", "W5100Faults", "W5100Model", "W5100Timing", "memory_split"]

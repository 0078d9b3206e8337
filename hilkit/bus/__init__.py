"""Real transports behind the porting-layer contract: spidev, FT232H MPSSE, gpiod pins.

Importing this package needs none of the hardware libraries: pyftdi and gpiod are imported
when a bus or pin is opened, and a missing library or device raises ``HardwareNotFound``.
"""

from hilkit.bus.ftdi import FtdiPin, FtdiSpiBus
from hilkit.bus.gpio import GpiodPin
from hilkit.bus.spidev import SpidevBus

__all__ = ["FtdiPin", "FtdiSpiBus", "GpiodPin", "SpidevBus"]

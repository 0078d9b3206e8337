"""TUN/TAP drivers: the Linux kernel as the far end of the wire."""

from hilkit.drivers.tap.device import TapDevice, TunDevice
from hilkit.port.device import random_mac

__all__ = ["TapDevice", "TunDevice", "random_mac"]

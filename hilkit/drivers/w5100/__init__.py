"""WIZnet W5100 over SPI: socket 0 in MACRAW mode as a hilkit Device."""

from hilkit.drivers.w5100.driver import WIRING_HINT, W5100Device, random_mac

__all__ = ["WIRING_HINT", "W5100Device", "random_mac"]

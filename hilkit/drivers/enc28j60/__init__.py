"""Microchip ENC28J60: a 10BASE-T Ethernet controller with an SPI interface (DS39662E)."""

from hilkit.drivers.enc28j60.driver import WIRING_HINT, ENC28J60Device, random_mac

__all__ = ["WIRING_HINT", "ENC28J60Device", "random_mac"]

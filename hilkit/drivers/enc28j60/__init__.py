"""Microchip ENC28J60: a 10BASE-T Ethernet controller with an SPI interface (DS39662E)."""

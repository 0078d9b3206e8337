"""hilkit: a hardware-in-the-loop TCP/IP kit."""

__version__ = "0.1.0"

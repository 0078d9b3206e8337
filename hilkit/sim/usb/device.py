"""A device on the virtual USB bus, as the bus sees it (docs/porting.md, "USB device models").

The bus (``hilkit.sim.usb.bus``) does what the host controller and the USB 2.0
device framework do -- addresses, GET_DESCRIPTOR, SET_CONFIGURATION /
SET_INTERFACE bookkeeping, splitting transfers into packets, halts, timeouts,
accounting -- and calls a model for what is the device's own:

* its descriptors (``device_descriptor``, ``configurations``, ``strings``);
* standard requests that change its state: ``set_configuration``,
  ``set_interface``, ``clear_halt``, ``bus_reset``;
* class and vendor requests: ``control``;
* data, one *packet* at a time: ``out_packet`` for what the host sends (a
  zero-length packet is ``b""``), ``in_packet`` for what the device offers
  (``None``: NAK, nothing to send yet). Packets, not transfers, because where a
  transfer ends is the device's business (short packet and ZLP rules, USB 2.0
  §5.8.3): a model that frames by them sees exactly what silicon sees.

The bus calls a model under the model's ``lock``, from any thread. ``wait`` is
called without the lock, by a host thread whose IN transfer found nothing: a
model with an outside source (a TAP) waits on it there; ``wake`` ends every wait.

A model raises ``Stall`` to stall a request or an endpoint; the bus keeps the
endpoint halted until CLEAR_FEATURE(ENDPOINT_HALT). It raises ``Nak`` from
``out_packet`` to refuse a packet for now (the host retries until its timeout).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["BULK_MAX_PACKET", "Nak", "Setup", "Speed", "Stall", "UsbDeviceModel"]


class Speed(enum.IntEnum):
    """libusb's speed codes (``libusb_speed``), as pyusb reports ``dev.speed``."""

    LOW = 1
    FULL = 2
    HIGH = 3


# USB 2.0 §5.8.3: bulk wMaxPacketSize is 8..64 at full speed, exactly 512 at high speed
BULK_MAX_PACKET: Final = {Speed.FULL: 64, Speed.HIGH: 512}


class Stall(Exception):
    """The device answers with STALL (USB 2.0 §8.4.5): a request it does not
    support, or a halted endpoint."""


class Nak(Exception):
    """The device is not ready for this OUT packet (USB 2.0 §8.4.5); the host retries."""


@dataclass(frozen=True)
class Setup:
    """A SETUP packet (USB 2.0 §9.3)."""

    bmRequestType: int
    bRequest: int
    wValue: int
    wIndex: int
    wLength: int

    @property
    def device_to_host(self) -> bool:
        return bool(self.bmRequestType & 0x80)

    @property
    def type(self) -> int:
        """0 standard, 1 class, 2 vendor (bits 6..5)."""
        return (self.bmRequestType >> 5) & 3

    @property
    def recipient(self) -> int:
        """0 device, 1 interface, 2 endpoint, 3 other (bits 4..0)."""
        return self.bmRequestType & 0x1F


class UsbDeviceModel:
    """Base of every device model: defaults for what most devices do not care about.

    A subclass sets ``speed``, ``device_descriptor``, ``configurations`` (one
    bytes blob per configuration, ``hilkit.sim.usb.descriptors.configuration``)
    and ``strings`` (index -> text; index 0, the LANGID table, is the bus's),
    and overrides the members its function needs.
    """

    speed: Speed = Speed.HIGH
    device_descriptor: bytes = b""
    configurations: Sequence[bytes] = ()
    strings: Mapping[int, str] = {}
    langids: Sequence[int] = (0x0409,)
    # interfaces a kernel driver binds when the device is plugged (Linux binds e.g.
    # cdc_ether or ftdi_sio): pyusb must detach it before claiming; the bus's ``plug``
    # may override it
    kernel_driver_bound: frozenset[int] = frozenset()

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._wakeup = threading.Condition(threading.Lock())
        self._generation = 0

    # -- standard requests that change the device's state (USB 2.0 §9.4) ---------------

    def set_configuration(self, value: int) -> None:
        """SET_CONFIGURATION: ``value`` 0 is the Address state (no configuration)."""

    def set_interface(self, interface: int, alt: int) -> None:
        """SET_INTERFACE: the bus has checked that the alternate setting exists."""

    def clear_halt(self, endpoint: int) -> None:
        """CLEAR_FEATURE(ENDPOINT_HALT): data toggle reset; the bus clears the halt."""

    def bus_reset(self) -> None:
        """A port reset (``reset_device``): back to the Default state."""

    # -- class and vendor requests -------------------------------------------------------

    def control(self, setup: Setup, data: bytes) -> bytes:
        """A class or vendor request; for device-to-host the reply (the bus trims it to
        wLength). Unknown requests stall, as USB 2.0 §9.2.7 says they should."""
        raise Stall(f"request 0x{setup.bRequest:02x} type 0x{setup.bmRequestType:02x}")

    # -- data ------------------------------------------------------------------------------

    def out_packet(self, endpoint: int, packet: bytes) -> None:
        """One packet the host sent to OUT ``endpoint`` (``b""`` is a ZLP)."""
        raise Stall(f"no OUT endpoint 0x{endpoint:02x}")

    def in_packet(self, endpoint: int, max_packet: int) -> bytes | None:
        """The next packet of IN ``endpoint``, at most ``max_packet`` bytes (more is
        babble); ``b""`` a ZLP; None: NAK, nothing yet."""
        raise Stall(f"no IN endpoint 0x{endpoint:02x}")

    # -- waiting -------------------------------------------------------------------------------

    def wait(self, timeout_s: float, endpoint: int | None = None) -> None:
        """Block until ``endpoint`` (the one whose transfer found nothing; None: any) may
        have something, or ``timeout_s`` passes.

        The default waits for ``wake``; a model fed from outside overrides it (and may
        return early: the bus asks ``in_packet`` again and waits again). Several host
        threads wait at once, one per endpoint: a model checks the endpoint's own queue
        before it blocks, so a signal another thread consumed is not lost.
        """
        with self._wakeup:
            gen = self._generation
            self._wakeup.wait_for(lambda: self._generation != gen, timeout_s)

    def wake(self) -> None:
        """End every ``wait`` now: something changed (data queued, unplugged, closed)."""
        with self._wakeup:
            self._generation += 1
            self._wakeup.notify_all()

    def close(self) -> None:
        """Release what the model holds (its wire stays the rig's); called on unplug for good."""

"""The porting-layer contract: what a NIC driver must provide (docs/porting.md)."""

from hilkit.port.clock import Clock, ManualClock, MonotonicClock
from hilkit.port.device import (
    Device,
    DeviceClosed,
    DeviceCounters,
    LinkConfig,
    LinkType,
    Offloads,
    device_link_config,
    device_offloads,
    max_frame_len,
)
from hilkit.port.errors import ChipNotResponding, HardwareNotFound
from hilkit.port.impair import ImpairCounters, ImpairedDevice, Impairment
from hilkit.port.model import ChipModel
from hilkit.port.nic import Nic, NicError
from hilkit.port.pin import Edge, Pin
from hilkit.port.spi import BusCounters, SpiBus, check_tails, reply_tails

__all__ = [
    "BusCounters",
    "ChipModel",
    "ChipNotResponding",
    "Clock",
    "Device",
    "DeviceClosed",
    "DeviceCounters",
    "Edge",
    "HardwareNotFound",
    "ImpairCounters",
    "ImpairedDevice",
    "Impairment",
    "LinkConfig",
    "LinkType",
    "ManualClock",
    "MonotonicClock",
    "Nic",
    "NicError",
    "Offloads",
    "Pin",
    "SpiBus",
    "check_tails",
    "device_link_config",
    "device_offloads",
    "max_frame_len",
    "reply_tails",
]

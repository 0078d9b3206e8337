"""Rigs: what is plugged where, and the peers at the far end of the wire.

``load_rig(name_or_path)`` reads and validates a rig file (``rigs/*.toml``,
``docs/rigs.md``); ``check_hardware(rig)`` says whether what it names is
there; ``build(rig)`` makes it live in a private network namespace and takes
it all down again.
"""

from hilkit.rig.builder import BuiltRig, build, check_hardware
from hilkit.rig.loader import ENV_VAR, find_rig, list_rigs, load_rig, rig_dirs, scan_rigs
from hilkit.rig.schema import (
    BUS_KINDS,
    DEFAULT_SUITES,
    PEER_KINDS,
    PIN_KINDS,
    PIN_NAMES,
    SUITE_NAMES,
    BusSpec,
    DriverSpec,
    DutSpec,
    PeerSpec,
    PinSpec,
    Problem,
    Rig,
    RigError,
    parse_rig,
)
from hilkit.rig.suite_params import SUITE_PARAMS, Param, SuiteParams

__all__ = [
    "BUS_KINDS",
    "DEFAULT_SUITES",
    "ENV_VAR",
    "PEER_KINDS",
    "PIN_KINDS",
    "PIN_NAMES",
    "SUITE_NAMES",
    "SUITE_PARAMS",
    "BuiltRig",
    "BusSpec",
    "DriverSpec",
    "DutSpec",
    "Param",
    "PeerSpec",
    "PinSpec",
    "Problem",
    "Rig",
    "RigError",
    "SuiteParams",
    "build",
    "check_hardware",
    "find_rig",
    "list_rigs",
    "load_rig",
    "parse_rig",
    "rig_dirs",
    "scan_rigs",
]

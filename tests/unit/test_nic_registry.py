"""NICs register once (``hilkit.port.nic.Nic``): built in, or from another package's
``hilkit.nics`` entry point; the rig, hil and stack layers read the registration
and never name a chip."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

import hilkit.drivers
from hilkit.drivers import (
    available_drivers,
    find_nic,
    load_driver,
    nics,
)
from hilkit.drivers.w5100 import W5100Device
from hilkit.drivers.w5100.nic import NIC as W5100_NIC
from hilkit.port.clock import ManualClock
from hilkit.port.nic import Nic, NicError
from hilkit.port.spi import SpiBus
from tests import rig_plugins

REPO = Path(__file__).resolve().parents[2]


# -- the registry -----------------------------------------------------------------------------


def test_builtin_w5100() -> None:
    nic = find_nic("w5100")
    assert nic is W5100_NIC
    assert (nic.name, nic.title) == ("w5100", "WIZnet W5100")
    assert (nic.spi_max_hz, nic.spi_bytes_per_data_byte) == (14_000_000, 4.0)
    assert (nic.rx_buffer_bytes, nic.tx_buffer_bytes, nic.wire_bps) == (8192, 8192, 100_000_000)
    assert nic.stat_names == ("resets", "reopens", "tx_stalls", "bus_errors", "idle_polls")
    assert not nic.link_detect and nic.reset_pulse_ms == 1.0
    assert nic.load_driver() is W5100Device
    assert "w5100" in nics() and "w5100" in available_drivers()
    assert load_driver("w5100") is W5100Device  # through the NIC: no second registration


def test_unknown_and_nicless_names() -> None:
    assert find_nic("nosuchchip") is None
    assert find_nic("tap") is None  # a driver, but no chip to describe
    assert "tap" in available_drivers() and "tap" not in nics()


def test_an_entry_point_registers_a_nic(monkeypatch: pytest.MonkeyPatch) -> None:
    rig_plugins.register_nics(monkeypatch)
    toy = find_nic("toy")
    assert toy is rig_plugins.TOY_NIC
    assert set(nics()) >= {"toy", "nomodel", "w5100"}
    assert "toy" in available_drivers()
    driver: object = load_driver("toy")
    assert driver is rig_plugins.FakeChipDevice


def test_an_entry_point_hides_a_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    # a lab's own w5100 registration (here: the toy's, renamed) wins over hilkit's
    monkeypatch.setattr(rig_plugins, "LAB_W5100",
                        Nic(name="w5100", title="Lab W5100", driver="tests.rig_plugins:"
                            "FakeChipDevice"), raising=False)
    rig_plugins.register_nics(monkeypatch, {"w5100": "tests.rig_plugins:LAB_W5100"})
    nic = find_nic("w5100")
    assert nic is not None and nic.title == "Lab W5100"


def test_a_builtin_table_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(hilkit.drivers.BUILTIN_NICS, "toy", "tests.rig_plugins:TOY_NIC")
    assert find_nic("toy") is rig_plugins.TOY_NIC


@pytest.mark.parametrize(("ref", "problem"), [
    ("tests.rig_plugins:FakeChipDevice", "is a type, not a hilkit.port.nic.Nic"),
    ("tests.rig_plugins:NOMODEL_NIC", "registered as 'broken' but names itself 'nomodel'"),
    ("tests.no_such_module:NIC", "cannot import 'tests.no_such_module'"),
    ("tests.rig_plugins:NO_SUCH", "has no 'NO_SUCH'"),
])
def test_a_broken_registration(monkeypatch: pytest.MonkeyPatch, ref: str, problem: str) -> None:
    rig_plugins.register_nics(monkeypatch, {"broken": ref})
    with pytest.raises(NicError, match=re.escape(problem)):
        find_nic("broken")
    assert "broken" not in nics() and "w5100" in nics()  # the others still load


@pytest.mark.parametrize(("kw", "problem"), [
    ({"name": "My Chip"}, "is not a driver name"),
    ({"title": " "}, "title is empty"),
    ({"driver": "mychip.MyDevice"}, 'driver \'mychip.MyDevice\' is not "module:callable"'),
    ({"model_faults": "m:F"}, "model_faults/model_timing/model_options without a model"),
    ({"spi_max_hz": 0}, "spi_max_hz 0 is not a positive integer"),
    ({"spi_bytes_per_data_byte": -4.0}, "is not a positive number"),
    ({"stat_names": ["resets"]}, "stat_names is not a tuple of attribute names"),
    ({"reset_pulse_ms": 0}, "reset_pulse_ms 0 is not a positive number"),
])
def test_a_malformed_nic_is_refused(kw: dict[str, Any], problem: str) -> None:
    fields: dict[str, Any] = {"name": "mychip", "title": "My Chip", "driver": "mychip:Dev"}
    with pytest.raises(NicError, match=re.escape(problem)):
        Nic(**(fields | kw))


# -- what the registration does ------------------------------------------------------------------


def test_the_w5100_model_and_its_identity() -> None:
    bus = W5100_NIC.make_model(wire=None, clock=ManualClock(), seed=3,
                               faults={"rx_full": True}, timing={"send_ms": 0.5})
    assert isinstance(bus, SpiBus)
    model: Any = bus
    assert model.faults.rx_full and model.timing.send_ms == 0.5
    assert model.reset_pin is not None and model.int_pin is not None
    identify = W5100_NIC.load_identify()
    assert identify is not None and identify(bus) is None
    echo = rig_plugins.LoopbackBus(None, None, "echo", 1)  # echoes the dummy byte: RTR 0
    problem = identify(echo)
    assert problem == ("no W5100 answered on the bus: RTR read 0x0000, expected 0x07D0 "
                       "(check wiring, CS, SPI mode 0)")


def test_a_model_without_an_options_class_takes_no_options() -> None:
    nic = Nic(name="bare", title="Bare", driver="tests.rig_plugins:FakeChipDevice",
              model="tests.rig_plugins:make_toy_model")
    bus: Any = nic.make_model(wire=None, clock=ManualClock(), seed=1, faults={}, timing={})
    assert bus.faults is None and bus.stats == {"seed": 1}
    with pytest.raises(NicError, match=re.escape("takes no bus.timing")):
        nic.make_model(wire=None, clock=ManualClock(), seed=1, faults={}, timing={"x": 1})


# -- what the runner and the reports read ----------------------------------------------------------


def test_the_runner_finds_the_rigs_nic() -> None:
    from types import SimpleNamespace

    from hilkit.hil.plugin import driver_stats, nic_of

    dev = SimpleNamespace(resets=2, reopens=True, gain=3)
    named = SimpleNamespace(rig=SimpleNamespace(driver=SimpleNamespace(name="w5100")), device=dev)
    assert nic_of(named) is W5100_NIC
    built = SimpleNamespace(rig=named.rig, device=dev, nic=None)  # the builder found none
    assert nic_of(built) is None
    assert driver_stats(dev, W5100_NIC.stat_names) == {"resets": 2}  # ints only
    assert driver_stats(dev, ()) == {}


def test_the_ceiling_figure_needs_the_nics_figures() -> None:
    from hilkit.hil import report

    kw: dict[str, Any] = {"spi_bytes": 4_000_000, "transactions": 1000, "calls": 10,
                          "frames": 700, "frame_bytes": 1_000_000, "speed_hz": 14e6,
                          "bus_kind": "spidev"}
    figs = report.bus_figures(**kw)
    assert "silicon_s" in figs and "silicon_pct_of_spi_ceiling" not in figs
    figs = report.bus_figures(**kw, spi_max_hz=W5100_NIC.spi_max_hz,
                              spi_bytes_per_data_byte=W5100_NIC.spi_bytes_per_data_byte)
    pct, unit = figs["silicon_pct_of_spi_ceiling"]
    assert unit == "%" and 0 < pct <= 100  # 4 SPI bytes a frame byte, plus call overhead


# -- no chip names where none belong -------------------------------------------------------------


def test_rig_hil_stack_and_port_name_no_chip() -> None:
    """No chip is named outside its own package (docs/porting.md, "Registering a NIC")."""
    res = subprocess.run(["grep", "-rilE", "--exclude-dir=__pycache__", "w5100|enc28j60",
                          "hilkit/rig", "hilkit/hil", "hilkit/stack", "hilkit/port"],
                         cwd=REPO, capture_output=True, text=True, check=False)
    assert res.returncode == 1 and res.stdout == "", (
        "these files name a chip; read it from the NIC's registration instead "
        "(hilkit.port.nic.Nic):\n" + res.stdout)

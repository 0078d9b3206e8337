"""Rig files with a USB bus (``kind = "usb"``) and a board peer: what they accept, and what
each mistake is told as (docs/rigs.md, "[bus]" and "[peer]")."""

from __future__ import annotations

from pathlib import Path

import pytest

from hilkit.rig import RigError, load_rig, parse_rig

SIM = """
name = "bench"
[driver]
name = "cdc_ecm"
[bus]
kind = "usb"
model = "cdc_ecm"
id = "0525:a4a2"
[peer]
kind = "tap"
address = "192.168.9.1/24"
[dut]
address = "192.168.9.2/24"
"""

BOARD = """
name = "bench"
[driver]
name = "cdc_ecm"
[bus]
kind = "usb"
id = "0525:a4a2"
[peer]
kind = "board"
address = "192.168.12.1/24"
services = ["ping", "udp-echo"]
[dut]
address = "192.168.12.2/24"
"""


def parse(tmp_path: Path, text: str) -> object:
    p = tmp_path / "rig.toml"
    p.write_text(text)
    return parse_rig(p, display="rigs/bench.toml")


def errors_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RigError) as info:
        parse(tmp_path, text)
    return str(info.value).splitlines()


def test_a_simulated_usb_rig(tmp_path: Path) -> None:
    rig = parse(tmp_path, SIM + '[bus.options]\nspeed = "full"\n[bus.faults]\n'
                               "drop_notifications = 1\n")
    bus = rig.bus  # type: ignore[attr-defined]
    assert bus.kind == "usb" and bus.simulated and bus.model == "cdc_ecm"
    assert bus.usb_id == (0x0525, 0xA4A2)
    assert bus.backend == "hilkit.sim.usb"  # a model's bus is the virtual one by default
    assert dict(bus.options) == {"speed": "full"}
    assert dict(bus.faults) == {"drop_notifications": 1}


def test_the_shipped_usb_rigs() -> None:
    sim, hw, board = (load_rig(n) for n in ("sim-usb-ecm", "usb-ecm", "usb-ecm-gadget"))
    assert sim.simulated and sim.bus is not None and sim.bus.model == "cdc_ecm"
    assert not hw.simulated and hw.peer.kind == "host" and hw.bus is not None
    assert hw.bus.backend is None  # libusb
    assert board.peer.kind == "board" and board.peer.services == ("ping",)


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('id = "0525:a4a2"', 'id = "0525-a4a2"', 'bus.id: "0525-a4a2" is not a USB id'),
    ('id = "0525:a4a2"', 'port = "1-0"', 'bus.port: "1-0" is not a USB port path'),
    ('id = "0525:a4a2"', 'serial = " "', "bus.serial: empty"),
    ('id = "0525:a4a2"', 'backend = "usb backend"', 'bus.backend: "usb backend" is not a '
                                                     "module name"),
    ('model = "cdc_ecm"', 'model = "w5100"', 'bus.model: WIZnet W5100 ("w5100") is an SPI '
                                             'chip: write kind = "sim"'),
    ('model = "cdc_ecm"', 'model = "cdc_ecn"', 'bus.model: unknown model "cdc_ecn"; did you '
                                               'mean "cdc_ecm"?'),
    ('model = "cdc_ecm"\n', "", 'bus.model: missing: a "tap" peer is the cable of a model'),
    ('[peer]\nkind = "tap"', '[peer]\nkind = "board"', 'peer.kind: a "board" peer is a real '
                                                       "board"),
])
def test_usb_mistakes(tmp_path: Path, old: str, new: str, expected: str) -> None:
    lines = errors_of(tmp_path, SIM.replace(old, new))
    assert any(line.startswith(f"rigs/bench.toml: {expected}") for line in lines), lines


def test_an_spi_model_is_refused_on_usb_and_a_usb_model_on_sim(tmp_path: Path) -> None:
    text = SIM.replace('kind = "usb"\nmodel = "cdc_ecm"\nid = "0525:a4a2"',
                       'kind = "sim"\nmodel = "cdc_ecm"')
    lines = errors_of(tmp_path, text)
    assert ('rigs/bench.toml: bus.model: USB CDC-ECM device ("cdc_ecm") is a USB device: '
            'write kind = "usb" and model = "cdc_ecm"') in lines


def test_options_are_the_model_classes_fields(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, SIM + "[bus.options]\nsped = 1\n")
    assert any('bus.options.sped: unknown key "sped"; did you mean "speed"?' in x for x in lines), \
        lines


def test_a_hardware_usb_bus_takes_no_model_tables(tmp_path: Path) -> None:
    text = BOARD.replace('id = "0525:a4a2"', 'id = "0525:a4a2"\nseed = 1')
    lines = errors_of(tmp_path, text)
    assert any("bus.seed: only a model takes it" in x for x in lines), lines


def test_a_board_peer(tmp_path: Path) -> None:
    rig = parse(tmp_path, BOARD)
    peer = rig.peer  # type: ignore[attr-defined]
    assert peer.kind == "board" and peer.services == ("ping", "udp-echo")
    assert peer.interface == "" and peer.ip == "192.168.12.1"


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('services = ["ping", "udp-echo"]', 'services = ["pong"]',
     'peer.services[0]: unknown service "pong"; did you mean "ping"?'),
    ('services = ["ping", "udp-echo"]', 'services = ["ping", "ping"]',
     'peer.services[1]: "ping" is listed twice'),
    ('services = ["ping", "udp-echo"]', 'services = "ping"', "peer.services: expected a list"),
    ('services = ["ping", "udp-echo"]', 'interface = "usb0"',
     "peer.interface: a board peer has no interface on this machine"),
])
def test_board_mistakes(tmp_path: Path, old: str, new: str, expected: str) -> None:
    lines = errors_of(tmp_path, BOARD.replace(old, new))
    assert any(line.startswith(f"rigs/bench.toml: {expected}") for line in lines), lines


def test_services_belong_to_a_board(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, SIM.replace('kind = "tap"', 'kind = "tap"\nservices = []'))
    assert any("peer.services: only a board peer lists services" in x for x in lines), lines


def test_an_ftdi_bus_with_its_usb_made_virtual() -> None:
    rig = load_rig("sim-ft232h-enc28j60")
    bus = rig.bus
    assert bus is not None and bus.kind == "ftdi" and bus.simulated
    assert bus.model == "enc28j60" and bus.backend == "hilkit.sim.usb"
    assert rig.peer.kind == "tap" and rig.pins["reset"].kind == "ftdi"
    hw = load_rig("ft232h-enc28j60")
    assert hw.bus is not None and not hw.bus.simulated and hw.bus.backend is None


def test_an_ftdi_model_must_be_an_spi_chip(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "rigs" / "sim-ft232h-w5100.toml").read_text()
    lines = errors_of(tmp_path, text.replace('model = "w5100"', 'model = "cdc_ecm"'))
    assert any('bus.model: USB CDC-ECM device ("cdc_ecm") is a USB device' in x
               for x in lines), lines
    lines = errors_of(tmp_path, text.replace('model = "w5100"', 'seed = 3'))
    assert any("bus.model: missing" in x for x in lines), lines

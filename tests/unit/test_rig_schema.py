"""Rig files: the shipped ones validate; every kind of mistake is named (file, key, problem)."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import pytest

from hilkit.drivers import available_drivers
from hilkit.port.clock import ManualClock
from hilkit.rig import SUITE_NAMES, RigError, find_rig, list_rigs, load_rig, parse_rig, scan_rigs
from hilkit.rig.builder import _make_bus, _make_driver, resolve_factory
from hilkit.rig.loader import ENV_VAR
from tests import rig_plugins

REPO_RIGS = Path(__file__).resolve().parents[2] / "rigs"
SHIPPED = sorted(p.stem for p in REPO_RIGS.glob("*.toml"))

SPIDEV_RIG = """\
name = "bench"
description = "a test rig"
mtu = 1500

[driver]
name = "fakechip"

[bus]
kind = "spidev"
device = "/dev/spidev0.0"
speed_hz = 8000000

[pins.reset]
kind = "gpiod"
chip = "/dev/gpiochip0"
line = 25
active_low = true

[peer]
kind = "host"
interface = "eth1"
address = "192.168.7.1/24"

[dut]
address = "192.168.7.2/24"
"""

TAP_RIG = """\
name = "bench"

[driver]
name = "tap"

[peer]
kind = "tap"
address = "192.168.7.1/24"

[dut]
address = "192.168.7.2/24"
"""


@pytest.fixture(autouse=True)
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test plug-ins (a driver for a bus: fakechip) as if installed."""
    rig_plugins.register_plugins(monkeypatch)


def write(tmp_path: Path, text: str, name: str = "bench") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def errors_of(tmp_path: Path, text: str) -> list[str]:
    """The lines of the RigError the rig text raises (it must raise)."""
    path = write(tmp_path, text)
    with pytest.raises(RigError) as info:
        parse_rig(path, display="rigs/bench.toml")
    lines = str(info.value).splitlines()
    assert all(line.startswith("rigs/bench.toml: ") for line in lines), lines
    assert len(lines) == len(info.value.problems)
    return lines


def replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# -- the shipped rigs -------------------------------------------------------------------


def test_the_four_rigs_ship() -> None:
    assert {"sim-w5100", "rpi-w5100", "ft232h-w5100", "sim-tap"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_rig_validates(name: str) -> None:
    rig = load_rig(name)
    assert rig.name == name
    assert rig.path.resolve() == (REPO_RIGS / f"{name}.toml").resolve()
    assert rig.description
    assert rig.driver.name in available_drivers()
    assert list(rig.suites) == [s for s in SUITE_NAMES if s in rig.suites]
    assert rig.peer.ip != rig.dut.ip


def test_shipped_rigs_say_what_the_issue_asks() -> None:
    sim = load_rig("sim-w5100")
    assert sim.simulated and sim.driver.name == "w5100"
    assert sim.bus is not None and (sim.bus.kind, sim.bus.model) == ("sim", "w5100")
    assert sim.bus.speed_hz == 14_000_000 and sim.bus.describe() == "sim w5100 @ 14 MHz"
    assert sim.peer.kind == "tap"
    assert (sim.peer.address, sim.dut.address) == ("192.168.7.1/24", "192.168.7.2/24")
    assert list(sim.suites) == list(SUITE_NAMES)

    rpi = load_rig("rpi-w5100")
    assert not rpi.simulated and rpi.bus is not None
    assert (rpi.bus.kind, rpi.bus.device, rpi.bus.speed_hz, rpi.bus.mode) == (
        "spidev", "/dev/spidev0.0", 8_000_000, 0)
    reset, irq = rpi.pins["reset"], rpi.pins["irq"]
    assert (reset.kind, reset.chip, reset.line, reset.active_low) == (
        "gpiod", "/dev/gpiochip0", 25, True)
    assert (irq.kind, irq.line, irq.active_low) == ("gpiod", 24, True)
    assert (rpi.peer.kind, rpi.peer.interface) == ("host", "eth1")
    assert rpi.suite_params("tcp")["bytes"] == 16 * 1024 * 1024

    ft = load_rig("ft232h-w5100")
    assert ft.bus is not None
    assert (ft.bus.kind, ft.bus.url, ft.bus.speed_hz, ft.bus.cs_pin) == (
        "ftdi", "ftdi://ftdi:232h/1", 6_000_000, 3)
    assert (ft.pins["reset"].kind, ft.pins["reset"].bit) == ("ftdi", 4)
    assert (ft.peer.kind, ft.peer.interface) == ("host", "eth1")

    tap = load_rig("sim-tap")
    assert tap.simulated and tap.bus is None and tap.driver.name == "tap"


def test_a_valid_file_becomes_frozen_dataclasses(tmp_path: Path) -> None:
    rig = parse_rig(write(tmp_path, SPIDEV_RIG))
    assert rig.bus is not None and rig.bus.describe() == "spidev /dev/spidev0.0 @ 8 MHz"
    assert rig.dut.netmask == "255.255.255.0" and rig.peer.prefix == 24
    assert list(rig.suites) == list(SUITE_NAMES)  # no [suites]: the default list
    with pytest.raises(AttributeError):
        rig.mtu = 9000  # type: ignore[misc]
    with pytest.raises(TypeError):
        rig.suites["tcp"] = {}  # type: ignore[index]


def test_driver_mac_becomes_bytes(tmp_path: Path) -> None:
    rig = parse_rig(write(tmp_path, replace(TAP_RIG, 'name = "tap"\n',
                                            'name = "tap"\nmac = "02:00:00:00:00:07"\n')))
    assert rig.driver.options["mac"] == bytes.fromhex("020000000007")


def test_suites_table_or_list(tmp_path: Path) -> None:
    rig = parse_rig(write(tmp_path, TAP_RIG + "\n[suites.tcp]\nbytes = 1024\n[suites.arp]\n"))
    assert list(rig.suites) == ["arp", "tcp"]  # run order, not file order
    assert rig.suite_params("tcp") == {"bytes": 1024}
    rig = parse_rig(write(tmp_path, TAP_RIG.replace('name = "bench"\n',
                                                    'name = "bench"\nsuites = ["udp", "icmp"]\n')))
    assert list(rig.suites) == ["icmp", "udp"]


# -- one test per kind of mistake ---------------------------------------------------------


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, replace(SPIDEV_RIG, "speed_hz = 8000000", "speed = 8000000"))
    assert lines == ['rigs/bench.toml: bus.speed: unknown key "speed"; did you mean "speed_hz"?']


def test_unknown_key_without_a_close_one_lists_the_known(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, SPIDEV_RIG + 'colour = "blue"\n')
    assert lines == ['rigs/bench.toml: dut.colour: unknown key "colour" '
                     '(known: address, gateway)']


def test_top_level_key_written_after_a_table(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, replace(SPIDEV_RIG, "mtu = 1500\n", "") + "mtu = 1500\n")
    assert len(lines) == 1
    assert lines[0].startswith('rigs/bench.toml: dut.mtu: unknown key "mtu": ')
    assert "belongs to [dut]" in lines[0]


def test_wrong_type(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, replace(SPIDEV_RIG, "speed_hz = 8000000", 'speed_hz = "8MHz"'))
    assert lines == ['rigs/bench.toml: bus.speed_hz: expected an integer, got "8MHz"']


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("active_low = true", 'active_low = "yes"',
     'pins.reset.active_low: expected true or false, got "yes"'),
    ("line = 25", "line = 25.0", "pins.reset.line: expected an integer, got 25.0"),
    ("mtu = 1500", "mtu = true", "mtu: expected an integer, got true"),
    ('[dut]\naddress = "192.168.7.2/24"\n', "", "dut: missing (add a [dut] table)"),
])
def test_wrong_types_everywhere(tmp_path: Path, old: str, new: str, expected: str) -> None:
    lines = errors_of(tmp_path, replace(SPIDEV_RIG, old, new))
    assert f"rigs/bench.toml: {expected}" in lines


def test_a_table_that_is_not_one(tmp_path: Path) -> None:
    text = replace(SPIDEV_RIG, '[dut]\naddress = "192.168.7.2/24"\n', "")
    text = replace(text, "mtu = 1500\n", 'mtu = 1500\ndut = "192.168.7.2/24"\n')
    assert errors_of(tmp_path, text) == [
        'rigs/bench.toml: dut: expected a table, got "192.168.7.2/24"']


def test_missing_value(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, replace(SPIDEV_RIG, 'address = "192.168.7.1/24"\n', ""))
    assert lines == ["rigs/bench.toml: peer.address: missing (the kernel's address, "
                     'e.g. "192.168.7.1/24")']


def test_missing_section(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, replace(SPIDEV_RIG, '[dut]\naddress = "192.168.7.2/24"\n', ""))
    assert lines == ["rigs/bench.toml: dut: missing (add a [dut] table)"]


def test_bad_address(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, replace(SPIDEV_RIG, "192.168.7.2/24", "192.168.7.300/24"))
    assert lines == [
        'rigs/bench.toml: dut.address: "192.168.7.300" is not an IPv4 address (a.b.c.d)']


@pytest.mark.parametrize(("value", "problem"), [
    ("192.168.7.2", 'expected ADDRESS/PREFIX such as "192.168.5.4/24", got "192.168.7.2"'),
    ("192.168.7.0/24", "192.168.7.0 is the network address of 192.168.7.0/24, not a host"),
    ("192.168.7.255/24", "192.168.7.255 is the broadcast address of 192.168.7.0/24"),
    ("224.0.0.1/24", "224.0.0.1 is a multicast address (224.0.0.0/4), not a host's"),
    ("192.168.8.2/24", "192.168.8.2/24 is not on the peer's network 192.168.7.0/24 "
                       "(peer.address = 192.168.7.1/24)"),
    ("192.168.7.1/24", "192.168.7.1 is also the peer's address (peer.address)"),
])
def test_bad_addresses(tmp_path: Path, value: str, problem: str) -> None:
    lines = errors_of(tmp_path, replace(SPIDEV_RIG, "192.168.7.2/24", value))
    assert lines == [f"rigs/bench.toml: dut.address: {problem}"]


def test_bad_prefix(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, replace(SPIDEV_RIG, "192.168.7.1/24", "192.168.7.1/33"))
    assert lines == ['rigs/bench.toml: peer.address: prefix length 33 in "192.168.7.1/33" '
                     "is out of range 0..32"]
    lines = errors_of(tmp_path, replace(SPIDEV_RIG, "192.168.7.1/24", "192.168.7.1/255.255.255.0"))
    assert "not a number" in lines[0] and lines[0].startswith("rigs/bench.toml: peer.address: ")


def test_bad_gateway(tmp_path: Path) -> None:
    text = replace(SPIDEV_RIG, 'address = "192.168.7.2/24"',
                   'address = "192.168.7.2/24"\ngateway = "10.0.0.1"')
    assert errors_of(tmp_path, text) == [
        "rigs/bench.toml: dut.gateway: 10.0.0.1 is not on the DUT's network 192.168.7.0/24"]


def test_unknown_driver_lists_the_known_ones(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, replace(SPIDEV_RIG, 'name = "fakechip"', 'name = "cs8900a"'))
    assert len(lines) == 1
    assert lines[0].startswith('rigs/bench.toml: driver.name: unknown driver "cs8900a" (known: ')
    for known in available_drivers():
        assert known in lines[0]
    assert "hilkit.drivers" in lines[0]


def test_unknown_driver_close_to_a_known_one(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, replace(TAP_RIG, 'name = "tap"', 'name = "tapp"'))
    assert lines == ['rigs/bench.toml: driver.name: unknown driver "tapp"; did you mean "tap"?']


def test_unknown_driver_option(tmp_path: Path) -> None:
    text = replace(TAP_RIG, 'name = "tap"\n', 'name = "tap"\nmcc = "02:00:00:00:00:01"\n')
    assert errors_of(tmp_path, text) == [
        'rigs/bench.toml: driver.mcc: driver tap has no option "mcc"; did you mean "mac"?']


def test_bad_mac(tmp_path: Path) -> None:
    text = replace(TAP_RIG, 'name = "tap"\n', 'name = "tap"\nmac = "01:00:5e:00:00:01"\n')
    assert errors_of(tmp_path, text) == [
        "rigs/bench.toml: driver.mac: 01:00:5e:00:00:01 is a multicast address; "
        "the first octet must be even"]


def test_unknown_bus_kind(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, replace(SPIDEV_RIG, 'kind = "spidev"', 'kind = "spi"'))
    assert lines[0] == 'rigs/bench.toml: bus.kind: unknown bus kind "spi"; did you mean "spidev"?'
    lines = errors_of(tmp_path, replace(SPIDEV_RIG, 'kind = "spidev"', 'kind = "i2c"'))
    assert lines[0] == ('rigs/bench.toml: bus.kind: unknown bus kind "i2c" '
                        "(known: spidev, ftdi, sim, usb, python, serial)")


@pytest.mark.parametrize("factory", ["mybridge.open_bus", "mybridge:", ":open_bus",
                                     "my-bridge:open", "mybridge:open bus"])
def test_bad_factory(tmp_path: Path, factory: str) -> None:
    text = replace(SPIDEV_RIG, 'kind = "spidev"\ndevice = "/dev/spidev0.0"\nspeed_hz = 8000000',
                   f'kind = "python"\nfactory = "{factory}"')
    text = replace(text, 'kind = "host"\ninterface = "eth1"', 'kind = "tap"')
    text = replace(text, 'kind = "gpiod"\nchip = "/dev/gpiochip0"\nline = 25\nactive_low = true',
                   'kind = "sim"')
    lines = errors_of(tmp_path, text)
    assert any(line.startswith(f'rigs/bench.toml: bus.factory: "{factory}" is not '
                               f'"module:callable"') for line in lines), lines


def test_unknown_suite(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, SPIDEV_RIG.replace("[dut]", "[suites.tcpp]\n[dut]"))
    assert lines == ['rigs/bench.toml: suites.tcpp: unknown suite "tcpp"; did you mean "tcp"?']
    lines = errors_of(tmp_path, SPIDEV_RIG.replace('name = "bench"\n',
                                                   'name = "bench"\nsuites = ["arp", "dhcp"]\n'))
    assert lines[0].startswith('rigs/bench.toml: suites[1]: unknown suite "dhcp" (known: identity')


def test_pin_mistakes(tmp_path: Path) -> None:
    text = SPIDEV_RIG.replace("[peer]", '[pins.irqq]\nkind = "sim"\n\n[pins.irq]\nkind = "ftdi"\n'
                                        "bit = 5\n\n[peer]")
    lines = errors_of(tmp_path, text)
    assert 'rigs/bench.toml: pins.irqq: unknown pin "irqq"; did you mean "irq"?' in lines
    assert ('rigs/bench.toml: pins.irq.kind: an "ftdi" pin needs an ftdi bus '
            '([bus] kind = "ftdi")') in lines


def test_a_sim_bus_needs_a_tap_peer(tmp_path: Path) -> None:
    text = replace(SPIDEV_RIG, 'kind = "spidev"\ndevice = "/dev/spidev0.0"',
                   'kind = "sim"\nmodel = "w5100"')
    lines = errors_of(tmp_path, text)
    assert ('rigs/bench.toml: peer.kind: a simulated bus (the w5100 model) needs a "tap" '
            "peer: the model's wire is a TAP") in lines


SIM_RIG = """\
name = "bench"

[driver]
name = "w5100"

[bus]
kind = "sim"
model = "w5100"
seed = 7

[pins.reset]
kind = "sim"

[peer]
kind = "tap"
address = "192.168.7.1/24"

[dut]
address = "192.168.7.2/24"
"""


def test_a_sim_bus_runs_a_registered_model(tmp_path: Path) -> None:
    text = replace(SIM_RIG, "seed = 7\n", "seed = 7\nfaults = { bit_error_rate = 1e-6 }\n"
                                          "timing = { send_ms = 0.2 }\n")
    rig = parse_rig(write(tmp_path, text))
    assert rig.bus is not None and rig.simulated
    assert (rig.bus.kind, rig.bus.model, rig.bus.seed) == ("sim", "w5100", 7)
    assert rig.bus.speed_hz == 14_000_000  # the NIC's spi_max_hz is the default
    assert dict(rig.bus.faults) == {"bit_error_rate": 1e-6}
    assert dict(rig.bus.timing) == {"send_ms": 0.2}


def test_the_old_sim_kind_says_what_to_write(tmp_path: Path) -> None:
    text = replace(SIM_RIG, 'kind = "sim"\nmodel = "w5100"\n', 'kind = "sim-w5100"\n')
    assert errors_of(tmp_path, text) == [
        'rigs/bench.toml: bus.kind: "sim-w5100" is gone: write kind = "sim" and '
        'model = "w5100"']
    # the rest of the table is still checked, as what it now means
    text = replace(text, "seed = 7", "seed = 7\nfaults = { smoke = true }")
    lines = errors_of(tmp_path, text)
    assert lines[0].startswith('rigs/bench.toml: bus.kind: "sim-w5100" is gone: ')
    assert lines[1].startswith('rigs/bench.toml: bus.faults.smoke: unknown key "smoke"')
    text = replace(SIM_RIG, 'kind = "sim"\nmodel = "w5100"\n', 'kind = "sim-mychip"\n')
    lines = errors_of(tmp_path, text)
    assert lines[0] == ('rigs/bench.toml: bus.kind: "sim-mychip" is gone: write kind = "sim" '
                        'and model = "mychip"')


def test_a_sim_bus_with_an_unknown_model(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, replace(SIM_RIG, 'model = "w5100"', 'model = "w5101"'))
    assert lines == ['rigs/bench.toml: bus.model: unknown model "w5101"; did you mean "w5100"?']
    lines = errors_of(tmp_path, replace(SIM_RIG, 'model = "w5100"', 'model = "cs8900"'))
    assert lines == ['rigs/bench.toml: bus.model: unknown model "cs8900" (known: enc28j60, '
                     'w5100); a chip model comes with a NIC registered under the '
                     'entry-point group "hilkit.nics"']
    lines = errors_of(tmp_path, replace(SIM_RIG, 'model = "w5100"\n', ""))
    assert lines == ["rigs/bench.toml: bus.model: missing (the NIC whose chip model runs; "
                     "known: enc28j60, w5100)"]


def test_a_sim_bus_needs_a_nic_that_has_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig_plugins.register_nics(monkeypatch)
    lines = errors_of(tmp_path, replace(SIM_RIG, 'model = "w5100"', 'model = "nomodel"'))
    assert lines == ['rigs/bench.toml: bus.model: Bare Chip ("nomodel") registers no chip '
                     "model; known: enc28j60, toy, w5100"]


def test_a_model_without_timing_takes_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig_plugins.register_nics(monkeypatch)
    text = replace(SIM_RIG, 'model = "w5100"', 'model = "toy"\ntiming = { send_ms = 1 }\n'
                                               "faults = { mute = true }")
    text = replace(text, 'name = "w5100"', 'name = "toy"')
    assert errors_of(tmp_path, text) == [
        "rigs/bench.toml: bus.timing: the toy model takes no timing (its Nic registers no "
        "model_timing)"]


def test_faults_and_timing_are_the_registered_fields(tmp_path: Path) -> None:
    text = replace(SIM_RIG, "seed = 7\n", "faults = { bit_error_rat = 0.1, rx_full = 1 }\n"
                                          "timing = { send_ms = -1 }\n")
    assert errors_of(tmp_path, text) == [
        'rigs/bench.toml: bus.faults.bit_error_rat: unknown key "bit_error_rat"; did you mean '
        '"bit_error_rate"?',
        "rigs/bench.toml: bus.faults.rx_full: expected true or false, got 1",
        "rigs/bench.toml: bus.timing.send_ms: -1.0 is out of range 0..60000",
    ]


def test_not_toml(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, "name = \n")
    assert lines[0].startswith("rigs/bench.toml: not valid TOML: ")


def test_several_errors_at_once(tmp_path: Path) -> None:
    text = replace(SPIDEV_RIG, "speed_hz = 8000000", 'speed_hz = "8MHz"')
    text = replace(text, "192.168.7.2/24", "192.168.7.2/40")
    text = replace(text, 'kind = "host"\n', 'kind = "host"\nadress = "x"\n')
    text = replace(text, 'name = "fakechip"', 'name = "nosuchchip"')
    text += "\n[suites.tcpp]\n"
    lines = errors_of(tmp_path, text)
    keys = [line.split(": ")[1] for line in lines]
    assert sorted(keys) == sorted(
        ["bus.speed_hz", "dut.address", "peer.adress", "driver.name", "suites.tcpp"]), lines
    assert 'rigs/bench.toml: peer.adress: unknown key "adress"; did you mean "address"?' in lines


def test_error_names_the_file_as_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rigs").mkdir()
    write(tmp_path / "rigs", replace(SPIDEV_RIG, "speed_hz = 8000000", 'speed_hz = "8MHz"'),
          name="lab-bench")
    with pytest.raises(RigError) as info:
        load_rig("rigs/lab-bench.toml")
    assert str(info.value) == 'rigs/lab-bench.toml: bus.speed_hz: expected an integer, got "8MHz"'
    assert info.value.file == "rigs/lab-bench.toml"
    assert [(p.key, p.message) for p in info.value.problems] == [
        ("bus.speed_hz", 'expected an integer, got "8MHz"')]


# -- lookup -----------------------------------------------------------------------------


def test_lookup_by_name_in_the_repository() -> None:
    assert load_rig("sim-tap").path.resolve() == (REPO_RIGS / "sim-tap.toml").resolve()


def test_lookup_by_path(tmp_path: Path) -> None:
    path = write(tmp_path, TAP_RIG, name="elsewhere")
    assert load_rig(str(path)).path == path
    assert load_rig(path).name == "bench"  # the name key wins over the file name


def test_hilkit_rigs_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, TAP_RIG.replace('name = "bench"', 'name = "sim-tap"'), name="sim-tap")
    write(tmp_path, TAP_RIG, name="bench")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert find_rig("sim-tap") == tmp_path / "sim-tap.toml"  # shadows the repository's
    assert load_rig("bench").path == tmp_path / "bench.toml"
    names = [r.name for r in list_rigs()]
    assert "bench" in names and "sim-w5100" in names and names.count("sim-tap") == 1


def test_the_current_directory_rigs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rigs").mkdir()
    write(tmp_path / "rigs", TAP_RIG, name="local-only")
    assert load_rig("local-only").path.resolve() == (tmp_path / "rigs/local-only.toml").resolve()


def test_no_such_rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(RigError) as info:
        load_rig("sim-w510")
    msg = str(info.value)
    assert msg.startswith("sim-w510: no rig named 'sim-w510'; did you mean \"sim-w5100\"?")
    assert str(tmp_path) in msg
    with pytest.raises(RigError, match="no such rig file"):
        load_rig(str(tmp_path / "nope.toml"))


def test_scan_reports_broken_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "mtu = 1\n", name="broken")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    rigs, errors = scan_rigs()
    assert "sim-tap" in [r.name for r in rigs]
    assert [e.file.endswith("broken.toml") for e in errors] == [True]


# -- extension points: a python bus factory, a driver from an entry point -------------------


PLUGIN_RIG = """\
name = "plugin"

[driver]
name = "fakechip"
gain = 3

[bus]
kind = "python"
factory = "tests.rig_plugins:make_loopback_bus"
label = "bench-bridge"
speed_hz = 2000000

[peer]
kind = "tap"
address = "192.168.7.1/24"

[dut]
address = "192.168.7.2/24"
"""


def test_python_bus_factory_and_entry_point_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "fakechip" in available_drivers()
    rig = parse_rig(write(tmp_path, PLUGIN_RIG))
    assert rig.bus is not None
    assert (rig.bus.kind, rig.bus.factory) == ("python", "tests.rig_plugins:make_loopback_bus")
    assert dict(rig.bus.params) == {"label": "bench-bridge", "speed_hz": 2_000_000}
    assert rig.simulated  # a TAP peer: the python bus is a model
    assert resolve_factory(rig) is rig_plugins.make_loopback_bus
    with ExitStack() as es:  # what build() does with them, without a namespace
        clock = ManualClock()
        bus, model, _, _ = _make_bus(es, rig, rig.bus, None, clock)
        assert isinstance(bus, rig_plugins.LoopbackBus)
        assert model is bus  # it has a reset_pin: a chip model, whose pins "sim" pins are
        assert (bus.label, bus.speed_hz, bus.clock) == ("bench-bridge", 2_000_000, clock)
        dev = _make_driver(es, rig, None, bus, {}, in_netns=False)  # type: ignore[arg-type]
        assert isinstance(dev, rig_plugins.FakeChipDevice)
        assert (dev.gain, dev.mtu, dev.name) == (3, 1500, "fakechip@bench-bridge")
    assert bus.closed and dev.closed


def test_entry_point_driver_options_are_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines = errors_of(tmp_path, replace(PLUGIN_RIG, "gain = 3", "gian = 3\nmtu = 9000"))
    assert 'rigs/bench.toml: driver.gian: driver fakechip has no option "gian"; ' \
           'did you mean "gain"?' in lines
    assert "rigs/bench.toml: driver.mtu: set by the rig itself, not a driver option" in lines
    lines = errors_of(tmp_path, replace(PLUGIN_RIG, "gain = 3", 'gain = "3"'))
    assert lines == ['rigs/bench.toml: driver.gain: expected an integer, got "3"']


def test_python_bus_keys_are_checked_against_the_factory(tmp_path: Path) -> None:
    # A misspelt key is a rig-file error with the closest suggested, not a TypeError at build.
    lines = errors_of(tmp_path, replace(PLUGIN_RIG, 'label = "bench-bridge"', 'lable = "x"'))
    assert lines == ['rigs/bench.toml: bus.lable: factory tests.rig_plugins:make_loopback_bus '
                     'has no parameter "lable"; did you mean "label"?']
    lines = errors_of(tmp_path, replace(PLUGIN_RIG, 'label = "bench-bridge"', "label = 5"))
    assert lines == ["rigs/bench.toml: bus.label: expected a string, got 5"]
    lines = errors_of(tmp_path, replace(PLUGIN_RIG, 'label = "bench-bridge"', 'wire = "x"'))
    assert lines == ["rigs/bench.toml: bus.wire: set by the rig itself, not a bus parameter "
                     "(the builder passes wire to a factory that takes it)"]
    lines = errors_of(tmp_path, replace(PLUGIN_RIG, "make_loopback_bus", "open_bridge"))
    assert lines == ['rigs/bench.toml: bus.label: factory tests.rig_plugins:open_bridge has no '
                     'parameter "label" (known: serial, speed_hz)',
                     "rigs/bench.toml: bus.serial: missing: factory tests.rig_plugins:open_bridge "
                     "needs it (a parameter without a default)"]
    # A factory that takes **kwargs judges its keys itself; one that does not import is
    # bus.factory's problem when the rig is checked (test_python_bus_factory_*).
    assert parse_rig(write(tmp_path, replace(PLUGIN_RIG, "make_loopback_bus", "not_a_bus")))


def test_python_bus_factory_that_cannot_be_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for factory, problem in [
        ("tests.no_such_module:make", "bus.factory: cannot import module 'tests.no_such_module'"),
        ("tests.rig_plugins:nope", "bus.factory: module 'tests.rig_plugins' has no 'nope'"),
    ]:
        rig = parse_rig(write(tmp_path, replace(
            PLUGIN_RIG, "tests.rig_plugins:make_loopback_bus", factory)), display="p.toml")
        with pytest.raises(RigError) as info:
            resolve_factory(rig)
        assert problem in str(info.value)


def test_python_bus_factory_must_return_a_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = parse_rig(write(tmp_path, replace(PLUGIN_RIG, "make_loopback_bus", "not_a_bus")))
    assert rig.bus is not None
    with ExitStack() as es, pytest.raises(RigError, match="object is not an SpiBus"):
        _make_bus(es, rig, rig.bus, None, ManualClock())


def test_module_imports_without_the_optional_parts() -> None:
    # The rig package must import on a machine without gpiod, spidev or pyftdi.
    import subprocess
    import sys

    code = ("import sys; sys.modules['gpiod'] = None; sys.modules['pyftdi'] = None; "
            "import hilkit.rig, hilkit.hil.rig_commands; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO_RIGS.parent, env={**os.environ, "PYTHONPATH": "."})
    assert res.stdout.strip() == "ok", res.stderr


# -- the commands ---------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    import argparse

    from hilkit.hil.rig_commands import add_rig_commands

    parser = argparse.ArgumentParser(prog="hilkit")
    add_rig_commands(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(list(argv))
    return int(args.fn(args))


def test_hilkit_rigs_lists_name_driver_bus_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    write(tmp_path, SPIDEV_RIG, name="bench")
    code = run_cli("rigs")
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "DRIVER", "BUS", "PEER"]
    bench = next(line for line in lines if line.startswith("bench "))
    assert "fakechip" in bench and "spidev /dev/spidev0.0 @ 8 MHz" in bench
    assert "host eth1 192.168.7.1/24" in bench
    assert any(line.startswith("sim-tap ") and "tap 192.168.7.1/24" in line for line in lines)
    assert (code, err) == (0, ""), err  # every rig found is valid


def test_hilkit_rigs_names_a_broken_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    write(tmp_path, replace(SPIDEV_RIG, "speed_hz = 8000000", 'speed_hz = "8MHz"'), name="bad")
    assert run_cli("rigs") == 2
    err = capsys.readouterr().err
    assert f"hilkit rigs: {tmp_path}/bad.toml: bus.speed_hz: expected an integer, got " \
           '"8MHz"' in err


def test_rig_check_of_a_broken_rig(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = write(tmp_path, replace(TAP_RIG, "192.168.7.2/24", "192.168.7.2/99"))
    assert run_cli("rig", "check", str(path)) == 2
    err = capsys.readouterr().err
    assert err == (f'hilkit rig check: {path}: dut.address: prefix length 99 in '
                   '"192.168.7.2/99" is out of range 0..32\n')
    assert run_cli("rig", "check", "no-such-rig") == 2
    assert "no rig named 'no-such-rig'" in capsys.readouterr().err


def test_python_bus_factory_whose_module_raises_on_import(tmp_path: Path) -> None:
    path = write(tmp_path, replace(PLUGIN_RIG, "tests.rig_plugins:make_loopback_bus",
                                   "tests.rig_plugin_boom:open_bus"))
    with pytest.raises(RigError) as info:
        resolve_factory(parse_rig(path))
    assert str(info.value) == (f"{path}: bus.factory: importing module 'tests.rig_plugin_boom' "
                               "failed: RuntimeError: this bridge package is broken")


def test_python_bus_factory_that_raises(tmp_path: Path) -> None:
    path = write(tmp_path, replace(PLUGIN_RIG, "make_loopback_bus", "raising_bus"))
    rig = parse_rig(path)
    assert rig.bus is not None
    with ExitStack() as es, pytest.raises(RigError) as info:
        _make_bus(es, rig, rig.bus, None, ManualClock())
    assert str(info.value) == (f"{path}: bus.factory: tests.rig_plugins:raising_bus raised "
                               "RuntimeError: no such bridge on USB")


# -- suite parameters: declared once, validated with the file, read typed --------------------


def test_suite_parameters_are_checked(tmp_path: Path) -> None:
    text = TAP_RIG + ('\n[suites.tcp]\nbytes = "16M"\nbyte = 1\n[suites.icmp]\ncount = "three"\n'
                      'sizes = "abc"\n[suites.conformance]\ntimeout_s = "x"\n'
                      '[suites.udp]\nsizes = [1, 70000]\nport = -1\n')
    assert sorted(errors_of(tmp_path, text)) == sorted([
        'rigs/bench.toml: suites.icmp.count: expected an integer, got "three"',
        'rigs/bench.toml: suites.icmp.sizes: expected an array of integers such as '
        '[0, 56, 1472], got "abc"',
        "rigs/bench.toml: suites.udp.sizes[1]: 70000 is out of range 0..65507",
        "rigs/bench.toml: suites.udp.port: -1 is out of range 0..65535",
        'rigs/bench.toml: suites.tcp.bytes: expected an integer, got "16M"',
        'rigs/bench.toml: suites.tcp.byte: unknown parameter "byte" of suite tcp; '
        'did you mean "bytes"?',
        'rigs/bench.toml: suites.conformance.timeout_s: expected a number, got "x"',
    ])


@pytest.mark.parametrize(("value", "problem"), [
    ("nan", "nan is not a finite number"),
    ("inf", "inf is not a finite number"),
    ("1e308", "1e+308 is out of range: numbers in a rig file fit 64 bits"),
    ("99999999999999999999", "99999999999999999999 is out of range: numbers in a rig file "
                             "fit 64 bits"),
    ("-1", "-1 is out of range 576..9216"),
])
def test_numbers_are_finite_and_in_range(tmp_path: Path, value: str, problem: str) -> None:
    lines = errors_of(tmp_path, replace(SPIDEV_RIG, "mtu = 1500", f"mtu = {value}"))
    assert lines == [f"rigs/bench.toml: mtu: {problem}"]


def test_suite_parameters_have_typed_defaults(tmp_path: Path) -> None:
    rig = parse_rig(write(tmp_path, TAP_RIG + "\n[suites.icmp]\ncount = 5\n"))
    icmp = rig.suite_params("icmp")
    assert dict(icmp) == {"count": 5}  # what the file says
    assert (icmp.integer("count"), icmp.number("timeout_s")) == (5, 5.0)
    assert icmp.integers("sizes") == (0, 56, 1472, 1473, 4000)
    throughput = rig.suite_params("throughput")  # not in the file: every default
    assert throughput.integer("bytes") == 4 << 20 and not throughput.sim_defaulted("bytes")
    with pytest.raises(KeyError):
        icmp.integer("bytes")
    with pytest.raises(TypeError):
        icmp.number("count")


def test_simulated_rigs_with_a_bus_get_the_sim_defaults() -> None:
    sim = load_rig("sim-w5100").suite_params("throughput")
    assert sim.integer("bytes") == 1 << 20 and sim.sim_defaulted("bytes")
    assert load_rig("sim-w5100").suite_params("conformance").number("timeout_s") == 10.0
    assert load_rig("sim-tap").suite_params("throughput").integer("bytes") == 4 << 20
    assert load_rig("rpi-w5100").suite_params("conformance").number("timeout_s") == 3.0


def test_docs_list_the_declared_suite_parameters() -> None:
    from hilkit.rig.suite_params import params_markdown

    docs = (REPO_RIGS.parent / "docs" / "rigs.md").read_text()
    begin, end = "<!-- suite-params:begin -->\n", "<!-- suite-params:end -->"
    assert begin in docs and end in docs
    table = docs[docs.index(begin) + len(begin):docs.index(end)]
    assert table == params_markdown(), "regenerate the table: params_markdown()"


@pytest.mark.parametrize(("text", "problem"), [
    ("x = " + "[" * 1000 + "]" * 1000 + "\n", "not valid TOML: tables or arrays nested too deeply"),
    ("x = " + "9" * 5000 + "\n", "not valid TOML (line 1): Exceeds the limit"),
])
def test_whatever_tomllib_raises_names_the_file(tmp_path: Path, text: str, problem: str) -> None:
    lines = errors_of(tmp_path, text)
    assert len(lines) == 1 and lines[0].startswith(f"rigs/bench.toml: {problem}"), lines


def test_files_that_are_not_text(tmp_path: Path) -> None:
    (tmp_path / "bin.toml").write_bytes(b'name = "\xff"\n')
    with pytest.raises(RigError) as info:
        parse_rig(tmp_path / "bin.toml", display="b.toml")
    assert str(info.value) == ("b.toml: not UTF-8 text: byte 0xff on line 1 cannot be decoded "
                               "(TOML files are UTF-8)")
    (tmp_path / "d.toml").mkdir()
    with pytest.raises(RigError, match="is a directory, not a rig file"):
        load_rig(tmp_path / "d.toml")
    with pytest.raises(RigError, match="is not a regular file"):
        parse_rig(os.devnull)


def test_prefix_length_of_thousands_of_digits(tmp_path: Path) -> None:
    lines = errors_of(tmp_path, replace(TAP_RIG, "192.168.7.2/24", "192.168.7.2/" + "9" * 5000))
    assert len(lines) == 1
    assert lines[0].startswith("rigs/bench.toml: dut.address: prefix length 999999999999... "
                               "(5000 characters) in ")
    assert lines[0].endswith("is out of range 0..32") and len(lines[0]) < 300

"""Building rigs: a live device in a private namespace, and nothing left behind.

Every namespace here is created by the test or the builder and deleted after.
The "host" of a host rig is itself a private namespace holding a veth pair
(``home=``): the machine's own interfaces are never touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hilkit.port.capture import CaptureDevice
from hilkit.port.errors import HardwareNotFound
from hilkit.rig import BuiltRig, Rig, RigError, build, check_hardware, load_rig, parse_rig
from hilkit.rig.builder import NETNS_PREFIX
from hilkit.rig.netns import NETNS_RUN_DIR, Netns
from hilkit.stack import PingError, PingStats, Stack
from tests import rig_plugins

HOME_IF, DUT_IF = "hkv0", "hkv1"  # the veth pair: HOME_IF plays the host NIC (eth1)


def ping_kernel(built: BuiltRig, count: int = 3, size: int = 56) -> list[PingStats]:
    stack = Stack()
    try:
        dev = stack.add_device(built.device)
        stack.link_add(dev, built.dut_ip, built.dut_netmask)
        got: list[PingStats] = []
        stack.ping(built.kernel_ip, count, 10, 3000, size, got.append)
        assert stack.run(until=lambda: len(got) == count, timeout=30)
    finally:
        stack.close()
    return got


def assert_replied(got: list[PingStats], count: int = 3) -> None:
    assert [(s.seq, s.err) for s in got] == [(i, PingError.REPLIED) for i in range(1, count + 1)]


def rig_namespaces() -> set[str]:
    """The rig namespaces this process made (other processes may be running rigs too)."""
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout
    mine = f"{NETNS_PREFIX}-{os.getpid()}-"
    return {n["name"] for n in json.loads(out or "[]") if n["name"].startswith(mine)}


def assert_gone(ns_name: str) -> None:
    assert ns_name not in rig_namespaces()
    assert not os.path.exists(os.path.join(NETNS_RUN_DIR, ns_name))


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    before = rig_namespaces()
    yield
    assert rig_namespaces() <= before


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    rig_plugins.register_plugins(monkeypatch)


# -- simulated rigs ---------------------------------------------------------------------


def test_sim_tap_pings_the_kernel() -> None:
    rig = load_rig("sim-tap")
    with build(rig) as built:
        name = built.ns.name
        assert built.bus is None and built.model is None and built.pins == {}
        assert (built.kernel_ip, built.kernel_prefix) == ("192.168.7.1", 24)
        assert (built.dut_ip, built.dut_netmask, built.gateway) == (
            "192.168.7.2", "255.255.255.0", None)
        assert built.device.mac == rig.driver.options["mac"]
        link = json.loads(built.ns.ip("-j", "addr", "show", "dev", "hk0"))[0]
        assert link["mtu"] == 1500 and "UP" in link["flags"]
        assert [a["local"] for a in link["addr_info"]] == ["192.168.7.1"]
        assert len(built.kernel_mac()) == 6
        assert_replied(ping_kernel(built, size=1472))  # closing the stack closes the TAP
    assert_gone(name)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_namespace_is_gone_when_the_body_raises(exc: type[BaseException]) -> None:
    names: list[str] = []
    with pytest.raises(exc), build(load_rig("sim-tap")) as built:
        names.append(built.ns.name)
        raise exc("a suite crashed")
    assert_gone(names[0])


def test_capture_records_the_device(tmp_path: Path) -> None:
    pcap = tmp_path / "rig.pcapng"
    with build(load_rig("sim-tap"), capture=str(pcap)) as built:
        assert isinstance(built.device, CaptureDevice)
        assert built.driver_device is built.device.inner
        assert_replied(ping_kernel(built, count=2), count=2)
        assert built.device.writer.frames_written >= 4
    assert pcap.stat().st_size > 0


def test_sim_w5100_pings_the_kernel() -> None:
    rig = load_rig("sim-w5100")
    with build(rig) as built:
        name = built.ns.name
        model: Any = built.model
        assert set(built.pins) == {"reset", "irq"}
        assert built.pins["reset"].inner is model.reset_pin  # type: ignore[attr-defined]
        assert built.pins["irq"].inner is model.int_pin  # type: ignore[attr-defined]
        assert built.wire is not None and built.bus is model
        assert built.device.mac == rig.driver.options["mac"]
        assert_replied(ping_kernel(built))
        assert built.bus is not None and built.bus.counters.bytes > 0
        assert built.nic is not None and built.nic.name == "w5100"
    assert_gone(name)


PLUGIN_RIG = """\
name = "plugin"
description = "an out-of-tree chip model and its driver, plugged in without editing hilkit"

[driver]
name = "fakechip"
gain = 2

[bus]
kind = "python"
factory = "tests.rig_plugins:make_loopback_bus"
label = "toy"

[peer]
kind = "tap"
interface = "hkp0"
address = "10.9.8.1/29"

[dut]
address = "10.9.8.6/29"
gateway = "10.9.8.1"
"""


def test_python_bus_and_entry_point_driver_build(tmp_path: Path, plugins: None) -> None:
    path = tmp_path / "plugin.toml"
    path.write_text(PLUGIN_RIG)
    with build(parse_rig(path)) as built:
        bus = built.bus
        assert isinstance(bus, rig_plugins.LoopbackBus)
        assert bus.wire is built.wire and bus.wire is not None
        assert isinstance(built.device, rig_plugins.FakeChipDevice) and built.device.gain == 2
        assert built.gateway == "10.9.8.1"
        assert_replied(ping_kernel(built))
        assert bus.counters.transactions >= 3
    assert bus.closed


SIM_NIC_RIG = """\
name = "toy-sim"
description = "an out-of-tree NIC's chip model on a sim bus: registered once, named nowhere"

[driver]
name = "toy"
gain = 3

[bus]
kind = "sim"
model = "toy"
seed = 5
faults = { mute = true }

[pins.reset]
kind = "sim"

[peer]
kind = "tap"
interface = "hkn0"
address = "10.9.6.1/29"

[dut]
address = "10.9.6.6/29"
"""


def test_a_sim_bus_builds_the_registered_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An entry-point NIC (tests.rig_plugins.TOY_NIC): its model is the bus, its driver the
    device, and the built rig carries the registration for the runner and the suites."""
    rig_plugins.register_nics(monkeypatch)
    path = tmp_path / "toy-sim.toml"
    path.write_text(SIM_NIC_RIG.replace("[pins.reset]\nkind = \"sim\"\n\n", ""))
    rig = parse_rig(path)
    assert rig.bus is not None and rig.bus.speed_hz == 2_000_000  # the NIC's spi_max_hz
    with build(rig) as built:
        bus: Any = built.bus
        assert isinstance(bus, rig_plugins.LoopbackBus) and built.model is bus
        assert bus.label == "toy-model-5" and bus.wire is built.wire is not None
        assert isinstance(bus.faults, rig_plugins.ToyFaults) and bus.faults.mute
        assert isinstance(built.device, rig_plugins.FakeChipDevice) and built.device.gain == 3
        assert built.nic is rig_plugins.TOY_NIC
        assert_replied(ping_kernel(built))
    assert bus.closed


def test_a_sim_bus_model_that_fails_is_a_problem_of_bus_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig_plugins.register_nics(monkeypatch)
    path = tmp_path / "toy-sim.toml"
    path.write_text(SIM_NIC_RIG)  # the toy model has no reset_pin: a "sim" pin cannot be
    with pytest.raises(RigError) as info, build(parse_rig(path)):
        pass
    assert "pins.reset.kind: the chip model LoopbackBus has no reset_pin" in str(info.value)

    def boom(**kw: Any) -> Any:
        raise RuntimeError("the model's RAM is on fire")

    monkeypatch.setattr(rig_plugins, "make_toy_model", boom)
    path.write_text(SIM_NIC_RIG.replace("[pins.reset]\nkind = \"sim\"\n\n", ""))
    with pytest.raises(RigError) as info, build(parse_rig(path)):
        pass
    assert str(info.value).endswith(
        "bus.model: the toy model cannot be made: RuntimeError: the model's RAM is on fire")


# -- real rigs on a machine without their hardware --------------------------------------------


@pytest.mark.parametrize(("name", "what"), [
    ("rpi-w5100", "/dev/spidev0.0"),
    ("ft232h-w5100", "ftdi://ftdi:232h/1"),
])
def test_check_hardware_fails_fast_naming_the_device(name: str, what: str) -> None:
    rig = load_rig(name)
    if name == "rpi-w5100" and os.path.exists(what):
        pytest.skip(f"{what} exists here")
    t0 = time.monotonic()
    with pytest.raises(HardwareNotFound) as info:
        check_hardware(rig)
    assert time.monotonic() - t0 < 5
    assert info.value.what == what
    assert str(info.value).startswith(f"{what}: ")
    assert info.value.hint
    if name == "rpi-w5100":
        assert "dtparam=spi=on" in str(info.value)


def test_build_checks_the_hardware_before_touching_anything() -> None:
    before = rig_namespaces()
    with pytest.raises(HardwareNotFound), build(load_rig("rpi-w5100")):
        pytest.fail("built without hardware")
    assert rig_namespaces() == before


# -- host rigs: the interface always goes home ------------------------------------------------


HOST_RIG = """\
name = "veth-host"
mtu = 1400

[driver]
name = "packet"
interface = "{dut_if}"
netns = "{home}"

[peer]
kind = "host"
interface = "{home_if}"
address = "192.168.9.1/24"

[dut]
address = "192.168.9.2/24"
"""


@pytest.fixture
def home(plugins: None) -> Iterator[Netns]:
    """A namespace standing in for the host: a veth pair, HOME_IF up, with its own MTU."""
    with Netns("hkh") as ns:
        ns.ip("link", "add", HOME_IF, "type", "veth", "peer", "name", DUT_IF)
        ns.ip("link", "set", HOME_IF, "mtu", "1500")
        ns.ip("link", "set", HOME_IF, "up")
        ns.ip("link", "set", DUT_IF, "up")
        yield ns


def host_rig(tmp_path: Path, home: Netns, **subst: str) -> Rig:
    path = tmp_path / "veth-host.toml"
    path.write_text(HOST_RIG.format(**{"dut_if": DUT_IF, "home": home.name, "home_if": HOME_IF,
                                       **subst}))
    return parse_rig(path)


def home_link(home: Netns) -> dict[str, Any] | None:
    res = subprocess.run(["ip", "-n", home.name, "-j", "addr", "show", "dev", HOME_IF],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return None
    link: dict[str, Any] = json.loads(res.stdout)[0]
    return link


def assert_home_as_before(home: Netns) -> None:
    link = home_link(home)
    assert link is not None, f"{HOME_IF} did not come back to {home.name}"
    assert link["mtu"] == 1500
    assert "UP" in link["flags"]
    assert link["addr_info"] == []  # the rig's address stayed in the rig's namespace


def test_host_rig_moves_the_interface_in_and_back(tmp_path: Path, home: Netns) -> None:
    rig = host_rig(tmp_path, home)
    with build(rig, home=home) as built:
        assert home_link(home) is None  # moved out of "the host"
        inside = json.loads(built.ns.ip("-j", "addr", "show", "dev", HOME_IF))[0]
        assert inside["mtu"] == 1400  # the rig's MTU, inside the rig's namespace
        assert [a["local"] for a in inside["addr_info"]] == ["192.168.9.1"]
        assert_replied(ping_kernel(built))
        name = built.ns.name
    assert_home_as_before(home)
    assert_gone(name)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_host_interface_comes_back_after_a_crash(
    tmp_path: Path, home: Netns, exc: type[BaseException],
) -> None:
    names: list[str] = []
    with pytest.raises(exc), build(host_rig(tmp_path, home), home=home) as built:
        names.append(built.ns.name)
        assert home_link(home) is None
        raise exc("the tcp suite crashed")
    assert_home_as_before(home)
    assert_gone(names[0])


SIGTERM_SCRIPT = """
import sys, time
import pytest
from tests import rig_plugins
from hilkit.rig import build, parse_rig

rig_plugins.register_plugins(pytest.MonkeyPatch())
with build(parse_rig(sys.argv[1]), home=sys.argv[2]) as built:
    print(built.ns.name, flush=True)
    time.sleep(60)
"""


def test_host_interface_comes_back_after_sigterm(tmp_path: Path, home: Netns) -> None:
    """A CI job cancelled with SIGTERM: the NIC comes home, the namespace goes."""
    rig = host_rig(tmp_path, home)
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_SCRIPT, str(rig.path), home.name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        assert proc.stdout is not None
        name = proc.stdout.readline().strip()
        assert name.startswith(NETNS_PREFIX), proc.stderr.read() if proc.stderr else ""
        assert home_link(home) is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_home_as_before(home)
    assert_gone(name)


def test_host_interface_comes_back_when_the_build_fails(tmp_path: Path, home: Netns) -> None:
    rig = host_rig(tmp_path, home, dut_if="nosuchif")  # the driver fails after the move
    with pytest.raises(OSError), build(rig, home=home):
        pytest.fail("built with a driver that cannot open its interface")
    assert_home_as_before(home)


def test_host_interface_missing(tmp_path: Path, home: Netns) -> None:
    rig = host_rig(tmp_path, home, home_if="hkv9")
    t0 = time.monotonic()
    with pytest.raises(HardwareNotFound) as info:
        check_hardware(rig, home=home)
    assert time.monotonic() - t0 < 5
    assert info.value.what == "hkv9"
    assert f"no such network interface on namespace {home.name}" in str(info.value)


def test_the_uplink_is_never_moved(tmp_path: Path, home: Netns) -> None:
    home.ip("addr", "add", "10.77.0.2/24", "dev", HOME_IF)
    home.ip("route", "add", "default", "via", "10.77.0.1")
    rig = host_rig(tmp_path, home)
    with pytest.raises(HardwareNotFound, match="default route"), build(rig, home=home):
        pytest.fail("moved the uplink")
    link = home_link(home)
    assert link is not None and [a["local"] for a in link["addr_info"]] == ["10.77.0.2"]


def test_a_nic_with_addresses_is_never_moved(tmp_path: Path, home: Netns) -> None:
    """Moving a NIC to another namespace drops its addresses; the rig refuses such a NIC."""
    home.ip("addr", "add", "10.78.0.2/24", "dev", HOME_IF)
    rig = host_rig(tmp_path, home)
    with pytest.raises(HardwareNotFound, match="has addresses"), build(rig, home=home):
        pytest.fail("moved a NIC that has addresses")
    link = home_link(home)
    assert link is not None and [a["local"] for a in link["addr_info"]] == ["10.78.0.2"]


# -- the command --------------------------------------------------------------------------


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    repo = Path(__file__).resolve().parents[2]
    code = ("import argparse, sys\n"
            "from hilkit.hil.rig_commands import add_rig_commands\n"
            "p = argparse.ArgumentParser(prog='hilkit')\n"
            "add_rig_commands(p.add_subparsers(dest='cmd', required=True))\n"
            "a = p.parse_args(sys.argv[1:])\n"
            "sys.exit(a.fn(a))\n")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, timeout=60)


def test_rig_check_builds_and_probes_a_sim_rig() -> None:
    res = run_cli("rig", "check", "sim-tap")
    assert res.returncode == 0, res.stderr
    assert "sim-tap: device hk0" in res.stdout
    assert "ping 192.168.7.1 from 192.168.7.2" in res.stdout


def test_rig_check_of_a_missing_board_exits_2_quickly() -> None:
    if os.path.exists("/dev/spidev0.0"):
        pytest.skip("/dev/spidev0.0 exists here")
    t0 = time.monotonic()
    res = run_cli("rig", "check", "rpi-w5100")
    assert time.monotonic() - t0 < 5
    assert res.returncode == 2
    assert "/dev/spidev0.0" in res.stderr and "dtparam=spi=on" in res.stderr


# -- a lab's bus factory that fails: one mechanism, the same words from both commands ---------


FACTORY_RIG = """\
name = "bad-bridge"

[driver]
name = "w5100"

[bus]
kind = "python"
factory = "{factory}"

[peer]
kind = "tap"
interface = "hkf0"
address = "10.9.7.1/24"

[dut]
address = "10.9.7.2/24"
"""


@pytest.mark.parametrize(("factory", "problem"), [
    ("tests.rig_plugins:raising_bus",
     "tests.rig_plugins:raising_bus raised RuntimeError: no such bridge on USB"),
    ("tests.rig_plugins:not_a_bus", "object is not an SpiBus"),
    ("tests.rig_plugin_boom:open_bus",
     "importing module 'tests.rig_plugin_boom' failed: RuntimeError: this bridge package is "
     "broken"),
])
@pytest.mark.parametrize("command", ["rig check", "hil"])
def test_a_failing_bus_factory_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], factory: str, problem: str,
    command: str,
) -> None:
    from hilkit.cli import main
    from hilkit.rig.schema import display_path

    path = tmp_path / "bad-bridge.toml"
    path.write_text(FACTORY_RIG.format(factory=factory))
    argv = (["rig", "check", str(path)] if command == "rig check"
            else ["hil", "--rig", str(path), "--out", str(tmp_path / "report")])
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert f"hilkit {command}: {display_path(path)}: bus.factory: {problem}" in err, err

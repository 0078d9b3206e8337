"""recovery: reset the chip in the middle of a TCP transfer -- through the model's fault
injection on simulated rigs, the reset pin on real ones -- and the transfer still completes
intact (the driver notices, resets and reopens; TCP retransmits what was lost).

``power`` cuts the board's power instead, for ``power_off_s`` seconds, where the rig file
allows it (``[suites.recovery] power_off_s``, 0 by default: never) and the run has a
power channel: ``hilkit hil --place`` on a place with a ``NetworkPowerPort`` gives it
one (docs/lab.md, "Power"). The CI side switches the outlet with labgrid's power
driver; the chip comes back at its reset values and the driver must notice. On a
simulated rig the chip model follows the switch's outlet itself
(``hilkit.lab.simswitch``), so the power still goes CI side -> labgrid -> switch -> chip.

A PPP line behind slirp has no chip to reset; its faults are the line's own
(``test_line_fault_mid_transfer``): ``noise`` (bytes dropped and bits flipped for a while:
frames fail their FCS, TCP retransmits, the transfer completes byte-identical), ``line``
(the line down for LINE_DOWN_MS: the transfer completes after) and ``peer`` (slirp
killed and started again: the link renegotiates; slirp's TCP state is gone with it, so
the old connection is not expected to survive, a new transfer after must complete).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

from hilkit.hil.plugin import (
    BuiltRigLike,
    FigureFn,
    HilSession,
    Kernel,
    counters_dict,
    driver_stats,
    model_stats,
    slirp_peer,
)
from hilkit.hil.suites._common import Pump, duplex_transfer, sha, size_param
from hilkit.lab.power import POWER_ENV, ChannelError, PowerChannel
from hilkit.port.model import ResetKind, missing_reset_hint, model_power, model_reset
from hilkit.port.nic import Nic
from hilkit.stack import Stack

PORT = 5003
RESET_PULSE_MS = 1.0  # without a NIC registration: long for a chip, still mid-transfer
REPLUG_AFTER_MS = 100.0  # a USB device's power cycle: how long it is off the bus
TIMEOUT_FLOOR_S = 60.0  # the reset, the driver's re-init and TCP's backed-off retransmits
TIMEOUT_MARGIN = 4.0  # times the transfer's expected duration
CHECK_EVERY_MS = 2.0
_ERROR_COUNTERS = ("rx_errors", "tx_errors", "rx_dropped", "tx_dropped")


def _resetter(rig: BuiltRigLike, how: str, nic: Nic | None) -> Callable[[Stack], None]:
    """What resets the chip ``how`` on this rig; skips saying what to implement when
    nothing can (the chip-model contract, ``hilkit.port.model.ChipModel``)."""
    model = getattr(rig, "model", None)
    usb_bus = getattr(rig, "usb_bus", None)
    # The NIC is itself the USB device (CDC-ECM); behind a USB bridge (an FT232H) the
    # chip's own model is reset, as on the bench.
    is_usb_device = getattr(rig, "usb_model", model) is model
    if usb_bus is not None and model is not None and is_usb_device and how in ("soft", "hard"):
        return _usb_reset(usb_bus, model, how)
    if how in ("soft", "hard"):
        kind: ResetKind = "soft" if how == "soft" else "hard"
        fn = model_reset(model, kind) if model is not None else None
        if fn is None:
            pytest.skip(missing_reset_hint(model, kind))
        return lambda stack: fn()
    pin = (getattr(rig, "pins", None) or {}).get("reset")
    if pin is None:
        pytest.skip("no reset pin to pulse: the rig has no [pins.reset]; wire the chip's "
                    "reset line to a gpiod or ftdi pin, or give its chip model a reset_pin "
                    '(kind = "sim"; docs/porting.md "Chip models")')

    pulse_ms = nic.reset_pulse_ms if nic is not None else RESET_PULSE_MS

    def pulse(stack: Stack) -> None:
        pin.set(True)  # logical: assert reset (the pin knows the line is active low)
        stack.call_later(pulse_ms, lambda: pin.set(False))

    return pulse


def _usb_reset(usb_bus: Any, model: Any, how: str) -> Callable[[Stack], None]:
    """A device model on the virtual USB bus: ``soft``, it resets its function without
    leaving the bus; ``hard``, it is unplugged and plugged in again on the same port
    (a new address) REPLUG_AFTER_MS later, as a power cycle would do."""
    if how == "soft":
        return lambda stack: usb_bus.device_reset(model)

    def replug(stack: Stack) -> None:
        port = usb_bus.port_of(model)
        usb_bus.unplug(model)
        stack.call_later(REPLUG_AFTER_MS, lambda: usb_bus.plug(model, port=port))

    return replug


class PowerCut:
    """The ``power`` check's cut: ``off`` through the power channel, ``on`` again
    ``off_s`` later on the stack's own timer. On a simulated rig, ``start`` plugs the
    chip model into the switch's outlet (it follows every switching until ``close``).
    Requests fail in a stack timer, where nothing may raise: ``error`` keeps why."""

    def __init__(self, channel: PowerChannel, off_s: float, info: dict[str, Any],
                 follow: tuple[str, Callable[[bool], None]] | None) -> None:
        self.channel = channel
        self.off_s = off_s
        self.info = info
        self._follow = follow
        self._follower: Any = None
        self.replies: list[str] = []  # what the channel answered, in order
        self.error: str | None = None
        self.off_at: float | None = None
        self.on_at: float | None = None
        self.request_s: list[float] = []

    def start(self) -> None:
        if self._follow is not None:
            from hilkit.lab.simswitch import OutletFollower

            url, set_power = self._follow
            try:
                self._follower = OutletFollower(url, set_power)
            except (OSError, ValueError) as e:
                pytest.fail(f"the simulated chip cannot follow the power switch's outlet "
                            f"{url}: {e}", pytrace=False)

    def _ask(self, what: str) -> bool:
        t = time.monotonic()
        try:
            self.replies.append(self.channel.request(what))
        except ChannelError as e:
            self.error = self.error or f"power {what}: {e}"
            return False
        self.request_s.append(time.monotonic() - t)
        return True

    def cut(self, stack: Stack) -> None:
        if not self._ask("off"):
            return
        self.off_at = time.monotonic()

        def back_on() -> None:
            if self._ask("on"):
                self.on_at = time.monotonic()

        stack.call_later(self.off_s * 1000.0, back_on)

    @property
    def follower_error(self) -> str | None:
        return getattr(self._follower, "error", None)

    def close(self) -> None:
        """Power on again if the check left it off, stop following."""
        if self.off_at is not None and self.on_at is None:
            with contextlib.suppress(ChannelError):
                self.channel.request("on")
        if self._follower is not None:
            if self.off_at is not None:  # the switching reaches the model: wait for it
                deadline = time.monotonic() + 2.0
                while self._follower.on is False and time.monotonic() < deadline:
                    time.sleep(0.01)
            self._follower.close()


def _power_cut(rig: BuiltRigLike, hil: HilSession) -> PowerCut:
    """The ``power`` check's cut, or a skip that says what to add: the rig file's
    permission, the power channel (a lab place with a power resource) and, on a
    simulated rig, a chip model with ``set_power`` and a switch it can follow."""
    off_s = hil.params("recovery").number("power_off_s")
    spec = getattr(rig, "rig", None)
    path = getattr(spec, "path", None) or "the rig file"
    channel = PowerChannel.from_env(os.environ)
    allow = (f"add power_off_s = 1.0 (seconds without power) to [suites.recovery] in "
             f"{path}")
    place = ("run it through a lab place that matches a NetworkPowerPort: hilkit hil "
             "--place PLACE (labgrid-client -p PLACE add-match EXPORTER/GROUP/"
             "NetworkPowerPort; docs/lab.md, \"Power\")")
    if off_s <= 0 and channel is None:
        pytest.skip(f"the rig file does not allow cutting the board's power and the run has "
                    f"no power channel: {allow} if the board may lose its power, and {place}")
    if off_s <= 0:
        pytest.skip(f"the rig file does not allow cutting the board's power: {allow} if the "
                    "board may lose its power")
    if channel is None:
        pytest.skip(f"no power channel (${POWER_ENV} is not set): {place}")
    if not channel.exists():
        pytest.skip(f"the power channel {channel.path} is not there: the rig host's sshd "
                    "refused to forward it; allow remote forwarding in its sshd_config: "
                    "AllowStreamLocalForwarding remote and AllowTcpForwarding remote (or "
                    "yes; OpenSSH forwards no socket while TCP forwarding is off; "
                    "docs/lab.md, \"Power\")")
    try:
        info = channel.info()
    except ChannelError as e:
        pytest.fail(f"the power channel does not answer: {e}", pytrace=False)
    follow: tuple[str, Callable[[bool], None]] | None = None
    if getattr(spec, "simulated", False):
        model = getattr(rig, "model", None)
        set_power = model_power(model) if model is not None else None
        if set_power is None:
            pytest.skip(f"the simulated chip has no power to cut: its model "
                        f"{type(model).__name__} has no set_power(on); implement it "
                        "(hilkit.port.model.ChipModel)")
        host, index = str(info.get("host") or ""), str(info.get("index") or "")
        if info.get("model") != "rest" or "{index}" not in host:
            pytest.skip(f"a simulated chip follows only a simulated switch (a NetworkPowerPort "
                        f"of model rest, hilkit.lab.simswitch; lab/sim.yaml); the place's is "
                        f"{info.get('resource')} (model {info.get('model')})")
        follow = (host.replace("{index}", index), set_power)
    return PowerCut(channel, off_s, info, follow)


def _measured_rate(hil: HilSession) -> tuple[float, str] | None:
    """Bytes per second one way while both ways run, as measured earlier in this run:
    the tcp suite's duplex rate, else the throughput suite's two one-way goodputs."""
    figs = hil.figures
    duplex = [float(v) for k, v in figs.items() if re.fullmatch(r"tcp_[a-z]+_MBps", k)
              and isinstance(v, (int, float)) and v > 0]
    if duplex:
        return min(duplex) * 1e6 / 2, "the tcp suite's duplex rate in this run"
    ways = [figs.get(f"goodput_{d}") for d in ("hilkit_to_kernel", "kernel_to_hilkit")]
    if all(isinstance(v, (int, float)) and v > 0 for v in ways):
        r1, r2 = (float(v) * 1e6 for v in ways)  # type: ignore[arg-type]
        return 1 / (1 / r1 + 1 / r2), "the throughput suite's goodputs in this run"
    return None


def sized_timeout(hil: HilSession, nic: Nic | None, n: int) -> tuple[float, str]:
    """How long the transfer may take, and why: the rig file's ``timeout_s`` if it says;
    else a small multiple of the expected time (``n`` each way at the rate this run
    measured, else the NIC's wire rate on real rigs), at least ``TIMEOUT_FLOOR_S`` and at
    most the declared default; the declared default when nothing gives a rate."""
    p = hil.params("recovery")
    declared = p.number("timeout_s")
    if "timeout_s" in p:
        return declared, "suites.recovery.timeout_s of the rig file"
    rate = _measured_rate(hil)
    if rate is None and nic is not None and nic.wire_bps and not getattr(
            hil.built.rig, "simulated", False):
        rate = nic.wire_bps / 8 / 2, f"{nic.title}'s wire rate, shared by both ways"
    if rate is None:
        return declared, ("the declared default: no rate measured in this run "
                          "(run the tcp or throughput suite first) nor a wire rate")
    expected = n / rate[0]
    t = min(declared, max(TIMEOUT_FLOOR_S, TIMEOUT_MARGIN * expected))
    return t, (f"{TIMEOUT_MARGIN:g} x the expected {expected:.1f} s at "
               f"{rate[0] / 1e6:.3g} MB/s each way ({rate[1]}), at least "
               f"{TIMEOUT_FLOOR_S:g} s")


def _check_power(power: PowerCut, rig: BuiltRigLike, powered0: tuple[int, int] | None,
                 figure: FigureFn) -> None:
    """The power went off and on again through the channel (and, simulated, reached the
    chip: it counted one power loss and one power-on reset)."""
    assert power.error is None, f"the power channel failed: {power.error}"
    assert power.replies[:2] == ["off", "on"], f"the channel answered {power.replies}"
    assert power.off_at is not None and power.on_at is not None
    figure("recovery_power_off_s", power.on_at - power.off_at, "s")
    figure("recovery_power_request_ms", 1000 * max(power.request_s), "ms")
    if powered0 is not None:
        assert power.follower_error is None, \
            f"the simulated chip stopped following the switch: {power.follower_error}"
        offs = rig.model.power_offs - powered0[0]
        ons = rig.model.power_ons - powered0[1]
        figure("recovery_power_model_offs", offs, "")
        assert offs >= 1 and ons >= 1, (
            f"the switch's outlet went off and on but the chip model saw {offs} power losses "
            f"and {ons} power-ons")
        assert rig.model.powered, "the chip model is still without power"


def _recovery_counters(rig: BuiltRigLike, stat_names: tuple[str, ...]) -> dict[str, int]:
    d = counters_dict(rig.device.counters) | driver_stats(rig.device, stat_names)
    keep = (*stat_names, *_ERROR_COUNTERS)
    return {k: int(v) for k, v in d.items() if k in keep and isinstance(v, int)}


@pytest.mark.parametrize("how", ["soft", "hard", "pin", "power"])
def test_reset_mid_transfer(rig: BuiltRigLike, stack: Stack, kernel: Kernel,
                            hil: HilSession, how: str, figure: FigureFn,
                            nic: Nic | None) -> None:
    if nic is not None and nic.transport == "serial":
        pytest.skip(f"{nic.title}: no chip to reset {how}; a PPP line's faults (noise, the "
                    "line down, a peer restart) are test_line_fault_mid_transfer's, behind "
                    "slirp")
    power = _power_cut(rig, hil) if how == "power" else None
    reset = power.cut if power is not None else _resetter(rig, how, nic)
    stat_names = hil.stat_names
    n = size_param(hil, "recovery", "bytes")
    at = hil.params("recovery").number("at")
    timeout, why = sized_timeout(hil, nic, n)
    figure(f"recovery_{how}_timeout_s", timeout, "s")
    state: dict[str, Any] = {"fired_at": None, "received_then": 0}
    pump_box: list[Pump] = []

    def watch() -> None:  # a stack timer: the reset happens inside the stack's own loop
        if state["fired_at"] is not None:
            return
        p = pump_box[0] if pump_box else None
        if p is not None and p.received >= n * at:  # the kernel's bytes, arrived: mid-flight
            state["fired_at"] = time.monotonic()
            state["received_then"] = p.received
            reset(stack)
            return
        stack.call_later(CHECK_EVERY_MS, watch)

    before = _recovery_counters(rig, stat_names)
    model0 = model_stats(rig.model) if rig.model is not None else {}
    t0 = time.monotonic()
    stack.call_later(CHECK_EVERY_MS, watch)

    def progress(p: Pump) -> None:
        if not pump_box:
            pump_box.append(p)

    powered0 = (rig.model.power_offs, rig.model.power_ons) if power is not None and \
        hasattr(rig.model, "power_offs") else None
    try:
        if power is not None:
            power.start()
        pump, kend, to_kernel, to_hilkit = duplex_transfer(
            stack, kernel, rig, n, hilkit_is_client=True, port=0, timeout=timeout,
            on_progress=progress, seed=21)
    except TimeoutError as e:  # a kernel socket gave up: say what it was waiting for
        p = pump_box[0] if pump_box else None
        when = ("before the reset was due" if state["fired_at"] is None else
                f"{time.monotonic() - state['fired_at']:.1f} s after the {how} reset")
        progress_now = ("hilkit had not connected" if p is None else
                        f"hilkit had sent {p.sent} and received {p.received} of {n} bytes")
        if power is not None and (power.error or power.follower_error):
            progress_now += f"; {power.error or power.follower_error}"
        raise AssertionError(
            f"the kernel's end of the {n}-byte duplex transfer waited {timeout:.0f} s "
            f"({why}) for hilkit and got nothing ({e}), {when}: {progress_now}; the "
            f"driver did not recover from the reset, or TCP did not retransmit") from None
    finally:
        if how == "pin":
            with contextlib.suppress(Exception):
                rig.pins["reset"].set(False)  # released, whatever happened
        if power is not None:
            power.close()  # on again, whatever happened
    elapsed = time.monotonic() - t0
    if power is not None:
        _check_power(power, rig, powered0, figure)
    assert state["fired_at"] is not None, "the transfer ended before the reset was due"
    figure(f"recovery_{how}_transfer_s", elapsed, "s")
    figure(f"recovery_{how}_reset_at_s", state["fired_at"] - t0, "s")
    for k, v in _recovery_counters(rig, stat_names).items():
        if v - before.get(k, 0) or k in ("resets", "reopens"):
            figure(f"recovery_{how}_{k}", v - before.get(k, 0), "")
    if how in ("soft", "hard") and f"{how}_resets" in model0:
        n_resets = model_stats(rig.model)[f"{how}_resets"] - model0[f"{how}_resets"]
        assert n_resets >= 1, f"the model counted no {how} reset"
    after = _recovery_counters(rig, stat_names)
    if any(k in after for k in ("resets", "reopens", "replugs")):
        # a driver that counts its recoveries must have noticed this one
        noticed = sum(after[k] - before.get(k, 0) for k in ("resets", "reopens", "replugs")
                      if k in after)
        assert noticed >= 1, "the driver did not notice the reset (no re-init, no re-open)"
    assert not pump.error, f"hilkit's socket failed with errno {pump.error} after the reset " \
                           f"({pump.sent} sent, {pump.received} received)"
    assert kend.received == n, f"the kernel received {kend.received} of {n} bytes"
    assert kend.digest == sha(to_kernel), "hilkit -> kernel: SHA-256 differs after the reset"
    assert pump.received == n, f"hilkit received {pump.received} of {n} bytes"
    assert pump.digest.hexdigest() == sha(to_hilkit), "kernel -> hilkit: SHA-256 differs"
    assert pump.received > state["received_then"], "no traffic after the reset"


# -- a PPP line behind slirp: the line's faults instead of a chip reset ------------------

NOISE_S = 4.0  # how long the line is noisy
NOISE_DROP_RATE = 1e-4  # per byte, each way: ~1 frame in 4 of 1500 bytes lost ...
NOISE_CORRUPT_RATE = 1e-4  # ... or damaged (one bit flipped)
LINE_DOWN_MS = 2000.0
RELINK_LIMIT_S = 30.0  # a restarted peer: until the link is up again


def _close_quietly(stack: Stack, pump: Pump | None) -> None:
    if pump is not None and pump.sock is not None:
        with contextlib.suppress(Exception):
            pump.sock.close()
            stack.run(until=lambda: True, timeout=0)


@pytest.mark.parametrize("how", ["noise", "line", "peer"])
def test_line_fault_mid_transfer(rig: BuiltRigLike, stack: Stack, kernel: Kernel,
                                 hil: HilSession, how: str, figure: FigureFn,
                                 nic: Nic | None) -> None:
    peer = slirp_peer(rig)
    if peer is None:
        pytest.skip("only behind slirp (the builder's SlirpPeer disturbs the line or "
                    "restarts slirp); other rigs reset the chip (test_reset_mid_transfer)")
    line = peer.line
    dev = rig.device
    n = size_param(hil, "recovery", "bytes")
    at = hil.params("recovery").number("at")
    timeout, why = sized_timeout(hil, nic, n)
    figure(f"recovery_{how}_timeout_s", timeout, "s")
    assert stack.run(until=lambda: dev.link_up, timeout=5.0), "link is not up to begin with"
    state: dict[str, Any] = {"fired_at": None, "received_then": 0}
    pump_box: list[Pump] = []

    def fault() -> None:
        if how == "noise":
            line.set_faults(drop_rate=NOISE_DROP_RATE, corrupt_rate=NOISE_CORRUPT_RATE)
            stack.call_later(NOISE_S * 1000.0, line.clear_faults)
        elif how == "line":
            line.down(LINE_DOWN_MS)
        else:
            state["restart_s"] = peer.restart()

    def watch() -> None:  # a stack timer: the fault starts inside the stack's own loop
        if state["fired_at"] is not None:
            return
        p = pump_box[0] if pump_box else None
        if p is not None and p.received >= n * at:
            state["fired_at"] = time.monotonic()
            state["received_then"] = p.received
            fault()
            return
        stack.call_later(CHECK_EVERY_MS, watch)

    def progress(p: Pump) -> None:
        if not pump_box:
            pump_box.append(p)

    before = _recovery_counters(rig, ("relinks",))
    faults0 = dict(line.fault_stats)
    restarts0 = peer.restarts
    t0 = time.monotonic()
    stack.call_later(CHECK_EVERY_MS, watch)
    old_error: str | None = None
    try:
        pump, kend, to_kernel, to_hilkit = duplex_transfer(
            stack, kernel, rig, n, hilkit_is_client=True, port=0,
            timeout=RELINK_LIMIT_S if how == "peer" else timeout, on_progress=progress,
            seed=31)
    except (TimeoutError, AssertionError, OSError) as e:
        if how != "peer":
            p = pump_box[0] if pump_box else None
            when = ("before the fault was due" if state["fired_at"] is None else
                    f"{time.monotonic() - state['fired_at']:.1f} s after the {how} fault")
            raise AssertionError(
                f"the {n}-byte duplex transfer did not finish within {timeout:.0f} s ({why}):"
                f" {e}, {when}; hilkit had "
                + ("not connected" if p is None else f"sent {p.sent} and received "
                   f"{p.received}") + f"; line faults: {line.fault_stats}") from None
        old_error = f"{type(e).__name__}: {e}"
        _close_quietly(stack, pump_box[0] if pump_box else None)
    finally:
        line.clear_faults()
    elapsed = time.monotonic() - t0
    assert state["fired_at"] is not None, "the transfer ended before the fault was due"
    figure(f"recovery_{how}_fault_at_s", state["fired_at"] - t0, "s")
    figure(f"recovery_{how}_transfer_s", elapsed, "s")
    for k, v in line.fault_stats.items():
        if v - faults0.get(k, 0):
            figure(f"recovery_{how}_line_{k}", v - faults0.get(k, 0), "B")
    if how == "peer":
        assert peer.restarts == restarts0 + 1, "slirp was not restarted"
        figure("recovery_peer_slirp_ready_s", state.get("restart_s", 0.0), "s")
        hil.note("recovery[peer]: the connection open when slirp restarted "
                 + (f"failed ({old_error})" if old_error else "completed")
                 + "; slirp's TCP state does not survive it, a new transfer must")
        t1 = time.monotonic()
        # slirp comes back silent: the link notices by its LCP echoes, then renegotiates
        assert stack.run(until=lambda: not dev.link_up, timeout=RELINK_LIMIT_S), (
            f"the link stayed up {RELINK_LIMIT_S:g} s after slirp's restart: it did not "
            "notice (LCP echoes, driver.echo_interval_ms)")
        figure("recovery_peer_link_down_s", time.monotonic() - t1, "s")
        assert stack.run(until=lambda: dev.link_up, timeout=RELINK_LIMIT_S), (
            f"the link did not come back within {RELINK_LIMIT_S:g} s of slirp's restart "
            f"(phase {getattr(dev, 'phase', '?')})")
        figure("recovery_peer_link_back_s", time.monotonic() - t1, "s")
        t2 = time.monotonic()
        pump, kend, to_kernel, to_hilkit = duplex_transfer(
            stack, kernel, rig, n, hilkit_is_client=True, port=0, timeout=timeout, seed=32)
        figure("recovery_peer_new_transfer_s", time.monotonic() - t2, "s")
        state["received_then"] = 0
    for k, v in _recovery_counters(rig, ("relinks",)).items():
        if v - before.get(k, 0):
            figure(f"recovery_{how}_{k}", v - before.get(k, 0), "")
    if how == "noise":
        damaged = sum(line.fault_stats[k] - faults0[k] for k in line.fault_stats
                      if k.endswith(("_dropped", "_corrupted")))
        assert damaged >= 1, "the noise damaged no byte (rates too low for the transfer?)"
        got_errors = (_recovery_counters(rig, ("relinks",)).get("rx_errors", 0)
                      - before.get("rx_errors", 0))
        if line.fault_stats["a_to_b_corrupted"] > faults0["a_to_b_corrupted"]:
            assert got_errors >= 1, ("bits were flipped towards hilkit but its device "
                                     "counted no damaged frame (rx_errors)")
    assert not pump.error, f"hilkit's socket failed with errno {pump.error} after the " \
                           f"{how} fault ({pump.sent} sent, {pump.received} received)"
    assert kend.received == n, f"the kernel received {kend.received} of {n} bytes"
    assert kend.digest == sha(to_kernel), f"hilkit -> kernel: SHA-256 differs ({how})"
    assert pump.received == n, f"hilkit received {pump.received} of {n} bytes"
    assert pump.digest.hexdigest() == sha(to_hilkit), "kernel -> hilkit: SHA-256 differs"
    assert pump.received > state["received_then"], "no traffic after the fault"

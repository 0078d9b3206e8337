"""recovery: reset the chip in the middle of a TCP transfer -- through the model's fault
injection on simulated rigs, the reset pin on real ones -- and the transfer still completes
intact (the driver notices, resets and reopens; TCP retransmits what was lost)."""

from __future__ import annotations

import contextlib
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
)
from hilkit.hil.suites._common import Pump, duplex_transfer, sha, size_param, timeout_param
from hilkit.port.nic import Nic
from hilkit.stack import Stack

PORT = 5003
RESET_PULSE_MS = 1.0  # without a NIC registration: long for a chip, still mid-transfer
CHECK_EVERY_MS = 2.0
_ERROR_COUNTERS = ("rx_errors", "tx_errors", "rx_dropped", "tx_dropped")


def _resetter(rig: BuiltRigLike, how: str, nic: Nic | None) -> Callable[[Stack], None]:
    """What resets the chip ``how`` on this rig; skips with the reason when nothing can."""
    model = getattr(rig, "model", None)
    if how in ("soft", "hard"):
        fn = getattr(model, f"{how}_reset", None) if model is not None else None
        if not callable(fn):
            pytest.skip(f"no {how} reset to inject: the rig has no chip model "
                        f"({'no model' if model is None else type(model).__name__})")
        return lambda stack: fn()
    pin = (getattr(rig, "pins", None) or {}).get("reset")
    if pin is None:
        pytest.skip("the rig has no reset pin")

    pulse_ms = nic.reset_pulse_ms if nic is not None else RESET_PULSE_MS

    def pulse(stack: Stack) -> None:
        pin.set(True)  # logical: assert reset (the pin knows the line is active low)
        stack.call_later(pulse_ms, lambda: pin.set(False))

    return pulse


def _recovery_counters(rig: BuiltRigLike, stat_names: tuple[str, ...]) -> dict[str, int]:
    d = counters_dict(rig.device.counters) | driver_stats(rig.device, stat_names)
    keep = (*stat_names, *_ERROR_COUNTERS)
    return {k: int(v) for k, v in d.items() if k in keep and isinstance(v, int)}


@pytest.mark.parametrize("how", ["soft", "hard", "pin"])
def test_reset_mid_transfer(rig: BuiltRigLike, stack: Stack, kernel: Kernel,
                            hil: HilSession, how: str, figure: FigureFn,
                            nic: Nic | None) -> None:
    reset = _resetter(rig, how, nic)
    stat_names = hil.stat_names
    n = size_param(hil, "recovery", "bytes")
    at = hil.params("recovery").number("at")
    timeout = timeout_param(hil, "recovery")
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

    try:
        pump, kend, to_kernel, to_hilkit = duplex_transfer(
            stack, kernel, rig, n, hilkit_is_client=True, port=0, timeout=timeout,
            on_progress=progress, seed=21)
    finally:
        if how == "pin":
            with contextlib.suppress(Exception):
                rig.pins["reset"].set(False)  # released, whatever happened
    elapsed = time.monotonic() - t0
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
    if "resets" in after:  # a driver that counts its recoveries must have noticed this one
        noticed = sum(after[k] - before.get(k, 0) for k in ("resets", "reopens") if k in after)
        assert noticed >= 1, "the driver did not notice the reset (no re-init, no re-open)"
    assert not pump.error, f"hilkit's socket failed with errno {pump.error} after the reset " \
                           f"({pump.sent} sent, {pump.received} received)"
    assert kend.received == n, f"the kernel received {kend.received} of {n} bytes"
    assert kend.digest == sha(to_kernel), "hilkit -> kernel: SHA-256 differs after the reset"
    assert pump.received == n, f"hilkit received {pump.received} of {n} bytes"
    assert pump.digest.hexdigest() == sha(to_hilkit), "kernel -> hilkit: SHA-256 differs"
    assert pump.received > state["received_then"], "no traffic after the reset"

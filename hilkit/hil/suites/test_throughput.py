"""throughput: goodput each way and frames/s; on SPI rigs the bus figures of
``hilkit.hil.report`` (SPI bytes per payload byte, CS transactions and bus calls per frame, and what
the same traffic would take on silicon at the rig's SPI clock). Figures, not verdicts:
the checks fail only when the transfer itself does (or a bus counts less than physics
allows: the NIC's ``spi_bytes_per_data_byte``, from its registration)."""

from __future__ import annotations

import time

import pytest

from hilkit.hil import report
from hilkit.hil.plugin import (
    BuiltRigLike,
    FigureFn,
    HilSession,
    Kernel,
    counters_dict,
    is_spi_rig,
)
from hilkit.hil.suites._common import duplex_transfer, sha, size_param, timeout_param
from hilkit.port.nic import Nic
from hilkit.stack import Stack

PORT = 5002
DIRECTIONS = ("hilkit_to_kernel", "kernel_to_hilkit")
_ACC = "throughput"


def _bus_params(rig: BuiltRigLike) -> tuple[str | None, float | None]:
    bus = getattr(rig.rig, "bus", None)
    kind = getattr(bus, "kind", None)
    speed = getattr(bus, "speed_hz", None) or (getattr(bus, "params", None) or {}).get("speed_hz")
    return kind, (float(speed) if speed else None)


def _nic_figures(nic: Nic | None) -> dict[str, float | None]:
    """What ``report.bus_figures`` takes from the NIC's registration."""
    return {"spi_max_hz": nic.spi_max_hz if nic is not None else None,
            "spi_bytes_per_data_byte": nic.spi_bytes_per_data_byte if nic is not None
            else None}


def _snapshot(rig: BuiltRigLike) -> dict[str, int]:
    d = counters_dict(rig.device.counters)
    out = {"frames": int(d.get("rx_frames", 0)) + int(d.get("tx_frames", 0)),
           "frame_bytes": int(d.get("rx_bytes", 0)) + int(d.get("tx_bytes", 0))}
    if is_spi_rig(rig):
        b = counters_dict(rig.bus.counters)
        out |= {"spi_bytes": int(b.get("bytes", 0)),
                "transactions": int(b.get("transactions", 0)),
                "calls": int(b.get("calls", 0))}
    return out


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_goodput(rig: BuiltRigLike, stack: Stack, kernel: Kernel, hil: HilSession,
                 direction: str, figure: FigureFn, nic: Nic | None) -> None:
    n = size_param(hil, "throughput", "bytes")
    timeout = timeout_param(hil, "throughput")
    out = direction == "hilkit_to_kernel"
    before = _snapshot(rig)
    t0 = time.monotonic()
    pump, kend, to_kernel, to_hilkit = duplex_transfer(
        stack, kernel, rig, n if out else 0, hilkit_is_client=True, port=0, timeout=timeout,
        seed=11, nbytes_to_hilkit=0 if out else n)
    end = kend.ended_at if out else (pump.eof_at or time.monotonic())
    elapsed = max(end - t0, 1e-9)
    after = _snapshot(rig)
    assert not pump.error, f"hilkit's socket failed with errno {pump.error}"
    if out:
        assert kend.received == n and kend.digest == sha(to_kernel), \
            f"the kernel received {kend.received} of {n} bytes (or they differ)"
    else:
        assert pump.received == n and pump.digest.hexdigest() == sha(to_hilkit), \
            f"hilkit received {pump.received} of {n} bytes (or they differ)"
    d = {k: after[k] - before[k] for k in after}
    figure(f"goodput_{direction}", n / elapsed / 1e6, "MB/s")
    figure(f"frames_per_s_{direction}", d["frames"] / elapsed, "frames/s")
    figure(f"transfer_bytes_{direction}", n, "B")
    acc = hil.shared.setdefault(_ACC, {})
    for k, v in d.items():
        acc[k] = acc.get(k, 0) + v
    acc["payload"] = acc.get("payload", 0) + n
    acc["seconds"] = acc.get("seconds", 0.0) + elapsed
    if is_spi_rig(rig):
        kind, speed = _bus_params(rig)
        figs = report.bus_figures(spi_bytes=d["spi_bytes"], transactions=d["transactions"],
                                  calls=d["calls"], frames=d["frames"],
                                  frame_bytes=d["frame_bytes"], speed_hz=speed, bus_kind=kind,
                                  payload_bytes=n, **_nic_figures(nic))
        for name, (value, unit) in figs.items():
            figure(f"{name}_{direction}", value, unit)


def test_bus_figures(rig: BuiltRigLike, hil: HilSession, figure: FigureFn,
                     nic: Nic | None) -> None:
    """The section 6 figures over both transfers together."""
    if not is_spi_rig(rig):
        pytest.skip("no SPI bus on this rig: nothing to count")
    acc = hil.shared.get(_ACC)
    if not acc or not acc.get("frames"):
        pytest.skip("no transfer was measured (run test_goodput first)")
    kind, speed = _bus_params(rig)
    figs = report.bus_figures(spi_bytes=acc["spi_bytes"], transactions=acc["transactions"],
                              calls=acc["calls"], frames=acc["frames"],
                              frame_bytes=acc["frame_bytes"], speed_hz=speed, bus_kind=kind,
                              payload_bytes=acc["payload"], **_nic_figures(nic))
    for name, (value, unit) in figs.items():
        figure(name, value, unit)
    figure("model_goodput", acc["payload"] / acc["seconds"] / 1e6, "MB/s")
    if speed is None:
        hil.note("the rig's bus has no speed_hz: no silicon estimate")
    elif "silicon_pct_of_spi_ceiling" not in figs:
        hil.note("silicon_pct_of_spi_ceiling left out: the driver registers no NIC with "
                 "spi_max_hz and spi_bytes_per_data_byte (hilkit.port.nic.Nic)")
    ratio = figs["spi_bytes_per_payload_byte"][0]
    floor = nic.spi_bytes_per_data_byte if nic is not None else None
    if floor is None:
        hil.note("no floor check of spi_bytes_per_payload_byte: the driver registers no "
                 "NIC with spi_bytes_per_data_byte")
        return
    # Every data byte costs at least this many SPI bytes: fewer means the bus miscounts.
    assert ratio >= floor * 0.999, \
        f"{ratio:.3f} SPI bytes per payload byte is below the physical floor of {floor:g}"

"""What a HIL run leaves behind: results.json, the summary table, the bus figures.

``results.json``::

    {
      "format": "hilkit-hil-results/1",
      "rig": "sim-mychip", "driver": "mychip", "bus": "sim", "simulated": true,
      "started": "2025-01-01T12:00:00Z", "ended": "...", "duration_s": 95.2,
      "exit_code": 0, "verdict": "passed",
      "suites": {"icmp": {"passed": 10, "failed": 0, "skipped": 0, "time_s": 3.2}, ...},
      "checks": [
        {"id": "icmp::test_hilkit_pings_kernel[1473]", "nodeid": "...", "suite": "icmp",
         "outcome": "passed", "duration_s": 0.0031, "message": "",
         "figures": {"rtt_ms": {"value": 1.2, "unit": "ms"}}, "pcapng": "icmp-....pcapng"},
        ...
      ],
      "figures": {
        "spi_bytes_per_payload_byte": 4.02, "cs_transactions_per_frame": 1019.3,
        "bus_calls_per_frame": 5.1, "goodput_hilkit_to_kernel": 0.21, ...,
        "units": {"goodput_hilkit_to_kernel": "MB/s", ...},
        "counters": {"device": {...}, "stack": {"drops": {...}, "stats": {...}},
                     "bus": {"bytes": ..., "transactions": ..., "calls": ...},
                     "model": {...}}
      },
      "notes": ["..."]
    }

Outcomes are ``passed``, ``failed`` (an assertion or exception in the check),
``error`` (its setup or teardown broke) and ``skipped`` (with the reason as
``message``). Every figure a check records appears under its check and, by
name, in ``figures`` (a later check's value wins on a name clash, as with
``--repeat``).

The bus figures, from the SPI bus's counters over a transfer:

- ``spi_bytes_per_payload_byte``: bytes clocked on the bus per byte of Ethernet
  frame moved through the chip (device rx_bytes + tx_bytes). Its physical floor
  is the NIC's ``spi_bytes_per_data_byte`` (``hilkit.port.nic.Nic``): a chip that
  moves one data byte per 4-byte SPI frame cannot do better than 4.0.
- ``cs_transactions_per_frame`` and ``bus_calls_per_frame``: chip-select
  assertions and OS/bridge round trips (ioctl, USB write+read) per Ethernet
  frame, both directions counted.
- ``silicon_s``: what the same bus traffic would take on real silicon at the
  rig's SPI clock: ``bytes * 8 / speed_hz + calls * overhead``, where the
  per-call overhead is the bus's own ``call_overhead_us`` (``hilkit.port.spi``:
  spidev and FT232H buses state theirs, a chip model 0 or its bridge's), and
  ``BUS_CALL_OVERHEAD_S`` for its kind only when the bus states none (measured
  orders of magnitude, not guarantees: ~30 us per spidev ioctl on a
  Raspberry Pi 4, ~125 us per FT232H USB 2.0 write+read round trip).
- ``silicon_pct_of_spi_ceiling``: the frame-byte rate on silicon as a
  percentage of the NIC's SPI ceiling, ``spi_max_hz / 8 / spi_bytes_per_data_byte``
  frame bytes per second (14 MHz and 4 SPI bytes per data byte, no gaps: 437.5
  kB/s). Both figures come from the NIC's registration; a NIC that registers
  neither gets no such figure (the suite notes it).
- ``bus_calls_per_frame`` counts the calls that move frames: a driver that
  reports ``idle_polls`` (polls whose one status call found nothing) has those
  calls taken out and reported apart (``idle_polls_per_frame``), since how often
  a loop polls an idle chip says nothing about what a frame costs.

The driver figures (``driver_figures``): every driver stat (``Nic.stat_names``)
that moved over the stretch, as a count and per frame (``bank_switches_per_frame``).

The wire figures (``wire_figures``), for a NIC that registers ``wire_bps``: the
goodput ceiling of the wire for the frames the transfer used
(``wire_ceiling_Bps``: each frame holds the wire for preamble 8 + header 14 +
its IP and TCP/UDP headers + payload + FCS 4 + inter-packet gap 12 bytes, IEEE
802.3 clause 4; at least 60 bytes before the FCS), ``wire_min_s`` (the transfer at
that ceiling) and ``pct_of_wire_ceiling``, the measured goodput's share of it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hilkit.port.spi import bus_call_overhead_us

FORMAT = "hilkit-hil-results/1"

# Seconds of host overhead per bus call (one ioctl, one USB write+read), per bus kind: only
# for a bus that states no ``call_overhead_us`` of its own (``hilkit.port.spi.SpiBus``).
BUS_CALL_OVERHEAD_S: dict[str, float] = {
    "spidev": 30e-6,  # SPI_IOC_MESSAGE ioctl on a Raspberry Pi 4 (syscall + DMA setup)
    "ftdi": 125e-6,  # FT232H MPSSE: one USB 2.0 high-speed write + read (microframes)
    "ft232h": 125e-6,
    "pyftdi": 125e-6,
    "mpsse": 125e-6,
}
DEFAULT_CALL_OVERHEAD_S = 30e-6  # a bus of another kind that states nothing: a spidev call

OUTCOMES = ("passed", "failed", "error", "skipped")


@dataclass
class Check:
    """One check (pytest test item) and how it went."""

    id: str  # "icmp::test_hilkit_pings_kernel[1473]"
    nodeid: str
    suite: str
    outcome: str = "passed"
    duration_s: float = 0.0
    message: str = ""
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    pcapng: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "nodeid": self.nodeid,
            "suite": self.suite,
            "outcome": self.outcome,
            "duration_s": round(self.duration_s, 6),
            "message": self.message,
            "figures": self.figures,
            "pcapng": self.pcapng,
        }


def call_overhead_s(bus_kind: str | None, bus: object = None) -> float:
    """The bus's own ``call_overhead_us`` when it states one, else its kind's guess."""
    own = bus_call_overhead_us(bus) if bus is not None else None
    if own is not None:
        return own / 1e6
    return BUS_CALL_OVERHEAD_S.get((bus_kind or "").lower(), DEFAULT_CALL_OVERHEAD_S)


def bus_figures(
    *, spi_bytes: int, transactions: int, calls: int, frames: int, frame_bytes: int,
    speed_hz: float | None, bus_kind: str | None, payload_bytes: int | None = None,
    spi_max_hz: float | None = None, spi_bytes_per_data_byte: float | None = None,
    bus: object = None, idle_calls: int = 0,
) -> dict[str, tuple[float, str]]:
    """The section 6 figures for a stretch of traffic: name -> (value, unit).

    ``frames``/``frame_bytes`` are the device's rx+tx deltas over the same
    stretch; ``payload_bytes`` (optional) the application bytes it carried.
    ``spi_max_hz`` and ``spi_bytes_per_data_byte`` are the NIC's (``Nic``): without
    both, ``silicon_pct_of_spi_ceiling`` is left out. ``bus`` is the bus object: its
    ``call_overhead_us``, when it states one, is the per-call cost (``call_overhead_s``).
    ``idle_calls``: calls of polls that found nothing (left out of
    ``bus_calls_per_frame``, kept in ``silicon_s``: they take bus time all the same).
    """
    out: dict[str, tuple[float, str]] = {}
    if frame_bytes > 0:
        out["spi_bytes_per_payload_byte"] = (spi_bytes / frame_bytes, "B/B")
    if frames > 0:
        out["cs_transactions_per_frame"] = (transactions / frames, "1/frame")
        out["bus_calls_per_frame"] = (max(calls - idle_calls, 0) / frames, "1/frame")
    if payload_bytes:
        out["spi_bytes_per_app_byte"] = (spi_bytes / payload_bytes, "B/B")
    if speed_hz and speed_hz > 0:
        overhead = call_overhead_s(bus_kind, bus)
        silicon_s = spi_bytes * 8 / speed_hz + calls * overhead
        out["spi_clock_hz"] = (float(speed_hz), "Hz")
        out["bus_call_overhead_us"] = (overhead * 1e6, "us")
        out["silicon_s"] = (silicon_s, "s")
        if silicon_s > 0 and frame_bytes > 0:
            rate = frame_bytes / silicon_s
            out["silicon_frame_MBps"] = (rate / 1e6, "MB/s")
            if spi_max_hz and spi_bytes_per_data_byte:
                ceiling = spi_max_hz / 8 / spi_bytes_per_data_byte
                out["silicon_pct_of_spi_ceiling"] = (100.0 * rate / ceiling, "%")
            if payload_bytes:
                out["silicon_goodput_MBps"] = (payload_bytes / silicon_s / 1e6, "MB/s")
    return out


# Ethernet beyond the frame a driver moves (header, payload, no FCS), IEEE 802.3 clause 4.
ETH_PREAMBLE = 8  # preamble and start-of-frame delimiter
ETH_HEADER = 14
ETH_FCS = 4
ETH_IFG = 12  # the inter-packet gap: 96 bit times
ETH_MIN_FRAME = 60  # without FCS; shorter frames are padded
IPV4_HEADER = 20
TCP_HEADER = 20  # without options (timestamps add 12)
UDP_HEADER = 8


def wire_bytes(frame_len: float) -> float:
    """Byte times a frame of ``frame_len`` bytes (header, no FCS) holds the wire."""
    return ETH_PREAMBLE + max(frame_len, ETH_MIN_FRAME) + ETH_FCS + ETH_IFG


def wire_ceiling_Bps(wire_bps: float, payload: float,
                     headers: float = IPV4_HEADER + TCP_HEADER) -> float:
    """Application bytes per second a ``wire_bps`` wire carries in frames of ``payload``
    bytes behind ``headers`` bytes of IP and TCP/UDP headers (options included)."""
    return wire_bps / 8 * payload / wire_bytes(ETH_HEADER + headers + payload)


def wire_figures(*, wire_bps: float, frames: int, frame_bytes: int, payload_bytes: int,
                 seconds: float) -> dict[str, tuple[float, str]]:
    """The wire ceiling of a transfer and the share of it reached: name -> (value, unit).

    ``frames``/``frame_bytes`` are the frames that carried the data (the device's
    tx counters when sending, rx when receiving), ``payload_bytes`` the application
    bytes in them, ``seconds`` how long the transfer took. The headers per frame
    are what the frames held beyond the payload, so TCP options count; padding is
    reckoned on the mean frame.
    """
    out: dict[str, tuple[float, str]] = {}
    if frames <= 0 or payload_bytes <= 0 or wire_bps <= 0:
        return out
    payload = payload_bytes / frames
    headers = max(frame_bytes / frames - ETH_HEADER - payload, 0.0)
    ceiling = wire_ceiling_Bps(wire_bps, payload, headers)
    min_s = payload_bytes / ceiling
    out["wire_bps"] = (float(wire_bps), "b/s")
    out["wire_ceiling_MBps"] = (ceiling / 1e6, "MB/s")
    out["wire_min_s"] = (min_s, "s")
    if seconds > 0:
        out["pct_of_wire_ceiling"] = (100.0 * min_s / seconds, "%")
    return out


def usb_figures(*, stats: Mapping[str, float], rx_frames: int, tx_frames: int,
                payload_bytes: int, seconds: float) -> dict[str, tuple[float, str]]:
    """The USB figures of a stretch on a virtual USB bus: name -> (value, unit).

    ``stats`` holds deltas of the bus's counters for the device (``docs/hardware/usb.md``,
    "Stats"). Only the bulk pipes count as data: ``usb_transfers_per_frame_out`` is the
    bulk OUT transfers that carried a frame (a separately written ZLP is counted apart,
    ``usb_zlps_per_frame_out``) per frame sent; ``usb_transfers_per_frame_in`` the bulk IN
    transfers per frame received (a ZLP ends a transfer there, so it is no transfer of its
    own; ``usb_zlps_per_frame_in`` counts them). ``usb_bus_bytes_per_payload_byte``: bulk
    bus bytes (payload and per-transaction overhead) per application byte.
    ``pct_of_usb_ceiling``: the bus time the device's traffic took (every transfer, with
    the frame ends it could not use) as a share of the time the stretch took: 100 % is a
    bus never idle, the ceiling of the bus-time model at the device's speed.
    """
    out: dict[str, tuple[float, str]] = {}

    def g(k: str) -> float:
        return float(stats.get(k, 0))

    if tx_frames > 0:
        out["usb_transfers_per_frame_out"] = (
            (g("usb_bulk_transfers_out") - g("usb_bulk_zlps_out")) / tx_frames, "1/frame")
        out["usb_zlps_per_frame_out"] = (g("usb_bulk_zlps_out") / tx_frames, "1/frame")
    if rx_frames > 0:
        out["usb_transfers_per_frame_in"] = (g("usb_bulk_transfers_in") / rx_frames, "1/frame")
        out["usb_zlps_per_frame_in"] = (g("usb_bulk_zlps_in") / rx_frames, "1/frame")
    if payload_bytes > 0:
        bus_bytes = g("usb_bulk_bus_bytes_in") + g("usb_bulk_bus_bytes_out")
        out["usb_bus_bytes_per_payload_byte"] = (bus_bytes / payload_bytes, "B/B")
    busy = g("usb_bus_time_s")
    if busy > 0:
        out["usb_bus_time_s"] = (busy, "s")
        if payload_bytes > 0:
            out["usb_ceiling_goodput_MBps"] = (payload_bytes / busy / 1e6, "MB/s")
        if seconds > 0:
            out["pct_of_usb_ceiling"] = (100.0 * busy / seconds, "%")
    return out


def bridge_figures(*, bridge: Mapping[str, float], usb: Mapping[str, float], spi_bytes: float,
                   frames: int, frame_bytes: int, idle_calls: int = 0,
                   speed_hz: float | None = None, spi_bytes_per_data_byte: float | None = None,
                   ) -> dict[str, tuple[float, str]]:
    """The figures of an SPI bus behind a USB bridge (an FT232H) over a stretch.

    ``bridge`` holds deltas of the bus's ``stats`` (``hilkit.bus.ftdi.STAT_KEYS``) and,
    when the bridge is a model on the virtual USB bus, ``spi_clock_s``: what its MPSSE spent
    clocking bits at the clock it ran. ``usb`` holds the virtual bus's counter deltas.

    - ``usb_round_trips_per_frame``: batches that waited for the bridge's read-back, per
      Ethernet frame (polls that found nothing, ``idle_calls``, taken out as for
      ``bus_calls_per_frame``); ``usb_writes_per_frame``: the command writes they took
      (a round trip feeds its chunks while it reads).
    - ``usb_bytes_per_spi_byte``: command bytes out and read-back in per byte clocked.
    - ``bridge_silicon_s``: the MPSSE's clocking plus the USB bus time of the traffic (USB
      2.0 §5.8 transaction times on the virtual bus), added as if they never overlapped;
      host turnaround is not in it (``usb_round_trips_per_frame`` says how often it is paid).
      ``bridge_pct_of_spi_ceiling``: the frame-byte rate over that time as a share of the
      chip's SPI ceiling at the rig's clock, ``speed_hz / 8 / spi_bytes_per_data_byte``.
    """
    out: dict[str, tuple[float, str]] = {}

    def g(m: Mapping[str, float], k: str) -> float:
        return float(m.get(k, 0))

    if frames > 0:
        trips = max(g(bridge, "round_trips") - idle_calls, 0.0)
        out["usb_round_trips_per_frame"] = (trips / frames, "1/frame")
        out["usb_writes_per_frame"] = (g(bridge, "usb_writes") / frames, "1/frame")
    if spi_bytes > 0:
        moved = g(bridge, "command_bytes") + g(bridge, "read_back_bytes")
        out["usb_bytes_per_spi_byte"] = (moved / spi_bytes, "B/B")
    silicon = g(bridge, "spi_clock_s") + g(usb, "usb_bus_time_s")
    if "spi_clock_s" in bridge and "usb_bus_time_s" in usb and silicon > 0:
        out["bridge_silicon_s"] = (silicon, "s")
        if frame_bytes > 0:
            rate = frame_bytes / silicon
            out["bridge_silicon_frame_MBps"] = (rate / 1e6, "MB/s")
            if speed_hz and spi_bytes_per_data_byte:
                ceiling = speed_hz / 8 / spi_bytes_per_data_byte
                out["bridge_pct_of_spi_ceiling"] = (100.0 * rate / ceiling, "%")
    return out


def driver_figures(stats: Mapping[str, int], frames: int,
                   skip: Iterable[str] = ("bus_calls",),
                   always: Iterable[str] = ("idle_polls",)) -> dict[str, tuple[float, str]]:
    """Each driver stat that moved over a stretch (and those in ``always`` the driver has,
    moved or not), as a count and per frame moved.

    ``bus_calls`` is skipped: the bus's own counters give ``bus_calls_per_frame``.
    """
    out: dict[str, tuple[float, str]] = {}
    left_out, kept = set(skip), set(always)
    for name, value in stats.items():
        if name in left_out or not (value or name in kept):
            continue
        out[name] = (float(value), "")
        if frames > 0:
            out[f"{name}_per_frame"] = (value / frames, "1/frame")
    return out


def summarize(checks: Iterable[Check], order: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Per suite: passed, failed (errors included), skipped, time_s; suites in ``order`` first."""
    rows: dict[str, dict[str, Any]] = {s: {} for s in order}
    for c in checks:
        row = rows.setdefault(c.suite, {})
        if not row:
            row.update(passed=0, failed=0, skipped=0, time_s=0.0)
        key = "failed" if c.outcome in ("failed", "error") else c.outcome
        row[key] = row.get(key, 0) + 1
        row["time_s"] += c.duration_s
    return {s: r for s, r in rows.items() if r}


def _fmt_time(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s" if s < 100 else f"{s:.0f} s"


def fmt_duration(s: float) -> str:
    return _fmt_time(s)


def summary_table(checks: list[Check], order: Iterable[str] = ()) -> str:
    """The table printed at the end of a run."""
    rows = summarize(checks, order)
    head = f"{'suite':<14}{'passed':>8}{'failed':>8}{'skipped':>9}{'time':>12}"
    lines = [head, "-" * len(head)]
    tot = {"passed": 0, "failed": 0, "skipped": 0, "time_s": 0.0}
    for suite, r in rows.items():
        lines.append(f"{suite:<14}{r['passed']:>8}{r['failed']:>8}{r['skipped']:>9}"
                     f"{_fmt_time(r['time_s']):>12}")
        for k in tot:
            tot[k] += r[k]
    lines.append("-" * len(head))
    lines.append(f"{'total':<14}{tot['passed']:>8}{tot['failed']:>8}{tot['skipped']:>9}"
                 f"{_fmt_time(tot['time_s']):>12}")
    return "\n".join(lines)


def _clean(v: Any) -> Any:
    """JSON-safe: no NaN/inf, tuples as lists, unknown objects as strings."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if v is None or isinstance(v, (str, int, bool)):
        return v
    return str(v)


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write atomically: a reader never sees half a file."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, p)


def verdict(checks: list[Check]) -> str:
    if any(c.outcome in ("failed", "error") for c in checks):
        return "failed"
    return "passed" if any(c.outcome == "passed" for c in checks) else "nothing passed"

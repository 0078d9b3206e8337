"""The figure arithmetic of ``hilkit.hil.report``: wire ceilings, per-direction and overall
wire shares, idle polls kept out of bus calls per frame, driver stats per frame."""

from __future__ import annotations

import pytest

from hilkit.hil import report

MBIT10 = 10_000_000


def test_wire_bytes_counts_preamble_fcs_gap_and_padding() -> None:
    assert report.wire_bytes(1514) == 8 + 1514 + 4 + 12 == 1538
    assert report.wire_bytes(42) == 8 + 60 + 4 + 12  # an ARP frame is padded to 60


@pytest.mark.parametrize(("payload", "headers", "expected"), [
    (1460, 20 + 20, 1.25e6 * 1460 / 1538),  # TCP, no options: 1.1866 MB/s
    (1448, 20 + 32, 1.25e6 * 1448 / 1538),  # TCP with timestamps
    (1472, 20 + 8, 1.25e6 * 1472 / 1538),  # UDP filling the MTU: 1.1964 MB/s
    (18, 20 + 8, 1.25e6 * 18 / 84),  # a tiny datagram: the frame is padded to 60
])
def test_wire_ceiling(payload: int, headers: int, expected: float) -> None:
    assert report.wire_ceiling_Bps(MBIT10, payload, headers) == pytest.approx(expected)


def test_wire_ceiling_defaults_to_tcp_without_options() -> None:
    assert report.wire_ceiling_Bps(MBIT10, 1460) == pytest.approx(1_186_606, rel=1e-6)


def test_wire_figures_from_device_counters() -> None:
    # 100 frames of 1514 bytes carrying 1460 bytes each (TCP, no options), in 0.125 s.
    figs = report.wire_figures(wire_bps=MBIT10, frames=100, frame_bytes=151_400,
                               payload_bytes=146_000, seconds=0.125)
    min_s = 100 * 1538 * 8 / MBIT10  # 0.12304 s at 10 Mb/s
    assert figs["wire_min_s"][0] == pytest.approx(min_s)
    assert figs["wire_ceiling_MBps"][0] == pytest.approx(1.186606, rel=1e-6)
    assert figs["pct_of_wire_ceiling"] == (pytest.approx(100 * min_s / 0.125), "%")


def test_wire_figures_overall_is_the_sum_of_the_directions() -> None:
    """The overall share is total time at the ceiling over total time taken: what the
    suite gets by feeding summed counters back in."""
    a = {"frames": 725, "frame_bytes": 725 * 1514, "payload_bytes": 725 * 1448, "seconds": 1.1}
    b = {"frames": 200, "frame_bytes": 200 * 1514, "payload_bytes": 200 * 1472, "seconds": 0.25}
    fa = report.wire_figures(wire_bps=MBIT10, **a)
    fb = report.wire_figures(wire_bps=MBIT10, **b)
    both = report.wire_figures(wire_bps=MBIT10, **{k: a[k] + b[k] for k in a})
    assert both["wire_min_s"][0] == pytest.approx(fa["wire_min_s"][0] + fb["wire_min_s"][0])
    assert both["pct_of_wire_ceiling"][0] == pytest.approx(
        100 * (fa["wire_min_s"][0] + fb["wire_min_s"][0]) / 1.35)


def test_wire_figures_need_frames() -> None:
    assert report.wire_figures(wire_bps=MBIT10, frames=0, frame_bytes=0, payload_bytes=0,
                               seconds=1.0) == {}


def test_idle_calls_stay_out_of_bus_calls_per_frame_but_not_silicon_time() -> None:
    common = {"spi_bytes": 100_000, "transactions": 2000, "frames": 100,
              "frame_bytes": 95_000, "speed_hz": 20e6, "bus_kind": "spidev"}
    busy = report.bus_figures(calls=900, idle_calls=700, **common)
    plain = report.bus_figures(calls=900, **common)
    assert busy["bus_calls_per_frame"][0] == pytest.approx(2.0)
    assert plain["bus_calls_per_frame"][0] == pytest.approx(9.0)
    assert busy["silicon_s"] == plain["silicon_s"]
    assert busy["spi_bytes_per_payload_byte"][0] == pytest.approx(100_000 / 95_000)


def test_driver_figures_per_frame() -> None:
    figs = report.driver_figures({"bus_calls": 300, "bank_switches": 150, "resets": 0,
                                  "idle_polls": 0, "quiet_polls": 40}, frames=100)
    assert figs == {
        "bank_switches": (150.0, ""), "bank_switches_per_frame": (1.5, "1/frame"),
        "idle_polls": (0.0, ""), "idle_polls_per_frame": (0.0, "1/frame"),
        "quiet_polls": (40.0, ""), "quiet_polls_per_frame": (0.4, "1/frame"),
    }

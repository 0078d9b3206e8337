"""What a HIL run's checks are expected to do on a rig, for the integration runs."""

from __future__ import annotations

from typing import Any

# Checks of a point-to-point (PPP) line alone: an Ethernet rig skips them, saying why.
PPP_ONLY = ("identity::test_negotiated", "link::test_line_drop_and_renegotiation",
            "recovery::test_line_fault_mid_transfer")
# Checks that need a lab place's power resource (docs/lab.md, "Power"): a local run skips
# them, saying what to add.
PLACE_POWER_ONLY = ("recovery::test_reset_mid_transfer[power]",)


def applicable(results: dict[str, Any]) -> dict[str, str]:
    """check -> outcome of results.json, without the PPP-only checks on a rig that is no
    PPP line and the place-power checks of a run outside a lab place (after checking they
    were skipped with a reason)."""
    out = {}
    for c in results["checks"]:
        if (results["driver"] != "ppp" and c["id"].startswith(PPP_ONLY)) or (
                "lab" not in results and c["id"] in PLACE_POWER_ONLY):
            assert c["outcome"] == "skipped" and c["message"], c
            continue
        out[c["id"]] = c["outcome"]
    return out


def skips(outcomes: dict[str, str]) -> set[str]:
    return {k for k, v in outcomes.items() if v == "skipped"}

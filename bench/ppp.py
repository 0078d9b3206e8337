#!/usr/bin/env python3
"""PPP figures over a paced serial line, through the HIL runner: sim-ppp with VJ on and off.

Runs the `identity`, `link` and `throughput` suites of `sim-ppp` (the PPP driver on one
end of a pty pair paced to 115200 baud, slirp on the other, in a private network
namespace) twice: as the rig file says (VJ TCP/IP header compression, RFC 1144, offered
and used), and from a copy of it with `vj = false`. Printed side by side: LCP+IPCP
bring-up, how long a dead line takes to notice (LCP echoes) and to come back, line bytes
per IP byte (HDLC framing, escapes and FCS, RFC 1662: floor about 1.013 at MTU 1500 with
ACCM 0 on random data, less with VJ) and TCP goodput as a share of the line's ceiling
(8N1: baud/10 bytes a second; goal >= 90 %), on random data, each way. Then the CPU
the stack's thread spends over IDLE_S with the link up and idle (LCP echoes every
second; goal <= 2 %): PppDevice and Stack against slirp, in a namespace made here.
JSON: reports/bench-ppp.json.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

from throughput_figures import hil_figures

from hilkit.drivers.ppp.device import PppDevice
from hilkit.rig.netns import Netns
from hilkit.rig.slirp import SlirpPeer
from hilkit.stack import Stack

RIG = Path(__file__).resolve().parents[1] / "rigs" / "sim-ppp.toml"
SUITES = ["identity", "link", "throughput"]
IDLE_S = 10.0
PROG = "bench/ppp.py"
ROWS: list[tuple[str, str, str]] = [
    ("ppp_bringup_ms", "ms", "LCP + IPCP, from opening the port"),
    ("link_line_noticed_ms", "ms", "line dead: LCP echoes notice"),
    ("link_line_renegotiation_ms", "ms", "line back: LCP + IPCP again"),
    ("link_peer_renegotiation_ms", "ms", "slirp restarted"),
    ("ppp_wire_bytes_per_ip_byte_hilkit_to_kernel", "B/B", "random data; ~1.013 w/o VJ"),
    ("ppp_wire_bytes_per_ip_byte_kernel_to_hilkit", "B/B", "random data"),
    ("pct_of_line_ceiling_hilkit_to_kernel", "%", "TCP goodput: goal >= 90"),
    ("pct_of_line_ceiling_kernel_to_hilkit", "%", "TCP goodput: goal >= 90"),
    ("goodput_hilkit_to_kernel", "MB/s", ""),
    ("goodput_kernel_to_hilkit", "MB/s", ""),
    ("ppp_tx_accm", "", "what slirp asked for"),
]


def without_vj(text: str) -> str:
    """The rig file with ``vj = false`` in its [driver] table and its own name."""
    text = re.sub(r'^name = "sim-ppp"$', 'name = "sim-ppp-novj"', text, count=1, flags=re.M)
    return re.sub(r"^\[driver\]$", "[driver]\nvj = false", text, count=1, flags=re.M)


def idle_cpu_pct() -> float:
    """% of one CPU the stack's thread uses while the link is up and idle."""
    with Netns("hkpppbench") as ns, SlirpPeer(ns) as peer:
        dev = PppDevice(peer.port, baudrate=peer.baudrate, default_route=False)
        stack = Stack()
        try:
            stack.add_device(dev)
            if not stack.run(until=lambda: dev.link_up, timeout=15):
                raise RuntimeError(f"no link: {peer.output()}")
            c0, t0 = time.thread_time(), time.monotonic()
            stack.run(timeout=IDLE_S)
            return 100.0 * (time.thread_time() - c0) / (time.monotonic() - t0)
        finally:
            stack.close()


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hilkit-bench-") as tmp_s:
        tmp = Path(tmp_s)
        novj = tmp / "sim-ppp-novj.toml"
        novj.write_text(without_vj(RIG.read_text()))
        runs = {"VJ on": hil_figures(str(RIG), SUITES, PROG),
                "VJ off": hil_figures(str(novj), SUITES, PROG)}
    if any(r is None for r in runs.values()):
        return 2
    try:
        idle = idle_cpu_pct()
    except (OSError, RuntimeError) as e:
        print(f"bench/ppp.py: the idle run failed: {e}", file=sys.stderr)
        return 2
    print(f"{'sim-ppp figure (115200 baud, slirp)':46} {'VJ on':>10} {'VJ off':>10}  "
          f"{'unit':5} note")
    print("-" * 100)
    shown: dict[str, dict[str, object]] = {k: {} for k in runs}
    for name, unit, note in ROWS:
        cells = []
        for label, figs in runs.items():
            assert figs is not None
            value = figs.get(name)
            if value is not None:
                shown[label][name] = value
            cells.append("-" if value is None else
                         f"{value:.3f}" if isinstance(value, float) else str(value))
        print(f"{name:46} {cells[0]:>10} {cells[1]:>10}  {unit:5} {note}")
    print(f"{'idle_cpu_pct':46} {idle:10.2f} {'':>10}  {'%':5} "
          f"stack thread, {IDLE_S:g} s up and idle: goal <= 2")
    result = {"command": f"hilkit hil --rig sim-ppp --suite {','.join(SUITES)} "
                         "(and a copy with vj = false)", "figures": shown,
              "idle_cpu_pct": idle}
    Path("reports").mkdir(exist_ok=True)
    Path("reports", "bench-ppp.json").write_text(json.dumps(result, indent=2))
    print("\nJSON: reports/bench-ppp.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

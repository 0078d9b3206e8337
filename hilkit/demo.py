"""`invoke demo`: picoTCP's README preparation, inside a private namespace, then the example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hilkit.rig.netns import Netns

KERNEL_ADDR = "192.168.5.5/24"


def run_demo(example: Path) -> int:
    """Make a namespace with a persistent tap0 at 192.168.5.5/24, run ``example`` in it."""
    with Netns("hkdemo") as ns:
        ns.ip("tuntap", "add", "dev", "tap0", "mode", "tap")
        ns.ip("addr", "add", KERNEL_ADDR, "dev", "tap0")
        ns.ip("link", "set", "tap0", "up")
        print(f"namespace {ns.name}: tap0 at {KERNEL_ADDR} (the Linux kernel)", flush=True)
        proc = subprocess.run(
            ["ip", "netns", "exec", ns.name, sys.executable, str(example)], check=False
        )
        return proc.returncode


def main() -> int:
    example = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/ping.py")
    if not example.exists():
        print(f"{example}: no such example", file=sys.stderr)
        return 2
    return run_demo(example)


if __name__ == "__main__":
    sys.exit(main())

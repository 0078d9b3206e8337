"""Fixtures that put the Linux kernel at the far end of a TAP, inside a private namespace.

Every namespace here is created by the fixture and deleted after it; the TAP
is born inside it, so no frame ever touches the machine's own namespace.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hilkit.drivers.tap import TapDevice
from hilkit.rig.netns import Netns
from hilkit.stack import Stack, StackConfig

TAP = "hk0"
KERNEL_IP = "192.168.5.5"
HILKIT_IP = "192.168.5.4"
PREFIX = 24


@pytest.fixture
def netns() -> Iterator[Netns]:
    with Netns("hkt") as ns:
        yield ns


def kernel_side(ns: Netns, persistent: bool) -> None:
    """The README's preparation: a TAP with the kernel at 192.168.5.5/24, up."""
    if persistent:
        ns.ip("tuntap", "add", "dev", TAP, "mode", "tap")
    ns.ip("addr", "add", f"{KERNEL_IP}/{PREFIX}", "dev", TAP)
    ns.ip("link", "set", TAP, "up")


@dataclass
class Link:
    """A hilkit stack in this process, on a TAP whose far end is the namespace's kernel."""

    ns: Netns
    stack: Stack
    tap: TapDevice
    pcap: Path

    def kernel_mac(self) -> bytes:
        return self.ns.mac_of(TAP)


def make_link(ns: Netns, tmp_path: Path, config: StackConfig | None = None) -> Link:
    tap = ns.call(lambda: TapDevice(TAP))
    kernel_side(ns, persistent=False)
    pcap = tmp_path / "link.pcapng"
    stack = Stack(config=config, pcap=str(pcap))
    dev = stack.add_device(tap)
    stack.link_add(dev, HILKIT_IP, "255.255.255.0")
    return Link(ns, stack, tap, pcap)


@pytest.fixture
def link(netns: Netns, tmp_path: Path) -> Iterator[Link]:
    lk = make_link(netns, tmp_path)
    yield lk
    lk.stack.close()


@dataclass
class Server:
    """`hilkit serve` running inside the namespace on a persistent TAP."""

    ns: Netns
    proc: subprocess.Popen[str]
    pcap: Path
    ready_line: str
    counters: dict[str, Any] = field(default_factory=dict)
    stderr: str = ""

    def stop(self) -> dict[str, Any]:
        """SIGTERM, then the counters it printed; it must exit 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"hilkit serve did not stop on SIGTERM:\n{self._where()}")
        self.stderr = err
        assert self.proc.returncode == 0, f"hilkit serve exited {self.proc.returncode}: {err}"
        self.counters = json.loads(out)
        return self.counters

    def _where(self) -> str:
        """Where a server that ignores SIGTERM is: its state and kernel stack from
        /proc, and its Python stacks (SIGUSR1), then it is killed."""
        pid, facts = self.proc.pid, []
        for name in ("wchan", "stack", "status"):
            try:
                facts.append(f"/proc/{pid}/{name}: {Path(f'/proc/{pid}/{name}').read_text()}")
            except OSError as e:
                facts.append(f"/proc/{pid}/{name}: {e}")
        self.proc.send_signal(signal.SIGUSR1)
        try:
            _, err = self.proc.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return "\n".join([*facts, f"stderr: {err}"])


def start_server(ns: Netns, tmp_path: Path, *extra: str, pcap: Path | None = None,
                 wrapper: Sequence[str] = (), **popen: Any) -> Server:
    """`hilkit serve` on the namespace's TAP; ``wrapper`` runs it (e.g. ``unshare ...``),
    ``popen`` goes to ``subprocess.Popen``."""
    kernel_side(ns, persistent=True)
    pcap = pcap or tmp_path / "serve.pcapng"
    cmd = [*wrapper, sys.executable, "-m", "hilkit.cli", "serve", "--tap", TAP,
           "--ip", f"{HILKIT_IP}/{PREFIX}", "--pcap", str(pcap), *extra]
    proc = ns.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("ready"):
        proc.kill()
        raise AssertionError(f"hilkit serve did not get ready: {line!r} {proc.stderr.read()}")  # type: ignore[union-attr]
    return Server(ns, proc, pcap, line)


@pytest.fixture
def server(netns: Netns, tmp_path: Path) -> Iterator[Server]:
    srv = start_server(netns, tmp_path)
    yield srv
    if srv.proc.poll() is None:
        srv.proc.kill()
        srv.proc.wait()


def kping(ns: Netns, *args: str, timeout: float = 120) -> str:
    """Run the kernel's ping inside the namespace; return its output."""
    res = subprocess.run(["ip", "netns", "exec", ns.name, "ping", *args], capture_output=True,
                         text=True, timeout=timeout, env={**os.environ, "LC_ALL": "C"})
    return res.stdout + res.stderr

"""tcp: N bytes each way at once (default 16 MiB), SHA-256 equal at both ends, with
hilkit as the client and as the server.

Besides the time for both directions, the figures say how each direction fared:
goodput each way, and the kernel's view of its connection (``ss -ti`` inside the
rig's namespace, sampled while the transfer runs): its largest retransmission
backoff (RFC 6298 §5.5 doublings) and RTO, and the segments it retransmitted.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass, field

import pytest

from hilkit.hil.plugin import BuiltRigLike, FigureFn, HilSession, Kernel, model_stats
from hilkit.hil.suites._common import Pump, duplex_transfer, sha, size_param, timeout_param
from hilkit.stack import Stack
from hilkit.stack.tcp_conn import Connection

PORT = 5001
SAMPLE_S = 0.1  # a backoff of 1 lasts at least 2 x 200 ms: a 100 ms look sees every one


def _nbytes(hil: HilSession) -> int:
    return size_param(hil, "tcp", "bytes")


@dataclass
class KernelTcpView:
    """The kernel's own figures for the transfer's connection, from ``ss -ti``."""

    max_backoff: int = 0
    max_rto_ms: float = 0.0
    retrans: int = 0  # segments the kernel retransmitted (ss "retrans:cur/total")
    received: int = 0  # bytes_received: what hilkit delivered to the kernel
    received_all_at: float | None = None
    samples: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def sample(self, kernel: Kernel, n: int) -> None:
        """One look; the connection is the one with port ``PORT`` at either end."""
        try:
            res = kernel.run("ss", "-tinH", timeout=5.0)
        except (OSError, subprocess.SubprocessError):
            return
        self.samples += 1
        now = time.monotonic()
        for rec in re.split(r"\n(?=\S)", res.stdout):
            if re.search(rf":{PORT}\s", rec) is None or "bytes_" not in rec:
                continue
            if (m := re.search(r"\bbackoff:(\d+)", rec)) is not None:
                self.max_backoff = max(self.max_backoff, int(m[1]))
            if (m := re.search(r"\brto:([\d.]+)", rec)) is not None:
                self.max_rto_ms = max(self.max_rto_ms, float(m[1]))
            if (m := re.search(r"\bretrans:\d+/(\d+)", rec)) is not None:
                self.retrans = max(self.retrans, int(m[1]))
            if (m := re.search(r"\bbytes_received:(\d+)", rec)) is not None:
                self.received = max(self.received, int(m[1]))
                if self.received >= n and self.received_all_at is None:
                    self.received_all_at = now

    def watch(self, kernel: Kernel, n: int) -> threading.Thread:
        def loop() -> None:
            while not self.stop.wait(SAMPLE_S):
                self.sample(kernel, n)

        t = threading.Thread(target=loop, name="kernel-ss", daemon=True)
        t.start()
        return t


@pytest.mark.parametrize("role", ["client", "server"])
def test_bytes_each_way(rig: BuiltRigLike, stack: Stack, kernel: Kernel, hil: HilSession,
                        role: str, figure: FigureFn) -> None:
    n = _nbytes(hil)
    timeout = timeout_param(hil, "tcp")
    model0 = model_stats(rig.model) if rig.model is not None else {}
    conns: list[Connection] = []

    def keep_conn(p: Pump) -> None:
        if not conns and p.sock is not None and p.sock.conn is not None:
            conns.append(p.sock.conn)

    view = KernelTcpView()
    watcher = view.watch(kernel, n)
    t0 = time.monotonic()
    try:
        pump, kend, to_kernel, to_hilkit = duplex_transfer(
            stack, kernel, rig, n, hilkit_is_client=role == "client", port=PORT,
            timeout=timeout, on_progress=keep_conn)
    finally:
        view.stop.set()
        watcher.join(10)
    elapsed = time.monotonic() - t0
    figure("tcp_bytes_each_way", n, "B")
    figure(f"tcp_{role}_s", elapsed, "s")
    figure(f"tcp_{role}_MBps", 2 * n / elapsed / 1e6, "MB/s")
    if pump.eof_at is not None:
        figure(f"tcp_{role}_to_hilkit_MBps", n / (pump.eof_at - t0) / 1e6, "MB/s")
    to_kernel_at = view.received_all_at or kend.ended_at
    figure(f"tcp_{role}_to_kernel_MBps", n / (to_kernel_at - t0) / 1e6, "MB/s")
    figure(f"tcp_{role}_kernel_max_backoff", view.max_backoff, "")
    figure(f"tcp_{role}_kernel_max_rto_ms", view.max_rto_ms, "ms")
    figure(f"tcp_{role}_kernel_retrans_segs", view.retrans, "")
    if conns:
        st = conns[0].stats
        figure(f"tcp_{role}_hilkit_max_backoff", st.get("max_backoff", 0), "")
        figure(f"tcp_{role}_hilkit_retransmits", st.get("retransmits", 0), "")
    if rig.model is not None:
        model1 = model_stats(rig.model)
        for k in ("rx_dropped_full", "tx_stalled", "bit_errors", "frames_in"):
            if k in model1:
                figure(f"tcp_{role}_model_{k}", model1[k] - model0.get(k, 0), "")
    assert not pump.error, f"hilkit's socket failed with errno {pump.error} " \
                           f"after {pump.sent} sent, {pump.received} received"
    assert kend.received == n, f"the kernel received {kend.received} of {n} bytes"
    assert kend.digest == sha(to_kernel), "hilkit -> kernel: SHA-256 differs"
    assert pump.received == n, f"hilkit received {pump.received} of {n} bytes"
    assert pump.digest.hexdigest() == sha(to_hilkit), "kernel -> hilkit: SHA-256 differs"
    assert pump.eof, "hilkit did not see the kernel's FIN"

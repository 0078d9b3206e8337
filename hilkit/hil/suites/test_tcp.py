"""tcp: N bytes each way at once (default 16 MiB), SHA-256 equal at both ends, with
hilkit as the client and as the server."""

from __future__ import annotations

import time

import pytest

from hilkit.hil.plugin import BuiltRigLike, FigureFn, HilSession, Kernel, model_stats
from hilkit.hil.suites._common import duplex_transfer, sha, size_param, timeout_param
from hilkit.stack import Stack

PORT = 5001


def _nbytes(hil: HilSession) -> int:
    return size_param(hil, "tcp", "bytes")


@pytest.mark.parametrize("role", ["client", "server"])
def test_bytes_each_way(rig: BuiltRigLike, stack: Stack, kernel: Kernel, hil: HilSession,
                        role: str, figure: FigureFn) -> None:
    n = _nbytes(hil)
    timeout = timeout_param(hil, "tcp")
    model0 = model_stats(rig.model) if rig.model is not None else {}
    t0 = time.monotonic()
    pump, kend, to_kernel, to_hilkit = duplex_transfer(
        stack, kernel, rig, n, hilkit_is_client=role == "client", port=PORT, timeout=timeout)
    elapsed = time.monotonic() - t0
    figure("tcp_bytes_each_way", n, "B")
    figure(f"tcp_{role}_s", elapsed, "s")
    figure(f"tcp_{role}_MBps", 2 * n / elapsed / 1e6, "MB/s")
    if rig.model is not None:
        model1 = model_stats(rig.model)
        for k in ("rx_dropped_full", "tx_stalled", "bit_errors"):
            if k in model1:
                figure(f"tcp_{role}_model_{k}", model1[k] - model0.get(k, 0), "")
    assert not pump.error, f"hilkit's socket failed with errno {pump.error} " \
                           f"after {pump.sent} sent, {pump.received} received"
    assert kend.received == n, f"the kernel received {kend.received} of {n} bytes"
    assert kend.digest == sha(to_kernel), "hilkit -> kernel: SHA-256 differs"
    assert pump.received == n, f"hilkit received {pump.received} of {n} bytes"
    assert pump.digest.hexdigest() == sha(to_hilkit), "kernel -> hilkit: SHA-256 differs"
    assert pump.eof, "hilkit did not see the kernel's FIN"

"""throughput: goodput each way and frames/s; on USB rigs with a virtual bus the USB
figures (``report.usb_figures``: transfers and ZLPs per frame, bus bytes per payload byte,
the share of the bus's ceiling); on SPI rigs behind a USB bridge its figures
(``report.bridge_figures``: round trips per frame, USB bytes per SPI byte, the share of the
chip's SPI ceiling the bridge reaches in silicon time); on SPI rigs the bus figures of
``hilkit.hil.report`` (SPI bytes per payload byte, CS transactions and bus calls per frame, and what
the same traffic would take on silicon at the rig's SPI clock), the driver's own stats per
frame (``Nic.stat_names``), and for a NIC that registers ``wire_bps`` the share of the wire's
goodput ceiling. ``test_mtu_frames`` repeats the bus figures for MTU-sized frames alone
(a UDP stream each way: no ACKs in between), named ``<figure>_mtu``. Figures, not verdicts:
the checks fail only when the transfer itself does (or a bus counts less than physics
allows: the NIC's ``spi_bytes_per_data_byte``, from its registration)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from hilkit.hil import report
from hilkit.hil.plugin import (
    BuiltRigLike,
    FigureFn,
    HilSession,
    Kernel,
    bridge_stats,
    counters_dict,
    driver_stats,
    is_spi_rig,
    peer_kind,
    usb_stats,
)
from hilkit.hil.suites._common import (
    KERNEL_RCVLOWAT,
    duplex_transfer,
    pattern,
    sha,
    size_param,
    timeout_param,
)
from hilkit.port.device import tx_queue_reader, unwrap_chain
from hilkit.port.nic import Nic
from hilkit.rig.schema import PPP_PEER_KINDS
from hilkit.stack import Stack, TcpConfig, UdpSocket

PORT = 5002
DIRECTIONS = ("hilkit_to_kernel", "kernel_to_hilkit")
_ACC = "throughput"
_ACC_MTU = "throughput_mtu"
MTU_DATAGRAMS = 200  # MTU-sized frames each way in test_mtu_frames, at most ...
MTU_DATAGRAMS_MIN = 20  # ... and at least, as many as the suite's bytes fill
_QUIET_S = 0.5  # test_mtu_frames: the kernel is done and nothing came for this long
# The kernel paces its datagrams to this much above the TCP goodput test_goodput measured
# into hilkit: a receiver whose bus is slower than its wire (a 100 Mb/s chip on SPI) drops
# the rest of an unpaced stream in the chip, and TCP's rate is one it showed it can take.
PACE_HEADROOM = 1.05
# hilkit's datagrams wait while a slow link's device holds this much line time, as TCP's do
LINK_QUEUE_MS = TcpConfig.device_queue_ms
_GREET_EVERY_S = 0.2  # the greeting is sent again this often until the kernel has it
_GOODPUT = "throughput_goodput"
_IDLE_STAT = "idle_polls"  # the driver stat whose polls made one call that moved nothing
# The figures test_mtu_frames records, with the "_mtu" tag.
_MTU_FIGURES = ("spi_bytes_per_payload_byte", "cs_transactions_per_frame", "bus_calls_per_frame",
                "silicon_pct_of_spi_ceiling", "pct_of_wire_ceiling", "bank_switches_per_frame",
                "idle_polls_per_frame", "usb_transfers_per_frame_out",
                "usb_transfers_per_frame_in", "usb_zlps_per_frame_out", "usb_zlps_per_frame_in",
                "usb_bus_bytes_per_payload_byte", "pct_of_usb_ceiling",
                "usb_round_trips_per_frame", "usb_writes_per_frame", "usb_bytes_per_spi_byte",
                "bridge_pct_of_spi_ceiling")


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


def _stats(rig: BuiltRigLike, nic: Nic | None) -> dict[str, int]:
    """The driver's stats named by its NIC: attributes, or a ``stats`` mapping, on the
    device or anything it wraps."""
    names = nic.stat_names if nic is not None else ()
    out: dict[str, int] = {}
    for dev in reversed(unwrap_chain(rig.device)):
        out |= driver_stats(dev, names)
        st = getattr(dev, "stats", None)
        if isinstance(st, Mapping):
            out |= {k: int(v) for k, v in st.items()
                    if k in names and isinstance(v, int) and not isinstance(v, bool)}
    return out


def _snapshot(rig: BuiltRigLike, nic: Nic | None) -> dict[str, float]:
    d = counters_dict(rig.device.counters)
    out: dict[str, float] = {k: int(d.get(k, 0))
                             for k in ("rx_frames", "rx_bytes", "tx_frames", "tx_bytes")}
    out |= {"frames": out["rx_frames"] + out["tx_frames"],
            "frame_bytes": out["rx_bytes"] + out["tx_bytes"]}
    if is_spi_rig(rig):
        b = counters_dict(rig.bus.counters)
        out |= {"spi_bytes": int(b.get("bytes", 0)),
                "transactions": int(b.get("transactions", 0)),
                "calls": int(b.get("calls", 0))}
    out |= {f"stat:{k}": v for k, v in _stats(rig, nic).items()}
    for dev in unwrap_chain(rig.device):  # a PPP link's line counters (HDLC framing)
        st = getattr(dev, "stats", None)
        if isinstance(st, Mapping):
            out |= {f"stat:{k}": int(v) for k, v in st.items()
                    if k in ("link.hdlc_tx_bytes_out", "link.hdlc_rx_bytes_in")}
    out |= {f"usb:{k}": v for k, v in usb_stats(rig).items()}
    out |= {f"bridge:{k}": v for k, v in bridge_stats(rig).items()}
    return out


def _data_side(direction: str) -> str:
    """Which device counters carry the data: tx when hilkit sends, rx when it receives."""
    return "tx" if direction == "hilkit_to_kernel" else "rx"


def _accumulate(hil: HilSession, key: str, d: Mapping[str, float], direction: str) -> None:
    acc = hil.shared.setdefault(key, {})
    side = _data_side(direction)
    for k, v in d.items():
        acc[k] = acc.get(k, 0) + v
    acc["data_frames"] = acc.get("data_frames", 0) + d[f"{side}_frames"]
    acc["data_bytes"] = acc.get("data_bytes", 0) + d[f"{side}_bytes"]


def _figures(rig: BuiltRigLike, nic: Nic | None, d: Mapping[str, Any],
             ) -> dict[str, tuple[float, str]]:
    """Bus, driver and wire figures for a stretch: ``d`` holds the counter deltas,
    ``payload``, ``seconds``, ``data_frames`` and ``data_bytes``."""
    stats = {k.removeprefix("stat:"): int(v) for k, v in d.items() if k.startswith("stat:")}
    figs: dict[str, tuple[float, str]] = {}
    if is_spi_rig(rig):
        kind, speed = _bus_params(rig)
        figs |= report.bus_figures(spi_bytes=d["spi_bytes"], transactions=d["transactions"],
                                   calls=d["calls"], frames=d["frames"],
                                   frame_bytes=d["frame_bytes"], speed_hz=speed, bus_kind=kind,
                                   payload_bytes=d["payload"], bus=rig.bus,
                                   idle_calls=stats.get(_IDLE_STAT, 0), **_nic_figures(nic))
    usb = {k.removeprefix("usb:"): v for k, v in d.items() if k.startswith("usb:")}
    bridge = {k.removeprefix("bridge:"): v for k, v in d.items() if k.startswith("bridge:")}
    if bridge:
        _, speed = _bus_params(rig)
        figs |= report.bridge_figures(
            bridge=bridge, usb=usb, spi_bytes=d.get("spi_bytes", 0), frames=int(d["frames"]),
            frame_bytes=int(d["frame_bytes"]), idle_calls=stats.get(_IDLE_STAT, 0),
            speed_hz=getattr(rig.bus, "speed_hz", None) or speed,
            spi_bytes_per_data_byte=_nic_figures(nic)["spi_bytes_per_data_byte"])
    elif usb:
        figs |= report.usb_figures(stats=usb, rx_frames=int(d["rx_frames"]),
                                   tx_frames=int(d["tx_frames"]), payload_bytes=d["payload"],
                                   seconds=d["seconds"])
    figs |= report.driver_figures(stats, d["frames"])
    if nic is not None and nic.wire_bps:
        figs |= report.wire_figures(wire_bps=nic.wire_bps, frames=d["data_frames"],
                                    frame_bytes=d["data_bytes"], payload_bytes=d["payload"],
                                    seconds=d["seconds"])
    return figs


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_goodput(rig: BuiltRigLike, stack: Stack, kernel: Kernel, hil: HilSession,
                 direction: str, figure: FigureFn, nic: Nic | None) -> None:
    n = size_param(hil, "throughput", "bytes")
    timeout = timeout_param(hil, "throughput")
    out = direction == "hilkit_to_kernel"
    before = _snapshot(rig, nic)
    pump, kend, to_kernel, to_hilkit = duplex_transfer(
        stack, kernel, rig, n if out else 0, hilkit_is_client=True, port=0, timeout=timeout,
        seed=11, nbytes_to_hilkit=0 if out else n, kernel_rcvlowat=KERNEL_RCVLOWAT,
        binary=peer_kind(rig) in PPP_PEER_KINDS)  # a serial line's figures: random data
    end = kend.ended_at if out else (pump.eof_at or time.monotonic())
    elapsed = max(end - pump.started_at, 1e-9)  # from asking for the connection
    after = _snapshot(rig, nic)
    assert not pump.error, f"hilkit's socket failed with errno {pump.error}"
    if out:
        assert kend.received == n and kend.digest == sha(to_kernel), \
            f"the kernel received {kend.received} of {n} bytes (or they differ)"
    else:
        assert pump.received == n and pump.digest.hexdigest() == sha(to_hilkit), \
            f"hilkit received {pump.received} of {n} bytes (or they differ)"
    d: dict[str, Any] = {k: after[k] - before.get(k, 0) for k in after}
    figure(f"goodput_{direction}", n / elapsed / 1e6, "MB/s")
    hil.shared.setdefault(_GOODPUT, {})[direction] = n / elapsed
    figure(f"frames_per_s_{direction}", d["frames"] / elapsed, "frames/s")
    figure(f"transfer_bytes_{direction}", n, "B")
    d |= {"payload": n, "seconds": elapsed}
    _accumulate(hil, _ACC, d, direction)
    side = _data_side(direction)
    d |= {"data_frames": d[f"{side}_frames"], "data_bytes": d[f"{side}_bytes"]}
    for name, (value, unit) in _figures(rig, nic, d).items():
        figure(f"{name}_{direction}", value, unit)
    ppp = _ppp_figures(rig, before, after, n, elapsed, direction)
    for name, (value, unit) in ppp.items():
        figure(f"{name}_{direction}", value, unit)
    if ppp:
        acc = hil.shared.setdefault("throughput_ppp", {})
        for k in ("wire", "ip"):
            acc[k] = acc.get(k, 0) + ppp_bytes(before, after, direction)[k]


def ppp_bytes(before: Mapping[str, float], after: Mapping[str, float],
              direction: str) -> dict[str, float]:
    """Bytes on the line (HDLC-framed, escaped, with FCS: what the link wrote or read) and IP
    bytes (the device's counters) that went the data's way during a transfer."""
    out = direction == "hilkit_to_kernel"
    wire = "stat:link.hdlc_tx_bytes_out" if out else "stat:link.hdlc_rx_bytes_in"
    ip = "tx_bytes" if out else "rx_bytes"
    return {"wire": after.get(wire, 0) - before.get(wire, 0),
            "ip": after.get(ip, 0) - before.get(ip, 0)}


def _ppp_figures(rig: BuiltRigLike, before: Mapping[str, float], after: Mapping[str, float],
                 n: int, seconds: float, direction: str) -> dict[str, tuple[float, str]]:
    """A PPP serial line: line bytes per IP byte (HDLC framing, escapes, FCS: RFC 1662;
    ~1.013 at MTU 1500 with nothing escaped), and TCP goodput as a share of the line's
    ceiling (8N1: baudrate / 10 bytes a second)."""
    baud = getattr(getattr(rig.rig, "bus", None), "baudrate", None)
    if not baud or "stat:link.hdlc_tx_bytes_out" not in after:
        return {}
    b = ppp_bytes(before, after, direction)
    figs: dict[str, tuple[float, str]] = {"line_ceiling_Bps": (baud / 10, "B/s")}
    if b["ip"] > 0:
        figs["ppp_wire_bytes_per_ip_byte"] = (b["wire"] / b["ip"], "")
    figs["pct_of_line_ceiling"] = (100.0 * n / seconds / (baud / 10), "%")
    return figs


def _mtu_payload(rig: BuiltRigLike) -> int:
    """The UDP payload that fills the device's MTU (one frame per datagram)."""
    return int(rig.device.mtu) - report.IPV4_HEADER - report.UDP_HEADER


def _greet(stack: Stack, us: UdpSocket, kaddr: tuple[str, int], ready: threading.Event,
           timeout: float) -> None:
    """Say hello until the kernel has heard it: one datagram (or the ARP before it) may
    be lost like any other, and a lost greeting must not stall the check for ``timeout``."""
    end = time.monotonic() + timeout
    while not ready.is_set():
        assert time.monotonic() < end, f"the kernel never got the greeting in {timeout:g} s"
        us.sendto(b"hello", kaddr)
        stack.run(until=ready.is_set, timeout=_GREET_EVERY_S)


def _send_stream(rig: BuiltRigLike, stack: Stack, kernel: Kernel, size: int, count: int,
                 timeout: float, before: dict[str, float], nic: Nic | None,
                 rate_Bps: float | None,
                 ) -> tuple[int, float, dict[str, float]]:
    """hilkit sends ``count`` datagrams of ``size`` bytes to a kernel socket; after a
    greeting that settles ARP both ways; ``rate_Bps`` is not used: hilkit's sends wait for
    the chip, or on a slow link (a device with ``tx_queue_ms``) for its queue to drain
    below LINK_QUEUE_MS, as TCP does. (datagrams the kernel got, seconds, counters after)."""
    ks = kernel.udp(0)
    kaddr = (rig.kernel_ip, ks.getsockname()[1])
    ks.settimeout(2.0)
    ready = threading.Event()

    def kside() -> tuple[int, float]:
        ks.recvfrom(65535)  # the greeting
        ready.set()
        stack.wake()
        got, last = 0, time.monotonic()
        while got < count:
            try:
                if len(ks.recv(65535)) == size:
                    got, last = got + 1, time.monotonic()
            except TimeoutError:
                break
        return got, last

    us = stack.udp_socket()
    try:
        th = kernel.start(stack, kside, "kernel-udp-sink")
        _greet(stack, us, kaddr, ready, timeout)
        before |= _snapshot(rig, nic)
        payload = pattern(size, 7)
        held = tx_queue_reader(rig.device)
        t0 = time.monotonic()
        for _ in range(count):
            if held is not None:
                _drain(stack, held)
            us.sendto(payload, kaddr)
            stack.tick()
        got, last = th.wait(timeout)
        return got, max(last - t0, 1e-9), _snapshot(rig, nic)
    finally:
        us.close()


def _drain(stack: Stack, held: Callable[[], float]) -> None:
    """Run the stack until the device holds under LINK_QUEUE_MS of line time."""
    while (ms := held()) >= LINK_QUEUE_MS:
        stack.run(until=lambda: held() < LINK_QUEUE_MS, timeout=(ms - LINK_QUEUE_MS) / 1000.0)


def _receive_stream(rig: BuiltRigLike, stack: Stack, kernel: Kernel, size: int, count: int,
                    timeout: float, before: dict[str, float], nic: Nic | None,
                    rate_Bps: float | None,
                    ) -> tuple[int, float, dict[str, float]]:
    """The kernel sends ``count`` datagrams of ``size`` bytes to a hilkit socket, after
    hilkit's greeting taught it where (and settled ARP), no faster than ``rate_Bps`` (None:
    as fast as it can). (datagrams hilkit got, seconds, counters after)."""
    ks = kernel.udp(0)
    kaddr = (rig.kernel_ip, ks.getsockname()[1])
    ready, go = threading.Event(), threading.Event()

    def kside() -> None:
        _, addr = ks.recvfrom(65535)
        ready.set()
        stack.wake()
        go.wait(timeout)
        payload = pattern(size, 8)
        gap = size / rate_Bps if rate_Bps else 0.0
        due = time.monotonic()
        for _ in range(count):
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            ks.sendto(payload, addr)
            due += gap

    us = stack.udp_socket()
    got, last = 0, time.monotonic()
    try:
        th = kernel.start(stack, kside, "kernel-udp-source")
        _greet(stack, us, kaddr, ready, timeout)
        before |= _snapshot(rig, nic)
        t0 = time.monotonic()
        go.set()

        def done() -> bool:
            nonlocal got, last
            while (item := us.recvfrom()) is not None:
                if len(item[0]) == size:
                    got, last = got + 1, time.monotonic()
            return got >= count or (
                th.done.is_set() and time.monotonic() - last > _QUIET_S)

        end = time.monotonic() + timeout
        while not done() and time.monotonic() < end:  # wakes to see the quiet spell end
            stack.run(until=done, timeout=_QUIET_S / 5)
        th.wait(5)
        return got, max(last - t0, 1e-9), _snapshot(rig, nic)
    finally:
        us.close()


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_mtu_frames(rig: BuiltRigLike, stack: Stack, kernel: Kernel, hil: HilSession,
                    direction: str, figure: FigureFn, nic: Nic | None) -> None:
    """MTU-sized frames alone, each way: UDP datagrams that fill the MTU, back to back.
    Every rig gets goodput and frames/s; bus and wire figures where the rig has them."""
    size = _mtu_payload(rig)
    timeout = timeout_param(hil, "throughput")
    before: dict[str, float] = {}
    stream = _send_stream if direction == "hilkit_to_kernel" else _receive_stream
    tcp = hil.shared.get(_GOODPUT, {}).get(direction)
    # as many as the suite's bytes fill: a slow line's rig asks for few
    count = max(MTU_DATAGRAMS_MIN, min(MTU_DATAGRAMS,
                                       size_param(hil, "throughput", "bytes") // size))
    got, elapsed, after = stream(rig, stack, kernel, size, count, timeout, before, nic,
                                 tcp * PACE_HEADROOM if tcp else None)
    assert got > 0, f"none of {count} datagrams of {size} bytes arrived"
    d: dict[str, Any] = {k: after[k] - before.get(k, 0) for k in after}
    d |= {"payload": got * size, "seconds": elapsed}
    figure(f"goodput_mtu_{direction}", got * size / elapsed / 1e6, "MB/s")
    figure(f"frames_per_s_mtu_{direction}", got / elapsed, "frames/s")
    figure(f"datagrams_lost_mtu_{direction}", count - got, "")
    _accumulate(hil, _ACC_MTU, d, direction)
    side = _data_side(direction)
    d |= {"data_frames": d[f"{side}_frames"], "data_bytes": d[f"{side}_bytes"]}
    figs = _figures(rig, nic, d)
    for name in _MTU_FIGURES:
        if name in figs:
            value, unit = figs[name]
            figure(f"{name}_mtu_{direction}", value, unit)


def test_bus_figures(rig: BuiltRigLike, hil: HilSession, figure: FigureFn,
                     nic: Nic | None) -> None:
    """The section 6 figures over both transfers together (and both MTU streams)."""
    acc = hil.shared.get(_ACC)
    if not acc or not acc.get("frames"):
        pytest.skip("no transfer was measured (run test_goodput first)")
    figure("model_goodput", acc["payload"] / acc["seconds"] / 1e6, "MB/s")
    figs = _figures(rig, nic, acc)
    for name, (value, unit) in figs.items():
        figure(name, value, unit)
    mtu = hil.shared.get(_ACC_MTU)
    if mtu and mtu.get("frames"):
        mfigs = _figures(rig, nic, mtu)
        for name in _MTU_FIGURES:
            if name in mfigs:
                value, unit = mfigs[name]
                figure(f"{name}_mtu", value, unit)
    ppp = hil.shared.get("throughput_ppp")
    if ppp and ppp.get("ip"):
        figure("ppp_wire_bytes_per_ip_byte", ppp["wire"] / ppp["ip"], "")
        pcts = [hil.figures.get(f"pct_of_line_ceiling_{d}") for d in DIRECTIONS]
        if all(isinstance(p, (int, float)) for p in pcts):
            figure("pct_of_line_ceiling", min(float(p) for p in pcts  # type: ignore[arg-type]
                                              ), "%")
    if nic is not None and nic.transport == "serial":
        return
    if nic is None or not nic.wire_bps:
        hil.note("no pct_of_wire_ceiling: the driver registers no NIC with wire_bps "
                 "(hilkit.port.nic.Nic)")
    if not is_spi_rig(rig):
        return
    _, speed = _bus_params(rig)
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

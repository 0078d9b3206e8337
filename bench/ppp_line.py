"""TCP goodput over PPP on a paced serial line: hilkit (PppDevice + Stack) against slirp.

Setup (as tests/integration/test_ppp_slirp.py): a private network namespace with only
``lo`` (made here, deleted on exit), slirp on one end of a pty pair paced to the baud
rate, hilkit's PppDevice on the other. hilkit is 10.0.2.15 and talks only to 10.0.2.2
(slirp's alias for the namespace's 127.0.0.1, where a sink and a source listen). The
DNS address slirp hands out is never used; no default route is installed.

Printed: goodput each way (bytes/s and % of the line ceiling baud/10, 8N1), and the
sending hilkit connection's counters (segments out, retransmits, fast retransmits, tail
loss probes, RTO timeouts), its SRTT/RTO at the end, and the device's refusals.
``--trace`` logs per segment (to stderr): when TCP hands it to the device, and
ACK arrivals with the RTO/TLP timers. Figures only: the exit code says whether the
setup worked (0) or not (2), never how fast it was.

    sudo .venv/bin/python bench/ppp_line.py [--size 65536] [--baud 115200] [--no-vj]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from hilkit.drivers.ppp.device import PppDevice
from hilkit.drivers.ppp.link import PppConfig
from hilkit.rig.netns import Netns
from hilkit.rig.slirp import SlirpPeer
from hilkit.stack import Stack
from hilkit.stack.sockets import SHUT_WR, create_connection

COUNTERS = ("segs_out", "retransmits", "fast_retransmits", "tail_loss_probes", "timeouts",
            "lost_retransmits", "dsack")


def pattern(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)  # random: VJ compresses headers, not data


class Servers:
    """On the namespace's 127.0.0.1: ``S`` sink (answers the count after EOF), ``D`` + 8-byte
    N: send N bytes of ``pattern(N, N)``."""

    def __init__(self, ns: Netns) -> None:
        self.sock = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            job = conn.recv(1)
            if job == b"S":
                n = 0
                while data := conn.recv(65536):
                    n += len(data)
                conn.sendall(struct.pack("!Q", n))
            elif job == b"D":
                hdr = b""
                while len(hdr) < 8:
                    hdr += conn.recv(8 - len(hdr))
                (n,) = struct.unpack("!Q", hdr)
                conn.sendall(pattern(n, n))


def trace_connection(conn: Any, dev: PppDevice, t0: float) -> Callable[[], None]:
    """Wrap the connection's emit and ACK handling and the device's writes; print as they
    happen (ms since ``t0``). Returns the undo."""
    out = sys.stderr

    def ms() -> float:
        return time.monotonic() * 1000.0 - t0

    emit, ack_advance, on_rto, tlp = (conn._emit, conn._ack_advance, conn._on_rto,
                                      conn._tail_loss_probe)
    send, flush = dev.send, dev._flush

    def t_emit(seq: int, ack: int, flags: int, payload: Any) -> None:
        rx = " REXMIT" if (seq - conn.snd_max) & 0x80000000 and payload else ""
        print(f"{ms():9.1f} emit seq={seq - conn.iss} len={len(payload)}{rx} "
              f"cwnd={conn.cc.cwnd} pending={len(dev._pending)}", file=out)
        emit(seq, ack, flags, payload)

    def t_ack(ack: int, now: float, seg: Any) -> None:
        ack_advance(ack, now, seg)
        tlp_in = None if conn.tlp_deadline is None else conn.tlp_deadline - now
        rto_in = None if conn.rto_deadline is None else conn.rto_deadline - now
        print(f"{ms():9.1f} ack {ack - conn.iss} srtt={conn.srtt} rttvar={conn.rttvar:.0f} "
              f"rto={conn.rto:.0f} rto_in={rto_in} tlp_in={tlp_in} "
              f"pending={len(dev._pending)}", file=out)

    def t_rto(now: float) -> None:
        print(f"{ms():9.1f} RTO una={conn.snd_una - conn.iss} pending={len(dev._pending)}",
              file=out)
        on_rto(now)

    def t_tlp(now: float) -> None:
        print(f"{ms():9.1f} TLP una={conn.snd_una - conn.iss} pending={len(dev._pending)}",
              file=out)
        tlp(now)

    def t_send(frame: Any) -> bool:
        ok = send(frame)
        if not ok:
            print(f"{ms():9.1f} device REFUSED {len(frame)}", file=out)
        return ok

    def t_flush() -> None:
        before = dev.stats["serial_write_bytes"]
        flush()
        n = dev.stats["serial_write_bytes"] - before
        if n:
            print(f"{ms():9.1f} line write {n} (pending {len(dev._pending)})", file=out)

    conn._emit, conn._ack_advance, conn._on_rto = t_emit, t_ack, t_rto
    conn._tail_loss_probe = t_tlp
    dev.send, dev._flush = t_send, t_flush  # type: ignore[method-assign]

    def undo() -> None:
        for name in ("_emit", "_ack_advance", "_on_rto", "_tail_loss_probe"):
            with contextlib.suppress(AttributeError):
                delattr(conn, name)
        for name in ("send", "_flush"):
            with contextlib.suppress(AttributeError):
                delattr(dev, name)
    return undo


def measure(size: int, baud: int, vj: bool, trace: bool) -> dict[str, Any]:
    ceiling = baud / 10
    res: dict[str, Any] = {"size": size, "baud": baud, "vj": vj, "ceiling": ceiling}
    with Netns("hkpppb") as ns, SlirpPeer(ns, baudrate=baud) as peer:
        srv = Servers(ns)
        dev = PppDevice(peer.port, baudrate=baud, config=PppConfig(vj=vj),
                        default_route=False)
        stack = Stack()
        try:
            stack.add_device(dev)
            if not stack.run(until=lambda: dev.link_up and stack.interfaces[0].addrs != [],
                             timeout=15):
                raise RuntimeError(f"no link: {peer.output()}")
            target = (peer.peer_ip, srv.port)
            lcp = dev.link.lcp_result
            res["tx_accm"] = None if lcp is None else lcp.tx_accm
            res["rx_accm"] = None if lcp is None else lcp.rx_accm
            esc0, out0 = dev.stats["link.hdlc_tx_escaped"], dev.stats["serial_write_bytes"]
            refused0 = dev.stats["tx_refused"]

            # hilkit -> slirp
            data = pattern(size, 1)
            with create_connection(stack, target, timeout=120) as s:
                conn = s.tcp.conn
                assert conn is not None
                undo = trace_connection(conn, dev, time.monotonic() * 1000.0) if trace \
                    else None
                s.sendall(b"S")
                t0 = time.monotonic()
                s.sendall(data)
                s.shutdown(SHUT_WR)
                count = b""
                while len(count) < 8:
                    chunk = s.recv(8 - len(count))
                    if not chunk:
                        raise RuntimeError("sink closed early")
                    count += chunk
                up_s = time.monotonic() - t0
                if undo is not None:
                    undo()
                res["up_stats"] = {k: conn.stats.get(k, 0) for k in COUNTERS}
                res["up_srtt_ms"], res["up_rto_ms"] = conn.srtt, conn.rto
            if struct.unpack("!Q", count)[0] != size:
                raise RuntimeError(f"sink counted {struct.unpack('!Q', count)[0]}")
            res["up_Bps"] = size / up_s
            res["line_bytes_up"] = dev.stats["serial_write_bytes"] - out0
            res["escaped_up"] = dev.stats["link.hdlc_tx_escaped"] - esc0
            res["device_refused"] = dev.stats["tx_refused"] - refused0

            # slirp -> hilkit
            with create_connection(stack, target, timeout=120) as s:
                t0 = time.monotonic()
                s.sendall(b"D" + struct.pack("!Q", size))
                got = bytearray()
                while chunk := s.recv(65536):
                    got += chunk
                down_s = time.monotonic() - t0
                conn = s.tcp.conn
                res["down_stats"] = {k: conn.stats.get(k, 0) for k in COUNTERS} \
                    if conn is not None else {}
            if bytes(got) != pattern(size, size):
                raise RuntimeError("download corrupted")
            res["down_Bps"] = size / down_s
        finally:
            stack.close()
            srv.close()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64 * 1024, help="bytes each way")
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--no-vj", dest="vj", action="store_false", help="VJ compression off")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--trace", action="store_true", help="per-segment log to stderr")
    a = ap.parse_args(argv)
    for i in range(a.runs):
        try:
            r = measure(a.size, a.baud, a.vj, a.trace)
        except Exception as e:  # the setup, not the figure
            print(f"setup failed: {e!r}", file=sys.stderr)
            return 2
        c = r["ceiling"]
        print(f"run {i + 1}: {a.size} B at {a.baud} baud, VJ {'on' if a.vj else 'off'}, "
              f"ceiling {c:.0f} B/s")
        print(f"  hilkit->slirp {r['up_Bps']:7.0f} B/s {100 * r['up_Bps'] / c:5.1f} %  "
              f"{r['up_stats']}  srtt={r['up_srtt_ms']} rto={r['up_rto_ms']:.0f} "
              f"device_refused={r['device_refused']}")
        print(f"  line bytes up {r['line_bytes_up']} ({r['escaped_up']} escaped; "
              f"ACCM we send with {r['tx_accm']:#x}, the peer's for us {r['rx_accm']:#x}): "
              f"at most {100 * a.size / max(r['line_bytes_up'], 1):.1f} % of the line is "
              f"payload")
        print(f"  slirp->hilkit {r['down_Bps']:7.0f} B/s {100 * r['down_Bps'] / c:5.1f} %  "
              f"(hilkit's ACKing side: {r['down_stats']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

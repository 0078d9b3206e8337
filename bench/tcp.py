"""TCP figures: hilkit's TCP on a TAP next to the kernel's on a veth, in one run.

Topology (both namespaces created here and deleted on exit, even on error or Ctrl-C):

    ns A: kernel 192.168.5.5/24 on TAP hk0  <->  hilkit 192.168.5.4 (this process, plain)
    ns A: kernel 192.168.7.5/24 on TAP hk1  <->  hilkit 192.168.7.4 (this process, 1 % loss)
    ns A: kernel 192.168.8.5/24 on TAP hk2  <->  hilkit 192.168.8.4 (this process, offloads:
          TapDevice(offload=True), checksums and TCP segmentation left to the kernel)
    ns A: kernel 192.168.9.5/24 on TAP hk3  <->  hilkit 192.168.9.4 (``hilkit serve``, a
          process of its own: its RSS with 1000 idle connections is ``idle_rss``)
    ns A: kernel 192.168.6.5/24 on veth va  <->  ns B: kernel 192.168.6.4/24 on veth vb

hilkit runs in this process: the TAPs are opened by a thread that entered ns A,
and every stack's run() loop is driven by the main thread only (the blocking
facade drives it itself; kernel-side threads only call ``stack.wake()``).
Kernel-side peers are sockets made inside the namespaces. A goodput transfer's kernel
end, and each end of the connections-per-second loops, runs in a process of its own
(``bench/tcp.py --peer``, given the socket or the address), as a peer application
would: in a thread here it would share the interpreter lock with hilkit. The other
kernel-side loops are served from threads.
All links have MTU 1500. Nothing is configured in, or sent to, the machine's
own namespace. MB = 10^6 bytes. Floors are printed as information; the script
exits 0 unless the setup itself failed (exit 2). Results also go to
reports/bench-tcp.json.

Two figures measure what a peer can make hilkit spend: ``non_reading_clients_rss``
(the process's RSS with 1000 kernel clients of hilkit's chargen that never
read; then a new client must still be served) and ``out_of_order_segment_cost``
(CPU time of an out-of-order segment into a connection holding 1000 one-byte
ranges, as a ratio to an in-order segment; no device involved). ``--only
NAME,...`` measures just the named figures (e.g. against another checkout,
with PYTHONPATH) and prints them as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import random
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from hilkit.drivers.tap import TapDevice
from hilkit.port.impair import ImpairedDevice, Impairment
from hilkit.rig.netns import Netns, NetnsError
from hilkit.services import CHARGEN_PORT, ECHO_PORT, start_tcp_services
from hilkit.stack import Stack, tcp
from hilkit.stack.sockets import SHUT_WR, Socket, create_connection
from hilkit.stack.tcp_conn import Connection, State, TcpConfig

MTU = 1500
TAP0, HK0_IP, K0_IP = "hk0", "192.168.5.4", "192.168.5.5"  # plain link
TAP1, HK1_IP, K1_IP = "hk1", "192.168.7.4", "192.168.7.5"  # impaired link
TAP2, HK2_IP, K2_IP = "hk2", "192.168.8.4", "192.168.8.5"  # TAP offloads
TAP3, HK3_IP, K3_IP = "hk3", "192.168.9.4", "192.168.9.5"  # hilkit serve, a process
VETH_A, VETH_B, KA_IP, KB_IP = "va", "vb", "192.168.6.5", "192.168.6.4"
NETMASK = "255.255.255.0"
SINK_PORT, SOURCE_PORT, KECHO_PORT = 5001, 5002, 5007
MIB = 1 << 20
CHUNK = MIB  # what each sendall/recv moves
GOODPUT_BYTES, LOSSY_BYTES = 64 * MIB, 16 * MIB
LOSS_SPEC = "loss=1%,seed=7"  # both directions: data and ACKs are lost
LOSS_BASED_CC = ("cubic", "reno")  # the kernel's loss-based senders, beside its default
CPS_N, IDLE_N = 500, 1000
CHARGEN_N = 1000  # chargen clients that never read
OOO_RANGES, OOO_SEGS = 1000, 2000  # one-byte ranges queued; segments timed of each kind
GOODPUT_FLOOR_MBS, OFFLOAD_FLOOR_MBS = 100.0, 300.0  # each way, MTU 1500
LOSSY_FLOOR = 0.6  # 1 % loss: of the lossless goodput
CPS_FLOOR = 0.5  # of the kernel's connections per second
IDLE_RSS_FLOOR_MB, RSS_FLOOR_MB = 32.0, 64.0  # 1000 idle conns; 1000 non-reading clients
IO_TIMEOUT = 30.0  # kernel-side socket timeout: a stuck peer fails the figure, not the run
PHASE_LIMIT = 40.0  # most seconds one transfer may take before it is reported unfinished
REPORT = Path(__file__).resolve().parent.parent / "reports" / "bench-tcp.json"
TCPI_TOTAL_RETRANS = 100  # offset of tcpi_total_retrans in struct tcp_info (linux/tcp.h)
Fig = dict[str, Any]


class SetupError(RuntimeError):
    pass


class Worker(threading.Thread):
    """Runs ``fn`` in a daemon thread; wakes ``stack`` (thread-safe) when it ends."""

    def __init__(self, fn: Callable[[], Any], stack: Stack | None = None) -> None:
        super().__init__(daemon=True)
        self.fn, self.stack = fn, stack
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as e:  # handed to get()
            self.error = e
        finally:
            self.done.set()
            if self.stack is not None:
                with contextlib.suppress(OSError):
                    self.stack.wake()

    def get(self, timeout: float = IO_TIMEOUT) -> Any:
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError("kernel-side thread did not finish")
        if self.error is not None:
            raise self.error
        return self.result


class Verifier:
    """Counts received bytes and checks them against ``data`` repeated (memcmp, no hash).

    ``bytes`` is read live from the main thread to report an unfinished transfer.
    """

    def __init__(self, data: bytes) -> None:
        self.ref, self.size = data + data, len(data)
        self.bytes = 0
        self.ok = True

    def feed(self, d: bytes) -> None:  # len(d) <= len(data)
        off = self.bytes % self.size
        if d != self.ref[off:off + len(d)]:
            self.ok = False
        self.bytes += len(d)


def mbs(nbytes: int, secs: float) -> float:
    return nbytes / secs / 1e6 if secs > 0 else 0.0


def rss_kib() -> int:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(m[1]) if m else 0


def listener(ns: Netns, ip: str, port: int, backlog: int = 128,
             cc: str | None = None) -> socket.socket:
    """A kernel listener in ``ns``; ``cc``: the congestion control its connections use
    (TCP_CONGESTION, which accepted sockets take from their listener)."""
    srv = ns.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if cc is not None:
        srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    srv.bind((ip, port))
    srv.listen(backlog)
    srv.settimeout(IO_TIMEOUT)
    return srv


def total_retrans(c: socket.socket) -> int:
    info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, TCPI_TOTAL_RETRANS)[0]) if len(info) >= 104 else -1


# -- kernel-side loops (blocking stdlib sockets; in threads, or in a peer process) ---------
def k_sink(srv: socket.socket, ver: Verifier) -> Fig:
    """Accept one connection, read (and check) until EOF."""
    c, _ = srv.accept()
    with c:
        c.settimeout(IO_TIMEOUT)
        while d := c.recv(CHUNK):
            ver.feed(d)
        t_end = time.perf_counter()
    return {"bytes": ver.bytes, "verified": ver.ok, "t_end": t_end}


def k_source(srv: socket.socket, data: bytes, total: int) -> Fig:
    """Accept one connection, send ``total`` bytes, FIN, wait for the peer's FIN."""
    c, _ = srv.accept()
    with c:
        c.settimeout(IO_TIMEOUT)
        t0 = time.perf_counter()
        for _ in range(total // len(data)):
            c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        while c.recv(65536):  # the receiver closes once it has read everything
            pass
        cc = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
        return {"t0": t0, "kernel_total_retrans": total_retrans(c),
                "kernel_cc": cc.rstrip(b"\0").decode()}


def k_echo_server(srv: socket.socket, n: int) -> int:
    """Serve ``n`` connections one after another: echo, then wait for the client's FIN."""
    served = 0
    for _ in range(n):
        c, _ = srv.accept()
        with c:
            c.settimeout(IO_TIMEOUT)
            while d := c.recv(4096):
                c.sendall(d)
        served += 1
    return served


def k_client_cps(ip: str, port: int, n: int) -> Fig:
    """``n`` sequential connect / send 1 B / recv 1 B / close (call inside the namespace)."""
    bad = 0
    t0 = time.perf_counter()
    for _ in range(n):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as c:
            c.settimeout(5.0)
            c.connect((ip, port))
            c.sendall(b"x")
            bad += c.recv(1) != b"x"
    secs = time.perf_counter() - t0
    return {"connections": n, "bad_echoes": bad, "elapsed_s": secs, "per_s": n / secs}


# -- the kernel's end of a transfer, in a process of its own -------------------------------
DATA_SEED = 7  # the bytes moved: the same in this process and in a peer process


def transfer_data() -> bytes:
    return random.Random(DATA_SEED).randbytes(CHUNK)


def peer_process(role: str, srv: socket.socket, total: int, stack: Stack | None) -> Worker:
    """Run ``k_sink`` (role "sink"), ``k_source`` ("source") or ``k_echo_server``
    ("echo": ``total`` connections) on ``srv`` in a process of its own, so the kernel's
    Python end does not share this process's interpreter lock with hilkit (as a real peer
    application would not); a Worker thread waits for its figures."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--peer", role, str(srv.fileno()), str(total)],
        pass_fds=(srv.fileno(),), stdout=subprocess.PIPE, text=True)
    return _peer_worker(role, proc, stack)


def peer_client(ns: Netns, ip: str, port: int, n: int, stack: Stack | None) -> Worker:
    """``k_client_cps`` to ``ip``:``port`` from a process of its own inside ``ns``."""
    proc = ns.popen([sys.executable, __file__, "--peer", "connect", f"{ip}:{port}", str(n)],
                    stdout=subprocess.PIPE, text=True)
    return _peer_worker("connect", cast("subprocess.Popen[str]", proc), stack)


def _peer_worker(role: str, proc: subprocess.Popen[str], stack: Stack | None) -> Worker:
    """Wait for the peer's "ready" (imports done: timing may start), then a Worker thread
    waits for its figures (one line of JSON)."""
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":  # imports done: timing may start
        proc.kill()
        raise SetupError(f"the {role} peer process did not start")

    def wait() -> Fig:
        try:
            out, _ = proc.communicate(timeout=IO_TIMEOUT + PHASE_LIMIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise TimeoutError(f"the {role} peer process did not finish") from None
        if proc.returncode != 0:
            raise RuntimeError(f"the {role} peer process failed ({proc.returncode})")
        result: Fig = json.loads(out)
        return result

    w = Worker(wait, stack)
    w.start()
    return w


PEER_ROLES = ("sink", "source", "echo", "connect")


def peer_main(role: str, arg: str, total: int) -> int:
    """A peer process: ``arg`` is the listening socket's descriptor, or for "connect"
    the IP:PORT to connect to."""
    r: Fig
    if role == "connect":
        ip, port = arg.rsplit(":", 1)
        print("ready", flush=True)
        r = k_client_cps(ip, int(port), total)
    else:
        srv = socket.socket(fileno=int(arg))
        srv.settimeout(IO_TIMEOUT)
        data = transfer_data()
        print("ready", flush=True)
        if role == "echo":
            r = {"served": k_echo_server(srv, total)}
        else:
            r = k_sink(srv, Verifier(data)) if role == "sink" else k_source(srv, data, total)
    print(json.dumps(r))
    return 0


# -- goodput ------------------------------------------------------------------------------
def hk_send(st: Stack, ns: Netns, kip: str, data: bytes, total: int) -> Fig:
    """hilkit -> kernel: blocking facade sends ``total`` bytes; the kernel reads to EOF."""
    srv = listener(ns, kip, SINK_PORT)
    w = peer_process("sink", srv, total, st)
    fig: Fig = {"bytes": total}
    s: Socket | None = None
    try:
        s = create_connection(st, (kip, SINK_PORT), timeout=10)
        t0 = time.perf_counter()
        end = t0 + PHASE_LIMIT
        try:
            for _ in range(total // len(data)):
                s.settimeout(max(0.001, end - time.perf_counter()))
                s.sendall(data)
            s.shutdown(SHUT_WR)
            finished = st.run(until=w.done.is_set, timeout=max(0.0, end - time.perf_counter()))
        except TimeoutError:
            finished = False
        fig["hilkit_tcp_info"] = s.tcp.info()
        if not finished:
            secs = time.perf_counter() - t0
            conn = s.tcp.conn
            acked = 0 if conn is None else max(tcp.seq_diff(conn.snd_una, conn.iss) - 1, 0)
            s.tcp.abort()  # RST: the kernel's reader ends with ECONNRESET
            st.run(until=w.done.is_set, timeout=2)
            return fig | {"complete": False, "received": acked, "elapsed_s": secs,
                          "mb_per_s": mbs(acked, secs)}
        r = w.get()
        secs = r["t_end"] - t0
        return fig | {"complete": r["bytes"] == total, "received": r["bytes"],
                      "verified": r["verified"], "elapsed_s": secs,
                      "mb_per_s": mbs(r["bytes"], secs)}
    finally:
        if s is not None:
            s.close()
        srv.close()


def hk_recv(st: Stack, ns: Netns, kip: str, data: bytes, total: int,
            cc: str | None = None) -> Fig:
    """kernel -> hilkit: the kernel sends ``total`` bytes (with congestion control ``cc``,
    or the namespace's default); the facade reads to EOF."""
    srv = listener(ns, kip, SOURCE_PORT, cc=cc)
    w = peer_process("source", srv, total, st)
    fig: Fig = {"bytes": total}
    s: Socket | None = None
    try:
        s = create_connection(st, (kip, SOURCE_PORT), timeout=10)
        t0 = time.perf_counter()
        end, ver = t0 + PHASE_LIMIT, Verifier(data)
        try:
            while True:
                s.settimeout(max(0.001, end - time.perf_counter()))
                d = s.recv(CHUNK)
                if not d:
                    break
                ver.feed(d)
            finished = True
        except TimeoutError:
            finished = False
        secs = time.perf_counter() - t0
        n = ver.bytes
        fig |= {"complete": finished and n == total, "received": n, "elapsed_s": secs,
                "mb_per_s": mbs(n, secs), "hilkit_tcp_info": s.tcp.info()}
        if not finished:
            s.tcp.abort()
            st.run(until=w.done.is_set, timeout=2)
            return fig
        fig["verified"] = ver.ok
        s.close()  # our FIN: the kernel's sender sees EOF and reads its tcp_info
        st.run(until=w.done.is_set, timeout=5)
        with contextlib.suppress(Exception):
            peer = w.get(1)
            fig["kernel_total_retrans"] = peer["kernel_total_retrans"]
            fig["kernel_cc"] = peer["kernel_cc"]
        return fig
    finally:
        if s is not None:
            s.close()
        srv.close()


def kk_goodput(src: Netns, dst: Netns, dst_ip: str, data: bytes, total: int) -> Fig:
    """kernel -> kernel over the veth, the same Python loops as on the hilkit side."""
    srv = listener(dst, dst_ip, SINK_PORT)
    w = peer_process("sink", srv, total, None)
    try:
        with src.socket(socket.AF_INET, socket.SOCK_STREAM) as c:
            c.settimeout(IO_TIMEOUT)
            c.connect((dst_ip, SINK_PORT))
            t0 = time.perf_counter()
            for _ in range(total // len(data)):
                c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            r = w.get()
            retrans = total_retrans(c)
    finally:
        srv.close()
    secs = r["t_end"] - t0
    return {"bytes": total, "complete": r["bytes"] == total, "received": r["bytes"],
            "verified": r["verified"], "elapsed_s": secs,
            "mb_per_s": mbs(r["bytes"], secs), "kernel_total_retrans": retrans}


# -- connections per second ---------------------------------------------------------------
def hk_client_cps(st: Stack, ns: Netns, kip: str, n: int) -> Fig:
    srv = listener(ns, kip, KECHO_PORT)
    w = peer_process("echo", srv, n, st)
    bad = 0
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            s = create_connection(st, (kip, KECHO_PORT), timeout=5)
            s.sendall(b"x")
            bad += s.recv(1) != b"x"
            s.close()
        secs = time.perf_counter() - t0
        st.run(until=w.done.is_set, timeout=5)  # the last FIN/ACKs
        served = w.get(1)["served"]
    finally:
        srv.close()
    return {"connections": n, "served": served, "bad_echoes": bad, "elapsed_s": secs,
            "per_s": n / secs}


def k_to_hk_cps(st: Stack, ns: Netns, hip: str, n: int) -> Fig:
    w = peer_client(ns, hip, ECHO_PORT, n, st)
    st.run(until=w.done.is_set, timeout=60)
    fig: Fig = w.get(1)
    return fig


def kk_cps(a: Netns, b: Netns, n: int) -> Fig:
    srv = listener(b, KB_IP, KECHO_PORT)
    try:
        server = peer_process("echo", srv, n, None)
        fig: Fig = peer_client(a, KB_IP, KECHO_PORT, n, None).get()
        server.get()
    finally:
        srv.close()
    return fig


# -- memory with idle connections ---------------------------------------------------------
def rss_kib_of(pid: int) -> int:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m[1]) if m else 0


def idle_rss(ns: Netns, n: int) -> Fig:
    """``hilkit serve`` in a process of its own (what a small host runs), on a TAP of its
    own in ns A; ``n`` kernel clients connect to its echo port, each gets one byte
    echoed, then all idle: its RSS before them and with them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    ns.ip("tuntap", "add", "dev", TAP3, "mode", "tap")
    ns.ip("addr", "add", f"{K3_IP}/24", "dev", TAP3)
    ns.ip("link", "set", TAP3, "up")
    proc = subprocess.Popen(  # ip netns exec execs python: the same pid
        ["ip", "netns", "exec", ns.name, sys.executable, "-m", "hilkit.cli", "serve",
         "--tap", TAP3, "--ip", f"{HK3_IP}/24"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        if not select.select([proc.stdout], [], [], 20)[0] or not proc.stdout.readline():
            raise SetupError("hilkit serve did not start")
        time.sleep(0.5)  # idle: whatever start-up left behind is settled
        before = rss_kib_of(proc.pid)

        def open_all() -> int:  # runs in a thread inside ns A
            served = 0
            for _ in range(n):
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(c)
                c.settimeout(5.0)
                c.connect((HK3_IP, ECHO_PORT))
                c.sendall(b"x")
                served += c.recv(1) == b"x"
            return served

        est = ns.call(open_all)
        time.sleep(0.5)  # idle: delayed ACKs and timers settled
        after = rss_kib_of(proc.pid)
    finally:
        for c in socks:
            c.close()
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {"connections": n, "established_in_hilkit": est, "before_kib": before,
            "after_kib": after, "after_mb": after * 1024 / 1e6,
            "per_conn_kib": (after - before) / n,
            "rlimit_nofile_before": [soft, hard], "rlimit_nofile": list(nofile)}


# -- memory with clients that never read ------------------------------------------------
def chargen_conns(st: Stack) -> list[Connection]:
    conns = getattr(st.tcp, "conns", {})
    return [c for c in conns.values()
            if c.local[1] == CHARGEN_PORT and c.state == State.ESTABLISHED]


def buffered(st: Stack) -> int:
    """Bytes in hilkit's TCP buffers (send, receive, out-of-order) over all connections."""
    total = 0
    for c in getattr(st.tcp, "conns", {}).values():
        ooo = c.ooo
        total += len(c.sndbuf) + len(c.rcvbuf) + (
            ooo.nbytes if hasattr(ooo, "nbytes") else sum(len(b) for _, b in ooo))
    return total


def chargen_rss(st: Stack, ns: Netns, hip: str, n: int) -> Fig:
    """``n`` kernel clients connect to hilkit's chargen and never read; hilkit's RSS once
    the data stopped flowing; then one more client must connect, send and receive."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
    socks: list[socket.socket] = []
    opened, measured = threading.Event(), threading.Event()

    def clients() -> Fig:  # a thread inside ns A: blocking kernel sockets
        for _ in range(n):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(c)
            c.settimeout(10.0)
            c.connect((hip, CHARGEN_PORT))  # and never recv()
        opened.set()
        st.wake()
        if not measured.wait(120):
            raise TimeoutError("main thread never measured")
        got = bytearray()
        t0 = time.perf_counter()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as c:
            c.settimeout(10.0)
            c.connect((hip, CHARGEN_PORT))
            c.sendall(b"a new client\r\n")
            while len(got) < 64 * 1024 and (d := c.recv(65536)):
                got += d
        return {"new_client_bytes": len(got), "new_client_s": time.perf_counter() - t0,
                "new_client_pattern_ok": bytes(got[:72]) == bytes(range(32, 104))}

    st.run(timeout=0.2)
    gc.collect()
    before = rss_kib()
    w = Worker(lambda: ns.call(clients), st)
    w.start()
    fig: Fig = {"connections": n}
    try:
        st.run(until=lambda: opened.is_set() and len(chargen_conns(st)) >= n, timeout=120)
        est = len(chargen_conns(st))
        # until the data stops flowing: the kernel's receive buffers and ours are full
        t0, last = time.perf_counter(), -1
        while time.perf_counter() - t0 < 60:
            st.run(timeout=1.0)
            acked = sum(c.snd_una for c in chargen_conns(st))
            if acked == last:
                break
            last = acked
        gc.collect()
        after = rss_kib()
        held = buffered(st)
        fig |= {"established_in_hilkit": est, "before_kib": before, "after_kib": after,
                "after_mb": after * 1024 / 1e6, "per_conn_kib": (after - before) / n,
                "tcp_buffered_bytes": held, "settle_s": time.perf_counter() - t0}
        measured.set()
        st.run(until=w.done.is_set, timeout=30)
        fig |= w.get(1)
    finally:
        measured.set()
        for c in socks:
            c.close()
        st.run(until=lambda: not chargen_conns(st), timeout=20)
    fig["stack_stats"] = {k: v for k, v in st.stats.items() if k.startswith("tcp.")}
    return fig


# -- CPU of out-of-order segments -------------------------------------------------------------
def _handshake(cfg: TcpConfig) -> tuple[Connection, Connection]:
    """Two connections, a active and b passive, after a handshake carried by hand."""
    la, lb = (0x0A000001, 40000), (0x0A000002, 80)
    a = Connection(la, lb, 1000, 1500, cfg, 0.0)
    b = Connection(lb, la, 500_000, 1500, cfg, 0.0)

    def carry(src: Connection, dst: Connection, first: bool = False) -> None:
        out, src.outbox = src.outbox, []
        for hdr, pl in out:
            seg = tcp.parse(memoryview(bytes(hdr) + bytes(pl)), src.local[0], src.remote[0])
            assert not isinstance(seg, str)
            dst.accept_syn(seg, 0.0) if first else dst.input(seg, 0.0)

    a.connect(0.0)
    carry(a, b, first=True)
    carry(b, a)
    carry(a, b)
    assert a.state == b.state == State.ESTABLISHED
    return a, b


def _segment(a: Connection, b: Connection, off: int, data: bytes) -> Any:
    ts = (b.ts_recent, 0) if b.ts_ok else None
    hdr = tcp.header(a.local[0], b.local[0], a.local[1], b.local[1], (b.rcv_nxt + off) & 0xFFFFFFFF,
                     b.snd_nxt, tcp.ACK, 0xFFFF, tcp.build_options(ts=ts), data)
    seg = tcp.parse(memoryview(hdr + data), a.local[0], b.local[0])
    assert not isinstance(seg, str)
    return seg


def _time_inputs(b: Connection, segs: list[Any]) -> float:
    t0 = time.perf_counter()
    for seg in segs:
        b.input(seg, 1.0)
        b.outbox.clear()
    return time.perf_counter() - t0


def ooo_cost(ranges: int = OOO_RANGES, n: int = OOO_SEGS, rounds: int = 5) -> Fig:
    """CPU per segment: ``n`` one-byte segments in order (into an empty queue) against ``n``
    one-byte out-of-order segments at random places among ``ranges`` queued one-byte
    ranges (touching one, both or neither), best of ``rounds``; ACKs with SACK included."""
    cfg = TcpConfig(ooo_max_segments=ranges + n + 16)  # nothing dropped: all work is done
    rng = random.Random(5)
    best_in, best_acked, best_ooo = float("inf"), float("inf"), float("inf")
    for _ in range(rounds):
        a, b = _handshake(cfg)
        in_order = [_segment(a, b, i, b"i") for i in range(n)]
        best_in = min(best_in, _time_inputs(b, in_order))
        # in order while one range waits far ahead: each segment draws an ACK with SACK
        # at once, as every out-of-order segment must (RFC 5681 §4.2)
        a, b = _handshake(cfg)
        b.input(_segment(a, b, 60_000, b"r"), 1.0)
        in_order = [_segment(a, b, i, b"i") for i in range(n)]
        best_acked = min(best_acked, _time_inputs(b, in_order))
        a, b = _handshake(cfg)
        for i in range(ranges):
            b.input(_segment(a, b, 8 * i + 8, b"r"), 1.0)
        b.outbox.clear()
        assert len(b.ooo) == ranges
        picks = [_segment(a, b, 8 * rng.randrange(ranges) + 8 + rng.randrange(1, 8), b"o")
                 for _ in range(n)]
        best_ooo = min(best_ooo, _time_inputs(b, picks))
    return {"ranges": ranges, "segments": n, "in_order_us": best_in / n * 1e6,
            "in_order_acked_us": best_acked / n * 1e6, "out_of_order_us": best_ooo / n * 1e6,
            "ratio": best_ooo / best_in, "ratio_to_acked_in_order": best_ooo / best_acked}


# -- the run ------------------------------------------------------------------------------
def open_tap(a: Netns, name: str, kip: str, offload: bool = False) -> TapDevice:
    tap: TapDevice = a.call(lambda: TapDevice(name, mtu=MTU, offload=offload))
    a.ip("link", "set", name, "mtu", str(MTU))
    a.ip("addr", "add", f"{kip}/24", "dev", name)
    a.ip("link", "set", name, "up")
    return tap


def setup(a: Netns, b: Netns) -> tuple[Stack, Stack, ImpairedDevice, Stack]:
    tap0, tap1 = open_tap(a, TAP0, K0_IP), open_tap(a, TAP1, K1_IP)
    tap2 = open_tap(a, TAP2, K2_IP, offload=True)
    # created by ip in ns A with its peer placed straight into ns B: never in our own namespace
    a.ip("link", "add", VETH_A, "mtu", str(MTU), "type", "veth", "peer", "name", VETH_B,
         "mtu", str(MTU), "netns", b.name)
    a.ip("addr", "add", f"{KA_IP}/24", "dev", VETH_A)
    b.ip("addr", "add", f"{KB_IP}/24", "dev", VETH_B)
    a.ip("link", "set", VETH_A, "up")
    b.ip("link", "set", VETH_B, "up")
    st0 = Stack()
    st0.add_device(tap0)
    st0.link_add(tap0, HK0_IP, NETMASK)
    start_tcp_services(st0)
    st1 = Stack()
    dev1 = ImpairedDevice(tap1, Impairment.parse(LOSS_SPEC), clock=st1.clock)
    st1.add_device(dev1)
    st1.link_add(dev1, HK1_IP, NETMASK)
    st2 = Stack()
    st2.add_device(tap2)
    st2.link_add(tap2, HK2_IP, NETMASK)
    return st0, st1, dev1, st2


def guarded(res: Fig, key: str, fn: Callable[[], Fig]) -> None:
    """A figure that fails is reported as failed; the run goes on."""
    try:
        res[key] = fn()
    except Exception as e:
        res[key] = {"error": f"{type(e).__name__}: {e}"}


def measure(a: Netns, b: Netns, st0: Stack, st1: Stack, dev1: ImpairedDevice,
            st2: Stack) -> Fig:
    res: Fig = {}
    # RSS first, while the process holds nothing but an idle stack (no leftovers of
    # the transfers nor the 500 TIME-WAIT connections the cps run leaves behind)
    guarded(res, "idle_rss", lambda: idle_rss(a, IDLE_N))
    guarded(res, "non_reading_clients_rss",
            lambda: chargen_rss(st0, a, HK0_IP, CHARGEN_N))
    guarded(res, "out_of_order_segment_cost", ooo_cost)
    data = transfer_data()  # after the RSS figures: the bench's own buffer is not hilkit's
    gp: Fig = {}
    guarded(gp, "hilkit_recv", lambda: hk_recv(st0, a, K0_IP, data, GOODPUT_BYTES))
    guarded(gp, "hilkit_send", lambda: hk_send(st0, a, K0_IP, data, GOODPUT_BYTES))
    guarded(gp, "kernel_a_to_b", lambda: kk_goodput(a, b, KB_IP, data, GOODPUT_BYTES))
    guarded(gp, "kernel_b_to_a", lambda: kk_goodput(b, a, KA_IP, data, GOODPUT_BYTES))
    guarded(gp, "offload_recv", lambda: hk_recv(st2, a, K2_IP, data, GOODPUT_BYTES))
    guarded(gp, "offload_send", lambda: hk_send(st2, a, K2_IP, data, GOODPUT_BYTES))
    res["goodput"] = gp
    cps: Fig = {}
    guarded(cps, "hilkit_client", lambda: hk_client_cps(st0, a, K0_IP, CPS_N))
    guarded(cps, "kernel_client_to_hilkit", lambda: k_to_hk_cps(st0, a, HK0_IP, CPS_N))
    guarded(cps, "kernel_to_kernel", lambda: kk_cps(a, b, CPS_N))
    res["cps"] = cps
    lossy: Fig = {}
    guarded(lossy, "hilkit_recv", lambda: hk_recv(st1, a, K1_IP, data, LOSSY_BYTES))
    guarded(lossy, "hilkit_send", lambda: hk_send(st1, a, K1_IP, data, LOSSY_BYTES))
    for cc in LOSS_BASED_CC:  # what a C sender that backs off on loss gets through it
        fig: Fig = {}
        guarded(fig, "lossless", functools.partial(hk_recv, st0, a, K0_IP, data, LOSSY_BYTES, cc))
        guarded(fig, "lossy", functools.partial(hk_recv, st1, a, K1_IP, data, LOSSY_BYTES, cc))
        lossy[f"kernel_{cc}_recv"] = fig
    lossy["impair_counters"] = {"tx": dev1.impair_counters_tx.as_dict(),
                                "rx": dev1.impair_counters_rx.as_dict()}
    res["lossy"] = lossy
    res["methods"] = methods(a, b)
    return res


def methods(a: Netns, b: Netns) -> Fig:
    py = ("a peer process (bench/tcp.py --peer) for the kernel's end, sockets made"
          " with Netns.socket() or in the namespace")
    hk0 = f"hilkit Stack on TapDevice({TAP0!r}, mtu={MTU}) opened via ns.call in {a.name}"
    return {
        "hilkit_recv": f"{hk0}; hilkit.stack.sockets.create_connection to {K0_IP}:{SOURCE_PORT},"
                       f" recv({CHUNK}) to EOF, each chunk compared with the data sent;"
                       " kernel: accept, sendall"
                       f" {GOODPUT_BYTES // CHUNK} x {CHUNK} B, shutdown(SHUT_WR) ({py});"
                       " time from connect() returning to EOF read",
        "hilkit_send": f"{hk0}; create_connection to {K0_IP}:{SINK_PORT}, sendall"
                       f" {GOODPUT_BYTES // CHUNK} x {CHUNK} B, shutdown(SHUT_WR); kernel:"
                       f" recv({CHUNK}) to EOF, compared with the data sent ({py}); time"
                       " from the first sendall to the kernel reading EOF",
        "kernel": f"veth {VETH_A} ({a.name}, {KA_IP}) <-> {VETH_B} ({b.name}, {KB_IP}), MTU"
                  f" {MTU}; the same Python sender/receiver loops (iperf3 not used); {py};"
                  " time from the first sendall to the receiver reading EOF",
        "offload": f"as hilkit_send/hilkit_recv, on TapDevice({TAP2!r}, mtu={MTU},"
                   f" offload=True) ({K2_IP} <-> {HK2_IP}): IFF_VNET_HDR, TUNSETOFFLOAD"
                   " CSUM|TSO4; TCP checksums left partial both ways, hilkit's segments up"
                   " to 64 KB cut by the kernel, the kernel's unsegmented ones taken whole",
        "lossy": f"as hilkit_send/hilkit_recv with {LOSSY_BYTES} B, on TAP {TAP1}"
                 f" ({K1_IP} <-> {HK1_IP}) wrapped in ImpairedDevice(Impairment.parse("
                 f"{LOSS_SPEC!r})) (both directions, so ACKs are lost too); retransmits/timeouts"
                 " from sock.tcp.info(), kernel retransmits from TCP_INFO tcpi_total_retrans;"
                 f" each transfer stops after {PHASE_LIMIT:g} s; no kernel figure: this"
                 " machine's kernel has no netem. The kernel's sender uses the namespace's"
                 " default congestion control (kernel_cc), and then each of"
                 f" {', '.join(LOSS_BASED_CC)} (TCP_CONGESTION on the listener), {LOSSY_BYTES} B"
                 f" on {TAP0} and on {TAP1}: the ratio is of that one algorithm's two figures."
                 " hilkit's sender is NewReno (RFC 6582) with SACK (RFC 6675)",
        "cps_hilkit_client": f"{CPS_N} x (create_connection, sendall 1 B, recv 1 B, close) from"
                             f" hilkit to a sequential kernel echo server at {K0_IP}:{KECHO_PORT}"
                             f" ({py})",
        "cps_kernel_client": f"{CPS_N} x (connect, sendall 1 B, recv 1 B, close) from a"
                             f" process in {a.name} to hilkit's echo {HK0_IP}:{ECHO_PORT}"
                             " (hilkit.services.start_tcp_services; the stack's run() in the"
                             f" main thread) ({py})",
        "cps_kernel": f"the kernel client loop in {a.name} to the kernel echo server loop at"
                      f" {KB_IP}:{KECHO_PORT} in {b.name}, over the veth, each in a process of"
                      f" its own ({py})",
        "idle_rss": f"VmRSS (/proc/PID/status) of a `hilkit serve --tap {TAP3} --ip"
                    f" {HK3_IP}/24` process in {a.name}, 0.5 s after it started and 0.5 s"
                    f" after a thread in {a.name} opened {IDLE_N} connections to"
                    f" {HK3_IP}:{ECHO_PORT}, each sending 1 B and reading its echo, then"
                    " left idle (established_in_hilkit: the echoes received)",
        "non_reading_clients_rss": f"VmRSS of this process after gc.collect(), after a thread"
                                   f" in {a.name} connected {CHARGEN_N} kernel sockets to"
                                   f" hilkit's chargen {HK0_IP}:{CHARGEN_PORT} (hilkit.services)"
                                   " and never read from them, once the sum of SND.UNA over"
                                   " hilkit's connections stopped moving for 1 s (kernel"
                                   " receive buffers and hilkit's send buffers full); run"
                                   " after idle_rss; then a new kernel client connects, sends"
                                   " 14 B and reads 64 KiB of the pattern",
        "out_of_order_segment_cost": f"no device: two hilkit.stack.tcp_conn.Connection objects"
                                     " (timestamps, SACK) after a handshake; time of"
                                     f" Connection.input for {OOO_SEGS} one-byte segments at"
                                     f" RCV.NXT into an empty queue, against {OOO_SEGS} one-byte"
                                     " segments at random places in the gaps of"
                                     f" {OOO_RANGES} queued one-byte ranges (8 B apart);"
                                     " the ACKs they draw are built too; best of 5; ratio ="
                                     " out-of-order / in-order; ratio_to_acked_in_order: the"
                                     " same against in-order segments that each draw an"
                                     " immediate ACK (one range queued 60000 B ahead)",
    }


def fmt(v: Any, digits: int = 1) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{v:.{digits}f}"


def table(r: Fig) -> tuple[str, list[Fig]]:
    gp, cps, lossy, mem = r["goodput"], r["cps"], r["lossy"], r["idle_rss"]

    def val(fig: Fig, key: str) -> float | None:
        v = fig.get(key)
        return v if isinstance(v, (int, float)) else None

    def ratio(h: float | None, k: float | None) -> str:
        return "-" if not h or not k else f"{h / k:.3f}x"

    def rt(fig: Fig) -> str:
        info = fig.get("hilkit_tcp_info") or {}
        if "retransmits" not in info:
            return "-"
        return (f"{info['retransmits']} ({info.get('timeouts', '-')} RTO, "
                f"{info.get('dsack', 0)} D-SACK)")

    def note(fig: Fig) -> str:
        if "error" in fig:
            return f" [{fig['error'][:60]}]"
        if fig.get("complete") is False:
            return f" [unfinished: {fig.get('received', 0)} B]"
        if fig.get("verified") is False:
            return " [DATA MISMATCH]"
        return ""

    def retrans(fig: Fig) -> str:
        return str(fig.get("kernel_total_retrans", "-"))

    rows: list[tuple[str, str, str, str]] = []
    floors: list[Fig] = []
    for label, hk, kk, floor in (
            ("goodput kernel->hilkit (MB/s)", "hilkit_recv", "kernel_a_to_b", GOODPUT_FLOOR_MBS),
            ("goodput hilkit->kernel (MB/s)", "hilkit_send", "kernel_b_to_a", GOODPUT_FLOOR_MBS),
            ("TAP offloads: kernel->hilkit (MB/s)", "offload_recv", "kernel_a_to_b",
             OFFLOAD_FLOOR_MBS),
            ("TAP offloads: hilkit->kernel (MB/s)", "offload_send", "kernel_b_to_a",
             OFFLOAD_FLOOR_MBS)):
        fig = gp.get(hk, {})
        h, k = val(fig, "mb_per_s"), val(gp[kk], "mb_per_s")
        ok = (h is not None and h >= floor and fig.get("complete") is True
              and fig.get("verified") is True)
        floors.append({"figure": label, "floor": f">= {floor:g}", "value": h, "ok": ok})
        rows.append((label + note(fig), fmt(h), fmt(k) + note(gp[kk]), ratio(h, k)))
        if hk.endswith("recv"):
            rows.append(("  kernel sender retransmits", retrans(fig), retrans(gp[kk]), "-"))
        else:
            rows.append(("  sender retransmits", rt(fig), retrans(gp[kk]), "-"))
    rl, ls = lossy["hilkit_recv"], lossy["hilkit_send"]
    ic = lossy.get("impair_counters", {})
    for label, fig, plain in (("1% loss: kernel->hilkit (MB/s)", rl, gp["hilkit_recv"]),
                              ("1% loss: hilkit->kernel (MB/s)", ls, gp["hilkit_send"])):
        h, p = val(fig, "mb_per_s"), val(plain, "mb_per_s")
        floors.append({"figure": label, "floor": f">= {LOSSY_FLOOR:g}x lossless",
                       "value": h, "ok": bool(h and p and h >= LOSSY_FLOOR * p
                                              and fig.get("verified") is True)})
    rows += [
        ("1% loss: kernel->hilkit (MB/s)" + note(rl), fmt(val(rl, "mb_per_s")), "-",
         ratio(val(rl, "mb_per_s"), val(gp["hilkit_recv"], "mb_per_s"))),
        (f"  kernel sender: {rl.get('kernel_cc', '-')}, retransmits", retrans(rl), "-", "-"),
        ("1% loss: hilkit->kernel (MB/s)" + note(ls), fmt(val(ls, "mb_per_s")), "-",
         ratio(val(ls, "mb_per_s"), val(gp["hilkit_send"], "mb_per_s"))),
        ("  hilkit sender: newreno, retransmits", rt(ls), "-", "-"),
    ]
    for cc in LOSS_BASED_CC:
        pair = lossy.get(f"kernel_{cc}_recv", {})
        lo, hi = pair.get("lossy", {}), pair.get("lossless", {})
        rows.append((f"1% loss: kernel ({cc}) -> hilkit (MB/s)" + note(lo) + note(hi),
                     fmt(val(lo, "mb_per_s")), "-",
                     ratio(val(lo, "mb_per_s"), val(hi, "mb_per_s"))))
    rows += [
        ("  frames lost by the wrapper (tx/rx)",
         f"{ic.get('tx', {}).get('dropped', '-')}/{ic.get('rx', {}).get('dropped', '-')}",
         "-", "-"),
    ]
    kcps = val(cps["kernel_to_kernel"], "per_s")
    for label, key in ((f"conn/s hilkit client -> kernel (N={CPS_N})", "hilkit_client"),
                       (f"conn/s kernel client -> hilkit (N={CPS_N})",
                        "kernel_client_to_hilkit")):
        h = val(cps[key], "per_s")
        floors.append({"figure": label, "floor": f">= {CPS_FLOOR:g}x kernel", "value": h,
                       "ok": bool(h and kcps and h >= CPS_FLOOR * kcps)})
        rows.append((label + note(cps[key]), fmt(h, 0),
                     fmt(kcps, 0) + note(cps["kernel_to_kernel"]), ratio(h, kcps)))
    after_mb = mem["after_kib"] * 1024 / 1e6 if "after_kib" in mem else None
    rss_label = f"RSS with {IDLE_N} idle conns (MB)"
    floors.append({"figure": rss_label, "floor": f"<= {IDLE_RSS_FLOOR_MB:g}", "value": after_mb,
                   "ok": after_mb is not None and after_mb <= IDLE_RSS_FLOOR_MB
                   and mem.get("established_in_hilkit") == IDLE_N})
    rows += [
        (rss_label + note(mem), fmt(after_mb), "-", "-"),
        ("  RSS before them (MB)", fmt(val(mem, "before_kib") and mem["before_kib"] * 1024 / 1e6),
         "-", "-"),
        ("  RSS per connection (KiB)", fmt(val(mem, "per_conn_kib"), 2), "-", "-"),
        ("  established in hilkit", str(mem.get("established_in_hilkit", "-")), "-", "-"),
        ("  ulimit -n (soft/hard)", "/".join(map(str, mem.get("rlimit_nofile", ["-"]))), "-",
         "-"),
    ]
    rows += peer_cost_rows(r, floors)
    marks = {f["figure"]: (f["floor"], "PASS" if f["ok"] else "FAIL") for f in floors}
    head = ("figure", "hilkit", "kernel (veth)", "ratio", "floor", "")
    body = [(*row, *marks.get(row[0].split(" [")[0], ("", ""))) for row in rows]
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) if i < 4 else c.ljust(w)
                       for i, (c, w) in enumerate(zip(x, widths, strict=True))).rstrip()
             for x in (head, *body)]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines), floors


def peer_cost_rows(r: Fig, floors: list[Fig]) -> list[tuple[str, str, str, str]]:
    """Rows for what a peer can make hilkit spend (memory, CPU)."""
    cr, oc = r.get("non_reading_clients_rss", {}), r.get("out_of_order_segment_cost", {})
    mb = cr["after_kib"] * 1024 / 1e6 if "after_kib" in cr else None
    label = f"RSS with {CHARGEN_N} non-reading chargen clients (MB)"
    floors.append({"figure": label, "floor": f"<= {RSS_FLOOR_MB:g}", "value": mb,
                   "ok": mb is not None and mb <= RSS_FLOOR_MB
                   and cr.get("established_in_hilkit") == CHARGEN_N
                   and cr.get("new_client_bytes", 0) > 0})
    ratio = oc.get("ratio")
    olabel = f"out-of-order / in-order segment CPU ({OOO_RANGES} ranges queued)"
    floors.append({"figure": olabel, "floor": "<= 2", "value": ratio,
                   "ok": isinstance(ratio, float) and ratio <= 2.0})
    err = f" [{cr['error'][:60]}]" if "error" in cr else ""
    held = cr.get("tcp_buffered_bytes")
    return [
        (label + err, fmt(mb), "-", "-"),
        ("  hilkit TCP buffers (MB)", fmt(held / 1e6 if isinstance(held, int) else None), "-",
         "-"),
        ("  established in hilkit", str(cr.get("established_in_hilkit", "-")), "-", "-"),
        ("  new client: bytes received", str(cr.get("new_client_bytes", "-")), "-", "-"),
        (olabel + (f" [{oc['error'][:60]}]" if "error" in oc else ""), fmt(ratio, 2) + "x",
         "-", "-"),
        ("  in-order / in-order ACKed at once / out-of-order (us per segment)",
         f"{fmt(oc.get('in_order_us'), 2)} / {fmt(oc.get('in_order_acked_us'), 2)} / "
         f"{fmt(oc.get('out_of_order_us'), 2)}", "-", "-"),
        ("  out-of-order / in-order ACKed at once", fmt(oc.get("ratio_to_acked_in_order"), 2)
         + "x", "-", "-"),
    ]


def hilkit_rev() -> str | None:
    root = Path(__file__).resolve().parent.parent
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    return None


PEER_COST = ("idle_rss", "non_reading_clients_rss", "out_of_order_segment_cost")


def measure_only(a: Netns, st0: Stack, names: list[str]) -> Fig:
    res: Fig = {}
    for name in names:
        if name == "idle_rss":
            guarded(res, name, lambda: idle_rss(a, IDLE_N))
        elif name == "non_reading_clients_rss":
            guarded(res, name, lambda: chargen_rss(st0, a, HK0_IP, CHARGEN_N))
        elif name == "out_of_order_segment_cost":
            guarded(res, name, ooo_cost)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help=f"comma-separated figures to measure: {', '.join(PEER_COST)}"
                    " (printed as JSON, reports/ left alone)")
    args = ap.parse_args()
    only = [n for n in (args.only or "").split(",") if n]
    if any(n not in PEER_COST for n in only):
        ap.error(f"--only takes {', '.join(PEER_COST)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: delete the namespaces
    t_start = time.perf_counter()
    stacks: list[Stack] = []
    try:
        with Netns("hktcpa") as a, Netns("hktcpb") as b:
            try:
                st0, st1, dev1, st2 = setup(a, b)
                stacks += [st0, st1, st2]
            except (NetnsError, OSError, ValueError) as e:
                raise SetupError(str(e)) from e
            try:
                if only:
                    res = measure_only(a, st0, only)
                else:
                    res = measure(a, b, st0, st1, dev1, st2)
                    res["hilkit_counters"] = {"plain": st0.counters(),
                                              "lossy": st1.counters(),
                                              "offload": st2.counters()}
            finally:
                for st in stacks:
                    with contextlib.suppress(Exception):
                        st.close()
    except (SetupError, NetnsError, OSError, subprocess.SubprocessError) as e:
        print(f"bench/tcp.py: setup failed: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench/tcp.py: interrupted; namespaces deleted", file=sys.stderr)
        return 130
    if only:
        res["meta"] = {"hilkit": os.path.dirname(os.path.dirname(tcp.__file__)),
                       "python": sys.version.split()[0], "run_s": time.perf_counter() - t_start}
        print(json.dumps(res, indent=2))
        return 0
    text, floors = table(res)
    res["floors"] = floors
    res["meta"] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(),
                   "python": sys.version.split()[0], "kernel": os.uname().release,
                   "hilkit_rev": hilkit_rev(), "mtu": MTU, "mb": "10^6 bytes",
                   "run_s": time.perf_counter() - t_start}
    print(text)
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nJSON: {REPORT}")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--peer"]:  # a kernel end (peer_process, peer_client)
        if len(sys.argv) != 5 or sys.argv[2] not in PEER_ROLES or not sys.argv[4].isdigit():
            print(f"usage: bench/tcp.py --peer {{{','.join(PEER_ROLES)}}} FD|IP:PORT COUNT",
                  file=sys.stderr)
            sys.exit(2)
        sys.exit(peer_main(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    sys.exit(main())

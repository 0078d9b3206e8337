"""Core figures: `hilkit serve` on a TAP next to a kernel peer on a veth, in one run.

Topology (both namespaces created here and deleted on exit, even on error or Ctrl-C):

    ns A: kernel 192.168.5.5/24 on TAP hk0  <->  `hilkit serve` 192.168.5.4/24
    ns A: kernel 192.168.6.5/24 on veth va  <->  ns B: kernel 192.168.6.4/24 on veth vb

Every probe starts in ns A's kernel, so both paths cross one link from the same
sender. Floors are printed as information; the script exits 0 unless the setup
itself failed (exit 2). Results also go to reports/bench-core.json.

After hilkit, the same pings go to a reflector on the same TAP (``bench/core.py
--reflector sleep|spin``, a process in ns A): it turns each echo request into its
reply in place (addresses swapped, the checksum adjusted as RFC 1624 §3 shows) and
parses nothing else, so no program answering ping through this TAP can be faster.
``sleep`` blocks in read() between frames, as hilkit's loop waits in epoll;
``spin`` never sleeps. Its figures beside the kernel's are the ceiling a
user-space stack on a TAP has on this machine.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from hilkit.rig.netns import Netns, NetnsError

TAP, HK_IP, K_TAP_IP = "hk0", "192.168.5.4", "192.168.5.5"
VETH_A, VETH_B, K_PEER_IP, K_VETH_IP = "va", "vb", "192.168.6.4", "192.168.6.5"
ECHO_PORT, UDP_SECONDS, PAYLOAD = 7, 3.0, 64
IDLE_SECONDS = 10.0
# hilkit serve --busy-poll-us: longer than rtt_figure's 2 ms between pings, so each
# request finds the loop polling instead of asleep
BUSY_POLL_US = 2500
REPORT = Path(__file__).resolve().parent.parent / "reports" / "bench-core.json"
ECHO_SRC = (  # the kernel peer's UDP echo: a plain Python socket loop, its own process like serve
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
    f"s.bind(('{K_PEER_IP}',{ECHO_PORT}))\n"
    "print('ready',flush=True)\n"
    "while True:\n d,a=s.recvfrom(65535)\n s.sendto(d,a)\n"
)
ENV = {**os.environ, "LC_ALL": "C"}
Fig = dict[str, Any]


class SetupError(RuntimeError):
    pass


def run_ping(ns: Netns, *args: str, timeout: float = 90) -> tuple[str, str]:
    """Run the kernel's ping inside ``ns``; return (command line, output)."""
    argv = ["ip", "netns", "exec", ns.name, "ping", *args]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=ENV)
    return shlex.join(argv), res.stdout + res.stderr


def summary(out: str) -> tuple[int, int, float]:
    """(transmitted, received, elapsed ms) from ping's summary line."""
    m = re.search(r"(\d+) packets transmitted, (\d+) received.*?time (\d+)ms", out)
    if m is None:
        return 0, 0, 0.0
    return int(m[1]), int(m[2]), float(m[3])


def rtt_figure(ns: Netns, target: str, count: int = 1000) -> Fig:
    run_ping(ns, "-c", "3", "-i", "0.2", target)  # warm up: ARP resolved on both ends
    cmd, out = run_ping(ns, "-n", "-c", str(count), "-i", "0.002", "-W", "1", target)
    replies = [ln for ln in out.splitlines() if "time=" in ln]
    rtts = sorted(float(m[1]) for ln in replies if "DUP!" not in ln
                  if (m := re.search(r"time=([\d.]+) ms", ln)))
    sent, received, _ = summary(out)
    fig: Fig = {"cmd": cmd, "sent": sent, "received": received, "lost": count - len(rtts),
                "duplicates": len(replies) - len(rtts)}
    if rtts:
        p99 = rtts[max(0, -(-99 * len(rtts) // 100) - 1)]
        fig |= {"min_ms": rtts[0], "median_ms": statistics.median(rtts), "p99_ms": p99,
                "max_ms": rtts[-1]}
    return fig


def flood_figure(ns: Netns, target: str, count: int = 10000) -> Fig:
    cmd, out = run_ping(ns, "-n", "-f", "-q", "-c", str(count), "-w", "30", target)
    sent, received, ms = summary(out)
    pps = received / (ms / 1000.0) if ms > 0 else 0.0
    return {"cmd": cmd, "sent": sent, "received": received, "lost": sent - received,
            "elapsed_ms": ms, "pps": pps}


def udp_figure(ns: Netns, target: str) -> Fig:
    """Ping-pong 64-byte datagrams from a socket made inside ``ns`` for ~3 s."""
    sock = ns.socket()
    payload, timeouts, n = os.urandom(PAYLOAD), 0, 0
    try:
        sock.settimeout(0.5)
        sock.connect((target, ECHO_PORT))
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < UDP_SECONDS:
            sock.send(payload)
            try:
                while sock.recv(2048) != payload:  # a late echo of an earlier datagram
                    pass
                n += 1
            except TimeoutError:
                timeouts += 1
        elapsed = time.perf_counter() - t0
    finally:
        sock.close()
    return {"cmd": f"ns {ns.name}: UDP socket connect({target}:{ECHO_PORT}); send {PAYLOAD} B"
                   f" / recv, for {UDP_SECONDS:g} s",
            "round_trips": n, "timeouts": timeouts, "elapsed_s": elapsed, "rtt_per_s": n / elapsed}


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of proc(5))


def rss_kib(pid: int) -> int:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m[1]) if m else 0


def wait_ready(proc: subprocess.Popen[str], what: str, err: IO[str] | None = None) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("ready"):
        if err is not None:
            proc.wait(5)
            err.seek(0)
        raise SetupError(f"{what} did not get ready: {line!r} {err.read() if err else ''}")
    return line.strip()


def stop(proc: subprocess.Popen[str] | None) -> str:
    """SIGTERM (serve then prints its counters), SIGKILL if it lingers; return stdout."""
    if proc is None:
        return ""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=5)[0] or ""
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return ""


REFLECTOR_MAC = "02:00:00:00:00:04"  # the kernel's static neighbour entry for HK_IP


def reflector_main(mode: str, tap_name: str) -> int:
    """Answer ICMP echo requests on ``tap_name`` doing the least a program can; until killed."""
    from hilkit.drivers.tap import TapDevice

    try:
        tap = TapDevice(tap_name, create=False)
    except OSError as e:
        print(f"bench/core.py --reflector: cannot open TAP {tap_name!r}: {e.strerror or e}",
              file=sys.stderr)
        return 2
    fd = tap.fileno()
    assert fd is not None
    os.set_blocking(fd, mode == "sleep")
    print("ready", flush=True)
    read, write = os.read, os.write
    while True:
        try:
            f = read(fd, 2048)
        except BlockingIOError:
            continue
        # Ethernet II, IPv4 without options, ICMP (1), echo request (8)
        if len(f) < 42 or f[12:14] != b"\x08\x00" or f[14] != 0x45 or f[23] != 1 or f[34] != 8:
            continue
        b = bytearray(f)
        b[0:6], b[6:12], b[26:30], b[30:34] = f[6:12], f[0:6], f[30:34], f[26:30]
        b[34] = 0  # echo reply: the word (type, code) goes from 0x0800 to 0x0000
        x = (~int.from_bytes(f[36:38], "big") & 0xFFFF) + (~0x0800 & 0xFFFF)
        x = (x & 0xFFFF) + (x >> 16)
        b[36:38] = (~x & 0xFFFF).to_bytes(2, "big")  # RFC 1624 eqn. 3
        write(fd, b)


def measure_ceiling(a: Netns) -> Fig:
    """Ping RTT and flood against the reflector on the TAP hilkit served (serve stopped)."""
    a.ip("neigh", "replace", HK_IP, "lladdr", REFLECTOR_MAC, "dev", TAP)
    res: Fig = {"how": "bench/core.py --reflector MODE: echo requests turned into replies "
                       "in place, nothing else parsed"}
    for mode in ("sleep", "spin"):
        argv = [sys.executable, str(Path(__file__).resolve()), "--reflector", mode, TAP]
        proc = a.popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            wait_ready(proc, f"reflector ({mode})")
            res[mode] = {"cmd": shlex.join(["ip", "netns", "exec", a.name, *argv]),
                         "ping_rtt": rtt_figure(a, HK_IP), "ping_flood": flood_figure(a, HK_IP)}
        finally:
            stop(proc)
    return res


def setup(a: Netns, b: Netns) -> None:
    a.ip("tuntap", "add", "dev", TAP, "mode", "tap")
    a.ip("addr", "add", f"{K_TAP_IP}/24", "dev", TAP)
    a.ip("link", "set", TAP, "up")
    # created by ip in ns A with its peer placed straight into ns B: never in our own namespace
    a.ip("link", "add", VETH_A, "type", "veth", "peer", "name", VETH_B, "netns", b.name)
    a.ip("addr", "add", f"{K_VETH_IP}/24", "dev", VETH_A)
    b.ip("addr", "add", f"{K_PEER_IP}/24", "dev", VETH_B)
    a.ip("link", "set", VETH_A, "up")
    b.ip("link", "set", VETH_B, "up")


def measure(a: Netns, b: Netns, serve: subprocess.Popen[str], serve_cmd: str) -> Fig:
    pid = serve.pid  # `ip netns exec` execs, so this is the python process itself
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if b"hilkit.cli" not in cmdline or b"serve" not in cmdline:
        raise SetupError(f"pid {pid} is not hilkit serve: {cmdline!r}")
    res: Fig = {"serve_cmd": serve_cmd, "serve_pid": pid}
    res["ping_rtt"] = {"hilkit": rtt_figure(a, HK_IP), "kernel": rtt_figure(a, K_PEER_IP)}
    res["rss_kib"] = {"hilkit": rss_kib(pid), "cmd": f"VmRSS in /proc/{pid}/status after pings"}
    res["ping_flood"] = {"hilkit": flood_figure(a, HK_IP), "kernel": flood_figure(a, K_PEER_IP)}
    res["udp_echo"] = {"hilkit": udp_figure(a, HK_IP), "kernel": udp_figure(a, K_PEER_IP)}
    cmd, out = run_ping(a, "-n", "-c", "3", "-i", "0.5", "-W", "2", "-s", "65000", HK_IP)
    res["ping_65000"] = {"hilkit": {"cmd": cmd, "sent": 3, "received": summary(out)[1]}}
    res["idle_cpu"] = {"hilkit": idle_cpu(pid)}
    return res


def idle_cpu(pid: int) -> Fig:
    """The process's CPU over IDLE_SECONDS with no traffic (after a settling second)."""
    time.sleep(1.0)  # let the last replies and timers settle before the idle window
    tck, t0 = os.sysconf("SC_CLK_TCK"), time.monotonic()
    before = cpu_ticks(pid)
    time.sleep(IDLE_SECONDS)
    ticks, secs = cpu_ticks(pid) - before, time.monotonic() - t0
    return {"cmd": f"utime+stime from /proc/{pid}/stat over {secs:.1f} s idle",
            "ticks": ticks, "clk_tck": tck, "percent": ticks / tck / secs * 100.0}


def measure_busy(a: Netns, argv: list[str], err: IO[str]) -> Fig:
    """The same ping RTT, flood and idle CPU from a ``hilkit serve --busy-poll-us``."""
    busy_argv = [*argv, "--busy-poll-us", str(BUSY_POLL_US)]
    serve = a.popen(busy_argv, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        wait_ready(serve, "hilkit serve --busy-poll-us", err)
        return {"serve_cmd": shlex.join(["ip", "netns", "exec", a.name, *busy_argv]),
                "ping_rtt": rtt_figure(a, HK_IP), "ping_flood": flood_figure(a, HK_IP),
                "idle_cpu": idle_cpu(serve.pid)}
    finally:
        stop(serve)


def measure_hostile(a: Netns, serve: subprocess.Popen[str], ready: str, err: IO[str]) -> Fig:
    hk_mac = bytes.fromhex(ready.split("mac ")[1].strip().replace(":", ""))
    return {"hilkit": hostile_figure(a, serve.pid, hk_mac, err)}


HOSTILE_FRAMES, HOSTILE_PER_S = 20_000, 5_000
UNROUTABLE = "198.51.100.7"  # TEST-NET-2 (RFC 5737): no route to it from hilkit


def hostile_udp_frames(hk_mac: bytes, k_mac: bytes) -> list[bytes]:
    """Datagrams to the echo port that must not be echoed: source port 0, source
    0.0.0.0, a source hilkit has no route to, and a subnet-broadcast destination
    (a reflector would answer the last one to whoever forged it)."""
    from hilkit.stack import eth, ipv4, udp
    from hilkit.stack.addr import ip_to_int

    k, h, bcast = ip_to_int(K_TAP_IP), ip_to_int(HK_IP), ip_to_int("192.168.5.255")
    frames = []
    for src, sport, dst in ((k, 0, h), (0, 5000, h), (ip_to_int(UNROUTABLE), 5000, h),
                            (k, 5000, bcast)):
        body = udp.header(src, sport, dst, ECHO_PORT, b"hostile") + b"hostile"
        pkt = ipv4.build_header(src, dst, ipv4.PROTO_UDP, len(body), 1) + body
        mac = eth.BROADCAST_MAC if dst == bcast else hk_mac
        frames.append(eth.header(mac, k_mac, eth.ETHERTYPE_IPV4) + pkt)
    return frames


def hostile_figure(a: Netns, pid: int, hk_mac: bytes, err: IO[str]) -> Fig:
    """CPU and log lines that 20,000 unanswerable datagrams cost `hilkit serve`."""
    import socket

    raw = a.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    try:
        raw.bind((TAP, 0))
        kinds = hostile_udp_frames(hk_mac, raw.getsockname()[4])
        log_before = os.fstat(err.fileno()).st_size  # serve's stderr, shared with its process
        tck, before, t0 = os.sysconf("SC_CLK_TCK"), cpu_ticks(pid), time.monotonic()
        for i in range(HOSTILE_FRAMES):
            raw.send(kinds[i % len(kinds)])
            if i % 50 == 49:  # paced: what is measured is the stack, not a full TAP queue
                time.sleep(max(0.0, t0 + (i + 1) / HOSTILE_PER_S - time.monotonic()))
        time.sleep(0.5)  # the last frames are read
        ticks, secs = cpu_ticks(pid) - before, time.monotonic() - t0
    finally:
        raw.close()
    size = os.fstat(err.fileno()).st_size - log_before
    log = os.pread(err.fileno(), size, log_before).decode(errors="replace")
    return {"cmd": f"ns {a.name}: AF_PACKET on {TAP}, {HOSTILE_FRAMES} UDP datagrams to port "
                   f"{ECHO_PORT} at {HOSTILE_PER_S}/s (source port 0, source 0.0.0.0, source "
                   f"{UNROUTABLE}, destination 192.168.5.255), utime+stime of serve",
            "frames": HOSTILE_FRAMES, "cpu_percent": ticks / tck / secs * 100.0,
            "tracebacks": log.count("Traceback"), "log_lines": log.count("\n")}


def fmt(v: float | None, unit: str = "", digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}{unit}"


def table(r: Fig) -> tuple[str, list[Fig]]:
    rtt_h, rtt_k = r["ping_rtt"]["hilkit"], r["ping_rtt"]["kernel"]
    fl_h, fl_k = r["ping_flood"]["hilkit"], r["ping_flood"]["kernel"]
    udp_h, udp_k = r["udp_echo"]["hilkit"], r["udp_echo"]["kernel"]
    big, cpu = r["ping_65000"]["hilkit"], r["idle_cpu"]["hilkit"]["percent"]

    def ratio(h: float | None, k: float | None) -> str:
        return "-" if not h or not k else f"{h / k:.2f}x"

    rows: list[tuple[str, str, str, str]] = []
    for q in ("min_ms", "median_ms", "p99_ms"):
        h, k = rtt_h.get(q), rtt_k.get(q)
        rows.append((f"ping RTT {q[:-3]} (ms)", fmt(h), fmt(k), ratio(h, k)))
    rows += [
        ("ping loss (of 1000)", str(rtt_h["lost"]), str(rtt_k["lost"]), "-"),
        ("flood ping (pkt/s)", fmt(fl_h["pps"], digits=0), fmt(fl_k["pps"], digits=0),
         ratio(fl_h["pps"], fl_k["pps"])),
        (f"flood loss (of {fl_h['sent']}/{fl_k['sent']})", str(fl_h["lost"]), str(fl_k["lost"]),
         "-"),
        ("UDP echo round trips/s", fmt(udp_h["rtt_per_s"], digits=0),
         fmt(udp_k["rtt_per_s"], digits=0), ratio(udp_h["rtt_per_s"], udp_k["rtt_per_s"])),
        ("UDP echo timeouts", str(udp_h["timeouts"]), str(udp_k["timeouts"]), "-"),
        ("65000-byte pings answered", f"{big['received']}/3", "-", "-"),
        (f"idle CPU over {IDLE_SECONDS:g} s (%)", fmt(cpu, digits=2), "-", "-"),
        (f"CPU for {HOSTILE_PER_S}/s hostile UDP (%)",
         fmt(r["hostile_udp"]["hilkit"]["cpu_percent"], digits=1), "-", "-"),
        (f"tracebacks logged for {HOSTILE_FRAMES} hostile UDP",
         str(r["hostile_udp"]["hilkit"]["tracebacks"]), "-", "-"),
        ("RSS after pings (MiB)", fmt(r["rss_kib"]["hilkit"] / 1024, digits=1), "-", "-"),
    ]
    busy = r["busy_poll"]
    b_med, k_med = busy["ping_rtt"].get("median_ms"), rtt_k.get("median_ms")
    rows += [
        (f"ping RTT median, busy poll {BUSY_POLL_US} us (ms)", fmt(b_med), fmt(k_med),
         ratio(b_med, k_med)),
        (f"flood ping, busy poll {BUSY_POLL_US} us (pkt/s)",
         fmt(busy["ping_flood"]["pps"], digits=0), fmt(fl_k["pps"], digits=0),
         ratio(busy["ping_flood"]["pps"], fl_k["pps"])),
        (f"idle CPU over {IDLE_SECONDS:g} s, busy poll (%)",
         fmt(busy["idle_cpu"]["percent"], digits=2), "-", "-"),
    ]
    for mode, what in (("sleep", "asleep between frames"), ("spin", "spinning")):
        c = r["tap_ceiling"][mode]
        c_med, c_pps = c["ping_rtt"].get("median_ms"), c["ping_flood"]["pps"]
        rows += [
            (f"ping RTT median, TAP ceiling {what} (ms)", fmt(c_med), fmt(k_med),
             ratio(c_med, k_med)),
            (f"flood ping, TAP ceiling {what} (pkt/s)", fmt(c_pps, digits=0),
             fmt(fl_k["pps"], digits=0), ratio(c_pps, fl_k["pps"])),
        ]
    med = rtt_h.get("median_ms")
    floors: list[Fig] = [
        {"figure": "ping RTT median (ms)", "floor": "<= 0.3", "value": med,
         "ok": med is not None and med <= 0.3},
        {"figure": "ping loss (of 1000)", "floor": "== 0", "value": rtt_h["lost"],
         "ok": rtt_h["lost"] == 0},
        {"figure": "65000-byte pings answered", "floor": "3/3", "value": big["received"],
         "ok": big["received"] == 3},
        {"figure": f"idle CPU over {IDLE_SECONDS:g} s (%)", "floor": "<= 2", "value": cpu,
         "ok": cpu <= 2.0},
        {"figure": f"ping RTT median, busy poll {BUSY_POLL_US} us (ms)", "floor": "<= 0.03",
         "value": b_med, "ok": b_med is not None and b_med <= 0.03},
        {"figure": f"idle CPU over {IDLE_SECONDS:g} s, busy poll (%)", "floor": "<= 2",
         "value": busy["idle_cpu"]["percent"], "ok": busy["idle_cpu"]["percent"] <= 2.0},
        {"figure": f"tracebacks logged for {HOSTILE_FRAMES} hostile UDP", "floor": "== 0",
         "value": r["hostile_udp"]["hilkit"]["tracebacks"],
         "ok": r["hostile_udp"]["hilkit"]["tracebacks"] == 0},
    ]
    marks = {f["figure"]: (f["floor"], "PASS" if f["ok"] else "FAIL") for f in floors}
    head = ("figure", "hilkit", "kernel (veth)", "ratio", "floor", "")
    body = [(*row, *marks.get(row[0], ("", ""))) for row in rows]
    widths = [max(len(x[i]) for x in (head, *body)) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) if i < 4 else c.ljust(w)
                       for i, (c, w) in enumerate(zip(x, widths, strict=True))).rstrip()
             for x in (head, *body)]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines), floors


def main() -> int:
    if sys.argv[1:2] == ["--reflector"]:  # measure_ceiling's reflector process
        if len(sys.argv) != 4 or sys.argv[2] not in ("sleep", "spin"):
            print("usage: bench/core.py --reflector sleep|spin TAP", file=sys.stderr)
            return 2
        return reflector_main(sys.argv[2], sys.argv[3])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: kill serve, delete netns
    serve: subprocess.Popen[str] | None = None
    echo: subprocess.Popen[str] | None = None
    try:
        with Netns("hkb") as a, Netns("hkp") as b, tempfile.TemporaryFile("w+") as err:
            try:
                setup(a, b)
                argv = [sys.executable, "-m", "hilkit.cli", "serve", "--tap", TAP,
                        "--ip", f"{HK_IP}/24"]
                serve = a.popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
                ready = wait_ready(serve, "hilkit serve", err)
                echo = b.popen([sys.executable, "-c", ECHO_SRC], stdout=subprocess.PIPE,
                               text=True)
                wait_ready(echo, "kernel UDP echo")
                res = measure(a, b, serve, shlex.join(["ip", "netns", "exec", a.name, *argv]))
                res["udp_echo"]["kernel_server"] = f"ns {b.name}: python -c {ECHO_SRC!r}"
                res["hostile_udp"] = measure_hostile(a, serve, ready, err)
            finally:
                stop(echo)
                out = stop(serve)
            res["busy_poll"] = measure_busy(a, argv, err)
            res["tap_ceiling"] = measure_ceiling(a)
            try:
                res["serve_counters"] = json.loads(out)
            except json.JSONDecodeError:
                err.seek(0)
                res["serve_stderr"] = err.read()[-4000:]
    except (SetupError, NetnsError, OSError, subprocess.SubprocessError) as e:
        print(f"bench/core.py: setup failed: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench/core.py: interrupted; namespaces deleted", file=sys.stderr)
        return 130
    text, floors = table(res)
    res["floors"] = floors
    res["meta"] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(),
                   "python": sys.version.split()[0], "kernel": os.uname().release}
    print(text)
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nJSON: {REPORT}")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

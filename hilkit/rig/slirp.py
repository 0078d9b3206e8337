"""slirp as the PPP peer of a serial link, confined to a private network namespace.

``SlirpPeer(ns)`` gives a test or a rig a serial port (``.port``, a pty path the DUT
opens with pyserial like any ``/dev/tty*``) with slirp 1.0.17 talking PPP at the far
end. slirp terminates TCP and UDP with ordinary sockets of the namespace it runs in:
``10.0.2.2`` reaches the namespace's own loopback (a server on ``127.0.0.1:P`` there is
``10.0.2.2:P`` to the DUT) and the DUT is handed ``10.0.2.15``. Nothing leaves the
namespace; the DNS server slirp hands out is the machine's and must not be used.

What it takes to run slirp 1.0.17 on a current Debian (``docs/`` facts on PPP, §9):

- a select() shim (``slirp_selectfix.c``, compiled once per process with ``cc`` and
  LD_PRELOADed): idle slirp passes ``tv_usec = 4294967295`` which glibc refuses, and
  slirp exits;
- a hostname that resolves to a non-loopback IPv4 address, or slirp's IPCP gives up
  ("Could not determine local IP address"): slirp runs in a private UTS namespace
  whose hostname is ``10.0.2.2``;
- a real tty: the line is two pseudo-terminals joined by a relay thread here, which
  also paces each direction to ``baudrate`` (10 bits a byte, as an 8N1 UART), so
  timings and goodput are those of a real line of that speed.

``auth="pap"`` or ``"chap"`` makes slirp demand authentication (its ``+pap``/``+chap``
words; ``auth`` alone makes it close LCP) with ``secrets`` written to ``~/.pap-secrets`` /
``~/.chap-secrets`` of a scratch HOME, one ``name * secret 10.0.2.15`` line each (its
pppd code refuses IPCP to a peer whose address is not listed there).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.resources
import os
import random
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import tty
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

from hilkit.rig.netns import Netns

__all__ = ["LineFaults", "PacedPtyLine", "SlirpError", "SlirpPeer", "build_select_shim"]

PEER_IP: Final = "10.0.2.2"  # slirp's alias for its host's loopback (slirp(1))
DUT_IP: Final = "10.0.2.15"  # the address slirp hands the client
READY_TEXT: Final = "SLiRP Ready"
READY_TIMEOUT_S: Final = 10.0
_SHIM_SOURCE: Final = "slirp_selectfix.c"
_LOG_LINES: Final = 200
DIRECTIONS: Final = ("a_to_b", "b_to_a")
Direction = Literal["a_to_b", "b_to_a", "both"]


class SlirpError(RuntimeError):
    """slirp cannot be run here, or did not come up; the message says what to do."""


_shim_lock = threading.Lock()
_shim_path: Path | None = None


def build_select_shim() -> Path:
    """The LD_PRELOAD select() fix, compiled once per process into a temporary dir."""
    global _shim_path
    with _shim_lock:
        if _shim_path is not None and _shim_path.exists():
            return _shim_path
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise SlirpError("no C compiler to build slirp's select() shim: "
                             "apt-get install -y gcc")
        source = importlib.resources.files("hilkit.rig").joinpath(_SHIM_SOURCE).read_bytes()
        tag = hashlib.sha256(source).hexdigest()[:12]
        out_dir = Path(tempfile.mkdtemp(prefix="hilkit-slirp-shim-"))
        atexit.register(shutil.rmtree, out_dir, True)
        src = out_dir / _SHIM_SOURCE
        src.write_bytes(source)
        lib = out_dir / f"slirp_selectfix-{tag}.so"
        res = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(src), "-ldl"],
                             capture_output=True, text=True, timeout=60, check=False)
        if res.returncode != 0:
            raise SlirpError(f"building {_SHIM_SOURCE} failed: {res.stderr.strip()}")
        _shim_path = lib
        return lib


@dataclass
class LineFaults:
    """What the line does to one direction's bytes: each byte is dropped with
    ``drop_rate``, else has one random bit flipped with ``corrupt_rate``; until
    ``down_until`` (``time.monotonic()`` seconds) everything is discarded."""

    drop_rate: float = 0.0
    corrupt_rate: float = 0.0
    down_until: float = 0.0

    def active(self, now: float) -> bool:
        return self.drop_rate > 0 or self.corrupt_rate > 0 or now < self.down_until


class PacedPtyLine:
    """A null-modem cable between two pseudo-terminals, paced to ``baudrate``.

    ``a`` and ``b`` are the slave paths; bytes written to one come out of the other no
    faster than ``baudrate / 10`` bytes a second (``pace=False``: as fast as they
    come). Each direction holds at most ``buffer_bytes``; beyond that the relay stops
    reading, the ptys fill and the writer sees the line busy, as with flow control.
    The relay keeps a descriptor of each slave open, so a side that closes and opens
    its port again finds the line still there.

    Faults, settable at run time from any thread: ``faults[0]`` is a->b, ``faults[1]``
    b->a (``LineFaults``; ``set_faults``, ``down`` and ``clear_faults`` set them by
    direction name). Drops and bit flips draw from a ``random.Random(seed)``; what the
    faults did is counted in ``fault_stats`` (``dropped``, ``corrupted``, ``discarded``
    per direction, bytes).
    """

    def __init__(self, baudrate: int = 115200, *, pace: bool = True,
                 buffer_bytes: int = 4096, seed: int = 0) -> None:
        if baudrate <= 0:
            raise ValueError("baudrate must be positive")
        self.rate = baudrate / 10.0
        self.pace = pace
        self.buffer_bytes = buffer_bytes
        self.burst = max(16.0, self.rate * 0.002)
        self._fds: list[int] = []
        self.a_master, a_slave = self._openpty()
        self.b_master, b_slave = self._openpty()
        self.a = os.ttyname(a_slave)
        self.b = os.ttyname(b_slave)
        self.moved = [0, 0]  # bytes a->b, b->a
        self.faults = [LineFaults(), LineFaults()]
        self.fault_stats: dict[str, int] = {
            f"{d}_{k}": 0 for d in DIRECTIONS for k in ("dropped", "corrupted", "discarded")}
        self.rng = random.Random(seed)
        self._stop_r, self._stop_w = os.pipe()
        self._fds += [self._stop_r, self._stop_w]
        self._thread = threading.Thread(target=self._relay, name="paced-pty", daemon=True)
        self._thread.start()

    def _indices(self, direction: Direction) -> tuple[int, ...]:
        if direction == "both":
            return (0, 1)
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r} is not 'a_to_b', 'b_to_a' or 'both'")
        return (DIRECTIONS.index(direction),)

    def set_faults(self, *, drop_rate: float = 0.0, corrupt_rate: float = 0.0,
                   direction: Direction = "both") -> None:
        """Drop and corrupt bytes from now on (rates per byte, 0..1)."""
        for rate in (drop_rate, corrupt_rate):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"rate {rate} is not within 0..1")
        for i in self._indices(direction):
            f = self.faults[i]
            f.drop_rate, f.corrupt_rate = drop_rate, corrupt_rate

    def down(self, ms: float, direction: Direction = "both") -> None:
        """The line is down for ``ms`` from now: the relay discards everything, including
        what it holds already."""
        until = time.monotonic() + ms / 1000.0
        for i in self._indices(direction):
            self.faults[i].down_until = until

    def clear_faults(self) -> None:
        self.faults = [LineFaults(), LineFaults()]

    def is_down(self, direction: Direction = "both") -> bool:
        now = time.monotonic()
        return any(now < self.faults[i].down_until for i in self._indices(direction))

    def _damage(self, i: int, data: bytes, now: float) -> bytes:
        """``data`` as the line's faults leave it (direction ``i``), counted."""
        f = self.faults[i]
        if not data or not f.active(now):
            return data
        name = DIRECTIONS[i]
        if now < f.down_until:
            self.fault_stats[f"{name}_discarded"] += len(data)
            return b""
        out = bytearray()
        rnd = self.rng.random
        dropped = corrupted = 0
        for byte in data:
            if f.drop_rate and rnd() < f.drop_rate:
                dropped += 1
                continue
            if f.corrupt_rate and rnd() < f.corrupt_rate:
                byte ^= 1 << self.rng.randrange(8)
                corrupted += 1
            out.append(byte)
        self.fault_stats[f"{name}_dropped"] += dropped
        self.fault_stats[f"{name}_corrupted"] += corrupted
        return bytes(out)

    def _openpty(self) -> tuple[int, int]:
        m, s = os.openpty()
        self._fds += [m, s]
        tty.setraw(s)
        os.set_blocking(m, False)
        return m, s

    def close(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(OSError):
                os.write(self._stop_w, b"x")
            self._thread.join(5)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    def _relay(self) -> None:
        dirs = [(self.a_master, self.b_master, bytearray(), [self.burst, time.monotonic()]),
                (self.b_master, self.a_master, bytearray(), [self.burst, time.monotonic()])]
        while True:
            rd = [self._stop_r] + [src for src, _, buf, _ in dirs
                                   if len(buf) < self.buffer_bytes]
            wr: list[int] = []
            timeout: float | None = None
            now = time.monotonic()
            for i, (_, dst, buf, bucket) in enumerate(dirs):
                if buf and now < self.faults[i].down_until:  # down: what it held is lost
                    self.fault_stats[f"{DIRECTIONS[i]}_discarded"] += len(buf)
                    del buf[:]
                if not buf:
                    continue
                if not self.pace:
                    wr.append(dst)
                    continue
                bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
                bucket[1] = now
                if bucket[0] >= 1.0:
                    wr.append(dst)
                else:
                    wait = (1.0 - bucket[0]) / self.rate
                    timeout = wait if timeout is None else min(timeout, wait)
            try:
                r, w, _ = select.select(rd, wr, [], timeout)
            except (OSError, ValueError):
                return
            if self._stop_r in r:
                return
            for i, (src, dst, buf, bucket) in enumerate(dirs):
                if src in r:
                    try:
                        buf += self._damage(i, os.read(src, self.buffer_bytes - len(buf)),
                                            time.monotonic())
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:  # EIO: no slave open; cannot happen while we hold one
                        time.sleep(0.01)
                if dst in w and buf:
                    n = len(buf) if not self.pace else min(len(buf), int(bucket[0]))
                    try:
                        n = os.write(dst, buf[:n])
                    except (BlockingIOError, InterruptedError):
                        n = 0
                    except OSError:
                        return
                    del buf[:n]
                    self.moved[i] += n
                    if self.pace:
                        bucket[0] -= n


class SlirpPeer:
    """slirp in ``ns`` on one end of a paced pty line; the DUT opens ``.port``.

    A context manager: entering starts slirp and waits for its banner (``SlirpError``
    with slirp's output if it does not come), leaving stops it and removes every file.
    ``restart()`` kills slirp and starts it again on the same line (``restarts`` counts);
    ``line`` (``PacedPtyLine``) takes line faults (noise, the line down for a while).
    ``asyncmap`` (default 0) is the receive ACCM slirp asks for, as pppd asks for 0 unless
    told otherwise; slirp left alone asks for none, and every control byte sent to it costs
    two on the line.
    """

    peer_ip = PEER_IP
    dut_ip = DUT_IP

    def __init__(self, ns: Netns, *, baudrate: int = 115200, extra_args: Sequence[str] = (),
                 home: Path | None = None, auth: Literal["pap", "chap"] | None = None,
                 secrets: Mapping[str, str] | None = None, pace: bool = True,
                 ready_timeout_s: float = READY_TIMEOUT_S, seed: int = 0,
                 asyncmap: int | None = 0) -> None:
        self.ns = ns
        self.asyncmap = asyncmap
        self.seed = seed
        self.restarts = 0
        self.baudrate = baudrate
        self.extra_args = tuple(extra_args)
        self.auth = auth
        self.secrets = dict(secrets or {})
        self.pace = pace
        self.ready_timeout_s = ready_timeout_s
        self._home_arg = home
        self._home_tmp: tempfile.TemporaryDirectory[str] | None = None
        self.home: Path | None = None
        self.line: PacedPtyLine | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: deque[str] = deque(maxlen=_LOG_LINES)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def port(self) -> str:
        if self.line is None:
            raise SlirpError("the slirp peer is not running")
        return self.line.b

    def argv(self, tty_path: str) -> list[str]:
        """slirp's command line: PPP, no escape sequences, its tty, the line speed, and the
        receive ACCM it asks for (``asyncmap``; None: it asks for none, so the DUT must
        escape every control character to it, RFC 1662 §7.1)."""
        words = ["slirp", "-P", "nozeros", f"tty {tty_path}", f"baudrate {self.baudrate}"]
        if self.asyncmap is not None:
            words.append(f"asyncmap {self.asyncmap:x}")
        if self.auth is not None:  # "auth" alone makes slirp close LCP; +pap/+chap demand one
            words.append(f"+{self.auth}")
        return words + list(self.extra_args)

    def __enter__(self) -> SlirpPeer:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if shutil.which("slirp") is None:
            raise SlirpError("slirp is not installed: apt-get install -y slirp")
        if shutil.which("unshare") is None:
            raise SlirpError("unshare is not installed: apt-get install -y util-linux")
        try:
            self._make_home()
            self.line = PacedPtyLine(self.baudrate, pace=self.pace, seed=self.seed)
            self._launch()
        except BaseException:
            self.stop()
            raise

    def restart(self, down_ms: float = 0.0) -> float:
        """Kill slirp (SIGKILL: it says nothing on the line, as a peer that loses power)
        and start it again on the same pty after ``down_ms``; the line and the DUT's port
        stay. slirp comes back knowing nothing: its LCP starts over (its fresh
        Configure-Request makes the DUT's LCP renegotiate) and its TCP connections are
        gone. Returns the seconds slirp took to say it was ready again."""
        if self.line is None or self.proc is None:
            raise SlirpError("the slirp peer is not running")
        self._kill(signal.SIGKILL)
        if down_ms > 0:
            time.sleep(down_ms / 1000.0)
        t0 = time.monotonic()
        self._launch()
        self.restarts += 1
        return time.monotonic() - t0

    def _launch(self) -> None:
        """slirp on ``line.a``; waits for its banner (``SlirpError`` with its output)."""
        assert self.home is not None and self.line is not None
        shim = build_select_shim()
        self._ready.clear()
        self.log.append("--- slirp started ---")
        env = {"HOME": str(self.home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "LANG": "C"}
        script = 'hostname 10.0.2.2 && exec env LD_PRELOAD="$0" "$@"'
        self.proc = self.ns.popen(
            ["unshare", "--uts", "sh", "-c", script, str(shim), *self.argv(self.line.a)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env, cwd=str(self.home), start_new_session=True)
        self._reader = threading.Thread(target=self._read_log, args=(self.proc,),
                                        name="slirp-log", daemon=True)
        self._reader.start()
        end = time.monotonic() + self.ready_timeout_s
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                self._reader.join(1)
                raise SlirpError(f"slirp exited with status {self.proc.returncode} "
                                 f"before it was ready:\n{self.output()}")
            if time.monotonic() > end:
                raise SlirpError(f"slirp did not say {READY_TEXT!r} within "
                                 f"{self.ready_timeout_s:g} s:\n{self.output()}")

    def _kill(self, sig: signal.Signals) -> None:
        """Signal the slirp this peer started (its own session) and reap it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)  # start_new_session: its group is its own pid
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(3)
        if self._reader is not None:
            self._reader.join(2)
        if proc.stdout is not None:
            proc.stdout.close()

    def output(self) -> str:
        """What slirp printed (its last lines)."""
        return "\n".join(self.log)

    def stop(self) -> None:
        self._kill(signal.SIGTERM)
        if self.line is not None:
            self.line.close()
            self.line = None
        if self._home_tmp is not None:
            self._home_tmp.cleanup()
            self._home_tmp = None

    def _make_home(self) -> None:
        if self._home_arg is not None:
            self.home = self._home_arg
            self.home.mkdir(parents=True, exist_ok=True)
        else:
            self._home_tmp = tempfile.TemporaryDirectory(prefix="hilkit-slirp-home-")
            self.home = Path(self._home_tmp.name)
        if self.auth is not None:
            if not self.secrets:
                raise SlirpError(f"auth={self.auth!r} needs secrets (name -> secret)")
            name = ".pap-secrets" if self.auth == "pap" else ".chap-secrets"
            # client server secret address: slirp's pppd refuses a peer whose address is
            # not listed ("*" is taken as a host name), so it is the one slirp hands out
            lines = [f"{_quote(user)} * {_quote(secret)} {DUT_IP}" for user, secret in
                     self.secrets.items()]
            path = self.home / name
            path.write_text("\n".join(lines) + "\n")
            path.chmod(0o600)

    def _read_log(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.stdout is None:
            return
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self.log.append(line)
            if READY_TEXT in line:
                self._ready.set()


def _quote(word: str) -> str:
    """A pppd secrets-file word: quoted when it holds spaces or quotes."""
    if word and not any(c.isspace() or c in "\"'#\\" for c in word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'

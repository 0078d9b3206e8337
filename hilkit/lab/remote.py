"""The rig host over SSH: run ``hilkit hil --rig`` there, stream its output, fetch the report.

OpenSSH's ``ssh`` client does the work (keys, ``~/.ssh/config``, agents and jump hosts
as the lab already set them up); ``$HILKIT_SSH_CONFIG`` names another ``ssh -F`` file.
``BatchMode`` makes a missing key fail at once instead of asking for a password.

The remote side is a POSIX ``sh`` script (``run_script``): a fresh directory from
``mktemp -d``, ``hilkit hil --rig RIG --out DIR/report`` in the background, and a
watcher on the SSH session's stdin. When the session ends -- this side closes it
on Ctrl-C or SIGTERM, or the connection is lost -- the watcher sees end of file
and sends the run SIGTERM, so the rig is torn down as after a local Ctrl-C.
The report comes home as a tar stream (``tar -cf -`` there, checked member by
member here: regular files and directories under the report directory only).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import subprocess
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hilkit.lab.place import LabError, SshService
from hilkit.lab.power import POWER_ENV

SSH_CONFIG_ENV = "HILKIT_SSH_CONFIG"
DIR_LINE = "hilkit-lab: dir "  # the first line the remote script prints
EXIT_NO_HILKIT = 97
EXIT_NO_DIR = 98
_REMOTE_DIR = re.compile(r"/[A-Za-z0-9._/-]*/hilkit-lab\.[A-Za-z0-9]+")


@dataclass(frozen=True)
class Ssh:
    """How to reach the rig host: ``ssh`` arguments and a command to try by hand."""

    service: SshService
    config: str | None = None
    connect_timeout_s: int = 10

    @classmethod
    def from_env(cls, service: SshService, env: Mapping[str, str]) -> Ssh:
        return cls(service=service, config=env.get(SSH_CONFIG_ENV) or None)

    def options(self) -> list[str]:
        s = self.service
        opts = ["-F", self.config] if self.config else []
        return [*opts, "-p", str(s.port), "-l", s.user,
                "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]

    def argv(self, command: str, *, forward: tuple[str, str] | None = None) -> list[str]:
        """``ssh`` running ``command``; ``forward=(REMOTE, LOCAL)`` also forwards unix socket
        REMOTE on the rig host to LOCAL here (the power channel). A forwarding sshd refuses
        (``AllowStreamLocalForwarding``) does not stop the run: ssh warns, and the run
        finds no socket (the power check says so)."""
        fwd = ["-o", "ExitOnForwardFailure=no", "-R", f"{forward[0]}:{forward[1]}"] \
            if forward else []
        return ["ssh", *self.options(), *fwd, self.service.host, "--", command]

    def where(self) -> str:
        s = self.service
        return f"{s.user}@{s.host} port {s.port}"

    def try_line(self) -> str:
        s = self.service
        cfg = f"-F {shlex.quote(self.config)} " if self.config else ""
        return f"ssh {cfg}-p {s.port} {s.user}@{s.host} true"


def hil_args(rig: str, suites: str | None, keyword: str | None, repeat: int) -> list[str]:
    """The remote ``hilkit hil`` arguments after ``--rig RIG`` (``--out`` is the script's)."""
    args = ["--rig", rig]
    if suites:
        args += ["--suite", suites]
    if keyword:
        args += ["-k", keyword]
    if repeat != 1:
        args += ["--repeat", str(repeat)]
    return args


def check_script(hilkit: str) -> str:
    return f"command -v {shlex.quote(hilkit)} >/dev/null 2>&1 || exit {EXIT_NO_HILKIT}"


def power_socket() -> str:
    """A fresh path for the power channel's socket on the rig host: sshd makes it when the
    session starts, before the script runs (so not in the script's ``mktemp -d``)."""
    return f"/tmp/hilkit-power.{secrets.token_hex(8)}.sock"


def run_script(hilkit: str, args: Sequence[str], *, power: str | None = None) -> str:
    """The remote ``sh`` script; it prints ``DIR_LINE + dir`` first, exits as the run does.
    ``power``: the power channel's socket there, given to the run in ``$HILKIT_POWER_CHANNEL`` and
    removed at the end."""
    cmd = " ".join(shlex.quote(a) for a in [hilkit, "hil", *args])
    if power is not None:
        cmd = f"{POWER_ENV}={shlex.quote(power)} {cmd}"
    end = [f"rm -f {shlex.quote(power)}"] if power is not None else []
    return "\n".join([
        f"command -v {shlex.quote(hilkit)} >/dev/null 2>&1 || exit {EXIT_NO_HILKIT}",
        f'd=$(mktemp -d "${{TMPDIR:-/tmp}}/hilkit-lab.XXXXXXXX") || exit {EXIT_NO_DIR}',
        f'echo "{DIR_LINE}$d"',
        "exec 3<&0",  # a background job's stdin is /dev/null unless redirected
        f'{cmd} --out "$d/report" </dev/null 3<&- &',
        "pid=$!",
        "(while read -r _; do :; done; kill -TERM $pid 2>/dev/null) <&3 >/dev/null 2>&1 &",
        "w=$!",
        "exec 3<&-",
        "wait $pid; rc=$?",
        "kill $w 2>/dev/null",
        *end,
        "exit $rc",
    ])


def remote_dir(line: str) -> str | None:
    """The run's directory from the script's first line, if it is one mktemp makes."""
    if not line.startswith(DIR_LINE):
        return None
    d = line[len(DIR_LINE):].strip()
    return d if _REMOTE_DIR.fullmatch(d) and "/../" not in d + "/" else None


def check(ssh: Ssh, hilkit: str) -> None:
    """SSH works and ``hilkit`` is there, or ``LabError`` saying which and what to try."""
    try:
        p = subprocess.run(ssh.argv(check_script(hilkit)), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=ssh.connect_timeout_s + 20)
    except FileNotFoundError:
        raise LabError("the ssh command is not installed (apt-get install openssh-client)"
                       ) from None
    except subprocess.TimeoutExpired:
        raise LabError(f"ssh to {ssh.where()} did not finish within "
                       f"{ssh.connect_timeout_s + 20} s; try: {ssh.try_line()}") from None
    if p.returncode == EXIT_NO_HILKIT:
        raise LabError(f"{hilkit} not found on the rig host {ssh.where()}; install hilkit "
                       "there or set the place tag hilkit=PATH")
    if p.returncode != 0:
        said = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        raise LabError(f"ssh to {ssh.where()} failed: {said}; try: {ssh.try_line()}")


def fetch(ssh: Ssh, directory: str, into: Path, timeout_s: float = 300) -> list[str]:
    """Bring ``directory`` on the rig host into ``into``; the names written."""
    p = subprocess.Popen(ssh.argv(f"tar -C {shlex.quote(directory)} -cf - ."),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    try:
        names = _untar(p.stdout, into)
        p.stdout.read()
        rc = p.wait(timeout_s)
    except (tarfile.TarError, OSError) as e:
        p.kill()
        p.wait()
        raise LabError(f"fetching the report from {ssh.where()}:{directory} failed: {e}"
                       ) from None
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise LabError(f"fetching the report from {ssh.where()} took more than "
                       f"{timeout_s:.0f} s") from None
    finally:
        err = p.stderr.read().decode(errors="replace").strip()
        p.stderr.close()
        p.stdout.close()
    if rc != 0:
        said = (err.splitlines() or [f"exit {rc}"])[-1]
        raise LabError(f"fetching the report from {ssh.where()}:{directory} failed: {said}")
    return names


def _untar(stream: IO[bytes], into: Path) -> list[str]:
    """Extract a tar stream: regular files and directories, nothing outside ``into``."""
    names: list[str] = []
    root = into.resolve()
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for m in tar:
            rel = Path(m.name)
            if rel.is_absolute() or ".." in rel.parts:
                raise tarfile.TarError(f"refusing member {m.name!r}")
            target = (root / rel).resolve()
            if target != root and root not in target.parents:
                raise tarfile.TarError(f"refusing member {m.name!r}")
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif m.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                assert src is not None
                with open(target, "wb") as f:
                    while chunk := src.read(1 << 20):
                        f.write(chunk)
                os.utime(target, (m.mtime, m.mtime))
                names.append(str(rel))
            # links, devices, FIFOs: not part of a report; skipped
    return sorted(names)


def remove(ssh: Ssh, directory: str) -> None:
    """Delete the run's directory on the rig host (best effort)."""
    if remote_dir(DIR_LINE + directory) is None:
        return
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(ssh.argv(f"rm -rf -- {shlex.quote(directory)}"),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)

"""``hilkit hil --place NAME|tag:KEY``: a rig of the lab, through a labgrid coordinator.

1. reserve a place the selector picks, wait for it (``--place-timeout``), lock it;
2. read the place: its ``rig`` tag, its ``NetworkService`` (the rig host), its
   ``hilkit`` tag (the command there);
3. run ``hilkit hil --rig RIG`` on the rig host over SSH, its output streamed here;
   when the place has a ``NetworkPowerPort``, with a power channel (``hilkit.lab.power``)
   forwarded into the session, served here with labgrid's power driver;
4. bring ``junit.xml``, ``results.json`` (with a ``lab`` entry added: place,
   coordinator, host), the pcapng files and ``hil.log`` into ``--out``
   (default ``reports/<place>-<UTC time>/``);
5. unlock the place -- also after a failure, Ctrl-C, SIGTERM or a lost connection.
   (SIGKILL cannot: the lock stays, and the next run names its holder; docs/lab.md
   says how to free it.)

Exit status: the remote run's (0 passed, 1 a check failed, 2 not run); 2 when the lab
is in the way (coordinator unreachable, no such place, place held, SSH failed), with
one line saying what and how to check.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TextIO

from hilkit.lab import remote
from hilkit.lab.place import (
    Claim,
    LabError,
    PlaceInfo,
    Resource,
    claim,
    coordinator_address,
    hilkit_of,
    parse_selector,
    rig_of,
    ssh_service,
)
from hilkit.lab.power import PowerServer, Switch, describe, power_resource, unsupported_power

PowerFactory = Callable[[str, Resource], Switch]

EXIT_NOT_RUN = 2
PROG = "hilkit hil"
DEFAULT_PLACE_TIMEOUT_S = 300.0
STOP_GRACE_S = 120.0  # how long a stopped remote run may take to tear its rig down


def _say(stream: TextIO, text: str) -> None:
    print(text, file=stream, flush=True)


def default_out(place: str) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path("reports") / f"{place}-{stamp}"


def run_place(place: str, *, coordinator: str | None = None,
              timeout: float = DEFAULT_PLACE_TIMEOUT_S, suites: str | None = None,
              keyword: str | None = None, out: str | os.PathLike[str] | None = None,
              repeat: int = 1, stream: TextIO | None = None, err: TextIO | None = None,
              env: Mapping[str, str] | None = None,
              connect: Callable[[str], Any] | None = None,
              power: PowerFactory | None = None) -> int:
    """Run a lab place's rig; the exit status (0 passed, 1 failed, 2 not run).
    ``connect`` and ``power`` make the coordinator session and the power switch (labgrid's
    by default; tests give fakes)."""
    stream = stream or sys.stdout
    err = err or sys.stderr
    env = os.environ if env is None else env
    try:
        selector = parse_selector(place)
        address = coordinator_address(coordinator, env)
        if not timeout >= 0:
            raise LabError(f"--place-timeout must be 0 or more seconds, got {timeout}")
        if repeat < 1:
            raise LabError(f"--repeat must be at least 1, got {repeat}")
    except LabError as e:
        _say(err, f"{PROG}: {e}")
        return EXIT_NOT_RUN
    if connect is None:
        from hilkit.lab.coordinator import LabgridCoordinator

        connect = LabgridCoordinator
    # 1. the lock
    try:
        coord = connect(address)
    except LabError as e:
        _say(err, f"{PROG}: {e}")
        return EXIT_NOT_RUN
    try:
        me = coord.me
        got: Claim = claim(coord, selector, timeout, say=lambda s: _say(stream, f"{PROG}: {s}"))
    except LabError as e:
        _say(err, f"{PROG}: {e}")
        return EXIT_NOT_RUN
    except KeyboardInterrupt:
        _say(err, f"{PROG}: interrupted while waiting for {selector.describe()}")
        return EXIT_NOT_RUN
    finally:
        with _signals_held():
            coord.close()
    name = got.place.name
    code = EXIT_NOT_RUN
    try:
        code = _run_locked(got, address, me, suites, keyword, out, repeat, stream, err, env,
                           power)
    except LabError as e:
        _say(err, f"{PROG}: place {name}: {e}")
    except KeyboardInterrupt:
        _say(err, f"{PROG}: interrupted")
    finally:
        with _signals_held():
            _unlock(connect, address, name, got.token, me, stream, err)
    return code


def _unlock(connect: Callable[[str], Any], address: str, place: str, token: str, me: str,
            stream: TextIO, err: TextIO) -> None:
    try:
        coord = connect(address)
    except LabError as e:
        _say(err, f"{PROG}: place {place} stays locked: {e}; free it: labgrid-client "
                  f"-x {address} -p {place} release-from {me}")
        return
    try:
        coord.release(place)
        with contextlib.suppress(LabError):
            coord.cancel(token)
        _say(stream, f"{PROG}: place {place} unlocked")
    except LabError as e:
        _say(err, f"{PROG}: place {place} could not be unlocked: {e}; free it: "
                  f"labgrid-client -x {address} -p {place} release-from {me}")
    finally:
        coord.close()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while the lock is given back (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        pending = signal.sigpending() & sigs
        for s in pending:  # taken: the run is over anyway
            signal.sigwait({s})
        signal.pthread_sigmask(signal.SIG_UNBLOCK, sigs)


def _open_power(place: PlaceInfo, factory: PowerFactory | None, stream: TextIO,
                err: TextIO) -> PowerServer | None:
    """The power channel's server when the place has a power resource hilkit can drive;
    otherwise None, and a line saying why when the place has one it cannot."""
    skip = "; the recovery suite's power check will skip"
    try:
        r = power_resource(place)
    except LabError as e:
        _say(err, f"{PROG}: {e}{skip}")
        return None
    if r is None:
        for other in unsupported_power(place):
            _say(err, f"{PROG}: place {place.name}: {other} is a power resource hilkit does "
                      f"not drive (it drives NetworkPowerPort){skip}")
        return None
    if factory is None:
        from hilkit.lab.coordinator import LabgridPower

        factory = LabgridPower
    try:
        switch = factory(place.name, r)
    except LabError as e:
        _say(err, f"{PROG}: {e}{skip}")
        return None
    server = PowerServer(switch, describe(place.name, r),
                         say=lambda s: _say(stream, f"{PROG}: place {place.name}: {s}"))
    _say(stream, f"{PROG}: place {place.name}: power channel open ({r}): the recovery suite "
                 "may cut the power where the rig file allows it (suites.recovery.power_off_s)")
    return server


def _close_power(server: PowerServer) -> None:
    try:
        server.close()
    finally:
        close = getattr(server.switch, "close", None)
        if callable(close):
            close()


def _run_locked(got: Claim, address: str, me: str, suites: str | None, keyword: str | None,
                out: str | os.PathLike[str] | None, repeat: int, stream: TextIO, err: TextIO,
                env: Mapping[str, str], power: PowerFactory | None = None) -> int:
    place = got.place
    rig = rig_of(place)
    hilkit = hilkit_of(place)
    ssh = remote.Ssh.from_env(ssh_service(place), env)
    out_dir = Path(out) if out is not None else default_out(place.name)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LabError(f"--out {out_dir}: cannot create the report directory: "
                       f"{e.strerror or e}") from None
    _say(stream, f"{PROG}: place {place.name} locked as {me} (coordinator {address}): rig "
                 f"{rig} on {ssh.where()}; report {out_dir}")
    remote.check(ssh, hilkit)
    server = _open_power(place, power, stream, err)
    remote_sock = remote.power_socket() if server is not None else None
    script = remote.run_script(hilkit, remote.hil_args(rig, suites, keyword, repeat),
                               power=remote_sock)
    forward = (remote_sock, server.path) if server is not None and remote_sock else None
    t0 = time.monotonic()
    try:
        rc, rdir, stopped = _stream_run(ssh.argv(script, forward=forward), stream, err)
    finally:
        if server is not None:
            with _signals_held():
                _close_power(server)
    code = rc if rc in (0, 1, 2) else EXIT_NOT_RUN
    if stopped:
        code = EXIT_NOT_RUN
    elif rc == 255:
        _say(err, f"{PROG}: place {place.name}: lost the connection to {ssh.where()} "
                  f"during the run; try: {ssh.try_line()}")
    elif rc == remote.EXIT_NO_DIR:
        _say(err, f"{PROG}: place {place.name}: mktemp -d failed on {ssh.where()}")
    elif rc not in (0, 1, 2):
        _say(err, f"{PROG}: place {place.name}: the run on {ssh.where()} ended with exit {rc}")
    if rdir is not None:
        try:
            names = remote.fetch(ssh, rdir + "/report", out_dir)
        except LabError as e:
            _say(err, f"{PROG}: place {place.name}: {e}")
            code = EXIT_NOT_RUN
        else:
            _add_lab(out_dir / "results.json", place.name, address, ssh.where(), me,
                     server.summary() if server is not None else None)
            _say(stream, f"{PROG}: {len(names)} report files from {ssh.where()} in {out_dir}")
        finally:
            remote.remove(ssh, rdir)
    verdict = {0: "PASSED", 1: "FAILED"}.get(code, "NOT RUN")
    _say(stream, f"{verdict} on place {place.name} in {time.monotonic() - t0:.1f} s; "
                 f"report: {out_dir}")
    return code


def _stream_run(argv: list[str], stream: TextIO, err: TextIO) -> tuple[int, str | None, bool]:
    """Run the remote script; (ssh's exit status, the run's directory, stopped by us)."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
    pump = threading.Thread(target=_pump, args=(proc.stderr, err), daemon=True)
    pump.start()
    rdir: list[str | None] = [None]
    stopped = False
    try:
        _copy(proc.stdout, stream, rdir)
        rc = proc.wait()
    except KeyboardInterrupt:
        stopped = True
        _say(err, f"{PROG}: interrupted: stopping the run on the rig host (its rig is torn "
                  "down), then the report comes home and the place is unlocked")
        with contextlib.suppress(OSError):
            proc.stdin.close()  # end of file: the remote watcher stops the run
        killer = threading.Timer(STOP_GRACE_S, proc.kill)
        killer.start()
        try:
            with _signals_held():
                _copy(proc.stdout, stream, rdir)
                rc = proc.wait()
        finally:
            killer.cancel()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pump.join(5)
        with contextlib.suppress(OSError):
            proc.stdin.close()
        proc.stdout.close()
    return rc, rdir[0], stopped


def _copy(src: IO[bytes], stream: TextIO, rdir: list[str | None]) -> None:
    for raw in src:
        line = raw.decode("utf-8", errors="replace")
        if rdir[0] is None and line.startswith(remote.DIR_LINE):
            rdir[0] = remote.remote_dir(line.rstrip("\n"))
            continue
        stream.write(line)
        stream.flush()


def _pump(src: IO[bytes], err: TextIO) -> None:
    with contextlib.suppress(ValueError, OSError):
        for raw in src:
            err.write(raw.decode("utf-8", errors="replace"))
            err.flush()


def _add_lab(path: Path, place: str, address: str, host: str, me: str,
             power: dict[str, Any] | None = None) -> None:
    """``results.json`` says which place and host the run was on, and what the power
    channel was asked."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(data, dict):
        data["lab"] = {"place": place, "coordinator": address, "host": host, "locked_as": me}
        if power is not None:
            data["lab"]["power"] = power
        from hilkit.hil.report import write_json

        write_json(path, data)


def quiet_logging() -> None:
    """labgrid, gRPC and asyncio log connection trouble (and late callbacks of a closed
    session) through the root logger; a place run says what went wrong in one line."""
    for name in ("", "asyncio"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
    logging.getLogger("asyncio").propagate = False

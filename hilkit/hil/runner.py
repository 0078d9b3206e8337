"""``hilkit hil``: validate a rig, check its hardware, build it, run the suites, report.

::

    hilkit hil --rig NAME|PATH [--suite a,b] [-k EXPR] [--out DIR] [--repeat N]

Exit status: 0 every check passed; 1 a check failed; 2 the rig could not be run
(a broken rig file, hardware that is not there, a build that failed, nothing
selected, an interrupted run). The rig is always torn down -- its namespace
deleted, a real rig's host interface moved back -- also on Ctrl-C, SIGTERM or
a suite that crashes.

Output: one line per check as it finishes, a summary table, and in ``--out``
(default ``reports/<rig>-<UTC time>/``): ``junit.xml`` (a testcase per check,
figures as properties ``name[unit]``), a pcapng per check, ``results.json``
(see ``hilkit.hil.report``) and ``hil.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from hilkit.hil import report
from hilkit.hil.suites import SUITES, SUITES_DIR, suite_file

log = logging.getLogger("hilkit.hil")

EXIT_PASSED, EXIT_FAILED, EXIT_NOT_RUN = 0, 1, 2
PROG = "hilkit hil"
CHECK_TIMEOUT_S = 1800  # pytest-timeout's limit per check, when it is installed


def _say(stream: TextIO, text: str) -> None:
    print(text, file=stream, flush=True)


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("hilkit")
    old = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
        handler.close()


def pytest_args(files: Sequence[Path], out: Path, rig_name: str, keyword: str | None,
                extra: Sequence[str] = ()) -> list[str]:
    args = [str(f) for f in files]
    args += [
        "-p", "no:cacheprovider",
        "-p", "no:logging",  # hilkit logs go to hil.log, whole
        "-c", os.devnull, "--rootdir", str(SUITES_DIR),  # not the caller's ini or conftest
        "-p", "no:terminal",  # the plugin prints a line per check; tracebacks go to hil.log
        "-p", "no:labgrid",  # the [lab] extra's pytest plugin needs the terminal's options
        "--junitxml", str(out / "junit.xml"),
        "-o", "junit_family=xunit1",  # xunit2 has no <properties> per testcase
        "-o", f"junit_suite_name=hilkit-hil-{rig_name}",
        "-W", "ignore::pytest.PytestAssertRewriteWarning",
    ]
    if importlib.util.find_spec("pytest_timeout") is not None:
        args += ["-o", f"timeout={CHECK_TIMEOUT_S}"]
    if keyword:
        args += ["-k", keyword]
    return [*args, *extra]


def _exit_code(pytest_code: int, checks: list[report.Check], stream: TextIO) -> int:
    if pytest_code == 0:
        return EXIT_PASSED
    if pytest_code == 1:
        return EXIT_FAILED
    if pytest_code == 5:
        _say(stream, "hilkit hil: no check selected (check --suite and -k)")
    elif pytest_code == 2:
        _say(stream, "hilkit hil: the run was interrupted")
    else:
        _say(stream, f"hilkit hil: pytest could not run the suites (exit {pytest_code}); "
                     "see hil.log")
    return EXIT_NOT_RUN


def run_hil(rig: str, suites: str | Sequence[str] | None = None, keyword: str | None = None,
            out: str | os.PathLike[str] | None = None, repeat: int = 1, *,
            stream: TextIO | None = None, err: TextIO | None = None,
            extra_pytest_args: Sequence[str] = ()) -> int:
    """Run the HIL suites on ``rig``; the exit status (0 passed, 1 failed, 2 not run)."""
    from hilkit.hil.plugin import RigPlugin, default_out, select_suites
    from hilkit.hil.preflight import NotRunnable, check_rig, failure_lines, load_checked, say
    from hilkit.rig.builder import build

    stream = stream or sys.stdout
    err = err or sys.stderr
    if repeat < 1:
        _say(err, f"hilkit hil: --repeat must be at least 1, got {repeat}")
        return EXIT_NOT_RUN

    # 1. the rig file: nothing is touched before it is known to be right
    try:
        the_rig = load_checked(rig)
    except NotRunnable as e:
        say(err, PROG, e.lines)
        return EXIT_NOT_RUN
    wanted = ",".join(suites) if isinstance(suites, (list, tuple)) else suites
    try:
        selected = select_suites(the_rig, wanted if isinstance(wanted, str) else None)
    except ValueError as e:
        _say(err, f"hilkit hil: --suite: {e}")
        return EXIT_NOT_RUN
    if not selected:
        _say(err, "hilkit hil: no suite selected")
        return EXIT_NOT_RUN

    # 2. the hardware is there (fast: names what was looked for and how to check)
    try:
        check_rig(the_rig)
    except NotRunnable as e:
        say(err, PROG, e.lines)
        return EXIT_NOT_RUN

    out_dir = Path(out) if out is not None else default_out(the_rig.name)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in the way, no permission: a command-line problem
        _say(err, f"hilkit hil: --out {out_dir}: cannot create the report directory: "
                  f"{e.strerror or e}")
        return EXIT_NOT_RUN
    bus = getattr(the_rig, "bus", None)
    _say(stream, f"hilkit hil: rig {the_rig.name} (driver {_driver_name(the_rig)}, bus "
                 f"{getattr(bus, 'kind', None) or 'none'}"
                 f"{', simulated' if getattr(the_rig, 'simulated', False) else ''}); "
                 f"suites {', '.join(selected)}; report {out_dir}")
    plugin: RigPlugin | None = None
    results: dict[str, Any] | None = None
    code = EXIT_NOT_RUN
    t0 = time.monotonic()
    with _log_to(out_dir / "hil.log"):
        log.info("rig %s from %s; suites %s; -k %s; repeat %d", the_rig.name, rig,
                 ",".join(selected), keyword, repeat)
        try:
            # 3. namespace + peer; always torn down (the builder's context manager)
            with build(the_rig) as built:
                plugin = RigPlugin(built, out_dir, progress=stream, repeat=repeat)
                args = pytest_args([suite_file(s) for s in selected], out_dir, the_rig.name,
                                   keyword, extra_pytest_args)
                log.info("pytest %s", " ".join(args))
                import pytest

                pcode = int(pytest.main(args, plugins=[plugin]))
                checks = list(plugin.session.checks.values())
                code = _exit_code(pcode, checks, err)
                if plugin.session.collect_errors:
                    code = EXIT_NOT_RUN
                results = plugin.session.results(code)  # counters, while the rig stands
        except KeyboardInterrupt:
            _say(err, "hilkit hil: interrupted; the rig was torn down")
            log.error("interrupted")
            code = EXIT_NOT_RUN
            results = plugin.session.results(code) if plugin is not None else None
        except Exception as e:  # whatever stopped the rig, it was not a check that failed
            what = "could not be built" if plugin is None else "failed"
            say(err, PROG, failure_lines(e, the_rig, what))
            log.error("rig %s %s:\n%s", the_rig.name, what, traceback.format_exc())
            code = EXIT_NOT_RUN
            results = plugin.session.results(code) if plugin is not None else None
        if results is not None:
            results["exit_code"] = code
            results["verdict"] = {EXIT_PASSED: "passed", EXIT_FAILED: "failed"}.get(code,
                                                                                  "not run")
            report.write_json(out_dir / "results.json", results)
        if plugin is not None:
            checks = list(plugin.session.checks.values())
            table = report.summary_table(checks, SUITES)
            _say(stream, "\n" + table)
            log.info("summary\n%s", table)
            fig = (results or {}).get("figures", {})
            ratios = [f"{k} {fig[k]:.3f}" for k in ("spi_bytes_per_payload_byte",
                      "cs_transactions_per_frame", "bus_calls_per_frame")
                      if isinstance(fig.get(k), (int, float))]
            if ratios:
                _say(stream, "bus: " + ", ".join(ratios))
        verdict = {EXIT_PASSED: "PASSED", EXIT_FAILED: "FAILED"}.get(code, "NOT RUN")
        _say(stream, f"{verdict} in {time.monotonic() - t0:.1f} s; report: {out_dir}")
        log.info("exit %d (%s)", code, verdict)
    return code


def _driver_name(rig: Any) -> str:
    d = getattr(rig, "driver", None)
    return d if isinstance(d, str) else str(getattr(d, "name", d))


# -- command line --------------------------------------------------------------------------


def _add_arguments(p: argparse.ArgumentParser,
                   target: Callable[[Any], None] | None = None) -> None:
    """The ``hil`` arguments; ``target(group)`` adds alternatives to ``--rig`` (``--place``)."""
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--rig", metavar="NAME|PATH",
                       help="a rig name (rigs/NAME.toml, $HILKIT_RIGS) or a rig file")
    if target is not None:
        target(group)
    p.add_argument("--suite", metavar="a,b", default=None,
                   help=f"suites to run (default: the rig's, else all): {','.join(SUITES)}")
    p.add_argument("-k", dest="keyword", metavar="EXPR", default=None,
                   help="only checks matching this pytest -k expression")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="report directory (default reports/<rig>-<UTC time>)")
    p.add_argument("--repeat", metavar="N", type=int, default=1, help="run every check N times")


def add_hil_command(subparsers: Any, target: Callable[[Any], None] | None = None,
                    epilog: str | None = None) -> argparse.ArgumentParser:
    """Add ``hil`` to the ``hilkit`` command's subparsers (``target``: see ``_add_arguments``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "hil", help="run the hardware-in-the-loop suites on a rig",
        description=__doc__, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p, target)
    p.set_defaults(fn=cmd_hil)
    return p


def cmd_hil(args: argparse.Namespace) -> int:
    return with_sigterm(lambda: run_hil(args.rig, args.suite, args.keyword, args.out,
                                         args.repeat))


def with_sigterm(fn: Callable[[], int]) -> int:
    """SIGTERM unwinds like Ctrl-C, so the rig is torn down (or a lab place unlocked)."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        return fn()
    try:
        return fn()
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hilkit hil", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(p)
    return cmd_hil(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

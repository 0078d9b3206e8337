"""Before a rig runs, and when it cannot: one mechanism for ``hilkit hil`` and ``hilkit rig check``.

Both commands load the rig file, check its hardware and build it through
these functions, and tell every failure the same way: lines that name the
file, the key and what is wrong (``RigError``), or the device and what to do
(``HardwareNotFound``). Nothing a rig file says may end in a traceback; a
failure here is exit status 2, "the rig could not be run".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TextIO, TypeVar

from hilkit.port.errors import HardwareNotFound
from hilkit.rig.schema import Rig, RigError

__all__ = ["NotRunnable", "check_rig", "failure_lines", "guarded", "load_checked", "say"]

T = TypeVar("T")


class NotRunnable(Exception):
    """The rig cannot be run; ``lines`` say why, one problem a line."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def failure_lines(e: BaseException, rig: Rig | None = None, stage: str = "") -> list[str]:
    """How a failure of ``stage`` ("could not be built", ...) is told, whatever raised."""
    if isinstance(e, NotRunnable):
        return e.lines
    if isinstance(e, RigError):
        return e.lines()
    name = f"rig {rig.name}" if rig is not None else "rig"
    if isinstance(e, HardwareNotFound):
        return [f"{name}: hardware not found: {e.what}: {e.problem}",
                f"  what to do: {e.hint}"]
    detail = str(e) or type(e).__name__
    return [f"{name}{' ' + stage if stage else ''}: {detail}"
            if isinstance(e, OSError) else
            f"{name}{' ' + stage if stage else ''}: {type(e).__name__}: {detail}"]


def guarded(fn: Callable[[], T], rig: Rig | None = None, stage: str = "") -> T:
    """``fn()``; any ``Exception`` it raises becomes ``NotRunnable`` with its lines."""
    try:
        return fn()
    except Exception as e:
        raise NotRunnable(failure_lines(e, rig, stage)) from e


def load_checked(name_or_path: str | os.PathLike[str]) -> Rig:
    """The validated rig, or ``NotRunnable`` naming the file, each key and its problem."""
    from hilkit.rig.loader import load_rig

    return guarded(lambda: load_rig(name_or_path), stage="could not be loaded")


def check_rig(rig: Rig) -> None:
    """``check_hardware``; ``NotRunnable`` saying what is missing and what to do."""
    from hilkit.rig.builder import check_hardware

    guarded(lambda: check_hardware(rig), rig, "could not be checked")


def say(stream: TextIO, prog: str, lines: list[str]) -> None:
    """Each line after ``prog: ``; an indented line continues the one above it."""
    for line in lines:
        print(line if line.startswith(" ") else f"{prog}: {line}", file=stream, flush=True)

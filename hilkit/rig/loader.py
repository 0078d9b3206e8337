"""Finding rig files: by path, or by name in $HILKIT_RIGS, the repository's rigs/, ./rigs/."""

from __future__ import annotations

import os
from pathlib import Path

from hilkit.rig.builder import check_hardware  # re-exported: load, then check
from hilkit.rig.schema import Problem, Rig, RigError, parse_rig, suggest

__all__ = [
    "ENV_VAR", "check_hardware", "find_rig", "list_rigs", "load_rig", "rig_dirs", "scan_rigs",
]

ENV_VAR = "HILKIT_RIGS"
_REPO_RIGS = Path(__file__).resolve().parents[2] / "rigs"


def rig_dirs() -> list[Path]:
    """Where rigs are looked for by name, first match wins.

    ``$HILKIT_RIGS`` (a directory, or several joined by ``os.pathsep``), then
    the ``rigs/`` directory of the repository hilkit runs from, then
    ``./rigs/``. Directories that do not exist are left out; each appears once.
    """
    candidates: list[Path] = []
    env = os.environ.get(ENV_VAR, "")
    candidates += [_expand(Path(p)) for p in env.split(os.pathsep) if p]
    candidates += [_REPO_RIGS, Path.cwd() / "rigs"]
    out: list[Path] = []
    seen: set[Path] = set()
    for d in candidates:
        try:
            key = d.resolve()
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop
            continue
        if key in seen or not d.is_dir():
            continue
        seen.add(key)
        out.append(d)
    return out


def _expand(path: Path) -> Path:
    """``~`` and ``~user`` expanded where possible; left as written otherwise."""
    try:
        return path.expanduser()
    except RuntimeError:  # no such user, or no home directory
        return path


def _is_path(name_or_path: str | os.PathLike[str]) -> bool:
    text = os.fspath(name_or_path)
    return isinstance(name_or_path, os.PathLike) or text.endswith(".toml") or "/" in text


def find_rig(name_or_path: str | os.PathLike[str]) -> Path:
    """The file ``load_rig`` would read; raise ``RigError`` if there is none."""
    text = os.fspath(name_or_path)
    if _is_path(name_or_path):
        path = _expand(Path(text))
        if path.is_dir():
            raise RigError(text, [Problem("", "is a directory, not a rig file")])
        if not path.exists():
            raise RigError(text, [Problem("", "no such rig file")])
        return path  # anything else there (a device, a FIFO) is parse_rig's to refuse
    dirs = rig_dirs()
    for d in dirs:
        path = d / f"{text}.toml"
        if path.is_file():
            return path
    known = sorted({p.stem for d in dirs for p in d.glob("*.toml")})
    where = ", ".join(str(d) for d in dirs) or f"no rigs directory (set ${ENV_VAR})"
    raise RigError(text, [Problem("", f"no rig named {text!r}{suggest(text, known)}; "
                                      f"looked in {where}")])


def load_rig(name_or_path: str | os.PathLike[str]) -> Rig:
    """A validated rig: from a path (ends in .toml or contains /), else by name.

    Raises ``RigError`` (missing file, or every problem in the file).
    """
    return parse_rig(find_rig(name_or_path))


def scan_rigs() -> tuple[list[Rig], list[RigError]]:
    """Every rig file found by name lookup: the valid ones, and the errors of the others.

    A name found in an earlier directory hides the same name in later ones.
    """
    rigs: list[Rig] = []
    errors: list[RigError] = []
    seen: set[str] = set()
    for d in rig_dirs():
        for path in sorted(d.glob("*.toml")):
            if path.stem in seen:
                continue
            seen.add(path.stem)
            try:
                rigs.append(parse_rig(path))
            except RigError as e:
                errors.append(e)
    return rigs, errors


def list_rigs() -> list[Rig]:
    """The valid rigs found by name lookup, by name (broken files: see ``scan_rigs``)."""
    return sorted(scan_rigs()[0], key=lambda r: r.name)

"""The on-hardware suites: one pytest module per suite, run in this order.

Each module is ``test_<suite>.py`` and uses the fixtures of
``hilkit.hil.plugin`` (``rig``, ``stack``, ``kernel``, ``figure``,
``suite_params``). A suite's parameters come from the rig file's
``[suites.<name>]`` table and are declared in one place,
``hilkit.rig.suite_params.SUITE_PARAMS`` (name, type, range, default, doc):
the rig schema validates them before anything is touched, and a suite reads
them typed, defaults filled in, through ``hil.params(suite)``
(``SuiteParams.integer``, ``number``, ``integers``). The table of every
parameter is in ``docs/rigs.md``, made by ``params_markdown()`` (a test keeps
the two the same).

Simulated rigs with a bus (a chip model) get smaller bulk-transfer defaults,
which keeps a whole run on a chip model near a minute (CI runs it on every change);
each such choice is noted in results.json.
"""

from __future__ import annotations

from pathlib import Path

from hilkit.rig.suite_params import SUITE_NAMES

SUITES: tuple[str, ...] = SUITE_NAMES  # one list: rig files name these, in run order

SUITES_DIR = Path(__file__).resolve().parent


def suite_file(name: str) -> Path:
    """The module that holds suite ``name``."""
    if name not in SUITES:
        raise KeyError(f"no suite {name!r}; known: {', '.join(SUITES)}")
    return SUITES_DIR / f"test_{name}.py"


def suite_of(path: str) -> str | None:
    """The suite a test file belongs to (``.../test_icmp.py`` -> ``icmp``), or None."""
    stem = Path(path).stem
    if stem.startswith("test_") and stem[5:] in SUITES:
        return stem[5:]
    return None

"""``hilkit``'s command line called in-process, the way a shell sees it: the exit status
(argparse's own refusals included) and what went to stderr."""

from __future__ import annotations

import pytest

from hilkit import cli


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        rc = cli.main(argv)
    except SystemExit as e:  # argparse's own refusals
        rc = int(e.code or 0)
    return rc, capsys.readouterr().err

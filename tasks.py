"""Developer tasks. Logic lives in the package; these only call it.

Every command runs with the interpreter invoke itself runs in (the checkout's
``.venv`` after ``./install``), so nothing depends on what ``PATH`` holds.
"""

import shlex
import sys

from invoke import Context, task

PY = sys.executable


@task
def test(c: Context) -> None:
    """Run the whole test suite (unit + integration against the Linux kernel)."""
    c.run(f"{PY} -m pytest -q -p no:cacheprovider", pty=False)


@task
def lint(c: Context) -> None:
    """ruff and mypy --strict."""
    c.run(f"{PY} -m ruff check .")
    c.run(f"{PY} -m mypy")


@task
def bench(c: Context) -> None:
    """Figures: ping, flood, UDP, idle CPU, RSS; TCP goodput, loss, conn/s, RSS per
    connection; the sim-w5100 and sim-enc28j60 bus and wire figures; the sim-usb-ecm USB
    figures at high and full speed; the FT232H bridge figures of the sim-ft232h rigs; the
    PPP line figures of sim-ppp with VJ compression on and off."""
    c.run(f"{PY} bench/core.py", pty=False)
    c.run(f"{PY} bench/tcp.py", pty=False)
    c.run(f"{PY} bench/w5100.py", pty=False)
    c.run(f"{PY} bench/enc28j60.py", pty=False)
    c.run(f"{PY} bench/usb_ecm.py", pty=False)
    c.run(f"{PY} bench/ft232h.py", pty=False)
    c.run(f"{PY} bench/ppp.py", pty=False)


@task
def demo(c: Context) -> None:
    """picoTCP's README ping example against the kernel on tap0, in a private namespace."""
    c.run(f"{PY} -m hilkit.demo examples/ping.py", pty=False)


@task(help={"rig": "a rig name (rigs/NAME.toml) or path", "suite": "comma-separated suites",
            "k": "pytest -k expression", "out": "report directory",
            "place": "a labgrid place of the lab, or tag:KEY (docs/lab.md); instead of --rig"})
def hil(c: Context, rig: str = "sim-w5100", suite: str = "", k: str = "", out: str = "",
        place: str = "") -> None:
    """Run the on-hardware suites on a rig: `invoke hil --rig rpi-w5100`, or on a lab's
    place: `invoke hil --place rpi-w5100-03`."""
    args = ["--place", place] if place else ["--rig", rig]
    if suite:
        args += ["--suite", suite]
    if k:
        args += ["-k", k]
    if out:
        args += ["--out", out]
    c.run(f"{PY} -m hilkit.cli hil " + shlex.join(args), pty=False)

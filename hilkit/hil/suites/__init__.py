"""The on-hardware suites: one pytest module per suite, run in this order.

Each module is ``test_<suite>.py`` and uses the fixtures of
``hilkit.hil.plugin`` (``rig``, ``stack``, ``kernel``, ``figure``,
``suite_params``). Parameters come from the rig file's ``[suites.<name>]``
table; every key is optional:

=============  ==============================================================
suite          parameters
=============  ==============================================================
identity       --
link           --
arp            --
icmp           ``sizes`` (ICMP payload bytes; default 0, 56, 1472, 1473, 4000),
               ``count`` (echo requests per size, default 3)
udp            ``sizes`` (default 0, 1, 512, 1472, 1473, 4000), ``port``
tcp            ``bytes`` each way (default 16 MiB, simulated SPI rigs included)
throughput     ``bytes`` per direction (default 4 MiB; 1 MiB on simulated SPI
               rigs)
recovery       ``bytes`` each way (default 2 MiB; 512 KiB on simulated SPI rigs),
               ``at`` (fraction of the transfer at which the chip is reset,
               default 0.3)
conformance    ``timeout_s`` (how long one frame may take; default 3, 10 on
               simulated SPI rigs)
=============  ==============================================================

Any suite also takes ``timeout_s`` where it waits for the far end, and
``snaplen`` (bytes kept per frame in its pcapngs; default 256 for tcp,
throughput and recovery, whose captures keep headers only, else 0 = whole).

The simulated-SPI defaults keep a whole sim-w5100 run near a minute (CI runs it
on every change); each choice is noted in results.json.
"""

from __future__ import annotations

from pathlib import Path

from hilkit.rig.schema import SUITE_NAMES

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

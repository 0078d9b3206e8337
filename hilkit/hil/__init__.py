"""Hardware-in-the-loop runs: the suites, the pytest plugin, the runner and its reports.

``hilkit hil --rig NAME`` (``hilkit.hil.runner.run_hil``) or ``pytest --rig NAME``
(``hilkit.hil.plugin``) build a rig and run the suites of ``hilkit.hil.suites`` on it.
"""

from hilkit.hil.suites import SUITES

__all__ = ["SUITES"]

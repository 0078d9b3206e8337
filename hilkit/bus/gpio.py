"""Pin over the Linux GPIO character device, through the libgpiod v2 python bindings.

``import gpiod`` happens in the constructor, so hilkit imports on machines without it. The
chip is named by path (``/dev/gpiochip0``), by device name (``gpiochip0``) or by label
(``pinctrl-bcm2711``, ``pinctrl-rp1``: the header bank's number changed between Raspberry Pi
kernels, its label did not). Values and edges are logical: with ``active_low`` the kernel
inverts both, so ``set(True)`` drives an active-low reset line low.

The request's file descriptor (``fileno()``) becomes readable when an edge event is queued,
so an event loop can select on an interrupt line. The kernel queues edge events in order
(dropping the oldest on overflow), so an edge that came before ``wait_edge`` was called is
still reported by it.
"""

from __future__ import annotations

import errno
import glob
import importlib
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

from hilkit.port.errors import HardwareNotFound
from hilkit.port.pin import Edge

__all__ = ["GpiodPin", "gpiod_label", "resolve_chip"]

DEV_DIR = "/dev"  # where gpiochipN nodes live (a test points it elsewhere)

Direction = Literal["in", "out"]
Bias = Literal["as_is", "pull_up", "pull_down", "disabled"]

_HINT_INSTALL = "pip install 'hilkit[rpi]'"
_HINT_CHIP = "list the chips and their labels with gpiodetect (or ls /dev/gpiochip*)"
_HINT_PERMISSION = "add the user to the gpio group or run as root"


def _import_gpiod(chip: str) -> Any:
    try:
        gpiod = importlib.import_module("gpiod")
    except ImportError as exc:
        raise HardwareNotFound(
            chip, "python gpiod (libgpiod v2) is not installed", _HINT_INSTALL
        ) from exc
    if not hasattr(gpiod, "request_lines"):  # the v1 bindings (python3-libgpiod 1.x)
        raise HardwareNotFound(
            chip, "python gpiod is the libgpiod v1 binding; v2 is needed", _HINT_INSTALL
        )
    return gpiod


def _open_error(what: str, exc: OSError) -> HardwareNotFound:
    if isinstance(exc, PermissionError):
        return HardwareNotFound(what, "permission denied", _HINT_PERMISSION)
    if isinstance(exc, FileNotFoundError):
        return HardwareNotFound(what, "not found", _HINT_CHIP)
    if exc.errno == errno.EBUSY:
        return HardwareNotFound(
            what, "line busy", "another consumer holds it: gpioinfo shows which"
        )
    return HardwareNotFound(what, f"cannot open ({os.strerror(exc.errno or 0)})", _HINT_CHIP)


def gpiod_label(gpiod: Any) -> Callable[[str], str | None]:
    """``label_of`` for ``resolve_chip`` through libgpiod's bindings."""
    def label_of(path: str) -> str | None:
        try:
            if not gpiod.is_gpiochip_device(path):
                return None
            with gpiod.Chip(path) as chip:
                return str(chip.get_info().label)
        except OSError:
            return None
    return label_of


def resolve_chip(chip: str, label_of: Callable[[str], str | None]) -> str:
    """The device path for ``chip``: a path, ``gpiochipN``, or a label to look for.

    ``label_of(path)`` is the label of the chip at ``path`` (None if it is no chip):
    libgpiod's (``gpiod_label``) when a pin is opened, the kernel's chip-info ioctl
    when a rig's hardware is only checked.
    """
    if chip.startswith("/"):
        path = chip
    elif chip.startswith("gpiochip") and chip[len("gpiochip") :].isdigit():
        path = os.path.join(DEV_DIR, chip)
    else:
        paths = sorted(
            glob.glob(os.path.join(DEV_DIR, "gpiochip*")),
            key=lambda p: (len(p), p),  # gpiochip2 before gpiochip10
        )
        for candidate in paths:
            if label_of(candidate) == chip:
                return candidate
        found = (
            ", ".join(f"{os.path.basename(p)}={label_of(p)}" for p in paths)
            or "no /dev/gpiochip* at all"
        )
        raise HardwareNotFound(chip, f"no GPIO chip with this label ({found})", _HINT_CHIP)
    if not os.path.exists(path):
        raise HardwareNotFound(chip, "not found", _HINT_CHIP)
    return path


class GpiodPin:
    """One GPIO line, requested from the kernel for as long as the pin is open."""

    def __init__(
        self,
        chip: str,
        line: int,
        *,
        direction: Direction,
        active_low: bool = False,
        edge: Edge | None = None,
        consumer: str = "hilkit",
        initial: bool = False,
        bias: Bias = "as_is",
    ) -> None:
        if direction not in ("in", "out"):
            raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")
        if edge is not None and direction == "out":
            raise ValueError("edge detection needs direction='in'")
        gpiod = _import_gpiod(chip)
        self._gpiod = gpiod
        self._line_mod = importlib.import_module("gpiod.line")
        self.chip = chip
        self.path = resolve_chip(chip, gpiod_label(gpiod))
        self.line = line
        self.direction = direction
        self.active_low = active_low
        self.edge = edge
        self.bias = bias
        self._initial = initial
        what = f"{self.path} line {line}"
        try:
            with gpiod.Chip(self.path) as handle:
                num_lines = int(handle.get_info().num_lines)
                if not 0 <= line < num_lines:
                    raise HardwareNotFound(
                        what, f"no such line (the chip has {num_lines})", "gpioinfo lists them"
                    )
                self._request: Any = handle.request_lines(
                    consumer=consumer, config={line: self._settings(edge)}
                )
        except HardwareNotFound:
            raise
        except OSError as exc:
            raise _open_error(what, exc) from exc

    def _settings(self, edge: Edge | None) -> Any:
        lm = self._line_mod
        kwargs: dict[str, Any] = {
            "active_low": self.active_low,
            "bias": {
                "as_is": lm.Bias.AS_IS,
                "pull_up": lm.Bias.PULL_UP,
                "pull_down": lm.Bias.PULL_DOWN,
                "disabled": lm.Bias.DISABLED,
            }[self.bias],
        }
        if self.direction == "out":
            kwargs["direction"] = lm.Direction.OUTPUT
            kwargs["output_value"] = lm.Value.ACTIVE if self._initial else lm.Value.INACTIVE
        else:
            kwargs["direction"] = lm.Direction.INPUT
            kwargs["edge_detection"] = {
                None: lm.Edge.NONE,
                Edge.RISING: lm.Edge.RISING,
                Edge.FALLING: lm.Edge.FALLING,
                Edge.BOTH: lm.Edge.BOTH,
            }[edge]
        return self._gpiod.LineSettings(**kwargs)

    # -- Pin -------------------------------------------------------------------------------
    def set(self, value: bool) -> None:
        if self.direction != "out":
            raise ValueError(f"{self.path} line {self.line} is an input")
        lm = self._line_mod
        self._req().set_value(self.line, lm.Value.ACTIVE if value else lm.Value.INACTIVE)

    def get(self) -> bool:
        return bool(self._req().get_value(self.line) == self._line_mod.Value.ACTIVE)

    def wait_edge(self, edge: Edge, timeout_ms: float) -> bool:
        """Wait for ``edge`` via the kernel's event queue; other edges are consumed."""
        if self.direction != "in":
            raise ValueError(f"{self.path} line {self.line} is an output")
        request = self._req()
        if self.edge is not Edge.BOTH and self.edge is not edge:
            # Widen the edge detection once; the request (and its fd) stays the same.
            self.edge = edge if self.edge is None else Edge.BOTH
            request.reconfigure_lines({self.line: self._settings(self.edge)})
        wanted = self._wanted_types(edge)
        deadline = time.monotonic() + max(0.0, timeout_ms) / 1000
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            if not request.wait_edge_events(timedelta(seconds=remaining)):
                return False
            if any(ev.event_type in wanted for ev in request.read_edge_events()):
                return True
            if remaining == 0.0:
                return False

    def fileno(self) -> int:
        return int(self._req().fd)

    def close(self) -> None:
        request, self._request = self._request, None
        if request is not None:
            request.release()

    def __enter__(self) -> GpiodPin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------
    def _req(self) -> Any:
        if self._request is None:
            raise OSError(errno.EBADF, f"{self.path} line {self.line}: pin is closed")
        return self._request

    def _wanted_types(self, edge: Edge) -> tuple[Any, ...]:
        types = self._gpiod.EdgeEvent.Type
        if edge is Edge.RISING:
            return (types.RISING_EDGE,)
        if edge is Edge.FALLING:
            return (types.FALLING_EDGE,)
        return (types.RISING_EDGE, types.FALLING_EDGE)

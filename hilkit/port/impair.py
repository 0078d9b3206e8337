"""Impairment: wrap any Device so it has a bad link. It can lose, duplicate,
reorder, corrupt, delay and rate-limit frames.

The machine's kernel has no netem, so every test and rig that needs a bad link
gets one here, in the process, on any driver::

    dev = ImpairedDevice(TapDevice("hk0"), Impairment.parse("loss=2%,delay=5ms,seed=7"),
                         clock=stack.clock)
    stack.add_device(dev)

The model
---------
Each direction (``tx``: frames ``send`` takes; ``rx``: frames ``poll`` reads
from the inner device) has its own pipeline, its own random stream and its own
queue. A frame entering a pipeline gets these decisions, in this order:

1. **loss**: the frame is dropped. ``send`` still returns True, because the
   frame was lost on the wire, not refused by the NIC.
2. **corrupt**: one bit, chosen uniformly over the whole frame, is flipped.
   The header is included: a flip in an Ethernet destination MAC makes the
   frame "not for us", and anything else must be caught by a checksum.
3. **dup**: a second copy follows the first. It is taken before corruption,
   so it is clean, as with netem.
4. **rate** (``rate_bps`` > 0): the link is a serial line. A copy waits until
   the copies before it have been sent, then takes ``len * 8 / rate`` seconds
   to cross (store and forward: it arrives when its last bit does). Copies
   waiting for the line, and the one on it, form the bottleneck queue. When the
   queue is not empty and accepting a copy would exceed ``queue_frames`` or
   ``queue_bytes``, the copy is dropped (``queue_dropped``), as a router's
   tail-drop queue does. An empty queue always accepts one copy, however big.
   Without a rate nothing waits for the line, so the limits never drop.
5. **delay** (``delay_ms`` plus ``jitter_ms``, uniform in ``±jitter``, never
   below 0): after the line, the copy travels for this long. The link stays
   FIFO. A copy never overtakes an earlier one, so jitter alone does not
   reorder. Only ``reorder`` reorders. When frames come closer together than
   the jitter, one cannot leave before the frame ahead of it, so delays
   bunch toward the high end.
6. **reorder**: when the first copy of a frame comes out of the link, it is
   held back. The next copy to come out overtakes it, and the held copy goes
   out right after that one. If nothing comes within ``reorder_hold_ms``, the
   held copy goes out alone (``reorder_timeouts``), so a lone frame is never
   stuck. A frame that comes out while another is held overtakes that one and
   is not held itself. At 100 %, frames 1 2 3 4 come out as 2 1 4 3.

Every frame draws the same six numbers from its direction's stream, whatever
the decisions turn out to be. The same seed and the same frame sequence give
the same decisions, and turning one impairment on does not change which
frames another one hits. The streams are ``random.Random`` seeded from
``seed`` and the direction name, so tx and rx are independent and traffic in
one direction does not shift the other's decisions.

Time, and who moves frames
--------------------------
Copies that are due go out at once. Copies that are not due wait in a
time-ordered queue inside the wrapper:

- **tx**: a delayed frame reaches the inner device from a later ``poll()``
  once it is due. The stack polls every device on every tick, so a delayed
  frame goes out on the first tick at or after its due time. Code that drives
  the device without a stack must keep calling ``poll`` too.
- **rx**: ``poll`` reads what the inner device has at once (so the inner
  descriptor does not stay readable), queues it, and returns frames once they
  are due.

A loop that sleeps in ``select`` on ``fileno()`` must also wake for these
due times. ``next_deadline()`` gives the earliest one, in milliseconds on the
wrapper's clock. Give the wrapper the stack's clock.

Counters
--------
``counters`` is the inner device's ``DeviceCounters``: what really crossed the
wire. A frame lost on tx is therefore not in ``tx_frames``. What the
impairment did is in ``impair_counters`` (both directions added together), and
per direction in ``impair_counters_tx`` and ``impair_counters_rx``.

Frames the inner device would refuse anyway (empty, longer than
``max_frame_len``) bypass the impairment: they go straight to the inner
``send``, which counts them in ``tx_errors`` and returns False. A direction
without impairment passes frames straight through, so ``Impairment()`` is a
transparent wrapper.

Capturing: a ``CaptureDevice`` *around* an ``ImpairedDevice`` (what
``Stack(pcap=...)`` builds) records what the stack sent and received. An
``ImpairedDevice`` around a ``CaptureDevice`` records what crossed the wire.
"""

from __future__ import annotations

import math
import random
import re
from collections import deque
from dataclasses import dataclass, fields, replace
from typing import Literal

from hilkit.port.clock import Clock, MonotonicClock
from hilkit.port.device import Device, DeviceClosed, Offloads, device_offloads, max_frame_len
from hilkit.port.middleware import DeviceMiddleware

__all__ = [
    "DEFAULT_QUEUE_FRAMES",
    "DEFAULT_REORDER_HOLD_MS",
    "DIRECTIONS",
    "Direction",
    "ImpairCounters",
    "ImpairedDevice",
    "Impairment",
]

Direction = Literal["both", "tx", "rx"]
DIRECTIONS: tuple[Direction, ...] = ("both", "tx", "rx")

DEFAULT_QUEUE_FRAMES = 1000  # bottleneck queue, in frames (only matters with a rate)
DEFAULT_REORDER_HOLD_MS = 10.0  # longest a reordered frame waits for one to overtake it

_PROBABILITIES = ("loss", "dup", "reorder", "corrupt")
_DURATIONS = ("delay_ms", "jitter_ms", "reorder_hold_ms")

# --- the spec language: "key=value,key=value" ---------------------------------
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}  # -> milliseconds
# Bits per second. "bps" is *bits*, like the field rate_bps. Note that tc's
# "bps" means bytes per second.
_RATE_UNITS = {"bit": 1.0, "bps": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_SIZE_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}  # -> bytes
_NUMBER = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z%]*)")

# spec key -> dataclass field
_KEYS = {
    "loss": "loss",
    "dup": "dup",
    "reorder": "reorder",
    "corrupt": "corrupt",
    "delay": "delay_ms",
    "jitter": "jitter_ms",
    "rate": "rate_bps",
    "queue": "queue_frames",
    "queue_bytes": "queue_bytes",
    "reorder_hold": "reorder_hold_ms",
    "seed": "seed",
    "direction": "direction",
}


def _number(key: str, value: str) -> tuple[float, str]:
    m = _NUMBER.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"impairment {key}={value!r}: not a number")
    num = float(m.group(1))
    if not math.isfinite(num):
        raise ValueError(f"impairment {key}={value!r}: not a finite number")
    if num < 0:
        raise ValueError(f"impairment {key}={value!r}: must not be negative")
    return num, m.group(2).lower()


def _parse_probability(key: str, value: str) -> float:
    num, unit = _number(key, value)
    if unit == "%":
        if num > 100:
            raise ValueError(f"impairment {key}={value!r}: more than 100%")
        return num / 100.0
    if unit:
        raise ValueError(f"impairment {key}={value!r}: unknown unit {unit!r} (use % or a fraction)")
    if num > 1:
        raise ValueError(
            f"impairment {key}={value!r}: a fraction must be within 0..1 "
            f"(write {value.strip()}% for percent)"
        )
    return num


def _parse_scaled(key: str, value: str, units: dict[str, float], what: str) -> float:
    num, unit = _number(key, value)
    if not unit:
        if num == 0:
            return 0.0
        raise ValueError(
            f"impairment {key}={value!r}: {what} needs a unit ({', '.join(units)})"
        )
    scale = units.get(unit)
    if scale is None:
        raise ValueError(
            f"impairment {key}={value!r}: unknown unit {unit!r} for {what} "
            f"(use {', '.join(units)})"
        )
    scaled = num * scale
    if not math.isfinite(scaled):
        raise ValueError(f"impairment {key}={value!r}: too large")
    return scaled


def _parse_count(key: str, value: str, hint: str = "") -> int:
    v = value.strip()
    if not v.isdigit():
        if v.startswith("-") and v[1:].isdigit():
            raise ValueError(f"impairment {key}={value!r}: must not be negative")
        raise ValueError(f"impairment {key}={value!r}: not a whole number{hint}")
    return int(v)


def _parse_bytes(key: str, value: str) -> int:
    m = _NUMBER.fullmatch(value.strip())
    if m is None or m.group(2) == "":
        return _parse_count(key, value)
    num, unit = _number(key, value)
    scale = _SIZE_UNITS.get(unit)
    if scale is None:
        raise ValueError(
            f"impairment {key}={value!r}: unknown unit {unit!r} for a size "
            f"(use {', '.join(_SIZE_UNITS)})"
        )
    size = num * scale
    if size != int(size):
        raise ValueError(f"impairment {key}={value!r}: not a whole number of bytes")
    return int(size)


def _parse_seed(key: str, value: str) -> int:
    v = value.strip()
    try:
        return int(v, 10)
    except ValueError:
        raise ValueError(f"impairment {key}={value!r}: not an integer") from None


def _parse_direction(key: str, value: str) -> Direction:
    v = value.strip().lower()
    if v not in DIRECTIONS:
        raise ValueError(f"impairment {key}={value!r}: must be one of {', '.join(DIRECTIONS)}")
    return v


def _fmt(x: float) -> str:
    """Shortest text that reads back as the same float (ints without '.0')."""
    return str(int(x)) if x == int(x) and abs(x) < 1e15 else repr(x)


@dataclass(frozen=True)
class Impairment:
    """What is wrong with a link. Every field at its default means a perfect link.

    Probabilities are fractions in 0..1. Times are in milliseconds. ``rate_bps``
    is in bits per second (0 means unlimited). ``queue_frames`` and ``queue_bytes``
    limit the bottleneck queue in front of the rate limiter (0 means no limit).
    ``direction`` says which way is impaired: ``"tx"`` (``send``), ``"rx"``
    (``poll``) or ``"both"``, each with its own independent random stream.
    """

    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_bps: float = 0.0
    queue_frames: int = DEFAULT_QUEUE_FRAMES
    queue_bytes: int = 0
    reorder_hold_ms: float = DEFAULT_REORDER_HOLD_MS
    seed: int = 0
    direction: Direction = "both"

    def __post_init__(self) -> None:
        for name in (*_PROBABILITIES, *_DURATIONS, "rate_bps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"Impairment.{name} must be a number, not {v!r}")
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"Impairment.{name} must be finite and >= 0, not {v!r}")
        for name in _PROBABILITIES:
            if getattr(self, name) > 1:
                raise ValueError(f"Impairment.{name} is a fraction within 0..1, not "
                                 f"{getattr(self, name)!r}")
        if self.reorder_hold_ms <= 0:
            raise ValueError(
                f"Impairment.reorder_hold_ms must be > 0, not {self.reorder_hold_ms!r}"
            )
        for name in ("queue_frames", "queue_bytes", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"Impairment.{name} must be an int, not {v!r}")
            if name != "seed" and v < 0:
                raise ValueError(f"Impairment.{name} must be >= 0 (0 = no limit), not {v!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(
                f"Impairment.direction must be one of {', '.join(DIRECTIONS)}, "
                f"not {self.direction!r}"
            )

    @property
    def active(self) -> bool:
        """True if this changes anything about the link.

        Queue limits alone change nothing, because without a rate no queue forms.
        """
        return any(
            getattr(self, name) > 0 for name in (*_PROBABILITIES, "delay_ms", "jitter_ms",
                                                 "rate_bps")
        )

    def applies_to(self, direction: Literal["tx", "rx"]) -> bool:
        return self.active and self.direction in ("both", direction)

    @classmethod
    def parse(cls, spec: str) -> Impairment:
        """Build one from ``"loss=2%,dup=0.5%,delay=5ms,rate=10mbit,seed=7"``.

        Keys are loss, dup, reorder and corrupt (``2%`` or a fraction ``0.02``).
        delay, jitter and reorder_hold take ``us``, ``ms`` or ``s``. rate takes
        ``bit``, ``kbit``, ``mbit``, ``gbit`` or ``bps`` (bits per second,
        decimal prefixes). queue is a number of frames. queue_bytes takes a
        plain number or ``B``, ``kB``, ``KiB``, ``MB`` or ``MiB``. seed is an
        integer. direction is ``both``, ``tx`` or ``rx``. A zero needs no unit.
        ``""`` and ``"none"`` give a perfect link. Anything else raises a
        ``ValueError`` that names the key and the value.
        """
        if not isinstance(spec, str):
            raise ValueError(f"impairment spec must be a string, not {type(spec).__name__}")
        if spec.strip().lower() in ("", "none"):
            return cls()
        values: dict[str, object] = {}
        for item in spec.split(","):
            if not item.strip():
                continue
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq:
                raise ValueError(f"impairment {item.strip()!r}: expected key=value")
            if key not in _KEYS:
                raise ValueError(
                    f"impairment: unknown key {key!r} in {item.strip()!r} "
                    f"(known: {', '.join(_KEYS)})"
                )
            name = _KEYS[key]
            if name in values:
                raise ValueError(f"impairment: key {key!r} given twice")
            if not value.strip():
                raise ValueError(f"impairment {key}=: missing value")
            parsed: object
            if name in _PROBABILITIES:
                parsed = _parse_probability(key, value)
            elif name in _DURATIONS:
                parsed = _parse_scaled(key, value, _TIME_UNITS, "a time")
                if name == "reorder_hold_ms" and parsed == 0:
                    raise ValueError(f"impairment {key}={value!r}: must be > 0")
            elif name == "rate_bps":
                parsed = _parse_scaled(key, value, _RATE_UNITS, "a rate")
            elif name == "queue_frames":
                parsed = _parse_count(key, value, " of frames (use queue_bytes= for a size)")
            elif name == "queue_bytes":
                parsed = _parse_bytes(key, value)
            elif name == "seed":
                parsed = _parse_seed(key, value)
            else:
                parsed = _parse_direction(key, value)
            values[name] = parsed
        return cls(**values)  # type: ignore[arg-type]

    def spec(self) -> str:
        """The spec string for this config: ``Impairment.parse(x.spec()) == x``."""
        default = Impairment()
        keys = {name: key for key, name in _KEYS.items()}
        parts = []
        for f in fields(self):
            v = getattr(self, f.name)
            if v == getattr(default, f.name):
                continue
            key = keys[f.name]
            if f.name in _DURATIONS:
                parts.append(f"{key}={_fmt(v)}ms")
            elif f.name == "rate_bps":
                parts.append(f"{key}={_fmt(v)}bit")
            elif f.name in _PROBABILITIES:
                parts.append(f"{key}={_fmt(v)}")
            else:
                parts.append(f"{key}={v}")
        return ",".join(parts) or "none"

    def __str__(self) -> str:
        return self.spec()


_PERFECT = Impairment()


@dataclass
class ImpairCounters:
    """What an impairment did to the frames that went through it."""

    frames: int = 0  # frames that entered the impairment (not the ones passed straight through)
    dropped: int = 0  # lost (loss)
    duplicated: int = 0  # a second copy was made (dup)
    corrupted: int = 0  # one bit flipped (corrupt)
    reordered: int = 0  # held back and overtaken by the next frame (reorder)
    reorder_timeouts: int = 0  # held back, but nothing overtook it within reorder_hold_ms
    delayed: int = 0  # copies given a delay > 0 (delay, jitter)
    rate_limited: int = 0  # copies that waited for the line behind earlier ones (rate)
    queue_dropped: int = 0  # copies refused by a full bottleneck queue (queue limits)
    inner_refused: int = 0  # tx: a copy released later that the inner device's send refused

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __add__(self, other: ImpairCounters) -> ImpairCounters:
        return ImpairCounters(**{k: v + getattr(other, k) for k, v in self.as_dict().items()})


class _Copy:
    """One copy of a frame inside the link."""

    __slots__ = ("due", "frame", "reorder", "token")

    def __init__(self, due: float, frame: bytes, reorder: bool, token: int) -> None:
        self.due = due
        self.frame = frame
        self.reorder = reorder
        self.token = token


class _Path:
    """The impairment pipeline for one direction."""

    def __init__(self, direction: Literal["tx", "rx"]) -> None:
        self.direction = direction
        self.counters = ImpairCounters()
        self.imp = _PERFECT
        self.enabled = False
        self.loss_only = False
        self.rng = random.Random(0)
        self._queue: deque[_Copy] = deque()  # due times never decrease: FIFO = time order
        self._line: deque[tuple[float, int]] = deque()  # (leaves the line at, size)
        self._line_bytes = 0
        self._line_free = -math.inf
        self._last_due = -math.inf
        self._held: _Copy | None = None
        self._held_until = 0.0
        self._tokens = 0

    def configure(self, imp: Impairment) -> None:
        self.enabled = imp.applies_to(self.direction)
        self.imp = imp if self.enabled else _PERFECT
        self.rng = random.Random(f"hilkit-impair/{imp.seed}/{self.direction}")
        # Loss and nothing else: a frame that is kept leaves at once, as it came, so it
        # need not pass the queue (``lost`` draws as ``push`` does: the same decisions).
        i = self.imp
        self.loss_only = self.enabled and not (i.corrupt or i.dup or i.reorder or i.delay_ms
                                               or i.jitter_ms or i.rate_bps)

    @property
    def idle(self) -> bool:
        return not self._queue and self._held is None

    @property
    def pending(self) -> int:
        return len(self._queue) + (self._held is not None)

    def clear(self) -> None:
        self._queue.clear()
        self._line.clear()
        self._line_bytes = 0
        self._held = None

    def next_deadline(self) -> float | None:
        due = self._queue[0].due if self._queue else None
        if self._held is not None and (due is None or self._held_until < due):
            return self._held_until
        return due

    def lost(self) -> bool:
        """``push``'s decision for a path that only loses frames: lost (counted) or not."""
        c = self.counters
        c.frames += 1
        r = self.rng.random
        u_loss = r()
        r(), r(), r(), r(), r()  # six draws per frame, as ``push`` makes
        if u_loss < self.imp.loss:
            c.dropped += 1
            return True
        return False

    def push(self, frame: bytes, now: float) -> int | None:
        """Take one frame in; return the token of its first copy, or None if it is gone."""
        imp, c = self.imp, self.counters
        c.frames += 1
        r = self.rng.random
        # Always six draws per frame, so that decisions stay aligned with frames.
        u_loss, u_corrupt, u_bit, u_dup, u_reorder, u_jitter = r(), r(), r(), r(), r(), r()
        if u_loss < imp.loss:
            c.dropped += 1
            return None
        original = frame
        if u_corrupt < imp.corrupt and frame:
            nbits = len(frame) * 8
            bit = min(int(u_bit * nbits), nbits - 1)
            buf = bytearray(frame)
            buf[bit >> 3] ^= 0x80 >> (bit & 7)
            frame = bytes(buf)
            c.corrupted += 1
        delay = imp.delay_ms
        if imp.jitter_ms:
            delay = max(0.0, delay + (2.0 * u_jitter - 1.0) * imp.jitter_ms)
        first = self._enqueue(frame, u_reorder < imp.reorder, delay, now)
        if u_dup < imp.dup:
            c.duplicated += 1
            self._enqueue(original, False, delay, now)
        return first

    def _enqueue(self, frame: bytes, reorder: bool, delay: float, now: float) -> int | None:
        imp, c = self.imp, self.counters
        due = now
        if imp.rate_bps > 0:
            line = self._line
            while line and line[0][0] <= now:
                self._line_bytes -= line.popleft()[1]
            size = len(frame)
            if line and (
                (imp.queue_frames and len(line) >= imp.queue_frames)
                or (imp.queue_bytes and self._line_bytes + size > imp.queue_bytes)
            ):
                c.queue_dropped += 1
                return None
            start = now
            if self._line_free > now:
                start = self._line_free
                c.rate_limited += 1
            due = self._line_free = start + size * 8000.0 / imp.rate_bps
            line.append((due, size))
            self._line_bytes += size
        if delay > 0:
            c.delayed += 1
            due += delay
        due = max(due, self._last_due)
        self._last_due = due
        self._tokens += 1
        self._queue.append(_Copy(due, frame, reorder, self._tokens))
        return self._tokens

    def release(self, now: float) -> list[_Copy]:
        """Copies leaving the link by ``now``, in the order they leave."""
        out: list[_Copy] = []
        q, c = self._queue, self.counters
        while q and q[0].due <= now:
            cp = q.popleft()
            held = self._held
            if held is not None and self._held_until <= cp.due:
                out.append(held)  # nothing came in time to overtake it
                self._held = held = None
                c.reorder_timeouts += 1
            if held is None:
                if cp.reorder:
                    self._held, self._held_until = cp, cp.due + self.imp.reorder_hold_ms
                    continue
                out.append(cp)
            else:
                out.append(cp)  # cp overtakes the held copy
                out.append(held)
                self._held = None
                c.reordered += 1
        if self._held is not None and self._held_until <= now:
            out.append(self._held)
            self._held = None
            c.reorder_timeouts += 1
        return out


class ImpairedDevice(DeviceMiddleware):
    """A Device whose link loses, duplicates, reorders, corrupts, delays and rate-limits.

    Everything the Device contract asks is delegated to ``inner``: name, link
    type, MAC, MTU, counters, link state, descriptor, close. See the module
    docstring for the model. ``impairment`` can be reassigned at any time.
    Frames already inside keep their schedule, and the random streams start
    again from the new config's seed.
    """

    def __init__(self, inner: Device, impairment: Impairment, clock: Clock | None = None) -> None:
        super().__init__(inner)
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self._tx = _Path("tx")
        self._rx = _Path("rx")
        self._ready: deque[bytes] = deque()  # rx frames due, waiting for poll's budget
        self._closed = False
        self._impairment = impairment
        self.impairment = impairment

    # -- the config ----------------------------------------------------------
    @property
    def impairment(self) -> Impairment:
        return self._impairment

    @impairment.setter
    def impairment(self, value: Impairment) -> None:
        if not isinstance(value, Impairment):
            raise TypeError(f"impairment must be an Impairment, not {type(value).__name__}")
        off = device_offloads(self.inner)
        if value.corrupt and (off.rx_checksum or off.tx_checksum):
            raise ValueError(f"{self.inner.name} offloads checksums, so nothing would catch "
                             "a corrupted frame: open it without offloads to corrupt frames")
        self._impairment = value
        self._tx.configure(value)
        self._rx.configure(value)

    @property
    def impair_counters(self) -> ImpairCounters:
        """Both directions added together. This is a new object on every access."""
        return self._tx.counters + self._rx.counters

    @property
    def impair_counters_tx(self) -> ImpairCounters:
        return self._tx.counters

    @property
    def impair_counters_rx(self) -> ImpairCounters:
        return self._rx.counters

    @property
    def offloads(self) -> Offloads:
        """The wrapped device's, but no segmentation: loss, delay and the rest act on
        the frames of a wire, not on 64 KB segments the device would cut later."""
        off = device_offloads(self.inner)
        return replace(off, tso=0) if off.tso else off

    # -- traffic ---------------------------------------------------------------
    def send(self, frame: bytes | bytearray | memoryview) -> bool:
        """Put ``frame`` on the impaired link.

        Returns the inner ``send``'s answer if the frame went out during this
        call. Otherwise it returns True, because the link accepted the frame,
        even if the link then lost it.
        """
        if self._closed:
            raise DeviceClosed(f"{self.name}: device is closed")
        tx = self._tx
        if not tx.enabled and tx.idle:
            return self.inner.send(frame)
        n = frame.nbytes if isinstance(frame, memoryview) else len(frame)
        if n == 0 or n > max_frame_len(self.inner):
            return self.inner.send(frame)  # refused and counted by the inner device
        if tx.loss_only and tx.idle:
            return True if tx.lost() else self.inner.send(frame)
        now = self.clock.now_ms()
        token = tx.push(bytes(frame), now)
        result = True
        for cp in tx.release(now):
            ok = self.inner.send(cp.frame)
            if cp.token == token:
                result = ok
            elif not ok:
                tx.counters.inner_refused += 1
        return result

    def poll(self, budget: int) -> list[bytes]:
        """Send tx frames that are due, then return up to ``budget`` rx frames that are due."""
        if self._closed:
            raise DeviceClosed(f"{self.name}: device is closed")
        now = self.clock.now_ms()
        tx, rx, ready = self._tx, self._rx, self._ready
        if not tx.idle:
            for cp in tx.release(now):
                if not self.inner.send(cp.frame):
                    tx.counters.inner_refused += 1
        if not rx.enabled and rx.idle and not ready:
            return self.inner.poll(budget)
        if rx.loss_only and rx.idle and not ready:
            return [f for f in self.inner.poll(budget) if not rx.lost()]
        if budget <= 0:
            return []
        room = budget - len(ready)
        if room > 0:
            for frame in self.inner.poll(room):
                rx.push(frame, now)
        if not rx.idle:
            ready.extend(cp.frame for cp in rx.release(now))
        take = min(budget, len(ready))
        return [ready.popleft() for _ in range(take)]

    def next_deadline(self) -> float | None:
        """When a frame held here is next due (ms, on ``clock``), or None if none is held.

        If rx frames are already due and waiting for ``poll``, it returns the
        current time.
        """
        if self._closed:
            return None
        if self._ready:
            return self.clock.now_ms()
        due = [d for d in (self._tx.next_deadline(), self._rx.next_deadline(),
                           super().next_deadline()) if d is not None]
        return min(due) if due else None

    @property
    def pending(self) -> int:
        """Frames held inside the wrapper, both directions (for tests and reports)."""
        return self._tx.pending + self._rx.pending + len(self._ready)

    def close(self) -> None:
        """Close the inner device. Frames still held here are discarded."""
        self._closed = True
        self._tx.clear()
        self._rx.clear()
        self._ready.clear()
        self.inner.close()

    def __repr__(self) -> str:
        return f"<ImpairedDevice {self.inner!r} [{self._impairment}]>"

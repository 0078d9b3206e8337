"""Modem chat, sans-I/O: the dialogue that takes a modem from commands to a data call.

A ``ChatScript`` is a list of steps, each "wait for this text, then send that", in the
manner of the classic ``chat`` program; a ``ChatRunner`` plays one. The runner is fed
the bytes the modem sent and the time, and hands back the bytes to send; it never
reads a clock or a port itself, so a test drives it with a scripted modem and a manual
clock. The outcome is ``ChatDone`` (with whatever arrived after the last match, which
belongs to PPP) or ``ChatFailed``, which names the step, why, and the last line the
modem said (printable and bounded).

Two spellings for rig files::

    chat = [["", "AT"], ["OK", "ATE0"], ["OK", "ATD*99#"], ["CONNECT"]]
    chat = "'' AT OK ATE0 OK AT+CGDCONT=1,\\"IP\\",\\"internet\\" OK ATD*99# CONNECT"

The string form is whitespace separated; only single quotes quote (``''`` is the empty
expectation, "send at once"), so double quotes in AT commands stay as they are. The
words ``ABORT text`` and ``TIMEOUT seconds`` work as in ``chat``. In the texts,
``\\r \\n \\t \\s`` (space) and ``\\\\`` are escapes; a send ending in ``\\c`` goes without
the carriage return that otherwise ends every send.

``hangup_script`` is the in-band hang-up: a guard time of silence, ``+++``, a guard time,
then ``ATH`` (a modem that does not answer ``OK`` is not waited for beyond its timeout).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "DEFAULT_ABORTS",
    "ChatDone",
    "ChatError",
    "ChatFailed",
    "ChatRunner",
    "ChatScript",
    "ChatStep",
    "hangup_script",
    "parse_chat",
]

DEFAULT_ABORTS: Final = ("NO CARRIER", "BUSY", "ERROR", "NO DIALTONE", "NO ANSWER")
DEFAULT_TIMEOUT_S: Final = 45.0  # chat(8)'s default per expectation
SAID_MAX: Final = 80  # characters of the modem's last line kept for a failure message
_LINE_MAX: Final = 256  # bytes of the line being received that are kept (a bound)
_ESCAPES: Final = {"r": "\r", "n": "\n", "t": "\t", "s": " ", "\\": "\\", "'": "'"}


class ChatError(ValueError):
    """A chat script that cannot be parsed."""


@dataclass(frozen=True)
class ChatStep:
    """Wait up to ``timeout_s`` for ``expect`` ('' = at once), then send ``send``.

    ``send`` None sends nothing (the last step of a dial: wait for CONNECT); a send
    ends with a carriage return unless it ends in ``\\c``. ``delay_s`` is silence kept
    before the send (a guard time); an ``optional`` step that times out goes on as if
    its expectation had come (it sends, and the next step starts) instead of failing.
    """

    expect: str
    send: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    delay_s: float = 0.0
    optional: bool = False

    def __post_init__(self) -> None:
        if not self.timeout_s > 0 or self.delay_s < 0:
            raise ChatError(f"step {self.expect!r}: timeout_s must be > 0 and delay_s >= 0")

    def describe(self) -> str:
        what = f"expect {self.expect!r}" if self.expect else "start"
        return what if self.send is None else f"{what}, send {self.send!r}"

    def wire_send(self) -> bytes:
        """The bytes ``send`` puts on the line (escapes resolved, CR added)."""
        if self.send is None:
            return b""
        text, cr = _unescape(self.send, allow_c=True)
        return text.encode("utf-8") + (b"\r" if cr else b"")

    def wire_expect(self) -> bytes:
        return _unescape(self.expect, allow_c=False)[0].encode("utf-8")


@dataclass(frozen=True)
class ChatScript:
    steps: tuple[ChatStep, ...]
    aborts: tuple[str, ...] = DEFAULT_ABORTS

    def __init__(self, steps: Iterable[ChatStep], aborts: Iterable[str] = DEFAULT_ABORTS
                 ) -> None:
        object.__setattr__(self, "steps", tuple(steps))
        object.__setattr__(self, "aborts", tuple(a for a in aborts if a))
        if not self.steps:
            raise ChatError("a chat script needs at least one step")

    @classmethod
    def parse(cls, spec: str | Sequence[Sequence[str]], *,
              timeout_s: float = DEFAULT_TIMEOUT_S,
              aborts: Iterable[str] = DEFAULT_ABORTS) -> ChatScript:
        return parse_chat(spec, timeout_s=timeout_s, aborts=aborts)

    def runner(self, now_ms: float) -> ChatRunner:
        return ChatRunner(self, now_ms)


@dataclass(frozen=True)
class ChatDone:
    """The script ran to its end; ``leftover`` arrived after the last match (PPP's)."""

    elapsed_ms: float
    leftover: bytes = b""
    modem_said: str = ""


@dataclass(frozen=True)
class ChatFailed:
    step_index: int
    step_description: str
    reason: str  # "timeout after 45 s", "modem said 'NO CARRIER'"
    modem_said: str  # its last line, printable, at most SAID_MAX characters

    def __str__(self) -> str:
        said = f"; modem's last line: {self.modem_said!r}" if self.modem_said else \
            "; the modem said nothing"
        return f"chat step {self.step_index} ({self.step_description}): {self.reason}{said}"


ChatOutcome = ChatDone | ChatFailed


def _unescape(text: str, *, allow_c: bool) -> tuple[str, bool]:
    """``text`` with escapes resolved, and whether a send ends with CR (no ``\\c``)."""
    out: list[str] = []
    cr = True
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "c" and allow_c and i + 2 == len(text):
                cr = False
            elif nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
            else:
                out.append(ch + nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out), cr


def _tokens(spec: str) -> list[str]:
    """Split on whitespace; single quotes group (and may be empty), double quotes are text."""
    out: list[str] = []
    i, n = 0, len(spec)
    while i < n:
        if spec[i].isspace():
            i += 1
            continue
        buf: list[str] = []
        while i < n and not spec[i].isspace():
            if spec[i] == "'":
                end = spec.find("'", i + 1)
                if end < 0:
                    raise ChatError(f"unterminated quote at column {i + 1} of {spec!r}")
                buf.append(spec[i + 1:end])
                i = end + 1
            elif spec[i] == "\\" and i + 1 < n:
                buf.append(spec[i:i + 2])
                i += 2
            else:
                buf.append(spec[i])
                i += 1
        out.append("".join(buf))
    return out


def parse_chat(spec: str | Sequence[Sequence[str]], *, timeout_s: float = DEFAULT_TIMEOUT_S,
               aborts: Iterable[str] = DEFAULT_ABORTS) -> ChatScript:
    """A ``ChatScript`` from a classic chat string or a list of [expect, send] pairs.

    A pair list may end with a one-element [expect]; a string with an odd number of
    words ends with an expectation (nothing sent after it).
    """
    abort_list = list(aborts)
    steps: list[ChatStep] = []
    if isinstance(spec, str):
        words = _tokens(spec)
        pending: list[str] = []
        timeout = timeout_s
        i = 0
        while i < len(words):
            w = words[i]
            if w in ("ABORT", "TIMEOUT") and not pending:
                if i + 1 >= len(words):
                    raise ChatError(f"{w} needs a value")
                value = words[i + 1]
                if w == "ABORT":
                    abort_list.append(_unescape(value, allow_c=False)[0])
                else:
                    try:
                        timeout = float(value)
                    except ValueError:
                        raise ChatError(f"TIMEOUT {value!r} is not a number") from None
                    if not timeout > 0:
                        raise ChatError(f"TIMEOUT {value!r} must be > 0")
                i += 2
                continue
            pending.append(w)
            if len(pending) == 2:
                steps.append(ChatStep(pending[0], pending[1], timeout))
                pending = []
            i += 1
        if pending:
            steps.append(ChatStep(pending[0], None, timeout))
    else:
        for n, pair in enumerate(spec):
            if isinstance(pair, str) or not 1 <= len(pair) <= 2 or not all(
                    isinstance(p, str) for p in pair):
                raise ChatError(f"chat[{n}] is not [expect, send] or [expect]: {pair!r}")
            steps.append(ChatStep(pair[0], pair[1] if len(pair) == 2 else None, timeout_s))
    if not steps:
        raise ChatError("empty chat script")
    return ChatScript(steps, abort_list)


def hangup_script(guard_s: float = 1.0, command: str = "ATH", timeout_s: float = 3.0
                  ) -> ChatScript:
    """Escape to command mode (guard, ``+++``, guard) and hang up with ``command``."""
    return ChatScript([
        ChatStep("", "+++\\c", timeout_s, delay_s=guard_s),
        ChatStep("OK", command, guard_s + timeout_s, optional=True),
        ChatStep("OK", None, timeout_s, optional=True),
    ], aborts=())


def printable(raw: bytes, limit: int = SAID_MAX) -> str:
    """``raw`` as a bounded, printable one-liner (controls and non-ASCII shown as ``.``)."""
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in raw[-limit:])
    return text.strip()


@dataclass
class _Matcher:
    """The recent bytes, just enough of them to find the longest pattern across reads."""

    keep: int
    buf: bytearray = field(default_factory=bytearray)

    def add(self, data: bytes) -> None:
        self.buf += data

    def trim(self) -> None:
        if len(self.buf) > self.keep:
            del self.buf[:len(self.buf) - self.keep]


class ChatRunner:
    """One run of a ``ChatScript``: ``feed`` what the modem said, ``poll`` for time,
    ``take_output`` for what to send; ``outcome`` is set once it is over."""

    def __init__(self, script: ChatScript, now_ms: float) -> None:
        self.script = script
        self._start = now_ms
        self._index = 0
        self._step_start = now_ms
        self._send_at: float | None = None  # the current step matched, its send waits
        self._out = bytearray()
        self._aborts = [a.encode("utf-8") for a in script.aborts]
        longest = max([len(s.wire_expect()) for s in script.steps] + [len(a) for a in
                                                                      self._aborts] + [1])
        self._match = _Matcher(keep=max(longest - 1, 0))
        self._line = bytearray()  # the line being received (bounded)
        self._last_line = b""  # the last complete non-empty line
        self.outcome: ChatOutcome | None = None
        self.bytes_in = 0
        self._enter(now_ms)

    # -- what the owner calls ---------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def step_index(self) -> int:
        return self._index

    def modem_said(self) -> str:
        """The modem's last line (the one being received if it has begun)."""
        return printable(bytes(self._line)) or printable(self._last_line)

    def take_output(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_deadline(self) -> float | None:
        if self.outcome is not None:
            return None
        if self._send_at is not None:
            return self._send_at
        return self._step_start + self._step.timeout_s * 1000.0

    def feed(self, data: bytes, now_ms: float) -> None:
        """Bytes from the modem; past the end of the script they are ignored (and a
        successful end keeps those that followed the last match as ``leftover``)."""
        if self.outcome is not None or not data:
            return
        self.bytes_in += len(data)
        self._track_lines(data)
        if self._send_at is not None:  # waiting out a guard time: nothing to match
            return
        self._match.add(data)
        self._scan(now_ms)

    def poll(self, now_ms: float) -> None:
        """Let time pass: a guard time ends, a step times out."""
        if self.outcome is not None:
            return
        if self._send_at is not None:
            if now_ms >= self._send_at:
                self._send_now(now_ms)
            return
        step = self._step
        if now_ms - self._step_start >= step.timeout_s * 1000.0:
            if step.optional:
                self._match.buf.clear()
                self._matched(now_ms)
            else:
                self._fail(f"timeout after {step.timeout_s:g} s waiting for {step.expect!r}")

    # -- inside ------------------------------------------------------------------------

    @property
    def _step(self) -> ChatStep:
        return self.script.steps[self._index]

    def _enter(self, now_ms: float) -> None:
        self._step_start = now_ms
        self._send_at = None
        if self._step.expect == "":
            self._matched(now_ms)

    def _scan(self, now_ms: float) -> None:
        """Match the buffer against the aborts and the expectation; the earliest wins."""
        m = self._match
        while self.outcome is None and self._send_at is None and m.buf:
            buf = bytes(m.buf)
            want = self._step.wire_expect()
            pos = buf.find(want)
            for a in self._aborts:
                apos = buf.find(a)
                if apos >= 0 and (pos < 0 or apos < pos):
                    self._fail(f"modem said {a.decode('utf-8', 'replace')!r}")
                    return
            if pos < 0:
                m.trim()
                return
            del m.buf[:pos + len(want)]
            self._matched(now_ms)

    def _matched(self, now_ms: float) -> None:
        step = self._step
        if step.delay_s > 0 and step.send is not None:
            self._send_at = now_ms + step.delay_s * 1000.0
            self._match.buf.clear()  # what comes during a guard time is no answer
            return
        self._send_now(now_ms)

    def _send_now(self, now_ms: float) -> None:
        self._out += self._step.wire_send()
        self._advance(now_ms)

    def _advance(self, now_ms: float) -> None:
        self._send_at = None
        if self._index + 1 >= len(self.script.steps):
            self.outcome = ChatDone(now_ms - self._start, bytes(self._match.buf),
                                    self.modem_said())
            self._match.buf.clear()
            return
        self._index += 1
        self._enter(now_ms)

    def _fail(self, reason: str) -> None:
        self.outcome = ChatFailed(self._index, self._step.describe(), reason,
                                  self.modem_said())

    def _track_lines(self, data: bytes) -> None:
        parts = data.replace(b"\n", b"\r").split(b"\r")
        for chunk in parts[:-1]:  # lines this data completed
            line = bytes(self._line) + chunk[-_LINE_MAX:]
            self._line.clear()
            if printable(line):
                self._last_line = line[-SAID_MAX:]
        self._line += parts[-1][-_LINE_MAX:]
        if len(self._line) > _LINE_MAX:
            del self._line[:len(self._line) - _LINE_MAX]

"""The HIL suites a rig file can name, and the parameters each one takes.

This is the one place a suite's parameters are declared: name, type, range,
default and a one-line doc. The rig schema validates ``[suites.NAME]`` tables
against it (so a bad value is a rig-file error, reported before anything is
touched), the suites read typed values with their defaults from
``SuiteParams``, and the table in ``docs/rigs.md`` is ``params_markdown()``.

It lives in the rig layer because rig files name suites and their parameters;
the suites themselves (``hilkit.hil.suites``) sit above and read from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = [
    "SUITE_NAMES",
    "SUITE_PARAMS",
    "Param",
    "SuiteParams",
    "params_markdown",
]

ParamKind = Literal["int", "float", "ints"]

MiB: Final = 1 << 20
KiB: Final = 1 << 10


@dataclass(frozen=True)
class Param:
    """One suite parameter.

    ``sim_default`` is the default on a simulated rig with a bus (a chip model
    moves every data byte as SPI frames in Python, so bulk transfers are made
    smaller there); None means the same as ``default``. For ``ints`` the range
    applies to each element, and the array holds 1..``max_len`` of them.
    """

    name: str
    kind: ParamKind
    lo: float
    hi: float
    default: Any
    doc: str
    sim_default: Any = None
    unit: str = ""
    max_len: int = 64

    def default_for(self, slow_sim: bool) -> Any:
        return self.sim_default if slow_sim and self.sim_default is not None else self.default


def _snaplen(default: int) -> Param:
    """Bulk suites default to headers only: a 16 MiB run would leave ~40 MB of pcapng."""
    return Param("snaplen", "int", 0, 262_144, default,
                 "bytes kept of each frame in the check's pcapng; 0 keeps whole frames", unit="B")


def _timeout(default: float, sim: float | None = None, what: str = "") -> Param:
    return Param("timeout_s", "float", 0.1, 86_400.0, default,
                 what or "how long a check waits for the far end", sim_default=sim, unit="s")


_PING_SIZES: Final = (0, 56, 1472, 1473, 4000)  # 1473 and 4000 are fragmented at MTU 1500
_UDP_SIZES: Final = (0, 1, 512, 1472, 1473, 4000)

# In run order: the order of this table is the order suites run in.
SUITE_PARAMS: Final[Mapping[str, tuple[Param, ...]]] = {
    "identity": (_snaplen(0),),
    "link": (_snaplen(0),),
    "arp": (_snaplen(0),),
    "icmp": (
        Param("sizes", "ints", 0, 131_072, _PING_SIZES,
              "ICMP payload sizes, a check each; above 65507 no IPv4 datagram carries them, "
              "so those checks fail", unit="B"),
        Param("count", "int", 1, 1000, 3, "echo requests per size"),
        _timeout(5.0, what="how long one echo request waits for its reply"),
        _snaplen(0),
    ),
    "udp": (
        Param("sizes", "ints", 0, 65_507, _UDP_SIZES,
              "datagram payload sizes, a check each", unit="B"),
        Param("port", "int", 0, 65_535, 0,
              "the kernel echo socket's UDP port; 0 picks a free one"),
        _timeout(3.0, what="how long one datagram waits for its echo"),
        _snaplen(0),
    ),
    "tcp": (
        Param("bytes", "int", 1, 1 << 30, 16 * MiB,
              "bytes each way at once, checked with SHA-256", unit="B"),
        _timeout(600.0, 300.0, "how long one transfer may take"),
        _snaplen(256),
    ),
    "throughput": (
        Param("bytes", "int", 1, 1 << 30, 4 * MiB, "bytes per direction",
              sim_default=1 * MiB, unit="B"),
        _timeout(600.0, 300.0, "how long one transfer may take"),
        _snaplen(256),
    ),
    "recovery": (
        Param("bytes", "int", 1024, 1 << 30, 2 * MiB,
              "bytes each way of the transfer the chip is reset in", sim_default=512 * KiB,
              unit="B"),
        Param("at", "float", 0.0, 0.9, 0.3,
              "fraction of the transfer received when the chip is reset"),
        Param("power_off_s", "float", 0.0, 600.0, 0.0,
              "whether the `power` check may cut the board's power, and for how long: "
              "seconds off (through the lab place's power resource, docs/lab.md); 0: "
              "never cut", unit="s"),
        _timeout(600.0, 300.0, "how long one transfer may take; unset: 4 x the time the rate "
                 "the tcp or throughput suite measured in this run predicts (a real rig "
                 "without one: the NIC's wire rate), at least 60 s, at most this default"),
        _snaplen(256),
    ),
    "conformance": (
        _timeout(3.0, 10.0, "how long one frame may take"),
        _snaplen(0),
    ),
}

SUITE_NAMES: Final = tuple(SUITE_PARAMS)


class SuiteParams(Mapping[str, Any]):
    """A suite's parameters: as a mapping, the values the rig file gives (validated);
    through ``integer``/``number``/``integers``, every declared value with its default.

    ``slow_sim``: the rig is simulated and has a bus, where ``Param.sim_default`` applies.
    """

    def __init__(self, suite: str, given: Mapping[str, Any] | None = None, *,
                 slow_sim: bool = False) -> None:
        self.suite = suite
        self.slow_sim = slow_sim
        self._given = dict(given or {})
        self._specs = {p.name: p for p in SUITE_PARAMS.get(suite, ())}

    def __getitem__(self, key: str) -> Any:
        return self._given[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._given)

    def __len__(self) -> int:
        return len(self._given)

    def __repr__(self) -> str:
        return f"SuiteParams({self.suite!r}, {self._given!r}, slow_sim={self.slow_sim})"

    def declares(self, name: str) -> bool:
        return name in self._specs

    def spec(self, name: str) -> Param:
        """The declaration; KeyError for a parameter the suite does not declare."""
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(f"suite {self.suite!r} declares no parameter {name!r} "
                           f"(hilkit.rig.suite_params)") from None

    def sim_defaulted(self, name: str) -> bool:
        """The value is the simulated-rig default, not the file's nor the real-rig one."""
        p = self.spec(name)
        return (name not in self._given and self.slow_sim and p.sim_default is not None
                and p.sim_default != p.default)

    def _value(self, name: str, kind: ParamKind) -> Any:
        p = self.spec(name)
        if p.kind != kind:
            raise TypeError(f"{self.suite}.{name} is declared {p.kind}, read as {kind}")
        return self._given[name] if name in self._given else p.default_for(self.slow_sim)

    def integer(self, name: str) -> int:
        return int(self._value(name, "int"))

    def number(self, name: str) -> float:
        return float(self._value(name, "float"))

    def integers(self, name: str) -> tuple[int, ...]:
        return tuple(int(x) for x in self._value(name, "ints"))


def _fmt(value: Any, p: Param) -> str:
    """A default as a rig file writes it (in backquotes), sizes also in KiB/MiB."""
    if isinstance(value, tuple):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    if isinstance(value, float):
        return f"`{value:g}`"
    text = f"`{value:_}`"
    if p.unit == "B" and value >= KiB and value % KiB == 0:
        text += f" ({value // MiB} MiB)" if value % MiB == 0 else f" ({value // KiB} KiB)"
    return text


def _type(p: Param) -> str:
    lo = int(p.lo) if p.kind != "float" else p.lo
    hi = int(p.hi) if p.kind != "float" else p.hi
    rng = f"{lo:_}..{hi:_}" if p.kind != "float" else f"{lo:g}..{hi:g}"
    rng += f" {p.unit}" if p.unit else ""
    return {"int": f"integer, {rng}", "float": f"number, {rng}",
            "ints": f"array of 1..{p.max_len} integers, each {rng}"}[p.kind]


def params_markdown() -> str:
    """The suite-parameter table of ``docs/rigs.md``, made from the declarations."""
    rows = ["| suite | key | type | default | meaning |", "| --- | --- | --- | --- | --- |"]
    for suite, params in SUITE_PARAMS.items():
        for p in params:
            default = _fmt(p.default, p)
            if p.sim_default is not None and p.sim_default != p.default:
                default += f"; {_fmt(p.sim_default, p)} on simulated rigs with a bus"
            rows.append(f"| `{suite}` | `{p.name}` | {_type(p)} | {default} | {p.doc} |")
    return "\n".join(rows) + "\n"

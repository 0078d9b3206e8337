"""The stack's shape: its modules import one another with arrows pointing down only,
and none reaches into another's private names.

Read from the source with ``ast`` (nothing is imported), so imports under
``if TYPE_CHECKING:`` count like any other: a type-only cycle is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hilkit.stack

PKG = "hilkit.stack"
ROOT = Path(hilkit.stack.__file__).parent
MODULES = {(PKG if p.stem == "__init__" else f"{PKG}.{p.stem}"): p
           for p in sorted(ROOT.glob("*.py"))}

# ``<expr>._name`` where <expr> is not ``self``/``cls``, allowed only with a reason.
ALLOWED_PRIVATE: set[tuple[str, str]] = {
    # ``_SocketIO`` is ``Socket``'s own file object, in the same module: it tells its
    # socket that the last file closed (``socket.SocketIO`` does the same in the stdlib).
    (f"{PKG}.sockets", "_io_closed"),
}


def _tree(mod: str) -> ast.Module:
    return ast.parse(MODULES[mod].read_text(), str(MODULES[mod]))


def imports_of(mod: str) -> set[str]:
    """The modules of this package that ``mod`` imports, wherever the import stands."""
    out: set[str] = set()
    for node in ast.walk(_tree(mod)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith(PKG + ".")
                    or a.name == PKG}
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            if node.module == PKG:  # ``from hilkit.stack import arp, Stack``
                out |= {f"{PKG}.{a.name}" if f"{PKG}.{a.name}" in MODULES else PKG
                        for a in node.names}
            elif node.module.startswith(PKG + "."):
                out.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            pytest.fail(f"{mod}: relative import; the house uses absolute ones")
    out.discard(mod)
    return out


def graph() -> dict[str, set[str]]:
    return {m: imports_of(m) & set(MODULES) for m in MODULES}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a path (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1:
                return [*path[path.index(n):], n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_graph_is_read_from_the_source() -> None:
    g = graph()
    assert f"{PKG}.tcp_layer" in g[f"{PKG}.stack"]
    assert f"{PKG}.ip_layer" in g[f"{PKG}.tcp_layer"]
    assert f"{PKG}.arp_layer" in g[f"{PKG}.ip_layer"]


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_stack_import_graph_has_no_cycle() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(("upper", "lower"), [
    ("stack", "tcp_layer"), ("tcp_layer", "ip_layer"), ("udp_layer", "ip_layer"),
    ("icmp_layer", "ip_layer"), ("ip_layer", "arp_layer"), ("arp_layer", "netif"),
])
def test_layers_point_down(upper: str, lower: str) -> None:
    """Each lower layer reaches nothing above it, not even through another module."""
    g = graph()
    seen, todo = set(), [f"{PKG}.{lower}"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(g[m])
    assert f"{PKG}.{upper}" not in seen


def private_uses(mod: str) -> list[str]:
    """``<expr>._name`` where <expr> is not ``self`` or ``cls`` (dunders aside)."""
    found = []
    for node in ast.walk(_tree(mod)):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        if (mod, name) in ALLOWED_PRIVATE:
            continue
        found.append(f"{MODULES[mod].name}:{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_no_module_uses_another_objects_private_names(mod: str) -> None:
    assert private_uses(mod) == []

"""The payments service reads as rooms: no module over about 400 lines, no import circle between its
modules (every import counted, wherever in the module it stands), and the rooms' routers mounted side by
side in one place (``app.py``), none included in another."""
from __future__ import annotations

import ast
from pathlib import Path

import payments
from payments.app import SPEC

ROOT = Path(payments.__file__).parent
MAX_LINES = 400
ROOMS = ("charging", "settlement", "invoicing", "bank", "notices", "projections", "ledger")


def modules() -> dict[str, Path]:
    """Module name -> file, migrations left out (Alembic's, not the service's code)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "migrations":
            continue
        parts = ("payments", *rel.with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The service's modules ``name`` imports (``from . import x`` counts x when x is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m in known and m != name}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """An import circle of the graph, if it has one (depth-first search)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_is_longer_than_about_400_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules: {long}"


def test_no_two_modules_import_each_other_even_through_others():
    found = modules()
    graph = {name: imports_of(name, path, set(found)) for name, path in found.items()}
    assert cycle(graph) is None, " -> ".join(cycle(graph))


def test_the_cycle_finder_finds_a_circle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_each_room_has_its_router_mounted_side_by_side_in_app_and_no_router_includes_another():
    found = modules()
    for room in ROOMS:
        assert f"payments.{room}" in found, f"no room {room}"
    routers = {f"payments.{room}.router" for room in ROOMS if room != "projections"}
    assert routers <= set(found)
    for name in routers:
        tree = ast.parse(found[name].read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "include_router"], name
        assert not imports_of(name, found[name], set(found)) & (routers - {name}), f"{name} imports another router"
    mounted = {r.routes[0].endpoint.__module__ for r in SPEC.routers}
    assert mounted == routers

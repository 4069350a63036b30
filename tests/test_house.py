"""The house rules a newcomer relies on, read from the source: no import circles between files (lazy imports
inside functions count too), `stages` never imports `pipeline`, every package says what lives in it."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*.py"):
            parts = p.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = p
    return out


def imports_of(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """Project modules `path` imports, at any depth of the file (TYPE_CHECKING-only imports excepted)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` blocks are for annotations only
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m in known and m != name and not name.startswith(m + ".")}


def graph() -> dict[str, set[str]]:
    known = modules()
    # a package's __init__ re-exports nothing here, so an edge to a package is not an edge to its files
    return {name: imports_of(path, name, known) for name, path in known.items()}


def test_no_import_circles() -> None:
    g = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in sorted(g[n]):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m] if m in stack else [n, m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n, [n])
    assert not cycles, "import circles: " + "; ".join(" → ".join(c) for c in cycles)


def test_stages_never_import_pipeline() -> None:
    bad = {n: sorted(m for m in deps if m.startswith("pipeline")) for n, deps in graph().items()
           if n.startswith("stages")}
    assert not any(bad.values()), {n: d for n, d in bad.items() if d}


def test_every_package_says_what_lives_in_it() -> None:
    for pkg in PACKAGES:
        for init in (REPO / pkg).rglob("__init__.py"):
            doc = ast.get_docstring(ast.parse(init.read_text())) or ""
            assert len(doc.split()) >= 15, f"{init.relative_to(REPO)}: a docstring saying what lives here"

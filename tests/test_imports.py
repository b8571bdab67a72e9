"""The package has no import circles: checked on the import graph itself, lazy imports included.

Every ``import nlpssl.x`` / ``from nlpssl.x import y`` anywhere in a module (at the top or inside a
function) is an edge; imports under ``if TYPE_CHECKING:`` are not (they never run). A cycle in
that graph is a circle even when lazy imports keep it from failing today.
"""

import ast
import subprocess
import sys
from pathlib import Path

import nlpssl

PACKAGE = Path(nlpssl.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The nlpssl modules ``path`` imports, outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for child in node.body for n in ast.walk(child)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("nlpssl")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nlpssl") and node.level == 0:
            for alias in node.names:  # `from nlpssl import sources` imports the submodule
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found & known


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), and self-imports."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_circles():
    mods = modules()
    graph = {name: imports_of(path, set(mods)) - {"nlpssl"} for name, path in mods.items()}
    assert "nlpssl.objectives.mlm" in graph and graph["nlpssl.pretrain"], "the graph was read"
    assert cycles(graph) == []


def test_the_checker_sees_a_lazy_circle(tmp_path):
    # the check itself can fail: a function-level import back into a module is a circle
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nlpssl.recipe import Recipe\n"
                      "def f():\n    from nlpssl.data import prepare_data\n")
    assert imports_of(source, {"nlpssl.recipe", "nlpssl.data"}) == {"nlpssl.data"}


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    names = sorted(m for m in modules() if not m.endswith("__main__"))  # __main__ runs the CLI
    for order in (names, names[::-1]):
        done = subprocess.run([sys.executable, "-c", code, *order], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]

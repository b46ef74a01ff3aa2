"""No import circles inside the `jaxdistill` package (issue 32).

The walker reads every module's source with `ast` (nothing is imported) and takes every import it finds, at
module level and inside functions, methods, classes, conditionals and try blocks alike: an import inside a
function is still an import, only a later one, and a circle hidden that way breaks as soon as the order of
first use changes. Each import becomes an edge to the module that import actually loads:

- `import a.b.c` -> a.b.c;
- `from a.b import c` -> a.b.c when c is a submodule of a.b, else a.b (c is a name defined in, or
  re-exported by, a.b, possibly a package's `__init__`);
- relative imports are resolved against the importing module's package;
- `importlib.import_module("jaxdistill.x")` and `__import__("jaxdistill.x")` with a literal string, or an
  f-string whose fixed prefix names a package (`f"jaxdistill.methods.{m}"`), are edges too: to the named
  module, or to every submodule of the named package for an f-string.

Package `__init__` files: a package is the module named by its folder (`jaxdistill.data` is
`jaxdistill/data/__init__.py`). Its own imports are edges like any other module's, so an `__init__` that
imports its children to re-export them has edges to them, and that alone is no circle. The implicit import
of a module's own parent packages (Python runs `jaxdistill/data/__init__.py` before `jaxdistill/data/npz.py`)
is not an edge; otherwise every child imported by its `__init__` would be a circle, and that `__init__` is
already loaded or loading whenever the child runs. A module outside a package that imports one of its
modules does run that package's `__init__` first, so `from jaxdistill.methods.base import DistilledSet` in
`jaxdistill/controls.py` is an edge to `jaxdistill.methods.base` and one to `jaxdistill.methods` (whose
`__init__` imports the distillers). An explicit import of a
name from a package (`from jaxdistill.data import check_ipc` inside `jaxdistill/data/noisy.py`) is an edge
to that `__init__`, since that is the module whose attribute is read; if the `__init__` imports the child
back, that is a circle (it works or not depending on which of the two is imported first).

Imports of modules outside the package (numpy, jax, matplotlib, ...) are not edges.
"""
from __future__ import annotations

import ast
import os
from collections import deque
from pathlib import Path

import pytest

PACKAGE = "jaxdistill"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE


def module_files(pkg_dir: Path, pkg_name: str) -> dict[str, Path]:
    """Every module of the package under `pkg_dir`: dotted name -> source file (`__init__.py` for a package)."""
    mods = {}
    for root, dirs, files in os.walk(pkg_dir):
        dirs[:] = sorted(d for d in dirs if (Path(root) / d / "__init__.py").exists())
        rel = Path(root).relative_to(pkg_dir)
        prefix = ".".join((pkg_name,) + rel.parts)
        for f in sorted(files):
            if not f.endswith(".py"):
                continue
            name = prefix if f == "__init__.py" else f"{prefix}.{f[:-3]}"
            mods[name] = Path(root) / f
    return mods


def _is_package(name: str, mods: dict[str, Path]) -> bool:
    return name in mods and mods[name].name == "__init__.py"


def _resolve_relative(module: str, level: int, target: str | None, mods: dict[str, Path]) -> str:
    # The package a relative import starts from: the module itself when it is a package's __init__.
    parts = module.split(".")
    base = parts if _is_package(module, mods) else parts[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def _dynamic_target(call: ast.Call) -> tuple[str, bool] | None:
    """(name, is_prefix) for importlib.import_module / __import__ with a literal or f-string first argument."""
    f = call.func
    is_import_module = (isinstance(f, ast.Attribute) and f.attr == "import_module") or (
        isinstance(f, ast.Name) and f.id in ("import_module", "__import__"))
    if not is_import_module or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value, False
    if isinstance(arg, ast.JoinedStr):
        prefix = ""
        for part in arg.values:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                prefix += part.value
            else:
                break
        return prefix, True
    return None


def import_edges(module: str, path: Path, mods: dict[str, Path], pkg_name: str) -> dict[str, int]:
    """Intra-package modules `module` imports (anywhere in its source) -> line of the first such import."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: dict[str, int] = {}

    # The packages `module` lives in: Python has run (or is running) their __init__ before `module`.
    own_parents = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    if _is_package(module, mods):
        own_parents.add(module)

    def add(target: str, line: int):
        # The longest prefix of `target` that is a module of the package (`a.b.name` -> `a.b`).
        parts = target.split(".")
        while parts and ".".join(parts) not in mods:
            parts.pop()
        if not parts or parts[0] != pkg_name:
            return
        name = ".".join(parts)
        if name != module:
            out.setdefault(name, line)
        # Loading a.b.c runs a.b's __init__ first: an edge from a module outside a.b (for a module inside a.b
        # that __init__ is already running or done: no edge).
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in own_parents and parent != module:
                out.setdefault(parent, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == pkg_name or a.name.startswith(pkg_name + "."):
                    add(a.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(module, node.level, node.module, mods) if node.level else (node.module or "")
            if not (base == pkg_name or base.startswith(pkg_name + ".")):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                # A submodule is loaded as such; any other name is read from `base` (maybe a package __init__).
                add(sub if sub in mods else base, node.lineno)
        elif isinstance(node, ast.Call):
            dyn = _dynamic_target(node)
            if dyn is None:
                continue
            name, is_prefix = dyn
            if not is_prefix:
                if name == pkg_name or name.startswith(pkg_name + "."):
                    add(name, node.lineno)
                continue
            # f"jaxdistill.methods.{m}": any submodule of the package named by the fixed prefix.
            pkg = name.rstrip(".")
            if name.endswith(".") and _is_package(pkg, mods):
                for m in mods:
                    if m.startswith(pkg + ".") and "." not in m[len(pkg) + 1:]:
                        add(m, node.lineno)
            elif pkg == pkg_name or pkg.startswith(pkg_name + "."):
                add(pkg, node.lineno)
    return out


def import_graph(pkg_dir: Path, pkg_name: str) -> dict[str, dict[str, int]]:
    mods = module_files(pkg_dir, pkg_name)
    return {m: import_edges(m, p, mods, pkg_name) for m, p in mods.items()}


def _sccs(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(sorted(comp))
    return out


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Import circles, as closed paths [a, b, ..., a]: for each strongly connected component with more than
    one module (or a module importing itself), the shortest circle through each of its modules, deduplicated."""
    cycles, seen = [], set()
    for comp in _sccs(graph):
        members = set(comp)
        if len(comp) == 1 and comp[0] not in graph[comp[0]]:
            continue
        for start in comp:
            prev, queue = {start: None}, deque([start])
            path = None
            while queue and path is None:
                v = queue.popleft()
                for w in sorted(graph[v]):
                    if w not in members:
                        continue
                    if w == start:
                        path = [v]
                        while prev[path[-1]] is not None:
                            path.append(prev[path[-1]])
                        path = path[::-1] + [start]
                        break
                    if w not in prev:
                        prev[w] = v
                        queue.append(w)
            ring = tuple(path[:-1])
            i = ring.index(min(ring))
            canon = ring[i:] + ring[:i]
            if canon not in seen:
                seen.add(canon)
                cycles.append(list(canon) + [canon[0]])
    return cycles


def format_cycles(cycles: list[list[str]], graph: dict[str, dict[str, int]]) -> str:
    lines = []
    for c in cycles:
        lines.append(" -> ".join(c))
        lines.extend(f"    {a} imports {b} (line {graph[a][b]})" for a, b in zip(c, c[1:]))
    return "\n".join(lines)


def test_no_import_cycles_in_jaxdistill():
    graph = import_graph(PACKAGE_DIR, PACKAGE)
    assert len(graph) > 30 and "jaxdistill.data.npz" in graph  # the walker found the package
    cycles = find_cycles(graph)
    assert not cycles, f"{len(cycles)} import circle(s) in {PACKAGE}:\n{format_cycles(cycles, graph)}"


def _write_pkg(root: Path, files: dict[str, str]) -> Path:
    for rel, src in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(src)
    return root / "fakepkg"


_ACYCLIC = {
    "fakepkg/__init__.py": "from fakepkg.sub import thing  # re-export a child\n",
    "fakepkg/low.py": "import os\nimport numpy\n",
    "fakepkg/mid.py": "from fakepkg import low\nfrom . import low as again\n",
    "fakepkg/top.py": ("import fakepkg.mid\n"
                       "def f():\n    from fakepkg.low import x\n    import importlib\n"
                       "    importlib.import_module('fakepkg.mid')\n"),
    "fakepkg/sub/__init__.py": "from .core import thing\n",
    "fakepkg/sub/core.py": "from ..low import y\nthing = 1\n",
}


@pytest.mark.parametrize("case", ["acyclic", "function_level", "init_reexport", "implicit_parent", "dynamic",
                                  "relative"])
def test_walker_finds_known_cycles(tmp_path, case):
    files = dict(_ACYCLIC)
    expect = None
    if case == "function_level":
        # low imports top only inside a function (and a conditional); top imports low inside a function too.
        files["fakepkg/low.py"] = "import os\n\ndef g():\n    if True:\n        from fakepkg.top import f\n"
        expect = ["fakepkg.low", "fakepkg.top", "fakepkg.low"]
    elif case == "init_reexport":
        # core reads a name from its package's __init__, which imports core: an edge to the __init__.
        files["fakepkg/sub/core.py"] = "from fakepkg.sub import other\nthing = 1\n"
        expect = ["fakepkg.sub", "fakepkg.sub.core", "fakepkg.sub"]
    elif case == "implicit_parent":
        # mid loads sub.core, which first runs sub's __init__, which imports top, which imports mid.
        files["fakepkg/mid.py"] = "from fakepkg.sub.core import thing\n"
        files["fakepkg/sub/__init__.py"] = "from .core import thing\nfrom fakepkg.top import f\n"
        expect = ["fakepkg.mid", "fakepkg.sub", "fakepkg.top", "fakepkg.mid"]
    elif case == "dynamic":
        # low loads every child of fakepkg by name through importlib: low -> top -> low (and more).
        files["fakepkg/low.py"] = "import importlib\n\ndef g(m):\n    importlib.import_module(f'fakepkg.{m}')\n"
        expect = ["fakepkg.low", "fakepkg.mid", "fakepkg.low"]
    elif case == "relative":
        files["fakepkg/low.py"] = "from .sub.core import thing\n"
        files["fakepkg/sub/core.py"] = "from ..mid import z\nthing = 1\n"
        expect = ["fakepkg.low", "fakepkg.sub.core", "fakepkg.mid", "fakepkg.low"]
    pkg = _write_pkg(tmp_path, files)
    graph = import_graph(pkg, "fakepkg")
    # The children are edges of their __init__, never the other way round by implicit parent import.
    assert "fakepkg.sub.core" in graph["fakepkg.sub"] and "fakepkg" not in graph["fakepkg.mid"]
    cycles = find_cycles(graph)
    if expect is None:
        assert cycles == [], format_cycles(cycles, graph)
        assert set(graph["fakepkg.top"]) == {"fakepkg.mid", "fakepkg.low"}
    else:
        assert expect in cycles, format_cycles(cycles, graph)
        assert " -> ".join(expect) in format_cycles(cycles, graph)

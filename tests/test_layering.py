"""Imports point one way (CONTRIBUTING.md, "Layers"). Read with `ast` from the source, so an
import inside a function, under `if TYPE_CHECKING:` or in a `try:` counts like any other.

    errors, cachedir, blas_env, atomic,     foundation: import nothing from netspec
    schema
    dsl, kernel  <-  ops  <-  ir  <-  codegen  <-  runtime  <-  train, bench  <-  cli
    data, viz                               side packages: read from ir (and below), plain
                                            arrays and saved runs
    importers                               side package: other formats' files -> spec text
                                            and arrays (the cli writes them)

A package may import a package to its left, never one to its right nor its neighbour in the
same place (train and bench don't import each other). train and bench may use data (images)
and viz (a saved run, the neighbour search). The cli (netspec/cli/, and netspec/__main__.py
for `python -m netspec`) may import everything; nothing imports it. `netspec/__init__.py` is
the public facade (`netspec.build`): it may import runtime, and no module inside netspec
imports it.

Inside a package the modules import one another one way too: no cycle, wherever the imports
sit, so that each module can be read, tested and moved with what it uses only.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "netspec"

FOUNDATION = {"errors", "cachedir", "blas_env", "atomic", "schema"}
# left to right: each layer may import the foundation and every layer before it
CHAIN = [{"dsl", "kernel"}, {"ops"}, {"ir"}, {"codegen"}, {"runtime"}, {"train", "bench"},
         {"cli"}]
SIDE = {"data": {"dsl", "kernel", "ops", "ir"}, "viz": {"dsl", "kernel", "ops", "ir"},
        "importers": {"dsl", "kernel", "ops", "ir"}}   # other formats -> spec text, arrays
# what the chain's layers may use of the side packages (besides the cli, which may use all)
USES_SIDE = {"train": {"data", "viz"}, "bench": {"data", "viz"}}
ENTRY = {"netspec.__main__": "cli"}      # `python -m netspec`: the cli's own entry
FACADE_MAY_IMPORT = {"runtime"}


def allowed(layer: str) -> set[str]:
    """The top-level parts of netspec that `layer` may import (itself included)."""
    ok = {layer} | FOUNDATION
    if layer in FOUNDATION:
        return {layer}
    if layer in SIDE:
        return ok | SIDE[layer]
    seen: set[str] = set()
    for rank in CHAIN:
        if layer in rank:
            break
        seen |= rank
    ok |= seen | USES_SIDE.get(layer, set())
    if layer == "cli":
        ok |= set(SIDE)
    return ok


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    """'netspec.ops.conv' -> 'ops'; netspec/__main__.py -> 'cli'; the facade -> ''."""
    if module in ENTRY:
        return ENTRY[module]
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every netspec import in the file, wherever it is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                if node.module:
                    found.append((node.lineno, ".".join(base + [node.module])))
                else:   # from . import x, y: each may be a module
                    found += [(node.lineno, ".".join(base + [a.name])) for a in node.names]
            elif node.module:
                found.append((node.lineno, node.module))
                if node.module == "netspec":    # from netspec import ops
                    found += [(node.lineno, f"netspec.{a.name}") for a in node.names]
    return [(n, m) for n, m in found if m == "netspec" or m.startswith("netspec.")]


def violations(root: Path = ROOT) -> list[str]:
    """One line per import that breaks the layers, in the tree under `root`."""
    bad = []
    known = FOUNDATION | set(SIDE) | set().union(*CHAIN)
    for path in sorted((root / "netspec").rglob("*.py")):
        module = module_name(path, root)
        src = layer_of(module)
        where = path.relative_to(root)
        if src and src not in known:
            bad.append(f"{where}: '{src}' has no place in the layers; add it to "
                       f"tests/test_layering.py and CONTRIBUTING.md")
            continue
        ok = FACADE_MAY_IMPORT | FOUNDATION if src == "" else allowed(src)
        for line, target in imports(path, root):
            dst = layer_of(target)
            if target.startswith("netspec.__"):          # netspec.__version__
                continue
            if dst == "":
                if src:
                    bad.append(f"{where}:{line}: imports the netspec facade; import the module "
                               f"that defines the name instead")
            elif dst not in ok:
                what = "the cli" if dst == "cli" else f"{dst} is to its right"
                bad.append(f"{where}:{line}: {src or 'netspec'} imports {target} ({what})")
    return bad


def test_imports_point_one_way():
    bad = violations()
    assert not bad, "imports that break the layers:\n  " + "\n  ".join(bad)


def module_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """module -> {module of the same package it imports: the line}, for every module under
    root/netspec. `from .x import name` points at x; `from . import name`, where name is no
    module, at the package itself (its __init__)."""
    paths = {module_name(p, root): p for p in sorted((root / "netspec").rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {}
    for module, path in paths.items():
        package = layer_of(module)
        edges = graph.setdefault(module, {})
        for line, target in imports(path, root):
            while target not in paths and "." in target:     # a name, not a module
                target = target.rsplit(".", 1)[0]
            if package and target != module and layer_of(target) == package:
                edges.setdefault(target, line)
    return graph


def cycles(root: Path = ROOT) -> list[str]:
    """One line per import cycle among the modules of one package: each module of a strongly
    connected component (Tarjan) with the import that leads on, `a:LINE -> b:LINE -> a`."""
    graph = module_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_shortest_round(graph, component) for component in found]


def _shortest_round(graph: dict[str, dict[str, int]], component: list[str]) -> str:
    """The shortest way round from the component's first module back to it (breadth first),
    each module with the line of the import that leads on."""
    first, members = component[0], set(component)
    came_from = {first: ""}
    queue = [first]
    for v in queue:
        if first in graph[v]:
            break
        for w in sorted(graph[v]):
            if w in members and w not in came_from:
                came_from[w] = v
                queue.append(w)
    path = [v]
    while came_from[path[-1]]:
        path.append(came_from[path[-1]])
    path.reverse()
    hops = [f"{m}:{graph[m][n]}" for m, n in zip(path, path[1:] + [first])]
    return " -> ".join(hops) + f" -> {first}"


def test_no_import_cycle_inside_a_package():
    found = cycles()
    assert not found, "modules of one package that import each other:\n  " + \
        "\n  ".join(found)


@pytest.mark.parametrize("modules, cycle", [
    ({"a": "from . import b", "b": "x = 1"}, False),
    ({"a": "from .b import x", "b": "def f():\n    from .a import y"}, True),
    ({"a": "from .b import x", "b": "from .c import x", "c": "from . import a"}, True),
    ({"a": "from . import b", "b": "from . import c, d", "c": "from . import b",
      "d": "from . import a"}, True),
    ({"__init__": "from .a import x", "a": "from . import b", "b": "x = 1"}, False),
    ({"__init__": "from .a import x", "a": "def f():\n    from . import name_in_init"}, True),
])
def test_the_check_finds_a_cycle(tmp_path, modules, cycle):
    """The cycle check on a throwaway package, one import each, at the top or in a function."""
    pkg = tmp_path / "netspec" / "data"
    pkg.mkdir(parents=True)
    (tmp_path / "netspec" / "__init__.py").touch()
    (pkg / "__init__.py").touch()
    for name, text in modules.items():
        (pkg / f"{name}.py").write_text(text + "\n")
    found = cycles(tmp_path)
    assert bool(found) == cycle, found


@pytest.mark.parametrize("source, statement, ok", [
    ("netspec.ops.conv", "from ..kernel import Kernel", True),
    ("netspec.ops.conv", "from ..codegen.plan import build_plan", False),
    ("netspec.codegen.plan", "from ..ir.graph import Graph", True),
    ("netspec.codegen.plan", "from ..runtime import build", False),
    ("netspec.codegen.plan", "import netspec", False),
    ("netspec.viz.run", "from ..ir.graph import Graph", True),
    ("netspec.viz.run", "from ..runtime import build", False),
    ("netspec.viz.run", "from ..cli import viz", False),
    ("netspec.viz.figures", "from ..train.saved_net import run_predictions", False),
    ("netspec.cli.viz", "from ..train.saved_net import run_predictions", True),
    ("netspec.cli.options", "from ..runtime import BACKENDS", True),
    ("netspec.__main__", "from .cli import main", True),
    ("netspec.train.loop", "from ..cli.options import BACKENDS", False),
    ("netspec.data.loader", "from netspec.codegen.plan import build_plan", False),
    ("netspec.train.loop", "from ..data import open_dataset", True),
    ("netspec.runtime.net", "from ..train import loop", False),
    ("netspec.kernel.gemm", "from ..ops import OPS", False),
    ("netspec.errors", "from .dsl import errors", False),
    ("netspec.__init__", "from .runtime import build", True),
    ("netspec.__init__", "from .cli import main", False),
    ("netspec.newpkg.mod", "import numpy", False),
])
def test_the_check_catches_an_import_pointing_right(tmp_path, source, statement, ok):
    """The checker itself, on a throwaway tree: one module, its import inside a function
    (where the cycles used to hide)."""
    parts = source.split(".")
    f = tmp_path.joinpath(*parts).with_suffix(".py")
    f.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, len(parts)):
        tmp_path.joinpath(*parts[:i], "__init__.py").touch()
    f.write_text(f"def f():\n    {statement}\n")
    found = violations(tmp_path)
    assert (found == []) == ok, found

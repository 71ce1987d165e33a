"""The package's import graph: no package imports a higher one, and no two modules import each other
(no cycle of any length).

Every `import` / `from ... import` statement of every module is read with `ast`, wherever it is (top
level, inside a function, under `if TYPE_CHECKING:`), and so is `importlib.import_module("literal")`.
Each module maps to the layer of the longest entry of LAYERS that prefixes its dotted name. The same
list, with one line per layer, is in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "neuronatlas"

# Lowest first: a module may import its own layer and the layers before it, never a later one.
LAYERS = [
    "errors",               # one-line user errors
    "faults",               # named fault points for the crash tests
    "plugins",              # user modules named in $NEURONATLAS_PLUGINS (imported by name)
    "config",               # frozen-dataclass config helpers
    "cli_options",          # CLI options generated from a config
    "data",                 # probe sets, the procedural world
    "concepts",             # concept sets (words, ImageNet classes, the world's concepts)
    "worldmodels",          # worldmodels/__init__.py: the world models' names and weights paths only
    "worldmodels.arch",     # world-clip / world-llava architectures: configs, build, encode / answer
    "models",               # Targets, model families, the zoo's table
    "run",                  # the run directory
    "recording",            # accumulators, the shard loop, replay
    "engines",              # where the shard loop runs
    "backends",             # image-text scorers, text embedders, chat / VLM clients
    "worldmodels.zoo",      # zoo:world-clip / zoo:world-llava Targets (with their backends scorer)
    "describe",             # labelers
    "evaluate",             # metrics
    "lens",                 # method packages
    "vlm",
    "sae",
    "agent",
    "explain",              # per-image explanations: attribution, the chain, the sentence
    "atlas",                # people-facing: the web atlas, exemplar grids
    "study",                # blind studies (their grids are drawn with atlas's)
    "worldmodels.train",    # training the world models (plans, loop, metrics, cards)
    "",                     # neuronatlas/__init__.py: the public API (lazy re-exports), __version__
    "demo",                 # `neuronatlas demo`: a tour of the public API
    "cli",
]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The package modules that `path` (module `name`) imports, resolved to existing modules: `from
    a.b import c` counts a.b.c when c is a module, else a.b (also when a.b is a parent package of
    the module: taking names from a package's __init__ depends on it, e.g. `import neuronatlas` for
    `neuronatlas.__version__` depends on the top layer)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out = set()

    def add(target: str, names=()):
        if not target.startswith("neuronatlas"):
            return
        hits = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
        if hits:
            out.update(hits)
            if len(hits) < len(names):  # some names are attributes of target itself
                out.add(target)
            return
        while target and target not in known:  # `import a.b.c.attr` style: the nearest module
            target = target.rpartition(".")[0]
        if target:
            out.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            add(target, [a.name for a in node.names])
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and not node.args[0].value.startswith(".")):
            add(node.args[0].value)
    out.discard(name)
    return out


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = modules(root)
    known = set(mods)
    return {name: imported(path, name, known) for name, path in mods.items()}


def layer(module: str) -> int:
    rel = module.removeprefix("neuronatlas").removeprefix(".")
    best = max((e for e in LAYERS if e == "" or rel == e or rel.startswith(e + ".")), key=len)
    return LAYERS.index(best)


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} ({LAYERS[layer(a)] or 'neuronatlas'}) imports {b} ({LAYERS[layer(b)]})"
                  for a, deps in g.items() for b in deps if layer(b) > layer(a))


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
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
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    """A new top-level package must be placed in LAYERS (and docs/architecture.md) on purpose."""
    top = {n.split(".")[1] for n in modules() if n.count(".") >= 1}
    missing = sorted(t for t in top if t not in LAYERS)
    assert not missing, f"add these to LAYERS in tests/test_import_graph.py: {missing}"


def test_no_upward_imports():
    bad = upward_imports(graph())
    assert not bad, "upward imports (a lower layer imports a higher one):\n" + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_layers_match_docs():
    doc = (ROOT.parent / "docs" / "architecture.md").read_text()
    listed = [line.split("`")[1] for line in doc.splitlines() if line.startswith("| `")]
    assert listed == [e or "neuronatlas" for e in LAYERS]


# -- the checker itself, on a small package of its own ---------------------------------------------
def test_checker_finds_cycles_and_upward_edges(tmp_path):
    pkg = tmp_path / "neuronatlas"
    (pkg / "data").mkdir(parents=True)
    (pkg / "models").mkdir()
    (pkg / "__init__.py").write_text("__version__ = '1'\n")
    # taking a name from the top-level package (not a submodule) depends on it: upward from data
    (pkg / "data" / "__init__.py").write_text("from .. import __version__\n")
    (pkg / "models" / "__init__.py").write_text("")
    # data/a.py imports models lazily (upward); models/b imports models/c which imports b (a cycle)
    (pkg / "data" / "a.py").write_text("def f():\n    from ..models import b\n")
    (pkg / "models" / "b.py").write_text("from . import c\nfrom ..data.a import f\n")
    (pkg / "models" / "c.py").write_text("import importlib\nm = importlib.import_module('neuronatlas.models.b')\n")
    g = graph(pkg)
    assert g["neuronatlas.data.a"] == {"neuronatlas.models.b"}
    assert g["neuronatlas.models.b"] == {"neuronatlas.models.c", "neuronatlas.data.a"}
    assert g["neuronatlas.data"] == {"neuronatlas"}
    assert upward_imports(g) == ["neuronatlas.data (data) imports neuronatlas ()",
                                 "neuronatlas.data.a (data) imports neuronatlas.models.b (models)"]
    assert cycles(g) == [["neuronatlas.data.a", "neuronatlas.models.b", "neuronatlas.models.c"]]


if __name__ == "__main__":  # python tests/test_import_graph.py: print the violations
    g = graph()
    print("\n".join(upward_imports(g)))
    for c in cycles(g):
        print("cycle:", " <-> ".join(c))
    pytest.main([__file__, "-q"])

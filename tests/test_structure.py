"""The import structure: no import cycle, and no import that runs against the declared layers.

The graph is read from the source (``ast``), not by importing it: every ``import`` and ``from ...
import`` statement counts, at module level, inside functions (a lazy import runs all the same) and
under ``if TYPE_CHECKING:`` (a type-only import still ties the two modules together). ``from package
import name`` is an import of ``package.name`` when that is a module, else of ``package``; importing a
submodule is not counted as an import of its parent package (Python runs the parent's ``__init__``
first, whatever the submodule imports).

Not counted: the lazy ``"module:ATTRIBUTE"`` references by which options name their choices and
methods name their recipes (:func:`gsimclr.registry.resolve`, :meth:`gsimclr.registry.Registry.declare`):
late binding by name, the way a plug-in registers, which is what lets a light module name a heavy one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]

# gsimclr's layers, from the top: a module may import modules of its own layer's unit or of any layer
# below it, never above it. A unit is a top-level module or subpackage of gsimclr; units in one layer
# do not import each other. A new top-level module must be placed here.
LAYERS: list[tuple[str, ...]] = [
    ("__main__", "docs_cli"),
    ("cli",),
    ("stage_jobs",),            # gsimclr run --jobs: a run's stages in worker processes
    ("export", "pipeline"),     # the commands' back ends: a run's stages; exporting a trained encoder
    ("report",),
    ("training",),              # the trainer: receives a method's parts, runs its epochs, writes checkpoints
    ("run_folder",),
    ("methods",),               # each method's model, views, criterion and step
    ("loss",),
    ("guidance",),              # pseudo labels, samplers, diagnostics
    ("evaluation",),
    ("data",),
    ("config",),                # the options: names its choices' registries lazily, imports none above it
    ("models",),
    ("transforms",),
    ("checkpoint", "plots", "provenance", "tracking", "distributed", "runtime"),
    ("plugins",),               # loads plug-ins and counts what their import registered
    ("io", "launch", "registry"),
    ("errors", "options", "presets", "__init__"),  # options: what an entry declares; presets: YAML files; __init__: the package itself (its version)
]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, packages: tuple[str, ...] | None = None) -> nx.DiGraph:
    """Modules under ``root`` (named as imported with ``root`` on the path; only those of ``packages``
    when given) and the imports between them, each edge with the line of its first import."""
    files = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        if name and (packages is None or name.split(".")[0] in packages):
            files[name] = path
    graph = nx.DiGraph()
    graph.add_nodes_from(files)

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    for name, path in files.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                found = resolve(target)
                if found is not None and found != name and not graph.has_edge(name, found):
                    graph.add_edge(name, found, line=node.lineno)
    return graph


def cycles(graph: nx.DiGraph) -> list[list[str]]:
    """Every import cycle, as the modules of one strongly connected component and one cycle through them."""
    found = []
    for component in nx.strongly_connected_components(graph):
        if len(component) > 1:
            cycle = nx.find_cycle(graph.subgraph(component))
            path = [f"{a} (line {graph.edges[a, b]['line']})" for a, b in cycle] + [cycle[0][0]]
            found.append(sorted(component) + ["e.g. " + " -> ".join(path)])
    return found


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"gsimclr.{name} is in no layer: place it in tests/test_structure.py's LAYERS")


SRC = import_graph(ROOT / "src", ("gsimclr",))


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """The reader itself: module-level, relative, function-level and type-only imports, a submodule
    named in ``from package import``, and a name that is not a module."""
    pkg = tmp_path / "p"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from p.sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("from .b import thing\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import p.a\n"
                              "from p import sub\n")
    graph = import_graph(tmp_path)
    assert set(graph.edges) == {("p.a", "p.sub.b"), ("p.sub", "p.sub.b"), ("p.sub.b", "p.c"), ("p.c", "p.a"),
                                ("p.c", "p.sub")}
    assert [c[:4] for c in cycles(graph)] == [["p.a", "p.c", "p.sub", "p.sub.b"]]


def test_gsimclr_has_no_import_cycle():
    assert len(SRC) > 50 and SRC.number_of_edges() > 200  # the reader found the package
    assert cycles(SRC) == []


def test_no_import_runs_up_the_layers():
    names = {unit(m) for m in SRC}
    assert names == {u for layer in LAYERS for u in layer}, "LAYERS must name every top-level module, and only those"
    upward = [f"{a}:{line} imports {b} (layer {unit(a)!r} is below {unit(b)!r})"
              for a, b, line in SRC.edges(data="line")
              if unit(a) != unit(b) and layer_of(unit(a)) >= layer_of(unit(b))]
    assert upward == []


def test_benchmarks_have_no_import_cycle():
    assert cycles(import_graph(ROOT / "benchmarks")) == []


def test_scripts_have_no_import_cycle():
    """The evidence runner's plan, transport, stages, parts and report included (issue 25: they were a cycle)."""
    assert cycles(import_graph(ROOT / "scripts")) == []

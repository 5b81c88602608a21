"""The architecture, checked from the source with ``ast`` (nothing is imported):

- no class in ``stream/`` or ``transforms/`` over 250 lines, no module over 400;
- no import cycle between modules, and none between packages, where a package is a
  top-level package and one level below it (``stream.engine``, ``stream.config``, and a
  top-level module such as ``stream.pool`` stands for itself);
- aiokafka is imported only under ``stream/kafka/`` (the Kafka edge);
- ``transforms/`` imports nothing of ``stream/`` and neither aiokafka nor asyncio.

The import graph takes every ``import`` and ``from ... import`` at any depth: inside
functions (a lazy import is still a dependency, only a later one) and under
``TYPE_CHECKING`` (a cycle hidden from the interpreter is still two modules that must
know each other; a ``Protocol`` in a lower module breaks it for real). ``from package
import name`` points at ``package.name`` when that is a module, else at the package.
Importing ``a.b.c`` does not count as importing ``a`` and ``a.b`` too: that the parents'
``__init__`` run first is how Python loads modules, not a dependency the code chose.

The checks are plain functions over a folder, so the tests at the end run them on a
small made-up package to show that each one fails when it should.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("stream", "transforms")
MAX_CLASS_LINES = 250
MAX_MODULE_LINES = 400
EDGE = "stream.kafka"  # the only package that may import aiokafka


@dataclass(frozen=True)
class Module:
    """One source file: its dotted name, path (relative to the root) and syntax tree."""

    name: str
    path: str
    is_package: bool
    lines: int
    tree: ast.Module


def read_modules(root: Path, packages: Iterable[str]) -> dict[str, Module]:
    """Every ``.py`` file under the named top-level packages of ``root``, by dotted name."""
    modules: dict[str, Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            parts = list(relative.with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            text = path.read_text(encoding="utf-8")
            name = ".".join(parts)
            modules[name] = Module(
                name=name,
                path=relative.as_posix(),
                is_package=is_package,
                lines=len(text.splitlines()),
                tree=ast.parse(text, filename=str(relative)),
            )
    return modules


# --- sizes ----------------------------------------------------------------------------------


def oversized_modules(modules: Mapping[str, Module], limit: int) -> list[str]:
    """``path: N lines`` for each module longer than ``limit`` lines, longest first."""
    big = sorted((m for m in modules.values() if m.lines > limit), key=lambda m: -m.lines)
    return [f"{m.path}: {m.lines} lines" for m in big]


def oversized_classes(modules: Mapping[str, Module], limit: int) -> list[str]:
    """``path:line Class: N lines`` for each class (nested ones too) longer than ``limit``
    lines, from its ``class`` line to its last line, longest first."""
    big: list[tuple[int, str]] = []
    for m in modules.values():
        for node in ast.walk(m.tree):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > limit:
                    big.append((size, f"{m.path}:{node.lineno} {node.name}: {size} lines"))
    return [line for _, line in sorted(big, key=lambda item: -item[0])]


# --- imports --------------------------------------------------------------------------------


def _absolute(module: Module, name: str | None, level: int) -> str:
    """The absolute module name of ``from <level dots><name> import ...`` in ``module``."""
    if level == 0:
        return name or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, name] if name else base)


def resolve(target: str, modules: Mapping[str, Module]) -> str | None:
    """The known module ``target`` names: itself, or the nearest known package holding it
    (``pkg.mod.func`` -> ``pkg.mod``); None outside the scanned packages."""
    parts = target.split(".")
    while parts:
        name = ".".join(parts)
        if name in modules:
            return name
        parts.pop()
    return None


def import_graph(modules: Mapping[str, Module]) -> dict[str, set[str]]:
    """Module -> the scanned modules it imports (itself left out)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, module in modules.items():
        for imported in _imports_by_name(module, modules):
            if imported != name:
                graph[name].add(imported)
    return graph


def _imports_by_name(module: Module, modules: Mapping[str, Module]) -> set[str]:
    """The scanned modules ``module`` imports. ``from x import y`` counts once: as
    ``x.y`` when that is a module, else as ``x``."""
    out: set[str] = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            out |= {r for alias in node.names if (r := resolve(alias.name, modules))}
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node.module, node.level)
            for alias in node.names:
                submodule = f"{base}.{alias.name}" if base else alias.name
                found = submodule if submodule in modules else resolve(base, modules)
                if found:
                    out.add(found)
    return out


def package_of(name: str) -> str:
    """The package a module counts in: its first two name parts (``stream.engine.runner``
    -> ``stream.engine``; ``stream.pool`` stays itself; ``stream`` stays ``stream``)."""
    return ".".join(name.split(".")[:2])


def package_graph(graph: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Package -> the other packages its modules import."""
    packages: dict[str, set[str]] = {}
    for name, targets in graph.items():
        edges = packages.setdefault(package_of(name), set())
        edges |= {package_of(t) for t in targets} - {package_of(name)}
    return packages


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The groups of nodes that import each other (strongly connected components of
    more than one node), each sorted, in name order (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def describe_cycle(group: list[str], graph: Mapping[str, set[str]]) -> str:
    """One line per import inside a cycle: ``a -> b, c``."""
    members = set(group)
    lines = [f"{n} -> {', '.join(sorted(graph[n] & members))}" for n in group]
    return "cycle of " + ", ".join(group) + ":\n    " + "\n    ".join(lines)


def package_cycle_edges(group: list[str], graph: Mapping[str, set[str]]) -> list[str]:
    """The module imports that tie the packages of a package cycle together."""
    members = set(group)
    edges = []
    for name, targets in sorted(graph.items()):
        source = package_of(name)
        if source not in members:
            continue
        for target in sorted(targets):
            if package_of(target) in members and package_of(target) != source:
                edges.append(f"{name} -> {target}")
    return edges


def importers_of(
    modules: Mapping[str, Module], library: str, allowed: str | None = None
) -> list[str]:
    """``path:line`` of each import of ``library`` (or a module in it) outside the package
    ``allowed`` (and its subpackages)."""
    found: list[str] = []
    for name, module in sorted(modules.items()):
        if allowed and (name == allowed or name.startswith(allowed + ".")):
            continue
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            if any(n == library or n.startswith(library + ".") for n in names):
                found.append(f"{module.path}:{node.lineno}")
    return found


# --- the checks on this repository ----------------------------------------------------------


def _modules() -> dict[str, Module]:
    return read_modules(ROOT, PACKAGES)


def test_no_module_over_400_lines() -> None:
    offenders = oversized_modules(_modules(), MAX_MODULE_LINES)
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines:\n  " + "\n  ".join(offenders)


def test_no_class_over_250_lines() -> None:
    offenders = oversized_classes(_modules(), MAX_CLASS_LINES)
    assert not offenders, f"classes over {MAX_CLASS_LINES} lines:\n  " + "\n  ".join(offenders)


def test_no_import_cycle_between_modules() -> None:
    graph = import_graph(_modules())
    found = [describe_cycle(group, graph) for group in cycles(graph)]
    assert not found, "import cycles between modules:\n  " + "\n  ".join(found)


def test_no_import_cycle_between_packages() -> None:
    graph = import_graph(_modules())
    packages = package_graph(graph)
    found = [
        f"cycle of {', '.join(group)}:\n    " + "\n    ".join(package_cycle_edges(group, graph))
        for group in cycles(packages)
    ]
    assert not found, "import cycles between packages:\n  " + "\n  ".join(found)


def test_aiokafka_is_imported_only_by_the_kafka_edge() -> None:
    offenders = importers_of(_modules(), "aiokafka", allowed=EDGE)
    assert not offenders, "aiokafka imported outside stream/kafka/:\n  " + "\n  ".join(offenders)


def test_transforms_import_neither_the_service_nor_asyncio_nor_aiokafka() -> None:
    transforms = {n: m for n, m in _modules().items() if n.split(".")[0] == "transforms"}
    offenders = [
        f"{where} imports {library}"
        for library in ("stream", "aiokafka", "asyncio")
        for where in importers_of(transforms, library)
    ]
    assert not offenders, "transforms/ must stay pure:\n  " + "\n  ".join(offenders)


# --- the checks themselves, on a made-up package --------------------------------------------


def _write(root: Path, files: Mapping[str, str]) -> dict[str, Module]:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return read_modules(root, ["pkg"])


def test_sizes_name_each_offender_with_its_size(tmp_path: Path) -> None:
    big_class = "class Big:\n" + "    x = 1\n" * 12
    small_class = "class Small:\n    y = 2\n"
    modules = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/big.py": big_class + small_class,
            "pkg/small.py": small_class,
        },
    )
    assert oversized_modules(modules, 10) == ["pkg/big.py: 15 lines"]
    assert oversized_classes(modules, 10) == ["pkg/big.py:1 Big: 13 lines"]
    assert oversized_modules(modules, 15) == []
    assert oversized_classes(modules, 13) == []


def test_a_cycle_through_a_function_level_or_type_checking_import_is_found(
    tmp_path: Path,
) -> None:
    modules = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg import b\n",
            "pkg/b.py": "def later():\n    from . import a\n",
            "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.d\n",
            "pkg/d.py": "from pkg.c import something\n",
            "pkg/e.py": "import pkg.a\nfrom pkg.b import later\n",
        },
    )
    graph = import_graph(modules)
    assert graph["pkg.e"] == {"pkg.a", "pkg.b"}
    assert graph["pkg.d"] == {"pkg.c"}  # a name in a module points at the module
    assert cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"]]
    assert describe_cycle(["pkg.a", "pkg.b"], graph) == (
        "cycle of pkg.a, pkg.b:\n    pkg.a -> pkg.b\n    pkg.b -> pkg.a"
    )


def test_a_cycle_between_packages_names_the_imports_that_make_it(tmp_path: Path) -> None:
    modules = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/engine/__init__.py": "",
            "pkg/engine/runner.py": "from pkg.pool import Pool\n",
            "pkg/engine/batch.py": "",
            "pkg/pool.py": "from .engine.batch import Batch\n",
            "pkg/sink/__init__.py": "from pkg.engine import runner\n",
        },
    )
    graph = import_graph(modules)
    assert cycles(graph) == []  # no module imports itself back
    packages = package_graph(graph)
    assert packages["pkg.sink"] == {"pkg.engine"}
    assert cycles(packages) == [["pkg.engine", "pkg.pool"]]
    assert package_cycle_edges(["pkg.engine", "pkg.pool"], graph) == [
        "pkg.engine.runner -> pkg.pool",
        "pkg.pool -> pkg.engine.batch",
    ]


def test_a_library_imported_outside_its_edge_is_found(tmp_path: Path) -> None:
    modules = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/kafka/__init__.py": "import aiokafka\n",
            "pkg/kafka/clients.py": "from aiokafka.errors import KafkaError\n",
            "pkg/bench.py": "x = 1\ndef run():\n    from aiokafka import AIOKafkaConsumer\n",
            "pkg/other.py": "import aiokafkax\nfrom .kafka import clients\n",
        },
    )
    assert importers_of(modules, "aiokafka", allowed="pkg.kafka") == ["pkg/bench.py:3"]
    assert importers_of(modules, "aiokafka") == [
        "pkg/bench.py:3",
        "pkg/kafka/__init__.py:1",
        "pkg/kafka/clients.py:1",
    ]

"""The architecture of docs/architecture.md, checked on the source.

Every rule is read from the code (the AST of every module, lazy imports inside functions
included), not from what happens to be imported at run time:

- the import graph between bluestem's modules has no circle;
- every arrow between packages points down the layers (a higher layer may import a lower
  one, never the reverse);
- importing the plans (what a session does at start) loads no numba;
- the IOC, the devices and the plans share one vocabulary (``bluestem.instrument``): none
  of them spells a published state as a literal string;
- the IOC's groups own their PVs: no group calls up to the root, and the root never writes
  a sub-group's PV;
- the devices learn from PVs and documents, never by opening the IOC's files;
- the live reduction never asks what executor it was given.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Where each package's source lives (pyproject.toml's package-dir).
SOURCES = {
    "bluestem": ROOT / "src" / "bluestem",
    "bluestem.devices": ROOT / "devices",
    "bluestem.plans": ROOT / "plans",
    "bluestem.ioc": ROOT / "ioc",
}

# The layers, lowest first. A module may import from its own package or from a lower
# layer, never from a higher one. Within the core: the vocabulary (and ``procs``, which
# starts server processes and uses no other bluestem module), then the frame files, then
# what computes on them, the journal and the notifier, the catalogue, the callbacks on
# the documents, and the session that composes them; the IOC and the devices sit side by
# side on the core (they meet only over Channel Access), the plans on the devices, the
# command line on top.
LAYERS: list[tuple[str, ...]] = [
    ("bluestem.instrument", "bluestem.procs"),
    ("bluestem.frames",),
    ("bluestem.twin", "bluestem.reduce", "bluestem.journal", "bluestem.notify"),
    ("bluestem.loop",),
    ("bluestem.catalog",),
    ("bluestem.callbacks",),
    ("bluestem.session",),
    ("bluestem.ioc", "bluestem.devices"),
    ("bluestem.plans",),
    ("bluestem.cli",),
]
# bluestem/__init__.py holds the version only: every layer may read it.
EVERYWHERE = {"bluestem"}


def module_files() -> dict[str, Path]:
    """Module name -> file, for every module of the distribution."""
    found: dict[str, Path] = {}
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            if package == "bluestem" and parts and parts[0] in ("devices", "plans", "ioc"):
                continue  # not there, but never let a stray folder shadow a mapping
            found[name] = path
    return found


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the bluestem modules it imports by name (``from pkg import mod`` is an
    arrow to ``pkg.mod`` when that is a module, else to ``pkg``)."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(module, node, is_package)
                names = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                    for alias in node.names
                ]
            else:
                continue
            for name in names:
                # ``import a.b.c`` of a module: the module itself; of a name: its module.
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_of(module: str) -> int | None:
    for rank, packages in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in packages):
            return rank
    return None


def package_of(module: str) -> str:
    for packages in LAYERS:
        for p in packages:
            if module == p or module.startswith(p + "."):
                return p
    return module


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(graph.items()):
        here = layer_of(module)
        for target in sorted(targets - EVERYWHERE):
            there = layer_of(target)
            if here is None or there is None:
                bad.append(f"{module} -> {target}: a module outside the layers")
            elif there > here or (there == here and package_of(target) != package_of(module)):
                bad.append(f"{module} -> {target}")
    return bad


# -- the import graph --------------------------------------------------------------------
def test_the_import_graph_has_no_circle():
    assert cycles(import_graph()) == []


def test_every_arrow_points_down_the_layers():
    assert upward_arrows(import_graph()) == []


def test_every_module_has_a_layer():
    assert [m for m in import_graph() if layer_of(m) is None and m not in EVERYWHERE] == []


def test_checkers_find_a_planted_circle_and_an_upward_arrow():
    graph = {
        "bluestem.frames.a": {"bluestem.frames.b"},
        "bluestem.frames.b": {"bluestem.frames.a"},
        "bluestem.reduce.x": {"bluestem.callbacks.y"},
        "bluestem.callbacks.y": set(),
    }
    assert cycles(graph) == [["bluestem.frames.a", "bluestem.frames.b"]]
    assert upward_arrows(graph) == ["bluestem.reduce.x -> bluestem.callbacks.y"]


def test_catalog_and_callbacks_are_tied_one_way():
    graph = import_graph()
    back = [f"{m} -> {t}" for m, ts in graph.items() if m.startswith("bluestem.catalog")
            for t in ts if t.startswith("bluestem.callbacks")]  # fmt: skip
    assert back == []


@pytest.mark.parametrize("module", ["bluestem.plans", "bluestem.devices", "bluestem.instrument"])
def test_importing_loads_no_numba(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m == 'numba'))"
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# -- one vocabulary ----------------------------------------------------------------------
def _literal_strings(path: Path) -> set[str]:
    """String constants of a module, docstrings excepted."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    }


def test_states_are_spelled_once():
    from bluestem.instrument import DetectorState, ScanState, TriggerMode, WriteStatus

    # "Acquire" is also a PV name; every other published state is a word of the
    # vocabulary and only bluestem.instrument spells it.
    states = {s.value for e in (DetectorState, ScanState, WriteStatus, TriggerMode) for s in e}
    states -= {"Acquire"}
    found = []
    for folder in ("ioc", "devices", "plans"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for literal in sorted(_literal_strings(path) & states):
                found.append(f"{path.relative_to(ROOT)}: {literal!r}")
    assert found == []


# -- owners ------------------------------------------------------------------------------
def _attribute_chains(path: Path) -> list[tuple[str, ...]]:
    """Every ``self.a.b...`` chain of a module, as ("a", "b", ...)."""
    chains = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Attribute):
            continue
        parts = []
        current = node
        while isinstance(current, ast.Attribute):
            parts.append(current.attr)
            current = current.value
        if isinstance(current, ast.Name) and current.id == "self":
            chains.append(tuple(reversed(parts)))
    return chains


def test_the_ioc_groups_never_call_up_to_the_root():
    found = []
    for path in sorted((ROOT / "ioc").glob("*.py")):
        if path.name == "instrument.py":
            continue
        if any(chain[:1] == ("root",) for chain in _attribute_chains(path)):
            found.append(path.name)
    assert found == []


def test_the_instrument_never_writes_a_groups_pv():
    groups = ("mic", "scan", "cam", "hdf")
    chains = _attribute_chains(ROOT / "ioc" / "instrument.py")
    writes = sorted({".".join(c) for c in chains
                     if len(c) >= 3 and c[0] in groups and c[-1] == "write"})  # fmt: skip
    assert writes == []


def test_the_devices_never_open_the_iocs_files():
    opened = []
    for path in sorted((ROOT / "devices").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                if any(n == "h5py" or n.startswith("h5py.") for n in names):
                    opened.append(path.name)
    assert opened == []


def test_the_live_reduction_never_probes_its_executor():
    path = ROOT / "src" / "bluestem" / "callbacks" / "live_reduction.py"
    probes = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("hasattr", "getattr", "isinstance")
        ):
            probes.append(f"line {node.lineno}: {node.func.id}")
    assert probes == []


def test_modules_stay_small():
    big = [f"{p.relative_to(ROOT)}: {n} lines" for p in module_files().values()
           if (n := len(p.read_text().splitlines())) > 450]  # fmt: skip
    assert big == []

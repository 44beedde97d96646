"""The import layering of DESIGN.md, checked on the source (not on what happens to be
imported at run time), so a lazy import inside a function is caught too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(folder: Path, root: Path) -> dict[str, set[str]]:
    """Map each .py file under ``folder`` to the absolute module names it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[path.relative_to(root).as_posix()] = names
    return found


def offenders(folder: str, forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    bad = []
    for path, names in imported_modules(root / folder, root).items():
        for name in sorted(names):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path} imports {name}")
    return bad


def test_ioc_never_imports_ophyd_or_runengine():
    assert offenders("ioc", ("ophyd", "bluesky.run_engine", "bluesky.RunEngine")) == []


def test_devices_never_import_ioc():
    assert offenders("devices", ("bluestem.ioc",)) == []


def test_core_imports_devices_plans_ioc_only_from_the_cli():
    # The core is imported by the IOC process; only the command line (the top of the
    # stack) dispatches into the other packages.
    lines = offenders("src/bluestem", ("bluestem.devices", "bluestem.plans", "bluestem.ioc"))
    assert [line for line in lines if not line.startswith("src/bluestem/cli/")] == []


def test_checker_reports_a_planted_violation(tmp_path):
    (tmp_path / "ioc").mkdir()
    (tmp_path / "ioc" / "bad.py").write_text("import os\nfrom ophyd import Device\n")
    (tmp_path / "ioc" / "good.py").write_text("from ophydish import x\n")
    assert offenders("ioc", ("ophyd",), root=tmp_path) == [
        "ioc/bad.py imports ophyd",
        "ioc/bad.py imports ophyd.Device",
    ]

"""The package's layers import only downward (docs/architecture.md, "Layers").

Every import statement of every module - at the top or inside a function - is read from the
source (ast), resolved to the snnlab module it names, and checked against the layer table
below: a module may import its own group and the groups of lower layers, never a group of its
own layer or above (with the exceptions listed), and ``supervised`` and ``rl`` never import
each other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "snnlab"

#: group -> layer (lower imports nothing above it)
LAYERS = {
    "spiking": 0, "schedules": 0, "diagnostics": 0, "energy": 0, "energy_check": 0, "precision": 0, "rundir": 0, "study_files": 0,
    "config": 1, "quadrotor": 1,
    "wandb_utils": 2,
    "supervised": 3, "rl": 3,
    "experiment": 4,
    "sweep": 5, "study": 5,
    "report": 6,
    "cli": 7,
}
#: the bottom layer's modules are one group: the core (spiking network, schedules, diagnostics,
#: energy and two file-name helpers) may use each other freely
CORE = {g for g, layer in LAYERS.items() if layer == 0}
#: imports within a layer that are part of the design: a study runs sweeps
SAME_LAYER_OK = {("study", "sweep")}


def group_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "snnlab":
        return None
    if len(parts) == 1:
        return "__init__"
    return "core" if parts[1] in CORE else parts[1]


def layer_of(group: str) -> int:
    return 0 if group == "core" else LAYERS[group]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import of an snnlab module in ``path``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "snnlab"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "snnlab":
                continue
            if node.module is None or target in ("snnlab",) or target.count(".") == 0:
                # `from . import quadrotor` / `from snnlab import x`: each name may be a module
                out += [(node.lineno, f"{target}.{a.name}") for a in node.names
                        if _is_module(f"{target}.{a.name}")]
            else:
                out.append((node.lineno, target))
    return out


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = group_of(module_name(path))
        for line, target in imports_of(path):
            there = group_of(target)
            if there is None or there == here or here == "__init__":
                continue
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
            if {here, there} == {"supervised", "rl"}:
                bad.append(f"{where} (supervised and rl never import each other)")
            elif layer_of(there) > layer_of(here):
                bad.append(f"{where} (layer {layer_of(there)} above {here}'s {layer_of(here)})")
            elif layer_of(there) == layer_of(here) and (here, there) not in SAME_LAYER_OK:
                bad.append(f"{where} (a sibling of the same layer {layer_of(here)})")
    return bad


def test_every_group_has_a_layer():
    groups = {group_of(module_name(p)) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert groups <= set(LAYERS) | {"core"}, groups - set(LAYERS)


def test_layers_import_only_downward():
    assert violations() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: an upward import (config -> rl) and a sideways one (supervised ->
    rl), inside a function, are both reported."""
    pkg = tmp_path / "snnlab"
    (pkg / "supervised").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text("def f():\n    from .rl import train\n")
    (pkg / "supervised" / "__init__.py").write_text("")
    (pkg / "supervised" / "bc.py").write_text("from ..rl.fly import fly\nfrom ..quadrotor import env\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    found = violations()
    assert len(found) == 2
    assert "snnlab/config.py:2 imports snnlab.rl" in found[0] and "above" in found[0]
    assert "snnlab/supervised/bc.py:1 imports snnlab.rl.fly" in found[1] and "never" in found[1]


@pytest.mark.parametrize("module, absent", [
    ("snnlab.energy", ("ray", "lightning")),
    ("snnlab.energy_check", ("ray", "lightning", "neurobench")),
    ("snnlab.config", ("ray", "lightning")),
    ("snnlab.quadrotor.bc_data", ("ray", "lightning", "torch")),
    ("snnlab.quadrotor.fly", ("ray", "lightning")),
    ("snnlab.supervised.config", ("ray", "lightning")),
])
def test_lower_layers_do_not_pull_in_training_frameworks(module, absent):
    code = (f"import sys, {module}\n"
            f"print(','.join(m for m in {absent!r} if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", f"importing {module} imported {res.stdout.strip()}"


def test_a_supervised_config_loads_without_rllib():
    code = ("import sys\nfrom snnlab.experiment import load_experiment\n"
            "load_experiment('configs/sl_digits.yaml').network_shape()\n"
            "print('ray' in sys.modules, 'lightning' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=PACKAGE.parent)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["False", "False"]

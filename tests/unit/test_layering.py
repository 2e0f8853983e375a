"""Imports point one way (design.md): inference → model, ingest; dashboards → inference, ingest;
model is pure PyTorch (no Ray, Kafka or Redis); ingest knows nothing of the model or Serve."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "model": {"ingest", "inference", "dashboards", "ray", "kafka", "redis"},
    "ingest": {"inference", "model", "dashboards", "ray", "torch"},
    "inference": {"dashboards"},
    "dashboards": {"model", "ray", "torch"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    offenders = {}
    for path in (REPO / package).rglob("*.py"):
        bad = _imports(path) & FORBIDDEN[package]
        if path.name == "cli.py" and package == "inference":
            bad -= {"dashboards"}  # the command registry imports dashboards.cli by name only
        if bad:
            offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert not offenders, f"{package} imports what it must not: {offenders}"

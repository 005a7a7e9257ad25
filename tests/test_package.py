"""Packaging: our top-level names are ours alone, the CLI starts light, and layers import one way."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

OURS = {"flows", "tasks", "models", "data_contracts"}
ROOT = Path(__file__).resolve().parents[1]


def _top_levels(dist: metadata.Distribution) -> set[str]:
    text = dist.read_text("top_level.txt")
    if text:
        return {line.strip() for line in text.splitlines() if line.strip()}
    names = set()
    for f in dist.files or []:
        first = f.parts[0]
        if first.endswith((".dist-info", ".data")) or first in ("..", "__pycache__"):
            continue
        names.add(first[:-3] if first.endswith(".py") else first)
    return names


def test_no_dependency_ships_our_top_level_names():
    clashes = {}
    for dist in metadata.distributions():
        if dist.metadata["Name"].lower() == "mmfm":
            continue
        hit = _top_levels(dist) & OURS
        if hit:
            clashes[dist.metadata["Name"]] = hit
    assert not clashes, f"installed packages shadow ours: {clashes}"


def test_cli_import_is_light():
    """`mmfm --help` must not import the heavy stack (torch, monai, mlflow, prefect, dvc)."""
    code = "import sys, flows.cli; print(','.join(m for m in ('torch','monai','mlflow','prefect','dvc','pydicom') " \
           "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_layers_import_one_way():
    forbidden = {"models": ("prefect", "mlflow", "dvc", "flows", "tasks"), "tasks": ("flows",),
                 "data_contracts": ("flows", "tasks", "models")}
    for pkg, bad in forbidden.items():
        for path in (ROOT / pkg).rglob("*.py"):
            for line in path.read_text().splitlines():
                words = line.strip().split()
                if len(words) >= 2 and words[0] in ("import", "from"):
                    assert words[1].split(".")[0] not in bad, f"{path.relative_to(ROOT)}: {line.strip()}"

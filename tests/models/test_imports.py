"""models/ is torch code only: it imports torch, MONAI, transformers, peft, tokenizers, numpy, the standard library
PyYAML (lexicons) and itself, never the orchestration stack (Prefect, MLflow, DVC, flows, tasks)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ALLOWED = {"torch", "monai", "transformers", "peft", "tokenizers", "numpy", "yaml", "models", "__future__"}
MODELS = Path(__file__).resolve().parents[2] / "models"


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_models_imports_nothing_forbidden():
    files = sorted(MODELS.rglob("*.py"))
    assert len(files) >= 8
    bad = {str(f.relative_to(MODELS)): sorted(r for r in imported_roots(f)
                                              if r not in ALLOWED and r not in sys.stdlib_module_names)
           for f in files}
    assert {f: r for f, r in bad.items() if r} == {}
    # and the plain-text check, which also catches imports inside strings (importlib, __import__)
    forbidden = re.compile(r"^\s*(import|from)\s+(prefect|mlflow|dvc|flows|tasks)\b|import_module\(|__import__\(", re.M)
    assert [str(f) for f in files if forbidden.search(f.read_text())] == []

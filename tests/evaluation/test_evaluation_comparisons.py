"""The evaluate stage's report on a real trained workspace holds the paired comparisons the promotion gate reads."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow  # reads the session's trained workspace (tests/conftest.py)
MEASURED = {"metric", "value", "ci_low", "ci_high", "a", "b", "n", "n_boot_used"}


def test_evaluation_json_holds_same_inputs_baselines_oracle_and_comparisons(trained_workspace):
    ws, _, _ = trained_workspace
    report = json.loads((ws.models / "evaluation" / "evaluation.json").read_text())
    base = report["baselines"]
    found = base["comparisons"]
    assert set(found) == {"diagnosis", "risk", "survival"}
    assert {"best_single", "late_fusion", "bayes"} <= set(found["diagnosis"])
    assert set(found["risk"]) == {"logistic_regression", "oracle"} and set(found["survival"]) == {"cox", "oracle"}
    for task, rows in found.items():
        for name, d in rows.items():
            assert set(d) == {"skipped"} or set(d) == {"skipped", "n"} or MEASURED <= set(d), (task, name, d)
    assert base["risk_same_inputs"]["model"] == "logistic_regression" and base["survival_same_inputs"]["alpha"] > 0
    assert base["risk_same_inputs"]["demographics"] != "none"
    assert base["oracle"]["patients"] == report["test_patients"]
    assert "Fused model minus baselines" in (ws.models / "evaluation" / "evaluation.md").read_text()

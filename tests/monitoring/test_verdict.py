"""The monitoring verdict: "insufficient" (exit 4) names every site x family that could not be tested and why; a
drift in a tested family wins over it (exit 3); "ok" (exit 0) only when everything was tested. The family results
are the real tests' outputs on small frames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.monitoring.embedding_drift import embedding_drift
from tasks.monitoring.performance import auroc_drop_test
from tasks.monitoring.tabular_drift import tabular_drift
from tasks.monitoring.verdict import EXIT_CODES, describe_untested, settle


def _frame(n: int, sites: list[str], rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({"site": [sites[i % len(sites)] for i in range(n)], "lab_x": rng.normal(size=n),
                         "sex": rng.choice(["F", "M"], size=n)})


def _report(current_rows: int, labelled: int, shift: float = 0.0) -> dict:
    """A monitoring report of the four families on a current extract of `current_rows` patients in two sites."""
    rng = np.random.default_rng(0)
    ref, cur = _frame(200, ["site-a", "site-b"], rng), _frame(current_rows, ["site-a", "site-b"], rng)
    cur["lab_x"] += shift
    groups = {"labs": ["lab_x"], "demographics": ["sex"]}
    tabular = tabular_drift(ref, cur, groups, min_rows=30)
    emb = embedding_drift({"image_2d": rng.normal(size=(200, 4))}, {"image_2d": rng.normal(size=(current_rows, 4))},
                          list(cur["site"]), min_rows=30, n_permutations=50)
    y = rng.integers(0, 3, 100)
    probs = np.eye(3)[y] + rng.random((100, 3))
    cur_y = np.r_[y[:labelled], np.full(100 - labelled, -1)]
    perf = auroc_drop_test(y, probs, cur_y, probs, tolerance=0.1, n_boot=200)
    return {"tabular": tabular, "predictions": tabular_drift(ref, cur, {"labs": ["lab_x"]}, min_rows=30),
            "embedding": emb, "performance": perf, "status": "ok"}


def test_every_site_below_the_minimum_is_insufficient_not_ok():
    report = _report(current_rows=24, labelled=0)  # 12 per site, 24 in all: below 30 everywhere
    assert settle(report) is True
    assert report["status"] == "insufficient" and report["exit_code"] == EXIT_CODES["insufficient"] == 4
    named = {(u["site"], u["family"]) for u in report["untested"]}
    assert {("all", "tabular"), ("site-a", "tabular"), ("site-b", "tabular"), ("all", "predictions"),
            ("all", "embedding"), ("all", "performance")} <= named
    site_a = next(u for u in report["untested"] if u["site"] == "site-a" and u["family"] == "tabular")
    assert site_a["reason"] == "12 patients, fewer than the minimum 30"
    assert "no diagnosis outcomes" in next(u["reason"] for u in report["untested"] if u["family"] == "performance")
    assert "site-a tabular: 12 patients" in describe_untested(report)
    assert settle(report) is False  # idempotent


def test_a_tested_drift_wins_over_untested_sites(tmp_path):
    report = _report(current_rows=80, labelled=0, shift=3.0)  # 40 per site: tested; performance untested
    settle(report)
    assert report["status"] == "drift" and report["exit_code"] == 3
    assert report["drifted_families"] == ["tabular", "predictions"]
    assert [(u["site"], u["family"]) for u in report["untested"]] == [("all", "performance")]


def test_ok_only_when_every_family_was_tested():
    report = _report(current_rows=80, labelled=100)
    settle(report)
    assert report["untested"] == [] and report["status"] == "ok" and report["exit_code"] == 0
    report["performance"] = auroc_drop_test(np.zeros(5), np.ones((5, 3)), np.zeros(5), np.ones((5, 3)), 0.1)
    settle(report)
    assert report["status"] == "insufficient" and report["untested"][0]["family"] == "performance"

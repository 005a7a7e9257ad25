"""tabular_drift: localises a shift to its site and group, stays quiet on same-distribution extracts, reports
small sites and empty columns instead of dropping them, and writes Evidently's HTML report."""

from __future__ import annotations

import json
from pathlib import Path

import evidently  # noqa: F401  (imported at collection: its ~5 s import would otherwise land in the first test)
import numpy as np
import pandas as pd
import pytest

from tasks.monitoring.tabular_drift import tabular_drift

GROUPS = {"labs": ["albumin", "crp"], "vitals": ["heart_rate"], "demographics": ["age", "sex"]}


def _frame(rng: np.random.Generator, n: int, sites: list[str] | None = None) -> pd.DataFrame:
    frame = pd.DataFrame({
        "albumin": rng.normal(40, 5, n), "crp": rng.lognormal(1, 0.5, n), "heart_rate": rng.normal(75, 10, n),
        "age": rng.integers(18, 90, n), "sex": rng.choice(["female", "male"], n)})
    if sites is not None:
        frame["site"] = rng.choice(sites, n)
    return frame


def test_shift_in_one_site_is_flagged_for_that_site_and_group_only():
    rng = np.random.default_rng(0)
    reference, current = _frame(rng, 600), _frame(rng, 600, ["a", "b", "c"])
    current.loc[current["site"] == "b", "crp"] *= 1.8
    report = tabular_drift(reference, current, GROUPS)
    assert report["correction"] == "bonferroni" and report["family_size"] == 5 * 4  # 5 features x (all + 3 sites)
    assert report["threshold"] == pytest.approx(0.05 / 20)
    assert report["drifted"] and report["drifted_sites"] == ["b"]
    site_b = report["sites"]["b"]["groups"]
    assert site_b["labs"]["drifted"] and site_b["labs"]["features"]["crp"]["drifted"]
    assert not site_b["labs"]["features"]["albumin"]["drifted"]
    assert not site_b["vitals"]["drifted"] and not site_b["demographics"]["drifted"]
    assert site_b["labs"]["features"]["crp"]["test"] == "ks" and site_b["demographics"]["features"]["sex"]["test"] \
        == "chi2_contingency"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_distribution_raises_no_alarm(seed: int):
    rng = np.random.default_rng(seed)
    report = tabular_drift(_frame(rng, 500), _frame(rng, 500, ["a", "b", "c"]), GROUPS)
    assert not report["drifted"] and report["drifted_sites"] == []
    p_values = [f["p_value"] for f in report["overall"]["groups"]["labs"]["features"].values()]
    assert all(0 <= p <= 1 for p in p_values)


def test_small_site_is_insufficient_and_an_empty_column_is_no_data(tmp_path: Path):
    rng = np.random.default_rng(4)
    current = pd.concat([_frame(rng, 200).assign(site="big"), _frame(rng, 12).assign(site="small")], ignore_index=True)
    current["albumin"] = np.nan  # not measured in this extract at all
    current.loc[current.index[:5], "heart_rate"] = np.nan  # a few nulls: tested on the rest
    html = tmp_path / "drift" / "report.html"
    report = tabular_drift(_frame(rng, 400), current, GROUPS, html_path=html)
    assert report["sites"]["small"] == {"status": "insufficient", "n": 12, "drifted": None, "groups": {},
                                        "reference": "all sites"}
    assert report["insufficient_sites"] == ["small"] and report["family_size"] == 5 * 2  # all rows + "big"
    albumin = report["overall"]["groups"]["labs"]["features"]["albumin"]
    assert albumin["status"] == "no data" and albumin["n"] == 0 and not albumin["drifted"]
    assert report["overall"]["no_data"] == ["albumin"]
    assert report["overall"]["groups"]["vitals"]["features"]["heart_rate"]["n"] == 212 - 5
    assert html.stat().st_size > 10_000 and report["html"] == html.name
    json.dumps(report, allow_nan=False)


def test_new_category_is_drift_and_categorical_override():
    rng = np.random.default_rng(5)
    reference, current = _frame(rng, 300), _frame(rng, 300)
    current.loc[current.index[:100], "sex"] = "unknown"
    report = tabular_drift(reference, current, GROUPS, site_column=None, categorical=["age"])
    features = report["overall"]["groups"]["demographics"]["features"]
    assert features["sex"]["drifted"] and features["age"]["test"] == "chi2_contingency"
    assert report["sites"] == {} and report["site_column"] is None


def test_max_rows_samples_each_side_and_still_localises():
    rng = np.random.default_rng(6)
    reference, current = _frame(rng, 2000), _frame(rng, 1500, ["a", "b"])
    current.loc[current["site"] == "a", "albumin"] += 5
    report = tabular_drift(reference, current, GROUPS, max_rows=400, seed=1)
    assert report["max_rows"] == 400 and report["drifted_sites"] == ["a"]
    overall = report["overall"]
    assert overall["n"] == 1500 and overall["n_tested"] == 400
    assert overall["groups"]["labs"]["features"]["albumin"]["n"] == 400

"""The drift report a reviewer opens says mmfm's decision per site, never Evidently's pooled one: a site with too
few patients reads "insufficient" with its reason, a site that was tested and did not move "no drift", and the
page's verdict is the monitoring status its drift.json records."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from tasks.monitoring import verdict
from tasks.monitoring.drift_html import write_reports
from tasks.monitoring.tabular_drift import tabular_drift


def _frame(n: int, site: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"site": site, "lab_crp": rng.normal(5, 1, n), "sex": rng.choice(["female", "male"], n)})


def test_each_site_carries_mmfm_decision_and_the_page_the_json_verdict(tmp_path):
    reference = pd.concat([_frame(120, "site-a", 1), _frame(120, "site-b", 2)], ignore_index=True)
    current = pd.concat([_frame(60, "site-a", 3), _frame(5, "site-b", 4)], ignore_index=True)  # site-b: too few
    groups = {"labs": ["lab_crp"], "demographics": ["sex"]}
    tabular = tabular_drift(reference, current, groups, alpha=0.05, min_rows=20, html_path=tmp_path / "tabular.html")
    report = {"model_version": "m/1", "area": "extract-x", "flagged_sites": [], "tabular": tabular,
              "predictions": {}, "embedding": {}, "performance": {"status": "no outcomes", "labelled": 0},
              "findings": ""}
    verdict.settle(report)
    write_reports(report, tmp_path)

    saved = json.loads((tmp_path / "drift.json").read_text())
    assert saved["verdict"] == saved["status"] == "insufficient"
    page = (tmp_path / "drift.html").read_text()
    assert re.findall(r"id='mmfm-verdict'[^>]*data-verdict='(\w+)'", page) == ["insufficient"]
    sections = dict(re.findall(r"<section id='site-([\w-]+)'><h2>[^<]*<span class='v [\w-]+'>([\w ]+)</span>", page))
    assert sections == {"site-a": "no drift", "site-b": "insufficient"}
    assert "5 patients, fewer than the minimum 20" in page
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    evidently = (tmp_path / "tabular.html").read_text()
    assert "Data drift detected" not in evidently and "Data drift not detected" not in evidently
    assert evidently.count("id='mmfm-verdict'") == 1 and "data-verdict='insufficient'" in evidently

from __future__ import annotations

import re

import pytest

from tasks.evaluation.plots import forest_plot
from tasks.registry.model_card import NOT_REPORTED, render_model_card

SECTIONS = ["Model details", "Intended use", "Factors",
            "Metrics: this model against its baselines and the Bayes/oracle "
            "limit", "Evaluation data", "Training data", "Quantitative analyses", "Promotion gate", "Approvals",
            "Lineage", "Ethical considerations", "Caveats and recommendations"]

ROW = {"model": "This model (fused)", "role": "model", "patients": 40, "cells": ["0.851 [0.820, 0.880]"],
       "same_patients": "", "difference": "", "verdict": ""}
FULL = {
    "name": "mmfm-cxr", "version": "3", "verdict": "approved", "intended_use": "Triage support for chest X-ray reading",
    "out_of_scope": "Paediatric patients", "factors": "site, sex", "dataset_version": "ds-7",
    "contract_versions": {"ehr": "1.2"}, "model_details": {"architecture": "tiny", "code_version": "abc1234"},
    "evaluation_data": {"split": "test", "patients": 40, "counts": {"site": {"site01": 20, "site02": 20}}},
    "training_data": {"site": {"site01": 120, "site02": 80}},
    "tasks": [{"task": "diagnosis", "title": "Diagnosis", "primary_metric": "auroc_macro", "patients": 40,
               "metrics": ["auroc_macro"], "verdict": "better than 1 of 1 baselines",
               "rows": [ROW, {**ROW, "model": "Late fusion", "role": "baseline", "cells": ["0.800 [0.7, 0.9]"],
                              "same_patients": "0.85 vs 0.80 (n=40)", "difference": "+0.050 [+0.010, +0.090]",
                              "verdict": "fused better"}]}],
    "subgroups": [{"task": "diagnosis", "family": "age_band", "metrics": ["auroc_macro"], "gap": 0.02,
                   "rows": [{"group": "18-40", "n": 40, "cells": ["0.860 [0.8, 0.9]"]},
                            {"group": "80+", "n": 4, "cells": ["not measured (n=4 < 20)"]}]}],
    "missing_modality": [{"task": "diagnosis", "metrics": ["auroc_macro"], "primary_metric": "auroc_macro",
                          "rows": [{"modality": "ehr", "cells": ["0.790 [0.7, 0.85]"], "drop": "+0.061",
                                    "attention": "0.300"}]}],
    "gate": {"note": "decided at promotion", "checks": [
        {"rule": "beats_baselines", "passed": True, "value": {"diagnosis": {"late_fusion": {"value": 0.05}}},
         "detail": "better than late_fusion", "excepted": False, "reason": None}]},
    "approvals": [{"at": "2026-01-01T00:00:00+00:00", "decision": "approved", "alias": "champion",
                   "approver": "alice", "reason": "review", "ledger_event": "ev-43"}],
    "lineage": {"register_ledger_event": "ev-42", "register_run_id": "run-9", "finetune_run_ids": {"risk": "ft-2"}},
    "ethical_considerations": ["De-identified"], "caveats": ["Adults only"],
    "plots": [{"title": "forest", "path": "plots/forest.png"}, {"title": "survival", "path": None,
                                                                "missing": "not produced"}],
}


def test_every_section_is_rendered_with_its_values_and_images_embedded(tmp_path):
    forest_plot([("a", {"value": 0.8, "ci_low": 0.7, "ci_high": 0.9})], "auroc", tmp_path / "plots" / "forest.png")
    markdown, html = render_model_card(FULL, image_root=tmp_path, md_image_prefix="../")
    for section in SECTIONS:
        assert f"## {section}" in markdown and re.search(rf"<h2[^>]*>{re.escape(section)}</h2>", html), section
    for text in ["0.851 [0.820, 0.880]", "site01 120", "ev-42", "run-9", "ft-2", "alice", "ev-43", "Adults only",
                 "not measured (n=4", "abc1234", "ehr 1.2", "+0.050 [+0.010, +0.090]", "better than late_fusion",
                 "+0.061", "fused better", "De-identified", "survival: not produced"]:
        assert text in markdown, text
    assert re.search(r'<strong id="mmfm-verdict" data-verdict="approved">approved</strong>', html)
    assert html.count('id="mmfm-verdict"') == 1
    assert '<img src="data:image/png;base64,' in html and "![forest](../plots/forest.png)" in markdown
    assert "{'" not in html and "{'" not in markdown


def test_missing_sections_say_not_reported_and_missing_images_are_named():
    markdown, html = render_model_card({"name": "m", "version": "1", "plots": [{"title": "roc", "path": "x.png"}]})
    for section in SECTIONS:
        assert f"## {section}" in markdown
    assert markdown.count(NOT_REPORTED) >= 8 and 'data-verdict="not judged"' in html
    assert "roc: image file not found beside the card" in html and "<img" not in html


def test_html_escapes_script_and_is_standalone():
    card = {**FULL, "intended_use": "<script>alert('x')</script>", "caveats": ["a <b>bold</b> | claim"]}
    markdown, html = render_model_card(card)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<script>" not in markdown and "a &lt;b&gt;bold&lt;/b&gt; \\| claim" in markdown
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    assert "http://" not in html and "https://" not in html and "<link" not in html


def test_name_is_required():
    with pytest.raises(ValueError, match="name"):
        render_model_card({"version": "1"})

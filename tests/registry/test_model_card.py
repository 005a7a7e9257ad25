from __future__ import annotations

import pytest

from tasks.registry.model_card import NOT_REPORTED, render_model_card

SECTIONS = ["Intended use", "Out of scope", "Versions", "Training data", "Metrics", "Missing modality",
            "Subgroups", "Baselines", "Fused model vs baselines", "Promotion gate", "Limitations", "Lineage", "Plots"]

FULL = {
    "name": "mmfm-cxr", "version": "3", "intended_use": "Triage support for chest X-ray reading",
    "out_of_scope": "Paediatric patients", "dataset_version": "ds-7", "contract_versions": {"ehr": "1.2"},
    "code_version": "abc1234", "training_data": {"site": {"site01": 120, "site02": 80}, "sex": {"F": 101, "M": 99}},
    "metrics": {"auroc_macro": {"value": 0.8512, "ci_low": 0.82, "ci_high": 0.88}},
    "missing_modality": {"ehr": {"auroc_macro": 0.79}},
    "subgroups": {"age_band": {"18-40": {"n": 40, "auroc_macro": 0.86}, "80+": {"n": 4, "auroc_macro": "skipped"}}},
    "baselines": {"image_only": {"auroc_macro": 0.80}}, "limitations": ["Adults only"],
    "comparisons": [{"task": "diagnosis", "name": "late_fusion", "metric": "auroc_macro", "a": 0.85, "b": 0.8,
                     "difference": "+0.050 [+0.010, +0.090]", "n": 40}],
    "gate": {"note": "judged at registration", "checks": [
        {"rule": "beats_baselines", "passed": True, "value": {"diagnosis": {"late_fusion": {"value": 0.05}}},
         "detail": "better than late_fusion", "excepted": False, "reason": None}]},
    "lineage": {"ledger_event_id": "ev-42", "mlflow_run_id": "run-9", "approvals": ["alice"]},
    "plots": ["plots/roc.png"],
}


def test_every_section_is_rendered_with_its_values():
    markdown, html = render_model_card(FULL)
    for section in SECTIONS:
        assert f"## {section}" in markdown and f"<h2>{section}</h2>" in html
    for text in ["0.851", "0.820 – 0.880", "site01 120", "ev-42", "run-9", "alice", "Adults only", "skipped",
                 "abc1234", "Contract ehr: 1.2", "image_only", "+0.050 [+0.010, +0.090]", "better than late_fusion"]:
        assert text in markdown and text in html
    assert NOT_REPORTED not in markdown and NOT_REPORTED not in html
    assert '<img src="plots/roc.png"' in html and "![plots/roc.png](plots/roc.png)" in markdown


def test_missing_sections_say_not_reported():
    markdown, html = render_model_card({"name": "m", "version": "1"})
    for section in SECTIONS:
        assert f"## {section}" in markdown and f"<h2>{section}</h2>" in html
    body = markdown.split("## Training data")[1]
    assert body.count(NOT_REPORTED) >= 8
    assert html.count(NOT_REPORTED) >= 11


def test_html_escapes_script_and_is_standalone():
    card = {**FULL, "intended_use": "<script>alert('x')</script>", "limitations": ["a <b>bold</b> | claim"]}
    markdown, html = render_model_card(card)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<script>" not in markdown and "a &lt;b&gt;bold&lt;/b&gt; \\| claim" in markdown
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    assert "http://" not in html and "https://" not in html and "<link" not in html


def test_name_and_version_are_required():
    with pytest.raises(ValueError, match="version"):
        render_model_card({"name": "m"})

"""Where the gate's rules are shown: the facts promotion reads from an evaluation, the model card's rules and
comparisons tables, the recorded checks, and the audit report's rules table; on hand-made reports, no workspace."""

from __future__ import annotations

import json

from tasks.registry.audit_gather import _decisions, _evaluation_summary
from tasks.registry.audit_render import render_audit
from tasks.registry.card_content import card_content
from tasks.registry.gate import Candidate, GatePolicy, evaluate_gate
from tasks.registry.model_card import compact, render_model_card
from tasks.registry.promotion import PromotionRefused, evaluation_facts, recorded_checks
from tasks.registry.staging import _gate
from tests.registry.test_audit_report import _bare_audit


def _ci(value: float, low: float, high: float) -> dict:
    return {"value": value, "ci_low": low, "ci_high": high}


def _diff(metric: str, value: float, low: float, high: float, **extra) -> dict:
    return {"metric": metric, **_ci(value, low, high), "a": 0.8, "b": 0.8 - value, "n": 40, **extra}


EVALUATION = {  # the shape models/evaluation/evaluation.json has (tasks.evaluation.report)
    "split": "test", "dataset_version": "ds-1", "test_patients": 40,
    "tasks": {"diagnosis": {"primary_metric": "auroc_macro", "metrics": {"auroc_macro": _ci(0.8, 0.7, 0.9)}},
              "risk": {"primary_metric": "auroc", "metrics": {"auroc": _ci(0.41, 0.30, 0.52)}},
              "survival": {"primary_metric": "c_index", "metrics": {"c_index": _ci(0.66, 0.58, 0.74)}}},
    "baselines": {
        "late_fusion": {"metrics": {"auroc_macro": _ci(0.86, 0.8, 0.92)}},
        "risk_same_inputs": {"model": "logistic_regression", "metrics": {"auroc": _ci(0.7, 0.6, 0.8)}},
        "oracle": {"patients": 40, "survival": {"metrics": {"c_index": _ci(0.8, 0.74, 0.86)}}},
        "comparisons": {
            "diagnosis": {"best_single": _diff("auroc_macro", 0.05, 0.01, 0.09, baseline="single_modality.labs"),
                          "late_fusion": _diff("auroc_macro", -0.06, -0.11, -0.01)},
            "risk": {"logistic_regression": _diff("auroc", -0.29, -0.4, -0.18)},
            "survival": {"cox": {"skipped": "the train split has no event: a Cox model needs one"},
                         "oracle": _diff("c_index", -0.14, -0.2, -0.08)}}}}


def test_promotion_reads_task_metrics_and_comparisons_from_the_evaluation():
    facts = evaluation_facts(EVALUATION)
    assert facts["task_metrics"]["risk"] == {"metric": "auroc", "value": 0.41, "ci_low": 0.30, "ci_high": 0.52}
    assert facts["comparisons"] is EVALUATION["baselines"]["comparisons"]
    assert evaluation_facts({"tasks": {}}) == {"task_metrics": {}, "comparisons": {}}
    decision = evaluate_gate(Candidate(name="m", version="1", **facts), None, GatePolicy())
    failed = {c["rule"]: c["detail"] for c in decision.checks if not c["passed"]}
    assert "risk auroc 0.410 [0.300, 0.520] includes chance 0.5" in failed["tasks_above_chance"]
    assert "survival: the comparison with cox was not measured (the train split has no event" \
        in failed["beats_baselines"]


def test_recorded_checks_keep_every_rule_value_verdict_and_exception():
    policy = GatePolicy(exceptions={"beats_baselines": "tiny test cohort"})
    checks = evaluate_gate(Candidate(name="m", version="1", **evaluation_facts(EVALUATION)), None, policy).checks
    kept = recorded_checks(checks)
    assert [c["rule"] for c in kept] == [c["rule"] for c in checks]
    assert all(set(c) == {"rule", "passed", "value", "detail", "excepted", "reason"} for c in kept)
    beats = next(c for c in kept if c["rule"] == "beats_baselines")
    assert beats["passed"] and beats["excepted"] and beats["reason"] == "tiny test cohort"
    assert beats["value"]["diagnosis"]["late_fusion"]["value"] == -0.06
    json.dumps(kept)  # what the version tag and the ledger event store
    assert recorded_checks([{"rule": "old", "passed": True, "detail": "a marker from before values"}])[0]["value"] \
        is None
    refused = PromotionRefused("no", {"decision": "refused"}, checks)
    assert refused.checks is checks and str(refused) == "no"


def test_the_model_card_shows_comparisons_and_the_gates_rules(tmp_path):
    params = {"promote": {"exceptions": {"beats_baselines": "tiny test cohort"}}}
    card = card_content(EVALUATION, {}, "mmfm-multimodal", _gate(EVALUATION, params, "mmfm-multimodal"), tmp_path)
    assert [r["rule"] for r in card["gate"]["checks"]] == ["tasks_above_chance", "beats_baselines",
                                                            "exceptions_valid"]
    markdown, html = render_model_card({**card, "version": "1"}, image_root=tmp_path)
    for text in (markdown, html):
        assert "Promotion gate" in text and "this model against its baselines" in text
        assert "risk auroc 0.410 [0.300, 0.520] includes chance 0.5" in text
        assert "FAIL" in text and "pass (excepted)" in text and "tiny test cohort" in text
        assert "against the best single modality (single_modality.labs): fused better" in text
        assert "-0.060 [-0.110, -0.010]" in text and "fused worse" in text  # late fusion, paired
        assert "not measured: the train split has no event" in text
        assert "0.410 [0.300, 0.520] (metric auroc, chance 0.500)" in text  # the rule's value, not only its verdict
        assert "Logistic regression, same inputs" in text and "Oracle hazard of the generator (ceiling)" in text
    row = next(line for line in markdown.splitlines() if line.startswith("| tasks_above_chance |"))
    assert row.count(" | ") == 4 and row.endswith(" |")  # one table row: five cells


def test_a_card_with_unreadable_promote_parameters_still_renders(tmp_path):
    gate = _gate(EVALUATION, {"promote": {"toleranse": 1}}, "m")
    card = card_content(EVALUATION, {}, "m", gate, tmp_path)
    assert "cannot be read" in card["gate"]["error"] and "toleranse" in card["gate"]["error"]
    markdown, _ = render_model_card({**card, "version": "1"})
    assert "so the gate's rules were not judged" in markdown


def test_compact_cells():
    cell = compact({"value": 0.41, "ci_low": 0.3, "ci_high": 0.52, "chance": 0.5})
    assert cell == "0.410 [0.300, 0.520] (chance 0.500)"
    assert compact({"sex": {"gap": 0.1}, "site": None}) == "sex: gap: 0.100; site: not reported"
    assert compact(True) == "yes" and compact([]) == "none" and compact(None) == "not reported"


def test_the_audit_shows_comparisons_and_the_rules_of_each_decision():
    checks = recorded_checks(evaluate_gate(Candidate(name="m", version="1", **evaluation_facts(EVALUATION)), None,
                                           GatePolicy(exceptions={"beats_baselines": "tiny test cohort"})).checks)
    tags = {"mmfm.refused.champion.20260101T000000Z": json.dumps({"at": "2026-01-01", "reasons": ["x"],
                                                                  "checks": checks})}
    audit = _bare_audit()
    audit["registration"]["decisions"] = _decisions(tags)
    audit["evaluation"] = _evaluation_summary(EVALUATION)
    assert {b for b in audit["evaluation"]["baselines"]} >= {"risk.logistic_regression", "survival.oracle"}
    markdown, html = render_audit(audit)
    for text in (markdown, html):
        assert "Gate rules of each decision" in text and "Fused model minus baselines" in text
        assert "pass (excepted)" in text and "tiny test cohort" in text and "FAIL" in text
        assert "includes chance 0.5" in text and "best_single (single_modality.labs)" in text
    bare = render_audit(_bare_audit())[0]
    assert "**Gate rules of each decision**\n\nno gate decision recorded" in bare

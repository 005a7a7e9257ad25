from __future__ import annotations

from dataclasses import replace

import pytest

from tasks.registry.gate import Candidate, GatePolicy, evaluate_gate
from tasks.registry.phi_scan import Finding

POLICY = GatePolicy()


def good(**changes) -> Candidate:
    base = Candidate(
        name="mmfm-cxr", version="4", metrics={"auroc_macro": 0.86}, evaluated_split="test",
        evaluated_dataset_version="ds-7", trained_dataset_version="ds-7",
        subgroup_metrics={"sex": {"F": 0.85, "M": 0.87}, "site": {"site01": 0.84, "site02": 0.88}},
        contracts_passed=True, phi_findings=[], artifact_integrity_ok=True)
    return replace(base, **changes)


CHAMPION = good(version="3", metrics={"auroc_macro": 0.851})


def failed_rules(decision) -> list[str]:
    return [c["rule"] for c in decision.checks if not c["passed"]]


def test_good_candidate_is_approved_and_every_rule_is_reported():
    decision = evaluate_gate(good(), CHAMPION, POLICY)
    assert decision.approved and decision.reasons == []
    assert len(decision.checks) == 7 and all(c["passed"] for c in decision.checks)


def test_first_model_passes_with_no_champion():
    decision = evaluate_gate(good(), None, POLICY)
    assert decision.approved
    assert {"rule": "beats_champion", "passed": True, "detail": "no current champion"} in decision.checks


def test_within_tolerance_of_the_champion_passes():
    assert evaluate_gate(good(metrics={"auroc_macro": 0.842}), CHAMPION, POLICY).approved


REFUSALS = [
    ("wrong split", good(evaluated_split="val"), "evaluated_on_required_split", "'val'"),
    ("other dataset", good(evaluated_dataset_version="ds-6"), "evaluated_on_required_split", "'ds-6'"),
    ("unknown dataset", good(trained_dataset_version=None), "evaluated_on_required_split", "unknown"),
    ("worse than champion", good(metrics={"auroc_macro": 0.812}), "beats_champion",
     "auroc_macro 0.812 is below the champion's 0.851 minus tolerance 0.010"),
    ("wide subgroup gap", good(subgroup_metrics={"sex": {"F": 0.74, "M": 0.88}}), "subgroup_gap",
     "sex gap 0.140 (M 0.880 vs F 0.740)"),
    ("no subgroups", good(subgroup_metrics={}), "subgroup_gap", "No subgroup metrics"),
    ("no family with two measured groups", good(subgroup_metrics={"sex": {"male": 0.66}, "site": {"site-a": 0.7}}),
     "subgroup_gap", "sex: fewer than two groups; site: fewer than two groups), so fairness gaps are unknown"),
    ("contracts failed", good(contracts_passed=False), "contracts_passed", "failed"),
    ("contracts unknown", good(contracts_passed=None), "contracts_passed", "unknown"),
    ("phi found", good(phi_findings=[Finding("card.md", 3, "email")]), "no_phi_findings", "kinds: email"),
    ("tampered artifacts", good(artifact_integrity_ok=False), "artifact_integrity", "do not match"),
    ("integrity unchecked", good(artifact_integrity_ok=None), "artifact_integrity", "not verified"),
]


@pytest.mark.parametrize(("label", "candidate", "rule", "text"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_each_refusal_path(label, candidate, rule, text):
    decision = evaluate_gate(candidate, CHAMPION, POLICY)
    assert not decision.approved
    assert failed_rules(decision) == [rule]
    assert len(decision.reasons) == 1 and text in decision.reasons[0]


def test_missing_primary_metric_refuses_presence_and_comparison():
    decision = evaluate_gate(good(metrics={"loss": 0.3}), CHAMPION, POLICY)
    assert failed_rules(decision) == ["primary_metric_present", "beats_champion"]
    assert "auroc_macro is missing" in decision.reasons[0]


def test_lower_is_better_metric():
    policy = GatePolicy(primary_metric="brier", higher_is_better=False, tolerance=0.005)
    champion = good(metrics={"brier": 0.100})
    assert evaluate_gate(good(metrics={"brier": 0.104}), champion, policy).approved
    decision = evaluate_gate(good(metrics={"brier": 0.120}), champion, policy)
    assert decision.reasons == ["brier 0.120 is above the champion's 0.100 plus tolerance 0.005."]


def test_refusal_lists_every_reason_at_once():
    bad = good(evaluated_split="train", metrics={"auroc_macro": 0.70},
               subgroup_metrics={"age_band": {"18-40": 0.9, "80+": 0.6}}, contracts_passed=None,
               phi_findings=[Finding("a.txt", 1, "ssn")], artifact_integrity_ok=False)
    decision = evaluate_gate(bad, CHAMPION, POLICY)
    assert not decision.approved
    assert failed_rules(decision) == ["evaluated_on_required_split", "beats_champion", "subgroup_gap",
                                      "contracts_passed", "no_phi_findings", "artifact_integrity"]
    assert len(decision.reasons) == 6 and all(r.endswith(".") for r in decision.reasons)


def test_policy_from_params_section_and_typos():
    params = {"promote": {"primary_metric": "auprc", "tolerance": 0.02, "max_subgroup_gap": 0.05}, "train": {}}
    policy = GatePolicy.from_params(params)
    assert (policy.primary_metric, policy.tolerance, policy.max_subgroup_gap) == ("auprc", 0.02, 0.05)
    assert policy.required_split == "test"
    assert GatePolicy.from_params({"train": {"epochs": 3}}) == GatePolicy()
    with pytest.raises(ValueError, match="toleranse"):
        GatePolicy.from_params({"promote": {"toleranse": 0.5}})


def _group(value: float, half_width: float) -> dict:
    return {"value": value, "ci_low": value - half_width, "ci_high": value + half_width, "n": 25}


def test_a_wide_gap_on_small_groups_is_reported_but_not_refused():
    """Two groups of ~25 patients: a 0.157 gap with CIs of +-0.12 each is within chance (95% CI of the gap spans 0)."""
    noisy = good(subgroup_metrics={"sex": {"female": _group(0.392, 0.12), "male": _group(0.549, 0.12)}})
    decision = evaluate_gate(noisy, CHAMPION, POLICY)
    assert decision.approved
    detail = next(c["detail"] for c in decision.checks if c["rule"] == "subgroup_gap")
    assert "sex gap 0.157 (male 0.549 vs female 0.392), 95% CI [-0.013, 0.327]" in detail
    assert "not distinguishable from no gap" in detail


def test_a_wide_gap_with_tight_intervals_refuses_and_the_point_rule_refuses_on_the_estimate():
    sure = good(subgroup_metrics={"sex": {"female": _group(0.70, 0.03), "male": _group(0.88, 0.03)}})
    decision = evaluate_gate(sure, CHAMPION, POLICY)
    assert failed_rules(decision) == ["subgroup_gap"]
    assert "sex gap 0.180 (male 0.880 vs female 0.700), 95% CI [0.138, 0.222]" in decision.reasons[0]
    noisy = good(subgroup_metrics={"sex": {"female": _group(0.392, 0.12), "male": _group(0.549, 0.12)}})
    assert failed_rules(evaluate_gate(noisy, CHAMPION, GatePolicy(subgroup_gap_rule="point"))) == ["subgroup_gap"]
    assert failed_rules(evaluate_gate(good(), CHAMPION, GatePolicy(subgroup_gap_rule="vibes"))) == ["subgroup_gap"]


def test_the_report_rule_lists_gaps_and_unmeasurable_families_without_refusing():
    tiny = good(subgroup_metrics={"sex": {"male": 0.66}, "site": {"a": 0.2, "b": 0.9}})
    decision = evaluate_gate(tiny, CHAMPION, GatePolicy(subgroup_gap_rule="report"))
    detail = next(c["detail"] for c in decision.checks if c["rule"] == "subgroup_gap")
    assert decision.approved and detail.startswith("subgroup_gap_rule report (gaps do not refuse)")
    assert "sex: fewer than two groups" in detail and "site gap 0.700 (b 0.900 vs a 0.200): over the maximum" in detail
    assert failed_rules(evaluate_gate(tiny, CHAMPION, POLICY)) == ["subgroup_gap"]

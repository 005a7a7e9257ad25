from __future__ import annotations

from dataclasses import replace

import pytest

from tasks.registry.gate import Candidate, GatePolicy, evaluate_gate
from tasks.registry.phi_scan import Finding

POLICY = GatePolicy()


def _ci(value: float, low: float, high: float, metric: str) -> dict:
    return {"metric": metric, "value": value, "ci_low": low, "ci_high": high}


TASKS = {"diagnosis": _ci(0.86, 0.81, 0.90, "auroc_macro"), "risk": _ci(0.74, 0.66, 0.81, "auroc"),
         "survival": _ci(0.71, 0.65, 0.77, "c_index")}
COMPARISONS = {  # fused minus baseline, paired on the same patients (tasks.evaluation.baselines.comparisons)
    "diagnosis": {"best_single": {**_ci(0.06, 0.02, 0.10, "auroc_macro"), "baseline": "single_modality.labs"},
                  "late_fusion": _ci(0.04, 0.01, 0.07, "auroc_macro"),
                  "bayes": _ci(-0.05, -0.08, -0.02, "auroc_macro")},
    "risk": {"logistic_regression": _ci(-0.01, -0.06, 0.04, "auroc"), "oracle": _ci(-0.08, -0.12, -0.04, "auroc")},
    "survival": {"cox": _ci(0.00, -0.03, 0.03, "c_index")}}


def good(**changes) -> Candidate:
    base = Candidate(
        name="mmfm-cxr", version="4", metrics={"auroc_macro": 0.86}, evaluated_split="test",
        evaluated_dataset_version="ds-7", trained_dataset_version="ds-7",
        subgroup_metrics={"sex": {"F": 0.85, "M": 0.87}, "site": {"site01": 0.84, "site02": 0.88}},
        contracts_passed=True, phi_findings=[], artifact_integrity_ok=True,
        task_metrics=TASKS, comparisons=COMPARISONS)
    return replace(base, **changes)


CHAMPION = good(version="3", metrics={"auroc_macro": 0.851})


def failed_rules(decision) -> list[str]:
    return [c["rule"] for c in decision.checks if not c["passed"]]


RULES = ["evaluated_on_required_split", "primary_metric_present", "beats_champion", "tasks_above_chance",
         "beats_baselines", "subgroup_gap", "contracts_passed", "no_phi_findings", "artifact_integrity",
         "exceptions_valid"]


def test_good_candidate_is_approved_and_every_rule_is_reported_with_its_value():
    decision = evaluate_gate(good(), CHAMPION, POLICY)
    assert decision.approved and decision.reasons == []
    assert [c["rule"] for c in decision.checks] == RULES
    assert all(c["passed"] and not c["excepted"] and c["reason"] is None and "value" in c for c in decision.checks)
    chance = next(c for c in decision.checks if c["rule"] == "tasks_above_chance")
    assert chance["value"]["risk"] == {"metric": "auroc", "value": 0.74, "ci_low": 0.66, "ci_high": 0.81,
                                       "chance": 0.5}
    assert "risk auroc 0.740 [0.660, 0.810] above chance 0.5" in chance["detail"]
    beats = next(c for c in decision.checks if c["rule"] == "beats_baselines")
    assert set(beats["value"]) == {"diagnosis", "risk", "survival"}
    assert beats["value"]["diagnosis"]["best_single"]["baseline"] == "single_modality.labs"
    assert "oracle" not in beats["value"]["risk"] and "bayes" not in beats["value"]["diagnosis"]  # ceilings, not bars
    assert "risk auroc: fused - logistic_regression -0.010 [-0.060, +0.040] (not worse than" in beats["detail"]


def test_first_model_passes_with_no_champion():
    decision = evaluate_gate(good(), None, POLICY)
    assert decision.approved
    check = next(c for c in decision.checks if c["rule"] == "beats_champion")
    assert (check["passed"], check["detail"], check["value"]) == (True, "no current champion",
                                                                  {"candidate": 0.86, "champion": None})


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
    assert [c["value"] for c in decision.checks if c["rule"] in ("no_phi_findings", "artifact_integrity")] == [1, False]
    assert len(decision.reasons) == 6 and all(r.endswith(".") for r in decision.reasons)


def test_policy_from_params_section_and_typos():
    params = {"promote": {"primary_metric": "auprc", "tolerance": 0.02, "max_subgroup_gap": 0.05}, "train": {}}
    policy = GatePolicy.from_params(params)
    assert (policy.primary_metric, policy.tolerance, policy.max_subgroup_gap) == ("auprc", 0.02, 0.05)
    assert policy.required_split == "test" and policy.gated_tasks == ["diagnosis", "risk", "survival"]
    assert GatePolicy.from_params({"train": {"epochs": 3}}) == GatePolicy()
    declared = GatePolicy.from_params({"promote": {"exceptions": {"beats_baselines": "tiny test cohort"}}})
    assert declared.exceptions == {"beats_baselines": "tiny test cohort"}
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


# --- evidence rules: chance, baselines, exceptions (issue 16 item 7) -------------------------------------------------

def weakened() -> Candidate:
    """The demo's failure: risk below chance, survival at chance, the fused model worse than late fusion."""
    return good(task_metrics={**TASKS, "risk": _ci(0.41, 0.30, 0.52, "auroc"),
                              "survival": _ci(0.48, 0.41, 0.55, "c_index")},
                comparisons={**COMPARISONS,
                             "diagnosis": {**COMPARISONS["diagnosis"],
                                           "late_fusion": _ci(-0.06, -0.11, -0.01, "auroc_macro")},
                             "risk": {"logistic_regression": _ci(-0.25, -0.36, -0.14, "auroc")}})


def test_a_weakened_model_is_refused_with_values_and_reasons():
    decision = evaluate_gate(weakened(), CHAMPION, POLICY)
    assert not decision.approved
    assert failed_rules(decision) == ["tasks_above_chance", "beats_baselines"]
    chance, beats = decision.reasons
    assert "risk auroc 0.410 [0.300, 0.520] includes chance 0.5" in chance
    assert "survival c_index 0.480 [0.410, 0.550] includes chance 0.5" in chance
    assert "diagnosis auroc_macro 0.860" not in chance  # only failures are reasons
    assert "diagnosis auroc_macro: fused - late_fusion -0.060 [-0.110, -0.010]: worse than late_fusion" in beats
    assert "risk auroc: fused - logistic_regression -0.250 [-0.360, -0.140]: worse than logistic_regression" in beats
    value = next(c for c in decision.checks if c["rule"] == "beats_baselines")["value"]
    assert value["diagnosis"]["late_fusion"] == {"value": -0.06, "ci_low": -0.11, "ci_high": -0.01,
                                                 "requires": "ci_low > 0"}
    assert value["risk"]["logistic_regression"]["requires"] == "ci_high >= 0"


def test_a_gain_whose_paired_interval_reaches_zero_does_not_beat_a_baseline():
    tie = good(comparisons={**COMPARISONS, "diagnosis": {**COMPARISONS["diagnosis"],
                                                         "best_single": _ci(0.03, -0.01, 0.07, "auroc_macro")}})
    decision = evaluate_gate(tie, CHAMPION, POLICY)
    assert failed_rules(decision) == ["beats_baselines"]
    assert "fused - best_single +0.030 [-0.010, +0.070]: not better than best_single" in decision.reasons[0]


@pytest.mark.parametrize(("label", "changes", "text"), [
    ("task not evaluated", {"task_metrics": {k: v for k, v in TASKS.items() if k != "survival"}},
     "survival was not evaluated"),
    ("no CI", {"task_metrics": {**TASKS, "risk": {"metric": "auroc", "value": 0.7}}},
     "risk auroc 0.700 has no confidence interval"),
    ("no chance level", {"task_metrics": {**TASKS, "risk": _ci(0.7, 0.6, 0.8, "brier")}},
     "risk brier has no chance level in promote.chance"),
    ("entirely below chance", {"task_metrics": {**TASKS, "survival": _ci(0.35, 0.30, 0.40, "c_index")}},
     "survival c_index 0.350 [0.300, 0.400] is below chance 0.5"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_unknown_or_unmeasured_task_metrics_refuse(label, changes, text):
    decision = evaluate_gate(good(**changes), CHAMPION, POLICY)
    assert failed_rules(decision) == ["tasks_above_chance"] and text in decision.reasons[0], decision.reasons


def test_missing_or_skipped_comparisons_refuse():
    gone = good(comparisons={"diagnosis": {"late_fusion": COMPARISONS["diagnosis"]["late_fusion"],
                                           "best_single": {"skipped": "too few patients with labs"}},
                             "risk": COMPARISONS["risk"]})
    decision = evaluate_gate(gone, CHAMPION, POLICY)
    assert failed_rules(decision) == ["beats_baselines"]
    assert "diagnosis: the comparison with best_single was not measured (too few patients with labs)" \
        in decision.reasons[0]
    assert "survival: no comparison with cox was measured" in decision.reasons[0]


def test_only_gated_tasks_are_judged():
    policy = GatePolicy(gated_tasks=["diagnosis"])
    only_diagnosis = good(task_metrics={"diagnosis": TASKS["diagnosis"], "risk": _ci(0.41, 0.30, 0.52, "auroc")},
                          comparisons={"diagnosis": COMPARISONS["diagnosis"]})
    assert evaluate_gate(only_diagnosis, CHAMPION, policy).approved


def test_an_exception_with_a_reason_lets_the_rule_pass_and_keeps_value_and_reason():
    policy = GatePolicy(exceptions={"tasks_above_chance": "tiny test cohort", "beats_baselines": "tiny test cohort"})
    decision = evaluate_gate(weakened(), CHAMPION, policy)
    assert decision.approved and decision.reasons == []
    excepted = {c["rule"]: c for c in decision.checks if c["excepted"]}
    assert set(excepted) == {"tasks_above_chance", "beats_baselines"}
    chance = excepted["tasks_above_chance"]
    assert chance["passed"] and chance["reason"] == "tiny test cohort"
    assert chance["detail"].startswith("excepted (tiny test cohort): Not every gated task is better than chance")
    assert chance["value"]["risk"]["value"] == 0.41  # the measured value is still shown
    listed = next(c for c in decision.checks if c["rule"] == "exceptions_valid")
    assert listed["passed"] and "beats_baselines (tiny test cohort)" in listed["detail"]


def test_an_exception_for_one_rule_leaves_the_other_refusing():
    decision = evaluate_gate(weakened(), CHAMPION, GatePolicy(exceptions={"beats_baselines": "known, issue 16"}))
    assert failed_rules(decision) == ["tasks_above_chance"]


def test_an_exception_that_passes_anyway_is_not_marked_excepted():
    decision = evaluate_gate(good(), CHAMPION, GatePolicy(exceptions={"beats_baselines": "just in case"}))
    assert decision.approved and not any(c["excepted"] for c in decision.checks)


@pytest.mark.parametrize(("exceptions", "text"), [
    ({"tasks_above_chance": ""}, "the exception for tasks_above_chance gives no reason"),
    ({"tasks_above_chance": "   "}, "the exception for tasks_above_chance gives no reason"),
    ({"tasks_above_chance": None}, "the exception for tasks_above_chance gives no reason"),
    ({"beats_baseline": "typo"}, "'beats_baseline' is not a rule that can be excepted"),
    ({"artifact_integrity": "we trust it"}, "'artifact_integrity' is not a rule that can be excepted"),
], ids=["empty", "blank", "none", "unknown rule", "not exceptable"])
def test_an_exception_without_a_reason_or_for_an_unknown_rule_refuses(exceptions, text):
    decision = evaluate_gate(good(), CHAMPION, GatePolicy(exceptions=exceptions))
    assert failed_rules(decision) == ["exceptions_valid"]
    assert text in decision.reasons[0]
    refused = evaluate_gate(weakened(), CHAMPION, GatePolicy(exceptions=exceptions))  # and excepts nothing
    assert {"tasks_above_chance", "exceptions_valid"} <= set(failed_rules(refused))


def test_the_card_reads_the_evidence_rules_alone():
    from tasks.registry.gate import evidence_checks

    rows = evidence_checks(weakened(), GatePolicy(exceptions={"beats_baselines": "tiny test cohort"}))
    assert [(c["rule"], c["passed"], c["excepted"]) for c in rows] == [
        ("tasks_above_chance", False, False), ("beats_baselines", True, True), ("exceptions_valid", True, False)]

"""The promotion gate: open-source MLflow has no approval workflow, so this decides whether a candidate may take
the champion alias.

Pure: the caller gathers the facts (metrics, lineage, contract results, PHI scan, artifact hashes) into a
`Candidate`; `evaluate_gate` only judges them. Every rule is always evaluated, so one refusal lists every reason
and the reviewer does not fix problems one at a time. Unknown facts (None) refuse: a gate that passes what it
was not told is no gate. Every check records its measured `value` beside its sentence, so a reviewer reads the
numbers, not only the verdict.

Evidence rules (issue 16): every gated task's primary-metric CI must exclude chance (`tasks_above_chance`), and the
fused model must beat its baselines on the same patients (`beats_baselines`, paired bootstrap CIs of fused minus
baseline): diagnosis must beat the best single-modality model and late fusion (CI lower bound > 0); risk and survival
must not be worse than a logistic / Cox model on the same inputs (CI upper bound >= 0: a linear model on good
features is near the ceiling on this data, so "significantly better" would refuse sound models; "significantly
worse" refuses a model that learned less than a regression could). Only these two rules can be excepted, and only
with a reason (`promote.exceptions`); an excepted rule passes, marked excepted, with its value and the reason kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class Candidate:
    name: str
    version: str
    metrics: dict[str, float] = field(default_factory=dict)
    evaluated_split: str | None = None
    evaluated_dataset_version: str | None = None
    trained_dataset_version: str | None = None
    # family -> group -> primary metric: a number, or {"value", "ci_low", "ci_high"} when the evaluation has CIs
    subgroup_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    contracts_passed: bool | None = None  # every fail-severity contract passed on its dataset
    phi_findings: list = field(default_factory=list)
    artifact_integrity_ok: bool | None = None
    # task -> {"metric", "value", "ci_low", "ci_high"}: each fine-tuned task's primary metric on the evaluated split
    task_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    # task -> baseline -> fused minus baseline on the same patients, paired bootstrap ({"value", "ci_low", "ci_high",
    # "a", "b", "n", "metric", "baseline"}, tasks.evaluation.baselines.compare) or {"skipped": why}
    comparisons: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class GatePolicy:
    primary_metric: str = "auroc_macro"
    higher_is_better: bool = True
    tolerance: float = 0.01
    max_subgroup_gap: float = 0.10
    # "significant": a gap over the maximum refuses only when its 95% interval excludes 0 (groups of ~25 patients
    # differ by 0.15 AUROC by chance); "point": the point estimate alone decides (without CIs it always does);
    # "report": gaps are listed but never refuse, nor does an unmeasurable gap (cohorts too small to have subgroups:
    # tests, smoke runs); the decision records which rule was used.
    subgroup_gap_rule: str = "significant"
    required_split: str = "test"
    gated_tasks: list[str] = field(default_factory=lambda: ["diagnosis", "risk", "survival"])
    chance: dict[str, float] = field(default_factory=lambda: {"auroc_macro": 0.5, "auroc": 0.5, "c_index": 0.5})
    # task -> baselines the fused model must beat (paired CI lower bound > 0) / must not be worse than (upper >= 0)
    must_beat: dict[str, list[str]] = field(default_factory=lambda: {"diagnosis": ["best_single", "late_fusion"]})
    not_worse_than: dict[str, list[str]] = field(
        default_factory=lambda: {"risk": ["logistic_regression"], "survival": ["cox"]})
    exceptions: dict[str, str] = field(default_factory=dict)  # rule -> the reason it may fail (EXCEPTABLE rules)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> GatePolicy:
        """Read the `promote:` section of params.yaml (the whole parsed file is passed; no section -> defaults).
        Unknown keys refuse, so a typo cannot silently fall back to a default threshold."""
        section = params.get("promote") or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"unknown promote parameters: {', '.join(unknown)}")
        return cls(**section)


@dataclass(frozen=True)
class GateDecision:
    approved: bool
    reasons: list[str]  # one full sentence per failing rule
    # {"rule", "passed", "value", "detail", "excepted", "reason"} for every rule, in order; `value` is what was
    # measured (numbers), `reason` the declared exception's when `excepted`
    checks: list[dict[str, Any]]


Check = tuple[bool, str, Any]  # (passed, one sentence, the measured value)
EXCEPTABLE = ("tasks_above_chance", "beats_baselines")  # the evidence rules; integrity, PHI, contracts never are


def evaluate_gate(candidate: Candidate, champion: Candidate | None, policy: GatePolicy) -> GateDecision:
    """Judge `candidate` against every rule; approved only if all pass (an excepted rule passes, marked)."""
    rules: list[tuple[str, Callable[[], Check]]] = [
        ("evaluated_on_required_split", lambda: _split_rule(candidate, policy)),
        ("primary_metric_present", lambda: _metric_present(candidate, policy)),
        ("beats_champion", lambda: _beats_champion(candidate, champion, policy)),
        ("tasks_above_chance", lambda: _above_chance(candidate, policy)),
        ("beats_baselines", lambda: _beats_baselines(candidate, policy)),
        ("subgroup_gap", lambda: _subgroup_gap(candidate, policy)),
        ("contracts_passed", lambda: _contracts(candidate)),
        ("no_phi_findings", lambda: _phi(candidate)),
        ("artifact_integrity", lambda: _integrity(candidate)),
        ("exceptions_valid", lambda: _exceptions(policy)),
    ]
    granted = valid_exceptions(policy)
    checks = []
    for rule, judge in rules:
        passed, detail, value = judge()
        check = {"rule": rule, "passed": passed, "value": value, "detail": detail, "excepted": False, "reason": None}
        if not passed and rule in granted:
            check |= {"passed": True, "excepted": True, "reason": granted[rule],
                      "detail": f"excepted ({granted[rule]}): {detail}"}
        checks.append(check)
    reasons = [c["detail"] for c in checks if not c["passed"]]
    return GateDecision(approved=not reasons, reasons=reasons, checks=checks)


def evidence_checks(candidate: Candidate, policy: GatePolicy) -> list[dict[str, Any]]:
    """The evidence rules alone (chance, baselines, exceptions) as `evaluate_gate` records them: what the model
    card can state at registration, before any champion, integrity or PHI check exists."""
    keep = (*EXCEPTABLE, "exceptions_valid")
    return [c for c in evaluate_gate(candidate, None, policy).checks if c["rule"] in keep]


def valid_exceptions(policy: GatePolicy) -> dict[str, str]:
    """The declared exceptions that apply: an exceptable rule with a non-empty reason."""
    return {rule: reason.strip() for rule, reason in (policy.exceptions or {}).items()
            if rule in EXCEPTABLE and isinstance(reason, str) and reason.strip()}


def _split_rule(c: Candidate, p: GatePolicy) -> Check:
    problems = []
    if c.evaluated_split != p.required_split:
        problems.append(f"it was evaluated on split {c.evaluated_split!r}, not the required {p.required_split!r}")
    if c.evaluated_dataset_version is None or c.trained_dataset_version is None:
        problems.append("its evaluated or trained dataset version is unknown")
    elif c.evaluated_dataset_version != c.trained_dataset_version:
        problems.append(f"it was evaluated on dataset version {c.evaluated_dataset_version!r} but trained on "
                        f"{c.trained_dataset_version!r}")
    value = {"split": c.evaluated_split, "evaluated_dataset_version": c.evaluated_dataset_version,
             "trained_dataset_version": c.trained_dataset_version}
    if problems:
        joined = "; ".join(problems)
        return False, f"{c.name} v{c.version} is not evaluated on its own {p.required_split} split: {joined}.", value
    return True, f"evaluated on the {p.required_split} split of dataset version {c.evaluated_dataset_version}", value


def _metric_present(c: Candidate, p: GatePolicy) -> Check:
    value = {p.primary_metric: _primary(c, p)}
    if _primary(c, p) is None:
        return False, f"The primary metric {p.primary_metric} is missing from {c.name} v{c.version}'s metrics.", value
    return True, f"{p.primary_metric} = {_primary(c, p):.3f}", value


def _beats_champion(c: Candidate, champion: Candidate | None, p: GatePolicy) -> Check:
    mine, m = _primary(c, p), p.primary_metric
    if champion is None:
        return True, "no current champion", {"candidate": mine, "champion": None}
    theirs = _primary(champion, p)
    value = {"candidate": mine, "champion": theirs, "champion_version": champion.version, "tolerance": p.tolerance}
    if mine is None:
        return False, f"{m} of the candidate is missing, so it cannot be compared with the champion.", value
    if theirs is None:
        return False, f"The champion {champion.name} v{champion.version} has no {m} to compare with.", value
    if p.higher_is_better:
        ok, side, sign = mine >= theirs - p.tolerance, "below", "minus"
    else:
        ok, side, sign = mine <= theirs + p.tolerance, "above", "plus"
    if ok:
        return True, f"{m} {mine:.3f} vs champion's {theirs:.3f} (tolerance {p.tolerance:.3f})", value
    return False, f"{m} {mine:.3f} is {side} the champion's {theirs:.3f} {sign} tolerance {p.tolerance:.3f}.", value


def _num(v: Any) -> float | None:
    try:
        return None if v is None or float(v) != float(v) else float(v)
    except (TypeError, ValueError):
        return None


def _above_chance(c: Candidate, p: GatePolicy) -> Check:
    """Every gated task's primary-metric 95% CI lies above chance; a task not evaluated, a metric without a CI or
    without a declared chance level refuses."""
    problems, said, value = [], [], {}
    for task in p.gated_tasks:
        m = c.task_metrics.get(task) or {}
        metric = m.get("metric")
        v, lo, hi, chance = _num(m.get("value")), _num(m.get("ci_low")), _num(m.get("ci_high")), \
            _num((p.chance or {}).get(metric))
        value[task] = {"metric": metric, "value": v, "ci_low": lo, "ci_high": hi, "chance": chance}
        if not m or metric is None:
            problems.append(f"{task} was not evaluated")
        elif v is None:
            problems.append(f"{task} {metric} was not measured")
        elif chance is None:
            problems.append(f"{task} {metric} has no chance level in promote.chance")
        elif lo is None or hi is None:
            problems.append(f"{task} {metric} {v:.3f} has no confidence interval")
        else:
            interval = f"{task} {metric} {v:.3f} [{lo:.3f}, {hi:.3f}]"
            if lo > chance:
                said.append(f"{interval} above chance {chance:g}")
            else:
                problems.append(f"{interval} {'is below' if hi < chance else 'includes'} chance {chance:g}")
    if problems:
        return False, f"Not every gated task is better than chance: {'; '.join(problems)}.", value
    return True, "; ".join(said) or "no gated task", value


def _requirements(p: GatePolicy) -> list[tuple[str, str, str]]:
    """(task, baseline, "beat" | "not_worse") for the gated tasks, in the policy's order."""
    return [(task, name, kind) for kind, table in (("beat", p.must_beat), ("not_worse", p.not_worse_than))
            for task, names in (table or {}).items() if task in p.gated_tasks for name in names]


def _beats_baselines(c: Candidate, p: GatePolicy) -> Check:
    """Fused minus each required baseline, paired on the same patients: "beat" needs the CI's lower bound above 0,
    "not_worse" its upper bound at or above 0. A comparison not measured refuses."""
    problems, said, value = [], [], {}
    for task, name, kind in _requirements(p):
        d = (c.comparisons.get(task) or {}).get(name)
        v, lo, hi = (_num(d.get(k)) for k in ("value", "ci_low", "ci_high")) if d else (None, None, None)
        need = "ci_low > 0" if kind == "beat" else "ci_high >= 0"
        value.setdefault(task, {})[name] = {"value": v, "ci_low": lo, "ci_high": hi, "requires": need,
                                            **({"baseline": d["baseline"]} if d and d.get("baseline") else {})}
        if not d:
            problems.append(f"{task}: no comparison with {name} was measured")
        elif v is None or lo is None or hi is None:
            problems.append(f"{task}: the comparison with {name} was not measured ({d.get('skipped', 'no CI')})")
        else:
            which = f" ({d['baseline']})" if d.get("baseline") not in (None, name) else ""
            text = f"{task} {d.get('metric') or 'metric'}: fused - {name}{which} {v:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            if kind == "beat" and lo <= 0:
                problems.append(f"{text}: {'worse than' if hi < 0 else 'not better than'} {name}")
            elif kind == "not_worse" and hi < 0:
                problems.append(f"{text}: worse than {name}")
            else:
                said.append(f"{text} ({'better than' if lo > 0 else 'not worse than'} {name})")
    if problems:
        return False, f"The fused model does not beat its baselines on the same patients: {'; '.join(problems)}.", \
            value
    return True, "; ".join(said) or "no baseline required", value


def _exceptions(p: GatePolicy) -> Check:
    """Exceptions name an exceptable rule and carry a reason; one that does not refuses (and does not apply)."""
    declared = dict(p.exceptions or {})
    problems = []
    for rule, reason in declared.items():
        if rule not in EXCEPTABLE:
            problems.append(f"{rule!r} is not a rule that can be excepted ({', '.join(EXCEPTABLE)})")
        elif not isinstance(reason, str) or not reason.strip():
            problems.append(f"the exception for {rule} gives no reason")
    if problems:
        return False, f"Invalid promote.exceptions: {'; '.join(problems)}.", declared
    if not declared:
        return True, "no exceptions declared", declared
    return True, "exceptions declared: " + "; ".join(f"{r} ({why})" for r, why in declared.items()), declared


def _subgroup_gap(c: Candidate, p: GatePolicy) -> Check:
    gaps: dict[str, dict] = {}  # family -> {gap, ci_low, ci_high}: the value recorded
    if p.subgroup_gap_rule not in ("significant", "point", "report"):
        return False, f"Unknown subgroup_gap_rule {p.subgroup_gap_rule!r} (significant, point or report).", gaps
    if not c.subgroup_metrics and p.subgroup_gap_rule != "report":
        return False, f"No subgroup metrics were reported for {p.primary_metric}, so fairness gaps are unknown.", gaps
    wide, summary = [], []
    for family, groups in sorted(c.subgroup_metrics.items()):
        values = {g: _estimate(v) for g, v in groups.items()}
        values = {g: v for g, v in values.items() if v[0] == v[0]}  # NaN: not measured
        if len(values) < 2:
            summary.append(f"{family}: fewer than two groups")
            continue
        hi, lo = max(values, key=lambda g: values[g][0]), min(values, key=lambda g: values[g][0])
        gap, interval = values[hi][0] - values[lo][0], _gap_interval(values[hi], values[lo])
        gaps[family] = {"gap": round(gap, 4), "ci_low": round(interval[0], 4) if interval else None,
                        "ci_high": round(interval[1], 4) if interval else None}
        said = f"{family} gap {gap:.3f} ({hi} {values[hi][0]:.3f} vs {lo} {values[lo][0]:.3f})"
        said += f", 95% CI [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
        if gap <= p.max_subgroup_gap or p.subgroup_gap_rule == "report":
            summary.append(f"{family} gap {gap:.3f}" if gap <= p.max_subgroup_gap else f"{said}: over the maximum")
        elif p.subgroup_gap_rule == "significant" and interval and interval[0] <= 0:
            summary.append(f"{said}: over {p.max_subgroup_gap:.3f} but not distinguishable from no gap "
                           "(too few patients per group to tell)")
        else:
            wide.append(said)
    if wide:
        joined = "; ".join(wide)
        return False, f"Subgroup {p.primary_metric} gaps exceed the maximum {p.max_subgroup_gap:.3f}: {joined}.", \
            gaps
    if p.subgroup_gap_rule == "report":
        return True, f"subgroup_gap_rule report (gaps do not refuse): {'; '.join(summary) or 'no subgroups'}", gaps
    if all(s.endswith("fewer than two groups") for s in summary):  # nothing compared: the gap is unknown
        return False, (f"No subgroup family has two groups large enough to measure {p.primary_metric} "
                       f"({'; '.join(summary)}), so fairness gaps are unknown: evaluate on a larger test split "
                       "or lower evaluate.min_group."), gaps
    return True, "; ".join(summary), gaps


Z95 = 1.959964


def _estimate(v: Any) -> tuple[float, float | None, float | None]:
    """(value, ci_low, ci_high) from a bare number or an evaluation entry; NaN value when unmeasured."""
    if isinstance(v, Mapping):
        lo, hi = v.get("ci_low"), v.get("ci_high")
        value = v.get("value")
        return (float("nan") if value is None else float(value),
                None if lo is None else float(lo), None if hi is None else float(hi))
    return (float("nan") if v is None else float(v)), None, None


def _gap_interval(a: tuple, b: tuple) -> tuple[float, float] | None:
    """95% interval of a - b for two independent groups, each group's standard error read off its bootstrap CI
    (half-width / 1.96); None when either group has no CI."""
    if None in (a[1], a[2], b[1], b[2]):
        return None
    se = ((a[2] - a[1]) ** 2 + (b[2] - b[1]) ** 2) ** 0.5 / (2 * Z95)
    gap = a[0] - b[0]
    return gap - Z95 * se, gap + Z95 * se


def _contracts(c: Candidate) -> Check:
    if c.contracts_passed is None:
        return False, "Whether the dataset's fail-severity data contracts passed is unknown; it must be recorded.", \
            None
    if not c.contracts_passed:
        return False, "At least one fail-severity data contract failed on the candidate's dataset.", False
    return True, "all fail-severity contracts passed", True


def _phi(c: Candidate) -> Check:
    if c.phi_findings:
        kinds = sorted({str(getattr(f, "kind", "unknown")) for f in c.phi_findings})
        return False, (f"The PHI scan found {len(c.phi_findings)} possible identifier(s) in the artifacts "
                       f"(kinds: {', '.join(kinds)})."), len(c.phi_findings)
    return True, "no PHI findings", 0


def _integrity(c: Candidate) -> Check:
    if c.artifact_integrity_ok is None:
        return False, "Artifact integrity was not verified against the sha256 manifest.", None
    if not c.artifact_integrity_ok:
        return False, "The artifacts do not match their sha256 manifest.", False
    return True, "artifacts match their sha256 manifest", True


def _primary(c: Candidate, p: GatePolicy) -> float | None:
    value = c.metrics.get(p.primary_metric)
    return None if value is None else float(value)

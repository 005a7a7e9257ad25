"""The promotion gate: open-source MLflow has no approval workflow, so this decides whether a candidate may take
the champion alias.

Pure: the caller gathers the facts (metrics, lineage, contract results, PHI scan, artifact hashes) into a
`Candidate`; `evaluate_gate` only judges them. Every rule is always evaluated, so one refusal lists every reason
and the reviewer does not fix problems one at a time. Unknown facts (None) refuse: a gate that passes what it
was not told is no gate.
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
    checks: list[dict[str, Any]]  # {"rule", "passed", "detail"} for every rule, in order


Check = tuple[bool, str]


def evaluate_gate(candidate: Candidate, champion: Candidate | None, policy: GatePolicy) -> GateDecision:
    """Judge `candidate` against every rule; approved only if all pass."""
    rules: list[tuple[str, Callable[[], Check]]] = [
        ("evaluated_on_required_split", lambda: _split_rule(candidate, policy)),
        ("primary_metric_present", lambda: _metric_present(candidate, policy)),
        ("beats_champion", lambda: _beats_champion(candidate, champion, policy)),
        ("subgroup_gap", lambda: _subgroup_gap(candidate, policy)),
        ("contracts_passed", lambda: _contracts(candidate)),
        ("no_phi_findings", lambda: _phi(candidate)),
        ("artifact_integrity", lambda: _integrity(candidate)),
    ]
    checks = []
    for rule, judge in rules:
        passed, detail = judge()
        checks.append({"rule": rule, "passed": passed, "detail": detail})
    reasons = [c["detail"] for c in checks if not c["passed"]]
    return GateDecision(approved=not reasons, reasons=reasons, checks=checks)


def _split_rule(c: Candidate, p: GatePolicy) -> Check:
    problems = []
    if c.evaluated_split != p.required_split:
        problems.append(f"it was evaluated on split {c.evaluated_split!r}, not the required {p.required_split!r}")
    if c.evaluated_dataset_version is None or c.trained_dataset_version is None:
        problems.append("its evaluated or trained dataset version is unknown")
    elif c.evaluated_dataset_version != c.trained_dataset_version:
        problems.append(f"it was evaluated on dataset version {c.evaluated_dataset_version!r} but trained on "
                        f"{c.trained_dataset_version!r}")
    if problems:
        joined = "; ".join(problems)
        return False, f"{c.name} v{c.version} is not evaluated on its own {p.required_split} split: {joined}."
    return True, f"evaluated on the {p.required_split} split of dataset version {c.evaluated_dataset_version}"


def _metric_present(c: Candidate, p: GatePolicy) -> Check:
    if _primary(c, p) is None:
        return False, f"The primary metric {p.primary_metric} is missing from {c.name} v{c.version}'s metrics."
    return True, f"{p.primary_metric} = {_primary(c, p):.3f}"


def _beats_champion(c: Candidate, champion: Candidate | None, p: GatePolicy) -> Check:
    if champion is None:
        return True, "no current champion"
    mine, theirs, m = _primary(c, p), _primary(champion, p), p.primary_metric
    if mine is None:
        return False, f"{m} of the candidate is missing, so it cannot be compared with the champion."
    if theirs is None:
        return False, f"The champion {champion.name} v{champion.version} has no {m} to compare with."
    if p.higher_is_better:
        ok, side, sign = mine >= theirs - p.tolerance, "below", "minus"
    else:
        ok, side, sign = mine <= theirs + p.tolerance, "above", "plus"
    if ok:
        return True, f"{m} {mine:.3f} vs champion's {theirs:.3f} (tolerance {p.tolerance:.3f})"
    return False, f"{m} {mine:.3f} is {side} the champion's {theirs:.3f} {sign} tolerance {p.tolerance:.3f}."


def _subgroup_gap(c: Candidate, p: GatePolicy) -> Check:
    if p.subgroup_gap_rule not in ("significant", "point", "report"):
        return False, f"Unknown subgroup_gap_rule {p.subgroup_gap_rule!r} (significant, point or report)."
    if not c.subgroup_metrics and p.subgroup_gap_rule != "report":
        return False, f"No subgroup metrics were reported for {p.primary_metric}, so fairness gaps are unknown."
    wide, summary = [], []
    for family, groups in sorted(c.subgroup_metrics.items()):
        values = {g: _estimate(v) for g, v in groups.items()}
        values = {g: v for g, v in values.items() if v[0] == v[0]}  # NaN: not measured
        if len(values) < 2:
            summary.append(f"{family}: fewer than two groups")
            continue
        hi, lo = max(values, key=lambda g: values[g][0]), min(values, key=lambda g: values[g][0])
        gap, interval = values[hi][0] - values[lo][0], _gap_interval(values[hi], values[lo])
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
        return False, f"Subgroup {p.primary_metric} gaps exceed the maximum {p.max_subgroup_gap:.3f}: {joined}."
    if p.subgroup_gap_rule == "report":
        return True, f"subgroup_gap_rule report (gaps do not refuse): {'; '.join(summary) or 'no subgroups'}"
    if all(s.endswith("fewer than two groups") for s in summary):  # nothing compared: the gap is unknown
        return False, (f"No subgroup family has two groups large enough to measure {p.primary_metric} "
                       f"({'; '.join(summary)}), so fairness gaps are unknown: evaluate on a larger test split "
                       "or lower evaluate.min_group.")
    return True, "; ".join(summary)


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
        return False, "Whether the dataset's fail-severity data contracts passed is unknown; it must be recorded."
    if not c.contracts_passed:
        return False, "At least one fail-severity data contract failed on the candidate's dataset."
    return True, "all fail-severity contracts passed"


def _phi(c: Candidate) -> Check:
    if c.phi_findings:
        kinds = sorted({str(getattr(f, "kind", "unknown")) for f in c.phi_findings})
        return False, (f"The PHI scan found {len(c.phi_findings)} possible identifier(s) in the artifacts "
                       f"(kinds: {', '.join(kinds)}).")
    return True, "no PHI findings"


def _integrity(c: Candidate) -> Check:
    if c.artifact_integrity_ok is None:
        return False, "Artifact integrity was not verified against the sha256 manifest."
    if not c.artifact_integrity_ok:
        return False, "The artifacts do not match their sha256 manifest."
    return True, "artifacts match their sha256 manifest"


def _primary(c: Candidate, p: GatePolicy) -> float | None:
    value = c.metrics.get(p.primary_metric)
    return None if value is None else float(value)

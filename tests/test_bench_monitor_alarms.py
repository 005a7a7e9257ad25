"""bench/monitor_alarms.py: the intervals are exact (Clopper-Pearson) and the counts keep false alarms, detection and
localisation apart. The end-to-end run is not tested here: one seed is two full monitor runs (ingest, validate,
scoring, drift; ~100 s each on the demo workspace) and the session fixture `trained_workspace` has no registered
model, so a --seeds 1 test would not fit the 60 s budget; the figures come from running the bench (its docstring)."""

from __future__ import annotations

import pytest

from bench.monitor_alarms import figures, is_false_alarm, rate


def test_rate_is_clopper_pearson():
    none = rate(0, 20)  # k = 0: the upper bound solves (1 - p)^n = 0.025
    assert none["rate"] == 0.0 and none["ci95"][0] == 0.0
    assert none["ci95"][1] == pytest.approx(1 - 0.025 ** (1 / 20), abs=1e-4)
    some = rate(3, 20)
    assert some["ci95"][0] < 0.15 < some["ci95"][1]
    assert rate(0, 0)["rate"] is None


def _row(kind, flagged, families=(), status=None):
    fam = {f: {"drifted": f in families, "sites": sorted(flagged) if f in families else []}
           for f in ("tabular", "predictions", "embedding", "performance")}
    return {"kind": kind, "seed": 0, "seconds": 1.0, "status": status or ("drift" if families else "ok"),
            "flagged_sites": sorted(flagged), "families": fam, "detected": "site-b" in flagged,
            "localised": set(flagged) == {"site-b"}, "culprits": [f"{f}:x" for f in families]}


def test_figures_count_false_alarms_detection_and_localisation_separately():
    rows = [_row("same", []), _row("same", ["site-a"], ["embedding"]),
            _row("shifted", ["site-b"], ["tabular"]), _row("shifted", ["site-a", "site-b"], ["tabular"]),
            _row("shifted", [])]
    out = figures(rows, "site-b")
    assert (out["false_alarm_sites"]["k"], out["false_alarm_sites"]["n"]) == (1, 2)
    assert out["false_alarm_by_family"]["embedding"]["k"] == 1 and out["false_alarm_by_family"]["tabular"]["k"] == 0
    assert (out["detection"]["k"], out["detection"]["n"]) == (2, 3)
    assert out["localisation"]["k"] == 1
    assert out["shifted_other_sites_flagged"] == {"site-a": 1}
    assert out["false_alarm_culprits"] == {"embedding:x": 1}


def test_a_performance_only_drift_is_a_false_alarm_though_no_site_is_flagged():
    """Issue 19: a same-distribution extract reported "drift" by the performance rule alone flags no site; the bench
    counts it. An "insufficient" run is counted apart, not as an alarm."""
    performance_only = _row("same", [], ["performance"])
    rows = [performance_only, _row("same", []), _row("same", [], status="insufficient"),
            _row("same", ["site-a"], ["tabular"])]
    assert is_false_alarm(performance_only) and not is_false_alarm(rows[2])
    out = figures(rows, "site-b")
    assert (out["false_alarm"]["k"], out["false_alarm"]["n"]) == (2, 4)
    assert out["false_alarm_sites"]["k"] == 1  # the old count missed the performance-only drift
    assert out["false_alarm_by_family"]["performance"]["k"] == 1
    assert (out["insufficient"]["k"], out["insufficient"]["n"]) == (1, 4)
    assert out["false_alarm_target"] == 0.05 and out["false_alarm_rate_within_target"] is False
    assert out["false_alarm_culprits"] == {"performance:x": 1, "tabular:x": 1}


def test_the_target_is_met_only_when_the_interval_says_so():
    few = figures([_row("same", []) for _ in range(20)], "site-b")  # 0/20: upper bound 16.8%
    assert few["false_alarm_rate_within_target"] is True and few["false_alarm_ci_within_target"] is False
    many = figures([_row("same", []) for _ in range(80)], "site-b")  # 0/80: upper bound 4.5%
    assert many["false_alarm_ci_within_target"] is True

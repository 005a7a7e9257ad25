"""Metrics against hand-computed and sklearn values; bootstrap and subgroup behaviour."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tasks.evaluation.metrics import (
    average_precision,
    binary_metrics,
    bootstrap_ci,
    by_group,
    c_index,
    classification_metrics,
    expected_calibration_error,
    max_gap,
    metrics_with_ci,
    roc_auc,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture()
def multiclass():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 60)
    z = rng.normal(size=(60, 4))  # class 3 never occurs: excluded from the macro averages
    z[np.arange(60), y] += 1.0
    return y, _softmax(z)


def test_classification_metrics_match_sklearn(multiclass):
    y, probs = multiclass
    y_unl = np.r_[y, -1, -1]
    probs_unl = np.r_[probs, np.full((2, 4), 0.25)]
    out = classification_metrics(y_unl, probs_unl)
    assert out["n"] == 60 and out["n_unlabelled"] == 2
    assert out["auroc_macro"] == pytest.approx(np.mean([roc_auc_score(y == c, probs[:, c]) for c in range(3)]))
    assert out["auprc_macro"] == pytest.approx(np.mean([average_precision_score(y == c, probs[:, c])
                                                        for c in range(3)]))
    assert out["accuracy"] == pytest.approx((probs.argmax(1) == y).mean())


@pytest.mark.parametrize("ties", [False, True])
def test_fast_auroc_and_ap_equal_sklearn(ties):
    rng = np.random.default_rng(2)
    for _ in range(30):
        n = int(rng.integers(3, 40))
        y = np.r_[0, 1, rng.integers(0, 2, n - 2)]
        s = rng.integers(0, 4, n) / 3 if ties else rng.random(n)
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s))
    assert np.isnan(roc_auc(np.ones(5), rng.random(5)))


def test_brier_and_ece_exact_on_tiny_example():
    y = np.array([0, 1])
    probs = np.array([[0.8, 0.2], [0.4, 0.6]])
    out = classification_metrics(y, probs)
    assert out["brier"] == pytest.approx(((0.2**2 + 0.2**2) + (0.4**2 + 0.4**2)) / 2)  # 0.2
    # confidences 0.8 (bin (0.733, 0.8]) and 0.6 (bin (0.533, 0.6]), both correct: gaps 0.2 and 0.4
    assert out["ece"] == pytest.approx((0.2 + 0.4) / 2)
    b = binary_metrics(np.array([0.0, 1.0, np.nan]), np.array([0.2, 0.6, 0.9]))
    assert b["brier"] == pytest.approx((0.2**2 + 0.4**2) / 2)
    assert b["n"] == 2 and b["prevalence"] == 0.5 and b["auroc"] == 1.0


def test_ece_small_when_calibrated_large_when_overconfident():
    rng = np.random.default_rng(3)
    p = rng.random(20_000)
    y = (rng.random(20_000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.02
    y_over = (rng.random(20_000) < 0.7).astype(int)
    assert expected_calibration_error(y_over, np.full(20_000, 0.99)) == pytest.approx(0.29, abs=0.02)


def test_c_index_hand_example_perfect_and_random():
    time, event = np.array([1.0, 2, 3, 4]), np.array([1, 1, 0, 1])
    # comparable pairs (i had the event first): (0,1) (0,2) (0,3) (1,2) (1,3); concordant: the three with i = 0
    assert c_index(time, event, np.array([4.0, 1, 3, 2])) == pytest.approx(3 / 5)
    rng = np.random.default_rng(4)
    t = rng.exponential(size=300)
    e = rng.random(300) < 0.7
    assert c_index(t, e, -t) == 1.0
    assert c_index(t, e, rng.random(300)) == pytest.approx(0.5, abs=0.08)
    with pytest.raises(ValueError):
        c_index(t, np.zeros(300, bool), -t)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")  # one-class resamples, by design
def test_bootstrap_ci_deterministic_contains_value_and_skips_one_class():
    rng = np.random.default_rng(5)
    y = (rng.random(80) < 0.4).astype(int)
    p = np.clip(0.3 * y + 0.7 * rng.random(80), 0, 1)
    a = bootstrap_ci(roc_auc_score, y, p, n_boot=60, seed=7)
    assert a == bootstrap_ci(roc_auc_score, y, p, n_boot=60, seed=7)
    assert a != bootstrap_ci(roc_auc_score, y, p, n_boot=60, seed=8)
    assert a["ci_low"] <= a["value"] <= a["ci_high"] and a["n_boot_used"] == 60
    rare = np.zeros(12, int)
    rare[0] = 1  # most resamples miss the single positive: the metric is NaN (or raises ValueError) there
    for metric in (roc_auc_score, roc_auc):
        r = bootstrap_ci(metric, rare, rng.random(12), n_boot=50, seed=0)
        assert 0 < r["n_boot_used"] < 50


def test_metrics_with_ci_shares_indices_and_clusters_keep_patients_together():
    rng = np.random.default_rng(6)
    y = (rng.random(50) < 0.5).astype(float)
    p = np.clip(0.4 * y + 0.6 * rng.random(50), 0, 1)
    res = metrics_with_ci("binary", y, p, n_boot=40, seed=3)
    assert set(res) == {"auroc", "auprc", "ece", "brier"}
    assert res["auroc"] == bootstrap_ci(roc_auc, y, p, n_boot=40, seed=3)  # same resamples as the single metric
    # two identical rows per patient, resampled by patient: the same CI as one row per patient
    dup = metrics_with_ci("binary", np.repeat(y, 2), np.repeat(p, 2), n_boot=40, seed=3,
                          cluster=np.repeat(np.arange(50), 2))
    assert dup["auroc"] == pytest.approx(res["auroc"])


@pytest.mark.parametrize("kind,arrays,keys", [
    ("multiclass", lambda r: (r.integers(0, 3, 40), _softmax(r.normal(size=(40, 3)))),
     {"auroc_macro", "auprc_macro", "ece", "brier"}),
    ("survival", lambda r: (r.exponential(size=40), r.random(40) < 0.6, r.normal(size=40)), {"c_index"}),
])
def test_metrics_with_ci_kinds(kind, arrays, keys):
    res = metrics_with_ci(kind, *arrays(np.random.default_rng(0)), n_boot=20)
    assert set(res) == keys
    assert all(v["ci_low"] <= v["ci_high"] for v in res.values())


def test_metrics_with_ci_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown kind"):
        metrics_with_ci("regression", np.zeros(3), np.zeros(3))


def test_by_group_reports_skipped_groups_and_max_gap():
    rng = np.random.default_rng(7)
    groups = ["a"] * 40 + ["b"] * 40 + ["c"] * 25 + ["d"] * 5 + [None] * 3
    y = (rng.random(113) < 0.5).astype(float)
    y[80:105] = 0  # group c: one class only
    p = np.clip(0.4 * y + 0.6 * rng.random(113), 0, 1)
    out = by_group(groups, "binary", y, p, min_n=20, n_boot=20)
    assert set(out) == {"a", "b", "c", "d", "unknown"}
    assert out["c"] == {"n": 25, "skipped": "single class (0)"}
    assert out["d"]["skipped"] == "n=5 < min_n=20" and out["unknown"]["n"] == 3
    assert out["a"]["n"] == 40 and {"auroc", "ece"} <= set(out["a"])
    assert max_gap(out, "auroc") == pytest.approx(abs(out["a"]["auroc"]["value"] - out["b"]["auroc"]["value"]))
    assert max_gap({"a": out["a"], "c": out["c"]}, "auroc") is None

"""The performance rule judges the AUROC drop against its uncertainty: an extract from the evaluation's own
distribution whose point estimate fell by more than the tolerance is not drift (issue 19: 0.684 -> 0.563 on 52 vs
150 patients alarmed), a truly degraded model is, and too few outcomes are "insufficient", never "no drift"."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.monitoring.performance import auroc_drop_test, bootstrap_macro_auroc, macro_auroc

CLASSES = 3


def draw(n: int, signal: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n patients of a 3-class diagnosis scored by a model of the given signal (0: chance; 0.6: AUROC ~0.70)."""
    y = rng.integers(0, CLASSES, n)
    logits = signal * np.eye(CLASSES)[y] + rng.normal(size=(n, CLASSES))
    probs = np.exp(logits)
    return y, probs / probs.sum(1, keepdims=True)


def test_bootstrap_matches_rescoring_each_resample():
    y, probs = draw(40, 0.8, np.random.default_rng(3))
    fast = bootstrap_macro_auroc(y, probs, [0, 1, 2], 5, np.random.default_rng(9), chunk=2)
    rng, slow = np.random.default_rng(9), []
    for b in (2, 2, 1):  # the same draws, chunk by chunk
        slow += [macro_auroc(y[rows], probs[rows], [0, 1, 2]) for rows in rng.integers(0, 40, (b, 40))]
    assert fast == pytest.approx(np.array(slow), abs=1e-6)


def test_a_same_distribution_drop_beyond_the_tolerance_is_not_drift():
    """The issue's situation: 52 reference test patients, 150 new ones, same model and distribution. Some seeds give a
    point-estimate drop above 0.1 (the old rule alarmed on those); none is credibly above it."""
    results = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        (yr, pr), (yc, pc) = draw(52, 0.6, rng), draw(150, 0.6, rng)
        results.append(auroc_drop_test(yr, pr, yc, pc, tolerance=0.1, n_boot=1000, seed=seed))
    beyond = [r for r in results if r["drop"] > 0.1]
    assert beyond, "no seed reproduces a point-estimate drop above the tolerance"
    for r in beyond:
        assert r["status"] == "measured" and r["drifted"] is False
        assert r["drop_lower"] <= 0.1 < r["drop"] and r["within_tolerance"] is False  # not evidence of no drop either
    assert sum(r["drifted"] for r in results) <= 2  # <= 5% of 40 same-distribution draws


def test_a_truly_degraded_model_is_drift():
    rng = np.random.default_rng(1)
    (yr, pr), (yc, pc) = draw(52, 1.6, rng), draw(150, 0.0, rng)  # ~0.95 at evaluation, chance now
    r = auroc_drop_test(yr, pr, yc, pc, tolerance=0.1)
    assert r["drifted"] is True and r["drop_lower"] > 0.1
    assert r["reference_auroc_macro"] > 0.85 and r["auroc_macro"] < 0.62
    assert r["drop_ci"][0] == r["drop_lower"] < r["drop"] < r["drop_ci"][1]


def test_labels_scrambled_against_the_scores_are_drift():
    """Same model, same patients' scores, outcomes no longer matching: the drop is measured from the labels."""
    rng = np.random.default_rng(2)
    (yr, pr), (yc, pc) = draw(60, 1.6, rng), draw(200, 1.6, rng)
    assert auroc_drop_test(yr, pr, yc, pc, tolerance=0.1)["drifted"] is False
    assert auroc_drop_test(yr, pr, rng.permutation(yc), pc, tolerance=0.1)["drifted"] is True


def test_too_few_or_no_outcomes_are_insufficient_with_the_reason():
    rng = np.random.default_rng(0)
    (yr, pr), (yc, pc) = draw(52, 0.6, rng), draw(150, 0.6, rng)
    none = auroc_drop_test(yr, pr, np.full(150, -1), pc, tolerance=0.1)
    assert none["status"] == "insufficient" and none["drifted"] is None and "no diagnosis outcomes" in none["reason"]
    few = auroc_drop_test(yr, pr, np.r_[yc[:12], np.full(138, -1)], pc, tolerance=0.1)
    assert few["status"] == "insufficient" and few["reason"].startswith("12 labelled patients in the extract")
    small_reference = auroc_drop_test(yr[:15], pr[:15], yc, pc, tolerance=0.1)
    assert small_reference["status"] == "insufficient" and "reference" in small_reference["reason"]

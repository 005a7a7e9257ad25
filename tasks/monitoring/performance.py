"""Performance drift: is the champion's AUROC on a labelled extract credibly lower than at evaluation, by more than
the tolerance?

Why a test and not two point estimates: the evaluation measured the champion on a few dozen test patients and a
monitored extract brings a few hundred at most, so each macro AUROC carries a 95% interval wider than the
tolerance (0.1). Compared as point estimates, an extract from the very same distribution "dropped" 0.121 and
alarmed (issue 19). Here the drop (reference - current) is bootstrapped: the evaluation's test patients and the
extract's patients are independent samples, so each bootstrap replicate resamples each side on its own (two-sample
percentile bootstrap); the macro AUROC is averaged over the same classes on both sides (those with positives and
negatives on both), and a replicate lacking one of them is skipped (counted) rather than averaged over other
classes.

Decision (one-sided, level alpha, default 5%): drift iff the lower bound of the one-sided (1 - alpha) interval of
the drop exceeds the tolerance, i.e. the data reject "the drop is at most the tolerance". On an extract from the
training distribution (true drop 0) that alarms far less often than alpha; on a truly degraded model it alarms
once the drop minus its uncertainty clears the tolerance. The report also says when the interval still reaches
above the tolerance (`within_tolerance: false`): not an alarm, but no evidence that performance held either.

Reference scores: the evaluation stage saves metrics, not per-patient predictions (models/evaluation/evaluation.json
holds values and CIs only), so the reference is rescored here: the same hash-verified champion on the workspace's
curated test split, the patients the evaluation measured. `reference_matches_evaluation` says whether the rescored
AUROC equals the stored one (it does unless the curated data changed since the evaluation).
"""

from __future__ import annotations

import numpy as np

from tasks.evaluation.metrics import roc_auc

MIN_LABELLED = 20  # fewer labelled patients on either side: untested (insufficient), never "no drift"
N_BOOT = 2000


def _labelled(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(float)
    keep = np.isfinite(y) & (y >= 0)
    return y[keep].astype(int), np.asarray(probs, dtype=float)[keep]


def _classes(y: np.ndarray, n_classes: int) -> set[int]:
    counts = np.bincount(y, minlength=n_classes)
    return {c for c in range(n_classes) if 0 < counts[c] < len(y)}


def macro_auroc(y: np.ndarray, probs: np.ndarray, classes: list[int]) -> float:
    """One-vs-rest AUROC averaged over `classes`; NaN when a class has no positive or no negative in `y`."""
    scores = [roc_auc(y == c, probs[:, c]) for c in classes]
    return float(np.mean(scores)) if scores else float("nan")


def bootstrap_macro_auroc(y: np.ndarray, probs: np.ndarray, classes: list[int], n_boot: int,
                          rng: np.random.Generator, chunk: int = 250) -> np.ndarray:
    """Macro AUROC of `n_boot` resamples (with replacement) of the rows; NaN where a resample lacks a class.

    A resample is a vector of row counts w, and its AUROC for class c is w_pos' H w_neg / (sum w_pos sum w_neg), H the
    pairwise win matrix (1 if a positive outscores a negative, 1/2 on ties) of the full sample: exact, and one matrix
    product per chunk of replicates instead of a ranking per replicate (~100x faster)."""
    n = len(y)
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, (b, n)) + n * np.arange(b)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float32)
        per_class = []
        for c in classes:
            pos = y == c
            sp, sn = probs[pos, c], probs[~pos, c]
            wins = (sp[:, None] > sn[None, :]).astype(np.float32) + 0.5 * (sp[:, None] == sn[None, :])
            wp, wn = counts[:, pos], counts[:, ~pos]
            den = wp.sum(1) * wn.sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                per_class.append(np.where(den > 0, ((wp @ wins) * wn).sum(1) / den, np.nan))
        out[start:start + b] = np.mean(per_class, axis=0)  # NaN if any class is missing from the resample
    return out


def auroc_drop_test(ref_labels, ref_probs, cur_labels, cur_probs, tolerance: float, alpha: float = 0.05,
                    n_boot: int = N_BOOT, seed: int = 0, min_labelled: int = MIN_LABELLED) -> dict:
    """Two-sample bootstrap test of drop = AUROC(reference) - AUROC(current) against `tolerance`.

    Labels < 0 (or NaN) are unlabelled and ignored. Returns a JSON-serialisable dict: status ("measured" or
    "insufficient" with a reason), the two AUROCs, drop, its one-sided lower bound and two-sided (1 - 2 alpha)
    interval, drifted (lower bound > tolerance), within_tolerance (upper bound <= tolerance).
    """
    yr, pr = _labelled(ref_labels, ref_probs)
    yc, pc = _labelled(cur_labels, cur_probs)
    base = {"test": "two-sample percentile bootstrap of the macro AUROC drop", "tolerance": tolerance,
            "alpha": alpha, "labelled": int(len(yc)), "reference_labelled": int(len(yr)), "min_labelled": min_labelled,
            "drifted": None}
    if len(yc) == 0:
        return {**base, "status": "insufficient", "reason": "the extract carries no diagnosis outcomes (labels)"}
    if len(yc) < min_labelled or len(yr) < min_labelled:
        side = "extract" if len(yc) < min_labelled else "reference (evaluation test split)"
        n = len(yc) if len(yc) < min_labelled else len(yr)
        return {**base, "status": "insufficient",
                "reason": f"{n} labelled patients in the {side}, fewer than the minimum {min_labelled}"}
    classes = sorted(_classes(yr, pr.shape[1]) & _classes(yc, pc.shape[1]))
    if not classes:
        return {**base, "status": "insufficient",
                "reason": "no diagnosis class has both positives and negatives on both sides"}
    ref_auc, cur_auc = macro_auroc(yr, pr, classes), macro_auroc(yc, pc, classes)
    rng = np.random.default_rng(seed)
    drops = bootstrap_macro_auroc(yr, pr, classes, n_boot, rng) - bootstrap_macro_auroc(yc, pc, classes, n_boot, rng)
    used = drops[np.isfinite(drops)]
    if len(used) < n_boot // 2:
        return {**base, "status": "insufficient", "reason": f"only {len(used)} of {n_boot} bootstrap replicates "
                "had every class on both sides"}
    drop = ref_auc - cur_auc
    lower, upper = (float(q) for q in np.quantile(used, [alpha, 1 - alpha]))
    return {**base, "status": "measured", "auroc_macro": round(cur_auc, 4), "reference_auroc_macro": round(ref_auc, 4),
            "classes": classes, "drop": round(drop, 4), "drop_lower": round(lower, 4),
            "drop_ci": [round(lower, 4), round(upper, 4)], "ci_level": 1 - 2 * alpha,
            "n_boot": n_boot, "replicates_used": int(len(used)),
            "drifted": bool(lower > tolerance), "within_tolerance": bool(upper <= tolerance),
            "decision": f"drift iff the one-sided {1 - alpha:.0%} lower bound of the drop ({lower:.3f}) "
                        f"> tolerance ({tolerance})"}


def performance_drift(evaluation: dict, reference, ref_preds: dict, current, cur_preds: dict, p: dict) -> dict:
    """The monitor's performance rule for the diagnosis task: the evaluation's test patients (rescored, within
    `reference`) against the extract's labelled patients. Keeps the keys the old point-estimate rule wrote
    (status, labelled, auroc_macro, at_evaluation, drop, tolerance, drifted) and adds the interval."""
    tolerance = float(p["performance_tolerance"])
    stored = evaluation["tasks"]["diagnosis"]["metrics"]["auroc_macro"]["value"]
    split = evaluation.get("split", "test")
    test = np.array([s == split for s in reference.meta["split"]], dtype=bool)
    result = auroc_drop_test(reference.tensors["label"].numpy()[test], ref_preds["class_probs"][test],
                             current.tensors["label"].numpy(), cur_preds["class_probs"], tolerance,
                             alpha=float(p.get("performance_alpha", 0.05)),
                             n_boot=int(p.get("performance_n_boot", N_BOOT)))
    result["at_evaluation"] = stored
    if result["status"] == "measured":
        result["reference_matches_evaluation"] = stored is not None and abs(
            result["reference_auroc_macro"] - stored) < 1e-3
    return result

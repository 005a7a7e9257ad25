"""Drift of backbone embeddings per modality and site: kernel two-sample tests with a family-wise error guarantee.

Why these choices:
- Per-dimension tests on a 512-d embedding would need a 512-fold correction and still miss a shift that lives in a
  direction across dimensions. MMD with an RBF kernel compares whole distributions; the permutation test gives an
  exact-level p-value without distributional assumptions.
- The bandwidth (median pairwise distance of the pooled sample) does not depend on which side a row came from, so
  it is fixed across permutations and the test keeps its level.
- Each side is subsampled to <= max_rows (default 1000) rows: the kernel matrix is O((n+m)^2) in memory and time.
- Bonferroni across every (modality, site) test and the per-modality overall tests. A permutation p-value cannot be
  smaller than 1 / (n_permutations + 1), so n_permutations is raised when needed to make alpha / family reachable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import mannwhitneyu
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

UNKNOWN_SITE = "unknown"


def _subsample(x: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if len(x) <= max_rows:
        return x
    return x[np.sort(rng.choice(len(x), size=max_rows, replace=False))]


def mmd_test(ref: np.ndarray, cur: np.ndarray, n_permutations: int = 200, seed: int = 0,
             max_rows: int = 1000) -> dict:
    """Unbiased MMD^2 with an RBF kernel and a permutation p-value; deterministic for a seed.

    Args:
        ref: (N, D) reference embeddings; cur: (M, D) current embeddings (N, M >= 2 after dropping non-finite rows).
    """
    rng = np.random.default_rng(seed)
    x, y = (_finite_rows(a) for a in (ref, cur))
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"mmd_test needs >= 2 finite rows per side, got {len(x)} and {len(y)}")
    x, y = _subsample(x, max_rows, rng), _subsample(y, max_rows, rng)
    n, m = len(x), len(y)
    z = np.vstack([x, y])  # (n+m, D)
    sq = np.einsum("ij,ij->i", z, z)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)  # (n+m, n+m) squared distances
    median = float(np.median(np.sqrt(d2[np.triu_indices(n + m, k=1)])))
    bandwidth = median if median > 0 else 1.0
    k = np.exp(-d2 / (2.0 * bandwidth**2))
    labels = np.zeros((n + m, n_permutations + 1))  # column 0: the observed split, then the permutations
    labels[:n, 0] = 1.0
    for j in range(1, n_permutations + 1):
        labels[rng.permutation(n + m)[:n], j] = 1.0
    stats = _mmd2_unbiased(k, labels, n, m)
    observed = float(stats[0])
    p_value = float((1 + np.sum(stats[1:] >= observed)) / (n_permutations + 1))
    return {"test": "mmd_rbf_permutation", "statistic": observed, "p_value": p_value, "bandwidth": bandwidth,
            "n_ref": n, "n_cur": m, "n_permutations": n_permutations}


def _finite_rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a[np.isfinite(a).all(axis=1)] if a.ndim == 2 and len(a) else a.reshape(0, 0)


def _mmd2_unbiased(k: np.ndarray, labels: np.ndarray, n: int, m: int) -> np.ndarray:
    """MMD^2_u for every labelling column at once. labels: (n+m, P) with n ones (side X) per column; diag(k) = 1."""
    kl = k @ labels  # (n+m, P)
    xx = np.einsum("ip,ip->p", labels, kl)  # sum over X x X, diagonal included
    row = k.sum(axis=1)
    xy = labels.T @ row - xx  # sum over X x Y
    yy = k.sum() - xx - 2.0 * xy  # sum over Y x Y: the total is xx + 2 xy + yy
    return (xx - n) / (n * (n - 1)) + (yy - m) / (m * (m - 1)) - 2.0 * xy / (n * m)


def classifier_two_sample_test(ref: np.ndarray, cur: np.ndarray, seed: int = 0, max_rows: int = 1000,
                               n_splits: int = 5) -> dict:
    """Can a logistic regression tell current from reference? Out-of-fold AUROC, one-sided Mann-Whitney p-value.

    The p-value is the rank test of the out-of-fold scores of current rows against reference rows (AUROC = U / nm);
    out-of-fold scores are nearly independent of their own labels, and cross-validated AUROC under no drift sits
    slightly below 0.5, so the test errs on the side of not alarming. Useful when a shift is linear but spread thin.
    """
    rng = np.random.default_rng(seed)
    x, y = (_subsample(_finite_rows(a), max_rows, rng) for a in (ref, cur))
    if min(len(x), len(y)) < n_splits:
        raise ValueError(f"classifier_two_sample_test needs >= {n_splits} rows per side, got {len(x)} and {len(y)}")
    features = np.vstack([x, y])
    target = np.r_[np.zeros(len(x)), np.ones(len(y))]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, features, target, cv=folds, method="decision_function")
    auroc = float(roc_auc_score(target, scores))
    p_value = float(mannwhitneyu(scores[target == 1], scores[target == 0], alternative="greater").pvalue)
    return {"test": "classifier_logreg_cv_auroc", "statistic": auroc, "p_value": p_value,
            "n_ref": len(x), "n_cur": len(y)}


def embedding_drift(ref_embeddings: Mapping[str, np.ndarray], cur_embeddings: Mapping[str, np.ndarray],
                    cur_sites: Mapping[str, Sequence[str]] | Sequence[str] | None = None, alpha: float = 0.05,
                    n_permutations: int = 200, seed: int = 0, min_rows: int = 30, max_rows: int = 1000,
                    ref_sites: Mapping[str, Sequence[str]] | None = None, min_ref_rows: int = 20) -> dict:
    """MMD tests per modality (all current rows, then each site vs the whole reference), Bonferroni-corrected.

    Args:
        ref_embeddings / cur_embeddings: modality -> (N, D) / (M, D) arrays.
        cur_sites: the site of every current row, per modality (modality -> list) or one list shared by every
            modality (when each modality has the same rows). None: no per-site breakdown.
        alpha: family-wise false-alarm rate over all tests of this call.
        min_rows: sites (and modalities) with fewer current rows are "insufficient", not tested.
        ref_sites: the site of every reference row, per modality. A site is then compared with the same site's
            reference rows (when it has at least `min_ref_rows`), not with all sites pooled: modalities with a site
            style (scanners, note templates) differ between sites without drifting.

    Returns:
        JSON-serialisable dict: alpha, correction, family_size, threshold, n_permutations used, drifted,
        drifted (modality, site) pairs, and per modality {status, overall, sites}.
    """
    modalities = sorted(set(ref_embeddings) | set(cur_embeddings))
    plan = {mod: _plan(mod, ref_embeddings, cur_embeddings, cur_sites, min_rows) for mod in modalities}
    family = max(1, sum(len(p["tests"]) for p in plan.values()))
    threshold = alpha / family
    perms = max(n_permutations, math.ceil(2 / threshold))  # smallest reachable p-value <= threshold / 2
    result: dict = {}
    for mod, p in plan.items():
        if p["status"] != "tested":
            result[mod] = {"status": p["status"], "drifted": None if p["status"] == "insufficient" else False,
                           "n_ref": p["n_ref"], "n_cur": p["n_cur"], "sites": {}}
            continue
        ref = ref_embeddings[mod]
        cur = np.asarray(cur_embeddings[mod])
        tests = {}
        ref_labels = None if ref_sites is None or mod not in ref_sites else np.array([str(x) for x in ref_sites[mod]])
        for scope, rows in p["tests"].items():
            same = None if scope is None or ref_labels is None else np.flatnonzero(ref_labels == scope)
            if same is not None and 0 < len(same) < min_ref_rows:  # too few of its own to compare with
                tests[scope] = {"status": "insufficient reference", "n": int(len(rows)), "n_ref": int(len(same)),
                                "drifted": False}
                continue
            basis = ref[same] if same is not None and len(same) else ref  # a site new to the reference: vs all
            res = mmd_test(basis, cur[rows], n_permutations=perms, seed=seed, max_rows=max_rows)
            tests[scope] = {**res, "n": int(len(rows)), "drifted": res["p_value"] <= threshold,
                            "reference": "all sites" if basis is ref else "same site"}
        sites = {s: tests.get(s, {"status": "insufficient", "n": n, "drifted": None}) for s, n in p["sites"].items()}
        result[mod] = {"status": "tested", "drifted": any(t["drifted"] for t in tests.values()),
                       "n_ref": p["n_ref"], "n_cur": p["n_cur"], "overall": tests[None], "sites": sites}
    drifted_pairs = sorted([mod, s] for mod, r in result.items() for s, t in r["sites"].items() if t["drifted"])
    return {"test": "mmd_rbf_permutation", "alpha": alpha, "correction": "bonferroni", "family_size": family,
            "threshold": threshold, "n_permutations": perms, "max_rows": max_rows, "min_rows": min_rows,
            "drifted": any(r["drifted"] for r in result.values()), "drifted_sites": drifted_pairs,
            "modalities": result}


def _plan(mod: str, ref: Mapping, cur: Mapping, cur_sites, min_rows: int) -> dict:
    """Which tests a modality gets: None = all current rows, then one per site with >= min_rows rows."""
    n_ref = 0 if mod not in ref else len(ref[mod])
    n_cur = 0 if mod not in cur else len(cur[mod])
    base = {"n_ref": n_ref, "n_cur": n_cur, "tests": {}, "sites": {}}
    if n_ref == 0 or n_cur == 0:
        return {**base, "status": "no data"}
    if n_cur < min_rows:
        return {**base, "status": "insufficient"}
    labels = cur_sites.get(mod) if isinstance(cur_sites, Mapping) else cur_sites
    tests: dict = {None: np.arange(n_cur)}
    sites: dict = {}
    if labels is not None:
        if len(labels) != n_cur:
            raise ValueError(f"{mod}: {len(labels)} site labels for {n_cur} current rows")
        names = np.array([UNKNOWN_SITE if s is None else str(s) for s in labels])
        for site in sorted(set(names)):
            rows = np.flatnonzero(names == site)
            sites[site] = len(rows)
            if len(rows) >= min_rows:
                tests[site] = rows
    return {**base, "status": "tested", "tests": tests, "sites": sites}

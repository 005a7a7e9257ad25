"""ROC curves, reliability diagrams, subgroup forest plots, per-modality contribution and survival curves by risk
group as small PNGs for evaluation reports and model cards.

Figures are built with matplotlib's object API (`Figure` + the Agg canvas) rather than pyplot: nothing global is
touched (no backend switch, no pyplot figure registry to leak), so importing this module from a flow, a test or a
notebook changes nothing for the caller, and it works headless.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from tasks.evaluation.metrics import N_BINS, expected_calibration_error, reliability_bins, roc_auc

DPI = 100


def _labelled(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop unlabelled rows (y < 0 or NaN), as the metrics do."""
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(y) & (y >= 0)
    return y[keep].astype(int), np.asarray(probs, dtype=float)[keep]


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def roc_plot(y: np.ndarray, probs: np.ndarray, class_names: Sequence[str] | None, path: str | Path) -> Path:
    """One-vs-rest ROC per class, AUROC in the legend. probs (N, C), or (N,) = P(positive) for a binary task.

    A class without both positives and negatives has no ROC curve; it is listed in the legend as undefined
    instead of vanishing, so a reader sees which classes the test set could not evaluate.
    """
    y, probs = _labelled(y, probs)
    if probs.ndim == 1:
        scores, names = {1: probs}, {1: (class_names or ["positive"])[-1]}
    else:
        scores = {c: probs[:, c] for c in range(probs.shape[1])}
        names = {c: (class_names[c] if class_names else f"class {c}") for c in scores}
    fig = Figure(figsize=(4, 4))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    for c, s in scores.items():
        pos = y == c
        if 0 < pos.sum() < len(y):
            fpr, tpr, _ = roc_curve(pos, s)
            ax.plot(fpr, tpr, lw=1.2, label=f"{names[c]} (AUROC {roc_auc(pos, s):.3f})")
        else:
            ax.plot([], [], lw=0, label=f"{names[c]} (undefined: one class)")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
           title=f"ROC (n={len(y)})")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def calibration_plot(y: np.ndarray, probs: np.ndarray, path: str | Path, n_bins: int = N_BINS) -> Path:
    """Top-label reliability diagram (accuracy vs confidence per bin, ECE in the title) above a histogram of the
    confidences: a bin's gap means little when it holds three patients, so the counts are shown beside it."""
    y, probs = _labelled(y, probs)
    b = reliability_bins(y, probs, n_bins)
    ece = expected_calibration_error(y, probs, n_bins)
    centres = (b["edges"][:-1] + b["edges"][1:]) / 2
    width = 1 / n_bins
    fig = Figure(figsize=(4, 5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    used = b["count"] > 0
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    top.bar(centres[used], b["accuracy"][used], width=width, edgecolor="black", alpha=0.7, label="accuracy")
    top.plot(b["confidence"][used], b["accuracy"][used], "o", ms=3, color="C3", label="(mean confidence, accuracy)")
    top.set(ylabel="accuracy", ylim=(0, 1), title=f"Top-label reliability: ECE={ece:.3f} (n={len(y)})")
    top.legend(loc="upper left", fontsize=7)
    bottom.hist(b["conf_per_sample"], bins=b["edges"], color="C0", edgecolor="black")
    bottom.set(xlabel="confidence", ylabel="count", xlim=(0, 1))
    fig.tight_layout()
    return _save(fig, path)


def _interval(entry) -> tuple[float | None, float | None, float | None]:
    entry = entry or {}
    return entry.get("value"), entry.get("ci_low"), entry.get("ci_high")


def forest_plot(rows: Sequence[tuple[str, dict | None]], metric: str, path: str | Path,
                reference: float | None = None) -> Path:
    """One line per subgroup: the metric's value with its 95% CI; `rows` is (label, {value, ci_low, ci_high} or
    None). A group too small to measure stays on the plot, labelled "not measured", so its absence is visible;
    `reference` (the whole test split's value) is the dashed line each group is read against."""
    fig = Figure(figsize=(6, 0.35 * len(rows) + 1.2))
    ax = fig.add_subplot()
    for i, (_, entry) in enumerate(rows):
        value, low, high = _interval(entry)
        y = len(rows) - 1 - i
        if value is None:
            ax.text(0.5, y, "not measured", va="center", ha="center", fontsize=7, color="grey")
            continue
        if low is not None and high is not None:
            ax.plot([low, high], [y, y], color="C0", lw=1.5)
        ax.plot([value], [y], "s", color="C0", ms=5)
    if reference is not None:
        ax.axvline(reference, ls="--", color="grey", lw=0.8, label=f"all patients ({reference:.3f})")
        ax.legend(loc="lower right", fontsize=7)
    ax.set_yticks(range(len(rows)), [label for label, _ in reversed(rows)], fontsize=7)
    ax.set(xlabel=f"{metric} (95% CI)", xlim=(0, 1), ylim=(-0.7, len(rows) - 0.3), title=f"Subgroups: {metric}")
    fig.tight_layout()
    return _save(fig, path)


def modality_contribution_plot(full: float | None, without: dict[str, float | None], attention: dict[str, float],
                               metric: str, path: str | Path) -> Path:
    """Per modality: how much the metric drops when the modality is removed at test time (left) and the share of
    attention the fusion gives it where present (right). A drop is the evidence; attention is only what was read."""
    names = sorted(set(without) | set(attention))
    fig = Figure(figsize=(7, 0.35 * len(names) + 1.4))
    left, right = fig.subplots(1, 2, sharey=True)
    ys = np.arange(len(names))
    drops = [(full - without[m]) if full is not None and without.get(m) is not None else np.nan for m in names]
    left.barh(ys, drops, color=["C3" if d > 0 else "C0" for d in np.nan_to_num(drops)])
    left.axvline(0, color="black", lw=0.8)
    left.set(yticks=ys, xlabel=f"{metric}: all modalities minus without it", title="Drop when removed")
    left.set_yticklabels(names, fontsize=8)
    right.barh(ys, [attention.get(m, np.nan) for m in names], color="C2")
    right.set(xlabel="mean attention share where present", xlim=(0, 1), title="Attention share")
    fig.tight_layout()
    return _save(fig, path)


def survival_by_risk_plot(time: np.ndarray, event: np.ndarray, log_risk: np.ndarray, path: str | Path,
                          groups: int = 3) -> Path:
    """Kaplan-Meier curves of the test patients split into `groups` equal-sized groups by predicted log-hazard
    (low to high): a model that ranks survival separates the curves. Patients without follow-up are dropped."""
    from sksurv.nonparametric import kaplan_meier_estimator

    time, event, log_risk = (np.asarray(a, dtype=float) for a in (time, event, log_risk))
    keep = np.isfinite(time) & np.isfinite(log_risk) & (time >= 0)
    time, event, log_risk = time[keep], event[keep].astype(bool), log_risk[keep]
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    order = np.argsort(log_risk, kind="stable")
    names = ["low", "middle", "high"] if groups == 3 else [f"group {i + 1}" for i in range(groups)]
    for i, members in enumerate(np.array_split(order, groups)):
        if len(members) == 0:
            continue
        t, s = kaplan_meier_estimator(event[members], time[members])
        ax.step(np.concatenate([[0], t]), np.concatenate([[1], s]), where="post",
                label=f"{names[i]} predicted risk (n={len(members)}, events {int(event[members].sum())})")
    ax.set(xlabel="days since presentation", ylabel="survival probability (Kaplan-Meier)", ylim=(0, 1.02),
           title=f"Survival by predicted risk group (n={len(time)})")
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return _save(fig, path)

"""ROC curves and reliability diagrams as small PNGs for evaluation reports.

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

"""Read a cohort's truth file and say how well the best possible model can do on it.

Evaluation (and the tests of the generator) compare models against these limits instead of claiming quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

from tasks.synth.model import CLASSES, MODALITIES


def load_truth(cohort: Path) -> pl.DataFrame:
    return pl.read_csv(Path(cohort) / "truth" / "patients.tsv", separator="\t")


def posterior_matrix(truth: pl.DataFrame, variant: str = "full") -> np.ndarray:
    """(N, classes) posterior columns of one variant: full, demographics, or a modality name."""
    return truth.select([f"post_{variant}_{c}" for c in CLASSES]).to_numpy()


def macro_auroc(labels: np.ndarray, probs: np.ndarray) -> float:
    """One-vs-rest macro AUROC over the classes that have both positives and negatives (small cohorts may lack
    one); NaN when none has."""
    scores = [roc_auc_score(labels == c, probs[:, c]) for c in range(probs.shape[1])
              if 0 < np.sum(labels == c) < len(labels)]
    return float(np.mean(scores)) if scores else float("nan")


def bayes_report(truth: pl.DataFrame) -> dict:
    """Macro AUROC of the exact posterior: with everything each patient has, with demographics only, and with each
    modality alone (on the patients who have it, beside the full posterior on the same patients)."""
    y = truth["label"].to_numpy()
    report = {
        "patients": truth.height,
        "prevalence": {c: round(float(np.mean(y == i)), 4) for i, c in enumerate(CLASSES)},
        "bayes_auroc": round(macro_auroc(y, posterior_matrix(truth)), 4),
        "demographics_auroc": round(macro_auroc(y, posterior_matrix(truth, "demographics")), 4),
        "single_modality": {},
    }
    for m in MODALITIES:
        has = truth[f"present_{m}"].to_numpy().astype(bool)
        report["single_modality"][m] = {
            "patients": int(has.sum()),
            "auroc_alone": round(macro_auroc(y[has], posterior_matrix(truth, m)[has]), 4),
            "bayes_auroc_same_patients": round(macro_auroc(y[has], posterior_matrix(truth)[has]), 4),
        }
    return report


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Top-label ECE with equal-width confidence bins."""
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(np.mean(pred[sel] == labels[sel]) - conf[sel].mean())
    return float(ece)

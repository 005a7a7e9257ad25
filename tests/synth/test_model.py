"""The generative model's promises: the posterior is exact and calibrated, each modality alone is clearly worse
than all together, and cross-modal interaction makes naive late fusion lose something."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.synth.model import MODALITIES, biology, posterior, sample_evidence, truth_columns
from tasks.synth.truth import expected_calibration_error, macro_auroc


@pytest.fixture(scope="module")
def table():
    bio = biology()
    rows = [truth_columns(sample_evidence(np.random.default_rng([11, i]), bio, 0.0), bio) for i in range(4000)]
    return {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]}


def test_posterior_is_calibrated(table):
    y = table["label"].astype(int)
    post = posterior(table)
    assert np.allclose(post.sum(axis=1), 1.0)
    assert expected_calibration_error(y, post) < 0.03
    for c in range(post.shape[1]):  # mean predicted probability matches the class frequency
        assert abs(post[:, c].mean() - np.mean(y == c)) < 0.02


def test_each_modality_alone_is_clearly_below_all_together(table):
    y = table["label"].astype(int)
    full = macro_auroc(y, posterior(table))
    assert full > 0.9
    for m in MODALITIES:
        alone = macro_auroc(y, posterior(table, use=(m,)))
        assert alone < full - 0.05, (m, alone, full)
        assert alone > macro_auroc(y, posterior(table, use=())) + 0.05, f"{m} carries little signal"


def test_interaction_defeats_naive_late_fusion(table):
    """Multiplying per-modality posteriors assumes the modalities are independent given the class; NT-proBNP means
    different things with and without cardiomegaly, so the product is worse than the joint posterior."""
    y = table["label"].astype(int)
    prior = posterior(table, use=())
    log_product = sum(np.log(posterior(table, use=(m,))) for m in MODALITIES) - (len(MODALITIES) - 1) * np.log(prior)
    late = np.exp(log_product - log_product.max(axis=1, keepdims=True))
    late /= late.sum(axis=1, keepdims=True)
    assert macro_auroc(y, posterior(table)) - macro_auroc(y, late) > 0.005


def test_missing_modality_drops_its_evidence(table):
    sub = {k: v[:200].copy() for k, v in table.items()}
    sub["present_omics"][:] = 0
    assert np.allclose(posterior(sub), posterior(sub, use=("imaging", "labs", "notes")))

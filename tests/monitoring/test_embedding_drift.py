"""MMD and classifier two-sample tests on embeddings: power on a shift, quiet on none, localised with Bonferroni."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasks.monitoring.embedding_drift import classifier_two_sample_test, embedding_drift, mmd_test


def _gauss(seed: int, n: int, d: int = 8, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift  # (n, d)


def test_mmd_detects_a_mean_shift_and_not_the_same_distribution():
    shifted = mmd_test(_gauss(0, 200), _gauss(1, 150, shift=0.5), n_permutations=200)
    same = mmd_test(_gauss(0, 200), _gauss(2, 150), n_permutations=200)
    assert shifted["test"] == "mmd_rbf_permutation" and shifted["p_value"] <= 1 / 201 + 1e-12
    assert same["p_value"] > 0.1 and same["statistic"] < shifted["statistic"]


def test_mmd_is_deterministic_for_a_seed_and_subsamples():
    ref, cur = _gauss(3, 1500, d=4), _gauss(4, 1200, d=4, shift=0.05)
    first, again = mmd_test(ref, cur, n_permutations=50, seed=7), mmd_test(ref, cur, n_permutations=50, seed=7)
    assert first == again and first["n_ref"] == 1000 and first["n_cur"] == 1000


def test_mmd_statistic_matches_the_unbiased_estimator_by_hand():
    x, y = _gauss(5, 30, d=3), _gauss(6, 20, d=3, shift=0.3)
    res = mmd_test(x, y, n_permutations=10)

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * res["bandwidth"] ** 2))

    kxx, kyy = k(x, x), k(y, y)
    by_hand = (kxx.sum() - 30) / (30 * 29) + (kyy.sum() - 20) / (20 * 19) - 2 * k(x, y).mean()
    assert res["statistic"] == pytest.approx(by_hand, rel=1e-9, abs=1e-12)


def test_embedding_drift_localises_the_shifted_site_with_bonferroni():
    sites = np.repeat(["a", "b", "c", "tiny"], [80, 80, 80, 10])
    ct = _gauss(10, 250)
    ct[sites == "b"] += 0.8
    report = embedding_drift({"ct": _gauss(11, 300), "ecg": _gauss(12, 300, d=4), "notes": _gauss(13, 50)},
                             {"ct": ct, "ecg": _gauss(14, 250, d=4), "pathology": _gauss(15, 40)},
                             cur_sites=list(sites), alpha=0.05, n_permutations=100)
    assert report["family_size"] == 2 * 4 and report["threshold"] == pytest.approx(0.05 / 8)
    assert report["n_permutations"] >= 2 / report["threshold"]  # raised so that alpha / family is reachable
    assert report["drifted_sites"] == [["ct", "b"]]
    assert report["modalities"]["ct"]["sites"]["tiny"] == {"status": "insufficient", "n": 10, "drifted": None}
    assert not report["modalities"]["ecg"]["drifted"]
    assert report["modalities"]["notes"]["status"] == "no data" and report["modalities"]["pathology"]["status"] \
        == "no data"
    json.dumps(report, allow_nan=False)


def test_per_modality_site_lists_and_no_sites():
    report = embedding_drift({"ct": _gauss(20, 100), "ecg": _gauss(21, 100)}, {"ct": _gauss(22, 60), "ecg": _gauss(
        23, 40)}, cur_sites={"ct": ["a"] * 30 + ["b"] * 30}, n_permutations=50)
    assert set(report["modalities"]["ct"]["sites"]) == {"a", "b"} and report["modalities"]["ecg"]["sites"] == {}
    assert report["family_size"] == 3 + 1 and not report["drifted"]
    with pytest.raises(ValueError, match="site labels"):
        embedding_drift({"ct": _gauss(0, 50)}, {"ct": _gauss(1, 40)}, cur_sites=["a"] * 39)


def test_classifier_two_sample_test():
    shifted = classifier_two_sample_test(_gauss(30, 300), _gauss(31, 300, shift=0.4))
    same = classifier_two_sample_test(_gauss(30, 300), _gauss(32, 300))
    assert shifted["statistic"] > 0.7 and shifted["p_value"] < 1e-6
    assert same["p_value"] > 0.05 and 0.4 < same["statistic"] < 0.6

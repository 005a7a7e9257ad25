"""The same-inputs baselines (logistic regression, ridge Cox), the oracle hazard, the paired comparisons and how they
are gathered for the gate: on hand-made splits whose outcome depends on one feature, in milliseconds."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from tasks.evaluation.baselines import (
    compare,
    comparisons,
    demographics,
    late_fusion,
    matched_truth,
    oracle,
    oracle_log_hazard,
    same_inputs,
)
from tasks.evaluation.metrics import c_index
from tasks.synth.model import (
    HAZARD_AGE_PER_DECADE,
    HAZARD_BASE,
    HAZARD_CLASS,
    HAZARD_MODULES,
    MODULES,
    biology,
    sample_evidence,
    truth_columns,
)
from tasks.training.split_data import SplitData, risk_labels


def split(n: int, seed: int, signal: float = 1.5, events: bool = True) -> tuple[SplitData, np.ndarray]:
    """n patients, 6 features; the hazard (days) and the class follow feature 0. -> (data, features)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    t_event = rng.exponential(365.0 / np.exp(signal * x[:, 0]))
    t_censor = rng.uniform(100, 1200, n)
    time = torch.tensor(np.minimum(t_event, t_censor), dtype=torch.float32)
    event = torch.tensor((t_event <= t_censor) & events)
    label = torch.tensor(np.digitize(x[:, 0] + rng.normal(0, 0.5, n), [-0.7, 0.0, 0.7]))
    tensors = {"mask": torch.ones(n, 5, dtype=torch.bool), "label": label, "time": time, "event": event,
               "risk_label": risk_labels(time, event)}
    meta = {"patient_id": [f"P{seed}-{i}" for i in range(n)], "sex": [["female", "male"][i % 2] for i in range(n)],
            "age_band": [["18-39", "40-64", "65+"][i % 3] for i in range(n)]}
    return SplitData(tensors, meta), x


@pytest.fixture(scope="module")
def data():
    (train, x_train), (test, x_test) = split(300, 1), split(200, 2)
    return train, x_train, test, x_test


def test_compare_is_fused_minus_baseline_on_the_same_patients(data):
    _, _, test, x = data
    good, noise = x[:, 0], np.random.default_rng(0).normal(size=len(test))
    d = compare("survival", test, good, noise, n_boot=50, baseline_name="noise")
    assert d["metric"] == "c_index" and d["baseline"] == "noise" and d["n"] == len(test)
    assert d["value"] == pytest.approx(d["a"] - d["b"], abs=1e-3) and d["ci_low"] > 0.1
    assert d["a"] == pytest.approx(c_index(test.tensors["time"].numpy(), test.tensors["event"].numpy(), good),
                                   abs=1e-4)
    one_class = test.take(np.flatnonzero(test.tensors["risk_label"].numpy() == 0))
    assert "skipped" in compare("risk", one_class, np.zeros(len(one_class)), np.ones(len(one_class)), n_boot=10)


@pytest.mark.parametrize(("task", "model", "metric"), [("risk", "logistic_regression", "auroc"),
                                                       ("survival", "cox", "c_index")])
def test_same_inputs_fits_on_train_and_compares_with_the_fused_prediction(data, task, model, metric):
    train, x_train, test, x_test = data
    weak = x_test[:, 0] * 0.2 + np.random.default_rng(3).normal(size=len(test))  # a fused model that learned little
    fused = 1 / (1 + np.exp(-weak)) if task == "risk" else weak
    out = same_inputs(task, train, test, (x_train, x_test), fused, n_boot=50)
    assert out["model"] == model and out["features"] == 6 and "skipped" not in out
    assert out["metrics"][metric]["value"] > 0.65  # the regression finds feature 0
    d = out["fused_minus_baseline"]
    assert d["baseline"] == model and d["metric"] == metric and d["ci_high"] < 0  # the weak model is worse
    assert d["b"] == pytest.approx(out["metrics"][metric]["value"], abs=1e-3)


def test_same_inputs_says_why_it_cannot_fit(data):
    train, x_train, test, x_test = data
    silent, _ = split(60, 5, events=False)
    no_events = same_inputs("survival", silent, test, (x_train[:60], x_test), x_test[:, 0], n_boot=10)
    assert no_events["skipped"] == "the train split has no event: a Cox model needs one"
    one_outcome = same_inputs("risk", silent, test, (x_train[:60], x_test), x_test[:, 0], n_boot=10)
    assert "a classifier needs both" in one_outcome["skipped"]


def test_late_fusion_compares_on_every_test_patient(data):
    train, x_train, test, x_test = data
    uniform = np.full((len(test), 4), 0.25)
    out = late_fusion(None, train, test, n_boot=30, fused_probs=uniform, features=(x_train, x_test))
    d = out["fused_minus_late_fusion"]
    assert d["baseline"] == "late_fusion" and d["n"] == len(test) and d["a"] == 0.5 and d["ci_high"] < 0


def test_demographics_from_the_model_input_else_metadata(data):
    train, _, test, _ = data
    a, b, source = demographics(train, test)
    assert source == "patient metadata (sex, age_band)" and a.shape == (len(train), 5) and b.shape == (len(test), 5)
    assert (a.sum(1) == 2).all()  # one sex, one age band each
    with_input = SplitData({**train.tensors, "demographics": torch.tensor([[70.0, 1.0]] * len(train))}, train.meta)
    other = SplitData({**test.tensors, "demographics": torch.tensor([[float("nan"), 0.0]] * len(test))}, test.meta)
    a, b, source = demographics(with_input, other)
    assert source == "demographics input (age, sex)"
    assert a[0].tolist() == [0.5, 0.25, 1.0, 1.0, 1.0] and b[0].tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]


def _truth(n: int, seed: int) -> tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Generator patients: (truth rows, survival days, event, the exact log-hazard from the drawn module values)."""
    rng, bio = np.random.default_rng(seed), biology()
    evs = [sample_evidence(rng, bio, 0.2) for _ in range(n)]
    exact = np.array([np.log(HAZARD_BASE) + HAZARD_CLASS[e.label] + HAZARD_AGE_PER_DECADE * (e.age - 60) / 10
                      + HAZARD_MODULES @ e.modules for e in evs])
    rows = [{"site": "site-a", "mrn": str(1000 + i), **truth_columns(e, bio)} for i, e in enumerate(evs)]
    days = np.array([e.survival_days for e in evs], dtype=float)
    return pl.DataFrame(rows), days, np.array([e.event for e in evs]), exact


def test_the_oracle_log_hazard_is_the_generators():
    truth, days, event, exact = _truth(1500, 4)
    mine = oracle_log_hazard(truth)
    assert truth.select([f"score_{m}" for m in MODULES]).width == len(HAZARD_MODULES)
    # the truth file keeps the module scores as estimated from the expression profile, not the drawn values: the
    # oracle ranks patients as the exact hazard does, up to that estimate's small noise
    assert np.corrcoef(mine, exact)[0, 1] > 0.97
    assert abs(c_index(days, event, mine) - c_index(days, event, exact)) < 0.02
    assert c_index(days, event, mine) > 0.65


class Keys:
    def patient(self, site: str, mrn: str) -> str:
        return f"P-{site}-{mrn}"


def test_the_oracle_on_matched_test_patients(tmp_path):
    truth, days, event, _ = _truth(120, 6)
    (tmp_path / "c" / "truth").mkdir(parents=True)
    truth.write_csv(tmp_path / "c" / "truth" / "patients.tsv", separator="\t")
    order = list(range(100, 0, -1))  # test patients in another order, and one the truth file does not know
    time, ev = torch.tensor(days[order], dtype=torch.float32), torch.tensor(event[order])
    test = SplitData({"mask": torch.ones(len(order) + 1, 5, dtype=torch.bool),
                      "time": torch.cat([time, torch.tensor([10.0])]), "event": torch.cat([ev, torch.tensor([True])]),
                      "risk_label": risk_labels(torch.cat([time, torch.tensor([10.0])]),
                                                torch.cat([ev, torch.tensor([True])]))},
                     {"patient_id": [f"P-site-a-{1000 + i}" for i in order] + ["P-site-a-unknown"]})
    found, matched = matched_truth(test, [tmp_path / "c"], Keys())
    assert matched == list(range(100)) and found["mrn"].cast(str).to_list()[0] == "1100"
    noise = np.random.default_rng(0).normal(size=len(test))
    out = oracle(test, [tmp_path / "c"], Keys(), 30, {"risk": 1 / (1 + np.exp(-noise)), "survival": noise})
    assert out["patients"] == 100 and set(out) == {"patients", "risk", "survival"}
    assert out["survival"]["metrics"]["c_index"]["value"] > 0.6
    assert out["survival"]["fused_minus_oracle"]["ci_high"] < 0  # noise is below the ceiling
    assert out["risk"]["fused_minus_oracle"]["baseline"] == "oracle"


def _d(value: float) -> dict:
    return {"metric": "auroc_macro", "value": value, "ci_low": value - 0.05, "ci_high": value + 0.05, "n": 40}


def test_comparisons_gather_what_the_gate_judges():
    single = {"auroc_macro": {"value": 0.7}}
    base = {"single_modality": {"labs": {"single": {"auroc_macro": {"value": 0.8}}, "fused_minus_single": _d(0.05)},
                                "notes": {"single": single, "fused_minus_single": _d(0.1)},
                                "omics": {"skipped": "too few patients with omics (train 3, test 1)"}},
            "late_fusion": {"metrics": {}, "fused_minus_late_fusion": _d(-0.02)},
            "bayes": {"fused_minus_bayes": _d(-0.1)},
            "risk_same_inputs": {"model": "logistic_regression", "skipped": "no outcome"},
            "survival_same_inputs": {"model": "cox", "fused_minus_baseline": _d(0.0)},
            "oracle": {"patients": 40, "survival": {"fused_minus_oracle": _d(-0.2)}}}
    out = comparisons(base, ["diagnosis", "risk", "survival"])
    diag = out["diagnosis"]
    assert diag["best_single"] == {**_d(0.05)} and set(diag) == {
        "single_modality.labs", "single_modality.notes", "single_modality.omics", "best_single", "late_fusion",
        "bayes"}
    assert diag["single_modality.omics"] == {"skipped": "too few patients with omics (train 3, test 1)"}
    assert out["risk"] == {"logistic_regression": {"skipped": "no outcome"}}
    assert out["survival"] == {"cox": _d(0.0), "oracle": _d(-0.2)}
    none = comparisons({"single_modality": {"labs": {"skipped": "too few"}}}, ["diagnosis"])
    assert none["diagnosis"]["best_single"]["skipped"].endswith("labs: too few")
    assert none["diagnosis"]["late_fusion"] == {"skipped": "no late fusion baseline was measured"}

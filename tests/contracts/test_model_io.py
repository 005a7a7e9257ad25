"""The model input/output contract (data_contracts/model_io.yaml) as training sees it: check_model_inputs(batch)
returns [] for a conforming batch and one line per violation otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.validation.contracts import check_model_inputs

B = 3


def good() -> dict:
    rng = np.random.default_rng(0)
    return {"image_3d": rng.uniform(-1000, 1000, (B, 1, 16, 48, 48)).astype(np.float32),
            "image_3d_modality": ["CT", "CT", "MR"],
            "image_2d": rng.uniform(0, 4000, (B, 1, 64, 64)).astype(np.float32),
            "labs": rng.uniform(0, 10, (B, 12, 3)).astype(np.float32),
            "omics": np.full((B, 200), 7.0, dtype=np.float32),
            "mask": np.array([[1, 1, 1, 0, 1], [1, 0, 1, 0, 1], [1, 1, 1, 0, 0]], dtype=bool),
            "class_probs": np.array([[0.2, 0.8], [0.5, 0.5], [1.0, 0.0]], dtype=np.float32),
            "risk": np.array([0.1, -2.0, 3.5], dtype=np.float32)}


def test_a_conforming_batch_has_no_violations():
    assert check_model_inputs(good()) == []


def with_(**changes) -> dict:
    return {**good(), **changes}


@pytest.mark.parametrize(("batch", "expected"), [
    (with_(image_3d=np.ones((B, 1, 16, 48, 47), np.float32)),
     "image_3d: shape (3, 1, 16, 48, 47), contract says (B, 1, 16, 48, 48)"),
    (with_(image_2d=np.ones((B, 1, 64, 64), np.float64)), "image_2d: dtype float64, contract says float32"),
    (with_(image_3d_modality=["CT", "CT", "CT"]), None),  # MR values read as CT: within CT's range here
    (with_(image_2d=np.full((B, 1, 64, 64), -5.0, np.float32)), None),  # no modality hint: family range unknown
    (with_(labs=np.full((B, 12, 3), np.nan, np.float32)), "labs: 108 values are not finite"),
    (with_(risk=np.array([0.1, np.inf, 0.0], np.float32)), "risk: 1 values are not finite"),
    (with_(class_probs=np.array([[0.2, 0.7], [0.5, 0.5], [1.0, 0.0]], np.float32)),
     "class_probs: 1 rows do not sum to 1.0"),
    (with_(class_probs=np.array([[-0.5, 1.5], [0.5, 0.5], [1.0, 0.0]], np.float32)),
     "class_probs: sample 0 outside [0, 1]"),
    (with_(mask=np.ones((B, 4), bool)), "mask: shape (3, 4), contract says (B, 5)"),
    ({k: v for k, v in good().items() if k != "mask"}, "mask: missing"),
    (with_(mask=np.ones((B, 5), bool)), "mask: notes marked present for 3 samples, but the batch has no notes"),
    (with_(omics=np.zeros((B, 200), np.float32)), "omics: 2 samples marked present are all zeros"),
    (with_(labs=np.ones((2, 12, 3), np.float32)), "batch: tensors disagree on the batch size"),
    (with_(ecg=np.ones((B, 10), np.float32)), "ecg: not in model_io.yaml"),
])
def test_each_violation_is_named(batch, expected):
    problems = check_model_inputs(batch)
    if expected is None:
        assert problems == []
    else:
        assert any(p.startswith(expected) for p in problems), problems


def test_ct_values_outside_hounsfield_range_with_a_modality_hint():
    batch = with_(image_3d=np.full((B, 1, 16, 48, 48), 5000.0, np.float32))
    assert check_model_inputs(batch) == ["image_3d: sample 0 outside [-3072, 3071]",
                                         "image_3d: sample 1 outside [-3072, 3071]"]  # sample 2 is MR


def test_torch_tensors_are_checked_like_arrays():
    torch = pytest.importorskip("torch")
    batch = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in good().items()}
    assert check_model_inputs(batch) == []
    batch["image_2d"] = batch["image_2d"].to(torch.bfloat16)
    assert check_model_inputs(batch) == ["image_2d: dtype bfloat16, contract says float32"]

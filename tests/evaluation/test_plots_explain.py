"""Plots are written and readable; Grad-CAM and attention tables on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.factory import create_model
from models.model import MODALITIES
from tasks.evaluation.explain import attention_table, gradcam, save_gradcam_png, target_layer
from tasks.evaluation.plots import (
    calibration_plot,
    forest_plot,
    modality_contribution_plot,
    roc_plot,
    survival_by_risk_plot,
)
from tests.models.batch import make_batch


def _readable_png(path) -> None:
    assert path.exists() and path.stat().st_size > 2_000
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) >= 200


def trained_like(model):
    """The tiny model with non-zero heads: its experts and interaction start at zero evidence (no gradient to
    explain yet), as after training they are not."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("expert_heads.", "multiclass.", "binary.", "cox.")):
                p.normal_(0, 0.3)
    return model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return trained_like(create_model("tiny"))


@pytest.fixture()
def scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    z = rng.normal(size=(120, 3))
    z[np.arange(120), y] += 1.5
    return y, np.exp(z) / np.exp(z).sum(1, keepdims=True)


@pytest.mark.parametrize("binary", [False, True])
def test_roc_and_calibration_plots_written(tmp_path, scores, binary):
    y, probs = scores
    if binary:
        y, probs = (y == 1).astype(int), probs[:, 1]
    names = ["no", "yes"] if binary else ["a", "b", "c"]
    _readable_png(roc_plot(y, probs, names, tmp_path / "roc.png"))
    _readable_png(calibration_plot(y, probs, tmp_path / "sub" / "cal.png"))


def test_roc_plot_tolerates_unlabelled_rows_and_missing_class(tmp_path, scores):
    y, probs = scores
    y = np.where(y == 2, -1, y)  # class 2 only among unlabelled rows: no curve, still in the legend
    _readable_png(roc_plot(y, probs, None, tmp_path / "roc.png"))


@pytest.mark.parametrize("modality,spatial", [("image_2d", (64, 64)), ("image_3d", (16, 48, 48))])
def test_gradcam_shape_range_and_model_left_unchanged(model, tmp_path, modality, spatial):
    batch = make_batch((modality,), b=2)
    wrapper = torch.nn.ModuleDict({"model": model})
    layer = target_layer(wrapper, modality)
    convs = [n for n, m in wrapper.named_modules()
             if n.startswith(f"model.encoders.{modality}.") and isinstance(m, torch.nn.modules.conv._ConvNd)]
    assert layer == convs[-1]  # the last spatial layer of the image tower (CNN block, or the ViT patch projection)
    model.train()
    cam = gradcam(model, batch, modality, class_idx=None)
    assert cam.shape == (2, *spatial) and np.isfinite(cam).all()
    assert cam.min() >= 0 and cam.max() <= 1 and cam.max() > 0
    conv = model.get_submodule(layer.removeprefix("model."))
    assert model.training and not conv._forward_hooks and not conv._backward_hooks
    assert all(p.grad is None for p in model.parameters())
    _readable_png(save_gradcam_png(batch[modality][0, 0], cam[0], tmp_path / f"{modality}.png"))


def test_gradcam_per_sample_class_and_locked_encoder():
    torch.manual_seed(1)
    m = trained_like(create_model("tiny"))
    batch = make_batch(("image_2d",), b=2)
    both = gradcam(m, batch, "image_2d", class_idx=2)
    one = gradcam(m, {"image_2d": batch["image_2d"][1:]}, "image_2d", class_idx=2)
    np.testing.assert_allclose(both[1], one[0], atol=1e-5)  # a sample's map does not depend on its batch-mates
    m.lock_encoders()  # frozen weights: the hook still fires because the input carries the gradient
    assert gradcam(m, batch, "image_2d").max() > 0
    with pytest.raises(ValueError, match="modality"):
        gradcam(m, batch, "labs")


def test_attention_table_marks_absent_modalities(model):
    batch = make_batch(("image_2d", "labs"), b=3, demographics=False)
    batch["mask"][1, MODALITIES.index("labs")] = False  # patient p1 has no labs
    model.eval()
    with torch.no_grad():
        out = model(batch)
    rows = attention_table(["p0", "p1", "p2"], out["attention"], out["present"])
    assert len(rows) == 6 and {r["modality"] for r in rows} == {"image_2d", "labs"}
    p1_labs = next(r for r in rows if r["patient_id"] == "p1" and r["modality"] == "labs")
    assert p1_labs == {"patient_id": "p1", "modality": "labs", "share": 0.0, "present": False}
    for pid in ("p0", "p1", "p2"):
        assert sum(r["share"] for r in rows if r["patient_id"] == pid) == pytest.approx(1.0)


def test_survival_curves_by_risk_group_separate_a_ranking_model(tmp_path):
    rng = np.random.default_rng(0)
    log_risk = rng.normal(size=90)
    time = rng.exponential(365 * np.exp(-log_risk))  # higher risk, shorter survival
    event = rng.random(90) < 0.8
    time[0] = np.nan  # no follow-up: dropped, not a crash
    _readable_png(survival_by_risk_plot(time, event, log_risk, tmp_path / "km.png"))


def test_forest_and_modality_plots_keep_unmeasured_entries(tmp_path):
    rows = [("site: a (n=30)", {"value": 0.8, "ci_low": 0.7, "ci_high": 0.9}), ("site: b (n=4)", None),
            ("sex: f (n=20)", {"value": 0.6, "ci_low": None, "ci_high": None})]
    _readable_png(forest_plot(rows, "auroc_macro", tmp_path / "forest.png", reference=0.75))
    _readable_png(modality_contribution_plot(0.8, {"labs": 0.7, "omics": None}, {"labs": 0.5, "notes": 0.1},
                                             "auroc_macro", tmp_path / "mods.png"))

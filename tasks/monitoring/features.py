"""Per-patient monitoring features from a curated split: demographics, mean of each lab/vital, the model's class
probabilities: the tabular side of drift monitoring (embeddings are the other side)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml

from tasks.training.data import SplitData
from tasks.training.dataset import ROOT

LABS_CATALOGUE = ROOT / "data_contracts" / "labs.yaml"


def lab_names() -> list[str]:
    """Catalogue names in the labs encoder's index order (labs.yaml order)."""
    return list(yaml.safe_load(LABS_CATALOGUE.read_text())["labs"])


def patient_features(data: SplitData, preds: dict[str, np.ndarray] | None = None) -> tuple[pd.DataFrame, dict]:
    """-> (frame with site + features, feature groups {labs, demographics, predictions})."""
    frame = pd.DataFrame({"site": [s or "unknown" for s in data.meta["site"]],
                          "sex": [s or "unknown" for s in data.meta["sex"]],
                          "age_band": [a or "unknown" for a in data.meta["age_band"]]})
    names = lab_names()
    if "labs" in data.tensors:
        labs = data.tensors["labs"].numpy()
        for i, name in enumerate(names):
            hit = labs[..., 0] == i
            total = np.where(hit, labs[..., 1], 0.0).sum(1)
            count = hit.sum(1)
            frame[f"lab_{name}"] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    groups = {"demographics": ["sex", "age_band"], "labs": [c for c in frame.columns if c.startswith("lab_")]}
    if preds is not None:
        for i in range(preds["class_probs"].shape[1]):
            frame[f"p_class{i}"] = preds["class_probs"][:, i]
        groups["predictions"] = [c for c in frame.columns if c.startswith("p_class")]
    return frame, groups

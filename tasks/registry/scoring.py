"""Batch scoring with a registered version: its artifacts hash-verified, then a curated folder read in the model's
own gene order and labs vocabulary and scored by its pyfunc."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tasks.registry.records import records_from_split
from tasks.registry.staging import load_verified
from tasks.training.bundle import load_backbone
from tasks.training.curated_dataset import dataset_config
from tasks.training.split_data import load_split
from tasks.workspace import Workspace


def score_curated(pyfunc_model, bundle: Path, curated: Path, split: str | None):
    """Records of a curated folder (in the model's gene order) scored by the pyfunc -> pandas DataFrame."""
    _, tokenizer, meta = load_backbone(bundle / "backbone")
    data = load_split(curated, split, tokenizer, dataset_config(meta))  # the model's gene panel and labs vocabulary
    return pyfunc_model.predict(records_from_split(data))


def score_version(ws: Workspace, model_version: str, curated: Path, split: str | None):
    """Score `curated` (one split, or None: every patient) with a registered version -> pandas DataFrame."""
    with tempfile.TemporaryDirectory(dir=ws.state) as tmp:
        pyfunc_model = load_verified(model_version, Path(tmp))
        frame = score_curated(pyfunc_model, next(Path(tmp).rglob("bundle")), curated, split)
    frame["model_version"] = model_version
    return frame

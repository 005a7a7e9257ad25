"""The registered model: an MLflow pyfunc over the backbone and every fine-tuned adapter.

predict(records) -> one row per patient: the four diagnosis probabilities, the predicted class, the one-year risk,
the Cox log-hazard, and the per-modality contribution (share of the fusion's attention; 0 where absent), so a
reviewer sees which inputs a prediction rested on. The artifact folder `bundle/` holds backbone/ and finetuned/<task>/
exactly as the training stages wrote them; nothing is pickled but this class (loaded by reference from mmfm).
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from data_contracts import diagnosis_names
from tasks.registry.records import batch_from_records
from tasks.training.bundle import load_adapter
from tasks.training.fit import predict
from tasks.training.split_data import SplitData

CLASS_NAMES = diagnosis_names()  # data_contracts/labels.yaml
OUTPUT_COLUMNS = ("patient_id", *(f"p_{c}" for c in CLASS_NAMES), "predicted_class", "risk_1y", "log_hazard")


def load_bundle(root: Path) -> dict:
    """task -> (model, tokenizer) for every adapter in root/finetuned, over root/backbone."""
    root = Path(root)
    tasks = sorted(d.name for d in (root / "finetuned").iterdir() if (d / "adapter.json").exists())
    if "diagnosis" not in tasks:
        raise FileNotFoundError(f"{root}: the bundle has no diagnosis adapter")
    return {t: load_adapter(root / "finetuned" / t, root / "backbone")[:2] for t in tasks}


def score(models: dict, records: pd.DataFrame, batch_size: int = 64) -> pd.DataFrame:
    """Records -> predictions (see module docstring)."""
    diagnosis, tokenizer = models["diagnosis"]
    n_omics = diagnosis.config.omics.n_features if diagnosis.config.omics is not None else None
    max_length = diagnosis.config.notes.max_length if diagnosis.config.notes is not None else 64
    data = SplitData(batch_from_records(records, tokenizer, n_omics, max_length))
    out = pd.DataFrame({"patient_id": records["patient_id"].astype(str).to_numpy()})
    with torch.no_grad():
        dx = predict(diagnosis, data, batch_size)
        for i, c in enumerate(CLASS_NAMES):
            out[f"p_{c}"] = dx["class_probs"][:, i]
        out["predicted_class"] = [CLASS_NAMES[i] for i in dx["class_probs"].argmax(1)]
        out["risk_1y"] = predict(models["risk"][0], data, batch_size)["risk_prob"] if "risk" in models else np.nan
        out["log_hazard"] = predict(models["survival"][0], data, batch_size)["log_risk"] \
            if "survival" in models else np.nan
    for m in diagnosis.modalities:
        out[f"contribution_{m}"] = np.where(dx[f"present_{m}"], dx[f"attention_{m}"], 0.0)
    return out


class MultimodalPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.models = load_bundle(Path(context.artifacts["bundle"]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return score(self.models, model_input)

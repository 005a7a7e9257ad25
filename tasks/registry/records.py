"""Patient records as the registered model takes them: one row per patient, any subset of modalities.

Columns (strings, so the MLflow signature stays a flat schema and a record travels as JSON): `patient_id`; `notes`
(de-identified free text); `labs` (JSON [[catalogue index, value in the canonical unit, days from the index date],
...], data_contracts/model_io.yaml); `omics` (JSON list in omics_features order, null = not measured);
`image_2d` / `image_3d` (base64 of a float32 .npy array of the model_io shape). Null or "" = the patient lacks it.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import pandas as pd
import torch

from tasks.training.curated_dataset import MODALITIES, collate
from tasks.training.split_data import SplitData

COLUMNS = ("patient_id", "image_3d", "image_2d", "labs", "notes", "omics")


def _npy(array: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype=np.float32), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _from_npy(text: str) -> torch.Tensor:
    return torch.from_numpy(np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False).astype(np.float32))


def records_from_split(data: SplitData) -> pd.DataFrame:
    """A curated split as records (what `mmfm predict` scores and the model's input example shows)."""
    t, mask = data.tensors, data.tensors["mask"]
    rows = []
    for i, pid in enumerate(data.meta["patient_id"]):
        has = {m: bool(mask[i, MODALITIES.index(m)]) for m in MODALITIES}
        labs = None
        if has["labs"] and "labs" in t:
            kept = t["labs"][i][t["labs"][i][:, 0] >= 0]
            labs = json.dumps([[float(x) for x in row] for row in kept.tolist()])
        omics = None
        if has["omics"] and "omics" in t:
            omics = json.dumps([None if np.isnan(v) else float(v) for v in t["omics"][i].tolist()])
        rows.append({"patient_id": pid,
                     "image_3d": _npy(t["image_3d"][i].numpy()) if has["image_3d"] and "image_3d" in t else None,
                     "image_2d": _npy(t["image_2d"][i].numpy()) if has["image_2d"] and "image_2d" in t else None,
                     "labs": labs, "notes": (data.meta.get("notes_text") or [""] * len(data))[i] or None,
                     "omics": omics})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and value != ""


def batch_from_records(frame: pd.DataFrame, tokenizer: Any, n_omics: int | None,
                       max_text_length: int = 64) -> dict[str, torch.Tensor]:
    """Records -> a model batch (the same collate the training data went through)."""
    missing = [c for c in ("patient_id",) if c not in frame.columns]
    if missing:
        raise ValueError(f"records lack column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    items = []
    for row_no, row in enumerate(frame.to_dict("records")):
        try:
            item = {"image_3d": _from_npy(row["image_3d"]) if _present(row.get("image_3d")) else None,
                    "image_2d": _from_npy(row["image_2d"]) if _present(row.get("image_2d")) else None,
                    "labs": torch.tensor(json.loads(row["labs"]), dtype=torch.float32).reshape(-1, 3)
                    if _present(row.get("labs")) else None,
                    "notes": row["notes"] if _present(row.get("notes")) else None,
                    "omics": torch.tensor([np.nan if v is None else v for v in json.loads(row["omics"])],
                                          dtype=torch.float32) if _present(row.get("omics")) else None}
        except (ValueError, TypeError) as exc:
            raise ValueError(f"record {row_no} (patient {row.get('patient_id')}): unreadable modality "
                             f"({type(exc).__name__})") from None
        if item["omics"] is not None and n_omics is not None and item["omics"].shape[0] != n_omics:
            raise ValueError(f"record {row_no}: omics has {item['omics'].shape[0]} features, the model {n_omics}")
        if item["labs"] is not None and not len(item["labs"]):
            item["labs"] = None
        item["mask"] = torch.tensor([item[m] is not None for m in MODALITIES], dtype=torch.bool)
        item |= {"label": -1, "time": 0.0, "event": False}
        items.append(item)
    batch = collate(items, tokenizer, max_text_length)
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}

"""Per-patient monitoring features from a curated split: demographics, mean of each lab/vital, image acquisition
(scanner and mean intensity of the series the model reads), the model's class probabilities: the tabular side of
drift monitoring (embeddings are the other side).

Why acquisition features: the image encoders are trained to ignore the scanner (site style is nuisance variation),
so their embeddings barely move when a site replaces its scanner (measured on the demo cohort: the radiograph
embeddings of a shifted site were indistinguishable from its reference, p = 0.1-0.2) while the pixels the model
reads changed (+35% intensity, twice the noise). The curated imaging table keeps the scanner (the vendor when it is
on the safe list, the model as a keyed token: equal models give equal tokens, so a new scanner is a new category)
and each series' intensity statistics, so the change is tested where it happens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import yaml

from tasks.training.curated_dataset import MODALITIES_2D, MODALITIES_3D, ROOT
from tasks.training.labs_vocab import OTHER, LabsVocab, feature_names
from tasks.training.split_data import SplitData

LABS_CATALOGUE = ROOT / "data_contracts" / "labs.yaml"
IMAGE_KINDS = {"2d": MODALITIES_2D, "3d": MODALITIES_3D}  # the model's image_2d / image_3d inputs
ACQUISITION = [f"{what}_{kind}" for kind in IMAGE_KINDS for what in ("scanner", "intensity")]


def lab_names(codes: tuple[str, ...] | None = None) -> list[str]:
    """Feature names in the labs encoder's index order: those of the vocabulary the data were read with (learned
    from the training split: the catalogue's name for a catalogued code, `loinc_<code>` else, `other`), or the
    catalogue's `labs` section for data read with the catalogue vocabulary of models saved before."""
    if codes is None:
        return list(yaml.safe_load(LABS_CATALOGUE.read_text())["labs"])
    return feature_names(LabsVocab(tuple(codes), ((1.0, 3.0),) * len(codes), other=bool(codes) and codes[-1] == OTHER),
                         LABS_CATALOGUE)


def acquisition(curated: Path) -> pd.DataFrame:
    """patient_id -> scanner_2d/3d ("manufacturer model") and intensity_2d/3d (mean pixel value) of the first series
    by study date of each kind, the series the dataset feeds the model (tasks/training/curated_dataset.py:_image)."""
    path = Path(curated) / "imaging.parquet"
    frame = pd.DataFrame(columns=["patient_id", *ACQUISITION])
    if not path.exists():
        return frame.set_index("patient_id")
    imaging = pl.read_parquet(path, columns=["patient_id", "modality", "manufacturer", "model", "value_mean",
                                             "study_date", "shard"])
    imaging = imaging.filter(pl.col("shard").is_not_null()).sort("study_date", nulls_last=True, maintain_order=True)
    parts = []
    for kind, modalities in IMAGE_KINDS.items():
        first = (imaging.filter(pl.col("modality").is_in(list(modalities)))
                 .group_by("patient_id", maintain_order=True).first())
        parts.append(first.select(
            "patient_id",
            pl.concat_str([pl.col("manufacturer").fill_null("?"), pl.col("model").fill_null("?")],
                          separator=" ").alias(f"scanner_{kind}"),
            pl.col("value_mean").cast(pl.Float64).alias(f"intensity_{kind}")).to_pandas().set_index("patient_id"))
    return pd.concat(parts, axis=1).reindex(columns=ACQUISITION)


def patient_features(data: SplitData, preds: dict[str, np.ndarray] | None = None,
                     curated: Path | None = None) -> tuple[pd.DataFrame, dict]:
    """-> (frame with site + features, feature groups {demographics, labs, acquisition (with `curated`),
    predictions (with `preds`)})."""
    frame = pd.DataFrame({"site": [s or "unknown" for s in data.meta["site"]],
                          "sex": [s or "unknown" for s in data.meta["sex"]],
                          "age_band": [a or "unknown" for a in data.meta["age_band"]]})
    names = lab_names(data.lab_codes)
    if "labs" in data.tensors:
        labs = data.tensors["labs"].numpy()
        for i, name in enumerate(names):
            hit = labs[..., 0] == i
            total = np.where(hit, labs[..., 1], 0.0).sum(1)
            count = hit.sum(1)
            frame[f"lab_{name}"] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    groups = {"demographics": ["sex", "age_band"], "labs": [c for c in frame.columns if c.startswith("lab_")]}
    if curated is not None:
        per_patient = acquisition(curated).reindex(list(data.meta["patient_id"]))
        for column in ACQUISITION:
            frame[column] = per_patient[column].to_numpy()
        frame[[f"intensity_{k}" for k in IMAGE_KINDS]] = frame[[f"intensity_{k}" for k in IMAGE_KINDS]].astype(float)
        groups["acquisition"] = list(ACQUISITION)
    if preds is not None:
        for i in range(preds["class_probs"].shape[1]):
            frame[f"p_class{i}"] = preds["class_probs"][:, i]
        groups["predictions"] = [c for c in frame.columns if c.startswith("p_class")]
    return frame, groups

"""Simple per-modality models read straight from a cohort's files: does the signal survive rendering?

The truth file gives the exact posterior from the latent findings. This module checks the other side: a plain
reader of the written extracts (pixels, NDJSON, note text, expression matrix) plus a cross-validated logistic
regression recovers a real part of each modality's signal, and stays clearly below what all modalities together
allow. Used by tests and by bench/synth_signal.py; not by the platform itself.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import pydicom
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from data_contracts import lab_by_loinc
from tasks.synth.model import LAB_BY_KEY, to_latent
from tasks.synth.truth import load_truth, macro_auroc, posterior_matrix

CXR_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1"}


def _site_dirs(cohort: Path) -> list[Path]:
    return sorted(p for p in Path(cohort).iterdir() if p.is_dir() and p.name.startswith("site-"))


def _ndjson(path: Path):
    for line in path.read_text().splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


def lab_features(cohort: Path) -> dict[str, np.ndarray]:
    """fhir id -> per-LOINC mean of the latent-scale value (NaN where a lab is absent)."""
    labs = lab_by_loinc()
    keys = sorted(LAB_BY_KEY)
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for site in _site_dirs(cohort):
        for obs in _ndjson(site / "fhir" / "Observation.ndjson"):
            lab, q = labs.get(obs["code"]["coding"][0]["code"]), obs.get("valueQuantity", {})
            if lab is None or q.get("unit") not in lab.units:
                continue
            canonical = lab.to_canonical(q["value"], q["unit"])
            if not lab.plausible[0] <= canonical <= lab.plausible[1]:
                continue
            pid = obs["subject"]["reference"].removeprefix("Patient/")
            if LAB_BY_KEY[lab.key].transform == "deficit":  # saturation reported as 100 %: deficit below rounding
                canonical = min(canonical, 99.5)
            values[pid][lab.key].append(float(to_latent(LAB_BY_KEY[lab.key], np.array([canonical]))[0]))
    return {pid: np.array([np.mean(v[k]) if v.get(k) else np.nan for k in keys]) for pid, v in values.items()}


def note_texts(cohort: Path) -> dict[str, str]:
    """fhir id -> the clinical note's text."""
    out = {}
    for site in _site_dirs(cohort):
        for doc in _ndjson(site / "fhir" / "DocumentReference.ndjson"):
            data = doc["content"][0]["attachment"]["data"]
            out[doc["subject"]["reference"].removeprefix("Patient/")] = base64.b64decode(data).decode()
    return out


def omics_features(cohort: Path) -> dict[str, np.ndarray]:
    """MRN -> expression vector (samples with unreadable values or unknown MRNs are skipped)."""
    out = {}
    for site in _site_dirs(cohort):
        sheet = pl.read_csv(site / "omics" / "sample_sheet.tsv", separator="\t")
        mrn = dict(zip(sheet["sample_id"], sheet["mrn"], strict=True))
        for row in (site / "omics" / "expression.tsv").read_text().splitlines()[1:]:
            sid, *cells = row.split("\t")
            try:
                out[mrn[sid]] = np.array(cells, dtype=float)
            except ValueError:
                continue
    return out


def image_features(cohort: Path, grid: int = 8) -> dict[str, np.ndarray]:
    """MRN -> the radiograph average-pooled to grid x grid, standardised per image (removes scanner scale)."""
    out = {}
    for site in _site_dirs(cohort):
        for path in sorted((site / "dicom").rglob("*.dcm")):
            try:
                ds = pydicom.dcmread(path)
                if ds.SOPClassUID not in CXR_SOP_CLASSES:
                    continue
                img = ds.pixel_array.astype(float)
            except Exception:  # noqa: BLE001,S112 - truncated files carry no signal
                continue
            n = img.shape[0] // grid
            pooled = img[: n * grid, : n * grid].reshape(grid, n, grid, n).mean(axis=(1, 3)).ravel()
            out[str(ds.PatientID)] = (pooled - pooled.mean()) / (pooled.std() + 1e-6)
    return out


def _cv_probs(x, y: np.ndarray, model) -> np.ndarray:
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    return cross_val_predict(model, x, y, cv=folds, method="predict_proba")


def probe(cohort: Path) -> dict[str, dict]:
    """Per modality: 5-fold logistic-regression AUROC from the files, the exact single-modality posterior's AUROC
    and the full posterior's AUROC, all on the patients whose files carry that modality."""
    truth = load_truth(cohort)
    ids = {"labs": "fhir_id", "notes": "fhir_id", "omics": "mrn", "imaging": "mrn"}
    feats = {"labs": lab_features(cohort), "notes": note_texts(cohort), "omics": omics_features(cohort),
             "imaging": image_features(cohort)}
    models = {  # regularisation picked once on a seed-7 cohort of 1,000; 200 genes need a strong prior
        "labs": make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5)),
        "imaging": make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5)),
        "omics": make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.001)),
        "notes": make_pipeline(CountVectorizer(ngram_range=(1, 2), min_df=3, binary=True),
                               LogisticRegression(max_iter=3000, C=0.1)),
    }
    out = {}
    for m, table in feats.items():
        keys = truth[ids[m]].to_list()
        rows = [i for i, k in enumerate(keys) if k in table]
        y = truth["label"].to_numpy()[rows]
        if m == "notes":
            x = [table[keys[i]] for i in rows]
        else:
            x = np.stack([table[keys[i]] for i in rows])
            x = np.where(np.isnan(x), np.nanmean(x, axis=0), x)
        probs = _cv_probs(x, y, models[m])
        out[m] = {"patients": len(rows), "simple_model_auroc": round(macro_auroc(y, probs), 4),
                  "exact_single_modality_auroc": round(macro_auroc(y, posterior_matrix(truth, m)[rows]), 4),
                  "bayes_auroc_same_patients": round(macro_auroc(y, posterior_matrix(truth)[rows]), 4)}
    return out

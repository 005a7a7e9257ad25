"""Baselines trained in the same run as the model they are compared with, so a gain is measured, not claimed.

- single modality: the same architecture, trained from scratch on the diagnosis labels seeing one modality only,
  scored on the test patients who have that modality (next to the fused model on the same patients);
- late fusion (HAIM style): the backbone's per-modality embeddings, concatenated with presence flags, into a
  multinomial logistic regression;
- Bayes: the generator's exact posterior on the same test patients, when the cohort is synthetic (truth file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from models.model import MODALITIES
from tasks.evaluation.assess import headline
from tasks.synth.truth import load_truth, posterior_matrix
from tasks.training.fit import from_scratch, new_model, predict
from tasks.training.loop import TrainConfig
from tasks.training.split_data import SplitData


def having(data: SplitData, modality: str) -> SplitData:
    """The patients who have `modality`."""
    return data.take(torch.nonzero(data.tensors["mask"][:, MODALITIES.index(modality)]).flatten())


def single_modality(model_name: str, train: SplitData, val: SplitData, test: SplitData, fused, cfg: TrainConfig,
                    modalities: list[str], n_boot: int, eval_every: int) -> dict:
    """modality -> {patients, single (the one-modality model), fused_same_patients (all their modalities),
    fused_only (the fused model given that modality only)} on the test patients who have it."""
    n_omics = train.tensors["omics"].shape[1] if "omics" in train.tensors else None
    out = {}
    for m in modalities:
        tr, va, te = having(train, m).only(m), having(val, m).only(m), having(test, m)
        if len(tr) < 8 or len(te) < 8:
            out[m] = {"skipped": f"too few patients with {m} (train {len(tr)}, test {len(te)})"}
            continue
        trained = from_scratch(new_model(model_name, cfg.seed, n_omics), tr, "diagnosis", cfg,
                               val=va if len(va) else None, eval_every=eval_every)
        alone = te.only(m)
        out[m] = {"patients": len(te),
                  "single": headline("diagnosis", alone, predict(trained.model, alone), n_boot),
                  "fused_same_patients": headline("diagnosis", te, predict(fused, te), n_boot),
                  "fused_only": headline("diagnosis", alone, predict(fused, alone), n_boot)}
    return out


def _features(preds: dict[str, np.ndarray], modalities: list[str]) -> np.ndarray:
    cols = []
    for m in modalities:
        present = preds[f"present_{m}"].astype(float)[:, None]
        cols += [preds[f"unimodal_{m}"] * present, present]
    return np.hstack(cols)


def late_fusion(backbone, train: SplitData, test: SplitData, n_boot: int, seed: int = 0) -> dict:
    """Per-modality backbone embeddings + presence flags -> standardised multinomial logistic regression."""
    mods = list(backbone.modalities)
    x_train, x_test = _features(predict(backbone, train), mods), _features(predict(backbone, test), mods)
    y = train.tensors["label"].numpy()
    known = y >= 0
    if len(np.unique(y[known])) < 2:  # a tiny or skewed train split: nothing to fit
        return {"skipped": f"the train split has {len(np.unique(y[known]))} diagnosis class(es) among "
                           f"{int(known.sum())} labelled patients: a classifier needs two",
                "train_patients": int(known.sum())}
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, random_state=seed))
    clf.fit(x_train[known], y[known])
    probs = np.zeros((len(test), 4))
    probs[:, clf.classes_] = clf.predict_proba(x_test)
    return {"metrics": headline("diagnosis", test, {"class_probs": probs}, n_boot),
            "features": int(x_train.shape[1]), "train_patients": int(known.sum())}


def bayes(test: SplitData, cohorts: list[Path], keys, n_boot: int) -> dict | None:
    """The exact posterior of the generator on the test patients (matched by keyed pseudonym of site + MRN)."""
    truth = pl.concat([load_truth(Path(c)) for c in cohorts], how="diagonal_relaxed")
    pseudonyms = [keys.patient(site, str(mrn)) for site, mrn in zip(truth["site"], truth["mrn"], strict=True)]
    row = {p: i for i, p in enumerate(pseudonyms)}
    index = [row.get(pid) for pid in test.meta["patient_id"]]
    matched = [i for i, r in enumerate(index) if r is not None]
    if not matched:
        return None
    probs = posterior_matrix(truth, "full")[[index[i] for i in matched]]
    subset = test.take(matched)
    return {"patients": len(matched), "metrics": headline("diagnosis", subset, {"class_probs": probs}, n_boot)}

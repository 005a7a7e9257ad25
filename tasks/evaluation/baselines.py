"""Baselines trained in the same run as the model they are compared with, so a gain is measured, not claimed.

- single modality: the same architecture, trained from scratch on the diagnosis labels seeing one modality only,
  scored on the test patients who have that modality (next to the fused model on the same patients);
- late fusion (HAIM style): the backbone's per-modality embeddings, concatenated with presence flags, into a
  multinomial logistic regression;
- same inputs (risk, survival): those features plus demographics into a logistic regression (one-year mortality) and
  a ridge Cox model (survival), standardised, fit on the train split;
- Bayes / oracle: when the cohort is synthetic (truth file), the generator's exact diagnosis posterior and its exact
  log-hazard (risk and survival) on the same test patients: the ceiling, never a bar to clear.

Every comparison is a paired bootstrap of the primary metric, fused minus baseline on the same patients
(`tasks.evaluation.metrics.paired_difference`); `comparisons` collects them per task for the promotion gate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv

from models.model import MODALITIES
from tasks.evaluation.assess import KIND, PRIMARY, headline, task_arrays
from tasks.evaluation.metrics import paired_difference
from tasks.synth.model import HAZARD_AGE_PER_DECADE, HAZARD_BASE, HAZARD_CLASS, HAZARD_MODULES, MODULES
from tasks.synth.truth import load_truth, posterior_matrix
from tasks.training.fit import from_scratch, new_model, predict
from tasks.training.loop import TrainConfig
from tasks.training.split_data import RISK_HORIZON_DAYS, SplitData

OUTPUT = {"diagnosis": "class_probs", "risk": "risk_prob", "survival": "log_risk"}  # the prediction each task scores
LR_C = 0.1  # inverse ridge strength of every logistic regression here (late fusion, risk)
COX_ALPHA = 10.0  # ridge penalty 0.5 * alpha * |beta|^2 on the summed partial likelihood: as strong as LR_C's 1 / (2C)
SAME_INPUTS = {"risk": "logistic_regression", "survival": "cox"}  # the comparison name of each same-inputs model


def having(data: SplitData, modality: str) -> SplitData:
    """The patients who have `modality`."""
    return data.take(torch.nonzero(data.tensors["mask"][:, MODALITIES.index(modality)]).flatten())


def compare(task: str, data: SplitData, fused: np.ndarray, baseline: np.ndarray, n_boot: int, seed: int = 0,
            baseline_name: str | None = None) -> dict:
    """fused - baseline in the task's primary metric on `data`'s patients, paired bootstrap CI (both predictions
    are for exactly these patients, in order); {"skipped": why} when the metric cannot be measured on them."""
    target = task_arrays(task, data, {OUTPUT[task]: fused})[:-1]
    try:
        d = paired_difference(KIND[task], target, fused, baseline, n_boot=n_boot, seed=seed)
    except ValueError as exc:
        return {"skipped": str(exc)}
    out = {k: (round(float(d[k]), 4) if d[k] is not None and np.isfinite(d[k]) else None)
           for k in ("value", "ci_low", "ci_high", "a", "b")}
    if out["value"] is None:
        return {"skipped": f"{PRIMARY[KIND[task]]} is undefined on these {d['n']} patients (one class or no "
                           "comparable pair)", "n": d["n"]}
    return {"metric": PRIMARY[KIND[task]], **({"baseline": baseline_name} if baseline_name else {}), **out,
            "n": d["n"], "n_boot_used": d["n_boot_used"]}


def single_modality(model_name: str, train: SplitData, val: SplitData, test: SplitData, fused, cfg: TrainConfig,
                    modalities: list[str], n_boot: int, eval_every: int) -> dict:
    """modality -> {patients, single (the one-modality model), fused_same_patients (all their modalities),
    fused_only (the fused model given that modality only), fused_minus_single (paired)} on the test patients who
    have it."""
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
        single, both = predict(trained.model, alone), predict(fused, te)
        out[m] = {"patients": len(te),
                  "single": headline("diagnosis", alone, single, n_boot),
                  "fused_same_patients": headline("diagnosis", te, both, n_boot),
                  "fused_only": headline("diagnosis", alone, predict(fused, alone), n_boot),
                  "fused_minus_single": compare("diagnosis", te, both["class_probs"], single["class_probs"],
                                                n_boot, baseline_name=f"single_modality.{m}")}
    return out


def _features(preds: dict[str, np.ndarray], modalities: list[str]) -> np.ndarray:
    cols = []
    for m in modalities:
        present = preds[f"present_{m}"].astype(float)[:, None]
        cols += [preds[f"unimodal_{m}"] * present, present]
    return np.hstack(cols)


def embedding_features(backbone, data: SplitData) -> np.ndarray:
    """(N, F): each modality's backbone embedding (zeros where absent) and its presence flag: late fusion's input."""
    return _features(predict(backbone, data), list(backbone.modalities))


def demographics(train: SplitData, test: SplitData) -> tuple[np.ndarray, np.ndarray, str]:
    """(train columns, test columns, source). The model's own demographics input when the split carries it
    ((N, 2) age in years, male; NaN unknown -> value 0 + a known flag), else sex and age band one-hot from the
    patient metadata (categories of the train split), else nothing."""
    if "demographics" in train.tensors and "demographics" in test.tensors:
        def cols(data: SplitData) -> np.ndarray:
            x = data.tensors["demographics"].float().numpy()
            known = np.isfinite(x)
            age = np.where(known[:, 0], (x[:, 0] - 60.0) / 20.0, 0.0)
            return np.stack([age, age ** 2, np.where(known[:, 1], x[:, 1], 0.5), *known.T.astype(float)], 1)
        return cols(train), cols(test), "demographics input (age, sex)"
    keys = [k for k in ("sex", "age_band") if train.meta.get(k) and test.meta.get(k)]
    if not keys:
        return np.zeros((len(train), 0)), np.zeros((len(test), 0)), "none"
    levels = [(k, v) for k in keys for v in sorted({str(x) for x in train.meta[k] if x is not None})]

    def onehot(data: SplitData) -> np.ndarray:
        return np.array([[float(str(data.meta[k][i]) == v) for k, v in levels] for i in range(len(data))])
    return onehot(train), onehot(test), f"patient metadata ({', '.join(keys)})"


def late_fusion(backbone, train: SplitData, test: SplitData, n_boot: int, seed: int = 0,
                fused_probs: np.ndarray | None = None,
                features: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Per-modality backbone embeddings + presence flags -> standardised multinomial logistic regression; with
    `fused_probs` (the fused model on `test`) also fused_minus_late_fusion (paired, every test patient)."""
    x_train, x_test = features or (embedding_features(backbone, train), embedding_features(backbone, test))
    y = train.tensors["label"].numpy()
    known = y >= 0
    if len(np.unique(y[known])) < 2:  # a tiny or skewed train split: nothing to fit
        return {"skipped": f"the train split has {len(np.unique(y[known]))} diagnosis class(es) among "
                           f"{int(known.sum())} labelled patients: a classifier needs two",
                "train_patients": int(known.sum())}
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=LR_C, max_iter=2000, random_state=seed))
    clf.fit(x_train[known], y[known])
    probs = np.zeros((len(test), 4))
    probs[:, clf.classes_] = clf.predict_proba(x_test)
    out = {"metrics": headline("diagnosis", test, {"class_probs": probs}, n_boot),
           "features": int(x_train.shape[1]), "train_patients": int(known.sum())}
    if fused_probs is not None:
        out["fused_minus_late_fusion"] = compare("diagnosis", test, fused_probs, probs, n_boot, seed, "late_fusion")
    return out


def _fit_same_inputs(task: str, x: np.ndarray, data: SplitData, seed: int):
    """The fitted standardised model, or the reason none can be fitted on these train patients."""
    t = data.tensors
    if task == "risk":
        y = t["risk_label"].numpy()
        known = np.isfinite(y)
        if len(np.unique(y[known])) < 2:
            return f"the train split has {len(np.unique(y[known]))} one-year outcome(s) among {int(known.sum())} " \
                   "patients followed for a year: a classifier needs both"
        model = make_pipeline(StandardScaler(), LogisticRegression(C=LR_C, max_iter=2000, random_state=seed))
        return model.fit(x[known], y[known].astype(int))
    event, time = t["event"].numpy().astype(bool), t["time"].numpy().astype(float)
    keep = np.isfinite(time)
    if not event[keep].any():
        return "the train split has no event: a Cox model needs one"
    model = make_pipeline(StandardScaler(), CoxPHSurvivalAnalysis(alpha=COX_ALPHA, ties="efron"))
    try:
        return model.fit(x[keep], Surv.from_arrays(event=event[keep], time=time[keep]))
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        return f"the Cox fit failed ({exc})"


def same_inputs(task: str, train: SplitData, test: SplitData, features: tuple[np.ndarray, np.ndarray],
                fused: np.ndarray, n_boot: int, seed: int = 0) -> dict:
    """risk: logistic regression of death within a year; survival: ridge Cox (sksurv CoxPHSurvivalAnalysis), on
    `features` (train, test) standardised; metrics on `test` and fused_minus_baseline (paired, every test patient),
    `fused` being the fine-tuned model's risk_prob or log_risk on `test`."""
    x_train, x_test = features
    fitted = _fit_same_inputs(task, x_train, train, seed)
    out: dict = {"model": SAME_INPUTS[task], "features": int(x_train.shape[1])}
    out |= {"C": LR_C} if task == "risk" else {"alpha": COX_ALPHA, "ties": "efron"}
    if isinstance(fitted, str):
        return {**out, "skipped": fitted}
    pred = fitted.predict_proba(x_test)[:, 1] if task == "risk" else fitted.predict(x_test)  # P(death) / log-hazard
    return {**out, "metrics": headline(task, test, {OUTPUT[task]: pred}, n_boot),
            "fused_minus_baseline": compare(task, test, fused, pred, n_boot, seed, SAME_INPUTS[task])}


def matched_truth(test: SplitData, cohorts: list[Path], keys) -> tuple[pl.DataFrame, list[int]] | None:
    """(the truth rows of the matched test patients, in order; their positions in `test`), matched by keyed
    pseudonym of site + MRN; None when no test patient is in the truth files."""
    truth = pl.concat([load_truth(Path(c)) for c in cohorts], how="diagonal_relaxed")
    pseudonyms = [keys.patient(site, str(mrn)) for site, mrn in zip(truth["site"], truth["mrn"], strict=True)]
    row = {p: i for i, p in enumerate(pseudonyms)}
    index = [row.get(pid) for pid in test.meta["patient_id"]]
    matched = [i for i, r in enumerate(index) if r is not None]
    if not matched:
        return None
    return truth[[index[i] for i in matched]], matched


def bayes(test: SplitData, cohorts: list[Path], keys, n_boot: int,
          fused_probs: np.ndarray | None = None) -> dict | None:
    """The exact posterior of the generator on the test patients (matched by keyed pseudonym of site + MRN); with
    `fused_probs` also fused_minus_bayes on those patients (negative: how far below the ceiling)."""
    found = matched_truth(test, cohorts, keys)
    if found is None:
        return None
    truth, matched = found
    probs, subset = posterior_matrix(truth, "full"), test.take(matched)
    out = {"patients": len(matched), "metrics": headline("diagnosis", subset, {"class_probs": probs}, n_boot)}
    if fused_probs is not None:
        out["fused_minus_bayes"] = compare("diagnosis", subset, fused_probs[matched], probs, n_boot,
                                           baseline_name="bayes")
    return out


def oracle_log_hazard(truth: pl.DataFrame) -> np.ndarray:
    """The generator's log-hazard (tasks/synth/model.py: hazard = HAZARD_BASE * exp(class effect + age effect +
    module effects)) from truth columns: the true class, the age, and the module scores the truth file records (the
    generator's estimate from the expression profile; the exact draws are not written). (N,) per year."""
    scores = truth.select([f"score_{m}" for m in MODULES]).to_numpy().astype(float)
    return (np.log(HAZARD_BASE) + HAZARD_CLASS[truth["label"].to_numpy().astype(int)]
            + HAZARD_AGE_PER_DECADE * (truth["age"].to_numpy().astype(float) - 60.0) / 10.0 + scores @ HAZARD_MODULES)


def oracle(test: SplitData, cohorts: list[Path], keys, n_boot: int, fused: dict[str, np.ndarray]) -> dict | None:
    """The oracle on the matched test patients: log-hazard (survival) and P(death within the risk horizon) =
    1 - exp(-hazard * horizon) (risk); per task in `fused` (task -> the fine-tuned model's prediction on `test`):
    metrics and fused_minus_oracle. It knows the true class, so no model reading the inputs can reach it."""
    found = matched_truth(test, cohorts, keys)
    if found is None:
        return None
    truth, matched = found
    subset, log_h = test.take(matched), oracle_log_hazard(truth)
    preds = {"survival": log_h, "risk": 1.0 - np.exp(-np.exp(log_h) * RISK_HORIZON_DAYS / 365.25)}
    out: dict = {"patients": len(matched)}
    for task in (t for t in ("risk", "survival") if t in fused):
        out[task] = {"metrics": headline(task, subset, {OUTPUT[task]: preds[task]}, n_boot),
                     "fused_minus_oracle": compare(task, subset, fused[task][matched], preds[task], n_boot,
                                                   baseline_name="oracle")}
    return out


def _best_single(singles: dict) -> str | None:
    """The single-modality model with the highest primary metric (each on its own patients), among those compared."""
    scored = {m: r["single"]["auroc_macro"]["value"] for m, r in singles.items()
              if "value" in r.get("fused_minus_single", {}) and r["single"]["auroc_macro"]["value"] is not None}
    return max(scored, key=lambda m: scored[m]) if scored else None


def _missing(entry: dict | None, what: str) -> dict:
    return {"skipped": (entry or {}).get("skipped") or f"no {what} was measured"}


def comparisons(base: dict, tasks: list[str]) -> dict:
    """task -> baseline name -> fused minus baseline (paired, same patients): the gate's input, gathered from the
    baselines. diagnosis: single_modality.<m>, best_single (the best of them, named in `baseline`), late_fusion,
    bayes; risk: logistic_regression, oracle; survival: cox, oracle. Not measured: {"skipped": why}."""
    out: dict = {}
    if "diagnosis" in tasks:
        singles = base.get("single_modality") or {}
        diag = {f"single_modality.{m}": r.get("fused_minus_single") or _missing(r, f"{m} baseline")
                for m, r in singles.items()}
        best = _best_single(singles)
        diag["best_single"] = dict(singles[best]["fused_minus_single"]) if best else {
            "skipped": "no single-modality baseline could be compared: "
                       + ("; ".join(f"{m}: {r.get('skipped', 'not measured')}" for m, r in singles.items())
                          or "none trained")}
        lf = base.get("late_fusion") or {}
        diag["late_fusion"] = lf.get("fused_minus_late_fusion") or _missing(lf, "late fusion baseline")
        if isinstance(base.get("bayes"), dict) and "fused_minus_bayes" in base["bayes"]:
            diag["bayes"] = base["bayes"]["fused_minus_bayes"]
        out["diagnosis"] = diag
    for task in (t for t in ("risk", "survival") if t in tasks):
        same = base.get(f"{task}_same_inputs") or {}
        out[task] = {SAME_INPUTS[task]: same.get("fused_minus_baseline") or _missing(same, f"{SAME_INPUTS[task]}")}
        found = (base.get("oracle") or {}).get(task) if isinstance(base.get("oracle"), dict) else None
        if found:
            out[task]["oracle"] = found["fused_minus_oracle"]
    return out

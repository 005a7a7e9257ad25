"""Real data: 5-fold C-index of our survival head against a Cox proportional-hazards baseline, same folds, same
features, on scikit-survival's breast_cancer set brought in through the omics ingest.

    python bench/breast_cancer.py [--folds 5] [--steps 200] [--seed 0]

Chain: export (tasks/realdata/breast_cancer.py) -> land + ingest_fhir + ingest_omics into a temporary workspace
(what `mmfm ingest fhir` then `mmfm ingest omics` call) -> staged omics table joined with outcomes through the keyed
pseudonym -> 76 probe sets + 6 clinical covariates, z-scored with training-fold statistics -> outer folds
stratified by event.

Per outer fold:
  cox(a=0.1)   sksurv CoxPHSurvivalAnalysis, ridge alpha 0.1 (the baseline as specified, no tuning)
  cox(inner)   the same with alpha picked from ALPHAS on an inner validation split of the training fold
  ours         MultimodalModel from the tiny config with only the omics tower (omics.n_features = 82), trained
               from scratch with objective "survival" (Cox partial likelihood on the `risk` head) by
               tasks.training.loop.train; the setting is picked from SETTINGS on the same inner split.
There is no pre-training: with one modality the InfoNCE / masked-modality objectives have no pair to contrast, and
pre-training on the same 158 patients' expression would only be a disguised extra fit. So "fine-tuned" here means
the whole omics tower + fusion + Cox head trained on the survival objective. Each step sees the whole training
fold: the partial likelihood is defined over risk sets, and a minibatch would shrink them. The clinical covariates
enter the omics tower beside the probe sets (the model has no tabular tower); its per-sample LayerNorm therefore
normalises them together with the genes, which the Cox baseline does not do. Nothing is chosen by
looking at an outer test fold; the grids below were fixed before any run. One inner split (2/3 fit, 1/3 score),
not inner CV, because a training run costs ~20 ms a step on a shared 2-core CPU and the bench has 3 minutes; both
models are selected the same way.
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.metrics import concordance_index_censored
from sksurv.util import Surv

from models.model import MultimodalModel
from tasks.realdata.breast_cancer import Cohort

ALPHAS = (0.1, 1.0, 10.0, 100.0)  # Cox ridge penalties for the inner search
INNER_VAL = 3  # the inner validation set is 1/3 of the training fold (stratified by event)


@dataclass(frozen=True)
class Setting:
    """One of our training settings: optimiser, size of the omics tower, regularisation, length."""

    name: str
    lr: float = 1e-3
    weight_decay: float = 0.01
    hidden: int = 64
    dropout: float = 0.0
    steps_scale: float = 1.0  # steps = round(--steps * steps_scale)


SETTINGS = (Setting("base"), Setting("short", steps_scale=0.25), Setting("reg", weight_decay=0.1, dropout=0.3),
            Setting("small", hidden=16, dropout=0.3, lr=3e-3))


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """z-score every array with the training rows' mean and sd (a constant column keeps sd 1)."""
    mean = np.nanmean(train, 0)
    sd = np.nanstd(train, 0)
    sd[~(sd > 0)] = 1.0
    return [(a - mean) / sd for a in (train, *others)]


def cindex(event: np.ndarray, time_: np.ndarray, risk: np.ndarray) -> float:
    return float(concordance_index_censored(event.astype(bool), time_, risk)[0])


def cox_risk(xtr, ttr, etr, xte, alpha: float) -> np.ndarray:
    """Ridge Cox PH fitted on the training rows (missing values at the training mean, i.e. 0 after z-scoring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter at small alpha; the C-index says how it did
        model = CoxPHSurvivalAnalysis(alpha=alpha, ties="breslow", n_iter=200).fit(
            np.nan_to_num(xtr), Surv.from_arrays(etr.astype(bool), ttr))
    return model.predict(np.nan_to_num(xte))


def build_model(n_features: int, s: Setting) -> MultimodalModel:
    """The tiny architecture with every tower but omics removed."""
    from models.factory import model_config

    cfg = model_config("tiny")
    cfg.image_3d = cfg.image_2d = cfg.labs = cfg.notes = None
    cfg.omics = replace(cfg.omics, n_features=n_features, hidden=s.hidden, dropout=s.dropout)
    cfg.modality_dropout = 0.0  # one modality: nothing to drop
    return MultimodalModel(cfg)


def ours_risk(xtr, ttr, etr, xte, s: Setting, steps: int, seed: int) -> np.ndarray:
    """Train from scratch on the training rows with the survival objective; log-risk of the test rows."""
    from tasks.training.loop import TrainConfig, train

    torch.manual_seed(seed)
    model = build_model(xtr.shape[1], s)
    batch = {"omics": torch.tensor(xtr, dtype=torch.float32), "time": torch.tensor(ttr, dtype=torch.float32),
             "event": torch.tensor(etr, dtype=torch.bool)}
    n = max(1, round(steps * s.steps_scale))
    cfg = TrainConfig(steps=n, lr=s.lr, weight_decay=s.weight_decay, warmup_steps=max(1, n // 10), seed=seed,
                      objective="survival", batch_size=len(xtr))
    train(model, lambda step: batch, cfg)
    model.eval()
    with torch.no_grad():
        return model({"omics": torch.tensor(xte, dtype=torch.float32)})["risk"].double().numpy()


def _inner_pick(x, t, e, fit, options, seed: int):
    """The option with the best C-index on an inner validation split of the training rows; -> (option, scores)."""
    fit_rows, val = next(StratifiedKFold(INNER_VAL, shuffle=True, random_state=seed).split(x, e))
    xfit, xval = standardise(x[fit_rows], x[val])
    scores = [cindex(e[val], t[val], fit(xfit, t[fit_rows], e[fit_rows], xval, opt)) for opt in options]
    return options[int(np.argmax(scores))], scores


def cross_validate(cohort: Cohort, folds: int = 5, steps: int = 200, seed: int = 0,
                   settings: tuple[Setting, ...] = SETTINGS, alphas: tuple[float, ...] = ALPHAS,
                   say=lambda _: None) -> list[dict]:
    """One dict per outer fold: sizes, C-index of cox(a=0.1), cox(inner alpha), ours, and what inner CV chose."""
    x, t, e = cohort.x, cohort.time, cohort.event
    rows = []
    outer = StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, e)
    for k, (tr, te) in enumerate(outer):
        xtr, xte = standardise(x[tr], x[te])
        alpha, _ = _inner_pick(x[tr], t[tr], e[tr], lambda a, b, c, d, o: cox_risk(a, b, c, d, o), list(alphas), seed)
        pick, _ = _inner_pick(x[tr], t[tr], e[tr], lambda a, b, c, d, o: ours_risk(a, b, c, d, o, steps, seed),
                              list(settings), seed)
        row = {"fold": k, "n_test": len(te), "events": int(e[te].sum()),
               "cox_fixed": cindex(e[te], t[te], cox_risk(xtr, t[tr], e[tr], xte, 0.1)),
               "cox_inner": cindex(e[te], t[te], cox_risk(xtr, t[tr], e[tr], xte, alpha)),
               "ours": cindex(e[te], t[te], ours_risk(xtr, t[tr], e[tr], xte, pick, steps, seed)),
               "alpha": alpha, "setting": pick.name}
        say(row)
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> dict:
    out = {}
    for key in ("cox_fixed", "cox_inner", "ours"):
        v = np.array([r[key] for r in rows])
        out[key] = {"mean": round(float(v.mean()), 4), "sd": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4)}
    return out


def _keys():
    """The deployment key when set; otherwise a throwaway one (the workspace is deleted; results do not depend on
    it because rows are ordered by the exported ids, not by pseudonym)."""
    from tasks.deid import Pseudonymizer, key_from_settings
    from tasks.deid.errors import PseudonymKeyError

    try:
        return Pseudonymizer(key_from_settings())
    except PseudonymKeyError:
        return Pseudonymizer(secrets.token_hex(32).encode())


def main() -> None:
    from tasks.realdata.breast_cancer import build_cohort
    from tasks.workspace import Workspace

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=200, help="training steps of a scale-1 setting")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)  # tiny matrices: threads only contend on a shared machine
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cohort, results = build_cohort(Path(tmp) / "export", Workspace(Path(tmp) / "ws"), _keys())
    ingest = {k: {"received": r.received, "ingested": r.ingested, "quarantined": r.quarantined}
              for k, r in results.items()}
    print(f"ingest: {ingest}; cohort {cohort.x.shape[0]} patients x {cohort.x.shape[1]} features, "
          f"{int(cohort.event.sum())} events ({time.perf_counter() - t0:.1f} s)")
    print(f"{'fold':>4} {'n_test':>6} {'events':>6} {'cox(a=0.1)':>10} {'cox(inner)':>10} {'ours':>7}  inner picks")
    rows = cross_validate(cohort, args.folds, args.steps, args.seed, say=lambda r: print(
        f"{r['fold']:>4} {r['n_test']:>6} {r['events']:>6} {r['cox_fixed']:>10.4f} {r['cox_inner']:>10.4f} "
        f"{r['ours']:>7.4f}  alpha={r['alpha']:g}, {r['setting']}", flush=True))
    s = summary(rows)
    print(f"{'mean +- sd':>18} {s['cox_fixed']['mean']:>10.4f} {s['cox_inner']['mean']:>10.4f} "
          f"{s['ours']['mean']:>7.4f}")
    print(f"{'':>18} {s['cox_fixed']['sd']:>10.4f} {s['cox_inner']['sd']:>10.4f} {s['ours']['sd']:>7.4f}")
    print(json.dumps({"bench": "breast_cancer", "folds": args.folds, "steps": args.steps, "seed": args.seed,
                      "patients": int(cohort.x.shape[0]), "features": int(cohort.x.shape[1]), **s,
                      "per_fold": rows, "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()

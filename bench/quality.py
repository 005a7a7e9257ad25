"""What the model learns from the data, measured honestly: every model on the same test patients, paired bootstrap
CIs of the differences, several seeds, a large separately generated test cohort, and the generator's limits beside.

    python bench/quality.py --workspace /tmp/ws1000 --test-workspace /tmp/ws-test [--seeds 0 1 2] [--n-boot 500]

Workspaces: curated synthetic workspaces (`mmfm init` + `mmfm synth` + ingest + validate). Training reads the
train split of --workspace (validation split for stopping); scoring reads every patient of --test-workspace, a cohort
of the same generator configuration drawn with another seed (legitimate only because the data are synthetic: a real
cohort keeps its held-out split; without --test-workspace the workspace's own test split is used). The generator's
truth is matched to curated pseudonyms with each workspace's key (<ws>/.mmfm/pseudonym.key).

Rows (diagnosis macro AUROC; risk = death within 365 days, AUROC; survival C-index):
- Bayes: the generator's exact posterior; ceiling: a logistic regression on the exact latent findings trained on the
  same training patients (a model with perfect encoders); oracle (risk, survival): the exact hazard;
- fused: pre-train (no outcome label), then the experts-then-fusion recipe (tasks/training/experts.py); the same
  recipe from scratch; the earlier joint recipe (`tiny-fusion`, end to end);
- single modality: the fused model's own expert for that modality on top of the demographic prior, i.e. a model
  trained on that modality alone (its phase sees nothing else), scored on the test patients who have it, next to
  the fused model on those same patients (paired);
- late fusion: logistic regression on the backbone's per-modality embeddings + presence flags (HAIM style);
- fused without a modality vs the best single model of the remaining ones, same patients;
- few labels: pre-trained + 10% vs scratch + 10%, same test patients (paired);
- risk and survival: fused vs a logistic / ridge Cox model on the same inputs (backbone features + age, sex).
Each row: mean over seeds (SD); each difference: mean over seeds and the seeds' paired 95% CIs. One JSON line last.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from models.model import MODALITIES
from tasks.deid import Pseudonymizer
from tasks.evaluation.assess import headline
from tasks.evaluation.baselines import (
    compare,
    demographics,
    embedding_features,
    late_fusion,
    oracle_log_hazard,
    same_inputs,
)
from tasks.synth.model import LABS, MODULES, SYMPTOMS
from tasks.synth.truth import load_truth, posterior_matrix
from tasks.training.experts import having
from tasks.training.fit import corpus_tokenizer, finetune, from_scratch, new_model, predict, pretrain
from tasks.training.loop import TrainConfig
from tasks.training.split_data import RISK_HORIZON_DAYS, SplitData, label_fraction, load_split

TIMES: dict[str, float] = {}
TASK_OUT = {"diagnosis": "class_probs", "risk": "risk_prob", "survival": "log_risk"}
METRIC = {"diagnosis": "auroc_macro", "risk": "auroc", "survival": "c_index"}


def timed(name: str, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    TIMES[name] = round(TIMES.get(name, 0.0) + time.perf_counter() - start, 1)
    print(f"  [{time.perf_counter() - start:7.1f}s] {name}", flush=True)
    return out


# ------------------------------------------------------------------------------------------------ data
def truth_for(ws: Path, data: SplitData) -> pl.DataFrame | None:
    """The generator's truth rows of `data`'s patients, in their order (None when not synthetic or unmatched)."""
    key_file = ws / ".mmfm" / "pseudonym.key"
    cohorts = sorted(t.parent.parent for t in (ws / "extracts").glob("*/truth/patients.tsv"))
    if not key_file.exists() or not cohorts:
        return None
    keys = Pseudonymizer(key_file.read_text().strip().encode("utf-8"))
    truth = pl.concat([load_truth(c) for c in cohorts], how="diagonal_relaxed")
    row = {keys.patient(s, str(m)): i for i, (s, m) in enumerate(zip(truth["site"], truth["mrn"], strict=True))}
    index = [row.get(pid) for pid in data.meta["patient_id"]]
    if any(i is None for i in index):
        return None
    return truth[index]


def load(args: argparse.Namespace, model: str) -> dict:
    ws = Path(args.workspace)
    reader = corpus_tokenizer(ws / "data" / "curated", "train", 512, 320, model)
    train, val = (load_split(ws / "data" / "curated", s, reader) for s in ("train", "val"))
    test_ws = Path(args.test_workspace) if args.test_workspace else ws
    test = load_split(test_ws / "data" / "curated", None if args.test_workspace else "test", reader)
    return {"train": train, "val": val, "test": test, "reader": reader,
            "truth_train": truth_for(ws, train), "truth_test": truth_for(test_ws, test)}


# ------------------------------------------------------------------------------------------------ limits
def latent_features(truth: pl.DataFrame) -> np.ndarray:
    """The exact latent findings a perfect encoder would read, with presence flags, age, sex and BNP x heart size."""
    def col(name: str) -> np.ndarray:
        return truth[name].cast(pl.Float64).fill_null(np.nan).to_numpy()

    img, labs = col("present_imaging") > 0, col("present_labs") > 0
    notes, omics = col("present_notes") > 0, col("present_omics") > 0
    ct = img & (col("has_ct") > 0)
    feats = [np.where(img, col("ctr"), 0), np.where(img, col("log_opacity"), 0), np.where(ct, col("log_defect"), 0),
             img, ct, labs, notes, omics, (col("age") - 60) / 20, col("male")]
    for lab in LABS:
        mean = col(f"mean_{lab.key}")
        latent = np.log(np.clip(100 - mean, 1e-3, None)) if lab.transform == "deficit" else \
            np.log(np.clip(mean, 1e-3, None)) if lab.transform == "log" else mean
        feats.append(np.where(labs & np.isfinite(latent), latent, 0))
    feats += [np.where(notes, col(f"symptom_{s}"), 0) for s in SYMPTOMS]
    feats += [np.where(omics, col(f"score_{m}"), 0) for m in MODULES]
    bnp = np.log(np.clip(col("mean_ntprobnp"), 1e-3, None))
    feats.append(np.where(labs & img & np.isfinite(bnp), bnp * (col("ctr") - 0.5), 0))
    return np.nan_to_num(np.stack(feats, 1).astype(float))


def ceiling(truth_train: pl.DataFrame, truth_test: pl.DataFrame) -> np.ndarray:
    """Class probabilities of a logistic regression on the exact latents, trained on the training patients."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))
    clf.fit(latent_features(truth_train), truth_train["label"].to_numpy())
    return clf.predict_proba(latent_features(truth_test))


# ------------------------------------------------------------------------------------------------ one seed
def run_seed(d: dict, seed: int, args: argparse.Namespace) -> dict:
    train, val, test = d["train"], d["val"], d["test"]
    n_omics = train.tensors["omics"].shape[1]
    nb = args.n_boot
    cfg = TrainConfig(steps=args.steps, lr=1e-3, weight_decay=0.05, warmup_steps=20, batch_size=32, seed=seed)
    ft = TrainConfig(steps=args.steps, lr=3e-3, weight_decay=0.01, warmup_steps=20, batch_size=32, seed=seed)
    rows: dict = {}

    def score(task: str, data: SplitData, preds: dict) -> dict:
        return headline(task, data, preds, nb, seed)[METRIC[task]]

    backbone = timed("pretrain", pretrain, new_model(args.model, seed, n_omics), train, cfg).model
    fused, preds = {}, {}
    for task in ("diagnosis", "risk", "survival"):
        fused[task] = timed(f"finetune {task}", finetune, copy.deepcopy(backbone), train, task, ft, val=val).model
        preds[task] = predict(fused[task], test)
        rows[f"{task}.fused"] = score(task, test, preds[task])
    dx, p_dx = fused["diagnosis"], preds["diagnosis"]["class_probs"]
    scratch = timed("from scratch", from_scratch, new_model(args.model, seed, n_omics), train, "diagnosis", ft,
                    val=val).model
    p_scratch = predict(scratch, test)["class_probs"]
    rows["diagnosis.fused_scratch"] = score("diagnosis", test, {"class_probs": p_scratch})
    rows["diagnosis.fused_minus_scratch"] = compare("diagnosis", test, p_dx, p_scratch, nb, seed)
    if args.joint:
        joint_data = {k: load_split(Path(args.workspace) / "data" / "curated", k, d["wordpiece"])
                      for k in ("train", "val")}
        joint_test = d["joint_test"]
        joint = timed("joint (tiny-fusion)", from_scratch, new_model("tiny-fusion", seed, n_omics),
                      joint_data["train"], "diagnosis", cfg, val=joint_data["val"], eval_every=25).model
        p_joint = predict(joint, joint_test)["class_probs"]
        rows["diagnosis.joint_earlier_recipe"] = score("diagnosis", test, {"class_probs": p_joint})
        rows["diagnosis.fused_minus_joint"] = compare("diagnosis", test, p_dx, p_joint, nb, seed)

    single = {}
    for m in MODALITIES:
        te = having(test, m)
        if not len(te):
            continue
        alone = predict(dx, te.only(m))["class_probs"]
        both = predict(dx, te)["class_probs"]
        single[m] = {"patients": len(te), "single": score("diagnosis", te, {"class_probs": alone}),
                     "fused_same_patients": score("diagnosis", te, {"class_probs": both}),
                     "fused_minus_single": compare("diagnosis", te, both, alone, nb, seed)}
    rows["diagnosis.single"] = single
    best = max(single, key=lambda m: single[m]["single"]["value"])
    rows["diagnosis.best_single"] = best
    for m in single:  # fused without m vs the best single model of the rest, on the same (all) test patients
        rest = [o for o in single if o != m]
        other = max(rest, key=lambda o: single[o]["single"]["value"])
        without = predict(dx, test.without(m))["class_probs"]
        rows[f"diagnosis.without_{m}"] = {
            "fused": score("diagnosis", test, {"class_probs": without}), "best_single_of_rest": other,
            "minus_best_single": compare("diagnosis", test, without, predict(dx, test.only(other))["class_probs"],
                                         nb, seed)}
    feats = (embedding_features(backbone, train), embedding_features(backbone, test))
    rows["diagnosis.late_fusion"] = timed("late fusion", late_fusion, backbone, train, test, nb, seed, p_dx, feats)
    few = train.take(label_fraction(train, 0.1, seed))
    pre10 = timed("pretrained + 10%", finetune, copy.deepcopy(backbone), few, "diagnosis", ft, val=val).model
    scr10 = timed("scratch + 10%", from_scratch, new_model(args.model, seed, n_omics), few, "diagnosis", ft,
                  val=val).model
    p_pre10, p_scr10 = predict(pre10, test)["class_probs"], predict(scr10, test)["class_probs"]
    rows["diagnosis.few_label"] = {"patients": len(few),
                                   "pretrained_10": score("diagnosis", test, {"class_probs": p_pre10}),
                                   "scratch_10": score("diagnosis", test, {"class_probs": p_scr10}),
                                   "pretrained_minus_scratch": compare("diagnosis", test, p_pre10, p_scr10, nb, seed)}
    demo_train, demo_test, _ = demographics(train, test)
    with_demo = (np.hstack([feats[0], demo_train]), np.hstack([feats[1], demo_test]))
    for task in ("risk", "survival"):
        base = same_inputs(task, train, test, with_demo, preds[task][TASK_OUT[task]], nb, seed)
        rows[f"{task}.same_inputs"] = base.get("metrics", {}).get(METRIC[task])
        rows[f"{task}.fused_minus_same_inputs"] = base.get("fused_minus_baseline")
    if d["truth_test"] is not None:
        rows["diagnosis.bayes"] = score("diagnosis", test, {"class_probs": posterior_matrix(d["truth_test"])})
        if d["truth_train"] is not None:
            p_ceiling = ceiling(d["truth_train"], d["truth_test"])
            rows["diagnosis.ceiling_latents"] = score("diagnosis", test, {"class_probs": p_ceiling})
        log_hazard = oracle_log_hazard(d["truth_test"])
        rows["risk.oracle"] = score("risk", test, {"risk_prob": 1 - np.exp(-np.exp(log_hazard)
                                                                           * RISK_HORIZON_DAYS / 365.25)})
        rows["survival.oracle"] = score("survival", test, {"log_risk": log_hazard})
    return rows


# ------------------------------------------------------------------------------------------------ report
def _value(v) -> float | None:
    return v.get("value") if isinstance(v, dict) else None


def summarise(per_seed: list[dict]) -> dict:
    """key -> {mean, sd, values} for every metric row; differences keep their seeds' CIs."""
    def walk(prefix: str, items: list) -> dict:
        out = {}
        first = items[0]
        if isinstance(first, dict) and "value" in first:
            values = [_value(i) for i in items]
            good = [v for v in values if v is not None]
            entry = {"mean": float(np.mean(good)) if good else None, "sd": float(np.std(good)) if good else None,
                     "values": values}
            if "ci_low" in first and "a" in first:
                entry["ci"] = [[i.get("ci_low"), i.get("ci_high")] for i in items]
            return {prefix: entry}
        if isinstance(first, dict):
            for k in first:
                if all(isinstance(i, dict) and k in i for i in items):
                    out |= walk(f"{prefix}.{k}" if prefix else k, [i[k] for i in items])
        return out
    return walk("", per_seed)


def print_table(summary: dict, seeds: list[int], times: dict) -> None:
    def line(name: str, key: str, note: str = "") -> None:
        e = summary.get(key)
        if not e or e["mean"] is None:
            return
        ci = ""
        if "ci" in e:
            ci = " paired CIs " + " ".join(f"[{lo:+.3f},{hi:+.3f}]" for lo, hi in e["ci"] if lo is not None)
        print(f"{name:<52} {e['mean']:+.3f} (sd {e['sd']:.3f}){ci} {note}" if "ci" in e else
              f"{name:<52} {e['mean']:.3f} (sd {e['sd']:.3f}) {note}")

    bayes = summary.get("diagnosis.bayes", {}).get("mean")
    print(f"\nmeans over seeds {seeds}; test patients scored by every row; 95% paired bootstrap CIs per seed")
    print("-- diagnosis (macro AUROC)")
    line("Bayes (generator posterior)", "diagnosis.bayes")
    line("ceiling: LR on exact latents, same training patients", "diagnosis.ceiling_latents")
    fused = summary["diagnosis.fused"]["mean"]
    line("fused: pre-train + experts then fusion", "diagnosis.fused",
         f"= {fused / bayes:.3f} x Bayes" if bayes else "")
    line("  same recipe from scratch", "diagnosis.fused_scratch")
    line("  fused - scratch", "diagnosis.fused_minus_scratch")
    line("  earlier joint recipe (tiny-fusion)", "diagnosis.joint_earlier_recipe")
    line("  fused - earlier joint recipe", "diagnosis.fused_minus_joint")
    for m in MODALITIES:
        line(f"single {m} (expert + demographics)", f"diagnosis.single.{m}.single")
        line("  fused, same patients", f"diagnosis.single.{m}.fused_same_patients")
        line(f"  fused - single {m}", f"diagnosis.single.{m}.fused_minus_single")
    line("late fusion (LR on backbone embeddings)", "diagnosis.late_fusion.metrics.auroc_macro")
    line("  fused - late fusion", "diagnosis.late_fusion.fused_minus_late_fusion")
    for m in MODALITIES:
        line(f"fused without {m}", f"diagnosis.without_{m}.fused")
        line(f"  without {m} - best single of the rest", f"diagnosis.without_{m}.minus_best_single")
    line("pre-trained + 10% labels", "diagnosis.few_label.pretrained_10",
         f"= {summary['diagnosis.few_label.pretrained_10']['mean'] / fused:.3f} x all labels")
    line("scratch + 10% labels", "diagnosis.few_label.scratch_10")
    line("  pre-trained - scratch (10%)", "diagnosis.few_label.pretrained_minus_scratch")
    for task, name in (("risk", "risk (365-day mortality AUROC)"), ("survival", "survival (C-index)")):
        print(f"-- {name}")
        line("oracle (exact hazard)", f"{task}.oracle")
        line("fused", f"{task}.fused")
        line("same inputs (LR / ridge Cox)", f"{task}.same_inputs")
        line("  fused - same inputs", f"{task}.fused_minus_same_inputs")
    print("seconds:", times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--test-workspace", default=None)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--n-boot", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--joint", action="store_true", help="also train the earlier joint recipe (tiny-fusion)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    d = timed("load", load, args, args.model)
    if args.joint:
        d["wordpiece"] = corpus_tokenizer(Path(args.workspace) / "data" / "curated", "train", 512, 320)
        test_ws = Path(args.test_workspace or args.workspace) / "data" / "curated"
        d["joint_test"] = load_split(test_ws, None if args.test_workspace else "test", d["wordpiece"])
    print(f"train {len(d['train'])}, val {len(d['val'])}, test {len(d['test'])} patients", flush=True)
    per_seed = []
    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        per_seed.append(run_seed(d, seed, args))
    TIMES["total"] = round(time.perf_counter() - start, 1)
    summary = summarise(per_seed)
    print_table(summary, args.seeds, TIMES)
    print(json.dumps({"seeds": args.seeds, "patients": {k: len(d[k]) for k in ("train", "val", "test")},
                      "summary": summary, "seconds": TIMES}, default=float))


if __name__ == "__main__":
    main()

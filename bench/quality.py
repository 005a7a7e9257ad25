"""What the model learns from the data: the issue-5 quality table on a curated synthetic workspace.

    python bench/quality.py [--workspace /tmp/ws1000] [--model tiny] [--steps 300] [--n-boot 200] [--seed 0]

Reads <ws>/data/curated (train/val/test by patient) and the generator's truth (<ws>/extracts/*/truth/patients.tsv),
matched to the curated pseudonyms with the key in <ws>/.mmfm/pseudonym.key. Trains, on the train split, with the
validation split for every choice (best step; which fine-tuning recipe is the headline), and scores the test split:

- Bayes: the generator's exact posterior on the same test patients;
- fused: pre-train, then fine-tune on all labels (LoRA on a frozen backbone, and full fine-tuning; the headline is
  the one with the better validation AUROC), and the same model from scratch;
- single modality (from scratch, one modality seen) and late fusion (logistic regression on backbone embeddings);
- fused with each modality removed at test time, against the best single-modality model of the remaining ones;
- few labels: pre-trained + 10% of the labels, from scratch + 10%, pre-trained + 100%.

Macro AUROC with bootstrap CIs (tasks.evaluation.assess.headline), timings, then one JSON line. Set OMP_NUM_THREADS
or --threads: on a shared CPU, oversubscribed threads are several times slower.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from models.model import MODALITIES
from tasks.deid import Pseudonymizer
from tasks.evaluation.assess import headline
from tasks.evaluation.baselines import bayes, having, late_fusion
from tasks.training.bundle import LoraSettings
from tasks.training.curated_dataset import DatasetConfig
from tasks.training.fit import corpus_tokenizer, finetune, from_scratch, new_model, predict, pretrain
from tasks.training.loop import TrainConfig
from tasks.training.split_data import SplitData, label_fraction, load_split

MAX_TEXT = 320  # word pieces: a clinical note is ~200 (95th centile ~270); at 64 the symptoms are cut off
TIMES: dict[str, float] = {}


def auroc(model, data: SplitData, n_boot: int) -> dict:
    return headline("diagnosis", data, predict(model, data), n_boot)["auroc_macro"]


def timed(name: str, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    TIMES[name] = round(time.perf_counter() - start, 1)
    print(f"  [{TIMES[name]:7.1f}s] {name}", flush=True)
    return out


def load(ws: Path, vocab: int) -> tuple[dict[str, SplitData], Pseudonymizer | None, list[Path]]:
    curated = ws / "data" / "curated"
    config = DatasetConfig(max_text_length=MAX_TEXT)
    tokenizer = corpus_tokenizer(curated, "train", vocab, MAX_TEXT)
    splits = {s: load_split(curated, s, tokenizer, config) for s in ("train", "val", "test")}
    key_file = ws / ".mmfm" / "pseudonym.key"
    keys = Pseudonymizer(key_file.read_text().strip().encode("utf-8")) if key_file.exists() else None
    cohorts = sorted(t.parent.parent for t in (ws / "extracts").glob("*/truth/patients.tsv"))
    return splits, keys, cohorts


def run(args: argparse.Namespace) -> dict:
    splits, keys, cohorts = timed("load", load, Path(args.workspace), 512)
    train, val, test = splits["train"], splits["val"], splits["test"]
    n_omics = train.tensors["omics"].shape[1] if "omics" in train.tensors else None
    nb = args.n_boot
    cfg = TrainConfig(steps=args.steps, lr=args.lr, weight_decay=0.05, warmup_steps=20, batch_size=32, seed=args.seed)
    ft_cfg = TrainConfig(steps=args.steps, lr=3e-3, weight_decay=0.01, warmup_steps=20, batch_size=32, seed=args.seed)

    def fresh():
        return new_model(args.model, args.seed, n_omics)

    def supervised(model, data: SplitData, valid: SplitData, name: str):
        return timed(name, from_scratch, model, data, "diagnosis", cfg, val=valid, eval_every=25).model

    rows: dict = {}
    if keys is not None and cohorts:
        rows["bayes"] = bayes(test, cohorts, keys, nb)["metrics"]["auroc_macro"]
    backbone = timed("pretrain", pretrain, fresh(), train, cfg, val=val, eval_every=50).model
    lora = timed("finetune (LoRA)", finetune, copy.deepcopy(backbone), train, "diagnosis", ft_cfg, LoraSettings(),
                 val=val, eval_every=20).model
    full = supervised(copy.deepcopy(backbone), train, val, "finetune (full)")
    scratch = supervised(fresh(), train, val, "from scratch (fused)")
    val_auc = {name: auroc(m, val, 0)["value"] for name, m in (("lora", lora), ("full", full))}
    recipe = max(val_auc, key=val_auc.get)
    fused = {"lora": lora, "full": full}[recipe]
    rows.update({"fused": auroc(fused, test, nb), "fused_lora": auroc(lora, test, nb),
                 "fused_full_finetune": auroc(full, test, nb), "fused_scratch": auroc(scratch, test, nb)})
    has = test.tensors["mask"].any(0)
    present = [m for m in MODALITIES if m in fused.modalities and bool(has[MODALITIES.index(m)])]
    single = {}
    for m in present:
        model = supervised(fresh(), having(train, m).only(m), having(val, m).only(m), f"single {m}")
        single[m] = auroc(model, having(test, m).only(m), nb)
    rows["single"] = single
    rows["late_fusion"] = timed("late fusion", late_fusion, backbone, train, test, nb)["metrics"]["auroc_macro"]
    rows["without"] = {m: {"fused": auroc(fused, test.without(m), nb),
                           "best_single_of_rest": max(single[o]["value"] for o in present if o != m)}
                       for m in present}
    few = train.take(label_fraction(train, 0.1, args.seed))
    pre10 = supervised(copy.deepcopy(backbone), few, val, "pretrained + 10% (full)")
    lora10 = timed("pretrained + 10% (LoRA)", finetune, copy.deepcopy(backbone), few, "diagnosis", ft_cfg,
                   LoraSettings(), val=val, eval_every=20).model
    scr10 = supervised(fresh(), few, val, "scratch + 10%")
    pre10 = {"full": pre10, "lora": lora10}[recipe]
    rows["few_label"] = {"patients": len(few), "pretrained_10": auroc(pre10, test, nb),
                         "scratch_10": auroc(scr10, test, nb), "pretrained_100": rows["fused"]}
    return {"recipe": recipe, "val_auroc": val_auc, "rows": rows, "seconds": TIMES}


def table(r: dict) -> None:
    rows = r["rows"]

    def line(name: str, m: dict | None, note: str = "") -> None:
        if m is None or m.get("value") is None:
            print(f"{name:<44} {'n/a':>6}  {note}")
            return
        print(f"{name:<44} {m['value']:6.3f}  [{m['ci_low']:.3f}, {m['ci_high']:.3f}]  {note}")

    bayes_auc = rows.get("bayes", {}).get("value")
    best_single = max(v["value"] for v in rows["single"].values())
    print(f"\nmacro AUROC on the test split (95% bootstrap CI); fine-tuning recipe by validation: {r['recipe']} "
          f"(val {r['val_auroc']})")
    line("Bayes (generator posterior)", rows.get("bayes"))
    ratio = f"= {rows['fused']['value'] / bayes_auc:.3f} x Bayes" if bayes_auc else ""
    line("fused: pretrain + fine-tune, all labels", rows["fused"], ratio)
    line("  fused, LoRA on frozen backbone", rows["fused_lora"])
    line("  fused, full fine-tune", rows["fused_full_finetune"])
    line("  fused, from scratch", rows["fused_scratch"])
    for m, v in rows["single"].items():
        line(f"single modality: {m}", v)
    line("late fusion (LR on backbone embeddings)", rows["late_fusion"])
    print(f"fused - best single modality = {rows['fused']['value'] - best_single:+.3f}")
    for m, v in rows["without"].items():
        line(f"fused without {m}", v["fused"], f"best single of the rest {v['best_single_of_rest']:.3f}")
    few = rows["few_label"]
    line(f"pretrained + 10% labels ({few['patients']} patients)", few["pretrained_10"],
         f"= {few['pretrained_10']['value'] / few['pretrained_100']['value']:.3f} x all labels")
    line("scratch + 10% labels", few["scratch_10"])
    line("pretrained + 100% labels", few["pretrained_100"])
    print("seconds:", r["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default="/tmp/ws1000")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = run(args)
    result["seconds"]["total"] = round(time.perf_counter() - start, 1)
    table(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Training-step throughput: our `train()` against a bare torch loop, same model, same batches, same process.

    python bench/train.py [--model tiny] [--objective diagnosis pretrain] [--steps 20] [--warmup 3]
                          [--batch-size 8] [--repeat 3] [--threads N]

Like for like: both sides start from the same weights (create_model under one seed), train on the same
SyntheticBatches (generated before any timing and held in memory) and draw dropout from the same torch seed. Ours runs
a TrainConfig whose maths is the bare loop's (constant lr, no clipping, no weight decay), so the two final losses must
agree and the ratio measures only the loop's own work: the Objective wrapper, the label check, the LR scheduler,
`float(loss)` every step. "ours, defaults" adds what a real run does (warm-up + cosine, clipping at 1.0, which reads
the grad norm back every step, decay groups); its losses differ from the bare loop's by design.
Warm-up steps are trained but not timed. Prints samples/s and ratios (ours / bare: the share of bare speed we keep),
then one JSON line. bench/gpu_train.py reuses `compare` on CUDA.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.factory import create_model
from tasks.training.loop import Batch, TrainConfig, to_device, train
from tasks.training.synthetic_batches import SyntheticBatches

OBJECTIVES = ("diagnosis", "pretrain")  # the bare loop writes these two losses out by hand


def matched_config(objective: str, steps: int, batch_size: int, lr: float, seed: int) -> TrainConfig:
    """A TrainConfig doing the bare loop's maths: constant lr, no clipping, no weight decay."""
    return TrainConfig(steps=steps, lr=lr, weight_decay=0.0, warmup_steps=0, min_lr_ratio=1.0, clip_norm=None,
                       batch_size=batch_size, seed=seed, objective=objective)


def build(model_name: str, seed: int, device: torch.device) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(model_name).to(device)


def make_batches(steps: int, batch_size: int, seed: int, device: torch.device) -> list[Batch]:
    """One distinct batch per step, already on `device`, so neither generation nor transfer is timed."""
    source = SyntheticBatches(batch_size=batch_size, seed=seed)
    return [to_device(source(s), device) for s in range(steps)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ours(model: nn.Module, batches: Sequence[Batch], cfg: TrainConfig, warmup: int) -> tuple[float, list[float]]:
    """Seconds for steps warmup..end of `train()`; the clock starts when the loop asks for batch `warmup`."""
    device = next(model.parameters()).device
    start: list[float] = []

    def batch_at(step: int) -> Batch:
        if step == warmup:  # steps 0..warmup-1 are done (their float(loss) has already synchronised)
            sync(device)
            start.append(time.perf_counter())
        return batches[step]

    result = train(model, batch_at, cfg)
    sync(device)
    return time.perf_counter() - start[0], result.losses


def bare_loss(model: nn.Module, batch: Batch, objective: str) -> torch.Tensor:
    if objective == "pretrain":
        return model.pretrain_losses(batch)["loss"]
    return F.cross_entropy(model(batch)["class_logits"].float(), batch["label"])


def time_bare(model: nn.Module, batches: Sequence[Batch], objective: str, lr: float, seed: int,
              warmup: int) -> tuple[float, list[float]]:
    """The loop every tutorial writes: AdamW, autocast on CUDA, zero_grad/backward/step; losses read at the end."""
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    torch.manual_seed(seed)  # train() seeds at the same point: the same dropout draws
    model.train()
    losses, t0 = [], time.perf_counter()
    for step, batch in enumerate(batches):
        if step == warmup:
            sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = bare_loss(model, batch, objective)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    sync(device)
    return time.perf_counter() - t0, [float(x) for x in losses]


def compare(model_name: str = "tiny", objective: str = "diagnosis", steps: int = 20, warmup: int = 3,
            batch_size: int = 8, lr: float = 1e-3, seed: int = 0, device: str | torch.device = "cpu",
            repeat: int = 3, defaults: bool = True) -> dict:
    """Time bare, ours (matched maths) and, if `defaults`, ours with TrainConfig's defaults; -> one result row.

    The sides take turns, `repeat` rounds, each run from a fresh model; the fastest run of each side counts (timeit's
    rule: on a shared machine the minimum is the run least disturbed by other work). Losses are the first round's.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r}: the bare loop knows {', '.join(OBJECTIVES)}")
    if not 0 <= warmup < steps:
        raise ValueError(f"need 0 <= warmup < steps, got warmup={warmup}, steps={steps}")
    device = torch.device(device)
    batches = make_batches(steps, batch_size, seed, device)
    configs = {"ours": matched_config(objective, steps, batch_size, lr, seed),
               "defaults": TrainConfig(steps=steps, lr=lr, batch_size=batch_size, seed=seed, objective=objective)}
    sides = ["bare", "ours", "defaults"] if defaults else ["bare", "ours"]
    seconds: dict[str, float] = {}
    losses: dict[str, list[float]] = {}
    for r in range(repeat):
        for side in sides[r % len(sides):] + sides[:r % len(sides)]:  # rotate who goes first
            model = build(model_name, seed, device)
            dt, run_losses = (time_bare(model, batches, objective, lr, seed, warmup) if side == "bare"
                              else time_ours(model, batches, configs[side], warmup))
            seconds[side] = min(dt, seconds.get(side, math.inf))
            losses.setdefault(side, run_losses)
    timed = (steps - warmup) * batch_size  # samples in the timed steps
    row = {"model": model_name, "objective": objective, "device": device.type, "batch_size": batch_size,
           "steps": steps, "warmup": warmup, "repeat": repeat,
           "bare_samples_s": timed / seconds["bare"], "ours_samples_s": timed / seconds["ours"],
           "ratio": seconds["bare"] / seconds["ours"],
           "bare_final_loss": losses["bare"][-1], "ours_final_loss": losses["ours"][-1],
           "max_loss_diff": max(abs(a - b) for a, b in zip(losses["ours"], losses["bare"], strict=True))}
    if defaults:
        row |= {"defaults_samples_s": timed / seconds["defaults"],
                "defaults_ratio": seconds["bare"] / seconds["defaults"], "defaults_final_loss": losses["defaults"][-1]}
    return row


def report(row: dict) -> None:
    timed = row["steps"] - row["warmup"]
    print(f"{row['model']} / {row['objective']} on {row['device']}: batch {row['batch_size']}, {timed} timed steps "
          f"after {row['warmup']} warm-up, fastest of {row['repeat']} interleaved runs per side")
    print(f"  bare torch loop            : {row['bare_samples_s']:9.1f} samples/s   final loss "
          f"{row['bare_final_loss']:.6f}")
    agree = "agree (same maths)" if row["max_loss_diff"] <= 1e-4 else "DISAGREE: the maths differ"
    print(f"  ours, matched maths        : {row['ours_samples_s']:9.1f} samples/s   final loss "
          f"{row['ours_final_loss']:.6f}   ratio ours/bare = {row['ratio']:.3f}   "
          f"max |loss diff| over all steps {row['max_loss_diff']:.1e}: {agree}")
    if "defaults_ratio" in row:
        print(f"  ours, TrainConfig defaults : {row['defaults_samples_s']:9.1f} samples/s   final loss "
              f"{row['defaults_final_loss']:.6f}   ratio ours/bare = {row['defaults_ratio']:.3f}   "
              f"(warm-up + cosine, clip 1.0, decay groups: losses differ by design)")


def default_threads() -> int:
    """CPUs this process may use (affinity, not the host's count) minus those other work keeps busy (1-min load).

    On a shared machine more threads than idle cores is far worse than one: OpenMP's barriers spin while a thread
    waits for a core (tiny, 2 cores, load ~6: 140 samples/s on 1 thread, 20 on 2).
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, cpus - round(os.getloadavg()[0])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="a config in models/configs (tiny, base)")
    ap.add_argument("--objective", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    ap.add_argument("--steps", type=int, default=20, help="steps per run, warm-up included")
    ap.add_argument("--warmup", type=int, default=3, help="steps trained before the clock starts")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the fastest run of each side counts")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the idle CPUs we may use)")
    ap.add_argument("--no-defaults", action="store_true", help="skip the run with TrainConfig's defaults")
    args = ap.parse_args()
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    print(f"torch {torch.__version__}, {threads} CPU thread(s), load average {os.getloadavg()[0]:.1f}")
    rows = []
    for objective in args.objective:
        rows.append(compare(args.model, objective, args.steps, args.warmup, args.batch_size, args.lr, args.seed,
                            repeat=args.repeat, defaults=not args.no_defaults))
        report(rows[-1])
    ok = all(math.isfinite(r["ratio"]) for r in rows)
    print(json.dumps({"bench": "train", "threads": threads, "torch": torch.__version__, "ok": ok,
                      "results": rows}))


if __name__ == "__main__":
    main()

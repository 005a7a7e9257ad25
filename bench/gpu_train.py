"""Training throughput of create_model("base") on one GPU: tokens/s, model FLOPs utilisation, ours/bare ratio.

    python bench/gpu_train.py [--batch-size 128] [--steps 40] [--warmup 10] [--peak-tflops 989] [--objective ...]

The ours/bare comparison is bench/train.py's `compare`, run on CUDA: bf16 autocast on both sides, as `train()` does,
batches generated and moved to the GPU before any timing, warm-up steps untimed, fastest of --repeat rounds.
`--device cpu --model tiny` is a dry run of this script's code path (figures meaningless), for tests.

Tokens: the length of the sequence the fusion transformer sees per sample, 1 (CLS) + the tokens of every encoder
(image_3d patches, image_2d patches, 1 + labs rows, note tokens, omics tokens), times the batch size; a step counts
them once even when the objective runs the fusion twice (pretrain). Encoders' internal tokens are not added again.
FLOPs: torch.utils.flop_counter.FlopCounterMode over one forward + backward of the bare step (matmuls, convolutions,
attention; the optimizer's elementwise work is not counted). MFU = FLOPs per step / seconds per step / peak dense bf16
FLOP/s (--peak-tflops; 989 for H100/H200 SXM). Exits 0 with a message when no CUDA device is available.
Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import time
from types import ModuleType

import torch
from torch.utils.flop_counter import FlopCounterMode


def core() -> ModuleType:
    """bench/train.py, imported once CUDA is known to be there: it pulls in the models (~10 s on a busy CPU box)."""
    try:
        from bench import train
    except ModuleNotFoundError:  # run as `python bench/gpu_train.py`: this folder is sys.path[0]
        import train
    return train


def autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def fusion_tokens(model: torch.nn.Module, batch: dict) -> int:
    """Tokens per sample in the fusion sequence: 1 (CLS) + every encoder's token count."""
    with torch.no_grad(), autocast(next(model.parameters()).device):
        tokens, _, _ = model.encode(batch)
    return 1 + sum(t.shape[1] for t in tokens.values())


def step_flops(model: torch.nn.Module, batch: dict, objective: str) -> int:
    """FLOPs of one training step's forward + backward, as FlopCounterMode counts them."""
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast(next(model.parameters()).device):
            loss = core().bare_loss(model, batch, objective)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def measure(objective: str, args: argparse.Namespace, peak: float) -> dict:
    device = torch.device(args.device)
    model = core().build(args.model, args.seed, device)
    batch = core().make_batches(1, args.batch_size, args.seed, device)[0]
    tokens = fusion_tokens(model, batch) * args.batch_size  # per step
    flops = step_flops(model, batch, objective)
    del model, batch
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    row = core().compare(args.model, objective, args.steps, args.warmup, args.batch_size, args.lr, args.seed, device,
                  repeat=args.repeat)
    per_s = {side: row[f"{side}_samples_s"] / args.batch_size for side in ("bare", "ours", "defaults")}  # steps/s
    row |= {"tokens_per_step": tokens, "flops_per_step": flops, "peak_tflops": args.peak_tflops,
            "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
    for side, steps_s in per_s.items():
        row |= {f"{side}_tokens_s": tokens * steps_s, f"{side}_mfu": flops * steps_s / peak}
    return row


def report(row: dict) -> None:
    memory = "n/a" if row["max_memory_gib"] is None else f"{row['max_memory_gib']:.1f} GiB"
    print(f"{row['model']} / {row['objective']}: batch {row['batch_size']}, {row['tokens_per_step']} fusion tokens "
          f"and {row['flops_per_step'] / 1e12:.4f} TFLOP per step, peak memory {memory}")
    for side, name in (("bare", "bare torch loop"), ("ours", "ours, matched maths"), ("defaults", "ours, defaults")):
        key = {"bare": None, "ours": "ratio", "defaults": "defaults_ratio"}[side]
        ratio = f"   ratio ours/bare = {row[key]:.3f}" if key else ""
        print(f"  {name:20s}: {row[f'{side}_samples_s']:9.1f} samples/s  {row[f'{side}_tokens_s']:12,.0f} tokens/s  "
              f"MFU {100 * row[f'{side}_mfu']:5.2f}%  final loss {row[f'{side}_final_loss']:.4f}{ratio}")
    why = "bf16, and GPU kernels need not be deterministic: close, not identical" if row["device"] == "cuda" else "fp32"
    print(f"  max |loss diff| ours vs bare over all steps: {row['max_loss_diff']:.1e} ({why})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="base")
    ap.add_argument("--objective", nargs="+", default=None, help="diagnosis and/or pretrain (default: both)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40, help="steps per run, warm-up included")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2, help="interleaved rounds; the fastest run of each side counts")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM: 989)")
    ap.add_argument("--device", default="cuda", help="cuda; cpu only for a dry run of the code path")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_train: no CUDA device available; nothing to measure (on CPU, run bench/train.py)")
        print(json.dumps({"bench": "gpu_train", "skipped": "no CUDA device"}))
        return
    t0 = time.perf_counter()
    if args.device.startswith("cuda"):
        name = torch.cuda.get_device_name(args.device)
    else:
        name = "cpu (dry run)"
        torch.set_num_threads(core().default_threads())
    print(f"torch {torch.__version__}, {name}, peak {args.peak_tflops:g} TFLOP/s bf16 dense assumed")
    rows = []
    for objective in args.objective or core().OBJECTIVES:
        rows.append(measure(objective, args, args.peak_tflops * 1e12))
        report(rows[-1])
    print(json.dumps({"bench": "gpu_train", "device": name, "torch": torch.__version__,
                      "wall_s": time.perf_counter() - t0, "results": rows}))


if __name__ == "__main__":
    main()

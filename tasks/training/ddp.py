"""Data-parallel training under torchrun: `python -m torch.distributed.run ... -m tasks.training.ddp --steps N --out D`.

Every rank draws the same global batch for a step (the source is a function of the step) and keeps its slice, so
no sampler state has to be checkpointed. DDP averages gradients over ranks, which equals the gradient of the mean
loss over the global batch when the loss is a per-sample mean and the shards are equal: hence batch_size must divide
by the world size. The pretrain objective's InfoNCE uses in-shard negatives only (no all-gather), so it is not the
single-process loss; the supervised objectives are. Rank 0 writes checkpoints, `result.json` and `final.pt`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from models.factory import create_model
from models.model import ModelConfig, MultimodalModel
from tasks.training.data import EpochBatches, SplitData
from tasks.training.loop import OBJECTIVES, Batch, Hooks, TrainConfig, train
from tasks.training.synthetic_batches import SyntheticBatches

REPO_ROOT = Path(__file__).resolve().parents[2]


def shard(batch: Batch, rank: int, world: int) -> Batch:
    """Rank `rank`'s contiguous slice of every tensor's batch dimension."""
    size = next(iter(batch.values())).shape[0]
    if size % world:
        raise ValueError(f"global batch {size} does not split into {world} equal shards")
    per = size // world
    return {k: v[rank * per:(rank + 1) * per] for k, v in batch.items()}


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / dist.get_world_size()


def ddp_hooks(rank: int, world: int, device: torch.device) -> Hooks:
    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        ids = [device.index] if device.type == "cuda" else None
        # the objective leaves some heads out of the graph (e.g. cox/binary when supervised): let DDP skip them
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    return Hooks(wrap=wrap, shard=lambda b: shard(b, rank, world), reduce_loss=mean_over_ranks, is_main=rank == 0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default="tiny")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--clip-norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=0)
    p.add_argument("--objective", choices=OBJECTIVES, default="diagnosis")
    p.add_argument("--modality-dropout", type=float, default=None, help="override the model config's")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--data", type=Path, help="tensors of a curated split (tasks.training.ddp.save_split); "
                   "default: synthetic batches")
    p.add_argument("--model-config", type=Path, help="a ModelConfig JSON (overrides --model)")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(steps=args.steps, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
                       clip_norm=args.clip_norm, batch_size=args.batch_size, seed=args.seed,
                       checkpoint_every=args.checkpoint_every, objective=args.objective)


def build_model(name: str, seed: int, modality_dropout: float | None, config: Path | None = None) -> torch.nn.Module:
    """The same initial weights on every rank (DDP would broadcast rank 0's anyway; this keeps ranks honest)."""
    torch.manual_seed(seed)
    if config is not None:
        model = MultimodalModel(ModelConfig.from_dict(json.loads(config.read_text())))
    else:
        model = create_model(name)
    if modality_dropout is not None:
        model.config.modality_dropout = modality_dropout
    return model


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=5))
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    try:
        cfg = config_from(args)
        model = build_model(args.model, args.seed, args.modality_dropout, args.model_config).to(device)
        if args.data is not None:
            data = EpochBatches(SplitData(torch.load(args.data, weights_only=True)), cfg.batch_size, cfg.seed)
        else:
            data = SyntheticBatches(batch_size=cfg.batch_size, seed=cfg.seed)
        result = train(model, data, cfg, checkpoint_dir=args.out / "checkpoints", resume=args.resume,
                       hooks=ddp_hooks(rank, world, device))
        if rank == 0:
            args.out.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), args.out / "final.pt")
            summary = {"losses": result.losses, "step": result.step, "world_size": world, "backend": dist.get_backend()}
            (args.out / "result.json").write_text(json.dumps(summary, indent=1))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def save_split(data: SplitData, path: Path) -> Path:
    """A split's tensors for the ranks (torch.load(weights_only=True) reads them back; metadata stays behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.contiguous() for k, v in data.tensors.items()}, path)
    return path


def launch_torchrun(nproc: int, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run `nproc` ranks of this module under torchrun on loopback only; output captured, never raises on rc."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo would otherwise pick the hostname's interface
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "tasks.training.ddp", *args]
    return subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False)


if __name__ == "__main__":
    main()

"""Data-parallel training under torchrun: `python -m torch.distributed.run ... -m tasks.training.ddp --steps N --out D`.

Every rank draws the same global batch for a step (the source is a function of the step) and keeps its slice, so
no sampler state has to be checkpointed. DDP averages gradients over ranks, which equals the gradient of the mean
loss over the global batch when the loss is a per-sample mean and the shards are equal: hence batch_size must divide
by the world size. The pretrain objective's InfoNCE uses in-shard negatives only (no all-gather), so it is not the
single-process loss; the supervised objectives are. Global rank 0 (RANK, not LOCAL_RANK: under several nodes only
one process in the world) writes checkpoints, `result.json` and `final.pt`; LOCAL_RANK only picks the GPU.

Several nodes meet through torchrun's c10d rendezvous (`Rendezvous`, `torchrun_command`): every node runs the same
command with the same rendezvous id, and c10d, not the user, gives out the node ranks. Before training, the ranks
compare fingerprints of their arguments, data, model config and resume checkpoint, so nodes that hold different data
fail at once with one line instead of training on a mix.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from models.factory import create_model
from models.model import ModelConfig, MultimodalModel
from tasks.training.loop import OBJECTIVES, Batch, Hooks, TrainConfig, latest_checkpoint, train
from tasks.training.split_data import EpochBatches, SplitData
from tasks.training.synthetic_batches import SyntheticBatches

REPO_ROOT = Path(__file__).resolve().parents[2]
# a worker on each node starts with the same params.yaml and sets these (they win over params.yaml's pretrain keys)
NNODES_ENV, ENDPOINT_ENV, RDZV_ID_ENV = "MMFM_NNODES", "MMFM_RDZV_ENDPOINT", "MMFM_RDZV_ID"
RANK_ERROR = re.compile(r"^\[rank\d+\]: [\w.]*(Error|Exception)\b")


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
        tensors = torch.load(args.data, weights_only=True) if args.data is not None else None
        resume_from = latest_checkpoint(args.out / "checkpoints") if args.resume else None
        check_same_run(fingerprint(args, tensors, model, resume_from))
        if tensors is not None:
            data = EpochBatches(SplitData(tensors), cfg.batch_size, cfg.seed)
        else:
            data = SyntheticBatches(batch_size=cfg.batch_size, seed=cfg.seed)
        result = train(model, data, cfg, checkpoint_dir=args.out / "checkpoints", resume=args.resume,
                       hooks=ddp_hooks(rank, world, device))
        ranks = world_map()
        if rank == 0:
            args.out.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), args.out / "final.pt")
            summary = {"losses": result.losses, "step": result.step, "world_size": world, "backend": dist.get_backend(),
                       "ranks": ranks}
            (args.out / "result.json").write_text(json.dumps(summary, indent=1))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def world_map() -> list[dict[str, int]]:
    """Every rank's place, as it saw it (for result.json): global rank, world size, node (torchrun's GROUP_RANK,
    which c10d assigns) and local rank."""
    mine = {"rank": dist.get_rank(), "world_size": dist.get_world_size(),
            "node": int(os.environ.get("GROUP_RANK", 0)), "local_rank": int(os.environ.get("LOCAL_RANK", 0))}
    every: list = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    return every


def fingerprint(args: argparse.Namespace, tensors: dict[str, torch.Tensor] | None, model: torch.nn.Module,
                resume_from: Path | None) -> dict[str, str]:
    """What every rank must share, by part: the arguments (paths differ between nodes, so their contents stand in),
    the training tensors, the model config and the checkpoint a resume starts from."""
    def digest(chunks: Iterable) -> str:  # streamed: the data are never copied whole
        h = hashlib.sha256()
        for chunk in chunks:
            h.update(chunk)
        return h.hexdigest()[:16]

    def tensor_chunks(tensors: dict[str, torch.Tensor]) -> Iterator:
        for k, t in sorted(tensors.items()):
            yield f"{k}{t.dtype}{tuple(t.shape)}".encode()
            yield t.contiguous().reshape(-1).view(torch.uint8).numpy()  # the raw bytes, any dtype

    flags = {k: str(v) for k, v in vars(args).items() if k not in ("out", "data", "model_config")}
    config = getattr(model, "config", None)
    config_json = json.dumps(asdict(config) if config is not None else {}, sort_keys=True)
    return {"arguments": digest([json.dumps(flags, sort_keys=True).encode()]),
            "data": digest([b"synthetic"] if tensors is None else tensor_chunks(tensors)),
            "model config": digest([config_json.encode()]),
            "checkpoint": "none" if resume_from is None else f"{resume_from.name}:{file_digest(resume_from)}"}


def file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def disagreements(prints: list[dict[str, str]]) -> dict[int, list[str]]:
    """rank -> the parts of its fingerprint that differ from rank 0's (empty: every rank runs the same run)."""
    odd = {rank: [k for k in prints[0] if p.get(k) != prints[0][k]] for rank, p in enumerate(prints)}
    return {rank: parts for rank, parts in odd.items() if parts}


def check_same_run(mine: dict[str, str]) -> None:
    """Every rank gathers every fingerprint, so all raise together (none is left waiting in a collective)."""
    prints: list = [None] * dist.get_world_size()
    dist.all_gather_object(prints, mine)
    odd = disagreements(prints)
    if odd:
        detail = "; ".join(f"rank {r}: {', '.join(parts)}" for r, parts in sorted(odd.items()))
        raise RuntimeError(f"ranks differ from rank 0 ({detail}): every node must run the same `mmfm pretrain` on the "
                           "same curated data (and, to resume, hold rank 0's checkpoints)")


def save_split(data: SplitData, path: Path) -> Path:
    """A split's tensors for the ranks (torch.load(weights_only=True) reads them back; metadata stays behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.contiguous() for k, v in data.tensors.items()}, path)
    return path


@dataclass(frozen=True)
class Rendezvous:
    """Where the nodes of one run meet: torchrun's c10d store at `endpoint` (HOST:PORT, served by the torchrun on
    HOST), under `run_id`, which every node must pass alike. nnodes 1 and no endpoint: a standalone run on loopback."""

    nnodes: int = 1
    endpoint: str | None = None
    run_id: str | None = None

    @property
    def standalone(self) -> bool:
        return self.nnodes == 1 and self.endpoint is None

    @property
    def loopback(self) -> bool:
        """The rendezvous stays on this machine: a standalone run or an endpoint on a loopback address."""
        if self.endpoint is None:
            return True
        host = self.endpoint.rpartition(":")[0].strip("[]")
        try:
            return host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def rendezvous_settings(params: Mapping, default_id: str, env: Mapping[str, str] = os.environ) -> Rendezvous:
    """The pretrain section's nnodes / rdzv_endpoint / rdzv_id, overridden by MMFM_NNODES / MMFM_RDZV_ENDPOINT /
    MMFM_RDZV_ID; `default_id` (the flow's run key, the same on every node with the same params and data) else."""
    raw = env.get(NNODES_ENV) or params.get("nnodes")
    raw = 1 if raw is None else raw
    try:
        nnodes = int(raw)
    except (TypeError, ValueError):
        nnodes = 0
    if nnodes < 1:
        raise ValueError(f"pretrain.nnodes / {NNODES_ENV} must be a whole number >= 1, not {raw!r}")
    endpoint = env.get(ENDPOINT_ENV) or params.get("rdzv_endpoint") or None
    if endpoint is not None:
        host, _, port = str(endpoint).rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"pretrain.rdzv_endpoint / {ENDPOINT_ENV} must be HOST:PORT, not {endpoint!r}")
    if nnodes > 1 and endpoint is None:
        raise ValueError(f"pretrain.nnodes is {nnodes} but no rendezvous endpoint: set pretrain.rdzv_endpoint or "
                         f"{ENDPOINT_ENV} to HOST:PORT of one of the nodes (the same on every node)")
    run_id = str(env.get(RDZV_ID_ENV) or params.get("rdzv_id") or default_id)
    return Rendezvous(nnodes=nnodes, endpoint=None if endpoint is None else str(endpoint), run_id=run_id)


def torchrun_command(nproc: int, args: list[str], rdzv: Rendezvous = Rendezvous()) -> list[str]:
    """The torchrun command line for this node's `nproc` ranks: --standalone on one node, else c10d rendezvous
    (c10d, not us, numbers the nodes: --node-rank is only read by the static backend)."""
    if rdzv.standalone:
        launch = ["--standalone", f"--nproc-per-node={nproc}"]
    else:
        launch = [f"--nnodes={rdzv.nnodes}", f"--nproc-per-node={nproc}", "--rdzv-backend=c10d",
                  f"--rdzv-endpoint={rdzv.endpoint}", f"--rdzv-id={rdzv.run_id}"]
        if rdzv.loopback:  # else each agent tells the others its FQDN, which may resolve off this machine
            launch.append("--local-addr=127.0.0.1")
    return [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "tasks.training.ddp", *args]


def torchrun_env(rdzv: Rendezvous = Rendezvous(), base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment for torchrun: pinned to loopback when the rendezvous is (tests, one machine); a real
    multi-node run keeps the user's interface choice (GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME) or the defaults."""
    env = {**base, "OMP_NUM_THREADS": base.get("OMP_NUM_THREADS", "1")}
    if rdzv.loopback:
        env["MASTER_ADDR"] = "127.0.0.1"
        if Path("/sys/class/net/lo").exists():
            env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo would otherwise pick the hostname's interface
    return env


def failure_line(stderr: str) -> str:
    """The ranks' own error (`[rank1]: RuntimeError: ...`) from torchrun's stderr, not its closing banner."""
    lines = stderr.strip().splitlines()
    own = [line for line in lines if RANK_ERROR.match(line)]
    return own[0] if own else " | ".join(lines[-3:])


def launch_torchrun(nproc: int, args: list[str], timeout: float,
                    rdzv: Rendezvous = Rendezvous()) -> subprocess.CompletedProcess:
    """Run this node's `nproc` ranks of this module under torchrun (see `torchrun_command`); output captured, never
    raises on rc. Under several nodes it returns when the whole world is done; rc != 0 if any rank failed."""
    return subprocess.run(torchrun_command(nproc, args, rdzv), env=torchrun_env(rdzv), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


if __name__ == "__main__":
    main()

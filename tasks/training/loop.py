"""The training loop: AdamW, linear warm-up then cosine decay, gradient clipping, bf16 autocast on CUDA, and
checkpoints that make a resumed run bit-for-bit the run that was never stopped.

A checkpoint holds model, optimizer, scheduler, step, the losses so far, every RNG state (python, numpy, torch CPU,
CUDA) and the data position; it is written to a temporary file and renamed, so a crash never leaves half a file.
Determinism on resume also needs the data to be a function of the step: pass `batch_at(step) -> dict` (or an
iterable that yields the same sequence every time; resuming skips the batches already consumed).
The loop knows nothing of torch.distributed: `tasks.training.ddp` passes `Hooks` (wrap in DDP, shard the global
batch, average the logged loss over ranks, save on rank 0 only).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.losses import cox_ph_loss
from tasks.atomic import write_with

Batch = dict[str, torch.Tensor]
BatchSource = Callable[[int], Batch] | Iterable[Batch]
CKPT_PREFIX = "ckpt_"


@dataclass
class TrainConfig:
    steps: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 10
    clip_norm: float | None = 1.0  # None: no clipping
    batch_size: int = 8  # the global batch; under DDP each rank takes batch_size / world_size
    seed: int = 0
    checkpoint_every: int = 0  # 0: never
    objective: Literal["pretrain", "diagnosis", "risk", "survival"] = "pretrain"
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio


@dataclass
class TrainResult:
    losses: list[float]  # one per step since step 0 (restored from the checkpoint on resume)
    step: int  # steps done
    grad_norms: list[float] = field(default_factory=list)  # pre-clip total norm, this process's steps only


@dataclass
class Hooks:
    """What distributed training changes; the defaults are a single process."""

    wrap: Callable[[nn.Module], nn.Module] = lambda m: m  # e.g. DistributedDataParallel
    shard: Callable[[Batch], Batch] = lambda b: b  # global batch -> this rank's part
    reduce_loss: Callable[[torch.Tensor], torch.Tensor] = lambda x: x  # local mean -> global mean
    is_main: bool = True  # saves checkpoints
    after_step: Callable[[int, nn.Module], None] | None = None  # (steps done, model): e.g. validation, early stopping


OBJECTIVES = ("pretrain", "diagnosis", "risk", "survival")


class Objective(nn.Module):
    """model + objective as one module whose forward returns the losses, so DDP's hooks see the backward pass.

    pretrain: InfoNCE + masked-modality (labels unused). diagnosis: cross-entropy on `label` (B,) int64 over the
    multiclass head, rows with label -1 ignored. risk: BCE on `risk_label` (B,) float over the binary head, NaN rows
    ignored. survival: Cox partial likelihood on `time` (B,) float and `event` (B,) bool over the Cox head.
    """

    def __init__(self, model: nn.Module, objective: str):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
        self.model, self.objective = model, objective

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.objective == "pretrain":
            return self.model.pretrain_losses(batch)
        out = self.model(batch)
        return {"loss": supervised_loss(self.objective, out, batch)}


def supervised_loss(objective: str, out: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
    """The loss of one supervised objective from the model's outputs; a batch with no usable target gives 0."""
    if objective == "diagnosis":
        label = batch["label"]
        if not bool((label >= 0).any()):
            return out["class_logits"].sum() * 0.0
        return F.cross_entropy(out["class_logits"].float(), label, ignore_index=-1)
    if objective == "risk":
        target = batch["risk_label"].float()
        known = ~torch.isnan(target)
        if not bool(known.any()):
            return out["binary_logit"].sum() * 0.0
        return F.binary_cross_entropy_with_logits(out["binary_logit"].float()[known], target[known])
    if objective == "survival":
        return cox_ph_loss(out["risk"].float(), batch["time"].float(), batch["event"].bool())
    raise ValueError(f"unknown supervised objective {objective!r}")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of cfg.lr after `step` scheduler steps: linear warm-up to 1, then cosine down to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms and embeddings' 1-d params (decaying them only hurts)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def rng_state() -> dict:
    """Every RNG the loop may touch, in types torch.load(weights_only=True) accepts (no numpy arrays)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, keys.tolist(), pos, has_gauss, cached),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: Path, state: dict) -> Path:
    """Write ckpt_<step>.pt atomically: a reader sees the old file set or the new one, never a partial file."""
    return write_with(directory / f"{CKPT_PREFIX}{state['step']:08d}.pt", lambda tmp: torch.save(state, tmp))


def latest_checkpoint(directory: Path | None) -> Path | None:
    if directory is None or not directory.exists():
        return None
    paths = sorted(directory.glob(f"{CKPT_PREFIX}*.pt"))
    return paths[-1] if paths else None


def batch_iterator(batches: BatchSource, start: int) -> Iterator[Batch]:
    """Batches for steps start, start+1, ...: `batch_at(step)` if callable, else the iterable minus `start` items."""
    if callable(batches):
        return (batches(s) for s in itertools.count(start))
    return itertools.islice(iter(batches), start, None)


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def restore(checkpoint: Path, model: nn.Module, opt: torch.optim.Optimizer,
            sched: torch.optim.lr_scheduler.LRScheduler) -> tuple[int, list[float]]:
    """Load a checkpoint into model, optimizer, scheduler and the RNGs; -> (step, losses so far)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)  # RNG states must stay on CPU
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    if state["data_position"] != state["step"]:
        raise ValueError(f"{checkpoint}: data position {state['data_position']} != step {state['step']}")
    return state["step"], list(state["losses"])


def train(model: nn.Module, batches: BatchSource, cfg: TrainConfig, checkpoint_dir: Path | None = None,
          resume: bool = False, hooks: Hooks | None = None) -> TrainResult:
    """Train `model` (already on its device) until cfg.steps steps in total, resuming from the latest checkpoint."""
    hooks = hooks or Hooks()
    seed_everything(cfg.seed)
    device = next(model.parameters()).device
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg)
    ckpt = latest_checkpoint(checkpoint_dir) if resume else None
    start, losses = restore(ckpt, model, opt, sched) if ckpt is not None else (0, [])
    net = hooks.wrap(Objective(model, cfg.objective))
    net.train()
    norms = []
    # strict=False: a callable source is endless, range() ends the loop
    for step, batch in zip(range(start, cfg.steps), batch_iterator(batches, start), strict=False):
        batch = to_device(hooks.shard(batch), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = net(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_norm is not None:
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)))
        opt.step()
        sched.step()
        losses.append(float(hooks.reduce_loss(loss.detach().float())))
        done = step + 1
        if hooks.after_step is not None:
            hooks.after_step(done, model)
        if checkpoint_dir is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and hooks.is_main:
            save_checkpoint(checkpoint_dir, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "step": done, "data_position": done, "losses": losses, "rng": rng_state(), "config": asdict(cfg)})
    return TrainResult(losses=losses, step=len(losses), grad_norms=norms)

"""The training loop: it learns, the schedule is warm-up then cosine, clipping happens, and resume is exact."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from models.factory import create_model
from tasks.training.loop import TrainConfig, lr_factor, make_optimizer, make_scheduler, train
from tasks.training.synthetic_batches import SyntheticBatches


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("tiny")


def test_loss_falls_on_a_fixed_batch():
    cfg = TrainConfig(steps=20, lr=3e-3, warmup_steps=2, objective="diagnosis")
    result = train(tiny(), SyntheticBatches(batch_size=4, fixed=True), cfg)
    assert result.step == 20 and len(result.losses) == 20
    assert sum(result.losses[-3:]) / 3 < 0.7 * sum(result.losses[:3]) / 3


def test_pretrain_objective_runs_and_is_finite():
    result = train(tiny(), SyntheticBatches(batch_size=4), TrainConfig(steps=3, warmup_steps=1))
    assert all(math.isfinite(x) for x in result.losses)


def test_warmup_then_cosine_schedule():
    cfg = TrainConfig(steps=10, lr=1.0, warmup_steps=2, min_lr_ratio=0.1)
    opt = make_optimizer(torch.nn.Linear(2, 2), cfg)
    sched = make_scheduler(opt, cfg)
    lrs = []
    for _ in range(cfg.steps):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])  # linear warm-up, then the cosine starts at its peak
    expected = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 10)]
    assert lrs[2:] == pytest.approx(expected)
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False))  # never rises after warm-up
    assert lr_factor(cfg.steps, cfg) == pytest.approx(0.1)


def test_no_weight_decay_on_biases_and_norms():
    groups = make_optimizer(tiny(), TrainConfig(weight_decay=0.05)).param_groups
    assert groups[0]["weight_decay"] == 0.05 and all(p.ndim >= 2 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0.0 and all(p.ndim < 2 for p in groups[1]["params"])


@pytest.mark.parametrize("clip_norm", [1e-3, None])
def test_gradients_are_clipped(monkeypatch, clip_norm):
    real, after = torch.nn.utils.clip_grad_norm_, []

    def spy(params, max_norm, *args, **kwargs):
        params = list(params)
        norm = real(params, max_norm, *args, **kwargs)
        grads = [p.grad.norm() for p in params if p.grad is not None]
        after.append(float(torch.linalg.vector_norm(torch.stack(grads))))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    cfg = TrainConfig(steps=3, warmup_steps=1, clip_norm=clip_norm, objective="diagnosis")
    result = train(tiny(), SyntheticBatches(batch_size=4), cfg)
    if clip_norm is None:
        assert after == [] and result.grad_norms == []
    else:
        assert len(after) == 3 and all(n > clip_norm for n in result.grad_norms)  # there was something to clip
        assert all(n <= clip_norm * 1.001 for n in after)


class Crash(Exception):
    pass


def crash_at(source: SyntheticBatches, step: int):
    """The batch source of a run killed while fetching `step`'s batch (after step `step`'s checkpoint)."""

    def batch_at(s: int) -> dict:
        if s >= step:
            raise Crash(s)
        return source(s)

    return batch_at


@pytest.mark.parametrize("objective", ["pretrain", "diagnosis"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, objective: str):
    # pretrain draws random numbers (modality dropout, masked modality): the RNG states must come back too
    cfg = TrainConfig(steps=8, lr=2e-3, warmup_steps=2, checkpoint_every=4, objective=objective)
    data = SyntheticBatches(batch_size=4, seed=3)
    straight_model = tiny()
    straight = train(straight_model, data, cfg)

    with pytest.raises(Crash):
        train(tiny(), crash_at(data, 4), cfg, checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000004.pt"]  # no temporary file left behind
    resumed_model = tiny(seed=99)  # different initial weights: everything must come from the checkpoint
    resumed = train(resumed_model, data, cfg, checkpoint_dir=tmp_path, resume=True)

    assert resumed.step == 8
    assert resumed.losses == pytest.approx(straight.losses, abs=1e-6, rel=0)
    for (name, a), b in zip(straight_model.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)


def test_resume_with_an_iterable_source_skips_consumed_batches(tmp_path: Path):
    cfg = TrainConfig(steps=6, warmup_steps=1, checkpoint_every=3, objective="diagnosis")
    data = [SyntheticBatches(batch_size=4, seed=5)(s) for s in range(6)]
    straight = train(tiny(), data, cfg)
    train(tiny(), data[:3], cfg, checkpoint_dir=tmp_path)  # the source ran dry after three steps
    resumed = train(tiny(seed=7), data, cfg, checkpoint_dir=tmp_path, resume=True)
    assert resumed.losses == pytest.approx(straight.losses, abs=1e-6, rel=0)


def test_resume_without_a_checkpoint_starts_fresh(tmp_path: Path):
    cfg = TrainConfig(steps=2, warmup_steps=1, objective="diagnosis")
    assert train(tiny(), SyntheticBatches(batch_size=2), cfg, checkpoint_dir=tmp_path, resume=True).step == 2

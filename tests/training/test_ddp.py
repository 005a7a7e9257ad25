"""Two gloo ranks on CPU train the same model as one process on the same global batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tasks.training.ddp import build_model, launch_torchrun, shard
from tasks.training.loop import TrainConfig, train
from tasks.training.synthetic_batches import SyntheticBatches

STEPS, BATCH, SEED = 4, 4, 0
OBJECTIVE = "pretrain"


def test_shard_splits_the_batch_dimension():
    batch = SyntheticBatches(batch_size=4)(0)
    parts = [shard(batch, r, 2) for r in range(2)]
    assert all(p["labs"].shape[0] == 2 for p in parts)
    assert torch.equal(torch.cat([p["label"] for p in parts]), batch["label"])
    with pytest.raises(ValueError):
        shard(batch, 0, 3)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_gloo_ranks_match_one_process(tmp_path: Path):
    # pre-training, what the pipeline runs under torchrun: the tiny config's report-finding objective is a per-sample
    # mean, so the mean of the two shard means == the mean over the global batch; modality dropout off: it draws
    # per-sample random numbers that differ between a shard and the whole batch
    args = ["--steps", str(STEPS), "--out", str(tmp_path), "--batch-size", str(BATCH), "--seed", str(SEED),
            "--objective", OBJECTIVE, "--modality-dropout", "0", "--checkpoint-every", "2"]
    run = launch_torchrun(2, args, timeout=110)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2 and result["backend"] == "gloo" and result["step"] == STEPS
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["ckpt_00000002.pt", "ckpt_00000004.pt"]

    assert_matches_one_process(tmp_path, result["losses"])


def assert_matches_one_process(out: Path, losses: list[float]) -> None:
    """A 2-rank run's losses and final weights (out/final.pt) equal one process's on the same global batches."""
    reference = build_model("tiny", SEED, 0.0)
    cfg = TrainConfig(steps=STEPS, lr=1e-3, warmup_steps=2, batch_size=BATCH, seed=SEED, objective=OBJECTIVE)
    single = train(reference, SyntheticBatches(batch_size=BATCH, seed=SEED), cfg)
    assert losses == pytest.approx(single.losses, abs=1e-4)
    ddp_weights = torch.load(out / "final.pt", weights_only=True)
    for name, value in reference.state_dict().items():
        a, b = without_key_bias(name, ddp_weights[name]), without_key_bias(name, value)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=name)


def without_key_bias(name: str, value: torch.Tensor) -> torch.Tensor:
    """Drop attention key biases: softmax ignores them, so their true gradient is 0 and Adam turns the float noise
    left in it (~1e-10, summed in a different order by DDP) into lr-sized steps that differ between the runs."""
    if name.endswith("in_proj_bias"):  # nn.MultiheadAttention packs (q, k, v)
        width = value.shape[0] // 3
        return torch.cat([value[:width], value[2 * width:]])
    return value[:0] if name.endswith("key.bias") else value  # Hugging Face BERT

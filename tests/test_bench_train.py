"""bench/train.py and bench/gpu_train.py: figures come out, and the two loops do the same maths."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu_train
from bench import train as bench_train
from bench.train import compare

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def one_thread():
    """One torch thread: CI shares its cores, and spinning OpenMP threads waiting for a core cost 5-10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("objective", ["diagnosis", "pretrain"])
def test_ours_and_bare_loops_agree_and_report_speeds(one_thread, objective):
    row = compare("tiny", objective, steps=4, warmup=1, batch_size=4, repeat=1, defaults=objective == "diagnosis")
    assert row["ours_samples_s"] > 0 and row["bare_samples_s"] > 0
    assert math.isfinite(row["ratio"]) and row["ratio"] > 0
    # same init, same batches, same dropout seed, same optimizer maths: the loops must give the same losses
    assert abs(row["ours_final_loss"] - row["bare_final_loss"]) <= 1e-4
    assert row["max_loss_diff"] <= 1e-4
    if "defaults_ratio" in row:
        assert math.isfinite(row["defaults_ratio"]) and row["defaults_samples_s"] > 0


def test_compare_rejects_an_objective_the_bare_loop_lacks():
    with pytest.raises(ValueError, match="bare loop"):
        compare("tiny", "survival", steps=2, warmup=0)


def test_gpu_bench_exits_cleanly_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = subprocess.run([sys.executable, "bench/gpu_train.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "no CUDA device available" in done.stdout
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"bench": "gpu_train", "skipped": "no CUDA device"}


def test_gpu_bench_dry_run_on_cpu(one_thread, monkeypatch, capsys):
    """The GPU script's own code (tokens, FLOP count, MFU, report) runs end to end; the figures mean nothing on CPU."""
    monkeypatch.setattr(sys, "argv", ["gpu_train", "--device", "cpu", "--model", "tiny", "--batch-size", "4",
                                      "--steps", "3", "--warmup", "1", "--repeat", "1", "--objective", "diagnosis"])
    monkeypatch.setattr(bench_train, "default_threads", lambda: 1)
    gpu_train.main()
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"][0]
    # 1 CLS + 18 CT (2x3x3 grid) + 16 radiograph (4x4 grid) + 8 labs (summary + 7 codes) + 1 notes (concepts)
    # + 1 omics (low-rank scores) + 1 demographics token
    assert row["tokens_per_step"] == 4 * 46
    assert row["flops_per_step"] > 0 and 0 < row["ours_mfu"] < 1 and row["ours_tokens_s"] > 0

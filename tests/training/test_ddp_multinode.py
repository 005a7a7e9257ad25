"""Several nodes under torchrun's c10d rendezvous: the command lines and settings (pure), and two "nodes" on this
machine that meet on 127.0.0.1 and train as one world of 2, the same run as one process on the same global batches."""

from __future__ import annotations

import json
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from tasks.training.ddp import (
    Rendezvous,
    disagreements,
    failure_line,
    fingerprint,
    launch_torchrun,
    parse_args,
    rendezvous_settings,
    torchrun_command,
    torchrun_env,
)
from tests.training.test_ddp import BATCH, OBJECTIVE, SEED, STEPS, assert_matches_one_process

ROOT = Path(__file__).resolve().parents[2]
RUN = [sys.executable, "-m", "torch.distributed.run"]


def test_one_node_keeps_the_standalone_command_and_loopback():
    pretrain = yaml.safe_load((ROOT / "params.yaml").read_text())["pretrain"]
    rdzv = rendezvous_settings(pretrain, default_id="pretrain-abc", env={})
    assert rdzv.standalone and rdzv.loopback
    assert torchrun_command(2, ["--steps", "3"], rdzv) == [
        *RUN, "--standalone", "--nproc-per-node=2", "-m", "tasks.training.ddp", "--steps", "3"]
    env = torchrun_env(rdzv, base={"PATH": "/bin"})
    assert env["MASTER_ADDR"] == "127.0.0.1" and env["OMP_NUM_THREADS"] == "1"
    assert env.get("GLOO_SOCKET_IFNAME") == ("lo" if Path("/sys/class/net/lo").exists() else None)


def test_several_nodes_use_c10d_and_pin_loopback_only_for_a_loopback_endpoint():
    local = Rendezvous(nnodes=2, endpoint="127.0.0.1:29400", run_id="run-7")
    assert torchrun_command(1, ["--steps", "3"], local) == [
        *RUN, "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:29400",
        "--rdzv-id=run-7", "--local-addr=127.0.0.1", "-m", "tasks.training.ddp", "--steps", "3"]
    assert torchrun_env(local, base={})["MASTER_ADDR"] == "127.0.0.1"

    remote = Rendezvous(nnodes=2, endpoint="10.1.2.3:29400", run_id="run-7")
    cmd = torchrun_command(8, [], remote)
    assert "--standalone" not in cmd and "--rdzv-endpoint=10.1.2.3:29400" in cmd
    assert not any(a.startswith("--local-addr") for a in cmd)
    env = torchrun_env(remote, base={"NCCL_SOCKET_IFNAME": "eth1"})
    assert "MASTER_ADDR" not in env and "GLOO_SOCKET_IFNAME" not in env and env["NCCL_SOCKET_IFNAME"] == "eth1"


def test_environment_overrides_params_and_the_run_key_is_the_default_id():
    params = {"nnodes": 1, "rdzv_endpoint": None, "rdzv_id": None}
    env = {"MMFM_NNODES": "3", "MMFM_RDZV_ENDPOINT": "head:29400"}
    assert rendezvous_settings(params, "pretrain-abc", env) == Rendezvous(3, "head:29400", "pretrain-abc")
    env["MMFM_RDZV_ID"] = "run-9"
    assert rendezvous_settings({**params, "rdzv_id": "from-params"}, "pretrain-abc", env).run_id == "run-9"
    assert rendezvous_settings({**params, "rdzv_id": "from-params"}, "pretrain-abc", {}).run_id == "from-params"


@pytest.mark.parametrize(("params", "env", "message"), [
    ({"nnodes": 2}, {}, "pretrain.nnodes is 2 but no rendezvous endpoint"),
    ({"nnodes": 1}, {"MMFM_NNODES": "2"}, "pretrain.nnodes is 2 but no rendezvous endpoint"),
    ({"nnodes": 0}, {}, "must be a whole number >= 1"),
    ({"nnodes": 2, "rdzv_endpoint": "head"}, {}, "must be HOST:PORT"),
    ({"nnodes": 2}, {"MMFM_RDZV_ENDPOINT": "head:99999"}, "must be HOST:PORT"),
])
def test_bad_rendezvous_settings_fail_in_one_line(params, env, message):
    with pytest.raises(ValueError, match=message) as err:
        rendezvous_settings(params, "pretrain-abc", env)
    assert "\n" not in str(err.value)


def test_disagreements_name_the_rank_and_the_part():
    same = {"arguments": "a", "data": "d", "model config": "m", "checkpoint": "none"}
    assert disagreements([same, dict(same)]) == {}
    assert disagreements([same, {**same, "data": "x"}, {**same, "checkpoint": "ckpt_4:y"}]) == {
        1: ["data"], 2: ["checkpoint"]}


def test_fingerprints_ignore_node_paths_but_not_data_or_flags(tmp_path: Path):
    def args(root: str, *extra: str):
        return parse_args(["--steps", "2", "--out", f"/{root}/ddp", "--data", f"/{root}/train.pt", *extra])

    tensors = {"labs": torch.arange(6.0).reshape(2, 3), "label": torch.tensor([0, 1])}
    model = torch.nn.Linear(2, 2)
    base = fingerprint(args("node-a"), tensors, model, None)
    assert fingerprint(args("node-b"), {k: v.clone() for k, v in tensors.items()}, model, None) == base
    assert fingerprint(args("node-b", "--seed", "1"), tensors, model, None)["arguments"] != base["arguments"]
    flipped = {**tensors, "labs": tensors["labs"].clone().index_fill_(1, torch.tensor([0]), 9.0)}
    assert fingerprint(args("node-a"), flipped, model, None)["data"] != base["data"]
    (tmp_path / "ckpt_00000002.pt").write_bytes(b"state")
    assert fingerprint(args("node-a"), tensors, model, tmp_path / "ckpt_00000002.pt")["checkpoint"].startswith(
        "ckpt_00000002.pt:")


def test_failure_line_is_the_ranks_own_error_not_torchruns_banner():
    stderr = ("[rank1]: Traceback (most recent call last):\n[rank1]:     raise RuntimeError(f\"ranks differ\")\n"
              "[rank1]: RuntimeError: ranks differ from rank 0 (rank 1: data): every node must ...\n"
              "E1130 12:52:06 failed (exitcode: 1)\n  error_file: <N/A>\n  traceback : To enable ...\n=====")
    assert failure_line(stderr) == "[rank1]: RuntimeError: ranks differ from rank 0 (rank 1: data): every node must ..."
    assert failure_line("a\nb\nc\nd\n") == "b | c | d"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_two_nodes_meet_on_loopback_and_train_as_one_world(tmp_path: Path):
    # one torchrun per "node", each with its own output folder as on separate machines; same supervised setup as
    # test_ddp's two-rank standalone run, so the same single-process reference applies
    rdzv = Rendezvous(nnodes=2, endpoint=f"127.0.0.1:{free_port()}", run_id="test-two-nodes")
    outs = [tmp_path / "node-a", tmp_path / "node-b"]

    def node(out: Path):
        args = ["--steps", str(STEPS), "--out", str(out), "--batch-size", str(BATCH), "--seed", str(SEED),
                "--objective", OBJECTIVE, "--modality-dropout", "0", "--checkpoint-every", "2"]
        return launch_torchrun(1, args, timeout=130, rdzv=rdzv)

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(node, outs))
    assert all(r.returncode == 0 for r in runs), [r.stderr[-3000:] for r in runs]

    writers = [out for out in outs if (out / "result.json").exists()]
    assert len(writers) == 1  # global rank 0 only, on whichever node c10d numbered 0
    other = next(out for out in outs if out not in writers)
    assert not other.exists() or not any(other.rglob("*"))  # no checkpoint, weights or result from rank 1
    out = writers[0]
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["backend"] == "gloo" and result["step"] == STEPS
    assert sorted((r["rank"], r["node"], r["local_rank"], r["world_size"]) for r in result["ranks"]) == [
        (0, 0, 0, 2), (1, 1, 0, 2)]  # two nodes, one local rank each, both in a world of 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["ckpt_00000002.pt", "ckpt_00000004.pt"]

    assert_matches_one_process(out, result["losses"])

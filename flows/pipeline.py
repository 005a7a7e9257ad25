"""The pipeline: the only place that knows the stage order (docs/architecture.md §1, §7).

DVC decides, Prefect runs. `dvc.yaml` (rendered from `STAGES`, so stage names, deps and outs are written once) is
the DAG's contract and `dvc.lock` its ledger of hashes. The `pipeline` flow walks the stages in order, asks DVC
whether each is out of date, runs only those (as Prefect subflows, in this process), and has DVC record their
outputs after (`dvc commit`), so a rerun with no new data does no work and says which stages it skipped, and a new
extract reruns only what depends on it. A stage whose last ledger event already describes the workspace (a kill came
between that event and `dvc commit`) is only committed, not run again (tasks.stage.status reads where each stage
stands). `dvc repro` in a workspace runs the same
stages (`python -m flows.<stage>`).
A run holds the workspace lock (tasks.workspace_lock) throughout, and checks data/curated against validate's record
before the first model stage (tasks.validation.curated_check), so no stage trains on data changed after validation.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from prefect import flow, get_run_logger

from flows.run_names import run_name
from tasks.faults import kill_point
from tasks.stage.status import commit_if_finished, stage_is_current
from tasks.validation.curated_check import check_curated
from tasks.vcs import dvc_run
from tasks.workspace_lock import holds_workspace_lock


@dataclass(frozen=True)
class Stage:
    name: str  # the same in flows/<name>.py, dvc.yaml, params.yaml and the CLI
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    persist: tuple[str, ...] = ()  # outputs the stage appends to (DVC must not delete them before a rerun)
    params: tuple[str, ...] = field(default_factory=tuple)

    def dvc_entry(self) -> dict:
        outs = [{o: {"persist": True}} if o in self.persist else o for o in self.outs]
        entry = {"cmd": f"python -m flows.{self.name}", "deps": list(self.deps), "outs": outs}
        if self.params:
            entry["params"] = list(self.params)
        return entry


STAGES: tuple[Stage, ...] = (
    Stage("ingest", deps=("extracts",), outs=("data/staged",), persist=("data/staged",), params=("ingest",)),
    Stage("validate", deps=("data/staged",), outs=("data/curated",), params=("validate",)),
    Stage("pretrain", deps=("data/curated",), outs=("models/backbone",), params=("pretrain",)),
    Stage("finetune", deps=("data/curated", "models/backbone"), outs=("models/finetuned",), params=("finetune",)),
    Stage("evaluate", deps=("data/curated", "models/backbone", "models/finetuned"), outs=("models/evaluation",),
          params=("evaluate",)),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
DATA_STAGES = ("ingest", "validate")  # what a dataset version covers
MODEL_STAGES = ("pretrain", "finetune", "evaluate")  # trained on a dataset version


def render_dvc_yaml() -> str:
    header = "# Generated from flows/pipeline.py STAGES (mmfm init writes it into each workspace); edit STAGES.\n"
    return header + yaml.safe_dump({"stages": {s.name: s.dvc_entry() for s in STAGES}}, sort_keys=False)


def run_stage(root: Path, name: str) -> dict:
    """Run one stage's flow in this process (flows/<name>.py: `run(workspace)`), then record it in dvc.lock."""
    module = importlib.import_module(f"flows.{name}")
    summary = module.run(root)
    kill_point("pipeline.before_dvc_commit")
    dvc_run(root, "commit", "--force", name)
    return summary


@flow(name="pipeline", flow_run_name=run_name("pipeline"))
@holds_workspace_lock("mmfm pipeline")
def pipeline(workspace: Path, force: bool = False, stages: list[str] | None = None) -> dict:
    """Run every out-of-date stage in order (or of `stages` only, still in pipeline order); skip the current ones."""
    root, t0 = Path(workspace).resolve(), time.perf_counter()
    unknown = sorted(set(stages or ()) - set(STAGE_NAMES))
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGE_NAMES)}")
    log = get_run_logger()
    ran, skipped, recorded, summaries, curated_checked = [], [], [], {}, False
    for stage in STAGES:
        if stages is not None and stage.name not in stages:
            continue
        if stage.name in MODEL_STAGES and not curated_checked:
            check_curated(root)  # before any model stage, even one DVC would call current
            curated_checked = True
        if not force and stage_is_current(root, stage.name):
            skipped.append(stage.name)
            log.info("stage %s is up to date: skipped", stage.name)
            continue
        if not force and (event := commit_if_finished(root, stage.name)) is not None:
            recorded.append(stage.name)
            log.info("stage %s finished in run %s (ledger event %s) before a kill; DVC recorded it now: not run again",
                     stage.name, event.run_id, event.event_id[:12])
            continue
        summaries[stage.name] = run_stage(root, stage.name)
        ran.append(stage.name)
    return {"ran": ran, "skipped": skipped, "recorded": recorded, "stages": summaries,
            "seconds": round(time.perf_counter() - t0, 2)}

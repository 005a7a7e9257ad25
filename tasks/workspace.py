"""A workspace: a git + DVC repository holding extracts, curated data and the platform's state (.mmfm/).

One place for every path a stage reads or writes (docs/architecture.md §8), so no path is spelled twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from tasks.settings import get_settings
from tasks.vcs import dvc, git

DEFAULT_PARAMS = {
    # the demo's cohort; shifted_patients: the size of the extract the demo monitors (null: half the cohort, >= 90)
    "synth": {"patients": 200, "sites": 3, "seed": 7, "missing_rate": 0.2, "corrupt_rate": 0.02,
              "shifted_patients": None},
    # a test split of 20%: subgroups (sex, site, age band) of at least evaluate.min_group patients for the gate
    "validate": {"splits": {"train": 0.7, "val": 0.1, "test": 0.2}},
    "ingest": {
        "max_items_per_task": 64,
        "pacs": {"retry_delays": [2, 5, 15]},  # seconds between retries of a failed PACS request (at most 10)
        "fhir": {"mrn_system": None},  # the identifier system holding the MRN, where Patients carry no MR type code
        "imaging": {"image_size": [64, 64], "ct_shape": [16, 48, 48], "ct_spacing": [6.0, 6.0, 10.0],
                    "allow_burned_in": False},
    },
    # the model stages (flows/pretrain.py, finetune.py, evaluate.py); a named architecture, never layer sizes
    "pretrain": {"model": "tiny", "steps": 300, "batch_size": 32, "lr": 0.001, "weight_decay": 0.05,
                 "warmup_steps": 20, "seed": 0, "checkpoint_every": 50, "eval_every": 50, "nproc": 1,
                 "vocab_size": 512, "labs_vocab_size": 64, "nnodes": 1, "rdzv_endpoint": None, "rdzv_id": None},
    "finetune": {"tasks": ["diagnosis", "risk", "survival"], "label_fraction": 1.0, "steps": 300, "batch_size": 32,
                 "lr": 0.003, "weight_decay": 0.01, "warmup_steps": 20, "seed": 0, "eval_every": 25,
                 # experts then fusion (tasks/training/experts.py); "lora" / "full" for the fusion read-out
                 "recipe": "experts",
                 "experts": {"prior_steps": 300, "interaction_steps": 100, "min_val_patients": 50},
                 "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "full": False}},
    "evaluate": {"n_boot": 200, "min_group": 20, "baselines": True, "baseline_steps": 300, "gradcam_patients": 4},
    # drift monitoring (flows/monitor.py): family-wise false-alarm rate, smallest site tested, retrain cooldown
    "monitor": {"alpha": 0.01, "min_rows": 30, "min_reference_rows": 20, "n_permutations": 200,
                "performance_tolerance": 0.1, "cooldown_hours": 24, "max_rows": None},
    # the promotion gate (tasks/registry/gate.py): a candidate must match the champion within `tolerance` on the
    # primary metric and keep the gap between subgroups (sex, age band, site) of at least min_group patients under
    # max_subgroup_gap; a gap over it refuses when its 95% interval excludes 0 (subgroup_gap_rule "significant")
    # or on the point estimate alone ("point"). Every gated task's CI must exclude `chance`; fused minus each
    # must_beat baseline must have a paired CI above 0, minus each not_worse_than baseline a CI reaching 0;
    # exceptions: {tasks_above_chance | beats_baselines: "the reason"} lets that rule fail, recorded
    "promote": {"primary_metric": "auroc_macro", "higher_is_better": True, "tolerance": 0.01,
                "max_subgroup_gap": 0.15, "subgroup_gap_rule": "significant", "required_split": "test",
                "gated_tasks": ["diagnosis", "risk", "survival"],
                "chance": {"auroc_macro": 0.5, "auroc": 0.5, "c_index": 0.5},
                "must_beat": {"diagnosis": ["best_single", "late_fusion"]},
                "not_worse_than": {"risk": ["logistic_regression"], "survival": ["cox"]}, "exceptions": {}},
}

GITIGNORE = """\
# platform state: MLflow store, lineage db, Prefect home, local DVC remote, secrets (never committed)
/.mmfm/
# raw extracts and landed copies hold PHI: never in git (content-addressed under data/landing, hashes in the ledger)
/extracts/
/incoming/
/data/landing/
# scoring outputs, monitoring and audit reports: recorded in the ledger with their sha256
/data/predictions/
/data/monitoring/
/data/audit/
"""


VALIDATION_REPORT = "validation.json"  # in data/reports/ (a workspace) or a monitoring area's reports/


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def state(self) -> Path:
        return self.root / ".mmfm"

    @property
    def extracts(self) -> Path:
        return self.root / "extracts"

    @property
    def landing(self) -> Path:
        return self.root / "data" / "landing"

    @property
    def staged(self) -> Path:
        return self.root / "data" / "staged"

    @property
    def reports(self) -> Path:
        return self.root / "data" / "reports"

    @property
    def validation_report(self) -> Path:
        """The validate stage's report (contract versions, counts, verdicts): read by version, registry, audit."""
        return self.reports / VALIDATION_REPORT

    @property
    def quarantine(self) -> Path:
        return self.root / "data" / "quarantine"

    @property
    def curated(self) -> Path:
        return self.root / "data" / "curated"

    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def params(self) -> dict:
        return yaml.safe_load(self.params_file.read_text()) if self.params_file.exists() else dict(DEFAULT_PARAMS)

    def section(self, name: str, **overrides) -> dict:
        """One stage's parameters: the defaults, then params.yaml, then non-None overrides (CLI flags)."""
        merged = {**DEFAULT_PARAMS.get(name, {}), **(self.params().get(name) or {})}
        return {**merged, **{k: v for k, v in overrides.items() if v is not None}}

    def is_initialised(self) -> bool:
        return (self.root / ".dvc").is_dir() and (self.root / ".git").exists()


def init_workspace(root: Path, dvc_yaml: str | None = None) -> Workspace:
    """Create (or complete) a workspace: git repo, DVC repo with a local default remote, params.yaml, layout.

    Idempotent: an existing workspace is left as it is and its missing parts are added. Init commits only the
    files it writes: a file with pending edits (params.yaml changed by hand, anything staged) is neither staged nor
    committed, and stays as the user left it.
    """
    ws = Workspace(Path(root).resolve())
    ws.root.mkdir(parents=True, exist_ok=True)
    if not (ws.root / ".git").exists():
        git(ws.root, "init", "-q", "-b", "main")
    pending = pending_edits(ws.root)
    if not (ws.root / ".dvc").is_dir():
        dvc(ws.root, "init", "--quiet")
    # the dvc CLI resolves a relative local path from the cwd and stores it relative to .dvc/config, so the
    # workspace can move and its default remote moves with it
    remote = get_settings(ws.root).dvc_remote_url or ".mmfm/dvc-remote"
    dvc(ws.root, "remote", "add", "--force", "--default", "local", remote)
    dvc(ws.root, "config", "core.autostage", "true")
    for d in (ws.state, ws.extracts, ws.landing, ws.staged, ws.quarantine, ws.curated, ws.reports):
        d.mkdir(parents=True, exist_ok=True)
    if not ws.params_file.exists():
        ws.params_file.write_text(yaml.safe_dump(DEFAULT_PARAMS, sort_keys=False))
    if dvc_yaml is not None and not (ws.root / "dvc.yaml").exists():
        (ws.root / "dvc.yaml").write_text(dvc_yaml)
    gitignore = ws.root / ".gitignore"
    if not gitignore.exists() or "/.mmfm/" not in gitignore.read_text():
        with open(gitignore, "a") as fh:
            fh.write(GITIGNORE)
    ours = [f for f in INIT_FILES if (ws.root / f).exists() and f not in pending]
    if ours:
        git(ws.root, "add", "--", *ours)
        if git(ws.root, "diff", "--cached", "--name-only", "--", *ours).strip():
            # `commit -- paths`: only these paths, whatever else the user has staged
            git(ws.root, "commit", "-q", "-m", "mmfm init: workspace layout, params and DVC remote", "--", *ours)
    return ws


INIT_FILES = (".gitignore", "params.yaml", ".dvc/config", ".dvcignore", "dvc.yaml")  # what init writes and commits


def pending_edits(root: Path) -> set[str]:
    """Paths git already knows with changes not committed (modified, staged, deleted): the user's, not init's."""
    status = git(root, "status", "--porcelain=v1", "-z", "--untracked-files=no")
    return {entry[3:] for entry in status.split("\0") if len(entry) > 3}


def lock_hash(root: Path, stage: str, path: str) -> str | None:
    """The md5 dvc.lock records for output `path` of `stage` (None before the stage was committed)."""
    lock_file = Path(root) / "dvc.lock"
    lock = yaml.safe_load(lock_file.read_text()) if lock_file.exists() else {}
    for out in ((lock or {}).get("stages", {}).get(stage, {}) or {}).get("outs", []):
        if out.get("path") == path:
            return out.get("md5")
    return None

"""What the registry holds for one model version, and the only way mmfm loads one back.

Staging: the workspace's backbone + adapters (bundle/), its evaluation, the contract results of the data it was
trained on (governance/) and a model card, in one folder whose tree hash (`mmfm.content_sha256`) identifies the
registration. Loading: `download_verified` refuses a version whose registration never finished
(`mmfm.registration=incomplete`, set in the request that creates the version, `complete` as its last write) or whose
files differ from the sha256 manifest in its tags.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from tasks import tags
from tasks.atomic import write_json
from tasks.evaluation.assess import subgroup_primary
from tasks.registry.card_content import card_content
from tasks.registry.client import parse_ref
from tasks.registry.gate import Candidate, GatePolicy, evidence_checks
from tasks.registry.integrity import IntegrityError, hash_tree, manifest_from_tags, manifest_tags, verify_tree
from tasks.registry.model_card import render_model_card
from tasks.registry.promotion import evaluation_facts
from tasks.registry.pyfunc import MultimodalPyfunc, load_bundle, score
from tasks.registry.records import COLUMNS, records_from_split
from tasks.stage.run import Attempt
from tasks.training.bundle import load_backbone, read_meta
from tasks.training.curated_dataset import dataset_config
from tasks.training.split_data import SplitData, load_split
from tasks.workspace import Workspace

PIP = ["torch==2.13.0", "transformers==5.24.0", "peft==0.21.2", "monai==1.6.1", "mlflow==3.17.2", "pandas==2.3.3",
       "numpy==2.4.6", "polars==2.1.0", "safetensors", "tokenizers"]
CONTENT_SHA256 = tags.key("content_sha256")
REGISTRATION = tags.REGISTRATION  # "incomplete" from the version's creation, "complete" as its last write
ARTIFACTS = ("bundle", "evaluation", "card", "governance")


GATE_NOTE = ("The promotion gate's evidence rules, judged at registration on this evaluation with the workspace's "
             "promote parameters. The decision itself (with the champion, integrity and PHI checks) is recorded at "
             "promotion in the registry's version tags and the lineage ledger.")


def _gate(evaluation: dict, params: dict, name: str) -> dict:
    """The evidence rules (chance, baselines, exceptions) with their values and verdicts, for the card."""
    try:
        policy = GatePolicy.from_params(params)
    except (TypeError, ValueError) as exc:  # a typo in promote: must not stop a registration; the card says so
        return {"error": f"The promote parameters cannot be read ({exc}), so the gate's rules were not judged."}
    candidate = Candidate(name=name, version="(at registration)", **evaluation_facts(evaluation))
    return {"note": GATE_NOTE, "checks": json.loads(json.dumps(evidence_checks(candidate, policy), default=str))}


def stage_card(staging: Path, evaluation: dict, meta: dict, name: str, params: dict) -> dict:
    """card/: the version-less card (model_card.json, the data the published card is rendered from; .md and a
    self-contained .html) and the plots it draws from the report, all hashed with the model. Deterministic (no
    clock), so a rerun on the same files stages the same tree and registers nothing twice."""
    card = card_content(evaluation, meta, name, _gate(evaluation, params, name), staging)
    markdown, page = render_model_card(card, image_root=staging, md_image_prefix="../")
    write_json(staging / "card" / "model_card.json", card)
    (staging / "card" / "model_card.md").write_text(markdown)
    (staging / "card" / "model_card.html").write_text(page)
    return card


def read_evaluation(ws: Workspace) -> dict:
    path = ws.models / "evaluation" / "evaluation.json"
    if not path.exists():
        raise FileNotFoundError("no evaluation report: run `mmfm evaluate` before registering")
    return json.loads(path.read_text())


def stage_artifacts(ws: Workspace, staging: Path, name: str) -> dict:
    """bundle/ (backbone + adapters), evaluation/ and card/ in one folder: what the registry will hold."""
    evaluation = read_evaluation(ws)
    shutil.copytree(ws.models / "backbone", staging / "bundle" / "backbone")
    shutil.copytree(ws.models / "finetuned", staging / "bundle" / "finetuned")
    shutil.copytree(ws.models / "evaluation", staging / "evaluation")
    if ws.validation_report.exists():  # the contract results of the data it was trained on, hashed too
        (staging / "governance").mkdir()
        shutil.copy2(ws.validation_report, staging / "governance" / ws.validation_report.name)
    (staging / "card").mkdir()
    stage_card(staging, evaluation, read_meta(ws.models / "backbone"), name, ws.params())
    return evaluation


def input_example(shapes_from) -> pd.DataFrame:  # noqa: F821 - pandas is imported lazily
    """Two records with the real inputs' shapes and no patient's values: a registered model ships no patient data
    (a de-identified note still carries free text and shifted dates). Blank images, one lab, a neutral sentence."""
    first = shapes_from.take([0])
    blank = {k: torch.zeros_like(v) for k, v in first.tensors.items() if k in ("image_3d", "image_2d")}
    mask = torch.zeros_like(first.tensors["mask"])
    for i, name in enumerate(("image_3d", "image_2d")):
        mask[:, i] = name in blank
    images = records_from_split(SplitData({**blank, "mask": mask}, {"patient_id": ["example-2"]}))
    rows = [{"patient_id": "example-1", "image_3d": None, "image_2d": None, "labs": "[[0, 12.5, 0.0]]",
             "notes": "Cough and fever for three days.", "omics": None},
            {"patient_id": "example-2", "image_3d": images["image_3d"][0], "image_2d": images["image_2d"][0],
             "labs": None, "notes": None, "omics": None}]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def contracts_passed(ws: Workspace) -> bool:
    report = ws.validation_report
    if not report.exists():
        return False
    return json.loads(report.read_text()).get("blocked") is False  # a blocked validation publishes nothing


def registered_with(client, name: str, content: str):
    """(complete, incomplete): the version numbers already registered from exactly these backbone, adapter and
    evaluation files, and the newest one whose registration never finished."""
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException as exc:  # an unreachable server is an error, not "nothing registered yet"
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None, None
        raise
    same = [v for v in versions if v.tags.get(CONTENT_SHA256) == content]
    done = [v.version for v in same if v.tags.get(tags.REGISTRATION) != "incomplete"]  # no tag: registered before
    pending = [v for v in same if v.tags.get(tags.REGISTRATION) == "incomplete"]
    return (str(min(done, key=int)) if done else None,
            max(pending, key=lambda v: int(v.version)) if pending else None)


def log_model(ws: Workspace, staging: Path, run_tags: dict[str, str], attempt: Attempt) -> str:
    """Log the staged folder as one pyfunc in the stage's MLflow run (journaled by `attempt`); -> its model URI."""
    _, tokenizer, bmeta = load_backbone(ws.models / "backbone")
    example = input_example(load_split(ws.curated, "test", tokenizer, dataset_config(bmeta)))
    output = score(load_bundle(staging / "bundle"), example)
    with attempt.mlflow_run("register", run_tags):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=MultimodalPyfunc(),
            artifacts={a: str(staging / a) for a in ARTIFACTS if (staging / a).exists()},
            signature=infer_signature(example, output), input_example=example, pip_requirements=PIP)
        attempt.finish({"model_uri": info.model_uri})
    return info.model_uri


def version_tags(ws: Workspace, evaluation: dict, hashes: dict, content: str, phi_findings: int) -> dict[str, str]:
    """The facts the gate and the audit read, as version tags, with the artifact manifest."""
    diag = evaluation["tasks"]["diagnosis"]
    return {
        tags.key("evaluated_split"): evaluation["split"],
        tags.key("evaluated_dataset_version"): evaluation["dataset_version"],
        tags.key("trained_dataset_version"): str(read_meta(ws.models / "backbone").get("dataset_version")),
        tags.key("contracts_passed"): str(contracts_passed(ws)).lower(),
        tags.key("metrics"): json.dumps({k: v["value"] for k, v in diag["metrics"].items()}),
        tags.key("primary"): json.dumps({t: r["metrics"][r["primary_metric"]]["value"]
                                         for t, r in evaluation["tasks"].items()}),
        tags.key("subgroups"): json.dumps(subgroup_primary(diag)), tags.key("phi_findings"): str(phi_findings),
        CONTENT_SHA256: content,
        **manifest_tags(hashes)}


def download_verified(uri: str, dst: Path) -> Path:
    """Download a registered version's artifacts and check every file against its sha256 tags."""
    client = mlflow.MlflowClient()
    name, version = parse_ref(uri, client)
    version_tags = client.get_model_version(name, version).tags
    if version_tags.get(tags.REGISTRATION) == "incomplete":
        raise IntegrityError(f"{name}/{version}: registration incomplete (its register run failed part-way); "
                             "rerun `mmfm register` to complete it")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dst)))
    verify_tree(local, manifest_from_tags(version_tags))
    return local


def load_verified(uri: str, scratch: Path):
    """The pyfunc of `models:/NAME@alias` or NAME/VERSION, after its artifacts passed the hash check."""
    return mlflow.pyfunc.load_model(str(download_verified(uri, scratch)))


def model_version(ws: Workspace, client, name: str, staging: Path, content: str, run_tags: dict[str, str],
                  attempt: Attempt, pending) -> tuple:
    """The model version these staged files are registered as; -> (ModelVersion, MLflow run id). An earlier
    attempt's is completed: its version when it died after creating one (`pending`), else its logged model when it
    died after logging (`attempt.reused`); else the model is logged and the version created, born incomplete."""
    if pending is not None:
        return pending, pending.run_id
    model_uri = attempt.result["model_uri"] if attempt.reused else log_model(ws, staging, run_tags, attempt)
    mv = mlflow.register_model(model_uri, name, tags={**run_tags, tags.REGISTRATION: "incomplete",
                                                      CONTENT_SHA256: content})
    return mv, attempt.run_id


def registered_hashes(name: str, version: str, scratch: Path) -> dict:
    """sha256 of every file of the version as the registry serves it (what `download_verified` will check)."""
    return hash_tree(Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}",
                                                              dst_path=str(scratch))))

"""`mmfm predict`: batch scoring with a registered model, loaded by alias or version only after its artifacts passed
the hash check. Scores a curated split, or a new extract brought through ingest, de-identification and validation
into a scoring area (flows/area.py: it never becomes training data). Output: parquet with pseudonymous patient ids,
predictions, per-modality contributions and the model version; the ledger records inputs, output and model.
A new extract is named by its scoring area (`extract-<digest>`, flows/area.py), never by its folder's name, and its
path is withheld from the flow-run parameters Prefect stores (flows/boundary.py).
An alias is used only where the promotion gate set it (tasks/registry/gated.py: the ledger's last approved promote or
rollback); `allow_ungated` scores with an alias moved outside mmfm anyway and the ledger event says `ungated: true`.
An explicit NAME/VERSION needs no gate check. The event names the version as an input (`models:/NAME/VERSION`).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.area import prepare_area
from flows.boundary import private_flow
from flows.run_names import run_name
from tasks.atomic import write_with
from tasks.registry import scoring
from tasks.registry.gated import require_gated, version_entry
from tasks.stage.run import stage_run
from tasks.workspace import Workspace


@task(name="score", cache_policy=NO_CACHE)
def score_task(ws: Workspace, model_version: str, curated: Path, split: str | None):
    return scoring.score_version(ws, model_version, curated, split)


@private_flow("predict", private=("source",), guard=False, flow_run_name=run_name("predict"))
def predict_flow(workspace: Path, model: str, source: Path | None = None, split: str = "test",
                 out: Path | None = None, allow_ungated: bool = False) -> dict:
    with stage_run(workspace, "predict") as run:
        ws = run.ws
        client = mlflow.MlflowClient()
        resolved = require_gated(ws.root, client, model, allow_ungated)
        name, version = resolved["name"], resolved["version"]
        if not resolved["gated"]:
            get_run_logger().warning("scoring with an ungated alias (--allow-ungated): %s", resolved["warning"])
        area = None
        if source is not None:
            area = prepare_area(ws, Path(source), "scoring")["area"]
            curated, which = area.curated, None
        else:
            curated, which = ws.curated, None if split == "all" else split
        frame = score_task(ws, f"{name}/{version}", curated, which)
        label = area.root.name if area is not None else f"curated-{split}"
        out = Path(out) if out else ws.root / "data" / "predictions" / f"{name}-v{version}-{label}.parquet"
        write_with(out, lambda tmp: frame.to_parquet(tmp, index=False))
        model_input = [e for e in [version_entry(client, name, version)] if e]
        event = run.record(inputs=[curated, *model_input], outputs=[out],
                           params={"model": f"{name}/{version}", "source": label},
                           facts={"model_version": f"{name}/{version}", "patients": len(frame),
                                  "alias": resolved["alias"], "ungated": not resolved["gated"],
                                  "area": str(area.root.relative_to(ws.root)) if area else None},
                           fallback=out.name)
    get_run_logger().info("scored %d patients with %s/%s", len(frame), name, version)
    return {"model_version": f"{name}/{version}", "alias": resolved["alias"], "ungated": not resolved["gated"],
            "patients": len(frame), "output": str(out),
            "source": label, "lineage_event": event.event_id,
            "classes": json.loads(frame["predicted_class"].value_counts().to_json())}

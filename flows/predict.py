"""`mmfm predict`: batch scoring with a registered model, loaded by alias or version only after its artifacts passed
the hash check. Scores a curated split, or a new extract brought through ingest, de-identification and validation
into a scoring area (flows/area.py: it never becomes training data). Output: parquet with pseudonymous patient ids,
predictions, per-modality contributions and the model version; the ledger records inputs, output and model.
A new extract is named by its scoring area (`extract-<digest>`, flows/area.py), never by its folder's name, and its
path is withheld from the flow-run parameters Prefect stores (flows/boundary.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.area import prepare_area
from flows.boundary import private_flow
from tasks.atomic import write_with
from tasks.registry import scoring
from tasks.registry.client import parse_ref
from tasks.stage.run import stage_run
from tasks.workspace import Workspace


@task(name="score", cache_policy=NO_CACHE)
def score_task(ws: Workspace, model_version: str, curated: Path, split: str | None):
    return scoring.score_version(ws, model_version, curated, split)


@private_flow("predict", private=("source",), guard=False)
def predict_flow(workspace: Path, model: str, source: Path | None = None, split: str = "test",
                 out: Path | None = None) -> dict:
    with stage_run(workspace, "predict") as run:
        ws = run.ws
        name, version = parse_ref(model, mlflow.MlflowClient())
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
        event = run.record(inputs=[curated], outputs=[out], params={"model": f"{name}/{version}", "source": label},
                           facts={"model_version": f"{name}/{version}", "patients": len(frame),
                                  "area": str(area.root.relative_to(ws.root)) if area else None},
                           fallback=out.name)
    get_run_logger().info("scored %d patients with %s/%s", len(frame), name, version)
    return {"model_version": f"{name}/{version}", "patients": len(frame), "output": str(out),
            "source": label, "lineage_event": event.event_id,
            "classes": json.loads(frame["predicted_class"].value_counts().to_json())}

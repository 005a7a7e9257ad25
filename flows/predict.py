"""`mmfm predict`: batch scoring with a registered model, loaded by alias or version only after its artifacts passed
the hash check. Scores a curated split, or a new extract brought through ingest, de-identification and validation
into a scoring area (flows/area.py: it never becomes training data). Output: parquet with pseudonymous patient ids,
predictions, per-modality contributions and the model version; the ledger records inputs, output and model.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from tasks.workspace import Workspace


def score_curated(pyfunc_model, bundle: Path, curated: Path, split: str | None):
    """Records of a curated folder (in the model's gene order) scored by the pyfunc -> pandas DataFrame."""
    from tasks.registry.records import records_from_split
    from tasks.training.bundle import load_backbone
    from tasks.training.data import load_split
    from tasks.training.dataset import DatasetConfig

    _, tokenizer, meta = load_backbone(bundle / "backbone")
    genes = meta.get("omics_genes")
    data = load_split(curated, split, tokenizer, DatasetConfig(genes=tuple(genes) if genes else None))
    return pyfunc_model.predict(records_from_split(data))


@flow(name="predict")
def predict_flow(workspace: Path, model: str, source: Path | None = None, split: str = "test",
                 out: Path | None = None) -> dict:
    import mlflow

    from flows.registry import _parse, load_verified
    from tasks import tracking
    from tasks.lineage import record

    ws = Workspace(Path(workspace).resolve())
    tracking.configure(ws.root)
    name, version = _parse(model, mlflow.MlflowClient())
    area = None
    if source is not None:
        from flows.area import prepare_area

        prepared = prepare_area(ws, Path(source), "scoring")
        area, curated, which = prepared["area"], prepared["area"].curated, None
    else:
        curated, which = ws.curated, None if split == "all" else split
    with tempfile.TemporaryDirectory(dir=ws.state) as tmp:
        pyfunc_model = load_verified(f"{name}/{version}", Path(tmp))
        bundle = next(Path(tmp).rglob("bundle"))
        frame = score_curated(pyfunc_model, bundle, curated, which)
    frame["model_version"] = f"{name}/{version}"
    label = Path(source).name if source is not None else f"curated-{split}"
    out = Path(out) if out else ws.root / "data" / "predictions" / f"{name}-v{version}-{label}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    event = record(ws, "predict", str(flow_run.id or out.name), inputs=[curated], outputs=[out],
                   params={"model": f"{name}/{version}", "source": label},
                   facts={"model_version": f"{name}/{version}", "patients": len(frame),
                          "area": str(area.root.relative_to(ws.root)) if area else None})
    get_run_logger().info("scored %d patients with %s/%s", len(frame), name, version)
    return {"model_version": f"{name}/{version}", "patients": len(frame), "output": str(out),
            "source": label, "lineage_event": event.event_id,
            "classes": json.loads(frame["predicted_class"].value_counts().to_json())}

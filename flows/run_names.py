"""Flow runs an operator can tell apart in Prefect's UI: `<stage>-<site, model or dataset>-<UTC time>`, tagged.

Why here: Prefect names a run with two random words unless the flow gives a `flow_run_name`; a callable one runs
once per run, with the run's parameters, before the flow body, so it is also where the run gets its tags (stage,
site / model / dataset version), without touching any flow's body. Every label comes from a value mmfm validated or
made (a `--site` is `[a-z0-9-]`, a dataset version is `<rev>-<md5>`, a model reference is a registry name), never
from an extract's path (docs/privacy.md): a run's name and tags are stored by Prefect like its parameters.

    @flow(name="evaluate", flow_run_name=run_name("evaluate"))
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from prefect.context import FlowRunContext

from tasks.versioning.dataset import current

SAFE = re.compile(r"[^A-Za-z0-9@/._-]+")
TAG = "mmfm"  # every mmfm flow run carries it: one filter in the UI shows them all


def subject(parameters: dict) -> tuple[str, str]:
    """What the run is about, as (kind, label): the site an ingest reads, the model a registry stage acts on, else
    the dataset version the workspace holds now (`none` before the first validation)."""
    if parameters.get("site"):
        return "site", str(parameters["site"])
    model = parameters.get("model") or (parameters.get("name") if parameters.get("alias") else None)
    if model:
        return "model", str(model)
    return "dataset", dataset_label(parameters.get("workspace"))


def dataset_label(workspace) -> str:
    """The workspace's current dataset version (tasks.versioning.dataset.current), or `none`; never raises: a name
    must not fail a run."""
    if workspace is None:
        return "none"
    try:
        return current(Path(workspace)).name
    except Exception:  # noqa: BLE001 - no curated data yet, or no workspace: the run still gets a name
        return "none"


def run_name(stage: str) -> Callable[[], str]:
    """The `flow_run_name` callable of `stage`: names the running flow run and tags it (stage, subject)."""

    def name() -> str:
        context = FlowRunContext.get()
        parameters = dict(context.parameters or {}) if context else {}
        kind, label = subject(parameters)
        label = SAFE.sub("-", label)[:80] or "none"
        if context is not None and context.flow_run is not None:
            _tag(context, [TAG, f"stage:{stage}", f"{kind}:{label}"])
        return f"{stage}-{label}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"

    name.__name__ = f"{stage}_run_name"
    return name


def _tag(context: FlowRunContext, wanted: list[str]) -> None:
    """Add `wanted` to the run's tags (kept: tags the caller's `prefect.tags(...)` gave it)."""
    tags = list(dict.fromkeys([*(context.flow_run.tags or []), *wanted]))
    update = getattr(context.client, "update_flow_run", None)
    if update is None:
        return
    done = update(flow_run_id=context.flow_run.id, tags=tags)
    if hasattr(done, "close") and hasattr(done, "send"):  # an async client (async flow): tags wait for a sync one
        done.close()
        return
    context.flow_run.tags = tags

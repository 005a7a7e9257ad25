"""`mmfm pipeline` when nothing is out of date: DVC's answer, without a Prefect run.

Why: the `pipeline` flow asks DVC about each stage in turn (one `dvc status` process per stage) inside a Prefect run,
which starts Prefect's temporary API server first; with nothing to do that is many seconds of start-up for a "no".
Here one DVC status, in this process (DVC is imported for the curated check anyway; a `dvc` subprocess would load it a
second time), answers for every stage of the workspace's dvc.yaml (the stages flows/pipeline.py rendered), under
the workspace lock the flow would hold, with the same curated check the flow makes before its model stages.
Anything out of date (or a stage finished but not yet recorded after a kill) -> None: the flow runs as before and
decides stage by stage.
"""

from __future__ import annotations

import time
from pathlib import Path


def nothing_to_do(root: Path) -> dict | None:
    """The pipeline's summary when every stage is current (nothing run, every stage skipped), else None."""
    from tasks.stage.status import dvc_stages
    from tasks.workspace_lock import workspace_lock

    t0 = time.perf_counter()
    stages = list(dvc_stages(root))
    if not stages:
        return None
    with workspace_lock(Path(root), command="mmfm pipeline"):
        if not _all_current(Path(root)):
            return None  # out of date (or DVC could not tell): the flow decides stage by stage
        if any(name not in ("ingest", "validate") for name in stages):  # flows.pipeline.DATA_STAGES
            from tasks.validation.curated_check import check_curated

            check_curated(root)  # as the flow does before any model stage, even a current one
    return {"ran": [], "skipped": stages, "recorded": [], "stages": {},
            "seconds": round(time.perf_counter() - t0, 2), "fast_path": True}


def _all_current(root: Path) -> bool:
    """`dvc status` of every stage is empty: deps, params and outs as dvc.lock records them."""
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            return not repo.status()
    except Exception:  # noqa: BLE001 - DVC could not tell: the flow asks it stage by stage and reports properly
        return False

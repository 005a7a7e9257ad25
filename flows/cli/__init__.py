"""The `mmfm` command: `app` (the console script, pyproject `mmfm = "flows.cli:app"`) and `main`.

    common     the app, the options every command takes (--workspace, --json, --debug; -v and --version on the app),
               output, argument checks before Prefect starts, and error handling
    progress   Prefect's console lines muted; a progress bar fed by Prefect's finished task and subflow runs
    fastpath   `pipeline` with nothing to do: DVC's answer without a Prefect run
    data       init, synth, demo, validate, version, pipeline, lineage
    ingest     ingest {dicom,pacs,fhir,omics}
    models     pretrain, finetune, evaluate
    registry   register, promote, rollback, predict, monitor
    audit      audit {report,export,verify}

Imports go one way: each command module imports flows.cli.common (and the flows and tasks it runs, inside its
commands); this module imports the command modules, which registers their commands on the app.
"""

from __future__ import annotations

from flows.cli import audit, data, ingest, models, registry  # noqa: F401 - importing registers the commands
from flows.cli.common import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console-script shim
    app()

"""The `mmfm` command (DESIGN.md §7): `app` (the console script, pyproject `mmfm = "flows.cli:app"`) and `main`.

    common     the app, the options every command takes (--workspace, --json, --debug), output and error handling
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

"""Opt-in fault injection for the reliability tests: `MMFM_FAULT_KILL_AT=<point>` SIGKILLs the process at a named
point that has no side effect a test could watch for (a few milliseconds between two writes).

Points (each named where it is called):
    ingest.after_parts     flows/ingest.py publish(): staged parts, quarantine and de-id report written,
                           the ledger event and the ingest-state record not yet
    ingest.after_ledger    flows/ingest.py publish(): the ledger event written, the ingest-state record not yet
    lineage.mid_append     tasks/lineage/ledger.py Ledger.append(): the row inserted, the transaction not committed
    validate.after_quarantine  flows/validate.py: the quarantine file written, the validation report, curated
                           tables and ledger event not yet
    version.after_commit   flows/version.py: the dataset version's git commit made, its ledger event not yet
    promote.after_verdict  flows/promote.py promote_flow(): the decision written (pending marker + version tag),
                           the ledger event, alias history and alias not yet
    finetune.in_run        tasks/training/adapters.py log_adapter(): a task's MLflow run opened and journaled,
                           nothing logged to it yet
    pretrain.after_run     tasks/training/backbone.py publish_backbone(), tasks/evaluation/report.py
    evaluate.after_run     publish_evaluation(): the stage's MLflow run ended (its outputs published,
                           tasks/stage/journal.py says finished), the ledger event (tasks/stage/run.py record) not yet
    pipeline.before_dvc_commit  flows/pipeline.py run_stage(): the stage finished (ledger event written), its
                           `dvc commit` not yet

`<point>@<n>` kills at the n-th time this process reaches the point (e.g. `ingest.after_parts@2`: the first
extract published completely, the second in flight). Unset (always, outside tests) it does nothing.

The kill is SIGKILL, not an exception: no `finally`, no atexit, no Prefect state hook runs, exactly as with
`kill -9` or the OOM killer. A process that leads its own process group (the CLI started by a test with
start_new_session) takes the group with it, as `kill -9 -PGID` would; otherwise only itself.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "MMFM_FAULT_KILL_AT"
POINTS = ("ingest.after_parts", "ingest.after_ledger", "lineage.mid_append", "validate.after_quarantine",
          "version.after_commit", "promote.after_verdict", "finetune.in_run", "pretrain.after_run",
          "evaluate.after_run", "pipeline.before_dvc_commit")
_reached: Counter[str] = Counter()


def kill_point(name: str) -> None:
    """SIGKILL this process (its group, when it leads one) if MMFM_FAULT_KILL_AT names this point."""
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name!r}; known: {', '.join(POINTS)}")
    point, _, nth = os.environ.get(ENV, "").partition("@")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] < int(nth or 1):
        return
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)

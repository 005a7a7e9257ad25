"""The same ingest on Prefect's thread runner and on a local Dask cluster (2 worker processes) writes the same
bytes: outputs depend on the input, never on the scheduler."""

from __future__ import annotations

import hashlib

import pytest

from flows.ingest import _task_runner, ingest_dicom
from tasks.synth.generate import SynthConfig, generate
from tasks.workspace import init_workspace

pytestmark = pytest.mark.slow


def _staged_digest(ws) -> dict[str, str]:
    return {p.relative_to(ws.staged).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(ws.staged.rglob("*")) if p.is_file()}


def test_threads_and_dask_write_identical_outputs(tmp_path, prefect_api, pseudonym_key):
    cohort = tmp_path / "cohort"
    generate(cohort, SynthConfig(patients=10, sites=1, seed=15, corrupt_rate=0.1, cxr_size=48, ct_shape=(4, 24, 24)))
    digests, summaries = [], []
    for runner in ("threads", "dask"):
        ws = init_workspace(tmp_path / runner)
        flow = ingest_dicom.with_options(task_runner=_task_runner(runner))
        summaries.append(flow(source=cohort / "site-a" / "dicom", workspace=ws.root, site="site-a", max_items=8))
        digests.append(_staged_digest(ws))
    assert digests[0] == digests[1] and any(k.startswith("images/") for k in digests[0])
    keep = ("received", "ingested", "quarantined", "quarantine_reasons", "tables")
    assert [{k: s[k] for k in keep} for s in summaries][0] == {k: summaries[1][k] for k in keep}

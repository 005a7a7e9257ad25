"""A real curated workspace, built once per session from a tiny generated cohort without Prefect: the plain ingest
functions stage it, flows.validate's own helpers split and publish it (contracts are tested elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.deid import Pseudonymizer
from tasks.ingest.dicom import ImagingConfig, batch_series, ingest_series_batch, scan_headers
from tasks.ingest.fhir import ingest_fhir
from tasks.ingest.landing import land
from tasks.ingest.omics import ingest_omics
from tasks.ingest.staged import build_cohort, read_table, write_part
from tasks.synth.generate import SynthConfig, generate
from tasks.workspace import Workspace

KEYS = Pseudonymizer(b"k" * 32)
SPLITS = {"train": 0.5, "val": 0.25, "test": 0.25}


def _stage(result, staged: Path, extract_id: str) -> None:
    for table, rows in result.rows.items():
        write_part(staged, table, extract_id, rows)


def _ingest_site(cohort: Path, ws: Workspace, site: str) -> None:
    landing, staged = ws.landing, ws.staged
    extract = land(cohort / site / "fhir", landing, "fhir", site)
    _stage(ingest_fhir(extract, landing, KEYS, site), staged, extract.extract_id)
    known = set(read_table(staged, "patients")["patient_id"])
    extract = land(cohort / site / "omics", landing, "omics", site)
    _stage(ingest_omics(extract, landing, KEYS, site, known), staged, extract.extract_id)
    extract = land(cohort / site / "dicom", landing, "dicom", site)
    groups, result = scan_headers(extract, landing, site)
    for batch in batch_series(groups):
        result.merge(ingest_series_batch(batch, landing, staged, KEYS, site, ImagingConfig()))
    _stage(result, staged, extract.extract_id)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> tuple[Workspace, Path]:
    """(workspace with data/curated published, the generated cohort folder holding truth/)."""
    from tasks.validation.publish import publish_curated, staged_tables

    root = tmp_path_factory.mktemp("train-ws")
    cohort = root / "cohort"
    generate(cohort, SynthConfig(patients=12, sites=1, seed=15, cxr_size=48, ct_shape=(4, 24, 24)))
    ws = Workspace(root)
    for site in sorted(p.name for p in cohort.iterdir() if (p / "fhir").is_dir()):
        _ingest_site(cohort, ws, site)
    build_cohort(ws.staged)
    publish_curated(ws, staged_tables(ws, SPLITS))
    return ws, cohort

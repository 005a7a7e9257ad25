"""Real data through the real ingest: scikit-survival's breast_cancer set exported, landed, ingested, joined back
to its outcomes by pseudonym, and a tiny cross-validation of the bench's core (seconds, CPU)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from bench.breast_cancer import SETTINGS, cross_validate
from tasks.deid import Pseudonymizer
from tasks.ingest.landing import land
from tasks.ingest.omics import ingest_omics
from tasks.ingest.staged import read_table
from tasks.realdata.breast_cancer import CLINICAL, SITE, build_cohort, mrn
from tasks.workspace import Workspace

KEYS = Pseudonymizer(b"k" * 32)
N_PATIENTS, N_PROBES = 198, 76


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("breast-cancer")
    ws = Workspace(root / "ws")
    cohort, results = build_cohort(root / "export", ws, KEYS)
    return root, ws, cohort, results


def test_every_sample_is_accounted_for(built):
    root, _, _, results = built
    assert sorted(p.name for p in (root / "export" / "omics").iterdir()) == ["expression.tsv", "sample_sheet.tsv"]
    fhir, omics = results["fhir"], results["omics"]
    assert (fhir.received, fhir.ingested, fhir.quarantined) == (N_PATIENTS, N_PATIENTS, 0)
    assert omics.received == omics.ingested + omics.quarantined == N_PATIENTS
    assert omics.quarantined == 0, [r.rule for r in omics.rejections]


def test_omics_alone_is_pending_without_the_ehr_patients(built, tmp_path):
    """Why the export carries a Patient extract: the flow's known set is the staged patients, empty without it, so
    every sample waits (pending) for the FHIR ingest of its patient."""
    root = built[0]
    landing = tmp_path / "landing"
    extract = land(root / "export" / "omics", landing, "omics", SITE)
    result = ingest_omics(extract, landing, KEYS, SITE, known_mrns=set())
    assert result.ingested == 0 and not result.rejections and len(result.pending) == result.received


def test_staged_table_holds_no_export_ids(built):
    _, ws, _, _ = built
    omics = read_table(ws.staged, "omics")
    assert omics.height == N_PATIENTS
    ids = set(omics["patient_id"].to_list()) | set(omics["sample_id"].to_list())
    assert not any(i.startswith("BC") for i in ids)


def test_matrix_aligns_with_outcomes_by_pseudonym(built):
    from sksurv.datasets import load_breast_cancer

    _, _, cohort, _ = built
    assert cohort.x.shape == (N_PATIENTS, N_PROBES + len(CLINICAL))
    assert cohort.features[-len(CLINICAL):] == list(CLINICAL)
    assert cohort.mrn == [mrn(i) for i in range(N_PATIENTS)]
    assert cohort.patient_id == [KEYS.patient(SITE, m) for m in cohort.mrn]
    x, y = load_breast_cancer()  # the staged table is in pseudonym order; values must come back in export order
    probes = ["X" + f for f in cohort.features[:N_PROBES]]
    np.testing.assert_allclose(cohort.x[:, :N_PROBES], x[probes].to_numpy(), rtol=1e-6)
    np.testing.assert_array_equal(cohort.x[:, CLINICAL.index("age") + N_PROBES], x["age"].to_numpy())
    np.testing.assert_array_equal(cohort.time, y["t.tdm"])
    np.testing.assert_array_equal(cohort.event, y["e.tdm"])
    assert not np.isnan(cohort.x).any()


def test_load_refuses_two_samples_per_patient(built):
    from tasks.realdata.breast_cancer import load_ingested

    _, ws, _, _ = built
    omics = read_table(ws.staged, "omics")
    outcomes = pl.DataFrame({"mrn": ["BC0001"], "time": [1.0], "event": [1]})
    with pytest.raises(ValueError, match="more than one"):
        load_ingested(pl.concat([omics, omics.head(1)]), outcomes, KEYS)


@pytest.fixture
def one_thread():
    """As the bench runs: on a shared CPU, torch's second thread spins against other work (~20x slower steps)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_two_fold_run_gives_c_indices(built, one_thread):
    _, _, cohort, _ = built
    rows = cross_validate(cohort, folds=2, steps=8, seed=0, settings=SETTINGS[:2], alphas=(0.1, 10.0))
    assert [r["fold"] for r in rows] == [0, 1] and sum(r["n_test"] for r in rows) == N_PATIENTS
    for r in rows:
        for key in ("cox_fixed", "cox_inner", "ours"):
            assert math.isfinite(r[key]) and 0.0 <= r[key] <= 1.0

"""`mmfm ingest pacs`: a real Orthanc on loopback, studies uploaded over STOW-RS, ingested back over QIDO/WADO
through the Prefect flow; a second run fetches nothing; the staged rows match ingesting the same files directly."""

from __future__ import annotations

import pytest

from flows.ingest import ingest_dicom, ingest_pacs
from tasks.ingest.pacs import stow_instances
from tasks.ingest.staged import read_table
from tasks.synth.generate import SynthConfig, generate
from tasks.workspace import init_workspace

pytestmark = pytest.mark.slow


def test_orthanc_round_trip_through_the_flow(orthanc_factory, tmp_path, prefect_api, pseudonym_key):
    server = orthanc_factory()
    cohort = tmp_path / "cohort"
    generate(cohort, SynthConfig(patients=6, sites=1, seed=15, missing_rate=0.0, cxr_size=48, ct_shape=(4, 24, 24)))
    files = sorted((cohort / "site-a" / "dicom").rglob("*.dcm"))
    stow_instances(server.dicomweb_url, files, auth=server.auth)

    ws = init_workspace(tmp_path / "ws")
    first = ingest_pacs(url=server.dicomweb_url, workspace=ws.root, site="site-a", auth=server.auth)
    assert first["studies_fetched"] == first["studies_found"] > 0
    assert first["received"] == len(files) == first["ingested"] + first["quarantined"]
    assert first["quarantine_reasons"].keys() <= {"dicom.burned_in"}

    again = ingest_pacs(url=server.dicomweb_url, workspace=ws.root, site="site-a", auth=server.auth)
    assert again["studies_fetched"] == 0 and again["received"] == 0

    direct = init_workspace(tmp_path / "direct")
    ingest_dicom(source=cohort / "site-a" / "dicom", workspace=direct.root, site="site-a")
    via_pacs = read_table(ws.staged, "imaging").drop("shard", "source_sha256s").sort("series_id")
    from_files = read_table(direct.staged, "imaging").drop("shard", "source_sha256s").sort("series_id")
    assert via_pacs.equals(from_files)

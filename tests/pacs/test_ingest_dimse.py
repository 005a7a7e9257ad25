"""`mmfm ingest pacs --dimse HOST:PORT --aet AET`: a real Orthanc on loopback, studies uploaded over STOW-RS, found
with C-FIND and fetched with C-GET through the same Prefect flow, landing and accounting as the DICOMweb mode; a
second run fetches nothing; the staged rows match ingesting the same files directly."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.ingest import ingest_dicom
from tasks.ingest.pacs import stow_instances
from tasks.ingest.staged import read_table
from tasks.synth.generate import SynthConfig, generate
from tasks.workspace import init_workspace

pytestmark = pytest.mark.slow


def _ingest(ws, orthanc, *extra: str) -> dict:
    res = CliRunner().invoke(app, ["ingest", "pacs", "--dimse", f"127.0.0.1:{orthanc.dicom_port}", "--aet",
                                   orthanc.aet, "--site", "site-a", "-w", str(ws.root), "--json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_dimse_round_trip_through_the_cli(orthanc_factory, tmp_path, prefect_api, pseudonym_key):
    server = orthanc_factory()
    cohort = tmp_path / "cohort"
    generate(cohort, SynthConfig(patients=4, sites=1, seed=16, missing_rate=0.0, cxr_size=48, ct_shape=(4, 24, 24)))
    files = sorted((cohort / "site-a" / "dicom").rglob("*.dcm"))
    stow_instances(server.dicomweb_url, files, auth=server.auth)

    ws = init_workspace(tmp_path / "ws")
    first = _ingest(ws, server, "--calling-aet", "MMFM-TEST")
    assert first["source"] == "pacs" and first["studies_fetched"] == first["studies_found"] > 0
    assert first["received"] == len(files) == first["ingested"] + first["quarantined"]
    assert first["quarantine_reasons"].keys() <= {"dicom.burned_in"}

    again = _ingest(ws, server)
    assert again["studies_fetched"] == 0 and again["received"] == 0

    direct = init_workspace(tmp_path / "direct")
    ingest_dicom(source=cohort / "site-a" / "dicom", workspace=direct.root, site="site-a")
    via_dimse = read_table(ws.staged, "imaging").drop("shard", "source_sha256s").sort("series_id")
    from_files = read_table(direct.staged, "imaging").drop("shard", "source_sha256s").sort("series_id")
    assert via_dimse.equals(from_files)


def test_dimse_options_are_checked_before_anything_starts(tmp_path):
    ws = init_workspace(tmp_path / "ws")
    for args, needle in ((["--dimse", "127.0.0.1"], "HOST:PORT"), (["--dimse", "127.0.0.1:4242"], "--aet"),
                         (["--dimse", "127.0.0.1:4242", "--aet", "A" * 17], "AE title"),
                         (["--url", "http://127.0.0.1:1/dicom-web", "--dimse", "127.0.0.1:4242"], "either")):
        res = CliRunner().invoke(app, ["ingest", "pacs", "--site", "site-a", "-w", str(ws.root), *args])
        assert res.exit_code == 1 and needle in res.output and "Traceback" not in res.output, res.output

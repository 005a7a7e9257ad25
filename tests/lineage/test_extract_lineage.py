"""A raw extract (a file or folder as received) is found in the ledger by the sha256s its landing manifest lists,
and its downstream reaches the dataset version; its path and file names appear nowhere in the answer."""

from __future__ import annotations

import hashlib
import json

import pytest

from tasks.lineage import Ledger, artifact_entry
from tasks.lineage.graph import extract_lineage

from .conftest import write


@pytest.fixture()
def ingested(tmp_path):
    root = tmp_path / "ws"
    extract = tmp_path / "incoming" / "site-a" / "fhir"
    files = {name: write(extract / name, f"{name} rows".encode()) for name in ("Patient.ndjson", "Observation.ndjson")}
    manifest = {"extract_id": "e1", "source": "fhir", "site": "site-a",
                "files": [{"path": n, "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": 9}
                          for n, p in files.items()]}
    landing = write(root / "data/landing/fhir/e1.json", json.dumps(manifest).encode())
    staged = write(root / "data/staged/patients/e1.parquet", b"staged part")
    curated = write(root / "data/curated/patients.parquet", b"curated table")
    ledger = Ledger.of_workspace(root)
    ledger.append("ingest", "run-ingest", inputs=[artifact_entry(landing, root)],
                  outputs=[artifact_entry(staged, root)], params={"source": "fhir", "site": "site-a"})
    ledger.append("validate", "run-validate", inputs=[artifact_entry(root / "data/staged", root)],
                  outputs=[artifact_entry(curated.parent, root)])
    ledger.append("version", "run-version", inputs=[artifact_entry(curated.parent, root)],
                  facts={"dataset_version": "abc123-def456"})
    return root, ledger, extract


def test_a_raw_file_and_its_folder_lead_to_the_dataset_version(ingested):
    root, ledger, extract = ingested
    for target in (extract / "Patient.ndjson", extract.parent):
        graph = extract_lineage(ledger, root, target)
        assert graph["matched"] == "extract" and graph["roots"][0].startswith("artifact:data/landing/fhir/e1.json@")
        stages = {n["stage"] for n in graph["nodes"] if n["type"] == "event"}
        assert {"ingest", "validate", "version"} <= stages
        version = next(n for n in graph["nodes"] if n.get("stage") == "version")
        assert version["facts"]["dataset_version"] == "abc123-def456"
        assert "dataset version abc123-def456" in graph["text"]
        shown = json.dumps(graph)
        assert "Patient.ndjson" not in shown and "site-a/fhir" not in shown and str(extract) not in shown


def test_a_file_never_ingested_is_refused_without_naming_it(ingested, tmp_path):
    root, ledger, _ = ingested
    stray = write(tmp_path / "elsewhere" / "Secret-Name.ndjson", b"never landed")
    with pytest.raises(LookupError) as err:
        extract_lineage(ledger, root, stray)
    assert "Secret-Name" not in str(err.value) and "was ingested" in str(err.value)

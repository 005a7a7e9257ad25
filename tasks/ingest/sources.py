"""Which extracts the pipeline's ingest stage reads, and the patients an omics extract may name."""

from __future__ import annotations

from pathlib import Path

from tasks.ingest.staged import read_table
from tasks.workspace import Workspace

KIND_ORDER = ("fhir", "omics", "dicom")  # EHR first: omics samples must match staged patients


def configured_sources(ws: Workspace) -> list[dict]:
    """`params.yaml: ingest.sources` ([{kind, path, site}]); by default every `extracts/**/<site>/<kind>` folder."""
    listed = ws.params().get("ingest", {}).get("sources")
    if listed:
        return [{**s, "path": ws.root / s["path"]} for s in listed]
    found = [{"kind": p.name, "path": p, "site": p.parent.name} for p in sorted(ws.extracts.glob("**/*"))
             if p.is_dir() and p.name in KIND_ORDER and any(p.iterdir())]
    return sorted(found, key=lambda s: (s["site"], KIND_ORDER.index(s["kind"]), str(s["path"])))


def known_patients(staged: Path, site: str) -> set[str]:
    """Pseudonymous ids of the patients staged from `site` (an omics sample must name one of them)."""
    patients = read_table(staged, "patients")
    return set(patients.filter(patients["site"] == site)["patient_id"].to_list()) if patients.height else set()

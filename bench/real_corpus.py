"""What a real extract we did not write loses at the boundary: per resource type and per SOP class, received, staged,
quarantined (by rule), and the share of clinical facts that reach the curated tables.

    python bench/real_corpus.py [--workdir DIR] [--mrn-system URI ...] [--json]

Builds the corpus with bench/corpus_build.py (HL7's official FHIR R4 examples from the npm registry, pydicom's
shipped DICOM test files), then runs the product as a user would, through the CLI: `mmfm init`, `mmfm ingest fhir`,
`mmfm ingest dicom`, `mmfm validate`, in a fresh workspace with a throw-away pseudonym key.

A clinical fact is one Observation, Condition or other patient-referencing clinical resource (anything staged to
`labs`, `conditions`, `notes` or `events`) that carries a reference to a Patient. It *reaches* the curated tables when
its keyed id (computed here with the same key) is a row id of a curated table. Facts are counted per distinct
(type, id): the examples repeat some resources inside Bundles, and the copy is one fact. The share is given over all
facts, over facts whose Patient is itself in the corpus (a reference to a patient nobody sent cannot be staged), and
over facts whose Patient was staged (what the data plane loses once identity is settled).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import polars as pl
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.corpus_build import build  # noqa: E402
from tasks.deid.pseudonym import Pseudonymizer  # noqa: E402
from tasks.ingest.fhir_bundle import bundle_resources  # noqa: E402

SITE = "corpus"
KEY = "corpus-bench-key-" + "0" * 48
FACT_TABLES = ("labs", "conditions", "notes", "events")
ID_COLUMNS = ("observation_id", "condition_id", "note_id", "event_id", "encounter_id", "patient_id")
PATIENT_ELEMENTS = ("subject", "patient")


def mmfm(*args: str, workspace: Path) -> dict:
    """One CLI call with --json; the summary is the last line of stdout."""
    env = os.environ | {"MMFM_PSEUDONYM_KEY": KEY, "COLUMNS": "200"}
    run = subprocess.run([sys.executable, "-m", "flows.cli", *args, "--workspace", str(workspace), "--json"],
                         cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                         check=False)
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    return {"failed": errors[-1] if errors else run.stderr[-2000:], "exit": run.returncode}


def resources(fhir: Path):
    """(file, location, resource) for every resource of the corpus, as the ingest numbers them (Bundle entries named
    by `urn:uuid:` fullUrls resolved the way ingest resolves them)."""
    for f in sorted([*fhir.glob("*.ndjson"), *fhir.glob("*.json")]):
        text = f.read_text(encoding="utf-8")
        docs = [text] if f.suffix == ".json" else text.splitlines()
        for n, line in enumerate(docs, start=1):
            doc = json.loads(line)
            if doc.get("resourceType") == "Bundle":
                for k, res in enumerate(bundle_resources(doc.get("entry", [])), start=1):
                    yield f.name, f"line {n} entry {k}", res if isinstance(res, dict) else {}
            else:
                yield f.name, f"line {n}", doc


def _patient_ref(res: dict) -> str | None:
    for element in PATIENT_ELEMENTS:
        ref = res.get(element)
        ref = ref[0] if isinstance(ref, list) and ref else ref
        value = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(value, str) and value.split("/")[-2:-1] == ["Patient"]:
            return value.split("/")[-1]
    return None


def _quarantine(workspace: Path, summary: dict) -> pl.DataFrame:
    path = workspace / summary["quarantine_file"] if summary.get("quarantine_file") else None
    return pl.read_parquet(path) if path and path.exists() else pl.DataFrame()


def _landed_names(workspace: Path, source: str) -> dict[str, str]:
    """sha256 of a landed object -> the file's name in the corpus."""
    out = {}
    for manifest in (workspace / "data" / "landing" / source).glob("*.json"):
        out |= {f["sha256"]: f["path"] for f in json.loads(manifest.read_text())["files"]}
    return out


def _curated_ids(workspace: Path) -> set[str]:
    ids: set[str] = set()
    for table in (workspace / "data" / "curated").glob("*.parquet"):
        frame = pl.read_parquet(table)
        for column in (c for c in ID_COLUMNS if c in frame.columns and c != "patient_id"):
            for value in frame[column].drop_nulls().to_list():
                ids.update([value, *str(value).split("/")])
    return ids


def fhir_report(workspace: Path, corpus: Path, summary: dict) -> dict:
    keys = Pseudonymizer(KEY.encode())
    names = _landed_names(workspace, "fhir")
    q = _quarantine(workspace, summary)
    rule_at = {}
    if len(q):
        for row in q.iter_rows(named=True):
            rule_at[(names.get(row["sha256"], "?"), row["location"])] = row["rule"]
    patients = {r["id"] for _, _, r in resources(corpus) if r.get("resourceType") == "Patient" and r.get("id")}
    staged_patients = {r["id"] for name, where, r in resources(corpus)
                       if r.get("resourceType") == "Patient" and r.get("id") and (name, where) not in rule_at}
    curated = _curated_ids(workspace)
    by_type: dict[str, Counter] = defaultdict(Counter)
    facts: dict[tuple[str, str], dict] = {}
    for name, where, res in resources(corpus):
        rtype = res.get("resourceType") or "unknown"
        rule = rule_at.get((name, where))
        by_type[rtype]["received"] += 1
        by_type[rtype][f"quarantined:{rule}" if rule else "ingested"] += 1
        pid = _patient_ref(res)
        if pid and rtype not in ("Patient", "Encounter") and res.get("id"):
            fact = facts.setdefault((rtype, res["id"]), {"reached": False, "patient_sent": pid in patients,
                                                         "patient_staged": pid in staged_patients})
            fact["reached"] |= keys.resource_id(SITE, rtype, res["id"]) in curated
    all_facts = list(facts.values())
    sent = [f for f in all_facts if f["patient_sent"]]
    staged = [f for f in all_facts if f["patient_staged"]]
    share = {"facts": len(all_facts), "reached": sum(f["reached"] for f in all_facts),
             "facts_patient_sent": len(sent), "reached_patient_sent": sum(f["reached"] for f in sent),
             "facts_patient_staged": len(staged), "reached_patient_staged": sum(f["reached"] for f in staged)}
    fact_types = Counter(t for t, _ in facts)
    reached_types = Counter(t for (t, _), f in facts.items() if f["reached"])
    per_type = {t: dict(c) | {"facts": fact_types.get(t, 0), "facts_reached": reached_types.get(t, 0)}
                for t, c in sorted(by_type.items())}
    return {"per_type": per_type, "share": share}


def dicom_report(workspace: Path, corpus: Path, summary: dict) -> dict:
    names = _landed_names(workspace, "dicom")
    q = _quarantine(workspace, summary)
    rule_of = {}
    if len(q):
        for row in q.iter_rows(named=True):
            rule_of.setdefault(names.get(row["sha256"], "?"), row["rule"])
    per_class: dict[str, Counter] = defaultdict(Counter)
    for f in sorted(corpus.glob("*.dcm")):
        try:
            sop = pydicom.dcmread(f, stop_before_pixels=True, force=True).get("SOPClassUID")
            label = sop.name if sop is not None else "(no SOP class)"
        except Exception:  # noqa: BLE001 - a file pydicom cannot read is reported as such
            label = "(unreadable)"
        rule = rule_of.get(f.name)
        per_class[label]["received"] += 1
        per_class[label][f"quarantined:{rule}" if rule else "ingested"] += 1
    return {"per_sop_class": {k: dict(v) for k, v in sorted(per_class.items())}}


def tables(workspace: Path) -> dict:
    out = {}
    for layer in ("staged", "curated"):
        root = workspace / "data" / layer
        for path in sorted(root.glob("*")):
            files = [path] if path.suffix == ".parquet" else sorted(path.glob("*.parquet"))
            rows = sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in files)
            out.setdefault(path.stem, {})[layer] = rows
    return out


def run(workdir: Path, mrn_systems: list[str]) -> dict:
    corpus, workspace = workdir / "corpus", workdir / "workspace"
    built = build(corpus, Path.home() / ".cache" / "mmfm" / "corpus")
    env = os.environ | {"MMFM_PSEUDONYM_KEY": KEY}
    subprocess.run([sys.executable, "-m", "flows.cli", "init", str(workspace)], env=env, check=True,
                   capture_output=True, cwd=Path(__file__).resolve().parents[1])
    extra = [a for s in mrn_systems for a in ("--mrn-system", s)]
    fhir = mmfm("ingest", "fhir", str(corpus / "fhir"), "--site", SITE, *extra, workspace=workspace)
    dicom = mmfm("ingest", "dicom", str(corpus / "dicom"), "--site", SITE, workspace=workspace)
    validate = mmfm("validate", workspace=workspace)
    return {"corpus": built, "fhir": fhir_report(workspace, corpus / "fhir", fhir),
            "dicom": dicom_report(workspace, corpus / "dicom", dicom), "tables": tables(workspace),
            "validate": validate}


def print_report(r: dict) -> None:
    print("FHIR per resource type: received / ingested / quarantined by rule / facts reaching curated")
    for t, c in r["fhir"]["per_type"].items():
        rules = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(c.items()) if k.startswith("quarantined:"))
        facts = f"  facts {c['facts_reached']}/{c['facts']}" if c["facts"] else ""
        print(f"  {t:28s} {c['received']:4d} {c.get('ingested', 0):4d}  {rules}{facts}")
    s = r["fhir"]["share"]
    print(f"facts reaching curated: {s['reached']}/{s['facts']} = {s['reached'] / max(s['facts'], 1):.3f}; "
          f"whose Patient is in the corpus: {s['reached_patient_sent']}/{s['facts_patient_sent']} = "
          f"{s['reached_patient_sent'] / max(s['facts_patient_sent'], 1):.3f}; whose Patient was staged: "
          f"{s['reached_patient_staged']}/{s['facts_patient_staged']} = "
          f"{s['reached_patient_staged'] / max(s['facts_patient_staged'], 1):.3f}")
    print("DICOM per SOP class: received / ingested / quarantined by rule")
    for k, c in r["dicom"]["per_sop_class"].items():
        rules = ", ".join(f"{k2.split(':', 1)[1]} {v}" for k2, v in sorted(c.items()) if k2.startswith("quarantined:"))
        print(f"  {k:52s} {c['received']:3d} {c.get('ingested', 0):3d}  {rules}")
    print(f"validate: {json.dumps(r['validate'])[:600]}")
    print("rows per table (staged / curated):")
    for t, c in r["tables"].items():
        print(f"  {t:16s} {c.get('staged', '-')!s:>6} {c.get('curated', '-')!s:>6}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, help="keep the corpus and workspace here (default: a temp folder)")
    ap.add_argument("--mrn-system", action="append", default=[], help="passed to `mmfm ingest fhir`")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = run(args.workdir or Path(tmp), args.mrn_system)
    print(json.dumps(report, indent=1)) if args.json else print_report(report)


if __name__ == "__main__":
    main()

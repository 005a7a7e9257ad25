"""Build a test corpus from data nobody on this project wrote, from the package registries only.

    python bench/corpus_build.py OUT [--cache ~/.cache/mmfm/corpus]

FHIR: the official HL7 FHIR R4 examples (npm package `hl7.fhir.r4.examples` 4.0.1, CC0), one JSON document per file,
turned into the two shapes servers deliver: a bulk export's one `<Type>.ndjson` per resource type, one resource per
line, and the clinical Bundles (collection, transaction, document, message, searchset) as indented `.json`
documents, one per file, the way Synthea and a server's Bundle download write them. Conformance and
knowledge artifacts (StructureDefinition, ValueSet, SearchParameter, ...) are not patient data and are left out;
so are Bundles that carry them. Every other example is kept, whatever its type, so the ingest meets resource types
it has never seen.
DICOM: every test file pydicom's wheel ships (pydicom/data/test_files: CT, MR, multi-frame, RLE/JPEG/J2K, SR, RT,
ECG, big-endian, truncated and broken files) copied under `dicom/`. Nothing is downloaded beyond `npm pack` from the
npm registry (cached), and nothing at test time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import pydicom

PACKAGE, VERSION = "hl7.fhir.r4.examples", "4.0.1"
CONFORMANCE = frozenset({
    "StructureDefinition", "ValueSet", "CodeSystem", "SearchParameter", "ConceptMap", "NamingSystem",
    "OperationDefinition", "CompartmentDefinition", "CapabilityStatement", "ImplementationGuide", "StructureMap",
    "GraphDefinition", "MessageDefinition", "TerminologyCapabilities", "TestScript", "TestReport", "ExampleScenario",
    "Library", "Measure", "PlanDefinition", "ActivityDefinition", "Questionnaire", "EventDefinition",
    "ResearchDefinition", "ResearchElementDefinition", "ObservationDefinition", "SpecimenDefinition",
    "ChargeItemDefinition", "EffectEvidenceSynthesis", "RiskEvidenceSynthesis", "Evidence", "EvidenceVariable",
    "SubstanceSpecification", "MedicationKnowledge", "CatalogEntry", "DeviceDefinition", "Subscription",
    "OperationOutcome", "Parameters", "Binary", "Endpoint"})
DATA_BUNDLES = frozenset({"collection", "transaction", "document", "message", "searchset"})


def fetch_examples(cache: Path) -> Path:
    """The npm tarball of the R4 examples, packed once into `cache` (npm's registry: a package registry)."""
    cache.mkdir(parents=True, exist_ok=True)
    tgz = cache / f"{PACKAGE}-{VERSION}.tgz"
    if not tgz.exists():
        subprocess.run(["npm", "pack", f"{PACKAGE}@{VERSION}", "--silent"], cwd=cache, check=True,
                       capture_output=True, timeout=600)
    return tgz


def _clinical_bundle(bundle: dict) -> bool:
    types = {(e.get("resource") or {}).get("resourceType") for e in bundle.get("entry", []) if isinstance(e, dict)}
    return bundle.get("type") in DATA_BUNDLES and not (types & CONFORMANCE) and "Bundle" not in types


def write_fhir(tgz: Path, out: Path) -> Counter:
    """One NDJSON file per type from the tarball's JSON examples; returns documents written per file type."""
    lines: dict[str, list[str]] = {}
    bundles: dict[str, dict] = {}
    with tarfile.open(tgz) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            name = Path(member.name).name
            if not member.isfile() or not name.endswith(".json") or name in ("package.json", ".index.json"):
                continue
            try:
                doc = json.loads(tar.extractfile(member).read())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            rtype = doc.get("resourceType") if isinstance(doc, dict) else None
            if not isinstance(rtype, str) or rtype in CONFORMANCE:
                continue
            if rtype == "Bundle":
                if _clinical_bundle(doc):
                    bundles[name] = doc
                continue
            lines.setdefault(rtype, []).append(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
    out.mkdir(parents=True, exist_ok=True)
    for name, doc in bundles.items():  # as servers and Synthea write them: one indented document per file
        (out / name).write_text(json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
    for rtype, docs in lines.items():
        (out / f"{rtype}.ndjson").write_text("\n".join(docs) + "\n", encoding="utf-8")
    return Counter({t: len(d) for t, d in lines.items()}) + Counter({"Bundle": len(bundles)})


def write_dicom(out: Path) -> int:
    """pydicom's shipped test files (the wheel's data folder only: pydicom-data is never fetched)."""
    source = Path(pydicom.__file__).parent / "data" / "test_files"
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for f in sorted(source.glob("*.dcm")):
        shutil.copyfile(f, out / f.name)
        n += 1
    return n


def build(out: Path, cache: Path) -> dict:
    fhir = write_fhir(fetch_examples(cache), out / "fhir")
    return {"fhir": dict(sorted(fhir.items())), "dicom_files": write_dicom(out / "dicom")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mmfm" / "corpus")
    args = ap.parse_args()
    print(json.dumps(build(args.out, args.cache), indent=1))


if __name__ == "__main__":
    main()

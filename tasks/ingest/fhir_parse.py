"""Read a FHIR R4 bulk export (or Bundles / single resources) line by line, reconcile it with its manifest, and
reject what breaks a rule, with the file and line, before anything is de-identified.

Rules (ids as they appear in quarantine records):
    fhir.json          the line is not a JSON object
    fhir.type          resourceType missing or not the file's type, or no id (a string)
    fhir.bundle_entry  a Bundle entry that is not an object holding a resource (or `entry` is not a list)
    fhir.unsupported_type  a well-formed resource of a type outside CURATED_TYPES (e.g. Organization, Medication,
                       Practitioner: no patient subject): kept in landing and accounted for, not staged
    fhir.structure     fails structural R4 validation (fhir.resources) for the types we curate
    fhir.duplicate     a resource with the same type and id was already read in this extract
    ref.patient        the subject refers to a patient that is neither in the extract nor published earlier
    labs.code          an Observation (or a component with a value) with no LOINC coding of LOINC grammar; any LOINC
                       code is accepted, catalogued or not (tasks/ingest/fhir_labs.py)
    labs.value         a value type we do not stage (valueRange, ...), or a quantity without a finite number
    labs.unit          a unit that is not UCUM, or not commensurable with the code's canonical unit (lab_units.py)
    labs.plausible     a catalogued code's value outside its possible range (after conversion to the canonical unit)
    fhir.deleted       listed in the manifest's `deleted` files: the resource is withdrawn, not ingested
    fhir.manifest, fhir.deleted_list, fhir.outcome_list   unusable parts of the export's metadata (fhir_manifest.py)
Messages name rules, FHIR type names, element paths (as far as the FHIR model defines them) and positions, never
values: not a resourceType that is not a FHIR type, not a JSON key, not a file's name.

A reference to a patient of an earlier export of the same site (`earlier`: an incremental export does not repeat
unchanged Patients) is as good as one to a patient of this extract.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from fhir.resources.R4B import get_fhir_model_class

from tasks.deid.fhir import human_names
from tasks.deid.fhir_elements import element_path, type_label
from tasks.ingest.fhir_bundle import bundle_resources
from tasks.ingest.fhir_events import EVENT_TYPES, patient_element
from tasks.ingest.fhir_labs import check as check_observation
from tasks.ingest.fhir_labs import propose_units
from tasks.ingest.fhir_manifest import (
    Manifest,
    Problem,
    listed_type,
    load_json,
    read_deleted,
    read_manifest,
    read_outcomes,
    read_records,
)
from tasks.ingest.lab_units import LabUnits
from tasks.ingest.landing import Extract, object_path, object_uri
from tasks.ingest.quarantine import Rejection

CURATED_TYPES = ("Patient", "Encounter", "Observation", "Condition", "DiagnosticReport", "DocumentReference",
                 *EVENT_TYPES)  # events: patient-referencing clinical resources, one typed table (fhir_events.py)
STAFF_TYPES = ("Practitioner",)  # not staged, but their names are staff a note may name
RELATED_TYPES = ("RelatedPerson", "Person")  # not staged, but their names are people a note may name


@dataclass
class Item:
    """One parsed resource and where it came from."""

    resource: dict
    uri: str
    sha256: str
    line: int
    where: str = ""  # "line 3 entry 2" inside a Bundle; "" means "line <line>"

    @property
    def location(self) -> str:
        """Where a quarantine record points: the line, and the entry of a Bundle on that line."""
        return self.where or f"line {self.line}"


@dataclass
class ParsedExport:
    items: dict[str, list[Item]] = field(default_factory=dict)  # by resourceType, in file order
    rejections: list[Rejection] = field(default_factory=list)
    received: Counter = field(default_factory=Counter)  # lines per resource type (what the export delivered)
    manifest: dict = field(default_factory=dict)  # landing object URI -> {"type", "declared", "received"}
    deleted: set[tuple[str, str]] = field(default_factory=set)
    errors: Counter = field(default_factory=Counter)  # OperationOutcome issues by (severity, code)
    transaction_date: date | None = None  # the manifest's transactionTime: when the export was taken
    staff_names: set[str] = field(default_factory=set)  # of Practitioner resources (not staged)
    related_names: set[str] = field(default_factory=set)  # of RelatedPerson / Person resources (not staged)
    units: LabUnits = field(default_factory=LabUnits)  # canonical unit per LOINC code, resolved for this extract


def _reject(out: ParsedExport, uri: str, sha: str, where: str, rule: str, message: str) -> None:
    out.rejections.append(Rejection(source_uri=uri, sha256=sha, location=where, source="fhir", stage="ingest",
                                    rule=rule, message=message))


def _structure_models() -> dict:
    """R4 structural models from fhir.resources (imported lazily: it is slow to import)."""
    # fhir.resources 8 ships R5 at the top level and R4B as a subpackage; R4B keeps these types as in R4
    return {t: get_fhir_model_class(t).model_validate for t in CURATED_TYPES}


def _parse_file(out: ParsedExport, path: Path, uri: str, sha: str, expected: str | None, validate,
                document: bool = False) -> None:
    for n, line in read_records(path, document):
        where = f"line {n}"
        res = load_json(line)
        if res is None:
            out.received[expected or "unknown"] += 1
            _reject(out, uri, sha, where, "fhir.json", "line is not valid JSON")
            continue
        rtype = res.get("resourceType") if isinstance(res, dict) else None
        rtype = rtype if isinstance(rtype, str) and rtype else None
        if rtype == "Bundle" and expected in (None, "Bundle") and isinstance(res.get("id"), str) and res["id"]:
            _parse_bundle(out, res, uri, sha, where, validate)
            continue
        out.received[expected or rtype or "unknown"] += 1
        if rtype is None or (expected and rtype != expected) or not isinstance(res.get("id"), str) or not res["id"]:
            _reject(out, uri, sha, where, "fhir.type",
                    f"resourceType {type_label(rtype)} in a {type_label(expected) if expected else 'resource'} "
                    "file, or no id")
            continue
        _accept(out, res, uri, sha, where, validate)


def _parse_bundle(out: ParsedExport, bundle: dict, uri: str, sha: str, where: str, validate) -> None:
    """A Bundle is a container: each entry is one input item, accounted for on its own (a Bundle with no entry
    delivers nothing). An entry that is not an object holding a resource is quarantined, never skipped."""
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        out.received["Bundle"] += 1
        _reject(out, uri, sha, where, "fhir.bundle_entry", "Bundle.entry is not a list")
        return
    for k, inner in enumerate(bundle_resources(entries), start=1):  # urn:uuid entries named, references resolved
        at = f"{where} entry {k}"
        rtype = inner.get("resourceType") if isinstance(inner, dict) else None
        out.received[rtype if isinstance(rtype, str) and rtype else "unknown"] += 1
        if not isinstance(inner, dict):
            _reject(out, uri, sha, at, "fhir.bundle_entry", "Bundle entry is not an object holding a resource")
        elif not isinstance(rtype, str) or not rtype or not isinstance(inner.get("id"), str) or not inner["id"]:
            _reject(out, uri, sha, at, "fhir.type", f"Bundle entry resource of type {type_label(rtype)} has no "
                    "resourceType or no id")
        else:
            _accept(out, inner, uri, sha, at, validate)


def _accept(out: ParsedExport, res: dict, uri: str, sha: str, where: str, validate) -> None:
    rtype = res["resourceType"]
    if rtype not in CURATED_TYPES:
        _collect_names(out, res, rtype)
        _reject(out, uri, sha, where, "fhir.unsupported_type",
                f"{type_label(rtype)} is not a curated type (no table, not a patient event): kept in landing, "
                "not staged")
        return
    if validate is not None and rtype in validate:
        try:
            validate[rtype](res)
        except Exception as exc:  # noqa: BLE001 - pydantic errors quote values and keys: report element paths only
            fields = sorted({element_path(rtype, e.get("loc", ())) for e in getattr(exc, "errors", list)()})
            _reject(out, uri, sha, where, "fhir.structure", f"{rtype} fails R4 structure at {', '.join(fields)}")
            return
    line = int(where.split()[1])
    out.items.setdefault(rtype, []).append(Item(resource=res, uri=uri, sha256=sha, line=line,
                                                where="" if where == f"line {line}" else where))


def _collect_names(out: ParsedExport, res: dict, rtype: str) -> None:
    """Names of people a note may mention who have no staged table: clinicians and related persons."""
    names = res.get("name")
    names = names if isinstance(names, list) else [names]
    if rtype in STAFF_TYPES:
        out.staff_names.update(human_names(names))
    elif rtype in RELATED_TYPES:
        out.related_names.update(human_names(names))


def parse_export(extract: Extract, landing: Path, validate_structure: bool = True,
                 earlier: Container[str] = (), units: LabUnits | None = None) -> ParsedExport:
    """Parse every NDJSON/JSON file of a landed FHIR extract; reconcile line counts with the manifest. `earlier`
    holds the FHIR ids of patients published from the same site before (see IngestState.patient_links); `units`
    the workspace's lab units (LabUnits over IngestState; default: units of this extract only)."""
    out = ParsedExport(units=units if units is not None else LabUnits())
    by_name = {Path(f.rel_path).name: f for f in extract.files}
    manifest_file = next((f for f in extract.files if Path(f.rel_path).name == "manifest.json"), None)
    manifest = _read_manifest(out, landing, manifest_file, by_name)
    validate = _structure_models() if validate_structure else None
    skip = {"manifest.json", *manifest.deleted, *manifest.errors}
    for f in extract.files:
        name = Path(f.rel_path).name
        if name in skip or not name.endswith((".ndjson", ".json")):
            continue
        expected = manifest.listed.get(name) or (name.split(".")[0] if name.endswith(".ndjson") else None)
        before = sum(out.received.values())
        uri = object_uri(landing, f.sha256)
        _parse_file(out, object_path(landing, f.sha256), uri, f.sha256, expected, validate,
                    document=name.lower().endswith(".json"))
        if name in manifest.listed:  # named by its landing object: a file's name stays inside landing
            out.manifest[uri] = {"type": listed_type(manifest, name), "declared": manifest.declared[name],
                                 "received": sum(out.received.values()) - before}
    for rtype, items in out.items.items():
        out.items[rtype] = _drop_duplicates_and_deleted(out, rtype, items)
    _check_references(out, earlier)
    _check_labs(out)
    return out


def _read_manifest(out: ParsedExport, landing: Path, manifest_file, by_name: dict) -> Manifest:
    """The manifest and its deleted / error files; each unusable part is received and quarantined."""
    if manifest_file is None:
        return Manifest()
    manifest = read_manifest(object_path(landing, manifest_file.sha256))
    out.transaction_date = manifest.transaction_date
    _problems(out, landing, manifest_file, manifest.problems)
    for name in manifest.deleted:
        if name in by_name:
            deleted, problems = read_deleted(object_path(landing, by_name[name].sha256))
            out.deleted |= deleted
            _problems(out, landing, by_name[name], problems)
    for name in manifest.errors:
        if name in by_name:
            errors, problems = read_outcomes(object_path(landing, by_name[name].sha256))
            out.errors.update(errors)
            _problems(out, landing, by_name[name], problems)
    return manifest


def _problems(out: ParsedExport, landing: Path, f, problems: list[Problem]) -> None:
    for p in problems:
        out.received["export metadata"] += 1
        _reject(out, object_uri(landing, f.sha256), f.sha256, p.where, p.rule, p.message)


def _drop_duplicates_and_deleted(out: ParsedExport, rtype: str, items: list[Item]) -> list[Item]:
    seen, kept = set(), []
    for it in items:
        rid = it.resource["id"]
        where = it.location
        if (rtype, rid) in out.deleted:
            _reject(out, it.uri, it.sha256, where, "fhir.deleted", f"{rtype} withdrawn by the export's deleted list")
        elif rid in seen:
            _reject(out, it.uri, it.sha256, where, "fhir.duplicate", f"{rtype} id repeated within the extract")
        else:
            seen.add(rid)
            kept.append(it)
    return kept


def _subject_id(res: dict) -> str | None:
    subject = res.get(patient_element(res["resourceType"]))  # `patient` for AllergyIntolerance, Immunization, ...
    ref = subject.get("reference") if isinstance(subject, dict) else None
    return ref.split("/", 1)[1] if isinstance(ref, str) and ref.startswith("Patient/") else None


def _check_references(out: ParsedExport, earlier: Container[str]) -> None:
    patients = {it.resource["id"] for it in out.items.get("Patient", [])}
    for rtype, items in out.items.items():
        if rtype == "Patient":
            continue
        kept = []
        for it in items:
            subject = _subject_id(it.resource)
            if subject is not None and (subject in patients or subject in earlier):
                kept.append(it)
            else:
                _reject(out, it.uri, it.sha256, it.location, "ref.patient",
                        f"{rtype}.{patient_element(rtype)} does not refer to a Patient of this extract or of an "
                        "earlier one")
        out.items[rtype] = kept


def _check_labs(out: ParsedExport) -> None:
    """Any LOINC-coded Observation is kept if its values can be staged. Two passes: the first units seen for codes
    new to the workspace are recorded before any reading is checked against them (tasks/ingest/lab_units.py)."""
    observations = out.items.get("Observation", [])
    for it in observations:
        propose_units(it.resource, out.units)
    out.units.resolve()
    kept = []
    for it in observations:
        fault = check_observation(it.resource, out.units)
        if fault is None:
            kept.append(it)
        else:
            _reject(out, it.uri, it.sha256, it.location, *fault)
    out.items["Observation"] = kept

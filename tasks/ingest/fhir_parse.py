"""Read a FHIR R4 bulk export (or Bundles / single resources) line by line, reconcile it with its manifest, and
reject what breaks a rule, with the file and line, before anything is de-identified.

Rules (ids as they appear in quarantine records):
    fhir.json          the line is not a JSON object
    fhir.type          resourceType missing or not the file's type, or no id (a string)
    fhir.bundle_entry  a Bundle entry that is not an object holding a resource (or `entry` is not a list)
    fhir.unsupported_type  a well-formed resource of a type outside CURATED_TYPES (e.g. MedicationRequest): kept in
                       landing and accounted for, not staged, until a table is curated for it
    fhir.structure     fails structural R4 validation (fhir.resources) for the types we curate
    fhir.duplicate     a resource with the same type and id was already read in this extract
    ref.patient        the subject refers to a patient that is not in the extract
    labs.code          an Observation whose LOINC code is not in data_contracts/labs.yaml
    labs.unit          a unit that is not valid for that LOINC code
    labs.plausible     a value outside the physiologically possible range (after conversion to the canonical unit)
    fhir.deleted       listed in the manifest's `deleted` files: the resource is withdrawn, not ingested
Messages name rules, types and positions, never values.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fhir.resources.R4B import get_fhir_model_class

from data_contracts import lab_by_loinc
from tasks.ingest.landing import Extract, object_path, object_uri
from tasks.ingest.quarantine import Rejection

CURATED_TYPES = ("Patient", "Encounter", "Observation", "Condition", "DiagnosticReport", "DocumentReference")
TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")  # a FHIR resource type name, safe to quote


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
    manifest: dict = field(default_factory=dict)  # type -> {"declared": n, "received": n}
    deleted: set[tuple[str, str]] = field(default_factory=set)
    errors: Counter = field(default_factory=Counter)  # OperationOutcome issues by (severity, code)
    transaction_time: str | None = None  # the manifest's: when the export was taken


def _reject(out: ParsedExport, uri: str, sha: str, where: str, rule: str, message: str) -> None:
    out.rejections.append(Rejection(source_uri=uri, sha256=sha, location=where, source="fhir", stage="ingest",
                                    rule=rule, message=message))


def _structure_models() -> dict:
    """R4 structural models from fhir.resources (imported lazily: it is slow to import)."""
    # fhir.resources 8 ships R5 at the top level and R4B as a subpackage; R4B keeps these types as in R4
    return {t: get_fhir_model_class(t).model_validate for t in CURATED_TYPES}


def _lines(path: Path):
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, start=1):
            if line.strip():
                yield n, line


def _type_name(rtype: object) -> str:
    """A resourceType fit to quote in a message: a FHIR type name, else a placeholder (the value is input)."""
    return rtype if isinstance(rtype, str) and TYPE_NAME.fullmatch(rtype) else "(not a type name)"


def _parse_file(out: ParsedExport, path: Path, uri: str, sha: str, expected: str | None, validate) -> None:
    for n, line in _lines(path):
        where = f"line {n}"
        try:
            res = json.loads(line)
        except json.JSONDecodeError:
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
                    f"resourceType {_type_name(rtype)} in a {expected or 'resource'} file, or no id")
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
    for k, entry in enumerate(entries, start=1):
        at = f"{where} entry {k}"
        inner = entry.get("resource") if isinstance(entry, dict) else None
        rtype = inner.get("resourceType") if isinstance(inner, dict) else None
        out.received[rtype if isinstance(rtype, str) and rtype else "unknown"] += 1
        if not isinstance(inner, dict):
            _reject(out, uri, sha, at, "fhir.bundle_entry", "Bundle entry is not an object holding a resource")
        elif not isinstance(rtype, str) or not rtype or not isinstance(inner.get("id"), str) or not inner["id"]:
            _reject(out, uri, sha, at, "fhir.type", f"Bundle entry resource of type {_type_name(rtype)} has no "
                    "resourceType or no id")
        else:
            _accept(out, inner, uri, sha, at, validate)


def _accept(out: ParsedExport, res: dict, uri: str, sha: str, where: str, validate) -> None:
    rtype = res["resourceType"]
    if rtype not in CURATED_TYPES:
        _reject(out, uri, sha, where, "fhir.unsupported_type",
                f"{_type_name(rtype)} is not a curated type ({', '.join(CURATED_TYPES)}): kept in landing, not staged")
        return
    if validate is not None and rtype in validate:
        try:
            validate[rtype](res)
        except Exception as exc:  # noqa: BLE001 - pydantic errors quote values: report only the failing fields
            fields = sorted({".".join(str(p) for p in e.get("loc", ())) for e in getattr(exc, "errors", list)()})
            _reject(out, uri, sha, where, "fhir.structure", f"{rtype} fails R4 structure at {', '.join(fields)}")
            return
    line = int(where.split()[1])
    out.items.setdefault(rtype, []).append(Item(resource=res, uri=uri, sha256=sha, line=line,
                                                where="" if where == f"line {line}" else where))


def parse_export(extract: Extract, landing: Path, validate_structure: bool = True) -> ParsedExport:
    """Parse every NDJSON/JSON file of a landed FHIR extract; reconcile line counts with the manifest."""
    out = ParsedExport()
    by_name = {Path(f.rel_path).name: f for f in extract.files}
    manifest_file = next((f for f in extract.files if Path(f.rel_path).name == "manifest.json"), None)
    listed: dict[str, str] = {}
    if manifest_file is not None:
        manifest = json.loads(object_path(landing, manifest_file.sha256).read_text())
        out.transaction_time = manifest.get("transactionTime")
        listed = {Path(o["url"]).name: o["type"] for o in manifest.get("output", [])}
        declared = {Path(o["url"]).name: int(o.get("count", -1)) for o in manifest.get("output", [])}
        for d in manifest.get("deleted", []):
            _read_deleted(out, landing, by_name.get(Path(d["url"]).name))
        for e in manifest.get("error", []):
            _read_outcomes(out, landing, by_name.get(Path(e["url"]).name))
    validate = _structure_models() if validate_structure else None
    skip = {"manifest.json"} | {Path(d).name for d in _aux_files(landing, manifest_file)}
    for f in extract.files:
        name = Path(f.rel_path).name
        if name in skip or not name.endswith((".ndjson", ".json")):
            continue
        expected = listed.get(name) or (name.split(".")[0] if name.endswith(".ndjson") else None)
        before = sum(out.received.values())
        _parse_file(out, object_path(landing, f.sha256), object_uri(landing, f.sha256), f.sha256, expected, validate)
        if name in listed:
            out.manifest[name] = {"type": listed[name], "declared": declared[name],
                                  "received": sum(out.received.values()) - before}
    for rtype, items in out.items.items():
        out.items[rtype] = _drop_duplicates_and_deleted(out, rtype, items)
    _check_references(out)
    _check_labs(out)
    return out


def _aux_files(landing: Path, manifest_file) -> list[str]:
    if manifest_file is None:
        return []
    manifest = json.loads(object_path(landing, manifest_file.sha256).read_text())
    return [o["url"] for o in manifest.get("deleted", []) + manifest.get("error", [])]


def _read_deleted(out: ParsedExport, landing: Path, f) -> None:
    """Bulk export `deleted`: Bundles whose entries say DELETE <type>/<id>."""
    if f is None:
        return
    for _, line in _lines(object_path(landing, f.sha256)):
        for entry in json.loads(line).get("entry", []):
            url = entry.get("request", {}).get("url", "")
            if "/" in url:
                rtype, rid = url.split("/")[-2:]
                out.deleted.add((rtype, rid))


def _read_outcomes(out: ParsedExport, landing: Path, f) -> None:
    """OperationOutcome files of the export: counted by severity and code (their diagnostics may hold PHI)."""
    if f is None:
        return
    for _, line in _lines(object_path(landing, f.sha256)):
        for issue in json.loads(line).get("issue", []):
            out.errors[f"{issue.get('severity', '?')}:{issue.get('code', '?')}"] += 1


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
    subject = res.get("subject")
    ref = subject.get("reference") if isinstance(subject, dict) else None
    return ref.split("/", 1)[1] if isinstance(ref, str) and ref.startswith("Patient/") else None


def _check_references(out: ParsedExport) -> None:
    patients = {it.resource["id"] for it in out.items.get("Patient", [])}
    for rtype, items in out.items.items():
        if rtype == "Patient":
            continue
        kept = []
        for it in items:
            if _subject_id(it.resource) in patients:
                kept.append(it)
            else:
                _reject(out, it.uri, it.sha256, it.location, "ref.patient",
                        f"{rtype}.subject does not refer to a Patient of this extract")
        out.items[rtype] = kept


def _check_labs(out: ParsedExport) -> None:
    labs, kept = lab_by_loinc(), []
    for it in out.items.get("Observation", []):
        obs, where = it.resource, it.location
        codes = [c.get("code") for c in obs.get("code", {}).get("coding", []) if c.get("system") == "http://loinc.org"]
        lab = next((labs[c] for c in codes if c in labs), None)
        qty = obs.get("valueQuantity") or {}
        if lab is None:
            _reject(out, it.uri, it.sha256, where, "labs.code", "Observation code is not a catalogued LOINC code")
        elif qty.get("code", qty.get("unit")) not in lab.units or not isinstance(qty.get("value"), int | float):
            _reject(out, it.uri, it.sha256, where, "labs.unit",
                    f"unit not valid for LOINC {lab.loinc} (allowed: {', '.join(lab.units)})")
        elif not lab.plausible[0] <= lab.to_canonical(qty["value"], qty.get("code", qty.get("unit"))) \
                <= lab.plausible[1]:
            _reject(out, it.uri, it.sha256, where, "labs.plausible",
                    f"value outside the possible range {lab.plausible[0]:g}-{lab.plausible[1]:g} {lab.canonical} "
                    f"for LOINC {lab.loinc}")
        else:
            kept.append(it)
    out.items["Observation"] = kept

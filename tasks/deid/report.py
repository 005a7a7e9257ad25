"""A run's de-identification report: how many of each action, on which attributes, and which files were flagged.

The report leaves the boundary (it is an artifact next to the curated data), so it holds only what cannot be PHI:
action codes, attribute keywords / tags / FHIR element paths, rule names, counts, and files named by their
content hash (landing is content-addressed; a path could name the patient). `add_*` refuses anything else.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from data_contracts.deid import default_config
from tasks.deid.dicom import DicomDeidResult
from tasks.deid.errors import DeidError
from tasks.deid.fhir import FhirDeidResult

SHA256 = re.compile(r"[0-9a-f]{64}")
SAFE_LABEL = re.compile(r"[A-Za-z0-9_.:=()<>,*\- ]{1,128}")  # keywords, tags, paths, rule names


@dataclass
class DeidReport:
    """Aggregate counts for one run, per modality. JSON via `to_json()`; merge runs with `merge()`."""

    profile: str = field(default_factory=lambda: default_config().method_label)
    dicom_files: int = 0
    fhir_resources: int = 0
    text_fields: int = 0
    actions: dict[str, Counter[str]] = field(default_factory=lambda: {"dicom": Counter(), "fhir": Counter()})
    attributes: dict[str, Counter[str]] = field(default_factory=lambda: {"dicom": Counter(), "fhir": Counter()})
    text_replacements: Counter[str] = field(default_factory=Counter)
    burned_in: list[dict[str, Any]] = field(default_factory=list)

    def add_dicom(self, result: DicomDeidResult, source_sha256: str) -> None:
        """Count one file; a burned-in flag is recorded with the source's sha256 and its de-identified UIDs."""
        _check_hash(source_sha256)
        self.dicom_files += 1
        _add_safe(self.actions["dicom"], result.actions)
        _add_safe(self.attributes["dicom"], result.attributes)
        if result.burned_in_risk:
            ds = result.dataset
            self.burned_in.append({"sha256": source_sha256, "reasons": sorted(_safe(r) for r in
                                                                                result.burned_in_reasons),
                                   "sop_instance_uid": str(ds.get("SOPInstanceUID", ""))})

    def add_fhir(self, result: FhirDeidResult) -> None:
        self.fhir_resources += 1
        _add_safe(self.actions["fhir"], result.actions)
        _add_safe(self.attributes["fhir"], result.attributes)
        self.text_fields += result.text_fields  # its notes, attachments and free strings, scrubbed in the walk
        _add_safe(self.text_replacements, result.text_replacements)

    def add_text(self, counts: Counter[str]) -> None:
        """Counts from scrub_text (NAME, DATE_SHIFTED, ...) for one free-text field."""
        self.text_fields += 1
        _add_safe(self.text_replacements, counts)

    def merge(self, other: DeidReport) -> DeidReport:
        out = DeidReport.from_dict(self.to_dict())
        out.dicom_files += other.dicom_files
        out.fhir_resources += other.fhir_resources
        out.text_fields += other.text_fields
        for kind in ("dicom", "fhir"):
            out.actions[kind].update(other.actions[kind])
            out.attributes[kind].update(other.attributes[kind])
        out.text_replacements.update(other.text_replacements)
        out.burned_in.extend(other.burned_in)
        out.profile = out.profile or other.profile
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "dicom_files": self.dicom_files, "fhir_resources": self.fhir_resources,
                "text_fields": self.text_fields,
                "actions": {k: dict(sorted(v.items())) for k, v in self.actions.items()},
                "attributes": {k: dict(sorted(v.items())) for k, v in self.attributes.items()},
                "text_replacements": dict(sorted(self.text_replacements.items())),
                "burned_in": sorted(self.burned_in, key=lambda b: b["sha256"])}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DeidReport:
        return cls(profile=raw.get("profile", ""), dicom_files=raw.get("dicom_files", 0),
                   fhir_resources=raw.get("fhir_resources", 0), text_fields=raw.get("text_fields", 0),
                   actions={k: Counter(raw.get("actions", {}).get(k, {})) for k in ("dicom", "fhir")},
                   attributes={k: Counter(raw.get("attributes", {}).get(k, {})) for k in ("dicom", "fhir")},
                   text_replacements=Counter(raw.get("text_replacements", {})),
                   burned_in=[dict(b) for b in raw.get("burned_in", [])])


def _check_hash(value: str) -> None:
    if not isinstance(value, str) or not SHA256.fullmatch(value):
        raise DeidError("report_source_ref", "a report names files by their lowercase hex sha256 only")


def _safe(label: str) -> str:
    """Labels come from our own code (keywords, tags, paths); anything unexpected is refused, not written."""
    if not SAFE_LABEL.fullmatch(label):
        raise DeidError("report_label", "a report label is not a keyword, tag, path or rule name")
    return label


def _add_safe(into: Counter[str], counts: Counter[str]) -> None:
    for label, n in counts.items():
        into[_safe(label)] += n

"""The generic walk over a FHIR R4 resource's JSON: one rule per kind of element, whatever the resource type.

Working by element shape rather than per resource type is what makes "other" resources safe too: a name, a
telecom, a narrative, an identifier, a reference, a date or a free string is handled the same wherever it sits.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.deid.dates import UnshiftableDate, shift_fhir
from tasks.deid.errors import DeidError
from tasks.deid.fhir_attachment import TEXT_PLAIN, decode_attachment, is_text
from tasks.deid.fhir_elements import dotted_label
from tasks.deid.pseudonym import Pseudonymizer
from tasks.deid.text import KnownIdentifiers, scrub_text

PATIENT_SYSTEM = "urn:mmfm:patient-pseudonym"
IDENTIFIER_SYSTEM = "urn:mmfm:identifier"
ELEMENT_NAME = re.compile(r"[a-z][A-Za-z0-9]{0,63}|resourceType")  # anything else in a key is not FHIR: dropped
REMOVED = {"name", "telecom", "address", "photo", "contact", "div", "authorString", "assigner", "hash", "size",
           "url", "modifierExtension"}
KEEP_STRING = {"resourceType", "system", "code", "status", "unit", "use", "version", "contentType", "language",
               "gender", "profile", "mode", "kind", "intent", "priority", "comparator", "valueCode", "valueUri",
               "valueCanonical", "data"}  # data: an attachment's content, already decoded, scrubbed and re-encoded
DATE_KEYS = {"date", "start", "end", "issued", "created", "time", "recorded", "lastUpdated", "authoredOn",
             "timestamp", "sent", "received", "creation", "event", "occurrenceDateTime", "birthDate",
             "started", "dateAsserted", "whenHandedOver", "whenPrepared", "receivedTime", "lastOccurrence",  # events
             "dateTime", "recordedOn", "authored", "dateWritten", "detected"}
REFERENCE = re.compile(r"(?:https?://\S+/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/\S+)?")
AGE_CAP_YEARS = 89


@dataclass
class Walk:
    """Everything one resource's walk needs, and what it counted."""

    keys: Pseudonymizer
    site: str
    patients: dict[str, tuple[str, str]]
    offset: int
    known: KnownIdentifiers
    extension_safe_list: frozenset[str]
    resource_type: str
    mrns: dict[str, tuple[str, str]] = field(default_factory=dict)  # MRN value -> (site, MRN) of the index
    earlier: Callable[[str], str | None] | None = None  # FHIR Patient id -> pseudonym, from earlier ingests
    actions: Counter[str] = field(default_factory=Counter)
    attributes: Counter[str] = field(default_factory=Counter)
    text_fields: int = 0  # free-text strings scrubbed, and their replacements by kind (counts only: the report's)
    text_replacements: Counter[str] = field(default_factory=Counter)

    def scrubbed(self, counts: Counter[str]) -> None:
        self.text_fields += 1
        self.text_replacements.update(counts)

    def count(self, action: str, path: str, note: str = "") -> None:
        """Count an action on an element; the label quotes FHIR element names only (a JSON key is input)."""
        self.actions[action] += 1
        self.attributes[dotted_label(path) + (f".{note}" if note else "")] += 1

    def patient_pseudonym(self, fhir_id: str) -> str:
        if fhir_id in self.patients:
            return self.keys.patient(*self.patients[fhir_id])
        earlier = self.earlier(fhir_id) if self.earlier is not None else None
        if earlier is None:
            raise DeidError("fhir_unknown_patient", "a Patient id or reference is in neither the extract's patient "
                            "index nor the workspace's patients of earlier ingests")
        return earlier


def is_date_key(key: str) -> bool:
    return key in DATE_KEYS or key.endswith(("Date", "DateTime", "Instant"))


def walk(node: Any, path: str, w: Walk, parent_key: str = "") -> Any:
    """Return the cleaned copy of `node` (dict, list or scalar) found at `path` under `parent_key`."""
    if isinstance(node, list):
        return [v for v in (walk(item, path, w, parent_key) for item in node) if v is not None]
    if isinstance(node, dict):
        return _walk_dict(node, path, w, parent_key)
    if isinstance(node, str):
        return _clean_string(node, path, parent_key, w)
    return node


def _walk_dict(node: dict, path: str, w: Walk, parent_key: str) -> dict:
    if parent_key in {"attachment", "presentedForm"} or "contentType" in node or "data" in node:
        node = _clean_attachment(node, path, w)
    out: dict = {}
    for key, value in node.items():
        child = f"{path}.{key}"
        if not isinstance(key, str) or not ELEMENT_NAME.fullmatch(key):
            w.count("X", path, "<invalid-key>")  # not a FHIR element name (a key may itself be a value)
        elif key == "url" and parent_key == "extension":
            out[key] = value  # a safe-listed extension's identity
        elif key in REMOVED or (key == "text" and isinstance(value, dict)):
            w.count("X", child)
        elif key == "display" and not ({"code", "system"} & node.keys()):
            w.count("X", child)  # a Reference's display is a person's or an organisation's name
        elif key == "id":
            _element_id(node, out, child, w, parent_key)
        else:
            cleaned = _walk_special(key, value, child, w)
            if cleaned is not None:
                out[key] = cleaned
    return out


def _walk_special(key: str, value: Any, path: str, w: Walk) -> Any:
    """Elements with a rule of their own; everything else is walked generically."""
    if key == "extension":
        value = value if isinstance(value, list) else [value]
        kept = [e for e in value if isinstance(e, dict) and e.get("url") in w.extension_safe_list]
        for _ in range(len(value) - len(kept)):
            w.count("X", path)
        return walk(kept, path, w, key) or None
    if key == "meta":
        w.count("X", path)  # versionId, lastUpdated, source, tags: server bookkeeping that can point back
        return {"profile": value["profile"]} if isinstance(value, dict) and "profile" in value else None
    if key == "identifier":
        return _identifiers(value, path, w)
    if key == "reference" and isinstance(value, str):
        ref = _reference(value, w)
        w.count("U" if ref else "X", path)
        return ref
    if key == "contained":
        return [_walk_dict(r, path, w, "contained") for r in value if isinstance(r, dict)]
    if key.endswith("Age") and isinstance(value, dict):
        return _cap_age(value, path, w)
    return walk(value, path, w, key)


def _element_id(node: dict, out: dict, path: str, w: Walk, parent_key: str) -> None:
    """The resource's own id is set by the caller; a contained resource's local id is keyed; element ids go."""
    if not parent_key:
        return
    if "resourceType" in node:
        out["id"] = "c" + w.keys.resource_id(w.site, "#", str(node["id"]))[:16]
    else:
        w.count("X", path)


def _clean_string(value: str, path: str, key: str, w: Walk) -> str | None:
    if is_date_key(key):
        try:
            shifted = shift_fhir(value, w.offset)
        except UnshiftableDate:
            w.count("X", path)  # a date field that does not hold a date: cannot be shifted, so it goes
            return None
        w.count("C", path)
        return shifted
    if key in KEEP_STRING:
        return value
    scrubbed, counts = scrub_text(value, w.known, w.offset)
    w.scrubbed(counts)
    if counts:
        w.count("S", path)
    return scrubbed


def _identifiers(value: Any, path: str, w: Walk) -> Any:
    """Each identifier becomes a keyed pseudonym: an MRN of the index -> the patient pseudonym, others -> 'I...'."""
    items = value if isinstance(value, list) else [value]
    out = []
    for ident in items:
        if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
            w.count("X", path)
            continue
        owner = w.mrns.get(ident["value"].strip())
        if owner is not None:
            new = {"system": PATIENT_SYSTEM, "value": w.keys.patient(*owner)}
        elif w.resource_type == "Patient" and path.count(".") == 1:
            w.count("X", path)  # a patient's other identifiers (SSN, licence, passport) are not needed
            continue
        else:
            new = {"system": IDENTIFIER_SYSTEM,
                   "value": w.keys.identifier(w.site, str(ident.get("system", "")), ident["value"])}
        if isinstance(ident.get("type"), dict) and ident["type"].get("coding"):
            new["type"] = {"coding": walk(ident["type"]["coding"], f"{path}.type.coding", w, "coding")}
        out.append(new)
        w.count("D", path)
    return out if isinstance(value, list) else (out[0] if out else None)


def _reference(value: str, w: Walk) -> str | None:
    """Map a reference to the pseudonymous id of its target; None when it cannot be understood (dropped)."""
    if value.startswith("#"):
        return "#c" + w.keys.resource_id(w.site, "#", value[1:])[:16]
    if value.startswith("urn:uuid:"):
        return f"urn:uuid:{uuid.UUID(bytes=w.keys.digest('urn-uuid', w.site, value[9:])[:16], version=4)}"
    match = REFERENCE.fullmatch(value)
    if match is None:
        return None
    rtype, rid = match["type"], match["id"]
    if rtype == "Patient":
        return f"Patient/{w.patient_pseudonym(rid)}"
    return f"{rtype}/{w.keys.resource_id(w.site, rtype, rid)}"


def _clean_attachment(node: dict, path: str, w: Walk) -> dict:
    """Text attachments are decoded (fhir_attachment.py), scrubbed and re-encoded as UTF-8 plain text; other inline
    content cannot be checked: dropped. Text that cannot be decoded raises DeidError attachment_undecodable: the
    resource is quarantined rather than staged with its text missing."""
    node = dict(node)
    data = node.pop("data", None)
    if data is None:
        return node
    if not is_text(node.get("contentType")):
        w.count("X", f"{path}.data")
        return node
    text = decode_attachment(node.get("contentType"), data, dotted_label(f"{path}.data"))
    scrubbed, counts = scrub_text(text, w.known, w.offset)
    w.scrubbed(counts)
    node["data"] = base64.b64encode(scrubbed.encode("utf-8")).decode("ascii")
    node["contentType"] = TEXT_PLAIN
    w.count("S", f"{path}.data")
    return node


def _cap_age(value: dict, path: str, w: Walk) -> dict:
    """An Age (onsetAge, ...) over 89 years reads 90: HIPAA's aggregation of the oldest ages."""
    out = walk(value, path, w, "age")
    years = out.get("code") in {"a", "yr", "year"} or out.get("unit") in {"a", "yr", "years", "year"}
    if years and isinstance(out.get("value"), int | float) and out["value"] > AGE_CAP_YEARS:
        out["value"] = AGE_CAP_YEARS + 1
        w.count("C", path)
    return out

"""A bulk export's manifest.json and its side files (`deleted` Bundles, `error` OperationOutcomes), read defensively.

These files are input like any other: a malformed part is a `Problem` (rule, where, message) that the caller
quarantines, and the rest is used. Nothing read here is quoted: a transactionTime that is not a date, a type that
is not a FHIR type, an OperationOutcome code outside its value set are reported by position or replaced by a label.
Rules:
    fhir.manifest       manifest.json is not a JSON object, or one of its entries is unusable (the entry is ignored;
                        a malformed transactionTime leaves the over-89 rule computing ages at today's date)
    fhir.deleted_list   a line of a `deleted` file that is not a Bundle of DELETE entries
    fhir.outcome_list   a line of an `error` file that is not an OperationOutcome
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from tasks.deid.fhir_attachment import decode_line
from tasks.deid.fhir_elements import type_label

SEVERITIES = frozenset({"fatal", "error", "warning", "information"})
ISSUE_TYPES = frozenset({
    "invalid", "structure", "required", "value", "invariant", "security", "login", "unknown", "expired", "forbidden",
    "suppressed", "processing", "not-supported", "duplicate", "multiple-matches", "not-found", "deleted", "too-long",
    "code-invalid", "extension", "too-costly", "business-rule", "conflict", "transient", "lock-error", "no-store",
    "exception", "timeout", "incomplete", "throttled", "informational"})  # HL7 issue-type


@dataclass(frozen=True)
class Problem:
    rule: str
    where: str  # inside the file: "transactionTime", "output[2]", "line 3"
    message: str


@dataclass
class Manifest:
    listed: dict[str, str] = field(default_factory=dict)  # file name -> resource type it holds
    declared: dict[str, int] = field(default_factory=dict)  # file name -> count the server declared (-1: none)
    deleted: list[str] = field(default_factory=list)  # file names of `deleted` Bundles
    errors: list[str] = field(default_factory=list)  # file names of OperationOutcomes
    transaction_date: date | None = None  # when the export was taken: ages for the over-89 rule are computed at it
    problems: list[Problem] = field(default_factory=list)


def read_lines(path: Path):
    """(line number, text) of the non-blank lines; UTF-8, a line that is not read as Windows-1252, else Latin-1,
    so that one stray byte changes no character of the rest of the line."""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            line = decode_line(raw)
            if line.strip():
                yield n, line


def read_records(path: Path, document: bool = False):
    """(line number, text) of each record of a resource file. A file named `.json` (`document`) holding one JSON
    document over many lines (a pretty-printed Bundle, as Synthea and servers' Bundle downloads write it) is one
    record at line 1; anything else, and a `.json` file that is not one document (NDJSON under another name), is
    read line by line (`read_lines`)."""
    if document:
        text = decode_line(path.read_bytes())
        if "\n" in text.strip() and isinstance(load_json(text), dict):
            yield 1, text
            return
    yield from read_lines(path)


def load_json(text: str) -> object:
    """json.loads, with None for anything that is not JSON (nesting too deep to parse included)."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError):
        return None


def _date(value: object) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        return None


def _name(entry: object) -> str | None:
    url = entry.get("url") if isinstance(entry, dict) else None
    return Path(url).name if isinstance(url, str) and url.strip() else None


def read_manifest(path: Path) -> Manifest:
    out = Manifest()
    raw = load_json(path.read_bytes().decode("utf-8", "replace"))
    if not isinstance(raw, dict):
        out.problems.append(Problem("fhir.manifest", "", "manifest.json is not a JSON object: ignored"))
        return out
    if "transactionTime" in raw:
        out.transaction_date = _date(raw["transactionTime"])
        if out.transaction_date is None:
            out.problems.append(Problem("fhir.manifest", "transactionTime", "transactionTime is not an ISO-8601 "
                                        "date-time: ages for the over-89 rule are computed at today's date"))
    for key in ("output", "deleted", "error"):
        entries = raw.get(key, [])
        for k, entry in enumerate(entries if isinstance(entries, list) else [entries]):
            if not _entry(out, key, entry):
                out.problems.append(Problem("fhir.manifest", f"{key}[{k}]", f"manifest {key} entry has no url, no "
                                            "type, or a count that is not a whole number: ignored"))
    return out


def _entry(out: Manifest, key: str, entry: object) -> bool:
    name = _name(entry)
    if name is None:
        return False
    if key != "output":
        (out.deleted if key == "deleted" else out.errors).append(name)
        return True
    count, rtype = entry.get("count", -1), entry.get("type")  # type: ignore[union-attr]
    count = int(count) if isinstance(count, str) and count.isdigit() else count
    if not isinstance(rtype, str) or not isinstance(count, int) or isinstance(count, bool):
        return False
    out.listed[name], out.declared[name] = rtype, count
    return True


def _elements(path: Path, key: str, rule: str, what: str, problems: list[Problem]):
    """The dict elements of list `key` of each line's resource; a line without such a list is one problem."""
    for n, line in read_lines(path):
        resource = load_json(line)
        items = resource.get(key) if isinstance(resource, dict) else None
        if not isinstance(items, list):
            problems.append(Problem(rule, f"line {n}", what))
            continue
        yield from (item if isinstance(item, dict) else {} for item in items)


def read_deleted(path: Path) -> tuple[set[tuple[str, str]], list[Problem]]:
    """(type, id) pairs a `deleted` file withdraws: Bundles whose entries say DELETE <type>/<id>."""
    deleted, problems = set(), []
    for entry in _elements(path, "entry", "fhir.deleted_list", "not a Bundle with a list of entries", problems):
        request = entry.get("request")
        url = request.get("url") if isinstance(request, dict) else None
        if isinstance(url, str) and "/" in url:
            rtype, rid = url.split("/")[-2:]
            deleted.add((rtype, rid))
    return deleted, problems


def read_outcomes(path: Path) -> tuple[Counter, list[Problem]]:
    """OperationOutcome issues counted by severity and code, each from its value set (else `other`): their
    diagnostics may hold PHI, and so may a code that is not a code."""
    counts, problems = Counter(), []
    for issue in _elements(path, "issue", "fhir.outcome_list", "not an OperationOutcome with a list of issues",
                           problems):
        severity = issue.get("severity") if issue.get("severity") in SEVERITIES else "other"
        code = issue.get("code") if issue.get("code") in ISSUE_TYPES else "other"
        counts[f"{severity}:{code}"] += 1
    return counts, problems


def listed_type(manifest: Manifest, name: str) -> str | None:
    """The type the manifest lists for a file, if it is a FHIR resource type (a label safe to report)."""
    rtype = manifest.listed.get(name)
    return rtype if rtype is not None and type_label(rtype) == rtype else None

"""A last look for PHI in artifacts before they are registered: model cards, configs, logs, plot metadata.

Why: de-identification happens at ingest (tasks/deid), but artifacts are written later by code that may echo a
raw value (a debug print of a record, a plot titled with a patient's name). The shape patterns are the deid text
scrubber's own, so both boundaries agree on what an e-mail, phone, SSN or labelled MRN looks like.

A Finding holds the relative path, line number and kind only, never the matched text: the scan's output goes to
logs, gate reasons and reports, and must not become the leak it looks for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from tasks.deid.text_dates import PATTERNS as DATE_PATTERNS
from tasks.deid.text_patterns import EMAIL, MRN_LABELLED, PHONE, SSN

TEXT_SUFFIXES = frozenset({".md", ".html", ".htm", ".json", ".jsonl", ".ndjson", ".yaml", ".yml", ".txt", ".csv",
                           ".tsv", ".py", ".mlmodel", ".log", ".ini", ".cfg", ".toml", ".xml"})
PNG_SUFFIX = ".png"
_SNIFF_BYTES = 8192
# "DOB", "D.O.B.", "date of birth", "birth date", "birthDate", "birth_date", "born (on)", then JSON/YAML/prose
# punctuation, then a date in any format the deid date finder knows
DOB_LABEL = re.compile(r"(?<![A-Za-z])(?:d\.?o\.?b\.?|date[\s_-]*of[\s_-]*birth|birth[\s_-]*date|born(?:\s+on)?)"
                       r"(?![A-Za-z])[\s\"':=,>-]{0,6}", re.IGNORECASE)
SHAPE_PATTERNS = (("ssn", SSN), ("phone", PHONE), ("email", EMAIL), ("mrn_label", MRN_LABELLED))


@dataclass(frozen=True, order=True)
class Finding:
    path: str  # relative posix path inside the scanned directory
    line: int  # 1-based; for PNG text chunks, the line within the chunks' "key: value" lines
    kind: str  # known_identifier | ssn | phone | email | mrn_label | date_of_birth


def scan_artifacts(directory: str | Path, known_identifiers: Iterable[str] = ()) -> list[Finding]:
    """Every possible identifier in the text-like files (and PNG text chunks) under `directory`, sorted.

    `known_identifiers` are values known to be PHI (original names, MRNs, study UIDs): matched exactly,
    case-insensitively, as whole tokens (not inside a longer run of letters and digits).
    """
    root = Path(directory)
    known = _known_pattern(known_identifiers)
    findings: set[Finding] = set()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        lines = _text_lines(path)
        if lines is None:
            continue
        for number, line in enumerate(lines, 1):
            for window in _windows(line):
                findings.update(Finding(rel, number, kind) for kind in scan_line(window, known))
    return sorted(findings)


WINDOW, OVERLAP = 2048, 128  # identifiers are short; the overlap keeps one cut at a window edge visible


def _windows(line: str) -> list[str]:
    """A long line (base64 images in an MLflow input example run to megabytes) in overlapping windows, so the
    patterns' cost stays linear in the file size instead of blowing up on one enormous line."""
    if len(line) <= WINDOW:
        return [line]
    return [line[i:i + WINDOW] for i in range(0, len(line), WINDOW - OVERLAP)]


def scan_line(line: str, known: re.Pattern[str] | None = None) -> set[str]:
    """The kinds of identifier present in one line of text."""
    kinds = {kind for kind, pattern in SHAPE_PATTERNS if pattern.search(line)}
    if known is not None and known.search(line):
        kinds.add("known_identifier")
    if any(_date_at(line, m.end()) for m in DOB_LABEL.finditer(line)):
        kinds.add("date_of_birth")
    return kinds


def _date_at(line: str, pos: int) -> bool:
    return any(pattern.match(line, pos) for pattern in DATE_PATTERNS.values())


def _known_pattern(values: Iterable[str]) -> re.Pattern[str] | None:
    cleaned = sorted({v.strip() for v in values if v and v.strip()}, key=len, reverse=True)
    if not cleaned:
        return None
    alternatives = "|".join(re.escape(v) for v in cleaned)
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", re.IGNORECASE)


def _text_lines(path: Path) -> Iterator[str] | None:
    """Lines to scan, or None for a file we treat as binary (weights, parquet, images without text chunks)."""
    suffix = path.suffix.lower()
    if suffix == PNG_SUFFIX:
        return _png_text_lines(path)
    if suffix in TEXT_SUFFIXES:
        return _stream_lines(path)
    if suffix == "" and _looks_like_utf8(path):  # MLmodel, LICENSE, requirements-style files
        return _stream_lines(path)
    return None


def _stream_lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace") as f:
        yield from f


def _looks_like_utf8(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(_SNIFF_BYTES)
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.reason == "unexpected end of data"  # a character cut by the sniff window is still text
    return True


def _png_text_lines(path: Path) -> Iterator[str] | None:
    """tEXt/zTXt/iTXt chunks as "key: value" lines (matplotlib writes Software/Title/Author there)."""
    try:
        with Image.open(path) as image:
            text = dict(getattr(image, "text", {}) or {})
    except (UnidentifiedImageError, OSError):
        return None
    lines = [f"{key}: {value}" for key, value in text.items()]
    return iter([part for line in lines for part in line.splitlines()])

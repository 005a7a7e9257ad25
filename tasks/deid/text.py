"""Free-text scrubber for notes, report conclusions and any other string that escaped structure.

Two kinds of detectors run over the original text: identifiers *known* from the same extract (this patient's
names, MRN, phone, SSN, address, accession numbers, the staff names the caller passes) and *patterns* for what we
cannot know in advance (e-mails, phone numbers, SSNs, labelled MRNs and IDs, street addresses, dates, ages over 89).
Every detector proposes spans; overlapping spans are merged so that nothing any detector flagged survives, and the
merged span is replaced once: dates by the same date shifted by the patient's offset in the same format, the rest
by a typed placeholder ([NAME], [MRN], [PHONE], [EMAIL], [SSN], [ID], [ADDRESS], [ORG], [DATE]).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import NamedTuple

from tasks.deid.text_dates import date_spans

PLACEHOLDER = {"NAME": "[NAME]", "MRN": "[MRN]", "PHONE": "[PHONE]", "EMAIL": "[EMAIL]", "SSN": "[SSN]",
               "ID": "[ID]", "ADDRESS": "[ADDRESS]", "ORG": "[ORG]", "DATE": "[DATE]", "DATE_SHIFTED": "[DATE]",
               "AGE": "90+"}
# Linear time on hostile input: every pattern here is tried at every position of a note, so one that scans a long
# unbroken run from each of its characters is quadratic (a 1 MB token took the old e-mail pattern about an hour).
# EMAIL starts only where a run of local-part characters starts (the lookbehind), so each run is scanned once; the
# scrubber itself finds e-mails from their '@' outwards (_email_spans), which also catches one that follows another
# inside the same run ("a@b.c+d@e.f").
EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
EMAIL_LOCAL = re.compile(r"[\w.+-]+")  # a maximal run of local-part characters
EMAIL_DOMAIN = re.compile(r"@[\w-]+(?:\.[\w-]+)+")
PHONE = re.compile(r"(?<![\w+])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?!\w)")
SSN = re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")
MRN_LABELLED = re.compile(r"\b(?:MRN|MR\s?#|MR\s?No\.?|Medical\s+Record(?:\s+(?:Number|No\.?))?)\s*[:#]?\s*"
                          r"([A-Z0-9][A-Z0-9-]{3,})\b", re.IGNORECASE)
ID_LABELLED = re.compile(r"\b(?:Accession|Acc\.?|Account|Acct|Encounter|Visit|Order|Specimen|Case|Patient\s+ID|ID)"
                         r"(?:\s*(?:No\.?|Number|#))?\s*[:#]?\s*([A-Z0-9-]*\d[A-Z0-9-]{3,})\b", re.IGNORECASE)
LONG_NUMBER = re.compile(r"(?<![\w.])\d{7,}(?![\w.])")
STREET = re.compile(r"\b\d{1,5}\s+(?:[A-Z][A-Za-z'.-]*\s+){1,4}(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|"
                    r"Court|Ct|Boulevard|Blvd|Way|Terrace|Place|Pl|Circle|Cir|Parkway|Pkwy|Highway|Hwy)\b\.?")
# a person named after a title or a role label: staff names are not in the extract's structured data
_NAME_WORD = r"[A-Z][a-zA-Z'\-]+"
TITLED_NAME = re.compile(rf"\b(?:Dr|Doctor|Prof|Mr|Mrs|Ms|Miss|Nurse|RN|NP|PA)\.?\s+((?:{_NAME_WORD}\.?\s+)?"
                         rf"(?:{_NAME_WORD}|\[NAME\])(?:[ \t]+{_NAME_WORD})?)")
LABELLED_NAME = re.compile(rf"\b(?i:physician|attending|radiologist|resident|signed by|dictated by|author|provider|"
                           rf"referred by|PCP|contact|emergency contact|next of kin)\s*:?\s+"
                           rf"((?:Dr\.?\s+)?{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,2}})")
AGE_YEARS = re.compile(r"\b(\d{2,3})(?=(?:\s|-)*(?:years?|yrs?|yo|y/o|y\.o\.)(?:\W|$))", re.IGNORECASE)
AGE_LABELLED = re.compile(r"\b(?:age|aged)\s*:?\s*(\d{2,3})\b", re.IGNORECASE)
PRIORITY = {"EMAIL": 0, "SSN": 1, "MRN": 1, "PHONE": 1, "ID": 2, "ADDRESS": 2, "ORG": 2, "DATE_SHIFTED": 3,
            "DATE": 3, "NAME": 4, "AGE": 5}


@dataclass(frozen=True)
class KnownIdentifiers:
    """What the extract itself tells us about one patient (and the staff around them): matched verbatim.

    Lists may be given; they are stored as tuples so the object is hashable and its compiled regexes cached.
    """

    patient_names: tuple[str, ...] = ()
    staff_names: tuple[str, ...] = ()
    mrns: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    ssns: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()  # street lines, cities, postal codes: each matched as written
    accession_numbers: tuple[str, ...] = ()
    organizations: tuple[str, ...] = ()  # hospital, department: the DICOM profile removes institution identity too
    other_ids: tuple[str, ...] = ()  # FHIR logical ids, insurance numbers, anything else to drop as [ID]
    protected_dates: tuple[str, ...] = ()  # ISO dates hidden as [DATE], never shifted: birth dates of the over-89s

    def __post_init__(self) -> None:
        for f in fields(self):
            raw = getattr(self, f.name)
            values = (raw,) if isinstance(raw, str) else tuple(raw or ())
            object.__setattr__(self, f.name, tuple(sorted({str(v).strip() for v in values if str(v).strip()})))

    def merged(self, other: KnownIdentifiers) -> KnownIdentifiers:
        """Union of two sets of identifiers (e.g. the patient's and the staff of the extract)."""
        return KnownIdentifiers(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __repr__(self) -> str:  # the values are PHI: a repr must never print them
        counts = ", ".join(f"{f.name}={len(getattr(self, f.name))}" for f in fields(self))
        return f"KnownIdentifiers({counts})"


class Span(NamedTuple):
    start: int
    end: int
    kind: str
    replacement: str


def scrub_text(text: str, known: KnownIdentifiers | None = None,
               date_offset_days: int | None = None) -> tuple[str, Counter[str]]:
    """Remove PHI from free text; dates are shifted by `date_offset_days` (None: replaced by [DATE]).

    Returns the scrubbed text and counts per kind of replacement (NAME, MRN, DATE_SHIFTED, ...), never values.
    """
    if not text:
        return text, Counter()
    known = known or KnownIdentifiers()
    spans = [*_pattern_spans(text), *_known_spans(text, known),
             *(Span(*t) for t in date_spans(text, date_offset_days, frozenset(known.protected_dates)))]
    return _replace(text, spans)


def _replace(text: str, spans: list[Span]) -> tuple[str, Counter[str]]:
    """Merge overlapping spans (so no flagged character survives) and write each merged span once."""
    counts: Counter[str] = Counter()
    out, cursor = [], 0
    for group in _overlapping_groups(sorted(spans)):
        start, end = group[0].start, max(s.end for s in group)
        whole = [s for s in group if s.start == start and s.end == end]
        best = min(whole or group, key=lambda s: PRIORITY[s.kind])
        replacement = best.replacement if whole else PLACEHOLDER[best.kind]
        kind = best.kind if whole or best.kind != "DATE_SHIFTED" else "DATE"
        out.extend((text[cursor:start], replacement))
        counts[kind] += 1
        cursor = end
    out.append(text[cursor:])
    return "".join(out), counts


def _overlapping_groups(spans: list[Span]) -> Iterator[list[Span]]:
    group: list[Span] = []
    end = -1
    for span in spans:
        if group and span.start >= end:
            yield group
            group = []
        end = max(end, span.end) if group else span.end
        group.append(span)
    if group:
        yield group


def _pattern_spans(text: str) -> Iterator[Span]:
    """Identifiers recognisable by shape alone."""
    yield from _email_spans(text)
    for kind, pattern in (("SSN", SSN), ("PHONE", PHONE), ("ADDRESS", STREET)):
        yield from (Span(m.start(), m.end(), kind, PLACEHOLDER[kind]) for m in pattern.finditer(text))
    for kind, pattern in (("MRN", MRN_LABELLED), ("ID", ID_LABELLED)):
        yield from (Span(m.start(1), m.end(1), kind, PLACEHOLDER[kind]) for m in pattern.finditer(text))
    yield from (Span(m.start(), m.end(), "ID", "[ID]") for m in LONG_NUMBER.finditer(text))
    for pattern in (TITLED_NAME, LABELLED_NAME):
        yield from (Span(m.start(1), m.end(1), "NAME", PLACEHOLDER["NAME"]) for m in pattern.finditer(text)
                    if m[1] != "[NAME]")
    for pattern in (AGE_YEARS, AGE_LABELLED):
        yield from (Span(m.start(1), m.end(1), "AGE", "90+") for m in pattern.finditer(text) if int(m[1]) > 89)


def _email_spans(text: str) -> Iterator[Span]:
    """E-mail addresses found from each '@': the domain after it, the whole run of local-part characters before it.
    Linear: runs are found once, and a domain (which holds no '@') is scanned only from its own '@'."""
    if "@" not in text:
        return
    run_start = {m.end(): m.start() for m in EMAIL_LOCAL.finditer(text)}
    for at in (m.start() for m in re.finditer("@", text)):
        domain = EMAIL_DOMAIN.match(text, at)
        if domain is not None and at in run_start:
            yield Span(run_start[at], domain.end(), "EMAIL", PLACEHOLDER["EMAIL"])


def _known_spans(text: str, known: KnownIdentifiers) -> Iterator[Span]:
    for kind, pattern in _known_patterns(known):
        yield from (Span(m.start(), m.end(), kind, PLACEHOLDER[kind]) for m in pattern.finditer(text))


@lru_cache(maxsize=256)
def _known_patterns(known: KnownIdentifiers) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """One compiled regex per kind of known identifier (cached: a patient's notes reuse them)."""
    out = []
    names = _name_tokens((*known.patient_names, *known.staff_names))
    if names:
        token = "|".join(re.escape(t) for t in sorted(names, key=len, reverse=True))
        # names in any order, with optional initials and commas between: "Smith, John A." is one [NAME]
        out.append(("NAME", rf"(?<!\w)(?:{token})(?:[\s,]+(?:[A-Za-z]\.?\s+)?(?:{token}))*(?!\w)"))
    literal = {"MRN": known.mrns, "ID": (*known.accession_numbers, *known.other_ids), "EMAIL": known.emails,
               "ADDRESS": known.addresses, "ORG": known.organizations}
    for kind, values in literal.items():
        if values:
            alternatives = "|".join(r"\s+".join(map(re.escape, v.split())) for v in sorted(values, key=len)[::-1])
            out.append((kind, rf"(?<!\w)(?:{alternatives})(?!\w)"))
    for kind, values in (("PHONE", known.phones), ("SSN", known.ssns)):
        digit_forms = [_digits_pattern(v) for v in values if sum(c.isdigit() for c in v) >= 7]
        if digit_forms:
            out.append((kind, rf"(?<!\d)(?:{'|'.join(digit_forms)})(?!\d)"))
    return tuple((kind, re.compile(p, re.IGNORECASE)) for kind, p in out)


def _name_tokens(names: Iterable[str]) -> set[str]:
    """Every part of every name, at least two letters long (initials alone would erase ordinary words)."""
    tokens: set[str] = set()
    for name in names:
        for part in re.split(r"[\s,^]+", name):
            part = part.strip(".")
            candidates = {part, *part.split("-")}
            tokens.update(c for c in candidates if len(c) >= 2 and any(ch.isalpha() for ch in c))
    return tokens


def _digits_pattern(value: str) -> str:
    """'(201) 555-0134' -> digits with up to three separators between any two: matches every usual spelling."""
    return r"\D{0,3}".join(c for c in value if c.isdigit())

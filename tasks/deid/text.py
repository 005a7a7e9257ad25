"""Free-text scrubber for notes, report conclusions and any other string that escaped structure.

Detectors run over the original text and propose spans; overlapping spans are merged so that nothing any detector
flagged survives, and the merged span is replaced once: dates by the same date shifted by the patient's offset in
the same format, the rest by a typed placeholder ([NAME], [MRN], [PHONE], [EMAIL], [SSN], [ID], [ADDRESS], [ORG],
[URL], [DATE]; ages over 89 by "90+"). The detectors:

- identifiers *known* from the same extract (this patient's MRN, phone, SSN, address, accession numbers, the
  organisations) matched as written, and every person the extract names (text_names.py: the patient and relatives
  in any spelling or nickname, other patients and staff);
- people the extract does not list: the Philter de-identifier's name dictionaries and context rules (text_names);
- Google's libphonenumber for phone numbers in every national format, and URLs and IP addresses
  (text_contact.py);
- our patterns for what those do not cover: e-mails (linear time), SSNs, labelled MRNs and IDs, long numbers,
  street addresses and PO boxes, institutions, ages over 89 ("93-year-old", "aged 95", "95M"), and dates in prose
  (text_dates.py).

`bench/deid_text.py` measures recall and precision per PHI type on third-party labelled corpora.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, fields
from functools import lru_cache

from tasks.deid.text_common import Span
from tasks.deid.text_contact import contact_spans
from tasks.deid.text_dates import date_spans
from tasks.deid.text_names import known_phrases, known_words, name_spans
from tasks.deid.text_patterns import pattern_spans

PLACEHOLDER = {"NAME": "[NAME]", "MRN": "[MRN]", "PHONE": "[PHONE]", "EMAIL": "[EMAIL]", "SSN": "[SSN]",
               "ID": "[ID]", "ADDRESS": "[ADDRESS]", "ORG": "[ORG]", "URL": "[URL]", "DATE": "[DATE]",
               "DATE_SHIFTED": "[DATE]", "AGE": "90+"}
PRIORITY = {"EMAIL": 0, "URL": 0, "SSN": 0, "MRN": 1, "PHONE": 1, "ID": 2, "ADDRESS": 2, "ORG": 2, "DATE_SHIFTED": 3,
            "DATE": 3, "NAME": 4, "AGE": 5}


@dataclass(frozen=True, eq=False)
class KnownIdentifiers:
    """What the extract itself tells us about one patient (and the people around them).

    Lists may be given; they are stored as tuples. Equality and hashing are by identity: the compiled patterns of
    one object are cached, and `staff_names` / `other_names` given as tuples are kept as given (not copied), so one
    extract-wide tuple of thousands of names is shared by every patient's object and folded once.
    """

    patient_names: tuple[str, ...] = ()
    staff_names: tuple[str, ...] = ()
    other_names: tuple[str, ...] = ()  # everyone else the extract names: other patients, relatives, related persons
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
            if f.name in {"staff_names", "other_names"} and isinstance(raw, tuple):
                continue
            values = (raw,) if isinstance(raw, str) else tuple(raw or ())
            object.__setattr__(self, f.name, tuple(sorted({str(v).strip() for v in values if str(v).strip()})))

    def merged(self, other: KnownIdentifiers) -> KnownIdentifiers:
        """Union of two sets of identifiers (e.g. the patient's and the staff of the extract)."""
        return KnownIdentifiers(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __repr__(self) -> str:  # the values are PHI: a repr must never print them
        counts = ", ".join(f"{f.name}={len(getattr(self, f.name))}" for f in fields(self))
        return f"KnownIdentifiers({counts})"


def scrub_text(text: str, known: KnownIdentifiers | None = None,
               date_offset_days: int | None = None) -> tuple[str, Counter[str]]:
    """Remove PHI from free text; dates are shifted by `date_offset_days` (None: replaced by [DATE]).

    Returns the scrubbed text and counts per kind of replacement (NAME, MRN, DATE_SHIFTED, ...), never values.
    """
    if not text:
        return text, Counter()
    return _replace(text, phi_spans(text, known, date_offset_days))


def phi_spans(text: str, known: KnownIdentifiers | None = None, date_offset_days: int | None = None) -> list[Span]:
    """Every span any detector flags (overlapping, unmerged): what `scrub_text` replaces; the bench scores these."""
    known = known or KnownIdentifiers()
    dates = [Span(*t) for t in date_spans(text, date_offset_days, frozenset(known.protected_dates))]
    others = [*_shape_spans(text), *_known_spans(text, known),
              *name_spans(text, _patient_words(known.patient_names), _strict_words(known), _phrases(known))]
    return [*dates, *_not_inside_dates(others, dates)]


@lru_cache(maxsize=8192)
def _shape_spans(text: str) -> tuple[Span, ...]:
    """What shape alone finds (the same for every patient): cached, since FHIR repeats its strings."""
    return (*pattern_spans(text), *contact_spans(text))


@lru_cache(maxsize=1024)
def _patient_words(names: tuple[str, ...]) -> frozenset[str]:
    return known_words(names)


def _not_inside_dates(spans: list[Span], dates: list[Span]) -> Iterator[Span]:
    """A number inside a date ("20210304", "04MAR2021") is the date, shifted in place, not an [ID] or a [PHONE]."""
    if not dates:
        yield from spans
        return
    for span in spans:
        if span.kind in {"ID", "PHONE"} and any(d.start <= span.start and span.end <= d.end for d in dates):
            continue
        yield span


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


def _known_spans(text: str, known: KnownIdentifiers) -> Iterator[Span]:
    for kind, pattern in _known_patterns(known):
        yield from (Span(m.start(), m.end(), kind, PLACEHOLDER[kind]) for m in pattern.finditer(text))


@lru_cache(maxsize=256)
def _known_patterns(known: KnownIdentifiers) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """One compiled regex per kind of known identifier other than names (cached: a patient's notes reuse them)."""
    out = []
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


_STRICT: dict[tuple[int, int], tuple[tuple[str, ...], tuple[str, ...], frozenset[str], dict]] = {}


def _strict_words(known: KnownIdentifiers) -> frozenset[str]:
    """Folded words of the staff's and other people's names. The tuples are shared by every patient of an extract
    (thousands of names), so they are folded once per pair of tuples, found by identity rather than hashed."""
    key = (id(known.staff_names), id(known.other_names))
    hit = _STRICT.get(key)
    if hit is None or hit[0] is not known.staff_names or hit[1] is not known.other_names:
        if len(_STRICT) > 64:
            _STRICT.clear()
        people = (*known.staff_names, *known.other_names)
        hit = _STRICT[key] = (known.staff_names, known.other_names, known_words(people, with_nicknames=False),
                              known_phrases(people))
    return hit[2]


def _phrases(known: KnownIdentifiers) -> dict:
    """The staff's and other people's full names as word sequences (built with `_strict_words`)."""
    _strict_words(known)
    return _STRICT[(id(known.staff_names), id(known.other_names))][3]


def _digits_pattern(value: str) -> str:
    """'(201) 555-0134' -> digits with up to three separators between any two: matches every usual spelling."""
    return r"\D{0,3}".join(c for c in value if c.isdigit())

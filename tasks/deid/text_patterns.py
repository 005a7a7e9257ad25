"""Identifiers recognisable by their shape: e-mails, SSNs, labelled MRNs and IDs, long, card, IBAN and mixed
numbers, street addresses (US, military, common foreign forms), PO boxes, institutions, people after a title or a role
label, ages over 89. Every pattern runs in linear time on hostile input (tests/deid/test_text_hostile.py tries each
on megabyte runs): bounded repetitions, no nested unbounded quantifiers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from tasks.deid.text_common import Span

# Linear time on hostile input: every pattern here is tried at every position of a note, so one that scans a long
# unbroken run from each of its characters is quadratic (a 1 MB token took the old e-mail pattern about an hour).
# EMAIL starts only where a run of local-part characters starts (the lookbehind), so each run is scanned once; the
# scrubber itself finds e-mails from their '@' outwards (_email_spans), which also catches one that follows another
# inside the same run ("a@b.c+d@e.f").
EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
EMAIL_LOCAL = re.compile(r"[\w.+-]+")  # a maximal run of local-part characters
EMAIL_DOMAIN = re.compile(r"@[\w-]+(?:\.[\w-]+)+")
PHONE = re.compile(r"(?<![\w+])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}"
                   r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?!\w)")  # with an extension: "650-752-7354x549"
SSN = re.compile(r"(?<![\d.-])\d{3}([- .])\d{2}\1\d{4}(?![\d-]|\.\d)")
MRN_LABELLED = re.compile(r"\b(?:MRN|MR\s?#|MR\s?No\.?|Medical\s+Record(?:\s+(?:Number|No\.?))?)\s*[:#]?\s*"
                          r"([A-Z0-9][A-Z0-9-]{3,})\b", re.IGNORECASE)
ID_LABELLED = re.compile(r"\b(?:Accession|Acc\.?|Account|Acct|Encounter|Visit|Order|Specimen|Case|Patient\s+ID|ID)"
                         r"(?:\s*(?:No\.?|Number|#))?\s*[:#]?\s*([A-Z0-9-]*\d[A-Z0-9-]{3,})\b", re.IGNORECASE)
DIGIT = re.compile(r"\d")
DATE_START = re.compile(r"\d{4}-\d{1,2}-\d{1,2}(?:T|$)")  # "2021-03-04T10:30": a timestamp, not an ID
DATE_LIKE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}$|\d{1,2}-\d{1,2}-\d{2,4}$")
LONG_NUMBER = re.compile(r"(?<![\w.])\d{7,}(?!\w|\.\d)")
CARD = re.compile(r"(?<![\w-])\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,4})?(?![\w-])")  # card / account numbers
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
MIXED_ID = re.compile(r"\b(?=[A-Z0-9-]{0,30}\d{4})(?=[A-Z0-9-]{0,30}[A-Z])[A-Z0-9][A-Z0-9-]{5,40}\b"  # "D12-3456"
                      r"|\b[A-Z]{2,}\d{3,}[A-Z0-9]*(?:/\d{3,})?\b"  # "XW277/90683" (a mutation, V600E, stays)
                      r"|\b[a-z]{1,2}\d{6,20}\b")  # a licence number typed in lower case: "cs6518017"
DASHED_ID = re.compile(r"(?<![\w-])\d{2,4}(?:-\d{1,4}){2,4}(?![\w-])")  # "560-40-78-5"
PHONE_LABELLED = re.compile(r"\b(?:pager|beeper|pgr|bleep|ext|extension)\.?\s*(?:#|no\.?|number)?\s*:?\s*(\d{3,6})\b",
                            re.IGNORECASE)
STREET_TYPES = ("Street|St|Avenue|Ave|Av|Road|Rd|Lane|Ln|Drive|Dr|Court|Ct|Boulevard|Blvd|Way|Terrace|Ter|Place|Pl|"
                "Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Crescent|Cres|Close|Row|Alley|Aly|Plaza|"
                "Plz|Path|Pike|Loop|Walk|Gardens|Gdns|Grove|Heights|Hts|Hill|Park|Point|Pt|Ridge|Route|Rte|"
                "Expressway|Expy|Freeway|Fwy|Turnpike|Tpke|Causeway|Crossing|Xing|Commons|Green|Mews|Wharf|Quay")
# one line: a house number, up to four words, a street type ("10:46  Lakeside Clinic\nPt: ..." is not an address)
STREET = re.compile(rf"(?<![\d:])\b\d{{1,5}}[A-Za-z]?[ \t]+(?:(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?[ \t]+)?"
                    rf"(?:[A-Z0-9][A-Za-z0-9'.-]{{0,40}}[ \t]+){{1,4}}(?:{STREET_TYPES})\b\.?"
                    rf"(?:,?[ \t]+(?:Apt|Apartment|Suite|Ste|Unit|Fl|Floor|#)\.?[ \t]*#?[ \t]*[A-Za-z0-9-]+)?")
MILITARY = re.compile(r"\b(?:(?:PSC|Unit|CMR)\s+\d{1,5}(?:,?\s+Box\s+\d{1,5})?|(?:USNS|USNV|USS|USCGC)\s+[A-Z][\w'-]*)"
                      r"(?:\s*\n?\s*(?:APO|FPO|DPO)\s+(?:AA|AE|AP)\s+\d{5})?|\b(?:APO|FPO|DPO)\s+(?:AA|AE|AP)\s+\d{5}\b")
SECONDARY_UNIT = re.compile(r"\b(?:Apt|Apartment|Suite|Ste|Unit|Room|Rm|Fl|Floor)\.?\s*#?\s*\d{1,5}[A-Z]?\b"
                            r"(?=\s*(?:\n|,|$))")
FOREIGN_STREET = re.compile(r"\b\d{1,5},?\s+(?i:rue|via|calle|avenida|avda\.?|rua|ul\.|viale|piazza|corso|chemin|allée|"
                            r"strada|carrer|largo|travessa|camino)\s+(?:[\w'.-]{1,40}[ \t]?){1,4}"
                            r"|\b[^\W\d_]{1,40}(?i:straße|strasse|str\.|"
                            r"weg|gasse|platz|allee|gatan|vägen|väg|vej|gade|laan|straat|plein|kade|katu|tie|vei|veien)"
                            r"\s+\d{1,5}[a-z]?\b")
PO_BOX = re.compile(r"\b(?:P\.?\s?O\.?\s*Box|Post\s+Office\s+Box|Box)\s*#?\s*\d+\b", re.IGNORECASE)
STATES = ("AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|"
          "ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY")
CITY_STATE_ZIP = re.compile(rf"\b(?:[A-Z][a-z]+\.?\s){{0,2}}[A-Z][a-z]+,\s*(?:{STATES})\.?\s+\d{{5}}(?:-\d{{4}})?\b")
STATE_ZIP = re.compile(rf"\b(?:{STATES})\s+(\d{{5}}(?:-\d{{4}})?)\b")
INSTITUTION_KINDS = ("Hospital", "Medical Center", "Medical Centre", "Clinic", "Health System", "Health Center",
                     "Health Centre", "Health Care", "Healthcare", "Infirmary", "Hospice", "Nursing Home",
                     "Rehabilitation Center", "Cancer Center", "Children's", "University", "Institute",
                     "Emergency Dept", "Emergency Department")
_KINDS = "|".join(r"\s+".join(map(re.escape, k.split()))
                  for k in (*INSTITUTION_KINDS, *map(str.upper, INSTITUTION_KINDS)))
# capitalised words before a kind of institution, in Title or UPPER case ("the clinic", "Heart Failure clinic" stay)
INSTITUTION = re.compile(r"\b(?!(?i:the|a|an|this|that|our|your|his|her|their|same|outside|local|other)\s)"
                         rf"(?:(?:St\.|Saint|Mount|Mt\.|[A-Z][A-Za-z'&.-]{{0,40}})[ \t]+){{1,5}}(?:{_KINDS})\b")
# a person named after a title or a role label: staff names are not in the extract's structured data
_NAME_WORD = r"[A-Z][a-zA-Z'\-]+"
TITLED_NAME = re.compile(rf"\b(?:Dr|Doctor|Prof|Mr|Mrs|Ms|Miss|Nurse)\.?\s+((?:{_NAME_WORD}\.?\s+)?"
                         rf"(?:{_NAME_WORD}|\[NAME\])(?:[ \t]+{_NAME_WORD})?)")
LABELLED_NAME = re.compile(rf"\b(?i:physician|attending|radiologist|resident|signed by|dictated by|author|provider|"
                           rf"referred by|PCP|contact|emergency contact|next of kin)\s*:?\s+"
                           rf"(?:Dr\.?\s+)?({_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,2}})")
AGE_YEARS = re.compile(r"\b(\d{2,3})(?=(?:\s|-)*(?:years?|yrs?|yo|y/o|y\.o\.)(?:\W|$))", re.IGNORECASE)
AGE_LABELLED = re.compile(r"\b(?:age|aged)\s*:?\s*(\d{2,3})\b", re.IGNORECASE)
AGE_SEX = re.compile(r"\b(\d{2,3})\s?(?:yo\s?)?[MF]\b")  # "95M", "95 yo F": not a temperature ("T 101 F")
TEMPERATURE_CUE = re.compile(r"(?:temp\w*|tmax|tm|t|fever(?:\s+(?:of|to))?|febrile\s+to)\s*:?\s*$", re.IGNORECASE)


def pattern_spans(text: str) -> Iterator[Span]:
    """Identifiers recognisable by shape alone (those made of digits are looked for only where there are digits)."""
    yield from _email_spans(text)
    yield from (Span(m.start(), m.end(), "ORG", "[ORG]") for m in INSTITUTION.finditer(text))
    for pattern in (TITLED_NAME, LABELLED_NAME):
        yield from (Span(m.start(1), m.end(1), "NAME", "[NAME]") for m in pattern.finditer(text)
                    if m[1] != "[NAME]")
    if DIGIT.search(text) is None:
        return
    for kind, pattern in (("SSN", SSN), ("PHONE", PHONE), ("ADDRESS", STREET), ("ADDRESS", PO_BOX),
                          ("ADDRESS", CITY_STATE_ZIP), ("ADDRESS", MILITARY), ("ADDRESS", SECONDARY_UNIT),
                          ("ADDRESS", FOREIGN_STREET)):
        yield from (Span(m.start(), m.end(), kind, f"[{kind}]") for m in pattern.finditer(text))
    for kind, pattern in (("MRN", MRN_LABELLED), ("ID", ID_LABELLED), ("ADDRESS", STATE_ZIP)):
        yield from (Span(m.start(1), m.end(1), kind, f"[{kind}]") for m in pattern.finditer(text))
    for pattern in (LONG_NUMBER, CARD, IBAN):
        yield from (Span(m.start(), m.end(), "ID", "[ID]") for m in pattern.finditer(text))
    yield from (Span(m.start(), m.end(), "ID", "[ID]") for m in MIXED_ID.finditer(text) if not DATE_START.match(m[0]))
    yield from (Span(m.start(), m.end(), "ID", "[ID]") for m in DASHED_ID.finditer(text)
                if sum(c.isdigit() for c in m[0]) >= 8 and not DATE_LIKE.match(m[0]))
    yield from (Span(m.start(1), m.end(1), "PHONE", "[PHONE]") for m in PHONE_LABELLED.finditer(text))
    for pattern in (AGE_YEARS, AGE_LABELLED):
        yield from (Span(m.start(1), m.end(1), "AGE", "90+") for m in pattern.finditer(text) if int(m[1]) > 89)
    for m in AGE_SEX.finditer(text):
        if int(m[1]) > 89 and not TEMPERATURE_CUE.search(text[max(0, m.start() - 20):m.start()]):
            yield Span(m.start(1), m.end(1), "AGE", "90+")


def _email_spans(text: str) -> Iterator[Span]:
    """E-mail addresses found from each '@': the domain after it, the whole run of local-part characters before it.
    Linear: runs are found once, and a domain (which holds no '@') is scanned only from its own '@'."""
    if "@" not in text:
        return
    run_start = {m.end(): m.start() for m in EMAIL_LOCAL.finditer(text)}
    for at in (m.start() for m in re.finditer("@", text)):
        domain = EMAIL_DOMAIN.match(text, at)
        if domain is not None and at in run_start:
            yield Span(run_start[at], domain.end(), "EMAIL", "[EMAIL]")

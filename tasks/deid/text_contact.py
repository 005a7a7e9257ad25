"""Phone numbers in every national format, URLs and IP addresses, as scrubber spans.

Phone numbers are read by Google's libphonenumber (the `phonenumbers` package; the same library Microsoft
Presidio's phone recogniser wraps): "+44 20 7946 0958", "030 1234567", "(201) 555-0134" are found with the number
plan of each region, and dates, doses and lab values are not. Presidio itself is not imported: its package pulls
spaCy, thinc, transformers and torch in at import (about 9 s per process on this machine's CPUs), which every ingest
worker would pay for three regular expressions.

libphonenumber is pure Python and costs ~0.1 ms per character and region, so it reads only candidate runs of digits
(at least 7); a text with more than MAX_PHONE_CANDIDATES of them (no clinical note has) is hostile or garbage, and
every candidate is then replaced unread: fail closed, in linear time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import phonenumbers

from tasks.deid.text_common import Span

PHONE_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "BR", "AU", "NL", "ES", "IT")
PHONE_CANDIDATE = re.compile(r"(?<![\w+])\+?(?:\(\d{1,5}\)|\d)[\d \t().\-/]{4,22}\d(?!\w)")
MAX_PHONE_CANDIDATES = 500
DATE_SHAPED = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{2,4}")  # libphonenumber would read "04.03.2021" as a number
# a national number dialled with its trunk prefix: "0380 7558505", "020 7946 0958" (libphonenumber refuses an area
# code it does not know; the shape alone is a phone number)
TRUNK_NUMBER = re.compile(r"\(?0\d{2,4}\)?[ \t./-]?\d{3,4}[ \t./-]?\d{3,5}")
DECIMAL = re.compile(r"(?<!\d)\d\.\d|\d\.\d(?!\d)")  # a one-digit group beside a dot
URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>\"']{2,2048}", re.IGNORECASE)
IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.]|\.\d)")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}(?![\w:])")


def contact_spans(text: str) -> Iterator[Span]:
    """[PHONE], [URL] and [ID] (IP address) spans."""
    yield from (Span(m.start(), m.end(), "URL", "[URL]") for m in URL.finditer(text))
    if not any(c.isdigit() for c in text):
        return
    yield from (Span(m.start(), m.end(), "ID", "[ID]") for pattern in (IPV4, IPV6) for m in pattern.finditer(text))
    yield from phone_spans(text)


def phone_spans(text: str) -> Iterator[Span]:
    candidates = [m for m in PHONE_CANDIDATE.finditer(text) if sum(c.isdigit() for c in m[0]) >= 7]
    if len(candidates) > MAX_PHONE_CANDIDATES:
        yield from (Span(m.start(), m.end(), "PHONE", "[PHONE]") for m in candidates)
        return
    for m in candidates:
        date = DATE_SHAPED.match(m[0])
        if date and (date.end() == len(m[0]) or m[0][date.end()] in " \t"):
            continue  # "04.03.2021", "2021-01-12 15:01": a date (and a time); "05.06.52.16.25" goes on
        if DECIMAL.search(m[0]):
            continue  # "0.25 0.5 1.0": doses or lab values, not a number dialled
        if TRUNK_NUMBER.fullmatch(m[0]):
            yield Span(m.start(), m.end(), "PHONE", "[PHONE]")
            continue
        found: set[tuple[int, int]] = set()
        # a number written with its country code or area code in brackets is a phone number if its length is
        # possible; a bare run of digits ("0.25 0.5 1.0", "120 80 72 98") must be a valid number of some region
        marked = m[0].startswith(("+", "("))
        leniency = phonenumbers.Leniency.POSSIBLE if marked else phonenumbers.Leniency.VALID
        for region in PHONE_REGIONS:
            for match in phonenumbers.PhoneNumberMatcher(m[0], region, leniency=leniency):
                found.add((m.start() + match.start, m.start() + match.end))
            if found:
                break  # a number valid in one region is a phone number; the others add nothing
        yield from (Span(start, end, "PHONE", "[PHONE]") for start, end in found)

"""Dates written in prose, found and shifted in their own format ("March 4, 2021" stays "Month D, YYYY").

Formats: 2021-03-04, 2021/3/4, 2021.03.04, 03/04/2021, 3/4/2021, 3-4-21 (slashes and dashes: US, month first),
04.03.2021 (dots after the day: day first), 20210304, March 4, 2021, march 4 2021, Mar. 4th 2021, 4 Mar 2021,
04-Mar-2021, 04MAR21, 4th of March 2021, March 2021; and, replaced by [DATE] because they cannot be shifted without
a year: a month and day ("March 4", "on 3/14"), a month alone ("since November"). A time after a date is left
alone: whole-day shifts do not change it. A month name alone or without a year is matched in Title or UPPER case
only, so the verb "may" is not a date, and "May" alone (a name, a verb at a sentence start) is left to the names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from tasks.deid.dates import UnshiftableDate, shift_ymd

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
MONTH_NUMBER = {**{m.lower(): i for i, m in enumerate(MONTHS, 1)}, **{m[:3].lower(): i for i, m in
                                                                      enumerate(MONTHS, 1)}, "sept": 9}


def _month_alternatives() -> str:
    forms = set()
    for month in MONTHS:
        for word in {month, month[:3], "Sept" if month == "September" else month}:
            forms.update({word, word.upper()})
    return "|".join(sorted(forms, key=len, reverse=True))


MON = rf"(?P<mon>{_month_alternatives()})"
MON_ANY_CASE = rf"(?P<mon>{_month_alternatives()}|(?-i:{_month_alternatives().lower()}))"
YEAR = r"(?P<year>\d{4}|\d{2})"
ORD = r"(?P<suf>st|nd|rd|th)?"
PATTERNS = {
    "mdy_name": re.compile(rf"\b{MON_ANY_CASE}(?P<dot>\.?)(?P<s1>\s+)(?P<day>\d{{1,2}}){ORD}(?P<comma>,?)(?P<s2>\s+)"
                           rf"(?P<year>\d{{4}})\b"),
    "dmy_name": re.compile(rf"\b(?P<day>\d{{1,2}}){ORD}(?P<s1>\s+(?:of\s+)?|[-/.]|){MON_ANY_CASE}(?P<dot>\.?)"
                           rf"(?P<comma>,?)(?P<s2>\s+|[-/]|){YEAR}\b"),
    "my_name": re.compile(rf"\b{MON}(?P<dot>\.?)(?P<s1>\s+)(?P<year>\d{{4}})\b"),
    "iso": re.compile(r"(?<![\d-])(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})(?!\d)"),
    "ymd_slash": re.compile(r"(?<![\d/])(?P<year>\d{4})/(?P<month>\d{1,2})/(?P<day>\d{1,2})(?![\d/])"),
    "ymd_dot": re.compile(r"(?<![\d.])(?P<year>(?:1[89]|2\d)\d{2})\.(?P<month>\d{1,2})\.(?P<day>\d{1,2})(?!\d|\.\d)"),
    "dmy_dot": re.compile(r"(?<![\d.])(?P<day>\d{1,2})\.(?P<month>\d{1,2})\.(?P<year>\d{4})(?!\d|\.\d)"),
    "us": re.compile(r"(?<![\d/.-])(?P<month>\d{1,2})(?P<sep>[/-])(?P<day>\d{1,2})(?P=sep)(?P<year>\d{4}|\d{2})"
                     r"(?![\d/-])"),
    "compact": re.compile(r"(?<!\w)(?<!\d\.)(?P<year>(?:19|20)\d{2})(?P<month>0[1-9]|1[0-2])"
                          r"(?P<day>0[1-9]|[12]\d|3[01])(?!\w|\.\d)"),
}
FULL_MONTHS = "|".join(f"{m}|{m.upper()}" for m in MONTHS if m != "May") + "|Sept|SEPT"
DATE_CUE = (r"(?:on|in|since|from|until|till|to|by|with|dated|seen|before|after|due|visit|admitted|discharged|"
            r"compared|DOS|date|cath|surgery|CABG|MI)")
BARE = (re.compile(rf"\b{MON}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?\b"),  # March 4 / 4 March: no year, cannot shift
        re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{MON}\b"),
        re.compile(rf"\b(?:{FULL_MONTHS})\b"),  # a month alone ("since November")
        # month/day without a year, only after a word that announces a date ("5/5 strength" is an exam grade)
        # ... and a month/yy ("CABG in 3/80")
        re.compile(rf"\b{DATE_CUE}:?\s+(?P<bare>(?:1[0-2]|0?[1-9])/(?:3[01]|[12]\d|0?[1-9]|\d{{2}}))(?![\d/])",
                   re.IGNORECASE))


def date_spans(text: str, offset_days: int | None,
               protected: frozenset[str] = frozenset()) -> Iterator[tuple[int, int, str, str]]:
    """(start, end, kind, replacement) for every date in `text`; kind DATE_SHIFTED or DATE (placeholder).

    `protected` holds ISO dates never to be shifted, only hidden (the birth date of a patient over 89: even a
    shifted year would tell the age).
    """
    if re.search(r"\d", text) is None:  # every date but a month alone holds a digit
        yield from ((m.start(), m.end(), "DATE", "[DATE]") for m in BARE[2].finditer(text))
        return
    for name, pattern in PATTERNS.items():
        for m in pattern.finditer(text):
            hide = offset_days is None or _original_iso(m) in protected
            yield _span(m, FORMATTERS[name], None if hide else offset_days)
    for pattern in BARE:  # inside a full date they merge into it; alone they become [DATE]
        group = "bare" if "bare" in pattern.groupindex else 0
        yield from ((m.start(group), m.end(group), "DATE", "[DATE]") for m in pattern.finditer(text))


def _span(m: re.Match[str], formatter: Callable, offset_days: int | None) -> tuple[int, int, str, str]:
    if offset_days is None:
        return m.start(), m.end(), "DATE", "[DATE]"
    try:
        return m.start(), m.end(), "DATE_SHIFTED", formatter(m, offset_days)
    except UnshiftableDate:
        return m.start(), m.end(), "DATE", "[DATE]"


def _original_iso(m: re.Match[str]) -> str | None:
    """The matched date as YYYY-MM-DD (None for a month and year only, or an unknown month)."""
    groups = m.groupdict()
    month = MONTH_NUMBER.get(groups["mon"].lower()) if groups.get("mon") else int(groups["month"])
    if not groups.get("day") or month is None:
        return None
    return f"{_year(m):04d}-{month:02d}-{int(groups['day']):02d}"


def _year(m: re.Match[str]) -> int:
    year = m["year"]
    if len(year) == 2:  # two-digit years: 00-49 -> 2000s, 50-99 -> 1900s
        return 2000 + int(year) if int(year) < 50 else 1900 + int(year)
    return int(year)


def _shift(m: re.Match[str], offset_days: int, month: int, day: int | None) -> tuple[int, int, int | None]:
    y, mo, d = shift_ymd(_year(m), month, day, offset_days)
    return y, mo or month, d


def _ymd_year(m: re.Match[str], year: int) -> str:
    return f"{year % 100:02d}" if len(m["year"]) == 2 else f"{year:04d}"


def _pad(original: str, value: int) -> str:
    return f"{value:02d}" if len(original) == 2 else str(value)


def _month_word(original: str, month: int) -> str:
    """The new month in the original's style: full or abbreviated, Title or UPPER case."""
    name = MONTHS[month - 1]
    word = name if original.lower() in {m.lower() for m in MONTHS} else name[:3]
    return word.upper() if original.isupper() else word.lower() if original.islower() else word


def _ordinal(day: int) -> str:
    return "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def _numeric(m: re.Match[str], offset_days: int) -> str:
    """Write the shifted year, month and day back into the matched text where they were, with their widths."""
    y, mo, d = _shift(m, offset_days, int(m["month"]), int(m["day"]))
    new = {"year": _ymd_year(m, y), "month": _pad(m["month"], mo), "day": _pad(m["day"], d)}
    text, base = m.group(0), m.start()
    for name in sorted(new, key=m.start, reverse=True):
        text = text[: m.start(name) - base] + new[name] + text[m.end(name) - base:]
    return text


def _named(m: re.Match[str], offset_days: int) -> str:
    month = MONTH_NUMBER.get(m["mon"].lower())
    if month is None:
        raise UnshiftableDate("unknown month")
    day = m.groupdict().get("day")
    y, mo, d = _shift(m, offset_days, month, int(day) if day else None)
    mon = _month_word(m["mon"], mo) + m["dot"]
    if day is None:
        return f"{mon}{m['s1']}{y:04d}"
    day_text = _pad(day, d) + (_ordinal(d) if m["suf"] else "")
    if m.re is PATTERNS["mdy_name"]:
        return f"{mon}{m['s1']}{day_text}{m['comma']}{m['s2']}{_ymd_year(m, y)}"
    return f"{day_text}{m['s1']}{mon}{m['comma']}{m['s2']}{_ymd_year(m, y)}"


FORMATTERS: dict[str, Callable[[re.Match[str], int], str]] = {
    name: _named if name.endswith("_name") else _numeric for name in PATTERNS
}

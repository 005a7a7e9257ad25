"""Free-text scrubber: known identifiers, patterns, dates shifted in their own format."""

from __future__ import annotations

from datetime import date

import pytest

from tasks.deid import KnownIdentifiers, scrub_text

KNOWN = KnownIdentifiers(patient_names=["John Canaryman"], staff_names=["Mary O'Canary"], mrns=["CANARYMRN9"],
                         phones=["(201) 555-0134"], ssns=["123-45-6789"], addresses=["12 Maple Ave", "07030"],
                         accession_numbers=["ACC0100000007"], organizations=["St. Canary Medical Center"])


@pytest.mark.parametrize(("text", "expected"), [
    ("CANARYMAN, John was seen.", "[NAME] was seen."),
    ("john canaryman and Canaryman J. and JOHN", "[NAME] and [NAME] J. and [NAME]"),
    ("Dr. Mary O'Canary signed", "Dr. [NAME] signed"),
    ("MRN: CANARYMRN9 / mrn canarymrn9", "MRN: [MRN] / mrn [MRN]"),
    ("call 201.555.0134 or (973) 555-1212", "call [PHONE] or [PHONE]"),
    ("SSN 123 45 6789, other 987-65-4321", "SSN [SSN], other [SSN]"),
    ("mail canary@example.org", "mail [EMAIL]"),
    ("lives at 12 Maple Ave, NJ 07030; 400 Elm Street", "lives at [ADDRESS]; [ADDRESS]"),
    ("Accession ACC0100000007", "Accession [ID]"),
    ("RADIOLOGY - ST. CANARY MEDICAL CENTER", "RADIOLOGY - [ORG]"),
    ("a 93-year-old, aged 95, a 45 year old", "a 90+-year-old, aged 90+, a 45 year old"),
])
def test_identifiers_replaced(text, expected):
    out, counts = scrub_text(text, KNOWN, -10)
    assert out == expected and sum(counts.values()) >= 1


@pytest.mark.parametrize(("text", "expected"), [
    ("2021-03-04", "2021-02-22"),
    ("2021-03-04T10:30:00Z", "2021-02-22T10:30:00Z"),
    ("03/04/2021", "02/22/2021"),
    ("3/4/2021 14:05", "2/22/2021 14:05"),
    ("3-4-21", "2-22-21"),
    ("March 4, 2021", "February 22, 2021"),
    ("Mar. 4th, 2021", "Feb. 22nd, 2021"),
    ("4 Mar 2021", "22 Feb 2021"),
    ("4th of MARCH 2021", "22nd of FEBRUARY 2021"),
    ("20210304.", "20210222."),
    ("March 2021", "February 2021"),
    ("2021/3/4", "2021/2/22"),
    ("2021-3-4", "2021-2-22"),
    ("04.03.2021", "22.02.2021"),
])
def test_dates_shifted_in_same_format(text, expected):
    out, counts = scrub_text(text, None, -10)
    assert out == expected and counts["DATE_SHIFTED"] == 1


def test_unshiftable_dates_become_placeholders():
    assert scrub_text("seen on June 3 and 02/30/2021", None, -10)[0] == "seen on [DATE] and [DATE]"
    assert scrub_text("seen on 3rd of June", None, -10)[0] == "seen on [DATE]"
    assert scrub_text("seen 2021-03-04", None, None)[0] == "seen [DATE]"
    assert scrub_text("you may take 5 mg", None, -10)[0] == "you may take 5 mg"


def test_intervals_preserved():
    out, _ = scrub_text("admitted 03/01/2021, discharged 03/04/2021", None, -400)
    first, second = (date(int(d[6:]), int(d[:2]), int(d[3:5])) for d in (out[9:19], out[32:42]))
    assert (second - first).days == 3 and (date(2021, 3, 4) - second).days == 400


def test_counts_and_repr_hold_no_values():
    _, counts = scrub_text("John Canaryman, MRN CANARYMRN9, 2021-03-04", KNOWN, -5)
    assert counts == {"NAME": 1, "MRN": 1, "DATE_SHIFTED": 1}
    assert "CANARY" not in repr(KNOWN).upper() and "CANARY" not in repr(counts).upper()


def test_empty_and_merged():
    assert scrub_text("", KNOWN, 1) == ("", {})
    merged = KNOWN.merged(KnownIdentifiers(staff_names=["Zed Canarystaff"]))
    assert scrub_text("Zed saw John", merged, 1)[0] == "[NAME] saw [NAME]"


def test_protected_birth_date_is_hidden_not_shifted():
    known = KnownIdentifiers(protected_dates=["1931-02-03"])
    out, counts = scrub_text("DOB 02/03/1931, 3 Feb 1931, 1931-02-03; seen 2021-03-04", known, -10)
    assert out == "DOB [DATE], [DATE], [DATE]; seen 2021-02-22" and counts == {"DATE": 3, "DATE_SHIFTED": 1}


def test_staff_names_after_titles_and_role_labels_are_scrubbed_without_being_known():
    text = ("Referring physician: Dr. Kimberly Thompson\nDictated and signed by: Dr. Mark Okafor, Radiology\n"
            "Seen with Nurse Alvarez. Attending: Brian Kowalski. Lungs are clear.")
    out, counts = scrub_text(text)
    for name in ("Kimberly", "Thompson", "Okafor", "Alvarez", "Kowalski", "Brian", "Mark"):
        assert name not in out
    assert "Lungs are clear." in out and "Radiology" in out
    assert counts["NAME"] >= 4

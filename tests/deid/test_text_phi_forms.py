"""The free-text PHI forms an adversarial tester found leaking (issue 17), each with canaries of our own making."""

from __future__ import annotations

import pytest

from tasks.deid import KnownIdentifiers, scrub_text

PATIENT = KnownIdentifiers(patient_names=("Zoë Canaryova", "José O'Canarey", "William Canarison"),
                           staff_names=("Main Lab", "Radiology Reading Room"),
                           other_names=("Hendrika van der Kanarie", "Obadiah Canarywright"))


def scrubbed(text: str, known: KnownIdentifiers | None = PATIENT) -> str:
    return scrub_text(text, known, -10)[0]


@pytest.mark.parametrize(("text", "gone"), [
    ("Her son Obadiah Canarywright visited.", ["Obadiah", "Canarywright"]),  # another person of the extract
    ("Bed 4 is Hendrika van der Kanarie.", ["Hendrika", "Kanarie", "van der"]),  # particles
    ("Seen with DR. KOWALCZYK on rounds.", ["KOWALCZYK"]),  # capitals after DR.
    ("Thanks,\nMagdalena Wiśniewska\nCardiology", ["Magdalena", "Wiśniewska"]),  # untitled signature
    ("Léonie Dubois-Marchand called.", ["Léonie", "Dubois-Marchand"]),  # non-ASCII given name
    ("Discussed with Svitlana Kravchenko, MD.", ["Svitlana", "Kravchenko"]),
])
def test_names_the_extract_does_not_list_for_this_patient(text, gone):
    out = scrubbed(text)
    assert not [g for g in gone if g in out], out
    assert "[NAME]" in out


@pytest.mark.parametrize(("text", "gone"), [
    ("Zoe CANARYOVA was seen.", ["Zoe", "CANARYOVA"]),  # without the accent
    ("Jose O’Canarey, 3 days post-op.", ["Jose", "O’Canarey", "Canarey"]),  # curly apostrophe
    ("Bill Canarison feels better; Billy slept.", ["Bill", "Canarison", "Billy"]),  # nicknames
    ("W. Canarison and Canarison, W.", ["Canarison"]),  # initials
])
def test_the_patients_own_name_in_another_spelling(text, gone):
    out = scrubbed(text)
    assert not [g for g in gone if g in out], out


@pytest.mark.parametrize(("text", "expected"), [
    ("seen 04-Mar-2021", "seen 22-Feb-2021"),
    ("seen 04MAR2021", "seen 22FEB2021"),
    ("seen 4 March 2021", "seen 22 February 2021"),
    ("seen march 4 2021", "seen february 22 2021"),
    ("seen 2021.03.04", "seen 2021.02.22"),
    ("cath on 3/14 and strength 5/5", "cath on [DATE] and strength 5/5"),
    ("CABG in 3/80", "CABG in [DATE]"),
    ("since November", "since [DATE]"),
])
def test_dates_in_more_clinical_formats(text, expected):
    assert scrubbed(text, None) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("95M with CHF", "90+M with CHF"),
    ("a 93 yo F", "a 90+ yo F"),
    ("Tmax 101 F overnight", "Tmax 101 F overnight"),  # a temperature, not an age
    ("call +44 20 7946 0958", "call [PHONE]"),
    ("mobile +49 30 901820", "mobile [PHONE]"),
    ("SSN 123 45 6789", "SSN [SSN]"),
    ("lives at 12 Canary Crescent", "lives at [ADDRESS]"),
    ("PO Box 4471, then 9 Wren Mews", "[ADDRESS], then [ADDRESS]"),
    ("pager 84710", "pager [PHONE]"),
    ("licence cs6518017, card 4111 1111 1111 1111, IBAN GB38EMUB18159083016613",
     "licence [ID], card [ID], IBAN [ID]"),
    ("BRAF V600E, EGFR T790M, vitamin B12", "BRAF V600E, EGFR T790M, vitamin B12"),  # not identifiers
    ("call 650-752-7354x549", "call [PHONE]"),  # with an extension
    ("tel 05.06.52.16.25 or 0380 7558505", "tel [PHONE] or [PHONE]"),  # national formats
    ("K 4.1 5.0 3.9, doses 0.25 0.5 1.0 mg", "K 4.1 5.0 3.9, doses 0.25 0.5 1.0 mg"),  # values, not numbers dialled
    ("see https://canary.example.org/u/7", "see [URL]"),
])
def test_ages_phones_ids_and_addresses(text, expected):
    assert scrubbed(text, None) == expected


def test_a_staff_display_name_made_of_ordinary_words_does_not_erase_them():
    """The extract's staff included 'Main Lab': 'lab' and 'room' stay in every note, the whole name still goes."""
    out = scrubbed("Sent to the lab; labs pending. Reviewed in the reading room with Main Lab.")
    assert out == "Sent to the lab; labs pending. Reviewed in the reading room with [NAME]."


def test_clinical_words_are_not_names():
    text = ("Chest pain, shortness of breath. Troponin negative. Plan: aspirin, atorvastatin, follow up with "
            "cardiology. Heart Failure clinic. Lungs clear. Patient will call if worse.")
    assert scrubbed(text, None) == text

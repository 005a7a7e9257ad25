"""What of an omics extract may reach the staged table: an allow-list, because a lab's sheet and matrix are typed by
people, and a scrubber cannot recognise a name it was never told.

    sheet columns   only sample id, MRN (-> the patient pseudonym), collection date (-> shifted), specimen and assay
                    are read; every other column of the sheet is never read. specimen and assay are free text, so a
                    value is staged only when it is one of the spellings data_contracts/contracts/omics.yaml lists
                    (case and spacing aside), written as listed there; anything else is null.
    matrix columns  numeric features only; a column named like patient or sample metadata (an MRN, a name, a birth
                    date, an age, a sample id ...) is not a feature, whatever it holds: it is dropped, and counted.
"""

from __future__ import annotations

import re
from functools import cache

from data_contracts.contract import load_contracts

SHEET_VALUE_RULES = {"specimen": "omics.specimen_known", "assay": "omics.assay_known"}
IDENTIFYING = re.compile(  # matched against the normalised column name (lower case, '_' for spaces and hyphens)
    r"(?:.*_)?(?:mrn|mrns|mr_number|medical_record(?:_number)?|patient(?:_.*)?|subject(?:_.*)?|participant(?:_.*)?|"
    r"donor(?:_.*)?|name|names|first_name|last_name|given_name|family_name|surname|dob|birth.*|date_of_birth|"
    r"age|age_.*|sex|gender|ssn|address|street|city|zip|postal_code|phone|telephone|email|e_mail|"
    r"sample.*|specimen.*|assay.*|collection.*|.*_date|date|date_.*|accession.*|comment.*|notes?|description)")


def _fold(value: str) -> str:
    return " ".join(value.split()).casefold()


@cache
def _vocabulary(column: str) -> dict[str, str]:
    """Folded spelling -> the spelling the contract lists."""
    values = load_contracts()["omics"].expectation(SHEET_VALUE_RULES[column]).args["values"]
    return {_fold(str(v)): str(v) for v in values}


def sheet_value(column: str, value: str | None) -> str | None:
    """`value` of the sheet's free-text `column` (specimen, assay) as the contract spells it; None if not listed."""
    return _vocabulary(column).get(_fold(value)) if value else None


def identifying_column(name: str) -> bool:
    """Whether a matrix column is named like patient or sample metadata rather than a feature."""
    return bool(IDENTIFYING.fullmatch(name.strip().lower().replace(" ", "_").replace("-", "_")))

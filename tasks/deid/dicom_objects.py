"""DICOM objects that are not images (SR, SEG, RT, KO, PR, waveforms, encapsulated documents): which SOP classes are
catalogued as what, and the extra scrub their content gets after the PS3.15 basic profile (tasks.deid.dicom).

Why an extra scrub: the profile's Table E.1-1 row for ContentSequence is D (the whole SR tree becomes one empty
item), so a conformant SR leaves de-identification with no text at all. But a content tree also hides in places the
table does not list (a vendor's template inside another sequence, a nested ContentSequence of a KO or a SEG's
segment description), and an SR's text is where a report names the patient. So every TextValue and every PN value,
anywhere in the data set, at any depth, is emptied; free-text leaves of a content tree (UT/LT/ST in an item that
has a ValueType) likewise. What is left of an SR is its structure: concept codes, relationships, references.

An encapsulated PDF/CDA cannot be scrubbed reliably (text in fonts, images, forms, metadata): it is catalogued but
its bytes are never kept (`NOT_STORED`).
"""

from __future__ import annotations

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from tasks.deid import dicom_actions as act

SOP = "1.2.840.10008.5.1.4.1.1."
OBJECT_KINDS: dict[str, str] = {
    **{SOP + f"88.{n}": "sr" for n in (11, 22, 33, 34, 35, 40, 50, 65, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76)},
    SOP + "88.59": "ko",
    SOP + "66.4": "seg", SOP + "66.5": "seg", SOP + "66.7": "seg",
    SOP + "481.3": "rtstruct", SOP + "481.5": "rtplan", SOP + "481.8": "rtplan", SOP + "481.2": "rtdose",
    **{SOP + f"11.{n}": "pr" for n in range(1, 13)},
    # waveforms: ECGs, haemodynamic, electrophysiology, arterial pulse, respiratory (audio is not: a voice is PHI)
    **{SOP + s: "ecg" for s in ("9.1.1", "9.1.2", "9.1.3", "9.2.1", "9.3.1", "9.5.1", "9.6.1", "9.6.2")},
    SOP + "104.1": "pdf", SOP + "104.2": "cda",
}
KINDS = tuple(sorted(set(OBJECT_KINDS.values())))
NOT_STORED = {"pdf": "encapsulated document: cannot be scrubbed reliably, bytes not kept",
              "cda": "encapsulated document: cannot be scrubbed reliably, bytes not kept"}
TEXT_LEAF_VRS = {"UT", "LT", "ST"}


def object_kind(sop_classes: tuple[str, ...]) -> str | None:
    """The catalogue kind of the first SOP class a file claims that is a known non-image class, else None."""
    return next((OBJECT_KINDS[uid] for uid in sop_classes if uid in OBJECT_KINDS), None)


def scrub_content(ds: Dataset) -> int:
    """Empty every TextValue and PN value, and free-text leaves of content items, at any depth (in place, on a
    de-identified copy); the number of elements emptied (a count, never a value)."""
    emptied = 0
    content_item = "ValueType" in ds
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value or []:
                emptied += scrub_content(item)
        elif _is_text(elem, content_item) and act.values_of(elem):
            act.empty(elem)
            emptied += 1
    return emptied


def _is_text(elem: DataElement, content_item: bool) -> bool:
    return elem.keyword == "TextValue" or elem.VR == "PN" or (content_item and elem.VR in TEXT_LEAF_VRS)

"""DICOM de-identification: PS3.15 Annex E Basic Application Level Confidentiality Profile with the Retain
Longitudinal Temporal Information with Modified Dates option, driven by Table E.1-1 as shipped in data_contracts.

Per element, first match wins:
1. private attributes: removed unless on the Retain Safe Private list (deid.yaml);
2. overrides from deid.yaml (PatientName/PatientID -> keyed pseudonym, PatientAge -> capped at 090Y);
3. the table's row: its modified-dates action (C: shift DA/DT by the patient's offset) for temporal VRs, else its
   basic-profile action, combinations resolved by deid.yaml;
4. attributes the table does not list, by VR, because PHI must not slip through a gap in an edition: UI replaced
   (unless class/syntax/well-known), DA/DT shifted, PN emptied, AS capped; sequences are walked at any depth.
The input dataset is not modified: the function works on a deep copy, so it stays a pure function of its inputs.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from data_contracts.deid import BurnedInRules, DeidConfig, ProfileRule, default_config
from tasks.deid import dicom_actions as act
from tasks.deid.dates import UnshiftableDate
from tasks.deid.errors import DeidError
from tasks.deid.pseudonym import Pseudonymizer

log = logging.getLogger(__name__)
FILE_META_KEPT = ("FileMetaInformationGroupLength", "FileMetaInformationVersion", "MediaStorageSOPClassUID",
                  "MediaStorageSOPInstanceUID", "TransferSyntaxUID", "ImplementationClassUID",
                  "ImplementationVersionName")
METHOD_CODES = (("113100", "Basic Application Confidentiality Profile"),
                ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
# UN outside the table is a public attribute this pydicom does not know: it cannot be checked, so it goes
BY_VR_NOT_IN_TABLE = {"UI": "U", "DA": "C", "DT": "C", "PN": "Z", "AS": "age_cap", "UN": "X"}


@dataclass
class DicomDeidResult:
    """One file's outcome. Counters are keyed by action code and by attribute keyword (or tag): never values."""

    dataset: Dataset
    actions: Counter[str]
    attributes: Counter[str]
    burned_in_risk: bool
    burned_in_reasons: tuple[str, ...]
    patient_pseudonym: str
    date_offset_days: int


@dataclass
class _Run:
    """State of one file's pass: the keyed mappings and the counts."""

    config: DeidConfig
    uids: act.UidMapper
    pseudonym: str
    offset: int
    actions: Counter[str] = field(default_factory=Counter)
    attributes: Counter[str] = field(default_factory=Counter)

    def count(self, action: str, label: str) -> None:
        self.actions[action] += 1
        self.attributes[label] += 1


def deidentify_dataset(ds: Dataset, keys: Pseudonymizer, site: str, *, mrn: str | None = None,
                       config: DeidConfig | None = None) -> DicomDeidResult:
    """De-identify one DICOM dataset (a copy of it); `mrn` defaults to its PatientID.

    Raises DeidError (naming the rule, never a value) when the file cannot be made safe, e.g. no patient id.
    """
    config = config or default_config()
    mrn = mrn if mrn is not None else str(ds.get("PatientID", "") or "")
    if not mrn.strip():
        raise DeidError("patient_id_missing", "PatientID (0010,0020) is empty and no MRN was given")
    pseudonym = keys.patient(site, mrn)
    run = _Run(config, act.UidMapper(keys, config.uid_keep_keyword_patterns), pseudonym,
               keys.date_offset_days(pseudonym))
    # pydicom's value validation warns *and logs* with the offending value quoted: off while we touch values
    with pydicom_config.disable_value_validation(), _values_kept_out_of_errors("dicom_dataset"):
        reasons = burned_in_reasons(ds, config)
        out = copy.deepcopy(ds)
        _clean_dataset(out, run)
        _clean_file_meta(out, run)
        _clean_file_attributes(out)
        _mark_deidentified(out, run)
    log.debug("deidentified one dataset: %d actions, burned-in rules hit: %s", sum(run.actions.values()), reasons)
    return DicomDeidResult(out, run.actions, run.attributes, bool(reasons), reasons, pseudonym, run.offset)


@contextmanager
def _values_kept_out_of_errors(rule: str, where: str = "") -> Iterator[None]:
    """Re-raise anything but a DeidError as a DeidError naming only the exception type: pydicom's messages may
    quote element values, and `from None` keeps the original out of tracebacks too."""
    try:
        yield
    except DeidError:
        raise
    except Exception as exc:
        raise DeidError(rule, f"cannot de-identify{where}: {type(exc).__name__}") from None


def burned_in_reasons(ds: Dataset, config: DeidConfig | None = None) -> tuple[str, ...]:
    """Rules that say this image may carry text (or a face) in its pixels; rule names only, no values."""
    with pydicom_config.disable_value_validation(), _values_kept_out_of_errors("dicom_burned_in"):
        return _burned_in_reasons(ds, (config or default_config()).burned_in)


def ocr_reasons(ds: Dataset, config: DeidConfig | None = None) -> tuple[str, ...]:
    """Why this image's pixels must be read for text (tasks/deid/pixels.py): its modality or SOP class is on the OCR
    list or the burned-in list. Empty: not at risk, not read. Rule names and defined terms only, no values."""
    rules = (config or default_config()).burned_in
    with pydicom_config.disable_value_validation(), _values_kept_out_of_errors("dicom_burned_in"):
        modality, classes = _code(ds, "Modality"), sop_classes(ds)
    reasons = [f"modality:{modality}"] if modality in rules.modalities | rules.ocr.modalities else []
    labels = [rules.sop_classes.get(uid) or rules.ocr.sop_classes.get(uid) for uid in classes]
    reasons.extend(f"sop_class:{label}" for label in labels if label)
    return tuple(dict.fromkeys(reasons))


def sop_classes(ds: Dataset) -> tuple[str, ...]:
    """The SOP class UIDs a file claims, in its data set and in its file meta: a screen capture may say CR in one
    place and Secondary Capture in the other, and a screen must judge it by the riskier."""
    meta = getattr(ds, "file_meta", None) or Dataset()
    found = (str(ds.get("SOPClassUID", "") or ""), str(meta.get("MediaStorageSOPClassUID", "") or ""))
    return tuple(dict.fromkeys(u for u in (v.strip("\x00 \t\r\n") for v in found) if u))


def _code(ds: Dataset, keyword: str) -> str:
    """A CS value as the rules spell it: upper case, no padding (writers send 'cr', 'wsd ', 'yes')."""
    return str(ds.get(keyword, "") or "").strip("\x00 \t\r\n").upper()


def _burned_in_reasons(ds: Dataset, rules: BurnedInRules) -> tuple[str, ...]:
    reasons = [f"{kw}=YES" for kw in ("BurnedInAnnotation", "RecognizableVisualFeatures") if _code(ds, kw) == "YES"]
    reasons.extend(f"sop_class:{rules.sop_classes[uid]}" for uid in sop_classes(ds) if uid in rules.sop_classes)
    if (modality := _code(ds, "Modality")) in rules.modalities:
        reasons.append(f"modality:{modality}")
    if (conversion := _code(ds, "ConversionType")) in rules.conversion_types:
        reasons.append(f"conversion_type:{conversion}")
    image_type = {str(v).strip().upper() for v in act.values_of(ds["ImageType"])} if "ImageType" in ds else set()
    reasons.extend(f"image_type:{v}" for v in sorted(image_type & rules.image_type_values))
    return tuple(dict.fromkeys(reasons))


def _label(tag: BaseTag, elem: DataElement, rule: ProfileRule | None) -> str:
    if tag.is_private:
        return f"({tag.group:04X},{tag.element:04X})"
    return (rule.keyword if rule else "") or elem.keyword or f"({tag.group:04X},{tag.element:04X})"


def _clean_dataset(ds: Dataset, run: _Run) -> None:
    """Apply the profile to every element of `ds`, then to every item of the sequences that stay."""
    for tag in list(ds.keys()):
        with _values_kept_out_of_errors("dicom_element", f" ({tag.group:04X},{tag.element:04X})"):
            _clean_element(ds, tag, run)
    _drop_orphan_private_creators(ds, run)


def _clean_element(ds: Dataset, tag: BaseTag, run: _Run) -> None:
    if tag.element == 0x0000:  # group lengths are wrong once anything is removed; retired anyway
        del ds[tag]
        run.count("X", "GroupLength")
        return
    elem = ds[tag]
    if tag.is_private:
        _clean_private(ds, tag, elem, run)
        return
    rule = run.config.table.lookup(tag)
    label = _label(tag, elem, rule)
    action = _choose(elem, rule, label, run.config)
    if action is None:
        if elem.VR == "SQ":
            _walk(elem, run)
        return
    _apply(ds, tag, elem, action, label, rule, run)


def _choose(elem: DataElement, rule: ProfileRule | None, label: str, config: DeidConfig) -> str | None:
    """The single action for this element (None: keep, walking into it if it is a sequence)."""
    special = config.overrides.get(label)
    if special:
        return special
    if rule is not None:
        if rule.modified_dates == "C" and elem.VR in act.TEMPORAL_VRS:
            return "C"
        return config.resolve(rule.basic)
    return BY_VR_NOT_IN_TABLE.get(elem.VR)


def _apply(ds: Dataset, tag: BaseTag, elem: DataElement, action: str, label: str, rule: ProfileRule | None,
           run: _Run) -> None:
    if action == "C":
        try:
            act.shift_dates(elem, run.offset)
        except UnshiftableDate:  # not a date: fall back to what the basic profile says, else remove
            fallback = run.config.resolve(rule.basic) if rule else "X"
            _apply(ds, tag, elem, "X" if fallback == "C" else fallback, label, None, run)
            return
    elif action == "X":
        del ds[tag]
    elif action == "Z":
        act.empty(elem)
    elif action == "D":
        act.dummy(elem, run.uids)
    elif action == "U":
        if not run.uids.replace(elem, force=rule is not None):
            return  # a class/syntax/well-known UID outside the table: kept, not counted
    elif action == "U*":
        _walk(elem, run)
    elif action == "pseudonym":
        elem.value = run.pseudonym
        action = "D"
    elif action == "age_cap":
        action = act.cap_age(elem)
        if action == "K":
            return
    run.count(action, label)


def _walk(elem: DataElement, run: _Run) -> None:
    if elem.VR == "SQ" and elem.value is not None:
        for item in elem.value:
            _clean_dataset(item, run)


def _private_key(ds: Dataset, tag: BaseTag) -> tuple[int, str, int] | None:
    """(group, private creator, element byte) of a private data element, None when it has no creator."""
    if tag.element < 0x1000:
        return None
    creator = ds.get((tag.group, tag.element >> 8))
    if creator is None or not isinstance(creator.value, str):
        return None
    return tag.group, creator.value.strip(), tag.element & 0xFF


def _clean_private(ds: Dataset, tag: BaseTag, elem: DataElement, run: _Run) -> None:
    if 0x0010 <= tag.element <= 0x00FF:
        return  # private creators: decided after their blocks (see _drop_orphan_private_creators)
    key = _private_key(ds, tag)
    safe = key is not None and any((e.group, e.creator, e.element) == key for e in run.config.private_safe_list)
    label = _label(tag, elem, None)
    if safe:
        run.count("K", label)
        _walk(elem, run)
    else:
        del ds[tag]
        run.count("X", label)


def _drop_orphan_private_creators(ds: Dataset, run: _Run) -> None:
    used = {(t.group, t.element >> 8) for t in ds.keys() if t.is_private and t.element >= 0x1000}
    for tag in [t for t in ds.keys() if t.is_private and 0x0010 <= t.element <= 0x00FF]:
        if (tag.group, tag.element) not in used:
            del ds[tag]
            run.count("X", "PrivateCreator")


def _clean_file_meta(ds: Dataset, run: _Run) -> None:
    """Keep only the group 0002 elements a reader needs; their UIDs follow the dataset's mapping (a private SOP class
    or implementation UID gets its keyed replacement, standard ones stay), all but the transfer syntax, which a
    reader needs to parse the file."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return
    kept = FileMetaDataset()
    for elem in meta:
        if elem.keyword not in FILE_META_KEPT:
            run.count("X", elem.keyword or "FileMeta")
            continue
        if elem.keyword != "TransferSyntaxUID" and run.uids.replace(elem, force=True):
            run.count("U", elem.keyword)
        kept.add(elem)
    ds.file_meta = kept


def _clean_file_attributes(ds: Dataset) -> None:
    """What a FileDataset carries besides elements: free preamble bytes (a TIFF header, say) and the source path,
    which may name the patient."""
    if getattr(ds, "preamble", None) is not None:
        ds.preamble = b"\x00" * 128
    if hasattr(ds, "filename"):
        ds.filename = None


def _mark_deidentified(ds: Dataset, run: _Run) -> None:
    """PS3.15 E.1.1: say what was done, in attributes and in codes (CID 7050)."""
    ds.PatientName = run.pseudonym
    ds.PatientID = run.pseudonym
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    ds.DeidentificationMethod = [meaning for _, meaning in METHOD_CODES] + [run.config.method_label]
    items = []
    for code, meaning in METHOD_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code, "DCM", meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)


# ------------------------------------------------------------------------------------------------ staged columns
def staged_fields(ds: Dataset, keys: Pseudonymizer, config: DeidConfig | None = None) -> dict[str, str | None]:
    """The header columns of a staged imaging row, read from a DE-IDENTIFIED dataset: keyed UIDs (a private SOP class
    too: the profile replaced it), the shifted study date, and coded values (config.staged_imaging). Free text never
    reaches a table verbatim: a name off the allow-list becomes a keyed token, a body part off it null."""
    rules = (config or default_config()).staged_imaging
    meta = getattr(ds, "file_meta", None) or Dataset()
    with pydicom_config.disable_value_validation(), _values_kept_out_of_errors("dicom_staged"):
        modality, body_part = _code(ds, "Modality"), _code(ds, "BodyPartExamined")
        syntax = _plain(meta, "TransferSyntaxUID")
        return {"study_id": _plain(ds, "StudyInstanceUID") or None, "series_id": _plain(ds, "SeriesInstanceUID"),
                "modality": (modality if modality in rules.modalities else "OT") if modality else None,
                "sop_class_uid": next(iter(sop_classes(ds)), None),
                "manufacturer": _listed_or_keyed(ds, "Manufacturer", rules.manufacturers, keys),
                "model": _listed_or_keyed(ds, "ManufacturerModelName", rules.model_names, keys),
                "body_part": body_part if body_part in rules.body_parts else None,
                "study_date": _iso_date(_plain(ds, "StudyDate")),
                "transfer_syntax": syntax if syntax.startswith(act.DICOM_ROOT) else None}


def _plain(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip("\x00 \t\r\n")  # UIDs may be NUL-padded


def _iso_date(value: str) -> str | None:
    """DICOM DA (already shifted by de-identification) -> ISO 8601, the staged tables' date format."""
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else None


def _listed_or_keyed(ds: Dataset, keyword: str, allowed: dict[str, str], keys: Pseudonymizer) -> str | None:
    """An allow-listed name in its listed spelling; any other value a keyed token (equal values stay equal, so a
    scanner change still shows in monitoring); empty: None."""
    name = " ".join(str(ds.get(keyword, "") or "").upper().split())
    if not name:
        return None
    return allowed.get(name) or "keyed-" + keys.digest("dicom-staged", keyword, name).hex()[:12]

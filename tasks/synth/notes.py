"""Free-text renderers: the admission history & physical note and the radiology report of one patient.

Why the wording is constrained: the notes modality must carry exactly the symptom mentions the model conditions
on (`Evidence.symptoms`) and nothing else about the patient's class, or the Bayes posterior in the truth file would
no longer be an upper bound. So a note names each present symptom with a synonym from `SYMPTOM_PHRASES`, may negate
an absent one with a cue from `NEGATION_PHRASES`, and never mentions labs, vitals, imaging or the diagnosis.
Radiology reports are derived from the imaging evidence only, by the thresholds below.

Reading a note back (what tests and a rule-based baseline do): split the text into sentences at '.', ';' and line
breaks; match symptom phrases case-insensitively on word boundaries, longest first; a match is negated when a
negation cue occurs earlier in the same sentence, otherwise the symptom is present. Notes never put a present
symptom after a cue.

Both texts carry PHI on purpose (de-identification is tested against it): name, MRN, dates, phone numbers, staff
names, a relative and the street address. Dates are written mm/dd/yyyy, or "Month d, yyyy" in narrative notes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

import numpy as np

from tasks.synth.model import SYMPTOMS
from tasks.synth.record import FIRST_FEMALE, FIRST_MALE, PatientRecord

# symptom -> phrases of full-sentence notes (soap, narrative); the first is the one negations use
PROSE_PHRASES: dict[str, tuple[str, ...]] = {
    "cough": ("cough", "productive cough", "dry cough", "persistent cough"),
    "fever": ("fever", "fevers", "subjective fevers", "feeling feverish"),
    "dyspnea": ("shortness of breath", "dyspnea", "breathlessness", "dyspnea on exertion"),
    "orthopnea": ("orthopnea", "difficulty lying flat", "two-pillow orthopnea"),
    "leg_swelling": ("leg swelling", "swelling of both legs", "ankle swelling", "lower extremity edema"),
    "pleuritic_chest_pain": ("pleuritic chest pain", "sharp chest pain worse on deep inspiration",
                             "chest pain on deep breathing"),
    "hemoptysis": ("hemoptysis", "coughing up blood", "blood-streaked sputum"),
}
# the abbreviations terse notes use
TERSE_PHRASES: dict[str, tuple[str, ...]] = {
    "cough": ("cough", "productive cough"), "fever": ("fevers", "fever"), "dyspnea": ("SOB", "DOE"),
    "orthopnea": ("orthopnea",), "leg_swelling": ("LE edema",), "pleuritic_chest_pain": ("pleuritic CP",),
    "hemoptysis": ("hemoptysis",),
}
# symptom -> every phrase any note may use for it: what a reader matches
SYMPTOM_PHRASES: dict[str, tuple[str, ...]] = {
    name: tuple(dict.fromkeys(PROSE_PHRASES[name] + TERSE_PHRASES[name])) for name in SYMPTOMS
}
# sentence-scoped negation cues: a symptom phrase after one of these in the same sentence is absent
NEGATION_PHRASES: tuple[str, ...] = ("denies", "no", "negative for", "neg for", "without")
_STYLE_NEGATIONS = {"soap": ("Denies", "No", "Negative for"), "narrative": ("denies",), "terse": ("neg for", "denies")}
P_NEGATE = 0.6  # chance an absent symptom is explicitly negated rather than left unmentioned

# ---- radiology thresholds (imaging evidence -> words); exp(log_opacity) and exp(log_defect) are fractions
CARDIOMEGALY_CTR = 0.50  # the classic cardiothoracic-ratio cut-off; "cardiomegaly" appears iff ctr > this
BORDERLINE_CTR = 0.48
MODERATE_CTR = 0.58
OPACITY_LEVELS = (0.15, 0.35, 0.80)  # clear | subtle | patchy airspace opacity | consolidation
DEFECT_LEVELS = (0.20, 0.35, 0.80)  # none | equivocal | filling defect | large central defect
# where tasks/synth/dicom.py draws them: opacity blobs in both lung fields, the defect in the main pulmonary artery
OPACITY_SITE = "both lungs"
DEFECT_SITE = "main pulmonary artery"

_PMH = ("hypertension", "hyperlipidemia", "type 2 diabetes mellitus", "osteoarthritis", "GERD", "hypothyroidism",
        "prior appendectomy", "depression")
_TERSE_PMH = {"hypertension": "HTN", "hyperlipidemia": "HLD", "type 2 diabetes mellitus": "DM2"}
_CHIEF_NONE = ("generalized weakness", "malaise", "fatigue")
_KIN = (("wife", FIRST_FEMALE), ("husband", FIRST_MALE), ("daughter", FIRST_FEMALE), ("son", FIRST_MALE),
        ("sister", FIRST_FEMALE), ("brother", FIRST_MALE))


class Kin(NamedTuple):
    """The patient's next of kin: named in the note and in Patient.contact (PHI both places)."""

    relation: str
    given: str
    family: str
    phone: str

    @property
    def name(self) -> str:
        return f"{self.given} {self.family}"


def next_of_kin(record: PatientRecord) -> Kin:
    """Drawn from the patient's own "kin" stream, so every renderer names the same relative."""
    rng = record.rng("kin")
    spouse_of_same_sex = "wife" if record.identity.sex == "female" else "husband"
    allowed = [k for k in _KIN if k[0] != spouse_of_same_sex]
    relation, pool = allowed[int(rng.integers(len(allowed)))]
    phone = f"({rng.integers(201, 990)}) 555-{rng.integers(1000, 9999)}"
    return Kin(relation, str(rng.choice(pool)), record.identity.family, phone)


def note_time(record: PatientRecord) -> datetime:
    """When the admitting physician signs the H&P: one to four hours after admission."""
    minutes = int(record.rng("note-time").integers(60, 240))
    return record.identity.admit + timedelta(minutes=minutes)


def exam_times(record: PatientRecord) -> dict[str, datetime]:
    """Acquisition time of the radiograph (and CT), inside the stay; reports are issued about an hour later."""
    rng = record.rng("exam-times")
    admit = record.identity.admit
    times = {"cxr": admit + timedelta(minutes=int(rng.integers(30, 240)))}
    if record.evidence.has_ct:
        times["ct"] = admit + timedelta(minutes=int(rng.integers(240, 20 * 60)))
    return times


def _join(items: list[str], last: str = "and") -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def _days(n: int) -> str:
    return "1 day" if n == 1 else f"{n} days"


def _mentions(record: PatientRecord, rng: np.random.Generator) -> tuple[list[str], list[str], str]:
    """Phrases for the present symptoms (shuffled), phrases for the negated ones, and the chief complaint."""
    table = TERSE_PHRASES if record.site.note_style == "terse" else PROSE_PHRASES
    present, negated = [], []
    for name, on in zip(SYMPTOMS, record.evidence.symptoms, strict=True):
        if on:
            present.append(str(rng.choice(table[name])))
        elif rng.random() < P_NEGATE:
            negated.append(table[name][0])
    present = [present[i] for i in rng.permutation(len(present))]
    chief = present[0] if present else str(rng.choice(_CHIEF_NONE))
    return present, negated, chief


def _history(record: PatientRecord, rng: np.random.Generator) -> list[str]:
    """Past medical history, drawn independently of the class so it carries no diagnostic information."""
    k = int(rng.integers(0, 4))
    picks = sorted(rng.choice(len(_PMH), size=k, replace=False)) if k else []
    return [_PMH[i] for i in picks]


def _negation(record: PatientRecord, negated: list[str], rng: np.random.Generator) -> str:
    if not negated:
        return ""
    cue = str(rng.choice(_STYLE_NEGATIONS[record.site.note_style]))
    return f"{cue} {_join(negated, 'or')}."


def _soap(record: PatientRecord, rng: np.random.Generator) -> str:
    idt, site, ev = record.identity, record.site, record.evidence
    present, negated, chief = _mentions(record, rng)
    kin = next_of_kin(record)
    pmh, days = _history(record, rng), int(rng.integers(1, 8))
    sex = "man" if ev.male else "woman"
    hpi = f"{record.age_years}-year-old {sex} presenting with {_join(present) if present else chief} for {_days(days)}."
    return "\n".join([
        "ADMISSION HISTORY AND PHYSICAL",
        f"Patient: {idt.full_name}    MRN: {idt.mrn}    DOB: {idt.birth_date:%m/%d/%Y}",
        f"Admitted: {idt.admit:%m/%d/%Y %H:%M}    Attending: Dr. {' '.join(idt.attending)}",
        f"Facility: {site.institution}    Patient phone: {idt.phone}",
        f"Emergency contact: {kin.name} ({kin.relation}), {kin.phone}",
        "",
        "SUBJECTIVE:",
        f"Chief complaint: {chief}.",
        f"HPI: {hpi} {_negation(record, negated, rng)}".rstrip(),
        f"PMH: {', '.join(pmh) if pmh else 'none reported'}.",
        "Allergies: no known drug allergies.",
        f"Social: lives at {idt.street}, {site.city}, with {kin.name} ({kin.relation}).",
        "",
        "OBJECTIVE:",
        "General: alert and oriented x3, speaking in full sentences.",
        "Vital signs and laboratory results: see flowsheet.",
        "",
        "ASSESSMENT:",
        f"{record.age_years}-year-old {sex} admitted for further evaluation of {chief}. Differential remains broad.",
        "",
        "PLAN:",
        f"- Admit to medicine under Dr. {idt.attending[1]}.",
        "- Review imaging and laboratory results when available.",
        "- Reassess on morning rounds.",
        "",
        f"Electronically signed: Dr. {' '.join(idt.attending)}, {note_time(record):%m/%d/%Y %H:%M}",
    ]) + "\n"


def _narrative(record: PatientRecord, rng: np.random.Generator) -> str:
    idt, site, ev = record.identity, record.site, record.evidence
    present, negated, chief = _mentions(record, rng)
    kin = next_of_kin(record)
    pmh, days = _history(record, rng), int(rng.integers(1, 8))
    he, his = ("He", "his") if ev.male else ("She", "her")
    signed = note_time(record)
    complaint = _join(present) if present else chief
    paragraphs = [
        f"{idt.full_name} (MRN {idt.mrn}, date of birth {idt.birth_date:%B} {idt.birth_date.day}, "
        f"{idt.birth_date.year}) is a {record.age_years}-year-old {'man' if ev.male else 'woman'} admitted to "
        f"{site.institution} on {idt.admit:%B} {idt.admit.day}, {idt.admit.year} at {idt.admit:%H:%M} under the "
        f"care of Dr. {' '.join(idt.attending)}.",
        f"{he} reports {complaint} over the past {_days(days)}. " + (f"{he} {_negation(record, negated, rng)}"
                                                                   if negated else ""),
        (f"{his.capitalize()} past history includes {_join(pmh)}." if pmh else "There is little past history.")
        + f" {he} lives at {idt.street}, {site.city}, with {his} {kin.relation} {kin.name}, who can be reached at "
        f"{kin.phone}; {his} own number is {idt.phone}.",
        f"On examination {he.lower()} was alert and conversant. Results of the admission work-up are pending at "
        f"the time of writing, and the plan is to admit for further evaluation and review them on rounds.",
        f"Dr. {' '.join(idt.attending)}, {signed:%B} {signed.day}, {signed:%Y %H:%M}",
    ]
    return "\n\n".join(p.strip() for p in paragraphs) + "\n"


def _terse(record: PatientRecord, rng: np.random.Generator) -> str:
    idt, site, ev = record.identity, record.site, record.evidence
    present, negated, chief = _mentions(record, rng)
    kin = next_of_kin(record)
    pmh, days = _history(record, rng), int(rng.integers(1, 8))
    sex = "M" if ev.male else "F"
    pmh_text = ", ".join(_TERSE_PMH.get(p, p) for p in pmh) or "none"
    return "\n".join([
        f"H&P {idt.admit:%m/%d/%Y %H:%M}  {site.institution}",
        f"Pt: {idt.full_name}  MRN {idt.mrn}  DOB {idt.birth_date:%m/%d/%Y}  Ph {idt.phone}",
        f"Attg: Dr {' '.join(idt.attending)}. NOK: {kin.name} ({kin.relation}) {kin.phone}",
        f"{record.age_years}{sex} pt c/o {', '.join(present) if present else chief} x{days}d. "
        + _negation(record, negated, rng),
        f"PMH: {pmh_text}. NKDA",
        f"SH: lives {idt.street}, {site.city}",
        "Exam: A&Ox3, NAD",
        f"A/P: adm for w/u of {chief}. f/u labs and imaging",
        f"-- Dr {idt.attending[1]} {note_time(record):%m/%d/%Y %H:%M}",
    ]).replace(". \n", ".\n").rstrip() + "\n"


_NOTE_STYLES = {"soap": _soap, "narrative": _narrative, "terse": _terse}


def clinical_note(record: PatientRecord) -> str:
    """The admission H&P in the site's style; symptoms only, never labs, imaging or the diagnosis."""
    return _NOTE_STYLES[record.site.note_style](record, record.rng("notes"))


# ---------------------------------------------------------------- radiology


def _heart(ctr: float) -> str:
    if ctr > MODERATE_CTR:
        return "Moderate cardiomegaly."
    if ctr > CARDIOMEGALY_CTR:
        return "Mild cardiomegaly."
    return "Heart size at the upper limit of normal." if ctr > BORDERLINE_CTR else "Heart size normal."


def _lungs(opacity: float, where: str = OPACITY_SITE) -> str:
    subtle, patchy, dense = OPACITY_LEVELS
    if opacity <= subtle:
        return "Lungs are clear."
    if opacity <= patchy:
        return f"Subtle opacities in {where}, possibly atelectasis."
    if opacity <= dense:
        return f"Patchy airspace opacities in {where}."
    return f"Dense consolidation in {where}."


def _arteries(defect: float, artery: str = DEFECT_SITE) -> str:
    equivocal, defect_at, large = DEFECT_LEVELS
    if defect <= equivocal:
        return "Pulmonary arteries opacify normally without filling defect."
    if defect <= defect_at:
        return f"Equivocal small filling defect in the {artery}, possibly mixing artifact."
    if defect <= large:
        return f"Filling defect in the {artery}, consistent with acute pulmonary embolism."
    return f"Large filling defect occluding most of the {artery}, consistent with acute pulmonary embolism."


_NORMAL = ("Lungs are clear", "Lung parenchyma is clear", "Heart size normal", "No pneumothorax",
           "Pulmonary arteries opacify normally")
_NO_ACUTE = {"cxr": "No acute cardiopulmonary abnormality.", "ct": "No evidence of pulmonary embolism."}
_TITLES = {"cxr": "XR CHEST PA AND LATERAL", "ct": "CT ANGIOGRAPHY CHEST WITH CONTRAST"}


def ct_accession(record: PatientRecord) -> str:
    """The CT study's accession number: the radiograph's with a suffix (one order, two studies)."""
    return f"{record.identity.accession}CT"


def _exam_section(record: PatientRecord, exam: str, when: datetime, findings: list[str]) -> list[str]:
    """One exam's block; the impression repeats the abnormal findings, as radiologists summarise."""
    accession = record.identity.accession if exam == "cxr" else ct_accession(record)
    summary = [f for f in findings if not f.startswith(_NORMAL)] or [_NO_ACUTE[exam]]
    if record.site.note_style == "narrative":
        body = [f"FINDINGS: {' '.join(findings)}", f"IMPRESSION: {' '.join(summary)}"]
    else:
        body = ["FINDINGS:", *(f"- {f}" for f in findings), "IMPRESSION:",
                *(f"{i}. {text}" for i, text in enumerate(summary, 1))]
    return [f"EXAM: {_TITLES[exam]}    Accession: {accession}    Exam date: {when:%m/%d/%Y %H:%M}",
            "Indication: admission imaging, evaluate for acute cardiopulmonary process.", "Comparison: none.",
            *body, ""]


def radiology_report(record: PatientRecord, exam: str | None = None) -> str:
    """Report of the chest radiograph and, when the patient had one, the CT ("cxr"/"ct" selects one exam).

    Findings depend only on the imaging evidence (ctr, opacity, defect), by the thresholds above, so the report
    adds nothing the images do not show.
    """
    idt, ev = record.identity, record.evidence
    times = exam_times(record)
    lungs = _lungs(float(np.exp(ev.log_opacity)))
    lines = [f"RADIOLOGY REPORT - {record.site.institution}",
             f"Patient: {idt.full_name}    MRN: {idt.mrn}    DOB: {idt.birth_date:%m/%d/%Y}",
             f"Referring physician: Dr. {' '.join(idt.referring)}", ""]
    if exam in (None, "cxr"):
        lines += _exam_section(record, "cxr", times["cxr"], [_heart(ev.ctr), lungs, "No pneumothorax."])
    if exam in (None, "ct") and ev.has_ct:
        ct_lungs = lungs.replace("Lungs are clear", "Lung parenchyma is clear")
        lines += _exam_section(record, "ct", times["ct"], [_arteries(float(np.exp(ev.log_defect))), ct_lungs])
    lines.append(f"Dictated and signed by: Dr. {' '.join(idt.radiologist)}, Radiology")
    return "\n".join(lines) + "\n"


def impression(report: str) -> str:
    """The impression section(s) of a report as one line: what DiagnosticReport.conclusion carries."""
    out, keep = [], False
    for line in report.splitlines():
        if line.startswith("IMPRESSION:"):
            keep, rest = True, line.removeprefix("IMPRESSION:").strip()
            out += [rest] if rest else []
        elif keep and line[:1].isdigit():
            out.append(line.split(". ", 1)[1])
        else:
            keep = False
    return " ".join(out)

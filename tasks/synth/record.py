"""One synthetic patient as the renderers see it: who they are (PHI), where and when, and their latent findings.

Renderers (DICOM, FHIR, notes, omics) take a `PatientRecord` and must be pure functions of it: every random
choice they make comes from `record.rng(stream)`, so a seed gives byte-identical files whatever else changes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np

from tasks.synth.model import Evidence
from tasks.synth.sites import Site

FIRST_MALE = ("James", "Robert", "Michael", "David", "William", "Thomas", "Daniel", "Matthew", "Anthony", "Mark",
              "Steven", "Paul", "Andrew", "Joshua", "Kenneth", "Kevin", "Brian", "George", "Edward", "Ronald")
FIRST_FEMALE = ("Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah",
                "Karen", "Nancy", "Lisa", "Margaret", "Betty", "Sandra", "Ashley", "Dorothy", "Kimberly", "Emily",
                "Donna")
FAMILY = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
          "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Taylor", "Moore", "Jackson", "Martin", "Lee",
          "Thompson", "White", "Harris", "Clark", "Lewis", "Robinson", "Walker", "Young", "Allen", "King",
          "Okafor", "Nguyen", "Kowalski", "O'Brien", "Schmidt", "Rossi", "Haddad", "Tanaka", "Silva", "Novak")
STREETS = ("Maple Ave", "Oak Street", "Cedar Lane", "Elm Road", "Pine Court", "Birch Drive", "Willow Way",
           "Harbor Blvd", "Lakeview Terrace", "Mill Road")
EXTRACT_DATE = datetime(2026, 1, 1)  # all encounters and follow-up end before it; fixed so seeds reproduce bytes


@dataclass(frozen=True)
class Identity:
    """Everything identifying about a patient and the staff around them: what de-identification must remove."""

    mrn: str
    fhir_id: str
    given: str
    family: str
    sex: str  # "male" | "female"
    birth_date: date
    phone: str
    ssn: str
    street: str
    postal_code: str
    admit: datetime
    discharge: datetime
    attending: tuple[str, str]  # (given, family)
    referring: tuple[str, str]
    radiologist: tuple[str, str]
    accession: str

    @property
    def full_name(self) -> str:
        return f"{self.given} {self.family}"


@dataclass(frozen=True)
class PatientRecord:
    seed: int
    index: int  # position in the cohort: with the seed, the only source of randomness
    site: Site
    identity: Identity
    evidence: Evidence

    def rng(self, stream: str) -> np.random.Generator:
        """Independent, reproducible random stream for one renderer of this patient."""
        return np.random.default_rng([self.seed, self.index, zlib.crc32(stream.encode())])

    @property
    def age_years(self) -> int:
        return int(self.evidence.age)


def _person(rng: np.random.Generator) -> tuple[str, str]:
    pool = FIRST_MALE if rng.random() < 0.5 else FIRST_FEMALE
    return str(rng.choice(pool)), str(rng.choice(FAMILY))


def make_identity(rng: np.random.Generator, site_index: int, index: int, ev: Evidence) -> Identity:
    """Draw a plausible identity consistent with the evidence (age, sex)."""
    given = str(rng.choice(FIRST_MALE if ev.male else FIRST_FEMALE))
    family = str(rng.choice(FAMILY))
    # admissions fall 3.2 to 6.2 years before the extract, so follow-up (at most 3 years) is always complete
    admit = EXTRACT_DATE - timedelta(days=int(rng.integers(1170, 2265)), minutes=int(rng.integers(0, 24 * 60)))
    discharge = admit + timedelta(hours=int(rng.integers(24, 24 * 9)))
    birth_date = (admit - timedelta(days=int(ev.age * 365.25))).date()
    return Identity(
        mrn=f"MRN{site_index + 1:02d}{index:07d}",
        fhir_id=f"{zlib.crc32(f'{site_index}-{index}'.encode()):08x}{index:08x}",
        given=given, family=family, sex="male" if ev.male else "female", birth_date=birth_date,
        phone=f"({rng.integers(201, 990)}) 555-{rng.integers(1000, 9999)}",
        ssn=f"{rng.integers(100, 899):03d}-{rng.integers(10, 99):02d}-{rng.integers(1000, 9999):04d}",
        street=f"{rng.integers(1, 9999)} {rng.choice(STREETS)}", postal_code=f"{rng.integers(10000, 99999)}",
        admit=admit, discharge=discharge, attending=_person(rng), referring=_person(rng), radiologist=_person(rng),
        accession=f"ACC{site_index + 1:02d}{index:08d}",
    )

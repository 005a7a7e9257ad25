"""Recall and precision of the free-text scrubber per PHI type, on labelled corpora nobody on this project wrote.

    make bench-deid                    # installs the corpus generator, then runs this with the defaults
    python bench/deid_text.py [--sentences 3000] [--seed 42] [--json out.json]

Corpora:
- **presidio-evaluator**: Microsoft's synthetic PHI sentences (presidio-evaluator 0.3.2's 209 templates filled by its
  fake-person records and Faker, every entity labelled by construction), `--sentences` of them with `--seed`; once
  with its records of 30 countries (foreign addresses and national phone formats), once with its US people only. Its
  hospital provider would query Wikidata; it is given the package's own default list instead (no network).
  Installed by `make bench-deid` (its pins conflict with ours, so it goes in with --no-deps beside Presidio).
- **i2b2 (philter-lite)**: the five surrogate-PHI notes of the i2b2 2014 de-identification corpus that philter-lite
  ships with their XML annotations (46 PHI spans): real clinical note layout, a small sample.
- **mmfm synthetic notes**: our generator's admission notes and radiology reports, which carry the patient's,
  relatives' and staff's names, MRN, phone, address and dates; labelled by locating those values. Scored twice:
  with the extract's identifiers known (as ingest runs it) and with nothing known (patterns and dictionaries only).

Scoring is per token (a word or a run of digits), as Philter reports it: a labelled token is caught if any of its
characters is replaced. Recall per PHI type = caught / labelled tokens. Precision = replaced tokens inside any
labelled entity / replaced tokens (an entity labelled but not PHI, e.g. a company, counts as neither a miss nor a
false alarm). Types that are not PHI under HIPAA Safe Harbor (states, countries, nationalities, titles, companies,
a year or a weekday alone, ages up to 89, the time after a date) are scored for precision only, and so are the
parts of an address label that are a state, a country or a template's connecting words ("the corner of ... and").
Targets (issue 17): recall >= 0.99 for names, IDs and dates, >= 0.98 overall; precision >= 0.90.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tasks.deid.text import KnownIdentifiers, phi_spans

TOKEN = re.compile(r"[^\W_]+")
TARGETS = {"NAME": 0.99, "ID": 0.99, "DATE": 0.99, "ALL": 0.98}
PRECISION_TARGET = 0.90
# presidio-evaluator's entity types -> PHI type scored here (None: not PHI under Safe Harbor, precision only)
PRESIDIO_TYPES = {"PERSON": "NAME", "DATE_TIME": "DATE", "PHONE_NUMBER": "PHONE", "EMAIL_ADDRESS": "EMAIL",
                  "US_SSN": "ID", "CREDIT_CARD": "ID", "IBAN_CODE": "ID", "US_DRIVER_LICENSE": "ID",
                  "IP_ADDRESS": "ID", "DOMAIN_NAME": "URL", "STREET_ADDRESS": "ADDRESS", "CITY": "ADDRESS",
                  "HOSPITAL": "INSTITUTION", "AGE": "AGE", "ORGANIZATION": None, "GPE": None, "NRP": None,
                  "TITLE": None}
# i2b2 2014 PHI categories
I2B2_TYPES = {"PATIENT": "NAME", "DOCTOR": "NAME", "USERNAME": "NAME", "DATE": "DATE", "MEDICALRECORD": "ID",
              "IDNUM": "ID", "PHONE": "PHONE", "HOSPITAL": "INSTITUTION", "AGE": "AGE"}


TIME_OF_DAY = re.compile(r"[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s?[AaPp]\.?[Mm]\.?)?$")


@dataclass
class Labelled:
    text: str
    entities: list[tuple[int, int, str | None]]  # start, end, PHI type (None: labelled, not PHI)
    known: KnownIdentifiers | None = None


@dataclass
class Score:
    labelled: Counter = field(default_factory=Counter)
    caught: Counter = field(default_factory=Counter)
    flagged: int = 0
    flagged_in_entity: int = 0
    misses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    false_alarms: Counter = field(default_factory=Counter)

    def add(self, doc: Labelled) -> None:
        covered = bytearray(len(doc.text))
        for span in phi_spans(doc.text, doc.known, None):
            covered[span.start:span.end] = b"\x01" * (span.end - span.start)
        entity_at = bytearray(len(doc.text))
        for start, end, _ in doc.entities:
            entity_at[start:end] = b"\x01" * (end - start)
        for start, end, phi in doc.entities:
            if phi is None:
                continue
            for tok in TOKEN.finditer(doc.text, start, end):
                if tok[0] == "nan":
                    continue  # presidio-evaluator's fake-person table has empty cells, rendered as "nan"
                self.labelled[phi] += 1
                if any(covered[tok.start():tok.end()]):
                    self.caught[phi] += 1
                else:
                    self.misses[phi][tok[0]] += 1
        for tok in TOKEN.finditer(doc.text):
            if any(covered[tok.start():tok.end()]):
                self.flagged += 1
                if any(entity_at[tok.start():tok.end()]):
                    self.flagged_in_entity += 1
                else:
                    self.false_alarms[tok[0]] += 1

    def rows(self) -> dict:
        types = sorted(self.labelled)
        out = {t: {"tokens": self.labelled[t], "recall": self.caught[t] / self.labelled[t]} for t in types}
        total = sum(self.labelled.values())
        out["ALL"] = {"tokens": total, "recall": sum(self.caught.values()) / total if total else float("nan")}
        return {"recall": out, "precision": self.flagged_in_entity / self.flagged if self.flagged else float("nan"),
                "flagged_tokens": self.flagged,
                "top_misses": {t: self.misses[t].most_common(8) for t in types if self.misses[t]},
                "top_false_alarms": self.false_alarms.most_common(15)}


def presidio_corpus(n: int, seed: int, us_only: bool = False) -> list[Labelled]:
    """Synthetic PHI sentences from presidio-evaluator (city split from state/country: only a city is PHI); with
    `us_only`, filled from the 103 United States people of its 3,000 fake-person records (HIPAA's home ground)
    instead of all 30 countries'."""
    try:
        from presidio_evaluator.data_generator import PresidioSentenceFaker
        from presidio_evaluator.data_generator.faker_extensions import providers
        from presidio_evaluator.data_generator.faker_extensions.datasets import load_fake_person_df
    except ImportError:
        sys.exit("presidio-evaluator is not installed: run `make bench-deid` (it installs it, then runs this)")

    class OfflineHospitals(providers.HospitalProvider):
        def load_wiki_hospitals(self):  # the package's own default list instead of a Wikidata query
            return self.default_list

    from presidio_evaluator.data_generator import presidio_sentence_faker as psf

    entity_providers = [OfflineHospitals if p is providers.HospitalProvider else p
                        for p in psf.presidio_additional_entity_providers]
    mapping = {**PresidioSentenceFaker.ENTITY_TYPE_MAPPING, "city": "CITY", "hospital_name": "HOSPITAL",
               "age": "AGE"}
    records = load_fake_person_df()
    records = records[records["country"] == "United States"] if us_only else records
    faker = PresidioSentenceFaker("en_US", lower_case_ratio=0.05, entity_providers=entity_providers,
                                  entity_type_mapping=mapping, random_seed=seed, base_records=records)
    not_phi = _not_phi_in_addresses(load_fake_person_df())
    docs = []
    for sample in faker.generate_new_fake_sentences(n):
        # some templates hold a literal backslash-n for a line break: made a real one, offsets kept (2 chars)
        text = sample.full_text.replace("\\n", " \n")
        entities = []
        for span in sample.spans:
            label = span.entity_type
            phi = PRESIDIO_TYPES.get(label, None)
            if label == "DATE_TIME" and not re.search(r"\d{1,2}\D+\d|[A-Za-z]{3,}\s+\d", span.entity_value):
                phi = None  # a year or a weekday alone is not PHI
            if label == "AGE" and not (span.entity_value.strip().isdigit() and int(span.entity_value) > 89):
                phi = None
            end = span.end_position
            if phi == "DATE":  # a time of day after the date is not PHI once the date is shifted
                time_of_day = TIME_OF_DAY.search(text, span.start_position, end)
                end = time_of_day.start() if time_of_day else end
            if phi == "ADDRESS":  # a state, a country or the template's "the corner of ... and" is not PHI
                entities.extend(_split_address(text, span.start_position, end, not_phi))
            else:
                entities.append((span.start_position, end, phi))
        docs.append(Labelled(text, entities))
    return docs


US_STATES = ("Alabama Alaska Arizona Arkansas California Colorado Connecticut Delaware Florida Georgia Hawaii Idaho "
             "Illinois Indiana Iowa Kansas Kentucky Louisiana Maine Maryland Massachusetts Michigan Minnesota "
             "Mississippi Missouri Montana Nebraska Nevada Ohio Oklahoma Oregon Pennsylvania Tennessee Texas Utah "
             "Vermont Virginia Washington Wisconsin Wyoming").split() + [
    "New Hampshire", "New Jersey", "New Mexico", "New York", "North Carolina", "North Dakota", "Rhode Island",
    "South Carolina", "South Dakota", "West Virginia", "District of Columbia"]


def _not_phi_in_addresses(records) -> re.Pattern:
    """Parts of an address label that Safe Harbor does not count as PHI: states (names and codes), countries (the
    records' own), and the connecting words of templates such as "the corner of {street} and {street}"."""
    names = {*US_STATES, *records["state"].dropna().astype(str), *records["country"].dropna().astype(str),
             "United States of America", "USA"}
    codes = {*records["state_abbr"].dropna().astype(str), *records["country_code"].dropna().astype(str)}
    alternatives = "|".join(re.escape(x) for x in sorted(names, key=len, reverse=True) if x.strip())
    return re.compile(rf"\b(?:{alternatives})\b|\b(?:{'|'.join(map(re.escape, sorted(codes)))})\b(?=\s+\d|\s*$|,)"
                      r"|\b(?:the corner of|and|at|near)\b")


def _split_address(text: str, start: int, end: int, not_phi: re.Pattern) -> list[tuple[int, int, str | None]]:
    """One address label as labelled pieces: what `not_phi` matches is labelled, not PHI; the rest is ADDRESS."""
    out, cursor = [], start
    for m in not_phi.finditer(text, start, end):
        out += [(cursor, m.start(), "ADDRESS"), (m.start(), m.end(), None)]
        cursor = m.end()
    return [piece for piece in [*out, (cursor, end, "ADDRESS")] if piece[1] > piece[0]]


def i2b2_corpus() -> list[Labelled]:
    """philter-lite's i2b2 2014 sample notes and their annotations."""
    root = resources.files("philter_lite").joinpath("data/i2b2_xml")
    docs = []
    for xml in sorted(p for p in root.iterdir() if p.name.endswith(".xml")):
        raw = xml.read_text(encoding="utf-8")
        text = raw[raw.index("<TEXT><![CDATA[") + 15:raw.index("]]></TEXT>")] if "<![CDATA[" in raw else \
            _unescape(raw[raw.index("<TEXT>") + 6:raw.index("</TEXT>")])
        entities = [(int(m["start"]), int(m["end"]), I2B2_TYPES.get(m["type"], None))
                    for m in re.finditer(r'<\w+ TYPE="(?P<type>\w+)"[^>]*?end="(?P<end>\d+)"[^>]*?'
                                         r'start="(?P<start>\d+)"', raw)]
        docs.append(Labelled(text, entities))
    return docs


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&apos;", "'") \
        .replace("&amp;", "&")


def mmfm_corpus(patients: int, seed: int, known: bool) -> list[Labelled]:
    """Our generated notes and reports, labelled by locating the record's identifiers (and the generator's two date
    formats, mm/dd/yyyy and "Month d, yyyy") in them."""
    from tasks.synth.generate import SynthConfig, make_record
    from tasks.synth.model import biology
    from tasks.synth.notes import clinical_note, next_of_kin, radiology_report
    from tasks.synth.sites import make_sites

    cfg = SynthConfig(patients=patients, seed=seed)
    bio, sites = biology(), make_sites(cfg.sites, None)
    docs = []
    for index in range(patients):
        record = make_record(cfg, sites, bio, index)
        ident, kin = record.identity, next_of_kin(record)
        people = [ident.given, ident.family, kin.given, *ident.attending, *ident.referring, *ident.radiologist]
        ids = {"ID": [ident.mrn, ident.accession, ident.ssn], "PHONE": [ident.phone, kin.phone],
               "ADDRESS": [ident.street, ident.postal_code, record.site.city],
               "INSTITUTION": [record.site.institution]}
        ids_known = KnownIdentifiers(patient_names=(ident.full_name, kin.name),
                                     staff_names=tuple(" ".join(p) for p in (ident.attending, ident.referring,
                                                                             ident.radiologist)),
                                     mrns=(ident.mrn,), phones=(ident.phone, kin.phone), ssns=(ident.ssn,),
                                     addresses=(ident.street, ident.postal_code), accession_numbers=(ident.accession,),
                                     organizations=(record.site.institution,))
        for text in (clinical_note(record), radiology_report(record)):
            entities = [(m.start(), m.end(), "NAME") for name in set(people)
                        for m in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text)]
            entities += [(m.start(), m.end(), phi) for phi, values in ids.items() for v in values
                         for m in re.finditer(re.escape(v), text)]
            entities += [(m.start(), m.end(), "DATE") for m in GENERATOR_DATES.finditer(text)]
            docs.append(Labelled(text, entities, ids_known if known else None))
    return docs


GENERATOR_DATES = re.compile(r"\b\d{2}/\d{2}/\d{4}\b|\b(?:January|February|March|April|May|June|July|August|"
                             r"September|October|November|December) \d{1,2}, \d{4}\b")


def report(name: str, score: Score) -> dict:
    rows = score.rows()
    print(f"\n## {name}: precision {rows['precision']:.3f} over {rows['flagged_tokens']} replaced tokens")
    print(f"{'PHI type':<12}{'tokens':>8}{'recall':>9}  target")
    for phi, row in rows["recall"].items():
        target = TARGETS.get(phi)
        verdict = "" if target is None else ("  met" if row["recall"] >= target else "  MISSED") + f" (>= {target})"
        print(f"{phi:<12}{row['tokens']:>8}{row['recall']:>9.3f}{verdict}")
    for phi, misses in rows["top_misses"].items():
        print(f"  missed {phi}: {', '.join(f'{w!r} x{c}' for w, c in misses)}")
    print(f"  false alarms: {', '.join(f'{w!r} x{c}' for w, c in rows['top_false_alarms'])}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--patients", type=int, default=60, help="patients of the mmfm synthetic corpus")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    random.seed(args.seed)
    results = {}
    for name, docs in (("presidio-evaluator synthetic sentences", presidio_corpus(args.sentences, args.seed)),
                       ("presidio-evaluator synthetic sentences, US people only",
                        presidio_corpus(args.sentences, args.seed, us_only=True)),
                       ("i2b2 2014 sample notes (philter-lite)", i2b2_corpus()),
                       ("mmfm synthetic notes, extract identifiers known", mmfm_corpus(args.patients, args.seed, True)),
                       ("mmfm synthetic notes, nothing known", mmfm_corpus(args.patients, args.seed, False))):
        score = Score()
        for doc in docs:
            score.add(doc)
        results[name] = report(f"{name} ({len(docs)} texts)", score)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()

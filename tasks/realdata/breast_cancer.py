"""scikit-survival's breast_cancer set (Desmedt et al. 2007, 198 node-negative patients: 76 Affymetrix probe sets,
age, tumour size, ER status, grade; outcome: time to distant metastasis) as a site's extracts, and back.

Why export at all: the point is to run real data through the platform's own ingest (`mmfm ingest omics`), so the
numbers at the end are the numbers of the staged table, not of a convenient DataFrame. The export is split the way
a hospital's would be:

    OUT/fhir/manifest.json, Patient.ndjson   the site's EHR extract: one bare Patient per case (id + MRN only)
    OUT/omics/expression.tsv                 probe sets x samples (first column `probe`), log2 intensities
    OUT/omics/sample_sheet.tsv               sample_id -> mrn, specimen, assay
    OUT/outcomes.csv                         mrn, time, event, clinical covariates: NOT part of any extract

Known patients: `flows.ingest.ingest_omics_flow` takes its `known_patients` from the staged `patients` table of the
same site and rejects (ref.patient) every sample whose MRN is not there; with no EHR extract staged, all 198 would
be quarantined. Passing `known_mrns=None` to `ingest_omics` would skip that check, which the flow never does, so
instead the export carries a minimal FHIR R4 bulk export (manifest + Patient NDJSON) that
`tasks.ingest.fhir.ingest_fhir`
accepts, and `ingest_export` runs both in the flow's order (EHR first). The Patient holds nothing but an id and an
MR-typed identifier: the source data has no sex, birth date or death date, and we do not invent any (age is a
covariate in outcomes.csv, not a birth date).

Outcomes and covariates stay outside the omics extract because that is how they would arrive (registry or EHR,
not the omics core). They are keyed by the made-up MRN; the staged tables are keyed by the keyed pseudonym of
(site, MRN), so `load_ingested` recomputes that pseudonym with the same key to join. Ids (BC0001, ...) are made up
in the package's row order; the data carries no PHI.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from tasks.deid import Pseudonymizer
from tasks.ingest.accounting import BatchResult
from tasks.ingest.fhir import ingest_fhir
from tasks.ingest.landing import land
from tasks.ingest.omics import META_COLUMNS, ingest_omics
from tasks.ingest.staged import read_table, write_part
from tasks.workspace import Workspace

SITE = "desmedt"
SPECIMEN, ASSAY = "primary breast tumour, frozen", "Affymetrix HG-U133A (log2, 76-gene signature probe sets)"
EXPORT_DATE = "2007-06-01T00:00:00Z"  # the publication's year: only used as the export's transactionTime
GRADES = {"well differentiated": "well", "intermediate": "intermediate", "poorly differentiated": "poor",
          "unkown": "unknown"}  # sic: the package's spelling of the fourth level
CLINICAL = ("age", "size", "er_positive", "grade_intermediate", "grade_poor", "grade_unknown")  # model covariates
OUTCOME_COLUMNS = ("mrn", "time", "event", "age", "size", "er_positive", *(f"grade_{g}" for g in GRADES.values()))


def mrn(i: int) -> str:
    return f"BC{i + 1:04d}"


def sample_id(i: int) -> str:
    """The 'lab's' own sample id, distinct from the MRN as a real core's would be."""
    return f"{mrn(i)}-T1"


def _write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _write_fhir(out: Path, ids: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    mr = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
    with open(out / "Patient.ndjson", "w") as fh:
        for pid in ids:
            res = {"resourceType": "Patient", "id": pid,
                   "identifier": [{"type": mr, "system": f"urn:mmfm:{SITE}:mrn", "value": pid}]}
            fh.write(json.dumps(res, separators=(",", ":")) + "\n")
    manifest = {"transactionTime": EXPORT_DATE, "request": f"urn:mmfm:{SITE}/$export?_type=Patient",
                "requiresAccessToken": False, "output": [{"type": "Patient", "url": "Patient.ndjson",
                                                          "count": len(ids)}], "error": []}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def export_breast_cancer(out_dir: Path) -> dict[str, Path]:
    """Write the extracts and outcomes.csv under `out_dir`; -> {"fhir", "omics", "outcomes"} paths."""
    from sksurv.datasets import load_breast_cancer  # lazy: sksurv (~1.4 s), only when exporting (bench imports Cohort)

    x, y = load_breast_cancer()
    out = Path(out_dir)
    (out / "omics").mkdir(parents=True, exist_ok=True)
    probes = [c for c in x.columns if c.startswith("X")]
    ids = [mrn(i) for i in range(len(x))]
    _write_fhir(out / "fhir", ids)
    # R's make.names prefixed the probe set ids with X; the array's own ids are without it
    genes = x[probes].to_numpy(dtype=np.float64).T  # (G, N)
    _write_tsv(out / "omics" / "expression.tsv", ["probe", *(sample_id(i) for i in range(len(x)))],
               [[p[1:], *(f"{v:.6f}" for v in row)] for p, row in zip(probes, genes, strict=True)])
    _write_tsv(out / "omics" / "sample_sheet.tsv", ["sample_id", "mrn", "collection_date", "specimen", "assay"],
               [[sample_id(i), ids[i], "", SPECIMEN, ASSAY] for i in range(len(x))])
    grade = x["grade"].astype(str).map(GRADES)
    rows = [[ids[i], f"{y['t.tdm'][i]:g}", str(int(y["e.tdm"][i])), f"{x['age'].iloc[i]:g}", f"{x['size'].iloc[i]:g}",
             str(int(x["er"].iloc[i] == "positive")), *(str(int(grade.iloc[i] == g)) for g in GRADES.values())]
            for i in range(len(x))]
    with open(out / "outcomes.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(OUTCOME_COLUMNS)
        w.writerows(rows)
    return {"fhir": out / "fhir", "omics": out / "omics", "outcomes": out / "outcomes.csv"}


def _stage(result: BatchResult, staged: Path, extract_id: str) -> None:
    for table, rows in result.rows.items():
        write_part(staged, table, extract_id, rows)


def ingest_export(paths: dict[str, Path], ws: Workspace, keys: Pseudonymizer, site: str = SITE
                  ) -> dict[str, BatchResult]:
    """Land and ingest the export as `flows.ingest` does (EHR first, omics against the staged patients of the
    site), staging what is accepted; -> the two BatchResults, whose rejections are the quarantine."""
    extract = land(paths["fhir"], ws.landing, "fhir", site)
    fhir = ingest_fhir(extract, ws.landing, keys, site)
    _stage(fhir, ws.staged, extract.extract_id)
    patients = read_table(ws.staged, "patients")
    known = set(patients.filter(pl.col("site") == site)["patient_id"].to_list())
    extract = land(paths["omics"], ws.landing, "omics", site)
    omics = ingest_omics(extract, ws.landing, keys, site, known)
    _stage(omics, ws.staged, extract.extract_id)
    return {"fhir": fhir, "omics": omics}


@dataclass
class Cohort:
    """Model-ready rows: one per patient that has both an ingested sample and an outcome, in outcomes order."""

    mrn: list[str]
    patient_id: list[str]  # keyed pseudonyms, as in the staged tables
    features: list[str]  # probe sets (staged column order), then CLINICAL
    x: np.ndarray  # (N, F) float64; NaN where a probe was not measured
    time: np.ndarray  # (N,) days to distant metastasis or censoring
    event: np.ndarray  # (N,) bool


def load_ingested(omics: pl.DataFrame, outcomes: pl.DataFrame, keys: Pseudonymizer, site: str = SITE) -> Cohort:
    """Join the staged (or curated) omics table with outcomes.csv through the keyed patient pseudonym.

    A patient with several accepted samples would be ambiguous here, so that is refused rather than averaged.
    """
    if omics["patient_id"].n_unique() != omics.height:
        raise ValueError("more than one ingested sample for a patient: choose one before joining outcomes")
    genes = [c for c in omics.columns if c not in META_COLUMNS]
    out = outcomes.with_columns(pl.col("mrn").cast(pl.Utf8))
    out = out.with_columns(pl.col("mrn").map_elements(lambda m: keys.patient(site, m), return_dtype=pl.Utf8)
                           .alias("patient_id"))
    joined = out.join(omics.select("patient_id", *genes), on="patient_id", how="inner", maintain_order="left")
    x = np.concatenate([joined.select(genes).to_numpy().astype(np.float64),
                        joined.select(CLINICAL).to_numpy().astype(np.float64)], axis=1)
    return Cohort(mrn=joined["mrn"].to_list(), patient_id=joined["patient_id"].to_list(),
                  features=[*genes, *CLINICAL], x=x, time=joined["time"].to_numpy().astype(np.float64),
                  event=joined["event"].to_numpy().astype(bool))


def read_outcomes(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, schema_overrides={"mrn": pl.Utf8})


def build_cohort(out_dir: Path, ws: Workspace, keys: Pseudonymizer) -> tuple[Cohort, dict[str, BatchResult]]:
    """Export -> land + ingest into `ws` -> the joined cohort read back from the staged omics table."""
    paths = export_breast_cancer(out_dir)
    results = ingest_export(paths, ws, keys)
    return load_ingested(read_table(ws.staged, "omics"), read_outcomes(paths["outcomes"]), keys), results

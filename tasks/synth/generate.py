"""Write a synthetic multi-site cohort: per site a PACS export, a FHIR bulk export and an omics matrix, plus the
ground truth beside them (never inside them).

    OUT/site-a/dicom/PA000000/ST01/SE01/IM0001.dcm    DICOMDIR-style export, no PHI in paths
    OUT/site-a/fhir/manifest.json, Patient.ndjson ... FHIR R4 bulk-data export ($export manifest + NDJSON)
    OUT/site-a/omics/expression.tsv, sample_sheet.tsv samples x genes (log2) and sample id -> MRN
    OUT/truth/patients.tsv                            class, survival, latent findings, Bayes posteriors
    OUT/truth/corruptions.jsonl                       every defect --corrupt-rate put in, one per line
    OUT/truth/synth.json                              parameters and counts (what `mmfm synth --json` prints)

Patients are written one at a time and truth rows in chunks, so memory stays flat as the cohort grows.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tasks.synth import corrupt
from tasks.synth.dicom import write_imaging
from tasks.synth.fhir import patient_resources
from tasks.synth.model import CLASSES, MODALITIES, Biology, biology, posterior, sample_evidence, truth_columns
from tasks.synth.omics import SHEET_COLUMNS, expression_cells, sample_id, sheet_row
from tasks.synth.record import EXTRACT_DATE, PatientRecord, make_identity
from tasks.synth.sites import Site, make_sites

FHIR_TYPES = ("Patient", "Encounter", "Observation", "Condition", "DiagnosticReport", "DocumentReference")
TRUTH_CHUNK = 1000


@dataclass(frozen=True)
class SynthConfig:
    patients: int = 200
    sites: int = 3
    seed: int = 0
    missing_rate: float = 0.2
    corrupt_rate: float = 0.0
    shift: str | None = None  # a site key whose scanner and population drift
    cxr_size: int = 128
    ct_shape: tuple[int, int, int] = (16, 64, 64)

    def check(self) -> None:
        if self.patients < 1 or self.sites < 1:
            raise ValueError("--patients and --sites must be at least 1")
        for name in ("missing_rate", "corrupt_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1)")


def make_record(cfg: SynthConfig, sites: list[Site], bio: Biology, index: int) -> PatientRecord:
    site_index = index % len(sites)
    site = sites[site_index]
    ev = sample_evidence(np.random.default_rng([cfg.seed, index]), bio, cfg.missing_rate, age_shift=site.age_shift)
    identity = make_identity(np.random.default_rng([cfg.seed, index, 99]), site_index, index, ev)
    return PatientRecord(seed=cfg.seed, index=index, site=site, identity=identity, evidence=ev)


class _SiteWriter:
    """Open files of one site's extracts; counts what it writes for the manifest and the summary."""

    def __init__(self, root: Path, site: Site, bio: Biology, stack: ExitStack):
        self.root, self.site = root, site
        self.fhir_dir, self.dicom_dir, self.omics_dir = root / "fhir", root / "dicom", root / "omics"
        for d in (self.fhir_dir, self.dicom_dir, self.omics_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.ndjson = {t: stack.enter_context(open(self.fhir_dir / f"{t}.ndjson", "w", newline="\n"))
                       for t in FHIR_TYPES}
        self.lines = Counter()
        self.expression = stack.enter_context(open(self.omics_dir / "expression.tsv", "w", newline="\n"))
        self.sheet = stack.enter_context(open(self.omics_dir / "sample_sheet.tsv", "w", newline="\n"))
        self.expression.write("\t".join(("sample_id", *bio.genes)) + "\n")
        self.sheet.write("\t".join(SHEET_COLUMNS) + "\n")

    def write_line(self, rtype: str, line: str) -> int:
        self.ndjson[rtype].write(line + "\n")
        self.lines[rtype] += 1
        return self.lines[rtype]

    def write_manifest(self) -> None:
        manifest = {
            "transactionTime": EXTRACT_DATE.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "request": f"https://{self.site.key}.example.org/fhir/$export?_type={','.join(FHIR_TYPES)}",
            "requiresAccessToken": False,
            "output": [{"type": t, "url": f"{t}.ndjson", "count": self.lines[t]} for t in FHIR_TYPES],
            "error": [],
        }
        (self.fhir_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _emit_fhir(rec: PatientRecord, w: _SiteWriter, rng: np.random.Generator, rate: float, log: Callable) -> int:
    n = 0
    for rtype, resources in patient_resources(rec).items():
        for res in resources:
            kind = None
            if rtype == "Observation" and rng.random() < rate:
                kind = str(rng.choice([corrupt.WRONG_UNIT, corrupt.IMPOSSIBLE_VALUE, corrupt.MISSING_PATIENT]))
                corrupt.break_observation(res, rng, kind)
            line = json.dumps(res, separators=(",", ":"), ensure_ascii=False)
            if kind is None and rng.random() < rate / 2:
                kind, line = corrupt.INVALID_JSON, corrupt.break_json(line, rng)
            number = w.write_line(rtype, line)
            n += 1
            if kind is not None:
                log(kind, "fhir", w.fhir_dir / f"{rtype}.ndjson", line=number, resource_id=res["id"])
            elif rng.random() < rate / 2:  # the export repeats a resource, as paged bulk exports do
                log(corrupt.DUPLICATE_RESOURCE, "fhir", w.fhir_dir / f"{rtype}.ndjson",
                    line=w.write_line(rtype, line), resource_id=res["id"])
                n += 1
    return n


def _emit_omics(rec: PatientRecord, w: _SiteWriter, rng: np.random.Generator, rate: float, log: Callable) -> None:
    cells, sheet = expression_cells(rec), sheet_row(rec)
    sid = sample_id(rec)
    if rng.random() < rate:
        cells[int(rng.integers(len(cells)))] = "#VALUE!"  # a spreadsheet error pasted into the matrix
        log(corrupt.INVALID_OMICS_VALUE, "omics", w.omics_dir / "expression.tsv", sample_id=sid)
    if rng.random() < rate:
        sheet[1] = f"MRN99{int(rng.integers(0, 10**7)):07d}"  # the sheet points at a patient not in the extract
        log(corrupt.MISSING_PATIENT, "omics", w.omics_dir / "sample_sheet.tsv", sample_id=sid)
    w.expression.write("\t".join((sid, *cells)) + "\n")
    w.sheet.write("\t".join(sheet) + "\n")


def _truth_block(rows: list[dict]) -> list[dict]:
    """Add the exact posteriors (all modalities, each alone, demographics only) to a chunk of truth rows."""
    table = {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0] if k not in ("site", "mrn", "fhir_id")}
    variants = {"full": MODALITIES, "demographics": (), **{m: (m,) for m in MODALITIES}}
    for name, use in variants.items():
        post = posterior(table, use=use)
        for r, p in zip(rows, post, strict=True):
            r.update({f"post_{name}_{c}": float(v) for c, v in zip(CLASSES, p, strict=True)})
    return rows


def _format(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def generate(out: Path, cfg: SynthConfig, progress: Callable[[int], None] | None = None) -> dict:
    """Write the cohort under `out` and return the summary (also saved as truth/synth.json)."""
    cfg.check()
    t0 = time.perf_counter()
    out = Path(out)
    bio, sites = biology(), make_sites(cfg.sites, cfg.shift)
    truth_dir = out / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    corruptions: Counter = Counter()
    counts: Counter = Counter()

    with ExitStack() as stack:
        writers = [_SiteWriter(out / s.key, s, bio, stack) for s in sites]
        corrupt_log = stack.enter_context(open(truth_dir / "corruptions.jsonl", "w", newline="\n"))
        truth = stack.enter_context(open(truth_dir / "patients.tsv", "w", newline="\n"))
        header: list[str] | None = None
        block: list[dict] = []

        def log(kind: str, modality: str, path: Path, **where) -> None:
            corruptions[kind] += 1
            entry = {"kind": kind, "site": path.relative_to(out).parts[0], "modality": modality,
                     "file": path.relative_to(out).as_posix(), **where}
            corrupt_log.write(json.dumps(entry) + "\n")

        def flush() -> None:
            nonlocal header
            rows = _truth_block(block)
            if header is None:
                header = list(rows[0])
                truth.write("\t".join(header) + "\n")
            truth.writelines("\t".join(_format(r[k]) for k in header) + "\n" for r in rows)
            block.clear()

        for index in range(cfg.patients):
            rec = make_record(cfg, sites, bio, index)
            w, ev, rng = writers[index % len(sites)], rec.evidence, rec.rng("corrupt")
            for path in write_imaging(rec, w.dicom_dir, cxr_size=cfg.cxr_size, ct_shape=cfg.ct_shape):
                counts["dicom_files"] += 1
                if rng.random() < cfg.corrupt_rate:
                    corrupt.truncate_file(path, rng)
                    log(corrupt.TRUNCATED_DICOM, "imaging", path)
            counts["fhir_lines"] += _emit_fhir(rec, w, rng, cfg.corrupt_rate, log)
            if ev.present["omics"]:
                _emit_omics(rec, w, rng, cfg.corrupt_rate, log)
            counts.update(m for m in MODALITIES if ev.present[m])
            counts["ct_studies"] += int(ev.has_ct)
            block.append({"site": rec.site.key, "mrn": rec.identity.mrn, "fhir_id": rec.identity.fhir_id,
                          "index": index, **truth_columns(ev, bio)})
            if len(block) == TRUTH_CHUNK:
                flush()
            if progress is not None:
                progress(index + 1)
        if block:
            flush()
        for w in writers:
            w.write_manifest()

    fhir_counts = Counter()
    for w in writers:
        fhir_counts.update(w.lines)
    summary = {
        "seed": cfg.seed, "patients": cfg.patients, "sites": [s.key for s in sites],
        "shifted_site": cfg.shift, "config": asdict(cfg),
        "modalities": {m: counts[m] for m in MODALITIES},
        "dicom_files": counts["dicom_files"], "ct_studies": counts["ct_studies"],
        "fhir_resources": dict(fhir_counts), "omics_samples": counts["omics"],
        "corrupted": {k: corruptions[k] for k in corrupt.KINDS},
    }
    (truth_dir / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
    # paths and timing stay out of synth.json: the same seed gives the same bytes wherever it is written
    return {**summary, "out": str(out), "truth": str(truth_dir / "patients.tsv"),
            "seconds": round(time.perf_counter() - t0, 2)}

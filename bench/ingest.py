"""Ingest throughput against plain baselines over the same files, in the same process.

    python bench/ingest.py [--patients 150] [--seed 1]

DICOM: our full path (header scan + de-identification + decode + rescale + MONAI resampling + shard write, as the
flow's tasks run it) on 1 and 2 worker threads, against bare `pydicom.dcmread(f).pixel_array` over the same files.
FHIR: our parse + checks + de-identification + flattening against a bare `json.loads` of every NDJSON line.
Prints files/s, resources/s and the ratios (ours / baseline: how much of the baseline's speed we keep).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom

from tasks.deid import Pseudonymizer
from tasks.ingest.accounting import BatchResult
from tasks.ingest.dicom import ImagingConfig, batch_series, ingest_series_batch, scan_headers
from tasks.ingest.fhir import ingest_fhir
from tasks.ingest.landing import land
from tasks.synth.generate import SynthConfig, generate

KEYS = Pseudonymizer(b"bench-key-" + b"0" * 32)


def bare_dicom(files: list[Path]) -> float:
    t0 = time.perf_counter()
    for f in files:
        try:
            pydicom.dcmread(f).pixel_array  # noqa: B018 - decoding is the work being timed
        except Exception:  # noqa: BLE001,S112 - truncated files fail here too
            continue
    return time.perf_counter() - t0


def our_dicom(extract, landing: Path, staged: Path, workers: int) -> tuple[float, BatchResult]:
    t0 = time.perf_counter()
    groups, result = scan_headers(extract, landing, extract.site)
    batches = batch_series(groups, max_items=32)
    with ThreadPoolExecutor(workers) as pool:
        for part in pool.map(lambda b: ingest_series_batch(b, landing, staged, KEYS, extract.site, ImagingConfig()),
                             batches):
            result.merge(part)
    return time.perf_counter() - t0, result


def bare_fhir(folder: Path) -> tuple[float, int]:
    t0, n = time.perf_counter(), 0
    for f in sorted(folder.glob("*.ndjson")):
        for line in f.read_text().splitlines():
            try:
                json.loads(line)
            except json.JSONDecodeError:
                pass
            n += 1
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--patients", type=int, default=150)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    import monai.transforms  # noqa: F401 - import cost (~8 s) kept out of the timings

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "cohort", SynthConfig(patients=args.patients, sites=1, seed=args.seed, corrupt_rate=0.02))
        dicom_dir, fhir_dir = tmp / "cohort" / "site-a" / "dicom", tmp / "cohort" / "site-a" / "fhir"
        files = sorted(dicom_dir.rglob("*.dcm"))
        extract = land(dicom_dir, tmp / "landing", "dicom", "site-a")
        our_dicom(extract, tmp / "landing", tmp / "warm", 1)  # warm caches and lazy imports
        base = bare_dicom(files)
        print(f"DICOM: {len(files)} files; bare dcmread + pixel_array: {len(files) / base:8.1f} files/s")
        for workers in (1, 2):
            dt, res = our_dicom(extract, tmp / "landing", tmp / f"staged{workers}", workers)
            print(f"  ours, {workers} worker(s): {len(files) / dt:8.1f} files/s  ratio ours/bare = {base / dt:.3f}  "
                  f"(ingested {res.ingested}, quarantined {res.quarantined})")
        fx = land(fhir_dir, tmp / "landing", "fhir", "site-a")
        base_t, n = bare_fhir(fhir_dir)
        t0 = time.perf_counter()
        res = ingest_fhir(fx, tmp / "landing", KEYS, "site-a")
        dt = time.perf_counter() - t0
        print(f"FHIR: {n} resources; bare json.loads: {n / base_t:10.0f} resources/s")
        print(f"  ours (parse + R4 structure + checks + de-identify + flatten): {n / dt:8.0f} resources/s  "
              f"ratio ours/bare = {base_t / dt:.4f}  (ingested {res.ingested}, quarantined {res.quarantined})")


if __name__ == "__main__":
    main()

"""Scale-out of the DICOM ingest flow: one extract on 1 and on 2 workers of each Prefect task runner.

    python bench/scale.py [--patients 300] [--seed 1] [--max-items 32] [--runners threads,dask,ray] [--json]

One generated single-site cohort; each run ingests it into a fresh workspace with `ingest_dicom`, exactly as
`mmfm ingest dicom --runner R` does (`tasks.runners.task_runner(R, workers)`): the thread runner with 1 and 2 threads,
a local Dask cluster with 1 and 2 worker processes (one thread each), a local Ray cluster with 1 and 2 CPUs. A timing
is the whole flow call: cluster start, each fresh worker process importing MONAI (~8 s), the work, the shutdown —
what a user waits for. The flow scans every DICOM header in its own process before it maps the batches; that serial
part is timed once on its own. Prints seconds per run and the speedup (1 worker / 2 workers) per runner, refuses to
report if any two runs wrote different staged bytes or accounting, and with --json ends with one JSON line. The
figures are only as good as the cores under them: the report carries `nproc` and the load average before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

ACCOUNTING = ("received", "ingested", "quarantined", "quarantine_reasons", "tables")


def staged_digest(staged: Path) -> dict[str, str]:
    """sha256 of every staged file (tables and image shards), by relative path."""
    return {p.relative_to(staged).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(staged.rglob("*")) if p.is_file()}


def run_once(runner: str, workers: int, dicom: Path, root: Path, max_items: int) -> tuple[float, dict, dict]:
    """Seconds for one flow call, its accounting and the digest of what it staged."""
    from flows.ingest import ingest_dicom
    from tasks.runners import task_runner
    from tasks.workspace import init_workspace

    ws = init_workspace(root / f"{runner}-{workers}")
    flow = ingest_dicom.with_options(task_runner=task_runner(runner, workers))
    t0 = time.perf_counter()
    summary = flow(source=dicom, workspace=ws.root, site="site-a", max_items=max_items)
    seconds = time.perf_counter() - t0
    return seconds, {k: summary[k] for k in ACCOUNTING}, staged_digest(ws.staged)


def header_scan_seconds(dicom: Path, scratch: Path) -> float:
    """The flow's serial part: it scans every DICOM header in its own process before mapping the batches."""
    from tasks.ingest.dicom import scan_headers
    from tasks.ingest.landing import land

    extract = land(dicom, scratch, "dicom", "site-a")
    t0 = time.perf_counter()
    scan_headers(extract, scratch, extract.site)
    return time.perf_counter() - t0


def run_bench(root: Path, patients: int, seed: int, max_items: int, runners: tuple[str, ...]) -> dict:
    """Generate the cohort under `root`, run every runner on 1 and 2 workers, check the outputs agree."""
    import monai.transforms  # noqa: F401 - this process's imports (~8 s) kept out of the timings; workers pay theirs

    import flows.ingest  # noqa: F401
    import tasks.ingest.dicom  # noqa: F401
    from tasks.synth.generate import SynthConfig, generate

    generate(root / "cohort", SynthConfig(patients=patients, sites=1, seed=seed, corrupt_rate=0.02))
    dicom = root / "cohort" / "site-a" / "dicom"
    load_before = os.getloadavg()
    serial_s = header_scan_seconds(dicom, root / "scan")
    runs, first = [], None
    for runner in runners:
        for workers in (1, 2):
            seconds, accounting, digest = run_once(runner, workers, dicom, root, max_items)
            if first is None:
                first = (f"{runner}-{workers}", accounting, digest)
            elif (accounting, digest) != first[1:]:
                raise RuntimeError(f"{runner} on {workers} worker(s) staged different bytes or accounting than "
                                   f"{first[0]}: outputs must not depend on the scheduler")
            runs.append({"runner": runner, "workers": workers, "seconds": round(seconds, 2)})
    by = {(r["runner"], r["workers"]): r["seconds"] for r in runs}
    return {"bench": "scale", "patients": patients, "files": len(list(dicom.rglob("*.dcm"))),
            "received": first[1]["received"], "ingested": first[1]["ingested"], "max_items": max_items,
            "nproc": os.cpu_count(), "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()], "runs": runs,
            "serial_header_scan_s": round(serial_s, 2),
            "speedup": {r: round(by[(r, 1)] / by[(r, 2)], 3) for r in runners}, "identical_outputs": True}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-items", type=int, default=32, help="DICOM items per mapped task (the flow's batch size)")
    ap.add_argument("--runners", default="threads,dask,ray", help="comma-separated: threads, dask, ray")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args()
    runners = tuple(r.strip() for r in args.runners.split(",") if r.strip())

    from tasks.settings import quiet_telemetry

    quiet_telemetry()
    os.environ["MMFM_PSEUDONYM_KEY"] = "bench-key-" + "0" * 32  # workers inherit it; never a task parameter
    with tempfile.TemporaryDirectory(prefix="mmfm-scale-") as tmp:
        os.environ.setdefault("PREFECT_HOME", str(Path(tmp) / "prefect"))  # set before Prefect is imported
        from prefect.testing.utilities import prefect_test_harness

        # a temporary Prefect API on loopback, started before the timings and stopped before `tmp` goes
        with prefect_test_harness(server_startup_timeout=60):
            report = run_bench(Path(tmp), args.patients, args.seed, args.max_items, runners)
    print(f"DICOM ingest of {report['files']} files ({report['patients']} patients, {report['max_items']} items per "
          f"task); nproc={report['nproc']}, load average before {report['load_before']}, "
          f"after {report['load_after']}")
    for r in report["runs"]:
        print(f"  {r['runner']:8s} {r['workers']} worker(s): {r['seconds']:8.2f} s")
    for runner, ratio in report["speedup"].items():
        print(f"  speedup {runner}: 1 worker / 2 workers = {ratio:.2f}")
    print(f"  of which serial in every run: the header scan in the flow's process, "
          f"{report['serial_header_scan_s']:.2f} s")
    print(f"  outputs identical across all runs: {report['identical_outputs']} "
          f"(received {report['received']}, ingested {report['ingested']})")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()

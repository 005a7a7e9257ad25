"""Synthetic cohort speed and memory: patients/s and peak RSS at two sizes (memory must stay flat as N grows).

    python bench/synth.py [--sizes 200 1000] [--sites 3]

Each size runs in its own process so peak memory is that run's alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = """
import json, resource, sys, time
from pathlib import Path
from tasks.synth.generate import SynthConfig, generate
n, sites, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
s = generate(out, SynthConfig(patients=n, sites=sites, seed=1, corrupt_rate=0.02))
dt = time.perf_counter() - t0
size = sum(p.stat().st_size for p in out.rglob('*') if p.is_file())
print(json.dumps({"patients": n, "seconds": round(dt, 2), "patients_per_s": round(n / dt, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "rss_before_mb": round(base / 1024, 1), "dicom_files": s["dicom_files"],
                  "written_mb": round(size / 2**20, 1)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs=2, default=[200, 1000])
    ap.add_argument("--sites", type=int, default=3)
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(args.sites), f"{tmp}/cohort"],
                                 capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    for r in rows:
        print(f"{r['patients']:>7} patients: {r['seconds']:7.2f} s  {r['patients_per_s']:7.1f} patients/s  "
              f"peak RSS {r['peak_rss_mb']:7.1f} MB (imports alone {r['rss_before_mb']:.1f} MB)  "
              f"{r['dicom_files']} DICOM files, {r['written_mb']} MB written")
    small, large = rows
    print(f"size x{large['patients'] / small['patients']:.1f} -> "
          f"peak memory x{large['peak_rss_mb'] / small['peak_rss_mb']:.2f}, "
          f"throughput x{large['patients_per_s'] / small['patients_per_s']:.2f}")


if __name__ == "__main__":
    main()

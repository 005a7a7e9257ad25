"""False alarms and detections of `mmfm monitor` over many seeds (issue 7: false-alarm rate <= 5% over >= 20 seeds).

    python bench/monitor_alarms.py --workspace WS [--model mmfm-multimodal@champion | NAME/VERSION] [--seeds 20]
        [--first-seed 1000] [--extract-patients N] [--shifted-site site-b] [--keep] [--json]

WS is a trained workspace with a registered model (e.g. after `mmfm demo`). Its cohort's generator settings are read
from extracts/*/truth/synth.json (exactly one, unshifted). For each of `--seeds` seeds the bench generates two
extracts of `--extract-patients` patients (default: the demo's max(90, cohort // 2)) with those settings and a new
seed: one from the training distribution (no shift), one with `--shifted-site` shifted (new scanner, older
population: `mmfm synth --shift`), and runs flows/monitor.py:monitor_flow on each, exactly as `mmfm monitor` does,
with the workspace's params.yaml monitor section untouched (alpha, thresholds, the decision rule). Counted:
  false alarm        a same-distribution extract whose status is "drift" (exit 3), whatever family raised it:
                     tabular, predictions, embedding or performance (performance flags no site, so counting flagged
                     sites alone missed it: issue 19); target <= 5%, judged on the rate and on its interval's upper
                     bound. Also reported: per family, and "any site flagged" (the old count)
  insufficient       a same-distribution extract reported "insufficient" (exit 4): not an alarm, but not tested
  detection          the shifted site flagged on a shifted extract
  localisation       the shifted site flagged and no other site
each with a Clopper-Pearson 95% interval, the seconds per monitor run, and which features / modalities false-alarmed.

Isolation (each run is a new extract folder in a fresh temporary directory, so a new monitoring area; the area and
the extract are deleted after the run unless --keep; data/monitoring/<area>/ reports stay):
  retraining  the trigger (.mmfm/monitor/retrain-trigger.json) is armed before every run through its own API
              (RetrainTrigger.fire with no callback): every breach in the bench then falls inside the cooldown and is
              recorded "suppressed", so no retrain is requested or started. The file is restored byte for byte (or
              removed) at the end. A workspace with monitor.cooldown_hours <= 0 is refused: its trigger cannot be held.
  registry    the model version's mmfm.last_monitoring tag is restored at the end. The bench's MLflow runs (experiment
              mmfm-monitoring, run names monitor-bench-...) and ledger events stay: they are true records of runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tasks.monitoring.findings import culprits
from tasks.synth.generate import SynthConfig, generate
from tasks.workspace import Workspace

FAMILIES = ("tabular", "predictions", "embedding", "performance")
FALSE_ALARM_TARGET = 0.05
LAST_MONITORING = "mmfm.last_monitoring"


def cohort_config(ws: Workspace) -> SynthConfig:
    """The generator settings of the workspace's training cohort (its truth/synth.json)."""
    found = sorted(ws.extracts.glob("*/truth/synth.json"))
    configs = [json.loads(p.read_text())["config"] for p in found]
    unshifted = [(p, c) for p, c in zip(found, configs, strict=True) if not c.get("shift")]
    if len(unshifted) != 1:
        raise SystemExit(f"{ws.extracts}: expected one generated cohort (*/truth/synth.json without a shift), "
                         f"found {len(unshifted)}")
    config = unshifted[0][1]
    return SynthConfig(**{**config, "ct_shape": tuple(config["ct_shape"])})


def family_sites(report: dict) -> dict[str, set[str]]:
    """Sites each family flagged (performance has no sites: "*" when it breached)."""
    return {"tabular": set(report["tabular"].get("drifted_sites") or []),
            "predictions": set(report["predictions"].get("drifted_sites") or []),
            "embedding": {s for _, s in report["embedding"].get("drifted_sites") or []},
            "performance": {"*"} if report["performance"].get("drifted") else set()}


def summarise(report: dict, kind: str, seed: int, shifted_site: str, seconds: float) -> dict:
    flagged = set(report["flagged_sites"])
    fam = family_sites(report)
    return {"kind": kind, "seed": seed, "seconds": round(seconds, 1), "patients": report["current"]["patients"],
            "status": report["status"], "flagged_sites": sorted(flagged),
            "families": {f: {"drifted": bool(report[f].get("drifted")), "sites": sorted(s)} for f, s in fam.items()},
            "detected": shifted_site in flagged, "localised": flagged == {shifted_site},
            "culprits": culprits(report), "retrain": (report.get("retrain") or {}).get("status"),
            "untested": [f"{u['site']}:{u['family']}" for u in report.get("untested") or []],
            "performance": {k: report["performance"].get(k) for k in ("status", "drop", "drop_lower", "tolerance")},
            "report": report["report"]}


def rate(k: int, n: int) -> dict:
    """k of n with its Clopper-Pearson (exact) 95% interval."""
    from scipy.stats import binomtest

    if n == 0:
        return {"k": 0, "n": 0, "rate": None, "ci95": None}
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return {"k": k, "n": n, "rate": round(k / n, 4), "ci95": [round(ci.low, 4), round(ci.high, 4)]}


def is_false_alarm(row: dict) -> bool:
    """A same-distribution run that ended in "drift", by any family (sites flagged or not)."""
    return row["status"] == "drift"


def figures(rows: list[dict], shifted_site: str) -> dict:
    same = [r for r in rows if r["kind"] == "same"]
    shifted = [r for r in rows if r["kind"] == "shifted"]
    alarms = rate(sum(is_false_alarm(r) for r in same), len(same))
    out = {"false_alarm": alarms, "false_alarm_target": FALSE_ALARM_TARGET,
           "false_alarm_rate_within_target": None if alarms["rate"] is None else alarms["rate"] <= FALSE_ALARM_TARGET,
           "false_alarm_ci_within_target": None if alarms["ci95"] is None else alarms["ci95"][1] <= FALSE_ALARM_TARGET,
           "insufficient": rate(sum(r["status"] == "insufficient" for r in same), len(same)),
           "false_alarm_sites": rate(sum(bool(r["flagged_sites"]) for r in same), len(same)),
           "false_alarm_any_breach": alarms,
           "false_alarm_by_family": {f: rate(sum(r["families"][f]["drifted"] for r in same), len(same))
                                     for f in FAMILIES},
           "detection": rate(sum(r["detected"] for r in shifted), len(shifted)),
           "localisation": rate(sum(r["localised"] for r in shifted), len(shifted)),
           "detection_by_family": {f: rate(sum(shifted_site in r["families"][f]["sites"] for r in shifted),
                                           len(shifted)) for f in FAMILIES},
           "false_alarm_culprits": dict(Counter(c for r in same if is_false_alarm(r)
                                                for c in r["culprits"]).most_common()),
           "untested_same": dict(Counter(u for r in same for u in r.get("untested", [])).most_common()),
           "shifted_other_sites_flagged": dict(Counter(s for r in shifted for s in r["flagged_sites"]
                                                       if s != shifted_site).most_common())}
    seconds = [r["seconds"] for r in rows]
    out["seconds_per_run"] = {"mean": round(sum(seconds) / len(seconds), 1), "min": min(seconds),
                              "max": max(seconds)} if seconds else None
    return out


@contextmanager
def held_trigger(ws: Workspace, cooldown_hours: float) -> Iterator:
    """Keep the retraining trigger inside its cooldown for the bench; restore its state file afterwards."""
    from tasks.monitoring.trigger import RetrainTrigger

    if cooldown_hours <= 0:
        raise SystemExit(f"{ws.params_file}: monitor.cooldown_hours is {cooldown_hours}: the bench cannot hold the "
                         "retraining trigger (every breach would request a retrain)")
    trigger = RetrainTrigger(ws.state / "monitor" / "retrain-trigger.json", timedelta(hours=cooldown_hours))
    before = trigger.state_path.read_bytes() if trigger.state_path.exists() else None
    had_lock = trigger.lock_path.exists()

    def arm() -> None:
        """Before each run: a firing without a callback now, unless one is recent enough to cover the next hour."""
        last = trigger.last_fired()
        if last is None or datetime.now(UTC) + timedelta(hours=1) >= last + trigger.cooldown:
            trigger.fire({"by": "bench/monitor_alarms.py", "note": "holds the trigger; nothing is retrained"})

    try:
        yield arm
    finally:
        if before is None:
            trigger.state_path.unlink(missing_ok=True)
        else:
            trigger.state_path.write_bytes(before)
        if not had_lock:
            trigger.lock_path.unlink(missing_ok=True)


@contextmanager
def kept_tag(model: str) -> Iterator[tuple[str, str]]:
    """The model version's last-monitoring tag as it was before the bench."""
    import mlflow

    from tasks.registry.client import parse_ref as _parse

    client = mlflow.MlflowClient()
    name, version = _parse(model, client)
    before = client.get_model_version(name, version).tags.get(LAST_MONITORING)
    try:
        yield name, version
    finally:
        if before is None:
            client.delete_model_version_tag(name, version, LAST_MONITORING)
        else:
            client.set_model_version_tag(name, version, LAST_MONITORING, before)


def use_key(ws: Workspace) -> None:
    """Ingest pseudonymises with the workspace's key: MMFM_PSEUDONYM_KEY, else the demo's .mmfm/pseudonym.key."""
    from tasks.deid.pseudonym import KEY_ENV

    if os.environ.get(KEY_ENV):
        return
    key = ws.state / "pseudonym.key"
    if not key.exists():
        raise SystemExit(f"{key}: no pseudonym key; set {KEY_ENV} to the workspace's key")
    os.environ[KEY_ENV] = key.read_text().strip()


def run_bench(workspace: Path, model: str, seeds: int, first_seed: int, patients: int | None, shifted_site: str,
              keep: bool = False, say=print, allow_ungated: bool = False, kinds: tuple[str, ...] = ("same", "shifted")
              ) -> dict:
    ws = Workspace(Path(workspace).resolve())
    if not ws.is_initialised():
        raise SystemExit(f"{ws.root}: not an mmfm workspace")
    os.environ.setdefault("PREFECT_HOME", str(ws.state / "prefect"))
    use_key(ws)
    from flows.monitor import monitor_flow
    from tasks import tracking

    base = cohort_config(ws)
    size = patients or max(90, base.patients // 2)
    pairs = [(first_seed + 2 * s, first_seed + 2 * s + 1) for s in range(seeds)]
    if any(base.seed in pair for pair in pairs):
        raise SystemExit(f"--first-seed {first_seed}: the seeds would include the training cohort's seed {base.seed}")
    tracking.configure(ws.root)
    rows: list[dict] = []
    t_all = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="bench-fa-", dir=ws.root / "incoming" if (ws.root / "incoming").is_dir()
                                    else None))
    with kept_tag(model) as (name, version), held_trigger(ws, float(ws.section("monitor")["cooldown_hours"])) as arm:
        say(f"model {name}/{version}; cohort {base.patients} patients, {base.sites} sites (seed {base.seed}); "
            f"extracts of {size} patients; {seeds} seeds from {first_seed}; shifted site {shifted_site}")
        try:
            for i, (same_seed, shift_seed) in enumerate(pairs):
                for kind, seed, shift in (("same", same_seed, None), ("shifted", shift_seed, shifted_site)):
                    if kind not in kinds:
                        continue
                    extract = scratch / f"bench-{kind}-seed{seed}"
                    t0 = time.perf_counter()
                    generate(extract, replace(base, patients=size, seed=seed, shift=shift))
                    gen_s = time.perf_counter() - t0
                    arm()
                    t0 = time.perf_counter()
                    report = monitor_flow(workspace=ws.root, source=extract, model=f"{name}/{version}",
                                          allow_ungated=allow_ungated)
                    row = summarise(report, kind, seed, shifted_site, time.perf_counter() - t0)
                    if row["retrain"] not in (None, "suppressed"):
                        raise RuntimeError(f"retraining trigger {row['retrain']} during the bench: it was not held")
                    rows.append({**row, "generate_s": round(gen_s, 1)})
                    say(f"[{i + 1}/{seeds}] {kind:7} seed {seed}: {row['status']:5} flagged "
                        f"{row['flagged_sites'] or '-'} in {row['seconds']} s (+{gen_s:.0f} s synth) "
                        f"{'; '.join(row['culprits'])}")
                    if not keep:
                        shutil.rmtree(extract, ignore_errors=True)
                        shutil.rmtree(ws.state / "areas" / "monitoring" / report["area"], ignore_errors=True)
        finally:
            if not keep:
                shutil.rmtree(scratch, ignore_errors=True)
    return {"bench": "monitor_alarms", "workspace": str(ws.root), "model": f"{name}/{version}",
            "cohort": {"patients": base.patients, "sites": base.sites, "seed": base.seed},
            "extract_patients": size, "seeds": seeds, "first_seed": first_seed, "shifted_site": shifted_site,
            "monitor_params": ws.section("monitor"), **figures(rows, shifted_site),
            "total_s": round(time.perf_counter() - t_all, 1), "runs": rows}


def _fmt(r: dict) -> str:
    if r["n"] == 0:
        return "n/a"
    return f"{r['k']}/{r['n']} = {r['rate']:.1%} (95% CI {r['ci95'][0]:.1%}-{r['ci95'][1]:.1%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", "-w", type=Path, required=True)
    parser.add_argument("--model", default="mmfm-multimodal@champion", help="NAME@alias or NAME/VERSION")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--extract-patients", type=int, default=None,
                        help="patients per extract (default: the demo's max(90, cohort patients // 2))")
    parser.add_argument("--shifted-site", default="site-b")
    parser.add_argument("--keep", action="store_true", help="keep the generated extracts and monitoring areas")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line at the end")
    parser.add_argument("--same-only", action="store_true",
                        help="only the same-distribution extracts (false alarms; half the time, no detection)")
    parser.add_argument("--allow-ungated", action="store_true", help="monitor with a version the gate did not set")
    args = parser.parse_args()
    out = run_bench(args.workspace, args.model, args.seeds, args.first_seed, args.extract_patients,
                    args.shifted_site, keep=args.keep, say=lambda s: print(s, flush=True),
                    allow_ungated=args.allow_ungated, kinds=("same",) if args.same_only else ("same", "shifted"))
    print(f"{out['model']}: {out['seeds']} seeds, extracts of {out['extract_patients']} patients, "
          f"alpha {out['monitor_params']['alpha']} (Bonferroni over 3 families)")
    target = "within" if out["false_alarm_ci_within_target"] else (
        "rate within, interval not" if out["false_alarm_rate_within_target"] else "above")
    print(f"false alarms (status drift, any family):            {_fmt(out['false_alarm'])}: {target} the "
          f"{out['false_alarm_target']:.0%} target")
    print(f"insufficient (exit 4, same distribution):           {_fmt(out['insufficient'])}")
    print(f"any site flagged (same distribution):               {_fmt(out['false_alarm_sites'])}")
    for f, r in out["false_alarm_by_family"].items():
        print(f"  {f:12} {_fmt(r)}")
    print(f"detection ({out['shifted_site']} flagged):                     {_fmt(out['detection'])}")
    print(f"localisation ({out['shifted_site']} only):                     {_fmt(out['localisation'])}")
    for f, r in out["detection_by_family"].items():
        print(f"  {f:12} {_fmt(r)}")
    print(f"false-alarm culprits: {out['false_alarm_culprits'] or 'none'}")
    print(f"other sites flagged on shifted extracts: {out['shifted_other_sites_flagged'] or 'none'}")
    if out["seconds_per_run"]:
        s = out["seconds_per_run"]
        print(f"seconds per monitor run: mean {s['mean']}, min {s['min']}, max {s['max']}; total {out['total_s']} s")
    if args.json:
        print(json.dumps({k: v for k, v in out.items() if k != "runs"} | {"runs": out["runs"]}, default=str))


if __name__ == "__main__":
    main()

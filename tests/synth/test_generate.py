"""The written cohort: byte-identical per seed, manifests that add up, and defects exactly where the truth says."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pydicom
import pytest

from data_contracts import lab_by_loinc
from tasks.synth import corrupt
from tasks.synth.generate import FHIR_TYPES, SynthConfig, generate

SMALL = dict(patients=24, sites=2, cxr_size=64, ct_shape=(4, 32, 32))


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("corrupt") / "cohort"
    summary = generate(out, SynthConfig(seed=5, corrupt_rate=0.15, **SMALL))
    return out, summary


def test_same_seed_gives_identical_bytes(tmp_path):
    cfg = SynthConfig(seed=3, corrupt_rate=0.1, **SMALL)
    generate(tmp_path / "a", cfg)
    generate(tmp_path / "b", cfg)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b and len(a) > 30
    generate(tmp_path / "c", SynthConfig(seed=4, corrupt_rate=0.1, **SMALL))
    assert _digest(tmp_path / "c") != a


def test_corrupt_rate_does_not_change_the_patients(tmp_path, corrupted):
    out, _ = corrupted
    clean = tmp_path / "clean"
    generate(clean, SynthConfig(seed=5, corrupt_rate=0.0, **SMALL))
    assert (clean / "truth" / "patients.tsv").read_bytes() == (out / "truth" / "patients.tsv").read_bytes()


def test_manifest_counts_match_files(corrupted):
    out, summary = corrupted
    total = 0
    for site in summary["sites"]:
        manifest = json.loads((out / site / "fhir" / "manifest.json").read_text())
        assert [o["type"] for o in manifest["output"]] == list(FHIR_TYPES)
        for entry in manifest["output"]:
            lines = (out / site / "fhir" / entry["url"]).read_text().splitlines()
            assert entry["count"] == len(lines)
            total += len(lines)
    assert total == sum(summary["fhir_resources"].values())


def _dicom_ok(path: Path) -> bool:
    try:
        return pydicom.dcmread(path).pixel_array.size > 0
    except Exception:  # noqa: BLE001 - any failure to decode is what truncation causes
        return False


def test_corrupted_items_are_exactly_those_reported(corrupted):
    out, summary = corrupted
    reported = [json.loads(line) for line in (out / "truth" / "corruptions.jsonl").read_text().splitlines()]
    kinds = {r["kind"] for r in reported}
    assert kinds >= {corrupt.TRUNCATED_DICOM, corrupt.INVALID_JSON, corrupt.DUPLICATE_RESOURCE}, kinds
    at = {(r["kind"], r["file"], r.get("line"), r.get("sample_id")) for r in reported}
    truth = pl.read_csv(out / "truth" / "patients.tsv", separator="\t")
    patient_ids, mrns = set(truth["fhir_id"]), set(truth["mrn"])

    for f in sorted(out.rglob("*.dcm")):
        rel = f.relative_to(out).as_posix()
        assert _dicom_ok(f) == ((corrupt.TRUNCATED_DICOM, rel, None, None) not in at), rel

    labs = lab_by_loinc()
    for site in summary["sites"]:
        for rtype in FHIR_TYPES:
            rel = f"{site}/fhir/{rtype}.ndjson"
            seen = set()
            for n, line in enumerate((out / rel).read_text().splitlines(), start=1):
                try:
                    res = json.loads(line)
                except json.JSONDecodeError:
                    assert (corrupt.INVALID_JSON, rel, n, None) in at
                    continue
                assert (corrupt.DUPLICATE_RESOURCE, rel, n, None) in at if res["id"] in seen else True
                if res["id"] in seen:
                    continue
                seen.add(res["id"])
                if rtype != "Observation":
                    continue
                q, lab = res["valueQuantity"], labs[res["code"]["coding"][0]["code"]]
                unit_ok = q["unit"] in lab.units
                assert unit_ok == ((corrupt.WRONG_UNIT, rel, n, None) not in at)
                if unit_ok:
                    lo, hi = lab.plausible
                    value_ok = lo <= lab.to_canonical(q["value"], q["unit"]) <= hi
                    assert value_ok == ((corrupt.IMPOSSIBLE_VALUE, rel, n, None) not in at)
                ref_ok = res["subject"]["reference"].removeprefix("Patient/") in patient_ids
                assert ref_ok == ((corrupt.MISSING_PATIENT, rel, n, None) not in at)

        expr = (out / site / "omics" / "expression.tsv").read_text().splitlines()[1:]
        for row in expr:
            sid, *cells = row.split("\t")
            bad = "#VALUE!" in cells
            assert bad == ((corrupt.INVALID_OMICS_VALUE, f"{site}/omics/expression.tsv", None, sid) in at)
        for row in (out / site / "omics" / "sample_sheet.tsv").read_text().splitlines()[1:]:
            sid, mrn = row.split("\t")[:2]
            assert (mrn in mrns) == ((corrupt.MISSING_PATIENT, f"{site}/omics/sample_sheet.tsv", None, sid) not in at)
    assert sum(summary["corrupted"].values()) == len(reported)


def test_truth_is_outside_the_extracts(corrupted):
    out, summary = corrupted
    for site in summary["sites"]:
        for f in (out / site).rglob("*"):
            if f.is_file() and f.suffix in (".ndjson", ".tsv", ".json"):
                assert "post_full" not in f.read_text()
    truth = pl.read_csv(out / "truth" / "patients.tsv", separator="\t")
    post = truth.select(pl.col("^post_full_.*$")).to_numpy()
    assert np.allclose(post.sum(axis=1), 1.0, atol=1e-4)
    assert truth.height == SMALL["patients"]


def test_simple_models_on_the_files_stay_below_the_bayes_limit(tmp_path):
    """Each modality read from the files by a plain model carries signal, and clearly less than all together."""
    from tasks.synth.probe import probe

    generate(tmp_path, SynthConfig(patients=240, sites=2, seed=7, cxr_size=64, ct_shape=(2, 16, 16)))
    for m, r in probe(tmp_path).items():
        assert r["simple_model_auroc"] < r["bayes_auroc_same_patients"] - 0.05, (m, r)
        assert r["exact_single_modality_auroc"] < r["bayes_auroc_same_patients"] - 0.05, (m, r)
    assert probe(tmp_path)["labs"]["simple_model_auroc"] > 0.7


def test_shifted_site_drifts_in_scanner_and_age(tmp_path):
    cfg = dict(patients=60, sites=2, seed=9, cxr_size=64, ct_shape=(2, 16, 16), missing_rate=0.0)
    generate(tmp_path / "base", SynthConfig(**cfg))
    generate(tmp_path / "shift", SynthConfig(shift="site-b", **cfg))
    ages = {name: pl.read_csv(tmp_path / name / "truth" / "patients.tsv", separator="\t")
            .group_by("site").agg(pl.col("age").mean()).sort("site")["age"].to_list() for name in ("base", "shift")}
    assert ages["shift"][0] == ages["base"][0]
    assert ages["shift"][1] - ages["base"][1] > 8  # the same draws, 12 years older (some clipped at 101)
    pix = {name: np.mean([pydicom.dcmread(p).pixel_array.mean()
                          for p in (tmp_path / name / "site-b" / "dicom").rglob("SE01/IM0001.dcm")
                          if "ST01" in p.parts]) for name in ("base", "shift")}
    assert pix["shift"] > pix["base"] * 1.15
    site_a = [(tmp_path / n / "site-a" / "dicom" / "PA000000" / "ST01" / "SE01" / "IM0001.dcm").read_bytes()
              for n in ("base", "shift")]
    assert site_a[0] == site_a[1]  # the other site is untouched

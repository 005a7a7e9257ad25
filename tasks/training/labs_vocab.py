"""The labs encoder's vocabulary, learned from the training split of the curated labs table.

Why learned: ingest keeps an Observation with any LOINC code (in one canonical unit per code), so the codes the model
can read are whatever the sites send, not the catalogue's few. The vocabulary is the K - 1 most frequent codes of the
training split (ties broken by code, so it is deterministic) plus a last index, `<other>`, that every other code maps
to (a code seen only in validation, test or a new site's extract included): the model never learns from held-out
patients which codes exist, and an unseen code is still read as "some other lab" rather than dropped.

Order: codes of the catalogue's `labs` section first, in its order, then the rest by frequency; `<other>` last. With
the catalogue's codes first a cohort that only has them (the synthetic one) gets the indices and reference ranges it
always had, so the encoder starts from the same weights (models/encoders/labs.py draws the `<other>` row apart).

Reference ranges (the encoder's initial per-code standardisation, [low, high] in the canonical unit): the catalogue's
`reference` where it has one, else the model config's range for that catalogue position (the shipped configs carry
them), else the 10th and 90th percentiles of the code's training values (robust to the outliers labs have); for
`<other>` those of all other codes' values pooled. K is `pretrain.labs_vocab_size` in params.yaml. The vocabulary is
saved in the model's config (LabsEncoderConfig.codes / reference) and in the backbone's meta.json (`labs_vocab`),
so scoring maps codes as training did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import yaml

OTHER = "<other>"
DEFAULT_SIZE = 64
FALLBACK = (1.0, 3.0)  # what the encoder assumes without a range (a code with no finite training value)
ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "data_contracts" / "labs.yaml"


@dataclass(frozen=True)
class LabsVocab:
    codes: tuple[str, ...]  # index order; the last is OTHER when `other`
    reference: tuple[tuple[float, float], ...]  # per index [low, high], canonical unit
    other: bool = True  # False: the catalogue vocabulary of models saved before (unknown codes are dropped)

    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.codes) if not (self.other and c == OTHER)}

    def lookup(self, code: str, index: dict[str, int] | None = None) -> int | None:
        """The code's index; `<other>`'s for a code outside the vocabulary (None for a legacy vocabulary)."""
        found = (index if index is not None else self.index()).get(str(code))
        return found if found is not None or not self.other else len(self.codes) - 1

    def to_dict(self) -> dict:
        return {"codes": list(self.codes), "reference": [list(r) for r in self.reference], "other": self.other}

    @classmethod
    def from_dict(cls, d: dict) -> LabsVocab:
        return cls(tuple(d["codes"]), tuple(tuple(map(float, r)) for r in d["reference"]), bool(d.get("other", True)))


def catalogue(path: Path = CATALOGUE) -> tuple[list[str], dict[str, tuple[float, float]], dict[str, str]]:
    """(LOINC codes of the `labs` section in order, code -> catalogue reference range, code -> catalogue name) over
    `labs` and `more_labs`."""
    doc = yaml.safe_load(Path(path).read_text())
    entries = {**(doc.get("more_labs") or {}), **doc["labs"]}
    refs = {str(e["loinc"]): tuple(map(float, e["reference"])) for e in entries.values() if e.get("reference")}
    names = {str(e["loinc"]): name for name, e in entries.items()}
    return [str(e["loinc"]) for e in doc["labs"].values()], refs, names


def legacy(path: Path = CATALOGUE, reference: list | None = None) -> LabsVocab:
    """The catalogue vocabulary (models saved before the vocabulary was learned): no `<other>` index."""
    codes, refs, _ = catalogue(path)
    prior = reference or []
    ref = [refs.get(c) or (tuple(prior[i]) if i < len(prior) else FALLBACK) for i, c in enumerate(codes)]
    return LabsVocab(tuple(codes), tuple(ref), other=False)


def _robust(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not values.size:
        return FALLBACK
    lo, hi = (float(v) for v in np.percentile(values, [10, 90]))
    return (lo, hi) if hi > lo else (lo - max(abs(lo) * 0.1, 1e-3), hi + max(abs(hi) * 0.1, 1e-3))


def learn(labs: pl.DataFrame, size: int = DEFAULT_SIZE, path: Path = CATALOGUE,
          prior_reference: list | None = None) -> LabsVocab:
    """The vocabulary of a labs frame (`loinc`, `value`: the training split's rows); `size` counts `<other>`.
    `prior_reference`: the model config's ranges in catalogue order (used where the catalogue has none)."""
    if size < 2:
        raise ValueError(f"labs vocabulary size must be at least 2 (one code and <other>), got {size}")
    rows = labs.select(pl.col("loinc").cast(pl.Utf8), pl.col("value").cast(pl.Float64))
    rows = rows.filter(pl.col("loinc").is_not_null() & pl.col("value").is_finite())
    counts = rows.group_by("loinc").len().sort(["len", "loinc"], descending=[True, False])
    kept = set(counts["loinc"].to_list()[: size - 1])
    order, refs, _ = catalogue(path)
    prior = prior_reference or []
    first = [c for c in order if c in kept]
    codes = first + [c for c in counts["loinc"].to_list() if c in kept and c not in first]
    values = {c: np.asarray(v, dtype=np.float64) for c, v in rows.group_by("loinc").agg("value").iter_rows()}
    position = {c: i for i, c in enumerate(order)}

    def reference(code: str) -> tuple[float, float]:
        if code in refs:
            return refs[code]
        if code in position and position[code] < len(prior):
            return tuple(map(float, prior[position[code]]))
        return _robust(values.get(code, np.array([])))

    others = [v for c, v in values.items() if c not in kept]
    ref_other = _robust(np.concatenate(others)) if others else FALLBACK
    return LabsVocab((*codes, OTHER), (*(reference(c) for c in codes), ref_other))


def learn_from_curated(curated: Path, size: int = DEFAULT_SIZE, split: str = "train", path: Path = CATALOGUE,
                       prior_reference: list | None = None) -> LabsVocab:
    """The vocabulary of a curated folder's `split` patients' labs (cohort.parquet says who is in which split)."""
    curated = Path(curated)
    labs_path = curated / "labs.parquet"
    labs = pl.read_parquet(labs_path, columns=["patient_id", "loinc", "value"]) if labs_path.exists() else \
        pl.DataFrame(schema={"patient_id": pl.Utf8, "loinc": pl.Utf8, "value": pl.Float64})
    cohort = pl.read_parquet(curated / "cohort.parquet")
    if "split" in cohort.columns:
        cohort = cohort.filter(pl.col("split") == split)
    labs = labs.filter(pl.col("patient_id").is_in(cohort["patient_id"].implode()))
    return learn(labs, size, path, prior_reference)


def feature_names(vocab: LabsVocab, path: Path = CATALOGUE) -> list[str]:
    """Monitoring feature name per index: the catalogue's name where it has one, else `loinc_<code>`, `other`."""
    _, _, names = catalogue(path)
    return ["other" if vocab.other and c == OTHER else names.get(c, "loinc_" + c.replace("-", "_"))
            for c in vocab.codes]

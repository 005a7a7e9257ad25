"""Read an omics extract (expression matrices + a sample sheet), reconcile it with the sheet and the site's patients,
and stage one wide row per accepted sample; reject the rest, per sample, with a rule.

An input item is one sample (a row of a samples x features matrix). Rules (ids as they appear in quarantine):
    omics.format        a whole file that cannot be read as a matrix or sample sheet (counted as one item)
    omics.duplicate     a sample id already seen in this extract (the first occurrence is the one considered),
                        or, in long format, a feature given twice for one sample
    omics.value         a cell that is not a finite number: spreadsheet errors (#VALUE!, #DIV/0!, #N/A), text, inf
    omics.missing       more than MAX_MISSING of the sample's features are missing (empty, NA, NaN, null, n/a)
    omics.sample_sheet  no usable sample sheet row: none, ambiguous (two different rows), no MRN, or no sample id
A sample breaking several rules is rejected once, under the first rule in that order. A sample breaking none whose
sheet MRN is not (yet) a patient of the same site's EHR extract (when the flow knows them) is *pending*, not
rejected: omics often arrives before the FHIR export of the same patients, and a quarantine for good would lose it.
It is listed in `result.pending` by place only (matrix object + position, sheet object + row) with the pseudonym its
MRN will have (a keyed hash, never the MRN); publish keeps it in the ingest state and the FHIR ingest that brings the
patient stages it (`only=` re-reads just those samples). Every sample is one item: `received == ingested +
quarantined + pending`. A rejection names the file where the fault is: the sheet for a
fault of the sample's sheet row (conflicting rows, no MRN, unknown patient), the matrix otherwise, and the place in
that file by position only: `row N` (N-th data row, the header not counted) or `column N` (1-based, in a transposed
matrix). Sample ids are never quoted (a lab may use the MRN as its sample id), nor feature names, nor values.
What of the sheet and the matrix may reach the table at all is an allow-list: see omics_allow.py.

Orientation of a matrix (decided per file, from its header, in this order):
    long        exactly three columns, one named like a sample id (sample_id, sample, ...) and one named like a
                feature (gene, gene_id, symbol, feature, ...); the third holds the values
    transposed  (features x samples) the first column is named like a feature, or, when its name is neither kind,
                more of the other column names than of the first column's values are sample ids of the sheet
    wide        (samples x features) otherwise; the sample id column is the one named like a sample id, or the first
The sheet is the tie-breaker because it is the one place that says what a sample id looks like at this lab.

The staged table "omics" is wide: patient_id, site, sample_id, collection_date, specimen, assay, then one float32
column per feature. Wide is what an MLP or gene-token encoder reads directly (one row = one sample's vector, no
pivot at training time), and float32 is the precision the model uses. When files carry different panels the
columns are the union (in order of first appearance) and a feature a sample was not measured on is null, which
keeps "not measured" distinct from any value. `rows["omics_features"]` lists the feature columns (name, index,
dtype) so a data contract can check the panel. The sample id is replaced by a keyed pseudonym so the table cannot
be joined back to the lab's records; the collection date moves by the patient's own offset like every modality.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from tasks.deid.pseudonym import Pseudonymizer
from tasks.ingest.accounting import BatchResult
from tasks.ingest.landing import Extract, LandedFile, object_path, object_uri
from tasks.ingest.omics_allow import identifying_column, sheet_value
from tasks.ingest.quarantine import Rejection

SOURCE = "omics"
MAX_MISSING = 0.5  # a sample with more than half of its features missing carries too little to train on
TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": "\t", ".tab": "\t"}  # suffix -> default separator
MATRIX_SUFFIXES = (*TEXT_SUFFIXES, ".parquet")
SHEET_STEMS = ("sample_sheet", "samples")
SAMPLE_NAMES = frozenset({"sample_id", "sample", "sampleid", "sample_name", "samples"})
FEATURE_NAMES = frozenset({"gene", "genes", "gene_id", "gene_symbol", "gene_name", "symbol", "feature",
                           "feature_id", "ensembl_id", "probe", "probe_id"})
MRN_NAMES = ("mrn", "patient_mrn", "medical_record_number", "patient_id")
MISSING_TOKENS = ("", "na", "nan", "null", "n/a")  # compared lower-cased; "#N/A" is a spreadsheet error, not missing
META_COLUMNS = ("patient_id", "site", "sample_id", "collection_date", "specimen", "assay")
SEPARATORS = ("\t", ",", ";", "|")
SHEET_RULES = ("omics.sample_sheet",)
PENDING_REASON = "patient not yet ingested"


class OmicsFormatError(ValueError):
    """A file that cannot be read as a matrix or sample sheet (the message names no value)."""


@dataclass(frozen=True)
class SheetRow:
    mrn: str
    collection_date: str | None
    specimen: str | None
    assay: str | None


@dataclass
class Matrix:
    """One file as samples x features, cells still text (so each cell can be judged, whatever the file type)."""

    orientation: str  # long | wide | transposed
    sample_ids: list[str]
    features: list[str]
    cells: pl.DataFrame  # Utf8 columns named by feature, one row per sample
    positions: list[str] = field(default_factory=list)  # where each sample is in the file: "row 3", "column 2"
    prejudged: dict[str, tuple[str, str]] = field(default_factory=dict)  # sample id -> (rule, message)


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def is_sample_sheet(rel_path: str) -> bool:
    return Path(rel_path).name.lower().split(".")[0] in SHEET_STEMS


def find_sample_sheet(extract: Extract) -> LandedFile | None:
    """The extract's first file named `sample_sheet.*` or `samples.*` (what ingest_omics reads when given none)."""
    return next((f for f in extract.files if is_sample_sheet(f.rel_path)), None)


def _suffix(rel_path: str) -> str:
    return Path(rel_path).suffix.lower()


def _header(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        return fh.readline(1 << 20).rstrip("\r\n")


def sniff_separator(header: str, default: str) -> str:
    """The most frequent of tab, comma, semicolon, pipe in the header line; the suffix's default when none occurs."""
    counts = {sep: header.count(sep) for sep in SEPARATORS}
    best = max(SEPARATORS, key=lambda sep: counts[sep])
    return best if counts[best] else default


def read_table(path: Path, rel_path: str) -> pl.DataFrame:
    """A CSV/TSV/text or parquet file as a frame of text columns with stripped, unique names."""
    suffix = _suffix(rel_path)
    if suffix not in MATRIX_SUFFIXES:  # the suffix is part of the file's name: not quoted
        raise OmicsFormatError(f"not a CSV, TSV or parquet file (suffixes read: {', '.join(MATRIX_SUFFIXES)})")
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(path)
            names = frame.columns
        else:
            header = _header(path)
            sep = sniff_separator(header, TEXT_SUFFIXES[suffix])
            names = next(csv.reader([header], delimiter=sep), [])
            frame = pl.read_csv(path, separator=sep, infer_schema=False, encoding="utf8-lossy")
        frame = frame.select(pl.all().cast(pl.Utf8))
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise OmicsFormatError(f"unreadable {suffix[1:]} file ({type(exc).__name__})") from None
    names = [n.strip() for n in names]
    if len(set(names)) != len(names) or len(names) != frame.width:
        raise OmicsFormatError("column names are repeated or do not match the rows")
    return frame.rename(dict(zip(frame.columns, names, strict=True)))


def orientation(columns: list[str], first_column: list[str], sheet_ids: set[str]) -> str:
    """long | transposed | wide, by the rule in the module docstring."""
    names = [_norm(c) for c in columns]
    if len(names) == 3 and SAMPLE_NAMES & set(names) and FEATURE_NAMES & set(names):
        return "long"
    if names and names[0] in FEATURE_NAMES:
        return "transposed"
    if SAMPLE_NAMES & set(names):
        return "wide"
    in_header = len(sheet_ids.intersection(c.strip() for c in columns[1:]))
    in_rows = len(sheet_ids.intersection(v.strip() for v in first_column if v is not None))
    return "transposed" if in_header > in_rows else "wide"


def to_matrix(frame: pl.DataFrame, sheet_ids: set[str]) -> Matrix:
    """Bring a file of any orientation to samples x features, cells as text."""
    if frame.width < 2:
        raise OmicsFormatError("fewer than two columns: no sample ids and features")
    kind = orientation(frame.columns, frame.get_column(frame.columns[0]).to_list(), sheet_ids)
    if kind == "long":
        return _from_long(frame)
    if kind == "transposed":
        features = [("" if v is None else v.strip()) for v in frame.get_column(frame.columns[0]).to_list()]
        if "" in features or len(set(features)) != len(features):
            raise OmicsFormatError("feature names (first column) are empty or repeated")
        frame = frame.drop(frame.columns[0]).transpose(include_header=True, header_name="\x00id",
                                                       column_names=features)
        id_col = "\x00id"
        positions = [f"column {i + 2}" for i in range(frame.height)]  # column 1 holds the feature names
    else:
        id_col = next((c for c in frame.columns if _norm(c) in SAMPLE_NAMES), frame.columns[0])
        positions = [f"row {i + 1}" for i in range(frame.height)]
    ids = [("" if v is None else v.strip()) for v in frame.get_column(id_col).to_list()]
    cells = frame.drop(id_col)
    if not cells.width:
        raise OmicsFormatError("no feature columns")
    return Matrix(orientation=kind, sample_ids=ids, features=cells.columns, cells=cells, positions=positions)


def _from_long(frame: pl.DataFrame) -> Matrix:
    """sample, feature, value rows -> wide; a repeated (sample, feature) pair or an unnamed feature is prejudged."""
    names = [_norm(c) for c in frame.columns]
    sample = frame.columns[next(i for i, n in enumerate(names) if n in SAMPLE_NAMES)]
    feature = frame.columns[next(i for i, n in enumerate(names) if n in FEATURE_NAMES)]
    value = next(c for c in frame.columns if c not in (sample, feature))
    s, f = "\x00sample", "\x00feature"  # names no gene can have, so a pivoted feature never collides with them
    frame = frame.select(pl.col(sample).str.strip_chars().fill_null("").alias(s),
                         pl.col(feature).str.strip_chars().fill_null("").alias(f), pl.col(value))
    first_row = dict(frame.with_row_index("\x00row").group_by(s).agg(pl.col("\x00row").min()).iter_rows())
    prejudged = {sid: ("omics.value", "a long-format row of this sample names no feature")
                 for sid in frame.filter(pl.col(f) == "").get_column(s).unique(maintain_order=True)}
    frame = frame.filter(pl.col(f) != "")
    repeated = frame.group_by(s, f, maintain_order=True).len().filter(pl.col("len") > 1)
    for sid in repeated.get_column(s).unique(maintain_order=True):
        prejudged.setdefault(sid, ("omics.duplicate", "a feature is given twice for this sample in long format"))
    if frame.is_empty():
        raise OmicsFormatError("long format without any named feature")
    wide = frame.pivot(on=f, index=s, values=value, aggregate_function="first")
    unnamed_only = [sid for sid in prejudged if sid not in set(wide.get_column(s).to_list())]
    wide = pl.concat([wide, pl.DataFrame({s: unnamed_only}, schema={s: pl.Utf8})], how="diagonal")
    cells, ids = wide.drop(s), wide.get_column(s).to_list()  # samples of only unnamed rows stay items
    return Matrix(orientation="long", sample_ids=ids, features=cells.columns, cells=cells, prejudged=prejudged,
                  positions=[f"row {first_row[sid] + 1}" for sid in ids])  # the sample's first row


def judge_cells(cells: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values float32 with NaN where not usable, bad mask, missing mask), each (samples, features)."""
    text = [pl.col(c).str.strip_chars() for c in cells.columns]
    parsed = cells.select(t.cast(pl.Float64, strict=False) for t in text).to_numpy().astype(np.float64)
    missing = cells.select((t.is_null() | t.str.to_lowercase().is_in(MISSING_TOKENS)) for t in text).to_numpy()
    with np.errstate(over="ignore", invalid="ignore"):
        values = parsed.astype(np.float32)  # a value beyond float32's range becomes inf, so it is judged bad
    bad = ~missing & ~np.isfinite(values)
    values[missing | bad] = np.nan
    return values, bad, missing.astype(bool)


def read_sample_sheet(frame: pl.DataFrame) -> tuple[dict[str, SheetRow | None], dict[str, int]]:
    """(sample id -> its row, None when the sheet lists the id twice with different contents (ambiguous); sample
    id -> the data row, 1-based, where the sheet first lists it). Columns other than sample id, MRN, collection
    date, specimen and assay are never read; specimen and assay keep only allow-listed spellings (omics_allow)."""
    names = {_norm(c): c for c in frame.columns}
    mrn_col = next((names[n] for n in MRN_NAMES if n in names), None)
    if mrn_col is None or frame.width < 2:
        raise OmicsFormatError("sample sheet has no sample id and MRN columns")
    id_col = next((c for c in frame.columns if _norm(c) in SAMPLE_NAMES), frame.columns[0])
    optional = {k: names.get(k) for k in ("collection_date", "specimen", "assay")}
    sheet: dict[str, SheetRow | None] = {}
    first: dict[str, int] = {}
    for n, rec in enumerate(frame.iter_rows(named=True), start=1):
        sid = (rec[id_col] or "").strip()
        if not sid:
            continue
        raw = {k: (rec[c] or "").strip() or None if c else None for k, c in optional.items()}
        row = SheetRow(mrn=(rec[mrn_col] or "").strip(), collection_date=raw["collection_date"],
                       specimen=sheet_value("specimen", raw["specimen"]), assay=sheet_value("assay", raw["assay"]))
        sheet[sid] = row if sheet.get(sid, row) == row else None
        first.setdefault(sid, n)
    return sheet, first


@dataclass
class _Run:
    """State of one ingest: where rejections go, which ids were seen, what was accepted."""

    result: BatchResult
    keys: Pseudonymizer
    site: str
    known_mrns: set[str] | None
    sheet: dict[str, SheetRow | None]
    sheet_file: dict[str, LandedFile] = field(default_factory=dict)  # sample id -> the sheet that lists it
    sheet_row: dict[str, int] = field(default_factory=dict)  # sample id -> its data row in that sheet
    seen: set[str] = field(default_factory=set)
    features: dict[str, int] = field(default_factory=dict)  # union of panels, in order of first appearance
    accepted: list[tuple[dict, dict]] = field(default_factory=list)  # (meta, {feature: value})
    only: set[tuple[str, str]] | None = None  # (matrix sha256, position) of the samples to consider; None: all

    def reject(self, f: LandedFile, landing: Path, where: str, rule: str, message: str) -> None:
        self.result.rejections.append(Rejection(source_uri=object_uri(landing, f.sha256), sha256=f.sha256,
                                                location=where, source=SOURCE, stage="ingest", rule=rule,
                                                message=message))


def _verdict(run: _Run, m: Matrix, i: int, bad: np.ndarray, missing: np.ndarray) -> tuple[str, str] | None:
    """The first rule sample i breaks, or None."""
    sid, n = m.sample_ids[i], len(m.features)
    if sid in run.seen:
        return "omics.duplicate", "sample id repeated within the extract; only its first occurrence is considered"
    if sid in m.prejudged:
        return m.prejudged[sid]
    if bad[i].any():
        first = int(np.argmax(bad[i])) + 1
        return "omics.value", f"{int(bad[i].sum())} of {n} features are not finite numbers (first: feature {first})"
    if missing[i].sum() > MAX_MISSING * n:
        return "omics.missing", f"{int(missing[i].sum())} of {n} features missing (at most {MAX_MISSING:.0%})"
    row = run.sheet.get(sid)
    if row is None or not row.mrn:
        why = ("has no row in" if sid not in run.sheet else "has conflicting rows in" if row is None
               else "has no MRN in")
        return "omics.sample_sheet", f"sample id {why} the sample sheet"
    return None


def _is_pending(run: _Run, sid: str) -> bool:
    """Whether a sample that broke no rule names a patient not (yet) among the site's known patients."""
    known, row = run.known_mrns, run.sheet[sid]
    assert row is not None  # _verdict let it through
    return known is not None and row.mrn not in known and run.keys.patient(run.site, row.mrn) not in known


def _hold(run: _Run, f: LandedFile, position: str, sid: str) -> None:
    """Record a sample as pending: where it is (objects and positions) and its patient's pseudonym, no value."""
    row, sheet = run.sheet[sid], run.sheet_file[sid]
    assert row is not None
    run.result.pending.append({"sha256": f.sha256, "location": position, "suffix": _suffix(f.rel_path),
                               "sheet_sha256": sheet.sha256, "sheet_location": f"row {run.sheet_row[sid]}",
                               "sheet_suffix": _suffix(sheet.rel_path),
                               "patient_key": run.keys.patient(run.site, row.mrn), "reason": PENDING_REASON})


def _shift(text: str | None, offset_days: int) -> date | None:
    """A YYYY-MM-DD (or ISO date-time) collection date moved by the patient's offset; None when not a full date."""
    try:
        return date.fromisoformat((text or "")[:10]) + timedelta(days=offset_days)
    except (ValueError, OverflowError):
        return None


def _accept(run: _Run, m: Matrix, i: int, values: np.ndarray) -> None:
    sid = m.sample_ids[i]
    row = run.sheet[sid]
    assert row is not None  # _verdict let it through
    patient = run.keys.patient(run.site, row.mrn)
    meta = {"patient_id": patient, "site": run.site, "sample_id": run.keys.resource_id(run.site, "Sample", sid),
            "collection_date": _shift(row.collection_date, run.keys.date_offset_days(patient)),
            "specimen": row.specimen, "assay": row.assay}
    vals = {f: (None if v != v else v) for f, v in zip(m.features, values[i].tolist(), strict=True)}  # NaN -> None
    run.accepted.append((meta, vals))


def _ingest_matrix(run: _Run, f: LandedFile, landing: Path) -> None:
    try:
        m = _drop_identifying(run, to_matrix(read_table(object_path(landing, f.sha256), f.rel_path), set(run.sheet)))
        clash = sorted(set(m.features) & set(META_COLUMNS))
        if clash:
            raise OmicsFormatError(f"feature names collide with table columns: {', '.join(clash)}")
    except (OmicsFormatError, pl.exceptions.PolarsError) as exc:  # polars' own text may quote cells: not kept
        run.result.received += 1
        why = str(exc) if isinstance(exc, OmicsFormatError) else f"cannot be shaped as a matrix ({type(exc).__name__})"
        run.reject(f, landing, "", "omics.format", why)
        return
    values, bad, missing = judge_cells(m.cells)
    before = run.result.ingested
    for i, sid in enumerate(m.sample_ids):
        if run.only is not None and (f.sha256, m.positions[i]) not in run.only:
            continue  # staging pending samples: the file's other samples were accounted for when it was ingested
        run.result.received += 1
        if not sid:
            run.reject(f, landing, m.positions[i], "omics.sample_sheet", "sample has no id, so no sheet row")
            continue
        verdict = _verdict(run, m, i, bad, missing)
        run.seen.add(sid)
        if verdict is None and _is_pending(run, sid):
            _hold(run, f, m.positions[i], sid)
        elif verdict is None:
            _accept(run, m, i, values)
            run.result.ingested += 1
        elif verdict[0] in SHEET_RULES and sid in run.sheet:  # a fault of the sheet's row: reported on the sheet
            run.reject(run.sheet_file[sid], landing, f"row {run.sheet_row[sid]}", *verdict)
        else:
            run.reject(f, landing, m.positions[i], *verdict)
    if run.result.ingested > before:  # the table's columns are the panels of accepted samples
        for feature in m.features:
            run.features.setdefault(feature, len(run.features))


def _drop_identifying(run: _Run, m: Matrix) -> Matrix:
    """The matrix without its columns named like patient or sample metadata (counted in the facts, not quoted)."""
    drop = [c for c in m.features if identifying_column(c)]
    if not drop:
        return m
    run.result.facts["omics_identifying_columns_dropped"] = \
        run.result.facts.get("omics_identifying_columns_dropped", 0) + len(drop)
    cells = m.cells.drop(drop)
    if not cells.width:
        raise OmicsFormatError("no feature columns besides columns named like patient or sample metadata")
    return Matrix(orientation=m.orientation, sample_ids=m.sample_ids, features=cells.columns, cells=cells,
                  positions=m.positions, prejudged=m.prejudged)


def _load_sheets(run: _Run, files: list[LandedFile], landing: Path) -> None:
    for f in files:
        try:
            rows, positions = read_sample_sheet(read_table(object_path(landing, f.sha256), f.rel_path))
        except OmicsFormatError as exc:
            run.result.received += 1
            run.reject(f, landing, "", "omics.format", str(exc))
            continue
        for sid, row in rows.items():  # a sample listed differently by two sheets is as ambiguous as within one
            run.sheet[sid] = row if run.sheet.get(sid, row) == row else None
            run.sheet_file[sid], run.sheet_row[sid] = f, positions[sid]


def ingest_omics(extract: Extract, landing: Path, keys: Pseudonymizer, site: str, known_mrns: set[str] | None,
                 sample_sheet: LandedFile | None = None,
                 only: set[tuple[str, str]] | None = None) -> BatchResult:
    """Stage the accepted samples of one landed omics extract as `rows["omics"]` (wide, one row per sample, sorted
    by patient then sample pseudonym) and `rows["omics_features"]`; every other sample is a rejection.

    The sample sheet is `sample_sheet` when given, else every file of the extract named `sample_sheet.*` or
    `samples.*`; all other files are matrices. `known_mrns` are the MRNs of the same site's EHR extract (None skips
    the patient check); their patient pseudonyms, which is what the staged patients table holds, work as well. A
    sample of no known patient is pending (`result.pending`). `only` limits the run to these (matrix sha256,
    position) samples: how pending samples are staged once their patients are known, without counting the others
    again.
    """
    landing = Path(landing)
    result = BatchResult(source=SOURCE)
    run = _Run(result=result, keys=keys, site=site, known_mrns=known_mrns, sheet={}, only=only)
    sheets = [sample_sheet] if sample_sheet is not None else [f for f in extract.files if is_sample_sheet(f.rel_path)]
    _load_sheets(run, sheets, landing)
    for f in extract.files:
        if not is_sample_sheet(f.rel_path) and f not in sheets:
            _ingest_matrix(run, f, landing)
    features = list(run.features)
    rows = [{**meta, **{g: vals.get(g) for g in features}} for meta, vals in run.accepted]
    rows.sort(key=lambda r: (r["patient_id"], r["sample_id"]))
    result.add_rows("omics", rows)
    result.add_rows("omics_features", [{"feature": g, "index": i, "dtype": "float32"} for i, g in enumerate(features)])
    return result


def omics_frame(rows: list[dict], features: list[dict]) -> pl.DataFrame:
    """The staged rows as a typed frame: metadata columns, then one float32 column per feature (in index order)."""
    schema: dict[str, pl.DataType] = {"patient_id": pl.Utf8, "site": pl.Utf8, "sample_id": pl.Utf8,
                                      "collection_date": pl.Date, "specimen": pl.Utf8, "assay": pl.Utf8}
    schema.update({f["feature"]: pl.Float32 for f in sorted(features, key=lambda f: f["index"])})
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)

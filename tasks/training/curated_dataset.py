"""Curated tables -> model batches (data_contracts/model_io.yaml): one item per cohort patient, a collate that pads.

Why per patient, not per row: the cohort is split by patient, labels and survival are per patient, and a model sample
is everything one patient has. An item carries each modality it has (None where it has none) plus the `mask` row in
model_io's modality order; `collate` fills absent modalities with padding and relies on `mask` so the model never
reads them. Tables are read once (small, tabular); image arrays are read per item from shards that each worker opens
once and memory-maps, so memory grows with the batch, not with the cohort.
"""

from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml
from torch.utils.data import Dataset

from data_contracts import diagnosis_classes
from models.encoders.concepts import ConceptReader
from models.model import MODALITIES  # the mask's columns (model_io.yaml `modalities` states the same order)
from tasks.training.findings import finding_levels, read_findings
from tasks.training.labs_vocab import DEFAULT_SIZE, LabsVocab, learn_from_curated, legacy

ROOT = Path(__file__).resolve().parents[2]
INPUTS = (*MODALITIES, "demographics", "mask")
FINDINGS = ("image_2d", "image_3d")  # image modalities with report-derived targets: findings_<m> (F,) int64
REPORT_KIND = "radiology_report"
CLASS_CODES = tuple(c.code for c in diagnosis_classes())  # data_contracts/labels.yaml: label = index here
MODALITIES_2D, MODALITIES_3D = ("DX", "CR"), ("CT", "MR", "PT")
LAB_PAD = -1.0  # vocabulary index of a padding row: the labs encoder treats idx < 0 as no token
AGE_BANDS = ((0, "<40"), (40, "40-59"), (60, "60-79"), (80, "80+"))


@dataclass
class DatasetConfig:
    max_lab_tokens: int = 64  # earliest labs first; more are dropped (T of labs (T, 3))
    note_kinds: tuple[str, ...] = ("clinical_note",)  # radiology reports restate the findings: not an input here
    # (they are read as image pre-training targets instead: tasks/training/findings.py)
    max_text_length: int = 320  # tokenizer truncation; clinical notes are ~200 word pieces (95th centile ~270)
    labs_catalogue: Path = ROOT / "data_contracts" / "labs.yaml"
    genes: tuple[str, ...] | None = None  # the model's gene panel, in its order (scoring new data); None: this data's
    # the model's labs vocabulary (scoring new data: the saved one); None: learned from this folder's training split
    labs_vocab: LabsVocab | None = None
    labs_vocab_size: int = DEFAULT_SIZE  # K when learned here (params.yaml pretrain.labs_vocab_size at training)


def dataset_config(meta: dict) -> DatasetConfig:
    """How to read data for a saved model: its gene panel and labs vocabulary (the backbone's meta.json; a model
    saved before the vocabulary was learned reads labs by the catalogue, as it was trained)."""
    genes = meta.get("omics_genes")
    vocab = meta.get("labs_vocab")
    return DatasetConfig(genes=tuple(genes) if genes else None,
                         labs_vocab=LabsVocab.from_dict(vocab) if vocab else legacy())


def load_lab_codes(path: Path) -> dict[str, int]:
    """LOINC -> catalogue index, in labs.yaml order: the vocabulary of models saved before it was learned from the
    data (tasks/training/labs_vocab.py)."""
    labs = yaml.safe_load(Path(path).read_text())["labs"]
    return {str(entry["loinc"]): i for i, entry in enumerate(labs.values())}


# ------------------------------------------------------------------------------------------------ shards
class ShardCache:
    """Per-process cache of open shards. .npz shards are written uncompressed (ZIP_STORED), so each member is a
    plain .npy at a fixed offset and can be memory-mapped; compressed members fall back to a lazy NpzFile read.
    Keyed by pid so a DataLoader worker forked after first use opens its own handles."""

    def __init__(self, images_dir: Path):
        self.images_dir = Path(images_dir)
        self._pid, self._open = os.getpid(), {}

    def get(self, shard: str, key: str) -> np.ndarray:
        """The array `key` of `shard` (a path whose file name is in images/): a read-only view of the mapped file."""
        if self._pid != os.getpid():
            self._pid, self._open = os.getpid(), {}
        name = Path(shard).name
        if name not in self._open:
            path = self.images_dir / name
            self._open[name] = (path, np.memmap(path, dtype=np.uint8, mode="r"), _index_shard(path))
        path, raw, members = self._open[name]
        member = members.get(key)
        if member is None:  # compressed member: read that one array, nothing else
            with np.load(path) as npz:
                return npz[key]
        start, shape, dtype, fortran = member
        count = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        flat = raw[start : start + count].view(dtype)
        return flat.reshape(shape, order="F" if fortran else "C")


def _index_shard(path: Path) -> dict[str, tuple | None]:
    """member key -> (data offset, shape, dtype, fortran) of its .npy inside the zip; None when compressed."""
    members: dict[str, tuple | None] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as fp:
        for info in zf.infolist():
            key = info.filename.removesuffix(".npy")
            if info.compress_type != zipfile.ZIP_STORED:
                members[key] = None
                continue
            fp.seek(info.header_offset)
            head = fp.read(30)  # local file header: name and extra lengths at bytes 26..30
            name_len, extra_len = struct.unpack("<HH", head[26:30])
            fp.seek(info.header_offset + 30 + name_len + extra_len)
            major, _ = np.lib.format.read_magic(fp)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(fp)
            members[key] = (fp.tell(), shape, dtype, fortran)
    return members


# ------------------------------------------------------------------------------------------------ tables
def _ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    text = str(value).replace("Z", "+00:00")
    if len(text) in (4, 7):  # FHIR partial dates: a year (ages over 89 are generalised to it) or a year-month
        text = text + "-01-01"[: 10 - len(text)]
    out = datetime.fromisoformat(text if "T" in text else f"{text}T00:00:00+00:00")
    return out if out.tzinfo else out.replace(tzinfo=UTC)  # curated times are UTC


def _days(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else (b - a).total_seconds() / 86400.0


def _read(curated: Path, name: str) -> pl.DataFrame:
    path = curated / f"{name}.parquet"
    return pl.read_parquet(path) if path.exists() else pl.DataFrame({"patient_id": pl.Series([], dtype=pl.String)})


def _by_patient(frame: pl.DataFrame, sort: str | None = None) -> dict[str, pl.DataFrame]:
    if not frame.height:
        return {}
    if sort and sort in frame.columns:
        frame = frame.sort(sort, nulls_last=True)
    return {key[0]: part for key, part in frame.group_by("patient_id", maintain_order=True)}


MALE, FEMALE = ("male", "m"), ("female", "f")


def _demographics(birth: datetime | None, at: datetime | None, sex: str | None) -> torch.Tensor:
    """(2,) [age in years at the index admission, 1 male / 0 female]; NaN where unknown (never a made-up value)."""
    years = _days(birth, at)
    code = str(sex or "").lower()
    male = 1.0 if code in MALE else 0.0 if code in FEMALE else float("nan")
    return torch.tensor([years / 365.25 if years is not None else float("nan"), male], dtype=torch.float32)


def _age_band(birth: datetime | None, at: datetime | None) -> str | None:
    years = _days(birth, at)
    if years is None:
        return None
    years /= 365.25
    return [name for lo, name in AGE_BANDS if years >= lo][-1]


# ------------------------------------------------------------------------------------------------ dataset
class CuratedDataset(Dataset):
    """One item per cohort patient (of `split` when given) of a curated folder (flows/validate._publish layout)."""

    def __init__(self, curated_dir: Path, split: str | None = None, text_tokenizer: Any = None,
                 cfg: DatasetConfig | None = None):
        self.curated = Path(curated_dir)
        self.cfg = cfg or DatasetConfig()
        self.text_tokenizer = text_tokenizer  # kept for collate_fn(); items carry raw text
        cohort = pl.read_parquet(self.curated / "cohort.parquet")
        if split is not None:
            cohort = cohort.filter(pl.col("split") == split)
        self.cohort = cohort.sort("patient_id")
        self.labs_vocab = self.cfg.labs_vocab or learn_from_curated(self.curated, self.cfg.labs_vocab_size,
                                                                    path=self.cfg.labs_catalogue)
        self.lab_codes = self.labs_vocab.index()  # LOINC -> index; other codes: labs_vocab.lookup
        self.shards = ShardCache(self.curated / "images")
        self._load_tables()

    def _load_tables(self) -> None:
        keep = set(self.cohort["patient_id"])
        t = {n: _read(self.curated, n).filter(pl.col("patient_id").is_in(list(keep)))
             for n in ("patients", "encounters", "labs", "conditions", "notes", "imaging", "omics")}
        self.patients = {r["patient_id"]: r for r in t["patients"].iter_rows(named=True)}
        self.encounters = _by_patient(t["encounters"], "start")
        self.labs = _by_patient(t["labs"], "time")
        self.conditions = _by_patient(t["conditions"], "recorded")
        notes = t["notes"]
        reports = notes.filter(pl.col("kind") == REPORT_KIND) if notes.height else notes
        if notes.height:
            notes = notes.filter(pl.col("kind").is_in(list(self.cfg.note_kinds)))
        self.notes = _by_patient(notes, "time")
        self.reports = _by_patient(reports, "time")
        self.imaging = _by_patient(t["imaging"], "study_date")
        omics = t["omics"]
        self.omics = _by_patient(omics, "collection_date")
        features = _read(self.curated, "omics_features")
        self.genes = features.sort("index")["feature"].to_list() if "feature" in features.columns else []
        if self.cfg.genes is not None:  # another extract's panel: the model's order, genes it lacks are NaN
            self.genes = list(self.cfg.genes)

    def __len__(self) -> int:
        return self.cohort.height

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.cohort.row(i, named=True)
        pid = row["patient_id"]
        patient = self.patients.get(pid, {})
        admit, discharge = self._index_encounter(pid)
        item = {"image_3d": self._image(pid, MODALITIES_3D), "image_2d": self._image(pid, MODALITIES_2D),
                "labs": self._labs(pid, admit), "notes": self._notes(pid), "omics": self._omics(pid)}
        item["mask"] = torch.tensor([item[m] is not None for m in MODALITIES], dtype=torch.bool)
        time, event = self._survival(pid, patient, discharge)
        birth = _ts(patient.get("birth_date"))
        item["demographics"] = _demographics(birth, admit, patient.get("sex"))
        report = self._report(pid)
        for m in FINDINGS:
            item[f"findings_{m}"] = torch.tensor(read_findings(report, m) if item[m] is not None
                                                 else [-1] * len(finding_levels(m)), dtype=torch.long)
        item |= {"label": self._label(pid), "time": time, "event": event, "patient_id": pid, "site": row["site"],
                 "split": row.get("split"), "sex": patient.get("sex"), "age_band": _age_band(birth, admit)}
        return item

    def _index_encounter(self, pid: str) -> tuple[datetime | None, datetime | None]:
        """(admission start, end) of the first inpatient encounter: day 0 for labs, the start of follow-up."""
        enc = self.encounters.get(pid)
        if enc is None:
            return None, None
        inpatient = enc.filter(pl.col("class") == "IMP")
        first = (inpatient if inpatient.height else enc).row(0, named=True)
        return _ts(first["start"]), _ts(first["end"])

    def _image(self, pid: str, modalities: tuple[str, ...]) -> torch.Tensor | None:
        """The first series (by study date) of those modalities; a 2D series keeps its first image: (1, rows, cols)."""
        series = self.imaging.get(pid)
        if series is None:
            return None
        series = series.filter(pl.col("modality").is_in(list(modalities)) & pl.col("shard").is_not_null())
        if not series.height:
            return None
        first = series.row(0, named=True)
        array = self.shards.get(first["shard"], first["key"])
        if modalities == MODALITIES_2D:
            array = array[:1]  # (N, rows, cols) -> (1, rows, cols)
        return torch.from_numpy(np.array(array, dtype=np.float32))  # copies out of the mmap: one item's pixels

    def _labs(self, pid: str, admit: datetime | None) -> torch.Tensor | None:
        """(T, 3): vocabulary index, canonical value, days since admission; earliest first, at most max_lab_tokens.
        A code outside the vocabulary is `<other>` (dropped only by a legacy catalogue vocabulary)."""
        labs = self.labs.get(pid)
        if labs is None:
            return None
        rows = []
        for loinc, value, time in labs.select("loinc", "value", "time").iter_rows():
            code = self.labs_vocab.lookup(str(loinc), self.lab_codes)
            days = _days(admit, _ts(time))
            if code is None or value is None or not np.isfinite(value):
                continue
            rows.append((code, value, days if days is not None else 0.0))
        rows = rows[: self.cfg.max_lab_tokens]
        return torch.tensor(rows, dtype=torch.float32) if rows else None

    def _notes(self, pid: str) -> str | None:
        notes = self.notes.get(pid)
        texts = [t for t in notes["text"].to_list() if t] if notes is not None else []
        return "\n\n".join(texts) if texts else None

    def _report(self, pid: str) -> str | None:
        reports = self.reports.get(pid)
        texts = [t for t in reports["text"].to_list() if t] if reports is not None else []
        return "\n".join(texts) if texts else None

    def _omics(self, pid: str) -> torch.Tensor | None:
        """(G,) in omics_features order from the first sample; genes the sample lacks are NaN."""
        omics = self.omics.get(pid)
        if omics is None or not self.genes:
            return None
        sample = omics.row(0, named=True)
        values = [sample.get(g) for g in self.genes]
        return torch.tensor([np.nan if v is None else v for v in values], dtype=torch.float32)

    def _label(self, pid: str) -> int:
        cond = self.conditions.get(pid)
        codes = cond["code"].to_list() if cond is not None else []
        hits = [CLASS_CODES.index(c) for c in codes if c in CLASS_CODES]
        return hits[0] if hits else -1

    def _survival(self, pid: str, patient: dict, discharge: datetime | None) -> tuple[float, bool]:
        """Days from the index discharge to death (event) or to the end of the last encounter (censored)."""
        if patient.get("deceased") and patient.get("death_date"):
            return max(_days(discharge, _ts(patient["death_date"])) or 0.0, 0.0), True
        enc = self.encounters.get(pid)
        ends = [_ts(e) for e in enc["end"].to_list() if e] if enc is not None else []
        last = max(ends) if ends else None
        return max(_days(discharge, last) or 0.0, 0.0), False

    def collate_fn(self, items: list[dict]) -> dict[str, torch.Tensor | list]:
        """`collate` with this dataset's tokenizer and text length (pass as DataLoader(collate_fn=...))."""
        return collate(items, self.text_tokenizer, self.cfg.max_text_length)


# ------------------------------------------------------------------------------------------------ collate
def _stack_images(items: list[dict], name: str) -> torch.Tensor | None:
    shapes = [it[name].shape for it in items if it[name] is not None]
    if not shapes:
        return None
    zero = torch.zeros(shapes[0])  # absent: zeros, masked out
    return torch.stack([it[name] if it[name] is not None else zero for it in items])


def _pad_labs(items: list[dict]) -> torch.Tensor | None:
    """(B, T, 3) with T the longest in the batch; padding rows have catalogue index -1 (no token)."""
    lengths = [len(it["labs"]) if it["labs"] is not None else 0 for it in items]
    if not any(lengths):
        return None
    out = torch.zeros(len(items), max(lengths), 3)
    out[..., 0] = LAB_PAD
    for b, it in enumerate(items):
        if it["labs"] is not None:
            out[b, : lengths[b]] = it["labs"]
    return out


def _omics(items: list[dict]) -> torch.Tensor | None:
    sizes = [it["omics"].shape[0] for it in items if it["omics"] is not None]
    if not sizes:
        return None
    absent = torch.full((sizes[0],), float("nan"))  # missing features are NaN (model_io); the mask says absent
    return torch.stack([it["omics"] if it["omics"] is not None else absent for it in items])


def collate(items: list[dict], tokenizer: Any = None, max_text_length: int = 64) -> dict[str, torch.Tensor | list]:
    """Items -> a batch: model inputs padded, `mask` (B, 5) stacked, targets and metadata alongside.

    A modality no item of the batch has is left out (and its mask column is all False). Notes become `notes` (B, T)
    token ids when a tokenizer is given; `notes_text` always carries the raw strings ("" where absent).
    """
    batch: dict[str, torch.Tensor | list] = {}
    for name, value in (("image_3d", _stack_images(items, "image_3d")), ("image_2d", _stack_images(items, "image_2d")),
                        ("labs", _pad_labs(items)), ("omics", _omics(items))):
        if value is not None:
            batch[name] = value
    texts = [it["notes"] or "" for it in items]
    if tokenizer is not None and any(it["notes"] is not None for it in items):
        if isinstance(tokenizer, ConceptReader):  # concept flags (B, F) float, read from the text
            batch["notes"] = tokenizer.features(texts)
        else:
            batch["notes"] = tokenizer(texts, padding=True, truncation=True, max_length=max_text_length,
                                       return_tensors="pt")["input_ids"].long()
    batch["mask"] = torch.stack([it["mask"] for it in items])
    if all("demographics" in it for it in items):
        batch["demographics"] = torch.stack([it["demographics"] for it in items])
    for m in FINDINGS:
        key = f"findings_{m}"
        if all(key in it for it in items):
            batch[key] = torch.stack([it[key] for it in items])
    batch["notes_text"] = texts
    batch["label"] = torch.tensor([it["label"] for it in items], dtype=torch.long)
    batch["time"] = torch.tensor([it["time"] for it in items], dtype=torch.float32)
    batch["event"] = torch.tensor([it["event"] for it in items], dtype=torch.bool)
    for key in ("patient_id", "site", "split", "sex", "age_band"):
        batch[key] = [it.get(key) for it in items]
    return batch


def model_inputs(batch: dict) -> dict[str, torch.Tensor]:
    """The contract's keys only (what model.forward and check_model_inputs take). A mask column whose modality the
    batch does not carry (notes without a tokenizer) is cleared: the model cannot read what it was not given."""
    out = {k: batch[k] for k in MODALITIES if k in batch}
    carried = torch.tensor([m in out for m in MODALITIES], dtype=torch.bool)
    if "demographics" in batch:
        out["demographics"] = batch["demographics"]
    out["mask"] = batch["mask"] & carried
    return out

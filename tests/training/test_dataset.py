"""CuratedDataset on a real curated workspace: contract-conforming batches, masking of absent modalities, labels and
survival that match the generator's truth, split filtering, memory-mapped shards, and a forward pass of the tiny
model."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from models.encoders.concepts import ConceptReader
from models.encoders.text import train_tokenizer
from models.factory import create_model
from tasks.training import CuratedDataset, DatasetConfig, collate, model_inputs
from tasks.training.curated_dataset import MODALITIES
from tasks.validation.contracts import check_model_inputs
from tests.training.conftest import KEYS


@pytest.fixture(scope="module")
def curated(workspace):
    return workspace[0].curated


@pytest.fixture(scope="module")
def truth(workspace) -> dict[str, dict]:
    with open(workspace[1] / "truth" / "patients.tsv") as fp:
        rows = list(csv.DictReader(fp, delimiter="\t"))
    return {KEYS.patient(r["site"], r["mrn"]): r for r in rows}


@pytest.fixture(scope="module")
def dataset(curated):
    return CuratedDataset(curated, None)


@pytest.fixture(scope="module")
def tokenizer(dataset):
    return train_tokenizer([dataset[i]["notes"] or "" for i in range(len(dataset))], vocab_size=512, max_length=64)


def test_one_item_per_cohort_patient_with_truth_labels_and_survival(dataset, truth):
    assert len(dataset) == 12
    for i in range(len(dataset)):
        item = dataset[i]
        row = truth[item["patient_id"]]
        assert item["label"] == int(row["label"])
        assert item["event"] == bool(int(row["event"]))
        assert abs(item["time"] - float(row["survival_days"])) <= 1.0
        assert item["site"] == row["site"] and item["sex"] in {"male", "female"} and item["age_band"]


def test_items_follow_the_contract_shapes(dataset):
    item = next(dataset[i] for i in range(len(dataset)) if dataset[i]["mask"].all())
    assert item["image_3d"].shape == (1, 16, 48, 48) and item["image_2d"].shape == (1, 64, 64)
    assert item["labs"].ndim == 2 and item["labs"].shape[1] == 3 and item["labs"].shape[0] <= 64
    assert item["omics"].shape == (200,) and isinstance(item["notes"], str)
    for i in range(len(dataset)):
        it = dataset[i]
        assert it["mask"].tolist() == [it[m] is not None for m in MODALITIES]


def test_collated_batch_passes_the_contract_and_masks_absent(dataset, tokenizer):
    batch = collate([dataset[i] for i in range(len(dataset))], tokenizer)
    assert check_model_inputs(model_inputs(batch)) == []
    mask = batch["mask"]
    assert not mask.all() and mask.any(0).all()  # some modality is missing somewhere; each is present somewhere
    for j, m in enumerate(("image_3d", "image_2d")):
        assert not batch[m][~mask[:, j]].any()  # absent images are zeros, and masked
    absent_labs = batch["labs"][~mask[:, 2]]
    assert (absent_labs[..., 0] == -1).all()  # padding rows: no lab token
    assert torch.isnan(batch["omics"][~mask[:, 4]]).all()
    assert batch["notes"].dtype == torch.int64 and batch["notes"].shape[1] <= 64


def test_lab_tokens_truncate_to_config(curated):
    ds = CuratedDataset(curated, None, cfg=DatasetConfig(max_lab_tokens=3))
    lengths = [len(ds[i]["labs"]) for i in range(len(ds)) if ds[i]["labs"] is not None]
    assert lengths and max(lengths) == 3
    days = ds[0]["labs"][:, 2]
    assert (days[1:] >= days[:-1]).all()  # earliest first


def test_without_tokenizer_notes_stay_text_and_unmasked_for_the_model(dataset):
    batch = dataset.collate_fn([dataset[i] for i in range(4)])
    assert "notes" not in batch and len(batch["notes_text"]) == 4
    inputs = model_inputs(batch)
    assert not inputs["mask"][:, MODALITIES.index("notes")].any()
    assert check_model_inputs(inputs) == []


def test_split_filter_returns_only_that_split(curated, dataset):
    seen = set()
    for split in ("train", "val", "test"):
        ds = CuratedDataset(curated, split)
        ids = {ds[i]["patient_id"] for i in range(len(ds))}
        assert all(ds[i]["split"] == split for i in range(len(ds)))
        assert not ids & seen
        seen |= ids
    assert seen == {dataset[i]["patient_id"] for i in range(len(dataset))}


def test_shards_are_memory_mapped_and_opened_once(dataset):
    row = dataset.imaging[next(iter(dataset.imaging))].row(0, named=True)
    array = dataset.shards.get(row["shard"], row["key"])
    assert isinstance(array.base, np.memmap) or isinstance(array, np.memmap)
    assert list(array.shape) == row["shape"] and not array.flags.writeable
    with np.load(dataset.curated / "images" / Path(row["shard"]).name) as npz:
        assert np.array_equal(array, npz[row["key"]])  # the mapped view reads the same pixels as np.load
    assert len(dataset.shards._open) == 1


def test_demographics_and_report_findings_are_carried(dataset):
    """Age (years) and sex are a model input; the radiology report's findings are image pre-training targets,
    stated for the patients imaged (and -1 for those without the image)."""
    items = [dataset[i] for i in range(len(dataset))]
    ages = torch.stack([it["demographics"] for it in items])[:, 0]
    assert torch.isfinite(ages).all() and (ages > 17).all() and (ages < 110).all()
    for m in ("image_2d", "image_3d"):
        with_image = [it[f"findings_{m}"] for it in items if it[m] is not None]
        without = [it[f"findings_{m}"] for it in items if it[m] is None]
        assert all((f == -1).all() for f in without)
        assert with_image and all((f >= 0).all() for f in with_image), m


def test_tiny_model_runs_on_a_batch(dataset):
    reader = ConceptReader.from_lexicon()  # the tiny config reads notes as concept flags
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, collate_fn=lambda items: collate(items, reader))
    model = create_model("tiny").eval()
    with torch.no_grad():
        for batch in loader:
            out = model(model_inputs(batch))
            assert out["class_probs"].shape == (len(batch["label"]), 4)
            assert torch.isfinite(out["risk"]).all()

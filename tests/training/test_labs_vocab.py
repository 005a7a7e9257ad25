"""The labs vocabulary is learned from the training split of the curated labs table: codes the generator never
uses get their own indices, a code seen only in the test split is `<other>`, the vocabulary travels with the saved
model, and the synthetic cohort reads and starts exactly as with the catalogue vocabulary."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
import torch

from models.factory import model_config
from tasks.training.bundle import load_backbone, save_backbone
from tasks.training.curated_dataset import CuratedDataset, DatasetConfig, dataset_config, load_lab_codes
from tasks.training.fit import new_model, predict, pretrain
from tasks.training.labs_vocab import CATALOGUE, OTHER, catalogue, learn, learn_from_curated, legacy
from tasks.training.loop import TrainConfig
from tasks.training.split_data import load_split

GLUCOSE, HEMOGLOBIN, RARE, TEST_ONLY = "2345-7", "718-7", "4548-4", "2160-0"
UNCATALOGUED = "99999-1"  # a code no catalogue knows: its reference comes from the data
RENAME = {"6690-2": GLUCOSE, "1988-5": HEMOGLOBIN, "33762-6": UNCATALOGUED}  # values kept


@pytest.fixture(scope="module")
def curated(workspace, tmp_path_factory):
    """The workspace's curated folder with labs under codes the generator never uses: two frequent codes, a rare
    one (one training reading) and one only test patients have."""
    ws, _ = workspace
    out = tmp_path_factory.mktemp("vocab") / "curated"
    shutil.copytree(ws.curated, out)
    cohort = pl.read_parquet(out / "cohort.parquet")
    train = cohort.filter(pl.col("split") == "train")["patient_id"].to_list()
    test = cohort.filter(pl.col("split") == "test")["patient_id"].to_list()
    labs = pl.read_parquet(out / "labs.parquet").with_columns(pl.col("loinc").replace(RENAME))
    labs = labs.with_row_index("_n")
    rare = labs.filter(pl.col("patient_id") == train[0])["_n"][0]
    only = labs.filter(pl.col("patient_id") == test[0])["_n"][0]
    labs = labs.with_columns(pl.when(pl.col("_n") == rare).then(pl.lit(RARE))
                             .when(pl.col("_n") == only).then(pl.lit(TEST_ONLY))
                             .otherwise(pl.col("loinc")).alias("loinc")).drop("_n")
    labs.write_parquet(out / "labs.parquet")
    return out


def test_vocabulary_comes_from_the_training_split_only(curated):
    vocab = learn_from_curated(curated, size=64)
    assert vocab.codes[-1] == OTHER and {GLUCOSE, HEMOGLOBIN, UNCATALOGUED, RARE} <= set(vocab.codes)
    assert TEST_ONLY not in vocab.codes and vocab.lookup(TEST_ONLY) == len(vocab.codes) - 1
    assert len(vocab.reference) == len(vocab.codes) and all(lo < hi for lo, hi in vocab.reference)
    # the catalogue's reference range where it has one, else robust statistics of the code's training values
    labs = pl.read_parquet(curated / "labs.parquet")
    train = pl.read_parquet(curated / "cohort.parquet").filter(pl.col("split") == "train")["patient_id"]
    _, refs, _ = catalogue()
    for code in (GLUCOSE, HEMOGLOBIN, UNCATALOGUED):
        values = labs.filter(pl.col("loinc") == code, pl.col("patient_id").is_in(train.implode()))["value"]
        expected = refs.get(code) or tuple(np.percentile(values, [10, 90]))
        assert vocab.reference[vocab.codes.index(code)] == pytest.approx(expected), code
    # the test patient's only-in-test reading is read as <other>, not dropped
    data = CuratedDataset(curated, split="test", cfg=DatasetConfig(labs_vocab=vocab))
    indices = torch.cat([data[i]["labs"][:, 0] for i in range(len(data)) if data[i]["labs"] is not None])
    assert (indices == len(vocab.codes) - 1).sum() == 1


def test_size_keeps_the_most_frequent_codes_ties_by_code():
    labs = pl.DataFrame({"loinc": ["b", "b", "a", "a", "c", "d"], "value": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    small = learn(labs, size=3)
    assert small.codes == ("a", "b", OTHER) and small.lookup("c") == small.lookup("d") == 2
    assert small.reference[-1] == pytest.approx(tuple(np.percentile([5.0, 6.0], [10, 90])))
    assert learn(labs, size=3) == small  # deterministic
    with pytest.raises(ValueError, match="at least 2"):
        learn(labs, size=1)


def test_a_new_vocabulary_trains_saves_and_scores_end_to_end(curated, tmp_path):
    vocab = learn_from_curated(curated, size=64, prior_reference=model_config("tiny").labs.reference)
    train = load_split(curated, "train", None, DatasetConfig(labs_vocab=vocab))
    model = new_model("tiny", 0, train.tensors["omics"].shape[1], labs_vocab=vocab)
    assert model.encoders["labs"].code.num_embeddings == len(vocab.codes) == model.config.labs.n_codes
    trained = pretrain(model, train, TrainConfig(steps=1, lr=1e-3, warmup_steps=1, batch_size=4))
    assert np.isfinite(trained.result.losses).all()
    save_backbone(tmp_path / "backbone", trained.model, None, {"model": "tiny", "labs_vocab": vocab.to_dict()})
    assert json.loads((tmp_path / "backbone" / "config.json").read_text())["labs"]["codes"] == list(vocab.codes)
    loaded, _, meta = load_backbone(tmp_path / "backbone")
    cfg = dataset_config(meta)
    assert cfg.labs_vocab == vocab
    test = load_split(curated, "test", None, cfg)
    scores = predict(loaded, test)
    assert np.isfinite(scores["class_probs"]).all() and np.isfinite(scores["risk_prob"]).all()
    assert test.lab_codes == vocab.codes


def test_the_synthetic_cohort_reads_and_starts_as_with_the_catalogue(workspace):
    ws, _ = workspace
    prior = model_config("tiny").labs.reference
    vocab = learn_from_curated(ws.curated, size=64, prior_reference=prior)
    catalogue = list(load_lab_codes(CATALOGUE))
    assert vocab.codes == (*catalogue, OTHER)  # each of the generator's 7 codes has its own index, catalogue order
    assert [list(r) for r in vocab.reference[:7]] == prior
    learned = load_split(ws.curated, "train", None, DatasetConfig(labs_vocab=vocab))
    before = load_split(ws.curated, "train", None, DatasetConfig(labs_vocab=legacy()))
    assert torch.equal(learned.tensors["labs"], before.tensors["labs"])
    n_omics = learned.tensors["omics"].shape[1]
    new, old = new_model("tiny", 0, n_omics, labs_vocab=vocab), new_model("tiny", 0, n_omics)
    old_state = old.state_dict()
    per_code = {f"encoders.labs.{p}" for p in ("code.weight", "value_dir.weight", "shift", "log_scale")}
    assert set(new.state_dict()) == set(old_state)
    for name, tensor in new.state_dict().items():
        if tensor.shape != old_state[name].shape:  # only the per-code tables grow, by the <other> row
            assert name in per_code and tensor.shape[0] == old_state[name].shape[0] + 1, name
            tensor = tensor[:-1]
        assert torch.equal(tensor, old_state[name]), name

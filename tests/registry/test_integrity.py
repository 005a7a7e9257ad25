from __future__ import annotations

import hashlib

import pytest

from tasks.registry.integrity import (
    MANIFEST_HASH_TAG,
    TAG_VALUE_LIMIT,
    IntegrityError,
    hash_tree,
    manifest_from_tags,
    manifest_tags,
    verify_tree,
)


@pytest.fixture()
def model_dir(tmp_path):
    root = tmp_path / "model"
    (root / "data").mkdir(parents=True)
    (root / "MLmodel").write_text("flavors: {}\n")
    (root / "data" / "model.pt").write_bytes(bytes(range(256)) * 10)
    return root


def test_hash_tree_is_sorted_relative_posix_sha256(model_dir):
    hashes = hash_tree(model_dir)
    assert list(hashes) == ["MLmodel", "data/model.pt"]
    assert hashes["MLmodel"] == hashlib.sha256(b"flavors: {}\n").hexdigest()


def test_clean_tree_verifies(model_dir):
    assert verify_tree(model_dir, hash_tree(model_dir)) is None


def test_one_flipped_byte_names_the_file(model_dir):
    expected = hash_tree(model_dir)
    weights = model_dir / "data" / "model.pt"
    raw = bytearray(weights.read_bytes())
    raw[100] ^= 1
    weights.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=r"modified: data/model\.pt") as err:
        verify_tree(model_dir, expected)
    assert "MLmodel" not in str(err.value)


def test_added_and_removed_files_are_all_listed(model_dir):
    expected = hash_tree(model_dir)
    (model_dir / "MLmodel").unlink()
    (model_dir / "extra.txt").write_text("secret contents")
    with pytest.raises(IntegrityError) as err:
        verify_tree(model_dir, expected)
    message = str(err.value)
    assert "missing: MLmodel" in message and "unexpected: extra.txt" in message
    assert "secret contents" not in message


def test_tags_round_trip_in_one_chunk(model_dir):
    hashes = hash_tree(model_dir)
    tags = manifest_tags(hashes)
    assert "mmfm.sha256.0" in tags and "mmfm.sha256.1" not in tags
    assert manifest_from_tags({**tags, "unrelated": "x"}) == hashes


def test_big_manifest_splits_over_numbered_tags_within_the_limit():
    hashes = {f"shards/part-{i:05d}.safetensors": hashlib.sha256(str(i).encode()).hexdigest() for i in range(300)}
    tags = manifest_tags(hashes)
    chunks = [k for k in tags if k.removeprefix("mmfm.sha256.").isdigit()]
    assert len(chunks) > 1
    assert all(len(v) <= TAG_VALUE_LIMIT for v in tags.values())
    assert manifest_from_tags(tags) == hashes


def test_truncated_or_missing_chunk_is_refused():
    hashes = {f"f{i}": "0" * 64 for i in range(200)}
    tags = manifest_tags(hashes, limit=1000)
    with pytest.raises(IntegrityError, match="stored hash"):
        manifest_from_tags({**tags, "mmfm.sha256.0": tags["mmfm.sha256.0"][:-1]})
    with pytest.raises(IntegrityError, match=r"mmfm\.sha256\.1"):
        manifest_from_tags({k: v for k, v in tags.items() if k != "mmfm.sha256.1"})
    with pytest.raises(IntegrityError):
        manifest_from_tags({k: v for k, v in tags.items() if k != MANIFEST_HASH_TAG})


def test_chunk_limit_fits_mlflow_run_and_version_tags():
    """If MLflow changes its limits, chunks must still fit both (a run tag is silently truncated otherwise)."""
    from mlflow.utils import validation

    assert TAG_VALUE_LIMIT <= validation.MAX_TAG_VAL_LENGTH
    assert TAG_VALUE_LIMIT <= validation.MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH

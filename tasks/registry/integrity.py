"""sha256 manifests of model artifacts, stored as MLflow tags and checked at load.

Why: MLflow registry versions are not immutable (a run's artifacts can be overwritten after registration), so
the registered version carries a manifest of its files' hashes and a loader verifies the files against it.

Tag size: `mlflow.utils.validation` allows 100,000 characters for a model-version tag
(MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH) but only 8,000 for a run tag (MAX_TAG_VAL_LENGTH), and a too-long run tag
is *silently truncated* (MLFLOW_TRUNCATE_LONG_VALUES defaults to true). We chunk at the smaller limit so the same
tags can be written on the run and on the version without ever being cut.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from tasks import tags

TAG_PREFIX = tags.key("sha256")
MANIFEST_HASH_TAG = f"{TAG_PREFIX}.manifest"
CHUNK_COUNT_TAG = f"{TAG_PREFIX}.chunks"
TAG_VALUE_LIMIT = 8000  # = mlflow.utils.validation.MAX_TAG_VAL_LENGTH (3.17.2); tests check it still holds
_READ_BLOCK = 1 << 20


class IntegrityError(Exception):
    """Artifacts differ from their manifest (or the manifest tags are damaged). Names paths, never contents."""


def hash_file(path: Path) -> str:
    """sha256 of one file, read in 1 MiB blocks so multi-GB checkpoints do not load into memory."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def hash_tree(directory: str | Path) -> dict[str, str]:
    """{relative posix path: sha256 hex} for every regular file under `directory`, sorted by path."""
    root = Path(directory)
    if not root.is_dir():
        raise IntegrityError(f"not a directory: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): hash_file(p) for p in files}


def canonical_json(hashes: Mapping[str, str]) -> str:
    """One spelling per manifest (sorted keys, no spaces): its hash is then stable across writers."""
    return json.dumps(dict(hashes), sort_keys=True, separators=(",", ":"))


def manifest_tags(hashes: Mapping[str, str], limit: int = TAG_VALUE_LIMIT) -> dict[str, str]:
    """MLflow tags holding the manifest: "mmfm.sha256.0", ".1", ... (chunks of <= `limit` characters), the
    chunk count, and "mmfm.sha256.manifest" = sha256 of the canonical JSON (checked by `manifest_from_tags`)."""
    if limit < 1:
        raise ValueError("limit must be positive")
    text = canonical_json(hashes)
    chunks = [text[i:i + limit] for i in range(0, len(text), limit)] or [""]
    tags = {f"{TAG_PREFIX}.{i}": chunk for i, chunk in enumerate(chunks)}
    tags[CHUNK_COUNT_TAG] = str(len(chunks))
    tags[MANIFEST_HASH_TAG] = hashlib.sha256(text.encode()).hexdigest()
    return tags


def manifest_from_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Reassemble the manifest from tags (other tags are ignored); raise IntegrityError if a chunk is missing or
    the reassembled JSON does not hash to the stored manifest hash."""
    if MANIFEST_HASH_TAG not in tags or CHUNK_COUNT_TAG not in tags:
        raise IntegrityError(f"no artifact manifest in tags (expected {MANIFEST_HASH_TAG} and {CHUNK_COUNT_TAG})")
    try:
        count = int(tags[CHUNK_COUNT_TAG])
    except ValueError as e:
        raise IntegrityError(f"{CHUNK_COUNT_TAG} is not an integer") from e
    missing = [i for i in range(count) if f"{TAG_PREFIX}.{i}" not in tags]
    if missing:
        raise IntegrityError(f"manifest chunk tags missing: {', '.join(f'{TAG_PREFIX}.{i}' for i in missing)}")
    text = "".join(tags[f"{TAG_PREFIX}.{i}"] for i in range(count))
    if hashlib.sha256(text.encode()).hexdigest() != tags[MANIFEST_HASH_TAG]:
        raise IntegrityError("manifest tags do not match their stored hash (truncated or edited)")
    manifest = json.loads(text)
    if not isinstance(manifest, dict) or not all(isinstance(v, str) for v in manifest.values()):
        raise IntegrityError("manifest is not a mapping of path to sha256")
    return manifest


def diff_tree(directory: str | Path, expected: Mapping[str, str]) -> dict[str, list[str]]:
    """{"modified": [...], "missing": [...], "unexpected": [...]}: relative paths, each list sorted."""
    actual = hash_tree(directory)
    return {
        "modified": sorted(p for p in actual.keys() & expected.keys() if actual[p] != expected[p]),
        "missing": sorted(expected.keys() - actual.keys()),
        "unexpected": sorted(actual.keys() - expected.keys()),
    }


def verify_tree(directory: str | Path, expected: Mapping[str, str]) -> None:
    """Raise IntegrityError listing every modified, missing and unexpected file; return None when clean."""
    diff = diff_tree(directory, expected)
    problems = [f"{kind}: {', '.join(paths)}" for kind, paths in diff.items() if paths]
    if problems:
        raise IntegrityError(f"artifacts in {directory} differ from their manifest; " + "; ".join(problems))

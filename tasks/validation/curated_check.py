"""Refuse to train on curated data that is not what `validate` published.

`validate` records the DVC hash of data/curated in dvc.lock (and its files in the DVC cache). A file changed under
data/curated afterwards (a byte flipped by a disk or a hand, a truncated copy, a table rewritten with other values)
would otherwise be trained on silently, and the model would claim a dataset version it never saw.

The check hashes data/curated with DVC's own hashing (dvc_data `build`, the code `dvc commit` runs) but without
DVC's state database: `dvc status` trusts size + mtime + inode, so an in-place change that keeps them (STACK.md)
would pass it. The recorded tree is read back from the DVC cache to name each file that differs. Cost: one read of
data/curated per model stage (about a second per GB on local disk), small beside any training run.
"""

from __future__ import annotations

from pathlib import Path

from dvc.repo import Repo
from dvc_data.hashfile.build import build
from dvc_data.hashfile.db.local import LocalHashFileDB
from dvc_data.hashfile.hash_info import HashInfo
from dvc_data.hashfile.tree import Tree

from tasks.workspace import lock_hash

CURATED = "data/curated"
# --force: the changed files are not in the cache ("unsaved"); --relink: rewrite every file, because checkout too
# trusts the state database and skips a changed file whose size and mtime are as recorded
FIX = ("put validate's version back from the DVC cache with `dvc checkout --force --relink data/curated`, or rerun "
       "`mmfm validate`")


class CuratedChanged(RuntimeError):
    """data/curated differs from validate's record in dvc.lock; the message names the files and the fix."""


def _files(tree) -> dict[str, str]:
    return {"/".join(key): hash_info.value for key, _, hash_info in tree}


def changed_files(root: Path) -> list[str] | None:
    """Paths under data/curated whose content differs from validate's dvc.lock record ([] when identical).

    None when dvc.lock has no record of data/curated (validate never ran in this workspace)."""
    root = Path(root).resolve()
    recorded = lock_hash(root, "validate", CURATED)
    if recorded is None:
        return None
    if not (root / CURATED).is_dir():
        return [CURATED]
    with Repo(str(root)) as repo:
        cache = repo.cache.local
        odb = LocalHashFileDB(cache.fs, cache.path, hash_name="md5")  # no `state`: hash every byte
        _, _, now = build(odb, str(root / CURATED), odb.fs, "md5", dry_run=True, ignore=repo.dvcignore)
        if now.hash_info.value == recorded:
            return []
        try:
            before = _files(Tree.load(odb, HashInfo("md5", recorded)))
        except (FileNotFoundError, OSError, ValueError):  # the record's tree is not in the cache: name the folder
            return [CURATED]
    after = _files(now)
    names = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return [f"{CURATED}/{name}" for name in names] or [CURATED]


def check_curated(workspace: Path) -> None:
    """Raise CuratedChanged unless data/curated is byte for byte what validate recorded in dvc.lock."""
    changed = changed_files(workspace)
    if changed is None:
        raise CuratedChanged(f"{CURATED} has no validate record in dvc.lock: run `mmfm validate` (or `mmfm pipeline`) "
                             "before training")
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise CuratedChanged(f"{shown}: content no longer matches the hash validate recorded in dvc.lock "
                             f"(changed after validation); {FIX}")

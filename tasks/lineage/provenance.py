"""Who ran a stage and with which code: the `actor` and `code_version` every ledger event (and MLflow run) carries.

Why apart: tasks.tracking tags MLflow runs with the same code version the ledger records, and the answer is cached
per process (one git call per run, not per event). git is run through tasks.vcs like every other git call.
"""

from __future__ import annotations

import functools
import getpass
import importlib.metadata
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from tasks.vcs import git_run


def _git(cwd: Path, *args: str) -> str:
    # GIT_OPTIONAL_LOCKS=0: `git status` must not take index.lock while someone else is committing in this repo
    return git_run(cwd, *args, timeout=10, env={"GIT_OPTIONAL_LOCKS": "0"}).stdout.strip()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git revision of the running code (`<sha>`, or `<sha>-dirty` with uncommitted edits to tracked files);
    `mmfm==<version>` where the code is not a git checkout (an installed wheel); `unknown` if neither is known."""
    here = Path(__file__).resolve().parents[1]  # the `tasks` package, whose __init__.py git tracks in a checkout
    try:
        _git(here, "ls-files", "--error-unmatch", "__init__.py")  # a wheel inside someone's repo is not "the code"
        sha = _git(here, "rev-parse", "HEAD")
        return f"{sha}-dirty" if _git(here, "status", "--porcelain", "--untracked-files=no") else sha
    except (OSError, subprocess.SubprocessError, RuntimeError):  # tasks.vcs.CommandFailed is a RuntimeError
        pass
    try:
        return f"mmfm=={importlib.metadata.version('mmfm')}"
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def default_actor() -> str:
    """Who ran the stage: MMFM_ACTOR (a service account, the approver's name) or the OS user."""
    try:
        return os.environ.get("MMFM_ACTOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

"""The git and DVC command runners every stage shares (one place for their environment and their errors).

Why subprocesses: DVC's Python API holds repository state across calls and git has none worth embedding; both
CLIs are what a user runs by hand, so a failure message here reads like the command the user would type.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GIT_IDENTITY = {"GIT_AUTHOR_NAME": "mmfm", "GIT_AUTHOR_EMAIL": "mmfm@localhost", "GIT_COMMITTER_NAME": "mmfm",
                "GIT_COMMITTER_EMAIL": "mmfm@localhost"}


class CommandFailed(RuntimeError):
    """git or dvc exited non-zero: the message names the command, the folder and the tool's own last words."""


def git_run(root: Path, *args: str, check: bool = True, timeout: float | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run git in `root`; an author is supplied where the machine has none configured (CI, fresh containers)."""
    env = {**os.environ, **GIT_IDENTITY, **{k: v for k, v in os.environ.items() if k.startswith("GIT_")},
           **(env or {})}
    done = subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise CommandFailed(f"git {' '.join(args)} failed in {root}: {done.stderr.strip()}")
    return done


def git(root: Path, *args: str) -> str:
    """git's stdout; CommandFailed when it exits non-zero."""
    return git_run(root, *args).stdout


def dvc_run(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the dvc CLI of this interpreter in `root` (a subprocess: DVC's in-process logging is not reentrant)."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",  # stage commands (`python -m flows.x`) find this interpreter
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, env=env)
    if check and done.returncode != 0:
        raise CommandFailed(f"dvc {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done


def dvc(root: Path, *args: str) -> str:
    """dvc's stdout; CommandFailed when it exits non-zero."""
    return dvc_run(root, *args).stdout

"""`mmfm init` on an existing workspace commits only what init itself writes, never a user's pending edits."""

from __future__ import annotations

import yaml

from tasks.vcs import git
from tasks.workspace import init_workspace


def _head(root) -> str:
    return git(root, "rev-parse", "HEAD").strip()


def test_init_again_leaves_pending_params_edit_uncommitted(tmp_path):
    ws = init_workspace(tmp_path / "ws")
    first = _head(ws.root)
    params = yaml.safe_load(ws.params_file.read_text())
    params["pretrain"]["steps"] = 7
    edited = yaml.safe_dump(params, sort_keys=False)
    ws.params_file.write_text(edited)
    (ws.root / "notes.txt").write_text("mine\n")
    git(ws.root, "add", "notes.txt")  # something the user staged, not init's

    init_workspace(ws.root)

    assert _head(ws.root) == first  # nothing committed
    assert ws.params_file.read_text() == edited  # the edit is kept, still pending
    assert "params.yaml" in git(ws.root, "diff", "--name-only")
    assert "notes.txt" in git(ws.root, "diff", "--cached", "--name-only")  # still staged, not committed
    assert "steps: 7" not in git(ws.root, "show", "HEAD:params.yaml")


def test_init_commits_what_it_adds_but_not_the_pending_edit(tmp_path):
    ws = init_workspace(tmp_path / "ws")
    ws.params_file.write_text(ws.params_file.read_text() + "# tuned by hand\n")
    (ws.root / "dvc.yaml").write_text("stages: {}\n")  # init writes dvc.yaml only where there is none
    (ws.root / "dvc.yaml").unlink()

    init_workspace(ws.root, dvc_yaml="stages: {}\n")

    committed = git(ws.root, "show", "--name-only", "--format=", "HEAD").split()
    assert committed == ["dvc.yaml"]
    assert "# tuned by hand" in ws.params_file.read_text()
    assert git(ws.root, "diff", "--name-only").split() == ["params.yaml"]

"""One uninterrupted `mmfm demo`, shared: the reference the killed-and-resumed runs are compared with
(test_kill_resume.py), run with the egress recorder on PYTHONPATH so test_no_egress.py reads its connections."""

from __future__ import annotations

import pytest

from tests.reliability.demo_runs import leftovers, make_workspace, run_demo


@pytest.fixture(scope="session")
def clean_demo(tmp_path_factory):
    """(workspace, Run, egress log folder) of one demo run that nobody interrupted."""
    root = tmp_path_factory.mktemp("clean-demo")
    ws = make_workspace(root / "ws")
    egress = root / "egress"
    run = run_demo(ws, root / "logs", egress_log=egress)
    assert run.returncode == 0, run.stderr[-3000:]
    assert leftovers(run.tag) == []
    return ws, run, egress

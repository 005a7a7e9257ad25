"""Shared fixtures. Telemetry is switched off before anything from the stack is imported."""

from __future__ import annotations

from tasks.settings import quiet_telemetry

quiet_telemetry()

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402

# `make test` runs two workers (pytest-xdist, `-n 2 --dist loadscope`). The tests of a module go to one worker, so its
# module-scoped fixtures are built once, and the modules sharing a whole-pipeline session fixture go to one worker
# together, so that fixture is built once (the scheduler at the end of this section).
PIPELINE_FIXTURES = {  # fixture -> (group of modules, per-test timeout in s: pytest-timeout counts fixture setup)
    "clean_demo": ("demo-runs", 1800),  # tests/reliability: one uninterrupted demo and the killed chain beside it
    "trained_workspace": ("trained-workspace", 900),  # every stage on 40 patients
}
# The order workers are handed their work in: these groups first, longest first, then the modules holding a slow
# test, then the rest, so that no worker is left with a long group at the end (with --no-loadscope-reorder).
HEAVIEST_FIRST = ["demo-runs", "trained-workspace"]
GROUPS_FILE = "mmfm_module_groups"  # workerinput key: where workers write {module: group} for the scheduler
_groups_file = pytest.StashKey[str]()


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: the slow marks added here count
def pytest_collection_modifyitems(config, items):
    """A test using a whole-pipeline fixture is slow and gets that fixture's timeout; its module joins the fixture's
    group. On an xdist worker: the groups are written down for the scheduler, and modules ordered heaviest first."""
    groups: dict[str, str] = {}
    for item in items:
        for fixture, (group, timeout) in PIPELINE_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.slow)
                if item.get_closest_marker("timeout") is None:
                    item.add_marker(pytest.mark.timeout(timeout))
                groups.setdefault(_module(item.nodeid), group)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return
    if GROUPS_FILE in workerinput:  # every worker collects the same tests: the same file, replaced atomically
        partial = f"{workerinput[GROUPS_FILE]}.{workerinput['workerid']}"
        with open(partial, "w") as f:
            json.dump(groups, f)
        os.replace(partial, workerinput[GROUPS_FILE])
    slow = {_module(i.nodeid) for i in items if i.get_closest_marker("slow")}

    def rank(item) -> tuple[int, int]:
        group = groups.get(_module(item.nodeid))
        return (HEAVIEST_FIRST.index(group), 0) if group in HEAVIEST_FIRST else \
            (len(HEAVIEST_FIRST), 0 if _module(item.nodeid) in slow else 1)

    items.sort(key=rank)  # stable, the same on every worker (xdist requires it): a module stays whole, in its place


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """(xdist controller) Tell each worker where to write the module groups."""
    if _groups_file not in node.config.stash:
        node.config.stash[_groups_file] = os.path.join(tempfile.mkdtemp(prefix="mmfm-xdist-"), "groups.json")
    node.workerinput[GROUPS_FILE] = node.config.stash[_groups_file]


def pytest_unconfigure(config):
    if _groups_file in config.stash:
        shutil.rmtree(os.path.dirname(config.stash[_groups_file]), ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadscope` with a module, or the group of modules sharing a pipeline fixture, as the unit of work.
    (Not `--dist loadgroup`: with pytest 9.2's node ids, pytest-xdist 3.8 drops its xdist_group marks,
    pytest-dev/pytest-xdist#1386; a group suffix on node ids would also break `--lf`.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleOrGroup(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # first called once every worker has collected, so written its file
                path = config.stash.get(_groups_file, "")
                self.groups = json.loads(open(path).read()) if os.path.exists(path) else {}
            return self.groups.get(_module(nodeid), _module(nodeid))

    return ModuleOrGroup(config, log)


@pytest.fixture(scope="session")
def prefect_api():
    """A temporary Prefect API for tests that run flows (started once per session, stopped after)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture()
def pseudonym_key(monkeypatch):
    key = "test-key-" + "0" * 40
    monkeypatch.setenv("MMFM_PSEUDONYM_KEY", key)
    return key


SMALL_TRAINING = {"pretrain": {"steps": 6, "eval_every": 3, "checkpoint_every": 3, "batch_size": 8},
                  "finetune": {"steps": 4, "eval_every": 2, "batch_size": 8},
                  "evaluate": {"n_boot": 20, "baseline_steps": 3, "min_group": 3, "gradcam_patients": 1},
                  # 40 patients: subgroups too small to judge, a few training steps: no better than chance or the
                  # baselines (the gate's evidence rules are tested in tests/registry/test_gate.py)
                  "promote": {"subgroup_gap_rule": "report",
                              "exceptions": {"tasks_above_chance": "tiny test cohort",
                                             "beats_baselines": "tiny test cohort"}}}


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory, prefect_api):
    """A workspace through every stage on 40 generated patients with a few training steps:
    (Workspace, the version flow's summary, the model stages' pipeline summary). Shared: copy it before changing it."""
    import os
    import shutil

    import yaml

    from flows.pipeline import DATA_STAGES, MODEL_STAGES, pipeline, render_dvc_yaml
    from flows.version import version
    from tasks.synth.generate import SynthConfig, generate
    from tasks.workspace import init_workspace

    previous = os.environ.get("MMFM_PSEUDONYM_KEY")
    os.environ["MMFM_PSEUDONYM_KEY"] = "test-key-" + "1" * 40
    root = tmp_path_factory.mktemp("trained")
    generate(root / "cohort", SynthConfig(patients=40, sites=2, seed=11, cxr_size=32, ct_shape=(2, 16, 16)))
    ws = init_workspace(root / "ws", dvc_yaml=render_dvc_yaml())
    shutil.copytree(root / "cohort", ws.extracts / "cohort")
    params = yaml.safe_load(ws.params_file.read_text())
    for section, values in SMALL_TRAINING.items():
        params[section].update(values)
    ws.params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    pipeline(workspace=ws.root, stages=list(DATA_STAGES))
    published = version(workspace=ws.root)
    ran = pipeline(workspace=ws.root, stages=list(MODEL_STAGES))
    yield ws, published, ran
    if previous is None:
        os.environ.pop("MMFM_PSEUDONYM_KEY", None)
    else:
        os.environ["MMFM_PSEUDONYM_KEY"] = previous

"""Shared fixtures. Telemetry is switched off before anything from the stack is imported."""

from __future__ import annotations

from tasks.settings import quiet_telemetry

quiet_telemetry()

import pytest  # noqa: E402


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
                  "promote": {"subgroup_gap_rule": "report"}}  # 40 patients: subgroups too small to judge


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

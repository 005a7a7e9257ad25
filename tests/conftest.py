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

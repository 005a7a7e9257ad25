"""One typed settings object for everything a deployment may override from the environment.

Defaults are the embedded ones (docs/architecture.md §9): MLflow on SQLite and a DVC remote inside the workspace's
`.mmfm/`, Prefect's ephemeral API. Nothing here touches the filesystem or the environment at import time:
`quiet_telemetry()` is called by the CLI entry point and by tests/conftest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Telemetry of the stack, off unless the user turned it on (STACK.md: each of these phones home otherwise).
TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # one line per file otherwise, in every CLI output
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "RAY_USAGE_STATS_ENABLED": "0",
}
# a flow run sends a heartbeat this often (s); prefect.yaml's automation marks a run CRASHED after 90 s without
# one, so Prefect's default of 180 s would mark live runs crashed (30 is Prefect's minimum)
# Prefect gives its temporary API server 20 s to start; a busy machine (training in another process, CI runners)
# needs more, and the command then fails with a time-out although nothing is wrong
RUN_DEFAULTS = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}


# MLflow's client retries a failed request 7 times with back-off factor 2 (about 4 minutes) and waits up to 120 s for
# each answer, so a command against a tracking server that is down would hang for many minutes per request. These
# bounds (a user's own values win): 4 retries after 0, 4, 8 and 16 s (urllib3 does not wait before the first retry;
# plus up to 1 s of jitter each), i.e. about half a minute before a request to a dead server gives up.
MLFLOW_CLIENT_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def bounded_mlflow_retries() -> None:
    """Set MLFLOW_CLIENT_BOUNDS where the user has not set these variables (MLflow reads them at each request)."""
    for key, value in MLFLOW_CLIENT_BOUNDS.items():
        os.environ.setdefault(key, value)


def quiet_telemetry() -> None:
    """Set the stack's telemetry switches off (and the run heartbeat) where the user has not set them."""
    for key, value in {**TELEMETRY_OFF, **RUN_DEFAULTS}.items():
        os.environ.setdefault(key, value)


class Settings(BaseSettings):
    """Where things live and how to reach them. Every field can be set by environment (MMFM_<FIELD>, or the
    tool's own variable where it has one)."""

    model_config = SettingsConfigDict(env_prefix="MMFM_", extra="ignore")

    workspace: Path = Field(default_factory=Path.cwd)
    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "MMFM_MLFLOW_TRACKING_URI"))
    prefect_api_url: str | None = Field(
        default=None, validation_alias=AliasChoices("PREFECT_API_URL", "MMFM_PREFECT_API_URL"))
    dvc_remote_url: str | None = None  # e.g. s3://bucket/mmfm ; default: <workspace>/.mmfm/dvc-remote
    pseudonym_key: SecretStr | None = None  # MMFM_PSEUDONYM_KEY: never written into the workspace by ingest

    @property
    def state_dir(self) -> Path:
        return self.workspace / ".mmfm"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.state_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_location(self) -> str:
        return (self.state_dir / "mlartifacts").resolve().as_uri()

    @property
    def dvc_remote(self) -> str:
        return self.dvc_remote_url or str((self.state_dir / "dvc-remote").resolve())


def get_settings(workspace: Path | None = None) -> Settings:
    """Settings from the environment, with `workspace` (from --workspace) taking precedence."""
    return Settings(workspace=workspace) if workspace is not None else Settings()


# Libraries that log or warn at INFO about their own housekeeping (database migrations, temporary servers, cluster
# start-up, HTTP retries, DICOM values they tolerate): an operator running `mmfm` sees only mmfm's own lines unless
# they ask for more with `mmfm -v` (Prefect's console lines are muted by flows.cli.progress; its run database keeps
# every log line whatever the console shows).
THIRD_PARTY_LOGGERS = ("pydicom", "distributed", "dask", "mlflow", "great_expectations", "urllib3", "alembic",
                       "httpx", "httpcore", "evidently", "fsspec", "numexpr", "matplotlib", "PIL", "asyncio")


def quiet_third_party(verbose: int = 0) -> None:
    """Third-party logging at WARNING (verbose 0), INFO (1) or DEBUG (2+), in this process and in the processes it
    starts (Dask workers, torchrun); their Python warnings off unless verbose."""
    import logging
    import warnings

    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", logging.getLevelName(level))  # MLflow sets its level at import
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if verbose <= 0:
        os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")  # the temporary server's own process
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        warnings.simplefilter("ignore")

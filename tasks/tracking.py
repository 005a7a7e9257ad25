"""MLflow wiring shared by every stage: where the tracking store is, which dataset version a run trained on, the
tags every run carries so a model can be traced back to its data and code, and the one outage policy.

Outage policy (tasks/stage/run.py applies it to every stage): an MLflow call that fails for want of a server
(refused, dropped or timed-out connection, after the client's own bounded retries: tasks.settings) becomes
`TrackingUnreachable`, whose message is one line naming the tracking URI. An answer from the server (403, a missing
model, ...) is not an outage and passes through unchanged.

Embedded default: SQLite under <workspace>/.mmfm/mlflow.db with artifacts in .mmfm/mlartifacts; MLFLOW_TRACKING_URI
(an `mlflow server`, with MLFLOW_TRACKING_USERNAME/PASSWORD when it has basic-auth) replaces both. The embedded store
is rebased onto the workspace it is opened in (tasks/portable_store.py), so a moved or copied workspace writes only
into itself.

What a run shows in the MLflow UI: its real duration (`start_run` dates it from the end of the stage's previous run,
or from the stage's start, not from the moment its results were logged), the stage's parameters and the curated
dataset it read (`describe_run`: an `mlflow.data` MetaDataset named by dataset version and md5, no rows), and the
experiment opens in MLflow's model-training view (EXPERIMENT_KIND), not the GenAI one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import requests
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag, Metric, Param

from tasks import portable_store, tags
from tasks.lineage import code_version
from tasks.settings import get_settings
from tasks.versioning.dataset import current

_SET_HERE: set[str] = set()  # URIs configure() chose: mlflow.set_tracking_uri exports them to the environment
_CLOCK: dict[str, int] = {}  # workspace root -> when its stage's current piece of work began (ms since the epoch)
# the experiment tag MLflow 3's UI reads to choose its layout: runs, metrics and models, not traces and prompts
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def configure(root: Path) -> str:
    """Point MLflow at the workspace's tracking store; returns the URI.

    mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into os.environ; a value we put there ourselves must not
    be mistaken for the user's choice when the next workspace in this process is configured."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        if os.environ.get(var) in _SET_HERE:
            del os.environ[var]
    settings = get_settings(Path(root))
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = settings.tracking_uri
    if not settings.mlflow_tracking_uri:
        _SET_HERE.add(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if uri.startswith("sqlite:"):
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        if not settings.mlflow_tracking_uri:
            portable_store.rebase(settings.state_dir / "mlflow.db", settings.artifact_location)
    _CLOCK[str(Path(root).resolve())] = _now_ms()  # a stage configures first: its work starts now
    return uri


def _now_ms() -> int:
    return int(time.time() * 1000)


def experiment_id(root: Path, name: str) -> str:
    """The experiment's id, created with the workspace's artifact location on the embedded store, in MLflow's
    model-training view (an experiment made before that tag existed gets it here)."""
    settings = get_settings(Path(root))
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        if any(found.tags.get(k) != v for k, v in EXPERIMENT_KIND.items()):
            for k, v in EXPERIMENT_KIND.items():
                mlflow.MlflowClient().set_experiment_tag(found.experiment_id, k, v)
        return found.experiment_id
    location = settings.artifact_location if settings.tracking_uri.startswith("sqlite:") else None
    return mlflow.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)


@contextmanager
def start_run(root: Path, experiment: str, run_name: str, run_tags: dict[str, str]) -> Iterator:
    """`mlflow.start_run` in the workspace's experiment, dated from when its work began: the end of the stage's
    previous run, or the stage's start (configure). A stage that logs its results once the work is done would
    otherwise show runs of a few milliseconds. A run tagged with a dataset version gets it as its dataset input."""
    key = str(Path(root).resolve())
    started = _CLOCK.get(key) or _now_ms()
    created = mlflow.MlflowClient().create_run(experiment_id(root, experiment), start_time=started,
                                               tags=run_tags, run_name=run_name)
    if run_tags.get(tags.DATASET_VERSION) and run_tags.get(tags.CURATED_MD5):  # the dataset it reads, as an input
        describe_run(created.info.run_id, facts={"dataset_version": run_tags[tags.DATASET_VERSION],
                                                 "curated_md5": run_tags[tags.CURATED_MD5]},
                     context="testing" if run_tags.get(tags.STAGE) == "evaluate" else "training")
    try:
        with _resumable(created.info.run_id) as run:
            yield run
    finally:
        _CLOCK[key] = _now_ms()


@contextmanager
def _resumable(run_id: str) -> Iterator:
    """`mlflow.start_run(run_id=...)` for a run this module created in a named experiment. MLflow refuses to resume a
    run whose experiment differs from one a caller chose with `mlflow.set_experiment` (process-wide state: a notebook,
    a plugin, another library); the run already names its experiment, so that choice is set aside for the resume
    (and kept for everything else)."""
    from mlflow.tracking import fluent

    chosen = getattr(fluent, "_active_experiment_id", None)
    fluent._active_experiment_id = None
    try:
        active = mlflow.start_run(run_id=run_id)
    finally:
        fluent._active_experiment_id = chosen
    with active as run:
        yield run


def _flat_params(params: dict, prefix: str = "") -> dict[str, str]:
    """Nested parameters as MLflow params (`experts.prior_steps`), values as text of at most 6000 characters."""
    flat = {}
    for k, v in params.items():
        if isinstance(v, dict) and v:
            flat.update(_flat_params(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = (json.dumps(v) if isinstance(v, list | dict) else str(v))[:6000]
    return flat


def dataset_entity(facts: dict) -> MetaDataset:
    """The curated dataset a run read, as MLflow sees it: its version as name, dvc.lock's md5 as digest, the
    workspace-relative folder as source. Metadata only: no row, no value crosses into MLflow."""
    source = _CuratedSource(version=str(facts["dataset_version"]), path="data/curated")
    return MetaDataset(source, name=str(facts["dataset_version"]), digest=str(facts["curated_md5"])[:36])


def describe_run(run_id: str, *, params: dict | None = None, facts: dict | None = None,
                 context: str = "training") -> None:
    """Log a stage's parameters and the dataset it read (`context`: training, testing, ...) to run `run_id`, open
    or finished. Idempotent: parameters the run already has are kept (MLflow refuses to change one)."""
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    if params:
        logged = run.data.params  # a key logged whole (`lora` as JSON) is not logged again part by part
        new = {k: v for k, v in _flat_params(params).items() if k not in logged and k.split(".")[0] not in logged}
        items = [Param(k, v) for k, v in sorted(new.items())]
        for start in range(0, len(items), 100):  # the tracking API takes at most 100 params per batch
            client.log_batch(run_id, params=items[start:start + 100])
    if facts and facts.get("curated_md5"):
        known = {d.dataset.digest for d in (run.inputs.dataset_inputs if run.inputs else [])}
        entity = dataset_entity(facts)._to_mlflow_entity()
        if entity.digest not in known:
            client.log_inputs(run_id, [DatasetInput(entity, [InputTag("mlflow.data.context", context)])])


class _CuratedSource(DatasetSource):
    """Where a curated dataset lives: a dataset version of a workspace's data/curated (relative: it moves)."""

    def __init__(self, version: str, path: str):
        self.version, self.path = version, path

    @staticmethod
    def _get_source_type() -> str:
        return "mmfm_curated"

    def load(self, **kwargs):
        raise NotImplementedError("read data/curated of the workspace at this dataset version (mmfm lineage)")

    @staticmethod
    def _can_resolve(raw_source) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source):
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"dataset_version": self.version, "path": self.path}

    @classmethod
    def from_dict(cls, source_dict: dict) -> _CuratedSource:
        return cls(version=source_dict["dataset_version"], path=source_dict["path"])


def dataset_facts(root: Path) -> dict:
    """The curated data a run uses, as the facts every stage records (tasks/versioning/dataset.py decides them)."""
    return current(root).facts()


def run_tags(root: Path, stage: str, facts: dict | None = None) -> dict[str, str]:
    """Tags of every training/evaluation run: stage, dataset version and hash, contract versions, code version."""
    facts = facts or dataset_facts(root)
    return {tags.STAGE: stage, tags.DATASET_VERSION: facts["dataset_version"], tags.CURATED_MD5: facts["curated_md5"],
            tags.CONTRACT_VERSIONS: json.dumps(facts.get("contract_versions", {}), sort_keys=True),
            tags.CODE_VERSION: code_version()}


def log_curve(values: list[float] | dict[int, float], key: str) -> None:
    """A loss curve as one MLflow metric with a step per point (list index + 1, or the dict's steps), in one call."""
    points = values.items() if isinstance(values, dict) else enumerate(values, start=1)
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(v), now, int(step)) for step, v in points]
    run = mlflow.active_run()
    for start in range(0, len(metrics), 1000):  # the tracking API takes at most 1000 metrics per batch
        mlflow.MlflowClient().log_batch(run.info.run_id, metrics=metrics[start:start + 1000])


class TrackingUnreachable(RuntimeError):
    """The tracking server did not answer, after MLflow's own bounded retries; the message names its URI."""


def transport_failure(exc: BaseException) -> BaseException | None:
    """The refused, dropped or timed-out connection behind `exc`, if that is what it is (rather than an answer from
    the server). The whole cause chain is searched: MLflow re-raises one as something else ("Failed to get logged
    model with ID ...")."""
    transport = (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError,
                 requests.exceptions.ChunkedEncodingError)
    chain, seen = [exc], set()
    while chain:
        e = chain.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, transport) or "Max retries exceeded" in str(e):
            return e
        chain += [e.__cause__, e.__context__]
    return None


def unreachable_message(failure: BaseException) -> str:
    """One line naming the tracking URI (without user or password) and how the connection failed."""
    uri = urlsplit(mlflow.get_tracking_uri())
    shown = f"{uri.scheme}://{uri.hostname}{f':{uri.port}' if uri.port else ''}{uri.path}"
    text = str(failure).lower()
    reasons = (("error responses", "server errors"), ("refused", "connection refused"), ("timed out", "timed out"),
               ("timeout", "timed out"), ("reset", "connection reset"), ("without response", "connection dropped"))
    why = next((w for k, w in reasons if k in text), "no answer")
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    return (f"MLflow tracking server {shown} unreachable ({why}, after {retries} retries with back-off); rerun once "
            "it answers")


@contextmanager
def tracking_errors() -> Iterator[None]:
    """A block whose MLflow calls fail for want of a server raises TrackingUnreachable, decided here where the
    exception's cause chain is still whole."""
    try:
        yield
    except TrackingUnreachable:
        raise
    except Exception as exc:
        failure = transport_failure(exc)
        if failure is None:
            raise
        raise TrackingUnreachable(unreachable_message(failure)) from exc

"""What every `mmfm` command shares: the app, the common options, output, and error handling.

Contract for every command: `--workspace DIR` (default: the current directory) and `--json`, which makes the last
line of stdout one JSON object summarising what happened. Exit 0: the stage did its job (quarantined input is not a
failure); exit 1: it could not, with one line on stderr naming why, in words (`--debug` for the traceback). That line
never quotes input: an exception whose message may quote what was read (a parser's, a schema's, a file name) is shown
by its rule only (tasks.scrub); `--debug` shows the original, on this terminal only (docs/privacy.md). Arguments that
cannot work (a missing path, a malformed model reference, an unknown split or runner) are refused by `preflight`
before Prefect, MLflow or torch load: a mistake costs a second, not a temporary Prefect server's start. Third-party
logging is quiet unless `mmfm -v` (tasks.settings.quiet_third_party, flows.cli.progress); off a terminal nothing is
wrapped (a path in a pipe or a log file stays whole).
The command modules (data, ingest, models, registry, audit) import only this module; flows/cli/__init__.py imports
them to register their commands. Heavy libraries (Prefect, MLflow, torch, MONAI, polars, rich) are imported inside
the functions that need them, so `mmfm --help` stays fast.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from tasks.scrub import RULES, carries_values, is_value_free, rule_of
from tasks.settings import bounded_mlflow_retries, quiet_telemetry, quiet_third_party
from tasks.workspace_lock import WAIT_ENV, WorkspaceBusy

# errors whose message already says what happened and what to do (matched by name: importing their modules would
# load Prefect/DVC into every CLI start)
SELF_EXPLAINING = ("CuratedChanged", "PublishError", "NoSpaceLeft", "PromotionRefused", "TrackingUnreachable",
                   "PipelineError", "UngatedAlias")

app = typer.Typer(
    name="mmfm", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Governed multimodal medical foundation model: ingest, de-identify, validate, version, train, register, "
         "monitor.",
)
VERBOSE_ENV = "MMFM_VERBOSE"  # -v count (or set by the user), read by every command and the processes it starts


def verbosity() -> int:
    try:
        return int(os.environ.get(VERBOSE_ENV, "0"))
    except ValueError:
        return 0


def show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            sys.stdout.write(f"mmfm {version('mmfm')}\n")
        except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
            sys.stdout.write("mmfm (not installed)\n")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help=(
        "Show the libraries' own logging too (Prefect, MLflow, DVC, Dask, pydicom...): -v INFO, -vv DEBUG."))] = 0,
    show: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                       help="Print mmfm's version and exit.")] = False,
) -> None:
    """Governed multimodal medical foundation model: ingest, de-identify, validate, version, train, register,
    monitor."""
    if verbose:
        os.environ[VERBOSE_ENV] = str(verbose)

WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Workspace directory (git + DVC repo).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON summary as the last line of stdout.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback on error.")]
WaitOpt = Annotated[float | None, typer.Option(
    "--wait", help="Seconds to wait for another process holding the workspace (default 0: refuse at once, naming it; "
                   f"also {WAIT_ENV}).")]


class StageError(Exception):
    """A stage could not do its job; the message names the rule or input at fault (and never quotes PHI)."""


def console(stderr: bool = True):
    """Progress and errors go to stderr; human summaries to stdout (replaced by the JSON line under --json)."""
    from rich.console import Console

    con = Console(stderr=stderr, soft_wrap=True)
    if not con.is_terminal and "COLUMNS" not in os.environ:
        con.width = 10_000  # off a terminal (a pipe, a log file, CI) a path or a table row is never folded
    return con


def say(text: object, **kwargs) -> None:
    """One human line on stdout (never under --json: `emit` renders only without it)."""
    console(stderr=False).print(text, **kwargs)


def command(fn: Callable) -> Callable:
    """Run a command with telemetry off; turn any failure into one line on stderr and exit 1 (unless --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        quiet_telemetry()
        quiet_third_party(verbosity())
        bounded_mlflow_retries()  # a dead tracking server fails in about a minute, not MLflow's 4 (every command)
        try:
            preflight(fn.__name__, kwargs)  # before any import of Prefect, MLflow or torch, and before any server
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI boundary: one clear line, not a traceback
            if kwargs.get("debug"):
                reveal(exc)
                raise
            from rich.markup import escape

            console().print(f"[bold red]error:[/] {escape(error_line(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


RULE_MEANING = {rule: what for _, rule, what in RULES} | {"io.no_space": "no space left on device",
                                                          "internal.error": "an unexpected error"}
WITHHELD_NOTE = "the details are withheld, they may quote input (--debug shows them)"


def error_line(exc: BaseException) -> str:
    """The one stderr line for a failed command, in words (no Python class names): never a message that may quote
    input (tasks.scrub); a failure nobody foresaw says so and points at --debug."""
    rule = getattr(exc, "rule", None)
    if isinstance(rule, str) and hasattr(exc, "where"):  # tasks.scrub.PipelineError: a step, a rule, no values
        line = f"{exc.where}: {RULE_MEANING.get(rule, 'failed')} ({rule}); {WITHHELD_NOTE}"
    elif carries_values(exc):
        rule, what = rule_of(exc)
        line = f"{what} ({rule}); {WITHHELD_NOTE}"
    else:
        expected = (isinstance(exc, StageError | ValueError | WorkspaceBusy) or is_value_free(exc)
                    or type(exc).__name__ in SELF_EXPLAINING)
        line = str(exc).strip() or RULE_MEANING["internal.error"]
        if not expected:
            line += " (unexpected; --debug shows the trace)"
    return "; ".join(part.strip() for part in line.splitlines() if part.strip())


def reveal(exc: BaseException) -> None:
    """--debug: the traceback shows the original exception a stage boundary hid (tasks.scrub), on this terminal only
    (Prefect's database got the value-free one)."""
    if exc.__context__ is not None:
        exc.__suppress_context__ = False


def mlflow_errors(fn: Callable) -> Callable:
    """MLflow errors as one line: a tracking server that does not answer (after the client's bounded retries, see
    tasks.settings.MLFLOW_CLIENT_BOUNDS) is named by its URI; permission errors (403/401 from a basic-auth server)
    and other refusals quote MLflow's first line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import requests
        from mlflow.exceptions import MlflowException

        from tasks.tracking import TrackingUnreachable, transport_failure, unreachable_message

        bounded_mlflow_retries()
        try:
            return fn(*args, **kwargs)
        except TrackingUnreachable as exc:
            raise StageError(str(exc)) from None
        except (MlflowException, requests.RequestException) as exc:
            failure = transport_failure(exc)
            if failure is not None:
                raise StageError(unreachable_message(failure)) from None
            if isinstance(exc, requests.RequestException):
                raise
            raise StageError(f"MLflow refused: {str(exc).splitlines()[0][:300]}") from None

    return wrapper


def lock_wait(seconds: float | None) -> None:
    """--wait: how long the workspace lock (tasks.workspace_lock) may be waited for by every flow this command runs."""
    if seconds is not None:
        os.environ[WAIT_ENV] = str(seconds)


def emit(result: dict, as_json: bool, render: Callable[[dict], None]) -> None:
    """Human summary on stderr/stdout, or the JSON object as the very last line of stdout."""
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    else:
        render(result)


def progress_bar(total: int, description: str):
    """A rich progress bar on stderr, so stdout stays clean for --json."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    con = console()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=con, transient=True, disable=not con.is_terminal)
    return bar, bar.add_task(description, total=total)


def use_workspace(workspace: Path) -> Path:
    """Point Prefect's home at the workspace's state folder (before Prefect is imported) and return the root."""
    root = workspace.resolve()
    if not (root / ".dvc").is_dir():
        raise StageError(f"{root} is not an mmfm workspace: run `mmfm init {workspace}` first")
    os.environ.setdefault("PREFECT_HOME", str(root / ".mmfm" / "prefect"))
    return root


class OneLine(logging.Filter):
    """Logging filter: Prefect logs a failed run's traceback; the CLI shows one line instead (unless --debug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def quiet_tracebacks(debug: bool) -> None:
    """After `import prefect`: Prefect's console lines off (unless -v or --debug; its run database keeps them), and
    no traceback in what Prefect logs of a failed run (unless --debug)."""
    if not debug and not verbosity():
        from flows.cli.progress import mute_prefect_console

        mute_prefect_console()
    if debug:
        return
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.engine"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(OneLine())


# commands whose `model` parameter is a registry reference (pretrain's `model` is an architecture name)
MODEL_REF_COMMANDS = ("predict", "monitor", "promote")
RUNNERS = ("threads", "dask", "ray")  # tasks.runners.RUNNERS (that module imports Prefect: checked before it loads)
SPLITS = ("test", "val", "train", "all")
PATH_ARGUMENTS = ("source", "cohort", "sample_sheet")  # what must exist before a flow is worth starting


def model_ref_ok(ref: str) -> bool:
    """NAME/VERSION, NAME@alias, models:/NAME/VERSION or models:/NAME@alias (tasks.registry: the forms it resolves)."""
    body = ref.strip().removeprefix("models:/")
    if "@" in body:
        name, alias = body.split("@", 1)
        return bool(name and alias)
    name, _, version = body.rpartition("/")
    return bool(name) and version.isdigit()


def preflight(command_name: str, params: dict) -> None:
    """Refuse, in one line and before Prefect, MLflow or torch load, arguments that cannot work: a path that does not
    exist (named by its argument, never by its value: an extract's path may name a patient), a malformed model
    reference, an unknown split or task runner. The workspace itself is checked by use_workspace."""
    for name in PATH_ARGUMENTS:
        value = params.get(name)
        if isinstance(value, Path) and not value.exists():
            raise StageError(f"{name.upper()}: no such file or folder (the path is not repeated: it may name a "
                             "patient)")
    model = params.get("model")
    if command_name in MODEL_REF_COMMANDS and isinstance(model, str) and not model_ref_ok(model):
        flag = "MODEL" if command_name == "promote" else "--model"
        raise StageError(f"{flag} {model!r}: name a model version as NAME/VERSION or NAME@alias "
                         "(models:/NAME/VERSION and models:/NAME@alias too)")
    split = params.get("split")
    if command_name == "predict" and split is not None and split not in SPLITS:
        raise StageError(f"--split {split!r}: choose one of {', '.join(SPLITS)}")
    runner = params.get("runner")
    if isinstance(runner, str) and runner not in RUNNERS:
        raise StageError(f"--runner {runner!r}: choose one of {', '.join(RUNNERS)}")


def threads() -> None:
    """One intra-op thread per core we may use: oversubscribed BLAS threads slow CPU training several-fold."""
    import torch

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))


def run_flow(module: str, fn: str, as_json: bool, debug: bool, render: Callable[[dict], None], **params) -> dict:
    """Import `module` (a flow: only now, so Prefect loads only when a command runs), call `fn(**params)`, emit."""
    stage = getattr(importlib.import_module(module), fn)
    quiet_tracebacks(debug)  # after the import: `from prefect import flow` is what sets up Prefect's log handlers
    from flows.cli.progress import flow_progress

    with flow_progress(getattr(stage, "name", fn)):
        summary = stage(**params)
    emit(summary, as_json, render)
    return summary

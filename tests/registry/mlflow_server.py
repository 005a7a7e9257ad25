"""A real `mlflow server` on loopback for tests that need the REST API (and its basic-auth app).

Why a real process: the promotion story depends on the server refusing writes (403/401), which only the
`--app-name basic-auth` app does; an in-process store would not exercise it. One worker and no job consumers
keep it at ~0.5 GB and ~5 s to ready on a 2-core machine (STACK.md).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ADMIN_USERNAME = "mmfm-admin"
ADMIN_PASSWORD = "mmfm-test-admin-password-7f3a"  # a test-only secret; never MLflow's documented default
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class MlflowServer:
    url: str
    root: Path
    auth: bool
    admin_username: str = ADMIN_USERNAME
    admin_password: str = ADMIN_PASSWORD


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(root: Path, port: int, auth: bool) -> list[str]:
    """The exact `mlflow server` arguments (kept in one place so the report and the test agree)."""
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin), "server",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    return cmd + (["--app-name", "basic-auth"] if auth else [])


def write_auth_config(root: Path) -> Path:
    """basic-auth ini: our own admin (MLflow 3.17 refuses to bootstrap without a password), READ by default."""
    ini = root / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{root / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN_USERNAME}\n"
        f"admin_password = {ADMIN_PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return ini


def server_env(root: Path, auth: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "MLFLOW_AUTH_"))}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    if auth:
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(write_auth_config(root))
        # the auth app refuses to start without a static CSRF secret (MLflow 3.17)
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(32)
    return env


@contextmanager
def mlflow_server(root: Path, *, auth: bool = False, timeout_s: float = READY_TIMEOUT_S) -> Iterator[MlflowServer]:
    """Start a server under `root` (SQLite + local artifacts), yield it once /health answers, always stop it.

    The server runs in its own process group so uvicorn's worker dies with it.
    """
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(server_command(root, port, auth), cwd=root, env=server_env(root, auth),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, timeout_s, root / "server.log")
        yield MlflowServer(url=url, root=root, auth=auth)
    finally:
        _stop(proc)
        log.close()


def _wait_ready(url: str, proc: subprocess.Popen, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"mlflow server not ready after {timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the whole group, then SIGKILL whatever is left after 10 s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
    try:  # the leader may be gone while a worker lingers in the group
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass

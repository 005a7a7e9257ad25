"""A real Orthanc on loopback for tests: free high ports, a throwaway database, DICOMweb on, a test user.

Kept apart from conftest.py so a test can start (and stop) its own server, e.g. to see how the client
behaves against a PACS that has gone away.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

APT_LINE = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y orthanc orthanc-dicomweb dcmtk"
USER, PASSWORD = "mmfm-test", "not-a-secret-test-only"
AE_TITLE = "ORTHANC_TEST"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0  # Orthanc takes ~3.5 s to exit after SIGTERM


def find_binary() -> str | None:
    """Path of the Orthanc executable: $MMFM_ORTHANC_BINARY if set (an Orthanc installed elsewhere), else the PATH,
    else /usr/sbin, where the Debian package puts it and which a non-root PATH may lack."""
    override = os.environ.get("MMFM_ORTHANC_BINARY")
    if override is not None:
        return override if os.access(override, os.X_OK) else None
    found = shutil.which("Orthanc")
    return found or ("/usr/sbin/Orthanc" if os.access("/usr/sbin/Orthanc", os.X_OK) else None)


def find_dicomweb_plugin() -> str | None:
    """The DICOMweb plugin's .so, as the orthanc-dicomweb package lists it (falls back to its usual folder)."""
    try:
        listed = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:  # not a Debian system
        listed = ""
    candidates = [p for p in listed.splitlines() if "DicomWeb" in p and ".so" in p]
    candidates += glob.glob("/usr/share/orthanc/plugins/libOrthancDicomWeb.so*")
    return next((p for p in candidates if os.path.isfile(p)), None)


def free_port() -> int:
    """A port the kernel says is free now. Orthanc binds 0.0.0.0, so a port taken on any address is refused here too."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OrthancServer:
    """One Orthanc process. `start()` returns when `GET /system` answers; `stop()` waits for the process to exit."""

    workdir: Path
    binary: str
    plugin: str
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    user: str = USER
    password: str = PASSWORD
    aet: str = AE_TITLE
    lua_scripts: tuple[str, ...] = ()  # Orthanc's own Lua hooks, e.g. a fault to inject (tests/reliability)
    process: subprocess.Popen | None = None

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.rest_url}/dicom-web"

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    def config(self) -> dict:
        """The settings STACK.md lists as working on Orthanc 1.10.1; everything else stays at Orthanc's default."""
        return {
            "Name": "mmfm-test",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "Plugins": [self.plugin],
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomModalities": {},
            "SaveJobs": False,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{self.http_port}", "Ssl": False},
            "LuaScripts": list(self.lua_scripts),
        }

    def start(self) -> OrthancServer:
        """Start (or start again, on the same ports and database, after `stop()` or a crash)."""
        config_dir = self.workdir / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "orthanc.json").write_text(json.dumps(self.config(), indent=2))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen([self.binary, str(config_dir)], stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(auth=self.auth, timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n{self.log_tail()}")
                try:
                    if client.get(f"{self.rest_url}/system").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc not ready after {READY_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, then wait: the database is not released until the process has gone."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_orthanc(workdir: Path, binary: str, plugin: str, attempts: int = 3, **options) -> OrthancServer:
    """Start an Orthanc, with fresh ports on each attempt: a port free when probed may be taken before Orthanc binds.
    `options` are further OrthancServer fields (e.g. `lua_scripts`)."""
    for attempt in range(1, attempts + 1):
        server = OrthancServer(workdir / f"try{attempt}", binary, plugin, **options)
        try:
            return server.start()
        except RuntimeError:
            server.stop()
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")

"""The Orthanc fixture: one real PACS on loopback for the whole session (starting one takes ~0.2 s, stopping ~3.5 s).

A missing Orthanc skips these tests on a workstation but fails them in CI, where .ci/run installs it: there a missing
binary is a broken environment, not an optional extra.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.pacs.orthanc import APT_LINE, OrthancServer, find_binary, find_dicomweb_plugin, start_orthanc


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def orthanc_install() -> tuple[str, str]:
    """(Orthanc binary, DICOMweb plugin), or skip / fail as the module docstring says."""
    binary, plugin = find_binary(), find_dicomweb_plugin()
    if binary and plugin:
        return binary, plugin
    missing = "Orthanc" if not binary else "the Orthanc DICOMweb plugin"
    message = f"{missing} is not installed; install it with: {APT_LINE}"
    if _in_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory, orthanc_install: tuple[str, str]) -> Iterator[OrthancServer]:
    """A running Orthanc: `.dicomweb_url`, `.rest_url`, `.auth`, `.dicom_port`, `.aet`. Stopped (and waited for) after
    the session."""
    server = _start(tmp_path_factory.mktemp("orthanc"), orthanc_install)
    yield server
    server.stop()


@pytest.fixture
def orthanc_factory(tmp_path: Path, orthanc_install: tuple[str, str]) -> Iterator[Callable[..., OrthancServer]]:
    """Start extra, short-lived Orthancs (e.g. one to stop under the client's feet); all are stopped afterwards.
    Keyword arguments are OrthancServer fields (e.g. `lua_scripts`)."""
    servers: list[OrthancServer] = []

    def start(**options) -> OrthancServer:
        servers.append(_start(tmp_path / f"orthanc{len(servers)}", orthanc_install, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def _start(workdir: Path, install: tuple[str, str], **options) -> OrthancServer:
    try:
        return start_orthanc(workdir, *install, **options)
    except RuntimeError as exc:  # installed but does not come up: a real failure, locally too
        pytest.fail(str(exc))

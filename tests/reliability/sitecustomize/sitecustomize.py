"""Egress recorder for tests/reliability/test_no_egress.py: Python imports `sitecustomize` at start-up from
PYTHONPATH, so with this folder on PYTHONPATH every Python process of a run (the CLI, the ephemeral Prefect server,
DVC, torchrun ranks: each inherits the environment) installs an audit hook before any other code runs.

MMFM_EGRESS_LOG=<folder>: each process appends one JSON line per `socket.connect`, `socket.sendto` and
`socket.getaddrinfo` to <folder>/<pid>.ndjson (one os.write per line on an O_APPEND file: no torn lines), *before*
the call proceeds. A destination that is not loopback, not a local socket and not this host's own name is then
refused (the hook raises PermissionError), so a test that finds egress has sent nothing out while finding it.
Each process also writes one `process.start` line with its command line, so a test can tell which processes ran
with the hook installed (most never open a socket at all).
Unset, this file does nothing.
"""

from __future__ import annotations

import json
import os
import socket
import sys

_LOG = os.environ.get("MMFM_EGRESS_LOG")
LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost", "0.0.0.0", "::", "", None}
_fd: list[int] = []


def _local_host(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    return host in LOCAL_HOSTS or (isinstance(host, str) and (host.startswith("127.")
                                                              or host in (socket.gethostname(), "ip6-localhost")))


def _describe(event: str, args: tuple) -> tuple[dict, bool]:
    """-> (record, is_local)."""
    if event == "socket.getaddrinfo":
        host, port = args[0], args[1]
        host = host.decode(errors="replace") if isinstance(host, bytes) else host
        return {"host": host, "port": port}, _local_host(host)
    sock, address = args[0], args[1]
    family = getattr(sock, "family", None)
    name = getattr(family, "name", str(family))
    if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        return {"family": name, "host": address[0], "port": address[1]}, _local_host(address[0])
    local = family == socket.AF_UNIX or name in ("AF_NETLINK",)
    return {"family": name, "address": address if isinstance(address, str) else repr(address)}, local


def _write(record: dict) -> None:
    if not _fd:
        os.makedirs(_LOG, exist_ok=True)
        _fd.append(os.open(os.path.join(_LOG, f"{os.getpid()}.ndjson"), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                           0o600))
    os.write(_fd[0], (json.dumps(record, default=repr) + "\n").encode())


def _hook(event: str, args: tuple) -> None:
    if event not in ("socket.connect", "socket.sendto", "socket.getaddrinfo"):
        return
    try:
        record, local = _describe(event, args)
    except Exception as exc:  # noqa: BLE001 - an unparsable call is recorded as such, never let through silently
        record, local = {"unparsed": repr(exc)}, False
    _write({"pid": os.getpid(), "argv0": (sys.argv or ["?"])[0][-80:], "event": event, "local": local, **record})
    if not local:
        raise PermissionError(f"egress refused by tests/reliability/sitecustomize: {event} {record}")


def _command_line() -> str:
    try:
        with open("/proc/self/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()[:300]
    except OSError:
        return " ".join(sys.orig_argv)[:300]


if _LOG:
    _write({"pid": os.getpid(), "event": "process.start", "local": True, "command": _command_line()})
    sys.addaudithook(_hook)

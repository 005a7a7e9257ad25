"""What an ingest refuses before it writes anything: a site name outside the configured pattern, a source with no
file in it, and a pseudonym key other than the one the workspace's data was pseudonymised with.

Why refuse instead of carrying on: each of these used to succeed quietly and do harm later. An empty `--site` made
validate quarantine every row and `mmfm version` publish an empty dataset; an empty folder read as "ingested before";
a different MMFM_PSEUDONYM_KEY staged the same people again under new pseudonyms (one patient, two ids, both in the
training data). Messages name the rule and the fix, never a value from the extract; the key is never shown, only a
keyed fingerprint of it (HMAC of a constant), which reveals nothing about the key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tasks.atomic import write_text
from tasks.deid import Pseudonymizer

SITE_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62})\Z")  # lower-case letters, digits, '-'; 1-63 characters
FINGERPRINT_FILE = "pseudonym-key.fingerprint"


class IngestRefused(ValueError):
    """The ingest did not start; the message names the rule broken and how to fix it. Nothing was written."""


def check_site(site: str) -> str:
    """The site name, if it matches SITE_PATTERN (it names staged rows, splits and per-site drift)."""
    if not isinstance(site, str) or not SITE_PATTERN.match(site):
        raise IngestRefused(f"site {site!r} is not a site name: use 1-63 lower-case letters, digits and '-', "
                            "starting with a letter or digit (e.g. site-a)")
    return site


def check_source(source: Path) -> Path:
    """The extract path, if it is a readable file or a folder holding at least one (non-hidden) file."""
    source = Path(source)
    if not source.exists():
        raise IngestRefused("the extract path does not exist")
    if not os.access(source, os.R_OK) or (source.is_dir() and not os.access(source, os.X_OK)):
        raise IngestRefused("the extract path is not readable by this user")
    if source.is_dir() and not any(p.is_file() and not p.name.startswith(".") for p in source.rglob("*")):
        raise IngestRefused("the extract folder holds no file to ingest (an empty source is an error, not "
                            "'nothing new')")
    return source


def key_fingerprint(keys: Pseudonymizer) -> str:
    """A keyed fingerprint of the pseudonym key: equal keys, equal fingerprints; the key cannot be derived from it."""
    return keys.digest("mmfm-key-fingerprint-v1").hex()[:16]


def check_key(state_dir: Path, keys: Pseudonymizer, *, record: bool = True) -> None:
    """Refuse a key other than the one this workspace (or monitoring area) was first ingested with; the first
    ingest records the key's fingerprint in <state>/pseudonym-key.fingerprint (`record=False`: only check)."""
    path = Path(state_dir) / FINGERPRINT_FILE
    mine = key_fingerprint(keys)
    if not path.exists():
        if record:
            write_text(path, mine + "\n")
        return
    recorded = path.read_text().strip()
    if recorded != mine:
        raise IngestRefused(f"MMFM_PSEUDONYM_KEY is not the key this workspace's data was pseudonymised with "
                            f"(fingerprint {mine}, the workspace's {recorded}): set the workspace's key, or ingest "
                            "into a new workspace (`mmfm init DIR`); mixing keys would give one patient two ids")

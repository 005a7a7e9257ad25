"""What ingest remembers between runs: which landed objects were processed, which PACS studies were fetched, which
extract is being published right now, the FHIR patients of earlier exports, and the demo's pseudonym key.

A small SQLite file in the workspace's state folder (.mmfm/ingest.db), outside the DVC-versioned data. Study UIDs are
stored keyed (HMAC), never raw.

Patient links: an incremental FHIR export does not repeat unchanged Patients, so its new resources refer to patients
of an earlier export. What resolving them needs is the pseudonym (the date offset derives from it): stored per site
as keyed hash of the FHIR Patient id -> pseudonym. Neither the FHIR id nor the MRN is stored. An ingest stages its
patients' links under its extract id (`stage_patient_links`); `mark_processed`, the commit point, makes them visible
in the same transaction, so a run killed before publishing leaves no link to a patient that was never published.

Resuming after `kill -9`: publishing an extract claims it first (`claim`: the run id that started it, kept until
`mark_processed` releases it in the same transaction that records its files). A run killed in between leaves the
claim behind, so the rerun publishes under the *first* run's id: its quarantine file, de-identification report and
ledger event carry the same names and bytes and are overwritten or found again, never written twice.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from contextlib import closing
from pathlib import Path

from tasks.deid.pseudonym import KEY_ENV

SCHEMA = """
CREATE TABLE IF NOT EXISTS processed (sha256 TEXT NOT NULL, kind TEXT NOT NULL, site TEXT NOT NULL,
                                      extract_id TEXT NOT NULL, run_id TEXT NOT NULL, PRIMARY KEY (sha256, kind, site));
CREATE TABLE IF NOT EXISTS fetched_studies (study_key TEXT PRIMARY KEY, url_key TEXT NOT NULL, run_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS publishing (kind TEXT NOT NULL, site TEXT NOT NULL, extract_id TEXT NOT NULL,
                                       run_id TEXT NOT NULL, PRIMARY KEY (kind, site, extract_id));
CREATE TABLE IF NOT EXISTS patient_links (site TEXT NOT NULL, id_key TEXT NOT NULL, pseudonym TEXT NOT NULL,
                                          PRIMARY KEY (site, id_key));
CREATE TABLE IF NOT EXISTS staged_patient_links (kind TEXT NOT NULL, site TEXT NOT NULL, extract_id TEXT NOT NULL,
                                                 id_key TEXT NOT NULL, pseudonym TEXT NOT NULL,
                                                 PRIMARY KEY (kind, site, extract_id, id_key));
"""


class IngestState:
    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "ingest.db"
        with closing(self._connect()) as db, db:
            db.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def processed(self, kind: str, site: str) -> set[str]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT sha256 FROM processed WHERE kind = ? AND site = ?", (kind, site)).fetchall()
        return {r[0] for r in rows}

    def claim(self, kind: str, site: str, extract_id: str, run_id: str) -> str:
        """The run id to publish this extract under: that of an earlier run killed while publishing it, else ours."""
        with closing(self._connect()) as db, db:
            db.execute("INSERT OR IGNORE INTO publishing VALUES (?, ?, ?, ?)", (kind, site, extract_id, run_id))
            return db.execute("SELECT run_id FROM publishing WHERE kind = ? AND site = ? AND extract_id = ?",
                              (kind, site, extract_id)).fetchone()[0]

    def mark_processed(self, shas: list[str], kind: str, site: str, extract_id: str, run_id: str) -> None:
        """Record the extract's files as processed, publish its staged patient links and release its claim, in one
        transaction (the commit point)."""
        extract = (kind, site, extract_id)
        with closing(self._connect()) as db, db:
            db.executemany("INSERT OR IGNORE INTO processed VALUES (?, ?, ?, ?, ?)",
                           [(s, kind, site, extract_id, run_id) for s in shas])
            db.execute("INSERT OR REPLACE INTO patient_links SELECT site, id_key, pseudonym FROM staged_patient_links "
                       "WHERE kind = ? AND site = ? AND extract_id = ?", extract)
            db.execute("DELETE FROM staged_patient_links WHERE kind = ? AND site = ? AND extract_id = ?", extract)
            db.execute("DELETE FROM publishing WHERE kind = ? AND site = ? AND extract_id = ?", extract)

    def stage_patient_links(self, kind: str, site: str, extract_id: str, links: dict[str, str]) -> None:
        """Keyed FHIR id -> pseudonym of the patients an extract ingests; visible once `mark_processed` commits it
        (a rerun of the same extract replaces what an interrupted run staged)."""
        extract = (kind, site, extract_id)
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM staged_patient_links WHERE kind = ? AND site = ? AND extract_id = ?", extract)
            db.executemany("INSERT INTO staged_patient_links VALUES (?, ?, ?, ?, ?)",
                           [(*extract, key, pseudonym) for key, pseudonym in sorted(links.items())])

    def patient_links(self, site: str) -> dict[str, str]:
        """Keyed FHIR Patient id -> pseudonym of every patient published from `site` so far."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT id_key, pseudonym FROM patient_links WHERE site = ?", (site,)).fetchall()
        return dict(rows)

    def fetched(self) -> set[str]:
        with closing(self._connect()) as db:
            return {r[0] for r in db.execute("SELECT study_key FROM fetched_studies").fetchall()}

    def mark_fetched(self, study_keys: list[str], url_key: str, run_id: str) -> None:
        with closing(self._connect()) as db, db:
            db.executemany("INSERT OR IGNORE INTO fetched_studies VALUES (?, ?, ?)",
                           [(k, url_key, run_id) for k in study_keys])


def ensure_demo_key(state_dir: Path, seed: int = 0) -> tuple[bool, Path]:
    """For `mmfm demo` only (synthetic data): use MMFM_PSEUDONYM_KEY if set, else the demo key kept in
    .mmfm/pseudonym.key (0600), exported to this process's environment. Returns (created, path).

    The demo key is derived from the synthetic cohort's seed, not drawn at random: the train/validation/test split
    follows the pseudonyms (tasks/validation/splits.py), so a random key per clone gave every clone other test
    patients and headline figures 0.1 apart. A published key protects nothing, which is why only the demo, whose
    patients are generated, may use one; real ingest refuses to run without MMFM_PSEUDONYM_KEY."""
    path = state_dir / "pseudonym.key"
    created = False
    if os.environ.get(KEY_ENV):
        return False, path
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(hashlib.sha256(f"mmfm demo key: synthetic data only, seed {seed}".encode()).hexdigest())
        created = True
    os.environ[KEY_ENV] = path.read_text().strip()
    return created, path

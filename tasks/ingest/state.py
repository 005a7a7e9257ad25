"""What ingest remembers between runs: which landed objects were processed, which PACS studies were fetched, which
extract is being published right now, the FHIR patients of earlier exports, and the demo's pseudonym key.

A small SQLite file in the workspace's state folder (.mmfm/ingest.db), outside the DVC-versioned data. Study UIDs are
stored keyed (HMAC), never raw.

Patient links: an incremental FHIR export does not repeat unchanged Patients, so its new resources refer to patients
of an earlier export. What resolving them needs is the pseudonym (the date offset derives from it): stored per site
as keyed hash of the FHIR Patient id -> pseudonym. Neither the FHIR id nor the MRN is stored. An ingest stages its
patients' links under its extract id (`stage_patient_links`); `mark_processed`, the commit point, makes them visible
in the same transaction, so a run killed before publishing leaves no link to a patient that was never published.

Pending omics samples (`pending`): samples that broke no rule but name a patient not yet ingested from their site.
Kept by place only (landed matrix object + position, sheet object + row, file suffixes) with the pseudonym the
sample's MRN will have, a keyed hash of the MRN (never the MRN, a sample id or a value), until a FHIR ingest of the
site publishes that patient and stages them (tasks/ingest/pending.py). Staging claims a batch of rows first
(`claim_pending`), so a run killed while publishing it republishes the very same batch; `resolve_pending` drops it.

Lab units (`lab_units`): LOINC code -> the UCUM unit the workspace curates a code outside data_contracts/labs.yaml
in, the first one seen for it (tasks/ingest/lab_units.py). Recorded when an extract is parsed, before it publishes:
a unit is a fact about the code, not about the extract, so a run killed before publishing leaves nothing wrong.

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
CREATE TABLE IF NOT EXISTS lab_units (loinc TEXT PRIMARY KEY, unit TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (site TEXT NOT NULL, extract_id TEXT NOT NULL, sha256 TEXT NOT NULL,
                                    location TEXT NOT NULL, suffix TEXT NOT NULL, sheet_sha256 TEXT NOT NULL,
                                    sheet_location TEXT NOT NULL, sheet_suffix TEXT NOT NULL,
                                    patient_key TEXT NOT NULL, reason TEXT NOT NULL, batch TEXT NOT NULL DEFAULT '',
                                    PRIMARY KEY (site, sha256, location));
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

    PENDING_COLUMNS = ("site", "extract_id", "sha256", "location", "suffix", "sheet_sha256", "sheet_location",
                       "sheet_suffix", "patient_key", "reason", "batch")

    def add_pending(self, site: str, extract_id: str, samples: list[dict]) -> None:
        """Hold an extract's pending samples (dicts as omics' `result.pending`); a rerun adds nothing twice."""
        with closing(self._connect()) as db, db:
            db.executemany("INSERT OR IGNORE INTO pending VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '')",
                           [(site, extract_id, p["sha256"], p["location"], p["suffix"], p["sheet_sha256"],
                             p["sheet_location"], p["sheet_suffix"], p["patient_key"], p["reason"])
                            for p in samples])

    def pending(self, site: str | None = None) -> list[dict]:
        """Pending samples (of `site`, or all), in a fixed order: site, extract, object, position."""
        where, args = ("WHERE site = ?", (site,)) if site is not None else ("", ())
        with closing(self._connect()) as db:
            rows = db.execute(f"SELECT * FROM pending {where} ORDER BY site, extract_id, sha256, location",
                              args).fetchall()
        return [dict(zip(self.PENDING_COLUMNS, r, strict=True)) for r in rows]

    def claim_pending(self, site: str, samples: list[dict], batch: str) -> None:
        """Mark unclaimed pending samples as being staged in `batch` (kept by a run killed before it resolved)."""
        with closing(self._connect()) as db, db:
            db.executemany("UPDATE pending SET batch = ? WHERE site = ? AND sha256 = ? AND location = ? "
                           "AND batch = ''", [(batch, site, p["sha256"], p["location"]) for p in samples])

    def resolve_pending(self, site: str, batch: str, keep: set[tuple[str, str]] = frozenset()) -> None:
        """Forget the samples of a published batch (they are staged now), except those at the (sha256, location)
        places in `keep`, which stay pending, unclaimed."""
        with closing(self._connect()) as db, db:
            db.executemany("UPDATE pending SET batch = '' WHERE site = ? AND sha256 = ? AND location = ?",
                           [(site, sha, loc) for sha, loc in sorted(keep)])
            db.execute("DELETE FROM pending WHERE site = ? AND batch = ?", (site, batch))

    def lab_units(self, first_seen: dict[str, str] | None = None) -> dict[str, str]:
        """LOINC -> the workspace's canonical UCUM unit for codes outside the lab catalogue: the first unit seen for
        a code is recorded (`first_seen`; a code recorded already keeps its unit, whoever recorded it) and every later
        reading is converted to it. Per workspace, not per site: the model reads one unit per code."""
        with closing(self._connect()) as db, db:
            db.executemany("INSERT OR IGNORE INTO lab_units VALUES (?, ?)", sorted((first_seen or {}).items()))
            return dict(db.execute("SELECT loinc, unit FROM lab_units").fetchall())

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

"""Omics rendering: one expression row per sampled patient, and the sample sheet that links it to an MRN.

Real omics cores hand over a samples x genes matrix keyed by their own sample ids plus a sheet mapping sample ids
to the hospital's MRN; that link (and its mistakes) is what ingest has to reconcile.
"""

from __future__ import annotations

import zlib

from tasks.synth.record import PatientRecord

SHEET_COLUMNS = ("sample_id", "mrn", "collection_date", "specimen", "assay")


def sample_id(record: PatientRecord) -> str:
    """The omics core's own id: stable, unrelated to the MRN."""
    return f"SMP-{zlib.crc32(f'{record.seed}/{record.index}'.encode()):08X}-{record.index:06d}"


def expression_cells(record: PatientRecord) -> list[str]:
    """Gene values as text, 3 decimals (log2 scale), in the biology's gene order."""
    return [f"{v:.3f}" for v in record.evidence.expression]


def sheet_row(record: PatientRecord) -> list[str]:
    collected = (record.identity.admit.date()).isoformat()
    return [sample_id(record), record.identity.mrn, collected, "whole blood", "RNA-seq (log2 TPM)"]

"""Validation: the staged tables against their data contracts (data_contracts/contracts), and what passes published
as curated data.

    contracts      the contracts compiled to polars expressions: the row split (clean / quarantined / failed)
    gx_suites      the same rules as Great Expectations suites, the reporter of record (Data Docs)
    splits         patient-level train/val/test assignment
    publish        curated swap (all or nothing), the validation report, the quarantine file named by the data
    curated_check  curated data re-hashed against validate's record before any model stage trains on it
"""

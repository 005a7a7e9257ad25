"""Ingest: an extract lands, is checked, crosses the de-identification boundary (tasks/deid) into staged tables, and
what fails a rule is quarantined with it; every input is accounted for (received = ingested + quarantined).

    landing       content-addressed, read-only store of every file received; one manifest per extract
    state         which landed objects a workspace has processed (a rerun processes only new ones)
    dicom         DICOM files -> de-identified series index + image tensors; dicom_shards writes the .npz shards
    fhir_parse    FHIR R4 bulk export / Bundles: structure, manifest, references (rejects with file and line)
    fhir          checked resources -> de-identified rows of the staged tables
    omics         expression matrices + sample sheets -> staged omics rows
    staged        the staged tables' parquet parts and schemas
    quarantine    rejection records (rule, location inside the landing store, never a value)
    accounting    the received = ingested + quarantined identity, checked on every run
    publish       an extract's outputs published all or nothing
    pacs/, remote DICOMweb (QIDO/WADO/STOW) and DIMSE (C-FIND/C-GET) clients, and fetching with bounded retries
    sources       the extracts params.yaml configures for the pipeline's ingest stage
"""

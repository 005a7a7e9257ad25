"""Prefect flows (one per stage), the pipeline that orders them, and the `mmfm` command line."""

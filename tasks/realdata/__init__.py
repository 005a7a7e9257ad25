"""Public data sets brought in through the same ingest path as a site's own extracts (no shortcuts past de-id)."""

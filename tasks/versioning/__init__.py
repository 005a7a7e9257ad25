"""Dataset versions: publishing a validated snapshot (publish.py: dvc commit + push + git commit, all or nothing)
and reading which version a stage works on (dataset.py: `DatasetVersion`, the one reader of that fact)."""

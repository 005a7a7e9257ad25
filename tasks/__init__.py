"""The work of every stage, grouped by concern; flows/ wires it. Imports models/ and data_contracts/, never flows/.

Packages (docs/architecture.md has the table): ingest, deid, validation, versioning, lineage, stage (the run
protocol), training, evaluation, registry, monitoring, synth, realdata. Beside them the floor every package stands
on: workspace (paths, params), workspace_lock, settings, atomic (atomic writes), vcs (git, dvc), tags (MLflow tag
keys), tracking (MLflow store, run tags, outage policy), faults (kill points for the reliability tests), runners
(Prefect task runners)."""

"""How a stage runs, once for all stages: the run protocol (run.py: workspace lock, MLflow outage policy, journal
recovery, ledger record), the run journal that survives a kill (journal.py), DVC's view of which stages are out of
date or finished but unrecorded (status.py), and the fault points the kill tests aim at (faults.py)."""

"""Drift monitoring: is a new extract still drawn from what the champion model was trained on, and if not, where?

tabular_drift    per-feature Evidently tests (K-S / chi-square), overall and per site, Bonferroni-controlled
embedding_drift  kernel two-sample tests (MMD) on backbone embeddings per modality and site
trigger          a retraining trigger with a cooldown that separate processes agree on
features         the features tested per family (labs, demographics, image acquisition); findings: what moved
report           the monitor stage's work: scoring the area, the drift report, the MLflow run

Nothing here starts a run or writes training data: results are plain dicts for the caller to act on.
"""

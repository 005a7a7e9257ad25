"""Evaluation: metrics with bootstrap CIs and subgroup breakdowns (metrics, assess), baselines trained in the same run
(baselines), plots and explanations (plots, explain), and the evaluate stage's report (report)."""

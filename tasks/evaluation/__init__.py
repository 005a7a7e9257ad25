"""Evaluation: metrics with bootstrap CIs and subgroup breakdowns, plots, and explanations."""

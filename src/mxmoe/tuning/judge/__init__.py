"""Judging a campaign: the Pareto gate and `claimable_win` (torch-free), and the tuned tables exported from the
claimable winners.

May import the runtime and `tuning.ledger` (and `tuning.timing`); never `sweep`, `report` or `guardrail`.
"""

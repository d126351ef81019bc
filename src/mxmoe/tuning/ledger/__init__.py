"""The ledger: the attempt records, the SQLite store and its on-disk schema, and the scan over its rows.

May import the runtime and `tuning.timing`; nothing above it (`sweep`, `judge`, `report`, `guardrail`).
"""

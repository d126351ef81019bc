"""The harness: measuring, sweeping, recording, judging, reporting and guarding tuned configs.

Nothing in the runtime imports it, and nothing under it imports `mxmoe.cli` (the CLI sits on top). Its
sub-packages follow the data flow of a campaign and import only downwards, in this order from the bottom:
`timing` (a layer's time and where the numbers come from), `ledger` (the SQLite record of every attempt),
`sweep` (candidates in, ledger rows out), `judge` (the claim gate and the tuned tables it allows), `report` (the
HTML page) and `guardrail` (a winner inside a real model graph). docs/architecture.md has the map.
"""

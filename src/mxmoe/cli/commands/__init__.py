"""The harness's CLI commands, each a module with a `register(app)` that `mxmoe.cli.main` calls: sweep (also
export, noise, bench), guardrail, legal, report.

They import `mxmoe.cli.common` and the harness (`mxmoe.tuning`), never `mxmoe.cli.main`.
"""

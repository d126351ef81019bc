"""A sweep: candidate configs in, one ledger row per candidate out. The driver (parent process, torch-free), the
worker (owns the GPU, compiles, checks and times one candidate), the executors that run workers locally, on a
host or on Ray, and the protocol between driver and worker; `compile_check/`, the legality model checked against
real compiles (benchmarks/validate_legality.py).

May import the runtime, `tuning.timing` and `tuning.ledger`; never `judge`, `report` or `guardrail`.
"""

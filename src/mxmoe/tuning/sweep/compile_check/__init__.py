"""The legality model against real compiles: predicted verdict vs compile, load and launch, per config (the
library of benchmarks/validate_legality.py, which keeps only its arguments and output; issue 25).

`mxmoe.legality.check` predicts whether a config compiles, loads and launches; this package compiles a sample of
a candidate space for real, in spawn workers, and writes one CSV row per config (predicted verdict and observed
outcome side by side) for tests/test_legality.py to replay. Bottom to top:
  sample   which configs: the stratified sample of a space, or the matching rows of an earlier table (no torch)
  probe    what both worker modes share: the tiny launch problem, the mirrored kernel calls, compile timeouts
  sm90     compiling for sm_90 without a GPU, and the cubin's resource usage (public: scratch tools use them)
  gpu      the GPU worker: compile, load and launch one config
  cpu      the --cpu-compile worker: sm_90 compile on the CPU, the launch wrappers' checks on CPU tensors
  pool     running the tasks in worker processes, surviving dead workers, lost CUDA contexts and the deadline
  table    the CSV: columns, provenance, one row per result as it arrives
  summary  the confusion matrix and the shared-memory model's error, printed

May import the runtime and nothing else of the harness (it writes CSV tables, not ledger rows); the runtime never
imports it.
"""

"""The end-to-end guardrail: a tuned config inside a real (seeded) model graph against the reference. The seeded
models and the experts tape, the captured forward and its metrics, the outcome and its ledger record, and `run`
which judges one config or a whole campaign.

May import the runtime and `tuning.ledger` (and the packages below it); nothing imports it but the CLI.
"""

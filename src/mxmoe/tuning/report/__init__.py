"""The campaign report, read from the ledger only: its data, HTML pieces, bar sections, page, PNG plots, and
`build` which writes it all.

May import the runtime, `tuning.timing`, `tuning.ledger` and `tuning.judge`; never `sweep` or `guardrail`. Its
modules read bottom-up: data -> markup -> bars -> html / plots -> build.
"""

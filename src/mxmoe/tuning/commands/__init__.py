"""The harness's CLI commands, each a `register(app)` that `mxmoe.cli` calls; they live under
`mxmoe.tuning` because they import the harness, which the runtime never does."""


class MxmoeUsageError(ValueError):
    """Bad input to a command: `mxmoe` prints its message as one line, `error: ...`, and exits 2."""

"""The `mxmoe` command (typer + rich), thin over the library and the harness; `app` is the console script's target
(`mxmoe = "mxmoe.cli:app"`).

`main` holds the app and the small commands, `commands/` the harness's commands (each a `register(app)`), and
`common` what both share. The CLI sits on top: it imports `mxmoe.tuning`, which never imports it back.
"""

from mxmoe.cli.main import app

__all__ = ["app"]

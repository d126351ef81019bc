"""What `mxmoe.cli.main` and the commands in `mxmoe.cli.commands` share: the usage error, the bullet wrapper, the
switch to the Triton interpreter. It imports neither, so the CLI reads bottom-up (issue 25: no import cycles).
"""

import os
import re


class MxmoeUsageError(ValueError):
    """Bad input to a command: `mxmoe` prints its message as one line, `error: ...`, and exits 2."""


def bullet(text: str, width: int, *, indent: int = 2, mark: str = "- ") -> list[str]:
    """`text` as one bullet of console lines at most `width` wide: `  - <text>` with the text starting on the
    bullet's line and a hanging indent after. Lines break between words, else after a ':' or ',' (a reason is
    often one long colon-joined token), never inside a name; only a piece longer than a line is cut."""
    lead, hang = " " * indent + mark, " " * (indent + len(mark))
    room = max(width - len(hang), 20)
    lines: list[str] = []
    cur = ""
    for word in text.split():
        for i, piece in enumerate(re.findall(r"[^:,]*[:,]|[^:,]+", word)):
            sep = " " if i == 0 and cur else ""
            if cur and len(cur) + len(sep) + len(piece) > room:
                lines.append(cur)
                cur, sep = "", ""
            while len(piece) > room:  # no break point in it: cut (the only case that splits a token)
                if cur:
                    lines.append(cur)
                    cur, sep = "", ""
                lines.append(piece[:room])
                piece = piece[room:]
            cur += sep + piece
    lines.append(cur)
    return [(hang if n else lead) + line for n, line in enumerate(lines)]


def has_gpu() -> bool:
    """Is there a CUDA GPU? (torch loads here, not at import: `mxmoe --help` stays instant.)"""
    import torch

    return torch.cuda.is_available()


def use_interpreter_without_gpu() -> bool:
    """Set TRITON_INTERPRET=1 when there is no GPU; returns True when the interpreter is in use."""
    if not has_gpu():
        os.environ["TRITON_INTERPRET"] = "1"
    return os.environ.get("TRITON_INTERPRET") == "1"

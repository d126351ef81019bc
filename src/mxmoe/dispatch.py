"""Choose the tile config for a launch: a scoped override, else the default heuristic.

The tuned-table lookup of the sweep issue plugs in here (issue 7); until then every launch takes
`heuristic.default_config`. Overrides are scoped with a ContextVar, never a module global.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from mxmoe.config import MoEConfig
from mxmoe.heuristic import default_config
from mxmoe.shapes import MoEShape, Path

_OVERRIDE: ContextVar[MoEConfig | None] = ContextVar("mxmoe_override", default=None)


@contextmanager
def override(config: MoEConfig) -> Iterator[MoEConfig]:
    """`with mxmoe.override(cfg):` makes every moe() call inside use `cfg` (e.g. the sweep's candidate)."""
    token = _OVERRIDE.set(config)
    try:
        yield config
    finally:
        _OVERRIDE.reset(token)


def interpreter_active() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def choose_config(shape: MoEShape, path: Path, tokens: int) -> MoEConfig:
    """The config a moe() call with config=None launches."""
    forced = _OVERRIDE.get()
    if forced is not None:
        return forced
    return default_config(shape, path, tokens, interpreter=interpreter_active())

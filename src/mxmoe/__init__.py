"""mxmoe: fast, tuned MXFP4 Mixture-of-Experts layers for NVIDIA GPUs.

The public surface. `moe`, `MoEWeights`, `MoELayer` and `override` load torch and triton, so they are
imported on first use (PEP 562): `import mxmoe.shapes` from the CLI or the sweep driver stays instant.
"""

from typing import Any

from mxmoe._version import __version__
from mxmoe.config import MoEConfig, TileConfig

_LAZY = {"moe": "mxmoe.moe", "MoEWeights": "mxmoe.weights", "MoELayer": "mxmoe.moe", "override": "mxmoe.dispatch"}

__all__ = ["__version__", "MoEConfig", "MoELayer", "MoEWeights", "TileConfig", "moe", "override"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # importing mxmoe.moe bound the submodule here; the function wins
        return value
    raise AttributeError(f"module 'mxmoe' has no attribute {name!r}")

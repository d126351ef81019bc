"""mxmoe: fast, tuned MXFP4 Mixture-of-Experts layers for NVIDIA GPUs.

The public surface. `moe`, `MoEWeights`, `MoELayer` and `override` load torch and triton, so they are
imported on first use (PEP 562): `import mxmoe.shapes` from the CLI or the sweep driver stays instant.

`mxmoe.moe` is always the function, never the submodule of the same name: importing the submodule
(`from mxmoe.moe import MoELayer`) would bind it here, and the package's `__setattr__` binds the function
instead. The module itself is `sys.modules["mxmoe.moe"]` (or `importlib.import_module("mxmoe.moe")`).
"""

import sys
import types
from typing import Any

from mxmoe._version import __version__
from mxmoe.config import MoEConfig, TileConfig

_LAZY = {"moe": "mxmoe.moe", "MoEWeights": "mxmoe.weights", "MoELayer": "mxmoe.moe", "override": "mxmoe.dispatch"}
_FUNCTION_MODULES = ("moe",)  # submodules named after the function they define: the function wins

__all__ = ["__version__", "MoEConfig", "MoELayer", "MoEWeights", "TileConfig", "moe", "override"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mxmoe' has no attribute {name!r}")


class _Package(types.ModuleType):
    """The import system binds a loaded submodule on its package with setattr; for `mxmoe.moe` this binds
    the submodule's function `moe` instead, so `mxmoe.moe` stays the op whatever was imported first."""

    def __setattr__(self, name: str, value: Any) -> None:
        if (name in _FUNCTION_MODULES and isinstance(value, types.ModuleType)
                and value.__name__ == f"{self.__name__}.{name}"):
            value = getattr(value, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

"""mxmoe: fast, tuned MXFP4 Mixture-of-Experts layers for NVIDIA GPUs."""

from mxmoe._version import __version__
from mxmoe.config import MoEConfig, TileConfig

__all__ = ["__version__", "MoEConfig", "TileConfig"]

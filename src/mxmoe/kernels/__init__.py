"""Triton kernels and their launch wrappers. A launch takes a TileConfig; it never chooses one."""

"""Measuring one layer, and where the numbers come from: clocks, the timing protocol and its statistics, the noise
floor, GPU state (NVML) and provenance, the roofline bench.

The bottom of the harness: it imports the runtime (`mxmoe.*` outside `tuning`) and nothing else under
`mxmoe.tuning`.
"""

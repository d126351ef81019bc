"""Run kernels on the Triton interpreter when there is no GPU; skip GPU-marked tests there.

TRITON_INTERPRET must be set before any @triton.jit decorator runs, hence here and first.

MXMOE_TEST_RULES="NAME=INT,..." sets constants of mxmoe.kernels.rules for the whole session, in every xdist
worker: the way to run the suite with a lever on before it ships (e.g. the GPU suite with K_FLOOR=1); a name
rules lacks is an error. Tests that set a constant themselves (monkeypatch) still do.
"""

import os

import pytest
import torch

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    spec = os.environ.get("MXMOE_TEST_RULES", "")
    if not spec:
        return
    from mxmoe.kernels import rules

    for item in filter(None, spec.split(",")):
        name, _, value = item.partition("=")
        if not hasattr(rules, name.strip()):
            raise pytest.UsageError(f"MXMOE_TEST_RULES: mxmoe.kernels.rules has no {name.strip()!r}")
        setattr(rules, name.strip(), int(value))

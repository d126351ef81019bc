"""The decode stages' register caps (rules.py: DIRECT_S1_MAXNREG, DIRECT_S2_MAXNREG, SORTED_DECODE_S{1,2}_MAXNREG):
which launches take them, and that they reach the launch keywords on a GPU and never under the interpreter (which
has no maxnreg). Plain rule checks, no kernel runs."""

import pytest

from mxmoe.config import Mma, TileConfig
from mxmoe.kernels import rules, sync
from mxmoe.shapes import Path

DECODE = TileConfig(block_m=16, block_n=64, block_k=128, num_warps=4, num_stages=4, mma=Mma.WGMMA)
PREFILL = TileConfig(block_m=128, block_n=128, block_k=128, group_m=8, num_warps=8, num_stages=3, mma=Mma.WGMMA)


@pytest.fixture
def caps(monkeypatch):
    for name, value in (("DIRECT_S1_MAXNREG", 64), ("DIRECT_S2_MAXNREG", 160), ("SORTED_DECODE_S1_MAXNREG", 72),
                        ("SORTED_DECODE_S2_MAXNREG", 96), ("DIRECT_S2_MAXNREG_A8W4", 128)):
        monkeypatch.setattr(rules, name, value)


def test_sorted_caps_only_on_decode_tiles_on_bf16_carriers(caps):
    assert rules.sorted_register_cap(DECODE, 1) == 72
    assert rules.sorted_register_cap(DECODE, 2) == 96
    assert rules.sorted_register_cap(PREFILL, 1) == rules.sorted_register_cap(PREFILL, 2) == 0
    e4m3 = DECODE.replace(mma=Mma.WGMMA_E4M3)
    assert rules.sorted_register_cap(e4m3, 1) == rules.sorted_register_cap(e4m3, 2) == 0


def test_direct_caps_by_stage_and_path(caps):
    assert rules.direct_register_cap(Path.A16W4, 0, 1) == 64
    assert rules.direct_register_cap(Path.A8W4, 0, 1) == rules.direct_register_cap(Path.A4W4, 0, 1) == 0
    assert rules.direct_register_cap(Path.A16W4, 3) == 160
    assert rules.direct_register_cap(Path.A8W4, rules.DIRECT_S2_CAP_MAX_PRE) == 128  # the a8w4 rule comes first
    assert rules.direct_register_cap(Path.A8W4, rules.DIRECT_S2_CAP_MAX_PRE + 1) == 160


def test_launch_options_carry_the_cap_on_a_gpu_only(monkeypatch):
    monkeypatch.setattr(sync, "interpreting", lambda: False)
    assert sync.launch_options() == {"launch_pdl": True}
    assert sync.launch_options(0) == {"launch_pdl": True}
    assert sync.launch_options(96) == {"launch_pdl": True, "maxnreg": 96}
    monkeypatch.setattr(sync, "interpreting", lambda: True)
    assert sync.launch_options(96) == {}

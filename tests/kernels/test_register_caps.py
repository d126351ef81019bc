"""The direct stage 2's register cap (rules.DIRECT_S2_MAXNREG_A8W4): which launches take it, and that it reaches
the launch keywords on a GPU and never under the interpreter (which has no maxnreg). Plain rule checks, no kernel
runs."""

from mxmoe.kernels import rules, sync
from mxmoe.shapes import Path


def test_direct_stage2_cap_is_a8w4_with_few_preloaded_steps(monkeypatch):
    monkeypatch.setattr(rules, "DIRECT_S2_MAXNREG_A8W4", 128)
    assert rules.direct_register_cap(Path.A8W4, rules.DIRECT_S2_CAP_MAX_PRE) == 128
    assert rules.direct_register_cap(Path.A8W4, rules.DIRECT_S2_CAP_MAX_PRE + 1) == 0
    assert rules.direct_register_cap(Path.A16W4, 1) == rules.direct_register_cap(Path.A4W4, 1) == 0


def test_launch_options_carry_the_cap_on_a_gpu_only(monkeypatch):
    monkeypatch.setattr(sync, "interpreting", lambda: False)
    assert sync.launch_options() == {"launch_pdl": True}
    assert sync.launch_options(0) == {"launch_pdl": True}
    assert sync.launch_options(128) == {"launch_pdl": True, "maxnreg": 128}
    monkeypatch.setattr(sync, "interpreting", lambda: True)
    assert sync.launch_options(128) == {}

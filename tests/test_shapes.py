"""The model registry and token grid against DESIGN.md's tables (hand-copied values are the oracle)."""

from __future__ import annotations

import pytest

from mxmoe.shapes import MODELS, TOKEN_GRID, WORKLOAD_708, Activation, MoEShape, Path, get_shape, parse_tokens, regime


@pytest.mark.parametrize(
    "name,e,k,h,i,act",
    [
        ("gpt-oss-20b", 32, 4, 2880, 2880, "swiglu_oai"),
        ("gpt-oss-120b", 128, 4, 2880, 2880, "swiglu_oai"),
        ("deepseek-v3", 256, 8, 7168, 2048, "silu"),
        ("kimi-k2", 384, 8, 7168, 2048, "silu"),
        ("deepseek-v3-tp8", 257, 9, 7168, 256, "silu"),
        ("deepseek-v4-tp8", 385, 7, 7168, 512, "silu"),
        ("kimi-k2-tp8", 384, 8, 7168, 256, "silu"),
        ("gpt-oss-3072", 128, 4, 3072, 3072, "swiglu_oai"),
    ],
)
def test_design_table(name, e, k, h, i, act):
    s = MODELS[name]
    assert (s.experts, s.topk, s.hidden, s.inter, s.activation.value) == (e, k, h, i, act)


def test_shared_expert_shapes():
    assert MODELS["deepseek-v3-tp8"].shared_expert and MODELS["deepseek-v4-tp8"].shared_expert
    assert not MODELS["kimi-k2-tp8"].shared_expert
    assert MODELS["deepseek-v3-tp8"].routed_experts == 256 and MODELS["deepseek-v3-tp8"].routed_topk == 8
    assert set(WORKLOAD_708) <= set(MODELS)


def test_token_grid():
    assert TOKEN_GRID == (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
    assert [regime(t) for t in (64, 128, 2048, 4096)] == ["decode", "crossover", "crossover", "prefill"]
    assert parse_tokens("1,16") == (1, 16) and parse_tokens("grid") == TOKEN_GRID
    assert parse_tokens("decode")[-1] == 64
    with pytest.raises(ValueError, match="comma-separated"):
        parse_tokens("1,x")


def test_custom_shape_and_errors():
    s = get_shape("8,2,128,64")
    assert (s.experts, s.topk, s.hidden, s.inter, s.activation) == (8, 2, 128, 64, Activation.SILU)
    assert get_shape("8,2,128,64,swiglu_oai").activation is Activation.SWIGLU_OAI
    with pytest.raises(ValueError, match="unknown shape"):
        get_shape("gpt-5")
    with pytest.raises(ValueError, match="multiple of the MX block size"):
        MoEShape("bad", 4, 2, 100, 64, Activation.SILU)
    with pytest.raises(ValueError, match="exceeds"):
        MoEShape("bad", 4, 5, 64, 64, Activation.SILU)


def test_paths():
    assert [p.act_bits for p in Path] == [16, 8, 4]

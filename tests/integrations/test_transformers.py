"""patch_model / dequantize_model_experts on tiny transformers GPT-OSS and DeepSeek-V3 models (interpreter).

Oracle: the unpatched transformers model itself, with its expert weights replaced by their MXFP4-dequantized
values (so both sides hold the same weights). Tolerance: guardrail.FIDELITY for the MoE block (the a16w4
path rounds x, the intermediate and the output to bf16 where the fp32 transformers experts round nothing;
its comment gives the numbers). Invariants first: what is replaced, what is kept, exactness of the weights.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers", reason="transformers 5.x is the optional 'guardrail' extra")

from mxmoe.config import Mma, MoEConfig, TileConfig  # noqa: E402
from mxmoe.dispatch import override  # noqa: E402
from mxmoe.integrations.transformers import (  # noqa: E402
    SUPPORTED_MODELS,
    Backend,
    MXFP4Experts,
    dequantize_model_experts,
    family_of,
    launched_configs,
    patch_model,
    patched_modules,
)
from mxmoe.shapes import MODELS, Activation, Path  # noqa: E402
from mxmoe.tolerance import compare  # noqa: E402
from mxmoe.tuning.guardrail.model import ExpertsTape, experts_tape, random_model, use_backend  # noqa: E402
from mxmoe.tuning.guardrail.run import FIDELITY  # noqa: E402

SHAPES = {"gpt-oss": MODELS["tiny-oai"], "deepseek-v3": MODELS["tiny"]}
CFG = MoEConfig(TileConfig(block_m=16, block_n=32, block_k=64, mma=Mma.UPCAST),
                TileConfig(block_m=16, block_n=32, block_k=64, mma=Mma.UPCAST))


def tiny(family: str, layers: int = 2, seed: int = 0):
    return random_model(family, SHAPES[family], layers=layers, small=True, seed=seed)


def expert_params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for n, p in model.named_parameters() if ".experts." in n]


@pytest.mark.parametrize("family", ["gpt-oss", "deepseek-v3"])
def test_patch_replaces_experts_and_keeps_router_and_shared_experts(family):
    model = tiny(family)
    router_cls = {"gpt-oss": "GptOssTopKRouter", "deepseek-v3": "DeepseekV3TopkRouter"}[family]
    report = patch_model(model, "a8w4", CFG)
    assert report.family == family and report.layers == (0, 1)
    assert report.model_type == {"gpt-oss": "GptOssForCausalLM", "deepseek-v3": "DeepseekV3ForCausalLM"}[family]
    assert report.path is Path.A8W4 and report.config_key == CFG.key()
    shape = SHAPES[family]
    for block in report.blocks:
        assert block.module_type == {"gpt-oss": "GptOssExperts", "deepseek-v3": "DeepseekV3Experts"}[family]
        assert (block.experts, block.hidden, block.inter) == (shape.experts, shape.hidden, shape.inter)
        assert block.activation is shape.activation and block.bias is (family == "gpt-oss")
    for layer in model.model.layers:
        assert isinstance(layer.mlp.experts, MXFP4Experts)
        router = layer.mlp.router if family == "gpt-oss" else layer.mlp.gate
        assert type(router).__name__ == router_cls
        if family == "deepseek-v3":
            assert type(layer.mlp.shared_experts).__name__ == "DeepseekV3MLP"
    assert len(patched_modules(model)) == 2
    assert report.to_dict()["blocks"][0]["name"] == "model.layers.0.mlp.experts"


def test_unsupported_model_names_the_supported_ones():
    with pytest.raises(ValueError, match="GptOssForCausalLM and DeepseekV3ForCausalLM"):
        patch_model(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        patch_model("gpt-oss")
    model = tiny("gpt-oss", layers=1)
    patch_model(model)
    with pytest.raises(ValueError, match="already patched"):
        patch_model(model)
    with pytest.raises(TypeError, match="MoEConfig"):
        patch_model(tiny("gpt-oss", layers=1), config={"stage1": {}})


@pytest.mark.parametrize("family", ["gpt-oss", "deepseek-v3"])
def test_dequantized_weights_are_exactly_what_the_kernels_see(family):
    """Requantizing a dequantized MXFP4 tensor is the identity, so the reference model's weights are the
    kernels' weights bit for bit."""
    model = tiny(family, layers=1)
    assert family_of(model) == family
    before = expert_params(model)
    dequantize_model_experts(model)
    once = expert_params(model)
    assert any(not torch.equal(a, b) for a, b in zip(before, once, strict=True))  # it did quantize
    dequantize_model_experts(model)
    assert all(torch.equal(a, b) for a, b in zip(once, expert_params(model), strict=True))
    experts = model.model.layers[0].mlp.experts
    gate_up = experts.gate_up_proj.detach()
    w13 = gate_up.transpose(1, 2) if family == "gpt-oss" else gate_up
    patch_model(model)
    assert torch.equal(patched_modules(model)[0].weights.w13_model_layout(), w13)


@pytest.mark.parametrize("family", ["gpt-oss", "deepseek-v3"])
def test_patched_block_reproduces_the_transformers_block(family):
    """Layer 0's MoE block (router + experts [+ shared expert]) on one input: transformers' own experts vs the
    oracle and the kernels behind the model's own router."""
    model = tiny(family, layers=1)
    dequantize_model_experts(model)
    mlp = model.model.layers[0].mlp
    x = torch.randn(2, 8, SHAPES[family].hidden, generator=torch.Generator().manual_seed(3))
    first = lambda out: out[0] if isinstance(out, tuple) else out
    with torch.no_grad():
        expected = first(mlp(x))
        patch_model(model, "a16w4")
        with use_backend(model, Backend.REFERENCE):
            oracle = first(mlp(x))
        kernel = first(mlp(x))
    assert compare(oracle, expected, FIDELITY).ok, compare(oracle, expected, FIDELITY).message
    assert compare(kernel, expected, FIDELITY).ok, compare(kernel, expected, FIDELITY).message
    assert kernel.dtype == expected.dtype == torch.float32


def test_launched_configs_record_forced_dispatch_and_override():
    model = tiny("deepseek-v3", layers=1)
    ids = torch.randint(0, 128, (1, 8), generator=torch.Generator().manual_seed(0))
    patch_model(model)
    with torch.no_grad(), override(CFG):
        model(input_ids=ids, use_cache=False)
    assert set(launched_configs(model)) == {CFG.key()}
    forced = MoEConfig(CFG.stage1, CFG.stage2.replace(block_n=64))
    model = tiny("deepseek-v3", layers=1)
    patch_model(model, config=forced)
    with torch.no_grad(), override(CFG):  # an explicit config wins over the scoped override
        model(input_ids=ids, use_cache=False)
    assert set(launched_configs(model)) == {forced.key()}


def test_dispatched_e4m3_tile_falls_back_as_moe_does():
    """A dispatched e4m3 tile (a tuned table may name one; here the scoped override) on experts patched without the
    e4m3 layout runs on bf16 carriers with moe()'s warning, where passing it on explicitly would be refused."""
    model = tiny("deepseek-v3", layers=1)
    ids = torch.randint(0, 128, (1, 8), generator=torch.Generator().manual_seed(0))
    patch_model(model, "a8w4")
    wgmma = TileConfig(block_m=16, block_n=64, block_k=64, mma=Mma.WGMMA)
    e4m3 = MoEConfig(wgmma.replace(mma=Mma.WGMMA_E4M3), wgmma)
    with torch.no_grad(), override(e4m3), pytest.warns(UserWarning, match="no e4m3 layout"):
        model(input_ids=ids, use_cache=False)
    assert set(launched_configs(model)) == {MoEConfig(wgmma, wgmma).key()}


def test_use_backend_restores_backend_and_path():
    model = tiny("gpt-oss", layers=1)
    with pytest.raises(ValueError, match="patch_model first"), use_backend(model, Backend.REFERENCE):
        pass
    patch_model(model, "a4w4")
    (m,) = patched_modules(model)
    with use_backend(model, "reference", "a16w4"):
        assert (m.backend, m.path) == (Backend.REFERENCE, Path.A16W4)
    assert (m.backend, m.path) == (Backend.KERNEL, Path.A4W4)
    assert m.weights.activation is Activation.SWIGLU_OAI
    assert "backend=kernel" in repr(m)


def test_supported_models_listed():
    assert SUPPORTED_MODELS == ("GptOssForCausalLM", "DeepseekV3ForCausalLM")


def test_experts_tape_records_replays_and_counts_flips_and_drift():
    tape = ExpertsTape()
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    ids, w = torch.tensor([[0, 1], [2, 3]]), torch.tensor([[0.7, 0.3], [0.6, 0.4]])
    assert tape.apply(x, ids, w) == (x, ids, w) and len(tape.calls) == 1
    ids[0, 0] = 5  # the recording is a copy, not a view of the caller's tensor
    x[0, 0] = 9.0
    got_x, got_ids, got_w = tape.replay().apply(torch.tensor([[1.0, 2.0], [3.0, 4.5]]), torch.tensor([[1, 0], [2, 4]]),
                                                torch.zeros(2, 2))
    assert got_x.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert got_ids.tolist() == [[0, 1], [2, 3]] and torch.equal(got_w, w)
    assert tape.flips == [1]  # token 0 picked the same set in another order; token 1 another expert
    assert tape.drift == [pytest.approx(0.5 / 30**0.5)]  # ||(0, 0, 0, .5)|| / ||(1, 2, 3, 4)||
    with pytest.raises(RuntimeError, match="only 1 were recorded"):
        tape.apply(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2))
    with pytest.raises(RuntimeError, match="takes"):
        tape.replay().apply(torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2))


@pytest.mark.parametrize("family", ["gpt-oss", "deepseek-v3"])
def test_replayed_routing_overrides_the_models_router(family):
    """A router that decides differently in the second run: replay feeds the experts the first run's inputs, ids
    and weights, so every MoE output matches the first run, and the flips and drift are counted per layer."""
    model = tiny(family)
    patch_model(model, "a16w4", CFG)
    ids = torch.randint(0, model.config.vocab_size, (1, 5), generator=torch.Generator().manual_seed(0))
    outs: list[torch.Tensor] = []
    hooks = [layer.mlp.experts.register_forward_hook(lambda _m, _a, o: outs.append(o.detach().clone()))
             for layer in model.model.layers]
    with torch.no_grad(), experts_tape(model, ExpertsTape()) as tape:
        model(input_ids=ids, use_cache=False)
    first, outs[:] = list(outs), []
    for layer in model.model.layers:  # reverse every router's decisions from now on
        gate = layer.mlp.router if family == "gpt-oss" else layer.mlp.gate
        gate.register_forward_hook(lambda _m, _a, o: tuple(x.flip(-1) if x.dim() == 2 and x.shape[-1] > 1
                                                             and not x.is_floating_point() else x for x in o)
                                   if isinstance(o, tuple) else o)
    with torch.no_grad(), experts_tape(model, tape.replay()):
        model(input_ids=ids, use_cache=False)
    replayed, outs[:] = list(outs), []
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)  # free: the reversed routing reaches the experts
    for h in hooks:
        h.remove()
    assert all(torch.equal(a, b) for a, b in zip(first, replayed, strict=True))
    assert not torch.equal(first[0], outs[0])
    assert len(tape.flips) == len(tape.drift) == len(model.model.layers)
    assert all(m.tape is None for m in patched_modules(model))

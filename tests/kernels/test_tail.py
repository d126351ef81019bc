"""Tail tiles (TileConfig.tail_m, kernels/swmoe.py `tile_of`) on the Triton interpreter.

The routing is built by hand so every kind of tile occurs: with BLOCK_M 64 and tail_m 16 (four blocks a run), an
expert with 64 rows (one whole run), 70 (a run and a one-block remainder: a 16-row tile), 100 (a run and a
three-block remainder: one 64-row tile, its last rows masked), 20 (no run, a two-block remainder) and 0 rows, and
with tail_m 32 (two blocks a run) the same counts give other splits. top-k is 1, so each token has one expert and
the atomic combine adds one value per token: a tail tile that loses rows or computes a row twice changes the
output. Oracles: the same layer without tail tiles (stage 1's rows are the same sums of the same products, so the
outputs are bit-equal: TAIL_TOL 0) and the fp32 reference under the path's layer tolerance
(mxmoe.tolerance.TOLERANCES, justified there).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mxmoe.config import Combine, Mma, MoEConfig, TileConfig
from mxmoe.moe import moe
from mxmoe.problem import make_problem
from mxmoe.shapes import Activation, MoEShape, Path
from mxmoe.tolerance import assert_close

TAIL_TOL = 0.0  # bit-equal to the same layer without tail tiles: see the module docstring
COUNTS = (64, 70, 100, 20, 0)  # rows per expert: every kind of tile at BLOCK_M 64 (module docstring)
SHAPE = MoEShape("tail", len(COUNTS), 1, 64, 64, Activation.SWIGLU_OAI, bias=True)


def _problem(path: Path):
    p = make_problem(SHAPE, path, sum(COUNTS), seed=5)
    ids = torch.repeat_interleave(torch.arange(len(COUNTS)), torch.tensor(COUNTS))
    ids = ids[torch.randperm(ids.numel(), generator=torch.Generator().manual_seed(1))]
    return dataclasses.replace(p, topk_ids=ids.view(-1, 1).to(torch.int32), topk_weights=p.topk_weights)


def _config(tail1: int, tail2: int, combine: Combine, split_k: int = 1) -> MoEConfig:
    s = TileConfig(block_m=64, block_n=64, block_k=64, num_warps=4, mma=Mma.WGMMA)
    return MoEConfig(s.replace(tail_m=tail1, split_k=split_k), s.replace(tail_m=tail2, combine=combine))


CASES = [(Path.A16W4, Combine.ATOMIC, (16, 16)), (Path.A16W4, Combine.ROWS, (16, 16)),
         (Path.A16W4, Combine.ATOMIC, (32, 0)), (Path.A16W4, Combine.ATOMIC, (0, 32)),
         (Path.A8W4, Combine.ATOMIC, (16, 32)), (Path.A8W4, Combine.ROWS, (32, 0))]


@pytest.mark.parametrize("path,combine,tails", CASES, ids=[f"{p.value}-{c.value}-t{t[0]}-t{t[1]}" for p, c, t in CASES])
def test_tail_tiles_compute_every_row_once(path, combine, tails):
    p = _problem(path)
    run = lambda cfg: moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg).float()  # noqa: E731
    want = run(_config(0, 0, combine))
    got = run(_config(*tails, combine))
    assert (got - want).abs().max().item() <= TAIL_TOL
    assert_close(got, p.reference(), path=path, stage="layer", name=f"{path.value}/{combine.value}/{tails}")


def test_tail_tiles_with_split_k():
    """Stage 1's split-K counters are per plan block: a tail plan has more of them, each tile still one."""
    p = _problem(Path.A16W4)
    want = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A16W4, _config(0, 0, Combine.ATOMIC))
    got = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A16W4, _config(16, 16, Combine.ATOMIC, 2))
    assert (got.float() - want.float()).abs().max().item() <= 1e-2 * want.float().abs().max().item()
    # split-K sums the K halves in another order than one chain: bf16 output within one rounding of the tensor max


@pytest.mark.parametrize("stage2", [
    dict(tail_m=64), dict(tail_m=8), dict(tail_m=48), dict(tail_m=16, combine=Combine.SLOTS),
], ids=["equal-to-block", "below-mma", "not-a-divisor", "slots"])
def test_illegal_tails_are_refused_at_launch(stage2):
    p = _problem(Path.A16W4)
    base = _config(0, 0, Combine.ATOMIC)
    cfg = MoEConfig(base.stage1, base.stage2.replace(**stage2))
    with pytest.raises(ValueError, match="tail_m"):
        moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A16W4, cfg)


def test_tail_m_keeps_old_keys_and_round_trips():
    base = TileConfig(block_m=64, mma=Mma.WGMMA)
    assert "tail_m" not in base.to_dict()  # configs from before the lever keep their keys
    tail = base.replace(tail_m=32)
    assert tail.key() != base.key() and tail.short().endswith("-t32") and tail.plan_rows == 32
    assert TileConfig.from_json(tail.to_json()) == tail and base.plan_rows == 64
    with pytest.raises(ValueError, match="tail_m"):
        TileConfig(tail_m=-16)


GPU_COUNTS = (128, 140, 230, 40, 200, 0)  # at BLOCK_M 128: tail 32 and 64 both meet every kind of tile
GPU_SHAPE = MoEShape("tail-gpu", len(GPU_COUNTS), 1, 1024, 512, Activation.SILU)


@pytest.mark.gpu
@pytest.mark.parametrize("path", list(Path), ids=lambda p: p.value)
@pytest.mark.parametrize("tails", [(32, 64), (64, 32)], ids=lambda t: f"t{t[0]}-t{t[1]}")
def test_tail_tiles_gpu(path, tails):
    """The GPU twin: the prefill tile (BLOCK_M 128, 8 warps) with tails on both stages, bit-equal to the same layer
    without them (top-k 1: each token's one atomic add) and within the oracle's tolerance."""
    p = make_problem(GPU_SHAPE, path, sum(GPU_COUNTS), seed=7, device="cuda")
    ids = torch.repeat_interleave(torch.arange(len(GPU_COUNTS)), torch.tensor(GPU_COUNTS))
    ids = ids[torch.randperm(ids.numel(), generator=torch.Generator().manual_seed(2))]
    p = dataclasses.replace(p, topk_ids=ids.view(-1, 1).to(torch.int32).cuda())
    s = TileConfig(block_m=128, block_n=128, block_k=128, num_warps=8, group_m=8, mma=Mma.WGMMA)
    run = lambda c1, c2: moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, MoEConfig(c1, c2)).float()  # noqa: E731
    want = run(s, s)
    got = run(s.replace(tail_m=tails[0]), s.replace(tail_m=tails[1], block_k=64))
    assert (got - run(s, s.replace(block_k=64))).abs().max().item() <= TAIL_TOL
    assert_close(got, p.reference(), path=path, stage="layer", name=f"{path.value}/{tails}")
    assert_close(want, p.reference(), path=path, stage="layer", name=f"{path.value}/no tails")


@pytest.mark.parametrize("s1_max", [128, 64], ids=["both-stages", "stage2-only"])
def test_the_heuristic_prefill_config_runs_with_tails(s1_max, monkeypatch, request):
    """moe(config=None) at a prefill point of a shape with inter > 512: the heuristic's stage 2 takes tail_m 64 at
    BLOCK_M 128 (heuristic.TAIL_M), and stage 1 too while heuristic.TAIL_STAGE1_MAX_BLOCK_M allows (the shipped
    128: one plan for both stages); below it stage 1 keeps BLOCK_M's plan and the layer aligns twice. Either way
    the layer meets the oracle."""
    from mxmoe import dispatch, heuristic
    from mxmoe.layer_plan import clear_plans
    from mxmoe.moe import dispatched_config

    def forget():  # dispatch caches the heuristic's answers, moe() its plans: none from before or after the patch
        dispatch.clear_cache()
        clear_plans()

    monkeypatch.setattr(heuristic, "TAIL_STAGE1_MAX_BLOCK_M", s1_max)
    forget()
    request.addfinalizer(forget)
    shape = MoEShape("tail-heuristic", 4, 2, 64, 576, Activation.SILU)
    p = make_problem(shape, Path.A16W4, 300, seed=9)
    cfg = dispatched_config(shape, Path.A16W4, 300, p.weights)
    assert cfg.stage2.tail_m == 64 and cfg.stage2.block_m == 128
    assert cfg.stage1.tail_m == (64 if s1_max >= 128 else 0)
    out = moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, Path.A16W4)
    assert_close(out.float(), p.reference(), path=Path.A16W4, stage="layer", name="heuristic with tails")

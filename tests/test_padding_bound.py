"""benchmarks/padding_bound.py: the padding efficiency against hand counts, the routing it counts against
make_routing's ids, and the CLI on a small case (CPU only, as the script is)."""

from __future__ import annotations

import csv

import pytest
import torch
from bench_script import load


def test_pad_eff_against_hand_counts():
    pad_eff = load("padding_bound").pad_eff
    counts = torch.tensor([128, 129, 0, 64])  # tiles at 128: 1 + 2 + 0 + 1 = 4 -> 512 rows computed
    assert pad_eff(counts, 128) == pytest.approx(321 / 512)
    assert pad_eff(counts, 64) == pytest.approx(321 / (128 + 192 + 64))
    assert pad_eff(torch.tensor([32, 64, 96]), 32) == 1.0  # whole tiles: no padding
    assert pad_eff(torch.zeros(4, dtype=torch.int64), 64) == 1.0  # nothing computed


def test_tail_tiles_cost_their_rows():
    """kernels/swmoe.py tile_of: a remainder of at most tail_m rows takes a tail_m-row tile, a longer one a whole
    BLOCK_M tile; the layer weights stage 1 (gate + up) twice stage 2."""
    mod = load("padding_bound")
    counts = torch.tensor([128, 129, 0, 64, 200])  # remainders 0, 1, -, 64, 72 at BLOCK_M 128
    assert mod.computed_rows(counts, 128) == 128 * (1 + 2 + 0 + 1 + 2)
    assert mod.computed_rows(counts, 128, 64) == 128 + (128 + 64) + 0 + 64 + (128 + 128)
    assert mod.pad_eff(counts, 128, 64) == pytest.approx(521 / 640)
    from mxmoe.config import MoEConfig, TileConfig

    tile = TileConfig(block_m=128, block_n=128, block_k=128)
    cfg = MoEConfig(tile, tile.replace(tail_m=64))
    assert mod.layer_pad_eff(counts, cfg) == pytest.approx(521 / ((2 * 768 + 640) / 3))


def test_expert_rows_count_every_pair_of_the_routing():
    from mxmoe.problem import make_routing
    from mxmoe.shapes import MODELS

    rows = load("padding_bound").expert_rows("deepseek-v3-tp8", 40)
    ids, _ = make_routing(MODELS["deepseek-v3-tp8"], 40, "uniform", seed=40)
    assert rows.sum() == ids.numel() and rows.numel() == MODELS["deepseek-v3-tp8"].experts
    assert rows[-1] == 40  # the fused shared expert takes every token


def test_cli_prints_the_bound_and_the_csv_ratio(tmp_path, capsys):
    path = tmp_path / "vs.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["shape", "T", "path", "scope", "mxmoe_roofline", "memory_floor_us",
                                           "compute_floor_us"])
        w.writeheader()
        w.writerow({"shape": "deepseek-v3", "T": 64, "path": "a16w4", "scope": "experts", "mxmoe_roofline": "0.5",
                    "memory_floor_us": "10", "compute_floor_us": "20"})
    assert load("padding_bound").main(["--model", "deepseek-v3", "--tokens", "64", "--csv", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[-1] == "roof/pad"
    fields = out[1].split()
    assert fields[:2] == ["deepseek-v3", "64"]
    assert float(fields[-1]) == pytest.approx(0.5 / float(fields[3]), rel=1e-2)  # pad_eff printed to 3 digits
    assert "memory floor" not in out[1]


def test_cli_refuses_an_unknown_model():
    with pytest.raises(SystemExit):
        load("padding_bound").main(["--model", "no-such-model", "--tokens", "4"])

"""The FP8 (e4m3) compute floor, on CPU: `Floors.fp8_rate` round trips (old dicts without it read as None),
`measure_floors` turns the e4m3 timing into a rate and never fails on it, and the report draws the FP8 line only
where the rows carry the rate. Oracles: spec.py's floor formula applied by hand, and the dicts as written."""

from __future__ import annotations

import json

import pytest
from test_report import REPORT_PROVENANCE, row

from mxmoe.shapes import MODELS
from mxmoe.spec import compute_floor_us, flops, roofline_fraction
from mxmoe.tuning.ledger.store import Ledger
from mxmoe.tuning.report.build import best_layer_rows, build_report, row_fp8_rate
from mxmoe.tuning.timing import bench
from mxmoe.tuning.timing.bench import NOMINAL_FLOORS, NOMINAL_FP8_RATE, Floors, measure_floors

# The floors here go through the same few float operations as the oracle (one division, one product), so
# they agree to rounding; 1e-12 relative is far above double rounding and far below any real discrepancy
# (the FP8 floor is half the bf16 one: a mix-up is off by 2x).
REL = 1e-12
BF16_RATE, FP8_RATE, BANDWIDTH = 7.5e14, 1.5e15, 3.0e12
FP8_FLOORS = {"bandwidth": BANDWIDTH, "rate": BF16_RATE, "source": "measured", "fp8_rate": FP8_RATE}
OLD_FLOORS = {"bandwidth": BANDWIDTH, "rate": BF16_RATE, "source": "measured"}  # a row from before fp8_rate
MODEL, PATH, GRID_T = "gpt-oss-20b", "a8w4", (1, 16, 4096)
FP8_LABEL = "FP8 compute floor"


def test_floors_round_trip_with_and_without_fp8_rate():
    with_fp8 = Floors(BANDWIDTH, BF16_RATE, "measured", FP8_RATE)
    without = Floors(BANDWIDTH, BF16_RATE, "measured")
    for f in (with_fp8, without):  # the worker's hello carries them as JSON
        assert Floors.from_dict(json.loads(json.dumps(f.to_dict()))) == f
    assert with_fp8.to_dict()["fp8_rate"] == FP8_RATE and without.to_dict()["fp8_rate"] is None
    assert Floors.from_dict(OLD_FLOORS) == without and Floors.from_dict(OLD_FLOORS).fp8_rate is None
    assert measure_floors(interpreter=True) is NOMINAL_FLOORS and NOMINAL_FLOORS.fp8_rate == NOMINAL_FP8_RATE
    with pytest.raises(ValueError, match="fp8"):
        Floors.from_dict(OLD_FLOORS | {"fp8": 1.0})  # a misspelt key is still an error, not a silent None


@pytest.mark.parametrize("fp8_us", [None, 500.0])
def test_measure_floors_rates_from_the_timings(monkeypatch, fp8_us):
    monkeypatch.setattr(bench, "_copy_us", lambda device: 1000.0)
    monkeypatch.setattr(bench, "_matmul_us", lambda device: 1000.0)
    monkeypatch.setattr(bench, "_fp8_matmul_us", lambda device: fp8_us)
    f = measure_floors(interpreter=False)
    assert f.source == "measured"
    assert f.rate == pytest.approx(2.0 * bench.MATMUL_N**3 / 1e-3, rel=REL)
    assert f.bandwidth == pytest.approx(2 * bench.COPY_BYTES / 1e-3, rel=REL)
    if fp8_us is None:
        assert f.fp8_rate is None
    else:  # half the time of the bf16 matmul: twice its rate
        assert f.fp8_rate == pytest.approx(2.0 * f.rate, rel=REL)


@pytest.mark.parametrize("capability", [None, (8, 0), (9, 0)])
def test_fp8_probe_is_none_without_fp8_tensor_cores_or_on_any_failure(monkeypatch, capability):
    """No GPU (the capability query raises), a GPU without e4m3 tensor cores, and a failure inside the timing
    (sm_90 faked on CPU: the CUDA-event clock raises) all give None, never an exception."""
    import torch

    monkeypatch.setattr(bench, "MATMUL_N", 64)  # keep the faked-sm_90 case's operands small
    if capability is not None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert bench._fp8_matmul_us("cpu") is None


def fp8_row(campaign: str, t: int, floors: dict) -> object:
    return row(campaign, MODEL, t, 10.0 + t / 100, path=PATH, provenance=REPORT_PROVENANCE | {"floors": floors})


def test_best_point_carries_the_fp8_floor_only_where_the_row_has_the_rate():
    rows = [fp8_row("c", t, FP8_FLOORS) for t in GRID_T]
    old = [fp8_row("o", t, OLD_FLOORS) for t in GRID_T]
    flat = row("f", MODEL, 1, 5.0, provenance={"bandwidth_Bps": BANDWIDTH, "bf16_rate_flops": BF16_RATE,
                                               "fp8_rate_flops": FP8_RATE})
    assert [row_fp8_rate(r) for r in (rows[0], old[0], flat)] == [FP8_RATE, None, FP8_RATE]
    [[*pts]] = best_layer_rows(rows).values()
    shape = MODELS[MODEL]
    for p in pts:
        assert p.fp8_floor_us == pytest.approx(compute_floor_us(flops(shape, p.tokens), FP8_RATE), rel=REL)
        assert p.compute_floor_us == pytest.approx(compute_floor_us(flops(shape, p.tokens), BF16_RATE), rel=REL)
        # the fraction stays judged against the bf16 floor, not the (lower) FP8 one
        want = roofline_fraction(p.timing.median_us, p.memory_floor_us, p.compute_floor_us)
        assert p.roofline_fraction == pytest.approx(want, rel=REL)
    [[*old_pts]] = best_layer_rows(old).values()
    assert [p.fp8_floor_us for p in old_pts] == [None] * len(GRID_T)
    assert [p.roofline_fraction for p in old_pts] == [p.roofline_fraction for p in pts]


def fp8_lines(fig) -> list:
    return [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_label().startswith(FP8_LABEL)]


def test_latency_plot_draws_the_fp8_line_only_where_the_rows_carry_the_rate():
    from mxmoe.tuning.report.plots import latency_figure

    cand = best_layer_rows([fp8_row("c", t, FP8_FLOORS) for t in GRID_T])
    base = best_layer_rows([fp8_row("b", t, OLD_FLOORS) for t in GRID_T])
    [line] = fp8_lines(latency_figure(cand, base))
    [pts] = cand.values()
    assert line.get_label() == f"{FP8_LABEL} (measured)"
    assert list(line.get_xdata()) == list(GRID_T)
    assert list(line.get_ydata()) == [p.fp8_floor_us for p in pts]
    assert fp8_lines(latency_figure({}, base)) == []


def test_page_says_what_the_fp8_line_is_only_when_it_is_drawn(tmp_path):
    with Ledger.open(tmp_path / "l.sqlite") as led:
        for name, floors in (("fp8", FP8_FLOORS), ("old", OLD_FLOORS)):
            led.add_campaign(name)
            for t in GRID_T:
                led.record(fp8_row(name, t, floors))
        with_line = build_report(led, "fp8", None, tmp_path / "a").read_text(encoding="utf-8")
        without = build_report(led, "old", None, tmp_path / "b").read_text(encoding="utf-8")
    assert f"{FP8_LABEL}: the layer's FLOPs at the dense e4m3 tensor-core rate" in with_line
    assert "nominal H100 e4m3 rate" not in with_line  # measured rows: no nominal caveat
    assert FP8_LABEL not in without

"""Records: the typed rows of the ledger. Oracle: the fields themselves (round trips are exact);
keys are checked for what they must and must not depend on."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxmoe.config import MoEConfig, TileConfig
from mxmoe.shapes import MODELS, Path
from mxmoe.tuning.ledger.records import (
    INTERPRETER,
    Attempt,
    GuardrailResult,
    Status,
    active,
    canonical_json,
    csv_rows,
)
from mxmoe.tuning.timing.value import Timing, pop_timing

CFG = MoEConfig(TileConfig(), TileConfig(block_n=128))
H100 = "NVIDIA H100 80GB HBM3"


def make(**kw) -> Attempt:
    """A claimable measured layer row of `tiny`; override any field (the timing as its flat fields, as a stored row
    holds them)."""
    fields = dict(
        campaign="c",
        status=Status.MEASURED,
        model="tiny",
        shape=MODELS["tiny"].to_dict(),
        path="a16w4",
        stage="layer",
        tokens=16,
        config=CFG.to_dict(),
        config_key=CFG.key(),
        kernel_hash="kh1",
        device=H100,
        median_us=10.0,
        p95_us=11.0,
        ci_lo_us=9.9,
        ci_hi_us=10.1,
        samples_us=(9.9, 10.0, 10.1, 11.0),
        claimable=True,
        provenance={"git_commit": "abc123"},
        argv=("mxmoe", "sweep", "--model", "tiny"),
        created_at="2025-01-01T00:00:00.000000+00:00",
    )
    fields.update(kw)
    timing = pop_timing(fields, "Attempt")
    fields.setdefault("timing", timing)
    return Attempt.make(**fields)


# ---- status ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, status, reason",
    [
        ("measured", Status.MEASURED, None),
        ("illegal:SMEM", Status.ILLEGAL, "SMEM"),
        ("unmeasured:clocks_unverified", Status.UNMEASURED, "clocks_unverified"),
        ("worker_lost", Status.WORKER_LOST, None),
    ],
)
def test_status_parse_and_text(text, status, reason):
    assert Status.parse(text) == (status, reason)
    kw = dict(status=status, reason=reason)
    if status is not Status.MEASURED:
        kw |= dict(median_us=None, p95_us=None, ci_lo_us=None, ci_hi_us=None, samples_us=(), claimable=False)
    assert make(**kw).status_text == text


@pytest.mark.parametrize("text", ["illegal", "measured:x", "bogus", "unmeasured:"])
def test_status_parse_rejects(text):
    with pytest.raises(ValueError):
        Status.parse(text)


# ---- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(status=Status.ILLEGAL, claimable=False), "needs a reason"),
        (dict(reason="x"), "takes no"),
        (dict(stage="3"), "stage"),
        (dict(tokens=-1), "tokens"),
        (dict(tokens=True), "tokens"),
        (dict(median_us=None), "needs median_us"),
        (dict(median_us=12.0), "does not contain"),
        (dict(median_us=float("nan")), "finite"),
        (dict(samples_us=(1.0, float("inf"))), "finite"),
        (dict(median_us=None, ci_lo_us=None, ci_hi_us=None), "without median_us"),
        (dict(timing=(10.0, 9.9, 10.1)), "must be a Timing"),
        (dict(device=INTERPRETER), "interpreter"),
        (dict(nonclaimable_reasons=("dirty_tree",)), "claimable yet"),
        (dict(status=Status.TIMEOUT), "only measured"),
        (dict(created_at="2025-01-01T00:00:00"), "UTC"),
        (dict(created_at="yesterday"), "ISO"),
        (dict(provenance={"x": object()}), "JSON"),
        (dict(campaign=""), "campaign"),
    ],
)
def test_attempt_validation_names_the_bad_value(changes, match):
    with pytest.raises(ValueError, match=match):
        make(**changes)


def test_from_dict_is_strict():
    d = make().to_dict()
    with pytest.raises(ValueError, match="unknown Attempt fields"):
        Attempt.from_dict(d | {"colour": "red"})
    d.pop("device")
    with pytest.raises(ValueError, match="missing"):
        Attempt.from_dict(d)
    with pytest.raises(ValueError, match="computes the key"):
        Attempt.make(key="x")


def test_the_timing_is_nested_but_stored_flat():
    a = make()
    assert a.timing == Timing(median_us=10.0, ci_lo_us=9.9, ci_hi_us=10.1, p95_us=11.0,
                              samples_us=(9.9, 10.0, 10.1, 11.0))
    d = a.to_dict()
    assert "timing" not in d and (d["median_us"], d["p95_us"], d["ci_lo_us"], d["ci_hi_us"]) == (10.0, 11.0, 9.9, 10.1)
    assert d["samples_us"] == [9.9, 10.0, 10.1, 11.0]
    with pytest.raises(ValueError, match="unknown Attempt fields"):
        Attempt.from_dict(d | {"timing": None})
    untimed = make(status=Status.TIMEOUT, claimable=False, timing=None)
    assert untimed.stats() is None
    assert {k: untimed.to_dict()[k] for k in ("median_us", "p95_us", "samples_us")} == {
        "median_us": None, "p95_us": None, "samples_us": []}


def test_path_enum_is_stored_as_its_value():
    assert make(path=Path.A8W4).path == "a8w4"
    assert make(path=Path.A8W4).key == make(path="a8w4").key


# ---- keys ------------------------------------------------------------------------------------------


def test_key_is_a_content_hash_of_the_probe():
    a = make()
    assert a.key == a.computed_key() == make().key  # a re-run of the same probe gets the same key
    # not key material: time, results, provenance, argv, device uuid
    same = make(
        created_at="2026-02-02T00:00:00+00:00",
        median_us=20.0,
        ci_lo_us=19.0,
        ci_hi_us=21.0,
        provenance={},
        argv=(),
        device_uuid="GPU-1",
        detail="x",
    )
    assert same.key == a.key
    for change in (
        dict(campaign="other"),
        dict(tokens=32),
        dict(stage="1"),
        dict(routing="skewed"),
        dict(config_key="other"),
        dict(kernel_hash="kh2"),
        dict(device="NVIDIA H200"),
        dict(model="tiny-oai"),
        dict(supersedes=a.key),
        dict(path="a4w4"),
    ):
        assert make(**change).key != a.key, change


def test_probe_ignores_kernel_hash_and_supersedes():
    a = make()
    assert make(kernel_hash="kh2", supersedes=a.key).probe == a.probe
    assert make(tokens=32).probe != a.probe


def test_active_drops_superseded_rows():
    a = make()
    b = make(kernel_hash="kh2", supersedes=a.key)
    c = make(tokens=32)
    assert active([a, b, c]) == [b, c]


# ---- round trips (hypothesis) ----------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
_num = st.floats(min_value=1e-3, max_value=1e7, allow_nan=False, allow_infinity=False)
_json_val = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _num | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def attempts(draw) -> Attempt:
    status = draw(st.sampled_from(list(Status)))
    kw: dict = dict(status=status, reason=draw(_text) if status.needs_reason else None)
    kw["device"] = draw(st.sampled_from([H100, INTERPRETER, "NVIDIA H200"]))
    if status is Status.MEASURED or draw(st.booleans()):
        lo, mid, hi = sorted(draw(st.lists(_num, min_size=3, max_size=3)))
        samples = tuple(draw(st.lists(_num, max_size=5)))
        kw |= dict(median_us=mid, ci_lo_us=lo, ci_hi_us=hi, p95_us=draw(st.none() | _num), samples_us=samples)
    else:  # a timing is whole or absent: no samples without a median (Timing)
        kw |= dict(median_us=None, ci_lo_us=None, ci_hi_us=None, p95_us=None, samples_us=())
    kw["claimable"] = status is Status.MEASURED and kw["device"] != INTERPRETER and draw(st.booleans())
    kw["nonclaimable_reasons"] = () if kw["claimable"] else tuple(draw(st.lists(_text, max_size=3)))
    kw |= dict(
        campaign=draw(_text),
        model=draw(_text),
        stage=draw(st.sampled_from(["1", "2", "layer"])),
        tokens=draw(st.integers(0, 32768)),
        routing=draw(_text),
        config_key=draw(_text),
        kernel_hash=draw(st.text(max_size=8)),
        tflops=draw(st.none() | _num),
        roofline_fraction=draw(st.none() | _num),
        provenance=draw(st.dictionaries(_text, _json_val, max_size=4)),
        config=draw(st.dictionaries(_text, _json_val, max_size=4)),
        argv=tuple(draw(st.lists(st.text(max_size=10), max_size=4))),
        supersedes=draw(st.none() | _text),
        detail=draw(st.none() | st.text(max_size=40)),
        device_uuid=draw(st.none() | _text),
    )
    return make(**kw)


@settings(max_examples=150, deadline=None)
@given(attempts())
def test_attempt_round_trips_through_dict_and_json(a):
    assert Attempt.from_dict(a.to_dict()) == a
    back = Attempt.from_dict(json.loads(canonical_json(a.to_dict())))
    assert back == a
    assert back.key == a.computed_key()
    assert back.result_digest() == a.result_digest()


@settings(max_examples=50, deadline=None)
@given(attempts(), _num)
def test_result_digest_sees_results_not_time(a, t):
    d = a.to_dict()
    later = Attempt.from_dict(d | {"created_at": "2030-01-01T00:00:00+00:00"})
    assert later.result_digest() == a.result_digest()
    if a.timing is None:
        changed = Attempt.from_dict(d | {"tflops": t if a.tflops != t else t + 1.0})
    else:
        changed = Attempt.from_dict(d | {"samples_us": [*a.timing.samples_us, t]})
    assert changed.result_digest() != a.result_digest()


# ---- guardrail -------------------------------------------------------------------------------------


def test_guardrail_round_trip_and_threshold():
    g = GuardrailResult(
        campaign="c",
        model="tiny",
        path=Path.A16W4,
        config_keys=[CFG.key()],
        logits_diff=0.004,
        agreement=0.999,
        passed=True,
        provenance={"git_commit": "abc"},
    )
    assert g.path == "a16w4" and g.config_keys == (CFG.key(),)
    assert GuardrailResult.from_dict(g.to_dict()) == g
    assert GuardrailResult.from_dict(g.to_dict()).key() == g.key()
    with pytest.raises(ValueError, match="cannot pass"):
        GuardrailResult(
            campaign="c", model="tiny", path="a16w4", config_keys=("k",), logits_diff=0.02, agreement=1.0, passed=True
        )
    with pytest.raises(ValueError, match="config_keys"):
        GuardrailResult(
            campaign="c", model="tiny", path="a16w4", config_keys=(), logits_diff=0.0, agreement=1.0, passed=True
        )
    with pytest.raises(ValueError, match="unknown"):
        GuardrailResult.from_dict(g.to_dict() | {"extra": 1})


def test_csv_rows_flatten_config_and_join_samples():
    rows = csv_rows(
        [
            make(),
            make(
                status=Status.ILLEGAL,
                reason="SMEM",
                claimable=False,
                stage="1",
                config=TileConfig().to_dict(),
                config_key=TileConfig().key(),
            ),
        ]
    )
    assert rows[0]["config.stage1.block_m"] == 16 and rows[1]["config.stage1.block_m"] == ""
    assert rows[1]["config.block_n"] == 64 and rows[1]["status"] == "illegal:SMEM"
    assert rows[0]["samples_us"] == "9.9;10.0;10.1;11.0" and rows[0]["n_samples"] == 4
    assert list(rows[0]) == list(rows[1])

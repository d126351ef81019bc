"""The e2e guardrail: a candidate's tiles inside a real transformers model graph, against the reference graph.

Axis legend: B batch, S sequence, V vocab, H hidden; P = B*S positions.

One run (docs/guardrail.md gives the why of each choice):
  1. build a GptOssForCausalLM / DeepseekV3ForCausalLM from its transformers config with seeded random weights
     (never downloaded), a few decoder layers, fp32; the MoE dims come from a MODELS shape (experts capped);
  2. replace every expert weight by its MXFP4-dequantized value and run a seeded [B, S] batch of token ids
     through this plain transformers model;
  3. `patch_model` with the candidate's config, and run the same graph three ways: experts on the oracle
     (mxmoe.reference) at a16w4, which must reproduce the plain model (`fidelity`: the weight layout and
     activation conventions are right); on the oracle at the candidate's path (the reference, each experts
     call's input and routing recorded); on the kernels, once free and once with the reference's experts
     inputs replayed (ExpertsTape: the router's top-k and the path's activation rounding are discrete, so any
     upstream rounding difference flips some of them, which is not the kernels' error), checking that exactly
     the candidate's config was launched (REFERENCE.md shortfall 1).
logits_diff = max over positions and vocab of |log_softmax(reference) - log_softmax(kernels)| in float64, on the
replayed run; the free run's value, the routing flips and the input drift it avoided are reported beside it.
Pass: logits_diff <= spec.E2E_LOGITS_DIFF_MAX and greedy next tokens agree at every decisive position.
The report type is `outcome.py`'s, the forward capture and the metrics `metrics.py`'s, the model
factory and experts hooks `model.py`'s; this module runs and judges, and re-exports their public names.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mxmoe import dispatch
from mxmoe.config import MoEConfig
from mxmoe.dispatch import choose_config, interpreter_active
from mxmoe.heuristic import on_e4m3
from mxmoe.shapes import MODELS, Activation, MoEShape, Path
from mxmoe.spec import E2E_LOGITS_DIFF_MAX
from mxmoe.tolerance import Tolerance, compare
from mxmoe.tuning.guardrail.metrics import GraphRun, agreement, forward, layer_errors, logits_diff
from mxmoe.tuning.guardrail.outcome import GuardrailReport, LayerError, Outcome
from mxmoe.tuning.ledger.records import GuardrailResult, Status, active
from mxmoe.tuning.ledger.store import Ledger

FAMILIES = ("gpt-oss", "deepseek-v3")
_ACTIVATION = {"gpt-oss": Activation.SWIGLU_OAI, "deepseek-v3": Activation.SILU}
SMALL_SHAPES = {"gpt-oss": "tiny-oai", "deepseek-v3": "tiny"}  # CPU / interpreter default
FULL_SHAPES = {"gpt-oss": "gpt-oss-20b", "deepseek-v3": "deepseek-v3"}  # GPU default: real hidden and inter
MAX_EXPERTS = 32  # experts kept per layer; gpt-oss-20b has exactly 32, DeepSeek-V3 256 -> 32 to fit and be quick
BATCH, SEQ = 2, 16
_TOKEN_STREAM = 0x70CE5  # token ids draw from their own generator stream of the seed
# The a16w4 oracle rounds x, the intermediate and the output to bf16 (each <= 2**-9 relative per element) where
# transformers' fp32 experts round nothing: measured ~3e-3 rms on layer 0 of both tiny models. 1e-2 leaves 3x
# headroom; a wrong layout (gate/up swapped, interleave, transpose) or routing-weight mix-up is O(1).
FIDELITY = Tolerance(max_rel=2e-2, rms_rel=1e-2)


class _Failed(Exception):
    """A stage of the run failed; carries the typed outcome (never escapes this module)."""

    def __init__(self, outcome: Outcome, detail: str) -> None:
        super().__init__(detail)
        self.outcome, self.detail = outcome, detail


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower() or (
        "can't allocate memory" in str(exc))


def _stage(outcome: Outcome, what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        why = "".join(traceback.format_exception_only(exc)).strip()
        raise _Failed(Outcome.OUT_OF_MEMORY if _is_oom(exc) else outcome, f"{what}: {why}") from exc


def resolve_shape(family: str, shape: MoEShape | str | None, small: bool) -> MoEShape:
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}: the guardrail supports {FAMILIES}")
    if shape is None:
        shape = (SMALL_SHAPES if small else FULL_SHAPES)[family]
    if isinstance(shape, str):
        if shape not in MODELS:
            raise ValueError(f"unknown shape {shape!r}; known: {', '.join(MODELS)}")
        shape = MODELS[shape]
    if shape.activation is not _ACTIVATION[family]:
        raise ValueError(f"shape {shape.name} computes {shape.activation.value}; {family} computes "
                         f"{_ACTIVATION[family].value}")
    return shape


# ---- the run's context ---------------------------------------------------------------------------------------


@contextmanager
def _fp32_matmuls() -> Iterator[None]:
    """Full-precision fp32 matmuls for the run (no TF32): the oracle and the plain model must not round."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


@contextmanager
def _config_dir(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """MXMOE_CONFIG_DIR for the block only: dispatch reads the tuned tables from there (its environment snapshot
    is retaken on the way in and out: dispatch reads the variable once, not per call)."""
    if path is None:
        yield
        return
    old = os.environ.get(dispatch.CONFIG_DIR_ENV)
    os.environ[dispatch.CONFIG_DIR_ENV] = os.fspath(path)
    dispatch.clear_cache()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(dispatch.CONFIG_DIR_ENV)
        else:
            os.environ[dispatch.CONFIG_DIR_ENV] = old
        dispatch.clear_cache()


# ---- the run ------------------------------------------------------------------------------------------------


def run_guardrail(
    family: str,
    path: Path | str = Path.A16W4,
    *,
    config: MoEConfig | str | os.PathLike[str] | None = None,
    shape: MoEShape | str | None = None,
    layers: int = 2,
    small: bool | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    max_experts: int = MAX_EXPERTS,
    e4m3: bool = False,
    e4m3_stages: tuple[int, ...] = (1, 2),
) -> GuardrailReport:
    """Run the guardrail once (module docstring). `config`: a MoEConfig forced on every layer; a tuned-table
    directory, whose entry for `shape` at T = B*S (dispatch's lookup under MXMOE_CONFIG_DIR) is forced; or
    None for dispatch's own choice on the graph's (capped) shape. `small` (default: on CPU)
    takes tiny attention and vocab; `shape` (default SMALL_SHAPES / FULL_SHAPES) gives the MoE dims and the
    recorded model name. `e4m3` (a8w4 only) forces both stages of the config so chosen onto FP8 tensor cores
    (`e4m3_forced`), the weights built with their e4m3 layout: issue 23's guardrail with the e4m3 path forced;
    `e4m3_stages` (1, 2 or both) forces only those, which tells the stages' errors apart.
    Failures come back as the report's `outcome`, never as an exception."""
    path = Path(path)
    if e4m3 and path is not Path.A8W4:
        raise ValueError(f"e4m3=True forces the e4m3 stages, which run a8w4 only (got path {path.value})")
    if not e4m3_stages or not set(e4m3_stages) <= {1, 2}:
        raise ValueError(f"e4m3_stages={e4m3_stages!r}: expected stage 1, 2 or both")
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    small = device.type == "cpu" if small is None else small
    shape = resolve_shape(family, shape, small)
    forced = config if isinstance(config, MoEConfig) else None
    table = None if config is None or forced is not None else config
    if table is not None and not os.path.isdir(table):
        raise ValueError(f"config={table!r} is neither a MoEConfig nor a tuned-table directory")
    t0 = time.perf_counter()
    with _config_dir(table), _fp32_matmuls():
        intended = forced or choose_config(shape, path, BATCH * SEQ)
        if table is not None:  # the table's entry for the shape at T = B*S, forced on the (capped) graph
            forced = intended
        if e4m3:
            intended = forced = e4m3_forced(shape, intended, e4m3_stages)
        base = dict(family=family, model=shape.name, path=path, device=str(device), seed=seed,
                    interpreter=interpreter_active(), config_keys=(intended.key(),))
        runs: dict[str, Any] = {}
        try:
            _run_graphs(runs, family, shape, path, forced, dict(layers=layers, small=small, seed=seed, device=device,
                                                                max_experts=max_experts))
        except _Failed as f:
            if "model" in runs:  # a failure is tied to the intended config and to whatever else was launched
                base["config_keys"] = tuple(dict.fromkeys((intended.key(), *_launched(runs["model"]))))
            return GuardrailReport(outcome=f.outcome, detail=f.detail, model_config=runs.get("summary", {}),
                                   fidelity=_fidelity(runs), seconds=time.perf_counter() - t0, **base)
    base["config_keys"] = _launched(runs["model"])
    return _judge(runs, time.perf_counter() - t0, base)


def e4m3_forced(shape: MoEShape, config: MoEConfig, stages: tuple[int, ...] = (1, 2)) -> MoEConfig:
    """`config` with `stages` on e4m3 wgmma, each tile fitted to the two accumulator chains
    (`heuristic.on_e4m3`); patch_model builds the e4m3 weight layout a forced e4m3 config needs."""
    s1 = on_e4m3(shape, 1, config.stage1) if 1 in stages else config.stage1
    s2 = on_e4m3(shape, 2, config.stage2) if 2 in stages else config.stage2
    return MoEConfig(s1, s2)


def _run_graphs(runs: dict[str, Any], family: str, shape: MoEShape, path: Path, forced: MoEConfig | None,
                build: dict[str, Any]) -> None:
    """Steps 1-3 of the module docstring; fills `runs` as it goes, so a failure report keeps what ran."""
    from mxmoe.integrations.transformers import Backend, dequantize_model_experts, patch_model
    from mxmoe.tuning.guardrail.model import ExpertsTape, experts_tape, model_summary, random_model, use_backend

    runs["model"] = model = _stage(Outcome.RUNTIME, "build", lambda: random_model(family, shape, **build))
    runs["summary"] = model_summary(model) | {"shape": shape.name, "shape_experts": shape.routed_experts,
                                              "small": build["small"], "batch": BATCH, "seq": SEQ}
    g = torch.Generator(device="cpu").manual_seed(build["seed"] ^ _TOKEN_STREAM)
    ids = torch.randint(0, model.config.vocab_size, (BATCH, SEQ), generator=g).to(build["device"])
    _stage(Outcome.RUNTIME, "dequantize experts", lambda: dequantize_model_experts(model))
    runs["plain"] = _reference(lambda: forward(model, ids), "plain transformers model")
    _stage(Outcome.RUNTIME, "patch_model", lambda: patch_model(model, path, forced))
    with use_backend(model, Backend.REFERENCE, Path.A16W4), experts_tape(model, ExpertsTape()) as a16w4_tape:
        runs["a16w4"] = _reference(lambda: forward(model, ids), "a16w4 oracle graph")
    _check_fidelity(runs["plain"], runs["a16w4"])
    runs["ref"], runs["tape"] = runs["a16w4"], a16w4_tape
    if path is not Path.A16W4:
        with use_backend(model, Backend.REFERENCE), experts_tape(model, ExpertsTape()) as tape:
            runs["ref"] = _reference(lambda: forward(model, ids), f"{path.value} oracle graph")
        runs["tape"] = tape
    runs["kernel_free"] = _stage(Outcome.RUNTIME, "kernel forward", lambda: forward(model, ids))
    with experts_tape(model, runs["tape"].replay()):
        runs["kernel"] = _stage(Outcome.RUNTIME, "kernel forward (oracle's experts inputs replayed)",
                                lambda: forward(model, ids))
    _check_launched(model, forced)


def _reference(fn: Callable[[], GraphRun], what: str) -> GraphRun:
    run = _stage(Outcome.REFERENCE_INVALID, f"{what} forward", fn)
    bad = int((~torch.isfinite(run.logits)).sum())
    if bad:
        raise _Failed(Outcome.REFERENCE_INVALID, f"the {what} has {bad} non-finite logits")
    return run


def _launched(model: nn.Module) -> tuple[str, ...]:
    from mxmoe.integrations.transformers import launched_configs

    return tuple(launched_configs(model))


def _check_launched(model: nn.Module, forced: MoEConfig | None) -> None:
    """The run must have launched the candidate's tiles and nothing else."""
    launched = _launched(model)
    if not launched:
        raise _Failed(Outcome.RUNTIME, "the patched model launched no mxmoe kernel")
    if forced is not None and launched != (forced.key(),):
        raise _Failed(Outcome.RUNTIME, f"launched configs {list(launched)}, expected only {forced.key()}: "
                                       "the guardrail did not run the candidate's tiles")


def _fidelity(runs: dict[str, Any]) -> float | None:
    if "plain" not in runs or "a16w4" not in runs:
        return None
    return compare(runs["a16w4"].moe[0], runs["plain"].moe[0], Tolerance(math.inf, math.inf)).rms_rel


def _check_fidelity(plain: GraphRun, oracle: GraphRun) -> None:
    """Layer 0's MoE block sees identical inputs in both graphs, so it isolates the experts: the oracle at
    a16w4 must match transformers' own experts up to its bf16 roundings (see FIDELITY)."""
    c = compare(oracle.moe[0], plain.moe[0], FIDELITY, name="layer-0 MoE block, a16w4 oracle vs transformers")
    if not c.ok:
        raise _Failed(Outcome.REFERENCE_INVALID, f"the patched graph does not reproduce the model: {c.message}")


def _judge(runs: dict[str, Any], seconds: float, base: dict[str, Any]) -> GuardrailReport:
    ref, out = runs["ref"], runs["kernel"]
    diff = logits_diff(ref.logits, out.logits)
    free = logits_diff(ref.logits, runs["kernel_free"].logits)
    agree, decisive, ties = agreement(ref.logits, out.logits)
    vs_plain = logits_diff(runs["plain"].logits, out.logits)
    ok = diff <= E2E_LOGITS_DIFF_MAX and decisive == 1.0
    detail = None
    if not ok:
        why = "non-finite logits" if not math.isfinite(diff) else f"logits_diff {diff:.3e} > {E2E_LOGITS_DIFF_MAX}"
        detail = f"{why}; decisive greedy agreement {decisive:.3f}"
    finite = lambda v: v if math.isfinite(v) else None
    return GuardrailReport(outcome=Outcome.PASSED if ok else Outcome.CORRECTNESS, logits_diff=finite(diff),
                           agreement=agree, decisive_agreement=decisive, near_ties=ties,
                           logits_diff_vs_plain=finite(vs_plain), fidelity=_fidelity(runs),
                           logits_diff_free=finite(free), routing_flips=tuple(runs["tape"].flips),
                           input_drift=tuple(runs["tape"].drift),
                           layers=layer_errors(ref, out), model_config=runs["summary"], seconds=seconds, detail=detail,
                           **base)


# ---- campaigns and the ledger -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Winner:
    """A config that won at least one (model, path, T) point of a campaign: the best claimable measured
    layer row there. `config_key` is the sweep row's own key; `tokens` the points it won."""

    model: str
    shape: MoEShape
    config: MoEConfig
    config_key: str
    tokens: tuple[int, ...]


def family_of_shape(shape: MoEShape) -> str:
    return "gpt-oss" if shape.activation is Activation.SWIGLU_OAI else "deepseek-v3"


def _shape_of_row(d: dict[str, Any]) -> MoEShape:
    return MoEShape(**{**d, "activation": Activation(d["activation"])})


def campaign_winners(ledger: Ledger, campaign: str, family: str, path: Path | str) -> list[Winner]:
    """The configs the gate will ask about: per point (model, path, routing, T) of `campaign`, the best claimable
    measured layer row (lowest median, key breaks ties: gate._best's order), for one family and path."""
    path = Path(path)
    best: dict[tuple[str, str, str, int], Any] = {}
    for r in active(ledger.attempts(campaign, stage="layer", path=path.value)):
        if r.status is not Status.MEASURED or not r.claimable or family_of_shape(_shape_of_row(r.shape)) != family:
            continue
        old = best.get(r.point)
        if old is None or (r.timing.median_us, r.key) < (old.timing.median_us, old.key):
            best[r.point] = r
    won: dict[tuple[str, str], list[Any]] = {}
    for r in best.values():
        won.setdefault((r.model, r.config_key), []).append(r)
    return [Winner(model, _shape_of_row(rs[0].shape), MoEConfig.from_dict(rs[0].config), ck,
                   tuple(sorted({r.tokens for r in rs}))) for (model, ck), rs in sorted(won.items())]


def guard_campaign(ledger: Ledger, campaign: str, family: str, path: Path | str, *, baseline: str | None = None,
                   **kwargs: Any) -> list[tuple[Winner, GuardrailReport]]:
    """run_guardrail for each winner (its shape and its config forced) and record a GuardrailResult per config
    under the sweep rows' model name. kwargs go to run_guardrail (layers, seed, device, small, max_experts).
    With `baseline`, a winner that is the baseline's own config at every point it won is skipped: the gate asks
    guardrails only of configs that win, and a tie with the heuristic is no win (each run costs a model build)."""
    base: dict[tuple[str, int], set[str]] = {}
    if baseline is not None:
        for r in active(ledger.attempts(baseline, stage="layer", path=Path(path).value)):
            base.setdefault((r.model, r.tokens), set()).add(r.config_key)
    out = []
    for w in campaign_winners(ledger, campaign, family, path):
        if baseline is not None and all(w.config_key in base.get((w.model, t), ()) for t in w.tokens):
            continue
        report = run_guardrail(family, path, config=w.config, shape=w.shape, **kwargs)
        ledger.record_guardrail(report.to_result(campaign, extra_keys=(w.config_key,)))
        out.append((w, report))
    return out


def record(ledger: Ledger, campaign: str, report: GuardrailReport) -> GuardrailResult:
    """Write one report to the ledger as a GuardrailResult (the campaign must exist)."""
    result = report.to_result(campaign)
    ledger.record_guardrail(result)
    return result


__all__ = ["BATCH", "FAMILIES", "FIDELITY", "FULL_SHAPES", "MAX_EXPERTS", "SEQ", "SMALL_SHAPES", "GuardrailReport",
           "LayerError", "Outcome", "Winner", "agreement", "campaign_winners", "family_of_shape", "guard_campaign",
           "logits_diff", "record", "resolve_shape", "run_guardrail"]

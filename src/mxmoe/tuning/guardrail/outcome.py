"""What one guardrail run reports: how it ended (Outcome), the per-layer errors, and the typed GuardrailReport with
its JSON form and its ledger record (GuardrailResult).

It exists apart from `run.py` so that the result type, which the CLI, the ledger and the tests read, does
not live inside the run that builds and executes transformers models. No torch here. Imported by
`mxmoe.tuning.guardrail.run` (which re-exports its names) and `mxmoe.tuning.guardrail.metrics`; it imports neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mxmoe.shapes import Path
from mxmoe.tuning.ledger.records import GuardrailResult


class Outcome(StrEnum):
    """How a guardrail run ended."""

    PASSED = "passed"  # logits_diff within the spec and every decisive greedy token agrees
    CORRECTNESS = "correctness"  # the patched model ran but differs from the reference beyond the spec
    OUT_OF_MEMORY = "out_of_memory"  # an allocation failed (building, patching or running)
    RUNTIME = "runtime"  # patching or the kernels raised, or a config other than the candidate's ran
    REFERENCE_INVALID = "reference_invalid"  # the reference raised or produced NaN/Inf: nothing to compare to


@dataclass(frozen=True, slots=True)
class LayerError:
    """Patched vs reference at one decoder layer, relative to the whole reference tensor (tolerance.compare)."""

    layer: int
    rms_rel: float  # ||kernel - ref||_2 / ||ref||_2 of the layer's output hidden states [B, S, H]
    max_rel: float  # max|kernel - ref| / max|ref| of the same
    moe_rms_rel: float  # rms_rel of the layer's MoE block output (routed experts + shared expert)


@dataclass(frozen=True, slots=True)
class GuardrailReport:
    """One guardrail run. `model` is the MODELS shape name the MoE dims came from (the sweep rows' name)."""

    family: str
    model: str
    path: Path
    outcome: Outcome
    config_keys: tuple[str, ...]  # the MoEConfig keys the kernels launched (the intended one if none ran)
    logits_diff: float | None = None  # kernels vs the oracle graph at the path, the oracle's experts inputs
    # replayed; None without a finite comparison
    logits_diff_free: float | None = None  # the same with the experts fed by the kernels' own graph
    routing_flips: tuple[int, ...] = ()  # per layer: tokens whose own top-k set differed from the oracle's
    input_drift: tuple[float, ...] = ()  # per layer: rms_rel of the experts input the kernels' graph produced
    agreement: float | None = None  # greedy next-token agreement over all B*S positions
    decisive_agreement: float | None = None  # the same over positions whose reference top-2 margin > 2*limit
    near_ties: int = 0  # positions with reference top-2 margin <= 2*limit (a flip there fits inside logits_diff)
    logits_diff_vs_plain: float | None = None  # kernels vs the plain transformers model: the path's accuracy cost
    fidelity: float | None = None  # layer-0 MoE block rms_rel, a16w4 oracle graph vs the plain model
    layers: tuple[LayerError, ...] = ()  # kernels vs the oracle graph, per decoder layer
    model_config: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    interpreter: bool = False
    seed: int = 0
    seconds: float = 0.0
    detail: str | None = None

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d |= {"path": self.path.value, "outcome": self.outcome.value, "config_keys": list(self.config_keys),
              "layers": [{k: getattr(x, k) for k in x.__dataclass_fields__} for x in self.layers],
              "routing_flips": list(self.routing_flips), "input_drift": list(self.input_drift),
              "passed": self.passed}
        return d

    def to_result(self, campaign: str, extra_keys: tuple[str, ...] = ()) -> GuardrailResult:
        """The ledger record; `extra_keys` adds the sweep row's config_key when it was computed elsewhere."""
        skip = ("model", "path", "config_keys", "detail", "logits_diff", "agreement", "passed")
        prov = _finite({k: v for k, v in self.to_dict().items() if k not in skip})
        detail = self.outcome.value + (f": {self.detail}" if self.detail else "")
        return GuardrailResult(campaign=campaign, model=self.model, path=self.path,
                               config_keys=tuple(dict.fromkeys((*self.config_keys, *extra_keys))),
                               logits_diff=self.logits_diff, agreement=self.agreement, passed=self.passed,
                               detail=detail, provenance=prov)


def _finite(obj: Any) -> Any:
    """JSON-clean copy for the ledger: non-finite floats (a NaN layer error) become None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj

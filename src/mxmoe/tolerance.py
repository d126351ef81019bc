"""How close a kernel's output must be to the reference: max and RMS relative error, per (path, stage).

Both errors are relative to the whole expected tensor, not per element, so a tiny expected value does not
blow up the ratio:  max_rel = max|a - e| / max|e|,  rms_rel = ||a - e||_2 / ||e||_2  (float64).
Any NaN or Inf in the actual output fails, whatever the numbers: the sweep fills outputs with NaN before a
candidate runs, so a kernel that skips rows is caught here.

Stages: "stage1" the [T*A, I] intermediate, "stage2" the [T, H] output of stage 2 fed the reference's
own intermediate, "layer" the whole layer against `reference.moe_reference`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mxmoe.shapes import Path

STAGES = ("stage1", "stage2", "layer")
_TINY = torch.finfo(torch.float64).tiny


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Limits on max_rel and rms_rel (see the module docstring); both must hold."""

    max_rel: float
    rms_rel: float

    def __post_init__(self) -> None:
        for name in ("max_rel", "rms_rel"):
            v = getattr(self, name)
            if not v >= 0:
                raise ValueError(f"Tolerance.{name} must be a non-negative number, got {v!r}")


# Numbers below: u = 2**-8 is one bf16 ulp relative to a value in [1, 2) (8 significant bits), so one
# round-to-nearest costs at most u/2 ~ 2e-3 relative and a "flip" (kernel and reference pre-round values
# straddling a rounding boundary because their fp32 accumulation orders differ) costs up to one ulp,
# <= 2u ~ 7.8e-3 of the element. The weights (e2m1 x e8m0) and bf16 / e4m3 activations are exact in the
# fp32 accumulator's products, so the kernel differs from the oracle only by summation order (~1e-6) and
# by the roundings it shares with it; flips are the only large per-element differences. They are rare
# (probability ~ accumulation noise / grid step, ~1e-5 per element for e4m3), so the RMS limits are set
# by the unshared bf16 output rounding plus slack for a handful of flips on the small test shapes.
# Measured margins: tests/test_tolerance.py::test_tolerances_cover_reordered_oracle perturbs the oracle's
# accumulation order and checks these limits hold with room to spare.
TOLERANCES: dict[tuple[Path, str], Tolerance] = {
    # bf16 intermediate: both sides round the same fp32 value to bf16; only flips differ, <= 1 bf16 ulp
    # (<= 7.8e-3 of the tensor max); RMS: flips are rare, 2e-3 still allows several on a 1k-element tensor.
    (Path.A16W4, "stage1"): Tolerance(max_rel=1e-2, rms_rel=2e-3),
    # bf16 output vs the fp32 oracle: every element rounds once (<= u/2 = 3.9e-3 relative, RMS ~1.6e-3 for
    # uniformly spread mantissas) plus fp32 combine-order noise from the atomic adds.
    (Path.A16W4, "stage2"): Tolerance(max_rel=1e-2, rms_rel=4e-3),
    # the layer adds stage-1 flips seen through W2 (one flipped bf16 element moves an output by ~u/sqrt(I))
    # on top of the stage-2 output rounding; 2e-2 / 5e-3 leaves ~2.5x headroom over the bf16 bounds.
    (Path.A16W4, "layer"): Tolerance(max_rel=2e-2, rms_rel=5e-3),
    # e4m3 intermediate (4 significant bits): a flip at the tensor's largest element is one e4m3 step,
    # <= 2**-3 = 0.125 of it, and a block whose amax straddles a power of two re-scales 32 elements
    # (each then off by < one step). max_rel 0.15 admits one such flip; RMS stays small because flips
    # are rare: 1.5e-2 admits ~one large flip on a 1k-element test tensor, still ~10x below a wrong tile.
    (Path.A8W4, "stage1"): Tolerance(max_rel=0.15, rms_rel=1.5e-2),
    # stage 2 reads the same e4m3 intermediate as the oracle (dequantization is exact), so it is the a16w4
    # case: one bf16 rounding of the output plus fp32 combine order.
    (Path.A8W4, "stage2"): Tolerance(max_rel=1e-2, rms_rel=4e-3),
    # an intermediate flip of one e4m3 step (<= 1/8 of the element) reaches the output through one W2
    # column among I: ~1/(8*sqrt(I)) of an output row's scale, ~1.6e-2 at I=64; plus the bf16 output.
    (Path.A8W4, "layer"): Tolerance(max_rel=5e-2, rms_rel=1e-2),
    # e2m1 intermediate (grid 0 .5 1 1.5 2 3 4 6): a flip between 4 and 6 is 1/3 of a block max of 6,
    # and a block-scale flip at a power of two moves the block max from 0.75 to 1.0 of 2**k; the
    # largest single-element change is 2 steps of the scale against a tensor max >= 4, i.e. <= 0.5.
    # RMS: a handful of flips over a 1k-element tensor, 5e-2; a wrong tile gives O(1).
    (Path.A4W4, "stage1"): Tolerance(max_rel=0.5, rms_rel=5e-2),
    # same e2m1 intermediate on both sides: the a16w4 stage-2 case.
    (Path.A4W4, "stage2"): Tolerance(max_rel=1e-2, rms_rel=4e-3),
    # an e2m1 flip (up to 1/3 of the element) through one W2 column: ~1/(3*sqrt(I)) of a row, ~4e-2 at
    # I=64; max 0.1 admits one on the tiny shapes; RMS 2e-2 admits a few, a misplaced row still fails.
    (Path.A4W4, "layer"): Tolerance(max_rel=0.1, rms_rel=2e-2),
}


@dataclass(frozen=True, slots=True)
class CloseReport:
    """The outcome of one comparison; `message` is what assert_close raises with."""

    ok: bool
    max_rel: float
    rms_rel: float
    worst: tuple[int, ...] | None
    worst_actual: float | None
    worst_expected: float | None
    n_nonfinite: int
    message: str


def _index(flat_idx: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for dim in reversed(shape):
        out.append(flat_idx % dim)
        flat_idx //= dim
    return tuple(reversed(out))


def compare(actual: torch.Tensor, expected: torch.Tensor, tol: Tolerance, name: str = "") -> CloseReport:
    """Compare in float64 on the expected tensor's device; never raises on numerical mismatch."""
    label = f"{name}: " if name else ""
    shape = tuple(expected.shape)
    if tuple(actual.shape) != shape:
        msg = f"{label}shape mismatch: actual {tuple(actual.shape)}, expected {shape}"
        return CloseReport(False, float("inf"), float("inf"), None, None, None, 0, msg)
    a = actual.detach().to(device=expected.device, dtype=torch.float64).reshape(-1)
    e = expected.detach().to(torch.float64).reshape(-1)
    if a.numel() == 0:
        return CloseReport(True, 0.0, 0.0, None, None, None, 0, f"{label}empty tensors {shape}: ok")

    nonfinite_a = ~torch.isfinite(a)
    n_nonfinite = int(nonfinite_a.sum())
    n_bad_expected = int((~torch.isfinite(e)).sum())
    diff = (a - e).abs()
    if n_nonfinite:
        worst_flat = int(torch.nonzero(nonfinite_a)[0])
    else:
        worst_flat = int(torch.argmax(torch.nan_to_num(diff, nan=float("inf"))))
    worst = _index(worst_flat, shape)
    wa, we = float(a[worst_flat]), float(e[worst_flat])

    max_rel = float(diff.max() / max(float(e.abs().max()), _TINY))
    rms_rel = float(torch.linalg.vector_norm(a - e) / max(float(torch.linalg.vector_norm(e)), _TINY))
    ok = n_nonfinite == 0 and n_bad_expected == 0 and max_rel <= tol.max_rel and rms_rel <= tol.rms_rel

    if n_bad_expected:
        why = f"the expected tensor has {n_bad_expected} non-finite value(s): the reference is broken"
    elif n_nonfinite:
        why = f"{n_nonfinite} of {a.numel()} actual values are NaN/Inf (unwritten or overflowed rows)"
    else:
        why = "ok" if ok else "out of tolerance"
    msg = (
        f"{label}{why}; shape {shape}, max_rel {max_rel:.3e} (limit {tol.max_rel:.1e}), "
        f"rms_rel {rms_rel:.3e} (limit {tol.rms_rel:.1e}); worst at {worst}: actual {wa!r}, expected {we!r}"
    )
    return CloseReport(ok, max_rel, rms_rel, worst, wa, we, n_nonfinite, msg)


def lookup(path: Path | str, stage: str) -> Tolerance:
    """TOLERANCES[(path, stage)], with a ValueError naming the valid keys."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}, expected one of {STAGES}")
    return TOLERANCES[(Path(path), stage)]


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    tol: Tolerance | None = None,
    *,
    path: Path | str | None = None,
    stage: str | None = None,
    name: str = "",
) -> CloseReport:
    """Raise AssertionError naming the worst coordinates unless `actual` is within `tol` of `expected`.

    Without `tol`, the limit is TOLERANCES[(path, stage)]. Returns the report when it passes.
    """
    if tol is None:
        if path is None or stage is None:
            raise ValueError("assert_close needs either tol or both path and stage")
        tol = lookup(path, stage)
    report = compare(actual, expected, tol, name=name)
    if not report.ok:
        raise AssertionError(report.message)
    return report

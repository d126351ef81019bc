"""benchmarks/wgmma_hazard.py's SASS reading on hand-written loops: which groups stay in flight at the back edge and
which loop-top writes reach their A registers (docs/architecture.md, "Known hazard"). The tool's compile path needs
Triton's sm_90 backend and minutes; these check the part that decides what it reports."""

from __future__ import annotations

from bench_script import load

hz = load("wgmma_hazard")


def _sass(*lines: str) -> str:
    return "\n".join(f"        /*{16 * i:04x}*/   {text} ;   /* 0x0 */" for i, text in enumerate(lines))


_BODY = (
    "IMAD.U32 R40, RZ, RZ, UR5",  # loop top (0x0000)
    "LDS.64 R12, [R3]",
    "WARPGROUP.ARRIVE",
    "HGMMA.64x64x16.F32.BF16 R56, R8, gdesc[UR16], R56, gsb0",
    "WARPGROUP.DEPBAR.LE gsb0, 0x1",
    "WARPGROUP.ARRIVE",
    "HGMMA.64x64x16.F32.BF16 R56, R12, gdesc[UR16], R56, gsb0",
    "WARPGROUP.DEPBAR.LE gsb0, 0x1",
    "@!P0 BRA 0x0",
)


def test_a_loop_top_write_to_an_in_flight_groups_a_registers_is_reported():
    """Two groups a step, one left in flight (its A is R12..R15): LDS.64 R12 at the top writes two of them."""
    (loop,) = hz.loops(_sass(*_BODY))
    assert (loop.top, loop.groups, loop.in_flight) == (0, 2, 1)
    assert [text for _, text in loop.writes] == ["LDS.64 R12, [R3]"]


def test_nothing_in_flight_or_no_overlap_reports_no_write():
    drained = list(_BODY)
    drained[-2] = "WARPGROUP.DEPBAR.LE gsb0, 0x0"
    assert hz.loops(_sass(*drained))[0].writes == ()
    elsewhere = list(_BODY)
    elsewhere[1] = "LDS.64 R20, [R3]"
    assert hz.loops(_sass(*elsewhere))[0].writes == ()


def test_loops_without_wgmma_and_forward_branches_are_skipped():
    assert hz.loops(_sass("IADD3 R1, R1, 0x1, RZ", "@P0 BRA 0x40", "@!P1 BRA 0x0")) == []


def test_written_registers():
    assert hz.written("LDS.128 R4, [R2]") == {4, 5, 6, 7}
    assert hz.written("@!P0 LDG.E.64 R10, desc[UR4][R2.64]") == {10, 11}
    assert hz.written("LDSM.16.M88.2 R96, [R96+0xa000]") == {96, 97}
    assert hz.written("STS [R1], R2") == set() and hz.written("ISETP.GE.AND P0, PT, R1, R2, PT") == set()


def test_skeleton_keeps_the_mma_waits_and_memory_of_the_body_in_order():
    (loop,) = hz.loops(_sass(*_BODY))
    n, lines = hz.skeleton(_sass(*_BODY), loop)
    assert n == len(_BODY)
    assert [text.split(" ")[0] for _, text in lines] == [
        "LDS.64", "WARPGROUP.ARRIVE", "HGMMA.64x64x16.F32.BF16", "WARPGROUP.DEPBAR.LE", "WARPGROUP.ARRIVE",
        "HGMMA.64x64x16.F32.BF16", "WARPGROUP.DEPBAR.LE", "@!P0"]


def test_fingerprint_ignores_addresses_and_sees_every_instruction():
    """--fingerprint: the same instructions at other addresses match, any other instruction does not."""
    body = ("IMAD.MOV.U32 R1, RZ, RZ, c[0x0][0x28]", "HGMMA.64x16x16.F32.BF16 R24, R8, gdesc[UR4], R24", "EXIT")
    moved = "\n".join(f"        /*{0x100 + 16 * i:04x}*/   {text} ;   /* 0x0 */" for i, text in enumerate(body))
    assert hz.fingerprint(_sass(*body)) == hz.fingerprint(moved)
    assert hz.fingerprint(_sass(*body)) != hz.fingerprint(_sass(body[0], body[1].replace("R8", "R12"), body[2]))
    assert hz.fingerprint(_sass(*body)) != hz.fingerprint(_sass(*body[:2]))

"""benchmarks/sass_identity.py's fingerprint: the same instructions at other addresses match, any other instruction
does not (the compile path needs Triton's sm_90 backend and minutes; this checks the part that decides)."""

from __future__ import annotations

from bench_script import load

si = load("sass_identity")


def _listing(*lines: str, at: int = 0) -> str:
    head = "\tcode for sm_90\n\t\tFunction : k\n"
    return head + "\n".join(f"        /*{at + 16 * i:04x}*/   {text} ;   /* 0x0 */" for i, text in enumerate(lines))


def test_addresses_do_not_count_and_instructions_do():
    body = ("IMAD.MOV.U32 R1, RZ, RZ, c[0x0][0x28]", "HGMMA.64x16x16.F32.BF16 R24, R8, gdesc[UR4], R24", "EXIT")
    assert si.fingerprint(_listing(*body)) == si.fingerprint(_listing(*body, at=0x100))
    assert si.fingerprint(_listing(*body)) != si.fingerprint(_listing(body[0], body[1].replace("R8", "R12"), body[2]))
    assert si.fingerprint(_listing(*body)) != si.fingerprint(_listing(*body[:2]))

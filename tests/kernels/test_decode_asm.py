"""The GPU decode's inline PTX (kernels/wtile.py `_EXTRACT`) against the weight layout (kernels/layout.py), on the CPU.

The interpreter twin decodes the same words with int32 arithmetic, so CI would not see a PTX line that disagrees
with it. Here each PTX instruction of the bit extraction is emulated in Python on words that `layout._words` packed
from known nibbles, and every output register must hold exactly the bf16 bits of its two nibbles: the sign at bit
15, e1 e0 m at bits 8..6 (+16 for the second value), nothing else. Exact comparison: bit logic has no tolerance.
"""

from __future__ import annotations

import re

import torch

from mxmoe.kernels.layout import _VARIANT, _words
from mxmoe.kernels.wtile import _EXTRACT

_MASK32 = 0xFFFFFFFF


def _operand(tok: str, regs: dict[str, int]) -> int:
    tok = tok.strip()
    return regs[tok] if tok in regs else int(tok, 0)


def _run(lines: tuple[str, ...], word: int) -> dict[str, int]:
    """Emulate the integer PTX ops the extraction uses (and, or, shl, shr, shf.l.wrap on b32)."""
    regs = {"$4": word}
    for line in lines:
        m = re.fullmatch(r"([a-z.0-9]+)\s+(.+);", line.strip())
        assert m, line
        op, args = m.group(1), [a.strip() for a in m.group(2).split(",")]
        dst, src = args[0], [_operand(a, regs) for a in args[1:]]
        if op == "and.b32":
            val = src[0] & src[1]
        elif op == "or.b32":
            val = src[0] | src[1]
        elif op == "shl.b32":
            val = src[0] << src[1]
        elif op == "shr.b32":  # .b32: logical, zero-filled
            val = src[0] >> src[1]
        elif op == "shf.l.wrap.b32":  # funnel shift of (b:a) left by c mod 32, upper word
            a, b, c = src[0], src[1], src[2] % 32
            val = (((b << 32) | a) << c) >> 32
        else:
            raise AssertionError(f"unemulated PTX op {op}")
        regs[dst] = val & _MASK32
    return regs


def _bf16_bits(nib: int) -> int:
    """The bits a nibble (s e1 e0 m) must land on in a 16-bit half: s -> 15, e1 e0 m -> 8..6."""
    return ((nib >> 3) & 1) << 15 | (nib & 7) << 6


def test_ptx_extraction_places_every_nibble_where_the_bf16_bits_go():
    g = torch.Generator().manual_seed(0)
    nibs = torch.randint(0, 16, (256, 2, 2, 2), generator=g, dtype=torch.int32)  # [word, h, v, b]
    nibs[0] = 15  # all ones
    nibs[1] = 0
    words = _words(nibs)
    lines = tuple(op for ops in _EXTRACT for op in ops)
    for w in range(nibs.shape[0]):
        regs = _run(lines, int(words[w]) & _MASK32)
        for (h, v), var in _VARIANT.items():
            want = _bf16_bits(int(nibs[w, h, v, 0])) | _bf16_bits(int(nibs[w, h, v, 1])) << 16
            assert regs[f"${var}"] == want, (w, h, v, hex(regs[f"${var}"]), hex(want))


def test_the_emulator_is_not_vacuous():
    """A wrong shift must show: the same check on an extraction whose second register shifts one bit more fails."""
    ops1 = tuple(re.sub(r"(\d+);$", lambda m: f"{int(m.group(1)) + 1};", op) if i == 0 else op
                 for i, op in enumerate(_EXTRACT[1]))
    bad = tuple(op for ops in (_EXTRACT[0], ops1, *_EXTRACT[2:]) for op in ops)
    nibs = torch.full((1, 2, 2, 2), 0b1011, dtype=torch.int32)
    regs = _run(bad, int(_words(nibs)[0]) & _MASK32)
    assert regs["$1"] != _bf16_bits(0b1011) | _bf16_bits(0b1011) << 16

"""Where Triton 3.6's register-A wgmma pipeline can be corrupted: the layer's kernels compiled for sm_90 on the CPU.

Triton splits a stage's dot into k16 wgmma groups and, after each, waits for all but the last n - 1 (n groups a K
step), so n - 1 groups of one K step are still in flight when the loop branches back, and their A fragments are
registers (triton-lang/triton issue 9433; fixed upstream after 3.6). If ptxas puts a value of the next K step in one
of those registers before the next wait, the in-flight group may read it. In session 21 this corrupted the sorted
stage 2 at deepseek-v3 T = 8192 on the H100 once the decode had changed (docs/architecture.md, "Known hazard").

For every loop of every kernel the layer launches at MODEL:T[:PATH] this prints the groups a K step, how many stay in
flight at the back edge, and the instructions at the loop top that write an in-flight group's A registers before the
first wait: a static count of the exposure, not a verdict (whether it corrupts depends on timing; the GPU tests
decide). A point may end in @NAME=VALUE[,NAME=VALUE] to set constants for it as rule_ab.py's --variant does
(STAGE2_DRAIN=1 drains every wgmma at the end of stage 2's K step); --kernels keeps the kernels whose name holds a
substring; --json prints one line per loop; --listing prints each loop's skeleton (wgmma, waits, barriers, memory
instructions in order: the K step's latency structure). Needs no GPU; run without TRITON_INTERPRET:
    python benchmarks/wgmma_hazard.py deepseek-v3:8192 kimi-k2-tp8:1:a8w4 gpt-oss-20b:256@STAGE2_DRAIN=1

--fingerprint prints instead one line per launch, a sha1 of its SASS with the addresses stripped, to show that a
change leaves the compiled default kernels as the GPU suite passed them (whether the hazard strikes depends on
where ptxas puts registers, which a kernel-hash change alone cannot say). With the old tree in a worktree:
    PYTHONPATH=/tmp/base/src python benchmarks/wgmma_hazard.py --fingerprint deepseek-v3:8192 > base.txt
    PYTHONPATH=src python benchmarks/wgmma_hazard.py --fingerprint deepseek-v3:8192 > head.txt; diff base.txt head.txt
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import sys
from typing import NamedTuple

_ADDRESS = re.compile(r"/\*[0-9a-f]{4,}\*/")
_INS = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_BRANCH = re.compile(r"BRA\s+0x([0-9a-f]+)")
_WAIT = re.compile(r"WARPGROUP\.DEPBAR\.LE\s+gsb0,\s*0x([0-9a-f]+)")
_A_OPERAND = re.compile(r"HGMMA\.\S+\s+R\d+,\s*R(\d+),")
# Opcodes whose first operand is not a register they write.
_NO_DEST = ("ST", "HGMMA", "WARPGROUP", "BAR", "BRA", "DEPBAR", "LDGDEPBAR", "LDGSTS", "RED", "ATOM", "ISETP",
            "FSETP", "HSETP", "PLOP3", "UISETP", "EXIT", "NOP", "MEMBAR", "FENCE", "CCTL", "SYNCS")


def fingerprint(sass: str) -> str:
    """sha1 (12 hex digits) of a `cuobjdump -sass` listing's instruction lines (with their encodings), their
    addresses removed."""
    body = "\n".join(_ADDRESS.sub("", line) for line in sass.splitlines() if _ADDRESS.search(line))
    return hashlib.sha1(body.encode()).hexdigest()[:12]


def instructions(sass: str) -> list[tuple[int, str]]:
    """(address, text) of each SASS instruction in `cuobjdump -sass` output."""
    return [(int(m.group(1), 16), m.group(2).strip()) for m in map(_INS.match, sass.splitlines()) if m]


def written(text: str) -> set[int]:
    """The general registers an instruction writes (its first operand; wide loads write 2 or 4)."""
    text = re.sub(r"^@!?U?P\w+\s+", "", text)
    op, _, rest = text.partition(" ")
    if not rest or op.startswith(_NO_DEST):
        return set()
    m = re.match(r"R(\d+)$", rest.split(",")[0].strip())
    if m is None:
        return set()
    width = 4 if ".128" in op or op.endswith(".4") else 2 if ".64" in op or op.endswith(".2") else 1
    return set(range(int(m.group(1)), int(m.group(1)) + width))


class Loop(NamedTuple):
    top: int
    end: int  # address of the backward branch
    groups: int  # wgmma groups a K step (an HGMMA carrying gsb0 ends one)
    in_flight: int  # groups the last wait of the body leaves in flight at the back edge
    writes: tuple[tuple[int, str], ...]  # loop-top writes to their A registers before the first wait


def loops(sass: str) -> list[Loop]:
    """Every backward branch whose body issues wgmma, with its exposure (module docstring)."""
    ins = instructions(sass)
    out = []
    for addr, text in ins:
        m = _BRANCH.search(text)
        if m is None or int(m.group(1), 16) >= addr:
            continue
        top = int(m.group(1), 16)
        body = [(a, t) for a, t in ins if top <= a <= addr]
        groups, current, last_wait = [], set(), None
        for _, t in body:
            if (a_reg := _A_OPERAND.search(t)) is not None:
                current |= set(range(int(a_reg.group(1)), int(a_reg.group(1)) + 4))
                if "gsb0" in t:
                    groups.append(current)
                    current = set()
            if (w := _WAIT.search(t)) is not None:
                last_wait = (int(w.group(1), 16), len(groups))
        if not groups or last_wait is None:
            continue
        pending, issued = last_wait
        live = set().union(*groups[max(0, issued - pending):])
        writes = []
        for a, t in body:
            if _WAIT.search(t):
                break
            if written(t) & live:
                writes.append((a, t))
        out.append(Loop(top, addr, len(groups), pending, tuple(writes)))
    return out


# Opcodes of a loop's skeleton: its MMA, the waits and barriers, and its shared / global memory traffic.
_SKELETON = ("HGMMA", "WARPGROUP", "LDGSTS", "LDGDEPBAR", "DEPBAR", "BAR", "LDS", "LDSM", "LDG", "STG", "STS",
             "SYNCS", "BRA")


def skeleton(sass: str, loop: Loop) -> tuple[int, list[tuple[int, str]]]:
    """(instructions in the loop's body, the body's skeleton instructions in order): where a K step waits, syncs,
    loads and issues its wgmma, which is the latency structure (session 22 read the direct stage 1's this way)."""
    body = [(a, t) for a, t in instructions(sass) if loop.top <= a <= loop.end]
    op = lambda t: re.sub(r"^@!?U?P\w+\s+", "", t).split(" ")[0].split(".")[0]  # noqa: E731
    return len(body), [(a, t) for a, t in body if op(t) in _SKELETON]


def _launches(model: str, tokens: int, path):
    """The (kernel, args, meta) of every Triton launch of the layer at the full shape's default config, with 8 experts
    drawn (top-k where that is more) to keep the weights small; the config and every stride are the full shape's."""
    from triton.runtime.jit import JITFunction

    import mxmoe.kernels.common as common
    from mxmoe.heuristic import default_config
    from mxmoe.moe import moe
    from mxmoe.problem import make_problem
    from mxmoe.shapes import MODELS

    full = MODELS[model]
    cfg = default_config(full, path, tokens)
    p = make_problem(dataclasses.replace(full, experts=max(8, full.topk)), path, tokens, seed=1)
    calls = []
    run = JITFunction.run
    # every module that took the CUDA-tensor check by name (kernels.common, layer_plan, ...)
    guarded = [m for name, m in list(sys.modules.items())
               if name.startswith("mxmoe") and getattr(m, "require_executable", None) is common.require_executable]
    needs_gpu = common.require_executable
    JITFunction.run = lambda self, *a, grid, warmup, **kw: calls.append((self, a, kw))
    for m in guarded:
        m.require_executable = lambda t: None
    try:
        moe(p.hidden, p.weights, p.topk_ids, p.topk_weights, path, cfg, validate=False)
    except Exception as e:  # later host steps may read what a skipped kernel would have written
        print(f"  (the layer stopped after {len(calls)} launches: {type(e).__name__}: {str(e)[:120]})")
    finally:
        JITFunction.run = run
        for m in guarded:
            m.require_executable = needs_gpu
    return cfg, calls


def main(argv: list[str] | None = None) -> int:
    from rule_ab import _constants, _parse_variant  # rule_ab's --variant constants (this folder is on sys.path)

    from mxmoe.shapes import Path
    from mxmoe.tuning.sweep.compile_check.sm90 import compile_sm90, sass, wgmma_serialized

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("points", nargs="+", help="MODEL:T[:PATH][@NAME=VALUE,...], e.g. deepseek-v3:8192")
    ap.add_argument("--kernels", default="", help="only kernels whose name holds this substring")
    ap.add_argument("--json", action="store_true", help="one JSON line per loop")
    ap.add_argument("--listing", action="store_true", help="also print each loop's skeleton: its wgmma, waits, "
                    "barriers and memory instructions in order")
    ap.add_argument("--fingerprint", action="store_true", help="only a sha1 of each launch's SASS (addresses "
                    "stripped), to diff two trees")
    args = ap.parse_args(argv)
    for point in args.points:
        where, _, settings = point.partition("@")
        model, t, *rest = where.split(":")
        with _constants(_parse_variant(f"point:{settings}")[1]):
            cfg, calls = _launches(model, int(t), Path(rest[0]) if rest else Path.A16W4)
            if not (args.json or args.fingerprint):
                print(f"{point}: {cfg.stage1.short()} | {cfg.stage2.short()}")
            for kernel, a, meta in calls:
                name = kernel.fn.__name__
                if args.kernels not in name:
                    continue
                meta = {k: v for k, v in meta.items() if k not in ("launch_pdl", "launch_cooperative_grid")}
                code = sass(compile_sm90(kernel, a, meta).asm["cubin"])
                if args.fingerprint:
                    print(f"{point} {name} {fingerprint(code)}", flush=True)
                    continue
                serial = wgmma_serialized(code)
                for lp in loops(code):
                    if args.json:
                        print(json.dumps({"point": point, "kernel": name, "top": lp.top, "groups": lp.groups,
                                          "in_flight": lp.in_flight, "writes": len(lp.writes),
                                          "serialized": serial}), flush=True)
                        continue
                    first = f"; first {lp.writes[0][1]}" if lp.writes else ""
                    why = "; ptxas serialized every wgmma (C7515)" if serial else ""
                    print(f"  {name:18s} loop {lp.top:#06x}: {lp.groups} groups a step, {lp.in_flight} in flight at "
                          f"the back edge, {len(lp.writes)} loop-top writes to their A registers{first}{why}",
                          flush=True)
                    if args.listing:
                        n, lines = skeleton(code, lp)
                        print(f"    {n} instructions a K step; skeleton:")
                        print("\n".join(f"    {addr:#07x} {text}" for addr, text in lines), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

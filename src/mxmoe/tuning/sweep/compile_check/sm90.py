"""Compiling a Triton kernel for sm_90 on a machine without a GPU, and reading the cubin's resource usage.

`compile_sm90` goes through `triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))` with the JIT's own
binder applied to the arguments, so the signature, constexprs and divisibility attributes are the ones a launch
with those arguments would get, and the bundled ptxas produces the cubin. `resource_usage` reads registers, stack
(spills), static shared and local memory from `cuobjdump --dump-resource-usage`; `wgmma_serialized` reads from the
SASS whether ptxas serialized the kernel's wgmmas. The --cpu-compile worker uses
both; so do scratch tools that inspect a kernel's sm_90 code from a CPU machine (public names for that reason;
benchmarks/validate_legality.py re-exports them as `_compile_sm90` and `_resource_usage`). Relies on Triton 3.6
internals (`create_function_from_signature`, `JITFunction._pack_args`).
"""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from pathlib import Path as FsPath

_USAGE = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


@functools.cache
def sm90():
    """(target, backend) for sm_90; make_backend needs no GPU."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    target = GPUTarget("cuda", 90, 32)
    return target, make_backend(target)


@functools.cache
def _binder(kernel):
    from triton.runtime.jit import create_function_from_signature

    return create_function_from_signature(kernel.signature, kernel.params, sm90()[1])


def bind(kernel, args: tuple, meta: dict):
    """What `JITFunction.run` computes before compiling: (kwargs, bound args, specialization, options)."""
    from triton import knobs

    kwargs = dict(meta)
    kwargs["debug"] = kwargs.get("debug", kernel.debug) or knobs.runtime.debug
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    bound, specialization, options = _binder(kernel)(*args, **kwargs)
    return kwargs, bound, specialization, options


def compile_sm90(kernel, args: tuple, meta: dict):
    """Compile `kernel` for sm_90 exactly as `JITFunction.run` would for these arguments, without a GPU."""
    import triton
    from triton.compiler import ASTSource

    target, backend = sm90()
    kwargs, bound, specialization, options = bind(kernel, args, meta)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__)


def _cuobjdump(cubin: bytes, flag: str, timeout: int) -> str:
    """stdout of the bundled `cuobjdump FLAG` on the cubin."""
    from triton import knobs

    with tempfile.TemporaryDirectory(prefix="mxmoe-cubin-") as d:
        path = FsPath(d, "kernel.cubin")
        path.write_bytes(cubin)
        return subprocess.run([knobs.nvidia.cuobjdump.path, flag, str(path)], capture_output=True, text=True,
                              check=True, timeout=timeout).stdout


def sass(cubin: bytes) -> str:
    """The cubin's SASS listing (`cuobjdump -sass`)."""
    return _cuobjdump(cubin, "-sass", 120)


def resource_usage(cubin: bytes) -> dict[str, int]:
    """REG, STACK, SHARED (static), LOCAL of the cubin's one kernel, from `cuobjdump --dump-resource-usage`."""
    text = _cuobjdump(cubin, "--dump-resource-usage", 60)
    m = _USAGE.search(text)
    if m is None:
        raise RuntimeError(f"no resource usage line in cuobjdump output: {text[-200:]!r}")
    return dict(zip(("regs", "stack", "shared_static", "local"), map(int, m.groups()), strict=True))


def wgmma_serialized(listing: str) -> bool:
    """Whether ptxas serialized every wgmma of the kernel whose SASS is `listing` (its C7515 diagnosis: each
    HGMMA / QGMMA waits for completion, `WARPGROUP.DEPBAR.LE gsb0, 0x0`, so no MMA overlaps the next K step): at
    least as many full waits as MMA instructions. Triton's own schedule waits fully only where a loop ends (and
    after a dot outside any loop, one wait per group of several MMAs), far fewer. Read from the SASS rather than
    ptxas's log, which a cached compile does not print (mxmoe.kernels.common.k_loop_end has the cause seen)."""
    mmas = len(re.findall(r"\b[HQ]GMMA\.", listing))
    return mmas > 0 and len(re.findall(r"WARPGROUP\.DEPBAR\.LE gsb0, 0x0\b", listing)) >= mmas

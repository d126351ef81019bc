"""Shipped tuned tables stay true: every table in src/mxmoe/tuned/ would be used, in full, on the device it names.

CPU only (issue 22 item 1). The check is dispatch's own: `dispatch.table_problems` reads a table with the loader
and the legality rule (`dispatch.launchable`) that `moe()` uses, against this process's triton version and
kernel source hash, for the device its file name names. With no table shipped the same check runs over tables
written into a temporary MXMOE_CONFIG_DIR: a good one passes (and dispatch takes it), a stale one fails.
Also here: README and docs quote no table that is not shipped, and the kernel hash ignores comments only.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path as FsPath

import pytest

from mxmoe import dispatch
from mxmoe.config import MoEConfig, TileConfig
from mxmoe.heuristic import default_config
from mxmoe.shapes import MODELS, TOKEN_GRID, Path
from mxmoe.source_hash import KERNELS_DIR, kernel_source_hash, normalized_source

REPO = FsPath(__file__).resolve().parents[1]
H100 = "NVIDIA H100 80GB HBM3"
QUOTED_TABLE = re.compile(r"E=\d+,N=\d+,H=\d+,topk=\d+,path=[a-z0-9]+,device_name=[A-Za-z0-9.\-_]+\.json")


def refusals(folder: FsPath) -> list[str]:
    """Every problem the runtime would have with any table in `folder` (the check CI runs on tuned/)."""
    return [p for file in sorted(folder.glob("*.json")) for p in dispatch.table_problems(file)]


def write_table(folder: FsPath, shape, path: Path, device: str, entries: dict[int, MoEConfig], **meta) -> FsPath:
    triton_version, kernel_hash = dispatch.running_versions()
    metadata = {"schema": dispatch.TABLE_SCHEMA_VERSION, "triton_version": triton_version,
                "kernel_source_hash": kernel_hash, **meta}
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / dispatch.table_filename(shape, path, device)
    file.write_text(json.dumps({"_metadata": metadata} | {str(t): c.to_dict() for t, c in entries.items()}))
    return file


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    folder = tmp_path / "tuned"
    folder.mkdir()
    monkeypatch.setenv(dispatch.CONFIG_DIR_ENV, str(folder))
    dispatch.clear_cache()
    yield folder
    dispatch.clear_cache()


def test_every_shipped_table_would_be_used_in_full():
    dispatch.clear_cache()  # hash kernels/ as they are now
    assert refusals(dispatch.TUNED_DIR) == []


def test_the_check_passes_good_tables_and_dispatch_takes_them(config_dir):
    tiny, ds = MODELS["tiny"], MODELS["deepseek-v3"]
    grid = (1, 16, 256)
    write_table(config_dir, tiny, Path.A16W4, "interpreter", {t: default_config(tiny, Path.A16W4, t) for t in grid})
    write_table(config_dir, ds, Path.A8W4, H100, {t: default_config(ds, Path.A8W4, t) for t in TOKEN_GRID})
    assert len(list(config_dir.glob("*.json"))) == 2
    assert refusals(config_dir) == []
    for t in (1, 5, 16, 100, 10**5):
        bucket = next((g for g in grid if g >= t), grid[-1])
        assert dispatch.tuned_config(tiny, Path.A16W4, t, "interpreter") == default_config(tiny, Path.A16W4, bucket)


def test_a_stale_table_copied_into_the_config_dir_fails_the_check(config_dir, tmp_path):
    tiny = MODELS["tiny"]
    good = write_table(tmp_path / "made", tiny, Path.A16W4, "interpreter", {1: default_config(tiny, Path.A16W4, 1)})
    stale = write_table(tmp_path / "stale", tiny, Path.A16W4, "interpreter",
                        {1: default_config(tiny, Path.A16W4, 1)}, kernel_source_hash="6fe50b0a1324" + "0" * 52)
    shutil.copy(good, config_dir)
    assert refusals(config_dir) == []
    shutil.copy(stale, config_dir)
    (problem,) = refusals(config_dir)
    assert "made for kernel source 6fe50b0a1324" in problem
    write_table(config_dir, tiny, Path.A16W4, "interpreter", {1: default_config(tiny, Path.A16W4, 1)},
                triton_version="0.0.1")
    assert "made with triton 0.0.1" in refusals(config_dir)[0]


def test_an_illegal_entry_or_an_unknown_device_fails_the_check(config_dir):
    ds = MODELS["deepseek-v3"]
    huge = TileConfig(block_m=256, block_n=256, block_k=256, num_warps=8, num_stages=6, mma="wgmma")
    entries = {1: default_config(ds, Path.A16W4, 1), 4096: MoEConfig(huge, huge)}
    write_table(config_dir, ds, Path.A16W4, H100, entries)
    (problem,) = refusals(config_dir)
    assert "entry T=4096" in problem and "illegal" in problem
    (config_dir / dispatch.table_filename(ds, Path.A16W4, H100)).unlink()
    write_table(config_dir, ds, Path.A16W4, "NVIDIA B200", {1: default_config(ds, Path.A16W4, 1)})
    assert "no known limits" in refusals(config_dir)[0]
    (config_dir / "notes.json").write_text("{}")
    assert any("not a table file name" in p for p in refusals(config_dir))


def unshipped_quotes(text: str, shipped: set[str]) -> list[str]:
    return [name for name in QUOTED_TABLE.findall(text) if name not in shipped]


def test_readme_and_docs_quote_only_shipped_tables():
    shipped = {f.name for f in dispatch.TUNED_DIR.glob("*.json")}
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    found = {str(d.relative_to(REPO)): unshipped_quotes(d.read_text(encoding="utf-8"), shipped) for d in docs}
    assert {k: v for k, v in found.items() if v} == {}
    fake = "see `E=256,N=2048,H=7168,topk=8,path=a16w4,device_name=NVIDIA_H100_80GB_HBM3.json`"
    assert unshipped_quotes(fake, shipped) == ["E=256,N=2048,H=7168,topk=8,path=a16w4,device_name=NVIDIA_H100_80GB_HBM3"
                                               ".json"]


def test_kernel_hash_ignores_comments_docstrings_and_layout_but_not_code(tmp_path):
    copy = tmp_path / "kernels"
    shutil.copytree(KERNELS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert kernel_source_hash(copy) == kernel_source_hash()
    module = copy / "swmoe.py"
    text = module.read_text()
    assert '"""' in text and "\n@triton.jit" in text

    def hash_with(new_text: str) -> str:
        module.write_text(new_text)
        return kernel_source_hash(copy)

    base = kernel_source_hash(copy)
    assert hash_with("# a new comment\n" + text.replace("\n@triton.jit", "\n# why this tile\n@triton.jit", 1)) == base
    assert hash_with(text.replace('"""', '"""Reworded. ', 1)) == base  # the module docstring
    assert hash_with(text.replace("\n@triton.jit", "\n\n\n@triton.jit", 1)) == base  # blank lines
    assert hash_with(text + "\n1 + 1\n") != base  # code
    assert hash_with(text.replace("\n@triton.jit", "\nX_NEW = 3\n@triton.jit", 1)) != base
    module.write_text(text)
    assert kernel_source_hash(copy) == base


def test_normalized_source_keeps_code_and_drops_strings_only():
    src = 'def f(x):\n    """Doc."""\n    # note\n    "bare"\n    return x + 1  # trailing\n'
    assert normalized_source(src) == "def f(x):\n    return x + 1\n"
    assert normalized_source('def g():\n    """Only a docstring."""\n') == "def g():\n    pass\n"
    assert normalized_source("x = 'kept'\n") == "x = 'kept'\n"

"""Runtime dispatch: override, tuned table, heuristic; the table checks on load.

Oracle: hand-written tables (this is the runtime: no harness involved) and `heuristic.default_config`.
Under the interpreter (conftest) the running device is `interpreter`, so tables are filed under it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from mxmoe import dispatch, tables
from mxmoe.config import Mma, MoEConfig, TileConfig
from mxmoe.dispatch import TunedTable, choose_config, override, parse_table, running_versions, table_filename
from mxmoe.heuristic import default_config
from mxmoe.shapes import MODELS, Path

TINY = MODELS["tiny"]
A = MoEConfig(TileConfig(block_k=64, num_warps=2), TileConfig(block_k=64))
B = MoEConfig(TileConfig(block_k=64), TileConfig(block_k=64, num_warps=2))
C = MoEConfig(TileConfig(block_k=64, num_stages=2), TileConfig(block_k=64))


def heuristic(t: int) -> MoEConfig:
    return default_config(TINY, Path.A16W4, t, interpreter=True)


def write_table(folder, entries: dict[int, MoEConfig], **meta) -> os.PathLike:
    triton_version, kernel_hash = running_versions()
    metadata = {"schema": 1, "triton_version": triton_version, "kernel_source_hash": kernel_hash, **meta}
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / table_filename(TINY, Path.A16W4, "interpreter")
    file.write_text(json.dumps({"_metadata": metadata} | {str(t): c.to_dict() for t, c in entries.items()}))
    dispatch.clear_cache()  # a process resolves a table once: a test that (re)writes one starts over
    return file


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(dispatch.CONFIG_DIR_ENV, str(tmp_path / "user"))
    monkeypatch.setattr(dispatch, "TUNED_DIR", tmp_path / "packaged")
    dispatch.clear_cache()  # also re-hashes kernels/, which may have been edited since this process first did
    yield tmp_path
    dispatch.clear_cache()


def recorded(*calls):
    """Run the calls under the default warning filter; return (results, our warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        out = [f() for f in calls]
    return out, [w for w in caught if "mxmoe: tuned table" in str(w.message)]


def test_table_file_name_is_vllm_style():
    name = table_filename(MODELS["deepseek-v3"], Path.A16W4, "NVIDIA H100 80GB HBM3")
    assert name == "E=256,N=2048,H=7168,topk=8,path=a16w4,device_name=NVIDIA_H100_80GB_HBM3.json"


def test_dispatch_imports_without_torch():
    code = "import sys, mxmoe.dispatch; assert 'torch' not in sys.modules and 'mxmoe.tuning' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bucket_is_the_next_grid_point_up():
    table = TunedTable((1, 16, 128), (A, B, C), None, None)
    assert [table.lookup(t)[0] for t in (0, 1, 2, 16, 17, 128, 10**6)] == [1, 1, 16, 16, 128, 128, 128]
    assert table.lookup(5)[1] == B


def test_parse_is_strict():
    good = {"_metadata": {"schema": 1}, "1": A.to_dict()}
    assert parse_table(good).configs == (A,)
    for bad in ({"1": A.to_dict()}, {"_metadata": {"schema": 9}, "1": A.to_dict()}, {"_metadata": {"schema": 1}},
                {"_metadata": {"schema": 1}, "1": {**A.to_dict(), "stage3": {}}},
                {"_metadata": {"schema": 1}, "one": A.to_dict()}):
        with pytest.raises(ValueError):
            parse_table(bad)


def test_no_table_means_the_heuristic_and_override_beats_everything(user_dir):
    assert choose_config(TINY, Path.A16W4, 16) == heuristic(16)
    write_table(user_dir / "user", {16: A})
    with override(B):
        assert choose_config(TINY, Path.A16W4, 16) == B
    assert choose_config(TINY, Path.A16W4, 16) == A


def test_user_dir_wins_and_a_stale_table_falls_through_with_one_warning(user_dir):
    write_table(user_dir / "packaged", {1: A, 128: A})
    write_table(user_dir / "user", {1: B, 128: B})
    assert choose_config(TINY, Path.A16W4, 7) == B
    write_table(user_dir / "user", {1: B}, kernel_source_hash="0" * 64)
    out, warned = recorded(*(lambda: choose_config(TINY, Path.A16W4, 7) for _ in range(3)))
    assert out == [A, A, A]  # the packaged table, which matches
    assert len(warned) == 1 and "made for kernel source 000000000000" in str(warned[0].message)


def test_version_mismatch_falls_back_to_the_heuristic_once(user_dir):
    write_table(user_dir / "user", {1: A}, triton_version="0.0.1")
    out, warned = recorded(lambda: choose_config(TINY, Path.A16W4, 1), lambda: choose_config(TINY, Path.A16W4, 1))
    assert out == [heuristic(1)] * 2
    assert len(warned) == 1 and "made with triton 0.0.1" in str(warned[0].message)


def test_an_illegal_entry_is_never_launched(user_dir):
    bad = MoEConfig(TileConfig(block_k=64, mma=Mma.DOT_SCALED), TileConfig(block_k=64))  # no dot_scaled here
    write_table(user_dir / "user", {1: bad, 16: A})
    out, warned = recorded(lambda: choose_config(TINY, Path.A16W4, 1), lambda: choose_config(TINY, Path.A16W4, 1))
    assert out == [heuristic(1)] * 2
    assert len(warned) == 1 and "entry T=1: stage 1" in str(warned[0].message) and "path_unsupported" in str(
        warned[0].message)
    assert choose_config(TINY, Path.A16W4, 16) == A


def test_a_table_is_resolved_once_and_an_edited_one_reread_after_clear_cache(user_dir, monkeypatch):
    file = user_dir / "user" / table_filename(TINY, Path.A16W4, "interpreter")
    write_table(user_dir / "user", {1: A})
    assert choose_config(TINY, Path.A16W4, 1) == A
    data = file.read_text().replace('"num_warps": 2', '"num_warps": 4')  # A -> B
    file.write_text(data)
    st = os.stat(file)
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert choose_config(TINY, Path.A16W4, 1) == A  # resolved once: the file is not looked at again
    dispatch.clear_cache()
    assert choose_config(TINY, Path.A16W4, 1) == MoEConfig(TileConfig(block_k=64), TileConfig(block_k=64))


def test_a_resolved_call_touches_no_file(user_dir, monkeypatch):
    write_table(user_dir / "user", {1: A, 16: B})
    assert choose_config(TINY, Path.A16W4, 1) == A

    def no_file(*args, **kwargs):
        raise AssertionError("file access after resolution")

    for target, name in ((os, "stat"), (os, "listdir"), (dispatch.FsPath, "stat"), (dispatch.FsPath, "is_file"),
                         (dispatch, "open"), (tables, "open")):
        monkeypatch.setattr(target, name, no_file, raising=False)
    monkeypatch.setattr(dispatch.legality, "check", no_file)
    assert [choose_config(TINY, Path.A16W4, t) for t in (1, 2, 16, 99)] == [A, B, B, B]


def test_a_table_that_is_not_an_object_warns_once_and_falls_back(user_dir):
    folder = user_dir / "user"
    folder.mkdir()
    for text in ("[]", "null", '"x"', "1", '{"_metadata": {"schema": 1}, "1": []}'):
        (folder / table_filename(TINY, Path.A16W4, "interpreter")).write_text(text)
        dispatch.clear_cache()
        out, warned = recorded(lambda: choose_config(TINY, Path.A16W4, 1), lambda: choose_config(TINY, Path.A16W4, 1))
        assert out == [heuristic(1)] * 2, text
        assert len(warned) == 1 and "unreadable" in str(warned[0].message), text
        assert dispatch.table_problems(folder / table_filename(TINY, Path.A16W4, "interpreter")), text


def test_launchable_is_legality_with_the_degenerate_exemption():
    from mxmoe import legality

    lim = legality.INTERPRETER
    wide = MoEConfig(TileConfig(block_m=128, block_n=64, block_k=64, mma=Mma.WGMMA),
                     TileConfig(block_m=128, block_n=64, block_k=64, mma=Mma.WGMMA))
    assert legality.check(TINY, "a16w4", 1, wide.stage1, lim, tokens=1).reason is legality.Reason.DEGENERATE
    assert dispatch.launchable(TINY, Path.A16W4, wide, lim, tokens=1) is None
    odd = MoEConfig(TileConfig(block_m=24, block_k=64), TileConfig(block_k=64))
    stage, verdict = dispatch.launchable(TINY, Path.A16W4, odd, lim)
    assert stage == 1 and verdict.reason is legality.Reason.TILE_TOO_LARGE


def test_an_unreadable_table_warns_and_falls_back(user_dir):
    folder = user_dir / "user"
    folder.mkdir()
    (folder / table_filename(TINY, Path.A16W4, "interpreter")).write_text("{not json")
    out, warned = recorded(lambda: choose_config(TINY, Path.A16W4, 1))
    assert out == [heuristic(1)] and "unreadable" in str(warned[0].message)


def test_the_environment_is_read_once_until_clear_cache(user_dir, monkeypatch):
    """$MXMOE_CONFIG_DIR is read at the first lookup, not per call (about 1 us a read against a 10 us host budget,
    issue 22): a folder named afterwards is taken after clear_cache(), as the module docstring says."""
    write_table(user_dir / "other", {16: A})
    assert choose_config(TINY, Path.A16W4, 16) == heuristic(16)
    monkeypatch.setenv(dispatch.CONFIG_DIR_ENV, str(user_dir / "other"))
    assert choose_config(TINY, Path.A16W4, 16) == heuristic(16)  # the snapshot still names user/
    dispatch.clear_cache()
    assert choose_config(TINY, Path.A16W4, 16) == A


def test_without_a_gpu_or_interpreter_there_is_no_device(user_dir, monkeypatch):
    write_table(user_dir / "user", {1: A})
    monkeypatch.delenv("TRITON_INTERPRET")
    assert dispatch.tuned_config(TINY, Path.A16W4, 1) is None
    assert choose_config(TINY, Path.A16W4, 1) == default_config(TINY, Path.A16W4, 1)

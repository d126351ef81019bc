"""Provenance completeness, dirtiness and the kernel source hash, in throwaway git repositories.

Oracle: a temp repo built here (known commit, known diffs) and sha256 computed independently.
"""

import hashlib
import json
import subprocess
import sys

import pytest

from mxmoe.shapes import MODELS
from mxmoe.tuning.timing import provenance as prov_mod
from mxmoe.tuning.timing.gpu_state import read_gpu_state, unavailable_state
from mxmoe.tuning.timing.nvml import FakeNvml
from mxmoe.tuning.timing.provenance import (
    Provenance,
    codegen_env,
    collect_provenance,
    git_info,
    kernel_source_hash,
    missing_fields,
    provenance_checks,
)

EMPTY_SHA = hashlib.sha256(b"").hexdigest()


def git(repo, *args):
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(cmd, check=True, capture_output=True).stdout.decode().strip()


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "a.py").write_text("x = 1\n")
    git(root, "add", "a.py")
    git(root, "commit", "-q", "-m", "init")
    return root


@pytest.fixture
def cuda_build(monkeypatch):
    """Pretend torch is a CUDA build, so completeness does not depend on this machine's wheel."""
    monkeypatch.setattr(prov_mod, "_torch_versions", lambda: ("2.11.0+cu130", "13.0"))


def collect(repo_root, gpu=True, **overrides):
    kwargs = {
        "argv": ["mxmoe", "sweep", "--model", "tiny"],
        "seeds": [0, 1],
        "shapes": [MODELS["tiny"], "custom"],
        "dtypes": ["bfloat16", "torch.float32"],
        "gpu_state": read_gpu_state(FakeNvml()) if gpu else None,
        "repo_root": repo_root,
    }
    return collect_provenance(**{**kwargs, **overrides})


def test_complete_in_a_clean_git_repo(repo, cuda_build):
    p = collect(repo)
    assert missing_fields(p) == []
    assert p.git_commit == git(repo, "rev-parse", "HEAD") and p.git_dirty is False
    assert p.git_diff_sha256 == EMPTY_SHA  # clean: git diff HEAD prints nothing
    assert p.gpu_name == "NVIDIA H100 80GB HBM3" and p.sm_clock_mhz == 1980 and p.clocks_locked is False
    assert p.argv == ("mxmoe", "sweep", "--model", "tiny") and p.seeds == (0, 1)
    assert p.shapes[0] == "tiny:E=4,topk=2,H=64,I=64,silu" and p.shapes[1] == "custom"
    assert p.dtypes == ("bfloat16", "float32")
    assert p.claimable and provenance_checks(p) == ()


def test_dirty_tree_hash_follows_the_diff(repo, cuda_build):
    (repo / "a.py").write_text("x = 2\n")
    first = collect(repo)
    (repo / "a.py").write_text("x = 3\n")
    second = collect(repo)
    assert first.git_dirty and second.git_dirty
    assert first.git_diff_sha256 != second.git_diff_sha256 != EMPTY_SHA
    assert "provenance:dirty" in provenance_checks(first) and not first.claimable
    assert missing_fields(first) == []  # dirty is unclean, not missing
    (repo / "a.py").write_text("x = 2\n")
    assert collect(repo).git_diff_sha256 == first.git_diff_sha256  # same diff, same hash


def test_untracked_file_makes_the_tree_dirty(repo):
    clean = git_info(repo)
    (repo / "new.py").write_text("y = 1\n")
    dirty = git_info(repo)
    assert not clean.dirty and dirty.dirty and dirty.diff_sha256 != clean.diff_sha256
    (repo / "new.py").write_text("y = 2\n")
    assert git_info(repo).diff_sha256 != dirty.diff_sha256


def test_not_a_git_repo_lists_git_fields_missing(tmp_path, cuda_build):
    p = collect(tmp_path)
    assert {"git_commit", "git_branch", "git_dirty", "git_diff_sha256"} <= set(missing_fields(p))
    assert "provenance:missing:git_commit" in provenance_checks(p) and not p.claimable


def test_missing_gpu_and_empty_inputs_are_listed(repo, cuda_build):
    for state in (None, unavailable_state("no driver")):
        p = collect(repo, gpu_state=state, argv=[], seeds=[])
        missing = set(missing_fields(p))
        assert {"gpu_name", "gpu_uuid", "driver_version", "sm_clock_mhz", "clocks_locked"} <= missing
        assert {"argv", "seeds"} <= missing and "env" not in missing


def test_cpu_torch_has_no_cuda_version(repo, monkeypatch):
    monkeypatch.setattr(prov_mod, "_torch_versions", lambda: ("2.13.0+cpu", None))
    assert missing_fields(collect(repo)) == ["cuda_version"]


def test_codegen_env_keeps_only_codegen_variables(monkeypatch):
    env = {
        "TRITON_INTERPRET": "1",
        "CUDA_VISIBLE_DEVICES": "0",
        "NVIDIA_TF32_OVERRIDE": "0",
        "MXMOE_CONFIG_DIR": "/x",
        "HOME": "/root",
        "NVIDIA_VISIBLE_DEVICES": "all",
    }
    assert codegen_env(env) == (
        ("CUDA_VISIBLE_DEVICES", "0"),
        ("MXMOE_CONFIG_DIR", "/x"),
        ("NVIDIA_TF32_OVERRIDE", "0"),
        ("TRITON_INTERPRET", "1"),
    )
    monkeypatch.setenv("TRITON_CACHE_DIR", "/tmp/tc")
    monkeypatch.setenv("SECRET_TOKEN", "nope")
    p = collect(None)
    assert ("TRITON_CACHE_DIR", "/tmp/tc") in p.env and all(k != "SECRET_TOKEN" for k, _ in p.env)


def test_json_round_trip_is_strict(repo, cuda_build, monkeypatch):
    monkeypatch.setenv("TRITON_DEBUG", "0")
    p = collect(repo)
    d = json.loads(json.dumps(p.to_dict()))
    assert d["env"]["TRITON_DEBUG"] == "0"
    assert Provenance.from_dict(d) == p
    with pytest.raises(ValueError):
        Provenance.from_dict({**d, "bonus": 1})
    with pytest.raises(ValueError):
        Provenance.from_dict({k: v for k, v in d.items() if k != "argv"})


# ---- kernel source hash ---------------------------------------------------------------------------


def test_kernel_hash_of_a_missing_or_empty_folder(tmp_path):
    assert kernel_source_hash(tmp_path / "absent") == EMPTY_SHA
    assert kernel_source_hash(tmp_path) == EMPTY_SHA


def test_kernel_hash_tracks_content_and_names_only(tmp_path):
    (tmp_path / "stage1.py").write_text("a\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mx_tile.py").write_text("b\n")
    want = hashlib.sha256(b"stage1.py\0a\n\0sub/mx_tile.py\0b\n\0").hexdigest()
    assert kernel_source_hash(tmp_path) == want
    (tmp_path / "notes.md").write_text("ignored")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "stage1.py").write_text("ignored")
    assert kernel_source_hash(tmp_path) == want
    (tmp_path / "stage1.py").write_text("a2\n")
    assert kernel_source_hash(tmp_path) != want
    (tmp_path / "stage1.py").write_text("a\n")
    (tmp_path / "stage1.py").rename(tmp_path / "stage2.py")
    assert kernel_source_hash(tmp_path) != want


def test_default_kernel_hash_is_stable():
    assert kernel_source_hash() == kernel_source_hash() and len(kernel_source_hash()) == 64


def test_harness_leaves_import_without_torch():
    code = (
        "import sys; import mxmoe.tuning.timing.provenance, mxmoe.tuning.timing.stats, mxmoe.tuning.timing.gpu_state; "
        "mxmoe.tuning.timing.provenance.kernel_source_hash(); "
        "assert 'torch' not in sys.modules and 'triton' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

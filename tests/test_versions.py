"""mxmoe.versions: what `mxmoe doctor` says of the installed versions."""

from __future__ import annotations

import json
import subprocess
import sys

from mxmoe import versions
from mxmoe.versions import Requirement


def test_the_installed_versions_are_in_range():
    """CI installs constraints.txt: every required package must be inside its range (this is the check that a
    fresh machine gets what the package was tested with)."""
    for req in versions.REQUIREMENTS:
        version, problem = versions.check(req)
        assert problem is None, problem
        assert version is not None or req.optional, req.package


def test_a_version_outside_its_range_says_what_it_breaks():
    req = Requirement("pytest", (0,), (1,), "nothing real: a test")
    version, problem = versions.check(req)
    assert version and problem == f"pytest {version} is outside >=0,<1: nothing real: a test"


def test_interpreter_only_ranges_are_skipped_on_a_gpu_machine():
    req = Requirement("pytest", (0,), (1,), "x", interpreter_only=True)
    assert versions.check(req, interpreter=False)[1] is None
    assert versions.check(req, interpreter=True)[1] is not None


def test_missing_packages():
    assert versions.check(Requirement("no-such-package-mxmoe", (0,), (1,), "y", optional=True)) == (None, None)
    assert versions.check(Requirement("no-such-package-mxmoe", (0,), (1,), "y"))[1] == (
        "no-such-package-mxmoe is not installed: y")


def test_doctor_reports_the_versions():
    out = subprocess.run([sys.executable, "-m", "mxmoe.cli", "doctor", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert {"numpy", "triton", "torch"} <= set(info) and "problems" not in info

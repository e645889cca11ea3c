"""CI (CELLGEN_CI=1, set by .ci/run) fails a run in which any test was skipped (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

PROBE = """
import pytest

def test_ran():
    pass

@pytest.mark.skip(reason="not here")
def test_skipped():
    pass
"""


def test_a_skip_fails_the_run_under_ci(pytester, monkeypatch):
    # (without CELLGEN_CI a skip passes, as every local run of this suite shows)
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_probe=PROBE)
    monkeypatch.setenv("CELLGEN_CI", "1")
    result = pytester.runpytest_subprocess("-p", "no:xvfb", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*CELLGEN_CI=1: skipped tests fail the run*", "*test_skipped: *not here*"])


def test_ci_runs_the_readme_command_with_cellgen_ci_set():
    script = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    lines = [ln.strip() for ln in script.splitlines()]
    assert "export CELLGEN_CI=1" in lines and lines.index("export CELLGEN_CI=1") < lines.index("pytest -q")

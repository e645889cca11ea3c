"""Shared test setup: nothing a test does may write into the user's home folder."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# napari, Qt and Mesa keep settings and caches under the XDG folders: point them at a
# throw-away folder before anything imports napari.
_XDG = tempfile.mkdtemp(prefix="cellgen-tests-xdg-")
atexit.register(shutil.rmtree, _XDG, ignore_errors=True)
for _var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
    os.environ[_var] = os.path.join(_XDG, _var.lower())

# The tests use tiny models: one torch thread is as fast and does not oversubscribe
# the CPU when something else (a training, another test run) is busy on it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _cellgen_user_dir(tmp_path, monkeypatch):
    """User models go to a per-test folder, never to the real per-user data folder."""
    monkeypatch.setenv("CELLGEN_USER_DIR", str(tmp_path / "cellgen-user"))


def pytest_configure(config):
    """Fail with a clear message (not a Qt abort) when no X server can be started."""
    import sys

    if (
        sys.platform.startswith("linux")
        and shutil.which("Xvfb") is None
        and not os.environ.get("DISPLAY")
        and not config.getoption("--no-xvfb", default=False)
    ):
        pytest.exit(
            "Xvfb is not installed, and napari's canvas needs an X server: run .ci/run "
            "(or apt-get install xvfb) first.",
            returncode=4,
        )


# CI (``.ci/run`` sets CELLGEN_CI=1): a skipped test checks nothing, so any skip fails the run.
_NOT_RUN: list[str] = []


def _ci() -> bool:
    return os.environ.get("CELLGEN_CI") == "1"


def _not_run(report) -> None:
    reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else getattr(report, "wasxfail", "")
    _NOT_RUN.append(f"{report.nodeid}: {reason}")


def pytest_collectreport(report):
    if report.skipped:  # a whole module skipped (pytest.skip(allow_module_level=True), importorskip)
        _not_run(report)


def pytest_runtest_logreport(report):
    if report.skipped:  # skip, skipif, importorskip in a test, xfail
        _not_run(report)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _ci() and _NOT_RUN:
        terminalreporter.section("CELLGEN_CI=1: skipped tests fail the run", red=True)
        for line in _NOT_RUN:
            terminalreporter.line(line)


def pytest_sessionfinish(session, exitstatus):
    if _ci() and _NOT_RUN and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _empty_training_pool():
    """The synthetic training pool is process-wide: every test starts and ends with it empty."""
    from napari_cellgen.train.pool import POOL

    POOL.clear()
    yield
    POOL.clear()

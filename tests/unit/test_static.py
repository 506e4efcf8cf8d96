"""The daemon stays typed (mypy --strict) and lint-clean (ruff): checked with the suite, not by hand."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_mypy_strict_on_the_daemon() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy", "daemon", "protocol"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.timeout(60)
def test_ruff_on_daemon_tests_and_bench() -> None:
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "daemon", "tests", "bench"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr

"""Shared fixtures: the SymPy corpus is built once per session into a temporary data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TRAINER = Path(__file__).resolve().parents[2] / "trainer"
sys.path.insert(0, str(TRAINER))


def run_py(args: list[str], env: dict[str, str], timeout: float = 60, cwd: Path | None = None,
           **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd or TRAINER,
                          capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data") / "sympy"
    env = {**os.environ, "OVERNIGHT_DATA_DIR": str(d)}
    r = run_py([str(TRAINER / "prepare.py")], env)
    assert r.returncode == 0, r.stderr
    return d


@pytest.fixture()
def env(data_dir: Path, tmp_path: Path) -> dict[str, str]:
    """Environment for a subprocess: shared corpus, artifact in tmp, small thread count."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("OVERNIGHT_")}
    e.update(OVERNIGHT_DATA_DIR=str(data_dir), OVERNIGHT_MODEL_OUT=str(tmp_path / "model.ovm"),
             PYTHONDONTWRITEBYTECODE="1")
    return e

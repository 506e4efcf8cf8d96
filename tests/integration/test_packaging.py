"""A regular wheel carries everything `overnight init` needs and imports under the namespaced names."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_wheel_contents_and_a_workspace_made_from_it(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        check=True, capture_output=True,
    )
    (wheel,) = dist.glob("overnight-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "overnight/daemon/cli.py", "overnight/daemon/agents/sweep.py", "overnight/trainer/prepare.py",
        "overnight/trainer/train.py", "overnight/trainer/README.md", "overnight/template/program.md",
        "overnight/template/overnight.toml",
    ):
        assert expected in names
    assert not any(n.startswith(("daemon/", "trainer/", "tests/")) for n in names)  # no generic top-level names

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = (
        "import overnight.daemon.cli as c, sys; "
        f"assert c.__file__.startswith({str(target)!r}), c.__file__; "
        "sys.exit(c.main(['init', sys.argv[1]]))"
    )
    ws = tmp_path / "ws"
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code, str(ws)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (ws / "trainer" / "train.py").read_bytes() == (REPO / "trainer" / "train.py").read_bytes()
    assert (ws / "program.md").read_bytes() == (REPO / "program.md").read_bytes()
    assert subprocess.run(["git", "log", "--oneline"], cwd=ws, capture_output=True, text=True).stdout.strip()

"""A regular wheel carries everything `overnight init` needs and imports under the namespaced names."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_wheel_contents_and_a_workspace_made_from_it(tmp_path: Path) -> None:
    # Built from a copy of the project's files (what a clean clone has): a stale build/ folder in the checkout could
    # otherwise carry files the configuration no longer ships.
    source = tmp_path / "src"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, listed):
        if (REPO / rel).is_file() and not rel.startswith("client_vscode/"):
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, source / rel)
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", "-w", str(dist), str(source)],
        check=True, capture_output=True, text=True,
    )
    warnings = [line.strip() for line in built.stdout.splitlines() + built.stderr.splitlines()
                if "Warning" in line or "warning:" in line and "byte-compiling is disabled" not in line]
    assert warnings == [], warnings  # building the wheel prints no packaging warnings
    (wheel,) = dist.glob("overnight-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "overnight/daemon/cli.py", "overnight/daemon/agents/sweep.py", "overnight/trainer/prepare.py",
        "overnight/trainer/train.py", "overnight/trainer/README.md", "overnight/template/program.md",
        "overnight/protocol/fixtures/valid.json",
    ):
        assert expected in names
    assert not any(n.startswith(("daemon/", "trainer/", "tests/")) for n in names)  # no generic top-level names
    # The config init writes is rendered from the code's defaults: the checkout's own file is not shipped.
    assert "overnight/template/overnight.toml" not in names

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
    from overnight.daemon.config_file import render

    assert (ws / "overnight.toml").read_text() == render()
    assert subprocess.run(["git", "log", "--oneline"], cwd=ws, capture_output=True, text=True).stdout.strip()

"""The VS Code extension: its Node unit tests, its package, and the suite that runs it in a real VS Code.

The real-VS-Code suite (client_vscode/e2e/run.mjs) starts a daemon with a replayed agent and tiny
budgets on a scratch workspace, opens it in code-server with the extension loaded, drives Debian's
chromium, checks what a user sees (the sidebar and its live curve, a pause shown at once, the keep's
notification, the annotations, an inline suggestion kept while the user types directly above it, Next
Suggestion, Accept from its lens and from the diff editor's title, Reject with a reason, the experiment's page
with its loss curve against the incumbent's and the review marks, the disconnected sidebar, a silent Output
channel on shutdown, and a restricted-mode folder where no daemon is started) and saves screenshots in
client_vscode/e2e/.work/shots.
`./setup.sh` installs what it needs; OVERNIGHT_SKIP_VSCODE=1 skips these tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

EXT = Path(__file__).resolve().parents[2] / "client_vscode"

pytestmark = pytest.mark.skipif(os.environ.get("OVERNIGHT_SKIP_VSCODE") == "1", reason="OVERNIGHT_SKIP_VSCODE=1")


def _npm(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    npm = shutil.which("npm")
    assert npm, "npm is not installed: run ./setup.sh"
    assert (EXT / "node_modules").is_dir(), "client_vscode/node_modules is missing: run ./setup.sh"
    proc = subprocess.run([npm, *args], cwd=EXT, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"npm {' '.join(args)} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.timeout(300)
def test_extension_typechecks_and_its_unit_tests_pass() -> None:
    _npm("run", "typecheck")
    out = _npm("test").stdout
    assert "# fail 0" in out and "# pass" in out


@pytest.mark.timeout(300)
def test_npm_run_package_builds_a_vsix() -> None:
    vsix = EXT / "overnight.vsix"
    vsix.unlink(missing_ok=True)
    _npm("run", "package")
    names = zipfile.ZipFile(vsix).namelist()
    for inside in ("extension/dist/extension.js", "extension/dist/webview.js", "extension/package.json"):
        assert inside in names
    assert not any("node_modules" in n or "/src/" in n for n in names)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_extension_in_a_real_vs_code(corpus_dir: Path) -> None:
    _npm("run", "build")
    env = {**os.environ, "OVERNIGHT_PYTHON": sys.executable, "OVERNIGHT_TEST_DATA_DIR": str(corpus_dir)}
    node = shutil.which("node")
    assert node
    proc = subprocess.run([node, "e2e/run.mjs"], cwd=EXT, capture_output=True, text=True, timeout=840, env=env)
    print(proc.stdout[-8000:])
    assert proc.returncode == 0, f"the real-VS-Code suite failed:\n{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"

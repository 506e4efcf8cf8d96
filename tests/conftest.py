"""Shared fixtures: one corpus for the whole run, and real scratch workspaces made by `overnight init`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the SymPy corpus once per test session, into a private data dir every run then uses."""
    directory = Path(os.environ.get("OVERNIGHT_TEST_DATA_DIR") or tmp_path_factory.mktemp("corpus"))
    os.environ["OVERNIGHT_DATA_DIR"] = str(directory)
    subprocess.run([sys.executable, str(REPO / "trainer" / "prepare.py")], check=True, capture_output=True)
    return directory


# Fast settings for real runs: two-second budgets, two baseline runs, one thread each (the suite runs
# its test files on every core at once, one pytest-xdist worker per core). The suite's own parallel workers
# keep the machine busy on purpose: runs do not wait for it (machine_share 0); the incumbent is not re-run
# and no transfer check runs unless a test asks for them.
FAST = {
    "threads": 1,
    "budget": 2.0,
    "grace": 25.0,
    "baseline_runs": 2,
    "machine_share": 0.0,
    "rerun_every": 0,
    "transfer_every": 0,
}


def write_config(root: Path, **values: object) -> None:
    lines = []
    for key, value in {**FAST, **values}.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, (list, tuple)):
            lines.append(f"{key} = [{', '.join(repr(v) for v in value)}]".replace("'", '"'))
        else:
            lines.append(f"{key} = {value}")
    (root / "overnight.toml").write_text("\n".join(lines) + "\n")


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip("\n")


def commit_all(root: Path, message: str = "test setup") -> None:
    git(root, "add", "-A")
    git(root, "-c", "user.name=Test", "-c", "user.email=test@localhost", "commit", "-qm", message)


@pytest.fixture
def make_workspace(tmp_path: Path) -> Callable[..., Path]:
    """A real git repository set up by `overnight init`, with a fast config (overridable)."""
    from overnight.daemon.cli import main

    def make(name: str = "ws", train_edits: dict[str, str] | None = None, **config: object) -> Path:
        root = tmp_path / name
        assert main(["init", str(root)]) == 0
        write_config(root, **config)
        if train_edits:
            train = root / "trainer" / "train.py"
            text = train.read_text()
            for old, new in train_edits.items():
                assert old in text, old
                text = text.replace(old, new)
            train.write_text(text)
        commit_all(root)
        return root

    return make

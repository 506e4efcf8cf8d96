"""Runs read an export of their experiment's commit, never the worktree: made once per commit, read-only, and
checked after each run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from overnight.daemon.trees import TreeError, Trees


def _repo(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "repo"
    (root / "trainer").mkdir(parents=True)
    (root / "trainer" / "train.py").write_text("print('v1')\n")
    (root / "trainer" / "prepare.py").write_text("HARNESS = 1\n")
    (root / "program.md").write_text("be good\n")
    (root / "big-data.bin").write_bytes(b"\0" * 1000)  # not declared: not exported
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    return root, sha


def test_a_commit_is_exported_once_read_only_with_only_the_declared_files(tmp_path: Path) -> None:
    root, sha = _repo(tmp_path)
    trees = Trees(root, tmp_path / "trees", ["trainer", "trainer/train.py", "program.md"])
    tree = trees.get(sha)
    assert sorted(tree.digest) == ["program.md", "trainer/prepare.py", "trainer/train.py"]
    assert (tree.path / "trainer" / "train.py").read_text() == "print('v1')\n"
    assert not (tree.path / "trainer" / "train.py").stat().st_mode & 0o222
    # The worktree moving on does not move the copy.
    (root / "trainer" / "train.py").write_text("print('v2')\n")
    assert trees.get(sha) is tree and trees.changed(tree) == []
    trees.close()
    assert not tree.path.exists()


def test_what_a_run_did_to_its_copy_is_found_and_the_copy_made_again(tmp_path: Path) -> None:
    root, sha = _repo(tmp_path)
    trees = Trees(root, tmp_path / "trees", ["trainer", "program.md"])
    tree = trees.get(sha)
    (tree.path / "trainer" / "json.py").write_text("raise SystemExit\n")  # a shadowing module
    prepare = tree.path / "trainer" / "prepare.py"
    prepare.chmod(0o644)
    prepare.write_text("HARNESS = 2\n")
    assert trees.changed(tree) == ["trainer/json.py", "trainer/prepare.py"]
    trees.drop(sha)
    again = trees.get(sha)
    assert trees.changed(again) == [] and not (again.path / "trainer" / "json.py").exists()
    assert (again.path / "trainer" / "prepare.py").read_text() == "HARNESS = 1\n"


def test_an_unknown_commit_is_a_clear_error(tmp_path: Path) -> None:
    root, _ = _repo(tmp_path)
    with pytest.raises(TreeError, match="cannot export"):
        Trees(root, tmp_path / "trees", ["trainer"]).get("0" * 40)

"""What a run sees of its experiment: a read-only copy of the files at the experiment's commit, never the worktree.

The loop's worktree is where proposals are applied and committed; runs read an export of the experiment's commit
(``git archive``) instead, one per commit under ``.overnight/trees/``. So several runs of different experiments can
run at once, a run elsewhere (a Ray worker) gets exactly the same files, and what a run does to its copy is found
by comparing the copy with the digest taken when it was made: such a run is refused and the copy made again.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path


class TreeError(RuntimeError):
    """A commit's files could not be exported."""


@dataclass(frozen=True)
class Tree:
    commit: str
    path: Path
    digest: dict[str, str]  # relative path → sha256 of every file, as exported


def digest(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` (symlinks by their target text), keyed by relative path."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = "link:" + os.readlink(path)
            else:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


class Trees:
    """One exported tree per commit, made on demand, dropped when no run needs it any more."""

    def __init__(self, repo: Path, folder: Path, paths: list[str]) -> None:
        self.repo = repo
        self.folder = folder
        # What a run needs: its working directory's subtree, and the declared files wherever they are.
        self.paths = sorted(set(paths))
        self._trees: dict[str, Tree] = {}

    def get(self, commit: str) -> Tree:
        tree = self._trees.get(commit)
        if tree is not None and tree.path.is_dir():
            return tree
        tree = self._export(commit)
        self._trees[commit] = tree
        return tree

    def changed(self, tree: Tree) -> list[str]:
        """Files of the copy that differ from the export (added, removed or rewritten)."""
        try:
            now = digest(tree.path)
        except OSError:
            return ["(the copy is unreadable)"]
        return sorted(p for p in set(now) | set(tree.digest) if now.get(p) != tree.digest.get(p))

    def drop(self, commit: str) -> None:
        tree = self._trees.pop(commit, None)
        path = tree.path if tree is not None else self.folder / commit
        _remove(path)

    def keep_only(self, commits: set[str]) -> None:
        for commit in [c for c in self._trees if c not in commits]:
            self.drop(commit)

    def close(self) -> None:
        for commit in list(self._trees):
            self.drop(commit)

    def _export(self, commit: str) -> Tree:
        target = self.folder / commit
        tmp = self.folder / f".{commit}.tmp"
        _remove(tmp)
        _remove(target)
        proc = subprocess.run(["git", "-C", str(self.repo), "archive", "--format=tar", commit, "--", *self.paths],
                              capture_output=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise TreeError(f"cannot export {commit[:12]}: {proc.stderr.decode(errors='replace').strip()[:300]}")
        tmp.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
            tar.extractall(tmp, filter="data")  # no absolute paths, no links out of the tree, no devices
        for dirpath, _dirs, filenames in os.walk(tmp):
            for name in filenames:
                path = Path(dirpath) / name
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode & 0o555)  # read-only, even where no sandbox enforces it
        os.replace(tmp, target)
        return Tree(commit=commit, path=target, digest=digest(target))


def _remove(path: Path) -> None:
    if not path.exists() and not path.is_symlink():
        return
    for dirpath, _dirs, _files in os.walk(path):
        os.chmod(dirpath, 0o755)  # made read-only above; the owner may still remove it
    shutil.rmtree(path, ignore_errors=True)

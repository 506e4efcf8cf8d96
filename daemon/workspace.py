"""Git for the loop: its own worktree and branch, one commit per experiment, a ref for every commit.

The user's working copy is never written. The loop works in ``.overnight/worktrees/<tag>`` on the
branch ``overnight/<tag>``; kept experiments advance the branch, the rest are reset away, and every
experiment's commit stays reachable under ``refs/overnight/<tag>/<id>``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import git

from .config import Config

# Commits are made by the loop, not by the user: a fixed identity, so a machine with no
# user.name configured (a fresh CI box) can still run the loop.
_IDENTITY = {
    "GIT_AUTHOR_NAME": "Overnight",
    "GIT_AUTHOR_EMAIL": "overnight@localhost",
    "GIT_COMMITTER_NAME": "Overnight",
    "GIT_COMMITTER_EMAIL": "overnight@localhost",
}


class WorkspaceError(RuntimeError):
    """The workspace is not usable (not a git repo, no commits, missing files)."""


class InvalidProposal(ValueError):
    """A proposal that cannot be applied: it does not apply, touches a file it may not, or does not parse."""


@dataclass(frozen=True)
class Edit:
    """A proposal's change to the workspace: a unified diff, or whole new file contents."""

    patch: str | None = None
    files: tuple[tuple[str, str], ...] = ()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_tag(tag: str) -> str:
    """A session tag names a branch and a folder: letters, digits, ``_ . -``; nothing git would refuse."""
    if not _TAG.fullmatch(tag) or ".." in tag or tag.endswith((".lock", ".")):
        raise WorkspaceError(f"{tag!r} is not a usable session tag: use letters, digits, '_', '.' and '-' "
                             "(at most 64, starting with a letter or digit)")
    return tag


def branch_name(tag: str) -> str:
    return f"overnight/{tag}"


def experiment_ref(tag: str, exp_id: int) -> str:
    return f"refs/overnight/{tag}/{exp_id}"


class Workspace:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        try:
            self.repo = git.Repo(cfg.root)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise WorkspaceError(
                f"{cfg.root} is not a git repository. Overnight keeps every experiment as a commit: "
                f"run `git init && git add -A && git commit -m start` there first."
            ) from None
        if not self.repo.head.is_valid():
            raise WorkspaceError(f"{cfg.root} has no commits yet: commit your files first (git add -A && git commit).")
        for rel in (*cfg.editable, *cfg.frozen):
            if not (cfg.root / rel).is_file():
                raise WorkspaceError(f"{rel} is declared in {cfg.root / 'overnight.toml'} but does not exist")
        self.worktree: Path | None = None
        self._wt: git.Repo | None = None

    # -- the session's worktree -------------------------------------------------------------------

    def worktree_path(self, tag: str) -> Path:
        return self.cfg.state_dir / "worktrees" / tag

    def _ensure_state_dir(self) -> None:
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        ignore = self.cfg.state_dir / ".gitignore"
        if not ignore.exists():
            # The journal, logs and worktrees are Overnight's, not the user's: keep them out of `git status`.
            ignore.write_text("*\n")

    def open(self, tag: str, start_commit: str | None = None) -> str:
        """Check out the session's branch in its worktree, creating both if needed.

        Returns the commit the branch stands on. A new session starts from the user's HEAD plus
        the working-copy versions of the declared files (the user's current code is authoritative),
        or from ``start_commit`` as it is (a session continued under a new budget).
        """
        self._ensure_state_dir()
        path = self.worktree_path(tag)
        branch = branch_name(tag)
        self.clear_stale_locks(tag)
        if (path / ".git").is_file():
            # A moved workspace: the worktree and its admin folder point at each other by absolute paths. Repair
            # before prune, which would otherwise drop the admin folder of a worktree it cannot find.
            try:
                self.repo.git.worktree("repair", str(path))
            except git.GitCommandError:
                pass
        self.repo.git.worktree("prune")
        exists = branch in [h.name for h in self.repo.heads]
        if not exists:
            # The branch appears already holding the user's uncommitted edits (one commit made without a
            # worktree), so a kill at any moment leaves either no branch or the right one — never a session
            # that measures the edits but records HEAD.
            self.repo.create_head(branch, start_commit or self._working_copy_commit())
        if path.exists() and not self._usable_worktree(path):
            shutil.rmtree(path)  # a half-created worktree from a killed start, or one git no longer knows
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            self.repo.git.worktree("add", str(path), branch)
        self.worktree = path
        self._wt = git.Repo(path)
        return self.head()

    @staticmethod
    def _usable_worktree(path: Path) -> bool:
        try:
            git.Repo(path).head.commit  # noqa: B018 - reading it is the check
        except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError, git.GitCommandError):
            return False
        return True

    def _working_copy_commit(self) -> str:
        """HEAD plus the working-copy versions of the declared files, as a commit built in a private index;
        HEAD itself when they are all committed."""
        head = self.repo.head.commit
        changed = []
        for rel in (*self.cfg.editable, *self.cfg.frozen, self.cfg.program):
            src = self.cfg.root / rel
            if not src.is_file():
                continue
            try:
                committed: bytes | None = head.tree[rel].data_stream.read()
            except KeyError:
                committed = None
            if committed != src.read_bytes():
                changed.append(rel)
        if not changed:
            return str(head.hexsha)
        with tempfile.TemporaryDirectory(dir=self.cfg.state_dir) as tmp:
            env = {**_IDENTITY, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self.repo.git.read_tree(head.hexsha, env=env)
            for rel in changed:
                blob = self.repo.git.hash_object("-w", "--", str(self.cfg.root / rel))
                mode = "100755" if os.access(self.cfg.root / rel, os.X_OK) else "100644"
                self.repo.git.update_index("--add", "--cacheinfo", f"{mode},{blob},{rel}", env=env)
            tree = self.repo.git.write_tree(env=env)
            return str(self.repo.git.commit_tree(tree, "-p", head.hexsha, "-m", "overnight: start from the working copy",
                                                 env=env))

    def clear_stale_locks(self, tag: str) -> list[Path]:
        """Remove git lock files a killed Overnight process left on the session's own worktree and refs.

        Called with the workspace lock held (one loop per workspace), so no other Overnight process is using
        them; the user's own index and refs are never touched. Returns what was removed."""
        common = Path(self.repo.git.rev_parse("--git-common-dir"))
        if not common.is_absolute():
            common = self.cfg.root / common
        candidates: list[Path] = []
        wt_git = self.worktree_path(tag) / ".git"
        if wt_git.is_file():
            gitdir = Path(wt_git.read_text(encoding="utf-8", errors="replace").removeprefix("gitdir:").strip())
            if gitdir.is_dir():
                candidates += gitdir.glob("*.lock")
        # A kill inside `git worktree add` leaves its admin folder locked ("initializing"), which `prune` keeps.
        target = (self.worktree_path(tag) / ".git").resolve()
        for admin in (common / "worktrees").glob("*"):
            try:
                points_here = Path((admin / "gitdir").read_text(encoding="utf-8").strip()).resolve() == target
            except OSError:
                continue
            if points_here:
                candidates += admin.glob("*.lock")
                locked = admin / "locked"
                if locked.is_file() and locked.read_text(encoding="utf-8", errors="replace").startswith("initializing"):
                    candidates.append(locked)
        candidates += [common / "refs" / "heads" / "overnight" / f"{tag}.lock"]
        refs = common / "refs" / "overnight" / tag
        if refs.is_dir():
            candidates += refs.glob("*.lock")
        removed = []
        for lock in candidates:
            if lock.is_file():
                lock.unlink(missing_ok=True)
                removed.append(lock)
        return removed

    @property
    def wt(self) -> git.Repo:
        if self._wt is None:
            raise WorkspaceError("no session worktree is open")
        return self._wt

    @property
    def wt_path(self) -> Path:
        if self.worktree is None:
            raise WorkspaceError("no session worktree is open")
        return self.worktree

    def head(self) -> str:
        return self.wt.head.commit.hexsha

    def reset_to(self, commit: str) -> None:
        """Put the worktree exactly at ``commit``: tracked changes reverted, untracked files removed."""
        self.wt.git.reset("--hard", commit)
        self.wt.git.clean("-fd")

    def blob(self, commit: str, rel: str) -> bytes:
        """A file's exact bytes at a commit (no decoding, no newline stripping)."""
        out = self.repo.git.execute(["git", "cat-file", "blob", f"{commit}:{rel}"], stdout_as_string=False,
                                    strip_newline_in_stdout=False)
        assert isinstance(out, bytes)
        return out

    def frozen_sources(self) -> dict[str, bytes]:
        """The frozen files as the worktree holds them now."""
        return {rel: (self.wt_path / rel).read_bytes() for rel in self.cfg.frozen}

    def dirty(self) -> list[str]:
        """Files of the worktree that differ from its head or are new: a run may not leave any behind."""
        status = str(self.wt.git.status("--porcelain", "--untracked-files=all", "--ignored"))
        return [line[3:] for line in status.splitlines() if line.strip()]

    def frozen_hashes(self) -> dict[str, str]:
        return {rel: sha256_file(self.wt_path / rel) for rel in self.cfg.frozen}

    def write(self, rel: str, text: str) -> None:
        """Write a file of the worktree (never the user's copy)."""
        path = self.wt_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def read(self, rel: str) -> str:
        return (self.wt_path / rel).read_text(encoding="utf-8")

    def editable_files(self) -> dict[str, str]:
        return {rel: self.read(rel) for rel in self.cfg.editable}

    # -- proposals --------------------------------------------------------------------------------

    def apply(self, edit: Edit) -> list[str]:
        """Apply a proposal's edit to the worktree; raise InvalidProposal and leave it clean if it can't."""
        try:
            if edit.patch is not None:
                changed = self._apply_patch(edit.patch)
            else:
                changed = self._write_files(edit.files)
            if not changed:
                raise InvalidProposal("the proposal changes nothing")
            self._check_syntax(changed)
        except InvalidProposal:
            self.reset_to(self.head())
            raise
        return changed

    def _check_allowed(self, paths: list[str]) -> None:
        for rel in paths:
            if rel in self.cfg.frozen:
                raise InvalidProposal(f"{rel} is a frozen harness file: proposals may not change it")
            if rel not in self.cfg.editable:
                raise InvalidProposal(
                    f"{rel} is not an editable file (editable: {', '.join(self.cfg.editable)})"
                )

    def _apply_patch(self, patch: str) -> list[str]:
        if not patch.strip():
            raise InvalidProposal("the patch is empty")
        if not patch.endswith("\n"):
            patch += "\n"
        with tempfile.NamedTemporaryFile("w", suffix=".patch", dir=self.cfg.state_dir, delete=False) as fh:
            fh.write(patch)
            patch_file = fh.name
        try:
            try:
                numstat = self.wt.git.apply("--numstat", patch_file)
            except git.GitCommandError as exc:
                raise InvalidProposal(f"malformed patch: {_git_message(exc)}") from None
            paths = [line.split("\t", 2)[2] for line in numstat.splitlines() if line.count("\t") >= 2]
            paths = [p.split(" => ")[-1].strip("{}") for p in paths]
            self._check_allowed(paths)
            try:
                self.wt.git.apply("--check", patch_file)
                self.wt.git.apply(patch_file)
            except git.GitCommandError as exc:
                raise InvalidProposal(f"the patch does not apply: {_git_message(exc)}") from None
        finally:
            Path(patch_file).unlink(missing_ok=True)
        return paths

    def _write_files(self, files: tuple[tuple[str, str], ...]) -> list[str]:
        self._check_allowed([rel for rel, _ in files])
        changed = []
        for rel, content in files:
            path = self.wt_path / rel
            if path.read_text(encoding="utf-8") != content:
                path.write_text(content, encoding="utf-8")
                changed.append(rel)
        return changed

    def _check_syntax(self, paths: list[str]) -> None:
        for rel in paths:
            if not rel.endswith(".py"):
                continue
            source = (self.wt_path / rel).read_text(encoding="utf-8")
            try:
                compile(source, rel, "exec")
            except SyntaxError as exc:
                raise InvalidProposal(f"{rel}:{exc.lineno}: syntax error: {exc.msg}") from None

    def commit(self, message: str, paths: list[str]) -> str:
        self.wt.git.add("--", *paths)
        self.wt.git.commit("-m", message, env=_IDENTITY)
        return self.head()

    def cherry_pick(self, commit: str, message: str) -> str | None:
        """Apply ``commit``'s change onto the worktree's head as a new commit (left checked out); None, and the
        worktree as it was, when it does not apply cleanly."""
        head = self.head()
        try:
            self.wt.git.cherry_pick("--no-commit", commit)
            self.wt.git.commit("-m", message, env=_IDENTITY)
        except git.GitCommandError:
            try:
                self.wt.git.cherry_pick("--abort")
            except git.GitCommandError:
                pass
            self.reset_to(head)
            return None
        return self.head()

    def set_ref(self, ref: str, commit: str) -> None:
        self.repo.git.update_ref(ref, commit)

    def diff(self, parent: str, commit: str) -> str:
        return str(self.wt.git.diff(parent, commit))

    def changed_frozen(self, expected: dict[str, str]) -> list[str]:
        """Frozen files whose content differs from the session's recorded hashes."""
        current = self.frozen_hashes()
        return [rel for rel, digest in expected.items() if current.get(rel) != digest]


class Scratch:
    """A detached worktree of the repository, for commits the session branch must never stand on (the ablation's):
    whatever happens in it — a kill included — the session branch and the user's files do not move. Its commits
    are kept by the refs the caller sets; ``Scratch.open`` clears what an earlier kill left."""

    def __init__(self, repo: git.Repo, path: Path) -> None:
        self.repo, self.path = repo, path
        self.wt = git.Repo(path)

    @classmethod
    def open(cls, repo: git.Repo, path: Path, commit: str) -> Scratch:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        repo.git.worktree("prune")
        repo.git.worktree("add", "--detach", "--force", str(path), commit)
        return cls(repo, path)

    def close(self) -> None:
        try:
            self.repo.git.worktree("remove", "--force", str(self.path))
        except git.GitCommandError:
            shutil.rmtree(self.path, ignore_errors=True)
            self.repo.git.worktree("prune")

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def head(self) -> str:
        return self.wt.head.commit.hexsha

    def reset_to(self, commit: str) -> None:
        self.wt.git.reset("--hard", commit)
        self.wt.git.clean("-fd")

    def revert(self, commits: list[str], message: str) -> str | None:
        """Undo ``commits`` (newest first) on top of the head as one new commit; None, and the head as it was, when
        they do not revert cleanly (a later change rests on one of them)."""
        head = self.head()
        try:
            for commit in commits:
                self.wt.git.revert("--no-commit", commit)
            self.wt.git.commit("-m", message, env=_IDENTITY)
        except git.GitCommandError:
            try:
                self.wt.git.revert("--abort")
            except git.GitCommandError:
                pass
            self.reset_to(head)
            return None
        return self.head()

    def cherry_pick(self, commit: str, message: str) -> str | None:
        """``commit``'s change on top of the head as a new commit; None, and the head as it was, when it does not
        apply cleanly."""
        head = self.head()
        try:
            self.wt.git.cherry_pick("--no-commit", commit)
            self.wt.git.commit("-m", message, env=_IDENTITY)
        except git.GitCommandError:
            try:
                self.wt.git.cherry_pick("--abort")
            except git.GitCommandError:
                pass
            self.reset_to(head)
            return None
        return self.head()


def _git_message(exc: git.GitCommandError) -> str:
    text = (exc.stderr or str(exc)).strip()
    text = text.removeprefix("stderr:").strip().strip("'").strip()
    return " ".join(text.split())[:500]


def git_errors() -> type[Exception]:
    """The exception git raises for a failed command (for callers that should not import gitpython)."""
    return git.GitCommandError

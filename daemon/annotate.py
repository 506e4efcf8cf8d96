"""Per-line metric history: which experiments touched each line of an editable file, and what they did.

Computed from the session branch's history and mapped onto the client's buffer, which may differ:
- a kept experiment touched the lines it added or changed, found in its own version of the file;
- any other experiment touched the incumbent's lines it would have changed (or the line where it
  would have inserted), found in its parent's version;
and every version is aligned to the branch head, then the head to the buffer, line by line
(difflib: equal runs map one to one, a same-length replaced run maps line to line, so a line whose
value a later experiment changed still carries its history).
"""

from __future__ import annotations

import difflib
import logging
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass

import git

from .journal import Experiment

log = logging.getLogger("overnight.daemon")


@dataclass(frozen=True)
class Touch:
    experiment_id: int
    status: str
    delta: float | None  # candidate − incumbent val_bpb: negative is better
    description: str

    @property
    def label(self) -> str:
        delta = f" {self.delta:+.3f}".replace("-", "−") if self.delta is not None else ""
        return f"#{self.experiment_id}{delta} {self.status}"


def align(old: list[str], new: list[str]) -> dict[int, int]:
    """Line i of ``old`` → line j of ``new`` where the line survived (or was edited in place)."""
    mapping: dict[int, int] = {}
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op == "equal" or (op == "replace" and i2 - i1 == j2 - j1):
            for k in range(i2 - i1):
                mapping[i1 + k] = j1 + k
    return mapping


def touched(before: list[str], after: list[str]) -> tuple[set[int], set[int]]:
    """(lines of ``before`` that the change touched, lines of ``after`` that it wrote)."""
    old: set[int] = set()
    new: set[int] = set()
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        old.update(range(i1, i2) if i2 > i1 else [max(0, i1 - 1)])  # a pure insertion anchors on the line above
        new.update(range(j1, j2))
    return old, new


class History:
    """Line histories of one session branch; file versions are read once per commit and cached."""

    def __init__(self, repo: git.Repo) -> None:
        self.repo = repo
        self._versions: dict[tuple[str, str], list[str] | None] = {}
        self._touched: dict[tuple[str, str, str], tuple[set[int], set[int]]] = {}
        # The last history computed per (head, file, journal state): inlay hints, hovers and suggestions
        # ask for the same one, often at once (an editor opening the file); one computes, the others wait.
        self._lock = threading.Lock()
        self._memo: dict[tuple[str, str], tuple[object, dict[int, list[Touch]]]] = {}

    def cached_lines(self, head: str, rel: str, experiments: Callable[[], list[Experiment]],
                     state: object) -> dict[int, list[Touch]]:
        """``lines`` memoised on the journal ``state`` (e.g. Journal.stamp): recomputed when it moves."""
        with self._lock:
            memo = self._memo.get((head, rel))
            if memo is None or memo[0] != state:
                memo = (state, self.lines(head, rel, experiments()))
                self._memo[(head, rel)] = memo
            return memo[1]

    def version(self, rev: str, rel: str) -> list[str] | None:
        key = (rev, rel)
        if key not in self._versions:
            self.prefetch([rev], rel)
        return self._versions.get(key)  # absent only when git itself failed: not cached, asked again

    def prefetch(self, revs: list[str], rel: str) -> None:
        """Read the file at every rev not cached yet through one `git cat-file --batch`: a session of
        a thousand experiments is a thousand versions, and a process per version took seconds."""
        wanted = list(dict.fromkeys(rev for rev in revs if (rev, rel) not in self._versions))
        if not wanted:
            return
        try:
            out = subprocess.run(["git", "cat-file", "--batch"], cwd=self.repo.git_dir, check=True,
                                 capture_output=True, input="".join(f"{rev}:{rel}\n" for rev in wanted).encode()).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            log.warning("reading %s from git failed: %s", rel, exc)
            return
        pos = 0
        for rev in wanted:
            end = out.index(b"\n", pos)
            header = out[pos:end].split()
            pos = end + 1
            if len(header) != 3 or header[1] != b"blob":  # "<rev:path> missing", or not a file
                self._versions[(rev, rel)] = None
                continue
            size = int(header[2])
            self._versions[(rev, rel)] = out[pos:pos + size].decode("utf-8", errors="replace").splitlines()
            pos += size + 1  # the blob, then a newline

    def lines(self, head: str, rel: str, experiments: list[Experiment]) -> dict[int, list[Touch]]:
        """Head line → the experiments that touched it, newest first."""
        relevant = [exp for exp in experiments
                    if exp.kind == "experiment" and exp.is_final and exp.commit_sha and rel in exp.diff]
        self.prefetch([head, *(rev for exp in relevant for rev in (exp.parent_commit, exp.commit_sha) if rev)], rel)
        head_lines = self.version(head, rel)
        if head_lines is None:
            return {}
        result: dict[int, list[Touch]] = {}
        # Most experiments start from one of a few incumbents: align each source version to the head once.
        to_head_by_rev: dict[str, dict[int, int]] = {}
        for exp in relevant:
            assert exp.commit_sha is not None
            before, after = self.version(exp.parent_commit, rel), self.version(exp.commit_sha, rel)
            if before is None or after is None:
                continue
            key = (exp.parent_commit, exp.commit_sha, rel)
            if key not in self._touched:  # commits never change: what a change touched is computed once
                self._touched[key] = touched(before, after)
            old, new = self._touched[key]
            if exp.status == "keep":
                source, source_rev, lines = after, exp.commit_sha, new
            else:
                source, source_rev, lines = before, exp.parent_commit, old
            if source_rev not in to_head_by_rev:
                to_head_by_rev[source_rev] = align(source, head_lines)
            to_head = to_head_by_rev[source_rev]
            delta = None
            if exp.evidence and "incumbent_mean" in exp.evidence and exp.val_bpb is not None:
                delta = exp.val_bpb - float(exp.evidence["incumbent_mean"])
            touch = Touch(exp.id, exp.status, delta, exp.description)
            for line in sorted(lines):
                if line in to_head:
                    result.setdefault(to_head[line], []).insert(0, touch)
        return result


def onto_buffer(history: dict[int, list[Touch]], head_lines: list[str], buffer_lines: list[str]) -> dict[int, list[Touch]]:
    """Move head-line histories onto the client's buffer (which the user may have edited)."""
    to_buffer = align(head_lines, buffer_lines)
    return {to_buffer[line]: touches for line, touches in history.items() if line in to_buffer}

"""Per-line metric history: which experiments touched each line of an editable file, and what they did.

Computed from the session branch's history and mapped onto the client's buffer, which may differ:
- a kept experiment touched the lines it added or changed, found in its own version of the file;
- any other experiment touched the incumbent's lines it would have changed (or the line where it
  would have inserted), found in its parent's version;
and every version is aligned to the branch head, then the head to the buffer, line by line
(difflib: equal runs map one to one, a same-length replaced run maps line to line, so a line whose
value a later experiment changed still carries its history).

The result is kept as a `Ledger` (head line → experiment ids) that the loop advances as each experiment is
decided and persists in the journal, so a daemon that starts on a journal of thousands of experiments
reads one row instead of replaying thousands of file versions from git. Advancing is incremental:
when the branch moves, the ledger is re-mapped from its old head onto the new one (one alignment), and
only the experiments it does not cover yet are read from git.
"""

from __future__ import annotations

import difflib
import logging
import subprocess
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import git

from .journal import Experiment, Journal, Ledger

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


def relevant(experiments: Iterable[Experiment], rel: str) -> list[Experiment]:
    """The decided experiments whose change may touch ``rel``, oldest first."""
    return sorted((exp for exp in experiments
                   if exp.kind == "experiment" and exp.is_final and exp.commit_sha and rel in exp.diff),
                  key=lambda exp: exp.id)


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
    """Line histories of one session branch; file versions are read from git in batches and cached (the
    most recently used ``max_versions`` of them: a long night has tens of thousands)."""

    def __init__(self, repo: git.Repo, max_versions: int = 512) -> None:
        self.repo = repo
        self.max_versions = max_versions
        self._versions: OrderedDict[tuple[str, str], list[str] | None] = OrderedDict()
        self._cache_lock = threading.Lock()
        # The last history computed per (head, file, journal state): inlay hints, hovers and suggestions
        # ask for the same one, often at once (an editor opening the file); one computes, the others wait.
        self._lock = threading.Lock()
        self._memo: dict[tuple[str, str], tuple[object, dict[int, list[Touch]]]] = {}
        self._ledgers: dict[str, Ledger] = {}

    def cached_lines(self, head: str, rel: str, experiments: Callable[[], list[Experiment]],
                     state: object, persisted: Callable[[], Ledger | None] = lambda: None) -> dict[int, list[Touch]]:
        """``lines`` memoised on the journal ``state`` (e.g. Journal.stamp): recomputed when it moves, from
        the ``persisted`` ledger or the last one computed here, whichever covers more."""
        with self._lock:
            memo = self._memo.get((head, rel))
            if memo is None or memo[0] != state:
                exps = experiments()
                start = persisted()
                last = self._ledgers.get(rel)
                if last is not None and (start is None or len(last.covered) > len(start.covered)):
                    start = last
                ledger = self.advance(start, head, rel, exps)
                self._ledgers[rel] = ledger
                memo = (state, self.touches(ledger, exps))
                self._memo = {(head, rel): memo, **{k: v for k, v in self._memo.items() if k[1] != rel}}
            return memo[1]

    def version(self, rev: str, rel: str) -> list[str] | None:
        key = (rev, rel)
        if key not in self._versions:
            self.prefetch([rev], rel)
        with self._cache_lock:  # the server's threads share the cache: a lookup never races an eviction
            found = self._versions.get(key)  # absent only when git itself failed: not cached, asked again
            if key in self._versions:
                self._versions.move_to_end(key)
        return found

    def _absent(self, rev: str, rel: str) -> bool:
        """Git said the file does not exist at ``rev`` (as opposed to a read that failed)."""
        with self._cache_lock:
            return (rev, rel) in self._versions and self._versions[(rev, rel)] is None

    def prefetch(self, revs: list[str], rel: str) -> None:
        """Read the file at every rev not cached yet through one `git cat-file --batch`: a session of
        a thousand experiments is a thousand versions, and a process per version took seconds."""
        with self._cache_lock:
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
        read: dict[tuple[str, str], list[str] | None] = {}
        for rev in wanted:
            end = out.index(b"\n", pos)
            header = out[pos:end].split()
            pos = end + 1
            if len(header) != 3 or header[1] != b"blob":  # "<rev:path> missing", or not a file
                read[(rev, rel)] = None
                continue
            size = int(header[2])
            read[(rev, rel)] = out[pos:pos + size].decode("utf-8", errors="replace").splitlines()
            pos += size + 1  # the blob, then a newline
        with self._cache_lock:
            self._versions.update(read)
            while len(self._versions) > max(self.max_versions, len(wanted)):  # what was just read stays
                self._versions.popitem(last=False)

    def lines(self, head: str, rel: str, experiments: list[Experiment]) -> dict[int, list[Touch]]:
        """Head line → the experiments that touched it, newest first (computed from scratch)."""
        return self.touches(self.advance(None, head, rel, experiments), experiments)

    def advance(self, ledger: Ledger | None, head: str, rel: str, experiments: list[Experiment]) -> Ledger:
        """``ledger`` (None: an empty one) moved onto ``head`` and extended with every decided experiment it
        does not cover yet. Only those experiments' versions are read from git."""
        if ledger is not None and ledger.head != head:
            was, now = self.version(ledger.head, rel), self.version(head, rel)
            # A head that git no longer has (or a file that did not exist there): start again from scratch.
            ledger = ledger.remapped(head, align(was, now)) if was is not None and now is not None else None
        if ledger is None:
            ledger = Ledger(head)
        missing = [exp for exp in relevant(experiments, rel) if exp.id not in ledger.covered]
        if not missing:
            return ledger
        covered = set(ledger.covered)
        self.prefetch([head, *(rev for exp in missing for rev in (exp.parent_commit, exp.commit_sha) if rev)], rel)
        head_lines = self.version(head, rel)
        if head_lines is None:
            return ledger  # the file is not on the branch (or git failed): nothing to attach history to
        # The new marks are gathered in the frame of one version at a time, in the order the experiments were
        # made, and moved from version to version as the branch moved (each kept commit to the next): a line
        # two keeps edited in turn is followed through both edits, which aligning each version straight onto
        # the head would lose once a later change moved it (a replaced run of a different length). The
        # ledger advanced decision by decision composes the same alignments, so the two agree.
        frame = Ledger(head)
        frame_lines = head_lines
        for exp in missing:
            assert exp.commit_sha is not None
            before, after = self.version(exp.parent_commit, rel), self.version(exp.commit_sha, rel)
            if before is None or after is None:
                # A file absent at either commit touched nothing here: covered. A read that failed is tried again.
                if self._absent(exp.parent_commit, rel) or self._absent(exp.commit_sha, rel):
                    covered.add(exp.id)
                continue
            covered.add(exp.id)
            old, new = touched(before, after)  # once per experiment: the ledger remembers what it found
            if exp.status == "keep":
                source, source_rev, changed = after, exp.commit_sha, new
            else:
                source, source_rev, changed = before, exp.parent_commit, old
            if source_rev != frame.head:
                frame = frame.remapped(source_rev, align(frame_lines, source)) if frame.lines else Ledger(source_rev)
                frame_lines = source
            for line in changed:
                frame.lines.setdefault(line, []).append(exp.id)
        if frame.head != head and frame.lines:
            frame = frame.remapped(head, align(frame_lines, head_lines))
        lines = {line: list(ids) for line, ids in ledger.lines.items()}
        for line, ids in frame.lines.items():
            lines.setdefault(line, []).extend(ids)
        for ids in lines.values():
            ids.sort(reverse=True)
        return Ledger(head, lines, covered)

    def record(self, journal: Journal, tag: str, head: str, rels: Iterable[str]) -> None:
        """Advance the persisted ledgers of ``rels`` to ``head`` (the loop, the journal's writer, after each decision)."""
        experiments = journal.experiments(tag)
        for rel in rels:
            start = self._ledgers.get(rel) or journal.line_history(tag, rel)
            ledger = self.advance(start, head, rel, experiments)
            if ledger is not start:
                journal.set_line_history(tag, rel, ledger)
            self._ledgers[rel] = ledger

    @staticmethod
    def touches(ledger: Ledger, experiments: list[Experiment]) -> dict[int, list[Touch]]:
        """The ledger's ids as the hover and the inlay hints show them."""
        by_id = {exp.id: exp for exp in experiments}
        result: dict[int, list[Touch]] = {}
        for line, ids in ledger.lines.items():
            found = [touch_of(by_id[i]) for i in ids if i in by_id]
            if found:
                result[line] = found
        return result


def touch_of(exp: Experiment) -> Touch:
    return Touch(exp.id, exp.status, exp.delta, exp.description)


def onto_buffer(history: dict[int, list[Touch]], head_lines: list[str], buffer_lines: list[str]) -> dict[int, list[Touch]]:
    """Move head-line histories onto the client's buffer (which the user may have edited)."""
    to_buffer = align(head_lines, buffer_lines)
    return {to_buffer[line]: touches for line, touches in history.items() if line in to_buffer}

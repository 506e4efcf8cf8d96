"""Kept experiments → suggestions: hunks against the user's current version of each editable file.

A suggestion is derived, not stored: the three-way merge (threeway.py) of the user's base version,
the user's text now, and the incumbent's version gives the pending hunks, each attributed to the
kept experiments that wrote its lines. Only the user's decisions are stored (journal
``hunk_decisions``), keyed by the hunk's content, so they survive re-anchoring.

A suggestion's id names the file and the incumbent it comes from: a newer keep replaces it with a
new suggestion, and clients drop the old one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import git

from .annotate import History
from .decide import describe
from .journal import Experiment, Journal
from .noise import session_noise
from .threeway import Change, changes, lines, text_edit


@dataclass(frozen=True)
class PendingHunk:
    id: str
    key: str
    start: tuple[int, int]  # LSP (line, character) in the user's text
    end: tuple[int, int]
    old_text: str
    new_text: str  # the text an LSP edit of [start, end) puts there
    experiment_ids: tuple[int, ...]
    evidence: str  # the newest attributed experiment's numbers, for a CodeLens


@dataclass(frozen=True)
class PendingSuggestion:
    id: str
    path: str
    experiment_ids: tuple[int, ...]
    hunks: tuple[PendingHunk, ...]
    evidence: str


@dataclass(frozen=True)
class View:
    """What a user with this text should see for one file."""

    suggestion: PendingSuggestion | None
    conflicts: int  # loop changes the user's own edits now contradict: no longer offered


def suggestion_id(tag: str, path: str, incumbent_id: int) -> str:
    return f"{tag}:{path}@{incumbent_id}"


def suggestion_path(sid: str) -> str | None:
    """The file a suggestion id names (`tag:path@id`), or None if it is not one of ours."""
    if ":" not in sid or "@" not in sid:
        return None
    return sid.split(":", 1)[1].rsplit("@", 1)[0]


def hunk_id(path: str, key: str) -> str:
    return f"{path}#{key}"


def experiment_evidence(exp: Experiment) -> str:
    """`#17: 2.4120 → 2.3801 bpb (Δ −0.0319, t = 4.1 on 9 df, bar 2.9)`: its decision's numbers, as describe() states them."""
    ev = exp.evidence or {}
    numbers = describe(ev) if "incumbent_mean" in ev else ""
    return f"#{exp.id}: {numbers}" if numbers else f"#{exp.id}"


def cumulative_evidence(journal: Journal, tag: str, incumbent: Experiment) -> dict[str, Any] | None:
    """What the session's kept changes did together: the incumbent against the session's baseline, as evidence
    describe() reads (``t`` in standard errors of the difference, σ pooled over the session's unchanged code:
    the unit every decision is stated in). None when there is nothing to compare."""
    baseline = journal.baseline(tag)
    if baseline is None or baseline.id == incumbent.id or baseline.val_bpb is None or incumbent.val_bpb is None:
        return None
    base = [r.val_bpb for r in journal.runs(baseline.id) if r.status == "ok" and r.val_bpb is not None]
    inc = [r.val_bpb for r in journal.runs(incumbent.id) if r.status == "ok" and r.val_bpb is not None]
    ev: dict[str, Any] = {"incumbent_mean": baseline.val_bpb, "candidate_mean": incumbent.val_bpb,
                          "baseline_id": baseline.id, "incumbent_id": incumbent.id}
    session = journal.session(tag)
    config: dict[str, Any] = session.config if session is not None else {}
    min_sigma = config.get("min_sigma")
    noise = session_noise(journal, tag, float(min_sigma) if isinstance(min_sigma, (int, float)) else 0.0)
    if base and inc and noise.df >= 1 and noise.sigma > 0:
        # Both versions are in the pool already (they are unchanged code, measured more than once), so the
        # pooled σ and its df are used as they are: the candidate's own runs are not added a second time.
        sign = -1.0 if config.get("direction") == "maximize" else 1.0
        se = noise.sigma * math.sqrt(1 / len(base) + 1 / len(inc))
        ev.update({"t": sign * (baseline.val_bpb - incumbent.val_bpb) / se, "df": noise.df, "se": se,
                   "sigma": noise.sigma, "incumbent_n": len(base), "candidate_n": len(inc)})
    return ev


class SuggestionBook:
    def __init__(self, repo: git.Repo, journal: Journal, history: History) -> None:
        self.repo = repo
        self.journal = journal
        self.history = history
        # Per (tag, path, code head): the journal's state and what it derives; recomputed when the
        # journal moves (a client typing only re-runs the cheap three-way merge).
        self._cache_key: tuple[str, str, str, tuple[int, float]] | None = None
        self._cached: tuple[list[Experiment], dict[int, list[int]]] = ([], {})
        self._evidence_cache: tuple[object, dict[str, Any] | None] | None = None  # the session's numbers, per stamp
        self._texts: dict[tuple[str, str], str | None] = {}

    # -- the three versions -----------------------------------------------------------------------

    def base_text(self, tag: str, path: str) -> str | None:
        """The user's version the session last synced with (its start, or the last rebase)."""
        texts = self.journal.user_base(tag) or {}
        if path in texts:
            return texts[path]
        session = self.journal.session(tag)
        if session is None:
            return None
        return self._text(session.base_commit, path)

    def _text(self, rev: str, path: str) -> str | None:
        """A file at a commit (commits never change: cached)."""
        key = (rev, path)
        if key not in self._texts:
            try:
                self._texts[key] = str(self.repo.git.show(f"{rev}:{path}", strip_newline_in_stdout=False))
            except git.GitCommandError:
                self._texts[key] = None
        return self._texts[key]

    def incumbent(self, tag: str) -> Experiment | None:
        """The loop's side of the merge: the code the session stands on (see Journal.code_head)."""
        return self.journal.code_head(tag)

    # -- views ------------------------------------------------------------------------------------

    def view(self, tag: str, path: str, user_text: str) -> View:
        incumbent = self.incumbent(tag)
        if incumbent is None or not incumbent.commit_sha:
            return View(None, 0)
        base = self.base_text(tag, path)
        loop = self._text(incumbent.commit_sha, path)
        if base is None or loop is None or base == loop:
            return View(None, 0)
        decided = self.journal.hunk_decisions(tag, path)
        found = changes(base, user_text, loop)
        pending = [c for c in found if c.applies and c.key not in decided]
        conflicts = sum(1 for c in found if not c.applies and c.key not in decided)
        if not pending:
            return View(None, conflicts)
        key = (tag, path, incumbent.commit_sha, self.journal.stamp(tag))
        if self._cache_key != key:
            experiments = self.journal.experiments(tag)
            self._cached = (experiments, self._attribution(incumbent.commit_sha, path, experiments, key[3]))
            self._cache_key = key
        experiments, attribution = self._cached
        by_id = {e.id: e for e in experiments}
        user_lines = lines(user_text)
        hunks = []
        for change in pending:
            ids = self._ids_for(change, attribution) or self._kept_touching(path, experiments)
            start, end, new_text = text_edit(user_lines, change)
            newest = by_id.get(ids[-1]) if ids else None
            hunks.append(PendingHunk(
                id=hunk_id(path, change.key), key=change.key, start=start, end=end, old_text=change.old_text,
                new_text=new_text, experiment_ids=ids, evidence=experiment_evidence(newest) if newest else "",
            ))
        all_ids = tuple(sorted({i for h in hunks for i in h.experiment_ids}))
        return View(PendingSuggestion(
            id=suggestion_id(tag, path, incumbent.id), path=path, experiment_ids=all_ids, hunks=tuple(hunks),
            evidence=self._evidence(tag, incumbent, all_ids),
        ), conflicts)

    def _attribution(self, commit: str, path: str, experiments: list[Experiment], state: object) -> dict[int, list[int]]:
        """Incumbent line → the kept experiments that wrote it, oldest first."""
        touches = self.history.cached_lines(commit, path, lambda: experiments, state,
                                            lambda: self.journal.line_history(experiments[0].tag, path) if experiments else None)
        return {line: sorted(t.experiment_id for t in ts if t.status == "keep") for line, ts in touches.items()}

    @staticmethod
    def _ids_for(change: Change, attribution: dict[int, list[int]]) -> tuple[int, ...]:
        start, end = change.loop
        # A pure deletion wrote no line: the experiment that deleted shows on the neighbour lines, if at all.
        span = range(start, end) if end > start else range(max(0, start - 1), start + 1)
        return tuple(sorted({i for line in span for i in attribution.get(line, [])}))

    @staticmethod
    def _kept_touching(path: str, experiments: list[Experiment]) -> tuple[int, ...]:
        return tuple(e.id for e in experiments if e.kind == "experiment" and e.status == "keep" and path in e.diff)

    def _evidence(self, tag: str, incumbent: Experiment, ids: tuple[int, ...]) -> str:
        """`#3, #5: 2.4120 → 2.3500 bpb (Δ −0.0620, t = 8.1 on 11 df)`: the baseline against the incumbent, in
        the unit of the hunks' own evidence (describe(), σ pooled over the session's unchanged code)."""
        names = ", ".join(f"#{i}" for i in ids) or f"#{incumbent.id}"
        # Pooling the session's noise reads every run: once per journal state, not per request (an editor asks
        # for CodeLens on every keystroke's pause).
        key = (tag, incumbent.id, self.journal.runs_stamp(tag))
        if self._evidence_cache is None or self._evidence_cache[0] != key:
            self._evidence_cache = (key, cumulative_evidence(self.journal, tag, incumbent))
        ev = self._evidence_cache[1]
        numbers = describe(ev) if ev is not None else ""
        return f"{names}: {numbers}" if numbers else names

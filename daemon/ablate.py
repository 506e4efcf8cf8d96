"""End-of-session ablation: which of the kept changes carry the gain?

From the final incumbent, each kept change (or each group of changes that must go together: one that cannot be
undone without undoing a later one that rests on it) is removed, and the code without it is measured against the
incumbent with the keep rule's own statistics (a one-sided pooled t test at the session's alpha, every run of
unchanged code pooled for σ). A change whose removal does not make the metric worse beyond noise is *droppable*.
The result is a branch ``overnight/<tag>-final`` built from the session's start: one commit per surviving change
(a dropped change stays only where a surviving one rests on it), each message carrying its measured effect.

This module plans and builds; the loop (``Loop._ablate``) runs the measurements, as it runs everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .journal import Experiment, Journal
from .workspace import Scratch

# Runs of each ablated version (and fresh runs of the incumbent beside them) unless the user says otherwise.
DEFAULT_RUNS = 2


@dataclass(frozen=True)
class Group:
    """Kept changes removed together, and the commit that removes them from the final incumbent."""

    changes: tuple[Experiment, ...]
    commit: str

    @property
    def ids(self) -> list[int]:
        return [e.id for e in self.changes]

    def describe(self) -> str:
        names = ", ".join(f"#{e.id}" for e in self.changes)
        return f"without {names}: " + "; ".join(e.description for e in self.changes)


@dataclass(frozen=True)
class Outcome:
    """One group's measured effect: how much worse the code is without it (positive: the group helps)."""

    group: Group
    ablation_id: int
    effect: float | None  # metric without it minus the incumbent's, in the metric's better direction's terms
    sigmas: float | None  # the effect in units of the pooled σ
    droppable: bool
    reason: str


def kept_changes(experiments: list[Experiment]) -> list[Experiment]:
    """The session's kept proposals, oldest first (baselines, the user's own edits, are not ablated)."""
    return [e for e in experiments if e.kind == "experiment" and e.status == "keep" and e.commit_sha]


def plan(scratch: Scratch, final: str, kept: list[Experiment]) -> list[Group]:
    """Groups of kept changes, each with a commit on top of ``final`` that removes it (made in a scratch worktree:
    the session branch never moves). A change that does not revert alone is grouped with the later changes until
    the group reverts cleanly."""
    groups: list[Group] = []
    todo = list(kept)
    while todo:
        members = [todo.pop(0)]
        while True:
            scratch.reset_to(final)
            commits = [str(e.commit_sha) for e in reversed(members)]
            message = "ablation: " + Group(tuple(members), "").describe()
            commit = scratch.revert(commits, message[:2000])
            if commit is not None:
                groups.append(Group(tuple(members), commit))
                break
            if not todo:  # even all together they do not revert
                raise AblationError(f"the changes {', '.join(f'#{e.id}' for e in members)} cannot be undone "
                                    "from the final code (a later edit rests on them)")
            members.append(todo.pop(0))
    return groups


class AblationError(RuntimeError):
    """The ablation cannot be planned or built: the message says why."""


def cost(journal: Journal, tag: str, runs: int, budget: float) -> tuple[int, int, float]:
    """(kept changes, runs at most, seconds) an ablation of the session would take: every change alone (groups only
    lower it) beside fresh runs of the incumbent, each run as long as the incumbent's own took."""
    kept = kept_changes(journal.experiments(tag))
    incumbent = journal.incumbent(tag)
    walls = [r.wall_seconds for r in journal.runs(incumbent.id) if r.wall_seconds] if incumbent else []
    total, seconds = estimate(len(kept), runs, sum(walls) / len(walls) if walls else budget)
    return len(kept), total, seconds


def estimate(groups: int, runs: int, seconds_per_run: float) -> tuple[int, float]:
    """(runs, seconds) the ablation costs: each group's runs, each beside a fresh run of the incumbent."""
    total = 2 * groups * runs
    return total, total * seconds_per_run


def chain(experiments: list[Experiment], base: str) -> list[Experiment]:
    """What the session branch is made of, oldest first: the kept proposals and the user's own edits the loop
    synced (a baseline whose commit is not the session's start). The final branch replays all of them."""
    return [e for e in experiments if e.status == "keep" and e.commit_sha and e.commit_sha != base
            and e.kind in ("experiment", "baseline") and (e.kind == "experiment" or e.parent_commit != e.commit_sha)]


def build_branch(scratch: Scratch, base: str, steps: list[Experiment], outcomes: list[Outcome]) -> dict[int, Any]:
    """Replay the session from its start in a scratch worktree: the user's synced edits always, each surviving
    change as one commit whose message holds its measured effect, a dropped change only where a surviving one does
    not apply without it. Returns experiment id → its commit on the new line (None: dropped); the new line's head
    is ``scratch.head()``."""
    by_change = {e.id: o for o in outcomes for e in o.group.changes}
    placed: dict[int, Any] = {}
    scratch.reset_to(base)
    dropped_waiting: list[Experiment] = []
    for step in steps:
        outcome = by_change.get(step.id)
        if step.kind == "experiment" and (outcome is None or outcome.droppable):
            dropped_waiting.append(step)
            placed[step.id] = None
            continue
        message = _message(step, outcome) if step.kind == "experiment" else f"your edit, synced by the loop (#{step.id})"
        commit = scratch.cherry_pick(str(step.commit_sha), message)
        if commit is None:  # it rests on dropped changes: they come back, saying why
            for earlier in dropped_waiting:
                placed[earlier.id] = scratch.cherry_pick(str(earlier.commit_sha), _message(
                    earlier, by_change.get(earlier.id), needed_by=step.id))
            dropped_waiting = []
            commit = scratch.cherry_pick(str(step.commit_sha), message)
            if commit is None:
                raise AblationError(f"#{step.id} does not apply onto the session's start with the changes "
                                    "before it: the final branch cannot be built")
        placed[step.id] = commit
    return placed


def _message(change: Experiment, outcome: Outcome | None, needed_by: int | None = None) -> str:
    lines = [f"#{change.id}: {change.description}", ""]
    if outcome is not None and outcome.effect is not None:
        together = f" (removed together with {', '.join(f'#{i}' for i in outcome.group.ids if i != change.id)})" \
            if len(outcome.group.changes) > 1 else ""
        sig = f", {outcome.sigmas:.1f}σ" if outcome.sigmas is not None else ""
        lines.append(f"Measured effect: removing it from the final code costs {outcome.effect:+.4f}{sig}{together}.")
    if outcome is not None:
        lines.append(outcome.reason)
    if needed_by is not None:
        lines.append(f"Kept although droppable on its own: #{needed_by} rests on it.")
    lines.append(f"Overnight ablation of experiment #{change.id}.")
    return "\n".join(lines)

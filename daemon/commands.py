"""What clients may ask of the loop, and what it answers: one dataclass per command.

Clients never call into the loop's state. They submit a command (``Loop.submit``); the loop's own thread — the
session's one owner, and the journal's only writer while it runs — carries it out between its steps (within a
fraction of a second, also while a run trains or the agent thinks) and answers with the state the command
produced. With no loop thread running, the submitting thread carries it out itself, one command at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Pause:
    """Pause before the next proposal; the experiment in flight is decided first. The reason goes to the agent."""

    reason: str = ""


@dataclass(frozen=True)
class Resume:
    """Go on after a pause."""


@dataclass(frozen=True)
class Stop:
    """End the session: at once (the run in flight is killed and re-runs on the next start), or after the experiment
    in flight is decided."""

    now: bool = False


@dataclass(frozen=True)
class Redirect:
    """The human's instruction for the agent, in its context from the next proposal on."""

    instruction: str


@dataclass(frozen=True)
class SetBudget:
    """A new training budget: a new session (new tag, new baseline) after the experiment in flight."""

    seconds: float
    tag: str | None = None


@dataclass(frozen=True)
class SyncFiles:
    """The user changed these files themselves: rebase onto them after the experiment in flight."""

    paths: tuple[str, ...]


@dataclass(frozen=True)
class DecideHunks:
    """The user accepted or rejected hunks of a suggestion: recorded (a reject's reason becomes feedback)."""

    tag: str
    path: str
    keys: tuple[str, ...]
    state: str
    suggestion_id: str
    experiment_ids: tuple[int, ...]
    reason: str = ""


@dataclass(frozen=True)
class Curate:
    """The human shapes the hypothesis queue (ideas.py): ``add`` (text, direction), ``approve`` / ``reopen`` /
    ``veto`` (idea_id, a veto's reason), ``move`` (idea_id to index, 0 = top), ``pin`` / ``close`` / ``open`` a
    direction."""

    action: str
    idea_id: int | None = None
    text: str = ""
    direction: str = ""
    reason: str = ""
    index: int | None = None


@dataclass(frozen=True)
class Ablate:
    """Measure what each kept change contributes (ablate.py), once the experiments in flight are decided; the loop
    pauses after it, with the reviewable branch."""

    runs: int = 2


Command = Pause | Resume | Stop | Redirect | SetBudget | SyncFiles | DecideHunks | Curate | Ablate


@dataclass(frozen=True)
class Ack:
    """The loop's answer: its state as the command left it (``pausing`` while the experiment in flight finishes),
    a line for humans, and the command's value where it has one (a redirect's feedback id, a new session's tag)."""

    state: str
    message: str
    value: Any = None

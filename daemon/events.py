"""What the loop tells its listeners: one frozen dataclass per kind of event.

The loop (loop.py) emits these and knows nothing of who listens; the terminal view (live.py) and the
daemon (server/core.py) dispatch on the type, with ``match`` or ``isinstance``::

    match event:
        case ExperimentStarted(experiment=exp, runs_planned=n): ...
        case Progress(frame=frame): ...

``Event`` is the union of them all, so a consumer that ends its ``match`` with ``assert_never`` is told by the
type checker when a new kind appears. Events are emitted on the loop's thread (``Thought`` on the agent's, a
prefetch's included): a listener that blocks holds the loop up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from .executor import Frame, RunOutcome
from .journal import Experiment

# What the loop is doing (``Loop.state``; the protocol's LoopState adds the daemon's own: stopping, error).
LoopState = Literal["idle", "preparing", "baseline", "proposing", "running", "pausing", "paused", "stopping", "stopped"]
Level = Literal["info", "warning", "error"]


@dataclass(frozen=True, slots=True)
class SessionOpened:
    """A session was started or resumed (also when a new budget opens a new one)."""

    tag: str
    resumed: bool
    worktree: str
    branch: str


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The loop's state changed; ``Loop.state`` and ``Loop.state_message`` hold it already."""

    state: LoopState
    message: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    """A line for the human: what the loop is doing, a warning, an agent's failure."""

    level: Level
    text: str


@dataclass(frozen=True, slots=True)
class ExperimentStarted:
    """An experiment's runs start: a candidate, a baseline, or a decided one measured again (the incumbent's
    re-run, a transfer check's run: ``experiment.is_final``)."""

    experiment: Experiment
    runs_planned: int


@dataclass(frozen=True, slots=True)
class RunStarted:
    """One training run of the experiment in flight starts (``run`` counts from 0)."""

    experiment_id: int
    run: int
    seed: int
    budget: float
    clock: str


@dataclass(frozen=True, slots=True)
class Progress:
    """A frame the run in flight reported (its ``type`` says which: ``progress`` frames carry the loss)."""

    experiment_id: int
    run: int
    frame: Frame


@dataclass(frozen=True, slots=True)
class PhaseChanged:
    """The run in flight entered a phase (starting, training, exporting, evaluating), or the loop waits for the
    machine before one (waiting; no experiment or run yet); ``Loop.phase`` holds it already."""

    phase: str
    experiment_id: int | None = None
    run: int | None = None


@dataclass(frozen=True, slots=True)
class RunFinished:
    """One training run ended, measured or not (a starved run runs again)."""

    experiment_id: int
    run: int
    outcome: RunOutcome


@dataclass(frozen=True, slots=True)
class ExperimentFinished:
    """An experiment is decided (or a decided one was measured again): the journal's row as it stands now."""

    experiment: Experiment


@dataclass(frozen=True, slots=True)
class Rebased:
    """The loop took the user's own edits: ``paths`` changed in the loop's code, ``files`` are the user's files
    whose new version is now the base of suggestions."""

    paths: tuple[str, ...]
    files: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Thought:
    """Streamed text of the agent's plan; ``done`` ends one answer."""

    text: str
    done: bool
    experiment_id: int | None = None


@dataclass(frozen=True, slots=True)
class Flagged:
    """Something the human should look at (recorded in the journal's flags too)."""

    text: str


@dataclass(frozen=True, slots=True)
class TransferChecked:
    """A transfer check ended: how much of the session's gain survived at a larger budget and model."""

    incumbent_id: int
    ratio: float | None
    gain: float | None
    gain_at_budget: float | None


@dataclass(frozen=True, slots=True)
class IdeasChanged:
    """The hypothesis queue changed: the agent stated hypotheses, or a human curated it."""

    tag: str


Event: TypeAlias = (IdeasChanged | SessionOpened | StateChanged | Message | ExperimentStarted | RunStarted | Progress
                    | PhaseChanged | RunFinished | ExperimentFinished | Rebased | Thought | Flagged | TransferChecked)
Listener: TypeAlias = Callable[[Event], None]

__all__ = ["Event", "ExperimentFinished", "ExperimentStarted", "Flagged", "IdeasChanged", "Level", "Listener", "LoopState",
           "Message", "PhaseChanged", "Progress", "Rebased", "RunFinished", "RunStarted", "SessionOpened", "StateChanged",
           "Thought", "TransferChecked"]

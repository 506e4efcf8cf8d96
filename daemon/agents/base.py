"""The agent interface: propose the next experiment from the program, the code and the history."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..ideas import Draft, Idea
from ..journal import Experiment
from ..workspace import Edit

# The thought hook: (streamed text, whether it ends one answer).
ThoughtHook = Callable[[str, bool], None]


class AgentError(RuntimeError):
    """The agent cannot work at all (a missing file, a missing key): the loop stops with this message."""


class AgentPaused(RuntimeError):
    """The agent cannot propose for now (its API is down, its spending cap is reached): the loop pauses.

    With ``retry_in`` seconds the loop probes again after that long (``agent.probe()``) and resumes by
    itself once the agent can work; without, it waits for the human to resume.
    """

    def __init__(self, reason: str, retry_in: float | None = None) -> None:
        super().__init__(reason)
        self.retry_in = retry_in


@dataclass(frozen=True)
class Proposal:
    description: str
    edit: Edit
    hypothesis: str = ""
    reasoning: str = ""
    # Agent-specific facts stored with the experiment (the sweep records the config it tried).
    meta: dict[str, Any] = field(default_factory=dict)
    # Set when the agent's answer failed its own validation (after repair turns): the loop records the
    # experiment as invalid with this error, without applying anything.
    invalid: str = ""
    # The queue entry this proposal tests: its id (from ``Context.ideas``) or the agent's own key for it.
    idea_id: int | None = None
    idea_key: str | None = None
    # Hypotheses the agent states along with the proposal, for the queue (the human curates them).
    ideas: tuple[Draft, ...] = ()


@dataclass(frozen=True)
class Context:
    """Everything an agent may look at when proposing."""

    program: str
    # The editable files as they stand at the incumbent, by workspace-relative path.
    files: dict[str, str]
    incumbent: Experiment
    # Every experiment of the session so far, oldest first.
    history: list[Experiment]
    # The human's feedback: rejections with reasons, redirects, pause notes.
    feedback: list[dict[str, Any]]
    # The measured run-to-run noise of the metric: what "an improvement" has to beat.
    sigma: float
    # About how much better than the incumbent a candidate must measure to be kept (the keep rule's bar with
    # the fewest runs a keep can rest on); 0 before the noise is known.
    bar: float = 0.0
    # The hypothesis queue the agent may draw from, best first (pinned directions first; None: the loop keeps no
    # queue, the agent is free), the directions the human pinned, and what the human vetoed, with their reasons.
    ideas: list[Idea] | None = None
    pinned: tuple[str, ...] = ()
    vetoed: list[Idea] = field(default_factory=list)
    # The research memory (memory.refresh): what the session learned so far, with the human's edits; "" when none.
    memory: str = ""
    # Experiment id → its first run's training loss at equal fractions of the budget, (0..1, loss) points
    # (curves.condense): for the experiments in the history and the incumbents they were judged against.
    curves: dict[int, list[tuple[float, float]]] = field(default_factory=dict)


def _nobody_listens(text: str, done: bool) -> None:
    """The thought hook before the loop sets its own: the text goes nowhere."""


class Agent(ABC):
    """What the loop calls: ``propose``, and the hooks below, each with a default that suits an agent which has
    no use for it. A subclass calls ``super().__init__()`` and overrides only the hooks it needs.

    The loop sets ``on_thought`` and ``stop_event`` when it takes the agent; it calls ``probe()`` while the agent
    is paused by an outage and ``prefetch(ctx)`` once each experiment is committed, before it trains; a pipelining
    wrapper (pipeline.PipelinedAgent) calls ``rebase`` on the agent it wraps. (The two
    hooks the loop sets are properties, so that an agent wrapping another, pipeline.PipelinedAgent, can pass
    them through to it.)
    """

    #: The agent's name, as the journal records it with each experiment it proposed.
    name: str

    def __init__(self) -> None:
        self._on_thought: ThoughtHook = _nobody_listens
        self._stop_event = threading.Event()

    @abstractmethod
    def propose(self, ctx: Context) -> Proposal | None:
        """The next experiment, or None when the agent has nothing left to try."""

    @property
    def on_thought(self) -> ThoughtHook:
        """Where the agent sends its plan as it streams: ``on_thought(text, done)``, ``done`` ending one answer.
        The loop sets it (its listeners get the text); by default the text goes nowhere."""
        return self._on_thought

    @on_thought.setter
    def on_thought(self, hook: ThoughtHook) -> None:
        self._on_thought = hook

    @property
    def stop_event(self) -> threading.Event:
        """Set when the loop is asked to stop: an agent waits on it (``stop_event.wait(delay)``) rather than
        sleeping, so that a stop cuts its waits short. The loop sets its own; by default an event nobody sets."""
        return self._stop_event

    @stop_event.setter
    def stop_event(self, event: threading.Event) -> None:
        self._stop_event = event

    def probe(self) -> bool:
        """Can the agent work again? Called after an ``AgentPaused(retry_in=...)`` each time the wait is over; the
        loop resumes by itself once it is True. By default True: the loop simply tries again."""
        return True

    def prefetch(self, ctx: Context) -> None:
        """Start preparing the next proposal while the current experiment trains, and return at once; ``ctx`` is
        the incumbent's (the experiment's parent), with the experiment in its history as running. The next
        ``propose`` may use what was prepared. By default nothing: the agent proposes when asked."""
        return None

    def hypothesize(self, ctx: Context) -> list[Draft]:
        """The hypotheses the agent means to test next, grouped into directions, before it spends compute: the loop
        puts new ones in the queue for the human to curate (``ctx.ideas`` holds what may be drawn). By default
        none: an agent that states its hypotheses with its proposals (``Proposal.ideas``) needs no separate call."""
        return []

    def rebase(self, proposal: Proposal, ctx: Context) -> Proposal | None:
        """The same proposal, made for other files (``ctx.files``: a new incumbent, kept while the proposal was
        prepared), or None when it cannot be carried over and the agent must be asked afresh. By default None."""
        return None

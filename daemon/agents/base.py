"""The agent interface: propose the next experiment from the program, the code and the history."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..journal import Experiment
from ..workspace import Edit


class AgentError(RuntimeError):
    """The agent cannot work at all (a missing file, a missing key): the loop stops with this message."""


class AgentPaused(RuntimeError):
    """The agent cannot propose for now (its API is down, its spending cap is reached): the loop pauses.

    With ``retry_in`` seconds the loop probes again after that long (``agent.probe()`` when the agent
    has one) and resumes by itself once the agent can work; without, it waits for the human to resume.
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


class Agent(Protocol):
    """What the loop calls. Optional hooks an agent may also have, which the loop uses when present:
    ``on_thought`` (a callback the loop sets: streamed plan text), ``stop_event`` (the loop sets its stop
    flag, to cut waits short), ``probe() -> bool`` (is the agent's API answering again) and
    ``prefetch(ctx)`` (prepare the next proposal while the current experiment trains)."""

    name: str

    def propose(self, ctx: Context) -> Proposal | None:
        """The next experiment, or None when the agent has nothing left to try."""
        ...

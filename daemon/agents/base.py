"""The agent interface: propose the next experiment from the program, the code and the history."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..journal import Experiment
from ..workspace import Edit


class AgentError(RuntimeError):
    """The agent cannot work at all (a missing file, a missing key): the loop stops with this message."""


@dataclass(frozen=True)
class Proposal:
    description: str
    edit: Edit
    hypothesis: str = ""
    reasoning: str = ""
    # Agent-specific facts stored with the experiment (the sweep records the config it tried).
    meta: dict[str, Any] = field(default_factory=dict)


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


class Agent(Protocol):
    name: str

    def propose(self, ctx: Context) -> Proposal | None:
        """The next experiment, or None when the agent has nothing left to try."""
        ...

"""The hypothesis queue the human curates: what the agent means to test, grouped into directions.

Before spending compute the agent states its hypotheses (the sweep: its planned coordinates; Claude: the
``hypothesize`` tool). They wait in a queue per session, in the journal, where any client can see and shape them:
approve, veto (with a reason the agent reads), add their own, reorder, pin a direction (its entries go first) or
close one (none of its entries is drawn). The agent draws only from approved entries — or, with the default
``ideas = "not-vetoed"``, from every entry the human has not vetoed, so an unattended night still runs.

Each experiment links to the entry it tested; a direction shows its tries, keeps and total gain, and one that went
``plateau_after`` tries without a keep is flagged as a plateau.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .commands import Curate
from .journal import Journal

POLICIES = ("not-vetoed", "approved")
IDEA_STATES = ("proposed", "approved", "vetoed")
DIRECTION_STATES = ("open", "pinned", "closed")
# Decided experiments count as tries; the ones in flight (or stopped by the user) do not yet.
_DECIDED = ("keep", "discard", "crash", "timeout", "invalid", "held", "pruned")
_MAX_TEXT = 500
_MAX_DIRECTION = 60


class CurationError(ValueError):
    """A curation command that cannot be carried out (an unknown id, an empty text): the message says why."""


@dataclass(frozen=True)
class Draft:
    """A hypothesis an agent states: its direction, what it means to test, and its own name for it (no duplicates)."""

    direction: str
    text: str
    key: str | None = None


@dataclass(frozen=True)
class Idea:
    id: int
    direction: str
    text: str
    key: str | None
    source: str  # agent | human
    state: str  # proposed | approved | vetoed
    reason: str
    experiment_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Direction:
    name: str
    state: str  # open | pinned | closed
    ideas: int
    tries: int
    keeps: int
    gain: float  # total improvement of its keeps (positive: better, whatever the metric's direction)
    plateau: bool  # plateau_after tries (or more) since its last keep
    experiment_ids: tuple[int, ...] = ()


def queue(journal: Journal, tag: str) -> list[Idea]:
    """The session's queue, in its order."""
    return [Idea(id=int(r["id"]), direction=str(r["direction"]), text=str(r["text"]), key=r["key"],
                 source=str(r["source"]), state=str(r["state"]), reason=str(r["reason"] or ""),
                 experiment_ids=tuple(r["experiment_ids"])) for r in journal.ideas(tag)]


def drawable(journal: Journal, tag: str, policy: str) -> list[Idea]:
    """What the agent may draw from, best first: pinned directions' entries, then the rest, each in queue order.
    Vetoed entries and closed directions never; unapproved entries only under ``not-vetoed``."""
    states = journal.directions(tag)
    allowed = ("approved",) if policy == "approved" else ("approved", "proposed")
    open_ = [i for i in queue(journal, tag) if i.state in allowed and states.get(i.direction, "open") != "closed"]
    return sorted(open_, key=lambda i: states.get(i.direction) != "pinned")  # stable: queue order within each


def add_drafts(journal: Journal, tag: str, drafts: list[Draft], policy: str) -> list[int]:
    """The agent's hypotheses, appended to the queue (those it stated before are skipped): proposed, awaiting the
    human. Their ids, new ones only."""
    added = []
    for d in drafts:
        new = journal.add_idea(tag, direction=_direction(d.direction), text=_text(d.text), source="agent",
                               state="proposed", key=d.key)
        if new is not None:
            added.append(new)
    return added


def directions(journal: Journal, tag: str, plateau_after: int, direction: str = "minimize") -> list[Direction]:
    """Each direction's tries, keeps and total gain, in the order its first entry appears in the queue."""
    states = journal.directions(tag)
    experiments = {e.id: e for e in journal.experiments(tag)}
    sign = 1.0 if direction == "minimize" else -1.0
    counts: dict[str, int] = {}
    tested: dict[str, list[int]] = {}
    for idea in queue(journal, tag):
        counts[idea.direction] = counts.get(idea.direction, 0) + 1
        tested.setdefault(idea.direction, []).extend(idea.experiment_ids)
    result = []
    for name in [*counts, *(n for n in states if n not in counts)]:
        ids = sorted(i for i in tested.get(name, []) if i in experiments and experiments[i].status in _DECIDED)
        keeps = [i for i in ids if experiments[i].status == "keep"]
        gain = sum(-sign * d for i in keeps if (d := experiments[i].delta) is not None and math.isfinite(d))
        since_keep = len([i for i in ids if not keeps or i > keeps[-1]])
        result.append(Direction(name=name, state=states.get(name, "open"), ideas=counts.get(name, 0), tries=len(ids),
                                keeps=len(keeps), gain=gain, plateau=plateau_after > 0 and since_keep >= plateau_after,
                                experiment_ids=tuple(ids)))
    return result


def curate(journal: Journal, tag: str, command: Curate) -> str:
    """Carry out one curation command on the session's queue; a line saying what it did."""
    known = {i.id: i for i in queue(journal, tag)}

    def entry() -> Idea:
        if command.idea_id is None or command.idea_id not in known:
            raise CurationError(f"no idea #{command.idea_id} in session {tag!r}")
        return known[command.idea_id]

    match command.action:
        case "add":
            new = journal.add_idea(tag, direction=_direction(command.direction or "yours"), text=_text(command.text),
                                   source="human", state="approved")
            return f"added idea #{new} (approved)"
        case "approve" | "reopen":
            idea = entry()
            journal.decide_idea(idea.id, "approved")
            return f"idea #{idea.id} approved"
        case "veto":
            idea = entry()
            journal.decide_idea(idea.id, "vetoed", command.reason.strip()[:_MAX_TEXT])
            return f"idea #{idea.id} vetoed" + (": the agent sees your reason" if command.reason.strip() else "")
        case "move":
            idea = entry()
            if command.index is None or command.index < 0:
                raise CurationError("move needs a position: 0 is the top of the queue")
            journal.move_idea(tag, idea.id, command.index)
            return f"idea #{idea.id} moved to position {command.index + 1}"
        case "pin" | "close" | "open":
            name = _direction(command.direction)
            if name not in {i.direction for i in known.values()} | set(journal.directions(tag)):
                raise CurationError(f"no direction {name!r} in session {tag!r}")
            state = {"pin": "pinned", "close": "closed", "open": "open"}[command.action]
            journal.set_direction(tag, name, state)
            return f"direction {name!r} {state}"
    raise CurationError(f"unknown curation action {command.action!r}")


def _text(text: str) -> str:
    cleaned = " ".join(text.split())
    if not cleaned:
        raise CurationError("an idea needs a text: what to try")
    return cleaned[:_MAX_TEXT]


def _direction(name: str) -> str:
    cleaned = " ".join(name.split()).lower()
    if not cleaned:
        raise CurationError("a direction needs a name")
    return cleaned[:_MAX_DIRECTION]

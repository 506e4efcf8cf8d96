"""Early stopping: a candidate whose training loss is clearly behind the incumbent's at the same share of the budget
is stopped before its budget is spent, and recorded ``pruned`` with the evidence.

Only a candidate's first run is watched (a run the rule asked for again is near the bar: it runs to the end). The
comparison is at equal budget fractions, against the incumbent's first run's curve, with a margin in nats. Pruning
is trusted only after the session's own journal says it would not have cost a keep: over the decided candidates
whose curves it has, how often would pruning at this margin have stopped one that was then kept? Above
``MAX_LOST_KEEPS`` (or with too little history) pruning stays off, and says why.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Curve = Sequence[tuple[int, float, float]]  # (step, budget-clock seconds, train loss)

# Where along the budget a run is looked at: late enough that the warm-up is over.
FRACTIONS = (0.35, 0.6)
# Nats of training loss a candidate may trail the incumbent by at those points before it is stopped.
MARGIN = 0.25
# Decided candidates with curves the journal must hold before pruning is trusted at all.
MIN_HISTORY = 12
# Pruning is off while it would have stopped more than this share of the kept candidates.
MAX_LOST_KEEPS = 0.05


def loss_at(curve: Curve, seconds: float) -> float | None:
    """The curve's training loss at ``seconds`` of budget (linear between points); None outside the curve."""
    xs = [p[1] for p in curve]
    if not xs or seconds < xs[0] or seconds > xs[-1]:
        return None
    i = bisect.bisect_left(xs, seconds)
    if xs[i] == seconds or i == 0:
        return float(curve[i][2])
    (x0, y0), (x1, y1) = (xs[i - 1], curve[i - 1][2]), (xs[i], curve[i][2])
    return float(y0 + (y1 - y0) * (seconds - x0) / (x1 - x0)) if x1 > x0 else float(y1)


def behind(candidate: Curve, incumbent: Curve, budget: float, margin: float = MARGIN) -> dict[str, Any] | None:
    """Evidence that the candidate trails the incumbent by more than ``margin`` at every fraction it has reached;
    None while it does not (or has not reached the first fraction yet)."""
    points = []
    for fraction in FRACTIONS:
        at = fraction * budget
        mine, theirs = loss_at(candidate, at), loss_at(incumbent, at)
        if mine is None or theirs is None:
            break
        points.append({"fraction": fraction, "candidate_loss": mine, "incumbent_loss": theirs, "gap": mine - theirs})
    if not points or any(p["gap"] <= margin for p in points):
        return None
    return {"points": points, "margin": margin}


@dataclass(frozen=True)
class Decided:
    """A decided candidate, for the pruner's trust check: was it kept, and how did its first run train?"""

    kept: bool
    curve: Curve
    incumbent_curve: Curve
    budget: float


@dataclass(frozen=True)
class Trust:
    """Whether pruning may act in this session, and the numbers behind it."""

    enabled: bool
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


def trust(history: Sequence[Decided], margin: float = MARGIN) -> Trust:
    """Replay pruning on the session's decided candidates: how many keeps would it have cost?"""
    usable = [d for d in history if d.curve and d.incumbent_curve]
    kept = [d for d in usable if d.kept]
    pruned = [d for d in usable if _final(d, margin)]
    lost = [d for d in pruned if d.kept]
    evidence = {"history": len(usable), "kept": len(kept), "would_prune": len(pruned), "lost_keeps": len(lost),
                "margin": margin, "fractions": list(FRACTIONS)}
    if len(usable) < MIN_HISTORY:
        return Trust(False, f"pruning waits for {MIN_HISTORY} decided candidates with curves ({len(usable)} so far)",
                     evidence)
    rate = len(lost) / max(1, len(kept))
    evidence["lost_keep_rate"] = rate
    if rate > MAX_LOST_KEEPS:
        return Trust(False, f"pruning is off: at this margin it would have stopped {len(lost)} of {len(kept)} kept "
                            f"candidates ({rate:.0%} > {MAX_LOST_KEEPS:.0%})", evidence)
    return Trust(True, f"pruning is on: it would have stopped {len(pruned)} of {len(usable)} candidates and "
                       f"{len(lost)} of {len(kept)} kept ones", evidence)


def _final(d: Decided, margin: float) -> bool:
    """Would the watcher have stopped this run at some point of its curve?"""
    return behind(d.curve, d.incumbent_curve, d.budget, margin) is not None

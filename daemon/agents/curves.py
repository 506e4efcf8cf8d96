"""How a run trained, condensed for the agent: its training loss at equal shares of the budget.

The journal keeps each run's curve as (step, budget-clock seconds, train loss) points, one every 1/20 of the
budget or more often. The agent sees eight of them per experiment (the loss at 1/8 … 8/8 of the budget) and, in
the prompt, a one-line comparison with the incumbent the experiment was judged against: a change that learns
faster early but ends behind (or the reverse) says something its final val_bpb alone does not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from ..journal import Experiment, Journal, Run
from ..prune import loss_at

Condensed = list[tuple[float, float]]  # (fraction of the budget, 0..1; train loss)


def condense(curve: Sequence[tuple[int, float, float]], budget_s: float, points: int = 8) -> Condensed:
    """The training loss at ``points`` equal fractions of the budget (1/points … 1), linear between the curve's
    points; non-finite losses are skipped. A fraction the run did not reach is left out (a crashed or pruned run
    has a shorter curve), except that a fraction within half a step past the curve's last point (or before its
    first) takes that point's loss: the trainer reports every 1/20 of the budget, so its last report seldom falls
    on the budget's end. Empty without a curve or a budget."""
    if points < 1 or not (budget_s > 0 and math.isfinite(budget_s)):
        return []
    clean = sorted((float(elapsed), float(loss)) for _, elapsed, loss in curve
                   if math.isfinite(float(elapsed)) and math.isfinite(float(loss)))
    if not clean:
        return []
    slack = budget_s / (2 * points)
    as_curve = [(0, x, y) for x, y in clean]
    out: Condensed = []
    for k in range(1, points + 1):
        at = budget_s * k / points
        value = loss_at(as_curve, at)
        if value is None and clean[-1][0] < at <= clean[-1][0] + slack:
            value = clean[-1][1]
        elif value is None and clean[0][0] - slack <= at < clean[0][0]:
            value = clean[0][1]
        if value is not None:
            out.append((k / points, value))
    return out


def first_curve(runs: Iterable[Run]) -> list[tuple[int, float, float]]:
    """The curve of an experiment's first run that recorded one, whatever its status: a pruned or crashed run's
    curve is what it trained before it stopped."""
    return next((list(r.curve) for r in runs if r.curve), [])


def of_experiments(journal: Journal, experiments: Iterable[Experiment], budget_s: float,
                   points: int = 8) -> dict[int, Condensed]:
    """Experiment id → its first run's condensed curve, for those that have one: ``Context.curves``."""
    out: dict[int, Condensed] = {}
    for exp in experiments:
        condensed = condense(first_curve(journal.runs(exp.id)), budget_s, points)
        if condensed:
            out[exp.id] = condensed
    return out


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.0f}" if abs(fraction * 100 - round(fraction * 100)) < 1e-9 else f"{fraction * 100:.1f}"


def _shown(fractions: list[float], most: int = 4) -> list[float]:
    """At most ``most`` of the fractions, evenly spaced and ending with the last one (8 points → 25/50/75/100%)."""
    if len(fractions) <= most:
        return fractions
    step = len(fractions) / most
    return [fractions[min(len(fractions) - 1, round(step * (k + 1)) - 1)] for k in range(most)]


def _state(mine: float, theirs: float) -> str:
    """Lower loss is ahead; judged on the values as printed (three decimals), so the words agree with the numbers."""
    a, b = round(mine, 3), round(theirs, 3)
    return "ahead" if a < b else "behind" if a > b else "level"


def compare_line(candidate: Condensed, incumbent: Condensed, label: str = "incumbent") -> str:
    """One line: the candidate's loss at up to four shared fractions of the budget, the incumbent's beside it, and
    whether it was ahead (lower loss) or behind early and at the end. Empty when the candidate has no curve."""
    if not candidate:
        return ""
    mine = {round(f, 6): y for f, y in candidate}
    theirs = {round(f, 6): y for f, y in incumbent}
    common = sorted(set(mine) & set(theirs))
    if not common:
        shown = _shown(sorted(mine))
        return (f"loss at {'/'.join(_pct(f) for f in shown)}% of budget: "
                + "/".join(f"{mine[f]:.3f}" for f in shown))
    shown = _shown(common)
    text = (f"loss at {'/'.join(_pct(f) for f in shown)}% of budget: " + "/".join(f"{mine[f]:.3f}" for f in shown)
            + f" ({label} " + "/".join(f"{theirs[f]:.3f}" for f in shown) + ")")
    states = [_state(mine[f], theirs[f]) for f in shown]
    if len(shown) == 1:
        verdict = f"{states[0]} at {_pct(shown[0])}%"
    elif len(set(states)) == 1:
        verdict = {"ahead": "ahead throughout", "behind": "behind throughout", "level": "level throughout"}[states[0]]
    elif states[0] == states[-1]:
        between = "/".join(dict.fromkeys(st for st in states[1:-1] if st != states[0]))
        verdict = f"{states[0]} early and at the end, {between} in between"
    else:
        verdict = f"{states[0]} early, {states[-1]} at the end"
    last_mine, last_theirs = max(mine), max(theirs)
    if last_mine < last_theirs:
        verdict += f"; its curve stops at {_pct(last_mine)}% of budget"
    return f"{text}: {verdict}"

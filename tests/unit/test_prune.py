"""Early stopping: the comparison at equal budget fractions, and the trust check on the session's own history."""

from __future__ import annotations

from overnight.daemon import prune


def _curve(offset: float, budget: float = 10.0, points: int = 21) -> list[tuple[int, float, float]]:
    return [(i * 10, budget * i / (points - 1), 5.0 - 2.5 * i / (points - 1) + offset) for i in range(points)]


def test_loss_at_interpolates_and_knows_its_range() -> None:
    curve = [(0, 0.0, 4.0), (10, 2.0, 2.0)]
    assert prune.loss_at(curve, 1.0) == 3.0
    assert prune.loss_at(curve, 2.0) == 2.0
    assert prune.loss_at(curve, 2.5) is None and prune.loss_at([], 1.0) is None


def test_a_candidate_is_behind_only_when_it_trails_at_every_point_it_reached() -> None:
    inc = _curve(0.0)
    assert prune.behind(_curve(0.1), inc, 10.0) is None  # within the margin
    evidence = prune.behind(_curve(0.5), inc, 10.0)
    assert evidence is not None and [p["fraction"] for p in evidence["points"]] == list(prune.FRACTIONS)
    assert all(abs(p["gap"] - 0.5) < 1e-9 for p in evidence["points"])
    # Not yet at the first fraction: nothing to say.
    early = [p for p in _curve(0.5) if p[1] < 0.3 * 10]
    assert prune.behind(early, inc, 10.0) is None
    # Behind early, caught up later: not pruned once the later point is in.
    recovering = [(s, t, loss - (0.6 if t > 5 else 0.0)) for s, t, loss in _curve(0.5)]
    assert prune.behind(recovering, inc, 10.0) is None


def _decided(kept: bool, offset: float) -> prune.Decided:
    return prune.Decided(kept=kept, curve=_curve(offset), incumbent_curve=_curve(0.0), budget=10.0)


def test_pruning_waits_for_history_then_acts_only_if_it_would_not_have_cost_keeps() -> None:
    few = [_decided(False, 0.6) for _ in range(prune.MIN_HISTORY - 1)]
    assert not prune.trust(few).enabled and "waits" in prune.trust(few).reason
    safe = [*few, _decided(True, -0.1), _decided(True, 0.0)]
    trusted = prune.trust(safe)
    assert trusted.enabled and trusted.evidence["lost_keeps"] == 0 and trusted.evidence["would_prune"] == 11
    # A keep whose first run trailed by more than the margin: pruning would have lost it.
    costly = [*safe, _decided(True, 0.7)]
    refused = prune.trust(costly)
    assert not refused.enabled and "1 of 3 kept" in refused.reason

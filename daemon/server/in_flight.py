"""The experiments in flight as clients see them: several at once when runs overlap (one model scored while the next
run trains) or run in several slots.

The loop announces an experiment when it is started or queued (``ExperimentStarted``) and again when it is decided
(``ExperimentFinished``); in between its runs start, report frames and phases, and end. What a client shows as *the*
experiment in flight (``current``) is the one whose run started last — the one training — or, before any run of
them started, the one announced last. Its curve and phase are its own, never another's: the phase of a model
scored beside it, or of a candidate queued for its next run, does not belong to it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from overnight.protocol import types as t

from ..journal import Experiment

# The most points of the live curve a status carries (a client draws a few hundred at most).
LIVE_POINTS = 500
# Experiments tracked at most: a loop runs a few at once; one whose end never came (a stop cut it short) is
# forgotten once this many newer ones started, so a long session cannot grow this without bound.
MAX_TRACKED = 64


@dataclass(frozen=True, slots=True)
class Flight:
    experiment: Experiment
    runs_planned: int
    live: t.LiveRun | None = None
    phase: str | None = None
    ran: bool = False  # a run of it started (a queued candidate, recovered or re-measured, has not yet)

    @property
    def protocol_phase(self) -> t.Phase | None:
        try:
            return t.Phase(self.phase) if self.phase else None
        except ValueError:  # a phase this protocol has no name for: none shown
            return None


class InFlight:
    """Written from the loop's thread (its events), read from the server's threads: every access holds the lock,
    and readers get immutable snapshots. Kept in the order that decides ``current``: runs moved to the end as they
    start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[int, Flight] = {}

    def started(self, exp: Experiment, runs_planned: int) -> None:
        with self._lock:
            old = self._by_id.pop(exp.id, None)  # announced again: re-measured or recovered
            self._by_id[exp.id] = Flight(exp, runs_planned, t.LiveRun(experiment_id=exp.id, run=0,
                                                                     runs_planned=runs_planned, curve=[]),
                                         ran=old.ran if old is not None else False)
            while len(self._by_id) > MAX_TRACKED:
                del self._by_id[next(iter(self._by_id))]

    def run_started(self, exp_id: int, run: int) -> None:
        """A run of a tracked experiment starts: it is the current one now, with a fresh curve and no phase yet."""
        with self._lock:
            flight = self._by_id.pop(exp_id, None)
            if flight is None:
                return  # an incumbent's re-run: never announced, never current
            planned = max(flight.runs_planned, run + 1)
            self._by_id[exp_id] = replace(flight, ran=True, phase=None, live=t.LiveRun(
                experiment_id=exp_id, run=run, runs_planned=planned, curve=[]))

    def run_finished(self, exp_id: int) -> None:
        """Its run ended (measured or not): it waits for its decision or its next run, in no phase."""
        with self._lock:
            flight = self._by_id.get(exp_id)
            if flight is not None:
                self._by_id[exp_id] = replace(flight, phase=None)

    def finished(self, exp_id: int) -> None:
        with self._lock:
            self._by_id.pop(exp_id, None)

    def clear(self) -> None:
        """Nothing is in flight any more (the loop stopped or failed, or another session opened)."""
        with self._lock:
            self._by_id.clear()

    def phase(self, phase: str, exp_id: int | None) -> None:
        """A run entered a phase; one that names no experiment is the current one's."""
        with self._lock:
            if exp_id is None:
                current = _current(list(self._by_id.values()))
                exp_id = current.experiment.id if current is not None else None
            flight = self._by_id.get(exp_id) if exp_id is not None else None
            if flight is not None:
                self._by_id[flight.experiment.id] = replace(flight, phase=phase)

    def progress(self, p: t.RunProgress) -> None:
        """A training frame joins its experiment's live curve (a run of an experiment not announced, an incumbent's
        re-run, has no curve to join)."""
        with self._lock:
            flight = self._by_id.get(p.experiment_id)
            if flight is None:
                return
            live = flight.live
            if live is None or live.run != p.run:
                planned = max(flight.runs_planned, p.run + 1)
                live = t.LiveRun(experiment_id=p.experiment_id, run=p.run, runs_planned=planned, curve=[])
            curve = [*live.curve, (p.step, p.elapsed, p.train_loss)]
            if len(curve) > LIVE_POINTS:
                curve = curve[::2]  # thinned evenly, so a long run's curve keeps its shape
            self._by_id[p.experiment_id] = replace(flight, live=t.LiveRun(
                experiment_id=live.experiment_id, run=live.run, runs_planned=live.runs_planned, curve=curve))

    def snapshot(self) -> tuple[Flight | None, list[Flight]]:
        """(current, the others in flight oldest first), read at one moment."""
        with self._lock:
            flights = list(self._by_id.values())
        current = _current(flights)
        return current, [f for f in flights if f is not current]

    def current(self) -> Flight | None:
        return self.snapshot()[0]

    def all(self) -> list[Flight]:
        """Every experiment in flight, in the order runs started (announced, not yet run, ones where announced)."""
        with self._lock:
            return list(self._by_id.values())

    def phases(self) -> dict[int, t.Phase | None]:
        """Each experiment in flight's phase, as the protocol names it."""
        return {f.experiment.id: f.protocol_phase for f in self.all()}


def _current(flights: list[Flight]) -> Flight | None:
    """The one whose run started last; before any of them ran, the one announced last."""
    ran = [f for f in flights if f.ran]
    return ran[-1] if ran else (flights[-1] if flights else None)

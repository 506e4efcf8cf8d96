"""The experiments in flight as clients see them: several at once when runs overlap (one model scored while the next
run trains) or run in several slots.

The loop announces an experiment when its runs start and again when it is decided; in between its runs report
frames and phases. What a client shows as *the* experiment in flight is the one started last (the one training);
its curve and its phase are its own, never another's: the phase of a model being scored beside it does not
belong to it.
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


class InFlight:
    """Written from the loop's thread (its events), read from the server's threads: every access holds the lock,
    and readers get immutable snapshots."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[int, Flight] = {}  # in start order: the last is the current one

    def started(self, exp: Experiment, runs_planned: int) -> None:
        with self._lock:
            self._by_id.pop(exp.id, None)  # announced again (a re-measure): it is the newest now
            self._by_id[exp.id] = Flight(exp, runs_planned, t.LiveRun(experiment_id=exp.id, run=0,
                                                                     runs_planned=runs_planned, curve=[]))
            while len(self._by_id) > MAX_TRACKED:
                del self._by_id[next(iter(self._by_id))]

    def finished(self, exp_id: int) -> None:
        with self._lock:
            self._by_id.pop(exp_id, None)

    def clear(self) -> None:
        """Nothing is in flight any more (the loop stopped or failed)."""
        with self._lock:
            self._by_id.clear()

    def phase(self, phase: str, exp_id: int | None) -> None:
        """A run entered a phase; one that names no experiment (waiting for the machine) is the current one's."""
        with self._lock:
            if exp_id is None:
                exp_id = next(reversed(self._by_id), None)
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

    def current(self) -> Flight | None:
        """The experiment started last of those in flight."""
        with self._lock:
            return self._by_id[next(reversed(self._by_id))] if self._by_id else None

    def phases(self) -> dict[int, t.Phase | None]:
        """Each experiment in flight's phase, as the protocol names it."""
        with self._lock:
            flights = list(self._by_id.values())
        return {f.experiment.id: _phase(f.phase) for f in flights}

    def all(self) -> list[Flight]:
        """Every experiment in flight, oldest first."""
        with self._lock:
            return list(self._by_id.values())


def _phase(phase: str | None) -> t.Phase | None:
    try:
        return t.Phase(phase) if phase else None
    except ValueError:  # a phase this protocol has no name for: none shown
        return None

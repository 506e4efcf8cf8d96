"""What editors see when experiments overlap — a model scored while the next run trains, or runs in several slots:
each experiment keeps its own curve, phase and progress bar, and the one in flight is the one started last."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from overnight.daemon.journal import Experiment
from overnight.daemon.server.core import summary
from overnight.daemon.server.in_flight import MAX_TRACKED, InFlight
from overnight.daemon.server.progress import ExperimentProgress
from overnight.protocol import types as t


def _exp(exp_id: int, status: str = "running", val: float | None = None) -> Experiment:
    return Experiment(id=exp_id, tag="t", kind="experiment", status=status, parent_commit="a" * 40,
                      commit_sha="b" * 40, ref=None, description=f"change {exp_id}", hypothesis="", reasoning="",
                      diff="", agent="replay", meta={}, val_bpb=val, holdout_bpb=None, decided_by=None,
                      decision_reason="", evidence={}, error=None, attempts=1, created=time.time(), finished=None)


def _frame(exp_id: int, run: int, step: int, elapsed: float, loss: float = 3.0) -> t.RunProgress:
    return t.RunProgress(experiment_id=exp_id, run=run, step=step, elapsed=elapsed, budget=10.0, train_loss=loss)


def test_the_one_in_flight_is_the_one_started_last_with_its_own_curve_and_phase() -> None:
    flying = InFlight()
    flying.started(_exp(2), 3)
    flying.run_started(2, 0)
    flying.progress(_frame(2, 0, 10, 9.5))
    flying.phase("training", 2)
    flying.started(_exp(3), 3)  # the next run starts while #2's model is exported and scored
    flying.run_started(3, 0)
    flying.phase("starting", 3)
    flying.phase("evaluating", 2)
    flying.progress(_frame(3, 0, 1, 0.4))
    flying.progress(_frame(9, 0, 1, 0.4))  # an incumbent's re-run, never announced: joins nothing
    current = flying.current()
    assert current is not None and current.experiment.id == 3
    assert current.phase == "starting"  # #2's evaluation is not #3's phase
    assert current.live is not None and current.live.curve == [(1, 0.4, 3.0)]
    assert [(f.experiment.id, f.phase) for f in flying.all()] == [(2, "evaluating"), (3, "starting")]
    flying.phase("waiting", None)  # a phase that names no experiment is the current one's
    assert [(f.experiment.id, f.phase) for f in flying.all()] == [(2, "evaluating"), (3, "waiting")]
    flying.started(_exp(4), 3)  # queued (a re-measure) while #3 trains: #3 stays the current one until #4 runs
    assert flying.current().experiment.id == 3  # type: ignore[union-attr]
    flying.run_finished(3)
    flying.run_started(2, 1)  # #2's confirmation run: it trains now, with a fresh curve
    current, others = flying.snapshot()
    assert current is not None and current.experiment.id == 2 and current.live is not None
    assert current.live.run == 1 and current.live.curve == [] and current.phase is None
    assert [(f.experiment.id, f.phase) for f in others] == [(3, None), (4, None)]
    flying.finished(4)
    flying.finished(2)  # #2 decided: #3 stays in flight
    assert [f.experiment.id for f in flying.all()] == [3]
    flying.finished(3)
    assert flying.current() is None


def test_a_new_run_of_the_same_experiment_starts_a_new_curve_and_a_long_one_is_thinned() -> None:
    flying = InFlight()
    flying.started(_exp(4), 2)
    for step in range(1, 1200):
        flying.progress(_frame(4, 0, step, step / 100))
    live = flying.current().live  # type: ignore[union-attr]
    assert live is not None and 250 <= len(live.curve) <= 500 and live.curve[0][0] == 1
    assert [c[0] for c in live.curve] == sorted(c[0] for c in live.curve)
    flying.progress(_frame(4, 1, 1, 0.1))
    live = flying.current().live  # type: ignore[union-attr]
    assert live is not None and live.run == 1 and live.curve == [(1, 0.1, 3.0)] and live.runs_planned == 2


def test_experiments_whose_end_never_came_are_forgotten_not_kept_forever() -> None:
    flying = InFlight()
    for exp_id in range(1, MAX_TRACKED + 11):
        flying.started(_exp(exp_id), 1)
    ids = [f.experiment.id for f in flying.all()]
    assert len(ids) == MAX_TRACKED and ids[-1] == MAX_TRACKED + 10 and ids[0] == 11
    flying.clear()
    assert flying.all() == []


class _Client:
    """An LSP client that accepts work-done progress and records what reaches it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.client_capabilities = SimpleNamespace(window=SimpleNamespace(work_done_progress=True))
        self.work_done_progress = SimpleNamespace(create_async=self._create, begin=self._call("begin"),
                                                  report=self._call("report"), end=self._call("end"))

    async def _create(self, token: str) -> None:
        self.calls.append(("create", token, None))

    def _call(self, kind: str) -> Any:
        return lambda token, value: self.calls.append((kind, token, value))

    def of(self, exp_id: int) -> list[tuple[str, Any]]:
        return [(kind, value) for kind, token, value in self.calls if token == f"overnight-experiment-{exp_id}"]


def _started(exp_id: int, runs: int = 2) -> t.ExperimentStartedParams:
    return t.ExperimentStartedParams(experiment=summary(_exp(exp_id)), runs_planned=runs)


def test_each_experiment_in_flight_has_its_own_bar_ended_with_its_own_decision() -> None:
    client = _Client()
    bars = ExperimentProgress(client)  # type: ignore[arg-type]

    async def scenario() -> None:
        await bars.started(_started(2))
        bars.report(_frame(2, 0, 50, 10.0))  # run 1 of 2 trained: half the bar
        await bars.started(_started(3))  # overlapping: #2 is scored while #3 starts
        await bars.started(_started(3))  # announced again (a client attached mid-run): the same bar goes on
        bars.phase(2, t.Phase.EVALUATING)
        bars.report(_frame(3, 0, 5, 1.0))
        bars.finished(t.ExperimentFinishedParams(experiment=summary(_exp(2, "discard", 3.21))))
        bars.report(_frame(2, 0, 51, 10.0))  # a late frame of a decided experiment opens nothing
        bars.report(_frame(3, 0, 6, 2.0))

    asyncio.run(scenario())
    two, three = client.of(2), client.of(3)
    assert [k for k, _ in two] == ["create", "begin", "report", "report", "end"]
    assert two[2][1].percentage == 50 and two[3][1].message == "evaluating…" and two[3][1].percentage == 50
    assert two[4][1].message == "#2 discard: 3.2100 bpb"
    assert [k for k, _ in three] == ["create", "begin", "report", "report"]  # still open: #3 trains on
    assert three[-1][1].percentage == 10
    bars.end_all()  # the loop stopped
    assert client.of(3)[-1][0] == "end" and client.of(3)[-1][1].message is None


def test_a_decision_that_comes_while_the_client_creates_the_bar_leaves_no_bar_open() -> None:
    client = _Client()
    answered = asyncio.Event()

    async def slow_create(token: str) -> None:
        client.calls.append(("create", token, None))
        await answered.wait()

    client.work_done_progress.create_async = slow_create
    bars = ExperimentProgress(client)  # type: ignore[arg-type]

    async def scenario() -> None:
        starting = asyncio.create_task(bars.started(_started(7)))
        await asyncio.sleep(0.01)
        bars.finished(t.ExperimentFinishedParams(experiment=summary(_exp(7, "discard", 3.3))))  # before the answer
        answered.set()
        await starting
        await bars.started(_started(8))

    asyncio.run(scenario())
    assert [k for k, _ in client.of(7)] == ["create"]  # never begun, so nothing left open
    assert [k for k, _ in client.of(8)] == ["create", "begin"]

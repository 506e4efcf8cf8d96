"""The loop's decisions with an injected executor: the real loop, journal, git and agent, but each training run's
outcome is read from a marker in the code under test (``# FAKE val=… holdout=… ood=…``) plus seeded noise, so
held keeps, starved runs, incumbent re-runs, transfer checks and waiting for the machine are checked in seconds
and exactly."""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from overnight.daemon.agents.base import Context
from overnight.daemon.agents.replay import ReplayAgent
from overnight.daemon.cli import main
from overnight.daemon.config import load_config
from overnight.daemon.events import Event, ExperimentFinished, ExperimentStarted, Flagged, Message, PhaseChanged, TransferChecked
from overnight.daemon.executor import RunOutcome, RunRequest
from overnight.daemon.journal import Journal
from overnight.daemon.loop import Loop

from ..conftest import commit_all, write_config

TRAIN = "trainer/train.py"
_MARK = re.compile(r"# FAKE (.*)")


class FakeExecutor:
    """Outcomes from the marker in the tree's train.py; σ 0.01 of seeded noise on val, holdout and ood."""

    def __init__(self, starve_first: int = 0, seconds: float = 0.0,
                 starve_error: str = "the machine gave it too little CPU (fake)") -> None:
        self.requests: list[RunRequest] = []
        self.starve_left = starve_first
        self.starve_error = starve_error
        self.seconds = seconds  # how long each fake run takes (commands arrive while it "trains")

    def __call__(self, req: RunRequest, on_frame: Callable[[dict[str, Any]], None] = lambda f: None,
                 stop: threading.Event | None = None, on_phase: Callable[[str], None] = lambda p: None) -> RunOutcome:
        self.requests.append(req)
        on_phase("training")
        if self.seconds and stop is not None and stop.wait(self.seconds):
            return RunOutcome(status="interrupted", error="stopped by the user")
        if self.starve_left > 0:
            self.starve_left -= 1
            return RunOutcome(status="starved", error=self.starve_error)
        text = (req.tree / TRAIN).read_text()
        values = {"val": 3.0, "holdout": 3.05, "ood": 4.0}
        for found in _MARK.findall(text):
            for pair in found.split():
                key, value = pair.split("=")
                values[key] = float(value)
        curve: list[tuple[int, float, float]] = []
        if "loss_offset" in values:  # a training curve, frame by frame, the loop may stop early (pruning)
            for i in range(1, 21):
                if stop is not None and stop.is_set():
                    return RunOutcome(status="interrupted", error="stopped", curve=curve)
                point = (i * 10, req.budget * i / 20, 5.0 - 2.5 * i / 20 + values["loss_offset"])
                curve.append(point)
                on_frame({"type": "progress", "step": point[0], "elapsed": point[1], "wall": 0.0,
                          "train_loss": point[2], "tokens_per_s": 1.0})
                __import__("time").sleep(0.02)
        scale = req.budget / 2.0
        rng = random.Random(req.seed)
        noise = {k: rng.gauss(0.0, 0.01) for k in values}
        return RunOutcome(status="ok", val_bpb=values["val"] / scale ** 0.1 + noise["val"],
                          holdout_bpb=values["holdout"] / scale ** 0.1 + noise["holdout"],
                          ood_bpb=values["ood"] + noise["ood"], steps=100, cpu_seconds=req.budget,
                          # An anchored run keeps its anchor's step count; a free one calibrates its own.
                          steps_planned=req.anchor[0] if req.anchor else 100 + req.seed % 7, step_seconds=0.01,
                          curve=curve)


class RecordingAgent(ReplayAgent):
    """A replay agent that keeps every context it was given (what an agent may see)."""

    def __init__(self, path: Path) -> None:
        super().__init__(ReplayAgent.from_file(path).proposals)
        self.contexts: list[Context] = []

    def propose(self, ctx: Context) -> Any:
        self.contexts.append(ctx)
        return super().propose(ctx)


def _workspace(root: Path, proposals: list[tuple[str, str]], **config: object) -> Path:
    assert main(["init", str(root)]) == 0
    write_config(root, agent="replay", replay_file="proposals.jsonl", **config)
    commit_all(root)
    train = (root / TRAIN).read_text()
    (root / "proposals.jsonl").write_text("".join(
        json.dumps({"description": d, "files": {TRAIN: train + f"\n# FAKE {marker}\n"}}) + "\n" for d, marker in proposals))
    return root


def _run(root: Path, executor: FakeExecutor, events: list[Event] | None = None) -> tuple[Loop, RecordingAgent]:
    agent = RecordingAgent(root / "proposals.jsonl")
    loop = Loop(load_config(root), agent, listener=(events.append if events is not None else None), executor=executor)
    loop.run()
    return loop, agent


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, FakeExecutor, RecordingAgent, list[Event]]]:
    root = _workspace(tmp_path_factory.mktemp("held") / "ws", [
        ("better on val and holdout", "val=2.9 holdout=2.95"),
        ("better on val, worse on holdout", "val=2.8 holdout=3.2"),
        ("a null change", "val=2.9 holdout=2.95"),
        ("another null change", "val=2.9 holdout=2.95"),
        ("better on val, worse out of distribution", "val=2.8 holdout=2.85 ood=4.5"),
    ], baseline_runs=3, rerun_every=2)
    executor = FakeExecutor(starve_first=1)
    events: list[Event] = []
    _, agent = _run(root, executor, events)
    yield root, executor, agent, events


def _exps(root: Path) -> dict[str, Any]:
    with Journal(root / ".overnight" / "journal.db") as j:
        tag = j.latest_session()
        assert tag is not None
        return {e.description: (e, j.runs(e.id)) for e in j.experiments(tag.tag)}


def test_a_keep_whose_holdout_got_worse_is_held_for_the_human(held: Any) -> None:
    root, _, _, events = held
    exps = _exps(root)
    kept, _ = exps["better on val and holdout"]
    assert kept.status == "keep"
    h, _ = exps["better on val, worse on holdout"]
    assert h.status == "held" and "holdout got worse beyond noise" in (h.decision_reason or "")
    assert h.evidence is not None and h.evidence["holdout"]["worse"] is True
    with Journal(root / ".overnight" / "journal.db") as j:
        tag = j.latest_session()
        assert tag is not None
        incumbent = j.incumbent(tag.tag)
        flags = [f["text"] for f in j.flags(tag.tag)]
    # The branch did not advance to the held experiment: the incumbent is the later keep.
    assert incumbent is not None and incumbent.id != h.id
    assert any(f"#{h.id} is held for you" in f for f in flags)
    assert any(isinstance(e, Flagged) for e in events)


def test_an_out_of_distribution_regression_is_flagged(held: Any) -> None:
    root = held[0]
    e, _ = _exps(root)["better on val, worse out of distribution"]
    assert e.status == "keep" and e.evidence is not None
    assert "out-of-distribution regression" in e.evidence["flags"] and e.evidence["ood"]["worse"] is True


def test_a_starved_run_is_recorded_not_compared_and_rerun_with_its_seed(held: Any) -> None:
    root, executor, _, _ = held
    with Journal(root / ".overnight" / "journal.db") as j:
        baseline = j.experiments()[0]
        runs = j.runs(baseline.id)
    assert [r.status for r in runs] == ["starved", "ok", "ok", "ok"]
    assert runs[0].seed == runs[1].seed  # the same run again, not a new sample
    assert baseline.evidence is not None and len(baseline.evidence["runs"]) == 3


def test_the_incumbent_is_re_run_between_candidates(held: Any) -> None:
    root = held[0]
    kept, runs = _exps(root)["better on val and holdout"]
    # Two runs to decide it, then re-runs every second candidate while it was the incumbent.
    assert len([r for r in runs if r.status == "ok"]) >= 3
    assert len({r.seed for r in runs}) == len(runs)


def test_the_agent_never_sees_holdout_or_ood(held: Any) -> None:
    _, _, agent, _ = held
    assert agent.contexts
    for ctx in agent.contexts:
        for exp in [ctx.incumbent, *ctx.history]:
            assert exp.holdout_bpb is None and exp.ood_bpb is None
            assert not any("holdout" in k or "ood" in k for k in (exp.evidence or {}))
    from overnight.daemon.agents.prompt import build

    text = json.dumps(build(agent.contexts[-1]).messages)
    with Journal(held[0] / ".overnight" / "journal.db") as j:
        hidden = {f"{v:.4f}" for e in j.experiments() for r in j.runs(e.id) for v in (r.holdout_bpb, r.ood_bpb) if v}
        hidden |= {f"{v:.4f}" for e in j.experiments() for v in (e.holdout_bpb, e.ood_bpb) if v}
    assert hidden and not [v for v in hidden if v in text]


def test_runs_are_anchored_to_their_own_first_run_or_their_parents(held: Any) -> None:
    root, executor, _, _ = held
    with Journal(root / ".overnight" / "journal.db") as j:
        exps = j.experiments()
    by_seed = {r.seed: r for r in executor.requests}
    baseline = exps[0]
    first = by_seed[baseline.id * 100]
    assert first.anchor is None  # the session's first run sets the unit
    planned = 100 + first.seed % 7
    assert all(by_seed[baseline.id * 100 + k].anchor == (planned, 0.01) for k in (1, 2))
    # Every later run of the session inherits that step count, through parents and first runs alike.
    later = [r for r in executor.requests if r.seed >= exps[1].id * 100]
    assert later and all(r.anchor == (planned, 0.01) for r in later)


def test_every_run_was_waited_for_and_phased(held: Any) -> None:
    _, _, _, events = held
    phases = [e.phase for e in events if isinstance(e, PhaseChanged)]
    assert "training" in phases


@pytest.mark.parametrize("scored_apart", [False, True], ids=["sequential", "overlapping"])
def test_a_transfer_check_runs_every_n_keeps(tmp_path: Path, scored_apart: bool) -> None:
    # Overlapping, a run is always in flight (the next trains while the last is scored): the check still runs.
    root = _workspace(tmp_path / "ws", [("a real gain", "val=2.9 holdout=2.95"), ("a null change", "val=3.0"),
                                        ("another null change", "val=3.0")], transfer_every=1,
                      transfer_budget=4.0, transfer_scale=2.0, overlap=scored_apart)
    executor = EvaluatingExecutor(scoring=0.2) if scored_apart else FakeExecutor()
    events: list[Event] = []
    _run(root, executor, events)
    scaled = [r for r in executor.requests if r.budget == 8.0]
    assert len(scaled) == 2 and all(r.scale == 2.0 for r in scaled)
    with Journal(root / ".overnight" / "journal.db") as j:
        tag = j.latest_session()
        assert tag is not None
        (transfer,) = j.transfers(tag.tag)
    assert transfer["budget"] == 8.0 and transfer["scale"] == 2.0 and transfer["ratio"] is not None
    # The fake's gain shrinks with the budget as (budget/2)^-0.1: about 0.87 of it survives at 4x.
    assert 0.6 < transfer["ratio"] < 1.1
    assert any(isinstance(e, TransferChecked) for e in events)
    # Every experiment announced in flight is finished again (the check's two runs too): editors' bars all end.
    announced = [e.experiment.id for e in events if isinstance(e, ExperimentStarted)]
    finished = [e.experiment.id for e in events if isinstance(e, ExperimentFinished)]
    assert all(finished.count(i) >= announced.count(i) for i in set(announced)), (announced, finished)
    assert main(["-C", str(root), "results"]) == 0


def foreign_hog() -> int:
    """A process spinning on a core that is not a descendant of this one, as a neighbour's is (the loop does not
    count its own children as neighbours): started in the background by a shell that exits at once."""
    out = subprocess.run(["sh", "-c", f"{shlex.quote(sys.executable)} -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True).stdout
    return int(out)


def test_the_loop_waits_while_the_machine_is_busy(tmp_path: Path) -> None:
    """Runs wait, saying so, while other processes leave too little CPU; the wait ends when the machine has room
    (here: the share asked for drops to what is free) and a stop cuts it short."""
    import dataclasses
    import time

    root = _workspace(tmp_path / "ws", [], machine_share=1.0)
    hogs = [foreign_hog() for _ in range(3)]
    events: list[Event] = []
    executor = FakeExecutor()
    loop = Loop(load_config(root), RecordingAgent(root / "proposals.jsonl"), listener=events.append, executor=executor)
    thread = threading.Thread(target=loop.run, daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + 60
        while not any(isinstance(e, PhaseChanged) and e.phase == "waiting" for e in events):
            assert time.monotonic() < deadline, [type(e).__name__ for e in events]
            time.sleep(0.2)
        time.sleep(6)  # at least one more look at the machine
        assert executor.requests == []  # nothing ran while it waited
        assert any(isinstance(e, Message) and "waiting for the machine" in e.text for e in events)
        loop.cfg = dataclasses.replace(loop.cfg, machine_share=0.0)  # room enough now
        deadline = time.monotonic() + 60
        while len(executor.requests) < 1:
            assert time.monotonic() < deadline, "the wait never ended"
            time.sleep(0.2)
    finally:
        for hog in hogs:
            os.kill(hog, signal.SIGKILL)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert len(executor.requests) == 2  # the baseline ran once the machine had room


def test_a_stop_ends_the_wait_for_the_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import overnight.daemon.loop as loop_module

    monkeypatch.setattr(loop_module, "usable_cores", lambda: 0)  # no core is ever free: it can only wait
    root = _workspace(tmp_path / "ws", [])
    events: list[Event] = []
    executor = FakeExecutor()
    loop = Loop(load_config(root), RecordingAgent(root / "proposals.jsonl"), listener=events.append, executor=executor)
    loop.cfg = __import__("dataclasses").replace(loop.cfg, machine_share=0.5)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not any(isinstance(e, PhaseChanged) and e.phase == "waiting" for e in events):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    started = time.monotonic()
    loop.stop()
    thread.join(timeout=30)
    assert not thread.is_alive() and time.monotonic() - started < 10
    assert executor.requests == []


def test_a_candidate_far_behind_the_incumbents_curve_is_pruned_once_history_trusts_it(tmp_path: Path) -> None:
    from overnight.daemon import prune

    nulls = [(f"null {i}", "val=3.0 loss_offset=0.0") for i in range(prune.MIN_HISTORY)]
    root = _workspace(tmp_path / "ws", [*nulls, ("far behind", "val=3.5 loss_offset=0.8")],
                      baseline_runs=2, rerun_every=0)
    # The baseline's own curve: the fake's base curve (no marker: offset 0 is drawn only with the marker).
    train = (root / TRAIN).read_text()
    (root / TRAIN).write_text(train + "\n# FAKE loss_offset=0.0\n")
    commit_all(root, "the baseline draws its curve too")
    executor = FakeExecutor()
    events: list[Event] = []
    _run(root, executor, events)
    exps = _exps(root)
    pruned, runs = exps["far behind"]
    assert pruned.status == "pruned" and pruned.decided_by == "pruner", pruned.decision_reason
    assert pruned.evidence is not None and all(p["gap"] > 0.5 for p in pruned.evidence["points"])
    assert [r.status for r in runs] == ["pruned"]
    assert all(exps[name][0].status != "pruned" for name, _ in nulls)
    assert any(isinstance(e, __import__("overnight.daemon.events", fromlist=["Message"]).Message)
               and "pruning is on" in e.text for e in events)


def test_the_users_own_stops_never_give_an_experiment_up(tmp_path: Path) -> None:
    """Stopping the loop mid-run three times (more than the attempts a kill is allowed) re-runs the experiment
    on each start; it is decided on its merits, not recorded as a crash."""
    import time

    from overnight.daemon.events import RunStarted

    root = _workspace(tmp_path / "ws", [("better", "val=2.5")], baseline_runs=2, rerun_every=0)
    for _ in range(3):
        events: list[Event] = []
        executor = FakeExecutor(seconds=30)
        loop = Loop(load_config(root), RecordingAgent(root / "proposals.jsonl"), listener=events.append,
                    executor=executor)
        thread = threading.Thread(target=loop.run, kwargs={"max_experiments": 1}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        # Wait for the candidate's run (the baseline's runs are stopped the same way the first time round).
        while not any(isinstance(e, RunStarted) for e in events):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        loop.stop()
        thread.join(timeout=30)
        assert not thread.is_alive()
    events = []
    loop = Loop(load_config(root), RecordingAgent(root / "proposals.jsonl"), listener=events.append,
                executor=FakeExecutor())
    loop.run(max_experiments=1)
    journal = Journal(root / ".overnight" / "journal.db")
    statuses = [(e.kind, e.status) for e in journal.experiments(journal.latest_session().tag)]
    journal.close()
    assert ("baseline", "keep") in statuses or ("baseline", "baseline") in statuses, statuses
    assert not any(status == "crash" for _, status in statuses), statuses


def test_a_run_starved_again_and_again_is_given_up_not_waited_on_forever(tmp_path: Path) -> None:
    from overnight.daemon.loop import LoopError

    root = _workspace(tmp_path / "ws", [], baseline_runs=2, rerun_every=0)
    executor = FakeExecutor(starve_first=10)
    with pytest.raises(LoopError, match="starved 3 times"):
        _run(root, executor)
    assert len(executor.requests) == 3  # the same run, three times, then no more


def test_runs_starved_by_the_load_are_waited_out_not_given_up(tmp_path: Path) -> None:
    root = _workspace(tmp_path / "ws", [], baseline_runs=2, rerun_every=0)
    executor = FakeExecutor(starve_first=5, starve_error="its speed was measured while the machine was busy (fake)")
    loop, _ = _run(root, executor)
    assert len(executor.requests) == 5 + 2  # five starved attempts of the first run, then both runs measured
    journal = Journal(root / ".overnight" / "journal.db")
    (baseline,) = journal.experiments(journal.latest_session().tag)
    journal.close()
    assert baseline.status == "keep"


def test_the_loop_persists_each_lines_history_as_it_decides(held: Any) -> None:
    import git

    from overnight.daemon.annotate import History, relevant

    root = held[0]
    repo = git.Repo(root)
    with Journal(root / ".overnight" / "journal.db") as j:
        session = j.latest_session()
        assert session is not None
        exps = j.experiments(session.tag)
        ledger = j.line_history(session.tag, TRAIN)
    head = repo.commit(f"overnight/{session.tag}").hexsha
    assert ledger is not None and ledger.head == head
    assert ledger.covered == {e.id for e in relevant(exps, TRAIN)} and len(ledger.covered) >= 3
    assert History.touches(ledger, exps) == History(repo).lines(head, TRAIN, exps) != {}


class EvaluatingExecutor(FakeExecutor):
    """A fake whose runs say when their training ends and then take ``scoring`` seconds to be scored, recording
    (experiment, run, started, scoring began, ended) for each."""

    def __init__(self, scoring: float, starve_once: int | None = None, paced: bool = False) -> None:
        super().__init__()
        self.scoring = scoring
        # Frames as a run sends them: its calibrated step count, then its progress (100 steps of a 0.05 s pace).
        self.paced = paced
        self.spans: list[tuple[int, int, float, float, float]] = []
        self.starve_once = starve_once  # this experiment's first run is starved by the load, once

    def __call__(self, req: RunRequest, on_frame: Callable[[dict[str, Any]], None] = lambda f: None,
                 stop: threading.Event | None = None, on_phase: Callable[[str], None] = lambda p: None) -> RunOutcome:
        import time
        started = time.monotonic()
        if self.paced:
            on_frame({"type": "calibrated", "steps": 100, "step_seconds": 0.05, "anchored": True})
            for step in range(10, 101, 10):
                time.sleep(0.03)
                on_frame({"type": "progress", "step": step, "elapsed": step * 0.05, "wall": step * 0.05,
                          "train_loss": 3.0, "tokens_per_s": 1.0})
        else:
            time.sleep(0.05)  # training
        on_phase("evaluating")
        scoring = time.monotonic()
        time.sleep(self.scoring)
        if req.seed == (self.starve_once or 0) * 100:
            self.starve_once = None
            self.spans.append((-1, 0, started, scoring, time.monotonic()))
            return RunOutcome(status="starved", error="its speed was measured while the machine was busy (fake)")
        outcome = super().__call__(req, on_frame, stop, lambda p: None)
        self.spans.append((req.seed // 100, req.seed % 100, started, scoring, time.monotonic()))
        return outcome


def _overlapped(spans: list[tuple[int, int, float, float, float]]) -> list[tuple[int, int]]:
    """The runs that started while another run's model was being scored."""
    return [(exp, k) for exp, k, started, _, _ in spans
            if any(scoring <= started < ended for e, j, _, scoring, ended in spans if (e, j) != (exp, k))]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="overlap needs a core for the run and one for the scoring")
def test_the_next_run_trains_while_the_last_ones_model_is_scored_and_decides_the_same(tmp_path: Path) -> None:
    proposals = [("a gain", "val=2.8 holdout=2.85"), ("a null change", "val=3.0"), ("a loss", "val=3.2"),
                 ("another null change", "val=3.0")]
    decided: dict[bool, dict[str, str]] = {}
    for overlap in (False, True):
        root = _workspace(tmp_path / f"ws-{overlap}", proposals, overlap=overlap, baseline_runs=2, rerun_every=2)
        executor = EvaluatingExecutor(scoring=0.3)
        _run(root, executor)
        decided[overlap] = {desc: exp.status for desc, (exp, _) in _exps(root).items()}
        candidates = [s for s in executor.spans if s[0] > 1]  # the baseline's runs are not scheduled: never overlap
        if overlap:
            assert len(_overlapped(candidates)) >= 3, candidates
        else:
            assert _overlapped(executor.spans) == []
    # Here every verdict is far from the bar, so the order runs land in cannot change one.
    assert decided[True] == decided[False]
    assert decided[True]["a gain"] == "keep" and decided[True]["a loss"] == "discard"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="overlap needs a core for the run and one for the scoring")
def test_a_run_starved_by_the_load_runs_again_alone(tmp_path: Path) -> None:
    root = _workspace(tmp_path / "ws", [("a null change", "val=3.0"), ("another", "val=3.0"), ("a third", "val=3.0")],
                      baseline_runs=2, overlap=True)
    executor = EvaluatingExecutor(scoring=0.3, starve_once=3)
    _run(root, executor)
    # Its measured run (the starved attempt is recorded as -1) started while nothing else was being scored...
    assert any(s[:2] == (3, 0) for s in executor.spans) and (3, 0) not in _overlapped(executor.spans)
    # ... while the others overlapped as usual.
    assert _overlapped([s for s in executor.spans if s[0] > 1 and s[:2] != (3, 0)])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="overlap needs a core for the run and one for the scoring")
def test_the_next_run_starts_a_start_up_before_the_last_ones_training_ends(tmp_path: Path) -> None:
    # The paced runs report 100 steps at 0.05 s: 2 s (the start-up assumed before one was measured) remain at step 60.
    root = _workspace(tmp_path / "ws", [("a null change", "val=3.0"), ("another", "val=3.0"), ("a third", "val=3.0")],
                      baseline_runs=2, overlap=True)
    executor = EvaluatingExecutor(scoring=0.2, paced=True)
    _run(root, executor)
    spans = [s for s in executor.spans if s[0] > 1]
    early = [(b[0], b[1]) for b in spans for a in spans if a is not b and a[2] < b[2] < a[3]]
    assert early, spans  # started while another run was still in its training loop


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="overlap needs a core for the run and one for the scoring")
def test_a_winner_started_before_a_keep_it_did_not_see_is_measured_again_on_it(tmp_path: Path) -> None:
    """Overlapping, the next candidate starts on the incumbent of its time, before the last one is decided; when that
    one is kept, a win of the next is no keep: its change goes onto the new incumbent and is measured there."""
    root = _workspace(tmp_path / "ws", [], baseline_runs=2, overlap=True)
    train = (root / TRAIN).read_text()
    (root / "proposals.jsonl").write_text("".join(json.dumps({"description": d, "files": {TRAIN: text}}) + "\n" for d, text in [
        # Apart in the file, so they merge; the fake reads the last marker: the merge measures as the bigger gain.
        ("a gain at the top", "# FAKE val=2.8 holdout=2.85\n" + train),
        ("a bigger gain at the end", train + "\n# FAKE val=2.6 holdout=2.65\n"),
    ]))
    executor = EvaluatingExecutor(scoring=0.4)
    _run(root, executor)
    with Journal(root / ".overnight" / "journal.db") as j:
        session = j.latest_session()
        assert session is not None
        exps = {e.description: e for e in j.experiments(session.tag) if e.kind == "experiment"}
    first, second = exps["a gain at the top"], exps["a bigger gain at the end"]
    assert first.status == "keep" and second.parent_commit == first.parent_commit  # started before #2's keep
    assert second.status == "discard" and f"#{first.id} was kept meanwhile" in (second.decision_reason or "")
    again = exps[f"a bigger gain at the end (re-measured on #{first.id})"]
    assert again.meta["remeasures"] == second.id and again.parent_commit == first.commit_sha
    assert again.status == "keep" and again.val_bpb is not None and again.val_bpb < first.val_bpb  # type: ignore[operator]

"""One owner of the loop's state: clients' commands go through the loop's own thread, which answers with the state
they produced. Many clients at once: one loop, one writer, a consistent journal. (The real loop, journal and git;
an injected executor whose runs take a second, so commands arrive while a run "trains".)"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from overnight.daemon.commands import Pause, Redirect, Resume, Stop
from overnight.daemon.config import load_config
from overnight.daemon.events import Event, StateChanged
from overnight.daemon.journal import Journal
from overnight.daemon.loop import Loop
from overnight.daemon.server.core import DaemonCore

from .test_loop_decisions import FakeExecutor, RecordingAgent, _workspace


def _until(what: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.timeout(180)
def test_a_pause_mid_run_answers_pausing_at_once_and_pauses_after_the_experiment(tmp_path: Path) -> None:
    root = _workspace(tmp_path / "ws", [(f"null {i}", "val=3.0") for i in range(6)])
    events: list[Event] = []
    loop = Loop(load_config(root), RecordingAgent(root / "proposals.jsonl"), listener=events.append,
                executor=FakeExecutor(seconds=1.0))
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    _until("a candidate in flight", lambda: loop.state == "running" and loop.current_id is not None
           and loop.current_id > 1)
    in_flight = loop.current_id
    started = time.monotonic()
    ack = loop.submit(Pause("let me look"))
    assert time.monotonic() - started < 1.0  # answered while the run trains, not after it
    assert ack.state == "pausing" and ack.message == f"pausing after #{in_flight}"
    _until("paused", lambda: loop.state == "paused")
    with Journal(root / ".overnight" / "journal.db") as j:
        after_pause = len(j.experiments())
        assert j.experiment(in_flight) is not None and j.experiment(in_flight).is_final  # type: ignore[union-attr]
    time.sleep(2.5)
    with Journal(root / ".overnight" / "journal.db") as j:
        assert len(j.experiments()) == after_pause  # nothing new starts while paused
        assert any(f["kind"] == "pause" and f["text"] == "let me look" for f in j.feedback(j.experiments()[0].tag))
    assert loop.submit(Resume()).message == "resuming"
    _until("running again", lambda: loop.state in ("running", "proposing"))
    assert loop.submit(Stop(now=True)).state == "stopping"
    thread.join(timeout=60)
    assert not thread.is_alive()
    states = [e.state for e in events if isinstance(e, StateChanged)]
    assert states.index("pausing") < states.index("paused")


@pytest.mark.timeout(180)
def test_many_clients_at_once_one_loop_one_writer_a_consistent_journal(tmp_path: Path) -> None:
    root = _workspace(tmp_path / "ws", [(f"null {i}", "val=3.0") for i in range(30)])
    core = DaemonCore(load_config(root), RecordingAgent(root / "proposals.jsonl"), executor=FakeExecutor(seconds=0.3))
    core.start(broadcast=lambda method, params: None)
    _until("the session", lambda: core.tag is not None and core.loop.state in ("running", "proposing"))
    threads_before = {t.name for t in threading.enumerate()}
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            for k in range(5):
                match (i + k) % 4:
                    case 0:
                        core.loop.submit(Pause(f"client {i}"))
                    case 1:
                        core.resume()
                    case 2:
                        core.loop.submit(Redirect(f"try idea {i}.{k}"))
                    case _:
                        core.status()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(client, range(8)))
    assert errors == []
    core.resume()
    loops = [t for t in threading.enumerate() if t.name == "overnight-loop"]
    assert len(loops) == 1, threads_before
    core.stop()
    db = sqlite3.connect(root / ".overnight" / "journal.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    redirects = db.execute("SELECT COUNT(*) FROM feedback WHERE kind='redirect'").fetchone()[0]
    assert redirects == 10  # every acknowledged redirect is in the journal, once
    db.close()


@pytest.mark.timeout(180)
def test_two_clients_resuming_a_finished_loop_start_one_loop(tmp_path: Path) -> None:
    root = _workspace(tmp_path / "ws", [("one", "val=3.0")])
    core = DaemonCore(load_config(root), RecordingAgent(root / "proposals.jsonl"), executor=FakeExecutor())
    core.start(broadcast=lambda method, params: None)
    _until("the session to end", lambda: core.finished.is_set(), 120)
    barrier = threading.Barrier(8)

    def resume() -> None:
        barrier.wait()
        core.resume()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: resume(), range(8)))
    loops = [t for t in threading.enumerate() if t.name == "overnight-loop" and t.is_alive()]
    assert len(loops) <= 1
    core.stop()


@pytest.mark.timeout(180)
def test_a_new_budget_after_the_loop_ended_opens_its_session_paused(tmp_path: Path) -> None:
    """The agent had nothing more to propose: the loop ended, the daemon did not. A new budget still opens its session
    (before, it was noted by a loop that would never carry it out); nothing runs until the user resumes."""
    root = _workspace(tmp_path / "ws", [("one", "val=3.0")])
    events: list[tuple[str, Any]] = []
    core = DaemonCore(load_config(root), RecordingAgent(root / "proposals.jsonl"), executor=FakeExecutor())
    core.start(broadcast=lambda method, params: events.append((method, params)))
    _until("the session to end", lambda: core.finished.is_set(), 120)
    old = core.status()
    assert old.state == "stopped" and old.tag
    tag = core.set_budget(3.0)
    assert tag == f"{old.tag}-3s"
    _until("the new session, paused", lambda: core.status().tag == tag and core.status().state == "paused")
    now = core.status()
    assert now.budget == 3.0 and "resume to measure its baseline" in (now.message or "")
    time.sleep(1.0)
    with Journal(root / ".overnight" / "journal.db") as j:
        assert j.session(tag) is not None and j.baseline(tag) is None  # nothing ran: a budget is not a resume
    core.resume()
    _until("its baseline", lambda: core.journal.baseline(tag) is not None and core.journal.baseline(tag).is_final, 120)
    core.stop()


@pytest.mark.timeout(180)
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="overlap needs a core for the run and one for the scoring")
def test_editors_see_each_overlapping_experiment_with_its_own_phase(tmp_path: Path) -> None:
    """While one model is scored the next run trains: the status names the one started last as current, with its
    own phase, and the one being scored beside it (protocol 1.5's alsoInFlight)."""
    from .test_loop_decisions import EvaluatingExecutor

    root = _workspace(tmp_path / "ws", [(f"null {i}", "val=3.0") for i in range(4)], baseline_runs=2, overlap=True)
    statuses: list[Any] = []
    core = DaemonCore(load_config(root), RecordingAgent(root / "proposals.jsonl"), executor=EvaluatingExecutor(scoring=0.4))
    core.start(broadcast=lambda method, params: statuses.append(params) if method == "overnight/loopStateChanged" else None)
    _until("the session to end", lambda: core.finished.is_set(), 150)
    core.stop()
    both = [s for s in statuses if s.also_in_flight]
    assert both, "never saw two experiments in flight"
    for s in both:
        assert s.current is not None and s.current.id not in {f.experiment.id for f in s.also_in_flight}
    # The one being scored shows as evaluating while the current one is in a phase of its own; the current one is
    # never the one scored while another trains.
    assert any(f.phase == "evaluating" and s.phase != "evaluating" for s in both for f in s.also_in_flight)
    assert not [s for s in both if s.phase == "evaluating" and any(f.phase == "training" for f in s.also_in_flight)]
    assert statuses[-1].also_in_flight is None and statuses[-1].current is None


@pytest.mark.timeout(180)
def test_a_new_budget_after_a_stop_mid_experiment_leaves_it_to_its_session(tmp_path: Path) -> None:
    """Stopped now with a candidate in flight, then a new budget: the new session opens paused; the candidate stays
    unfinished in its own session (resumed with it), never run at the old budget nor in the new session."""
    root = _workspace(tmp_path / "ws", [(f"null {i}", "val=3.0") for i in range(4)], baseline_runs=2)
    executor = FakeExecutor(seconds=1.0)
    core = DaemonCore(load_config(root), RecordingAgent(root / "proposals.jsonl"), executor=executor)
    core.start(broadcast=lambda method, params: None)
    _until("a candidate in flight", lambda: (core.loop.current_id or 0) > 1 and core.loop.state == "running")
    stopped = core.loop.current_id
    core.loop.submit(Stop(now=True))
    _until("the loop to stop", lambda: core.finished.is_set(), 60)
    old = core.status()
    runs_before = len(executor.requests)
    tag = core.set_budget(3.0)
    _until("the new session, paused", lambda: core.status().tag == tag and core.status().state == "paused")
    time.sleep(1.0)
    assert len(executor.requests) == runs_before  # nothing ran: not the old candidate, not a baseline
    assert core.status().current is None and core.status().also_in_flight is None
    with Journal(root / ".overnight" / "journal.db") as j:
        assert [e.id for e in j.unfinished(str(old.tag))] == [stopped]
        assert j.experiments(tag) == []
    core.resume()  # the new session's baseline, then its own candidates: never the old session's
    _until("a candidate of the new session decided", lambda: any(
        e.kind == "experiment" and e.is_final for e in core.journal.experiments(tag)), 120)
    core.stop()
    assert not [r for r in executor.requests[runs_before:] if r.seed // 100 == stopped]
    with Journal(root / ".overnight" / "journal.db") as j:
        assert [e.id for e in j.unfinished(str(old.tag))] == [stopped]

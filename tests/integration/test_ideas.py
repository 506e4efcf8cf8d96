"""The hypothesis queue the human curates: the sweep states its coordinates, humans approve, veto, add, move, pin and
close — from two clients at once — and the loop draws only what the queue allows. (The real loop, journal, git and
sweep agent; an injected executor, so each run takes milliseconds.)"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from overnight.daemon import ideas
from overnight.daemon.agents.sweep import SweepAgent, direction_of
from overnight.daemon.cli import main
from overnight.daemon.commands import Curate
from overnight.daemon.config import load_config
from overnight.daemon.journal import Journal
from overnight.daemon.loop import Loop
from overnight.daemon.server.core import DaemonCore
from overnight.protocol import types as t

from ..conftest import commit_all, write_config
from .test_loop_decisions import FakeExecutor

TRAIN = "trainer/train.py"


def _until(what: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _sweep_workspace(root: Path, **config: object) -> Path:
    assert main(["init", str(root)]) == 0
    write_config(root, agent="sweep", **config)
    commit_all(root)
    return root


def _stepped(description: str) -> set[str]:
    """The queue keys of a sweep experiment's steps: "LR 0.003 → 0.006 (×2)" is sweep:LR:up."""
    keys = set()
    for name, old, new in re.findall(r"([A-Z][A-Z0-9_]*) (\S+) → (\S+)", description):
        keys.add(f"sweep:{name}:{'up' if float(new) > float(old) else 'down'}")
    return keys


@pytest.mark.timeout(180)
def test_only_approved_ideas_are_drawn_and_an_approval_resumes_the_loop(tmp_path: Path) -> None:
    root = _sweep_workspace(tmp_path / "ws", ideas="approved")
    loop = Loop(load_config(root), SweepAgent(exclude=("COMPILE", "USE_BF16", "REPORT_EVERY_S")),
                executor=FakeExecutor())
    thread = threading.Thread(target=loop.run, kwargs={"max_experiments": 2}, daemon=True)
    thread.start()
    _until("the loop to wait for approvals", lambda: loop.state == "paused", 120)
    assert "approve an idea" in loop.state_message
    with Journal(root / ".overnight" / "journal.db") as j:
        tag = j.experiments()[0].tag
        queue = ideas.queue(j, tag)
        assert queue and all(i.state == "proposed" and i.source == "agent" for i in queue)
        assert [e.kind for e in j.experiments()] == ["baseline"]  # nothing spent on an unapproved idea
        chosen = next(i for i in queue if i.key == "sweep:LR:up")
    assert loop.submit(Curate("approve", idea_id=chosen.id)).message == f"idea #{chosen.id} approved"
    thread.join(timeout=120)
    assert not thread.is_alive()
    with Journal(root / ".overnight" / "journal.db") as j:
        tried = [e for e in j.experiments(tag) if e.kind == "experiment"]
        assert len(tried) == 2
        assert all(e.idea_id == chosen.id and _stepped(e.description) == {"sweep:LR:up"} for e in tried)
        assert ideas.queue(j, tag)[[i.id for i in ideas.queue(j, tag)].index(chosen.id)].experiment_ids == tuple(
            e.id for e in tried)


@pytest.mark.timeout(240)
def test_two_clients_curate_at_once_and_the_loop_draws_only_what_the_queue_allows(tmp_path: Path) -> None:
    root = _sweep_workspace(tmp_path / "ws", plateau_after=3)
    core = DaemonCore(load_config(root), SweepAgent(exclude=("COMPILE", "USE_BF16", "REPORT_EVERY_S")),
                      executor=FakeExecutor(seconds=0.2))
    sent: list[tuple[str, object]] = []
    core.start(broadcast=lambda method, params: sent.append((method, params)))
    _until("the queue", lambda: core.tag is not None and bool(core.ideas().ideas), 120)
    core.loop.pause("curating")
    _until("paused", lambda: core.loop.state == "paused", 60)
    queue = core.ideas()
    optimizer = [i.id for i in queue.ideas if i.direction == "optimizer"]
    assert optimizer and {i.direction for i in queue.ideas} >= {"optimizer", "model size"}
    errors: list[BaseException] = []

    def first_client() -> None:  # vetoes the optimizer and closes the model size
        try:
            for idea_id in optimizer:
                core.curate(Curate("veto", idea_id=idea_id, reason="not the optimizer tonight"))
            core.curate(Curate("close", direction="model size"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def second_client() -> None:  # adds a setting of its own, moves it to the top and pins a direction
        try:
            for _ in range(3):
                core.status()
            added = core.curate(Curate("add", text="SEQ_LEN = 96", direction="batch and context"))
            mine = next(i for i in added.ideas if i.source == "human")
            core.curate(Curate("move", idea_id=mine.id, index=0))
            core.curate(Curate("pin", direction="batch and context"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    with ThreadPoolExecutor(2) as pool:
        for f in [pool.submit(first_client), pool.submit(second_client)]:
            f.result()
    assert errors == []
    with pytest.raises(Exception, match="no idea #999999"):
        core.curate(Curate("approve", idea_id=999999))
    after = core.ideas()
    assert after.ideas[0].source == "human" and after.ideas[0].text == "SEQ_LEN = 96"  # moved to the top
    assert {d.name: d.state.value for d in after.directions}["model size"] == "closed"
    assert all(i.state.value == "vetoed" and i.reason == "not the optimizer tonight"
               for i in after.ideas if i.id in optimizer)
    assert any(m == t.OVERNIGHT_IDEAS_CHANGED for m, _ in sent)  # every client heard of the changes
    seen_before = {e.id for e in core.journal.experiments(core.tag)}
    core.resume()
    _until("six new experiments", lambda: len(core.journal.experiments(core.tag)) >= len(seen_before) + 6, 180)
    core.loop.pause("done")
    _until("paused again", lambda: core.loop.state == "paused", 60)
    new = [e for e in core.journal.experiments(core.tag) if e.id not in seen_before and e.kind == "experiment"]
    final, flags = core.ideas(), core.journal.flags(core.tag)
    core.stop()
    assert new[0].description == "SEQ_LEN 64 → 96 (×1.5)"  # the human's setting, carried out first
    assert new[0].idea_id == after.ideas[0].id
    for e in new:
        for key in _stepped(e.description):
            name = key.split(":")[1]
            assert direction_of(name) not in ("optimizer", "model size"), e.description
    # The pinned direction's entries come before any other's while they last.
    pinned = [e for e in new if e.idea_id is not None and any(
        i.id == e.idea_id and i.direction == "batch and context" for i in after.ideas)]
    assert pinned and new.index(pinned[-1]) == len(pinned) - 1
    # A direction with plateau_after tries and no keep is flagged (the fake runs are all nulls).
    plateaued = [d for d in final.directions if d.plateau]
    assert plateaued and all(d.keeps == 0 and d.tries >= 3 for d in plateaued)
    assert any("plateau" in f["text"] for f in flags)


def test_curation_errors_name_the_problem(tmp_path: Path) -> None:
    from overnight.daemon.journal import Session

    j = Journal(tmp_path / "j.db")
    j.create_session(Session("s", "overnight/s", "0" * 40, {}, {}, 0.0))
    first = j.add_idea("s", direction="optimizer", text="raise LR", source="agent", state="proposed", key="k1")
    assert j.add_idea("s", direction="optimizer", text="raise LR again", source="agent", state="proposed", key="k1") is None
    for command, message in [
        (Curate("approve", idea_id=12345), "no idea #12345"),
        (Curate("add", text="   "), "needs a text"),
        (Curate("pin", direction="nowhere"), "no direction 'nowhere'"),
        (Curate("move", idea_id=first, index=-1), "move needs a position"),
        (Curate("frobnicate"), "unknown curation action"),
    ]:
        with pytest.raises(ideas.CurationError, match=re.escape(message)):
            ideas.curate(j, "s", command)
    second = ideas.curate(j, "s", Curate("add", text="cosine schedule", direction="Schedule  Shape"))
    assert second.startswith("added idea #")
    assert [i.direction for i in ideas.queue(j, "s")] == ["optimizer", "schedule shape"]  # names normalised
    assert [i.id for i in ideas.drawable(j, "s", "approved")] == [ideas.queue(j, "s")[1].id]  # the human's only
    assert [i.id for i in ideas.drawable(j, "s", "not-vetoed")] == [i.id for i in ideas.queue(j, "s")]
    j.close()


@pytest.mark.timeout(120)
def test_the_cli_curates_without_a_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _sweep_workspace(tmp_path / "ws")
    Loop(load_config(root), SweepAgent(exclude=("COMPILE", "USE_BF16", "REPORT_EVERY_S")),
         executor=FakeExecutor()).run(max_experiments=1)
    capsys.readouterr()
    assert main(["-C", str(root), "ideas"]) == 0
    listing = capsys.readouterr().out
    assert "optimizer" in listing and "raising LR" in listing and "tries" in listing
    with Journal(root / ".overnight" / "journal.db") as j:
        tag = j.experiments()[0].tag
        target = ideas.queue(j, tag)[-1]
    assert main(["-C", str(root), "ideas", "veto", str(target.id), "--reason", "too slow"]) == 0
    assert f"vetoed #{target.id}" in capsys.readouterr().out
    assert main(["-C", str(root), "ideas", "add", "LR = 0.002", "--direction", "optimizer"]) == 0
    assert main(["-C", str(root), "ideas", "move", str(target.id), "0"]) == 1
    assert "positions start at 1" in capsys.readouterr().err
    assert main(["-C", str(root), "ideas", "approve", "424242"]) == 1
    assert "no idea #424242" in capsys.readouterr().err
    with Journal(root / ".overnight" / "journal.db") as j:
        queue = ideas.queue(j, tag)
        assert next(i for i in queue if i.id == target.id).reason == "too slow"
        assert queue[-1].text == "LR = 0.002" and queue[-1].source == "human" and queue[-1].state == "approved"


@pytest.mark.timeout(180)
def test_with_approved_ideas_only_an_unlinked_proposal_never_runs_and_an_insistent_agent_pauses_the_loop(
        tmp_path: Path) -> None:
    from .test_loop_decisions import RecordingAgent, _workspace

    root = _workspace(tmp_path / "ws", [(f"unlisted {i}", "val=2.9") for i in range(5)], ideas="approved")
    loop = Loop(load_config(root), RecordingAgent(root / "proposals.jsonl"), executor=FakeExecutor())
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    _until("the loop to pause", lambda: loop.state == "paused", 120)
    assert "does not allow" in loop.state_message and "no approved idea" in loop.state_message
    loop.stop()
    thread.join(timeout=60)
    with Journal(root / ".overnight" / "journal.db") as j:
        assert [e.kind for e in j.experiments()] == ["baseline"]  # nothing unapproved was trained


def test_a_new_session_keeps_the_humans_curation(tmp_path: Path) -> None:
    from overnight.daemon.journal import Session

    j = Journal(tmp_path / "j.db")
    for tag in ("old", "new"):
        j.create_session(Session(tag, f"overnight/{tag}", "0" * 40, {}, {}, 0.0))
    vetoed = j.add_idea("old", direction="model size", text="deeper", source="agent", state="proposed", key="k-depth")
    assert vetoed is not None
    j.decide_idea(vetoed, "vetoed", "too slow")
    j.add_idea("old", direction="yours", text="cosine schedule", source="human", state="approved")
    j.set_direction("old", "model size", "closed")
    j.add_idea("new", direction="model size", text="deeper", source="agent", state="proposed", key="k-depth")
    j.copy_ideas("old", "new")
    new = {i.text: i for i in ideas.queue(j, "new")}
    # The entry the new session had already (its key) stays as it is; the human's idea and the closed direction carry.
    assert new["deeper"].state == "proposed" and new["cosine schedule"].state == "approved"
    assert j.directions("new") == {"model size": "closed"}
    assert [i.text for i in ideas.drawable(j, "new", "not-vetoed")] == ["cosine schedule"]
    j.close()


def test_a_prepared_proposal_is_dropped_when_the_queue_changed() -> None:
    from overnight.daemon.agents.base import Agent, Context, Proposal
    from overnight.daemon.agents.pipeline import PipelinedAgent
    from overnight.daemon.ideas import Idea
    from overnight.daemon.workspace import Edit

    from ..fakes.context import context

    class Counting(Agent):
        name = "counting"

        def __init__(self) -> None:
            super().__init__()
            self.asked = 0

        def propose(self, ctx: Context) -> Proposal | None:
            self.asked += 1
            return Proposal(f"p{self.asked}", Edit(files=(("trainer/train.py", "x = 1\n"),)))

    inner = Counting()
    agent = PipelinedAgent(inner)
    open_idea = Idea(1, "optimizer", "raise LR", "k", "agent", "proposed", "")
    agent.prefetch(context(ideas=[open_idea]))
    same = agent.propose(context(ideas=[open_idea]))
    assert same is not None and same.description == "p1"  # unchanged queue: the prepared one is used
    agent.prefetch(context(ideas=[open_idea]))
    vetoed = Idea(1, "optimizer", "raise LR", "k", "agent", "vetoed", "no")
    fresh = agent.propose(context(ideas=[], vetoed=[vetoed]))
    assert fresh is not None and fresh.description == "p3" and inner.asked == 3  # asked afresh

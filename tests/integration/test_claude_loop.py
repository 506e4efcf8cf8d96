"""The Claude agent in a real loop: real two-second training runs, the real SDK, a fake Messages API.

One module-scoped session serves every test (it is the slow part: about ten real runs).

One session walks through what an API-driven night meets: a 429 before the first answer, a kept
proposal, a prepared (pipelined) proposal rebased onto the kept incumbent, a repair turn, an answer
still invalid after its repair, a 500 and a cut stream retried, and an outage that pauses the loop
until the API answers its probe again. A second, short start hits the spending cap.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overnight.daemon.agents import make_agent
from overnight.daemon.agents.cost import Usage
from overnight.daemon.cli import main
from overnight.daemon.config import load_config
from overnight.daemon.events import Event, Message, StateChanged, Thought
from overnight.daemon.journal import Experiment, Journal
from overnight.daemon.loop import Loop, Summary

from ..conftest import commit_all, write_config
from ..fakes.anthropic_server import Error, FakeAnthropic, Reply, edit, propose

TRAIN = "trainer/train.py"
BAD_LR, GOOD_LR = "LR = 1e-5", "LR = 3e-3"
MATH = "import math  # noqa: E402"


def crash(tag: str) -> Reply:
    """A proposal whose run fails at once: the experiment costs seconds, not a budget."""
    return Reply(text=f"Plan {tag}.", tools=[edit(TRAIN, MATH, f"{MATH}\nraise SystemExit('{tag}')"),
                                             propose(f"crash {tag}")])


@dataclass
class Session:
    root: Path
    summary: Summary
    events: list[Event]
    exps: list[Experiment]
    fake: FakeAnthropic
    requests: int


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture(scope="module")
def key() -> Iterator[None]:
    before = os.environ.get("ANTHROPIC_API_KEY")
    os.environ["ANTHROPIC_API_KEY"] = "sk-fake"
    yield
    if before is None:
        del os.environ["ANTHROPIC_API_KEY"]
    else:
        os.environ["ANTHROPIC_API_KEY"] = before


def _claude_config(root: Path, url: str, **extra: object) -> None:
    settings = {"base_url": url, "model": "claude-sonnet-4-6", "timeout_s": 2.0, "max_retries": 2, "retry_base_s": 0.05,
                "retry_max_s": 0.2, "probe_interval_s": 0.3, "repair_turns": 1, **extra}
    lines = ["[claude]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in settings.items()]
    with (root / "overnight.toml").open("a") as fh:
        fh.write("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory, fake: FakeAnthropic, key: None) -> Session:
    root = tmp_path_factory.mktemp("claude") / "ws"
    assert main(["init", str(root)]) == 0
    # grace: a loaded CI box is slow, not broken. overlap off: the scripted answers follow the sequential pipeline,
    # where the proposal written while #2 trains is rebased onto #2's keep before it runs (with overlap it starts
    # before #2 is decided, on #1, and a win would be measured again on #2: test_loop_decisions covers that).
    write_config(root, agent="claude", grace=60.0, overlap=False)
    _claude_config(root, fake.url)
    train = root / TRAIN
    train.write_text(train.read_text().replace(GOOD_LR, BAD_LR, 1))
    commit_all(root)
    down = Error(529, "overloaded_error", "Overloaded", probe_failures=2)
    fake.add(
        Error(429, "rate_limit_error", retry_after=0),                                    # retried
        Reply(text="The LR is far too small; restore it.", tools=[edit(TRAIN, BAD_LR, GOOD_LR), propose("LR 1e-5 → 3e-3")]),
        crash("rebased"),                                    # prefetched while #2 trains; #2 is kept: rebased
        Reply(text="typo", tools=[edit(TRAIN, "import maths", "x"), propose("bad")]),      # prefetched while #3 trains…
        crash("repaired"),                                                                 # …repaired in one turn
        Reply(text="typo", tools=[edit(TRAIN, "nope", "x"), propose("bad")]),             # prefetched while #4 trains…
        Reply(text="typo", tools=[edit(TRAIN, "nope", "x"), propose("bad")]),             # …still bad: #5 invalid
        Error(500), Reply(text="cut off mid-", drop_after=4),                             # retried
        crash("after retries"),                                                            # #6
        down, down, down,                                    # prefetch while #6 trains: the API is down
        down, down, down,                                    # the fresh ask for #7 too: the loop pauses
        crash("after the outage"),                           # the probe answered: #7
    )
    cfg = load_config(root)
    events: list[Event] = []
    loop = Loop(cfg, make_agent(cfg), listener=events.append)

    def exhausted(body: object) -> Error:
        loop.stop()  # the script is off: fail fast instead of probing and re-asking until the timeout
        return Error(400, "invalid_request_error", "the fake's script is exhausted")

    fake.responder = exhausted
    summary = loop.run(max_experiments=6)
    fake.responder = None
    with Journal(cfg.journal_path) as journal:
        exps = journal.experiments(summary.tag)
    return Session(root, summary, events, exps, fake, len(fake.requests))


def test_the_session_ran_every_proposal(session: Session) -> None:
    statuses = [(e.id, e.status, e.description, e.error and e.error[:200], e.meta.get("pipelined")) for e in session.exps]
    assert [s[:2] for s in statuses[:3]] == [(1, "keep"), (2, "keep"), (3, "crash")], statuses
    assert [e.status for e in session.exps[3:]] == ["crash", "invalid", "crash", "crash"]
    assert session.summary.stopped == "reached --max-experiments 6"
    assert session.requests == 17  # every scripted answer consumed; nothing asked twice, nothing left over


def test_kept_proposal_carries_plan_hypothesis_and_cost(session: Session) -> None:
    kept = session.exps[1]
    assert kept.description == "LR 1e-5 → 3e-3" and kept.reasoning == "The LR is far too small; restore it."
    assert kept.hypothesis == "it should help" and kept.meta["model"] == "claude-sonnet-4-6"
    usage = Usage.from_dict(kept.meta["usage"])
    assert usage.requests == 1 and usage.cost_usd > 0 and usage.cache_creation_input_tokens > 0


def test_pipelining_prefetched_rebased_and_reused(session: Session) -> None:
    by_desc = {e.description: e for e in session.exps}
    assert by_desc["crash rebased"].meta["pipelined"] == "rebased"
    # Written against #1's files while #2 trained, applied on #2 (kept): its parent is #2's commit.
    assert by_desc["crash rebased"].parent_commit == session.exps[1].commit_sha
    assert "raise SystemExit('rebased')" in by_desc["crash rebased"].diff
    assert by_desc["crash repaired"].meta["pipelined"] == "prefetched" and by_desc["crash repaired"].meta["repairs"] == 1
    # The prompt of a prefetch shows the experiment that is training as running.
    prefetch_prompt = session.fake.requests[2]["messages"][0]["content"][1]["text"]
    assert "#2 RUNNING NOW, outcome unknown: LR 1e-5 → 3e-3" in prefetch_prompt
    assert "cache_read_input_tokens" in session.exps[2].meta["usage"]
    assert Usage.from_dict(session.exps[2].meta["usage"]).cache_read_input_tokens > 0  # the static prefix was cached


def test_invalid_after_repairs_is_recorded_with_the_error(session: Session) -> None:
    invalid = session.exps[4]
    assert invalid.status == "invalid" and "failed validation after 1 repair turn(s)" in (invalid.error or "")
    assert "does not occur" in (invalid.error or "") and invalid.commit_sha is None


def test_an_outage_pauses_with_the_reason_and_resumes_on_its_own(session: Session) -> None:
    paused = [e.message for e in session.events if isinstance(e, StateChanged) and e.state == "paused"]
    assert paused and "the Anthropic API is unavailable (HTTP 529 overloaded_error" in paused[0]
    messages = [e.text for e in session.events if isinstance(e, Message)]
    assert "the claude agent can work again: resuming" in messages
    assert session.fake.probes >= 3 and session.exps[-1].description == "crash after the outage"


def test_thoughts_stream_to_listeners(session: Session) -> None:
    thoughts = [e for e in session.events if isinstance(e, Thought)]
    text = "".join(t.text for t in thoughts)
    assert "The LR is far too small; restore it." in text and any(t.done for t in thoughts)
    assert all(t.experiment_id is None for t in thoughts)


def test_results_show_tokens_and_dollars(session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-C", str(session.root), "results"]) == 0
    out = capsys.readouterr().out
    assert "$" in out and "hit ratio" in out and "prompt tokens" in out


def test_the_spending_cap_pauses_the_loop(session: Session, fake: FakeAnthropic,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    toml = session.root / "overnight.toml"
    toml.write_text(toml.read_text().split("[claude]")[0])
    _claude_config(session.root, fake.url, spending_cap_usd=1e-6)
    cfg = load_config(session.root)
    events: list[Event] = []
    box: list[Loop] = []

    def listen(event: Event) -> None:
        events.append(event)
        if isinstance(event, StateChanged) and event.state == "paused":
            threading.Timer(0.2, box[0].stop).start()

    loop = Loop(cfg, make_agent(cfg), listener=listen)
    box.append(loop)
    before = len(fake.requests)
    summary = loop.run(max_experiments=1)
    paused = [e.message for e in events if isinstance(e, StateChanged) and e.state == "paused"]
    assert paused and "spending cap is reached" in paused[0] and "spending_cap_usd" in paused[0]
    assert summary.stopped == "stopped by the user" and len(fake.requests) == before
    # In a terminal (`overnight run`, no daemon) nobody can resume it: the run stops with the reason.
    capsys.readouterr()
    assert main(["-C", str(session.root), "run", "--max-experiments", "1"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "stopped: the Claude agent's spending cap is reached" in out and "spending_cap_usd" in out
    assert len(fake.requests) == before

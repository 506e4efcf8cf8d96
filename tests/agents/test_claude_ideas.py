"""The Claude agent and the idea queue, through the real SDK against the fake Messages API: the queue is in the
prompt (drawable best first, vetoed with the human's reasons), and the answer's hypothesize calls and propose's idea
come back with the proposal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from overnight.daemon.agents.claude import ClaudeAgent
from overnight.daemon.agents.prompt import build
from overnight.daemon.agents.tools import MAX_HYPOTHESES, ToolCall, check_answer
from overnight.daemon.config import ClaudeConfig, Config
from overnight.daemon.ideas import Draft, Idea

from ..fakes.anthropic_server import FakeAnthropic, Reply, edit
from ..fakes.context import SOURCE, TRAIN, context

QUEUE = [Idea(7, "optimizer", "raise the LR to 6e-3", None, "human", "approved", "", (4,)),
         Idea(8, "attention", "rotary position embeddings", None, "agent", "proposed", "")]
VETOED = [Idea(9, "model size", "double the depth", None, "agent", "vetoed", "too slow for a 60 s budget")]


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def agent(fake: FakeAnthropic, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ClaudeAgent:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    return ClaudeAgent.from_config(Config(root=tmp_path, claude=ClaudeConfig(
        model="claude-sonnet-4-6", base_url=fake.url, timeout_s=1.0, max_retries=1, retry_base_s=0.01, retry_max_s=0.05)))


def test_the_queue_is_in_the_prompt_and_absent_without_one() -> None:
    text = build(context(ideas=QUEUE, vetoed=VETOED, pinned=("optimizer",))).messages[0]["content"][1]["text"]
    assert "# The idea queue (the human curates it)" in text and "Pinned directions (draw from them first): optimizer" in text
    assert "- idea 7 [optimizer] raise the LR to 6e-3 (the human's, tested by #4)" in text
    assert "- idea 8 [attention] rotary position embeddings (proposed)" in text
    assert "- VETOED idea 9 [model size] double the depth: too slow for a 60 s budget" in text
    assert text.index("idea 7") < text.index("idea 8") < text.index("VETOED idea 9")
    assert "idea queue" not in build(context()).messages[0]["content"][1]["text"]  # no queue kept: no section
    empty = build(context(ideas=[])).messages[0]["content"][1]["text"]
    assert "Nothing drawable: state hypotheses with `hypothesize`" in empty


def test_hypotheses_and_the_tested_idea_come_back_with_the_proposal(fake: FakeAnthropic, agent: ClaudeAgent) -> None:
    fake.add(Reply(text="Raise the LR, as the human asked.", tools=[
        ("hypothesize", {"direction": "optimizer", "text": "a longer warmup steadies a high LR"}),
        ("hypothesize", {"direction": "Data Order", "text": "shuffle  documents\nper epoch"}),
        edit(TRAIN, "LR = 3e-3", "LR = 6e-3"),
        ("propose", {"description": "LR 3e-3 → 6e-3", "hypothesis": "faster early progress", "idea": 7}),
    ]))
    p = agent.propose(context(ideas=QUEUE, vetoed=VETOED))
    assert not p.invalid and p.idea_id == 7
    assert p.ideas == (Draft("optimizer", "a longer warmup steadies a high LR"),
                       Draft("Data Order", "shuffle documents per epoch"))
    assert [t["name"] for t in fake.requests[0]["tools"]] == ["edit", "hypothesize", "propose"]


def test_bad_hypothesize_and_idea_inputs_are_sent_back_for_repair() -> None:
    files = {TRAIN: SOURCE}
    ok_edit = ToolCall("e", "edit", {"path": TRAIN, "old": "LR = 3e-3", "new": "LR = 1e-3"})
    propose = ToolCall("p", "propose", {"description": "d", "hypothesis": "h"})
    empty = check_answer(files, [ToolCall("h", "hypothesize", {"direction": "", "text": "x"}), ok_edit, propose])
    assert "hypothesize needs a non-empty direction and text" in empty.summary
    many = [ToolCall(f"h{i}", "hypothesize", {"direction": "d", "text": f"t{i}"}) for i in range(MAX_HYPOTHESES + 1)]
    assert f"at most {MAX_HYPOTHESES} hypothesize calls" in check_answer(files, [*many, ok_edit, propose]).summary
    bad_idea = ToolCall("p", "propose", {"description": "d", "hypothesis": "h", "idea": "seven"})
    assert "must be the integer id of a queue idea" in check_answer(files, [ok_edit, bad_idea]).summary

import json
from pathlib import Path

import pytest

from overnight.daemon.agents.base import AgentError
from overnight.daemon.agents.replay import ReplayAgent
from tests.fakes.context import context


def test_loads_patches_and_whole_files_in_order(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(
        json.dumps({"description": "one", "patch": "--- a/x\n+++ b/x\n"}) + "\n\n"
        + json.dumps({"description": "two", "files": {"trainer/train.py": "print(1)\n"}, "hypothesis": "h"}) + "\n"
    )
    agent = ReplayAgent.from_file(f)
    assert [p.description for p in agent.proposals] == ["one", "two"]
    assert agent.proposals[0].edit.patch is not None
    assert agent.proposals[1].edit.files == (("trainer/train.py", "print(1)\n"),)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "p.jsonl:1: not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"patch": "x"}', "non-empty \"description\""),
        ('{"description": "d"}', "exactly one of"),
        ('{"description": "d", "patch": "x", "files": {}}', "exactly one of"),
        ('{"description": "d", "files": {"a": 1}}', "map paths to file contents"),
    ],
)
def test_a_bad_replay_file_names_the_line(tmp_path: Path, line: str, message: str) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(line + "\n")
    with pytest.raises(AgentError, match=message):
        ReplayAgent.from_file(f)


def test_a_missing_replay_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AgentError, match="does not exist"):
        ReplayAgent.from_file(tmp_path / "nope.jsonl")


def test_a_recorded_reasoning_is_sent_as_the_agents_thought(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(
        json.dumps({"description": "one", "files": {"a": "1\n"}, "reasoning": "the LR is far too low"}) + "\n"
        + json.dumps({"description": "two", "files": {"a": "2\n"}}) + "\n"
    )
    agent = ReplayAgent.from_file(f)
    thoughts: list[tuple[str, bool]] = []
    agent.on_thought = lambda text, done: thoughts.append((text, done))
    first = agent.propose(context())
    assert first is not None and first.reasoning == "the LR is far too low"
    assert thoughts == [("the LR is far too low", True)]

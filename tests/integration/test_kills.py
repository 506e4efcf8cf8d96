"""kill -9 at random moments of a real session (the CLI's process group, real training runs, real git): every start
after a kill resumes by itself, the journal stays sound, refs match it, no finished row is lost, no run or evaluator
outlives the loop, and the user's edits all end up in the session. bench/kills.py does the same with more kills."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ..killing import finish, kill_rounds, replay_file

KILLS = 3  # CI's share; bench/kills.py runs 20 and more


@pytest.mark.timeout(900)
def test_random_kills_lose_nothing(make_workspace: Callable[..., Path]) -> None:
    root = make_workspace(replay_file="proposals.jsonl", agent="replay", max_runs=2)
    replay_file(root, 2)
    report = kill_rounds(root, KILLS, seed=7, window=(0.0, 8.0), edit_every=2, in_flight=True)
    finish(root, report)
    assert report.survivors == []
    assert report.problems == [], report.problems
    assert report.final_rc == 0, report.final_output[-3000:]
    assert report.kills == KILLS and "experiment in flight" in report.phases

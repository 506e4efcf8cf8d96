"""One real proposal from the real API: run only with a key (it costs a few cents)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from overnight.daemon.agents.claude import ClaudeAgent
from overnight.daemon.config import Config

from ..fakes.context import context

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not os.environ.get("ANTHROPIC_API_KEY"), reason="ANTHROPIC_API_KEY is not set: the live smoke test needs a real key")


@pytest.mark.timeout(300)
def test_one_real_proposal() -> None:
    agent = ClaudeAgent.from_config(Config(root=REPO))
    agent.check()
    files = {"trainer/train.py": (REPO / "trainer" / "train.py").read_text()}
    p = agent.propose(context(program=(REPO / "program.md").read_text(), files=files))
    assert p.description and not p.invalid, p.invalid
    assert dict(p.edit.files)["trainer/train.py"] != files["trainer/train.py"]
    assert p.meta["usage"]["cost_usd"] > 0

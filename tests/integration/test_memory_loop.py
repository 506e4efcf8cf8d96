"""The research memory through the real loop: written before each proposal, in the agent's context, and the
human's edits to its file survive every regeneration while new facts still arrive. (The real loop, journal and
git; an injected executor.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from overnight.daemon.cli import main
from overnight.daemon.config import load_config
from overnight.daemon.journal import Journal
from overnight.daemon.loop import Loop

from .test_loop_decisions import FakeExecutor, RecordingAgent, _workspace


@pytest.mark.timeout(180)
def test_the_humans_edits_to_the_memory_survive_and_the_agent_reads_them(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = _workspace(tmp_path / "ws", [("a clear gain", "val=2.7"), ("a null change", "val=2.7"),
                                        ("another null change", "val=2.7"), ("a third null change", "val=2.7")])
    first = RecordingAgent(root / "proposals.jsonl")
    Loop(load_config(root), first, executor=FakeExecutor()).run(max_experiments=2)
    with Journal(root / ".overnight" / "journal.db") as j:
        tag = j.experiments()[0].tag
    file = root / ".overnight" / "memory" / f"{tag}.md"
    text = file.read_text()
    assert "a clear gain" in text and first.contexts[-1].memory.strip() == text.strip()
    # The human deletes the first line that names the gain, and adds a note of their own.
    lines = text.splitlines()
    gone = next(line for line in lines if "a clear gain" in line)
    file.write_text("\n".join(line for line in lines if line != gone) + "\nNOTE FROM ME: the LR is already tuned.\n")
    second = RecordingAgent(root / "proposals.jsonl")
    Loop(load_config(root), second, executor=FakeExecutor()).run(max_experiments=2)
    after = file.read_text()
    assert "NOTE FROM ME: the LR is already tuned." in after and gone not in after  # the human's edits win
    assert "NOTE FROM ME" in second.contexts[-1].memory  # and the agent reads them
    assert "another null change" not in text and "another null change" in after  # new facts still arrive
    assert main(["-C", str(root), "memory"]) == 0
    assert "NOTE FROM ME" in capsys.readouterr().out
    assert main(["-C", str(root), "memory", "--path"]) == 0
    assert capsys.readouterr().out.strip() == str(file)

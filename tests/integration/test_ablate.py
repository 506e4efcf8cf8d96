"""End-of-session ablation on a replayed session whose keeps hold a real gain and a no-op that was kept by luck: the
no-op must be flagged droppable, the gain needed, and overnight/<tag>-final must hold the gain alone, its measured
effect in the commit message. (The real loop, journal, git and replay agent; an executor that reads each change's
effect from the code, so every run takes milliseconds and the truth is known.)"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from overnight.daemon.agents.replay import ReplayAgent
from overnight.daemon.cli import main
from overnight.daemon.config import load_config
from overnight.daemon.executor import RunOutcome, RunRequest
from overnight.daemon.journal import Journal
from overnight.daemon.loop import Loop

from ..conftest import commit_all, git, write_config

TRAIN = "trainer/train.py"
_EFFECT = re.compile(r"# EFFECT (\w+)=(\S+)")


class EffectExecutor:
    """val = 3.0 + the effects written in the code + seeded noise (σ 0.01). A ``lucky`` effect only counts while
    ``luck`` is on: the session kept that change by chance; measured again, it does nothing."""

    def __init__(self) -> None:
        self.luck = True

    def __call__(self, req: RunRequest, on_frame: Any = None, stop: threading.Event | None = None,
                 on_phase: Any = None) -> RunOutcome:
        text = (req.tree / TRAIN).read_text()
        val = 3.0
        for name, value in _EFFECT.findall(text):
            if name != "lucky" or self.luck:
                val += float(value)
        val += random.Random(req.seed).gauss(0.0, 0.01)
        return RunOutcome(status="ok", val_bpb=val, holdout_bpb=val + 0.05, ood_bpb=4.0, steps=100,
                          cpu_seconds=req.budget, steps_planned=100, step_seconds=0.01, wall_seconds=0.5)


@pytest.fixture
def session(tmp_path: Path) -> tuple[Path, EffectExecutor]:
    root = tmp_path / "ws"
    assert main(["init", str(root)]) == 0
    write_config(root, agent="replay", replay_file="proposals.jsonl", baseline_runs=3)
    commit_all(root)
    base = (root / TRAIN).read_text()
    gain = "# EFFECT gain=-0.2\n" + base  # at the top of the file
    lucky = gain + "\n# EFFECT lucky=-0.2\n"  # at the bottom: the two revert independently
    (root / "proposals.jsonl").write_text("".join(json.dumps(p) + "\n" for p in [
        {"description": "a real gain", "files": {TRAIN: gain}},
        {"description": "a no-op kept by luck", "files": {TRAIN: lucky}},
    ]))
    executor = EffectExecutor()
    Loop(load_config(root), ReplayAgent.from_file(root / "proposals.jsonl"), executor=executor).run()
    with Journal(root / ".overnight" / "journal.db") as j:
        assert [(e.description, e.status) for e in j.experiments() if e.kind == "experiment"] == [
            ("a real gain", "keep"), ("a no-op kept by luck", "keep")]
    return root, executor


@pytest.mark.timeout(240)
def test_the_no_op_is_droppable_and_the_final_branch_holds_the_gain(session: tuple[Path, EffectExecutor]) -> None:
    root, executor = session
    executor.luck = False  # measured again, the lucky change does nothing
    cfg = load_config(root)
    summary = Loop(cfg, ReplayAgent([]), executor=executor).run(max_experiments=0, ablate_runs=4)
    assert summary.stopped == "ablation done"
    with Journal(root / ".overnight" / "journal.db") as j:
        tag = j.experiments()[0].tag
        rows = {r["description"]: r for r in j.ablations(tag)}
        ablations = [e for e in j.experiments(tag) if e.kind == "ablation"]
        incumbent = j.incumbent(tag)
    assert rows["a no-op kept by luck"]["droppable"] is True and rows["a no-op kept by luck"]["commit"] == ""
    assert rows["a real gain"]["droppable"] is False and rows["a real gain"]["commit"]
    assert rows["a real gain"]["effect"] == pytest.approx(0.2, abs=0.06)  # removing it costs ~0.2
    assert abs(rows["a no-op kept by luck"]["effect"]) < 0.05
    # Each ablation is an experiment of its own kind, decided by the ablation, never a candidate or the incumbent.
    assert len(ablations) == 2 and all(e.status == "discard" and e.decided_by == "ablation" for e in ablations)
    assert incumbent is not None and incumbent.description == "a no-op kept by luck"
    branch = f"overnight/{tag}-final"
    log = git(root, "log", "--format=%B%x00", f"{git(root, 'merge-base', branch, incumbent.commit_sha)}..{branch}")
    messages = [m.strip() for m in log.split("\x00") if m.strip()]
    assert len(messages) == 1 and messages[0].startswith(f"#{rows['a real gain']['experiment_id']}: a real gain")
    assert re.search(r"Measured effect: removing it from the final code costs \+0\.[12]\d{3}, [\d.]+σ\.", messages[0])
    assert "needed" in messages[0]
    final_text = git(root, "show", f"{branch}:{TRAIN}")
    assert "# EFFECT gain=-0.2" in final_text and "lucky" not in final_text
    # The user's own files are never written by an ablation.
    assert "EFFECT" not in (root / TRAIN).read_text()


@pytest.mark.timeout(240)
def test_the_cli_shows_the_cost_and_asks_first(session: tuple[Path, EffectExecutor]) -> None:
    root, _ = session
    proc = subprocess.run([sys.executable, "-m", "overnight.daemon.cli", "ablate"], cwd=root, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 1
    assert "2 kept change(s): at most 8 runs" in proc.stdout and "pass --yes" in proc.stderr
    with Journal(root / ".overnight" / "journal.db") as j:
        assert not [e for e in j.experiments() if e.kind == "ablation"]  # nothing ran


def test_a_session_without_keeps_has_nothing_to_ablate_and_runs_are_bounded(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ws"
    assert main(["init", str(root)]) == 0
    write_config(root, agent="replay", replay_file="proposals.jsonl")
    commit_all(root)
    (root / "proposals.jsonl").write_text("")
    Loop(load_config(root), ReplayAgent([]), executor=EffectExecutor()).run()  # the baseline only
    capsys.readouterr()
    assert main(["-C", str(root), "ablate", "--yes"]) == 1
    assert "has no kept change to ablate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["-C", str(root), "ablate", "--runs", "1"])
    assert "is not from 2 to 20" in capsys.readouterr().err

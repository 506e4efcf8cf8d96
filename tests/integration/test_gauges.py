"""Holdout and OOD are scored only when a keep needs them (daemon/gauges.py): the real loop, real training runs,
the real warm evaluator. A discarded candidate's runs carry val alone; a kept one's runs have both gauges, scored
from their kept models before the decision; no model file outlives its decision. An executor that keeps no
scorable model shows the other side: the would-be keep is held for the human, never kept blind."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from overnight.daemon.agents.replay import ReplayAgent
from overnight.daemon.cli import main
from overnight.daemon.config import load_config
from overnight.daemon.executor import RunOutcome, RunRequest, execute
from overnight.daemon.journal import Journal
from overnight.daemon.loop import Loop

from ..conftest import commit_all, write_config

TRAIN = "trainer/train.py"


def _session(root: Path, baseline_lr: str, proposals: list[tuple[str, str]]) -> Path:
    assert main(["init", str(root)]) == 0
    write_config(root, agent="replay", replay_file="proposals.jsonl")
    base = (root / TRAIN).read_text().replace("LR = 3e-3 ", f"LR = {baseline_lr} ", 1)
    (root / TRAIN).write_text(base)
    commit_all(root)
    (root / "proposals.jsonl").write_text("".join(
        json.dumps({"description": d, "files": {TRAIN: base.replace(f"LR = {baseline_lr} ", f"LR = {lr} ", 1)}}) + "\n"
        for d, lr in proposals))
    return root


@pytest.mark.timeout(400)
def test_only_a_keep_has_its_gauges_scored_and_no_model_outlives_its_decision(tmp_path: Path) -> None:
    root = _session(tmp_path / "ws", "1e-5", [("a learning rate that learns", "3e-3"),
                                               ("an even smaller learning rate", "1e-7")])
    requests: list[RunRequest] = []

    def recording(req: RunRequest, **kwargs: Any) -> RunOutcome:
        requests.append(req)
        return execute(req, **kwargs)

    Loop(load_config(root), ReplayAgent.from_file(root / "proposals.jsonl"), executor=recording).run()
    with Journal(root / ".overnight" / "journal.db") as j:
        exps = {e.description: e for e in j.experiments() if e.kind == "experiment"}
        baseline = next(e for e in j.experiments() if e.kind == "baseline")
        keep, worse = (exps[d] for d in ("a learning rate that learns", "an even smaller learning rate"))
        assert (keep.status, worse.status) == ("keep", "discard"), (keep.decision_reason, worse.decision_reason)
        for run in j.runs(baseline.id) + j.runs(keep.id):  # scored on everything: at once, or before the keep
            assert run.status == "ok" and None not in (run.val_bpb, run.holdout_bpb, run.ood_bpb, run.train_bpb), run
        assert keep.holdout_bpb is not None and keep.ood_bpb is not None
        assert "holdout" in (keep.evidence or {})  # the held check ran on the scored gauges
        for run in j.runs(worse.id):  # val (and the train slice) only: no decision needed its gauges
            assert run.val_bpb is not None and run.train_bpb is not None
            assert run.holdout_bpb is None and run.ood_bpb is None
    kinds = {(r.splits, r.keep_model is not None) for r in requests}
    assert kinds == {("val,holdout,ood", False), ("val", True)}, kinds
    assert not list((root / ".overnight" / "runs").rglob("*.ovm"))  # every kept model went with its decision


class NoModelExecutor:
    """Scores a candidate's runs as asked (val only) but leaves no model behind: nothing can score its gauges."""

    def __call__(self, req: RunRequest, on_frame: Any = None, stop: threading.Event | None = None,
                 on_phase: Any = None) -> RunOutcome:
        good = "LR = 3e-3 " in (req.tree / TRAIN).read_text()
        val = (2.5 if good else 3.0) + (req.seed % 7) * 0.001
        everything = req.keep_model is None
        return RunOutcome(status="ok", val_bpb=val, holdout_bpb=val + 0.05 if everything else None,
                          ood_bpb=4.0 if everything else None, train_bpb=val, steps=100, cpu_seconds=req.budget,
                          steps_planned=req.anchor[0] if req.anchor else 100, step_seconds=0.01)


@pytest.mark.timeout(120)
def test_a_keep_whose_gauges_cannot_be_scored_is_held_not_kept(tmp_path: Path) -> None:
    root = _session(tmp_path / "ws", "1e-5", [("a learning rate that learns", "3e-3")])
    Loop(load_config(root), ReplayAgent.from_file(root / "proposals.jsonl"), executor=NoModelExecutor()).run()
    with Journal(root / ".overnight" / "journal.db") as j:
        exp = next(e for e in j.experiments() if e.kind == "experiment")
        assert exp.status == "held", exp.decision_reason
        assert "holdout could not be scored" in (exp.decision_reason or "") and "model file" in (exp.decision_reason or "")
        assert (exp.evidence or {}).get("gauges_failed")
        assert j.incumbent(exp.tag) is not None and j.incumbent(exp.tag).kind == "baseline"  # type: ignore[union-attr]

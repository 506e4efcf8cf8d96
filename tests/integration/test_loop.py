"""The whole loop on a real repository with real (two-second) training runs and a replayed agent.

One session goes through every kind of outcome: a clear improvement (kept after a confirmation
run), a clear regression (discarded), a crash, NaN, a hang, a memory hog, and three proposals
that are refused before anything runs. The tests below read what it left behind: the journal,
the refs, the branch, the user's untouched copy, and the CLI's reports.
"""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from overnight.daemon.agents.replay import ReplayAgent
from overnight.daemon.cli import main
from overnight.daemon.config import load_config
from overnight.daemon.events import Event, ExperimentFinished
from overnight.daemon.journal import Journal
from overnight.daemon.loop import Loop, LoopError, Summary

from ..conftest import git

# The workspace's baseline learns almost nothing (tiny LR); restoring a sane LR is a certain keep.
BAD_LR = "LR = 1e-5"
GOOD_LR = "LR = 3e-3"


def _entry(description: str, root: Path, old: str, new: str) -> dict[str, str]:
    train = root / "trainer" / "train.py"
    original = train.read_text()
    assert old in original, old
    train.write_text(original.replace(old, new, 1))
    patch = git(root, "diff", "--", "trainer/train.py") + "\n"
    train.write_text(original)
    return {"description": description, "patch": patch}


@dataclass
class Session:
    root: Path
    summary: Summary
    events: list[Event]
    user_files_before: dict[str, bytes]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    from ..conftest import commit_all, write_config

    root = tmp_path_factory.mktemp("loop") / "ws"
    assert main(["init", str(root)]) == 0
    # Sequential (overlap off): each proposal is made after the last decision, so the patch written against the
    # code before the keep no longer applies (overlapping, it would be made while the keep was scored, and apply).
    write_config(root, grace=10.0, memory_limit_gb=1.5, replay_file="proposals.jsonl", agent="replay", overlap=False)
    train = root / "trainer" / "train.py"
    train.write_text(train.read_text().replace(GOOD_LR, BAD_LR, 1))
    commit_all(root)
    proposals = [
        _entry("restore a sane learning rate", root, BAD_LR, GOOD_LR),
        # From here on the incumbent has LR 3e-3 (the keep above advanced the branch).
        {"description": "a syntax error", "patch": _entry("x", root, "import math", "import math +")["patch"]},
        {"description": "edit the harness", "files": {"trainer/prepare.py": "print('cheat')\n"}},
        {"description": "a patch that no longer applies", "patch": _entry("x", root, BAD_LR, "LR = 2e-5")["patch"]},
        _entry("crash on purpose", root, "import math", "import math\nraise RuntimeError('boom')"),
        _entry("NaN loss", root, "    loss_value = loss.item()", "    loss_value = loss.item() * float('nan')"),
        _entry("hang", root, "import math", "import math\nimport time\ntime.sleep(600)"),
        _entry("memory hog", root, "import torch  #", "import torch\n_HOG = torch.ones(600_000_000)  #"),
    ]
    (root / "proposals.jsonl").write_text("".join(json.dumps(p) + "\n" for p in proposals))
    # The regression is written against the kept state (LR 3e-3), as an agent would see it.
    worse = {"description": "a learning rate far too small", "files": {
        "trainer/train.py": train.read_text().replace(BAD_LR, "LR = 1e-7", 1)}}
    with (root / "proposals.jsonl").open("a") as fh:
        fh.write(json.dumps(worse) + "\n")
    user_before = {p: (root / p).read_bytes() for p in ("trainer/train.py", "trainer/prepare.py", "program.md")}

    cfg = load_config(root)
    events: list[Event] = []
    loop = Loop(cfg, ReplayAgent.from_file(root / "proposals.jsonl"), listener=events.append)
    summary = loop.run()
    return Session(root, summary, events, user_before)


def _journal(s: Session) -> Journal:
    return Journal(s.root / ".overnight" / "journal.db")


@pytest.mark.timeout(600)
def test_every_outcome_gets_its_status_and_the_loop_goes_on(session: Session) -> None:
    j = _journal(session)
    exps = j.experiments(session.summary.tag)
    got = [(e.kind, e.status, e.description) for e in exps]
    assert got == [
        ("baseline", "keep", "baseline (2 runs: the noise floor)"),
        ("experiment", "keep", "restore a sane learning rate"),
        ("experiment", "invalid", "a syntax error"),
        ("experiment", "invalid", "edit the harness"),
        ("experiment", "invalid", "a patch that no longer applies"),
        ("experiment", "crash", "crash on purpose"),
        ("experiment", "crash", "NaN loss"),
        ("experiment", "timeout", "hang"),
        ("experiment", "crash", "memory hog"),
        ("experiment", "discard", "a learning rate far too small"),
    ]
    by = {e.description: e for e in exps}
    assert "syntax error" in (by["a syntax error"].error or "")
    assert "frozen harness file" in (by["edit the harness"].error or "")
    assert "does not apply" in (by["a patch that no longer applies"].error or "")
    assert "exited with code 1: RuntimeError: boom" in (by["crash on purpose"].error or "")
    assert "nan" in (by["NaN loss"].error or "").lower()
    assert "hung: used no CPU" in (by["hang"].error or "")
    assert "out of memory" in (by["memory hog"].error or "")
    assert session.summary.stopped == "the replay agent has nothing more to propose"
    assert session.summary.kept == 1
    # The journal tells the whole story: one line per experiment to the listener too.
    assert sum(isinstance(e, ExperimentFinished) for e in session.events) == len(exps)


def test_keep_and_discard_decisions_carry_their_evidence(session: Session) -> None:
    j = _journal(session)
    by = {e.description: e for e in j.experiments(session.summary.tag)}
    base = by["baseline (2 runs: the noise floor)"]
    kept = by["restore a sane learning rate"]
    worse = by["a learning rate far too small"]
    assert base.val_bpb is not None and kept.val_bpb is not None and worse.val_bpb is not None
    assert kept.val_bpb < base.val_bpb - 0.3
    assert kept.evidence is not None and kept.evidence["incumbent_id"] == base.id
    assert len(kept.evidence["candidate_runs"]) == 2  # confirmed on a second seed
    assert kept.evidence["improvement"] > kept.evidence["threshold"]
    assert worse.evidence is not None and worse.evidence["incumbent_id"] == kept.id
    assert len(worse.evidence["candidate_runs"]) == 1  # no confirmation for a regression
    assert worse.decided_by == "keep rule" and "no improvement" in (worse.decision_reason or "")
    runs = j.runs(kept.id)
    assert {r.seed for r in runs} == {kept.id * 100, kept.id * 100 + 1}
    assert all(r.curve and r.steps and r.holdout_bpb for r in runs)
    assert all(0 < r.val_bpb < 8 for r in runs if r.val_bpb)


def test_every_experiment_commit_is_reachable_and_the_branch_holds_only_keeps(session: Session) -> None:
    j = _journal(session)
    root, tag = session.root, session.summary.tag
    exps = j.experiments(tag)
    kept = [e for e in exps if e.kind == "experiment" and e.status == "keep"]
    branch_head = git(root, "rev-parse", f"overnight/{tag}")
    assert branch_head == kept[-1].commit_sha
    for e in exps:
        if e.status == "invalid":
            assert e.commit_sha is None
            continue
        assert e.commit_sha and git(root, "rev-parse", f"refs/overnight/{tag}/{e.id}") == e.commit_sha
        on_branch = subprocess.run(
            ["git", "merge-base", "--is-ancestor", e.commit_sha, branch_head], cwd=root
        ).returncode == 0
        assert on_branch == (e.status == "keep")
    worktree = root / ".overnight" / "worktrees" / tag
    assert git(worktree, "status", "--porcelain") == ""
    assert git(worktree, "rev-parse", "HEAD") == branch_head


def test_the_users_own_files_are_never_written(session: Session) -> None:
    for rel, content in session.user_files_before.items():
        assert (session.root / rel).read_bytes() == content
    assert git(session.root, "status", "--porcelain") == "?? proposals.jsonl"


def test_results_as_tsv_json_and_table(session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-C", str(session.root), "results", "--format", "tsv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "commit\tval_bpb\tmemory_gb\tstatus\tdescription"
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == 10
    assert rows[1][3] == "keep" and float(rows[1][1]) > 0
    assert rows[2][1] == "0.000000" and rows[2][3] == "crash"  # refused: a failed run in autoresearch's statuses
    assert main(["-C", str(session.root), "results", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in data][:2] == ["keep", "keep"]
    assert data[2]["status"] == "invalid"  # the journal's own status, in JSON and the table
    assert main(["-C", str(session.root), "results"]) == 0
    table = capsys.readouterr().out
    assert "restore a sane" in table and "invalid" in table and "timeout" in table


def test_show_prints_diff_decision_and_evidence(session: Session, capsys: pytest.CaptureFixture[str]) -> None:
    j = _journal(session)
    kept = next(e for e in j.experiments(session.summary.tag) if e.description == "restore a sane learning rate")
    assert main(["-C", str(session.root), "show", str(kept.id)]) == 0
    out = capsys.readouterr().out
    assert "+LR = 3e-3" in out and "improvement beyond noise" in out and "candidate_runs" in out
    crashed = next(e for e in j.experiments(session.summary.tag) if e.description == "crash on purpose")
    assert main(["-C", str(session.root), "show", str(crashed.id)]) == 0
    assert "boom" in capsys.readouterr().out  # the end of the run's log
    assert main(["-C", str(session.root), "show", "999"]) == 1


def test_plot_writes_a_png(session: Session, tmp_path: Path) -> None:
    out = tmp_path / "progress.png"
    assert main(["-C", str(session.root), "plot", "-o", str(out)]) == 0
    header = out.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width >= 1000 and height >= 500


def test_a_session_resumes_with_the_same_tag_and_numbering(session: Session, make_workspace: Callable[..., Path]) -> None:
    # The replay file is exhausted, so a second start only re-opens the session and stops.
    cfg = load_config(session.root)
    summary = Loop(cfg, ReplayAgent.from_file(session.root / "proposals.jsonl")).run()
    assert summary.tag == session.summary.tag
    assert summary.experiments == session.summary.experiments


def test_resuming_with_another_budget_is_refused(session: Session) -> None:
    cfg = load_config(session.root).with_overrides(budget=7.0)
    with pytest.raises(LoopError, match="budget was 2.0, now 7.0"):
        Loop(cfg, ReplayAgent.from_file(session.root / "proposals.jsonl")).run()

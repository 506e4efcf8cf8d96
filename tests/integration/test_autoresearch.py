"""An autoresearch-style folder, made here, run as its README says: `overnight init --autoresearch`, then `overnight run`.

The folder is what autoresearch users have: a train.py that trains and prints its own `val_bpb: X` summary, a
prepare.py it imports, program.md, data in a cache under the home folder. Overnight runs it sealed in reported-metric
mode (the number is the script's own, and every view says so), and `results --format tsv` writes autoresearch's file.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from overnight.daemon.cli import main
from overnight.daemon.config import load_config

from ..conftest import commit_all, git

PREPARE = '''"""Frozen: the data (from the cache under ~) and the metric, as autoresearch's prepare.py provides them."""
import math
import os

import torch

CACHE = os.path.expanduser("~/.cache/ar-test")


def load():
    xs = torch.tensor([float(v) for v in open(os.path.join(CACHE, "data.txt")).read().split()])
    x = xs.view(-1, 4)
    y = x @ torch.tensor([0.5, -1.0, 2.0, 0.25]) + 0.1
    return x[:48], y[:48], x[48:], y[48:]


def evaluate_bpb(model, x, y):
    with torch.no_grad():
        return math.log2(1.0 + float(((model(x).squeeze(-1) - y) ** 2).mean()))
'''

TRAIN = '''"""An autoresearch-style training script: trains, then prints its own summary block."""
import os
import time

import torch

from prepare import evaluate_bpb, load

LEARNING_RATE = 0.002
NUM_STEPS = 150

torch.manual_seed(int(os.environ.get("OVERNIGHT_SEED", "0")))
x, y, vx, vy = load()
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
t0 = time.time()
for step in range(NUM_STEPS):
    loss = ((model(x).squeeze(-1) - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
print("---")
print(f"val_bpb:          {evaluate_bpb(model, vx, vy):.6f}")
print(f"training_seconds: {time.time() - t0:.1f}")
print(f"num_steps:        {NUM_STEPS}")
'''

# Fast settings on top of the preset (the preset's own values are what is being tested, so only speed changes).
FAST = {"budget": "5.0", "grace": "25.0", "baseline_runs": "2", "machine_share": "0.0", "rerun_every": "0",
        "threads": "1"}


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / ".cache" / "ar-test").mkdir(parents=True)
    (home / ".cache" / "ar-test" / "data.txt").write_text(" ".join(f"{(i * 37 % 101) / 50 - 1:.3f}" for i in range(256)))
    monkeypatch.setenv("HOME", str(home))
    root = tmp_path / "autoresearch"
    root.mkdir()
    (root / "prepare.py").write_text(PREPARE)
    (root / "train.py").write_text(TRAIN)
    (root / "program.md").write_text("# autoresearch\n\nLower val_bpb. Only train.py may change.\n")
    git(root, "init", "-q")
    commit_all(root, "autoresearch-style folder")
    return root


def _fast(root: Path, readable: str) -> None:
    text = (root / "overnight.toml").read_text()
    for key, value in {**FAST, "readable": f'["{readable}"]'}.items():
        text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
        assert n == 1, key
    (root / "overnight.toml").write_text(text)
    commit_all(root, "fast settings")


def test_init_autoresearch_writes_a_reported_metric_config(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--autoresearch", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "reported" in out and "uv run prepare.py" in out
    cfg = load_config(folder)
    assert (cfg.measure, cfg.metric, cfg.editable, cfg.frozen, cfg.workdir) == (
        "reported", "val_bpb", ("train.py",), ("prepare.py",), ".")
    assert cfg.readable == ("~/.cache/autoresearch",) and cfg.prepare == () and cfg.budget == 300.0
    # Committed, and the user's own files untouched.
    assert git(folder, "status", "--porcelain") == ""
    assert (folder / "train.py").read_text() == TRAIN
    assert main(["init", "--autoresearch", str(folder)]) == 1  # no silent overwrite
    assert "--force" in capsys.readouterr().err


def test_init_autoresearch_refuses_a_folder_without_train_py(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--autoresearch", str(tmp_path)]) == 1
    assert "has no train.py" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_an_autoresearch_folder_runs_sealed_in_reported_mode(folder: Path) -> None:
    assert main(["init", "--autoresearch", str(folder)]) == 0
    _fast(folder, "~/.cache/ar-test")
    proc = subprocess.run([sys.executable, "-m", "overnight.daemon.cli", "run", "--max-experiments", "2"], cwd=folder,
                          capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "REPORTED val_bpb" in proc.stdout

    db = sqlite3.connect(folder / ".overnight" / "journal.db")
    rows = db.execute("SELECT kind, status, val_bpb FROM experiments ORDER BY id").fetchall()
    runs = db.execute("SELECT status, val_bpb, steps FROM runs ORDER BY id").fetchall()
    db.close()
    assert rows[0][:2] == ("baseline", "keep") and len(rows) == 3
    assert all(status in ("keep", "discard", "crash") for _, status, _ in rows[1:])
    # The baseline's number is the one the script printed: recompute it outside Overnight, with the run's seed.
    baseline = [r for r in runs if r[0] == "ok"][0]
    assert baseline[2] == 150  # num_steps, read from the summary block
    printed = subprocess.run([sys.executable, "train.py"], cwd=folder, capture_output=True, text=True,
                             env={"OVERNIGHT_SEED": "100", "HOME": str(Path.home()), "PATH": "/usr/bin:/bin"})
    assert f"val_bpb:          {baseline[1]:.6f}" in printed.stdout

    results = subprocess.run([sys.executable, "-m", "overnight.daemon.cli", "results"], cwd=folder,
                             capture_output=True, text=True)
    assert "REPORTED val_bpb" in results.stdout and "script's own printout" in results.stdout
    tsv = subprocess.run([sys.executable, "-m", "overnight.daemon.cli", "results", "--format", "tsv"], cwd=folder,
                         capture_output=True, text=True).stdout.splitlines()
    assert tsv[0].split("\t") == ["commit", "val_bpb", "memory_gb", "status", "description"]
    assert tsv[1].split("\t")[3] == "keep" and len(tsv) == 4


@pytest.mark.timeout(120)
def test_a_missing_readable_folder_stops_the_loop_before_any_run(folder: Path) -> None:
    assert main(["init", "--autoresearch", str(folder)]) == 0
    _fast(folder, "~/.cache/not-there")
    proc = subprocess.run([sys.executable, "-m", "overnight.daemon.cli", "run", "--max-experiments", "1"], cwd=folder,
                          capture_output=True, text=True, timeout=100)
    assert proc.returncode != 0
    assert "readable folder ~/.cache/not-there does not exist" in proc.stdout + proc.stderr


@pytest.mark.timeout(180)
def test_a_session_from_before_reported_mode_never_resumes_in_it(tmp_path: Path) -> None:
    """A session recorded before `measure` existed measured with the harness: switching the workspace to reported
    mode must not continue it as if its numbers compared."""
    import json

    from overnight.daemon.agents.replay import ReplayAgent
    from overnight.daemon.loop import Loop, LoopError

    from ..conftest import write_config as write
    from .test_loop_decisions import FakeExecutor

    root = tmp_path / "ws"
    assert main(["init", str(root)]) == 0
    write(root, agent="replay", replay_file="proposals.jsonl")
    commit_all(root)
    (root / "proposals.jsonl").write_text("")
    Loop(load_config(root), ReplayAgent([]), executor=FakeExecutor()).run()
    db = sqlite3.connect(root / ".overnight" / "journal.db")
    tag, config = db.execute("SELECT tag, config FROM sessions").fetchone()
    old = {k: v for k, v in json.loads(config).items() if k not in ("measure", "readable")}  # as an older version wrote it
    db.execute("UPDATE sessions SET config=? WHERE tag=?", (json.dumps(old), tag))
    db.commit()
    db.close()
    write(root, agent="replay", replay_file="proposals.jsonl", measure="reported")
    with pytest.raises(LoopError, match="measure was 'harness', now 'reported'"):
        Loop(load_config(root), ReplayAgent([]), executor=FakeExecutor()).run(tag=tag)

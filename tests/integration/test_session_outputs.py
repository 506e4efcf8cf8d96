"""What a real short session leaves for the human: a report to paste into a pull request, and TensorBoard files
(read back with the tensorboard package's own reader) that agree with the journal."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

OVERNIGHT = [sys.executable, "-m", "overnight.daemon.cli"]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from overnight.daemon.cli import main

    from ..conftest import commit_all, write_config

    root = tmp_path_factory.mktemp("outputs") / "ws"
    assert main(["init", str(root)]) == 0
    write_config(root, agent="sweep")
    commit_all(root)
    proc = subprocess.run([*OVERNIGHT, "run", "--max-experiments", "2"], cwd=root, capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return root


def _journal(root: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(root / ".overnight" / "journal.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_every_run_is_in_tensorboard_as_the_journal_has_it(session: Path) -> None:
    runs = _journal(session, "SELECT e.tag, r.experiment_id, r.val_bpb, r.status FROM runs r JOIN experiments e "
                             "ON e.id = r.experiment_id ORDER BY r.id")
    assert runs
    seen: dict[int, int] = {}
    for tag, exp_id, val, status in runs:
        seen[exp_id] = seen.get(exp_id, 0) + 1
        folder = session / ".overnight" / "tb" / tag / f"exp{exp_id:04d}" / f"run{seen[exp_id]}"
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        scalars = acc.Tags()["scalars"]
        assert "train/loss" in scalars and len(acc.Scalars("train/loss")) >= 2  # the curve, not one point
        if status == "ok":
            assert acc.Scalars("eval/val_bpb")[-1].value == pytest.approx(val, rel=1e-6)
    tag = runs[0][0]
    best = _journal(session, f"SELECT id, val_bpb FROM experiments WHERE tag='{tag}' AND status='keep' ORDER BY id")
    line = EventAccumulator(str(session / ".overnight" / "tb" / tag / "session"), size_guidance={"scalars": 0})
    line.Reload()
    assert [(p.step, pytest.approx(p.value, rel=1e-6)) for p in line.Scalars("session/best_val_bpb")] == best
    shown = subprocess.run([*OVERNIGHT, "tensorboard"], cwd=session, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "--host 127.0.0.1" in shown.stdout and "tensorboard" in shown.stdout


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_the_report_of_a_real_session(session: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    proc = subprocess.run([*OVERNIGHT, "report", "-o", str(out)], cwd=session, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    baseline = _journal(session, "SELECT val_bpb FROM experiments WHERE kind='baseline' ORDER BY id LIMIT 1")[0][0]
    statuses = [s for (s,) in _journal(session, "SELECT status FROM experiments WHERE kind='experiment'")]
    assert text.startswith("# Overnight session ")
    assert f"{baseline:.4f}" in text  # the verdict starts from the measured baseline
    assert "Settings and hardware" in text and "Cost" in text
    for status in set(statuses):
        assert status in text
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({png.name})" in text
    printed = subprocess.run([*OVERNIGHT, "report"], cwd=session, capture_output=True, text=True, timeout=120).stdout
    assert printed.startswith("# Overnight session ")

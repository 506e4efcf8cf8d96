"""TensorBoard event files of runs: written by daemon/tensorboard_log.py, read back with TensorBoard's own reader."""

from __future__ import annotations

import argparse
import io
import logging
import math
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from overnight.daemon import tensorboard_log as tb

CURVE = [(10, 1.0, 3.5), (20, 2.5, 3.25), (30, 4.0, 3.125)]
SCORES: dict[str, Any] = {
    "val_bpb": 1.234567, "holdout_bpb": 1.25, "ood_bpb": 2.5, "train_bpb": 1.125,
    "tokens_per_s": 12345.5, "wall_seconds": 61.25,
}


def _write(state_dir: Path, **overrides: Any) -> Path | None:
    values: dict[str, Any] = {
        "experiment_id": 7, "run": 1, "status": "ok", "curve": CURVE, "steps": 30,
        "description": "wider MLP (4x -> 6x)", **SCORES, **overrides,
    }
    folder: Path | None = tb.write_run(state_dir, "s1", **values)
    return folder


def _read(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _points(acc: EventAccumulator, tag: str) -> list[tuple[int, Any]]:
    # Any: the values are compared with pytest.approx (float32 on disk).
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _summary(acc: EventAccumulator) -> str:
    events = acc.Tensors("run/summary/text_summary")
    assert len(events) == 1
    return str(events[0].tensor_proto.string_val[0].decode("utf-8"))


def test_an_ok_run_has_its_curve_by_step_and_its_scores_once_at_the_final_step(tmp_path: Path) -> None:
    folder = _write(tmp_path)

    assert folder == tmp_path / "tb" / "s1" / "exp0007" / "run1" == tb.run_dir(tmp_path, "s1", 7, 1)
    acc = _read(folder)
    assert _points(acc, "train/loss") == [(10, pytest.approx(3.5, rel=1e-6)), (20, pytest.approx(3.25, rel=1e-6)),
                                          (30, pytest.approx(3.125, rel=1e-6))]
    expected = {"eval/val_bpb": 1.234567, "eval/holdout_bpb": 1.25, "eval/ood_bpb": 2.5, "eval/train_bpb": 1.125,
                "run/tokens_per_s": 12345.5, "run/wall_seconds": 61.25}
    assert sorted(acc.Tags()["scalars"]) == sorted(["train/loss", *expected])
    for tag, value in expected.items():
        assert _points(acc, tag) == [(30, pytest.approx(value, rel=1e-6))], tag
    # The "relative" axis reads as training seconds: wall times are spaced as the curve's elapsed seconds.
    walls = [e.wall_time for e in acc.Scalars("train/loss")]
    assert [w - walls[0] for w in walls] == pytest.approx([0.0, 1.5, 3.0], abs=1e-3)
    summary = _summary(acc)
    assert "#7" in summary and "`ok`" in summary and "wider MLP (4x -> 6x)" in summary


def test_a_crashed_run_keeps_its_curve_but_has_no_scores(tmp_path: Path) -> None:
    diverging = [(1, 0.5, 4.0), (2, 1.0, 9.5)]
    folder = _write(tmp_path, status="crash", curve=diverging, steps=None)

    assert folder is not None
    acc = _read(folder)
    assert acc.Tags()["scalars"] == ["train/loss"]
    assert _points(acc, "train/loss") == [(1, pytest.approx(4.0, rel=1e-6)), (2, pytest.approx(9.5, rel=1e-6))]
    assert "`crash`" in _summary(acc)
    # Without a step count the summary sits at the curve's last step.
    assert acc.Tensors("run/summary/text_summary")[0].step == 2


def test_non_finite_values_are_left_out(tmp_path: Path) -> None:
    curve = [(5, 1.0, 3.0), (6, 2.0, math.nan), (7, 3.0, math.inf), (8, math.nan, 2.5)]
    folder = _write(tmp_path, curve=curve, steps=None, val_bpb=math.nan, holdout_bpb=math.inf, ood_bpb=None,
                    train_bpb=1.5, tokens_per_s=-math.inf, wall_seconds=12.0)

    assert folder is not None
    acc = _read(folder)
    assert _points(acc, "train/loss") == [(5, pytest.approx(3.0, rel=1e-6)), (8, pytest.approx(2.5, rel=1e-6))]
    assert sorted(acc.Tags()["scalars"]) == ["eval/train_bpb", "run/wall_seconds", "train/loss"]
    assert _points(acc, "eval/train_bpb") == [(8, pytest.approx(1.5, rel=1e-6))]
    assert all(math.isfinite(e.value) for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag))


def test_writing_a_run_again_replaces_it(tmp_path: Path) -> None:
    _write(tmp_path)
    folder = _write(tmp_path, curve=[(10, 1.0, 2.0), (20, 2.0, 1.5)], steps=20, val_bpb=1.0)

    assert folder is not None
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    acc = _read(folder)
    assert _points(acc, "train/loss") == [(10, pytest.approx(2.0, rel=1e-6)), (20, pytest.approx(1.5, rel=1e-6))]
    assert _points(acc, "eval/val_bpb") == [(20, pytest.approx(1.0, rel=1e-6))]
    # Another run of the same experiment is a separate line, untouched by the rewrite.
    other = _write(tmp_path, run=2)
    assert other is not None and other != folder
    assert _points(_read(folder), "eval/val_bpb") == [(20, pytest.approx(1.0, rel=1e-6))]


@pytest.mark.parametrize("blocked", ["state", "tb", "run"])
def test_an_unwritable_folder_is_a_warning_not_an_error(tmp_path: Path, blocked: str, caplog: pytest.LogCaptureFixture) -> None:
    # A file where a folder must be: the state dir itself, its tb/ or the run's own folder.
    state_dir = tmp_path / ".overnight"
    target = {"state": state_dir, "tb": state_dir / "tb", "run": tb.run_dir(state_dir, "s1", 7, 1)}[blocked]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("not a folder")

    with caplog.at_level(logging.WARNING, logger=tb.__name__):
        assert _write(state_dir) is None
        tb.incumbent_line(state_dir, "s1", [(1, 1.5)])
    assert "#7 run 1 not written" in caplog.text
    # The session's line lies beside the run: only a blocked state dir or tb/ stops it too.
    assert ("incumbent line of session s1 not written" in caplog.text) == (blocked != "run")
    assert target.read_text() == "not a folder"


def test_a_tag_that_is_not_a_plain_name_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for tag in ("../up", "a/b", "..", ""):
        with pytest.raises(ValueError):
            tb.run_dir(tmp_path, tag, 1, 1)
    with caplog.at_level(logging.WARNING, logger=tb.__name__):
        assert tb.write_run(tmp_path, "../up", experiment_id=1, run=1, status="ok", curve=CURVE, steps=30,
                            description="x", **SCORES) is None
        tb.incumbent_line(tmp_path, "../up", [(1, 1.0)])
    assert caplog.text.count("not written") == 2
    assert not (tmp_path / "up").exists() and not (tmp_path / "tb").exists()


def test_the_incumbent_line_is_one_point_per_decision_and_is_rewritten_whole(tmp_path: Path) -> None:
    tb.incumbent_line(tmp_path, "s1", [(3, 1.5), (5, 1.4), (8, math.nan), (9, 1.375)])
    folder = tmp_path / "tb" / "s1" / "session"
    assert _points(_read(folder), "session/best_val_bpb") == [
        (3, pytest.approx(1.5, rel=1e-6)), (5, pytest.approx(1.4, rel=1e-6)), (9, pytest.approx(1.375, rel=1e-6))]

    tb.incumbent_line(tmp_path, "s1", [(3, 1.5), (5, 1.25)])
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    assert _points(_read(folder), "session/best_val_bpb") == [(3, pytest.approx(1.5, rel=1e-6)), (5, pytest.approx(1.25, rel=1e-6))]


def test_the_command_serves_on_loopback_only(tmp_path: Path) -> None:
    argv = tb.command(tmp_path, "s1")
    assert argv[:3] == [sys.executable, "-m", "tensorboard.main"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv.count("--host") == 1 and not any("0.0.0.0" in a or "bind_all" in a for a in argv)
    assert argv[argv.index("--logdir") + 1] == str(tmp_path / "tb" / "s1")
    every = tb.command(tmp_path, None)
    assert every[every.index("--logdir") + 1] == str(tmp_path / "tb")


def _cli(root: Path, *argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="overnight")
    parser.add_argument("-C", "--workspace")
    tb.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["-C", str(root), "tensorboard", *argv])
    out = io.StringIO()
    code = args.func(args, Console(file=out, width=10_000, soft_wrap=True))
    return code, out.getvalue()


def test_the_command_says_when_there_is_nothing_to_show_yet(tmp_path: Path) -> None:
    code, text = _cli(tmp_path)
    assert code == 1
    assert f"no TensorBoard files yet under {tmp_path / '.overnight' / 'tb'}" in text
    assert "tensorboard = true in overnight.toml" in text

    # A session's folder with no event files in it is still nothing to show.
    (tmp_path / ".overnight" / "tb" / "s1" / "exp0001" / "run1").mkdir(parents=True)
    code, text = _cli(tmp_path, "--tag", "s1")
    assert code == 1 and f"no TensorBoard files yet under {tmp_path / '.overnight' / 'tb' / 's1'}" in text


def test_the_command_prints_the_command_line_once_there_are_files(tmp_path: Path) -> None:
    _write(tmp_path / ".overnight")
    code, text = _cli(tmp_path, "--tag", "s1")
    assert code == 0
    assert shlex.join(tb.command(tmp_path / ".overnight", "s1")) in text
    code, _ = _cli(tmp_path, "--tag", "other")
    assert code == 1


def test_start_runs_tensorboard_and_returns_its_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / ".overnight")
    started: list[list[str]] = []

    def fake_run(argv: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        started.append(argv)
        return subprocess.CompletedProcess(argv, 3)

    monkeypatch.setattr(subprocess, "run", fake_run)
    code, _ = _cli(tmp_path, "--start")
    assert code == 3
    assert started == [tb.command(tmp_path / ".overnight", None)]


def test_writing_never_imports_torch_into_the_daemon(tmp_path: Path) -> None:
    """The daemon never imports torch (it would cost it ~200 MB and a second or more); recording a run must not."""
    code = ("import sys; from overnight.daemon import tensorboard_log as tb; "
            f"tb.write_run(__import__('pathlib').Path({str(tmp_path)!r}), 's1', experiment_id=1, run=1, status='ok', "
            "curve=[(1, 0.5, 3.0)], val_bpb=1.0, holdout_bpb=None, ood_bpb=None, train_bpb=None, steps=1, "
            "tokens_per_s=None, wall_seconds=None, description='d'); "
            "tb.incumbent_line(__import__('pathlib').Path(" + repr(str(tmp_path)) + "), 's1', [(1, 1.0)]); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert _points(_read(tmp_path / "tb" / "s1" / "exp0001" / "run1"), "eval/val_bpb") == [(1, pytest.approx(1.0))]

"""A real (tiny) training run through the progress channel, then the frozen evaluation."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import msgpack
import prepare
import pytest
from conftest import TRAINER, run_py


def run_train(script: Path, env: dict[str, str], cwd: Path) -> tuple[int, list[dict], str]:
    r_fd, w_fd = os.pipe()
    env = {**env, "OVERNIGHT_CHANNEL_FD": str(w_fd)}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, cwd=cwd, pass_fds=(w_fd,),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(w_fd)
    unpacker = msgpack.Unpacker(raw=False)
    frames: list[dict] = []
    with os.fdopen(r_fd, "rb") as r:
        while block := r.read1(65536) if hasattr(r, "read1") else r.read(65536):
            unpacker.feed(block)
            frames.extend(unpacker)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, frames, err


@pytest.mark.timeout(90)
def test_tiny_training_run_reports_frames_and_evaluates(env: dict[str, str],
                                                        tmp_path: Path) -> None:
    env.update(OVERNIGHT_BUDGET_S="3", OVERNIGHT_BUDGET_CLOCK="wall")
    rc, frames, err = run_train(TRAINER / "train.py", env, tmp_path)
    assert rc == 0, err
    types = [f["type"] for f in frames]
    assert types[0] == "start" and types[-1] == "end" and "progress" in types
    start, end = frames[0], frames[-1]
    assert set(start) == {"type", "n_params", "device", "budget_s", "clock", "threads"}
    assert start["device"] == "cpu" and start["clock"] == "wall" and start["budget_s"] == 3.0
    for p in frames[1:-1]:
        assert set(p) == {"type", "step", "elapsed", "wall", "train_loss", "tokens_per_s", "lr"}
        assert math.isfinite(p["train_loss"]) and p["tokens_per_s"] > 0
    assert set(end) == {"type", "steps", "elapsed", "wall", "tokens", "peak_mem_mb"}
    assert end["steps"] > 0 and 3.0 <= end["elapsed"] < 6.0 and end["peak_mem_mb"] > 0
    model = Path(env["OVERNIGHT_MODEL_OUT"])
    assert model.is_file()
    r = run_py([str(TRAINER / "prepare.py"), "evaluate", "--model", str(model),
                "--splits", "val,holdout"], env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert math.isfinite(out["val_bpb"]) and out["val_bpb"] < 8.0
    assert math.isfinite(out["holdout_bpb"]) and out["holdout_bpb"] < 8.0


@pytest.mark.timeout(60)
def test_nan_loss_sends_error_frame_and_exits_3(env: dict[str, str], tmp_path: Path) -> None:
    src = (TRAINER / "train.py").read_text()
    patched = src.replace("loss_value = loss.item()", "loss_value = loss.item() * float('nan')")
    assert patched != src
    (tmp_path / "train.py").write_text(patched)
    (tmp_path / "prepare.py").write_text((TRAINER / "prepare.py").read_text())
    env.update(OVERNIGHT_BUDGET_S="30")
    rc, frames, err = run_train(tmp_path / "train.py", env, tmp_path)
    assert rc == 3, err
    assert frames[0]["type"] == "start"
    assert frames[-1]["type"] == "error" and "nan" in frames[-1]["message"].lower()
    assert not Path(env["OVERNIGHT_MODEL_OUT"]).exists()


@pytest.mark.timeout(30)
def test_cpu_clock_counts_cpu_time_per_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    monkeypatch.delenv("OVERNIGHT_BUDGET_CLOCK", raising=False)
    b = prepare.Budget(seconds=0.5, device="cpu", threads=1)
    assert b.clock == "cpu"  # auto -> cpu without CUDA
    b.start()
    time.sleep(0.2)  # sleeping burns no CPU time
    assert b.elapsed() < 0.1 and not b.done()
    while not b.done():
        pass
    # stops on 0.5 s of CPU time, or on the wall cap (2x) if another process took the core
    assert b.elapsed() >= 0.5 or b.wall() >= 1.0
    cap = prepare.Budget(seconds=0.1, clock="cpu", device="cpu", threads=1)
    cap.start()
    time.sleep(0.25)
    assert cap.done() and cap.elapsed() < 0.1  # done through the wall cap alone
    w = prepare.Budget(seconds=0.1, clock="wall", device="cpu")
    w.start()
    time.sleep(0.15)
    assert w.done()
    with pytest.raises(ValueError):
        prepare.Budget(clock="sundial")


@pytest.mark.timeout(30)
def test_reporter_prints_without_channel(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OVERNIGHT_CHANNEL_FD", raising=False)
    prepare.Reporter().send({"type": "progress", "step": 5, "train_loss": 2.5})
    assert "step=5" in capsys.readouterr().out


@pytest.mark.timeout(30)
def test_train_py_config_block_is_plain_literals() -> None:
    import ast
    tree = ast.parse((TRAINER / "train.py").read_text())
    config = {}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
            break
        if isinstance(node, ast.Assign):
            assert isinstance(node.value, ast.Constant), ast.dump(node)
            config[node.targets[0].id] = node.value.value  # type: ignore[attr-defined]
    assert {"LR", "BATCH_SIZE", "SEQ_LEN", "N_LAYER", "N_EMBD", "COMPILE"} <= set(config)
    assert not any("SEED" in k for k in config)
    assert all(isinstance(v, (int, float)) for v in config.values())

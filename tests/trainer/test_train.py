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
    _, err = proc.communicate(timeout=150)
    return proc.returncode, frames, err


@pytest.mark.timeout(120)
def test_tiny_training_run_reports_frames_and_evaluates(env: dict[str, str],
                                                        tmp_path: Path) -> None:
    env.update(OVERNIGHT_BUDGET_S="3", OVERNIGHT_THREADS="1")  # the default clock: steps
    rc, frames, err = run_train(TRAINER / "train.py", env, tmp_path)
    assert rc == 0, err
    types = [f["type"] for f in frames]
    assert types[0] == "start" and types[-1] == "end" and "progress" in types
    assert types.count("calibrated") == 1
    start, calibrated, end = frames[0], frames[types.index("calibrated")], frames[-1]
    assert set(start) == {"type", "n_params", "device", "budget_s", "clock", "threads"}
    assert start["device"] == "cpu" and start["clock"] == "steps" and start["budget_s"] == 3.0
    assert start["n_params"] == 279_168 and start["threads"] == 1
    for p in frames:
        if p["type"] == "progress":
            assert set(p) == {"type", "step", "elapsed", "wall", "train_loss", "tokens_per_s", "lr"}
            assert math.isfinite(p["train_loss"]) and p["tokens_per_s"] > 0
    assert set(calibrated) == {"type", "steps", "step_seconds", "calibration_steps", "anchored"}
    assert set(end) == {"type", "steps", "elapsed", "wall", "tokens", "peak_mem_mb", "steps_planned"}
    # The run trains exactly the calibrated number of steps; its budget-clock seconds are the budget.
    assert end["steps"] == end["steps_planned"] == calibrated["steps"] > calibrated["calibration_steps"] > 0
    assert end["steps"] == round(3.0 / calibrated["step_seconds"])
    assert end["elapsed"] == pytest.approx(3.0) and end["tokens"] == end["steps"] * 16 * 64
    assert end["peak_mem_mb"] > 0
    model = Path(env["OVERNIGHT_MODEL_OUT"])
    assert model.is_file() and model.suffix == ".ovm"
    r = run_py(["-I", str(TRAINER / "prepare.py"), "evaluate", "--model", str(model),
                "--splits", "val,holdout,ood"], env, timeout=90)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for split in ("val", "holdout", "ood", "train"):
        assert math.isfinite(out[f"{split}_bpb"]) and out[f"{split}_bpb"] < 8.0
    assert all(out["checks"][name]["ok"] for name in ("load", "batch", "causal", "finite", "normalized"))


@pytest.mark.timeout(120)
def test_scale_widens_and_deepens_the_default_model(env: dict[str, str], tmp_path: Path) -> None:
    env.update(OVERNIGHT_BUDGET_S="0.2", OVERNIGHT_THREADS="1", OVERNIGHT_SCALE="2")
    rc, frames, err = run_train(TRAINER / "train.py", env, tmp_path)
    assert rc == 0, err

    def gpt_params(width: int, layers: int) -> int:  # embeddings, blocks, final norm, head of train.py's GPT
        return 256 * width + 64 * width + layers * (12 * width * width + 13 * width) + 2 * width + 256 * width
    assert gpt_params(96, 2) == 279_168  # the default config: the formula is the model
    assert frames[0]["n_params"] == gpt_params(192, 4)  # twice as wide (a multiple of N_HEAD), twice as deep
    env["OVERNIGHT_SCALE"] = "-1"
    r = run_py([str(TRAINER / "train.py")], env, cwd=tmp_path)
    assert r.returncode != 0 and "OVERNIGHT_SCALE='-1': expected a positive number" in r.stderr


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

"""The warm evaluator: one sandboxed `prepare.py serve` per session, a forked child per model.

A real model from a real (one-second) training run, the real pinned harness and data, the real sandbox."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from overnight.daemon.evaluator import Evaluator, serve_command
from overnight.daemon.harness import isolated
from overnight.daemon.sandbox import SandboxUnavailable, detect

try:
    SANDBOX = detect("bwrap")
except SandboxUnavailable as exc:  # pragma: no cover - CI has bubblewrap
    pytest.skip(f"no usable bubblewrap here: {exc}", allow_module_level=True)

TRAINER = Path(__file__).resolve().parents[2] / "trainer"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "model.ovm"
    env = {**os.environ, "OVERNIGHT_BUDGET_S": "1", "OVERNIGHT_THREADS": "1", "OVERNIGHT_MODEL_OUT": str(out),
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "train.py"], cwd=TRAINER, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def _evaluator(tmp_path: Path) -> Evaluator:
    harness = tmp_path / "harness" / "trainer"
    harness.mkdir(parents=True)
    shutil.copy(TRAINER / "prepare.py", harness / "prepare.py")
    command = serve_command(("{python}", "prepare.py", "evaluate"))
    assert command is not None
    return Evaluator(sandbox=SANDBOX, command=tuple(isolated(command)), harness_dir=tmp_path / "harness",
                     workdir="trainer", data_dir=Path(os.environ["OVERNIGHT_DATA_DIR"]), folder=tmp_path / "models",
                     log_path=tmp_path / "evaluator.log", memory_limit_gb=4.0, eval_cpu=300.0, hang_window=60.0)


def _copy(model: Path, tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copy(model, dest)
    return dest


def test_one_process_scores_many_models_each_in_its_own_child(model: Path, tmp_path: Path) -> None:
    ev = _evaluator(tmp_path)
    try:
        first = ev.evaluate(_copy(model, tmp_path, "a.ovm"), "val,holdout,ood", 1)
        second = ev.evaluate(_copy(model, tmp_path, "b.ovm"), "val,holdout,ood", 1)
        assert first.code == 0 and second.code == 0, (first, second, (tmp_path / "evaluator.log").read_text())
        assert first.result is not None and second.result is not None
        # The same model scores the same, and the checks ran for each.
        assert first.result["val_bpb"] == second.result["val_bpb"]
        assert first.result["checks"]["causal"]["ok"] and second.result["checks"]["batch"]["ok"]
        assert ev.started == 1
        assert list((tmp_path / "models").iterdir()) == []  # each model leaves with its answer
    finally:
        ev.close()


def test_the_process_outlives_the_threads_that_use_it(model: Path, tmp_path: Path) -> None:
    # Each run calls evaluate() from a thread of its own that then ends; the parent-death signal is tied to the
    # thread that forked, so the evaluator must not have been forked by one of them.
    import threading

    ev = _evaluator(tmp_path)
    answers: list[Any] = []
    try:
        for name in ("a.ovm", "b.ovm"):
            path = _copy(model, tmp_path, name)
            thread = threading.Thread(target=lambda p=path: answers.append(ev.evaluate(p, "val", 1)))
            thread.start()
            thread.join()
        assert [a.code for a in answers] == [0, 0]
        assert ev.started == 1
    finally:
        ev.close()


def test_a_refused_model_does_not_cost_the_warm_process(model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ovm"
    with zipfile.ZipFile(model) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, b"\x80\x04K\x01." if name.endswith(".pt") else src.read(name))
    ev = _evaluator(tmp_path)
    try:
        refused = ev.evaluate(bad, "val", 1)
        assert refused.code == 4 and refused.result is not None and refused.result["check"] == "load"
        ok = ev.evaluate(_copy(model, tmp_path, "a.ovm"), "val", 1)
        assert ok.code == 0 and ev.started == 1
    finally:
        ev.close()


def test_a_dead_evaluator_is_started_again_for_the_next_model(model: Path, tmp_path: Path) -> None:
    ev = _evaluator(tmp_path)
    try:
        assert ev.evaluate(_copy(model, tmp_path, "a.ovm"), "val", 1).code == 0
        assert ev._proc is not None
        os.killpg(ev._proc.pid, 9)
        ev._proc.wait()
        again = ev.evaluate(_copy(model, tmp_path, "b.ovm"), "val", 1)
        assert again.code == 0 and ev.started == 2
    finally:
        ev.close()


def test_a_custom_evaluate_command_has_no_warm_form() -> None:
    assert serve_command(("{python}", "score.py")) is None
    assert serve_command(("{python}", "prepare.py", "evaluate")) == ("{python}", "prepare.py", "serve", "--models", "{model}")

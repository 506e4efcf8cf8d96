"""A second real editor: Debian's Neovim, headless, attached through `overnight attach` with the user's config from
docs/editors/overnight.lua. It opens the training script, reads the per-line history (inlay hints, hover), sees
the CodeLenses, runs the Accept lens and sees its buffer change, as a Neovim user does.

The session is made by the real loop (git, journal, workspace) with a fake executor (no training: the
measurement is tested elsewhere); the daemon is a real process, started paused, serving that session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from overnight.daemon.config import load_config
from overnight.daemon.loop import Loop
from overnight.protocol import types as t

from ..integration.test_loop_decisions import TRAIN, FakeExecutor, RecordingAgent, _workspace

pytestmark = [
    pytest.mark.skipif(shutil.which("nvim") is None, reason="Neovim is not installed (setup.sh installs Debian's neovim)"),
    pytest.mark.timeout(300),
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OVERNIGHT = [sys.executable, "-m", "overnight.daemon.cli"]


def test_neovim_reads_the_history_and_accepts_a_suggestion_through_its_lens(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    _workspace(root, [])
    train = (root / TRAIN).read_text()
    assert "LR = 3e-3" in train
    proposal = train.replace("LR = 3e-3", "LR = 4e-3", 1) + "\n# FAKE val=2.5\n"
    (root / "proposals.jsonl").write_text(json.dumps({"description": "raise the learning rate", "files": {TRAIN: proposal}}) + "\n")
    Loop(load_config(root), RecordingAgent(root / "proposals.jsonl"), executor=FakeExecutor()).run(max_experiments=1)

    started = subprocess.run([*OVERNIGHT, "daemon", "--detach", "--paused"], cwd=root, capture_output=True, text=True,
                             timeout=120)
    assert started.returncode == 0, started.stderr
    pid = json.loads((root / ".overnight" / "daemon.json").read_text())["pid"]
    try:
        out = tmp_path / "nvim.json"
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               "OVERNIGHT_LUA": str(REPO / "docs" / "editors" / "overnight.lua"), "TRAIN": str(root / TRAIN),
               "OUT": str(out), "ACCEPT_OLD": "LR = 3e-3", "ACCEPT_TEXT": "LR = 4e-3", "HOME": str(tmp_path)}
        nvim = subprocess.run(["nvim", "--headless", "-n", "-u", "NONE", "-i", "NONE", "-c",
                               f"luafile {HERE / 'neovim' / 'drive.lua'}"], cwd=root, env=env, capture_output=True,
                              text=True, timeout=180)
        assert out.exists(), f"Neovim wrote nothing (rc {nvim.returncode}): {nvim.stdout[-2000:]} {nvim.stderr[-2000:]}"
        seen = json.loads(out.read_text())
        assert "error" not in seen, seen
        assert seen["steps"] == ["initialized", "hints", "hover", "lenses", "accepted"]
        assert t.SERVER_COMMAND_ACCEPT_SUGGESTION in seen["commands"]
        # The history: the LR line carries the kept experiment; the hover names it and says how to see it.
        lr_line = next(i for i, line in enumerate(train.splitlines()) if line.startswith("LR = "))
        assert any(h["line"] == lr_line and h["label"].startswith("▸ #") and "keep" in h["label"] for h in seen["hints"]), seen
        assert "raise the learning rate" in seen["hover"] and "`overnight show " in seen["hover"]
        # Lenses carry the server's commands; running the Accept lens changed the buffer, not the file.
        assert {(lens["command"]) for lens in seen["lenses"]} >= {t.SERVER_COMMAND_ACCEPT_SUGGESTION,
                                                                  t.SERVER_COMMAND_REJECT_SUGGESTION}
        assert seen["accepted"] is True and seen["modified"] is True
        assert any("accepted" in m for m in seen["messages"]), seen["messages"]
        assert (root / TRAIN).read_text() == train
    finally:
        subprocess.run([*OVERNIGHT, "shutdown"], cwd=root, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.2)

"""`overnight run` as a user runs it, in a subprocess: kill -9 and resume, one loop per workspace, bad data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from ..conftest import git

OVERNIGHT = [sys.executable, "-m", "overnight.daemon.cli"]


def _replay(root: Path, n: int) -> None:
    """n harmless proposals (comment-only edits): each is a real run that will be discarded."""
    train = (root / "trainer" / "train.py").read_text()
    lines = [
        json.dumps({"description": f"note {i}", "files": {"trainer/train.py": train + f"\n# note {i}\n"}})
        for i in range(n)
    ]
    (root / "proposals.jsonl").write_text("\n".join(lines) + "\n")


def _statuses(root: Path) -> list[tuple[int, str, str, int]]:
    path = root / ".overnight" / "journal.db"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT id, kind, status, attempts FROM experiments ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _start(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*OVERNIGHT, "run", "--agent", "replay", *args], cwd=root, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )


@pytest.mark.timeout(400)
def test_kill_9_mid_run_then_resume(make_workspace: Callable[..., Path]) -> None:
    root = make_workspace(budget=4.0, replay_file="proposals.jsonl")
    _replay(root, 2)
    proc = _start(root, "--max-experiments", "2")

    # Kill the loop while the first real experiment (#2, after the baseline #1) is training.
    def cmdline(child: psutil.Process) -> str:
        try:
            return " ".join(child.cmdline())
        except psutil.Error:  # gone, or a zombie not reaped yet
            return ""

    def training() -> bool:
        rows = _statuses(root)
        return any(r[1] == "experiment" and r[2] == "running" for r in rows) and any(
            "train.py" in cmdline(c) for c in psutil.Process(proc.pid).children(recursive=True)
        )

    _wait(training, 200, "an experiment in flight")
    children = psutil.Process(proc.pid).children(recursive=True)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The training run dies with the loop: no orphan keeps the CPU busy.
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
    assert _statuses(root)[-1][2] == "running"

    # A second start resumes the same session: the interrupted experiment is re-run from its commit.
    out = subprocess.run([*OVERNIGHT, "run", "--agent", "replay", "--max-experiments", "1"], cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "resuming session" in out.stdout and "resuming #2" in out.stdout
    rows = _statuses(root)
    assert [(r[0], r[1]) for r in rows] == [(1, "baseline"), (2, "experiment"), (3, "experiment")]
    assert all(r[2] in ("keep", "discard") for r in rows)
    assert rows[1][3] == 2  # two attempts: the killed one and the re-run
    db = sqlite3.connect(root / ".overnight" / "journal.db")
    (tag,), = db.execute("SELECT tag FROM sessions").fetchall()
    db.close()
    assert git(root, "rev-parse", f"refs/overnight/{tag}/2")
    assert git(root / ".overnight" / "worktrees" / tag, "status", "--porcelain") == ""


@pytest.mark.timeout(300)
def test_one_loop_per_workspace(make_workspace: Callable[..., Path]) -> None:
    root = make_workspace(budget=4.0, replay_file="proposals.jsonl")
    _replay(root, 1)
    first = _start(root, "--max-experiments", "1")
    try:
        _wait(lambda: bool(_statuses(root)), 120, "the first loop to start")
        second = subprocess.run([*OVERNIGHT, "run"], cwd=root, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert "one loop per workspace" in second.stderr and str(first.pid) in second.stderr
    finally:
        first.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out
    assert "stopped by the user" in out
    # Ctrl-C left the experiment in flight marked as such, for the next start to re-run.
    assert _statuses(root)[-1][2] in ("interrupted", "keep")


@pytest.mark.timeout(120)
def test_corrupt_data_gets_a_clear_message(make_workspace: Callable[..., Path], corpus_dir: Path, tmp_path: Path) -> None:
    root = make_workspace()
    data = tmp_path / "data"
    shutil.copytree(corpus_dir, data)
    val = data / "val.bin"
    val.write_bytes(b"\0" * val.stat().st_size)
    env = {**os.environ, "OVERNIGHT_DATA_DIR": str(data)}
    out = subprocess.run([*OVERNIGHT, "run"], cwd=root, capture_output=True, text=True, timeout=100, env=env)
    assert out.returncode == 1
    assert "could not prepare the data" in out.stderr and "val.bin" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", [["run"], ["daemon", "--detach"]])
def test_not_a_git_repository(tmp_path: Path, command: list[str]) -> None:
    out = subprocess.run([*OVERNIGHT, "-C", str(tmp_path), *command], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "not a git repository" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / ".overnight" / "daemon.json").exists()


@pytest.mark.timeout(300)
def test_a_run_that_rewrites_the_data_is_refused_sealed_and_caught_unsealed(
        make_workspace: Callable[..., Path], corpus_dir: Path, tmp_path: Path) -> None:
    """Sealed, the data is read-only to a run: the write fails and the loop goes on. Unsealed (sandbox = "none"),
    train.py could rewrite the data and its manifest together; the loop pins the manifest's hash at start and stops
    when a run changed it."""
    data = tmp_path / "data"
    shutil.copytree(corpus_dir, data)
    before = (data / "manifest.json").read_bytes()
    env = {**os.environ, "OVERNIGHT_DATA_DIR": str(data)}
    for name, sandbox in (("sealed", "bwrap"), ("unsealed", "none")):
        root = make_workspace(name, replay_file="proposals.jsonl", sandbox=sandbox)
        train = (root / "trainer" / "train.py").read_text()
        cheat = train.replace("import math", "import math\nimport os\nopen(os.path.join(os.environ['OVERNIGHT_DATA_DIR'], "
                                             "'manifest.json'), 'a').write(' ')", 1)
        (root / "proposals.jsonl").write_text(json.dumps({"description": "cheat", "files": {"trainer/train.py": cheat}}) + "\n")
        out = subprocess.run([*OVERNIGHT, "run", "--agent", "replay"], cwd=root, capture_output=True, text=True,
                             timeout=280, env=env)
        if sandbox == "bwrap":
            assert out.returncode == 0, out.stdout + out.stderr
            assert "Read-only file system" in out.stdout
            assert (data / "manifest.json").read_bytes() == before
        else:
            assert out.returncode == 1, out.stdout + out.stderr
            assert "changed during the run" in out.stderr
            assert "NOT sealed" in out.stdout + out.stderr
        assert [r[2] for r in _statuses(root)] == ["keep", "crash"]


@pytest.mark.timeout(300)
def test_the_cli_as_a_second_client_of_a_detached_daemon(make_workspace: Callable[..., Path]) -> None:
    root = make_workspace(replay_file="proposals.jsonl")
    _replay(root, 5)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*OVERNIGHT, *args], cwd=root, capture_output=True, text=True, timeout=90)

    none = cli("status")
    assert none.returncode == 1 and "no Overnight daemon runs" in none.stderr
    started = cli("daemon", "--detach", "--agent", "replay")
    assert started.returncode == 0, started.stderr
    assert "daemon started: pid" in started.stdout
    again = cli("daemon", "--detach")
    assert again.returncode == 0 and "already runs" in again.stdout
    pid = json.loads((root / ".overnight" / "daemon.json").read_text())["pid"]
    # `overnight run` on the same workspace is refused while the daemon's loop holds it.
    _wait(lambda: bool(_statuses(root)), 60, "the daemon's loop to start")
    busy = cli("run")
    assert busy.returncode == 1 and "one loop per workspace" in busy.stderr
    status = cli("status")
    assert status.returncode == 0 and "agent replay" in status.stdout
    assert cli("pause", "--reason", "reading the results").returncode == 0
    redirect = cli("redirect", "try rotary embeddings")
    assert redirect.returncode == 0 and "feedback #" in redirect.stdout
    stop = cli("stop", "--now")
    assert stop.returncode == 0
    # The daemon outlives its loop: it still answers, the loop is stopped, until `shutdown`.
    _wait(lambda: "daemon: stopped" in cli("status").stdout, 60, "the stopped state")
    assert psutil.pid_exists(pid)
    assert cli("shutdown").returncode == 0
    _wait(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 90,
          "the daemon to exit")
    assert not (root / ".overnight" / "daemon.json").exists()
    log = (root / ".overnight" / "daemon.log").read_text()
    assert "listening on 127.0.0.1:" in log and "loop stopped" in log


@pytest.mark.timeout(200)
def test_a_daemon_started_paused_runs_nothing_until_resumed(make_workspace: Callable[..., Path]) -> None:
    root = make_workspace()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*OVERNIGHT, *args], cwd=root, capture_output=True, text=True, timeout=90)

    assert cli("daemon", "--detach", "--paused").returncode == 0
    _wait(lambda: "daemon: paused" in cli("status").stdout, 60, "the paused state")
    time.sleep(2)
    assert _statuses(root) == []  # not even the baseline
    assert cli("shutdown").returncode == 0
    _wait(lambda: not (root / ".overnight" / "daemon.json").exists(), 60, "the daemon to exit")


def _in_a_terminal(root: Path, *args: str) -> tuple[subprocess.Popen[bytes], list[bytes]]:
    """`overnight run` with a pseudo-terminal as its terminal: the live view (rich) is on, as for a person."""
    import pty
    import threading

    master, slave = pty.openpty()
    proc = subprocess.Popen([*OVERNIGHT, "run", "--agent", "replay", *args], cwd=root, stdin=slave, stdout=slave,
                            stderr=slave, env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"})
    os.close(slave)
    output: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            output.append(chunk)

    threading.Thread(target=drain, daemon=True).start()
    return proc, output


@pytest.mark.timeout(300)
def test_ctrl_c_in_a_terminal_stops_cleanly_and_twice_exits_at_once(make_workspace: Callable[..., Path]) -> None:
    root = make_workspace(budget=30.0, replay_file="proposals.jsonl")
    _replay(root, 2)
    # Once: a clean stop while the live view renders (the run in flight is killed, re-run next time).
    proc, output = _in_a_terminal(root, "--max-experiments", "1")
    _wait(lambda: bool(_statuses(root)) and _statuses(root)[-1][2] == "running", 120, "a run to start")
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0, b"".join(output)[-2000:]
    assert b"stopped by the user" in b"".join(output)
    # Twice: exit 130 at once, whatever the view and the loop were doing.
    proc, output = _in_a_terminal(root, "--max-experiments", "1")
    _wait(lambda: bool(_statuses(root)) and _statuses(root)[-1][2] == "running", 120, "a run to start")
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    # The second while the first is being acted on (a stop that is already over leaves nothing to force).
    time.sleep(0.02)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    assert time.monotonic() - sent < 1.5
    # Nothing lost: the next start resumes the experiment in flight, and the journal is sound.
    out = subprocess.run([*OVERNIGHT, "results", "--format", "tsv"], cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr

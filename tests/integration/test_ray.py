"""The Ray executor against a real local Ray cluster (`ray start --head`, two CPUs: two worker processes), with real
(two-second) training runs sealed on the workers: two slots, runs in flight at once, and a stop that cancels them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'overnight[ray]'")

from overnight.daemon.agents.replay import ReplayAgent  # noqa: E402
from overnight.daemon.cli import main  # noqa: E402
from overnight.daemon.config import load_config  # noqa: E402
from overnight.daemon.events import Event, RunStarted  # noqa: E402
from overnight.daemon.journal import Journal  # noqa: E402
from overnight.daemon.loop import Loop  # noqa: E402

from ..conftest import commit_all, write_config  # noqa: E402

TRAIN = "trainer/train.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ray_cli = shutil.which("ray")
    if ray_cli is None:
        pytest.skip("the `ray` command is not on PATH")
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
                              "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                             env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    address = f"127.0.0.1:{port}"
    try:
        yield address
    finally:
        try:
            ray.shutdown()
        finally:
            subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _workspace(root: Path, address: str, proposals: list[tuple[str, str]]) -> Path:
    assert main(["init", str(root)]) == 0
    write_config(root, agent="replay", replay_file="proposals.jsonl", slots=2, grace=40.0)
    with (root / "overnight.toml").open("a") as fh:
        fh.write(f'\n[executor]\nkind = "ray"\naddress = "{address}"\n')
    commit_all(root)
    train = (root / TRAIN).read_text()
    (root / "proposals.jsonl").write_text("".join(
        json.dumps({"description": d, "files": {TRAIN: train.replace("LR = 3e-3", f"LR = {lr}", 1)}}) + "\n"
        for d, lr in proposals))
    return root


@pytest.mark.timeout(900)
def test_a_session_on_a_ray_cluster_runs_two_at_once_and_records_every_run(cluster: str, tmp_path: Path) -> None:
    root = _workspace(tmp_path / "ws", cluster, [("lr 2e-3", "2e-3"), ("lr 4e-3", "4e-3"), ("lr 1e-3", "1e-3")])
    events: list[Event] = []
    overlap = threading.Event()
    loop = Loop(load_config(root), ReplayAgent.from_file(root / "proposals.jsonl"), listener=events.append)

    def watch(event: Event) -> None:
        events.append(event)
        if isinstance(event, RunStarted) and len(loop._flights) >= 2:  # noqa: SLF001 - the scheduler's own view
            overlap.set()

    loop.listener = watch
    summary = loop.run()
    assert summary.stopped == "the replay agent has nothing more to propose"
    with Journal(root / ".overnight" / "journal.db") as j:
        exps = j.experiments()
        assert [e.kind for e in exps] == ["baseline", "experiment", "experiment", "experiment"]
        assert all(e.is_final for e in exps)
        runs = [r for e in exps for r in j.runs(e.id)]
    assert runs and all(r.status == "ok" and r.val_bpb and 1.0 < r.val_bpb < 8.0 for r in runs)
    assert all("ran on a Ray worker" in Path(r.log_path or "").read_text() for r in runs)
    assert overlap.is_set()  # two candidates' runs were in flight at once on the two worker CPUs


@pytest.mark.timeout(600)
def test_a_stop_cancels_the_ray_tasks_in_flight(cluster: str, tmp_path: Path) -> None:
    root = _workspace(tmp_path / "ws", cluster, [("lr 2e-3", "2e-3")])
    events: list[Event] = []
    loop = Loop(load_config(root), ReplayAgent.from_file(root / "proposals.jsonl"), listener=events.append)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while not any(isinstance(e, RunStarted) for e in events):
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.2)
    time.sleep(2)
    loop.stop()
    thread.join(timeout=120)
    assert not thread.is_alive()
    with Journal(root / ".overnight" / "journal.db") as j:
        (baseline,) = j.experiments()
        assert baseline.status == "interrupted" and j.runs(baseline.id) == []  # re-runs on the next start
    deadline = time.monotonic() + 20  # the worker was killed; its sandbox dies with it (die-with-parent)
    while (left := subprocess.run(["pgrep", "-f", "/overnight/tree"], capture_output=True, text=True).stdout):
        assert time.monotonic() < deadline, left
        time.sleep(0.5)

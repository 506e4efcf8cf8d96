"""Request latency of the daemon with 1,000 experiments in the journal, and its memory at rest.

Builds a workspace with `overnight init`, fills its journal with 1,000 experiments (each with a
diff and two runs with 60-point loss curves, as a long night leaves it), starts the real daemon
as a subprocess (`overnight daemon --paused`, so no training competes), connects a client over
loopback TCP, and times each request from send to parsed reply. Prints p50/p99 and writes
bench/results/daemon.json and bench/results/daemon.md.

    python bench/daemon_latency.py [--requests 300]

Not measured yet: hover, inlay hints and CodeLens — the daemon does not serve them yet.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import git
import psutil

from overnight.daemon.cli import main as overnight
from overnight.daemon.config import load_config
from overnight.daemon.journal import Journal, Run, Session
from overnight.daemon.server import discovery
from overnight.daemon.server.client import DaemonClient
from overnight.protocol import types as t

RESULTS = Path(__file__).resolve().parent / "results"
N_EXPERIMENTS = 1000


def fill_journal(root: Path) -> None:
    cfg = load_config(root)
    head = git.Repo(root).head.commit.hexsha
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    rng = random.Random(0)
    with Journal(cfg.journal_path) as j:
        j.create_session(Session("bench", "overnight/bench", head, {}, config, time.time()))
        for i in range(N_EXPERIMENTS):
            kind = "baseline" if i == 0 else "experiment"
            exp_id = j.start_experiment(tag="bench", kind=kind, parent_commit=head, agent="sweep",
                                        description=f"LR 0.003 → {0.003 * rng.uniform(0.5, 2):.4f}")
            j.set_commit(exp_id, head, f"refs/overnight/bench/{exp_id}", "-LR = 3e-3\n+LR = 4e-3\n" * 20)
            values = [2.3 + rng.gauss(0, 0.05) for _ in range(2)]
            for k, v in enumerate(values):
                curve = [(s * 30, s * 1.0, 5.5 - s * 0.05) for s in range(60)]
                j.add_run(Run(experiment_id=exp_id, seed=exp_id * 100 + k, status="ok", started=0.0, finished=60.0,
                              val_bpb=v, holdout_bpb=v + 0.01, steps=1800, curve=curve))
            status = "keep" if kind == "baseline" or rng.random() < 0.05 else "discard"
            evidence = {"sigma": 0.05, "incumbent_mean": 2.3, "threshold": 0.14}
            j.finish_experiment(exp_id, status=status, decided_by="keep rule", reason="bench", evidence=evidence,
                                val_bpb=sum(values) / 2)


async def measure(state_dir: Path, n: int) -> dict[str, list[float]]:
    client = DaemonClient()
    await client.connect_workspace(state_dir)
    rng = random.Random(1)
    calls = {
        "overnight/status": lambda: t.StatusParams(),
        "overnight/experiments/list (50 per page)": lambda: t.ListExperimentsParams(offset=rng.randrange(0, 900), limit=50),
        "overnight/experiments/get": lambda: t.GetExperimentParams(id=rng.randrange(1, N_EXPERIMENTS + 1)),
    }
    methods = {"overnight/status": t.OVERNIGHT_STATUS, "overnight/experiments/list (50 per page)": t.OVERNIGHT_EXPERIMENTS_LIST,
               "overnight/experiments/get": t.OVERNIGHT_EXPERIMENTS_GET}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(n):
        for name, params in calls.items():
            started = time.perf_counter()
            await client.request(methods[name], params())
            times[name].append((time.perf_counter() - started) * 1000)
    await client.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        assert overnight(["init", str(root)]) == 0
        fill_journal(root)
        state = root / ".overnight"
        proc = subprocess.Popen([sys.executable, "-m", "overnight.daemon.cli", "-C", str(root), "daemon", "--paused"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while discovery.read(state) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the daemon did not start")
                time.sleep(0.1)
            time.sleep(3)  # let start-up settle: data check, session resume
            rest_mb = psutil.Process(proc.pid).memory_info().rss / 2**20
            times = asyncio.run(measure(state, args.requests))
            after_mb = psutil.Process(proc.pid).memory_info().rss / 2**20
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    def pct(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]

    rows = {name: {"p50_ms": statistics.median(v), "p99_ms": pct(v, 99), "n": len(v)} for name, v in times.items()}
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, python {platform.python_version()}", "experiments": N_EXPERIMENTS,
        "requests": rows, "rss_at_rest_mb": rest_mb, "rss_after_requests_mb": after_mb,
    }
    lines = [
        "# Daemon latency and memory",
        "",
        f"`python bench/daemon_latency.py --requests {args.requests}` on {result['machine']} "
        f"({time.strftime('%Y-%m-%d')}): {N_EXPERIMENTS:,} experiments in the journal, one client over "
        "loopback TCP, each request timed from send to parsed reply.",
        "",
        "| request | p50 ms | p99 ms | n |",
        "|---|---:|---:|---:|",
        *[f"| `{name}` | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['n']} |" for name, r in rows.items()],
        "",
        f"Daemon memory (RSS) at rest: {rest_mb:.0f} MB; after the requests: {after_mb:.0f} MB.",
        "",
        "Hover, inlay hints and CodeLens are not served yet, so not measured yet.",
    ]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "daemon.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "daemon.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

"""Request latency of the daemon with 1,000 experiments (``--experiments N``) in the journal, and its memory at rest.

Builds a workspace with `overnight init`, fills its journal with 1,000 experiments (each with a
diff and two runs with 60-point loss curves, as a long night leaves it), starts the real daemon
as a subprocess (`overnight daemon --paused`, so no training competes), connects a client over
loopback TCP, and times each request from send to parsed reply. Prints p50/p99 and writes
bench/results/daemon.json and bench/results/daemon.md (daemon_without_history.* with --without-history).

    python bench/daemon_latency.py [--requests 300]

CodeLens is measured on the pending suggestion that the bench's kept experiments make (hunks
against the user's buffer, which has a line of its own at the top).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import os
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
from lsprotocol import types as lsp
from rich.progress import track

from overnight.daemon.annotate import History
from overnight.daemon.cli import main as overnight
from overnight.daemon.config import load_config
from overnight.daemon.journal import Journal, Run, Session
from overnight.daemon.server import discovery
from overnight.daemon.server.client import DaemonClient
from overnight.protocol import types as t

RESULTS = Path(__file__).resolve().parent / "results"
N_EXPERIMENTS = 1000  # --experiments


def fill_journal(root: Path, ledgers: bool = True) -> None:
    """1,000 experiments as the loop leaves them: a real commit each (one config constant changed),
    kept ones on the branch overnight/bench, the rest reset away but kept under their refs, and the
    per-line history the loop persists (``ledgers=False``: a journal from before it did)."""
    cfg = load_config(root)
    repo = git.Repo(root)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}
    rng = random.Random(0)
    scratch = root / ".overnight" / "bench-worktree"
    repo.git.worktree("add", "-q", "-b", "overnight/bench", str(scratch))
    wt = git.Repo(scratch)
    train = scratch / "trainer" / "train.py"
    ident = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    base = wt.head.commit.hexsha
    recorder = History(wt, max_versions=64)
    with Journal(cfg.journal_path) as j:
        frozen = {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in cfg.frozen}
        j.create_session(Session("bench", "overnight/bench", base, frozen, config, time.time()))
        # Thousands of real commits take minutes: show how far it is.
        for i in track(range(N_EXPERIMENTS), description=f"writing {N_EXPERIMENTS:,} experiments"):
            kind = "baseline" if i == 0 else "experiment"
            parent = wt.head.commit.hexsha
            status = "keep" if kind == "baseline" or rng.random() < 0.05 else "discard"
            description, commit, diff = "baseline", parent, ""
            if kind == "experiment":
                lines = train.read_text().splitlines(keepends=True)
                consts = [k for k, line in enumerate(lines[:40]) if line[:1].isupper() and " = " in line]
                k = rng.choice(consts)
                name = lines[k].split(" = ")[0]
                lines[k] = f"{name} = {1000 + i}  # bench\n"  # unique: every commit changes something
                train.write_text("".join(lines))
                wt.git.commit("-qam", f"#{i + 1}", env=ident)
                commit = wt.head.commit.hexsha
                diff = wt.git.diff(parent, commit)
                description = f"{name} → {lines[k].split(' = ')[1].split()[0]}"
                repo.git.update_ref(f"refs/overnight/bench/{i + 1}", commit)
                if status != "keep":
                    wt.git.reset("-q", "--hard", parent)
            exp_id = j.start_experiment(tag="bench", kind=kind, parent_commit=parent, agent="sweep",
                                        description=description)
            j.set_commit(exp_id, commit, f"refs/overnight/bench/{exp_id}", diff)
            values = [2.3 + rng.gauss(0, 0.05) for _ in range(2)]
            for k, v in enumerate(values):
                curve = [(s * 30, s * 1.0, 5.5 - s * 0.05) for s in range(60)]
                j.add_run(Run(experiment_id=exp_id, seed=exp_id * 100 + k, status="ok", started=0.0, finished=60.0,
                              val_bpb=v, holdout_bpb=v + 0.01, steps=1800, curve=curve))
            evidence = {"sigma": 0.05, "incumbent_mean": 2.3, "threshold": 0.14}
            j.finish_experiment(exp_id, status=status, decided_by="keep rule", reason="bench", evidence=evidence,
                                val_bpb=sum(values) / 2)
            if ledgers:  # what the loop does after each decision: the per-line history advances in the journal
                recorder.record(j, "bench", wt.head.commit.hexsha, cfg.editable)
    repo.git.worktree("remove", "--force", str(scratch))


async def measure(state_dir: Path, root: Path, n: int) -> dict[str, list[float]]:
    client = DaemonClient()
    await client.connect_workspace(state_dir)
    rng = random.Random(1)
    path = root / "trainer" / "train.py"
    uri = path.as_uri()
    text = "# the user's own line\n" + path.read_text()
    client.client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        text_document=lsp.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    doc = lsp.TextDocumentIdentifier(uri=uri)
    n_lines = text.count("\n")
    started = time.perf_counter()
    first = await client.client.text_document_inlay_hint_async(
        lsp.InlayHintParams(text_document=doc, range=lsp.Range(lsp.Position(0, 0), lsp.Position(n_lines, 0))))
    cold_ms = (time.perf_counter() - started) * 1000
    assert first, "no inlay hints: the bench journal did not produce any history"
    hinted = [h.position for h in first]
    times: dict[str, list[float]] = {"textDocument/inlayHint (whole file, cold: first request)": [cold_ms],
                                     "textDocument/inlayHint (whole file)": [], "textDocument/hover": [],
                                     "textDocument/codeLens": []}
    lenses = await client.client.text_document_code_lens_async(lsp.CodeLensParams(text_document=doc))
    assert lenses, "no CodeLens: the bench's kept experiments made no suggestion"
    for _ in range(n):
        started = time.perf_counter()
        await client.client.text_document_code_lens_async(lsp.CodeLensParams(text_document=doc))
        times["textDocument/codeLens"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        await client.client.text_document_inlay_hint_async(
            lsp.InlayHintParams(text_document=doc, range=lsp.Range(lsp.Position(0, 0), lsp.Position(n_lines, 0))))
        times["textDocument/inlayHint (whole file)"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        await client.client.text_document_hover_async(lsp.HoverParams(text_document=doc, position=rng.choice(hinted)))
        times["textDocument/hover"].append((time.perf_counter() - started) * 1000)
    calls = {
        "overnight/status": lambda: t.StatusParams(),
        "overnight/experiments/list (50 per page)": lambda: t.ListExperimentsParams(
            offset=rng.randrange(0, max(1, N_EXPERIMENTS - 100)), limit=50),
        "overnight/experiments/get": lambda: t.GetExperimentParams(id=rng.randrange(1, N_EXPERIMENTS + 1)),
        "overnight/suggestions/list": lambda: t.ListSuggestionsParams(),
    }
    methods = {"overnight/status": t.OVERNIGHT_STATUS, "overnight/experiments/list (50 per page)": t.OVERNIGHT_EXPERIMENTS_LIST,
               "overnight/experiments/get": t.OVERNIGHT_EXPERIMENTS_GET,
               "overnight/suggestions/list": t.OVERNIGHT_SUGGESTIONS_LIST}
    times.update({name: [] for name in calls})
    for _ in range(n):
        for name, params in calls.items():
            started = time.perf_counter()
            await client.request(methods[name], params())
            times[name].append((time.perf_counter() - started) * 1000)
    await client.close()
    return times


def main() -> None:
    global N_EXPERIMENTS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--experiments", type=int, default=N_EXPERIMENTS, help="experiments in the journal (default 1000)")
    parser.add_argument("--without-history", action="store_true",
                        help="a journal without the persisted per-line history (as older versions left it)")
    args = parser.parse_args()
    N_EXPERIMENTS = args.experiments
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        assert overnight(["init", str(root)]) == 0
        fill_journal(root, ledgers=not args.without_history)
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
            load = os.getloadavg()
            rest_mb = psutil.Process(proc.pid).memory_info().rss / 2**20
            times = asyncio.run(measure(state, root, args.requests))
            after_mb = psutil.Process(proc.pid).memory_info().rss / 2**20
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    def pct(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]

    rows = {name: {"p50_ms": statistics.median(v), "p99_ms": pct(v, 99) if len(v) > 1 else v[0], "n": len(v)}
            for name, v in times.items()}
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, python {platform.python_version()}", "experiments": N_EXPERIMENTS,
        "requests": rows, "rss_at_rest_mb": rest_mb, "rss_after_requests_mb": after_mb,
        "persisted_history": not args.without_history, "load_avg_1m": load[0],
    }
    lines = [
        "# Daemon latency and memory",
        "",
        f"`python bench/daemon_latency.py --experiments {N_EXPERIMENTS} --requests {args.requests}"
        f"{' --without-history' if args.without_history else ''}` on {result['machine']} "
        f"({time.strftime('%Y-%m-%d')}): {N_EXPERIMENTS:,} experiments in the journal, one client over "
        "loopback TCP, each request timed from send to parsed reply.",
        "",
        "| request | p50 ms | p99 ms | n |",
        "|---|---:|---:|---:|",
        *[f"| `{name}` | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['n']} |" for name, r in rows.items()],
        "",
        f"Daemon memory (RSS) at rest: {rest_mb:.0f} MB; after the requests: {after_mb:.0f} MB. "
        f"Load average (1 min) before / after: {load[0]:.2f} / {os.getloadavg()[0]:.2f}.",
        "",
        ("Without the persisted per-line history the cold inlay-hint request reads every experiment's file "
         "versions from git." if args.without_history else
         "The cold inlay-hint request reads the per-line history the loop persisted in the journal as it decided "
         "(one row) and the head's version of the file; nothing else comes from git."),
        "Later requests only re-map the cached history onto the buffer. CodeLens and suggestions/list run",
        "the three-way merge of the user's base, the user's buffer and the incumbent on every request.",
    ]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    name = "daemon_without_history" if args.without_history else "daemon"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

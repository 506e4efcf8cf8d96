"""Candidates decided per hour with 1 and 2 local slots (and on a local Ray cluster), on one replayed proposal set.

    python bench/throughput.py [--budget 20] [--slots 1,2] [--overlap off,on] [--ray] [--proposals 8] [--out NAME]

Each configuration runs the real loop (sealed runs, the warm harness, one thread per run) from a fresh workspace
on the same replayed proposals (learning-rate and schedule variants of the default train.py), so the decisions can
be compared: how many agree with the first configuration's (the sequential loop: ``slots = 1``, ``overlap`` off),
and how many candidates each decides per wall-clock hour against the ideal 3600 / budget. ``--overlap off,on`` runs
every slot count both ways (``overlap``: a slot trains its next run while the last run's model is scored).
Prints a table with the load average and writes
bench/results/throughput.md and throughput.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = [("LR", "2e-3"), ("LR", "4.5e-3"), ("LR", "1.5e-3"), ("WARMUP_FRAC", "0.1"), ("FINAL_LR_FRAC", "0.05"),
            ("WEIGHT_DECAY", "0.05"), ("BETA2", "0.95"), ("LR", "6e-3"), ("GRAD_CLIP", "0.5"), ("BATCH_SIZE", "8")]


def _proposals(train: str, n: int) -> str:
    import re

    lines = []
    for name, value in VARIANTS[:n]:
        text, count = re.subn(rf"^{name} = \S+", f"{name} = {value}", train, count=1, flags=re.M)
        assert count == 1, name
        lines.append(json.dumps({"description": f"{name} = {value}", "files": {"trainer/train.py": text}}))
    return "\n".join(lines) + "\n"


def _session(slots: int, budget: float, n: int, ray_address: str | None, overlap: bool = False) -> dict[str, Any]:
    from overnight.daemon.agents.replay import ReplayAgent
    from overnight.daemon.cli import main as overnight
    from overnight.daemon.config import load_config
    from overnight.daemon.journal import Journal
    from overnight.daemon.loop import Loop

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        assert overnight(["init", str(root)]) == 0
        extra = f'\n[executor]\nkind = "ray"\naddress = "{ray_address}"\n' if ray_address else ""
        (root / "overnight.toml").write_text(
            f"budget = {budget}\nthreads = 1\nslots = {slots}\nbaseline_runs = 3\nagent = \"replay\"\n"
            f"replay_file = \"proposals.jsonl\"\ntransfer_every = 0\nmachine_share = 0.0\n"
            f"overlap = {'true' if overlap else 'false'}\n{extra}")
        (root / "proposals.jsonl").write_text(_proposals((root / "trainer" / "train.py").read_text(), n))
        subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
        subprocess.run(["git", "-C", str(root), "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"],
                       check=True)
        cfg = load_config(root)
        load_before = os.getloadavg()
        started = time.monotonic()
        Loop(cfg, ReplayAgent.from_file(root / "proposals.jsonl")).run()
        wall = time.monotonic() - started
        with Journal(cfg.journal_path) as j:
            exps = [e for e in j.experiments() if e.kind == "experiment"]
            all_runs = [r for e in j.experiments() for r in j.runs(e.id)]
            decisions = {e.description: e.status for e in exps}
            # The scheduled runs (candidates and the incumbent's re-runs; the baseline's runs go one by one before
            # them), in launch order.
            scheduled = sorted((r for e in j.experiments() if e.kind != "baseline" for r in j.runs(e.id)),
                               key=lambda r: r.started)
    # What a run costs besides its training loop: start-up, export, evaluation (measured from outside).
    fixed = [(r.wall_seconds or 0.0) - (r.train_wall_seconds or 0.0) + (r.eval_seconds or 0.0)
             for r in all_runs if r.status == "ok" and r.train_wall_seconds]
    # With one slot, what each scheduled run cost the slot beyond its training loop: launch to the next launch, less
    # its training loop's wall time. Unlike the session's wall per run, this leaves out the session's start and its
    # baseline, and does not move with the step count the session calibrated.
    beyond = sorted(b.started - a.started - a.train_wall_seconds for a, b in itertools.pairwise(scheduled)
                    if a.train_wall_seconds and a.status == "ok") if slots == 1 else []
    loops = sorted(r.train_wall_seconds / budget for r in scheduled if r.train_wall_seconds and r.status == "ok")
    return {"beyond_training_s": beyond, "training_loop_x_budget": loops, "slots": slots, "overlap": overlap,
            "ray": bool(ray_address), "wall_s": wall, "decided": len(exps),
            "runs": len(all_runs),
            "per_hour": len(exps) / wall * 3600, "runs_per_hour": len(all_runs) / wall * 3600,
            "fixed_s": sum(fixed) / len(fixed) if fixed else None, "decisions": decisions, "load_before": load_before,
            "load_after": os.getloadavg()}


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}×" if values else "—"


def _beyond(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):.1f} s ({values[0]:.1f}–{values[-1]:.1f}, {len(values)} runs)"


def _ray_cluster() -> tuple[str, Path] | None:
    cli = shutil.which("ray")
    if cli is None:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = Path(tempfile.mkdtemp(prefix="overnight-bench-ray-"))
    proc = subprocess.run([cli, "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0",
                           "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                          capture_output=True, text=True)
    return (f"127.0.0.1:{port}", temp) if proc.returncode == 0 else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=20.0)
    ap.add_argument("--slots", default="1,2")
    ap.add_argument("--proposals", type=int, default=8)
    ap.add_argument("--overlap", default="off", help="off, on, or off,on: each slot count each way")
    ap.add_argument("--out", default="throughput", help="results file name under bench/results (.md and .json)")
    ap.add_argument("--ray", action="store_true", help="also on a local Ray cluster (2 CPUs, 2 slots)")
    args = ap.parse_args()
    from overnight.daemon.supervise import usable_cores

    results = []
    for slots in (int(s) for s in args.slots.split(",")):
        for overlap in (o.strip() == "on" for o in args.overlap.split(",")):
            if overlap and (slots + 1) > usable_cores():  # the loop would not overlap: the same session again
                print(f"slots {slots}, overlap on: skipped ({usable_cores()} cores hold no evaluation beside "
                      f"{slots} one-thread runs)", flush=True)
                continue
            print(f"slots {slots}, overlap {'on' if overlap else 'off'} ...", flush=True)
            results.append(_session(slots, args.budget, args.proposals, None, overlap))
    if args.ray:
        cluster = _ray_cluster()
        if cluster is None:
            print("no Ray cluster could be started: skipped")
        else:
            try:
                print("ray, 2 slots ...", flush=True)
                results.append(_session(2, args.budget, args.proposals, cluster[0]))
            finally:
                import ray

                ray.shutdown()
                subprocess.run([shutil.which("ray") or "ray", "stop", "--force"], capture_output=True)
    reference = results[0]["decisions"]
    ideal = 3600 / args.budget
    lines = ["# Throughput: candidates decided per hour", "",
             f"`python bench/throughput.py --budget {args.budget:g} --slots {args.slots} --overlap {args.overlap} "
             f"--proposals {args.proposals}{'' if args.out == 'throughput' else ' --out ' + args.out}"
             f"{' --ray' if args.ray else ''}` on {platform.machine()}, {os.cpu_count()} CPUs, python "
             f"{platform.python_version()} ({time.strftime('%Y-%m-%d')}). One thread per run; the ideal is "
             f"3600 / budget = {ideal:.0f} runs an hour per slot.", "",
             "| executor | slots | overlap | wall s | candidates | runs | runs / hour (ideal per slot) | wall per run "
             "| training loop ÷ budget (median) | launch to launch, beyond training (median, range) "
             "| decided / hour | vs first | agrees with first "
             "| fixed cost per run | load |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        agree = sum(r["decisions"].get(k) == v for k, v in reference.items()) / max(1, len(reference))
        r["agreement"] = agree
        r["speedup"] = r["per_hour"] / results[0]["per_hour"]
        fixed = (f"{r['fixed_s']:.1f} s ({r['fixed_s'] / args.budget:.0%}; {r['fixed_s'] / 60:.0%} of 60 s)"
                 if r["fixed_s"] else "—")
        # Wall per run per slot: what a run costs the slot in wall-clock time, evaluation overlap included.
        per_run = r["wall_s"] * r["slots"] / max(1, r["runs"])
        lines.append(f"| {'ray' if r['ray'] else 'local'} | {r['slots']} | {'on' if r.get('overlap') else 'off'} | "
                     f"{r['wall_s']:.0f} | {r['decided']} | {r['runs']} | "
                     f"{r['runs_per_hour']:.0f} ({ideal:.0f}) | {per_run:.1f} s | {_median(r['training_loop_x_budget'])} | "
                     f"{_beyond(r['beyond_training_s'])} | "
                     f"{r['per_hour']:.1f} | "
                     f"{r['speedup']:.2f}× | {agree:.0%} | "
                     f"{fixed} | {r['load_before'][0]:.2f}→{r['load_after'][0]:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(text)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"budget": args.budget, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Trainer CPU throughput: run trainer/train.py with a short budget and read its frames.

    python bench/trainer_throughput.py [--budget 20] [--clock wall] [--threads N]

Writes bench/results/trainer.json and bench/results/trainer.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

ROOT = Path(__file__).resolve().parents[1]
TRAINER = ROOT / "trainer"
RESULTS = ROOT / "bench" / "results"


def _cpu_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def run_once(budget: float, clock: str, seed: int = 0, threads: int | None = None,
             evaluate: bool = True, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """One train.py run through the progress channel (+ optional frozen evaluation).

    Also measures how much CPU *other* processes used during the run (in cores), from
    /proc/stat minus this child's own CPU time, to flag a noisy neighbour.
    """
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.pt2"
        env = {**os.environ, "OVERNIGHT_BUDGET_S": str(budget), "OVERNIGHT_BUDGET_CLOCK": clock,
               "OVERNIGHT_SEED": str(seed), "OVERNIGHT_MODEL_OUT": str(model)}
        env.update(extra_env or {})
        if threads:
            env["OVERNIGHT_THREADS"] = str(threads)
        r_fd, w_fd = os.pipe()
        env["OVERNIGHT_CHANNEL_FD"] = str(w_fd)
        busy0, tot0 = _cpu_busy()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(TRAINER / "train.py")], env=env, cwd=tmp,
                                pass_fds=(w_fd,), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        os.close(w_fd)
        unpacker = msgpack.Unpacker(raw=False)
        frames: list[dict[str, Any]] = []
        with os.fdopen(r_fd, "rb") as r:
            while block := r.read1(65536):
                unpacker.feed(block)
                frames.extend(unpacker)
        _, err = proc.communicate()
        wall = time.perf_counter() - t0
        busy1, tot1 = _cpu_busy()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"train.py exited {proc.returncode}: {err[-2000:]}")
        child_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        ticks = os.sysconf("SC_CLK_TCK")
        ncpu = os.cpu_count() or 1
        other_cores = max(0.0, ((busy1 - busy0) / ticks - child_cpu) / wall)
        out: dict[str, Any] = {"frames": frames, "end": frames[-1], "start": frames[0],
                               "process_wall_s": wall, "other_load_cores": other_cores,
                               "machine_busy_frac": (busy1 - busy0) / max(1.0, tot1 - tot0),
                               "ncpu": ncpu}
        if evaluate:
            r = subprocess.run([sys.executable, str(TRAINER / "prepare.py"), "evaluate",
                                "--model", str(model), "--splits", "val,holdout"],
                               env=env, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"evaluate exited {r.returncode}: {r.stderr[-2000:]}")
            out["eval"] = json.loads(r.stdout)
        return out



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--budget", type=float, default=20.0)
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-eval", action="store_true")
    args = ap.parse_args()
    r = run_once(args.budget, args.clock, threads=args.threads, evaluate=not args.no_eval)
    start, end = r["start"], r["end"]
    progress = [f for f in r["frames"] if f["type"] == "progress"]
    steady = [f["tokens_per_s"] for f in progress[1:]] or [f["tokens_per_s"] for f in progress]
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python bench/trainer_throughput.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {r['ncpu']} cpus",
        "device": start["device"], "threads": start["threads"], "clock": start["clock"],
        "budget_s": start["budget_s"], "n_params": start["n_params"],
        "steps": end["steps"], "tokens": end["tokens"],
        "elapsed_s": end["elapsed"], "wall_s": end["wall"],
        "tokens_per_budget_s": end["tokens"] / end["elapsed"],
        "tokens_per_wall_s": end["tokens"] / end["wall"],
        "median_progress_tokens_per_s": statistics.median(steady) if steady else None,
        "peak_mem_mb": end["peak_mem_mb"],
        "process_wall_s": r["process_wall_s"],
        "startup_and_export_s": r["process_wall_s"] - end["wall"],
        "other_load_cores": r["other_load_cores"],
        "eval": r.get("eval"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "trainer.json").write_text(json.dumps(res, indent=2) + "\n")
    md = [
        "# Trainer throughput", "",
        f"`{res['command']}` — {res['date']}, {res['machine']}, device {res['device']}, "
        f"{res['threads']} threads, clock `{res['clock']}`, budget {res['budget_s']:g} s.", "",
        "| figure | value |", "|---|---|",
        f"| params | {res['n_params']:,} |",
        f"| steps / tokens | {res['steps']:,} / {res['tokens']:,} |",
        f"| tokens/s (per budget-clock s) | {res['tokens_per_budget_s']:,.0f} |",
        f"| tokens/s (per wall s) | {res['tokens_per_wall_s']:,.0f} |",
        f"| median progress-frame tokens/s | {res['median_progress_tokens_per_s']:,.0f} |",
        f"| wall s for {res['budget_s']:g} budget s | {res['wall_s']:.1f} |",
        f"| start-up + export (s) | {res['startup_and_export_s']:.1f} |",
        f"| peak RSS (MB) | {res['peak_mem_mb']:.0f} |",
        f"| CPU used by other processes meanwhile (cores) | {res['other_load_cores']:.2f} |",
    ]
    if res["eval"]:
        e = res["eval"]
        md += [f"| val / holdout bpb | {e['val_bpb']:.4f} / {e['holdout_bpb']:.4f} |",
               f"| eval seconds ({e['val_bytes']:,} bytes × 2 splits, incl. load) | "
               f"{e['eval_seconds']:.1f} |"]
    (RESULTS / "trainer.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())

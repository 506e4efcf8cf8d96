"""Run-to-run noise of val_bpb under a budget clock.

    python bench/noise.py --runs 5 --budget 30 --clock cpu [--seeds same|vary]

Each run trains trainer/train.py (default config) and scores it with the frozen
`prepare.py evaluate`. With --seeds same (default) every run uses OVERNIGHT_SEED=0, so the
spread is what the budget clock lets through (step counts moving with machine speed); with
--seeds vary, run i uses seed i and the spread includes initialisation/data-order noise.
Results accumulate in bench/results/noise.json (one entry per clock/budget/seeds setting);
bench/results/noise.md is regenerated from all entries.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_throughput import RESULTS, run_once  # noqa: E402  (shared runner)


def sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def render(entries: dict[str, Any]) -> str:
    md = ["# val_bpb noise per budget clock", "",
          "Default `trainer/train.py` config, CPU. σ = sample standard deviation over runs. "
          "'other load' is CPU used by other processes during the run (cores, from "
          "/proc/stat), i.e. a noisy neighbour.", "",
          "| clock | threads | budget s | seeds | runs | val_bpb mean | val_bpb σ | steps mean | steps σ "
          "| wall s mean | other load (cores) mean/max | date |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in sorted(entries.values(), key=lambda e: (e["budget"], e["clock"], e["seeds"])):
        bpb = [r["val_bpb"] for r in e["runs"]]
        steps = [r["steps"] for r in e["runs"]]
        wall = [r["wall"] for r in e["runs"]]
        other = [r["other_load_cores"] for r in e["runs"]]
        md.append(f"| {e['clock']} | {e.get('threads', '?')} | {e['budget']:g} | {e['seeds']} | {len(bpb)} | "
                  f"{statistics.mean(bpb):.4f} | {sd(bpb):.4f} | {statistics.mean(steps):.0f} | "
                  f"{sd(steps):.0f} | {statistics.mean(wall):.1f} | "
                  f"{statistics.mean(other):.2f}/{max(other):.2f} | {e['date']} |")
    md += ["", "Per-run figures:", ""]
    for _key, e in sorted(entries.items()):
        md.append(f"- `{e['command']}`: " + "; ".join(
            f"bpb {r['val_bpb']:.4f} steps {r['steps']} wall {r['wall']:.1f}s "
            f"other {r['other_load_cores']:.2f}" for r in e["runs"]))
    return "\n".join(md) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--budget", type=float, default=30.0)
    ap.add_argument("--clock", default="cpu", choices=["wall", "cpu"])
    ap.add_argument("--seeds", default="same", choices=["same", "vary"])
    ap.add_argument("--threads", type=int, default=None, help="OVERNIGHT_THREADS (default: all)")
    args = ap.parse_args()
    runs = []
    for i in range(args.runs):
        seed = i if args.seeds == "vary" else 0
        r = run_once(args.budget, args.clock, seed=seed, threads=args.threads)
        row = {"seed": seed, "val_bpb": r["eval"]["val_bpb"],
               "holdout_bpb": r["eval"]["holdout_bpb"], "steps": r["end"]["steps"],
               "elapsed": r["end"]["elapsed"], "wall": r["end"]["wall"],
               "tokens": r["end"]["tokens"], "other_load_cores": r["other_load_cores"]}
        runs.append(row)
        print(f"run {i + 1}/{args.runs}: " + ", ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
            flush=True)
    threads = runs_threads = r["start"]["threads"]
    key = f"{args.clock}-{args.budget:g}-{args.seeds}-t{threads}"
    path = RESULTS / "noise.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    entries = json.loads(path.read_text()) if path.exists() else {}
    entries[key] = {"clock": args.clock, "budget": args.budget, "seeds": args.seeds,
                    "threads": runs_threads,
                    "date": time.strftime("%Y-%m-%d %H:%M"), "runs": runs,
                    "command": "python bench/noise.py " + " ".join(sys.argv[1:])}
    path.write_text(json.dumps(entries, indent=2) + "\n")
    (RESULTS / "noise.md").write_text(render(entries))
    bpb = [r["val_bpb"] for r in runs]
    print(f"{key}: val_bpb mean {statistics.mean(bpb):.4f} σ {sd(bpb):.4f} over {len(bpb)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

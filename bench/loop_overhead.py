"""The loop's own overhead per experiment: time not spent training.

Runs the real loop (sweep agent, real training runs) in a scratch workspace made by
`overnight init`, then splits each experiment's wall time into
  training      the training loop's wall time (the budget is charged on the budget clock),
  start-up      training process start until the harness's start frame (interpreter, torch, data check),
  export        after the loop until the process exits (the model hand-off),
  evaluation    the harness's separate evaluation process,
  loop          everything else: proposing, validating, git, the journal.
Prints a table and writes bench/results/loop.json and bench/results/loop.md.

    python bench/loop_overhead.py [--experiments 4] [--budget 10]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from overnight.daemon.agents import make_agent
from overnight.daemon.cli import main as overnight
from overnight.daemon.config import load_config
from overnight.daemon.journal import Journal
from overnight.daemon.loop import Loop

RESULTS = Path(__file__).resolve().parent / "results"


def run(experiments: int, budget: float, clock: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        assert overnight(["init", str(root)]) == 0
        cfg = load_config(root).with_overrides(budget=budget, baseline_runs=2, agent="sweep", clock=clock)
        started = time.monotonic()
        Loop(cfg, make_agent(cfg)).run(max_experiments=experiments)
        total = time.monotonic() - started
        journal = Journal(cfg.journal_path)
        rows = []
        for exp in journal.experiments():
            runs = journal.runs(exp.id)
            if exp.finished is None:
                continue
            wall = exp.finished - exp.created
            train = sum(r.train_wall_seconds or 0.0 for r in runs)
            startup = sum(r.startup_seconds or 0.0 for r in runs)
            process = sum(r.wall_seconds or 0.0 for r in runs)
            evaluation = sum(r.eval_seconds or 0.0 for r in runs)
            rows.append({
                "id": exp.id, "kind": exp.kind, "status": exp.status, "runs": len(runs), "wall_s": wall,
                "budget_s": sum(r.train_seconds or 0.0 for r in runs), "train_wall_s": train,
                "startup_s": startup, "export_s": process - startup - train, "eval_s": evaluation,
                "loop_s": wall - process - evaluation,
            })
        journal.close()
    per_run = [r for r in rows if r["runs"]]
    n_runs = sum(r["runs"] for r in per_run)

    def mean_per_run(key: str) -> float:
        return sum(r[key] for r in per_run) / n_runs

    return {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}",
        "budget_s": budget,
        "experiments": rows,
        "total_s": total,
        "per_run_mean": {
            k: mean_per_run(k) for k in ("wall_s", "budget_s", "train_wall_s", "startup_s", "export_s", "eval_s", "loop_s")
        },
        "loop_s_per_experiment_median": statistics.median(r["loop_s"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=4)
    parser.add_argument("--budget", type=float, default=10.0)
    parser.add_argument("--clock", choices=("steps", "cpu", "wall"), default="steps")
    args = parser.parse_args()
    result = run(args.experiments, args.budget, args.clock)
    m = result["per_run_mean"]
    lines = [
        "# Loop overhead per experiment",
        "",
        f"`python bench/loop_overhead.py --experiments {args.experiments} --budget {args.budget:g} --clock {args.clock}` "
        f"on {result['machine']} ({time.strftime('%Y-%m-%d')}).",
        "",
        "| per training run (mean) | seconds |",
        "|---|---:|",
        f"| wall, all of it | {m['wall_s']:.2f} |",
        f"| training loop, wall (budget: {m['budget_s']:.2f} s on the {args.clock} clock) | {m['train_wall_s']:.2f} |",
        f"| start-up: interpreter, torch import, data check, model build | {m['startup_s']:.2f} |",
        f"| after training: model export, process exit | {m['export_s']:.2f} |",
        f"| harness evaluation: val and the train slice (a would-be keep's gauges too) | {m['eval_s']:.2f} |",
        f"| the loop itself: propose, validate, git, journal | {m['loop_s']:.3f} |",
        "",
        f"Median loop-only time per experiment: {result['loop_s_per_experiment_median']:.3f} s.",
        "",
        "| # | kind | status | runs | wall s | train (wall) s | start-up s | export s | eval s | loop s |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["experiments"]:
        lines.append(
            f"| {r['id']} | {r['kind']} | {r['status']} | {r['runs']} | {r['wall_s']:.1f} | {r['train_wall_s']:.1f} "
            f"| {r['startup_s']:.1f} | {r['export_s']:.1f} | {r['eval_s']:.1f} | {r['loop_s']:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "loop.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "loop.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

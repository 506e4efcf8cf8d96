"""A short check of Overnight on a CUDA machine: a default session, and what it achieved per run.

    python bench/gpu_check.py [--budget 30] [--experiments 2] [--peak-tflops N]

Runs the real loop (sweep agent, sealed runs, the warm harness) in a scratch workspace made by `overnight init`, then
reports per run: tokens/s, MFU (6 x parameters x tokens/s over the GPU's peak; ``--peak-tflops`` or a table of known
GPUs), peak GPU memory, and the fixed cost per run (start-up, export, evaluation: everything that is not the training
loop), against the budget. Writes bench/results/gpu.md and gpu.json. Without a CUDA device it says so and exits 0
having measured nothing: it is not a CPU benchmark (bench/loop_overhead.py is).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
# Dense bf16 tensor-core peaks (TFLOP/s), for MFU when --peak-tflops is not given.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0, "A10": 125.0}


def _device() -> dict[str, Any] | None:
    probe = subprocess.run([sys.executable, "-c", (
        "import json, torch\n"
        "if not torch.cuda.is_available(): print('null')\n"
        "else: p = torch.cuda.get_device_properties(0); print(json.dumps({'name': p.name, 'count': torch.cuda.device_count(),"
        " 'memory_gb': p.total_memory / 2**30, 'torch': torch.__version__, 'cuda': torch.version.cuda}))")],
        capture_output=True, text=True, timeout=300)
    try:
        found = json.loads(probe.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return found if isinstance(found, dict) else None


def _peak(name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=30.0)
    ap.add_argument("--experiments", type=int, default=2)
    ap.add_argument("--peak-tflops", type=float, default=None)
    args = ap.parse_args()
    device = _device()
    if device is None:
        print("no CUDA device here: nothing to check (this script measures Overnight on a GPU; "
              "bench/loop_overhead.py measures the CPU path)")
        return 0
    from overnight.daemon.agents import make_agent
    from overnight.daemon.cli import main as overnight
    from overnight.daemon.config import load_config
    from overnight.daemon.journal import Journal
    from overnight.daemon.loop import Loop

    print(f"{device['name']} x{device['count']}, {device['memory_gb']:.0f} GB; torch {device['torch']}, CUDA {device['cuda']}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        assert overnight(["init", str(root)]) == 0
        subprocess.run(["git", "-C", str(root), "commit", "-qam", "init"], check=False)
        cfg = load_config(root).with_overrides(budget=args.budget, baseline_runs=2, agent="sweep", threads=0)
        started = time.monotonic()
        Loop(cfg, make_agent(cfg)).run(max_experiments=args.experiments)
        total = time.monotonic() - started
        with Journal(cfg.journal_path) as journal:
            for exp in journal.experiments():
                for r in journal.runs(exp.id):
                    if r.status != "ok":
                        continue
                    fixed = (r.wall_seconds or 0.0) - (r.train_wall_seconds or 0.0) + (r.eval_seconds or 0.0)
                    rows.append({"experiment": exp.id, "device": r.device, "steps": r.steps, "n_params": r.n_params,
                                 "tokens_per_s": r.tokens_per_s, "peak_mem_mb": r.peak_mem_mb,
                                 "train_wall_s": r.train_wall_seconds, "startup_s": r.startup_seconds,
                                 "eval_s": r.eval_seconds, "fixed_s": fixed, "val_bpb": r.val_bpb})
    peak = _peak(str(device["name"]), args.peak_tflops)
    for row in rows:
        tps, params = row["tokens_per_s"], row["n_params"]
        row["mfu"] = (6 * params * tps / (peak * 1e12)) if peak and tps and params else None
    fixed = [r["fixed_s"] for r in rows]
    summary = {
        "device": device, "budget_s": args.budget, "runs": len(rows), "session_wall_s": total, "peak_tflops": peak,
        "fixed_s_mean": sum(fixed) / len(fixed) if fixed else None,
        "fixed_share_of_budget": (sum(fixed) / len(fixed) / args.budget) if fixed else None,
        "tokens_per_s_mean": sum(r["tokens_per_s"] or 0 for r in rows) / len(rows) if rows else None,
        "mfu_mean": (sum(r["mfu"] for r in rows if r["mfu"]) / len(rows)) if rows and peak else None,
        "rows": rows, "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
        "load": os.getloadavg(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gpu.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# Overnight on {device['name']}", "",
             f"`python bench/gpu_check.py --budget {args.budget:g} --experiments {args.experiments}` "
             f"({summary['date']}, torch {device['torch']}, load {summary['load'][0]:.2f})", "",
             "| run | steps | tokens/s | MFU | peak GPU MB | fixed cost s (start-up + export + evaluation) | val_bpb |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(rows):
        mfu = f"{r['mfu']:.1%}" if r["mfu"] else "—"
        lines.append(f"| {i + 1} | {r['steps']} | {r['tokens_per_s'] or 0:,.0f} | {mfu} | {r['peak_mem_mb'] or 0:,.0f} | "
                     f"{r['fixed_s']:.1f} | {r['val_bpb']:.4f} |")
    if summary["fixed_s_mean"] is not None:
        lines += ["", f"Fixed cost per run: {summary['fixed_s_mean']:.1f} s, "
                      f"{summary['fixed_share_of_budget']:.0%} of a {args.budget:g} s budget."]
    (RESULTS / "gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""kill -9 at random moments of a real session, many times: what survives what.

    python bench/kills.py [--kills 20] [--seed 1] [--budget 2] [--out bench/results/kills]

A scratch workspace (`overnight init`), a replayed agent with comment-only proposals, real two-second training runs
sealed in bubblewrap. Each round starts `overnight run` in its own process group, lets it work 1–15 s (seeded),
sometimes edits the user's train.py meanwhile, and kills the whole group with SIGKILL. After each kill it checks
that no run or evaluator outlived the loop, that the journal passes PRAGMA integrity_check, that no finished row was
lost or changed and that every experiment's ref points at its recorded commit; at the end one more start must run
to completion by itself with every user edit in the session's branch. Prints a table and writes <out>.md/.json.
The suite runs the same with 3 kills (tests/integration/test_kills.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import commit_all, write_config  # noqa: E402
from tests.killing import finish, kill_rounds, replay_file  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--budget", type=float, default=2.0)
    ap.add_argument("--proposals", type=int, default=5)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "kills"))
    args = ap.parse_args()

    from overnight.daemon.cli import main as cli

    with tempfile.TemporaryDirectory(prefix="overnight-bench-kills-") as tmp:
        root = Path(tmp) / "ws"
        assert cli(["init", str(root)]) == 0
        write_config(root, budget=args.budget, agent="replay", replay_file="proposals.jsonl", max_runs=2)
        commit_all(root)
        replay_file(root, args.proposals)
        started = time.monotonic()
        load = os.getloadavg()[0]
        report = kill_rounds(root, args.kills, seed=args.seed)
        finish(root, report)
        seconds = time.monotonic() - started
    in_flight = sum(p == "experiment in flight" for p in report.phases)
    rows = [
        ("kills (SIGKILL to the loop's process group)", str(report.kills)),
        ("… while an experiment was in flight", str(in_flight)),
        ("user edits made between kills", str(len(report.edits))),
        ("processes that outlived a kill (10 s later)", str(len(report.survivors))),
        ("journal, ref or lost-row problems", str(len(report.problems))),
        ("final start ran to its end by itself", "yes" if report.final_rc == 0 else f"no (exit {report.final_rc})"),
    ]
    md = ["# Kills at random moments\n",
          f"`python bench/kills.py --kills {args.kills} --seed {args.seed}` on {platform.machine()}, "
          f"python {platform.python_version()} ({time.strftime('%Y-%m-%d')}); {seconds:.0f} s; load average "
          f"{load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end.\n",
          "| what | count |", "|---|---:|", *[f"| {a} | {b} |" for a, b in rows]]
    if report.survivors or report.problems:
        md += ["", "## Problems", *[f"- {p}" for p in [*report.survivors, *report.problems]]]
    text = "\n".join(md) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"kills": report.kills, "in_flight": in_flight,
                                                     "edits": report.edits, "survivors": report.survivors,
                                                     "problems": report.problems, "final_rc": report.final_rc,
                                                     "seconds": seconds}, indent=2))
    return 0 if not (report.survivors or report.problems) and report.final_rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

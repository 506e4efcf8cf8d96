"""Does the GPU wait for the model? Idle time between experiments with and without pipelining, and
the Claude agent's prompt size and cache-hit ratio after 50 experiments.

Part 1 runs the real loop (real training runs, the real SDK) twice against the fake Messages API
(tests/fakes/anthropic_server.py), whose every answer takes ``--answer-s`` seconds: once with
``[claude] pipeline = false``, once with it on. Idle = from the end of an experiment's last run to
the start of the next experiment's first run.

Part 2 sends 50 proposals through the real agent and SDK to the fake API with a synthetic journal
that grows to 50 experiments (the real train.py and program.md): the prompt's size as sent
(characters, and tokens estimated as characters / 4) and the cache reads/writes the fake accounts
per ``cache_control`` breakpoint, as the API does (same characters / 4 estimate).

Writes bench/results/agent_pipelining.json and .md, with the machine's load average while it ran.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = Path(__file__).resolve().parent / "results"

from overnight.daemon.agents import make_agent  # noqa: E402
from overnight.daemon.agents.claude import ClaudeAgent  # noqa: E402
from overnight.daemon.agents.cost import Usage  # noqa: E402
from overnight.daemon.cli import main as cli  # noqa: E402
from overnight.daemon.config import load_config  # noqa: E402
from overnight.daemon.events import Event, RunFinished, RunStarted  # noqa: E402
from overnight.daemon.loop import Loop  # noqa: E402
from tests.fakes.anthropic_server import FakeAnthropic, Reply, edit, propose  # noqa: E402
from tests.fakes.context import context, exp  # noqa: E402

TRAIN = "trainer/train.py"
MATH = "import math  # noqa: E402"


def answer(k: int, delay: float) -> Reply:
    # A harmless edit that applies to any incumbent: the bench measures waiting, not learning.
    return Reply(text=f"Experiment {k}: a marker comment.", delay=delay,
                 tools=[edit(TRAIN, MATH, f"{MATH}\n# bench marker {k}"), propose(f"marker {k}")])


def idle_run(pipeline: bool, args: argparse.Namespace, fake: FakeAnthropic, base: Path) -> dict[str, Any]:
    root = base / ("piped" if pipeline else "serial")
    assert cli(["init", str(root)]) == 0
    (root / "overnight.toml").write_text(
        f'agent = "claude"\nbudget = {args.budget}\nclock = "cpu"\nbaseline_runs = 2\nconfirm_runs = 0\ngrace = 60.0\n'
        f'[claude]\nbase_url = "{fake.url}"\nmodel = "claude-sonnet-4-6"\npipeline = {str(pipeline).lower()}\n')
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"], cwd=root, check=True)
    counter = iter(range(10_000))
    fake.responder = lambda body: answer(next(counter), args.answer_s)
    cfg = load_config(root)
    marks: list[tuple[bool, int, float]] = []  # (started, experiment id, when)

    def listen(event: Event) -> None:
        if isinstance(event, RunStarted | RunFinished):
            marks.append((isinstance(event, RunStarted), event.experiment_id, time.monotonic()))

    t0 = time.monotonic()
    Loop(cfg, make_agent(cfg), listener=listen).run(max_experiments=args.experiments)
    total = time.monotonic() - t0
    first_start: dict[int, float] = {}
    last_end: dict[int, float] = {}
    for started, exp_id, t in marks:
        if started:
            first_start.setdefault(exp_id, t)
        else:
            last_end[exp_id] = t
    ids = sorted(first_start)
    gaps = [first_start[b] - last_end[a] for a, b in zip(ids, ids[1:], strict=False)]
    train = sum(last_end[i] - first_start[i] for i in ids)
    return {"pipeline": pipeline, "experiments": len(ids) - 1, "gap_after_baseline_s": round(gaps[0], 2),
            "gaps_between_experiments_s": [round(g, 2) for g in gaps[1:]],
            "mean_idle_between_experiments_s": round(statistics.fmean(gaps[1:]), 2) if gaps[1:] else None,
            "total_s": round(total, 1), "busy_s": round(train, 1), "idle_share": round(1 - train / total, 3)}


def prompt_size(fake: FakeAnthropic, n: int = 50) -> dict[str, Any]:
    os.environ.setdefault("ANTHROPIC_API_KEY", "sk-bench")
    from overnight.daemon.config import ClaudeConfig, Config

    cfg = Config(root=REPO, claude=ClaudeConfig(model="claude-sonnet-4-6", base_url=fake.url))
    agent = ClaudeAgent.from_config(cfg)
    files = {TRAIN: (REPO / TRAIN).read_text()}
    program = (REPO / "program.md").read_text()
    base = exp(1, "keep", "baseline", "baseline (3 runs: the noise floor)", 2.95, evidence={"sigma": 0.006})
    history = [base]
    incumbent = base
    fake.responder = lambda body: answer(0, 0.0)
    per: list[dict[str, Any]] = []
    total = Usage()
    statuses = ["discard", "discard", "crash", "discard", "keep", "discard", "invalid", "discard"]
    for k in range(n):
        ctx = context(program=program, files=files, incumbent=incumbent, history=list(history), sigma=0.006,
                      feedback=[{"kind": "redirect", "experiment_id": None, "text": "focus on the LR schedule"}] if k > 20 else [])
        p = agent.propose(ctx)
        u = Usage.from_dict(p.meta["usage"])
        total = total + u
        per.append({"experiment": k + 2, "prompt_chars": p.meta["prompt_chars"], "prompt_tokens_est": u.prompt_tokens,
                    "cache_read": u.cache_read_input_tokens, "cache_write": u.cache_creation_input_tokens})
        status = statuses[k % len(statuses)]
        e = exp(k + 2, status, description=f"{p.description}: try variant {k} of a schedule/width/optimizer idea",
                val=None if status in ("crash", "invalid") else 2.9 - 0.001 * k,
                hypothesis="a longer warm-up lets the higher LR train stably within the budget",
                evidence={"incumbent_mean": incumbent.val_bpb}, error="RuntimeError: shape mismatch" if status == "crash" else None)
        history.append(e)
        if status == "keep":
            incumbent = e
            files = {TRAIN: files[TRAIN].replace(MATH, f"{MATH}\n# kept change {k}", 1)}
    last = per[-1]
    return {"experiments": n, "last_prompt_chars": last["prompt_chars"], "last_prompt_tokens_est": last["prompt_tokens_est"],
            "first_prompt_tokens_est": per[0]["prompt_tokens_est"],
            "last_cache_hit_ratio": round(last["cache_read"] / last["prompt_tokens_est"], 3),
            "cache_hit_ratio_over_all": round(total.cache_hit_ratio, 3),
            "simulated_cost_usd_sonnet_4_6": round(total.cost_usd, 3), "per_proposal": per}


class LoadSampler:
    """The 1-minute load average every 30 s: the bench shares its machine, and says how busy it was."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.samples.append(round(os.getloadavg()[0], 2))
            if self._stop.wait(30.0):
                return

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        s = sorted(self.samples)
        return {"cpus": os.cpu_count(), "samples": len(s), "min": s[0], "median": s[len(s) // 2], "max": s[-1]}


def render(data: dict[str, Any]) -> str:
    runs, size, load = data["idle"], data["prompt"], data.get("load")
    shared = ""
    if load:
        shared = (f" The machine ({load['cpus']} CPUs) was shared with other work: its 1-minute load average was "
                  f"{load['min']:g}–{load['max']:g} (median {load['median']:g}, {load['samples']} samples"
                  f"{', ' + load['source'] if 'source' in load else ''}), so "
                  "training runs took longer in wall time than their cpu-clock budget; the idle time measured is "
                  "the loop's own waiting, which that load slows only slightly (git, the journal).")
    lines = [
        "# The Claude agent: idle time between experiments, prompt size and cache hits", "",
        f"`{data['command']}` on {data['machine']}, cpu, python {data['python']} ({data['date']}). The model is the "
        f"fake Messages API answering every request after {data['answer_s']:g} s, through the real SDK and the real "
        f"loop; training runs are real ({data['budget']:g} s budget, cpu clock).{shared}", "",
        "| pipelining | experiments | idle after baseline s | idle between experiments s (each) | mean idle s | loop wall s |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in runs:
        lines.append(f"| {'on' if r['pipeline'] else 'off'} | {r['experiments']} | {r['gap_after_baseline_s']} | "
                     f"{', '.join(str(g) for g in r['gaps_between_experiments_s'])} | {r['mean_idle_between_experiments_s']} | "
                     f"{r['total_s']} |")
    lines += [
        "", "Idle is measured from the end of an experiment's last run to the start of the next experiment's first "
        "run. The first proposal after the baseline cannot be prepared in advance (nothing trains while it is asked), "
        "so it waits the full answer time in both modes; from then on each proposal is prepared while the previous "
        "experiment trains.", "",
        f"## Prompt after {size['experiments']} experiments", "",
        "Tokens are estimated as characters / 4 (no tokenizer offline); cache reads and writes are the fake API's "
        "accounting per `cache_control` breakpoint, as the real API does it.", "",
        "| | value |", "|---|---:|",
        f"| prompt of the 1st proposal, tokens (est.) | {size['first_prompt_tokens_est']:,} |",
        f"| prompt of the 50th proposal, characters | {size['last_prompt_chars']:,} |",
        f"| prompt of the 50th proposal, tokens (est.) | {size['last_prompt_tokens_est']:,} |",
        f"| cache-hit ratio of the 50th proposal | {size['last_cache_hit_ratio']:.0%} |",
        f"| cache-hit ratio over all 50 | {size['cache_hit_ratio_over_all']:.0%} |",
        f"| their cost at claude-sonnet-4-6 prices (50 output tokens each) "
        f"| ${size['simulated_cost_usd_sonnet_4_6']:.2f} |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answer-s", type=float, default=20.0, help="seconds the scripted model takes per answer")
    parser.add_argument("--budget", type=float, default=25.0,
                        help="seconds of training per run: longer than an answer, so a prepared proposal can hide it")
    parser.add_argument("--experiments", type=int, default=3)
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the .json")
    args = parser.parse_args()
    out_json, out_md = RESULTS / "agent_pipelining.json", RESULTS / "agent_pipelining.md"
    if args.render:
        out_md.write_text(render(json.loads(out_json.read_text())))
        print(out_md.read_text())
        return
    os.environ.setdefault("ANTHROPIC_API_KEY", "sk-bench")
    with LoadSampler() as load, FakeAnthropic() as fake, tempfile.TemporaryDirectory() as tmp:
        size = prompt_size(fake)
        runs = [idle_run(False, args, fake, Path(tmp)), idle_run(True, args, fake, Path(tmp))]
    data = {"command": "python bench/agent_pipelining.py " + " ".join(sys.argv[1:]), "machine": platform.machine(),
            "python": platform.python_version(), "date": dt.date.today().isoformat(), "answer_s": args.answer_s,
            "budget": args.budget, "load": load.summary(), "idle": runs, "prompt": size}
    RESULTS.mkdir(exist_ok=True)
    out_json.write_text(json.dumps(data, indent=2) + "\n")
    out_md.write_text(render(data))
    print(out_md.read_text())


if __name__ == "__main__":
    main()

"""Overnight's decisions on real training runs: the noise of unchanged code, the true gain of known fixes, and how
often each keep rule keeps a null change or a real gain, at what compute.

    python bench/decisions.py [--budget 60] [--runs 6] [--threads 0] [--versions good,null-comment,...] [--busy]
                              [--resume | --fresh] [--out bench/results/decisions]
    python bench/decisions.py --analyse [same --budget/--threads/--busy, or --log PATH]

1. A scratch workspace (``overnight init`` into a temporary folder) and code versions of trainer/train.py, each in
   its own copy of trainer/: the reference ``good`` (the shipped train.py); NULL changes that compute exactly the
   same thing (a comment, a renamed local, two independent config lines swapped, blank lines and spacing); and
   DAMAGED versions of several sizes (learning rate ×0.75, ×0.5, ×0.25, a warm-up over half the budget, dropout,
   label smoothing, wasted forward passes that make every step slower so fewer steps fit the budget). The
   known-good proposal for damage d is incumbent = d, candidate = good; its true gain is measured here:
   mean(d) − mean(good), with its standard error.
2. Every version runs ``--runs`` times, interleaved: round r runs every version once, in an order rotated by r.
   Each run goes through the real measurement path, built as the loop's ``_request`` builds it: the executor,
   sealed (bubblewrap), scored by the session's pinned harness in isolated mode on the pinned data, a distinct
   seed per run, the default ``steps`` budget clock and ``threads = 0`` (every core). Every run is appended to a
   JSON-lines log as it ends (``--resume`` continues an interrupted bench; ``--analyse`` only re-analyses).
3. ``--busy``: odd rounds run while another process keeps one core busy (``python -c 'while True: pass'``,
   started before the round, killed after), so σ quiet and σ busy are measured interleaved, in one bench.
4. The analysis: σ of val_bpb of unchanged code (pooled over good and the nulls; quiet and busy apart), step
   counts, the true gain of each damage, then the keep rules replayed on the real runs (bench/_decision_sim.py,
   ``Resample`` arms drawn from the measured values): the false-keep rate on null changes, the keep rate against
   the measured true gain, runs and seconds per decision, for the sequential rule (daemon/decide.py), the
   previous rule and autoresearch's strict "<", side by side, each figure with the load average of the runs it
   rests on, next to the goals.

Writes ``<out>.md`` and ``<out>.json`` (default bench/results/decisions). The run log lives in
``~/.cache/overnight/bench/decisions/`` (one per budget, threads and --busy; ``--log`` names another).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import difflib
import hashlib
import io
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

import _decision_sim as sim  # noqa: E402

from overnight.daemon import harness  # noqa: E402
from overnight.daemon.config import Config, load_config  # noqa: E402
from overnight.daemon.decide import Rule, pooled_noise  # noqa: E402
from overnight.daemon.executor import (  # noqa: E402
    DataPin,
    Harness,
    Limits,
    RunRequest,
    cuda_available,
    execute,
    resolve_clock,
)
from overnight.daemon.sandbox import Sandbox, SandboxUnavailable, detect  # noqa: E402
from overnight.daemon.supervise import usable_cores  # noqa: E402

DEFAULT_OUT = BENCH / "results" / "decisions"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "overnight" / "bench" / "decisions"
TAG = "bench"

# The goals the figures are held against (all at the default 60 s budget).
GOAL_SIGMA_QUIET = 0.007
GOAL_SIGMA_BUSY = 0.015
GOAL_FALSE_KEEP = 0.02
GOAL_GAIN = 0.03
GOAL_KEEP_AT_GAIN = 0.90
GOAL_BUDGET = 60.0

# True gains of the keep-rate curve drawn from the real noise of unchanged code (shifted by the gain).
CURVE_GAINS = (0.005, 0.01, 0.02, 0.03, 0.05)
SESSION_CANDIDATES = 40


class BenchError(RuntimeError):
    """What to do is in the message."""


# -- the code versions ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Version:
    name: str
    kind: str  # reference | null | damage
    description: str
    edit: Callable[[str], str]


def _once(text: str, old: str, new: str) -> str:
    """Replace ``old`` (exactly one occurrence) by ``new``: a bench edit that no longer applies fails loudly."""
    count = text.count(old)
    if count != 1:
        raise BenchError(f"a bench edit expects {old!r} exactly once in trainer/train.py, found {count}: update bench/decisions.py")
    return text.replace(old, new)


def _const_line(text: str, name: str) -> re.Match[str]:
    found = list(re.finditer(rf"^{name} = (?P<value>[0-9.eE+-]+)(?P<rest>[^\n]*)$", text, flags=re.M))
    if len(found) != 1:
        raise BenchError(f"trainer/train.py has no single config line `{name} = <number>`: update bench/decisions.py")
    return found[0]


def _scaled(name: str, factor: float) -> Callable[[str], str]:
    def edit(text: str) -> str:
        m = _const_line(text, name)
        value = float(m.group("value")) * factor
        return text[:m.start()] + f"{name} = {value:.6g}{m.group('rest')}" + text[m.end():]

    return edit


def _set(name: str, value: float) -> Callable[[str], str]:
    def edit(text: str) -> str:
        m = _const_line(text, name)
        return text[:m.start()] + f"{name} = {value:g}{m.group('rest')}" + text[m.end():]

    return edit


def _rename_local(text: str) -> str:
    if "step_loss" in text or len(re.findall(r"\bloss_value\b", text)) < 2:
        raise BenchError("null-rename expects the local `loss_value` (and no `step_loss`) in trainer/train.py")
    return re.sub(r"\bloss_value\b", "step_loss", text)


def _swap_betas(text: str) -> str:
    b1, b2 = _const_line(text, "BETA1"), _const_line(text, "BETA2")
    first, second = sorted((b1, b2), key=lambda m: m.start())
    between = text[first.end():second.start()]
    return text[:first.start()] + second.group(0) + between + first.group(0) + text[second.end():]


def _whitespace(text: str) -> str:
    text = _once(text, "\n\ndef get_batch(", "\n\n\n\n\ndef get_batch(")
    return _once(text, "step, tokens, last_report, last_tokens = 0, 0, 0.0, 0",
                 "step, tokens, last_report, last_tokens = (0,   0,   0.0,   0)")


def _dropout(text: str) -> str:
    text = _once(text, "        self.fc_out = nn.Linear(MLP_MULT * N_EMBD, N_EMBD)\n",
                 "        self.fc_out = nn.Linear(MLP_MULT * N_EMBD, N_EMBD)\n        self.drop = nn.Dropout(0.1)\n")
    text = _once(text, "x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))",
                 "x = x + self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))")
    return _once(text, "return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))",
                 "return x + self.drop(self.fc_out(F.gelu(self.fc(self.ln2(x)))))")


def _label_smoothing(text: str) -> str:
    return _once(text, "y.reshape(-1))", "y.reshape(-1), label_smoothing=0.1)")


def _wasted_forwards(n: int) -> Callable[[str], str]:
    def edit(text: str) -> str:
        waste = ("    with torch.no_grad():  # wasted work: every step slower, so fewer steps fit the budget\n"
                 f"        for _ in range({n}):\n            train_model(x)\n")
        return _once(text, "    optimizer.zero_grad(set_to_none=True)\n", waste + "    optimizer.zero_grad(set_to_none=True)\n")

    return edit


VERSIONS: tuple[Version, ...] = (
    Version("good", "reference", "the shipped trainer/train.py", lambda text: text),
    Version("null-comment", "null", "a comment line above `model = GPT()`",
            lambda text: _once(text, "\nmodel = GPT().to(device)\n",
                               "\n# The model (this comment changes nothing).\nmodel = GPT().to(device)\n")),
    Version("null-rename", "null", "the local `loss_value` renamed `step_loss`", _rename_local),
    Version("null-reorder", "null", "the config lines BETA1 and BETA2 swapped", _swap_betas),
    Version("null-whitespace", "null", "three more blank lines and spacing inside a tuple", _whitespace),
    Version("lr-0.75", "damage", "LR × 0.75", _scaled("LR", 0.75)),
    Version("lr-half", "damage", "LR × 0.5", _scaled("LR", 0.5)),
    Version("lr-quarter", "damage", "LR × 0.25", _scaled("LR", 0.25)),
    Version("warmup-long", "damage", "WARMUP_FRAC 0.5 (warm-up over half the budget)", _set("WARMUP_FRAC", 0.5)),
    Version("dropout", "damage", "dropout 0.1 on both residual branches", _dropout),
    Version("label-smooth", "damage", "label smoothing 0.1 in the training loss", _label_smoothing),
    Version("waste-1fwd", "damage", "one wasted no-grad forward pass per step (≈ +1/3 step time)", _wasted_forwards(1)),
    Version("waste-3fwd", "damage", "three wasted no-grad forward passes per step (≈ 2× step time)", _wasted_forwards(3)),
)
BY_NAME = {v.name: v for v in VERSIONS}
UNCHANGED = ("reference", "null")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def version_texts(shipped: str, names: Sequence[str]) -> dict[str, str]:
    """Each version's train.py. A null or damage that leaves the text as it was is a bench bug: refused."""
    texts = {}
    for name in names:
        text = BY_NAME[name].edit(shipped)
        if name != "good" and text == shipped:
            raise BenchError(f"version {name} does not change trainer/train.py")
        compile(text, f"{name}/train.py", "exec")
        texts[name] = text
    return texts


def _diff(good: str, other: str, name: str) -> str:
    return "".join(difflib.unified_diff(good.splitlines(True), other.splitlines(True), "good/train.py", f"{name}/train.py", n=1))


# -- the scratch workspace and the measurement path --------------------------------------------------


@dataclasses.dataclass
class Bench:
    root: Path
    cfg: Config
    sandbox: Sandbox
    data: DataPin
    harness_dir: Path
    hashes: dict[str, str]
    clock: str
    threads: int
    gpu: bool
    environment: dict[str, str]
    trees: dict[str, Path]


def open_bench(root: Path, budget: float, threads: int, texts: dict[str, str]) -> Bench:
    """``overnight init`` into ``root``, one tree per version, the pinned harness and data, the sandbox."""
    from overnight.daemon.cli import main as cli

    said = io.StringIO()
    with redirect_stdout(said), redirect_stderr(said):
        code = cli(["init", str(root / "ws")])
    if code != 0:
        raise BenchError(f"overnight init failed: {said.getvalue().strip()}")
    ws = root / "ws"
    cfg = load_config(ws).with_overrides(budget=budget, threads=threads)
    try:
        sandbox = detect(cfg.sandbox)
    except SandboxUnavailable as exc:
        raise BenchError(f"runs must be sealed: {exc}") from None
    sources = {rel: (ws / rel).read_bytes() for rel in cfg.frozen}
    hashes = {rel: hashlib.sha256(content).hexdigest() for rel, content in sources.items()}
    pinned = harness.pin(ws / ".overnight", TAG, sources, hashes)
    data = harness.prepare_data(pinned, cfg.workdir, cfg.prepare)
    if data is None:
        raise BenchError("the harness does not report its data (prepare.py --json)")
    trees = {}
    for name, text in texts.items():
        tree = root / "versions" / name
        shutil.copytree(ws / "trainer", tree / "trainer", ignore=shutil.ignore_patterns("__pycache__"))
        (tree / "trainer" / "train.py").write_text(text, encoding="utf-8")
        trees[name] = tree
    return Bench(root=root, cfg=cfg, sandbox=sandbox, data=data, harness_dir=pinned, hashes=hashes,
                 clock=resolve_clock(cfg.clock), threads=cfg.threads or usable_cores(), gpu=cuda_available(),
                 environment=harness.environment_fingerprint(), trees=trees)


def request(bench: Bench, name: str, slot: str, seed: int, anchor: tuple[int, float] | None = None) -> RunRequest:
    """The run as the loop's ``_request`` builds it, on the version's own tree."""
    cfg, tree, pinned, hashes = bench.cfg, bench.trees[name], bench.harness_dir, dict(bench.hashes)
    log_path = bench.root / "runs" / f"{slot}.log"

    def after_run() -> str | None:
        for rel, digest in hashes.items():
            if hashlib.sha256((tree / rel).read_bytes()).hexdigest() != digest:
                return f"the run changed frozen harness file {rel}"
        changed = harness.environment_changes(bench.environment, harness.environment_fingerprint())
        return f"the run changed the Python environment: {', '.join(changed[:5])}" if changed else None

    return RunRequest(
        tree=tree, workdir=cfg.workdir, command=cfg.run, budget=cfg.budget, clock=bench.clock,
        memory_limit_gb=cfg.memory_limit_gb, seed=seed, threads=bench.threads, run_dir=log_path.with_suffix(".d"),
        log_path=log_path, data=bench.data,
        harness=Harness(directory=pinned, workdir=cfg.workdir, evaluate=tuple(harness.isolated(cfg.evaluate)),
                        check=lambda: harness.check(pinned, hashes)),
        sandbox=bench.sandbox, limits=Limits(grace=cfg.grace), network=cfg.network, gpu=bench.gpu, after_run=after_run,
        anchor=anchor, load_starves=cfg.machine_share > 0,  # as the loop builds it
    )


@contextmanager
def one_core_busy(on: bool) -> Iterator[None]:
    """Another process spinning on one core for the round (nothing when ``on`` is false)."""
    if not on:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        time.sleep(1.0)  # running before the round's first run starts
        yield
    finally:
        spinner.kill()
        spinner.wait()


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def one_run(bench: Bench, name: str, rnd: int, condition: str, seed: int, sha: str, stop: threading.Event,
            anchor: tuple[int, float] | None = None) -> dict[str, Any] | None:
    """One measured run as a log record; None when the bench was stopped during it."""
    load_start, started = _load(), time.time()
    t0 = time.monotonic()
    out = execute(request(bench, name, f"r{rnd}-{name}", seed, anchor), stop=stop)
    wall = time.monotonic() - t0
    if out.status == "interrupted":
        return None
    return {
        "type": "run", "version": name, "kind": BY_NAME[name].kind, "sha256": sha, "round": rnd, "condition": condition,
        "seed": seed, "status": out.status, "error": out.error, "val_bpb": out.val_bpb, "holdout_bpb": out.holdout_bpb,
        "steps": out.steps, "steps_planned": out.steps_planned, "step_seconds": out.step_seconds,
        "anchor": list(anchor) if anchor else None, "tokens": out.tokens, "cpu_seconds": out.cpu_seconds,
        "delay_seconds": out.delay_seconds, "wall": round(wall, 2), "train_wall": round(out.wall_seconds, 2),
        "startup_seconds": out.startup_seconds, "eval_seconds": out.eval_seconds, "load_start": load_start,
        "load_end": _load(), "started": started, "budget": bench.cfg.budget, "threads": bench.threads,
        "clock": bench.clock, "sealed": bench.sandbox.sealed, "flags": out.flags,
        "log_tail": out.log_tail[-1500:] if out.status != "ok" else "",
    }


# -- the run log --------------------------------------------------------------------------------------


def default_log(budget: float, threads: int, busy: bool) -> Path:
    return CACHE / f"b{budget:g}-t{threads}-{'busy' if busy else 'quiet'}.jsonl"


def read_log(path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    header, runs = None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if record.get("type") == "header" and header is None:
            header = record
        elif record.get("type") == "run":
            runs.append(record)
    return header, runs


def append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def condition_of(rnd: int, busy: bool) -> str:
    return "busy" if busy and rnd % 2 == 1 else "quiet"


def plan(names: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """Round-robin: round r runs every version once, the order rotated by r."""
    slots = []
    for rnd in range(rounds):
        shift = rnd % len(names)
        slots += [(rnd, name) for name in [*names[shift:], *names[:shift]]]
    return slots


def seed_of(rnd: int, name: str) -> int:
    return 1000 * (rnd + 1) + [v.name for v in VERSIONS].index(name)


def measure(args: argparse.Namespace, names: list[str], log: Path) -> list[dict[str, Any]]:
    """Run the missing slots of the plan, appending each run to ``log``; returns every run in the log."""
    shipped = (REPO / "trainer" / "train.py").read_text(encoding="utf-8")
    texts = version_texts(shipped, names)
    shas = {name: _sha(text) for name, text in texts.items()}
    threads = args.threads or usable_cores()
    harness_sha = _sha((REPO / "trainer" / "prepare.py").read_text(encoding="utf-8"))
    header = {"type": "header", "budget": args.budget, "threads": threads, "busy": args.busy, "clock": "steps",
              "shipped_sha256": _sha(shipped), "harness_sha256": harness_sha, "created": time.time()}
    runs: list[dict[str, Any]] = []
    if log.exists():
        old, runs = read_log(log)
        if args.fresh:
            aside = log.with_suffix(f".{int(time.time())}.old")
            log.rename(aside)
            print(f"the previous log was moved to {aside}")
            runs = []
        elif runs and not args.resume:
            raise BenchError(f"{log} already holds {len(runs)} runs: --resume to continue them, --fresh to start over, "
                             "--analyse to only analyse them")
        elif old is not None:
            differ = [k for k in ("budget", "threads", "busy", "harness_sha256") if old.get(k) != header[k]]
            if differ:
                raise BenchError(f"{log} was measured with other settings or another harness ({', '.join(differ)}): "
                                 "--fresh to start over, or another --log")
    for r in runs:
        if r["version"] in shas and r["sha256"] != shas[r["version"]]:
            raise BenchError(f"version {r['version']} is not the code the saved runs in {log} measured (train.py or the "
                             "bench's edit changed): --fresh to start over, or another --log")
    if not log.exists():
        log.parent.mkdir(parents=True, exist_ok=True)
        append(log, header)
    # A slot is done once it has a measurement or a failure of the code; a starved run is not a measurement.
    done = {(r["round"], r["version"]) for r in runs if r["status"] != "starved"}
    todo = [slot for slot in plan(names, args.runs) if slot not in done]
    per_run = _mean([r["wall"] for r in runs if r["budget"] == args.budget]) or (args.budget * 1.1 + 30)
    print(f"{len(todo)} runs to go ({len(done)} done) in {log}; about {len(todo) * per_run / 60:.0f} min at "
          f"{per_run:.0f} s a run; {threads} threads, budget {args.budget:g} s, steps clock, sealed", flush=True)
    if not todo:
        return runs
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with tempfile.TemporaryDirectory(prefix="overnight-bench-decisions-") as tmp:
            bench = open_bench(Path(tmp), args.budget, args.threads, texts)
            print(f"workspace {tmp}: {len(names)} versions, data {bench.data.directory}", flush=True)
            t_start, done_now = time.monotonic(), 0
            by_round: dict[int, list[str]] = {}
            for rnd, name in todo:
                by_round.setdefault(rnd, []).append(name)
            for rnd, round_names in by_round.items():
                if stop.is_set():
                    break
                condition = condition_of(rnd, args.busy)
                with one_core_busy(condition == "busy"):
                    for name in round_names:
                        if stop.is_set():
                            break
                        for _ in range(3):  # a starved run is not a measurement: it runs again, up to twice
                            record = one_run(bench, name, rnd, condition, seed_of(rnd, name), shas[name], stop,
                                             _anchor(runs))
                            if record is None:
                                break
                            append(log, record)
                            runs.append(record)
                            _print_run(record, done_now + 1, len(todo), args.runs)
                            if record["status"] != "starved" or stop.is_set():
                                break
                        done_now += 1
                        left = len(todo) - done_now
                        if left and not stop.is_set():
                            eta = (time.monotonic() - t_start) / done_now * left
                            print(f"    {left} runs left, about {eta / 60:.0f} min", flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stop.is_set():
        print(f"stopped: {len(runs)} runs saved in {log}; `--resume` continues", flush=True)
    return runs


def _anchor(runs: Sequence[dict[str, Any]]) -> tuple[int, float] | None:
    """Every run is anchored, as the loop anchors a session's runs, to the first successful run of the reference
    code ("good"): its step count holds for any version whose calibrated speed is within the harness's tolerance."""
    for r in runs:
        if r["version"] == "good" and r["status"] == "ok" and r.get("steps_planned") and r.get("step_seconds"):
            return int(r["steps_planned"]), float(r["step_seconds"])
    return None


def _print_run(r: dict[str, Any], i: int, n: int, rounds: int) -> None:
    if r["status"] == "ok":
        what = (f"val_bpb {r['val_bpb']:.4f} holdout {r['holdout_bpb']:.4f} steps {r['steps']}/{r['steps_planned']} "
                f"cpu {r['cpu_seconds']:.0f} s")
    else:
        what = f"{r['status'].upper()}: {r['error']}"
    print(f"[{i}/{n}] round {r['round'] + 1}/{rounds} {r['condition']:5} {r['version']:16} seed {r['seed']}: {what}; "
          f"wall {r['wall']:.0f} s, load {r['load_start'][0]:.2f}", flush=True)


# -- analysis ------------------------------------------------------------------------------------------


def _mean(xs: Sequence[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _sd(xs: Sequence[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) > 1 else None


def _load_range(rs: Sequence[dict[str, Any]]) -> list[float] | None:
    loads = [r["load_start"][0] for r in rs]
    return [min(loads), max(loads)] if loads else None


def _arm(values: Sequence[float]) -> sim.Resample:
    """Resampling ``values`` with replacement: spread widened by √(n/(n−1)) about their mean, so the arm's variance is
    the sample variance (a plain bootstrap of n values has (n−1)/n of it: 17 % less at n = 6)."""
    n, mean = len(values), statistics.fmean(values)
    k = math.sqrt(n / (n - 1))
    return sim.Resample([mean + (v - mean) * k for v in values])


def _sigma_ci(sigma: float, df: int, level: float = 0.90) -> list[float]:
    from scipy.stats import chi2

    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    return [sigma * math.sqrt(df / chi2.ppf(hi, df)), sigma * math.sqrt(df / chi2.ppf(lo, df))]


RULES: tuple[tuple[str, Callable[[], sim.Policy]], ...] = (
    ("sequential", lambda: sim.Sequential()),
    ("previous", lambda: sim.Today()),
    ("strict <", lambda: sim.StrictLess()),
)
RULE_TITLES = {
    "sequential": f"sequential t-test (this project: alpha {Rule().alpha:g}, 2–{Rule().max_runs} runs, pooled σ)",
    "previous": "previous rule (3-run σ, 2σ bar, one confirmation run)",
    "strict <": "strict < (autoresearch: one run, kept if below the incumbent's)",
}


def _replay(policy: sim.Policy, incumbent: sim.Resample, candidate: sim.Resample, trials: int, seed: str, wall: float | None
            ) -> dict[str, Any]:
    t = sim.replay_decision(policy, incumbent, candidate, trials=trials, seed=seed, incumbent_runs=policy.baseline_runs)
    return {"keep_rate": t.keep_rate, "runs_per_decision": t.runs_per_decision,
            "seconds_per_decision": t.runs_per_decision * wall if wall else None, "trials": t.decisions}


def analyse_condition(rs: list[dict[str, Any]], trials: int, sessions: int) -> dict[str, Any]:
    ok = [r for r in rs if r["status"] == "ok" and r["val_bpb"] is not None]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in ok:
        by.setdefault(r["version"], []).append(r)
    order = [v.name for v in VERSIONS if v.name in {r["version"] for r in rs}]
    per_version: dict[str, dict[str, Any]] = {}
    for name in order:
        vr = by.get(name, [])
        vals = [r["val_bpb"] for r in vr]
        per_version[name] = {
            "kind": BY_NAME[name].kind, "runs": len([r for r in rs if r["version"] == name]), "ok": len(vr),
            "failed": sorted({f"{r['status']}: {r['error']}" for r in rs if r["version"] == name and r["status"] != "ok"}),
            "mean": _mean(vals), "sd": _sd(vals), "holdout_mean": _mean([r["holdout_bpb"] for r in vr]),
            "steps_mean": _mean([r["steps"] for r in vr]), "steps_min": min((r["steps"] for r in vr), default=None),
            "steps_max": max((r["steps"] for r in vr), default=None),
            "steps_planned_mean": _mean([r["steps_planned"] for r in vr if r["steps_planned"]]),
            "wall_mean": _mean([r["wall"] for r in vr]), "train_wall_mean": _mean([r["train_wall"] for r in vr]),
            "eval_mean": _mean([r["eval_seconds"] for r in vr if r["eval_seconds"] is not None]),
            "load": _load_range(vr), "values": vals,
        }
    out: dict[str, Any] = {"versions": per_version, "runs": len(rs), "ok": len(ok), "load": _load_range(rs)}
    unchanged = [name for name in order if BY_NAME[name].kind in UNCHANGED and len(by.get(name, [])) >= 1]
    urs = [r for name in unchanged for r in by[name]]
    groups = [[r["val_bpb"] for r in by[name]] for name in unchanged]
    if sum(len(g) - 1 for g in groups if g) < 1:
        out["noise"] = None
        return out
    noise = pooled_noise(groups, 0.0)
    hold = pooled_noise([[r["holdout_bpb"] for r in by[name]] for name in unchanged], 0.0)
    steps = [r["steps"] for r in urs]
    pool_values = [r["val_bpb"] for r in urs]
    wall_u = _mean([r["wall"] for r in urs])
    out["noise"] = {
        "sigma": noise.sigma, "df": noise.df, "runs": noise.runs, "groups": noise.groups, "versions": unchanged,
        "sigma_ci90": _sigma_ci(noise.sigma, noise.df), "holdout_sigma": hold.sigma, "steps_mean": _mean(steps),
        "steps_sd": _sd(steps), "steps_min": min(steps), "steps_max": max(steps),
        "steps_planned_mean": _mean([r["steps_planned"] for r in urs if r["steps_planned"]]),
        "wall_mean": wall_u, "load": _load_range(urs),
        "nulls_vs_good": {name: (per_version[name]["mean"] - per_version["good"]["mean"])
                          for name in unchanged if name != "good" and "good" in by},
    }
    good = by.get("good", [])
    gains = {}
    for name in order:
        dr = by.get(name, [])
        if BY_NAME[name].kind != "damage" or len(dr) < 2 or len(good) < 2:
            continue
        d_vals, g_vals = [r["val_bpb"] for r in dr], [r["val_bpb"] for r in good]
        gain = statistics.fmean(d_vals) - statistics.fmean(g_vals)
        se = math.sqrt(statistics.variance(d_vals) / len(d_vals) + statistics.variance(g_vals) / len(g_vals))
        gains[name] = {"gain": gain, "se": se, "gain_sigmas": gain / noise.sigma if noise.sigma else None,
                       "steps_mean": per_version[name]["steps_mean"], "load": _load_range(dr + good)}
    out["gains"] = gains
    if len(pool_values) < 2:
        return out
    pool = _arm(pool_values)
    wall_good = _mean([r["wall"] for r in good]) or wall_u
    replays: dict[str, Any] = {}
    for rule_name, make in RULES:
        policy = make()
        entry: dict[str, Any] = {
            "null_pooled": _replay(policy, pool, pool, trials, f"null:{rule_name}", wall_u),
            "nulls": {}, "damages": {}, "curve": {},
        }
        if len(good) >= 2:
            g_arm = _arm([r["val_bpb"] for r in good])
            for name in unchanged:
                if name != "good" and len(by[name]) >= 2:
                    entry["nulls"][name] = _replay(policy, g_arm, _arm([r["val_bpb"] for r in by[name]]), trials,
                                                   f"{name}:{rule_name}", _mean([r["wall"] for r in by[name]]))
            for name in gains:
                entry["damages"][name] = _replay(policy, _arm([r["val_bpb"] for r in by[name]]), g_arm, trials,
                                                 f"{name}:{rule_name}", wall_good)
        for g in CURVE_GAINS:
            entry["curve"][f"{g:g}"] = _replay(policy, pool, pool.shifted(-g), trials, f"curve{g}:{rule_name}", wall_u)
        s = sim.simulate(policy, pool, sim.gains_from(sim.GAINS), sessions=sessions, candidates=SESSION_CANDIDATES,
                         seed=f"session:{rule_name}")
        entry["session"] = {
            "keep_rate": {f"{g:g}": s.keep_rate(g) for g in sim.GAINS},
            "candidate_runs_per_decision": s.candidate_runs_per_decision, "runs_per_decision": s.runs_per_decision,
            "seconds_per_decision": s.runs_per_decision * wall_u if wall_u else None, "decisions": s.decisions,
        }
        replays[rule_name] = entry
    out["replays"] = replays
    return out


def analyse(runs: list[dict[str, Any]], trials: int, sessions: int) -> dict[str, Any]:
    print(f"analysing {len(runs)} runs: {trials} replays per decision, {sessions} sessions per rule ...", flush=True)
    conditions = {}
    for condition in ("quiet", "busy"):
        rs = [r for r in runs if r["condition"] == condition]
        if rs:
            conditions[condition] = analyse_condition(rs, trials, sessions)
    return {"conditions": conditions, "trials": trials, "sessions": sessions, "session_candidates": SESSION_CANDIDATES,
            "load": _load_range(runs), "goals": goals(conditions, runs)}


def goals(conditions: dict[str, Any], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each goal with the figure it is judged on and a plain verdict."""
    out = []
    budget = runs[0]["budget"] if runs else None
    for condition, goal in (("quiet", GOAL_SIGMA_QUIET), ("busy", GOAL_SIGMA_BUSY)):
        noise = (conditions.get(condition) or {}).get("noise")
        if noise is None:
            out.append({"goal": f"σ(val_bpb) ≤ {goal:g} {condition}", "value": None, "met": None,
                        "note": ("not measured: too few runs (a version measured twice at least)" if condition in conditions
                                 else "not measured (run with --busy)" if condition == "busy" else "not measured")})
            continue
        lo, hi = noise["sigma_ci90"]
        note = f"90 % CI {lo:.4f}–{hi:.4f}, {noise['df']} df"
        if noise["sigma"] <= goal < hi:
            note += "; the CI reaches above the goal"
        elif lo <= goal < noise["sigma"]:
            note += "; the CI reaches below the goal"
        out.append({"goal": f"σ(val_bpb) ≤ {goal:g} {condition}", "value": noise["sigma"], "met": noise["sigma"] <= goal,
                    "note": note, "load": noise["load"]})
    for condition, c in conditions.items():
        rep = c.get("replays")
        if not rep:
            continue
        seq = rep["sequential"]
        fk = seq["null_pooled"]["keep_rate"]
        fk_s = seq["session"]["keep_rate"]["0"]
        out.append({"goal": f"false keeps ≤ {_pct(GOAL_FALSE_KEEP, 0)} of null changes ({condition}, sequential rule)",
                    "value": max(fk, fk_s), "met": max(fk, fk_s) <= GOAL_FALSE_KEEP,
                    "note": f"first decision {_pct(fk)}, in a session {_pct(fk_s)}", "load": c["noise"]["load"]})
        k = seq["curve"][f"{GOAL_GAIN:g}"]["keep_rate"]
        k_s = seq["session"]["keep_rate"][f"{GOAL_GAIN:g}"]
        out.append({"goal": f"≥ {_pct(GOAL_KEEP_AT_GAIN, 0)} of {GOAL_GAIN:g} bpb gains kept ({condition}, sequential rule)",
                    "value": min(k, k_s), "met": min(k, k_s) >= GOAL_KEEP_AT_GAIN,
                    "note": f"first decision {_pct(k)}, in a session {_pct(k_s)} (the real noise of unchanged code, shifted by "
                            f"{GOAL_GAIN:g})", "load": c["noise"]["load"]})
    if budget is not None and budget != GOAL_BUDGET:
        for g in out:
            g["note"] = (g.get("note") or "") + f"; the goals are for a {GOAL_BUDGET:g} s budget, this bench ran {budget:g} s"
    return out


# -- the report ----------------------------------------------------------------------------------------


def _f(x: float | None, places: int = 4) -> str:
    return "–" if x is None else f"{x:.{places}f}"


def _pct(x: float | None, places: int = 1) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:.{places}f} %"


def _ld(load: list[float] | None) -> str:
    return "–" if not load else f"{load[0]:.1f}–{load[1]:.1f}"


def render(data: dict[str, Any]) -> str:
    a, cfg = data["analysis"], data["config"]
    lines = [
        "# Overnight's decisions on real training runs", "",
        f"`{data['command']}` on {data['machine']}, torch {data['torch']}, python {data['python']} ({data['date']}). "
        f"Budget {cfg['budget']:g} s on the `{cfg['clock']}` clock, {cfg['threads']} threads (every core of "
        f"{data['cpus']}), sealed runs (bubblewrap), scored by the pinned harness; {cfg['rounds']} round"
        f"{'s' if cfg['rounds'] != 1 else ''}, every version "
        "once per round in a rotated order, a distinct seed per run"
        + (", odd rounds with another process spinning on one core (`busy`)" if cfg["busy"] else "") + ". "
        f"Load is the 1-minute load average when each run started, min–max over the runs a figure rests on "
        f"(all runs: {_ld(a['load'])}).", "",
        "## Goals", "",
        "| goal | measured | met | note | load |", "|---|---:|---|---|---|",
    ]
    for g in a["goals"]:
        met = "–" if g["met"] is None else ("yes" if g["met"] else "**NO**")
        value = g["value"]
        shown = "–" if value is None else (f"{value:.4f}" if "σ" in g["goal"] else _pct(value))
        lines.append(f"| {g['goal']} | {shown} | {met} | {g.get('note', '')} | {_ld(g.get('load'))} |")
    missed = [g["goal"] for g in a["goals"] if g["met"] is False]
    if missed:
        verdict = "**Not met:** " + "; ".join(missed) + "."
    elif any(g["met"] for g in a["goals"]):
        verdict = "Every goal measured here is met."
    else:
        verdict = "No goal could be measured from these runs."
    lines += ["", verdict, ""]
    lines += ["## Versions", "", "| version | kind | change |", "|---|---|---|"]
    for v in data["versions"]:
        lines.append(f"| {v['name']} | {v['kind']} | {v['description']} |")
    for condition, c in a["conditions"].items():
        lines += ["", f"## {condition.capitalize()} runs", ""]
        n = c.get("noise")
        if n:
            lines += [
                f"**Noise of unchanged code** (good + nulls pooled: {', '.join(n['versions'])}): σ(val_bpb) "
                f"**{n['sigma']:.4f}** (90 % CI {n['sigma_ci90'][0]:.4f}–{n['sigma_ci90'][1]:.4f}, {n['df']} df over "
                f"{n['runs']} runs), σ(holdout) {n['holdout_sigma']:.4f}; steps {n['steps_mean']:.0f} ± "
                f"{_f(n['steps_sd'], 0)} ({n['steps_min']}–{n['steps_max']}), planned {_f(n['steps_planned_mean'], 0)}; "
                f"{_f(n['wall_mean'], 0)} s wall per run (training + evaluation); load {_ld(n['load'])}. "
                + ("Null − good means: " + ", ".join(f"{k} {v:+.4f}" for k, v in n["nulls_vs_good"].items()) + "."
                   if n["nulls_vs_good"] else ""), "",
            ]
        else:
            lines += ["Not enough runs of unchanged code for a σ (a version measured twice at least).", ""]
        lines += ["| version | kind | ok/runs | val_bpb mean | σ | holdout | steps mean (min–max) | planned | wall s "
                  "| eval s | load |", "|---|---|---|---:|---:|---:|---|---:|---:|---:|---|"]
        for name, v in c["versions"].items():
            lines.append(f"| {name} | {v['kind']} | {v['ok']}/{v['runs']} | {_f(v['mean'])} | {_f(v['sd'])} | "
                         f"{_f(v['holdout_mean'])} | {_f(v['steps_mean'], 0)} ({v['steps_min'] or '–'}–{v['steps_max'] or '–'}) | "
                         f"{_f(v['steps_planned_mean'], 0)} | {_f(v['wall_mean'], 0)} | {_f(v['eval_mean'], 1)} | "
                         f"{_ld(v['load'])} |")
        failed = [f"{name}: {'; '.join(v['failed'])}" for name, v in c["versions"].items() if v["failed"]]
        if failed:
            lines += ["", "Failed runs: " + " · ".join(failed)]
        gains = c.get("gains") or {}
        if gains:
            lines += ["", "**True gain of each known-good proposal** (incumbent = the damaged version, candidate = good): "
                      "mean(damaged) − mean(good) ± its standard error.", "",
                      "| proposal (fixes) | true gain bpb | ± SE | in σ | damaged steps | load |", "|---|---:|---:|---:|---:|---|"]
            for name, g in sorted(gains.items(), key=lambda kv: kv[1]["gain"]):
                lines.append(f"| {name} → good | {g['gain']:+.4f} | {g['se']:.4f} | {_f(g['gain_sigmas'], 1)} | "
                             f"{_f(g['steps_mean'], 0)} | {_ld(g['load'])} |")
        rep = c.get("replays")
        if not rep:
            continue
        rules = list(rep)
        head = " | ".join(rules)
        sep = "|---|" + "---:|" * len(rules)
        wall_u, load_u = (n["wall_mean"], n["load"]) if n else (None, None)
        lines += ["", f"**Decisions replayed on these runs** ({a['trials']} replays per decision: the incumbent "
                  "measured as a session's baseline, 3 runs, 1 for strict <; the candidate run as the rule asks; every "
                  "run drawn from the real measured values of its version). Keep rate · candidate runs · seconds per "
                  f"decision (runs × {_f(wall_u, 0)} s measured per run). Load {_ld(load_u)}.", "",
                  f"| decision | {head} |", sep]

        def cell(x: dict[str, Any]) -> str:
            secs = x["seconds_per_decision"]
            return f"{_pct(x['keep_rate'])} · {x['runs_per_decision']:.2f} · {'–' if secs is None else f'{secs:.0f} s'}"

        lines.append("| null change (good + nulls pooled, both sides) | "
                     + " | ".join(cell(rep[r]["null_pooled"]) for r in rules) + " |")
        for name in rep[rules[0]]["nulls"]:
            lines.append(f"| {name} vs good (as measured) | " + " | ".join(cell(rep[r]["nulls"][name]) for r in rules) + " |")
        for name in sorted(gains, key=lambda k: gains[k]["gain"]):
            if name in rep[rules[0]]["damages"]:
                lines.append(f"| fix {name}: gain {gains[name]['gain']:+.4f} ± {gains[name]['se']:.4f} | "
                             + " | ".join(cell(rep[r]["damages"][name]) for r in rules) + " |")
        for g in rep[rules[0]]["curve"]:
            lines.append(f"| gain {g} (unchanged code's runs shifted) | "
                         + " | ".join(cell(rep[r]["curve"][g]) for r in rules) + " |")
        gains_s = list(rep[rules[0]]["session"]["keep_rate"])
        lines += ["", f"**In sessions** ({a['sessions']} simulated sessions of {a['session_candidates']} candidates per rule, "
                  "true gains drawn uniformly from " + ", ".join(gains_s) + " bpb, every run drawn from the real runs of "
                  "unchanged code shifted by the gain; the sequential rule re-runs the incumbent every 4 candidates): keep "
                  "rate by true gain, and compute per decision with the baseline and re-runs counted.", "",
                  "| rule | " + " | ".join(f"keep@{g}" for g in gains_s) + " | candidate runs/decision | all runs/decision "
                  "| seconds/decision |", "|---|" + "---:|" * (len(gains_s) + 3)]
        for r in rules:
            s = rep[r]["session"]
            lines.append(f"| {r} | " + " | ".join(_pct(s["keep_rate"][g]) for g in gains_s)
                         + f" | {s['candidate_runs_per_decision']:.2f} | {s['runs_per_decision']:.2f} | "
                         f"{_f(s['seconds_per_decision'], 0)} |")
    lines += ["", "Rules: " + "; ".join(f"**{k}**: {v}" for k, v in RULE_TITLES.items()) + ".", "",
              f"The replays' rates have a binomial standard error of at most ±{50 / math.sqrt(a['trials']):.1f} points at "
              f"{a['trials']:,} replays, but their real uncertainty "
              "is the measured runs themselves: each arm resamples a few runs per version (spread widened by √(n/(n−1)) "
              "so the arm's variance is the sample variance), and a version's measured mean is itself off by σ/√n.", ""]
    return "\n".join(lines)


def report(runs: list[dict[str, Any]], args: argparse.Namespace, log: Path) -> dict[str, Any]:
    import torch

    shipped = (REPO / "trainer" / "train.py").read_text(encoding="utf-8")
    names = [v.name for v in VERSIONS if v.name in {r["version"] for r in runs}]
    texts = version_texts(shipped, names)
    rounds = max((r["round"] for r in runs), default=-1) + 1
    stale = sorted({r["version"] for r in runs if r["sha256"] != _sha(texts[r["version"]])})
    if stale:
        print(f"warning: the saved runs of {', '.join(stale)} measured other code than the bench's version today "
              "(train.py or the bench's edit changed since)", file=sys.stderr)
    first = runs[0] if runs else {}
    data = {
        "command": "python bench/decisions.py " + " ".join(sys.argv[1:]), "date": dt.date.today().isoformat(),
        "machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__,
        "cpus": os.cpu_count(), "log": str(log), "stale_versions": stale,
        "config": {"budget": first.get("budget", args.budget), "threads": first.get("threads"),
                   "clock": first.get("clock", "steps"), "sealed": first.get("sealed"), "rounds": rounds,
                   "busy": any(r["condition"] == "busy" for r in runs)},
        "versions": [{"name": n, "kind": BY_NAME[n].kind, "description": BY_NAME[n].description,
                      "sha256": _sha(texts[n]), "diff": _diff(texts["good"], texts[n], n) if "good" in texts else ""}
                     for n in names],
        "analysis": analyse(runs, args.trials, args.sessions),
        "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    md = render(data)
    out.with_suffix(".md").write_text(md, encoding="utf-8")
    print(md)
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=60.0, help="training budget per run, seconds (default 60)")
    ap.add_argument("--runs", type=int, default=6, help="rounds: runs of every version (with --busy, half of them busy)")
    ap.add_argument("--threads", type=int, default=0, help="threads per run; 0 (default): every core")
    ap.add_argument("--versions", default="", help="comma-separated subset of: " + ", ".join(BY_NAME) + " (default: all)")
    ap.add_argument("--busy", action="store_true", help="odd rounds with another process spinning on one core")
    ap.add_argument("--resume", action="store_true", help="continue the runs saved in the log")
    ap.add_argument("--fresh", action="store_true", help="move the saved runs aside and start over")
    ap.add_argument("--analyse", action="store_true", help="only analyse the saved runs (the log, else <out>.json)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="where <out>.md and <out>.json go (default bench/results/decisions)")
    ap.add_argument("--log", default="", help="the JSON-lines run log (default: one per budget/threads/busy under "
                    f"{CACHE})")
    ap.add_argument("--trials", type=int, default=4000, help="replays per decision (default 4000)")
    ap.add_argument("--sessions", type=int, default=1000, help="simulated sessions per rule (default 1000)")
    args = ap.parse_args(argv)
    try:
        names = [n.strip() for n in args.versions.split(",") if n.strip()] or [v.name for v in VERSIONS]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            raise BenchError(f"unknown version(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
        if "good" not in names:
            names.insert(0, "good")
        names = [v.name for v in VERSIONS if v.name in names]
        if args.runs < 1 or args.budget <= 0:
            raise BenchError("--runs must be at least 1 and --budget positive")
        log = Path(args.log) if args.log else default_log(args.budget, args.threads or usable_cores(), args.busy)
        if args.analyse:
            if log.exists():
                runs = read_log(log)[1]
            elif Path(args.out).with_suffix(".json").exists():
                runs = json.loads(Path(args.out).with_suffix(".json").read_text(encoding="utf-8"))["runs"]
                log = Path(args.out).with_suffix(".json")
            else:
                raise BenchError(f"no saved runs: neither {log} nor {Path(args.out).with_suffix('.json')} exists")
        else:
            runs = measure(args, names, log)
        if args.versions:
            runs = [r for r in runs if r["version"] in names]
        if not runs:
            raise BenchError("no runs to analyse")
        report(runs, args, log)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The workspace config: which files the agent may edit, which are frozen, how a run is started.

Read from ``overnight.toml`` at the workspace root. Every key has a default that points at the
repository's own ``trainer/`` and ``program.md``, so a fresh clone is a working workspace with no
config file at all.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

CONFIG_NAME = "overnight.toml"
STATE_DIR = ".overnight"

AGENTS = ("sweep", "replay", "claude")
CLOCKS = ("auto", "steps", "cpu", "wall")
SANDBOXES = ("bwrap", "none")
# "harness": the pinned harness scores the model a run hands off (val_bpb). "reported": the number is the script's
# own, parsed from its output (an autoresearch-style train.py printing `val_bpb: X`); the harness cannot vouch for it.
MEASURES = ("harness", "reported")
# What the harness measures: the only metric a harness-measured session can have.
HARNESS_METRIC = "val_bpb"
# Keys of earlier versions that no longer exist, and what replaced them.
_RENAMED = {
    "keep_sigma": "the keep rule is a sequential t-test now: set alpha (its false-keep rate) instead",
    "confirm_runs": "every keep rests on at least two runs; max_runs caps the runs of a candidate near the bar",
}


class ConfigError(ValueError):
    """The workspace config is missing something or says something impossible."""


@dataclass(frozen=True)
class SweepConfig:
    """The no-LLM agent: which config constants it may not touch."""

    exclude: tuple[str, ...] = ("COMPILE", "USE_BF16", "REPORT_EVERY_S")
    seed: int = 0


@dataclass(frozen=True)
class ClaudeConfig:
    """The Claude agent: ``[claude]`` in overnight.toml. The key comes from ANTHROPIC_API_KEY, never from the file."""

    # The default model, named here and nowhere else.
    model: str = "claude-sonnet-5-5"
    max_tokens: int = 8192
    # Unset: the model's default. The SDK no longer has a parameter for it (current models fix their
    # sampling); when set it is sent as a raw request field, for the models that still take it.
    temperature: float | None = None
    # Dollars of API use per session; when reached the loop pauses until the human resumes it.
    spending_cap_usd: float = 20.0
    # Empty: the SDK's default (or ANTHROPIC_BASE_URL): a proxy, or the tests' fake server.
    base_url: str = ""
    # Seconds without a byte from the API before a request is given up and retried.
    timeout_s: float = 120.0
    # Retries of one request (429, 529, 5xx, timeouts, dropped streams, malformed tool input), with
    # exponential back-off and jitter; then the loop pauses and probes every probe_interval_s.
    max_retries: int = 5
    retry_base_s: float = 2.0
    retry_max_s: float = 60.0
    probe_interval_s: float = 60.0
    # Turns in which an invalid answer is sent back with its errors before it is recorded as invalid.
    repair_turns: int = 2
    # Prepare the next proposal while an experiment trains, so the GPU does not wait for the model.
    pipeline: bool = True
    # Experiments shown line by line in the prompt; older ones are condensed.
    recent: int = 25


@dataclass(frozen=True)
class ExecutorConfig:
    """Where runs happen: ``[executor]`` in overnight.toml (``--ray ADDRESS`` on the command line)."""

    # "local": this machine (``slots`` runs at once); "ray": a Ray cluster, one task per run.
    kind: str = "local"
    # The Ray cluster: "auto" finds the one `ray start --head` started on this machine; or "HOST:PORT".
    address: str = "auto"
    # GPUs each Ray task asks for (0 on a CPU cluster).
    gpus_per_run: float = 0.0


@dataclass(frozen=True)
class Config:
    root: Path
    # Files the agent may change, relative to the workspace root. Nothing else may differ.
    editable: tuple[str, ...] = ("trainer/train.py",)
    # Harness files: hash-checked before every run; a proposal touching them is refused.
    frozen: tuple[str, ...] = ("trainer/prepare.py",)
    # The human's research program, given to the agent.
    program: str = "program.md"
    # Where runs start, relative to the workspace root, and what they run there.
    workdir: str = "trainer"
    run: tuple[str, ...] = ("{python}", "train.py")
    # How the pinned harness scores a model (run in its own sandbox, from the session's copy of the frozen files).
    evaluate: tuple[str, ...] = ("{python}", "prepare.py", "evaluate")
    # Builds or verifies the data once per start; with measure = "harness" its last stdout line pins it
    # ({"data_dir", "manifest_sha256", "training_files"}, JSON). Empty: nothing to prepare (reported mode only).
    prepare: tuple[str, ...] = ("{python}", "prepare.py", "--json")
    # Seconds of training per run. With the default clock the harness turns them into a step count from the
    # code's own measured speed (its fastest steps), so equal code trains equally however busy the machine is.
    budget: float = 60.0
    # "auto" (= "steps"): the calibrated step count above; "cpu": process CPU time per thread; "wall".
    clock: str = "auto"
    # Budget-seconds of CPU a run may spend outside its training loop: start-up and model export together.
    grace: float = 15.0
    memory_limit_gb: float = 8.0
    # CPU threads a run may use (torch.set_num_threads); 0: every core this process may use. One by default: a
    # single thread's CPU time is accounted exactly and barely moves with the machine's load, so the calibrated step
    # count of equal code stays equal; two threads on two cores run ~1.3x faster but their CPU time per step moved
    # ~20 % between a quiet machine and one core busy.
    threads: int = 1
    # Who measures: "harness" (the pinned harness scores the model the run hands off: val_bpb) or "reported" (the
    # script's own number, the last `<metric>: <number>` line it prints; such sessions are marked as unvouched).
    measure: str = "harness"
    # The number decisions rest on: val_bpb with the harness; in reported mode, the name the script prints.
    metric: str = HARNESS_METRIC
    direction: str = "minimize"
    # Host folders a sealed run may read (read-only), e.g. an autoresearch data cache; a path under ~ appears
    # under the run's own home, so `~/.cache/x` in the script finds it.
    readable: tuple[str, ...] = ()
    # Every run's loss curve and scores as TensorBoard event files under .overnight/tb/<tag>/<experiment>.
    tensorboard: bool = True
    # What the agent draws from the hypothesis queue (ideas.py): "not-vetoed" (everything the human has not vetoed,
    # so an unattended night runs) or "approved" (only what the human approved; the loop waits for approvals).
    ideas: str = "not-vetoed"
    # A direction that went this many tries without a keep is flagged as a plateau; 0: never.
    plateau_after: int = 5
    agent: str = "sweep"
    # Runs at once on this machine: each candidate's runs stay sequential, but different candidates (and the
    # incumbent's re-runs) share the slots. On a CPU, slots x threads should not exceed the cores; with GPUs, one
    # slot per GPU.
    slots: int = 1
    # Start a slot's next run once the last one's training loop ended, while that model is exported and scored,
    # when the cores hold both ((slots + 1) x threads <= cores; the steps clock; not on a GPU): the export's and the
    # evaluation's seconds leave the wall time of a run. The next proposal is then made before the last one is
    # decided: it runs on the incumbent of its time, and a win is measured again on what was kept meanwhile.
    overlap: bool = True
    # "bwrap": every run sealed in a bubblewrap sandbox (no network, no secrets, no validation bytes, a
    # read-only filesystem). "none": unsealed, only when set explicitly; such sessions are marked.
    sandbox: str = "bwrap"
    # Let training runs reach the network (recorded with the session: it is part of how it measures).
    network: bool = False
    # The noise floor: how often the baseline runs at session start.
    baseline_runs: int = 3
    # The keep rule (decide.py): the false-keep rate it allows per decision, and the most runs a candidate
    # near the bar gets before it is decided.
    alpha: float = 0.02
    max_runs: int = 4
    # Every this many candidates the incumbent runs once more: σ and the incumbent's mean keep up with drift.
    rerun_every: int = 4
    # Stop a candidate's first run early when its training loss clearly trails the incumbent's (prune.py); it acts
    # only once the session's own history says it would not have cost a keep.
    prune: bool = True
    # Lower bound on σ, so a few identical baseline runs cannot make every change "significant".
    min_sigma: float = 0.002
    # Every this many keeps, the incumbent and the session's baseline code also run at transfer_budget × the
    # budget and transfer_scale × the model (where train.py scales with OVERNIGHT_SCALE): does the gain
    # survive at scale? 0: off.
    transfer_every: int = 5
    transfer_budget: float = 4.0
    transfer_scale: float = 2.0
    # Before each run, wait (saying so) while other processes leave fewer than this share of the run's
    # threads idle; 0: never wait.
    machine_share: float = 0.5
    replay_file: str = "proposals.jsonl"
    sweep: SweepConfig = field(default_factory=SweepConfig)
    claude: ClaudeConfig = field(default_factory=ClaudeConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.db"

    def with_overrides(self, **overrides: Any) -> Config:
        given = {k: v for k, v in overrides.items() if v is not None}
        cfg = replace(self, **given)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        _number("budget", self.budget, 0.1, 7 * 86400.0)
        _number("grace", self.grace, 1.0, 86400.0)
        _number("memory_limit_gb", self.memory_limit_gb, 0.1, 1e5)
        _number("alpha", self.alpha, 1e-6, 0.2)
        _number("min_sigma", self.min_sigma, 0.0, 10.0)
        _number("transfer_budget", self.transfer_budget, 1.0, 100.0)
        _number("transfer_scale", self.transfer_scale, 1.0, 16.0)
        _number("machine_share", self.machine_share, 0.0, 1.0)
        _count("threads", self.threads, 0, 4096)
        _count("slots", self.slots, 1, 256)
        _count("baseline_runs", self.baseline_runs, 2, 100, "at least 2: one run cannot measure noise")
        _count("max_runs", self.max_runs, 2, 100, "at least 2: a keep always rests on two runs")
        _count("rerun_every", self.rerun_every, 0, 10_000)
        _count("transfer_every", self.transfer_every, 0, 10_000)
        if self.agent not in AGENTS:
            raise ConfigError(f"agent must be one of {', '.join(AGENTS)}, got {self.agent!r}")
        if self.direction not in ("minimize", "maximize"):
            raise ConfigError(f"direction must be 'minimize' or 'maximize', got {self.direction!r}")
        if self.clock not in CLOCKS:
            raise ConfigError(f"clock must be one of {', '.join(repr(c) for c in CLOCKS)}, got {self.clock!r}")
        if self.executor.kind not in ("local", "ray"):
            raise ConfigError(f"[executor] kind must be \"local\" or \"ray\", got {self.executor.kind!r}")
        _number("[executor] gpus_per_run", self.executor.gpus_per_run, 0.0, 64.0)
        if self.ideas not in ("not-vetoed", "approved"):
            raise ConfigError(f'ideas must be "not-vetoed" or "approved", got {self.ideas!r}')
        _count("plateau_after", self.plateau_after, 0, 10_000)
        if self.measure not in MEASURES:
            raise ConfigError(f"measure must be \"harness\" (the pinned harness scores the model) or \"reported\" "
                              f"(the script prints its own metric), got {self.measure!r}")
        if self.measure == "harness" and self.metric != HARNESS_METRIC:
            raise ConfigError(f"metric {self.metric!r} needs measure = \"reported\": the harness measures "
                              f"{HARNESS_METRIC} (a script that prints its own number runs in reported mode)")
        if not self.metric.isidentifier():
            raise ConfigError(f"metric must be a name like val_bpb (letters, digits, _), got {self.metric!r}")
        if self.measure == "harness" and not self.prepare:
            raise ConfigError("prepare may be empty only with measure = \"reported\": the harness pins its data")
        if self.sandbox not in SANDBOXES:
            raise ConfigError(f"sandbox must be \"bwrap\" (sealed runs) or \"none\" (unsealed), got {self.sandbox!r}")
        if not self.editable:
            raise ConfigError("no editable files declared: the agent would have nothing to change")
        if not self.run:
            raise ConfigError('run must name the command that trains, e.g. run = ["{python}", "train.py"]')
        for key in ("editable", "frozen", "run", "evaluate", "prepare", "readable"):
            if any(not part or "\x00" in part for part in getattr(self, key)):
                raise ConfigError(f"{key} has an empty or NUL-containing entry")
        if self.readable and self.measure != "reported":
            raise ConfigError("readable is for measure = \"reported\": with the harness, runs see only the training "
                              "data it pins (a readable folder could hold the validation bytes)")
        for path in self.readable:
            if not (path.startswith("/") or path.startswith("~/")) or ".." in Path(path).parts:
                raise ConfigError(f"readable {path!r}: give a host folder as an absolute path or one under ~/")
        overlap = set(self.editable) & set(self.frozen)
        if overlap:
            raise ConfigError(f"files both editable and frozen: {', '.join(sorted(overlap))}")
        for rel in (*self.editable, *self.frozen, self.program, self.workdir):
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise ConfigError(f"{rel!r}: workspace files must be relative paths inside the workspace")


def _number(key: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"{key} must be a number from {low:g} to {high:g}, got {value!r}")


def _count(key: str, value: int, low: int, high: int, why: str = "") -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key} must be {why or f'a whole number from {low} to {high}'}, got {value!r}")


def _tuple(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{key} must be a string or a list of strings")


def _section(cls: type, raw: Any, key: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{key}] must be a table")
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown key(s) in [{key}]: {', '.join(sorted(unknown))}")
    defaults = cls()
    values: dict[str, Any] = {}
    for k, v in raw.items():
        default = getattr(defaults, k)
        # An unset (None) default takes a number: [claude] temperature.
        expected = (int, float) if default is None or isinstance(default, float) else type(default)
        if isinstance(v, list) and isinstance(default, tuple):
            v = tuple(v)
        if isinstance(v, bool) is not isinstance(default, bool) or not isinstance(v, expected):
            raise ConfigError(f"[{key}] {k} must be {'float' if default is None else type(default).__name__}, got {v!r}")
        values[k] = v
    return cls(**values)


_DEFAULTS = Config(root=Path("."))


def _kind(default: object) -> str:
    return {"float": "a number", "int": "a whole number", "str": "a string"}.get(type(default).__name__, type(default).__name__)


def load_config(root: Path) -> Config:
    """Load ``overnight.toml`` from ``root`` (defaults when it does not exist)."""
    root = root.resolve()
    path = root / CONFIG_NAME
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
        except OSError as exc:
            raise ConfigError(f"{path} cannot be read: {exc.strerror}") from None
    known = {f.name for f in fields(Config)} - {"root"}
    unknown = set(raw) - known
    for key in sorted(unknown & set(_RENAMED)):
        raise ConfigError(f"{path}: {key} is no longer a setting: {_RENAMED[key]}")
    if unknown:
        raise ConfigError(f"{path}: unknown key(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("editable", "frozen", "run", "evaluate", "prepare", "readable"):
            values[key] = _tuple(value, key)
        elif key == "sweep":
            values[key] = _section(SweepConfig, value, key)
        elif key == "claude":
            values[key] = _section(ClaudeConfig, value, key)
        elif key == "executor":
            values[key] = _section(ExecutorConfig, value, key)
        else:
            default = getattr(_DEFAULTS, key)
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"{path}: {key} must be true or false, got {value!r}")
            else:
                expected = (int, float) if isinstance(default, float) else type(default)
                if isinstance(value, bool) or not isinstance(value, expected):
                    raise ConfigError(f"{path}: {key} must be {_kind(default)}, got {value!r}")
            values[key] = value
    try:
        cfg = Config(root=root, **values)
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    cfg.validate()
    return cfg

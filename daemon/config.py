"""The workspace config: which files the agent may edit, which are frozen, how a run is started.

Read from ``overnight.toml`` at the workspace root. Every key has a default that points at the
repository's own ``trainer/`` and ``program.md``, so a fresh clone is a working workspace with no
config file at all.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

CONFIG_NAME = "overnight.toml"
STATE_DIR = ".overnight"

AGENTS = ("sweep", "replay", "claude")


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
    evaluate: tuple[str, ...] = ("{python}", "prepare.py", "evaluate")
    # Builds or verifies the data; its last stdout line may be {"data_dir", "manifest_sha256"} (JSON).
    prepare: tuple[str, ...] = ("{python}", "prepare.py", "--json")
    # Seconds of training per run, measured by the harness's budget clock.
    budget: float = 60.0
    # "cpu": process CPU time per thread (steady on a drifting VM); "wall"; "auto": wall on CUDA.
    clock: str = "auto"
    # Extra seconds before a run is killed: start-up, model export, and the clock's slack.
    grace: float = 30.0
    memory_limit_gb: float = 8.0
    # CPU threads a run may use (torch.set_num_threads); 0: every core this process may use.
    threads: int = 0
    metric: str = "val_bpb"
    direction: str = "minimize"
    agent: str = "sweep"
    # The noise floor: how often the baseline runs at session start.
    baseline_runs: int = 3
    # A candidate is kept only if it beats the incumbent by more than keep_sigma noise σ.
    keep_sigma: float = 2.0
    # Re-runs on another seed before a candidate that passed the first screen is kept.
    confirm_runs: int = 1
    # Lower bound on σ so three lucky identical baselines cannot make every change "significant".
    min_sigma: float = 0.002
    replay_file: str = "proposals.jsonl"
    sweep: SweepConfig = field(default_factory=SweepConfig)
    claude: ClaudeConfig = field(default_factory=ClaudeConfig)

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
        if self.budget <= 0:
            raise ConfigError(f"budget must be positive, got {self.budget}")
        if self.threads < 0:
            raise ConfigError(f"threads must be 0 (every core) or a positive count, got {self.threads}")
        if self.agent not in AGENTS:
            raise ConfigError(f"agent must be one of {', '.join(AGENTS)}, got {self.agent!r}")
        if self.direction not in ("minimize", "maximize"):
            raise ConfigError(f"direction must be 'minimize' or 'maximize', got {self.direction!r}")
        if self.clock not in ("auto", "cpu", "wall"):
            raise ConfigError(f"clock must be 'auto', 'cpu' or 'wall', got {self.clock!r}")
        if self.baseline_runs < 2:
            raise ConfigError("baseline_runs must be at least 2: one run cannot measure noise")
        if not self.editable:
            raise ConfigError("no editable files declared: the agent would have nothing to change")
        overlap = set(self.editable) & set(self.frozen)
        if overlap:
            raise ConfigError(f"files both editable and frozen: {', '.join(sorted(overlap))}")
        for rel in (*self.editable, *self.frozen, self.program):
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise ConfigError(f"{rel!r}: workspace files must be relative paths inside the workspace")


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


def load_config(root: Path) -> Config:
    """Load ``overnight.toml`` from ``root`` (defaults when it does not exist)."""
    root = root.resolve()
    path = root / CONFIG_NAME
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    known = {f.name for f in fields(Config)} - {"root"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{path}: unknown key(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("editable", "frozen", "run", "evaluate", "prepare"):
            values[key] = _tuple(value, key)
        elif key == "sweep":
            values[key] = _section(SweepConfig, value, key)
        elif key == "claude":
            values[key] = _section(ClaudeConfig, value, key)
        else:
            default = getattr(_DEFAULTS, key)
            expected = (int, float) if isinstance(default, float) else type(default)
            if isinstance(value, bool) or not isinstance(value, expected):
                raise ConfigError(f"{path}: {key} must be {type(default).__name__}, got {value!r}")
            values[key] = value
    try:
        cfg = Config(root=root, **values)
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    cfg.validate()
    return cfg

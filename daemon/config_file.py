"""The ``overnight.toml`` that `overnight init` writes: rendered from the code's defaults, never copied.

A copied file would carry whatever the installing checkout had edited locally into every new workspace and into
the wheel. Rendering from ``Config`` means the file shows exactly the defaults the code applies, with one comment
per key; a preset (``overnight init --autoresearch``) changes values, never the keys or their documentation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import ClaudeConfig, Config, ExecutorConfig, SweepConfig

# Every top-level key, in the file's order, with what it means. A test checks that this covers every field.
_KEYS: tuple[tuple[str, str], ...] = (
    ("editable", "the only files the agent may change"),
    ("frozen", "the harness: hash-checked before every run, pinned for the session"),
    ("program", "the research program the agent follows"),
    ("workdir", "runs start here"),
    ("run", "{python} is the interpreter running Overnight"),
    ("measure", '"harness" scores the handed-off model; "reported": the script\'s own printout (unvouched)'),
    ("metric", 'val_bpb (harness); reported: the last "<metric>: <number>" line the script prints'),
    ("direction", "minimize or maximize"),
    ("evaluate", "how the pinned harness scores a model (harness mode)"),
    ("prepare", "builds or verifies the data once per start; [] = none (reported mode only)"),
    ("readable", 'host folders a sealed run may read (reported mode); "~/x": under the run\'s home'),
    ("budget", "seconds of training per run: the harness turns them into a step count"),
    ("clock", '"auto" = "steps" (calibrated from the code\'s fastest steps), "cpu", "wall"'),
    ("grace", "CPU budget-seconds for start-up and model export together"),
    ("memory_limit_gb", "a run past this is stopped as out of memory"),
    ("threads", "CPU threads per run (1 measures steadiest); 0: every core"),
    ("agent", "sweep (no LLM), replay, or claude"),
    ("replay_file", "the proposals the replay agent replays (JSON lines)"),
    ("sandbox", 'every run sealed with bubblewrap; "none": unsealed (marked as such)'),
    ("network", "may training runs reach the network?"),
    ("baseline_runs", "runs of the unchanged script at session start: the first noise estimate"),
    ("alpha", "the keep rule's false-keep rate per decision (sequential t-test)"),
    ("max_runs", "runs a candidate near the bar gets at most; a keep needs two or more"),
    ("rerun_every", "the incumbent runs again every this many candidates (drift, σ); 0: off"),
    ("slots", "runs at once (CPU: slots x threads <= cores; GPUs: one slot per GPU)"),
    ("overlap", "start the next run while the last is exported and scored, where the cores hold both (CPU, steps clock)"),
    ("prune", "stop a candidate early when its loss clearly trails (once history trusts it)"),
    ("min_sigma", "σ never counts as smaller than this"),
    ("transfer_every", "every this many keeps: incumbent vs baseline at a larger budget/model; 0: off"),
    ("transfer_budget", "... at this many times the budget"),
    ("transfer_scale", "... and this model scale (OVERNIGHT_SCALE; train.py widens and deepens)"),
    ("machine_share", "wait while other processes leave less than this share of a run's threads idle"),
    ("tensorboard", "every run's curve and scores as TensorBoard events under .overnight/tb/<tag>/"),
    ("ideas", '"not-vetoed": the agent draws every idea you did not veto; "approved": only approved ones'),
    ("plateau_after", "a direction this many tries without a keep is flagged as a plateau; 0: never"),
)

_SWEEP: tuple[tuple[str, str], ...] = (
    ("exclude", "config constants the sweep never touches"),
    ("seed", "the order in which it tries coordinates"),
)

_CLAUDE: tuple[tuple[str, str], ...] = (
    ("model", ""),
    ("max_tokens", ""),
    ("temperature", "unset by default: the model's own sampling"),
    ("spending_cap_usd", "dollars per session; reached: the loop pauses (`overnight run` stops)"),
    ("base_url", "empty: the SDK's default or ANTHROPIC_BASE_URL (a proxy)"),
    ("timeout_s", "seconds without a byte from the API before a retry"),
    ("max_retries", "per request (429, 529, 5xx, timeouts, cut streams), with back-off"),
    ("retry_base_s", ""),
    ("retry_max_s", ""),
    ("probe_interval_s", "then paused: the API is probed this often, resuming when it answers"),
    ("repair_turns", "an invalid answer is sent back with its errors this many times"),
    ("pipeline", "prepare the next proposal while an experiment trains"),
    ("recent", "experiments listed one per line in the prompt; older are condensed"),
)

_EXECUTOR: tuple[tuple[str, str], ...] = (
    ("kind", '"local" (this machine, `slots` runs at once) or "ray" (one Ray task per run)'),
    ("address", '"auto": the cluster `ray start --head` started here; or "HOST:PORT"'),
    ("gpus_per_run", "GPUs each Ray task asks for (0 on a CPU cluster)"),
)

# What the commented [claude] section shows for a key that is unset by default.
_EXAMPLES = {"temperature": 1.0}
# The column comments start at: a value longer than this pushes its comment right.
_COLUMN = 38


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string for the text these keys hold
    return repr(value)


def documented() -> dict[str, set[str]]:
    """The keys the rendered file documents, per section ("" is the top level): a test holds them to the code's."""
    return {"": {k for k, _ in _KEYS}, "sweep": {k for k, _ in _SWEEP}, "claude": {k for k, _ in _CLAUDE},
            "executor": {k for k, _ in _EXECUTOR}}


def _line(key: str, value: Any, comment: str, prefix: str = "") -> str:
    text = f"{prefix}{key} = {_value(value)}"
    return f"{text.ljust(_COLUMN - 2)}  # {comment}" if comment else text


def render(**overrides: Any) -> str:
    """The documented ``overnight.toml``: the code's defaults, with ``overrides`` (top-level keys) applied."""
    unknown = set(overrides) - {k for k, _ in _KEYS}
    if unknown:
        raise ValueError(f"not top-level keys: {sorted(unknown)}")
    defaults = Config(root=Path("."))
    out = ["# Overnight workspace config. Every key is optional; unless a preset changed them, these are the defaults.",
           "# The README's \"Configuration\" section says more about each."]
    out += [_line(key, overrides.get(key, getattr(defaults, key)), comment) for key, comment in _KEYS]
    out += ["", "[sweep]"]
    out += [_line(key, getattr(SweepConfig(), key), comment) for key, comment in _SWEEP]
    out += ["", "# The Claude agent (agent = \"claude\"): the API key comes from ANTHROPIC_API_KEY, never from this file.",
            "# Uncomment [claude] and the keys to change; these are the defaults.", "# [claude]"]
    claude = ClaudeConfig()
    out += [_line(key, _EXAMPLES.get(key, getattr(claude, key)) if getattr(claude, key) is None else getattr(claude, key),
                  comment, "# ") for key, comment in _CLAUDE]
    out += ["", "# Where runs happen (`overnight run --ray auto` sets kind and address for one run).",
            "# Uncomment [executor] and the keys to change; these are the defaults.", "# [executor]"]
    out += [_line(key, getattr(ExecutorConfig(), key), comment, "# ") for key, comment in _EXECUTOR]
    return "\n".join(out) + "\n"


def autoresearch(directory: Path) -> dict[str, Any]:
    """The preset for an autoresearch-style folder (train.py printing ``val_bpb: X``, prepare.py, program.md): the
    script's own number in reported mode, its data cache readable, its own five-minute clock."""
    frozen = [name for name in ("prepare.py",) if (directory / name).is_file()]
    return {
        "editable": ["train.py"], "frozen": frozen, "program": "program.md", "workdir": ".",
        "run": ["{python}", "train.py"], "measure": "reported", "metric": "val_bpb", "prepare": [],
        "readable": ["~/.cache/autoresearch"],
        # autoresearch's TIME_BUDGET is 300 s of training; start-up, compilation and its final evaluation come on top.
        "budget": 300.0, "grace": 120.0, "threads": 0, "transfer_every": 0,
    }

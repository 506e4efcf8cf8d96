"""What the journal says, for people: the results table (table / TSV / JSON), one experiment, the plot.

Every decision's numbers are stated the one way ``decide.describe`` states them, and every σ is the
session's pooled noise (``noise.session_noise``), so the table, ``show``, the plot, the live view and
the suggestions never disagree about what was measured.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from .agents.cost import Usage
from .decide import Noise, describe
from .journal import Experiment, Journal, Run, Session
from .noise import session_noise

STATUS_STYLE = {
    "keep": "bold green", "discard": "dim", "crash": "red", "timeout": "red", "invalid": "yellow",
    "held": "bold dark_orange", "pruned": "dim yellow", "running": "cyan", "interrupted": "magenta",
}
# How one run ended: starved and invalid runs are not measurements, and must not look like one.
RUN_STATUS_STYLE = {"ok": "green", "crash": "red", "timeout": "red", "starved": "bold yellow", "invalid": "bold yellow",
                    "pruned": "yellow"}

# autoresearch's results.tsv columns, in its order.
TSV_COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description")

# What an unsealed session means, in the words every view uses.
UNSEALED = ('UNSEALED: runs were not sealed (sandbox = "none"): a run could read the validation data, write the '
            "journal and reach the network, so these numbers are not protected against a run that games them")

# What a reported-metric session means (measure = "reported"), in the words every view uses.
REPORTED = ("REPORTED METRIC: the numbers are the training script's own printout (measure = \"reported\"), not "
            "measured by Overnight's harness: nothing stops the code under test from printing any number it likes")

PHASE_LABEL = {
    "starting": "starting the run", "training": "training", "exporting": "exporting the model",
    "evaluating": "evaluating (the session's pinned harness)", "waiting": "waiting for the machine",
}


# -- the session ---------------------------------------------------------------------------------


def is_sealed(session: Session | None) -> bool:
    """Whether the session's runs were sealed. A session from before sealed runs has no "sandbox": it was not."""
    return session is not None and str(session.config.get("sandbox", "none")) != "none"


def is_reported(session: Session | None) -> bool:
    """Whether the session's metric is the script's own printout (reported mode), not the harness's measurement."""
    return session is not None and session.config.get("measure") == "reported"


@dataclass(frozen=True)
class SessionFacts:
    tag: str
    sealed: bool
    sandbox: str  # as configured; "" for a session from before sealed runs
    network: bool
    direction: str
    noise: Noise  # pooled over every run of unchanged code in the session (df 0: not measured yet)
    reported: bool = False  # the metric is the script's own printout (measure = "reported")
    metric: str = "val_bpb"


def session_facts(journal: Journal, tag: str) -> SessionFacts:
    session = journal.session(tag)
    config: Mapping[str, Any] = session.config if session is not None else {}
    min_sigma = config.get("min_sigma", 0.0)
    noise = session_noise(journal, tag, float(min_sigma) if isinstance(min_sigma, (int, float)) else 0.0)
    return SessionFacts(
        tag=tag, sealed=is_sealed(session), sandbox=str(config.get("sandbox", "")), network=bool(config.get("network")),
        direction=str(config.get("direction", "minimize")), noise=noise, reported=is_reported(session),
        metric=str(config.get("metric") or "val_bpb"),
    )


def noise_text(noise: Noise) -> str:
    """`σ 0.0071 pooled over 9 runs of unchanged code (3 versions, 6 df)`: the session's noise, one wording."""
    if noise.df < 1:
        return "σ not measured yet (no code version run twice)"
    versions = f"{noise.groups} version{'s' if noise.groups != 1 else ''}"
    return f"σ {noise.sigma:.4f} pooled over {noise.runs} runs of unchanged code ({versions}, {noise.df} df)"


def seal_text(facts: SessionFacts) -> Text:
    if not facts.sealed:
        why = UNSEALED if facts.sandbox else UNSEALED.replace('(sandbox = "none")', "(the session predates sealed runs)")
        return Text(why, style="bold red")
    text = Text(f"sealed ({facts.sandbox})", style="green")
    if facts.network:
        text.append(" · network allowed", style="yellow")
    return text


def transfer_text(t: Mapping[str, Any]) -> str:
    """One transfer check: how much of the incumbent's gain over the baseline survived at a larger budget and model."""
    where = f"#{t.get('incumbent_id')} at {float(t.get('budget') or 0):g} s, model scale {float(t.get('scale') or 1):g}"
    ratio, gain, small = t.get("ratio"), t.get("gain"), t.get("gain_at_budget")
    if isinstance(ratio, (int, float)) and isinstance(gain, (int, float)) and isinstance(small, (int, float)):
        return (f"transfer check of {where}: ratio {ratio:.2f} ({ratio:.0%} of the gain survived: "
                f"{_signed(gain)} vs {_signed(small)} bpb at the session's budget)")
    return f"transfer check of {where}: {t.get('error') or 'no gain to compare'}"


def _signed(value: float) -> str:
    return f"{value:+.4f}".replace("-", "−")


# -- the results table ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: int
    kind: str
    commit: str
    val_bpb: float | None
    delta: float | None  # against the incumbent it was compared with
    holdout_bpb: float | None
    memory_gb: float | None
    status: str
    description: str
    runs: int
    steps: int | None
    # The agent's API use for this proposal (the Claude agent records it; other agents have none).
    input_tokens: int | None = None
    cached_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    ood_bpb: float | None = None  # the out-of-distribution gauge (mean over its runs)
    transfer_ratio: float | None = None  # the share of its gain that survived a transfer check, when it had one
    sealed: bool | None = None  # whether the session's runs were sealed

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def rows(journal: Journal, tag: str) -> list[Row]:
    sealed = is_sealed(journal.session(tag))
    ratios = {int(t["incumbent_id"]): t["ratio"] for t in journal.transfers(tag) if t.get("ratio") is not None}
    out = []
    for exp in journal.experiments(tag):
        runs = journal.runs(exp.id)
        peaks = [r.peak_mem_mb for r in runs if r.peak_mem_mb is not None]
        # A starved run is not a measurement: its step count says nothing about the code.
        measured = [r for r in runs if r.status == "ok"] or runs
        steps = [r.steps for r in measured if r.steps is not None]
        delta = exp.delta
        # An imported experiment whose commit git no longer has keeps the short hash its log wrote (importer.py).
        commit = exp.commit_sha or str(exp.meta.get("short_commit") or "")
        usage = exp.meta.get("usage") if isinstance(exp.meta.get("usage"), dict) else None
        u = Usage.from_dict(usage) if usage else None
        out.append(Row(
            input_tokens=u.prompt_tokens if u else None, cached_tokens=u.cache_read_input_tokens if u else None,
            output_tokens=u.output_tokens if u else None, cost_usd=u.cost_usd if u else None,
            id=exp.id, kind=exp.kind, commit=commit[:7], val_bpb=exp.val_bpb, delta=delta,
            holdout_bpb=exp.holdout_bpb, memory_gb=max(peaks) / 1024 if peaks else None, status=exp.status,
            description=exp.description, runs=len(runs), steps=round(sum(steps) / len(steps)) if steps else None,
            ood_bpb=exp.ood_bpb, transfer_ratio=ratios.get(exp.id), sealed=sealed,
        ))
    return out


# autoresearch's statuses: keep / discard / crash. A held or pruned experiment did not advance the branch (a
# discard there); a timeout or a refused model is a failed run (a crash there); an interrupted or unfinished one
# has no row in autoresearch's file (`results` as a table or JSON, and `show`, say what they were).
_TSV_STATUS = {"keep": "keep", "discard": "discard", "held": "discard", "pruned": "discard", "crash": "crash",
               "timeout": "crash", "invalid": "crash"}


def to_tsv(table: list[Row]) -> str:
    lines = ["\t".join(TSV_COLUMNS)]
    for r in table:
        status = _TSV_STATUS.get(r.status)
        if status is None or r.kind == "ablation":  # an ablation measures the final code, not a proposal
            continue
        # autoresearch writes 0.000000 for a run without a metric (a crash).
        val = f"{r.val_bpb:.6f}" if r.val_bpb is not None else "0.000000"
        mem = f"{r.memory_gb:.1f}" if r.memory_gb is not None else "0.0"
        lines.append("\t".join((r.commit, val, mem, status, r.description.replace("\t", " ").replace("\n", " "))))
    return "\n".join(lines) + "\n"


def to_json(table: list[Row]) -> str:
    return json.dumps([r.as_dict() for r in table], indent=2)


def _bpb_cell(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "—"


def to_table(table: list[Row], title: str = "") -> Table:
    """The human table; steps and run counts are in JSON and `overnight show`, to leave room for descriptions."""
    t = Table(title=title, title_justify="left", expand=False)
    t.add_column("#", justify="right")
    t.add_column("commit")
    t.add_column("val_bpb", justify="right")
    t.add_column("Δ", justify="right")
    t.add_column("holdout", justify="right")
    t.add_column("OOD", justify="right")
    t.add_column("mem GB", justify="right")
    t.add_column("status")
    costed = any(r.cost_usd is not None for r in table)
    if costed:
        t.add_column("tokens in/cached/out", justify="right")
        t.add_column("$", justify="right")
    t.add_column("description", overflow="fold", min_width=24, ratio=1)
    for r in table:
        cost = [_tokens(r), f"{r.cost_usd:.3f}" if r.cost_usd is not None else ""] if costed else []
        delta = Text(f"{r.delta:+.4f}", style="green" if r.delta < 0 else "red") if r.delta is not None else Text("")
        t.add_row(
            str(r.id), r.commit, _bpb_cell(r.val_bpb), delta, _bpb_cell(r.holdout_bpb), _bpb_cell(r.ood_bpb),
            f"{r.memory_gb:.2f}" if r.memory_gb is not None else "—",
            Text(r.status, style=STATUS_STYLE.get(r.status, "")), *cost, Text(r.description),
        )
    if costed:
        t.caption = agent_totals(table)
        t.caption_justify = "left"
    return t


def results(journal: Journal, tag: str) -> Group:
    """`overnight results`: the session's header (sealed or not, the pooled noise), the table, transfers and flags."""
    facts = session_facts(journal, tag)
    table = rows(journal, tag)
    experiments = [r for r in table if r.kind == "experiment"]
    head = Text()
    head.append(f"session {tag}", style="bold")
    head.append(f" · {experiment_counts([r.status for r in experiments])} · noise {noise_text(facts.noise)} · ")
    head.append_text(seal_text(facts) if facts.sealed else Text("UNSEALED", style="bold red"))
    if facts.reported:
        head.append(" · ")
        head.append(f"REPORTED {facts.metric}", style="bold red")
    parts: list[RenderableType] = [head]
    if not facts.sealed:
        parts.append(seal_text(facts))
    if facts.reported:
        parts.append(Text(REPORTED, style="red"))
    parts.append(to_table(table))
    for t in journal.transfers(tag):
        parts.append(Text(transfer_text(t)))
    for f in journal.flags(tag)[-5:]:
        parts.append(Text(f"⚠ {f['text']}", style="yellow"))
    return Group(*parts)


def experiment_counts(statuses: list[str]) -> str:
    """`12 experiments: 3 kept, 1 held, 6 discarded, 2 failed`: the same counts in the table's header and the plot."""
    parts = [f"{sum(s == 'keep' for s in statuses)} kept"]
    held = sum(s == "held" for s in statuses)
    if held:
        parts.append(f"{held} held")
    pruned = sum(s == "pruned" for s in statuses)
    parts += [f"{sum(s == 'discard' for s in statuses)} discarded"] + ([f"{pruned} pruned"] if pruned else [])
    parts.append(f"{sum(s in ('crash', 'timeout', 'invalid') for s in statuses)} failed")
    flight = sum(s in ("running", "interrupted") for s in statuses)
    if flight:
        parts.append(f"{flight} in flight")
    return f"{len(statuses)} experiment{'s' if len(statuses) != 1 else ''}: {', '.join(parts)}"


def _tokens(r: Row) -> str:
    if r.input_tokens is None:
        return ""
    return f"{r.input_tokens:,}/{r.cached_tokens or 0:,}/{r.output_tokens or 0:,}"


def agent_totals(table: list[Row]) -> str:
    """The agent's bill for the session: tokens, the prompt cache's hit ratio, dollars."""
    prompt = sum(r.input_tokens or 0 for r in table)
    cached = sum(r.cached_tokens or 0 for r in table)
    out = sum(r.output_tokens or 0 for r in table)
    dollars = sum(r.cost_usd or 0.0 for r in table)
    ratio = f"{cached / prompt:.0%}" if prompt else "—"
    return (f"agent: {prompt:,} prompt tokens ({cached:,} from the cache: {ratio} hit ratio), "
            f"{out:,} output tokens, ${dollars:.2f}")


# -- one experiment -------------------------------------------------------------------------------


def check_marks(checks: Mapping[str, Any]) -> Text:
    """`✓ load ✓ batch ✗ causal (window_start 512, cut 64, …)`: each of the harness's checks; a failed one with its evidence."""
    out = Text()
    for name, value in checks.items():
        ok = value.get("ok") if isinstance(value, Mapping) else value
        if out:
            out.append("  ")
        if ok is True:
            out.append(f"✓ {name}", style="green")
        elif ok is False:
            out.append(f"✗ {name}", style="bold red")
            evidence = {k: v for k, v in value.items() if k != "ok"} if isinstance(value, Mapping) else {}
            if evidence:
                out.append(f" ({_fmt(evidence)})", style="red")
        else:
            out.append(f"? {name}", style="yellow")
    return out


def _steps(r: Run) -> str:
    if r.steps is None:
        return "—" if r.steps_planned is None else f"—/{r.steps_planned}"
    return f"{r.steps}/{r.steps_planned}" if r.steps_planned is not None else str(r.steps)


def show(exp: Experiment, runs: list[Run], journal: Journal | None = None) -> Group:
    """Everything about one experiment: the decision and its numbers, each run (checks and flags), diff, errors.

    With the journal, also the session's seal and its pooled noise."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("experiment", f"#{exp.id} ({exp.kind}, session {exp.tag})")
    facts = session_facts(journal, exp.tag) if journal is not None else None
    if facts is not None:
        head.add_row("session", seal_text(facts))
    head.add_row("description", Text(exp.description))
    if exp.hypothesis:
        head.add_row("hypothesis", Text(exp.hypothesis))
    if exp.reasoning:
        head.add_row("reasoning", Text(exp.reasoning))
    head.add_row("status", Text(exp.status, style=STATUS_STYLE.get(exp.status, "")))
    reason = exp.decision_reason or ""
    head.add_row("decided by", Text(f"{exp.decided_by or '—'}: {reason}"))
    ev = exp.evidence or {}
    for label, numbers in _decision_numbers(exp):
        head.add_row(label, Text(numbers))
    means = [f"val {exp.val_bpb:.4f}"] if exp.val_bpb is not None else []
    means += [f"holdout {exp.holdout_bpb:.4f}"] if exp.holdout_bpb is not None else []
    means += [f"OOD {exp.ood_bpb:.4f}"] if exp.ood_bpb is not None else []
    if means:
        head.add_row("bpb", " · ".join(means) + "  (means over its runs)")
    if isinstance(ev.get("noise_sigma"), (int, float)) and isinstance(ev.get("df"), (int, float)):
        head.add_row("noise", f"σ {float(ev['sigma']):.4f} at the decision (pooled: {ev.get('noise_runs', '?')} runs of "
                              f"unchanged code and its own {ev.get('candidate_n', '?')}, {ev['df']:.0f} df)")
    if facts is not None:
        head.add_row("noise now", noise_text(facts.noise))
    flags = ev.get("flags")
    if isinstance(flags, list) and flags:
        head.add_row("flags", Text("\n".join(f"⚠ {f}" for f in flags), style="yellow"))
    head.add_row("commit", f"{exp.commit_sha or '—'}  {exp.ref or ''}")
    head.add_row("parent", exp.parent_commit)
    head.add_row("agent", exp.agent)
    if exp.error:
        head.add_row("error", Text(exp.error, style="red"))
    parts: list[Any] = [head]
    if exp.evidence:
        evt = Table(title="evidence", title_justify="left", show_header=False)
        for key, value in exp.evidence.items():
            evt.add_row(key, Text(_fmt(value)))
        parts.append(evt)
    if runs:
        parts.append(_runs_table(runs))
        notes = _run_notes(runs)
        if notes is not None:
            parts.append(notes)
    if exp.diff:
        parts.append(Panel(Syntax(exp.diff, "diff", theme="ansi_dark", word_wrap=True), title="diff", title_align="left"))
    failed = [r for r in runs if r.status != "ok" and r.log_tail]
    if failed:
        tail = "\n".join((failed[-1].log_tail or "").strip().splitlines()[-15:])
        parts.append(Panel(Text(tail), title=f"end of the log ({failed[-1].log_path})", title_align="left"))
    return Group(*parts)


def _decision_numbers(exp: Experiment) -> list[tuple[str, str]]:
    """The decision's numbers, each test stated by describe(): val, and the holdout and OOD tests of a keep."""
    ev = exp.evidence or {}
    out = []
    numbers = describe(ev)
    if numbers:
        out.append(("baseline" if exp.kind == "baseline" and "incumbent_mean" not in ev else "val", numbers))
    for key, label in (("holdout", "holdout"), ("ood", "OOD")):
        test = ev.get(key)
        if isinstance(test, Mapping) and describe(test):
            verdict = ""
            t, bar = test.get("t"), test.get("bar")
            if isinstance(t, (int, float)) and isinstance(bar, (int, float)):
                verdict = ": worse beyond noise" if t < bar else ": not worse beyond noise"
            out.append((label, describe(test) + verdict))
    return out


def _runs_table(runs: list[Run]) -> Table:
    rt = Table(title="runs", title_justify="left")
    for col in ("run", "seed", "status", "val", "holdout", "OOD", "train", "steps", "tok/s", "CPU s", "train s",
                "wall s", "peak MB"):
        rt.add_column(col, justify="left" if col == "status" else "right")
    for i, r in enumerate(runs):
        rt.add_row(str(i + 1), str(r.seed), Text(r.status, style=RUN_STATUS_STYLE.get(r.status, "")),
                   _fmt(r.val_bpb), _fmt(r.holdout_bpb), _fmt(r.ood_bpb), _fmt(r.train_bpb), _steps(r),
                   _fmt(r.tokens_per_s, 0), _fmt(r.cpu_seconds, 1), _fmt(r.train_seconds, 1), _fmt(r.wall_seconds, 1),
                   _fmt(r.peak_mem_mb, 0))
    rt.caption = ("val/holdout/OOD/train: bpb on each split; steps: taken/planned; CPU s: the run's whole process tree, "
                  "measured from outside")
    rt.caption_justify = "left"
    return rt


def _run_notes(runs: list[Run]) -> Table | None:
    """Per run: the harness's checks (✓/✗, a failed one with its evidence), its flags, why it was not a measurement."""
    notes = Table.grid(padding=(0, 2))
    notes.add_column(style="bold")
    notes.add_column()
    for i, r in enumerate(runs):
        lines: list[Text] = []
        if r.checks:
            lines.append(check_marks(r.checks))
        lines += [Text(f"⚠ {f}", style="yellow") for f in r.flags]
        if r.status == "starved":
            lines.append(Text(f"starved: {r.error or 'the machine did not give it its budget'} (not a measurement: "
                              "it ran again)", style="yellow"))
        elif r.status == "invalid":
            lines.append(Text(f"invalid: {r.error or 'refused by the harness'}", style="bold yellow"))
        elif r.status != "ok" and r.error:
            lines.append(Text(f"{r.status}: {r.error}", style="red"))
        if r.delay_seconds is not None and r.delay_seconds >= 1.0:
            lines.append(Text(f"waited {r.delay_seconds:.1f} s for a core (a busy machine)", style="dim"))
        if lines:
            notes.add_row(f"run {i + 1}", Text("\n").join(lines))
    return notes if notes.row_count else None


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return ", ".join(_fmt(v, digits) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_fmt(v, digits)}" for k, v in value.items())
    return str(value)


# -- the plot -------------------------------------------------------------------------------------


def _metric(exps: list[Experiment]) -> list[float]:
    return [e.val_bpb if e.val_bpb is not None else math.nan for e in exps]


def _bar_value(ev: Mapping[str, Any]) -> float | None:
    """What the mean of a candidate's runs had to beat at its last look: the incumbent's mean less the threshold
    (the bar in the metric's units), on the side of better. None when that look could not keep it (a candidate
    dropped before it had the runs a keep rests on had no bar to beat)."""
    inc, threshold = ev.get("incumbent_mean"), ev.get("threshold")
    if not isinstance(inc, (int, float)) or not isinstance(threshold, (int, float)):
        return None
    look, min_runs = ev.get("look"), ev.get("min_runs")
    if isinstance(look, int) and isinstance(min_runs, int) and look < min_runs:
        return None
    return float(inc) + float(threshold) if ev.get("direction") == "maximize" else float(inc) - float(threshold)


def plot(journal: Journal, tag: str, out: Path) -> Path:
    """`overnight plot`: the figure (see figure()) as a PNG."""
    fig = figure(journal, tag)  # selects the Agg backend before pyplot is imported here
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def figure(journal: Journal, tag: str) -> Any:
    """val_bpb per experiment: kept and held ones marked, the incumbent as a step line with the pooled noise band
    around it, the incumbent's holdout, the bar each candidate had to clear, and failures along the top.
    An empty session says so. Returns the matplotlib Figure (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    facts = session_facts(journal, tag)
    exps = journal.experiments(tag)
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=120)
    unsealed = ("" if facts.sealed else "  [UNSEALED runs]") + (f"  [{facts.metric} REPORTED by the script]"
                                                                  if facts.reported else "")
    better = "higher" if facts.direction == "maximize" else "lower"
    ax.set_xlabel("experiment #")
    ax.set_ylabel(f"{facts.metric}, as the script reported it ({better} is better)" if facts.reported
                  else f"bits per byte ({better} is better)")
    if not any(e.val_bpb is not None or e.is_final for e in exps):
        ax.set_title(f"Overnight session '{tag}'{unsealed}")
        ax.text(0.5, 0.5, f"no experiments in session '{tag}' yet" + (" (one in flight)" if exps else ""),
                ha="center", va="center", transform=ax.transAxes, fontsize=13, color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
        return fig

    # The incumbent (the newest kept experiment or baseline) over time: val and holdout.
    steps_x: list[float] = []
    val_y: list[float] = []
    hold_y: list[float] = []
    best: Experiment | None = None
    for e in exps:
        if e.status == "keep" and e.val_bpb is not None:
            best = e
        if best is not None:
            steps_x.append(e.id)
            val_y.append(best.val_bpb if best.val_bpb is not None else math.nan)
            hold_y.append(best.holdout_bpb if best.holdout_bpb is not None else math.nan)
    if steps_x:
        last = max(e.id for e in exps) + 0.5
        steps_x, val_y, hold_y = [*steps_x, last], [*val_y, val_y[-1]], [*hold_y, hold_y[-1]]
        if facts.noise.df >= 1:
            s = facts.noise.sigma
            ax.fill_between(steps_x, [v - s for v in val_y], [v + s for v in val_y], step="post", color="tab:green",
                            alpha=0.10, linewidth=0,
                            label=f"incumbent ± σ (run-to-run noise, σ = {s:.4f} pooled over {facts.noise.runs} runs)")
        ax.step(steps_x, val_y, where="post", color="tab:green", linewidth=1.8, label="incumbent (val)", zorder=2)
        if any(not math.isnan(h) for h in hold_y):
            ax.step(steps_x, hold_y, where="post", color="tab:purple", linewidth=1.4, linestyle="--",
                    label="incumbent's holdout", zorder=2)

    valued = [e for e in exps if e.val_bpb is not None and e.kind == "experiment"]
    discarded = [e for e in valued if e.status == "discard"]
    kept = [e for e in valued if e.status == "keep"]
    held = [e for e in valued if e.status == "held"]
    if discarded:
        ax.scatter([e.id for e in discarded], _metric(discarded), s=24, color="0.55", label="discarded", zorder=3)
    if kept:
        ax.scatter([e.id for e in kept], _metric(kept), s=70, color="tab:green", edgecolor="black",
                   linewidth=0.6, label="kept", zorder=5)
    if held:
        ax.scatter([e.id for e in held], _metric(held), s=80, marker="D", color="tab:pink", edgecolor="black",
                   linewidth=0.6, label="held: val better, holdout worse beyond noise", zorder=5)
    hold = [e for e in [*kept, *held] if e.holdout_bpb is not None]
    if hold:
        ax.scatter([e.id for e in hold], [e.holdout_bpb if e.holdout_bpb is not None else math.nan for e in hold],
                   s=46, facecolors="none",
                   edgecolors=["tab:pink" if e.status == "held" else "tab:purple" for e in hold], linewidth=1.3,
                   label="holdout of kept and held", zorder=4)
    # The bar at each candidate's last look: what the mean of its runs had to beat for a keep.
    bars = [(e.id, b) for e in exps if e.kind == "experiment" and e.evidence
            and (b := _bar_value(e.evidence)) is not None]
    if bars:
        ax.scatter([b[0] for b in bars], [b[1] for b in bars], marker="_", s=260, color="tab:orange",
                   linewidth=1.6, label="keep bar at its last look (the mean of its runs had to beat it)", zorder=4)
    baselines = [e for e in exps if e.kind == "baseline" and e.val_bpb is not None]
    if baselines:
        ax.scatter([e.id for e in baselines], _metric(baselines), s=40, marker="s", color="tab:blue",
                   label="baseline (mean of its runs)", zorder=5)
    failed = [e for e in exps if e.kind == "experiment" and e.status in ("crash", "timeout", "invalid")]
    if failed:
        # Failures have no metric: mark them along the top edge of the axes.
        ax.scatter([e.id for e in failed], [0.98] * len(failed), marker="x", color="tab:red", s=36,
                   transform=ax.get_xaxis_transform(), label="crash / timeout / invalid", zorder=5, clip_on=False)
    few = len(exps) <= 30
    for e in valued:
        if not (few or e.status in ("keep", "held")):
            continue
        label = e.description if len(e.description) <= 34 else e.description[:32] + "…"
        color = {"keep": "darkgreen", "held": "mediumvioletred"}.get(e.status, "0.4")
        ax.annotate(f"#{e.id} {label}", (e.id, e.val_bpb), textcoords="offset points", xytext=(5, 6),
                    fontsize=7, rotation=10, color=color)
    counts = experiment_counts([e.status for e in exps if e.kind == "experiment"])
    if any(e.kind == "baseline" for e in exps):  # its dot is drawn (kept) but not counted among the experiments
        counts = f"baseline + {counts}"
    trusted = facts.sealed and not facts.reported
    ax.set_title(f"Overnight session '{tag}': {counts}{unsealed}", color="black" if trusted else "darkred")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.set_xlim(min(e.id for e in exps) - 0.5, max(e.id for e in exps) + 1.5)
    # The measurements set the scale; a bar far off them (few runs, few df) is left off the edge, not allowed to
    # squash every measured point into a line.
    seen = [v for e in exps for v in (e.val_bpb, e.holdout_bpb) if v is not None and math.isfinite(v)]
    if seen:
        lo, hi = min(seen), max(seen)
        if facts.noise.df >= 1 and val_y:
            lo, hi = min(lo, min(val_y) - facts.noise.sigma), max(hi, max(val_y) + facts.noise.sigma)
        pad = max(hi - lo, 0.01)
        ax.set_ylim(lo - 0.12 * pad, hi + 0.2 * pad)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig

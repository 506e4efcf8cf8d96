"""What the journal says, for people: the results table (table / TSV / JSON), one experiment, the plot."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from .agents.cost import Usage
from .journal import Experiment, Journal, Run

STATUS_STYLE = {
    "keep": "bold green", "discard": "dim", "crash": "red", "timeout": "red", "invalid": "yellow",
    "running": "cyan", "interrupted": "magenta",
}

# autoresearch's results.tsv columns, in its order.
TSV_COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description")


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

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def rows(journal: Journal, tag: str) -> list[Row]:
    out = []
    for exp in journal.experiments(tag):
        runs = journal.runs(exp.id)
        peaks = [r.peak_mem_mb for r in runs if r.peak_mem_mb is not None]
        steps = [r.steps for r in runs if r.steps is not None]
        delta = None
        if exp.evidence and "incumbent_mean" in exp.evidence and exp.val_bpb is not None:
            delta = exp.val_bpb - exp.evidence["incumbent_mean"]
        usage = exp.meta.get("usage") if isinstance(exp.meta.get("usage"), dict) else None
        u = Usage.from_dict(usage) if usage else None
        out.append(Row(
            input_tokens=u.prompt_tokens if u else None, cached_tokens=u.cache_read_input_tokens if u else None,
            output_tokens=u.output_tokens if u else None, cost_usd=u.cost_usd if u else None,
            id=exp.id, kind=exp.kind, commit=(exp.commit_sha or "")[:7], val_bpb=exp.val_bpb, delta=delta,
            holdout_bpb=exp.holdout_bpb, memory_gb=max(peaks) / 1024 if peaks else None, status=exp.status,
            description=exp.description, runs=len(runs), steps=round(sum(steps) / len(steps)) if steps else None,
        ))
    return out


def to_tsv(table: list[Row]) -> str:
    lines = ["\t".join(TSV_COLUMNS)]
    for r in table:
        # autoresearch writes 0.000000 for a run without a metric (a crash).
        val = f"{r.val_bpb:.6f}" if r.val_bpb is not None else "0.000000"
        mem = f"{r.memory_gb:.1f}" if r.memory_gb is not None else "0.0"
        lines.append("\t".join((r.commit, val, mem, r.status, r.description.replace("\t", " ").replace("\n", " "))))
    return "\n".join(lines) + "\n"


def to_json(table: list[Row]) -> str:
    return json.dumps([r.as_dict() for r in table], indent=2)


def to_table(table: list[Row], title: str = "") -> Table:
    """The human table; holdout and steps are in JSON and `overnight show`, to leave room for descriptions."""
    t = Table(title=title, title_justify="left", expand=False)
    t.add_column("#", justify="right")
    t.add_column("commit")
    t.add_column("val_bpb", justify="right")
    t.add_column("Δ", justify="right")
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
            str(r.id), r.commit, f"{r.val_bpb:.4f}" if r.val_bpb is not None else "—", delta,
            f"{r.memory_gb:.2f}" if r.memory_gb is not None else "—",
            Text(r.status, style=STATUS_STYLE.get(r.status, "")), *cost, Text(r.description),
        )
    if costed:
        t.caption = agent_totals(table)
        t.caption_justify = "left"
    return t


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


def show(exp: Experiment, runs: list[Run]) -> Group:
    """Everything about one experiment: decision and evidence, runs, diff, errors."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("experiment", f"#{exp.id} ({exp.kind}, session {exp.tag})")
    head.add_row("description", Text(exp.description))
    if exp.hypothesis:
        head.add_row("hypothesis", Text(exp.hypothesis))
    if exp.reasoning:
        head.add_row("reasoning", Text(exp.reasoning))
    head.add_row("status", Text(exp.status, style=STATUS_STYLE.get(exp.status, "")))
    head.add_row("decided by", Text(f"{exp.decided_by or '—'}: {exp.decision_reason or ''}"))
    if exp.val_bpb is not None:
        head.add_row("val_bpb", f"{exp.val_bpb:.4f}" + (f"   (holdout {exp.holdout_bpb:.4f})" if exp.holdout_bpb else ""))
    head.add_row("commit", f"{exp.commit_sha or '—'}  {exp.ref or ''}")
    head.add_row("parent", exp.parent_commit)
    head.add_row("agent", exp.agent)
    if exp.error:
        head.add_row("error", Text(exp.error, style="red"))
    parts: list[Any] = [head]
    if exp.evidence:
        ev = Table(title="evidence", title_justify="left", show_header=False)
        for key, value in exp.evidence.items():
            ev.add_row(key, Text(_fmt(value)))
        parts.append(ev)
    if runs:
        rt = Table(title="runs", title_justify="left")
        for col in ("seed", "status", "val_bpb", "holdout", "steps", "tok/s", "train s", "wall s", "peak MB"):
            rt.add_column(col, justify="right")
        for r in runs:
            rt.add_row(str(r.seed), r.status, _fmt(r.val_bpb), _fmt(r.holdout_bpb), _fmt(r.steps),
                       _fmt(r.tokens_per_s, 0), _fmt(r.train_seconds, 1), _fmt(r.wall_seconds, 1), _fmt(r.peak_mem_mb, 0))
        parts.append(rt)
    if exp.diff:
        parts.append(Panel(Syntax(exp.diff, "diff", theme="ansi_dark", word_wrap=True), title="diff", title_align="left"))
    failed = [r for r in runs if r.status != "ok" and r.log_tail]
    if failed:
        tail = "\n".join((failed[-1].log_tail or "").strip().splitlines()[-15:])
        parts.append(Panel(Text(tail), title=f"end of the log ({failed[-1].log_path})", title_align="left"))
    return Group(*parts)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return ", ".join(_fmt(v, digits) for v in value)
    return str(value)


def _metric(exps: list[Experiment]) -> list[float]:
    return [e.val_bpb if e.val_bpb is not None else math.nan for e in exps]


def plot(journal: Journal, tag: str, out: Path) -> Path:
    """val_bpb per experiment: kept ones marked, the incumbent as a step line, the bar a candidate
    had to clear, the baseline's noise band, and failures along the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    exps = journal.experiments(tag)
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=120)
    valued = [e for e in exps if e.val_bpb is not None]
    baseline = next((e for e in exps if e.kind == "baseline" and e.status == "keep"), None)
    if baseline is not None and baseline.evidence and baseline.val_bpb is not None:
        sigma = float(baseline.evidence.get("sigma", 0.0))
        ax.axhspan(baseline.val_bpb - sigma, baseline.val_bpb + sigma, color="tab:blue", alpha=0.08,
                   label=f"baseline ± σ (σ = {sigma:.4f})")
    discarded = [e for e in valued if e.status == "discard"]
    kept = [e for e in valued if e.status == "keep"]
    if discarded:
        ax.scatter([e.id for e in discarded], _metric(discarded), s=24, color="0.55",
                   label="discarded", zorder=3)
    if kept:
        ax.scatter([e.id for e in kept], _metric(kept), s=70, color="tab:green", edgecolor="black",
                   linewidth=0.6, label="kept", zorder=5)
    # The bar each candidate had to clear on its first run: incumbent mean minus the keep threshold.
    bars = [(e.id, e.evidence["incumbent_mean"] - e.evidence["threshold"]) for e in exps
            if e.evidence and "threshold" in e.evidence and "incumbent_mean" in e.evidence]
    if bars:
        ax.scatter([b[0] for b in bars], [b[1] for b in bars], marker="_", s=260, color="tab:orange",
                   linewidth=1.6, label="keep bar: what the first run had to beat", zorder=4)
    steps_x, steps_y, best = [], [], None
    for e in exps:
        if e.status == "keep" and e.val_bpb is not None:
            best = e.val_bpb
        if best is not None:
            steps_x.append(e.id)
            steps_y.append(best)
    if steps_x:
        ax.step(steps_x, steps_y, where="post", color="tab:green", linewidth=1.8, label="incumbent", zorder=2)
    failed = [e for e in exps if e.status in ("crash", "timeout", "invalid")]
    if failed:
        # Failures have no metric: mark them along the top edge of the axes.
        ax.scatter([e.id for e in failed], [0.98] * len(failed), marker="x", color="tab:red", s=36,
                   transform=ax.get_xaxis_transform(), label="crash / timeout / invalid", zorder=5, clip_on=False)
    few = len(exps) <= 30
    for e in exps:
        if e.kind != "experiment" or e.val_bpb is None or not (few or e.status == "keep"):
            continue
        label = e.description if len(e.description) <= 34 else e.description[:32] + "…"
        ax.annotate(f"#{e.id} {label}", (e.id, e.val_bpb), textcoords="offset points", xytext=(5, 6),
                    fontsize=7, rotation=10, color="darkgreen" if e.status == "keep" else "0.4")
    n = sum(e.kind == "experiment" for e in exps)
    n_kept = sum(e.kind == "experiment" and e.status == "keep" for e in exps)
    ax.set_title(f"Overnight session '{tag}': {n} experiments, {n_kept} kept, {len(failed)} failed")
    ax.set_xlabel("experiment #")
    ax.set_ylabel("val_bpb (lower is better)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if exps:
        ax.set_xlim(min(e.id for e in exps) - 0.5, max(e.id for e in exps) + 1.5)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


"""`overnight report`: one session as markdown a user can paste into a pull request.

Every number comes from report.py's functions (the rows, the pooled σ, the counts, the transfer wording, the
plot), so the pull request says what `overnight results`, `show` and `plot` say: this module only lays it out.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import re
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rich.console import Console
from rich.markup import escape as rich_escape

from . import report
from .journal import FINAL_STATUSES, Experiment, Journal, Run

# The most kept experiments the wins table lists: a pull request is read, not searched.
TOP_WINS = 10
# A description longer than this is cut in the tables (`overnight show ID` has all of it).
DESCRIPTION_CHARS = 240
# The order statuses are counted in: decisions first, then what is still in flight.
_STATUS_ORDER = (*FINAL_STATUSES, "running", "interrupted")


# -- escaping ------------------------------------------------------------------------------------------

# What can open markdown or HTML syntax on GitHub, and the pipe that ends a table cell: a `<!--` alone would hide the
# rest of the report. CommonMark lets any ASCII punctuation be backslash-escaped, so the text renders as written.
_SPECIAL = re.compile(r"([\\`*\[\]<>|~&])")
# An underscore only emphasises at a word's edge: `learning_rate` stays as it is, readable in the raw text too.
_EDGE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
# Any run of whitespace, line and paragraph separators included: a newline in a cell would end the table row.
_SPACE = re.compile(r"\s+")
# GitHub links `#12` to the repository's issue 12 and `@name` to a user (who gets notified) in a pull request's
# text, whatever a backslash says: as code they stay what the journal meant (an experiment, a word).
_REFERENCE = re.compile(r"(?<![\w&\\])([#@][\w-]+)")


def md_text(text: str, limit: int | None = None) -> str:
    """Text from the journal (an agent's description, a flag) as inert markdown on one line.

    A description is whatever the agent wrote: a `|` or a newline in it must not split a table row, and a backtick,
    `<details>` or `[link](…)` must not change the rest of the report."""
    flat = _SPACE.sub(" ", text).strip()
    if limit is not None and len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    escaped = _EDGE_UNDERSCORE.sub(r"\\_", _SPECIAL.sub(r"\\\1", flat))
    # The escaping above left no backtick unescaped, so these code spans are the only ones.
    return _REFERENCE.sub(r"`\1`", escaped)


def _id(exp_id: int) -> str:
    return f"`#{exp_id}`"


def _table(header: Sequence[str], body: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """A GitHub table; cells are already escaped. ``right``: the columns of numbers, aligned right."""
    align = ["---:" if i in right else "---" for i in range(len(header))]
    return [_row(header), _row(align), *(_row(cells) for cells in body)]


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# -- numbers -------------------------------------------------------------------------------------------


def _bpb(value: float | None) -> str:
    return f"{value:.4f}" if value is not None and math.isfinite(value) else "—"


def _signed(value: float | None) -> str:
    # report's wording of a signed difference (a real minus sign, as transfer_text writes it).
    return report._signed(value) if value is not None and math.isfinite(value) else "—"


def _sigmas(delta: float | None, sigma: float | None) -> str:
    """|Δ| in units of the pooled σ: how far beyond run-to-run noise a change went. The sign is Δ's to say."""
    if delta is None or sigma is None or not sigma > 0 or not math.isfinite(delta):
        return "—"
    return f"{abs(delta) / sigma:.1f}σ"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(stamp))


# -- the ablation `overnight ablate` records -----------------------------------------------------------------


@runtime_checkable
class _HasAblations(Protocol):
    """A journal that records ablations: each kept change taken out of the final code and measured again."""

    def ablations(self, tag: str) -> Sequence[Mapping[str, Any]]: ...


@dataclass(frozen=True)
class Ablation:
    experiment_id: int
    description: str
    effect: float | None  # what taking the change out did to the metric
    sigma: float | None  # that effect in units of the pooled σ
    droppable: bool  # taking it out cost nothing beyond noise
    commit: str


def ablations(journal: object, tag: str) -> list[Ablation]:
    """The session's ablations, or [] where the journal records none (a journal from before `overnight ablate`).

    Rows are read defensively: a malformed row is left out rather than failing the whole report."""
    if not isinstance(journal, _HasAblations):
        return []
    out = []
    for raw in journal.ablations(tag) or []:
        try:
            out.append(Ablation(
                experiment_id=int(raw["experiment_id"]), description=str(raw.get("description") or ""),
                effect=_number(raw.get("effect")), sigma=_number(raw.get("sigma")),
                droppable=bool(raw.get("droppable")), commit=str(raw.get("commit") or "")[:7],
            ))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# -- the report ----------------------------------------------------------------------------------------------


def markdown(journal: Journal, tag: str, *, root: Path, plot_path: Path | None) -> str:
    """The session as markdown. ``root``: the folder the markdown will be read from (the plot's link is relative
    to it); ``plot_path``: where to write the progress plot (None: no plot)."""
    return _build(journal, tag, root=root, plot_path=plot_path)[0]


def _build(journal: Journal, tag: str, *, root: Path, plot_path: Path | None) -> tuple[str, Path | None]:
    """The markdown and the plot it wrote (None when none was): the CLI names only files that exist."""
    session = journal.session(tag)
    if session is None:
        raise ValueError(f"no session {tag!r} in the journal")
    facts = report.session_facts(journal, tag)
    exps = journal.experiments(tag)
    runs = {e.id: journal.runs(e.id) for e in exps}
    table = report.rows(journal, tag)
    lines = [f"# Overnight session {md_text(tag)}", ""]
    warnings = _warnings(facts)
    # As the plot decides it: a session whose only experiment is still in flight has measured nothing yet.
    if not any(e.val_bpb is not None or e.is_final for e in exps):
        lines += [f"Session {md_text(tag)} has no experiments yet" + (" (one in flight)." if exps else "."), ""]
        lines += warnings + _settings(session.config, facts, runs)
        return "\n".join(lines).rstrip() + "\n", None

    lines += [_verdict(journal, tag, facts), "", f"_Noise: {md_text(report.noise_text(facts.noise))}._", ""]
    lines += warnings
    lines += _settings(session.config, facts, runs)
    lines += _wins(table, facts)
    lines += _ablation(ablations(journal, tag), facts)
    lines += _transfers_and_flags(journal, tag)
    written = None
    if plot_path is not None:
        written = report.plot(journal, tag, plot_path)
        lines += ["## Progress", "", f"![{md_text(facts.metric)} per experiment]({_link(written, root)})", ""]
    lines += _counts([r.status for r in table if r.kind == "experiment"])
    lines += _cost(table, exps, runs)
    return "\n".join(lines).rstrip() + "\n", written


def _link(path: Path, root: Path) -> str:
    """The plot's address from the report's folder, with forward slashes (a markdown link is a URL path)."""
    rel = Path(os.path.relpath(path.resolve(), root.resolve())).as_posix()
    # A space or parenthesis would end a bare link destination; CommonMark's <…> form takes both.
    return f"<{rel}>" if re.search(r"[\s()<>]", rel) else rel


def _verdict(journal: Journal, tag: str, facts: report.SessionFacts) -> str:
    """One line: the baseline against the incumbent, the change in the metric and in σ, and the holdout of both.

    The incumbent (the newest keep) is the result: it is the branch head a pull request carries, and the keep rule
    only keeps a change that beat the incumbent before it, so it is also the best the session vouches for."""
    metric = md_text(facts.metric)
    base, best = journal.baseline(tag), journal.incumbent(tag)
    if base is None or base.val_bpb is None:
        return f"**No baseline measured yet**: nothing to compare {metric} against."
    if best is None or best.id == base.id or best.val_bpb is None:
        hold = f" · holdout {_bpb(base.holdout_bpb)}" if base.holdout_bpb is not None else ""
        return f"**No experiment beat the baseline**: {metric} {_bpb(base.val_bpb)}{hold} (baseline {_id(base.id)})."
    delta = best.val_bpb - base.val_bpb
    sigma = facts.noise.sigma if facts.noise.df >= 1 else None
    beyond = f", {_sigmas(delta, sigma)}" if sigma is not None else ""
    line = f"{metric} {_bpb(base.val_bpb)} → {_bpb(best.val_bpb)} ({_signed(delta)}{beyond})"
    if base.holdout_bpb is not None or best.holdout_bpb is not None:
        line += f" · holdout {_bpb(base.holdout_bpb)} → {_bpb(best.holdout_bpb)}"
    commit = f" (`{best.commit_sha[:7]}`)" if best.commit_sha else ""
    return f"**{line}** · baseline {_id(base.id)} → {_id(best.id)}{commit}"


def _warnings(facts: report.SessionFacts) -> list[str]:
    """report's own words for a session whose numbers nothing protects, in bold above everything else."""
    out = []
    if not facts.sealed:
        # A session from before sealed runs has no sandbox setting: say that, as seal_text does.
        why = report.UNSEALED if facts.sandbox else report.UNSEALED.replace(
            '(sandbox = "none")', "(the session predates sealed runs)")
        out += [f"**⚠ {md_text(why)}**", ""]
    if facts.reported:
        out += [f"**⚠ {md_text(report.REPORTED)}**", ""]
    return out


def _settings(config: Mapping[str, Any], facts: report.SessionFacts, runs: Mapping[int, list[Run]]) -> list[str]:
    """How the session measured (its recorded config) and what its runs ran on, then the machine of this report."""
    body: list[tuple[str, str]] = []

    def put(label: str, value: Any) -> None:
        if value is not None and value != "":
            body.append((label, str(value)))

    budget = config.get("budget")
    put("budget", f"{budget:g} s of training per run" if isinstance(budget, (int, float)) else None)
    put("budget clock", config.get("clock"))
    threads = config.get("threads")
    put("threads per run", "every core" if threads == 0 else threads)
    put("slots (runs at once)", config.get("slots"))
    agent = config.get("agent")
    claude = config.get("claude")
    model = claude.get("model") if agent == "claude" and isinstance(claude, Mapping) else None
    put("agent", f"{agent} ({model})" if model else agent)
    put("keep rule", _keep_rule(config))
    put("sandbox", (facts.sandbox or "none (predates sealed runs)") + (" · network allowed" if facts.network else ""))
    put("measured by", f"{config.get('measure') or 'harness'} · {facts.metric} ({facts.direction})")
    devices = Counter(r.device or "not recorded" for rs in runs.values() for r in rs)
    put("run devices", ", ".join(f"{d} ({n} run{'s' if n != 1 else ''})" for d, n in devices.most_common()))
    # The rows below are the machine `overnight report` ran on, which need not be the one that trained.
    put("report machine", platform.platform())
    put("report machine CPUs", os.cpu_count())
    put("report machine Python", platform.python_version())
    put("report machine torch", _torch_version())
    cells = [[md_text(k), md_text(v)] for k, v in body]
    return ["## Settings and hardware", "", *_table(["setting", "value"], cells), "",
            "_The session's settings are as it recorded them; the \"report machine\" rows describe where this report "
            "was made, not necessarily where the runs ran._", ""]


def _keep_rule(config: Mapping[str, Any]) -> str | None:
    alpha, max_runs = config.get("alpha"), config.get("max_runs")
    parts = [f"α {alpha:g}" if isinstance(alpha, (int, float)) else "",
             f"at most {max_runs} runs per candidate" if isinstance(max_runs, int) else ""]
    return " · ".join(p for p in parts if p) or None


def _torch_version() -> str:
    # The installed distribution's metadata, not `import torch`: the version is all the report needs, and importing
    # torch would cost seconds (and fail the report where torch is broken).
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _wins(table: list[report.Row], facts: report.SessionFacts) -> list[str]:
    """The kept experiments, largest improvement first, in the direction the session optimises."""
    kept = [r for r in table if r.kind == "experiment" and r.status == "keep"]
    head = ["## Top wins", ""]
    if not kept:
        return [*head, "No experiment was kept: none beat the incumbent beyond noise.", ""]
    sign = -1.0 if facts.direction == "maximize" else 1.0
    # A keep without a recorded Δ (an old journal) goes last rather than being guessed at.
    kept.sort(key=lambda r: (r.delta is None, sign * r.delta if r.delta is not None else 0.0, r.id))
    sigma = facts.noise.sigma if facts.noise.df >= 1 else None
    cells = [[_id(r.id), _signed(r.delta), _sigmas(r.delta, sigma), str(r.runs),
              md_text(r.description, DESCRIPTION_CHARS), f"`{r.commit}`" if r.commit else "—"] for r in kept[:TOP_WINS]]
    out = [*head, *_table(["#", f"Δ {md_text(facts.metric)}", "σ multiple", "runs", "description", "commit"], cells,
                          right=(1, 2, 3)), ""]
    if len(kept) > TOP_WINS:
        out += [f"_…and {len(kept) - TOP_WINS} more kept (`overnight results --tag {md_text(facts.tag)}`)._", ""]
    return out


def _ablation(found: list[Ablation], facts: report.SessionFacts) -> list[str]:
    if not found:
        return []
    sigma = facts.noise.sigma if facts.noise.df >= 1 else None
    cells = [[_id(a.experiment_id), _signed(a.effect),
              f"{abs(a.sigma):.1f}σ" if a.sigma is not None else _sigmas(a.effect, sigma),
              "yes" if a.droppable else "no", md_text(a.description, DESCRIPTION_CHARS),
              f"`{a.commit}`" if a.commit else "—"] for a in found]
    return ["## Ablation", "",
            "Each kept change taken out of the final code on its own and measured again (`overnight ablate`); "
            "a droppable one made no difference beyond noise.", "",
            *_table(["#", "effect", "σ multiple", "droppable", "description", "commit"], cells, right=(1, 2)), ""]


def _transfers_and_flags(journal: Journal, tag: str) -> list[str]:
    out: list[str] = []
    transfers = journal.transfers(tag)
    if transfers:
        out += ["## Transfer checks", "", *(f"- {md_text(report.transfer_text(t))}" for t in transfers), ""]
    flags = journal.flags(tag)
    if flags:
        out += ["## Flags", "", *(f"- ⚠ {md_text(str(f.get('text', '')))}" for f in flags), ""]
    return out


def _counts(statuses: list[str]) -> list[str]:
    counted = Counter(statuses)
    order = [s for s in _STATUS_ORDER if counted[s]] + sorted(s for s in counted if s not in _STATUS_ORDER)
    return ["## Experiments by status", "", f"{md_text(report.experiment_counts(statuses))} (the baseline not counted).",
            "", *_table(["status", "experiments"], [[md_text(s), str(counted[s])] for s in order], right=(1,)), ""]


def _cost(table: list[report.Row], exps: list[Experiment], runs: Mapping[int, list[Run]]) -> list[str]:
    """What the session cost: the agent's tokens and dollars (as report.rows reads them), compute, and time."""
    costed = [r for r in table if r.input_tokens is not None]
    if costed:
        tokens = (f"{sum(r.input_tokens or 0 for r in costed):,} / {sum(r.cached_tokens or 0 for r in costed):,} / "
                  f"{sum(r.output_tokens or 0 for r in costed):,}")
        dollars = f"${sum(r.cost_usd or 0.0 for r in costed):.2f}"
    else:
        tokens, dollars = "none recorded (the agent made no API calls)", "—"
    every = [r for rs in runs.values() for r in rs]
    runs_text = f"{len(every)} run{'s' if len(every) != 1 else ''}"
    finished = [e.finished for e in exps if e.finished is not None]
    if exps and finished:
        start, end = min(e.created for e in exps), max(finished)
        span = f"{_duration(max(end - start, 0.0))} ({_when(start)} → {_when(end)} UTC)"
    else:
        span = "—"
    body = [
        ["agent tokens in / cached / out", tokens],
        ["agent cost", dollars],
        ["training compute (wall)", _hours([r.wall_seconds for r in every], runs_text)],
        ["training compute (CPU)", _hours([r.cpu_seconds for r in every], runs_text)],
        ["session span", span],
    ]
    return ["## Cost", "", *_table(["", "total"], body), ""]


def _hours(seconds: list[float | None], runs_text: str) -> str:
    """Hours summed over the runs that recorded them: a journal from before the outside accounting has none, and
    0.00 h would read as free."""
    recorded = [v for v in seconds if v is not None]
    if not recorded:
        return f"not recorded ({runs_text})"
    return f"{sum(recorded) / 3600:.2f} h over {runs_text}"


# -- the command ---------------------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:  # argparse._SubParsersAction of the CLI's own parser class
    """`overnight report`: registered by cli.build_parser."""
    p = sub.add_parser("report", help="the session as markdown for a pull request (with -o: a file and its plot)")
    p.add_argument("--tag", help="session (default: the latest)")
    p.add_argument("-o", "--output", help="write the markdown here and the plot beside it as <stem>.png "
                                          "(default: print the markdown, no plot)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    # cli imports this module to register the command: its helpers are imported here, not at the top.
    from .cli import CliError, _config, _journal, _tag

    out = Path(args.output) if args.output else None
    plot = out.with_name(f"{out.stem}.png") if out is not None else None
    if out is not None and plot is not None and out.resolve() == plot.resolve():
        raise CliError(f"{out} would be overwritten by its own plot: name the report .md")
    with _journal(_config(args)) as journal:
        tag = _tag(journal, args.tag)
        text, written = _build(journal, tag, root=out.parent if out is not None else Path.cwd(), plot_path=plot)
    if out is None:
        # Plain stdout, not the console: rich would read [brackets] as markup and wrap long table rows.
        sys.stdout.write(text)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    also = f" (and {written})" if written is not None else ""
    console.print(rich_escape(f"wrote {out}{also}"), highlight=False)
    return 0

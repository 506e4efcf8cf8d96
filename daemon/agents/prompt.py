"""What the Claude agent is shown: a static, cached prefix and the journal condensed.

The request is laid out for prompt caching. Tools, the rules and program.md come first and end with
a cache breakpoint: they are the same for every proposal of a session. The editable files at the
incumbent come next with a second breakpoint: they change only when an experiment is kept. The
condensed journal and the human's feedback, which change every time, come last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..journal import Experiment
from .base import Context
from .curves import compare_line
from .tools import TOOLS

RULES = """\
You are the research agent of Overnight, an autonomous ML-experiment loop. Each of your answers becomes one \
experiment: your change to the training script is committed, trained for a fixed budget by a harness you cannot \
touch, and measured on validation bits per byte (val_bpb, lower is better). It is kept only if it beats the \
incumbent by more than the measured noise, confirmed on another seed; otherwise it is reverted.

How to answer:
1. Start with a short plan in plain text (2-4 sentences): what you will try and why, given what the journal says \
was kept, discarded and crashed, and what the human asked for. The human watches this plan in their editor.
2. Make the change with the `edit` tool (exact search/replace on the editable files, as they are shown; several \
calls are fine).
3. Call `propose` once, last, with a one-line description and your hypothesis. If the experiment tests an idea \
of the queue, give its id (`idea`); draw only from the queue's drawable ideas, pinned directions first.
4. Optionally, before your edits, state up to three hypotheses you mean to test later with `hypothesize`, each \
in a direction (e.g. `optimizer`, `attention`, `data order`): the human approves or vetoes them before compute \
is spent.

Rules:
- One focused idea per experiment, so the journal says what worked. No unrelated clean-ups.
- Do not repeat an experiment the journal already has (kept, discarded, crashed, or running now) unless you say \
what is different this time.
- A difference smaller than the noise threshold is noise: do not build on "almost kept" results as if they were \
signals, but a direction that was kept is worth pushing further.
- Crashes and timeouts waste a whole budget: keep the script runnable on the device it reports, and keep the \
model small enough to take many steps within the budget.
- The human's feedback overrides the research program where they conflict; never re-propose a change they \
rejected, and never try an idea they vetoed (their reason says why).
- Edit only the editable files; the harness files are frozen and a change to them is refused.
"""


@dataclass(frozen=True)
class Request:
    system: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    messages: list[dict[str, Any]]

    def chars(self) -> int:
        """The prompt's size in characters: tokens are about a quarter of it (an estimate, labelled as such)."""
        import json

        return len(json.dumps(self.system)) + len(json.dumps(self.tools)) + len(json.dumps(self.messages))


_CACHE = {"type": "ephemeral"}


def build(ctx: Context, *, recent: int = 25) -> Request:
    system: list[dict[str, Any]] = [
        {"type": "text", "text": RULES},
        {"type": "text", "text": "# The research program (program.md)\n\n" + (ctx.program.strip() or "(empty)"),
         "cache_control": _CACHE},
    ]
    files_block = {"type": "text", "text": files_text(ctx), "cache_control": _CACHE}
    user = [files_block, {"type": "text", "text": journal_text(ctx, recent=recent)
                          + "\n\n" + ideas_text(ctx) + feedback_text(ctx) + "\n\n" + ASK}]
    return Request(system=system, tools=[dict(t) for t in TOOLS], messages=[{"role": "user", "content": user}])


ASK = (
    "# Your turn\n\nPropose the next experiment against the incumbent files above: a short plan first, then `edit` "
    "calls, then `propose`."
)


def files_text(ctx: Context) -> str:
    inc = ctx.incumbent
    value = f", val_bpb {inc.val_bpb:.4f}" if inc.val_bpb is not None else ""
    parts = [f"# The editable files at the incumbent (#{inc.id}{value})"]
    for rel, text in ctx.files.items():
        lang = "python" if rel.endswith(".py") else ""
        parts.append(f"## {rel}\n```{lang}\n{text.rstrip()}\n```")
    return "\n\n".join(parts)


def _delta(exp: Experiment) -> str:
    return f" ({exp.delta:+.4f} vs its incumbent)" if exp.delta is not None else ""


def _line(exp: Experiment) -> str:
    if exp.status in ("running", "interrupted"):
        return f"#{exp.id} RUNNING NOW, outcome unknown: {exp.description}"
    value = f"{exp.val_bpb:.4f}" if exp.val_bpb is not None else "—"
    text = f"#{exp.id} {exp.status} {value}{_delta(exp)}: {exp.description}"
    if exp.hypothesis and exp.status == "keep":
        text += f" — {_short(exp.hypothesis, 160)}"
    if exp.error and exp.status in ("crash", "timeout", "invalid"):
        text += f" — error: {_short(_last_line(exp.error), 160)}"
    return text


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# The research memory's share of the prompt at most, in characters (its file is meant to stay near 60 lines).
MEMORY_CHARS = 6000


def memory_text(ctx: Context) -> str:
    """The research memory (memory.py), its headings nested under this section's; "" without one."""
    text = ctx.memory.strip()
    if not text:
        return ""
    if len(text) > MEMORY_CHARS:
        cut = text.rfind("\n", 0, MEMORY_CHARS)
        cut = cut if cut > 0 else MEMORY_CHARS
        text = text[:cut] + f"\n… (cut here: {len(text) - cut} more characters)"
    text = "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())
    return ("## What we learned (research memory)\nThe loop keeps it from the journal; the human may edit it, and "
            "what they wrote there is their word.\n\n" + text)


def _curve_line(ctx: Context, exp: Experiment) -> str:
    """How the experiment's first run trained against its incumbent's, at equal fractions of the budget."""
    if exp.status in ("running", "interrupted") or not ctx.curves.get(exp.id):
        return ""
    parent = (exp.evidence or {}).get("incumbent_id")
    if not isinstance(parent, int):  # a crash or a pruned run: the experiment its code was made from
        parent = next((e.id for e in reversed(ctx.history) if e.commit_sha == exp.parent_commit and e.id != exp.id
                       and e.status == "keep"), None)
    theirs = ctx.curves.get(parent, []) if parent is not None and parent != exp.id else []
    return compare_line(ctx.curves[exp.id], theirs, f"incumbent #{parent}")


def journal_text(ctx: Context, *, recent: int = 25) -> str:
    exps = [e for e in ctx.history if e.kind == "experiment"]
    baseline = next((e for e in ctx.history if e.kind == "baseline" and e.status == "keep"), None)
    bar = f" (about {ctx.bar:.4f} better than the incumbent, measured on two seeds or more)" if ctx.bar > 0 else ""
    out = [
        "# The journal, condensed",
        f"## The noise floor\nRun-to-run noise σ = {ctx.sigma:.4f} val_bpb. A change is kept only if a statistical "
        f"test on several seeds says it beats the incumbent{bar}. Differences smaller than that are noise.",
    ]
    stand = []
    if baseline is not None and baseline.val_bpb is not None:
        stand.append(f"Baseline #{baseline.id}: {baseline.val_bpb:.4f}.")
    inc = ctx.incumbent
    if inc.val_bpb is not None and inc.kind == "experiment":
        gain = f" ({inc.val_bpb - baseline.val_bpb:+.4f} vs baseline)" if baseline and baseline.val_bpb is not None else ""
        stand.append(f"Incumbent #{inc.id}: {inc.val_bpb:.4f}{gain}.")
    counts: dict[str, int] = {}
    for e in exps:
        counts[e.status] = counts.get(e.status, 0) + 1
    stand.append(f"{len(exps)} experiments so far" + (": " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                                                       if counts else "") + ".")
    out.append("## Where we stand\n" + " ".join(stand))
    memory = memory_text(ctx)
    if memory:
        out.append(memory)
    kept = [e for e in exps if e.status == "keep"]
    if kept:
        out.append("## Kept so far (the incumbent builds on all of them)\n" + "\n".join(_line(e) for e in kept))
    tail = exps[-recent:]
    if tail:
        lines = []
        for e in tail:
            lines.append(_line(e))
            curve = _curve_line(ctx, e)
            if curve:
                lines.append(f"    {curve}")
        out.append(f"## Recent experiments (newest last, up to {recent})\n" + "\n".join(lines))
    older = exps[:-recent] if len(exps) > recent else []
    failed = [e for e in older if e.status in ("crash", "timeout", "invalid")]
    if failed:
        out.append("## Known to fail (older; do not repeat)\n" + "\n".join(_line(e) for e in failed[-40:]))
    discarded = [e for e in older if e.status == "discard"]
    if discarded:
        out.append("## Older discarded experiments (tried, not better than the noise)\n"
                   + "; ".join(f"#{e.id} {_short(e.description, 80)}" for e in discarded[-150:]))
    return "\n\n".join(out)


# Queue entries shown at most: the drawable ones first (best first), then the vetoed.
QUEUE_SHOWN = 30


def ideas_text(ctx: Context) -> str:
    """The hypothesis queue the human curates: what may be drawn (best first) and what was vetoed, with why; ""
    when the loop keeps no queue. Ends with a blank line."""
    if ctx.ideas is None:
        return ""
    lines = ["# The idea queue (the human curates it)"]
    if ctx.pinned:
        lines.append(f"Pinned directions (draw from them first): {', '.join(ctx.pinned)}.")
    if ctx.ideas:
        lines.append("Drawable (best first; give the id to `propose` when you test one):")
        for i in ctx.ideas[:QUEUE_SHOWN]:
            tried = f", tested by {' '.join(f'#{e}' for e in i.experiment_ids)}" if i.experiment_ids else ""
            who = "the human's" if i.source == "human" else i.state
            lines.append(f"- idea {i.id} [{i.direction}] {_short(i.text, 200)} ({who}{tried})")
    else:
        lines.append("Nothing drawable: state hypotheses with `hypothesize` for the human to approve.")
    for i in ctx.vetoed[:QUEUE_SHOWN]:
        lines.append(f"- VETOED idea {i.id} [{i.direction}] {_short(i.text, 200)}"
                     + (f": {_short(i.reason, 300)}" if i.reason else ""))
    return "\n".join(lines) + "\n\n"


def feedback_text(ctx: Context) -> str:
    if not ctx.feedback:
        return "# What the human said\n(nothing yet)"
    by_id = {e.id: e for e in ctx.history}
    lines = []
    for fb in ctx.feedback[-30:]:
        kind, text = str(fb.get("kind", "")), _short(str(fb.get("text", "")), 500)
        exp_id = fb.get("experiment_id")
        if kind == "reject":
            exp = by_id.get(exp_id) if isinstance(exp_id, int) else None
            what = f"#{exp_id} ({_short(exp.description, 100)})" if exp else (f"#{exp_id}" if exp_id else "a suggestion")
            lines.append(f"- REJECTED {what}: {text or '(no reason given)'}")
        elif kind == "redirect":
            lines.append(f"- INSTRUCTION: {text}")
        elif kind == "pause":
            lines.append(f"- paused the loop, saying: {text}")
        else:
            lines.append(f"- {kind}: {text}")
    return ("# What the human said (oldest first; the latest instruction wins; it overrides program.md)\n"
            + "\n".join(lines))

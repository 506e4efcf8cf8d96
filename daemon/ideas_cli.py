"""`overnight ideas`: the hypothesis queue from the terminal — list it, add to it, approve, veto, move, pin, close.

With a daemon running, every change goes through it (the loop is the journal's one writer, and every attached
editor sees the change at once); without one, the CLI writes the journal itself, and a foreground `overnight run`
picks the change up before its next proposal.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from overnight.protocol import types as t

from .commands import Curate

_STATE_STYLE = {"proposed": "", "approved": "green", "vetoed": "dim red"}
_DIRECTION_STYLE = {"open": "", "pinned": "bold cyan", "closed": "dim"}


def add_parser(sub: Any) -> None:
    ideas = sub.add_parser("ideas", help="the hypothesis queue: what the agent means to try (approve, veto, add, ...)")
    ideas.add_argument("--tag", help="session (default: the latest)")
    actions = ideas.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", help="the queue and each direction's tries, keeps and gain (the default)")
    add = actions.add_parser("add", help="your own idea, approved at once")
    add.add_argument("text")
    add.add_argument("--direction", default="yours", help="its direction (default: yours)")
    for name, text in (("approve", "let the agent draw these ideas"), ("reopen", "approve vetoed ideas again")):
        p = actions.add_parser(name, help=text)
        p.add_argument("ids", nargs="+", type=int, metavar="ID")
    veto = actions.add_parser("veto", help="never try these ideas; the agent sees your reason")
    veto.add_argument("ids", nargs="+", type=int, metavar="ID")
    veto.add_argument("--reason", default="", help="why not (the agent reads it)")
    move = actions.add_parser("move", help="move an idea to a position in the queue (1: the top)")
    move.add_argument("id", type=int)
    move.add_argument("position", type=int)
    for name, text in (("pin", "draw this direction's ideas first"), ("close", "draw none of this direction's ideas"),
                       ("open", "neither pinned nor closed")):
        p = actions.add_parser(name, help=text)
        p.add_argument("direction")
    ideas.set_defaults(func=cmd_ideas)


def commands(args: argparse.Namespace) -> list[Curate]:
    """The curation commands an invocation stands for (none for list)."""
    match args.action:
        case None | "list":
            return []
        case "add":
            return [Curate("add", text=args.text, direction=args.direction)]
        case "approve" | "reopen":
            return [Curate(args.action, idea_id=i) for i in args.ids]
        case "veto":
            return [Curate("veto", idea_id=i, reason=args.reason) for i in args.ids]
        case "move":
            if args.position < 1:
                from .cli import CliError

                raise CliError("positions start at 1 (the top of the queue)")
            return [Curate("move", idea_id=args.id, index=args.position - 1)]
        case _:
            return [Curate(args.action, direction=args.direction)]


def cmd_ideas(args: argparse.Namespace, console: Console) -> int:
    from .cli import CliError, _ask, _config
    from .server.client import NoDaemon

    cfg = _config(args)
    wanted = commands(args)
    try:
        served: t.IdeaQueue | None = _ask(cfg, t.OVERNIGHT_IDEAS_LIST, t.ListIdeasParams())
    except NoDaemon:
        served = None
    if served is not None and args.tag not in (None, served.tag):
        # The daemon owns the journal while it runs: another session's queue is changed through it or not at all.
        if wanted:
            raise CliError(f"the daemon serves session {served.tag}: stop it (overnight shutdown) to curate {args.tag}")
        served = None  # a listing only reads
    queue = _through_daemon(cfg, wanted) if served is not None else _direct(cfg, args.tag, wanted)
    for c in wanted:
        console.print(_done(c))
    console.print(render(queue))
    return 0


def _through_daemon(cfg: Any, wanted: list[Curate]) -> t.IdeaQueue:
    from .cli import _ask

    queue: t.IdeaQueue = _ask(cfg, t.OVERNIGHT_IDEAS_LIST, t.ListIdeasParams())
    for c in wanted:
        if c.action == "add":
            queue = _ask(cfg, t.OVERNIGHT_IDEAS_ADD, t.AddIdeaParams(text=c.text, direction=c.direction))
        else:
            queue = _ask(cfg, t.OVERNIGHT_IDEAS_CURATE, t.CurateIdeaParams(
                action=t.IdeaAction(c.action), id=c.idea_id, reason=c.reason or None, index=c.index,
                direction=c.direction or None))
    return queue


def _direct(cfg: Any, tag: str | None, wanted: list[Curate]) -> t.IdeaQueue:
    from . import ideas
    from .cli import CliError, _journal, _tag
    from .server.core import idea_queue

    with _journal(cfg) as journal:
        session = _tag(journal, tag)
        for c in wanted:
            try:
                ideas.curate(journal, session, c)
            except ideas.CurationError as exc:
                raise CliError(str(exc)) from None
        return idea_queue(journal, session, cfg)


def _done(c: Curate) -> str:
    what = {"add": "added your idea", "approve": f"approved #{c.idea_id}", "reopen": f"reopened #{c.idea_id}",
            "veto": f"vetoed #{c.idea_id}", "move": f"moved #{c.idea_id} to position {(c.index or 0) + 1}"}
    return what.get(c.action, f"direction {c.direction!r}: {c.action}")


def render(queue: t.IdeaQueue) -> Group:
    """The queue as a table per direction, each headed by its tries, keeps, gain and state."""
    if not queue.ideas and not queue.directions:
        return Group(Text(f"session {queue.tag or '—'}: the queue is empty (the agent states its hypotheses before "
                          "its next proposal; add your own with `overnight ideas add \"…\"`)"))
    head = Text(f"session {queue.tag} · the agent draws ", style="bold")
    head.append("approved ideas only" if queue.policy == "approved" else "every idea you have not vetoed")
    parts: list[Any] = [head]
    by_direction: dict[str, list[t.Idea]] = {}
    for idea in queue.ideas:
        by_direction.setdefault(idea.direction, []).append(idea)
    for d in queue.directions:
        title = Text(f"{d.name}", style=_DIRECTION_STYLE.get(d.state.value, ""))
        title.append(f"  [{d.state.value}]  {d.tries} tries · {d.keeps} kept · gain {d.gain:+.4f}")
        if d.plateau:
            title.append(f"  PLATEAU ({queue.plateau_after}+ tries without a keep)", style="bold yellow")
        table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        table.add_column("#", justify="right")
        table.add_column("state")
        table.add_column("idea", overflow="fold", ratio=1)
        table.add_column("tested by")
        for idea in by_direction.get(d.name, []):
            text = Text(escape(idea.text))
            if idea.source == "human":
                text.append("  (yours)", style="cyan")
            if idea.reason:
                text.append(f"  — {idea.reason}", style="dim")
            table.add_row(str(idea.id), Text(idea.state.value, style=_STATE_STYLE.get(idea.state.value, "")), text,
                          " ".join(f"#{e}" for e in idea.experiment_ids) or "—")
        parts.append(table)
    return Group(*parts)

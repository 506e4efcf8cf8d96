"""The ``overnight`` command: parses arguments and calls into the loop, the journal and the reports."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import shutil
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import git
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from .agents import AgentError, make_agent
from .config import CONFIG_NAME, Config, ConfigError, load_config
from .journal import Journal, JournalError, damaged
from .lock import WorkspaceBusy
from .loop import Loop, LoopError
from .server.client import NoDaemon
from .workspace import Workspace, WorkspaceError

# What `overnight init` copies into a new workspace: (package, file, destination). Its overnight.toml is rendered
# from the code's defaults (config_file.py), so a checkout's local edits never travel.
_TEMPLATE = (
    ("overnight.template", "program.md", "program.md"),
    ("overnight.trainer", "prepare.py", "trainer/prepare.py"),
    ("overnight.trainer", "train.py", "trainer/train.py"),
    ("overnight.trainer", "README.md", "trainer/README.md"),
)


def _template_file(package: str, name: str) -> Path:
    """A file shipped with Overnight. The template packages are namespace packages (the repository
    root is one), which importlib.resources cannot read in an editable install, so look on their path."""
    spec = importlib.util.find_spec(package)
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / name
        if candidate.is_file():
            return candidate
    raise CliError(f"this Overnight installation lacks {package}/{name}: reinstall it")


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 1."""


def _root(given: str | None) -> Path:
    if given:
        return Path(given).resolve()
    try:
        top = git.Repo(Path.cwd(), search_parent_directories=True).working_tree_dir
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        top = None
    return Path(top or Path.cwd()).resolve()


def _config(args: argparse.Namespace) -> Config:
    return load_config(_root(args.workspace))


def _journal(cfg: Config) -> Journal:
    if not cfg.journal_path.exists():
        raise CliError(f"no journal in {cfg.state_dir}: nothing has run here yet (start with `overnight run`)")
    return Journal(cfg.journal_path)


def _tag(journal: Journal, tag: str | None) -> str:
    if tag is not None:
        if journal.session(tag) is None:
            known = ", ".join(s.tag for s in journal.sessions()) or "none"
            raise CliError(f"no session {tag!r} in the journal (sessions: {known})")
        return tag
    latest = journal.latest_session()
    if latest is None:
        raise CliError("the journal has no sessions yet: start one with `overnight run`")
    return latest.tag


def _executor_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--slots", type=_whole(1, 256), help="runs at once (default: config, 1)")
    p.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster: auto (the one `ray start --head` started here) "
                                                    "or HOST:PORT (default: config [executor])")


def _with_executor(cfg: Config, ray: str | None) -> Config:
    if not ray:
        return cfg
    return dataclasses.replace(cfg, executor=dataclasses.replace(cfg.executor, kind="ray", address=ray))


# -- commands ---------------------------------------------------------------------------------------


def _foreground(cfg: Config, console: Console, *, max_experiments: int | None, tag: str | None,
                ablate_runs: int | None = None) -> Any:
    """The loop in this terminal, with its live view; Ctrl-C stops it (twice: at once). Its Summary."""
    from .live import LiveView

    agent = make_agent(cfg)
    # The view reads what the session already holds (pooled σ, incumbent, flags, seal) from the loop's journal.
    view = LiveView(console, agent=agent.name, budget=cfg.budget, journal=lambda: loop.journal)
    loop = Loop(cfg, agent, listener=view, resumable=False)  # no daemon: nobody can `overnight resume` it

    # The handler only counts: it takes no lock and prints nothing (a handler that printed could wait forever on
    # a lock the interrupted code holds). A watcher thread acts on the first Ctrl-C; a second exits at once, which
    # loses nothing — the journal is transactional, runs die with us (parent-death signal), and the next start
    # re-runs what was in flight.
    interrupts = [0]

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        interrupts[0] += 1
        if interrupts[0] >= 2:
            os.write(sys.stderr.fileno(), b"\x1b[?25h\ninterrupted\n" if sys.stderr.isatty() else b"interrupted\n")
            os._exit(130)

    done = threading.Event()

    def watch_interrupts() -> None:
        while not done.wait(0.1):
            if interrupts[0] >= 1:
                view.note("stopping: the run in flight is killed and will re-run on the next start (Ctrl-C again to force)")
                loop.stop()
                return

    from .watch import UserFileWatcher

    # The user's own edits while the loop runs are taken as authoritative, as in the daemon.
    watcher = UserFileWatcher(cfg.root, [*cfg.editable, cfg.program], loop.request_sync)
    previous = signal.signal(signal.SIGINT, on_sigint)
    threading.Thread(target=watch_interrupts, daemon=True, name="overnight-interrupts").start()
    watcher.start()
    try:
        with view:
            return loop.run(max_experiments=max_experiments, tag=tag, ablate_runs=ablate_runs)
    finally:
        done.set()
        watcher.stop()
        if interrupts[0] == 0:  # after a Ctrl-C we are on our way out: a second one still exits 130 at once
            signal.signal(signal.SIGINT, previous)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    cfg = _with_executor(_config(args).with_overrides(
        agent=args.agent, budget=args.budget, baseline_runs=args.baseline_runs, clock=args.clock, slots=args.slots,
        replay_file=str(Path(args.replay_file).resolve()) if args.replay_file else None,
    ), args.ray)
    summary = _foreground(cfg, console, max_experiments=args.max_experiments, tag=args.tag)
    best = f"{summary.best:.4f}" if summary.best is not None else "—"
    console.print(
        f"[bold]session {summary.tag}[/]: {summary.experiments} experiments, {summary.kept} kept, best val_bpb {best}. "
        f"See `overnight results` and `overnight plot`."
    )
    return 0


def cmd_ablate(args: argparse.Namespace, console: Console) -> int:
    from overnight.protocol import types as t

    from . import ablate

    cfg = _config(args)
    with _journal(cfg) as journal:
        tag = _tag(journal, args.tag)
        changes, total, seconds = ablate.cost(journal, tag, args.runs, cfg.budget)
    if changes == 0:
        raise CliError(f"session {tag} has no kept change to ablate")
    cost = f"{changes} kept change(s): at most {total} runs of about {seconds / max(1, total):.0f} s, ~{seconds / 60:.0f} min"
    console.print(f"ablation of session {tag}, {cost}")
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("pass --yes to start it (it runs the training script the number of times above)")
        if input("go on? [y/N] ").strip().lower() not in ("y", "yes"):
            console.print("not started")
            return 1
    if args.tag is None:
        try:
            result = _ask(cfg, t.OVERNIGHT_ABLATE, t.AblateParams(runs=args.runs))
            console.print(f"the daemon takes it: {result.message}. Watch it in the editor or with `overnight status`; "
                          "`overnight report` shows the result")
            return 0
        except NoDaemon:
            pass
    with _journal(cfg) as journal:
        before = journal.meta(f"ablation:{tag}")
    summary = _foreground(cfg, console, max_experiments=0, tag=tag, ablate_runs=args.runs)
    with _journal(cfg) as journal:
        done = journal.meta(f"ablation:{summary.tag}") != before  # a new result, not an earlier ablation's
        rows = journal.ablations(summary.tag) if done else []
    if not rows:
        console.print("the ablation did not finish (see above); run it again to redo it")
        return 1
    for row in rows:
        effect = f"{row['effect']:+.4f}" if isinstance(row["effect"], (int, float)) else "—"
        verdict = "[yellow]droppable[/]" if row["droppable"] else "[green]needed[/]"
        console.print(f"#{row['experiment_id']} {escape(row['description'])}: removing it {effect} → {verdict}"
                      + (f" · commit {row['commit'][:7]}" if row["commit"] else " · left out"))
    console.print(f"branch {rows[0]['branch']}: one commit per surviving change (review with `git log {rows[0]['branch']}`)")
    return 0


def cmd_memory(args: argparse.Namespace, console: Console) -> int:
    from . import memory

    cfg = _config(args)
    with _journal(cfg) as journal:
        tag = _tag(journal, args.tag)
    where = memory.path(cfg.state_dir, tag)
    text = memory.read(cfg.state_dir, tag)
    if text is None and where.exists():
        raise CliError(f"{where} cannot be read as UTF-8 text: the loop leaves it alone until you fix it")
    if text is None:
        console.print(f"no research memory for session {tag} yet: the loop writes {where} before each proposal")
        return 1
    if args.path:
        console.print(str(where), highlight=False)
        return 0
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    console.print(f"[dim]({where}: edit it freely; your changes survive its regeneration and the agent reads them)[/]",
                  highlight=False)
    return 0


def cmd_daemon(args: argparse.Namespace, console: Console) -> int:
    from .server import discovery
    from .server.app import run_daemon, setup_logging
    from .server.core import DaemonCore

    cfg = _with_executor(_config(args).with_overrides(agent=args.agent, budget=args.budget, slots=args.slots), args.ray)
    running = discovery.read(cfg.state_dir)
    if running is not None:
        console.print(f"a daemon already runs for {cfg.root}: pid {running.pid}, port {running.port}")
        return 0
    Workspace(cfg)  # not a repository, no commits, a declared file missing: say so here, not in a log
    if args.detach:
        import subprocess
        import time

        argv = [sys.executable, "-m", "overnight.daemon.cli", "-C", str(cfg.root), "daemon"]
        for flag, value in (("--agent", args.agent), ("--budget", args.budget), ("--port", args.port),
                            ("--max-experiments", args.max_experiments), ("--slots", args.slots), ("--ray", args.ray)):
            if value is not None:
                argv += [flag, str(value)]
        if args.paused:
            argv.append("--paused")
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        with (cfg.state_dir / "daemon.out").open("ab") as out:
            before = out.tell()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        deadline = time.monotonic() + 60
        while (info := discovery.read(cfg.state_dir)) is None or info.pid != proc.pid:
            if proc.poll() is not None or time.monotonic() > deadline:
                said = _last_error(cfg.state_dir / "daemon.out", before)
                raise CliError(f"the daemon did not start{': ' + said if said else ''} (see {cfg.state_dir / 'daemon.out'})")
            time.sleep(0.1)
        console.print(f"daemon started: pid {info.pid}, 127.0.0.1:{info.port}; log {cfg.state_dir / 'daemon.log'}")
        return 0
    setup_logging(cfg)
    core = DaemonCore(cfg, make_agent(cfg), max_experiments=args.max_experiments)
    if args.paused:
        core.loop.pause("started paused")
    run_daemon(cfg, core, port=args.port or 0)
    return 0


def _last_error(path: Path, offset: int) -> str:
    """The detached daemon's own one-line error (main() prints `error: …`) written after ``offset``, if any."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            lines = fh.read().decode("utf-8", errors="replace").splitlines()[-20:]
    except OSError:
        return ""
    errors = [line.split("error:", 1)[1].strip() for line in lines if "error:" in line]
    return errors[-1] if errors else ""


def _ask(cfg: Config, method: str, params: object, edits: bool = False) -> Any:
    """One request to the workspace's daemon, over the same protocol an editor uses.

    ``edits``: this request may make the daemon ask us to apply an edit (accept), written to disk."""
    import asyncio

    from pygls.exceptions import JsonRpcException

    from .server.client import DaemonClient

    async def go() -> Any:
        client = DaemonClient(apply_edits_under=cfg.root if edits else None)
        await client.connect_workspace(cfg.state_dir)
        try:
            return await client.request(method, params)
        except JsonRpcException as exc:
            raise CliError(f"the daemon refused: {exc.message}") from None
        finally:
            await client.close()

    return asyncio.run(asyncio.wait_for(go(), timeout=60))


def cmd_suggestions(args: argparse.Namespace, console: Console) -> int:
    from overnight.protocol import types as t

    from .server.suggestions import relative_path

    cfg = _config(args)
    result = _ask(cfg, t.OVERNIGHT_SUGGESTIONS_LIST, t.ListSuggestionsParams())
    if not result.items:
        console.print("no pending suggestions")
        return 0
    for s in result.items:
        console.print(f"[bold]{escape(s.id)}[/]  {escape(relative_path(cfg.root, s.uri))}  {escape(s.evidence)}", highlight=False)
        for h in s.hunks:
            where = f"line {h.range.start.line + 1}"
            console.print(f"  hunk {escape(h.id)}  {where}  {escape(h.evidence or '')}", highlight=False)
            for line in h.old_text.splitlines():
                console.print(Text(f"    - {line}", style="red"))
            for line in h.new_text.splitlines():
                console.print(Text(f"    + {line}", style="green"))
    console.print("accept with `overnight accept ID [--hunk HUNK]`, reject with `overnight reject ID --reason \"…\"`")
    return 0


def cmd_accept(args: argparse.Namespace, console: Console) -> int:
    from overnight.protocol import types as t

    cfg = _config(args)
    result = _ask(cfg, t.OVERNIGHT_SUGGESTIONS_ACCEPT, t.AcceptSuggestionParams(id=args.id, hunk_id=args.hunk), edits=True)
    if not result.applied:
        raise CliError(f"not applied: {result.message}")
    console.print(f"applied {args.hunk or args.id} to your file")
    return 0


def cmd_reject(args: argparse.Namespace, console: Console) -> int:
    from overnight.protocol import types as t

    cfg = _config(args)
    _ask(cfg, t.OVERNIGHT_SUGGESTIONS_REJECT, t.RejectSuggestionParams(id=args.id, hunk_id=args.hunk, reason=args.reason))
    console.print("rejected" + ("; the agent sees your reason from its next proposal on" if args.reason else ""))
    return 0


def cmd_attach(args: argparse.Namespace, console: Console) -> int:
    from .server.bridge import attach

    return attach(_config(args).state_dir)


def cmd_budget(args: argparse.Namespace, console: Console) -> int:
    from overnight.protocol import types as t

    cfg = _config(args)
    if not args.seconds > 0:
        raise CliError("the budget must be a positive number of seconds")
    _ask(cfg, t.OVERNIGHT_SET_BUDGET, t.SetBudgetParams(seconds=args.seconds, tag=args.tag))
    console.print(f"budget {args.seconds:g} s: a new session (new baseline) starts after the experiment in flight")
    return 0


def cmd_control(args: argparse.Namespace, console: Console) -> int:
    from overnight.protocol import types as t

    cfg = _config(args)
    if args.command == "redirect":
        result = _ask(cfg, t.OVERNIGHT_REDIRECT, t.RedirectParams(instruction=args.instruction))
        console.print(f"recorded; the agent sees it from the next proposal on (feedback #{result.feedback_id})")
        return 0
    if args.command == "shutdown":
        _ask(cfg, t.OVERNIGHT_SHUTDOWN, t.ShutdownParams())
        console.print("the daemon is shutting down (a run in flight re-runs on the next start)")
        return 0
    method, params = {
        "status": (t.OVERNIGHT_STATUS, t.StatusParams()),
        "pause": (t.OVERNIGHT_PAUSE, t.PauseParams(reason=getattr(args, "reason", None))),
        "resume": (t.OVERNIGHT_RESUME, t.ResumeParams()),
        "stop": (t.OVERNIGHT_STOP, t.StopParams(when=t.StopWhen.NOW if getattr(args, "now", False)
                                                else t.StopWhen.AFTER_CURRENT)),
    }[args.command]
    status = _ask(cfg, method, params)
    best = f"{status.best.val_bpb:.4f} (#{status.best.id})" if status.best else "—"
    current = f"#{status.current.id} {status.current.description}" if status.current else "—"
    if status.current and status.phase:
        current += f" ({status.phase.value})"
    for flight in status.also_in_flight or []:  # scored while the current one trains, or in another slot
        current += f"; also #{flight.experiment.id}" + (f" ({flight.phase.value})" if flight.phase else "")
    console.print(
        f"daemon: {status.state} · session {status.tag or '—'} · agent {status.agent} · budget {status.budget:g} s\n"
        f"  experiments {status.experiments}, kept {status.kept}, best {best}\n"
        f"  current {current}" + (f"\n  {escape(status.message)}" if status.message else "")
    )
    return 0


def cmd_results(args: argparse.Namespace, console: Console) -> int:
    from . import report

    with _journal(_config(args)) as journal:
        tag = _tag(journal, args.tag)
        if args.format == "table":
            # The session's header (sealed or not, the pooled noise), the table, transfer checks and flags.
            console.print(report.results(journal, tag))
            return 0
        table = report.rows(journal, tag)
    if args.format == "tsv":
        sys.stdout.write(report.to_tsv(table))
    else:
        sys.stdout.write(report.to_json(table) + "\n")
    return 0


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    from . import report

    with _journal(_config(args)) as journal:
        exp = journal.experiment(args.id)
        if exp is None:
            raise CliError(f"no experiment #{args.id} in the journal")
        console.print(report.show(exp, journal.runs(exp.id), journal))
    return 0


def cmd_plot(args: argparse.Namespace, console: Console) -> int:
    from . import report

    with _journal(_config(args)) as journal:
        out = report.plot(journal, _tag(journal, args.tag), Path(args.output))
    console.print(f"wrote {out}")
    return 0


def cmd_init(args: argparse.Namespace, console: Console) -> int:
    from . import config_file

    target = Path(args.dir).resolve()
    if args.autoresearch:
        return _init_autoresearch(target, args.force, console)
    writes = [dest for _, _, dest in _TEMPLATE] + [CONFIG_NAME]
    existing = [dest for dest in writes if (target / dest).exists()]
    if existing and not args.force:
        raise CliError(f"{target} already has {', '.join(existing)}; use --force to overwrite")
    for package, name, dest in _TEMPLATE:
        path = target / dest
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_template_file(package, name), path)
    (target / CONFIG_NAME).write_text(config_file.render(), encoding="utf-8")
    _commit_init(target, writes, "overnight init: research workspace")
    console.print(f"initialised an Overnight workspace in {target}\n  next: cd {target} && overnight run")
    return 0


def _init_autoresearch(target: Path, force: bool, console: Console) -> int:
    """An overnight.toml for an autoresearch-style folder that exists already (train.py printing ``val_bpb: X``)."""
    from . import config_file

    if not (target / "train.py").is_file():
        raise CliError(f"{target} has no train.py: --autoresearch sets up an existing autoresearch-style folder")
    if (target / CONFIG_NAME).exists() and not force:
        raise CliError(f"{target} already has {CONFIG_NAME}; use --force to overwrite")
    writes = [CONFIG_NAME]
    if not (target / "program.md").exists():
        shutil.copyfile(_template_file("overnight.template", "program.md"), target / "program.md")
        writes.append("program.md")
    (target / CONFIG_NAME).write_text(config_file.render(**config_file.autoresearch(target)), encoding="utf-8")
    _commit_init(target, writes, "overnight init --autoresearch: reported-metric workspace")
    console.print(
        f"wrote {target / CONFIG_NAME}: train.py is the editable file and its own printed val_bpb the metric\n"
        "  (reported mode: the session is marked, since Overnight's harness cannot vouch for that number).\n"
        "  Prepare the data once (autoresearch: `uv run prepare.py`), then: "
        f"cd {target} && overnight run --agent claude"
    )
    return 0


def _commit_init(target: Path, paths: list[str], message: str) -> None:
    try:
        repo = git.Repo(target)
        created = False
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        target.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.init(target)
        created = True
    repo.git.add("--", *paths)
    if created or repo.is_dirty(index=True, working_tree=False):
        repo.git.commit(
            "-m", message, env={
                "GIT_AUTHOR_NAME": "Overnight", "GIT_AUTHOR_EMAIL": "overnight@localhost",
                "GIT_COMMITTER_NAME": "Overnight", "GIT_COMMITTER_EMAIL": "overnight@localhost",
            },
        )


# -- parsing ----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """A usage error is one line (what is wrong, and where the help is), not the whole usage block."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="overnight", description="Autonomous ML experiments overnight, with you in charge.",
    )
    parser.add_argument("-C", "--workspace", help="the workspace (default: the git repository around the current directory)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the experiment loop in the foreground")
    run.add_argument("--agent", choices=("sweep", "replay", "claude"), help="who proposes experiments (default: config, sweep)")
    run.add_argument("--budget", type=_finite, help="seconds of training per run (default: config, 60)")
    run.add_argument("--max-experiments", type=_whole(0, 10**9),
                     help="stop after this many experiments (default: run until stopped)")
    run.add_argument("--tag", help="session tag: resumes it if it exists (default: the latest session, or today's date)")
    run.add_argument("--baseline-runs", type=_whole(2, 1000),
                     help="baseline runs that measure the noise floor (default: config, 3)")
    run.add_argument("--replay-file", help="proposals for --agent replay (JSON Lines)")
    run.add_argument("--clock", choices=("auto", "steps", "cpu", "wall"), help="the budget clock (default: config, auto)")
    for p in (run,):
        _executor_flags(p)
    run.set_defaults(func=cmd_run)

    results = sub.add_parser("results", help="the journal's experiments")
    results.add_argument("--format", choices=("table", "tsv", "json"), default="table")
    results.add_argument("--tag", help="session (default: the latest)")
    results.set_defaults(func=cmd_results)

    show = sub.add_parser("show", help="one experiment: diff, metrics, decision and evidence")
    show.add_argument("id", type=_whole(1, 2**63 - 1))
    show.set_defaults(func=cmd_show)

    plot = sub.add_parser("plot", help="plot val_bpb per experiment to a PNG")
    plot.add_argument("-o", "--output", default="progress.png")
    plot.add_argument("--tag", help="session (default: the latest)")
    plot.set_defaults(func=cmd_plot)

    daemon = sub.add_parser("daemon", help="run the loop in a daemon that editors and the CLI attach to")
    daemon.add_argument("--detach", action="store_true", help="start it in the background and return")
    daemon.add_argument("--port", type=_whole(0, 65535), help="TCP port on 127.0.0.1 (default: a free one)")
    daemon.add_argument("--agent", choices=("sweep", "replay", "claude"))
    daemon.add_argument("--budget", type=_finite)
    daemon.add_argument("--max-experiments", type=_whole(0, 10**9))
    daemon.add_argument("--paused", action="store_true", help="start paused: nothing runs until `overnight resume`")
    _executor_flags(daemon)
    daemon.set_defaults(func=cmd_daemon)
    for name, text in (("status", "ask the running daemon how the loop stands"),
                       ("pause", "pause the loop after the experiment in flight"),
                       ("resume", "resume a paused loop, or start a stopped one again"),
                       ("stop", "stop the loop after the experiment in flight (--now: at once); the daemon keeps serving"),
                       ("shutdown", "stop the loop at once and end the daemon")):
        p = sub.add_parser(name, help=text)
        if name == "pause":
            p.add_argument("--reason", help="why: recorded, and shown to the agent")
        if name == "stop":
            p.add_argument("--now", action="store_true", help="kill the run in flight (it re-runs on the next start)")
        p.set_defaults(func=cmd_control)
    redirect = sub.add_parser("redirect", help="an instruction for the agent, from the next proposal on")
    redirect.add_argument("instruction")
    redirect.set_defaults(func=cmd_control)

    suggestions = sub.add_parser("suggestions", help="the pending suggestions: the loop's kept changes, as hunks")
    suggestions.set_defaults(func=cmd_suggestions)
    accept = sub.add_parser("accept", help="apply a suggestion (or one hunk) to your file")
    accept.add_argument("id", help="suggestion id (see `overnight suggestions`)")
    accept.add_argument("--hunk", help="only this hunk")
    accept.set_defaults(func=cmd_accept)
    reject = sub.add_parser("reject", help="reject a suggestion (or one hunk); the reason goes to the agent")
    reject.add_argument("id", help="suggestion id")
    reject.add_argument("--hunk", help="only this hunk")
    reject.add_argument("--reason", help="why: the agent sees it")
    reject.set_defaults(func=cmd_reject)
    attach = sub.add_parser("attach", help="the daemon's LSP connection on stdin/stdout, for editors that start "
                                           "language servers as child processes")
    attach.set_defaults(func=cmd_attach)
    ablate = sub.add_parser("ablate", help="measure what each kept change contributes; the survivors, one commit each, "
                                           "on overnight/<tag>-final")
    ablate.add_argument("--tag", help="session (default: the latest)")
    ablate.add_argument("--runs", type=_whole(2, 20), default=2, help="runs per version (default 2)")
    ablate.add_argument("--yes", action="store_true", help="start without asking (the cost is printed first)")
    ablate.set_defaults(func=cmd_ablate)
    memory = sub.add_parser("memory", help="the research memory: what the session learned (yours to edit; the agent reads it)")
    memory.add_argument("--tag", help="session (default: the latest)")
    memory.add_argument("--path", action="store_true", help="print only the file's path (e.g. for $EDITOR)")
    memory.set_defaults(func=cmd_memory)
    from . import ideas_cli, importer, session_report, tensorboard_log

    ideas_cli.add_parser(sub)
    importer.add_parser(sub)  # `overnight import results.tsv [--branch B] [--tag T]`
    session_report.add_parser(sub)  # `overnight report [--tag T] [-o report.md]`
    tensorboard_log.add_parser(sub)  # `overnight tensorboard [--tag T] [--start]`
    budget = sub.add_parser("budget", help="change the training budget: starts a new session with a new baseline")
    budget.add_argument("seconds", type=_finite)
    budget.add_argument("--tag", help="the new session's tag (default: derived from the current one)")
    budget.set_defaults(func=cmd_budget)

    doctor = sub.add_parser("doctor", help="check the journal, git refs, worktrees, locks and the daemon file; "
                                           "--repair fixes what is safe to fix")
    doctor.add_argument("--repair", action="store_true", help="repair (a damaged journal is kept beside the new one)")
    doctor.set_defaults(func=cmd_doctor)
    init = sub.add_parser("init", help="set up a new workspace (training script, harness, program, config)")
    init.add_argument("dir")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.add_argument("--autoresearch", action="store_true",
                      help="DIR is an autoresearch-style folder (train.py printing val_bpb, prepare.py, program.md): "
                           "write only its overnight.toml, in reported-metric mode")
    init.set_defaults(func=cmd_init)
    return parser


def cmd_doctor(args: argparse.Namespace, console: Console) -> int:
    from .doctor import check

    cfg = _config(args)
    findings = check(cfg, repair=args.repair)
    for f in findings:
        mark = "[green]ok[/]  " if f.ok else ("[yellow]fixed[/]" if f.repaired else "[red]bad[/] ")
        line = f"{mark} {escape(f.area)}: {escape(f.detail)}"
        if f.repaired:
            line += f" — {escape(f.repaired)}"
        console.print(line, highlight=False)
    unresolved = [f for f in findings if not f.ok and not f.repaired]
    return 1 if unresolved else 0


def _whole(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high], else argparse's one-line error (exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not from {low} to {high}")
        return value

    return parse


def _finite(text: str) -> float:
    """An argparse type: a finite number (the range is the config's to check, with the key's name)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Piped output (a log, CI, grep) keeps each message on one line instead of wrapping at 80 columns.
    console = Console(soft_wrap=not sys.stdout.isatty())
    err = Console(stderr=True, soft_wrap=True)
    if getattr(args, "max_experiments", None) is not None and args.max_experiments < 0:
        err.print("[red]error:[/] --max-experiments must be 0 or more")
        return 2
    try:
        return int(args.func(args, console))
    except (CliError, ConfigError, WorkspaceError, WorkspaceBusy, LoopError, AgentError, NoDaemon, JournalError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        return 1
    except sqlite3.DatabaseError as exc:  # the journal went bad after it was opened
        err.print(f"[red]error:[/] {escape(damaged(_journal_path(args), exc))}", highlight=False)
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        err.print(f"[red]error:[/] {escape((exc.strerror or str(exc)) + where)}", highlight=False)
        return 1
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        return 130
    except Exception as exc:  # a bug of ours: one line here, the traceback in a file for the report
        report = _save_traceback(args)
        err.print(f"[red]error:[/] internal error: {escape(type(exc).__name__)}: {escape(str(exc))[:300]}"
                  f" (traceback in {report}; please report it)", highlight=False)
        return 1


def _journal_path(args: argparse.Namespace) -> Path:
    try:
        return _root(getattr(args, "workspace", None)) / ".overnight" / "journal.db"
    except Exception:
        return Path(".overnight", "journal.db")


def _save_traceback(args: argparse.Namespace) -> Path:
    import tempfile
    import traceback

    text = traceback.format_exc()
    for folder in (_journal_path(args).parent, Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "cli-error.log"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return Path("(nowhere: no writable folder)")


if __name__ == "__main__":
    sys.exit(main())

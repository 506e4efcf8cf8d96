"""The terminal view of a running loop: current experiment and its phase, budget bar, best so far, last results.

It is a loop listener. On a terminal it keeps a live panel (rich.Live) and prints one line per
finished experiment above it; elsewhere (a pipe, CI) it prints the lines only. What the session
already knows (the pooled noise, the incumbent, flags, the latest transfer check, whether runs are
sealed) is read from the journal, so a resumed session shows it from the start, not only once
events bring it.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, assert_never, cast

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .decide import Noise
from .events import (
    Event,
    ExperimentFinished,
    ExperimentStarted,
    Flagged,
    IdeasChanged,
    Message,
    PhaseChanged,
    Progress,
    Rebased,
    RunFinished,
    RunStarted,
    SessionOpened,
    StateChanged,
    Thought,
    TransferChecked,
)
from .journal import Experiment, Journal
from .report import PHASE_LABEL, REPORTED, STATUS_STYLE, UNSEALED, session_facts

_RECENT = 8
_REFRESH_S = 0.25  # the live display's refresh period
_TICK = object()  # no event came: just refresh
_FLAGS = 3  # the newest flags the panel keeps showing


class LiveView:
    def __init__(self, console: Console, agent: str, budget: float,
                 journal: Callable[[], Journal | None] | None = None) -> None:
        self.console = console
        self.agent = agent
        self.budget = budget
        # Where the session's state is read from (the loop's journal, once it has opened it).
        self.journal = journal or (lambda: None)
        self._lock = threading.Lock()
        self.tag = ""
        self.state = "starting"
        self.state_message = ""
        self.clock = ""
        self.current: Experiment | None = None  # the experiment in flight whose run started last: the panel follows it
        # Every experiment announced in flight and its runs planned: with overlap a model is scored while the next
        # run trains, and with slots several train at once.
        self._flying: dict[int, tuple[Experiment, int]] = {}
        self.run_index = 0
        self.runs_planned = 1
        self.run_budget = budget
        self.frame: dict[str, Any] = {}
        self.run_started = 0.0
        self.phase = ""
        self.phase_started = 0.0
        self.recent: list[Experiment] = []
        self.best: Experiment | None = None
        self.noise: Noise | None = None  # pooled over every run of unchanged code in the session
        self.sigma: float | None = None  # noise.sigma, once measured
        self.sealed: bool | None = None
        self.reported: str | None = None  # the metric's name when the script reports it (measure = "reported")
        self.flags: list[str] = []
        self.transfer: dict[str, Any] | None = None
        self.thought = ""
        self._thought_done = False
        self._flagged: list[str] = []  # flags printed, whose duplicate warning message is not printed again
        # Decided experiments announced again (a transfer check's runs): their val_bpb when announced.
        self._remeasured: dict[int, float | None] = {}
        self._ran: set[int] = set()  # experiments in flight a run of which started
        self._live: Live | None = None
        self._pump: threading.Thread | None = None
        self._events: queue.Queue[Event | object | None] = queue.Queue()

    # -- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            # One thread renders: this view's own. Events are queued to it; it prints and refreshes the live
            # display (rich's own refresh thread is off), so no two threads ever hold rich's lock and ours in
            # opposite orders — the deadlock an interleaved print and refresh once caused.
            self._live = Live(get_renderable=self.render, console=self.console, auto_refresh=False, transient=True)
            self._live.__enter__()
            self._pump = threading.Thread(target=self._run_pump, daemon=True, name="overnight-view")
            self._pump.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pump is not None:
            self._events.put(None)
            self._pump.join(timeout=5)
            self._pump = None
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def note(self, text: str) -> None:
        """A warning from outside the loop (the Ctrl-C watcher): shown by the rendering thread."""
        self(Message(level="warning", text=text))

    def _run_pump(self) -> None:
        next_refresh = time.monotonic()
        while True:
            try:
                event = self._events.get(timeout=max(0.0, next_refresh - time.monotonic()))
            except queue.Empty:
                event = _TICK
            if event is None:
                return
            try:
                if event is not _TICK:
                    self._handle(cast(Event, event))
                if time.monotonic() >= next_refresh and self._live is not None:
                    self._live.refresh()
                    next_refresh = time.monotonic() + _REFRESH_S
            except Exception:  # a view that fails must not take the loop with it: go on without the live part
                next_refresh = time.monotonic() + _REFRESH_S

    # -- events -----------------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        if self._pump is not None:
            self._events.put(event)
            return
        with self._lock:  # no terminal: handled at once, in the caller's thread
            self._handle(event)

    def _handle(self, event: Event) -> None:
        match event:
            case SessionOpened():
                self._on_session(event)
            case StateChanged():
                self._on_state(event)
            case Thought():
                self._on_thought(event)
            case Message():
                self._on_message(event)
            case Flagged():
                self._on_flag(event)
            case TransferChecked():
                self.transfer = {"incumbent_id": event.incumbent_id, "ratio": event.ratio, "gain": event.gain,
                                 "gain_at_budget": event.gain_at_budget}
            case ExperimentStarted():
                self._on_experiment_started(event)
            case PhaseChanged(phase=phase, experiment_id=exp_id):
                if self._followed(exp_id) and phase != self.phase:
                    self.phase, self.phase_started = phase, time.monotonic()
            case RunStarted(experiment_id=exp_id):
                if exp_id in self._flying and (self.current is None or exp_id != self.current.id):
                    self._follow(exp_id)  # its run starts: the one training is the panel's
                if self._followed(exp_id):
                    self._on_run_started(event)
            case Progress(frame=frame, experiment_id=exp_id):
                if frame.get("type") == "progress" and self._followed(exp_id):
                    self.frame = frame
            case RunFinished(experiment_id=exp_id):
                if self._followed(exp_id):
                    self.phase = ""
                self._on_run_finished(event)
            case ExperimentFinished():
                self._on_experiment_finished(event)
            case Rebased() | IdeasChanged():
                pass  # the message that follows says what was taken; the queue is `overnight ideas`
            case _:
                assert_never(event)

    def _followed(self, exp_id: int | None) -> bool:
        """Whether an event of this experiment's runs is the panel's: the current one's (or, with none announced, an
        incumbent's re-run's), not another's scored beside it."""
        return exp_id is None or self.current is None or exp_id == self.current.id

    def _refresh(self) -> None:
        """What the session holds now: pooled σ, the incumbent, flags, the latest transfer check, the seal."""
        journal = self.journal()
        if journal is None or not self.tag:
            return
        session = journal.session(self.tag)
        if session is None:
            return
        facts = session_facts(journal, self.tag)
        self.sealed = facts.sealed
        self.reported = facts.metric if facts.reported else None
        self.noise = facts.noise if facts.noise.df >= 1 else None
        self.sigma = self.noise.sigma if self.noise is not None else None
        budget = session.config.get("budget")
        if isinstance(budget, (int, float)) and budget > 0:
            self.budget = float(budget)
        incumbent = journal.incumbent(self.tag)
        if incumbent is not None:
            self.best = incumbent
        self.flags = [str(f["text"]) for f in journal.flags(self.tag)][-_FLAGS:]
        transfers = journal.transfers(self.tag)
        self.transfer = transfers[-1] if transfers else None

    def _on_session(self, event: SessionOpened) -> None:
        tag, resumed, worktree, branch = event.tag, event.resumed, event.worktree, event.branch
        if tag != self.tag:  # a new session (a new budget) starts from nothing
            self.best, self.noise, self.sigma, self.flags, self.transfer, self.recent = None, None, None, [], None, []
        self.tag = tag
        self._refresh()
        verb = "resuming" if resumed else "starting"
        line = (f"[bold]Overnight[/] {verb} session [bold]{escape(tag)}[/] on branch {escape(branch)}  "
                f"(worktree {escape(worktree)})")
        if self.sealed is False:
            line += "  [bold red]UNSEALED[/]"
        if self.reported:
            line += f"  [bold red]REPORTED {escape(self.reported)}[/]"
        self.console.print(line)
        if self.reported:
            self.console.print(f"[red]{escape(REPORTED)}[/]")
        if resumed and (self.best is not None or self.noise is not None):
            best = f"best {self.best.val_bpb:.4f} (#{self.best.id})" if self.best and self.best.val_bpb is not None else ""
            noise = self._noise_text()
            self.console.print(f"[dim]{escape(' · '.join(p for p in (best, noise) if p))}[/]")

    def _on_state(self, event: StateChanged) -> None:
        state, message = event.state, event.message
        if state == "paused" and (self.state, self.state_message) != (state, message):
            self.console.print(f"[yellow bold]paused:[/] {escape(message)}")
        self.state, self.state_message = state, message
        if state in ("paused", "stopped", "preparing"):
            # Nothing in flight (a stop leaves what it cut short unfinished). While the agent proposes, a model may
            # still be scored (overlap): the panel keeps it.
            self.current, self.phase, self._flying, self._ran = None, "", {}, set()
            self._remeasured.clear()
        if state == "proposing":
            self.thought = ""
        if state in ("preparing", "stopped"):
            self.console.print(f"[dim]{escape(message)}[/]" if state == "preparing" else f"[bold]stopped:[/] {escape(message)}")

    def _on_thought(self, event: Thought) -> None:
        # The agent's plan as it streams: the live panel shows its last line; a finished plan is printed
        # once, dimmed, above the panel when no live panel shows it (a pipe, CI).
        self.thought = "" if self._thought_done else self.thought
        self.thought += event.text
        self._thought_done = event.done
        if event.done and self.thought.strip() and self._live is None:
            self.console.print(f"[dim]agent: {escape(' '.join(self.thought.split())[:300])}[/]")

    def _on_message(self, event: Message) -> None:
        level, text = event.level, event.text
        if level == "warning" and text in self._flagged:
            self._flagged.remove(text)  # printed already, as a flag
            return
        style = {"error": "red", "warning": "yellow"}.get(level, "dim")
        self.console.print(f"[{style}]{escape(text)}[/]")

    def _on_flag(self, event: Flagged) -> None:
        text = event.text
        self.flags = [*self.flags, text][-_FLAGS:]
        self._flagged = [*self._flagged, text][-_FLAGS:]
        self.console.print(f"[bold yellow]⚠ flagged for you:[/] [yellow]{escape(text)}[/]")

    def _on_experiment_started(self, event: ExperimentStarted) -> None:
        experiment = event.experiment
        self._flying.pop(experiment.id, None)
        self._flying[experiment.id] = (experiment, event.runs_planned)
        self.state = "running"
        if self.current is None or self.current.id not in self._ran:
            # Announced while none of the others trains yet; a candidate queued beside a training run (re-measured,
            # recovered) waits for its own run to start before the panel follows it.
            self._follow(experiment.id)
        if experiment.is_final:  # a transfer check's run: its val_bpb as it stood, to tell a change from none
            self._remeasured[experiment.id] = experiment.val_bpb
            self.console.print(f"[cyan]▶ #{experiment.id}[/] [dim]again: {escape(experiment.description)}[/]")
        else:
            self.console.print(f"[cyan]▶ #{experiment.id}[/] {escape(experiment.description)}")

    def _follow(self, exp_id: int) -> None:
        """The panel shows this experiment in flight now, from a clean slate."""
        experiment, planned = self._flying.pop(exp_id)
        self._flying[exp_id] = (experiment, planned)
        self.current, self.runs_planned, self.frame, self.phase = experiment, planned, {}, ""

    def _on_run_started(self, event: RunStarted) -> None:
        self._ran.add(event.experiment_id)
        self.run_index, self.frame, self.run_started, self.clock = event.run, {}, time.monotonic(), event.clock
        self.run_budget = event.budget
        if self.phase == "waiting":
            self.phase = ""

    def _on_run_finished(self, event: RunFinished) -> None:
        """Each run's number as it comes: a baseline's three runs take minutes, and the user sees them one by one."""
        out = event.outcome
        if out.status == "interrupted":
            return  # stopped by the user: it re-runs, nothing was measured
        planned = self._flying[event.experiment_id][1] if event.experiment_id in self._flying else self.runs_planned
        of = f"/{planned}" if planned and event.run < planned else ""
        # Under the current experiment's line, another's run (scored beside it) says whose it is.
        whose = "" if self.current is None or event.experiment_id == self.current.id else f"#{event.experiment_id} "
        head = f"  {whose}run {event.run + 1}{of}"
        if out.status == "ok" and out.val_bpb is not None:
            steps = f" · {out.steps:,} steps" if out.steps else ""
            self.console.print(f"[dim]{head}: val {out.val_bpb:.4f} bpb{steps}[/]")
        else:
            why = f" ({out.error.splitlines()[0][:100]})" if out.error else ""
            again = " — runs again" if out.status == "starved" else ""
            self.console.print(f"[dim]{head}: {out.status}{escape(why)}{again}[/]")

    def _on_experiment_finished(self, event: ExperimentFinished) -> None:
        experiment = event.experiment
        self._flying.pop(experiment.id, None)
        self._ran.discard(experiment.id)
        if self.current is None or self.current.id == experiment.id:  # the one scored beside it: it stays current
            ran = [i for i in self._flying if i in self._ran]
            nxt = ran[-1] if ran else next(reversed(self._flying), None)
            if nxt is not None:
                self._follow(nxt)
            else:
                self.current, self.phase, self.frame = None, "", {}
        self.recent = [*(e for e in self.recent if e.id != experiment.id), experiment][-_RECENT:]
        if experiment.status == "keep":
            self.best = experiment
            if experiment.kind == "baseline" and experiment.evidence and self.journal() is None:
                # No journal to pool from: the baseline's own σ, said so (see _noise_text).
                sigma = experiment.evidence.get("sigma")
                self.sigma = float(sigma) if isinstance(sigma, (int, float)) else None
        self._refresh()
        if experiment.id in self._remeasured:
            # A transfer check's run is not one of its runs: its mean is as it was, and the check says the rest.
            if experiment.val_bpb is not None and experiment.val_bpb != self._remeasured.pop(experiment.id):
                self.console.print(f"[dim]  #{experiment.id} re-measured: mean of its runs now {experiment.val_bpb:.4f}[/]")
            return
        self.console.print(_result_line(experiment))

    # -- rendering --------------------------------------------------------------------------------

    def render(self) -> RenderableType:
        parts: list[RenderableType] = [self._header()]
        for flag in reversed(self.flags):
            parts.append(Text(f"⚠ {flag}", style="yellow"))
        if self.current is not None:
            parts.append(self._current())
        elif self.state_message:
            parts.append(Text(self.state_message, style="dim"))
        last = next((line for line in reversed(self.thought.splitlines()) if line.strip()), "")
        if last:
            parts.append(Text(f"agent: {last[:160]}", style="italic dim"))
        if self.recent:
            parts.append(self._recent())
        return Group(*parts)

    def _noise_text(self) -> str:
        if self.noise is not None:
            return f"noise σ {self.noise.sigma:.4f} (pooled: {self.noise.runs} runs, {self.noise.df} df)"
        if self.sigma is not None:
            return f"noise σ {self.sigma:.4f} (baseline)"
        return ""

    def _header(self) -> Text:
        t = Text()
        t.append("Overnight ", style="bold")
        t.append(f"· session {self.tag} · agent {self.agent} · budget {self.budget:g} s")
        if self.clock:
            t.append(f" ({self.clock} clock)")
        noise = self._noise_text()
        if noise:
            t.append(f" · {noise}")
        if self.best is not None and self.best.val_bpb is not None:
            t.append(" · best ")
            t.append(f"{self.best.val_bpb:.4f}", style="bold green")
            t.append(f" (#{self.best.id})")
        if self.transfer is not None:
            ratio = self.transfer.get("ratio")
            t.append(f" · transfer #{self.transfer.get('incumbent_id')}: ")
            if isinstance(ratio, (int, float)):
                t.append(f"{ratio:.0%} of the gain survived", style="green" if ratio >= 0.5 else "yellow")
            else:
                t.append("failed", style="yellow")
        if self.sealed is False:
            t.append(" · ")
            t.append("UNSEALED", style="bold red")
            t.append(f"\n{UNSEALED}", style="red")
        if self.reported:
            t.append(" · ")
            t.append(f"REPORTED {self.reported} (the script's own number)", style="bold red")
        return t

    def _current(self) -> Table:
        assert self.current is not None
        grid = Table.grid(padding=(0, 1))
        grid.add_column()
        grid.add_column()
        elapsed = float(self.frame.get("elapsed", 0.0))
        budget = self.run_budget or self.budget
        grid.add_row(
            Text(f"#{self.current.id}", style="cyan bold"),
            Text(f"{self.current.description}   run {self.run_index + 1}/{self.runs_planned}"),
        )
        done = budget if self.phase in ("exporting", "evaluating") else min(elapsed, budget)
        bar = ProgressBar(total=budget, completed=done, width=40)
        grid.add_row(Text("budget"), Group(bar))
        loss = self.frame.get("train_loss")
        detail = f"{elapsed:5.1f}/{budget:g} s"
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            detail += f" · step {self.frame.get('step', 0)} · loss {loss:.3f} ({loss / math.log(2):.3f} bpb)"
        tps = self.frame.get("tokens_per_s")
        if isinstance(tps, (int, float)):
            detail += f" · {tps:,.0f} tok/s"
        if not self.frame:
            detail = f"{time.monotonic() - self.run_started:.0f} s"
        phase = self.phase or ("" if self.frame else "starting")
        if phase:
            since = f" {time.monotonic() - self.phase_started:.0f} s" if self.phase and phase != "training" else ""
            label = Text(f"{PHASE_LABEL.get(phase, phase)}{since}", style="bold yellow" if phase == "waiting" else "cyan")
            grid.add_row(Text("phase"), label)
        grid.add_row(Text(""), Text(detail, style="dim"))
        return grid

    def _recent(self) -> Table:
        t = Table(title="last results", title_justify="left", box=None, padding=(0, 1))
        for col in ("#", "val_bpb", "holdout", "status", "description"):
            t.add_column(col)
        for e in self.recent:
            t.add_row(str(e.id), f"{e.val_bpb:.4f}" if e.val_bpb is not None else "—",
                      f"{e.holdout_bpb:.4f}" if e.holdout_bpb is not None else "—",
                      Text(e.status, style=STATUS_STYLE.get(e.status, "")), Text(e.description[:70]))
        return t


def _result_line(e: Experiment) -> Text:
    t = Text()
    t.append(f"  #{e.id} ", style="bold")
    t.append(f"{e.status:<8}", style=STATUS_STYLE.get(e.status, ""))
    t.append(f" {e.val_bpb:.4f} " if e.val_bpb is not None else "    —    ")
    t.append(e.description)
    detail = e.error or e.decision_reason
    if detail:
        t.append(f"\n      {detail}", style="dim")
    return t

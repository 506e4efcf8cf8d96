"""The terminal view of a running loop: current experiment, budget bar, best so far, last results.

It is a loop listener. On a terminal it keeps a live panel (rich.Live) and prints one line per
finished experiment above it; elsewhere (a pipe, CI) it prints the lines only.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .journal import Experiment
from .loop import Event
from .report import STATUS_STYLE

_RECENT = 8


class LiveView:
    def __init__(self, console: Console, agent: str, budget: float) -> None:
        self.console = console
        self.agent = agent
        self.budget = budget
        self._lock = threading.Lock()
        self.tag = ""
        self.state = "starting"
        self.state_message = ""
        self.clock = ""
        self.current: Experiment | None = None
        self.run_index = 0
        self.runs_planned = 1
        self.frame: dict[str, Any] = {}
        self.run_started = 0.0
        self.recent: list[Experiment] = []
        self.best: Experiment | None = None
        self.sigma: float | None = None
        self.thought = ""
        self._thought_done = False
        self._live: Live | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            self._live = Live(get_renderable=self.render, console=self.console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    # -- events -----------------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        with self._lock:
            handler = getattr(self, f"_on_{event.kind}", None)
            if handler is not None:
                handler(**event.data)

    def _on_session(self, tag: str, resumed: bool, worktree: str, branch: str) -> None:
        self.tag = tag
        verb = "resuming" if resumed else "starting"
        self.console.print(
            f"[bold]Overnight[/] {verb} session [bold]{escape(tag)}[/] on branch {escape(branch)}  (worktree {escape(worktree)})"
        )

    def _on_state(self, state: str, message: str) -> None:
        if state == "paused" and (self.state, self.state_message) != (state, message):
            self.console.print(f"[yellow bold]paused:[/] {escape(message)}")
        self.state, self.state_message = state, message
        if state == "proposing":
            self.thought = ""
        if state in ("preparing", "stopped"):
            self.console.print(f"[dim]{escape(message)}[/]" if state == "preparing" else f"[bold]stopped:[/] {escape(message)}")

    def _on_thought(self, text: str, done: bool, experiment_id: int | None) -> None:
        # The agent's plan as it streams: the live panel shows its last line; a finished plan is printed
        # once, dimmed, above the panel when no live panel shows it (a pipe, CI).
        self.thought = "" if self._thought_done else self.thought
        self.thought += text
        self._thought_done = done
        if done and self.thought.strip() and self._live is None:
            self.console.print(f"[dim]agent: {escape(' '.join(self.thought.split())[:300])}[/]")

    def _on_message(self, level: str, text: str) -> None:
        style = {"error": "red", "warning": "yellow"}.get(level, "dim")
        self.console.print(f"[{style}]{escape(text)}[/]")

    def _on_experiment_started(self, experiment: Experiment, runs_planned: int) -> None:
        self.current, self.runs_planned, self.state = experiment, runs_planned, "running"
        self.console.print(f"[cyan]▶ #{experiment.id}[/] {escape(experiment.description)}")

    def _on_run_started(self, experiment_id: int, run: int, seed: int, budget: float, clock: str) -> None:
        self.run_index, self.frame, self.run_started, self.clock = run, {}, time.monotonic(), clock

    def _on_progress(self, experiment_id: int, run: int, frame: dict[str, Any]) -> None:
        if frame.get("type") == "progress":
            self.frame = frame

    def _on_run_finished(self, experiment_id: int, run: int, outcome: Any) -> None:
        pass

    def _on_experiment_finished(self, experiment: Experiment) -> None:
        self.current = None
        self.recent = [*self.recent, experiment][-_RECENT:]
        if experiment.status == "keep":
            self.best = experiment
            if experiment.kind == "baseline" and experiment.evidence:
                self.sigma = experiment.evidence.get("sigma")
        self.console.print(_result_line(experiment))

    # -- rendering --------------------------------------------------------------------------------

    def render(self) -> RenderableType:
        with self._lock:
            parts: list[RenderableType] = [self._header()]
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

    def _header(self) -> Text:
        t = Text()
        t.append("Overnight ", style="bold")
        t.append(f"· session {self.tag} · agent {self.agent} · budget {self.budget:g} s")
        if self.clock:
            t.append(f" ({self.clock} clock)")
        if self.sigma is not None:
            t.append(f" · noise σ {self.sigma:.4f}")
        if self.best is not None and self.best.val_bpb is not None:
            t.append(" · best ")
            t.append(f"{self.best.val_bpb:.4f}", style="bold green")
            t.append(f" (#{self.best.id})")
        return t

    def _current(self) -> Table:
        assert self.current is not None
        grid = Table.grid(padding=(0, 1))
        grid.add_column()
        grid.add_column()
        elapsed = float(self.frame.get("elapsed", 0.0))
        grid.add_row(
            Text(f"#{self.current.id}", style="cyan bold"),
            Text(f"{self.current.description}   run {self.run_index + 1}/{self.runs_planned}"),
        )
        bar = ProgressBar(total=self.budget, completed=min(elapsed, self.budget), width=40)
        grid.add_row(Text("budget"), Group(bar))
        loss = self.frame.get("train_loss")
        detail = f"{elapsed:5.1f}/{self.budget:g} s"
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            detail += f" · step {self.frame.get('step', 0)} · loss {loss:.3f} ({loss / math.log(2):.3f} bpb)"
        tps = self.frame.get("tokens_per_s")
        if isinstance(tps, (int, float)):
            detail += f" · {tps:,.0f} tok/s"
        if not self.frame:
            detail = f"starting… {time.monotonic() - self.run_started:.0f} s"
        grid.add_row(Text(""), Text(detail, style="dim"))
        return grid

    def _recent(self) -> Table:
        t = Table(title="last results", title_justify="left", box=None, padding=(0, 1))
        for col in ("#", "val_bpb", "status", "description"):
            t.add_column(col)
        for e in self.recent:
            t.add_row(str(e.id), f"{e.val_bpb:.4f}" if e.val_bpb is not None else "—",
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

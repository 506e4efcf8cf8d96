"""The experiment loop: propose → validate → commit → run → evaluate → decide → record → notify.

One ``Loop`` owns one workspace session (a tag). Every step that changes state is written to the
journal before the next one starts, so the loop can be killed at any moment and resumed: an
experiment that was in flight is re-run from its commit, and the worktree is reset to the last
kept state. Listeners (the terminal view, the daemon's clients) get typed events (events.py); nothing in
here knows who listens.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import math
import os
import queue
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from . import ablate, gauges, harness, ideas, memory, prune, tensorboard_log
from .agents import Agent, AgentError, AgentPaused, Context, Proposal, curves
from .annotate import History
from .commands import Ablate, Ack, Command, Curate, DecideHunks, Pause, Redirect, Resume, SetBudget, Stop, SyncFiles
from .config import Config
from .decide import Noise, Rule, describe, judge, pooled_noise, worse_beyond_noise
from .evaluator import Evaluator, serve_command
from .events import (
    Event,
    ExperimentFinished,
    ExperimentStarted,
    Flagged,
    IdeasChanged,
    Listener,
    LoopState,
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
from .executor import (
    DataPin,
    Harness,
    Limits,
    RunOutcome,
    RunRequest,
    cuda_available,
    gpu_count,
    resolve_clock,
)
from .executors import Executor, ExecutorError, make_executor
from .journal import Experiment, Journal, Run, Session
from .lock import WorkspaceLock
from .noise import session_noise
from .sandbox import Sandbox, SandboxUnavailable, detect
from .supervise import Neighbours, usable_cores
from .threeway import merge
from .trees import Tree, Trees
from .workspace import InvalidProposal, Scratch, Workspace, WorkspaceError, branch_name, check_tag, experiment_ref, git_errors

# A run starved this many times in a row ends its experiment as a timeout: either the machine stays too busy to
# give it its budget, or the code computes more per step than its calibration showed (and only looks starved).
_MAX_STARVED = 3


# After a run starved by the load, the next run waits until other processes keep fewer cores than this busy.
_QUIET_OTHERS = 0.5


def _starved_by_load(outcome: RunOutcome) -> bool:
    """Starved because its speed was measured beside a neighbour (executor.py): never the code's doing."""
    return "speed was measured while the machine was busy" in (outcome.error or "")


def _starved_out(outcome: RunOutcome) -> str:
    return (f"starved {_MAX_STARVED} times in a row; the last: {outcome.error}. Either the machine stays too busy to "
            "measure it (see `overnight status`), or it trained past its budget (more compute per step than calibrated)")


# An experiment interrupted this many times (the daemon killed during its run) is given up as a crash,
# in case it is the experiment itself that takes the machine down.
_MAX_ATTEMPTS = 2
# What a run's outcome and its journal row share: copied field by field.
_RUN_FIELDS = tuple(
    sorted({f.name for f in dataclasses.fields(Run)} & {f.name for f in dataclasses.fields(RunOutcome)})
)
# Settings that change what the metric means: a session is only resumed with the same ones.
_MEASUREMENT_KEYS = ("budget", "clock", "run", "evaluate", "workdir", "measure", "metric", "direction", "editable",
                     "frozen", "threads", "sandbox", "network", "readable")
# What a session recorded before these keys existed measured by: the harness, with no readable folders.
_BEFORE_KEYS: dict[str, Any] = {"measure": "harness", "metric": "val_bpb", "readable": ()}
# Proposals in a row that the idea queue refuses before the loop pauses for the human.
_MAX_REFUSALS = 3
# Between two looks at a busy machine.
_MACHINE_POLL_S = 5.0
# The agent failing this many times in a row (not an invalid proposal: an exception) stops the loop.
_MAX_AGENT_FAILURES = 3


_NEW_BUDGET = "a new budget starts a new session"


class LoopError(RuntimeError):
    """The loop cannot go on (no data, a crashing baseline): the message says what to do."""




_T = TypeVar("_T")


@dataclass(frozen=True)
class _Item:
    """What waits in the owner's inbox: a client's command and its answer's future, or an event to pass on."""

    command: Command | None = None
    future: Future[Ack] | None = None
    call: Callable[[], None] | None = None


@dataclass
class _Candidate:
    """A candidate being measured: the rule decides after each run whether it needs another."""

    exp_id: int
    parent_id: int  # the kept experiment it was made from, and is judged against
    values: list[float] = field(default_factory=list)
    outcomes: list[RunOutcome] = field(default_factory=list)
    running: bool = False
    starved: int = 0  # starved runs in a row (the same run, started again)
    lazy: set[int] = field(default_factory=set)  # its runs scored on val only, their models kept (gauges.py)


class _Either:
    """Set when the loop's stop or this run's own stop (pruning) is set: what a run's executor watches."""

    def __init__(self, loop_stop: threading.Event) -> None:
        self.loop_stop = loop_stop
        self.own = threading.Event()

    def is_set(self) -> bool:
        return self.own.is_set() or self.loop_stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self.own.wait(0.05)
        return True


@dataclass
class _Flight:
    """A run in flight in one slot: a candidate's, or the incumbent's re-run (``cand`` None)."""

    key: int  # unique among the flights: a slot may hold a run training and another's model being scored
    slot: int
    exp_id: int
    k: int
    seed: int
    cand: _Candidate | None
    started: float
    request: RunRequest
    stop: _Either
    # A candidate's first run is watched against the incumbent's curve (prune.py): its curve so far, and why it
    # was stopped early when it was.
    watch: list[tuple[int, float, float]] | None = None
    pruned: dict[str, Any] | None = None
    # Its training loop ended (the model is being exported, then scored): the slot may start the next run meanwhile
    # (_overlaps), whose start-up and training then run beside this one's export and scoring.
    trained: bool = False
    planned: int | None = None  # the step count its calibration fixed (its "calibrated" frame)


@dataclass
class Summary:
    tag: str
    experiments: int
    kept: int
    best: float | None
    stopped: str


def default_tag() -> str:
    return dt.date.today().strftime("%b%d").lower()


def _threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Loop:
    def __init__(self, cfg: Config, agent: Agent, listener: Listener | None = None, resumable: bool = True,
                 executor: Executor | None = None, journal: Journal | None = None) -> None:
        self.cfg = cfg
        # A journal given by the caller (the daemon's: one connection for the loop and the server's reads) is used,
        # not closed; without one the loop opens its own for each run.
        self._given_journal = journal
        # What runs one training run and its evaluation: this machine's executor, a Ray cluster's (executors.py), or
        # a test's fake.
        try:
            self.execute: Executor = executor or make_executor(cfg, lambda: self.session)
        except ExecutorError as exc:
            raise LoopError(str(exc)) from None
        # False where no one can resume a pause (`overnight run` in a terminal, no daemon): an agent's
        # pause that only a human lifts (the spending cap) stops the loop with its reason instead.
        self.resumable = resumable
        self.agent = agent
        self.listener = listener or (lambda event: None)
        self.stop_requested = threading.Event()
        # Commands from other threads (the daemon's clients) and events from the run's and the agent's threads wait
        # here for the loop's own thread, the session's one owner (commands.py).
        self._inbox: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._owner: threading.Thread | None = None
        # Held while a command is carried out by a thread that is not the owner (no loop thread runs), and while the
        # owner hands over: never two owners.
        self._inline = threading.Lock()
        self.paused = False
        self.pause_reason = ""
        self.stop_after = False
        self.state: LoopState = "idle"
        self.state_message = ""
        # The experiments announced in flight (ExperimentStarted, not yet ExperimentFinished), in start order.
        self._announced: dict[int, None] = {}
        self.journal: Journal | None = journal
        self.ws: Workspace | None = None
        self.session: Session | None = None
        self.clock = "steps"
        self.gpu = False
        self._gpu_count = 0
        self.sandbox: Sandbox | None = None
        self.evaluator: Evaluator | None = None
        self.trees: Trees | None = None
        self._lines: History | None = None  # the per-line history the loop persists as it decides (annotate.py)
        # The scheduler's state: runs in flight (by their key), and the candidates still being measured.
        self._flights: dict[int, _Flight] = {}
        self._flight_keys = itertools.count()
        self._need_quiet = False  # a run was starved by the load: the next waits for a quiet machine
        self._startup_s = 2.0  # the last run's start-up (process start to its training loop), in wall seconds
        self._neighbours = Neighbours()  # foreign load since the last look: a look costs no wait between runs
        self._candidates: dict[int, _Candidate] = {}
        # Whether early stopping may act (prune.py), recomputed as candidates are decided.
        self._prune_trust = prune.Trust(False, "no history yet")
        # One warm evaluator per slot beyond the first (runs that land at once are scored at once).
        self._evaluators: dict[int, Evaluator] = {}
        self.data: DataPin | None = None
        self.harness_dir: Path | None = None
        # What Python runs on its own at start-up, as it was when the loop started: a run may not change it.
        self.environment: dict[str, str] = {}
        # The phase of the run in flight (starting, training, exporting, evaluating, waiting for the machine).
        self.phase = ""
        # Set from other threads, acted on between experiments: the user's own edits to sync with, and
        # a new budget (a new session).
        self._sync_paths: set[str] = set()
        self._next_session: tuple[float, str] | None = None
        # Paused because only approved ideas may be drawn and none is: an approval resumes the loop.
        self._waiting_for_ideas = False
        self._ideas_looked = 0.0
        # Proposals the queue did not let run, in a row (an agent that insists pauses the loop).
        self._refusals = 0
        # Runs per version of an ablation asked for (overnight ablate): carried out when nothing is in flight.
        self._ablate_runs: int | None = None
        # The agent's hooks (agents/base.py): its streamed thoughts become events, and the stop flag cuts its waits short.
        agent.on_thought = self._thought
        agent.stop_event = self.stop_requested

    # -- commands: the only way in from other threads ------------------------------------------------

    def submit(self, command: Command, timeout: float = 30.0) -> Ack:
        """Carry out a client's command in the session's owner thread and answer with the state it produced."""
        if threading.current_thread() is self._owner:
            return self._handle(command)
        future: Future[Ack] = Future()
        with self._inline:
            if self._owner is None:  # no loop thread: this thread is the owner for this one command
                return self._handle(command)
            self._inbox.put(_Item(command=command, future=future))
        return future.result(timeout)

    # Thin wrappers for in-process callers (the CLI, tests).
    def stop(self) -> None:
        """Stop as soon as possible: the run in flight is killed and re-run on the next start."""
        self.stop_requested.set()  # at once, without waiting for the owner: a run in flight is killed now
        try:
            self.submit(Stop(now=True), timeout=10.0)
        except TimeoutError:
            pass  # the owner is busy in a step that does not wait; the flag alone ends the session

    def stop_after_current(self) -> None:
        self.submit(Stop(now=False))

    def pause(self, reason: str = "") -> None:
        self.submit(Pause(reason))

    def resume(self) -> None:
        self.submit(Resume())

    def redirect(self, instruction: str) -> int:
        return int(self.submit(Redirect(instruction)).value)

    def set_budget(self, seconds: float, tag: str | None = None) -> str:
        return str(self.submit(SetBudget(seconds, tag)).value)

    def request_sync(self, paths: list[str]) -> None:
        self.submit(SyncFiles(tuple(paths)))

    def _handle(self, command: Command) -> Ack:
        """Carry out one command; runs in the owner thread (or, with no loop thread, the only thread at it)."""
        # A model may be scored while the agent proposes the next (overlap): that is in flight too.
        in_flight = bool(self._announced or self._flights) or self.state in ("running", "baseline", "pausing")
        match command:
            case Pause(reason=reason):
                self.paused, self.pause_reason = True, reason
                self._waiting_for_ideas = False  # the user's own pause: only the user resumes it
                if reason and self.journal is not None and self.session is not None:
                    self.journal.add_feedback(self.session.tag, "pause", reason)
                if in_flight:
                    self._emit(StateChanged(state="pausing", message=f"pausing after {self._in_flight_names()}"))
                else:
                    self._emit(StateChanged(state="paused", message=reason or "paused"))
                return Ack(self.state, self.state_message)
            case Resume():
                was = self.paused
                self.paused = False
                if was and self.state == "pausing":  # not paused yet: back to the run
                    self._emit(StateChanged(state="running", message="resumed"))
                return Ack(self.state, "resuming" if was else "not paused")
            case Stop(now=True):
                self.stop_requested.set()
                self._emit(StateChanged(state="stopping", message="stopping now: the run in flight re-runs on the next start"))
                return Ack(self.state, self.state_message)
            case Stop(now=False):
                self.stop_after = True
                if in_flight:
                    self._emit(StateChanged(state="stopping", message=f"stopping after {self._in_flight_names()}"))
                else:
                    self._emit(Message(level="info", text="stopping"))
                return Ack(self.state, self.state_message or "stopping")
            case Redirect(instruction=text):
                if self.journal is None or self.session is None:
                    raise LoopError("the loop has no session yet: redirect once it has started")
                return Ack(self.state, "noted", self.journal.add_feedback(self.session.tag, "redirect", text))
            case SetBudget(seconds=seconds, tag=tag):
                return Ack(self.state, "new budget", self._set_budget(seconds, tag))
            case SyncFiles(paths=paths):
                self._sync_paths.update(paths)
                if self._owner is None:  # no loop runs: the next start notices the edit (_notice_offline_edits)
                    return Ack(self.state, "taken when the loop starts again")
                return Ack(self.state, "syncing after the experiment in flight")
            case Curate() as c:
                return self._curate(c)
            case Ablate(runs=runs):
                if not 2 <= runs <= 20:
                    raise LoopError("an ablation needs 2 to 20 runs per version")
                self._ablate_runs = runs
                return Ack(self.state, "the ablation runs once the experiments in flight are decided")
            case DecideHunks() as d:
                if self.journal is None:
                    raise LoopError("no journal is open")
                self.journal.decide_hunks(d.tag, d.path, list(d.keys), d.state, suggestion_id=d.suggestion_id,
                                          experiment_ids=list(d.experiment_ids), reason=d.reason)
                return Ack(self.state, f"{d.state} {len(d.keys)} hunk(s)")
        raise AssertionError(f"unknown command {command!r}")

    def _in_flight_names(self) -> str:
        """What a pause or a stop waits for: the experiments announced in flight."""
        return ", ".join(f"#{i}" for i in self._announced) or "the experiment in flight"

    def curate(self, command: Curate) -> str:
        return str(self.submit(command).message)

    def _curate(self, command: Curate) -> Ack:
        """The human shapes the hypothesis queue; a loop waiting for approvals goes on once something is drawable."""
        if self.journal is None or self.session is None:
            raise LoopError("the loop has no session yet: curate its ideas once it has started")
        try:
            message = ideas.curate(self.journal, self.session.tag, command)
        except ideas.CurationError as exc:
            raise LoopError(str(exc)) from None
        self._emit(IdeasChanged(tag=self.session.tag))
        if self._waiting_for_ideas and ideas.drawable(self.journal, self.session.tag, self.cfg.ideas):
            self._waiting_for_ideas, self.paused, self.pause_reason = False, False, ""
            self._emit(StateChanged(state="proposing", message="an idea was approved: going on"))
        return Ack(self.state, message)

    def _approved_meanwhile(self) -> bool:
        """Waiting for approvals: did the CLI approve an idea in the journal directly (no daemon to tell us)? Looked
        at once a second; an approval resumes the loop."""
        if not self._waiting_for_ideas or self.journal is None or self.session is None:
            return False
        now = time.monotonic()
        if now - self._ideas_looked < 1.0:
            return False
        self._ideas_looked = now
        if not ideas.drawable(self.journal, self.session.tag, self.cfg.ideas):
            return False
        self._waiting_for_ideas, self.paused, self.pause_reason = False, False, ""
        self._emit(IdeasChanged(tag=self.session.tag))
        return True

    def _set_budget(self, seconds: float, tag: str | None = None) -> str:
        """A new training budget: results under another budget do not compare, so once the experiment in
        flight is decided a new session starts (new tag, new baseline) from the incumbent's code."""
        if not (math.isfinite(seconds) and 0.1 <= seconds <= 7 * 86400):
            raise LoopError("the budget must be a number of seconds from 0.1 to 604800")
        if tag is None:
            base = self.session.tag if self.session else default_tag()
            tag = f"{base}-{seconds:g}s".replace(".", "_").replace("+", "")
            taken = {s.tag for s in self.journal.sessions()} if self.journal else set()
            n = 2
            while tag in taken:
                tag, n = f"{base}-{seconds:g}s-{n}".replace(".", "_").replace("+", ""), n + 1
        try:
            check_tag(tag)
        except WorkspaceError as exc:
            raise LoopError(str(exc)) from None
        if self.journal is not None and self.journal.session(tag) is not None:
            raise LoopError(f"session {tag!r} exists already: name a new one")
        self._next_session = (float(seconds), tag)
        self._emit(Message(level="info", text=f"budget {seconds:g} s: session {tag} starts after the current experiment"))
        return tag

    # -- the owner's waiting: it carries out commands and passes on events while it waits ------------

    def _post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the owner thread (an event from a run's or the agent's thread): listeners see one thread."""
        if threading.current_thread() is self._owner or self._owner is None:
            fn()
        else:
            self._inbox.put(_Item(call=fn))

    def _drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the first item, then carry out everything waiting."""
        try:
            item = self._inbox.get(timeout=timeout) if timeout > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            self._carry_out(item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _carry_out(self, item: _Item) -> None:
        if item.call is not None:
            item.call()
            return
        assert item.command is not None and item.future is not None
        try:
            item.future.set_result(self._handle(item.command))
        except Exception as exc:  # the client gets the error; the loop goes on
            item.future.set_exception(exc)

    def _await(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` (a training run, the agent's proposal) in a worker thread while the owner keeps carrying out
        commands and passing on events; its result, or its exception."""
        box: Future[_T] = Future()

        def work() -> None:
            try:
                box.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - re-raised in the owner
                box.set_exception(exc)

        threading.Thread(target=work, daemon=True, name="overnight-work").start()
        while not box.done():
            self._drain(0.05)
        self._drain(0)
        return box.result()

    def _wait_until(self, ready: Callable[[], bool], timeout: float | None = None) -> bool:
        """Carry out commands until ``ready()`` or ``timeout`` seconds; whether it became ready."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not ready():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._drain(0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic())))
        return True

    def _wait_while_paused(self) -> None:
        if not self.paused:
            return
        message = self.pause_reason or "paused"
        if (self.state, self.state_message) != ("paused", message):  # the agent's pause announced it already
            self._emit(StateChanged(state="paused", message=message))
        # A new budget while paused switches sessions at once (the new one waits, paused, before its
        # baseline), so the user sees the budget they set rather than the old session until they resume.
        self._wait_until(lambda: not self.paused or self.stop_requested.is_set() or self.stop_after
                         or bool(self._sync_paths) or self._next_session is not None or self._approved_meanwhile())
        if self.paused and self._sync_paths and self._next_session is None:
            self._sync_user_changes()  # the user's edit is synced (and its baseline measured) even while paused
            self._wait_while_paused()

    def run(self, max_experiments: int | None = None, tag: str | None = None, ablate_runs: int | None = None) -> Summary:
        """The loop, until it is stopped or ``max_experiments`` were made; with ``ablate_runs`` the session's kept
        changes are ablated first (``max_experiments=0``: only that)."""
        if ablate_runs is not None:
            self._ablate_runs = ablate_runs
        with self._inline:
            if self._owner is not None:
                raise LoopError("this loop is running already")
            self._owner = threading.current_thread()
        try:
            return self._run_owned(max_experiments, tag)
        finally:
            # Hand over: commands that came in meanwhile are carried out; later ones by their own threads.
            with self._inline:
                self._drain(0)
                self._owner = None

    def _run_owned(self, max_experiments: int | None, tag: str | None) -> Summary:
        lock = WorkspaceLock(self.cfg.state_dir)
        ws = Workspace(self.cfg)  # before the lock: a non-repo gets its clear message first
        self.sandbox = self._open_sandbox()
        with lock:
            self.journal = self._given_journal or Journal(self.cfg.journal_path)
            try:
                self.ws = ws
                start: str | None = None
                while True:
                    try:
                        summary = self._run(max_experiments, tag, start)
                    finally:
                        self._close_evaluator()
                    nxt, self._next_session = self._next_session, None
                    if nxt is None or self.stop_requested.is_set() or summary.stopped != _NEW_BUDGET:
                        return summary
                    budget, tag = nxt
                    # Nothing of the last session goes on in the next (it ended with no run in flight; a candidate
                    # still waiting stays unfinished in the journal, resumed with its session).
                    self._candidates.clear()
                    self._announced.clear()
                    start = self.ws.head()
                    self._carry_user_base(summary.tag, tag)
                    self.cfg = dataclasses.replace(self.cfg, budget=budget)
            finally:
                if self._given_journal is None:
                    self.journal.close()

    # -- the session ------------------------------------------------------------------------------

    def _open_sandbox(self) -> Sandbox:
        """Every run is sealed, or the user said explicitly that it need not be: never silently unsealed."""
        try:
            sandbox = detect(self.cfg.sandbox)
        except SandboxUnavailable as exc:
            raise LoopError(str(exc)) from None
        if not sandbox.sealed:
            self._emit(Message(level="warning",
                               text='runs are NOT sealed (sandbox = "none"): a run can read the validation data, write the '
                                    "journal and reach the network; this session's numbers are marked unsealed"))
        return sandbox

    def _emit(self, event: Event) -> None:
        """Tell the listener; called in the owner thread only (other threads ``_post`` to it)."""
        match event:
            case StateChanged(state=state, message=message):
                self.state, self.state_message = state, message
                if state == "stopped":
                    self._announced.clear()
            case ExperimentStarted(experiment=exp):
                self._announced.pop(exp.id, None)
                self._announced[exp.id] = None
            case ExperimentFinished(experiment=exp):
                self._announced.pop(exp.id, None)
            case _:
                pass
        self.listener(event)

    @property
    def current_id(self) -> int | None:
        """The experiment started last of those announced in flight (one may be scored while the next trains)."""
        ids = list(self._announced)  # one C-level copy: other threads (tests, the terminal) read this too
        return ids[-1] if ids else None

    def _open_session(self, tag: str | None, start: str | None = None) -> Session:
        assert self.journal is not None and self.ws is not None
        if tag is None:  # the latest session the loop made (an imported log is not the loop's to go on with)
            latest = next((s for s in reversed(self.journal.sessions()) if "imported_from" not in s.config), None)
            tag = latest.tag if latest else default_tag()
        session = self.journal.session(check_tag(tag))
        if session is not None and "imported_from" in session.config:
            raise LoopError(f"session {tag!r} was imported from {session.config['imported_from']}: its runs are "
                            "autoresearch's, not the loop's; start a new session with --tag NEW")
        if session is None:
            base = self.ws.open(tag, start)
            config = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self.cfg).items()}
            session = Session(tag, branch_name(tag), base, self.ws.frozen_hashes(), config, time.time())
            # The copy every evaluation of the session runs, taken before the session exists in the journal.
            self.harness_dir = harness.pin(self.cfg.state_dir, tag, self.ws.frozen_sources(), session.frozen_hashes)
            self.journal.create_session(session)
            if self.journal.user_base(tag) is None:
                # What the user's files were when the session began: the base of suggestions and syncs.
                self.journal.set_user_base(tag, {rel: self.ws.read(rel) for rel in self._synced_files()
                                          if (self.ws.wt_path / rel).is_file()})
            self._emit(SessionOpened(tag=tag, resumed=False, worktree=str(self.ws.wt_path), branch=session.branch))
        else:
            self._check_comparable(session)
            self.ws.open(tag)
            try:
                sources = {rel: self.ws.blob(session.base_commit, rel) for rel in session.frozen_hashes}
                self.harness_dir = harness.pin(self.cfg.state_dir, tag, sources, session.frozen_hashes)
            except (harness.HarnessError, git_errors()) as exc:
                raise LoopError(f"session {tag!r} cannot be resumed: its harness cannot be pinned ({exc}). "
                                "Start a new session with --tag NEW.") from None
            incumbent = self.journal.incumbent(tag)
            # Whatever a killed run left in the worktree goes: the journal's last kept commit is the truth.
            self.ws.reset_to(incumbent.commit_sha if incumbent and incumbent.commit_sha else session.base_commit)
            self._emit(SessionOpened(tag=tag, resumed=True, worktree=str(self.ws.wt_path), branch=session.branch))
        return session

    def _check_comparable(self, session: Session) -> None:
        """A resumed session must measure the same way, or its old results mean nothing next to new ones."""
        differ = []
        for key in _MEASUREMENT_KEYS:
            # A session from before a key existed measured as that key's old meaning: the harness, nothing readable.
            before, now = session.config.get(key, _BEFORE_KEYS.get(key)), getattr(self.cfg, key)
            if isinstance(before, list):
                before = tuple(before)
            if before is not None and before != now:
                differ.append(f"{key} was {before!r}, now {now!r}")
        if differ:
            raise LoopError(
                f"session {session.tag!r} measured its experiments differently ({'; '.join(differ)}). "
                f"Results under different settings cannot be compared: start a new session with --tag NEW, "
                f"or resume with the session's settings."
            )

    def _run(self, max_experiments: int | None, tag: str | None, start: str | None = None) -> Summary:
        assert self.journal is not None and self.ws is not None
        self.session = session = self._open_session(tag, start)
        self.clock = resolve_clock(self.cfg.clock)
        self.gpu = cuda_available()
        self._gpu_count = gpu_count() if self.gpu else 0
        self._prepare_data()
        self.environment = harness.environment_fingerprint()
        self.evaluator = self._open_evaluator()
        gauges.discard(self._runs_dir(session.tag))  # models a killed loop kept: their candidates run again
        self.trees = Trees(self.cfg.root, self.cfg.state_dir / "trees" / session.tag,
                           [self.cfg.workdir, *self.cfg.editable, *self.cfg.frozen, self.cfg.program])
        self._lines = History(self.ws.repo, max_versions=64)
        if self._next_session is not None:
            # A new budget asked for before this session's work resumed: its unfinished experiments stay as they are
            # (resumed when it is), none runs at the old budget or lands in the new session.
            return self._summary(_NEW_BUDGET)
        for exp in self.journal.unfinished(session.tag):
            self._recover(exp)
        self._notice_offline_edits()
        if self.stop_requested.is_set():
            return self._summary("stopped by the user")
        self._wait_while_paused()  # a daemon started paused waits here, before any run
        if self.stop_requested.is_set():
            return self._summary("stopped by the user")
        if self._next_session is not None:
            return self._summary(_NEW_BUDGET)
        if self.journal.incumbent(session.tag) is None:
            self._baseline()
        if self.stop_requested.is_set():
            return self._summary("stopped by the user")
        return self._schedule(max_experiments)

    # -- the scheduler: up to `slots` runs at once -----------------------------------------------------

    def _schedule(self, max_experiments: int | None) -> Summary:
        """Keep every slot busy — a candidate's next run when the rule wants to see it again, the incumbent's re-run
        when due, else a new proposal — and decide each candidate as its runs land. With one slot this is the
        sequential loop: a candidate's runs, then the next proposal."""
        created, failures, ended = 0, 0, ""
        self._trust_pruning()
        while True:
            if self.stop_requested.is_set():
                self._settle()
                return self._summary("stopped by the user")
            while (slot := self._free_slot()) is not None and not self.stop_requested.is_set():
                if self._start_next(slot):
                    continue
                if not self._holding() and (due := self._transfer_due()) is not None:
                    # Due after a keep, also the session's last: it runs alone, so no new run starts until those in
                    # flight land (overlapping, one always is).
                    if self._flights:
                        break
                    self._transfer_check(*due)
                    continue
                if self._holding() or ended:
                    break
                if max_experiments is not None and created >= max_experiments:
                    ended = f"reached --max-experiments {max_experiments}"
                    break
                result = self._propose(prefetch=max_experiments is None or created + 1 < max_experiments)
                if result == "started":
                    created, failures = created + 1, 0
                elif result == "failed":
                    failures += 1
                    if failures >= _MAX_AGENT_FAILURES:
                        ended = f"!the agent failed {failures} times in a row"
                    break
                elif result != "held":
                    ended = result
                    break
            if self._flights:
                self._drain(0.1)
                continue
            # Nothing in flight: the session's own steps, one at a time.
            if self._ablate_runs is not None and not self.stop_requested.is_set():
                runs, self._ablate_runs = self._ablate_runs, None
                self._ablate(runs)
                if max_experiments == 0:
                    return self._summary("ablation done")
                if not self.stop_requested.is_set():
                    self.paused, self.pause_reason = True, "ablation done: review its branch before going on"
                continue
            if ended.startswith("!"):
                return self._summary(ended[1:])
            if self.stop_after:
                return self._summary("stopped after the experiment in flight, as asked")
            if self._next_session is not None:
                return self._summary(_NEW_BUDGET)
            if self._sync_paths:
                self._sync_user_changes()
                continue
            if self.paused:
                self._wait_while_paused()
                continue
            if ended and not self._waiting():
                return self._summary(ended)

    def _holding(self) -> bool:
        """No new work starts: a pause, a stop after the experiments in flight, a new session, the user's edit."""
        return bool(self.paused or self.stop_after or self._next_session is not None or self._sync_paths
                    or self._ablate_runs is not None)

    def _free_slot(self) -> int | None:
        """A slot with nothing training in it (and, unless runs overlap, nothing being exported or scored)."""
        overlap = self._overlaps()
        busy = {f.slot for f in self._flights.values() if not (overlap and f.trained)}
        return next((i for i in range(self.cfg.slots) if i not in busy), None)

    def _overlaps(self) -> bool:
        """Whether a slot starts its next run once the last one's training loop ended, while that model is exported
        and scored (config ``overlap``): where the runs' and the evaluations' threads fit the cores together; the
        models are scored by this machine's warm evaluators, one model at a time each (a Ray worker scores its own
        run); not on a GPU, where the evaluation shares the device; and not right after a run starved by the load,
        which runs again alone. Only on the steps clock, which keeps this from deciding anything: a run trains its
        anchored step count however busy the other core is (on the cpu or wall clock it would train fewer steps)."""
        return (self.cfg.overlap and self.clock == "steps" and self.cfg.executor.kind == "local" and not self.gpu
                and self.evaluator is not None
                and not self._need_quiet and (self.cfg.slots + 1) * self._threads() <= usable_cores())

    def _waiting(self) -> list[_Candidate]:
        return [c for c in self._candidates.values() if not c.running]

    def _start_next(self, slot: int) -> bool:
        """Start a waiting candidate's next run, or (unless holding) the incumbent's re-run when due."""
        assert self.journal is not None
        for cand in sorted(self._waiting(), key=lambda c: c.exp_id):
            exp = self.journal.experiment(cand.exp_id)
            assert exp is not None
            self._launch(slot, exp, len(cand.values), cand)
            return True
        if self._holding() or any(f.cand is None for f in self._flights.values()):
            return False
        due = self._rerun_due()
        if due is None:
            return False
        incumbent, k = due
        self._launch(slot, incumbent, k, None)
        return True

    def _propose(self, prefetch: bool) -> str:
        """Ask the agent and start what it proposes: "started" (or refused before any run), "held" (a pause, a stop
        or an outage came first), "failed" (the agent raised), or the reason the session ends."""
        self._emit(StateChanged(state="proposing", message=f"{self.agent.name} is proposing"))
        try:
            ctx = self._drawn_context()
            if ctx is None:
                return "held"  # waiting for the human to approve ideas
            proposal = self._await(partial(self.agent.propose, ctx))
        except AgentPaused as exc:
            if self.stop_requested.is_set():
                return "held"
            if exc.retry_in is None and not self.resumable:
                return "!" + str(exc)
            self._agent_paused(exc)
            return "held"
        except AgentError as exc:
            raise LoopError(str(exc)) from None
        except Exception as exc:  # an agent bug must not kill a night of experiments
            self._emit(Message(level="error", text=f"the agent failed: {exc!r}"))
            return "failed"
        if proposal is None:
            return f"the {self.agent.name} agent has nothing more to propose"
        if self.stop_requested.is_set() or self.stop_after or self._next_session is not None:
            return "held"  # never started: the session ends (or moves on) without it
        # A pause asked for while the agent was thinking holds the proposal until the human resumes.
        while self.paused and not self.stop_requested.is_set():
            if self._flights:
                self._drain(0.1)
            else:
                self._wait_while_paused()
        if self.stop_requested.is_set():
            return "held"
        idea_id, refused = self._admit(proposal)
        if refused:
            return self._refuse(proposal, refused)
        self._refusals = 0
        self._experiment(proposal, prefetch=prefetch, idea_id=idea_id)
        return "started"

    def _drawn_context(self) -> Context | None:
        """The agent's context with the hypothesis queue in it: the agent's new hypotheses queued first. None when
        only approved ideas may be drawn and none is: the loop pauses until the human approves one."""
        assert self.journal is not None and self.session is not None
        ctx = self._context()
        tag = self.session.tag
        drafts = self._await(partial(self.agent.hypothesize, ctx))
        if drafts and ideas.add_drafts(self.journal, tag, drafts, self.cfg.ideas):
            self._emit(IdeasChanged(tag=tag))
        ctx = self._with_queue(ctx)
        queue = ideas.queue(self.journal, tag)
        if self.cfg.ideas == "approved" and not ctx.ideas and queue:
            self._waiting_for_ideas, self.paused = True, True
            self.pause_reason = (f"waiting for you to approve an idea ({len(queue)} in the queue): the sidebar's queue, "
                                 "or `overnight ideas` and `overnight ideas approve ID`")
            return None
        self._waiting_for_ideas = False
        return ctx

    def _with_queue(self, ctx: Context) -> Context:
        """``ctx`` with the hypothesis queue: what may be drawn (best first), the pinned directions, the vetoed."""
        assert self.journal is not None and self.session is not None
        tag = self.session.tag
        pinned = tuple(name for name, state in self.journal.directions(tag).items() if state == "pinned")
        return dataclasses.replace(ctx, ideas=ideas.drawable(self.journal, tag, self.cfg.ideas), pinned=pinned,
                                   vetoed=[i for i in ideas.queue(self.journal, tag) if i.state == "vetoed"])

    def _admit(self, proposal: Proposal) -> tuple[int | None, str]:
        """The queue entry a proposal tests (the hypotheses it states join the queue first), and why the queue does
        not let it run ("" when it does): an idea vetoed or closed meanwhile (the proposal waited through a pause,
        or was prepared before), or — when only approved ideas may be drawn — no approved idea at all."""
        assert self.journal is not None and self.session is not None
        tag = self.session.tag
        if proposal.ideas and ideas.add_drafts(self.journal, tag, list(proposal.ideas), self.cfg.ideas):
            self._emit(IdeasChanged(tag=tag))
        queue = ideas.queue(self.journal, tag)
        entry = next((i for i in queue if (proposal.idea_id is not None and i.id == proposal.idea_id)
                      or (proposal.idea_id is None and proposal.idea_key and i.key == proposal.idea_key)), None)
        if entry is None:
            if self.cfg.ideas == "approved":
                return None, "it tests no approved idea of the queue (ideas = \"approved\")"
            return None, ""  # the agent may try what it has not listed; the human vetoes by idea
        if entry.id not in {i.id for i in ideas.drawable(self.journal, tag, self.cfg.ideas)}:
            why = "vetoed" if entry.state == "vetoed" else (
                "not approved" if entry.state != "approved" else f"in the closed direction {entry.direction!r}")
            return None, f"its idea #{entry.id} is {why}"
        return entry.id, ""

    def _refuse(self, proposal: Proposal, why: str) -> str:
        """A proposal the queue does not allow is not run; the agent is asked again, and after three in a row the
        loop pauses for the human (an agent that keeps proposing it would otherwise spin)."""
        self._refusals += 1
        self._emit(Message(level="warning", text=f"not run: {proposal.description} ({why})"))
        if self._refusals >= _MAX_REFUSALS:
            self._refusals = 0
            self._waiting_for_ideas = self.cfg.ideas == "approved"  # an approval resumes it; else the human does
            self.paused, self.pause_reason = True, (f"the agent keeps proposing what the idea queue does not allow "
                                                    f"({why}): approve ideas, or redirect it, then resume")
        return "held"

    def _plateaus(self, exp: Experiment) -> None:
        """A direction whose tries since its last keep reached plateau_after is flagged, once per plateau."""
        assert self.journal is not None and self.session is not None
        if exp.idea_id is None or self.cfg.plateau_after <= 0:
            return
        for d in ideas.directions(self.journal, self.session.tag, self.cfg.plateau_after, self.cfg.direction):
            if d.plateau and exp.id in d.experiment_ids and not self._plateau_flagged(d):
                self._flag(f"direction {d.name!r} has gone {self.cfg.plateau_after} tries without a keep "
                           f"({d.tries} tries, {d.keeps} kept): a plateau — close it, or redirect the agent")

    def _plateau_flagged(self, d: ideas.Direction) -> bool:
        assert self.journal is not None and self.session is not None
        key = f"plateau:{self.session.tag}:{d.name}"
        last = self.journal.meta(key)
        mark = str(d.keeps)  # one flag per plateau: a keep in the direction starts a new count
        if last == mark:
            return True
        self.journal.set_meta(key, mark)
        return False

    def _launch(self, slot: int, exp: Experiment, k: int, cand: _Candidate | None) -> None:
        """Start one run of ``exp`` in ``slot``; its outcome lands in the owner thread (``_landed``)."""
        assert self.journal is not None
        self._wait_for_machine(exp.id)
        if self.stop_requested.is_set():
            return
        if cand is not None:
            cand.running = True
            if k == 0:
                self.journal.mark_attempt(exp.id)
        seed = exp.id * 100 + k
        request = self._request(exp, k, seed, anchor=self._anchor(exp), slot=slot,
                                lazy=cand is not None and self._lazy_gauges(slot))
        watched = cand is not None and k == 0 and self._prune_trust.enabled
        flight = _Flight(key=next(self._flight_keys), slot=slot, exp_id=exp.id, k=k, seed=seed, cand=cand,
                         started=time.time(), request=request, stop=_Either(self.stop_requested),
                         watch=[] if watched else None)
        self._flights[flight.key] = flight
        if self.state not in ("pausing", "stopping"):  # what the user asked for stays what they see
            self._emit(StateChanged(state="running", message=f"#{exp.id} {exp.description}"))
        self._emit(RunStarted(experiment_id=exp.id, run=k, seed=seed, budget=request.budget, clock=self.clock))

        def work() -> None:
            try:
                outcome = self.execute(request, on_frame=partial(self._on_frame, exp.id, k), stop=flight.stop,
                                       on_phase=partial(self._on_phase, exp.id, k))
            except Exception as exc:  # a bug in a run's supervision is that run's crash, never a dead loop
                outcome = RunOutcome(status="crash", error=f"the run could not be supervised: {exc!r}")
            self._inbox.put(_Item(call=partial(self._landed, flight, outcome)))

        threading.Thread(target=work, daemon=True, name=f"overnight-run-{slot}").start()

    def _landed(self, flight: _Flight, outcome: RunOutcome) -> None:
        """A run ended: record it and, for a candidate, let the rule decide whether it needs another."""
        assert self.journal is not None and self.ws is not None
        self._flights.pop(flight.key, None)
        exp = self.journal.experiment(flight.exp_id)
        assert exp is not None
        if outcome.status == "interrupted" and flight.pruned is not None and not self.stop_requested.is_set():
            assert flight.cand is not None
            self._candidates.pop(exp.id, None)
            outcome.status, outcome.error = "pruned", "stopped early: its training loss trailed the incumbent's"
            self._record_run(exp, flight.k, flight.seed, flight.started, flight.request.log_path, outcome)
            gaps = ", ".join(f"{p['gap']:+.3f} at {p['fraction']:.0%}" for p in flight.pruned["points"])
            self._finish(exp, "pruned", reason=f"pruned: its training loss trailed the incumbent's ({gaps} nats; margin "
                                               f"{flight.pruned['margin']:g})", evidence=flight.pruned, decided_by="pruner")
            return
        if outcome.status == "interrupted":
            if flight.cand is not None:
                self._candidates.pop(exp.id, None)
                self._interrupted(exp)
            return
        self._record_run(exp, flight.k, flight.seed, flight.started, flight.request.log_path, outcome)
        self._emit(RunFinished(experiment_id=exp.id, run=flight.k, outcome=outcome))
        if outcome.startup_seconds is not None and 0 < outcome.startup_seconds < 60:
            self._startup_s = outcome.startup_seconds
        if outcome.data_changed:
            self.stop_requested.set()  # the other runs in flight measure on data that is no longer the session's
            self._candidates.pop(exp.id, None)
            if flight.cand is not None:
                self._finish(exp, "crash", reason="the run changed the harness's data", error=outcome.error)
            raise LoopError(f"{outcome.error}. Rebuild it (python trainer/prepare.py --rebuild) and review #{exp.id}.")
        if outcome.status == "starved":
            cand = flight.cand
            if _starved_by_load(outcome):
                self._need_quiet = True  # not the code's doing: no count toward giving up, a quiet machine next
            elif cand is not None and cand.starved + 1 >= _MAX_STARVED:
                self._candidates.pop(exp.id, None)
                self._finish(exp, "timeout", reason=f"run {flight.k + 1} starved {_MAX_STARVED} times", error=_starved_out(outcome))
                return
            self._emit(Message(level="warning", text=f"#{exp.id} run {flight.k + 1} was starved ({outcome.error}): "
                                                     "not a measurement; it runs again"))
            if cand is not None:
                cand.starved += 0 if _starved_by_load(outcome) else 1
                cand.running = False  # the same run (same seed) starts again
            return
        if flight.cand is not None:
            flight.cand.starved = 0
        if flight.cand is None:  # the incumbent's re-run
            if outcome.status != "ok":
                self._emit(Message(level="warning", text=f"a re-run of the incumbent #{exp.id} failed "
                                                         f"({outcome.status}): {outcome.error}"))
            self._emit(ExperimentFinished(experiment=exp))
            return
        cand = flight.cand
        cand.running = False
        if outcome.status != "ok" or outcome.val_bpb is None:
            self._candidates.pop(exp.id, None)
            if outcome.status == "invalid":
                self._finish(exp, "invalid", reason=f"run {flight.k + 1} refused: {outcome.error}", error=outcome.error,
                             evidence={"check": outcome.refused_check, "checks": outcome.checks})
            else:
                status = "timeout" if outcome.status == "timeout" else "crash"
                self._finish(exp, status, reason=f"run {flight.k + 1} {status}", error=outcome.error)
            return
        cand.values.append(outcome.val_bpb)
        cand.outcomes.append(outcome)
        if flight.request.keep_model is not None:
            cand.lazy.add(len(cand.outcomes) - 1)
        parent = self.journal.experiment(cand.parent_id)
        assert parent is not None
        verdict = judge(self._incumbent_runs(parent), cand.values, self._noise(), self._rule(), self.cfg.direction)
        if verdict.decision == "more":
            self._emit(Message(level="info", text=f"#{exp.id} {verdict.reason}: running it again on another seed"))
            return
        self._candidates.pop(exp.id, None)
        evidence = {**verdict.evidence, "incumbent_id": parent.id}
        if verdict.decision == "keep" and self._needs_gauges(exp, parent, cand):
            self._gauge(flight, exp, parent, cand, verdict.reason, evidence)
            return
        self._decide(exp, parent, cand, verdict.decision, verdict.reason, evidence)

    def _needs_gauges(self, exp: Experiment, parent: Experiment, cand: _Candidate) -> bool:
        """A would-be keep, judged against the incumbent, with runs scored on val only (gauges.py)."""
        assert self.journal is not None and self.session is not None
        incumbent = self.journal.incumbent(self.session.tag)
        return (incumbent is not None and incumbent.id == parent.id
                and any(cand.outcomes[k].holdout_bpb is None for k in cand.lazy))

    def _gauge(self, flight: _Flight, exp: Experiment, parent: Experiment, cand: _Candidate, reason: str,
               evidence: dict[str, Any]) -> None:
        """Score a would-be keep's gauges on its runs' kept models, by the evaluator of the slot it ran in (the
        slot trains beside the scoring only where evaluations overlap training), then decide it (``_gauged``)."""
        evaluator = self._evaluator(flight.slot)
        assert evaluator is not None
        flight.trained = True
        self._flights[flight.key] = flight
        self._phase("evaluating", exp.id, len(cand.outcomes) - 1)
        threads = self._threads()
        models = [(k, gauges.kept_model(self._log_path(exp.id, k))) for k in sorted(cand.lazy)
                  if cand.outcomes[k].holdout_bpb is None]

        def work() -> None:
            scored: dict[int, gauges.Gauges] = {}
            try:
                for k, model in models:
                    scored[k] = gauges.score(evaluator, model, threads, flight.stop)
                    if scored[k].interrupted:
                        break
            except Exception as exc:  # a bug in the scoring is this keep's missing gauges, never a dead loop
                scored = {k: gauges.Gauges(None, None, f"the gauges could not be scored: {exc!r}") for k, _ in models}
            self._inbox.put(_Item(call=partial(self._gauged, flight, exp, parent, cand, reason, evidence, scored)))

        threading.Thread(target=work, daemon=True, name=f"overnight-gauges-{flight.slot}").start()

    def _gauged(self, flight: _Flight, exp: Experiment, parent: Experiment, cand: _Candidate, reason: str,
                evidence: dict[str, Any], scored: dict[int, gauges.Gauges]) -> None:
        assert self.journal is not None
        self._flights.pop(flight.key, None)
        self.phase = ""
        if any(g.interrupted for g in scored.values()):
            self._interrupted(exp)
            return
        for k, g in scored.items():
            outcome = cand.outcomes[k]
            outcome.holdout_bpb, outcome.ood_bpb = g.holdout_bpb, g.ood_bpb
            self.journal.set_run_gauges(exp.id, exp.id * 100 + k, g.holdout_bpb, g.ood_bpb)
        failed = {str(k + 1): g.error for k, g in scored.items() if g.error}
        if failed:
            evidence["gauges_failed"] = failed
        if not any(o.holdout_bpb is not None for o in cand.outcomes):
            # Refuse rather than keep blind: the holdout is what tells a real gain from a fitted validation split.
            self._decide(exp, parent, cand, "held", f"{reason}, but its holdout could not be scored "
                                                    f"({next(iter(failed.values()), 'no model file')}): held for you",
                         evidence)
            return
        self._decide(exp, parent, cand, "keep", reason, evidence)

    def _decide(self, exp: Experiment, parent: Experiment, cand: _Candidate, status: str, reason: str,
                evidence: dict[str, Any]) -> None:
        self._decide_and_record(exp, parent, cand, status, reason, evidence)
        self._trust_pruning()

    def _decide_and_record(self, exp: Experiment, parent: Experiment, cand: _Candidate, status: str, reason: str,
                           evidence: dict[str, Any]) -> None:
        assert self.journal is not None and self.ws is not None and self.session is not None
        outcomes = cand.outcomes
        holdouts = [o.holdout_bpb for o in outcomes if o.holdout_bpb is not None]
        incumbent = self.journal.incumbent(self.session.tag)
        assert incumbent is not None
        if status == "keep" and incumbent.id != parent.id:
            # It won against the code it was made from, but another candidate was kept meanwhile: its change is
            # put onto the new incumbent and measured again there before anything is kept.
            reason = self._remeasure_on(exp, incumbent, reason)
            status = "discard"
        elif status == "keep":
            held = self._holdout_verdict(parent, holdouts, evidence)
            if held:
                status, reason = "held", held
            self._ood_flag(parent, [o.ood_bpb for o in outcomes if o.ood_bpb is not None], evidence)
        flags = sorted({f for o in outcomes for f in o.flags})
        if flags:
            evidence["flags"] = sorted({*flags, *evidence.get("flags", [])})
        if status == "keep":
            assert exp.commit_sha is not None
            self.ws.reset_to(exp.commit_sha)  # the branch advances
        self._finish(exp, status, reason=reason, evidence=evidence, val_bpb=_mean(cand.values),
                     holdout_bpb=_mean(holdouts), ood_bpb=_mean(o.ood_bpb for o in outcomes))
        if status == "keep":
            self._gap_flag()
        elif status == "held":
            self._flag(f"#{exp.id} is held for you: {reason}. `overnight show {exp.id}` has both numbers.")

    def _remeasure_on(self, exp: Experiment, incumbent: Experiment, reason: str) -> str:
        """Put a winner's change onto the incumbent kept meanwhile, as a new candidate; the reason the winner itself
        is not kept."""
        assert self.journal is not None and self.ws is not None and self.session is not None
        assert exp.commit_sha is not None and incumbent.commit_sha is not None
        picked = self.ws.cherry_pick(exp.commit_sha, f"#{exp.id} on #{incumbent.id}: {exp.description}")
        if picked is None:
            return f"{reason}; but #{incumbent.id} was kept meanwhile and this change conflicts with it"
        new_id = self.journal.start_experiment(
            tag=self.session.tag, kind="experiment", parent_commit=incumbent.commit_sha,
            description=f"{exp.description} (re-measured on #{incumbent.id})", agent=exp.agent,
            hypothesis=exp.hypothesis, reasoning=exp.reasoning, meta={**exp.meta, "remeasures": exp.id},
        )
        self._commit_ref(new_id, incumbent.commit_sha, picked)
        self.ws.reset_to(incumbent.commit_sha)
        self._enqueue(new_id, incumbent.id)
        return f"{reason}; #{incumbent.id} was kept meanwhile, so its change is measured again on it as #{new_id}"

    def _enqueue(self, exp_id: int, parent_id: int) -> None:
        assert self.journal is not None
        self._candidates[exp_id] = _Candidate(exp_id=exp_id, parent_id=parent_id)
        exp = self.journal.experiment(exp_id)
        assert exp is not None
        self._emit(ExperimentStarted(experiment=exp, runs_planned=self.cfg.max_runs))

    def _first_curve(self, exp_id: int) -> list[tuple[int, float, float]]:
        assert self.journal is not None
        return next((list(r.curve) for r in self.journal.runs(exp_id) if r.status == "ok" and r.curve), [])

    def _trust_pruning(self) -> None:
        """May pruning act? Replayed on the session's decided candidates (prune.trust); said when it changes."""
        assert self.journal is not None and self.session is not None
        if not self.cfg.prune:
            self._prune_trust = prune.Trust(False, "pruning is off (prune = false)")
            return
        history = []
        by_id = {e.id: e for e in self.journal.experiments(self.session.tag)}
        for exp in by_id.values():
            if exp.kind != "experiment" or exp.status not in ("keep", "discard", "held") or not exp.evidence:
                continue
            parent = exp.evidence.get("incumbent_id")
            curve = self._first_curve(exp.id)
            if isinstance(parent, int) and curve:
                history.append(prune.Decided(kept=exp.status in ("keep", "held"), curve=curve,
                                             incumbent_curve=self._first_curve(parent), budget=self.cfg.budget))
        trusted = prune.trust(history)
        if trusted.enabled != self._prune_trust.enabled:
            self._emit(Message(level="info", text=trusted.reason))
        self._prune_trust = trusted

    def _settle(self) -> None:
        """Wait for the runs in flight to end (a stop kills them); what they leave is recorded."""
        while self._flights:
            self._drain(0.1)

    # -- the user's own changes ------------------------------------------------------------------

    def _synced_files(self) -> list[str]:
        return [*self.cfg.editable, self.cfg.program]

    def _carry_user_base(self, old_tag: str, new_tag: str) -> None:
        """A session continued under a new budget starts from the incumbent's code, but the user's
        version is still the user's: pending suggestions carry over."""
        assert self.journal is not None
        texts = self.journal.user_base(old_tag)
        if texts:
            self.journal.set_user_base(new_tag, texts)
        # The human's curation carries over too: a veto, a closed direction, their own ideas hold in the new session.
        self.journal.copy_ideas(old_tag, new_tag)

    def _notice_offline_edits(self) -> None:
        """The user may have edited their files while no loop ran: sync with them before going on."""
        assert self.session is not None
        assert self.journal is not None
        for rel, text in (self.journal.user_base(self.session.tag) or {}).items():
            try:
                if (self.cfg.root / rel).read_text(encoding="utf-8") != text:
                    self.request_sync([rel])
            except (OSError, UnicodeDecodeError):
                continue

    def _sync_user_changes(self) -> None:
        """Rebase onto the user's own edits: their version wins where it conflicts with the loop's.

        Runs between experiments (the worktree stands on the incumbent). If the code the loop measures
        changed, the baseline is measured again: what was kept before was measured on other code."""
        assert self.journal is not None and self.ws is not None and self.session is not None
        paths, self._sync_paths = sorted(self._sync_paths), set()
        tag = self.session.tag
        base = self.journal.user_base(tag) or {}
        new_base = dict(base)
        changed: list[str] = []
        for rel in self._synced_files():
            disk = self.cfg.root / rel
            try:
                user = disk.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue  # deleted or unreadable: nothing the loop can take from it
            if rel not in base or user == base[rel]:
                continue
            new_base[rel] = user
            loop_text = self.ws.read(rel)
            merged = merge(base[rel], user, loop_text)
            if merged != loop_text:
                self.ws.write(rel, merged)
                changed.append(rel)
        if new_base == base:
            return
        names = ", ".join(changed) or ", ".join(p for p in paths if new_base.get(p) != base.get(p))
        if changed:
            self.ws.commit(f"overnight: rebase onto your change to {names}", changed)
        measured = [rel for rel in changed if rel in self.cfg.editable]
        # The new baseline's row (the code suggestions are made from) before the new user base, so no
        # client ever sees the user's new version against the loop's old code.
        baseline = self._start_baseline(
            f"baseline after your change to {', '.join(measured)} ({self.cfg.baseline_runs} runs)",
            user_base_before=base) if measured else None
        self.journal.set_user_base(tag, new_base)
        self._emit(Rebased(paths=tuple(changed), files=tuple(rel for rel in new_base if new_base[rel] != base.get(rel))))
        if baseline is not None:
            self._emit(Message(level="info",
                               text=f"your change to {', '.join(measured)} is now the base: measuring the baseline again"))
            self._run_baseline(baseline)
        else:
            self._emit(Message(level="info", text=f"took your change to {names}"))

    def _agent_paused(self, exc: AgentPaused) -> None:
        """The agent cannot propose for now: pause with its reason. An outage (retry_in) is probed and the
        loop resumes by itself once the agent's API answers; otherwise the human resumes it."""
        self.paused, self.pause_reason = True, str(exc)
        self._emit(StateChanged(state="paused", message=str(exc)))
        while exc.retry_in is not None:
            if self._wait_until(lambda: not self.paused or self.stop_requested.is_set() or self.stop_after,
                                timeout=exc.retry_in):
                return
            if self._await(self.agent.probe):
                self.paused = False
                self._emit(Message(level="info", text=f"the {self.agent.name} agent can work again: resuming"))
                return

    def _thought(self, text: str, done: bool) -> None:
        """The agent's streamed plan (from the agent's thread): passed on by the owner."""
        self._post(lambda: self._emit(Thought(text=text, done=done, experiment_id=None)))

    def _prefetch(self, parent: str) -> None:
        """Let a pipelining agent prepare the next proposal while this experiment trains, against the
        incumbent (the parent), with this experiment in the history as running. (An agent that does not
        pipeline inherits a prefetch that does nothing.)"""
        assert self.ws is not None
        files = {rel: self.ws.wt.git.show(f"{parent}:{rel}", strip_newline_in_stdout=False) for rel in self.cfg.editable}
        self.agent.prefetch(dataclasses.replace(self._with_queue(self._context()), files=files))

    def _summary(self, stopped: str) -> Summary:
        assert self.journal is not None and self.session is not None
        exps = [e for e in self.journal.experiments(self.session.tag) if e.kind == "experiment"]
        incumbent = self.journal.incumbent(self.session.tag)
        summary = Summary(
            tag=self.session.tag, experiments=len(exps), kept=sum(e.status == "keep" for e in exps),
            best=incumbent.val_bpb if incumbent else None, stopped=stopped,
        )
        if stopped != _NEW_BUDGET:  # a budget change goes straight on to the next session
            self._emit(StateChanged(state="stopped", message=stopped))
        return summary

    def _prepare_data(self) -> None:
        """Build or verify the corpus once per start, with the pinned harness, before any run; pin it for the session."""
        assert self.harness_dir is not None and self.journal is not None and self.session is not None
        if self.cfg.measure == "reported":
            self._prepare_reported()
            return
        self._emit(StateChanged(state="preparing", message="preparing the data (harness: prepare.py)"))
        try:
            pinned = harness.prepare_data(self.harness_dir, self.cfg.workdir, self.cfg.prepare)
        except harness.HarnessError as exc:
            raise LoopError(str(exc)) from None
        if pinned is None:
            raise LoopError("the harness does not report its data (the last line of `prepare.py --json` must be "
                            '{"data_dir", "manifest_sha256", "training_files"}): a sealed run needs to know what '
                            "it may see, and the session needs its data pinned")
        self.data = pinned
        key = f"data_manifest:{self.session.tag}"
        recorded = self.journal.meta(key)
        if recorded is None:
            self.journal.set_meta(key, str(pinned.manifest_sha256))
        elif recorded != pinned.manifest_sha256:
            raise LoopError(
                f"the data in {pinned.directory} is not the data session {self.session.tag!r} was measured on "
                "(its manifest changed): results would not compare. Start a new session with --tag NEW."
            )

    def _prepare_reported(self) -> None:
        """Reported mode: the script reads and scores its own data, so nothing is pinned; the readable folders
        must exist before the first run, and the optional prepare command runs once."""
        assert self.harness_dir is not None
        missing = [p for p in self.cfg.readable if not Path(p).expanduser().is_dir()]
        if missing:
            raise LoopError(f"readable folder {missing[0]} does not exist: prepare the data first (autoresearch: "
                            "`uv run prepare.py`), or remove it from readable in overnight.toml")
        if self.cfg.prepare:
            self._emit(StateChanged(state="preparing", message=f"preparing ({' '.join(self.cfg.prepare)})"))
            try:
                harness.prepare_reported(self.harness_dir, self.cfg.workdir, self.cfg.prepare)
            except harness.HarnessError as exc:
                raise LoopError(str(exc)) from None
        # Runs see no pinned data: the script's own, through the readable folders.
        self.data = DataPin(directory=self.harness_dir, training_files=())

    # -- experiments ------------------------------------------------------------------------------

    def _context(self) -> Context:
        assert self.journal is not None and self.ws is not None and self.session is not None
        incumbent = self.journal.incumbent(self.session.tag)
        assert incumbent is not None
        program_path = self.ws.wt_path / self.cfg.program
        noise = self._noise()
        history = [_for_agent(e) for e in self.journal.experiments(self.session.tag)]
        return Context(
            program=program_path.read_text(encoding="utf-8") if program_path.is_file() else "",
            files=self.ws.editable_files(),
            incumbent=_for_agent(incumbent),
            history=history,
            feedback=self.journal.feedback(self.session.tag),
            sigma=noise.sigma,
            bar=self._bar(noise),
            # What the session learned (regenerated now, the human's edits to its file kept) and how each
            # experiment trained against its incumbent at equal fractions of the budget.
            memory=memory.refresh(self.journal, self.cfg.state_dir, self.session.tag),
            curves=curves.of_experiments(self.journal, history, self.cfg.budget),
        )

    def _rule(self) -> Rule:
        return Rule(alpha=self.cfg.alpha, max_runs=self.cfg.max_runs)

    def _noise(self, column: str = "val_bpb") -> Noise:
        """σ pooled from every run of unchanged code in the session (baselines, kept incumbents, re-runs)."""
        assert self.journal is not None and self.session is not None
        return session_noise(self.journal, self.session.tag, self.cfg.min_sigma, column)

    def _bar(self, noise: Noise) -> float:
        """About how much better than the incumbent (in the metric's units) a candidate must measure to be kept with
        the fewest runs a keep can rest on: for the agent's prompt."""
        if noise.df < 1:
            return 0.0
        rule = self._rule()
        verdict = judge([0.0] * 3, [0.0] * rule.min_runs, noise, rule, "minimize")
        bar = verdict.evidence.get("threshold")
        return float(bar) if isinstance(bar, (int, float)) else 0.0

    def _incumbent_runs(self, incumbent: Experiment, field_name: str = "val_bpb") -> list[float]:
        assert self.journal is not None
        values = [getattr(r, field_name) for r in self.journal.runs(incumbent.id) if r.status == "ok"]
        return [v for v in values if v is not None]

    def _baseline(self, description: str | None = None) -> None:
        self._run_baseline(self._start_baseline(description))

    def _start_baseline(self, description: str | None = None, user_base_before: dict[str, str] | None = None) -> int:
        """The baseline's journal row and ref, for the code at the worktree's head. After a sync of the user's edit,
        the user's version before it is kept with the row: should the baseline fail, the session's branch stays on
        the old incumbent, and the edit must be synced again (not recorded as taken)."""
        assert self.journal is not None and self.ws is not None and self.session is not None
        head = self.ws.head()
        exp_id = self.journal.start_experiment(
            tag=self.session.tag, kind="baseline", parent_commit=head, agent="loop",
            description=description or f"baseline ({self.cfg.baseline_runs} runs: the noise floor)",
            meta={"user_base_before": user_base_before} if user_base_before is not None else None,
        )
        self._commit_ref(exp_id, head, head)
        return exp_id

    def _run_baseline(self, exp_id: int) -> None:
        assert self.journal is not None and self.session is not None
        self.journal.mark_attempt(exp_id)
        exp = self.journal.experiment(exp_id)
        assert exp is not None
        self._emit(StateChanged(state="baseline", message="measuring the noise floor"))
        self._emit(ExperimentStarted(experiment=exp, runs_planned=self.cfg.baseline_runs))
        outcomes: list[RunOutcome] = []
        for k in range(self.cfg.baseline_runs):
            outcome = self._one_run(exp, k)
            if outcome is None:
                return
            if outcome.status != "ok" or outcome.val_bpb is None:
                status = {"timeout": "timeout", "invalid": "invalid"}.get(outcome.status, "crash")
                self._finish(exp, status, reason=f"baseline run {k + 1} failed", error=outcome.error)
                self._untake_user_edit(exp)
                raise LoopError(
                    f"the baseline run failed ({outcome.status}): {outcome.error}\n"
                    f"  log: {self._log_path(exp_id, k)}\n"
                    "  The unmodified training script must run before anything can be compared with it."
                )
            outcomes.append(outcome)
        values = [o.val_bpb for o in outcomes if o.val_bpb is not None]
        noise = pooled_noise([values], self.cfg.min_sigma)
        mean = statistics.fmean(values)
        self._finish(
            exp, "keep",
            reason=f"baseline: {mean:.4f} ± {noise.sigma:.4f} over {len(values)} runs",
            evidence={"runs": values, "mean": mean, "sigma": noise.sigma, "df": noise.df,
                      "raw_stdev": statistics.stdev(values), "min_sigma": self.cfg.min_sigma},
            val_bpb=mean, holdout_bpb=_mean(o.holdout_bpb for o in outcomes), ood_bpb=_mean(o.ood_bpb for o in outcomes),
        )

    def _untake_user_edit(self, exp: Experiment) -> None:
        """A baseline after the user's edit that failed leaves the branch on the old incumbent: the user's version
        before the edit is the synced one again, so the edit is taken (and measured) again on the next start."""
        assert self.journal is not None and self.session is not None
        before = (exp.meta or {}).get("user_base_before")
        if isinstance(before, dict):
            self.journal.set_user_base(self.session.tag, {str(k): str(v) for k, v in before.items()})

    def _experiment(self, proposal: Proposal, prefetch: bool = False, idea_id: int | None = None) -> None:
        assert self.journal is not None and self.ws is not None and self.session is not None
        parent = self.ws.head()
        exp_id = self.journal.start_experiment(
            tag=self.session.tag, kind="experiment", parent_commit=parent, description=proposal.description,
            agent=self.agent.name, hypothesis=proposal.hypothesis, reasoning=proposal.reasoning, meta=proposal.meta,
            idea_id=idea_id,
        )
        try:
            if proposal.invalid:
                raise InvalidProposal(proposal.invalid)
            changed = self.ws.apply(proposal.edit)
        except InvalidProposal as exc:
            exp = self.journal.experiment(exp_id)
            assert exp is not None
            self._finish(exp, "invalid", reason="the proposal was refused before any run", error=str(exc))
            return
        commit = self.ws.commit(f"#{exp_id}: {proposal.description}", changed)
        self._commit_ref(exp_id, parent, commit)
        # The branch stays on the incumbent: runs read the candidate's own commit (trees.py), and several
        # candidates may be in flight at once.
        self.ws.reset_to(parent)
        exp = self.journal.experiment(exp_id)
        assert exp is not None
        incumbent = self.journal.incumbent(self.session.tag)
        assert incumbent is not None
        changed_frozen = self._frozen_changed_at(commit)
        if changed_frozen:
            self._finish(exp, "invalid", reason="frozen harness files differ from the session's",
                         error=f"frozen file(s) changed: {', '.join(changed_frozen)}")
            return
        self._enqueue(exp_id, incumbent.id)
        if prefetch:
            self._prefetch(parent)

    def _commit_ref(self, exp_id: int, parent: str, commit: str) -> None:
        """Make the experiment's commit reachable under its own ref before anything runs."""
        assert self.journal is not None and self.ws is not None and self.session is not None
        ref = experiment_ref(self.session.tag, exp_id)
        self.ws.set_ref(ref, commit)
        self.journal.set_commit(exp_id, commit, ref, self.ws.diff(parent, commit) if parent != commit else "")

    def _frozen_changed_at(self, commit: str) -> list[str]:
        """Frozen files whose content at ``commit`` differs from the session's recorded hashes."""
        assert self.ws is not None and self.session is not None
        changed = []
        for rel, digest in self.session.frozen_hashes.items():
            try:
                if hashlib.sha256(self.ws.blob(commit, rel)).hexdigest() != digest:
                    changed.append(rel)
            except git_errors():
                changed.append(rel)
        return changed

    def _holdout_verdict(self, incumbent: Experiment, holdouts: list[float], evidence: dict[str, Any]) -> str:
        """A keep whose holdout got worse beyond noise is held for the human: val may have been fitted, not learned."""
        inc = self._incumbent_runs(incumbent, "holdout_bpb")
        noise = self._noise("holdout_bpb")
        if not inc or not holdouts or noise.df < 1:
            return ""
        worse, check = worse_beyond_noise(inc, holdouts, noise, self.cfg.direction, self.cfg.alpha)
        evidence["holdout"] = {**check, "worse": worse}
        if not worse:
            return ""
        return (f"val improved but the holdout got worse beyond noise: holdout {statistics.fmean(inc):.4f} → "
                f"{statistics.fmean(holdouts):.4f}")

    def _ood_flag(self, incumbent: Experiment, oods: list[float], evidence: dict[str, Any]) -> None:
        inc = self._incumbent_runs(incumbent, "ood_bpb")
        noise = self._noise("ood_bpb")
        if not inc or not oods or noise.df < 1:
            return
        worse, check = worse_beyond_noise(inc, oods, noise, self.cfg.direction, self.cfg.alpha)
        evidence["ood"] = {**check, "worse": worse}
        if worse:
            evidence.setdefault("flags", []).append("out-of-distribution regression")
            self._flag(f"a keep improved val but the out-of-distribution gauge got worse beyond noise: "
                       f"{statistics.fmean(inc):.4f} → {statistics.fmean(oods):.4f}")

    def _gap_flag(self) -> None:
        """Val keeps improving while holdout does not: the session may be fitting its validation split."""
        assert self.journal is not None and self.session is not None
        baseline = self.journal.baseline(self.session.tag)
        incumbent = self.journal.incumbent(self.session.tag)
        if baseline is None or incumbent is None or baseline.id == incumbent.id:
            return
        b_val, b_hold = self._incumbent_runs(baseline), self._incumbent_runs(baseline, "holdout_bpb")
        i_val, i_hold = self._incumbent_runs(incumbent), self._incumbent_runs(incumbent, "holdout_bpb")
        val_noise, hold_noise = self._noise(), self._noise("holdout_bpb")
        if not (b_val and b_hold and i_val and i_hold) or min(val_noise.df, hold_noise.df) < 1:
            return
        sign = 1.0 if self.cfg.direction == "minimize" else -1.0
        val_gain = sign * (statistics.fmean(b_val) - statistics.fmean(i_val))
        hold_gain = sign * (statistics.fmean(b_hold) - statistics.fmean(i_hold))
        # The gap's change is a difference of four means; its noise combines both splits' σ.
        se = math.sqrt((val_noise.sigma**2 + hold_noise.sigma**2) * (1 / len(b_val) + 1 / len(i_val)))
        if val_gain - hold_gain > 3.0 * se:
            key = f"gap_flag:{self.session.tag}:{incumbent.id}"
            if self.journal.meta(key) is None:
                self.journal.set_meta(key, json.dumps({"val_gain": val_gain, "holdout_gain": hold_gain, "se": se}))
                self._flag(f"val improved by {val_gain:.4f} since the baseline but the holdout only by {hold_gain:.4f} "
                           f"(gap grew {val_gain - hold_gain:.4f}, noise {se:.4f}): the session may be fitting its "
                           "validation split")

    def _flag(self, text: str) -> None:
        """Something the human should look at: the terminal, every client (a notification), the sidebar."""
        assert self.journal is not None and self.session is not None
        self.journal.add_flag(self.session.tag, text)
        self._emit(Flagged(text=text))
        self._emit(Message(level="warning", text=text))

    def _log_path(self, exp_id: int, k: int) -> Path:
        assert self.session is not None
        return self._runs_dir(self.session.tag) / f"{exp_id}-{k}.log"

    def _runs_dir(self, tag: str) -> Path:
        return self.cfg.state_dir / "runs" / tag

    def _after_run(self, tree: Tree) -> str | None:
        """After the training process and before any evaluation: its copy of the experiment's files, the worktree,
        the harness files and the interpreter's start-up files must be as they were. A sealed run cannot touch them;
        this catches an unsealed one."""
        assert self.ws is not None and self.session is not None and self.trees is not None
        copied = self.trees.changed(tree)
        if copied:
            self.trees.drop(tree.commit)  # made again, intact, for the next run that needs it
            return f"the run changed its copy of the experiment's files: {', '.join(copied[:5])}"
        changed = self.ws.changed_frozen(self.session.frozen_hashes)
        if changed:
            return f"the run changed frozen harness file(s): {', '.join(changed)}"
        left = self.ws.dirty()
        if left:
            return f"the run left files in its tree: {', '.join(left[:5])}"
        env = harness.environment_changes(self.environment, harness.environment_fingerprint())
        if env:
            return f"the run changed the Python environment: {', '.join(env[:5])}"
        return None

    def _anchor(self, exp: Experiment) -> tuple[int, float] | None:
        """The step count and step time a run of ``exp`` is anchored to: its own first run's, else (its first run)
        those of the code it was made from — the kept experiment its commit derives from, or for a baseline after
        your edit the incumbent before it. None for the session's first baseline run: it sets the unit."""
        assert self.journal is not None and self.session is not None
        own = _first_calibration(self.journal.runs(exp.id))
        if own is not None:
            return own
        kept = [e for e in self.journal.experiments(self.session.tag) if e.status == "keep" and e.id < exp.id]
        parent = next((e for e in reversed(kept) if e.commit_sha == exp.parent_commit), kept[-1] if kept else None)
        return _first_calibration(self.journal.runs(parent.id)) if parent is not None else None

    def _request(self, exp: Experiment, k: int, seed: int, budget: float | None = None, scale: float = 1.0,
                 log_name: str | None = None, anchor: tuple[int, float] | None = None, slot: int = 0,
                 lazy: bool = False) -> RunRequest:
        assert self.ws is not None and self.session is not None and self.sandbox is not None
        assert self.data is not None and self.harness_dir is not None
        assert self.trees is not None and exp.commit_sha is not None
        log_path = self._log_path(exp.id, k) if log_name is None else self._log_path(exp.id, k).with_name(log_name)
        pinned, hashes = self.harness_dir, dict(self.session.frozen_hashes)
        tree = self.trees.get(exp.commit_sha)
        return RunRequest(
            tree=tree.path, workdir=self.cfg.workdir, command=self.cfg.run, budget=budget or self.cfg.budget,
            clock=self.clock, memory_limit_gb=self.cfg.memory_limit_gb, seed=seed, threads=self._threads(),
            run_dir=log_path.with_suffix(".d"), log_path=log_path, data=self.data,
            harness=Harness(directory=pinned, workdir=self.cfg.workdir, evaluate=tuple(harness.isolated(self.cfg.evaluate)),
                            check=lambda: harness.check(pinned, hashes)),
            sandbox=self.sandbox, network=self.cfg.network, gpu=self.gpu,
            # A run that uses no CPU for this long is hung: long enough for a slow start, short for short budgets.
            limits=Limits(grace=self.cfg.grace, hang_window=max(20.0, min(120.0, 2 * (budget or self.cfg.budget)))),
            scale=scale, after_run=partial(self._after_run, tree), anchor=anchor, evaluator=self._evaluator(slot),
            # One run at a time: any neighbour is foreign (with more slots, the session's own runs are neighbours,
            # and their anchors were measured beside each other).
            load_starves=self.cfg.machine_share > 0 and self.cfg.slots == 1,
            devices=self._devices(slot),
            reported_metric=self.cfg.metric if self.cfg.measure == "reported" else None, readable=self.cfg.readable,
            # A candidate's run: val now, the gauges from its kept model only if a keep needs them (gauges.py).
            splits=gauges.FIRST if lazy else gauges.EVERYTHING, keep_model=gauges.kept_model(log_path) if lazy else None,
        )

    def _lazy_gauges(self, slot: int) -> bool:
        """Whether a candidate's runs leave the gauges for later: the model stays on this machine, and a warm
        evaluator can score it again (a Ray worker's does not come back)."""
        return self.cfg.executor.kind == "local" and self.cfg.measure == "harness" and self._evaluator(slot) is not None

    def _open_evaluator(self) -> Evaluator | None:
        """The session's warm harness (one sandboxed evaluator for all its runs), when the harness has a warm form."""
        assert self.sandbox is not None and self.harness_dir is not None and self.data is not None and self.session
        command = serve_command(self.cfg.evaluate)
        if command is None or self.cfg.measure == "reported":
            return None
        runs = self.cfg.state_dir / "runs" / self.session.tag
        limits = Limits()
        return Evaluator(sandbox=self.sandbox, command=tuple(harness.isolated(command)), harness_dir=self.harness_dir,
                         workdir=self.cfg.workdir, data_dir=self.data.directory, folder=runs / "models",
                         log_path=runs / "evaluator.log", memory_limit_gb=self.cfg.memory_limit_gb,
                         eval_cpu=limits.eval_cpu, hang_window=max(60.0, limits.hang_window))

    def _evaluator(self, slot: int) -> Evaluator | None:
        """The warm evaluator of a slot: the session's for the first, one more for each further slot."""
        if slot == 0 or self.evaluator is None:
            return self.evaluator
        if slot not in self._evaluators:
            ev = self._open_evaluator()
            if ev is None:
                return None
            ev.folder, ev.log_path = ev.folder.with_name(f"models-{slot}"), ev.log_path.with_name(f"evaluator-{slot}.log")
            self._evaluators[slot] = ev
        return self._evaluators[slot]

    def _devices(self, slot: int) -> str | None:
        """The GPU a slot's runs see (CUDA_VISIBLE_DEVICES): one per slot when there are several GPUs."""
        if not self.gpu or self.cfg.slots <= 1:
            return None
        return str(slot % max(1, self._gpu_count))

    def _close_evaluator(self) -> None:
        """The session's warm evaluators and its runs' copies of files go with the session."""
        evaluators = [self.evaluator, *self._evaluators.values()]
        self.evaluator, self._evaluators = None, {}
        for evaluator in evaluators:
            if evaluator is not None:
                evaluator.close()
        trees, self.trees = self.trees, None
        if trees is not None:
            trees.close()

    def _threads(self) -> int:
        return self.cfg.threads or usable_cores()

    def _wait_for_machine(self, experiment_id: int | None = None) -> None:
        """Before a run: wait, saying so, while other processes leave too little of the machine for it. After a run
        was starved by the load (its speed measured beside a neighbour), the next waits for a quiet machine."""
        waiting = False
        while not self.stop_requested.is_set():
            need = self._threads() * self.cfg.machine_share
            if need <= 0:
                return
            if self._need_quiet:
                need = max(need, usable_cores() - _QUIET_OTHERS)
            free = usable_cores() - self._neighbours.cores()
            if free >= need:
                self._need_quiet = False
                if waiting:
                    self._emit(Message(level="info", text="the machine is free again: going on"))
                return
            if not waiting:
                waiting = True
                self._phase("waiting", experiment_id)
                self._emit(Message(level="warning",
                                   text=f"waiting for the machine: other processes leave {max(0.0, free):.1f} of "
                                        f"{usable_cores()} cores free, a run needs {need:g}"))
            self._wait_until(self.stop_requested.is_set, timeout=_MACHINE_POLL_S)

    def _phase(self, phase: str, experiment_id: int | None = None, run: int | None = None) -> None:
        self.phase = phase
        self._emit(PhaseChanged(phase=phase, experiment_id=experiment_id, run=run))

    def _one_run(self, exp: Experiment, k: int, budget: float | None = None, scale: float = 1.0,
                 record: bool = True, log_name: str | None = None,
                 anchor: tuple[int, float] | None | bool = True) -> RunOutcome | None:
        """One training run of an experiment, recorded. None when the user stopped it.

        A starved run (the machine did not give it its budget) is recorded as such, never compared, and run again
        with the same seed once the machine has room."""
        assert self.journal is not None and self.ws is not None and self.session is not None
        seed = exp.id * 100 + k
        starved = 0
        while True:
            self._wait_for_machine(exp.id)
            if self.stop_requested.is_set():
                self._interrupted(exp)
                return None
            # True: the experiment's own anchor (runs at the session's budget); else the one given (or None).
            given = self._anchor(exp) if anchor is True else (anchor or None)
            request = self._request(exp, k, seed, budget, scale, log_name, given)
            self._emit(RunStarted(experiment_id=exp.id, run=k, seed=seed, budget=request.budget, clock=self.clock))
            started = time.time()
            outcome = self._await(partial(self.execute, request, on_frame=partial(self._on_frame, exp.id, k),
                                          stop=self.stop_requested, on_phase=partial(self._on_phase, exp.id, k)))
            self.phase = ""
            if outcome.status == "interrupted":
                self._interrupted(exp)
                return None
            if record:
                self._record_run(exp, k, seed, started, request.log_path, outcome)
            self._emit(RunFinished(experiment_id=exp.id, run=k, outcome=outcome))
            if outcome.data_changed:
                if not exp.is_final:
                    self._finish(exp, "crash", reason="the run changed the harness's data", error=outcome.error)
                raise LoopError(f"{outcome.error}. Rebuild it (python trainer/prepare.py --rebuild) and review #{exp.id}.")
            if outcome.status != "starved":
                return outcome
            if _starved_by_load(outcome):
                self._need_quiet = True
            else:
                starved += 1
            if starved >= _MAX_STARVED:
                return dataclasses.replace(outcome, status="timeout", error=_starved_out(outcome))
            self._emit(Message(level="warning",
                               text=f"#{exp.id} run {k + 1} was starved ({outcome.error}): not a measurement; it runs again"))
            if self.ws.dirty():
                self.ws.reset_to(self.ws.head())

    def _record_run(self, exp: Experiment, k: int, seed: int, started: float, log_path: Path, outcome: RunOutcome) -> None:
        """A finished run into the journal (and, with ``tensorboard = true``, its curve and scores as event files:
        run k+1 of the experiment, replaced when the same run is re-done)."""
        assert self.journal is not None
        measured = {name: getattr(outcome, name) for name in _RUN_FIELDS}
        self.journal.add_run(Run(experiment_id=exp.id, seed=seed, started=started, finished=time.time(),
                                 log_path=str(log_path), **measured))
        if self.cfg.tensorboard:
            tensorboard_log.write_run(
                self.cfg.state_dir, exp.tag, experiment_id=exp.id, run=k + 1, status=outcome.status, curve=outcome.curve,
                val_bpb=outcome.val_bpb, holdout_bpb=outcome.holdout_bpb, ood_bpb=outcome.ood_bpb,
                train_bpb=outcome.train_bpb, steps=outcome.steps, tokens_per_s=outcome.tokens_per_s,
                wall_seconds=outcome.wall_seconds, description=exp.description)

    def _on_frame(self, exp_id: int, k: int, frame: dict[str, Any]) -> None:
        """A progress frame, from the run's reader thread: passed on by the owner."""
        self._post(partial(self._progress, exp_id, k, frame))

    def _progress(self, exp_id: int, k: int, frame: dict[str, Any]) -> None:
        self._emit(Progress(experiment_id=exp_id, run=k, frame=frame))
        flight = self._flight_of(exp_id, k)
        if flight is not None:
            self._nearly_trained(flight, frame)
        if flight is None or flight.watch is None or flight.pruned is not None or frame.get("type") != "progress":
            return
        step, elapsed, loss = frame.get("step"), frame.get("elapsed"), frame.get("train_loss")
        if not (isinstance(step, int) and isinstance(elapsed, (int, float)) and isinstance(loss, (int, float))):
            return
        flight.watch.append((step, float(elapsed), float(loss)))
        assert flight.cand is not None and self.journal is not None
        reference = self._first_curve(flight.cand.parent_id)
        evidence = prune.behind(flight.watch, reference, flight.request.budget) if reference else None
        if evidence is not None:
            flight.pruned = {**evidence, "trust": self._prune_trust.evidence}
            flight.stop.own.set()  # the executor stops it; _landed records why

    def _nearly_trained(self, flight: _Flight, frame: dict[str, Any]) -> None:
        """Overlapping, a slot's next run starts a start-up's length before this one's training loop ends (its step
        count fixed, its pace so far): the next run's interpreter and imports then take no wall time of their own
        either. Its frames come from the code under test, so a lie can only start the next run early, beside it:
        on the steps clock that costs speed, never a number."""
        if frame.get("type") == "calibrated" and isinstance(frame.get("steps"), int) and frame["steps"] > 0:
            flight.planned = frame["steps"]
            return
        step, wall = frame.get("step"), frame.get("wall")
        if (flight.trained or flight.planned is None or frame.get("type") != "progress" or not isinstance(step, int)
                or step <= 0 or not isinstance(wall, (int, float)) or not self._overlaps()):
            return
        remaining = (flight.planned - step) * float(wall) / step
        if remaining <= self._startup_s:
            flight.trained = True

    def _flight_of(self, exp_id: int, k: int) -> _Flight | None:
        return next((f for f in self._flights.values() if f.exp_id == exp_id and f.k == k), None)

    def _on_phase(self, exp_id: int, k: int, phase: str) -> None:
        self._post(partial(self._run_phase, exp_id, k, phase))

    def _run_phase(self, exp_id: int, k: int, phase: str) -> None:
        flight = self._flight_of(exp_id, k)
        if flight is not None and phase in ("exporting", "evaluating"):
            flight.trained = True  # its slot may start the next run (_free_slot)
        self._phase(phase, exp_id, k)

    def _interrupted(self, exp: Experiment) -> None:
        """Not a result: the journal keeps the experiment in flight and the next start re-runs it. (A decided
        experiment interrupted while it was re-measured, the incumbent, stays as it was.)"""
        assert self.journal is not None and self.ws is not None
        if exp.is_final:
            return
        gauges.discard(self._runs_dir(exp.tag), exp.id)  # re-run from scratch on the next start
        self.journal.stopped_by_user(exp.id)
        self._emit(Message(level="info", text=f"#{exp.id} interrupted; it re-runs on the next start"))

    # -- between experiments: the incumbent again, and at scale -------------------------------------

    def _rerun_due(self) -> tuple[Experiment, int] | None:
        """The incumbent and its next run index when a re-run is due: every ``rerun_every`` candidates it runs once
        more, interleaved with them, so its mean and σ are measured under the same conditions as the candidates it
        is compared with, and its run count grows."""
        assert self.journal is not None and self.session is not None
        if self.cfg.rerun_every <= 0:
            return None
        incumbent = self.journal.incumbent(self.session.tag)
        if incumbent is None:
            return None
        runs = self.journal.runs(incumbent.id)
        since = max((r.finished for r in runs), default=incumbent.created)
        measured = [e for e in self.journal.experiments(self.session.tag)
                    if e.kind == "experiment" and e.finished is not None and e.finished > since
                    and e.status in ("keep", "discard", "held")]
        if len(measured) < self.cfg.rerun_every:
            return None
        return incumbent, max((r.seed - incumbent.id * 100 for r in runs), default=-1) + 1

    def _ablate(self, runs: int) -> None:
        """Remove each kept change (or group that must go together) from the final incumbent and measure the code
        without it beside fresh runs of the incumbent, with the keep rule's statistics; then build the branch of
        surviving changes, one commit each with its measured effect (ablate.py)."""
        assert self.journal is not None and self.ws is not None and self.session is not None
        tag = self.session.tag
        final = self.journal.incumbent(tag)
        kept = ablate.kept_changes(self.journal.experiments(tag))
        if final is None or final.commit_sha is None or not kept:
            self._emit(Message(level="info", text="ablation: the session has no kept change to ablate"))
            return
        branch = f"{branch_name(tag)}-final"
        if self.journal.session(f"{tag}-final") is not None:
            self._emit(Message(level="error", text=f"ablation: {branch} is session {tag}-final's branch: rename that session"))
            return
        # Its commits are made in a scratch worktree: the session branch (and the editor's view of it) never moves.
        with Scratch.open(self.ws.repo, self.cfg.state_dir / "ablation-worktree", final.commit_sha) as scratch:
            try:
                groups = ablate.plan(scratch, final.commit_sha, kept)
            except ablate.AblationError as exc:
                self._emit(Message(level="error", text=f"ablation: {exc}"))
                return

        walls = [r.wall_seconds for r in self.journal.runs(final.id) if r.wall_seconds]
        total, seconds = ablate.estimate(len(groups), runs, statistics.fmean(walls) if walls else self.cfg.budget)
        self._emit(Message(level="info", text=f"ablation of {len(kept)} kept change(s) in {len(groups)} group(s): "
                                              f"{total} runs, about {seconds / 60:.0f} min"))
        anchor = self._anchor(final)
        incumbent_k = max((r.seed - final.id * 100 for r in self.journal.runs(final.id)), default=-1) + 1
        outcomes: list[ablate.Outcome] = []
        # Each group is compared with fresh runs of the incumbent made beside its own (interleaved: the same
        # conditions, no drift between them); never with the runs that made it the incumbent, which its selection
        # biased low (it was kept because they measured well) and which would credit every change with that luck.
        for group in groups:
            exp_id = self.journal.start_experiment(
                tag=tag, kind="ablation", parent_commit=final.commit_sha, description=group.describe()[:500],
                agent="ablation", meta={"ablates": group.ids, "final": final.id})
            self._commit_ref(exp_id, final.commit_sha, group.commit)
            exp = self.journal.experiment(exp_id)
            assert exp is not None
            self._emit(ExperimentStarted(experiment=exp, runs_planned=runs))
            values: list[float] = []
            fresh: list[float] = []
            failure = None
            for k in range(runs):
                mine = self._one_run(final, incumbent_k, anchor=anchor)
                incumbent_k += 1
                if mine is None:
                    self._ablation_stopped(exp)
                    return
                if mine.status == "ok" and mine.val_bpb is not None:
                    fresh.append(mine.val_bpb)
                outcome = self._one_run(exp, k, anchor=anchor)
                if outcome is None:
                    self._ablation_stopped(exp)
                    return
                if outcome.status == "ok" and outcome.val_bpb is not None:
                    values.append(outcome.val_bpb)
                else:
                    failure = f"{outcome.status}: {outcome.error}"
                    break
            outcomes.append(self._ablation_decided(exp, group, fresh, values, failure))
        with Scratch.open(self.ws.repo, self.cfg.state_dir / "ablation-worktree", self.session.base_commit) as scratch:
            try:
                placed = ablate.build_branch(scratch, self.session.base_commit,
                                             ablate.chain(self.journal.experiments(tag), self.session.base_commit),
                                             outcomes)
            except ablate.AblationError as exc:
                self._emit(Message(level="error", text=f"ablation: {exc}"))
                return
            last = scratch.head()
        self.ws.set_ref(f"refs/heads/{branch}", last)
        self.journal.set_meta(f"ablation:{tag}", json.dumps({
            "branch": branch, "final": final.id, "head": last, "runs": runs,
            "commits": {str(k): v for k, v in placed.items()}, "ablations": [o.ablation_id for o in outcomes]}))
        droppable = [i for o in outcomes if o.droppable for i in o.group.ids]
        self._emit(Message(level="info", text=f"ablation done: branch {branch} holds {sum(1 for c in placed.values() if c)} "
                                              f"change(s), one commit each; droppable (within noise): "
                                              f"{', '.join(f'#{i}' for i in droppable) or 'none'}"))

    def _ablation_decided(self, exp: Experiment, group: ablate.Group, incumbent: list[float], values: list[float],
                          failure: str | None) -> ablate.Outcome:
        """One group's verdict: worse without it beyond noise (needed), or not (droppable)."""
        assert self.journal is not None
        noise = self._noise()
        if failure is not None:
            reason = f"without it the script fails ({failure}): needed"
            self._finish(exp, "discard", reason=reason, error=failure, decided_by="ablation",
                         evidence={"ablates": group.ids, "droppable": False})
            return ablate.Outcome(group, exp.id, None, None, False, reason)
        if len(incumbent) < 2:
            reason = "the incumbent's fresh runs failed: not measured"
            self._finish(exp, "discard", reason=reason, decided_by="ablation",
                         evidence={"ablates": group.ids, "droppable": False})
            return ablate.Outcome(group, exp.id, None, None, False, reason)
        worse, ev = worse_beyond_noise(incumbent, values, noise, self.cfg.direction, self.cfg.alpha)
        sign = 1.0 if self.cfg.direction == "minimize" else -1.0
        effect = sign * (ev["candidate_mean"] - ev["incumbent_mean"])
        sigmas = effect / noise.sigma if noise.sigma > 0 else None
        reason = (f"removing it makes {self.cfg.metric} worse beyond noise ({describe(ev)}): needed" if worse else
                  f"removing it changes {self.cfg.metric} within noise ({describe(ev)}): droppable")
        self._finish(exp, "discard", reason=reason, decided_by="ablation", val_bpb=ev["candidate_mean"],
                     evidence={**ev, "ablates": group.ids, "droppable": not worse, "effect": effect, "sigmas": sigmas})
        return ablate.Outcome(group, exp.id, effect, sigmas, not worse, reason)

    def _ablation_stopped(self, exp: Experiment) -> None:
        """Stopped by the user mid-ablation: the half-measured version is closed (never resumed as a candidate)."""
        assert self.journal is not None
        self.journal.delete_runs(exp.id)
        self._finish(exp, "discard", reason="the ablation was stopped before this version was measured",
                     decided_by="ablation", evidence={"ablates": exp.meta.get("ablates", []), "droppable": None})

    def _transfer_due(self) -> tuple[Experiment, Experiment] | None:
        """(incumbent, baseline) when a transfer check is due: the ``transfer_every``-th keep is the incumbent and
        has not been checked."""
        assert self.journal is not None and self.session is not None
        if self.cfg.transfer_every <= 0 or self.cfg.measure == "reported":
            return None  # a script that keeps its own time and size cannot be run larger
        tag = self.session.tag
        kept = [e for e in self.journal.experiments(tag) if e.kind == "experiment" and e.status == "keep"]
        incumbent, baseline = self.journal.incumbent(tag), self.journal.baseline(tag)
        if (not kept or incumbent is None or incumbent.id != kept[-1].id or len(kept) % self.cfg.transfer_every
                or baseline is None or baseline.commit_sha is None or incumbent.commit_sha is None
                or any(t["incumbent_id"] == incumbent.id for t in self.journal.transfers(tag))):
            return None
        return incumbent, baseline

    def _transfer_check(self, incumbent: Experiment, baseline: Experiment) -> None:
        """Every ``transfer_every`` keeps (``_transfer_due``): do the session's gains survive at a larger budget and
        model? The incumbent and the baseline's code each run once at ``transfer_budget`` × the budget and
        ``transfer_scale`` (OVERNIGHT_SCALE, which a training script may use to widen and deepen its model)."""
        assert self.journal is not None and self.ws is not None and self.session is not None
        tag = self.session.tag
        budget, scale = self.cfg.budget * self.cfg.transfer_budget, self.cfg.transfer_scale
        self._emit(StateChanged(state="running",
                                message=f"transfer check: baseline vs #{incumbent.id} at {budget:g} s, model scale {scale:g}"))
        values: dict[str, float | None] = {}
        error = None
        anchor: tuple[int, float] | None = None
        try:
            for name, exp in (("baseline", baseline), ("incumbent", incumbent)):
                self._emit(ExperimentStarted(experiment=exp, runs_planned=1))
                outcome = self._one_run(exp, 0, budget=budget, scale=scale, record=False,
                                        log_name=f"transfer-{incumbent.id}-{name}.log", anchor=anchor or False)
                self._emit(ExperimentFinished(experiment=exp))  # measured again, decided as before
                if outcome is not None and outcome.steps_planned and outcome.step_seconds:
                    anchor = (outcome.steps_planned, outcome.step_seconds)
                if outcome is None:
                    return  # stopped: the check runs again on the next start
                values[name] = outcome.val_bpb if outcome.status == "ok" else None
                if outcome.status != "ok":
                    error = f"the {name} run at scale: {outcome.status}: {outcome.error}"
                    break
        finally:
            self.ws.reset_to(str(incumbent.commit_sha))
        sign = 1.0 if self.cfg.direction == "minimize" else -1.0
        base, inc = values.get("baseline"), values.get("incumbent")
        gain = sign * (base - inc) if base is not None and inc is not None else None
        small = sign * (float(baseline.val_bpb) - float(incumbent.val_bpb)) if baseline.val_bpb and incumbent.val_bpb else None
        ratio = gain / small if gain is not None and small else None
        self.journal.add_transfer(tag, incumbent_id=incumbent.id, baseline_id=baseline.id, budget=budget, scale=scale,
                                  baseline_bpb=base, incumbent_bpb=inc, gain=gain, gain_at_budget=small, ratio=ratio,
                                  error=error)
        text = (f"transfer check at {budget:g} s, scale {scale:g}: gain {gain:+.4f} vs {small:+.4f} at the session's budget "
                f"(ratio {ratio:.2f})" if ratio is not None else f"transfer check at {budget:g} s: {error or 'no gain to compare'}")
        self._emit(TransferChecked(incumbent_id=incumbent.id, ratio=ratio, gain=gain, gain_at_budget=small))
        self._emit(Message(level="info", text=text))

    def _finish(self, exp: Experiment, status: str, *, reason: str, error: str | None = None,
                evidence: dict[str, Any] | None = None, val_bpb: float | None = None,
                holdout_bpb: float | None = None, ood_bpb: float | None = None, decided_by: str = "keep rule") -> None:
        assert self.journal is not None
        if status in ("crash", "timeout", "invalid") and decided_by == "keep rule":
            decided_by = "loop"
        self.journal.finish_experiment(
            exp.id, status=status, decided_by=decided_by, reason=reason, evidence=evidence,
            val_bpb=val_bpb, holdout_bpb=holdout_bpb, error=error, ood_bpb=ood_bpb,
        )
        if self.trees is not None:  # a decided experiment's copy goes; the incumbent's and those in use stay
            incumbent = self.journal.incumbent(exp.tag)
            keep = {incumbent.commit_sha} if incumbent and incumbent.commit_sha else set()
            for other in [*self._candidates, *(f.exp_id for f in self._flights.values())]:
                found = self.journal.experiment(other)
                if found is not None and found.commit_sha:
                    keep.add(found.commit_sha)
            self.trees.keep_only(keep)
        gauges.discard(self._runs_dir(exp.tag), exp.id)  # its kept models: decided, nothing will score them now
        if self._lines is not None and self.ws is not None:  # after a keep has moved the branch
            self._lines.record(self.journal, exp.tag, self.ws.head(), self.cfg.editable)
        final = self.journal.experiment(exp.id)
        assert final is not None
        if self.cfg.tensorboard and status == "keep":  # the incumbent over the session, one TensorBoard line
            kept = [(e.id, e.val_bpb) for e in self.journal.experiments(exp.tag) if e.status == "keep" and e.val_bpb is not None]
            tensorboard_log.incumbent_line(self.cfg.state_dir, exp.tag, [(i, float(v)) for i, v in kept if v is not None])
        self._emit(ExperimentFinished(experiment=final))
        if final.idea_id is not None:
            self._emit(IdeasChanged(tag=final.tag))  # its direction's tries, keeps and gain moved
            self._plateaus(final)

    def _recover(self, exp: Experiment) -> None:
        """An experiment left in flight by a kill or a Ctrl-C: run it again from its commit."""
        assert self.journal is not None and self.ws is not None
        if exp.kind == "ablation":  # a measurement of the ablation, not a candidate: ablate again to redo it
            self._ablation_stopped(exp)
            return
        self.journal.delete_runs(exp.id)
        if exp.commit_sha is None:
            self._finish(exp, "crash", reason="interrupted before its commit was made",
                         error="the loop stopped while applying this proposal", decided_by="recovery")
            return
        if exp.attempts >= _MAX_ATTEMPTS:
            self._finish(exp, "crash", reason=f"interrupted {exp.attempts} times",
                         error="the loop stopped during every run of this experiment; given up", decided_by="recovery")
            if exp.kind == "baseline":
                self._untake_user_edit(exp)
            return
        self._emit(Message(level="info", text=f"resuming #{exp.id} ({exp.description}) from its commit"))
        if exp.kind == "baseline":
            self.ws.reset_to(exp.commit_sha)
            self._run_baseline(exp.id)
            return
        kept = [e for e in self.journal.experiments(exp.tag) if e.status == "keep" and e.id < exp.id]
        parent = next((e for e in reversed(kept) if e.commit_sha == exp.parent_commit), kept[-1] if kept else None)
        if parent is None:
            self._finish(exp, "crash", reason="its incumbent is gone", error="no kept experiment to compare it with",
                         decided_by="recovery")
            return
        self._enqueue(exp.id, parent.id)


def _first_calibration(runs: list[Run]) -> tuple[int, float] | None:
    """(steps, step seconds) of the first successful run that reported its calibration."""
    for run in runs:
        if run.status == "ok" and run.steps_planned and run.step_seconds:
            return run.steps_planned, run.step_seconds
    return None


def _mean(values: Any) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


# What the agent must never see: the holdout and out-of-distribution scores (they would become something to fit).
_HIDDEN_EVIDENCE = ("holdout", "ood")


def _for_agent(exp: Experiment) -> Experiment:
    """The experiment as an agent may see it: no holdout, no out-of-distribution score, in no field."""
    evidence = {k: v for k, v in (exp.evidence or {}).items() if not any(h in k for h in _HIDDEN_EVIDENCE)}
    return dataclasses.replace(exp, holdout_bpb=None, ood_bpb=None, evidence=evidence if exp.evidence is not None else None)

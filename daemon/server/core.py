"""The daemon's shared state: one loop (in its own thread), the journal for reads, the attached clients.

Every connection's server object calls into this one core; loop events are translated into
protocol notifications here and broadcast to every authenticated client.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, assert_never

import git

from overnight.protocol import types as t

from .. import ablate, ideas
from ..agents import Agent
from ..annotate import History, Touch, onto_buffer
from ..commands import Ablate, Command, Curate, DecideHunks, Pause
from ..config import Config
from ..events import (
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
from ..executors import Executor
from ..journal import Experiment, Journal
from ..loop import Loop, LoopError
from ..noise import session_noise
from ..suggestions import SuggestionBook
from ..watch import UserFileWatcher
from .in_flight import Flight, InFlight

log = logging.getLogger("overnight.daemon")

Broadcast = Callable[[str, Any], None]
# The most experiments one experiments/list page carries (clients may ask for more; they get this many).
MAX_PAGE = 1000


def summary(exp: Experiment, review: str | None = None) -> t.ExperimentSummary:
    return t.ExperimentSummary(
        id=exp.id, kind=t.ExperimentKind(exp.kind), status=t.Status(exp.status), description=exp.description,
        val_bpb=exp.val_bpb, delta=exp.delta, commit=exp.commit_sha, agent=exp.agent, created=exp.created,
        finished=exp.finished, review=t.Review(review) if review else None,
    )


class DaemonCore:
    def __init__(self, cfg: Config, agent: Agent, max_experiments: int | None = None, tag: str | None = None,
                 executor: Executor | None = None) -> None:
        self.cfg = cfg
        self.agent = agent
        # One journal connection for the daemon: the loop's thread writes through it (the only writer, commands
        # included), the server's threads read through it (the journal serializes statements).
        self.journal = Journal(cfg.journal_path)
        self._executor = executor  # what runs training runs (tests inject a fake)
        self.loop = Loop(cfg, agent, listener=self._on_event, journal=self.journal, executor=executor)
        self.max_experiments = max_experiments
        self.tag = tag
        # Held while a loop thread is started: two clients resuming at once start one loop.
        self._starting = threading.Lock()
        # The experiments in flight, their curves and phases (the loop's thread writes, status readers copy).
        self.flying = InFlight()
        self.error: str | None = None
        self.finished = threading.Event()
        self._broadcast: Broadcast = lambda method, params: None
        self._thread: threading.Thread | None = None
        self._repo = git.Repo(cfg.root)
        self._history = History(self._repo)
        self.suggestions = SuggestionBook(self._repo, self.journal, self._history)
        self._changed: Callable[[], None] = lambda: None
        self.shutdown: Callable[[], None] = lambda: None

    # -- the loop's thread ------------------------------------------------------------------------

    def start(self, broadcast: Broadcast, changed: Callable[[], None] | None = None,
              shutdown: Callable[[], None] | None = None) -> None:
        """Run the loop; ``broadcast`` sends a notification to every client, ``changed`` tells the server
        that what clients derive from the journal (suggestions, lenses, hints) may have changed,
        ``shutdown`` ends the daemon."""
        self._broadcast = broadcast
        self._changed = changed or (lambda: None)
        self.shutdown = shutdown or (lambda: None)
        self.watcher = UserFileWatcher(self.cfg.root, [*self.cfg.editable, self.cfg.program], self._user_changed)
        self.watcher.start()
        self._start_loop(self.max_experiments)

    def _start_loop(self, max_experiments: int | None) -> None:
        self.finished.clear()
        self._thread = threading.Thread(target=self._run, args=(max_experiments,), name="overnight-loop", daemon=True)
        self._thread.start()

    def resume(self, first: Command | None = None) -> None:
        """Resume a paused loop; a loop whose session ended (stopped, or out of proposals) starts again,
        continuing the same session: the daemon outlives its loop. ``first``: a command the loop takes before
        anything else (a new loop gets it before its thread starts)."""
        with self._starting:
            if self._thread is not None and not self._thread.is_alive():
                self.loop = Loop(self.loop.cfg, self.agent, listener=self._on_event, journal=self.journal,
                                 executor=self._executor)
                self.error = None
                if first is not None:
                    self.loop.submit(first)
                self._start_loop(None)
                return
            if first is not None:
                self.loop.submit(first)
        self.loop.resume()

    def set_budget(self, seconds: float, tag: str | None = None) -> str:
        """A new budget opens a new session (``Loop.set_budget``). A loop that has ended (stopped, or its agent had
        nothing more to propose) would never open it: a new loop does, and waits paused before its baseline — a
        budget is not a resume, and nothing runs until the user resumes. The new session's tag."""
        with self._starting:
            if self._thread is None or self._thread.is_alive():
                return self.loop.set_budget(seconds, tag)
            ended = self.loop
            tag = ended.set_budget(seconds, tag)  # named and checked against the ended loop's session
            self.loop = Loop(ended.cfg, self.agent, listener=self._on_event, journal=self.journal,
                             executor=self._executor)
            self.error = None
            reason = ended.pause_reason if ended.paused and ended.pause_reason else (
                f"a new budget ({seconds:g} s): resume to measure its baseline")
            self.loop.submit(Pause(reason))
            self.loop.set_budget(seconds, tag)
            self._start_loop(None)
            return tag

    def decide_hunks(self, command: DecideHunks) -> None:
        """A client's accept/reject, recorded by the session's owner (the loop's thread, or this one when none runs)."""
        self.loop.submit(command)

    def _run(self, max_experiments: int | None) -> None:
        try:
            summary_ = self.loop.run(max_experiments=max_experiments, tag=self.tag)
            log.info("loop stopped: %s", summary_.stopped)
        except LoopError as exc:
            self.error = str(exc)
            log.error("loop stopped: %s", exc)
            self.flying.clear()
            self._notify_state()
        except Exception as exc:  # recorded as state for clients, never a silent dead thread
            self.error = f"the loop failed: {exc!r}"
            log.exception("loop failed")
            self.flying.clear()
            self._notify_state()
        finally:
            self.finished.set()

    def changed(self) -> None:
        self._changed()

    def _user_changed(self, paths: list[str]) -> None:
        """The user's own edit on disk: clients re-anchor now, the loop syncs after the experiment in flight."""
        self.loop.request_sync(paths)
        self._changed()

    def stop(self) -> None:
        if hasattr(self, "watcher"):
            self.watcher.stop()
        self.loop.stop()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.journal.close()

    # -- events → notifications -------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        match event:
            case SessionOpened(tag=tag):
                if tag != self.tag:
                    self.flying.clear()  # what the last session left in flight is not this one's
                self.tag = tag  # a new budget opens a new session: follow it
                self._changed()
            case StateChanged(state=state):
                if state == "stopped":
                    self.flying.clear()  # what a stop cut short is never decided in this loop
                self._notify_state()
            case PhaseChanged(phase=phase, experiment_id=exp_id):
                self.flying.phase(phase, exp_id)
                self._notify_state()
            case Flagged() | TransferChecked():
                self._notify_state()
            case ExperimentStarted(experiment=exp, runs_planned=planned):
                self.flying.started(exp, planned)
                self._broadcast(t.OVERNIGHT_EXPERIMENT_STARTED,
                                t.ExperimentStartedParams(experiment=summary(exp), runs_planned=planned))
                self._notify_state()
            case RunStarted(experiment_id=exp_id, run=run):
                self.flying.run_started(exp_id, run)  # the one training is the current one
                self._notify_state()
            case RunFinished(experiment_id=exp_id):
                self.flying.run_finished(exp_id)
            case Progress():
                self._on_progress(event)
            case ExperimentFinished(experiment=exp):
                self.flying.finished(exp.id)  # another may have started since (overlap, slots): it stays current
                self._broadcast(t.OVERNIGHT_EXPERIMENT_FINISHED, t.ExperimentFinishedParams(experiment=summary(exp)))
                self._notify_state()  # the others in flight, without it
                self._changed()
            case Rebased():
                self._changed()
            case IdeasChanged(tag=tag):
                if tag == self.tag:
                    self._broadcast(t.OVERNIGHT_IDEAS_CHANGED, self.ideas())
            case Thought(text=text, done=done, experiment_id=exp_id):
                self._broadcast(t.OVERNIGHT_AGENT_THOUGHT, t.AgentThought(experiment_id=exp_id, text=text, done=done))
            case Message():
                pass  # the terminal's lines; clients see their effect in the state and experiment notifications
            case _:
                assert_never(event)

    def _on_progress(self, event: Progress) -> None:
        frame = event.frame
        if frame.get("type") != "progress":
            return
        try:
            progress = t.RunProgress(
                experiment_id=event.experiment_id, run=event.run, step=int(frame["step"]),
                elapsed=float(frame["elapsed"]), budget=self.loop.cfg.budget, train_loss=float(frame["train_loss"]),
                tokens_per_s=float(frame["tokens_per_s"]) if "tokens_per_s" in frame else None,
            )
        except (KeyError, TypeError, ValueError):
            return  # a malformed frame is the run's problem, not the clients'
        self.flying.progress(progress)
        self._broadcast(t.OVERNIGHT_PROGRESS, progress)

    def in_flight(self) -> list[t.ExperimentStartedParams]:
        """The experiments in flight, oldest first, as their starts were announced: for a client that attaches
        mid-run."""
        return [t.ExperimentStartedParams(experiment=summary(f.experiment), runs_planned=_planned(f))
                for f in self.flying.all()]

    def _notify_state(self) -> None:
        self._broadcast(t.OVERNIGHT_LOOP_STATE_CHANGED, self.status())

    # -- requests ---------------------------------------------------------------------------------

    def status(self) -> t.LoopStatus:
        state = "error" if self.error else self.loop.state
        n, kept = self.journal.counts(self.tag) if self.tag else (0, 0)
        incumbent = self.journal.incumbent(self.tag) if self.tag else None
        noise = session_noise(self.journal, self.tag, self.cfg.min_sigma) if self.tag else None
        transfers = self.journal.transfers(self.tag) if self.tag else []
        ratio = transfers[-1]["ratio"] if transfers and transfers[-1]["ratio"] is not None else None
        flags = [str(f["text"]) for f in self.journal.flags(self.tag)[-5:]] if self.tag else []
        sandbox = self.loop.sandbox
        current, others = self.flying.snapshot()
        return t.LoopStatus(
            state=t.LoopState(state), tag=self.tag, agent=self.agent.name, budget=self.loop.cfg.budget,
            clock=t.Clock(self.loop.clock if self.tag else self.cfg.clock),
            sigma=noise.sigma if noise is not None and noise.df > 0 else None,
            best=t.BestResult(id=incumbent.id, val_bpb=incumbent.val_bpb)
            if incumbent and incumbent.val_bpb is not None else None,
            current=summary(current.experiment) if current else None,
            live=current.live if current else None,
            experiments=n, kept=kept,
            message=self.error or self.loop.state_message or None, protocol_version=t.PROTOCOL_VERSION,
            phase=current.protocol_phase if current else None,
            sealed=sandbox.sealed if sandbox is not None else self.cfg.sandbox != "none",
            reported_metric=self.loop.cfg.metric if self.loop.cfg.measure == "reported" else None,
            flags=flags or None, transfer_ratio=float(ratio) if ratio is not None else None,
            also_in_flight=[t.FlightSummary(experiment=summary(f.experiment), runs_planned=_planned(f),
                                            phase=f.protocol_phase) for f in others] or None,
        )

    def session_head(self) -> str | None:
        """The commit the session branch points at; None before the session has one. Thread-safe."""
        if not self.tag:
            return None
        # Read from the ref files (loose or packed) only: gitpython's Repo.rev_parse goes through one
        # persistent `git cat-file` pipe per Repo, and the server's threads calling it at once hang or
        # read each other's answers (an editor asks for inlay hints and hovers at the same moment).
        try:
            return str(git.SymbolicReference.dereference_recursive(self._repo, f"refs/heads/overnight/{self.tag}"))
        except ValueError:  # no such branch (yet)
            return None

    def line_history(self, rel: str, buffer_text: str) -> dict[int, list[Touch]]:
        """Per-line experiment history of an editable file, mapped onto the client's buffer."""
        tag = self.tag
        head = self.session_head() if tag and rel in self.cfg.editable else None
        if head is None or not tag:
            return {}
        # Recomputed when the branch or the journal moved, from the history the loop persisted as it decided
        # (annotate.Ledger): only experiments it does not cover yet are read from git.
        history = self._history.cached_lines(head, rel, lambda: self.journal.experiments(tag), self.journal.stamp(tag),
                                             lambda: self.journal.line_history(tag, rel))
        head_lines = self._history.version(head, rel) or []
        return onto_buffer(history, head_lines, buffer_text.splitlines())

    def list_experiments(self, params: t.ListExperimentsParams) -> t.ExperimentList:
        if not self.tag:
            return t.ExperimentList(total=0, items=[])
        statuses = [s.value for s in params.status] if params.status else None
        offset = min(max(0, params.offset), 2**62)  # SQLite integers are 64-bit
        total, page = self.journal.page(self.tag, offset, max(0, min(params.limit, MAX_PAGE)), statuses)
        reviews = self.journal.reviews(self.tag)
        return t.ExperimentList(total=total, items=[summary(e, reviews.get(e.id)) for e in page])

    def ablate(self, runs: int, dry_run: bool = False) -> t.AblateResult:
        """Ablate the session's kept changes after the experiments in flight (the loop runs it, then pauses); a
        finished loop is started again for it."""
        if not self.tag:
            raise LoopError("no session yet: nothing to ablate")
        if self.loop.state == "stopping":  # a loop on its way out would never carry it out
            raise LoopError("the loop is stopping: ask for the ablation once it has stopped")
        changes, total, seconds = ablate.cost(self.journal, self.tag, runs, self.loop.cfg.budget)
        if changes == 0:
            raise LoopError(f"session {self.tag} has no kept change to ablate")
        if dry_run:
            return t.AblateResult(changes=changes, runs=total, seconds=seconds, message=(
                f"an ablation of {changes} kept change(s) would take at most {total} runs, about {seconds / 60:.0f} min"))
        self.resume(first=Ablate(runs))
        return t.AblateResult(changes=changes, runs=total, seconds=seconds, message=(
            f"ablating {changes} kept change(s) after the experiment in flight: at most {total} runs, "
            f"about {seconds / 60:.0f} min; then the loop pauses and overnight/{self.tag}-final holds the result"))

    def ideas(self) -> t.IdeaQueue:
        return idea_queue(self.journal, self.tag, self.loop.cfg)

    def curate(self, command: Curate) -> t.IdeaQueue:
        """A human's change to the queue, carried out by the loop (the journal's one writer); the queue after it."""
        self.loop.curate(command)
        return self.ideas()

    def get_experiment(self, exp_id: int) -> t.ExperimentDetail | None:
        if not 0 < exp_id < 2**63:  # SQLite's integers are 64-bit: an id outside them names no experiment
            return None
        exp = self.journal.experiment(exp_id)
        if exp is None:
            return None
        runs = [
            t.RunSummary(
                run=i, seed=r.seed, status=t.RunStatus(r.status), val_bpb=r.val_bpb, holdout_bpb=r.holdout_bpb,
                steps=r.steps, tokens=r.tokens, tokens_per_s=r.tokens_per_s, n_params=r.n_params, device=r.device,
                peak_mem_mb=r.peak_mem_mb, train_seconds=r.train_seconds, wall_seconds=r.wall_seconds, error=r.error,
                log_tail=r.log_tail, curve=[(int(s), float(e), float(loss)) for s, e, loss in r.curve],
                started=r.started, finished=r.finished, ood_bpb=r.ood_bpb, train_bpb=r.train_bpb,
                steps_planned=r.steps_planned, cpu_seconds=r.cpu_seconds, checks=r.checks or None, flags=r.flags or None,
            )
            for i, r in enumerate(self.journal.runs(exp.id))
        ]
        review = self.journal.reviews(exp.tag).get(exp.id)
        return t.ExperimentDetail(
            experiment=summary(exp, review), hypothesis=exp.hypothesis, reasoning=exp.reasoning, diff=exp.diff,
            decision_reason=exp.decision_reason, decided_by=exp.decided_by, evidence=exp.evidence,
            holdout_bpb=exp.holdout_bpb, ood_bpb=exp.ood_bpb, error=exp.error, runs=runs,
        )


def _planned(f: Flight) -> int:
    """Runs it will take at most: as announced, or more once a confirmation run beyond that started."""
    return max(f.runs_planned, f.live.runs_planned if f.live else 0)


def idea_queue(journal: Journal, tag: str | None, cfg: Config) -> t.IdeaQueue:
    """The session's hypothesis queue, as the protocol (and `overnight ideas`) shows it."""
    if not tag:
        return t.IdeaQueue(policy=cfg.ideas, plateau_after=cfg.plateau_after, ideas=[], directions=[])
    return t.IdeaQueue(
        tag=tag, policy=cfg.ideas, plateau_after=cfg.plateau_after,
        ideas=[t.Idea(id=i.id, direction=i.direction, text=i.text, source=i.source, state=t.IdeaState(i.state),
                      reason=i.reason or None, experiment_ids=list(i.experiment_ids)) for i in ideas.queue(journal, tag)],
        directions=[t.DirectionSummary(name=d.name, state=t.DirectionState(d.state), ideas=d.ideas, tries=d.tries,
                                       keeps=d.keeps, gain=d.gain, plateau=d.plateau)
                    for d in ideas.directions(journal, tag, cfg.plateau_after, cfg.direction)],
    )


async def call_in_thread(fn: Callable[[], Any]) -> Any:
    """Journal reads and loop control never block the event loop other clients share."""
    return await asyncio.get_running_loop().run_in_executor(None, fn)

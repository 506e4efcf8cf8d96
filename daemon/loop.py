"""The experiment loop: propose → validate → commit → run → evaluate → decide → record → notify.

One ``Loop`` owns one workspace session (a tag). Every step that changes state is written to the
journal before the next one starts, so the loop can be killed at any moment and resumed: an
experiment that was in flight is re-run from its commit, and the worktree is reset to the last
kept state. Listeners (the terminal view, later the daemon's clients) get events; nothing in here
knows who listens.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .agents import Agent, AgentError, AgentPaused, Context, Proposal
from .config import Config
from .decide import judge, noise_sigma
from .executor import RunOutcome, RunRequest, execute, resolve_clock, resolve_command
from .journal import Experiment, Journal, Run, Session
from .lock import WorkspaceLock
from .threeway import merge
from .workspace import InvalidProposal, Workspace, WorkspaceError, branch_name, check_tag, experiment_ref

# An experiment interrupted this many times (the daemon killed during its run) is given up as a crash,
# in case it is the experiment itself that takes the machine down.
_MAX_ATTEMPTS = 2
# What a run's outcome and its journal row share: copied field by field.
_RUN_FIELDS = tuple(
    sorted({f.name for f in dataclasses.fields(Run)} & {f.name for f in dataclasses.fields(RunOutcome)})
)
# Settings that change what the metric means: a session is only resumed with the same ones.
_MEASUREMENT_KEYS = ("budget", "clock", "run", "evaluate", "workdir", "metric", "direction", "editable", "frozen",
                     "threads")
# The agent failing this many times in a row (not an invalid proposal: an exception) stops the loop.
_MAX_AGENT_FAILURES = 3


_NEW_BUDGET = "a new budget starts a new session"


class LoopError(RuntimeError):
    """The loop cannot go on (no data, a crashing baseline): the message says what to do."""


@dataclass(frozen=True)
class Event:
    kind: str
    data: dict[str, Any]


Listener = Callable[[Event], None]


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
    def __init__(self, cfg: Config, agent: Agent, listener: Listener | None = None, resumable: bool = True) -> None:
        self.cfg = cfg
        # False where no one can resume a pause (`overnight run` in a terminal, no daemon): an agent's
        # pause that only a human lifts (the spending cap) stops the loop with its reason instead.
        self.resumable = resumable
        self.agent = agent
        self.listener = listener or (lambda event: None)
        self.stop_requested = threading.Event()
        # Control from other threads (the daemon's clients): pause between experiments, stop after one.
        self._control = threading.Condition()
        self.paused = False
        self.pause_reason = ""
        self.stop_after = False
        self.state = "idle"
        self.state_message = ""
        self.journal: Journal | None = None
        self.ws: Workspace | None = None
        self.session: Session | None = None
        self.clock = "cpu"
        self.data_dir: str | None = None
        self.manifest_sha256: str | None = None
        # Set from other threads, acted on between experiments: the user's own edits to sync with, and
        # a new budget (a new session).
        self._sync_paths: set[str] = set()
        self._next_session: tuple[float, str] | None = None
        # The optional hooks an agent may take (agents/base.py): streamed thoughts, the stop flag.
        # (setattr: the Agent protocol does not declare them, so that simple agents need not have them.)
        for hook, value in (("on_thought", self._thought), ("stop_event", self.stop_requested)):
            if hasattr(agent, hook):
                setattr(agent, hook, value)

    # -- public -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop as soon as possible: the run in flight is killed and re-run on the next start."""
        with self._control:
            self.stop_requested.set()
            self._control.notify_all()

    def stop_after_current(self) -> None:
        """Finish the experiment in flight, then stop."""
        with self._control:
            self.stop_after = True
            self._control.notify_all()
        self._emit("message", level="info", text="stopping after the current experiment")

    def pause(self, reason: str = "") -> None:
        """Pause before the next proposal; the experiment in flight finishes. The reason goes to the agent."""
        with self._control:
            self.paused, self.pause_reason = True, reason
        if reason and self.journal is not None and self.session is not None:
            self.journal.add_feedback(self.session.tag, "pause", reason)
        if self.state in ("proposing", "idle"):
            self._emit("state", state="paused", message=reason or "paused")
        else:
            self._emit("message", level="info", text="pausing after the current experiment")

    def resume(self) -> None:
        with self._control:
            self.paused = False
            self._control.notify_all()

    def redirect(self, instruction: str) -> int:
        """The human's instruction for the agent, in its context from the next proposal on."""
        if self.journal is None or self.session is None:
            raise LoopError("the loop has no session yet: redirect once it has started")
        return self.journal.add_feedback(self.session.tag, "redirect", instruction)

    def set_budget(self, seconds: float, tag: str | None = None) -> str:
        """A new training budget: results under another budget do not compare, so once the experiment in
        flight is decided a new session starts (new tag, new baseline) from the incumbent's code."""
        if not seconds > 0:
            raise ValueError("the budget must be a positive number of seconds")
        if tag is None:
            base = self.session.tag if self.session else default_tag()
            tag = f"{base}-{seconds:g}s".replace(".", "_")
            taken = {s.tag for s in self.journal.sessions()} if self.journal else set()
            n = 2
            while tag in taken:
                tag, n = f"{base}-{seconds:g}s-{n}".replace(".", "_"), n + 1
        else:
            try:
                check_tag(tag)
            except WorkspaceError as exc:
                raise LoopError(str(exc)) from None
            if self.journal is not None and self.journal.session(tag) is not None:
                raise LoopError(f"session {tag!r} exists already: name a new one")
        with self._control:
            self._next_session = (float(seconds), tag)
            self._control.notify_all()
        self._emit("message", level="info", text=f"budget {seconds:g} s: session {tag} starts after the current experiment")
        return tag

    def request_sync(self, paths: list[str]) -> None:
        """The user changed these files themselves (on disk): rebase onto them after the experiment in flight."""
        with self._control:
            self._sync_paths.update(paths)
            self._control.notify_all()

    def _wait_while_paused(self) -> None:
        with self._control:
            if not self.paused:
                return
        message = self.pause_reason or "paused"
        if (self.state, self.state_message) != ("paused", message):  # the agent's pause announced it already
            self._emit("state", state="paused", message=message)
        # A new budget while paused switches sessions at once (the new one waits, paused, before its
        # baseline), so the user sees the budget they set rather than the old session until they resume.
        with self._control:
            self._control.wait_for(lambda: not self.paused or self.stop_requested.is_set() or self.stop_after
                                   or self._sync_paths or self._next_session is not None)
        if self.paused and self._sync_paths and self._next_session is None:
            self._sync_user_changes()  # the user's edit is synced (and its baseline measured) even while paused
            self._wait_while_paused()

    def run(self, max_experiments: int | None = None, tag: str | None = None) -> Summary:
        lock = WorkspaceLock(self.cfg.state_dir)
        ws = Workspace(self.cfg)  # before the lock: a non-repo gets its clear message first
        with lock:
            self.journal = Journal(self.cfg.journal_path)
            try:
                self.ws = ws
                start: str | None = None
                while True:
                    summary = self._run(max_experiments, tag, start)
                    with self._control:
                        nxt, self._next_session = self._next_session, None
                    if nxt is None or self.stop_requested.is_set() or summary.stopped != _NEW_BUDGET:
                        return summary
                    budget, tag = nxt
                    start = self.ws.head()
                    self._carry_user_base(summary.tag, tag)
                    self.cfg = dataclasses.replace(self.cfg, budget=budget)
            finally:
                self.journal.close()

    # -- the session ------------------------------------------------------------------------------

    def _emit(self, kind: str, **data: Any) -> None:
        if kind == "state":
            self.state, self.state_message = data["state"], data.get("message", "")
        self.listener(Event(kind, data))

    def _open_session(self, tag: str | None, start: str | None = None) -> Session:
        assert self.journal is not None and self.ws is not None
        if tag is None:
            latest = self.journal.latest_session()
            tag = latest.tag if latest else default_tag()
        session = self.journal.session(check_tag(tag))
        if session is None:
            base = self.ws.open(tag, start)
            config = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self.cfg).items()}
            session = Session(tag, branch_name(tag), base, self.ws.frozen_hashes(), config, time.time())
            self.journal.create_session(session)
            if self.journal.user_base(tag) is None:
                # What the user's files were when the session began: the base of suggestions and syncs.
                self.journal.set_user_base(tag, {rel: self.ws.read(rel) for rel in self._synced_files()
                                          if (self.ws.wt_path / rel).is_file()})
            self._emit("session", tag=tag, resumed=False, worktree=str(self.ws.wt_path), branch=session.branch)
        else:
            self._check_comparable(session)
            self.ws.open(tag)
            incumbent = self.journal.incumbent(tag)
            # Whatever a killed run left in the worktree goes: the journal's last kept commit is the truth.
            self.ws.reset_to(incumbent.commit_sha if incumbent and incumbent.commit_sha else session.base_commit)
            self._emit("session", tag=tag, resumed=True, worktree=str(self.ws.wt_path), branch=session.branch)
        return session

    def _check_comparable(self, session: Session) -> None:
        """A resumed session must measure the same way, or its old results mean nothing next to new ones."""
        differ = []
        for key in _MEASUREMENT_KEYS:
            before, now = session.config.get(key), getattr(self.cfg, key)
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
        self._prepare_data()
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
        done = 0
        agent_failures = 0
        while max_experiments is None or done < max_experiments:
            self._wait_while_paused()
            if self.stop_requested.is_set():
                return self._summary("stopped by the user")
            if self.stop_after:
                return self._summary("stopped after the experiment in flight, as asked")
            if self._next_session is not None:
                return self._summary(_NEW_BUDGET)
            if self._sync_paths:
                self._sync_user_changes()
                continue
            self._emit("state", state="proposing", message=f"{self.agent.name} is proposing")
            try:
                proposal = self.agent.propose(self._context())
            except AgentPaused as exc:
                if self.stop_requested.is_set():
                    return self._summary("stopped by the user")
                if exc.retry_in is None and not self.resumable:
                    return self._summary(str(exc))
                self._agent_paused(exc)
                continue
            except AgentError as exc:
                raise LoopError(str(exc)) from None
            except Exception as exc:  # an agent bug must not kill a night of experiments
                agent_failures += 1
                self._emit("message", level="error", text=f"the agent failed: {exc!r}")
                if agent_failures >= _MAX_AGENT_FAILURES:
                    return self._summary(f"the agent failed {agent_failures} times in a row: {exc}")
                continue
            agent_failures = 0
            if proposal is None:
                return self._summary(f"the {self.agent.name} agent has nothing more to propose")
            self._experiment(proposal, prefetch=max_experiments is None or done + 1 < max_experiments)
            done += 1
        return self._summary(f"reached --max-experiments {max_experiments}")

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
        with self._control:
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
            f"baseline after your change to {', '.join(measured)} ({self.cfg.baseline_runs} runs)") if measured else None
        self.journal.set_user_base(tag, new_base)
        self._emit("rebased", paths=changed, files=[rel for rel in new_base if new_base[rel] != base.get(rel)])
        if baseline is not None:
            self._emit("message", level="info",
                       text=f"your change to {', '.join(measured)} is now the base: measuring the baseline again")
            self._run_baseline(baseline)
        else:
            self._emit("message", level="info", text=f"took your change to {names}")

    def _agent_paused(self, exc: AgentPaused) -> None:
        """The agent cannot propose for now: pause with its reason. An outage (retry_in) is probed and the
        loop resumes by itself once the agent's API answers; otherwise the human resumes it."""
        with self._control:
            self.paused, self.pause_reason = True, str(exc)
        self._emit("state", state="paused", message=str(exc))
        probe = getattr(self.agent, "probe", None)
        while exc.retry_in is not None:
            with self._control:
                if self._control.wait_for(lambda: not self.paused or self.stop_requested.is_set() or self.stop_after,
                                          timeout=exc.retry_in):
                    return
            if probe is None or probe():
                with self._control:
                    self.paused = False
                self._emit("message", level="info", text=f"the {self.agent.name} agent can work again: resuming")
                return

    def _thought(self, text: str, done: bool) -> None:
        self._emit("thought", text=text, done=done, experiment_id=None)

    def _prefetch(self, parent: str) -> None:
        """Let a pipelining agent prepare the next proposal while this experiment trains, against the
        incumbent (the parent), with this experiment in the history as running."""
        prefetch = getattr(self.agent, "prefetch", None)
        if prefetch is None:
            return
        assert self.ws is not None
        files = {rel: self.ws.wt.git.show(f"{parent}:{rel}", strip_newline_in_stdout=False) for rel in self.cfg.editable}
        prefetch(dataclasses.replace(self._context(), files=files))

    def _summary(self, stopped: str) -> Summary:
        assert self.journal is not None and self.session is not None
        exps = [e for e in self.journal.experiments(self.session.tag) if e.kind == "experiment"]
        incumbent = self.journal.incumbent(self.session.tag)
        summary = Summary(
            tag=self.session.tag, experiments=len(exps), kept=sum(e.status == "keep" for e in exps),
            best=incumbent.val_bpb if incumbent else None, stopped=stopped,
        )
        if stopped != _NEW_BUDGET:  # a budget change goes straight on to the next session
            self._emit("state", state="stopped", message=stopped)
        return summary

    def _prepare_data(self) -> None:
        """Build or verify the corpus once per start, before any run (the harness owns the data)."""
        assert self.ws is not None
        self._emit("state", state="preparing", message="preparing the data (harness: prepare.py)")
        proc = subprocess.run(
            resolve_command(self.cfg.prepare), cwd=self.ws.wt_path / self.cfg.workdir,
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            detail = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}").splitlines()[-3:]
            raise LoopError("the harness could not prepare the data:\n  " + "\n  ".join(detail))
        try:
            pinned = json.loads(proc.stdout.strip().splitlines()[-1])
            self.data_dir, self.manifest_sha256 = str(pinned["data_dir"]), str(pinned["manifest_sha256"])
        except (IndexError, ValueError, KeyError, TypeError):
            self._emit("message", level="warning",
                       text="the harness does not report its data manifest: the data is not pinned for this session")
            return
        assert self.journal is not None and self.session is not None
        key = f"data_manifest:{self.session.tag}"
        recorded = self.journal.meta(key)
        if recorded is None:
            self.journal.set_meta(key, self.manifest_sha256)
        elif recorded != self.manifest_sha256:
            raise LoopError(
                f"the data in {self.data_dir} is not the data session {self.session.tag!r} was measured on "
                "(its manifest changed): results would not compare. Start a new session with --tag NEW."
            )

    # -- experiments ------------------------------------------------------------------------------

    def _context(self) -> Context:
        assert self.journal is not None and self.ws is not None and self.session is not None
        incumbent = self.journal.incumbent(self.session.tag)
        assert incumbent is not None
        program_path = self.ws.wt_path / self.cfg.program
        return Context(
            program=program_path.read_text(encoding="utf-8") if program_path.is_file() else "",
            files=self.ws.editable_files(),
            incumbent=incumbent,
            history=self.journal.experiments(self.session.tag),
            feedback=self.journal.feedback(self.session.tag),
            sigma=self._sigma(),
        )

    def _sigma(self) -> float:
        assert self.journal is not None and self.session is not None
        baselines = [e for e in self.journal.experiments(self.session.tag) if e.kind == "baseline" and e.status == "keep"]
        runs = [r.val_bpb for r in self.journal.runs(baselines[-1].id) if r.val_bpb is not None] if baselines else []
        return noise_sigma(runs, self.cfg.min_sigma)

    def _baseline(self, description: str | None = None) -> None:
        self._run_baseline(self._start_baseline(description))

    def _start_baseline(self, description: str | None = None) -> int:
        """The baseline's journal row and ref, for the code at the worktree's head."""
        assert self.journal is not None and self.ws is not None and self.session is not None
        head = self.ws.head()
        exp_id = self.journal.start_experiment(
            tag=self.session.tag, kind="baseline", parent_commit=head, agent="loop",
            description=description or f"baseline ({self.cfg.baseline_runs} runs: the noise floor)",
        )
        self._commit_ref(exp_id, head, head)
        return exp_id

    def _run_baseline(self, exp_id: int) -> None:
        assert self.journal is not None and self.session is not None
        self.journal.mark_attempt(exp_id)
        exp = self.journal.experiment(exp_id)
        assert exp is not None
        self._emit("state", state="baseline", message="measuring the noise floor")
        self._emit("experiment_started", experiment=exp, runs_planned=self.cfg.baseline_runs)
        values = []
        for k in range(self.cfg.baseline_runs):
            outcome = self._one_run(exp, k)
            if outcome is None:
                return
            if outcome.status != "ok" or outcome.val_bpb is None:
                self._finish(exp, "timeout" if outcome.status == "timeout" else "crash", reason=f"baseline run {k + 1} failed",
                             error=outcome.error)
                raise LoopError(
                    f"the baseline run failed ({outcome.status}): {outcome.error}\n"
                    f"  log: {self._log_path(exp_id, k)}\n"
                    "  The unmodified training script must run before anything can be compared with it."
                )
            values.append(outcome.val_bpb)
        sigma = noise_sigma(values, self.cfg.min_sigma)
        holdouts = [r.holdout_bpb for r in self.journal.runs(exp_id) if r.holdout_bpb is not None]
        self._finish(
            exp, "keep",
            reason=f"baseline: {statistics.fmean(values):.4f} ± {sigma:.4f} over {len(values)} runs",
            evidence={"runs": values, "mean": statistics.fmean(values), "sigma": sigma,
                      "raw_stdev": statistics.stdev(values), "min_sigma": self.cfg.min_sigma},
            val_bpb=statistics.fmean(values),
            holdout_bpb=statistics.fmean(holdouts) if holdouts else None,
        )

    def _experiment(self, proposal: Proposal, prefetch: bool = False) -> None:
        assert self.journal is not None and self.ws is not None and self.session is not None
        parent = self.ws.head()
        exp_id = self.journal.start_experiment(
            tag=self.session.tag, kind="experiment", parent_commit=parent, description=proposal.description,
            agent=self.agent.name, hypothesis=proposal.hypothesis, reasoning=proposal.reasoning, meta=proposal.meta,
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
        if prefetch:
            self._prefetch(parent)
        self._run_candidate(exp_id)

    def _commit_ref(self, exp_id: int, parent: str, commit: str) -> None:
        """Make the experiment's commit reachable under its own ref before anything runs."""
        assert self.journal is not None and self.ws is not None and self.session is not None
        ref = experiment_ref(self.session.tag, exp_id)
        self.ws.set_ref(ref, commit)
        self.journal.set_commit(exp_id, commit, ref, self.ws.diff(parent, commit) if parent != commit else "")

    def _run_candidate(self, exp_id: int) -> None:
        assert self.journal is not None and self.ws is not None and self.session is not None
        self.journal.mark_attempt(exp_id)
        exp = self.journal.experiment(exp_id)
        assert exp is not None and exp.commit_sha is not None
        changed = self.ws.changed_frozen(self.session.frozen_hashes)
        if changed:
            self.ws.reset_to(exp.parent_commit)
            self._finish(exp, "invalid", reason="frozen harness files differ from the session's",
                         error=f"frozen file(s) changed: {', '.join(changed)}")
            return
        incumbent = self.journal.incumbent(self.session.tag)
        assert incumbent is not None
        inc_values = [r.val_bpb for r in self.journal.runs(incumbent.id) if r.val_bpb is not None]
        sigma = self._sigma()
        self._emit("state", state="running", message=exp.description)
        self._emit("experiment_started", experiment=exp, runs_planned=1 + self.cfg.confirm_runs)
        values: list[float] = []
        holdouts: list[float] = []
        for k in range(1 + self.cfg.confirm_runs):
            outcome = self._one_run(exp, k)
            if outcome is None:
                return
            if outcome.status != "ok" or outcome.val_bpb is None:
                self.ws.reset_to(exp.parent_commit)
                status = "timeout" if outcome.status == "timeout" else "crash"
                self._finish(exp, status, reason=f"run {k + 1} {status}", error=outcome.error)
                return
            values.append(outcome.val_bpb)
            if outcome.holdout_bpb is not None:
                holdouts.append(outcome.holdout_bpb)
            verdict = judge(inc_values, values, sigma=sigma, keep_sigma=self.cfg.keep_sigma,
                            direction=self.cfg.direction, confirm_runs=self.cfg.confirm_runs)
            if not verdict.confirm:
                break
            self._emit("message", level="info", text=f"#{exp.id} {verdict.reason}")
        evidence = {**verdict.evidence, "incumbent_id": incumbent.id}
        if not verdict.keep:
            self.ws.reset_to(exp.parent_commit)
        self._finish(
            exp, "keep" if verdict.keep else "discard", reason=verdict.reason, evidence=evidence,
            val_bpb=statistics.fmean(values), holdout_bpb=statistics.fmean(holdouts) if holdouts else None,
        )

    def _log_path(self, exp_id: int, k: int) -> Path:
        assert self.session is not None
        return self.cfg.state_dir / "runs" / self.session.tag / f"{exp_id}-{k}.log"

    def _one_run(self, exp: Experiment, k: int) -> RunOutcome | None:
        """One training run of an experiment, recorded. None when the user stopped it."""
        assert self.journal is not None and self.ws is not None and self.session is not None
        seed = exp.id * 100 + k
        log_path = self._log_path(exp.id, k)
        model_out = log_path.with_suffix(".pt2")
        request = RunRequest(
            cwd=self.ws.wt_path / self.cfg.workdir, command=self.cfg.run, evaluate=self.cfg.evaluate,
            budget=self.cfg.budget, clock=self.clock, grace=self.cfg.grace,
            memory_limit_gb=self.cfg.memory_limit_gb, seed=seed, threads=self.cfg.threads or _threads(),
            model_out=model_out, log_path=log_path, data_dir=self.data_dir, manifest_sha256=self.manifest_sha256,
        )
        self._emit("run_started", experiment_id=exp.id, run=k, seed=seed, budget=self.cfg.budget, clock=self.clock)
        started = time.time()
        outcome = execute(
            request, on_frame=lambda frame: self._emit("progress", experiment_id=exp.id, run=k, frame=frame),
            stop=self.stop_requested,
        )
        model_out.unlink(missing_ok=True)  # a few MB per run; the commit is what reproduces it
        if outcome.status == "interrupted":
            # Not a result: the journal keeps the experiment in flight and the next start re-runs it.
            self.journal.set_status(exp.id, "interrupted")
            self.journal.delete_runs(exp.id)
            self.ws.reset_to(exp.parent_commit)
            self._emit("message", level="info", text=f"#{exp.id} interrupted; it re-runs on the next start")
            return None
        measured = {name: getattr(outcome, name) for name in _RUN_FIELDS}
        self.journal.add_run(Run(experiment_id=exp.id, seed=seed, started=started, finished=time.time(),
                                 log_path=str(log_path), **measured))
        self._emit("run_finished", experiment_id=exp.id, run=k, outcome=outcome)
        if outcome.data_changed:
            self.ws.reset_to(exp.parent_commit)
            self._finish(exp, "crash", reason="the run changed the harness's data", error=outcome.error)
            raise LoopError(f"{outcome.error}. Rebuild it (python trainer/prepare.py --rebuild) and review #{exp.id}.")
        return outcome

    def _finish(self, exp: Experiment, status: str, *, reason: str, error: str | None = None,
                evidence: dict[str, Any] | None = None, val_bpb: float | None = None,
                holdout_bpb: float | None = None, decided_by: str = "keep rule") -> None:
        assert self.journal is not None
        if status in ("crash", "timeout", "invalid") and decided_by == "keep rule":
            decided_by = "loop"
        self.journal.finish_experiment(
            exp.id, status=status, decided_by=decided_by, reason=reason, evidence=evidence,
            val_bpb=val_bpb, holdout_bpb=holdout_bpb, error=error,
        )
        final = self.journal.experiment(exp.id)
        self._emit("experiment_finished", experiment=final)

    def _recover(self, exp: Experiment) -> None:
        """An experiment left in flight by a kill or a Ctrl-C: run it again from its commit."""
        assert self.journal is not None and self.ws is not None
        self.journal.delete_runs(exp.id)
        if exp.commit_sha is None:
            self._finish(exp, "crash", reason="interrupted before its commit was made",
                         error="the loop stopped while applying this proposal", decided_by="recovery")
            return
        if exp.attempts >= _MAX_ATTEMPTS:
            self.ws.reset_to(exp.parent_commit)
            self._finish(exp, "crash", reason=f"interrupted {exp.attempts} times",
                         error="the loop stopped during every run of this experiment; given up", decided_by="recovery")
            return
        self._emit("message", level="info", text=f"resuming #{exp.id} ({exp.description}) from its commit")
        self.ws.reset_to(exp.commit_sha)
        if exp.kind == "baseline":
            self._run_baseline(exp.id)
        else:
            self._run_candidate(exp.id)

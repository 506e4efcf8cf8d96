"""The Overnight protocol, defined once: every type and every custom method, as plain data.

Everything else in this package is generated from this file (``python -m overnight.protocol.generate``):
the Python attrs classes (``types.py``), the TypeScript interfaces (``client_vscode/src/protocol.ts``), the
golden wire fixtures (``fixtures/``) and the reference part of ``README.md``. Edit this file, regenerate,
commit both; CI runs ``generate --check`` and fails when they drift.

Conventions:
- Names here are *wire* names: camelCase fields, the JSON a peer sends. Python gets snake_case
  (``valBpb`` -> ``val_bpb``); the pygls converter maps them back.
- A field is either required (always on the wire, ``null`` never allowed) or optional (may be absent;
  Python ``T | None = None``, TypeScript ``field?: T``). pygls drops a field equal to its default, so
  only optional fields have one.
- Type expressions: ``string``, ``integer``, ``number``, ``boolean``, ``json`` (any JSON object), the name
  of a struct or enum below, ``T[]`` (an array), ``[A, B, C]`` (a fixed-length array, a tuple).
- Compatibility: within one major version a change may only add optional fields, enum values that
  old peers may treat as unknown, new notifications (clients ignore ones they do not know) or new
  requests (servers answer MethodNotFound to ones they do not know). Anything else is a new major version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PROTOCOL_VERSION = "1.5"
NAMESPACE = "overnight/"


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    doc: str
    optional: bool = False


@dataclass(frozen=True)
class Struct:
    name: str
    doc: str
    fields: tuple[Field, ...]
    # An existing class used instead of a generated one (Python side), e.g. lsprotocol's Range.
    python: str | None = None


@dataclass(frozen=True)
class Enum:
    name: str
    doc: str
    values: tuple[tuple[str, str], ...]  # (wire value, doc)


@dataclass(frozen=True)
class Method:
    name: str
    kind: Literal["request", "notification"]
    direction: Literal["clientToServer", "serverToClient"]
    params: str
    result: str | None  # None for notifications
    doc: str


@dataclass(frozen=True)
class ErrorCode:
    name: str
    code: int
    doc: str


@dataclass(frozen=True)
class Command:
    """A client-side command id that the daemon puts into CodeLenses; the client registers it."""

    name: str
    id: str
    arguments: str  # what the daemon passes, in words
    doc: str


def f(name: str, type: str, doc: str) -> Field:
    return Field(name, type, doc)


def opt(name: str, type: str, doc: str) -> Field:
    return Field(name, type, doc, optional=True)


# -- enums ---------------------------------------------------------------------------------------------

ENUMS: tuple[Enum, ...] = (
    Enum("LoopState", "What the experiment loop is doing.", (
        ("idle", "The daemon runs but no session has started."),
        ("preparing", "The harness is building or verifying the data."),
        ("baseline", "Measuring the unmodified script: the noise floor."),
        ("proposing", "The agent is writing the next proposal."),
        ("running", "An experiment's training run is in flight."),
        ("pausing", "A pause was asked for: the experiment in flight is decided first (since 1.2)."),
        ("paused", "Paused by a user; the run in flight, if any, finished first."),
        ("stopping", "A stop was requested and is being carried out."),
        ("stopped", "The session ended (see `message` for why); the daemon keeps serving."),
        ("error", "The loop cannot go on; `message` says what to do."),
    )),
    Enum("Status", "An experiment's status, as in the journal.", (
        ("running", "In flight."),
        ("interrupted", "Its run was killed by a daemon stop; it re-runs on the next start."),
        ("keep", "Cleared the noise floor: the branch now stands on it."),
        ("discard", "Measured, not better: reverted (its commit stays under its ref)."),
        ("crash", "A run failed."),
        ("timeout", "A run overran the budget plus grace and was killed."),
        ("invalid", "Refused: before any run (bad patch, a frozen file), or its run broke the seal or failed "
                    "a harness check."),
        ("held", "Improved val but its holdout got worse beyond noise: held for the human, the branch did not "
                 "advance (since 1.2)."),
        ("pruned", "Stopped early: its training loss clearly trailed the incumbent's (since 1.2)."),
    )),
    Enum("ExperimentKind", "A baseline measures the script as it stands; an experiment tests one proposal.", (
        ("baseline", "The noise floor: the unmodified script, several seeds."),
        ("experiment", "One proposal of the agent."),
        ("ablation", "The final incumbent without one kept change (or a group that goes together): "
                     "`overnight ablate` (since 1.4)."),
    )),
    Enum("RunStatus", "How one training run of an experiment ended.", (
        ("ok", "Trained and evaluated."),
        ("crash", "Failed; `error` says why."),
        ("timeout", "Killed: it used more than its budget (measured from outside) or hung."),
        ("starved", "The machine did not give it its budget: not a measurement, run again (since 1.2)."),
        ("invalid", "Broke the seal or failed a harness check; `error` says which (since 1.2)."),
        ("pruned", "Stopped early by the pruner (since 1.2)."),
    )),
    Enum("Phase", "Where the run in flight is (since 1.2).", (
        ("starting", "The training process is starting (interpreter, imports, data check)."),
        ("training", "The training loop."),
        ("exporting", "Training ended; the model is being saved for the harness."),
        ("evaluating", "The session's pinned harness scores the saved model."),
        ("waiting", "Waiting for the machine: other processes leave too little CPU free for the next run."),
    )),
    Enum("Clock", "The clock the training budget is measured on.", (
        ("auto", "The default: resolved to steps."),
        ("steps", "A step count calibrated from the code's own fastest steps (since 1.2)."),
        ("cpu", "Process CPU time (fair on a shared CPU machine)."),
        ("wall", "Wall-clock time."),
    )),
    Enum("StopWhen", "When a stop takes effect.", (
        ("now", "Kill the run in flight; it re-runs on the next start."),
        ("afterCurrent", "Let the experiment in flight finish and be decided, then stop."),
    )),
    Enum("SuggestionState", "Where a suggestion stands.", (
        ("pending", "Shown to the user, waiting for accept or reject."),
        ("accepted", "Applied to the user's buffer."),
        ("rejected", "Rejected by the user; the reason went to the agent."),
        ("expired", "No longer applies (the user's code moved on, or a newer suggestion replaced it)."),
    )),
    Enum("IdeaState", "Where a hypothesis stands in the queue (since 1.4).", (
        ("proposed", "Stated by the agent, not decided by a human (drawn only under `ideas = \"not-vetoed\"`)."),
        ("approved", "Approved by a human (a human's own ideas start approved)."),
        ("vetoed", "Vetoed by a human: never drawn; the agent sees the reason."),
    )),
    Enum("DirectionState", "How a direction of the queue is drawn from (since 1.4).", (
        ("open", "Its entries are drawn in queue order."),
        ("pinned", "Its entries are drawn before any other direction's."),
        ("closed", "None of its entries is drawn."),
    )),
    Enum("IdeaAction", "What a human does to the queue (since 1.4).", (
        ("approve", "Approve the idea `id`."),
        ("veto", "Veto the idea `id` (with `reason`)."),
        ("reopen", "Approve a vetoed idea `id` again."),
        ("move", "Move the idea `id` to `index` (0: the top of the queue)."),
        ("pin", "Pin the direction `direction`."),
        ("close", "Close the direction `direction`."),
        ("open", "Open the direction `direction` again (neither pinned nor closed)."),
    )),
    Enum("Review", "What the user decided on a kept experiment's changes (since 1.3).", (
        ("accepted", "Every decided hunk carrying it was accepted."),
        ("rejected", "Every decided hunk carrying it was rejected."),
        ("mixed", "Some of its hunks were accepted, some rejected."),
    )),
)

# -- structs -------------------------------------------------------------------------------------------

STRUCTS: tuple[Struct, ...] = (
    # LSP's own types, mirrored so the TypeScript side needs no import; Python uses lsprotocol's classes.
    Struct("Position", "LSP Position: zero-based line and UTF-16 character offset.", (
        f("line", "integer", "Zero-based line."),
        f("character", "integer", "Zero-based character offset in UTF-16 code units."),
    ), python="lsprotocol.types.Position"),
    Struct("Range", "LSP Range: `end` is exclusive.", (
        f("start", "Position", "First position of the range."),
        f("end", "Position", "Position just past the range."),
    ), python="lsprotocol.types.Range"),

    # The connection
    Struct("InitializationOptions", "`initializationOptions` of the LSP `initialize` request.", (
        f("token", "string", "The secret from the discovery file `.overnight/daemon.json`."),
        f("protocolVersion", "string", "The client's protocol version; the major must equal the daemon's."),
        opt("commandLinks", "boolean", "The client runs markdown command links: hovers link to `overnight.showExperiment` "
            "(else they name `overnight show N`). Since 1.3."),
        opt("showMessages", "boolean", "False: the client announces kept and held experiments itself, so the daemon sends it "
            "no `window/showMessage` for them (default true). Since 1.3."),
    )),
    Struct("ServerInfoOvernight", "`InitializeResult.capabilities.experimental.overnight`.", (
        f("protocolVersion", "string", "The daemon's protocol version."),
    )),

    # The loop
    Struct("BestResult", "The incumbent: the newest kept experiment of the session.", (
        f("id", "integer", "Experiment id."),
        f("valBpb", "number", "Its validation bits per byte (mean over its runs)."),
    )),
    Struct("ExperimentSummary", "One experiment, as the lists and notifications show it.", (
        f("id", "integer", "Experiment id (journal), unique within the daemon's workspace."),
        f("kind", "ExperimentKind", "Baseline or experiment."),
        f("status", "Status", "Where it stands."),
        f("description", "string", "One line: what was changed."),
        opt("valBpb", "number", "Mean validation bits per byte over its runs; absent until measured."),
        opt("delta", "number", "valBpb minus the incumbent's it was judged against (negative is better); "
                               "absent for baselines and unmeasured experiments."),
        opt("commit", "string", "The git commit of the experiment (kept under its own ref)."),
        f("agent", "string", "The agent that proposed it (`loop` for baselines)."),
        f("created", "number", "Unix time (seconds) it was started."),
        opt("finished", "number", "Unix time (seconds) it was decided; absent while in flight."),
        opt("review", "Review", "The user's decision on the suggestion hunks carrying it; absent while none is decided "
            "(since 1.3)."),
    )),
    Struct("LiveRun", "The run in flight, so that a client attaching mid-run draws its curve from the start.", (
        f("experimentId", "integer", "The experiment it belongs to."),
        f("run", "integer", "Index of the run within its experiment, from 0."),
        f("runsPlanned", "integer", "Runs the experiment will take at most (confirmations included)."),
        f("curve", "[integer, number, number][]",
          "The loss curve so far: [step, elapsed seconds, train loss] triples, thinned to at most 500."),
    )),
    Struct("FlightSummary", "An experiment in flight besides `current` (since 1.5).", (
        f("experiment", "ExperimentSummary", "The experiment."),
        f("runsPlanned", "integer", "Runs it will take at most (confirmations included)."),
        opt("phase", "Phase", "Where its run is; absent before its first phase."),
    )),
    Struct("LoopStatus", "The loop as a whole: what a sidebar shows.", (
        f("state", "LoopState", "What the loop is doing."),
        opt("tag", "string", "The session tag (branch `overnight/<tag>`); absent before a session opens."),
        f("agent", "string", "The agent's name (sweep, claude, replay)."),
        f("budget", "number", "Training seconds per run."),
        f("clock", "Clock", "The clock the budget is measured on."),
        opt("sigma", "number", "The noise floor (bpb) measured by the baseline; absent until measured."),
        opt("best", "BestResult", "The incumbent; absent until the baseline is kept."),
        opt("current", "ExperimentSummary", "The experiment in flight, if any."),
        opt("live", "LiveRun", "The run in flight and its curve so far (since 1.1); absent between runs."),
        f("experiments", "integer", "Experiments of this session so far (baselines not counted)."),
        f("kept", "integer", "How many of them were kept."),
        opt("message", "string", "Why the loop is in this state (a pause reason, the stop reason, an error)."),
        f("protocolVersion", "string", "The daemon's protocol version."),
        opt("phase", "Phase", "Where the run in flight is (since 1.2); absent between runs."),
        opt("sealed", "boolean", "Whether runs are sealed in the sandbox (since 1.2); false: `sandbox = \"none\"`."),
        opt("reportedMetric", "string", "Set when the session's number is the training script's own printout "
                                        "(`measure = \"reported\"`, e.g. an autoresearch train.py): the metric's name. "
                                        "Nothing measured it; show it as unvouched (since 1.4)."),
        opt("flags", "string[]", "What the loop flagged for the human this session, newest last (since 1.2)."),
        opt("transferRatio", "number", "The latest transfer check: the share of the gain that survived at a "
                                      "larger budget and model (since 1.2)."),
        opt("alsoInFlight", "FlightSummary[]",
            "Experiments in flight besides `current`, in the order their runs started (since 1.5): a model exported "
            "and scored while `current` trains (`overlap`), other slots' runs, or a candidate queued for its next "
            "run. `current` is the one whose run started last (the one training); this is absent when it is the "
            "only one."),
    )),
    # The hypothesis queue (since 1.4)
    Struct("Idea", "One hypothesis in the queue.", (
        f("id", "integer", "Its id, unique within the workspace."),
        f("direction", "string", "The direction it belongs to (e.g. `optimizer`)."),
        f("text", "string", "What it means to test."),
        f("source", "string", "Who stated it: `agent` or `human`."),
        f("state", "IdeaState", "Proposed, approved or vetoed."),
        opt("reason", "string", "A veto's reason; absent when none was given."),
        f("experimentIds", "integer[]", "The experiments that tested it, oldest first."),
    )),
    Struct("DirectionSummary", "One direction of the queue and how it has fared.", (
        f("name", "string", "The direction."),
        f("state", "DirectionState", "Open, pinned or closed."),
        f("ideas", "integer", "Entries in the queue."),
        f("tries", "integer", "Decided experiments that tested its entries."),
        f("keeps", "integer", "How many of them were kept."),
        f("gain", "number", "The total improvement of its keeps, in the metric's units (positive: better)."),
        f("plateau", "boolean", "True when its last `plateauAfter` tries brought no keep."),
    )),
    Struct("IdeaQueue", "The session's hypothesis queue: what `overnight ideas` shows.", (
        opt("tag", "string", "The session; absent before one opens."),
        f("policy", "string", "What the agent draws: `not-vetoed` or `approved` (the `ideas` setting)."),
        f("plateauAfter", "integer", "Tries without a keep that flag a direction as a plateau (0: never)."),
        f("ideas", "Idea[]", "The entries, in queue order (pinned directions are drawn first)."),
        f("directions", "DirectionSummary[]", "Each direction's tries, keeps and gain."),
    )),
    Struct("AblateParams", "`overnight/ablate`.", (
        opt("runs", "integer", "Runs of each version without a change, and fresh runs of the incumbent (2 to 20; "
                               "default 2)."),
        opt("dryRun", "boolean", "Only say what it would cost; start nothing (default false)."),
    )),
    Struct("AblateResult", "What the daemon will do.", (
        f("changes", "integer", "Kept changes to ablate."),
        f("runs", "integer", "Training runs it will take at most (each change alone, plus the incumbent's)."),
        f("seconds", "number", "About how long, from the incumbent's own runs."),
        f("message", "string", "One line for the user."),
    )),
    Struct("ListIdeasParams", "`overnight/ideas/list`.", ()),
    Struct("AddIdeaParams", "`overnight/ideas/add`: a human's own idea (approved at once).", (
        f("text", "string", "What to try."),
        opt("direction", "string", "Its direction (default `yours`)."),
    )),
    Struct("CurateIdeaParams", "`overnight/ideas/curate`: approve, veto, move an idea; pin, close, open a direction.", (
        f("action", "IdeaAction", "What to do."),
        opt("id", "integer", "The idea (approve, veto, reopen, move)."),
        opt("reason", "string", "A veto's reason: the agent sees it."),
        opt("index", "integer", "Where to move the idea (0: the top)."),
        opt("direction", "string", "The direction (pin, close, open)."),
    )),
    Struct("RunSummary", "One training run of an experiment (one seed).", (
        f("run", "integer", "Index of the run within its experiment, from 0 (as in `overnight/progress`)."),
        f("seed", "integer", "The seed it ran with."),
        f("status", "RunStatus", "How it ended."),
        opt("valBpb", "number", "Validation bits per byte; absent when it failed."),
        opt("holdoutBpb", "number", "Bits per byte on the holdout split the agent never sees."),
        opt("oodBpb", "number", "Bits per byte on the out-of-distribution gauge the agent never sees (since 1.2)."),
        opt("trainBpb", "number", "The harness's score on a slice of the training split (since 1.2)."),
        opt("steps", "integer", "Optimizer steps taken."),
        opt("stepsPlanned", "integer", "The step count the harness calibrated from the code's speed (since 1.2)."),
        opt("cpuSeconds", "number", "CPU seconds of the run's whole process tree, measured from outside (since 1.2)."),
        opt("checks", "json", "The harness's self-checks of the model (causal, batch independence, ...) (since 1.2)."),
        opt("flags", "string[]", "What the checks flagged without refusing (since 1.2)."),
        opt("tokens", "integer", "Tokens trained on."),
        opt("tokensPerS", "number", "Training throughput."),
        opt("nParams", "integer", "Model parameters."),
        opt("device", "string", "cpu, cuda, mps."),
        opt("peakMemMb", "number", "Peak memory (GPU memory on CUDA, process RSS otherwise)."),
        opt("trainSeconds", "number", "Training time on the budget clock."),
        opt("wallSeconds", "number", "Wall time of the whole run, evaluation included."),
        opt("error", "string", "Why it failed."),
        opt("logTail", "string", "The last lines of its log."),
        f("curve", "[integer, number, number][]", "The loss curve: [step, elapsed seconds, train loss] triples."),
        f("started", "number", "Unix time (seconds)."),
        f("finished", "number", "Unix time (seconds)."),
    )),
    Struct("ExperimentDetail", "Everything about one experiment.", (
        f("experiment", "ExperimentSummary", "The summary, as in the lists."),
        f("hypothesis", "string", "What the agent expected, and why (empty for baselines and the sweep)."),
        f("reasoning", "string", "The agent's reasoning behind the proposal."),
        f("diff", "string", "Unified diff against its parent commit (empty for a baseline)."),
        opt("decisionReason", "string", "Why it was kept or discarded; absent while in flight."),
        opt("decidedBy", "string", "Who decided: `keep rule`, `loop`, `recovery`."),
        opt("evidence", "json", "The numbers behind the decision (runs, means, sigma, incumbent id, ...)."),
        opt("holdoutBpb", "number", "Mean holdout bits per byte over its runs."),
        opt("oodBpb", "number", "Mean out-of-distribution bits per byte over its runs (since 1.2)."),
        opt("error", "string", "Why it crashed or was refused."),
        f("runs", "RunSummary[]", "Its runs, in order."),
    )),

    # Suggestions
    Struct("Hunk", "One contiguous change of a suggestion, anchored in the user's current buffer.", (
        f("id", "string", "Stable id, unique within the daemon."),
        f("range", "Range", "The text it replaces, in the user's buffer (empty range: an insertion)."),
        f("oldText", "string", "The text in that range now (lets a client detect a stale anchor)."),
        f("newText", "string", "The replacement."),
        opt("experimentIds", "integer[]", "The kept experiments that wrote these lines, oldest first."),
        opt("evidence", "string", "What the newest of them did to the metric (`#17: 2.4120 → 2.3801 bpb, 3.1σ`)."),
    )),
    Struct("Suggestion", "Kept experiments, turned into hunks against one of the user's files.", (
        f("id", "string", "Stable id, unique within the daemon."),
        f("uri", "string", "The document (LSP DocumentUri) the hunks apply to."),
        f("experimentIds", "integer[]", "The kept experiments that produced it."),
        f("hunks", "Hunk[]", "The changes, in document order, non-overlapping."),
        f("evidence", "string", "One human-readable line: what it did to the metric, and how sure that is."),
        f("state", "SuggestionState", "Where it stands."),
    )),

    # Params and results
    Struct("StatusParams", "No parameters.", ()),
    Struct("PauseParams", "Parameters of `overnight/pause`.", (
        opt("reason", "string", "Why; recorded as feedback the agent sees."),
    )),
    Struct("ResumeParams", "No parameters.", ()),
    Struct("StopParams", "Parameters of `overnight/stop`.", (
        f("when", "StopWhen", "Now (kill the run in flight) or after the current experiment."),
    )),
    Struct("RedirectParams", "Parameters of `overnight/redirect`.", (
        f("instruction", "string", "What the agent should try or avoid from now on."),
    )),
    Struct("RedirectResult", "Result of `overnight/redirect`.", (
        f("feedbackId", "integer", "The journal id of the recorded instruction."),
    )),
    Struct("ShutdownParams", "No parameters.", ()),
    Struct("ShutdownResult", "Result of `overnight/shutdown`: nothing; the daemon exits right after answering.", ()),
    Struct("SetBudgetParams", "Parameters of `overnight/setBudget`.", (
        f("seconds", "number", "Training seconds per run, > 0."),
        opt("tag", "string", "The tag of the new session the budget starts; default: the daemon picks one."),
    )),
    Struct("ListExperimentsParams", "Parameters of `overnight/experiments/list`.", (
        f("offset", "integer", "How many of the newest to skip."),
        f("limit", "integer", "At most this many items (the daemon may cap it)."),
        opt("status", "Status[]", "Only experiments with one of these statuses; absent: all."),
    )),
    Struct("ExperimentList", "Result of `overnight/experiments/list`.", (
        f("total", "integer", "How many match, over all pages."),
        f("items", "ExperimentSummary[]", "This page, newest first."),
    )),
    Struct("GetExperimentParams", "Parameters of `overnight/experiments/get`.", (
        f("id", "integer", "Experiment id."),
    )),
    Struct("ListSuggestionsParams", "Parameters of `overnight/suggestions/list`.", (
        opt("uri", "string", "Only suggestions for this document; absent: all."),
    )),
    Struct("SuggestionList", "Result of `overnight/suggestions/list`.", (
        f("items", "Suggestion[]", "Pending suggestions."),
    )),
    Struct("AcceptSuggestionParams", "Parameters of `overnight/suggestions/accept`.", (
        f("id", "string", "Suggestion id."),
        opt("hunkId", "string", "Accept only this hunk; absent: the whole suggestion."),
    )),
    Struct("AcceptSuggestionResult", "Result of `overnight/suggestions/accept`.", (
        f("applied", "boolean", "Whether the editor applied the edit (`workspace/applyEdit`)."),
        opt("message", "string", "Why not, when it was not applied."),
    )),
    Struct("RejectSuggestionParams", "Parameters of `overnight/suggestions/reject`.", (
        f("id", "string", "Suggestion id."),
        opt("hunkId", "string", "Reject only this hunk; absent: the whole suggestion."),
        opt("reason", "string", "Why; recorded as feedback the agent sees."),
    )),
    Struct("RejectSuggestionResult", "Result of `overnight/suggestions/reject`: nothing.", ()),

    # Notification params
    Struct("ExperimentStartedParams", "Parameters of `overnight/experimentStarted`.", (
        f("experiment", "ExperimentSummary", "The experiment, status running."),
        f("runsPlanned", "integer", "Runs it will take at most (confirmations included)."),
    )),
    Struct("RunProgress", "Parameters of `overnight/progress`: one progress frame of a training run.", (
        f("experimentId", "integer", "The experiment."),
        f("run", "integer", "Index of the run within the experiment, from 0."),
        f("step", "integer", "Optimizer step."),
        f("elapsed", "number", "Seconds of training so far, on the budget clock."),
        f("budget", "number", "The budget, seconds."),
        f("trainLoss", "number", "Training loss at this step."),
        opt("tokensPerS", "number", "Throughput, when the script reports it."),
    )),
    Struct("ExperimentFinishedParams", "Parameters of `overnight/experimentFinished`.", (
        f("experiment", "ExperimentSummary", "The experiment, with its final status."),
    )),
    Struct("SuggestionAddedParams", "Parameters of `overnight/suggestionAdded`.", (
        f("suggestion", "Suggestion", "New, or re-anchored: it replaces a client's copy with the same id."),
    )),
    Struct("SuggestionRemovedParams", "Parameters of `overnight/suggestionRemoved`.", (
        f("id", "string", "Suggestion id."),
        f("state", "SuggestionState", "accepted, rejected or expired."),
        f("reason", "string", "Why, for the user."),
    )),
    Struct("AgentThought", "Parameters of `overnight/agentThought`: the agent's reasoning as it streams.", (
        opt("experimentId", "integer", "The experiment it is about; absent while still proposing."),
        f("text", "string", "The next chunk; append it to the thought so far."),
        f("done", "boolean", "True on the thought's last chunk."),
    )),
)

# -- methods -------------------------------------------------------------------------------------------

_C2S: Literal["clientToServer"] = "clientToServer"
_S2C: Literal["serverToClient"] = "serverToClient"


def request(name: str, params: str, result: str, doc: str) -> Method:
    return Method(NAMESPACE + name, "request", _C2S, params, result, doc)


def notification(name: str, params: str, doc: str) -> Method:
    return Method(NAMESPACE + name, "notification", _S2C, params, None, doc)


METHODS: tuple[Method, ...] = (
    request("status", "StatusParams", "LoopStatus", "The loop's state now."),
    request("pause", "PauseParams", "LoopStatus",
            "Pause after the run in flight (its result is kept). Idempotent."),
    request("resume", "ResumeParams", "LoopStatus", "Resume a paused loop. Idempotent."),
    request("stop", "StopParams", "LoopStatus",
            "End the session (the daemon keeps serving suggestions and history; `resume` starts the loop again, "
            "continuing the session)."),
    request("shutdown", "ShutdownParams", "ShutdownResult",
            "Stop the loop at once (the run in flight re-runs on the next start) and end the daemon."),
    request("redirect", "RedirectParams", "RedirectResult",
            "Tell the agent what to try or avoid; it is in the agent's context from its next proposal on."),
    request("setBudget", "SetBudgetParams", "LoopStatus",
            "Change the training budget. Results under different budgets do not compare, so the new budget "
            "starts a new session (new tag, new baseline) once the experiment in flight is decided."),
    request("experiments/list", "ListExperimentsParams", "ExperimentList",
            "A page of the current session's experiments, newest first."),
    request("experiments/get", "GetExperimentParams", "ExperimentDetail",
            "One experiment in full; an unknown id is a `notFound` error."),
    request("suggestions/list", "ListSuggestionsParams", "SuggestionList", "The pending suggestions."),
    request("suggestions/accept", "AcceptSuggestionParams", "AcceptSuggestionResult",
            "Apply a suggestion (or one hunk) to the requesting client's buffer through `workspace/applyEdit`, "
            "so it is undoable and respects unsaved changes."),
    request("suggestions/reject", "RejectSuggestionParams", "RejectSuggestionResult",
            "Reject a suggestion (or one hunk); the reason goes to the agent."),
    request("ablate", "AblateParams", "AblateResult",
            "Ablate the session's kept changes once the experiments in flight are decided (since 1.4): each "
            "ablation is an experiment of kind `ablation` (notified as usual); then the loop pauses, and "
            "`overnight/<tag>-final` holds one commit per surviving change. No kept change: `invalidState`."),
    request("ideas/list", "ListIdeasParams", "IdeaQueue", "The hypothesis queue of the current session (since 1.4)."),
    request("ideas/add", "AddIdeaParams", "IdeaQueue",
            "Add a human's idea to the end of the queue, approved (since 1.4). Answers the queue as it now stands."),
    request("ideas/curate", "CurateIdeaParams", "IdeaQueue",
            "Approve, veto, reopen or move an idea; pin, close or open a direction (since 1.4). An unknown id or "
            "direction is an `invalidParams` error. Answers the queue as it now stands."),
    notification("ideasChanged", "IdeaQueue",
                 "The queue changed: the agent stated hypotheses, a human curated it, or an experiment that tested "
                 "an idea was decided (since 1.4)."),
    notification("loopStateChanged", "LoopStatus", "The loop's status changed (state, counts, best, current)."),
    notification("experimentStarted", "ExperimentStartedParams", "An experiment (or baseline) started."),
    notification("progress", "RunProgress", "A training run's progress; at most a few per second per run."),
    notification("experimentFinished", "ExperimentFinishedParams", "An experiment was decided."),
    notification("suggestionAdded", "SuggestionAddedParams",
                 "A suggestion is new or was re-anchored after the user's code changed."),
    notification("suggestionRemoved", "SuggestionRemovedParams",
                 "A suggestion left the pending state (accepted, rejected or expired): every client drops it."),
    notification("agentThought", "AgentThought", "A chunk of the agent's reasoning as it streams."),
)

# -- errors and commands -------------------------------------------------------------------------------

# Outside JSON-RPC's reserved range (-32768..-32000) and LSP's (-32899..-32800).
ERROR_CODES: tuple[ErrorCode, ...] = (
    ErrorCode("unauthorized", 1001, "`initialize` without the right token; the connection is closed after it."),
    ErrorCode("versionMismatch", 1002, "The client's protocol major version differs; the connection is closed."),
    ErrorCode("notFound", 1003, "No experiment or suggestion with that id."),
    ErrorCode("invalidState", 1004, "Not possible in the loop's state (e.g. accept an expired suggestion)."),
)

COMMANDS: tuple[Command, ...] = (
    Command("acceptSuggestion", "overnight.acceptSuggestion", "[suggestionId, hunkId?]",
            "CodeLens on a hunk: calls `overnight/suggestions/accept`."),
    Command("rejectSuggestion", "overnight.rejectSuggestion", "[suggestionId, hunkId?]",
            "CodeLens on a hunk: asks for a reason, calls `overnight/suggestions/reject`."),
    Command("showExperiment", "overnight.showExperiment", "[experimentId]",
            "CodeLens / hover link: opens the experiment (`overnight/experiments/get`)."),
)

# Commands the daemon itself executes (`workspace/executeCommand`, advertised in `executeCommandProvider`), so
# that any LSP client can act: its CodeLenses carry them, and a user can run them by name. A richer client
# (the VS Code extension) maps them onto its own commands above. Each answers like the request it stands for
# and also tells the user what happened with a `window/showMessage`, since plain clients show nothing else.
SERVER_COMMANDS: tuple[Command, ...] = (
    Command("acceptSuggestion", "overnight.suggestion.accept", "[suggestionId, hunkId?]",
            "Accept (one hunk of) a suggestion: the daemon sends `workspace/applyEdit`. -> AcceptSuggestionResult."),
    Command("rejectSuggestion", "overnight.suggestion.reject", "[suggestionId, hunkId?, reason?]",
            "Reject (one hunk of) a suggestion; the agent sees the reason. -> RejectSuggestionResult."),
    Command("showExperiment", "overnight.experiment.show", "[experimentId]",
            "Show an experiment: answers ExperimentDetail; the message is a one-line summary."),
    Command("status", "overnight.loop.status", "[]", "Answers LoopStatus; the message is its one-line state."),
    Command("pause", "overnight.loop.pause", "[reason?]", "Pause after the experiment in flight. Answers LoopStatus."),
    Command("resume", "overnight.loop.resume", "[]", "Resume (or start) the loop. Answers LoopStatus."),
    Command("stopAfterCurrent", "overnight.loop.stopAfterCurrent", "[]",
            "Stop once the experiment in flight is decided. Answers LoopStatus."),
    Command("stop", "overnight.loop.stop", "[]", "Stop now: the run in flight is killed and re-runs on the next start. "
            "Answers LoopStatus."),
)

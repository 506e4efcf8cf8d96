"""The journal: every session, experiment, run and piece of human feedback, in SQLite.

One writer (the loop), WAL mode, and every state change in its own transaction, so a kill -9
at any moment leaves a consistent journal that loses at most the run in flight.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

SCHEMA_VERSION = 2

# Decisions an experiment can end with; "running" and "interrupted" are in-flight states.
FINAL_STATUSES = ("keep", "discard", "crash", "timeout", "invalid", "held", "pruned")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    tag TEXT PRIMARY KEY,
    branch TEXT NOT NULL,
    base_commit TEXT NOT NULL,
    frozen_hashes TEXT NOT NULL,
    config TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY,
    tag TEXT NOT NULL REFERENCES sessions(tag),
    kind TEXT NOT NULL,                 -- baseline | experiment
    status TEXT NOT NULL,               -- running | interrupted | keep | discard | crash | timeout | invalid | held
    parent_commit TEXT NOT NULL,
    commit_sha TEXT,
    ref TEXT,
    description TEXT NOT NULL,
    hypothesis TEXT NOT NULL DEFAULT '',
    reasoning TEXT NOT NULL DEFAULT '',
    diff TEXT NOT NULL DEFAULT '',
    agent TEXT NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',    -- agent-specific JSON (the sweep's config, ...)
    val_bpb REAL,
    holdout_bpb REAL,
    decided_by TEXT,
    decision_reason TEXT,
    evidence TEXT,                      -- JSON: the numbers behind the decision
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS experiments_tag ON experiments(tag, id);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    experiment_id INTEGER NOT NULL REFERENCES experiments(id),
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,               -- ok | crash | timeout | starved | invalid
    val_bpb REAL,
    holdout_bpb REAL,
    steps INTEGER,
    tokens INTEGER,
    tokens_per_s REAL,
    n_params INTEGER,
    device TEXT,
    peak_mem_mb REAL,
    train_seconds REAL,
    wall_seconds REAL,                  -- the training process, start to exit
    startup_seconds REAL,               -- process start until the harness's start frame
    train_wall_seconds REAL,            -- the training loop in wall seconds (the budget clock may differ)
    eval_seconds REAL,
    curve BLOB,                         -- msgpack [[step, elapsed, train_loss], ...]
    error TEXT,
    log_path TEXT,
    log_tail TEXT,
    started REAL NOT NULL,
    finished REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_experiment ON runs(experiment_id);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    tag TEXT NOT NULL,
    kind TEXT NOT NULL,                 -- reject | redirect | pause
    experiment_id INTEGER,
    text TEXT NOT NULL,
    created REAL NOT NULL
);
-- What the loop flagged for the human (a keep held for its holdout, a val-holdout gap growing, ...).
CREATE TABLE IF NOT EXISTS flags (
    id INTEGER PRIMARY KEY,
    tag TEXT NOT NULL,
    text TEXT NOT NULL,
    created REAL NOT NULL
);
-- Transfer checks: the incumbent and the session's baseline code at a larger budget and model.
CREATE TABLE IF NOT EXISTS transfers (
    id INTEGER PRIMARY KEY,
    tag TEXT NOT NULL,
    incumbent_id INTEGER NOT NULL,
    baseline_id INTEGER NOT NULL,
    budget REAL NOT NULL,
    scale REAL NOT NULL,
    baseline_bpb REAL,
    incumbent_bpb REAL,
    gain REAL,                          -- baseline − incumbent at the larger budget (positive: better)
    gain_at_budget REAL,                -- the same at the session's budget
    ratio REAL,                         -- gain / gain_at_budget: how much of the gain survives
    error TEXT,
    created REAL NOT NULL
);
-- The user's decisions on suggestion hunks, by the hunk's content key (see threeway.py): a decision
-- sticks to the change itself, across re-anchoring and newer suggestions that still carry it.
CREATE TABLE IF NOT EXISTS hunk_decisions (
    tag TEXT NOT NULL,
    path TEXT NOT NULL,
    hunk_key TEXT NOT NULL,
    state TEXT NOT NULL,                -- accepted | rejected
    reason TEXT NOT NULL DEFAULT '',
    suggestion_id TEXT NOT NULL,
    experiment_ids TEXT NOT NULL,       -- JSON list
    created REAL NOT NULL,
    PRIMARY KEY (tag, path, hunk_key)
);
-- Per-line history of an editable file (annotate.py): the session branch's head line → the ids of the
-- experiments that touched it. The loop advances it as it decides; a starting daemon reads it instead
-- of replaying every experiment's file versions from git. Derived data: losing it costs only time.
CREATE TABLE IF NOT EXISTS line_history (
    tag TEXT NOT NULL,
    path TEXT NOT NULL,
    head TEXT NOT NULL,                 -- the commit whose lines these are
    lines BLOB NOT NULL,                -- msgpack [[line, [experiment id, ...]], ...], newest id first
    covered BLOB NOT NULL,              -- msgpack [experiment id, ...]: the decided experiments accounted for
    PRIMARY KEY (tag, path)
);
-- The hypothesis queue the human curates: what the agent means to test, grouped into directions.
CREATE TABLE IF NOT EXISTS ideas (
    id INTEGER PRIMARY KEY,
    tag TEXT NOT NULL,
    direction TEXT NOT NULL,
    text TEXT NOT NULL,
    key TEXT,                           -- the agent's own name for it (the sweep's coordinate): no duplicates
    source TEXT NOT NULL,               -- agent | human
    state TEXT NOT NULL,                -- proposed | approved | vetoed
    reason TEXT NOT NULL DEFAULT '',    -- a veto's reason (the agent sees it)
    position REAL NOT NULL,             -- the queue's order: lower first
    created REAL NOT NULL,
    decided REAL,
    UNIQUE (tag, key)
);
CREATE TABLE IF NOT EXISTS directions (
    tag TEXT NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,                -- open | pinned | closed
    PRIMARY KEY (tag, name)
);
"""


# Schema 2 (the sealed run, the metric's self-checks, the outside accounting): columns added to existing tables.
_ADDED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "runs": (
        ("ood_bpb", "REAL"),                # the out-of-distribution gauge (never in the agent's context)
        ("train_bpb", "REAL"),              # the harness's score on a slice of the training split
        ("steps_planned", "INTEGER"),       # the step count the harness calibrated from the code's speed
        ("step_seconds", "REAL"),           # the calibrated step time behind it (the next runs' anchor)
        ("cpu_seconds", "REAL"),            # CPU of the run's whole process tree, measured from outside
        ("delay_seconds", "REAL"),          # time its threads waited for a core (a busy machine)
        ("checks", "TEXT"),                 # JSON: the harness's self-checks (causal, batch, finite, ...)
        ("flags", "TEXT"),                  # JSON list: what the checks flagged without refusing
    ),
    "experiments": (
        ("ood_bpb", "REAL"),
        ("idea_id", "INTEGER"),             # the queue entry the experiment tested (ideas.id)
    ),
}


@dataclass
class Ledger:
    """Per-line history of one file, on one commit of the session branch: what the journal persists."""

    head: str
    lines: dict[int, list[int]] = field(default_factory=dict)  # line of ``head`` → experiment ids, newest first
    covered: set[int] = field(default_factory=set)  # the decided experiments already accounted for

    def remapped(self, head: str, mapping: dict[int, int]) -> Ledger:
        """The same history on ``head``, given how the old head's lines map onto it."""
        lines: dict[int, list[int]] = {}
        for line, ids in self.lines.items():
            if line in mapping:
                lines.setdefault(mapping[line], []).extend(ids)
        for ids in lines.values():
            ids.sort(reverse=True)
        return Ledger(head, lines, set(self.covered))


@dataclass
class Session:
    tag: str
    branch: str
    base_commit: str
    frozen_hashes: dict[str, str]
    config: dict[str, Any]
    created: float


@dataclass
class Run:
    experiment_id: int
    seed: int
    status: str
    started: float
    finished: float
    val_bpb: float | None = None
    holdout_bpb: float | None = None
    steps: int | None = None
    tokens: int | None = None
    tokens_per_s: float | None = None
    n_params: int | None = None
    device: str | None = None
    peak_mem_mb: float | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None
    startup_seconds: float | None = None
    train_wall_seconds: float | None = None
    eval_seconds: float | None = None
    curve: list[tuple[int, float, float]] = field(default_factory=list)
    error: str | None = None
    log_path: str | None = None
    log_tail: str | None = None
    ood_bpb: float | None = None
    train_bpb: float | None = None
    steps_planned: int | None = None
    step_seconds: float | None = None
    cpu_seconds: float | None = None
    delay_seconds: float | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    id: int | None = None


@dataclass
class Experiment:
    id: int
    tag: str
    kind: str
    status: str
    parent_commit: str
    commit_sha: str | None
    ref: str | None
    description: str
    hypothesis: str
    reasoning: str
    diff: str
    agent: str
    meta: dict[str, Any]
    val_bpb: float | None
    holdout_bpb: float | None
    decided_by: str | None
    decision_reason: str | None
    evidence: dict[str, Any] | None
    error: str | None
    attempts: int
    created: float
    finished: float | None
    ood_bpb: float | None = None
    idea_id: int | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def delta(self) -> float | None:
        """val_bpb minus the incumbent's it was judged against (negative is better); None when not measured so."""
        if self.evidence and "incumbent_mean" in self.evidence and self.val_bpb is not None:
            return self.val_bpb - float(self.evidence["incumbent_mean"])
        return None


_RUN_COLUMNS = (
    "experiment_id", "seed", "status", "val_bpb", "holdout_bpb", "steps", "tokens", "tokens_per_s",
    "n_params", "device", "peak_mem_mb", "train_seconds", "wall_seconds", "startup_seconds",
    "train_wall_seconds", "eval_seconds", "curve",
    "error", "log_path", "log_tail", "started", "finished",
    "ood_bpb", "train_bpb", "steps_planned", "step_seconds", "cpu_seconds", "delay_seconds", "checks", "flags",
)


class JournalError(RuntimeError):
    """The journal cannot be used: damaged, unreadable or not writable. The message says how to recover."""


def damaged(path: Path, exc: BaseException) -> str:
    """One line: what is wrong with the journal and how to recover."""
    what = " ".join(str(exc).replace("*** in database main ***", "").split())
    if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc).replace(" ", "").lower():
        return f"the journal {path} cannot be written ({what}): check the permissions of {path.parent}"
    return (f"the journal {path} is damaged ({what}). Nothing was changed. `overnight doctor` checks it and "
            "rebuilds what can be read into a new journal, keeping the damaged file beside it; every experiment's "
            "commit is still in git under refs/overnight/")


class Journal:
    """The SQLite journal of one workspace. One writer (the loop); the daemon's server reads from
    another thread, so every statement runs under one lock on the shared connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # isolation_level=None: transactions are explicit (see _tx), so nothing is half-written.
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open the journal {path}: {exc}") from None
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            # A cheap look at every page's structure: a damaged file is named here, not by a traceback later.
            verdict = self._db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(verdict)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise JournalError(damaged(path, exc)) from None

    @staticmethod
    def check(path: Path) -> list[str]:
        """SQLite's full integrity check of a journal file, read-only: [] when sound, else what is wrong."""
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            return [str(exc)]
        try:
            rows = [str(r[0]) for r in db.execute("PRAGMA integrity_check(20)")]
            return [] if rows == ["ok"] else rows
        except sqlite3.DatabaseError as exc:
            return [str(exc)]
        finally:
            db.close()

    def _migrate(self) -> None:
        # executescript commits on its own, so the schema is created outside _tx; it is idempotent.
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is not None and int(row["value"]) > SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path} was written by a newer Overnight (schema {row['value']} > {SCHEMA_VERSION})"
            )
        missing = [(table, name, decl) for table, columns in _ADDED_COLUMNS.items()
                   for name, decl in columns
                   if name not in {str(r["name"]) for r in self._db.execute(f"PRAGMA table_info({table})")}]
        if not missing and row is not None and int(row["value"]) == SCHEMA_VERSION:
            return  # nothing to write: a reader of an up-to-date journal takes no write lock
        with self._tx() as db:
            for table, name, decl in missing:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
            db.execute("INSERT INTO meta(key, value) VALUES('schema_version', ?) ON CONFLICT(key) DO UPDATE SET"
                       " value=excluded.value", (str(SCHEMA_VERSION),))

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db.in_transaction:  # inside batch(): its one transaction commits or rolls back every write
                yield self._db
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def batch(self) -> Iterator[None]:
        """The writes inside as one transaction: all of them land, or (an exception, a kill) none of them."""
        with self._tx():
            yield

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- small facts ----------------------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                       (key, value))

    def meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return str(rows[0]["value"]) if rows else None

    def user_base(self, tag: str) -> dict[str, str] | None:
        """The user's versions of the synced files (editable + program) the session last synced with:
        its start, or the last rebase onto the user's own edit. The base of suggestions and syncs."""
        stored = self.meta(f"user_base:{tag}")
        return {str(k): str(v) for k, v in json.loads(stored).items()} if stored is not None else None

    def set_user_base(self, tag: str, texts: dict[str, str]) -> None:
        self.set_meta(f"user_base:{tag}", json.dumps(texts))

    # -- sessions -------------------------------------------------------------------------------

    def create_session(self, session: Session) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO sessions(tag, branch, base_commit, frozen_hashes, config, created) VALUES (?,?,?,?,?,?)",
                (session.tag, session.branch, session.base_commit, json.dumps(session.frozen_hashes),
                 json.dumps(session.config), session.created),
            )

    def session(self, tag: str) -> Session | None:
        rows = self._query("SELECT * FROM sessions WHERE tag=?", (tag,))
        return _session(rows[0]) if rows else None

    def latest_session(self) -> Session | None:
        rows = self._query("SELECT * FROM sessions ORDER BY created DESC, rowid DESC LIMIT 1")
        return _session(rows[0]) if rows else None

    def sessions(self) -> list[Session]:
        return [_session(r) for r in self._query("SELECT * FROM sessions ORDER BY created")]

    # -- experiments ------------------------------------------------------------------------------

    def start_experiment(
        self, *, tag: str, kind: str, parent_commit: str, description: str, agent: str,
        hypothesis: str = "", reasoning: str = "", meta: dict[str, Any] | None = None, idea_id: int | None = None,
    ) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO experiments(tag, kind, status, parent_commit, description, hypothesis, reasoning,"
                " agent, meta, created, idea_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (tag, kind, "running", parent_commit, description, hypothesis, reasoning, agent,
                 json.dumps(meta or {}), time.time(), idea_id),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def set_commit(self, exp_id: int, commit_sha: str, ref: str, diff: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE experiments SET commit_sha=?, ref=?, diff=? WHERE id=?", (commit_sha, ref, diff, exp_id))

    def mark_attempt(self, exp_id: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE experiments SET attempts=attempts+1, status='running' WHERE id=?", (exp_id,))

    def stopped_by_user(self, exp_id: int) -> None:
        """The user stopped this experiment's run: back in flight for the next start, and the attempt does not
        count toward giving up (only kills and crashes of the loop do)."""
        with self._tx() as db:
            db.execute("UPDATE experiments SET status='interrupted', attempts=MAX(0, attempts-1) WHERE id=?", (exp_id,))
            db.execute("DELETE FROM runs WHERE experiment_id=?", (exp_id,))

    def set_status(self, exp_id: int, status: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE experiments SET status=? WHERE id=?", (status, exp_id))

    def finish_experiment(
        self, exp_id: int, *, status: str, decided_by: str, reason: str,
        evidence: dict[str, Any] | None = None, val_bpb: float | None = None,
        holdout_bpb: float | None = None, error: str | None = None, ood_bpb: float | None = None,
    ) -> None:
        if status not in FINAL_STATUSES:
            raise ValueError(f"not a final status: {status}")
        with self._tx() as db:
            db.execute(
                "UPDATE experiments SET status=?, decided_by=?, decision_reason=?, evidence=?, val_bpb=?,"
                " holdout_bpb=?, error=?, finished=?, ood_bpb=? WHERE id=?",
                (status, decided_by, reason, json.dumps(evidence) if evidence is not None else None,
                 val_bpb, holdout_bpb, error, time.time(), ood_bpb, exp_id),
            )

    def experiment(self, exp_id: int) -> Experiment | None:
        rows = self._query("SELECT * FROM experiments WHERE id=?", (exp_id,))
        return _experiment(rows[0]) if rows else None

    def experiments(self, tag: str | None = None) -> list[Experiment]:
        if tag is None:
            rows = self._query("SELECT * FROM experiments ORDER BY id")
        else:
            rows = self._query("SELECT * FROM experiments WHERE tag=? ORDER BY id", (tag,))
        return [_experiment(r) for r in rows]

    def counts(self, tag: str) -> tuple[int, int]:
        """(experiments, kept) of a session, baselines not counted: cheap enough for every status request."""
        rows = self._query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(status='keep'), 0) AS kept FROM experiments"
            " WHERE tag=? AND kind='experiment'", (tag,))
        return int(rows[0]["n"]), int(rows[0]["kept"])

    def stamp(self, tag: str) -> tuple[int, float]:
        """Changes whenever an experiment of the session starts or finishes: a cache key for derived views."""
        row = self._query("SELECT COUNT(*) AS n, COALESCE(MAX(finished), 0) AS last FROM experiments WHERE tag=?",
                          (tag,))[0]
        return int(row["n"]), float(row["last"])

    def runs_stamp(self, tag: str) -> tuple[int, int]:
        """Changes whenever a run of the session is recorded or dropped: a cache key for numbers pooled over runs."""
        row = self._query("SELECT COUNT(r.id) AS n, COALESCE(MAX(r.id), 0) AS last FROM runs r"
                          " JOIN experiments e ON e.id = r.experiment_id WHERE e.tag=?", (tag,))[0]
        return int(row["n"]), int(row["last"])

    def baseline(self, tag: str) -> Experiment | None:
        """The session's kept baseline: its evidence holds the noise σ."""
        rows = self._query(
            "SELECT * FROM experiments WHERE tag=? AND kind='baseline' AND status='keep' ORDER BY id DESC LIMIT 1", (tag,))
        return _experiment(rows[0]) if rows else None

    def page(self, tag: str, offset: int, limit: int, statuses: list[str] | None = None) -> tuple[int, list[Experiment]]:
        """Newest first, filtered by status: (total matching, the page)."""
        where, args = "tag=?", [tag]
        if statuses:
            where += f" AND status IN ({', '.join('?' * len(statuses))})"
            args += statuses
        total = int(self._query(f"SELECT COUNT(*) AS n FROM experiments WHERE {where}", tuple(args))[0]["n"])
        rows = self._query(f"SELECT * FROM experiments WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?",
                           (*args, limit, offset))
        return total, [_experiment(r) for r in rows]

    def unfinished(self, tag: str) -> list[Experiment]:
        rows = self._query(
            "SELECT * FROM experiments WHERE tag=? AND status IN ('running', 'interrupted') ORDER BY id", (tag,)
        )
        return [_experiment(r) for r in rows]

    def incumbent(self, tag: str) -> Experiment | None:
        """The newest kept experiment (or baseline) of a session: the state the branch stands on."""
        rows = self._query("SELECT * FROM experiments WHERE tag=? AND status='keep' ORDER BY id DESC LIMIT 1", (tag,))
        return _experiment(rows[0]) if rows else None

    def code_head(self, tag: str) -> Experiment | None:
        """The experiment whose code the session now stands on: the incumbent, or a baseline being
        measured after a rebase onto the user's change (its code is already the session's)."""
        rows = self._query(
            "SELECT * FROM experiments WHERE tag=? AND (status='keep' OR (kind='baseline' AND status IN "
            "('running', 'interrupted'))) ORDER BY id DESC LIMIT 1", (tag,))
        return _experiment(rows[0]) if rows else None

    def unchanged_groups(self, tag: str, column: str = "val_bpb") -> list[list[float]]:
        """Every version of unchanged code the session measured more than once or once: its baselines and the
        incumbents it kept, with their confirmation runs and re-runs; one list of successful runs per version."""
        if column not in ("val_bpb", "holdout_bpb", "ood_bpb"):
            raise ValueError(f"not a metric column: {column}")
        rows = self._query(
            f"SELECT r.experiment_id AS id, r.{column} AS v FROM runs r JOIN experiments e ON e.id = r.experiment_id"
            f" WHERE e.tag=? AND e.status='keep' AND r.status='ok' AND r.{column} IS NOT NULL ORDER BY r.id", (tag,))
        groups: dict[int, list[float]] = {}
        for row in rows:
            groups.setdefault(int(row["id"]), []).append(float(row["v"]))
        return list(groups.values())

    # -- runs -------------------------------------------------------------------------------------

    def add_run(self, run: Run) -> int:
        values = {c: getattr(run, c) for c in _RUN_COLUMNS}
        values["curve"] = msgpack.packb([list(p) for p in run.curve])
        values["checks"] = json.dumps(run.checks)
        values["flags"] = json.dumps(run.flags)
        with self._tx() as db:
            cur = db.execute(
                f"INSERT INTO runs({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join('?' * len(_RUN_COLUMNS))})",
                tuple(values[c] for c in _RUN_COLUMNS),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def runs(self, exp_id: int) -> list[Run]:
        return [_run(r) for r in self._query("SELECT * FROM runs WHERE experiment_id=? ORDER BY id", (exp_id,))]

    def set_run_gauges(self, exp_id: int, seed: int, holdout_bpb: float | None, ood_bpb: float | None) -> None:
        """The gauges of a run scored after it was recorded (gauges.py: only when its candidate would be kept)."""
        with self._tx() as db:
            db.execute("UPDATE runs SET holdout_bpb=?, ood_bpb=? WHERE experiment_id=? AND seed=? AND status='ok'",
                       (holdout_bpb, ood_bpb, exp_id, seed))

    def delete_runs(self, exp_id: int) -> None:
        """Drop the runs of an experiment that is about to be re-run from scratch after an interruption."""
        with self._tx() as db:
            db.execute("DELETE FROM runs WHERE experiment_id=?", (exp_id,))

    # -- feedback ---------------------------------------------------------------------------------

    def add_feedback(self, tag: str, kind: str, text: str, experiment_id: int | None = None) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO feedback(tag, kind, experiment_id, text, created) VALUES (?,?,?,?,?)",
                (tag, kind, experiment_id, text, time.time()),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def feedback(self, tag: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT * FROM feedback WHERE tag=? ORDER BY id", (tag,))]


    # -- flags and transfer checks ---------------------------------------------------------------

    def add_flag(self, tag: str, text: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO flags(tag, text, created) VALUES (?,?,?)", (tag, text, time.time()))

    def flags(self, tag: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT * FROM flags WHERE tag=? ORDER BY id", (tag,))]

    # -- the hypothesis queue ------------------------------------------------------------------------

    def add_idea(self, tag: str, *, direction: str, text: str, source: str, state: str, key: str | None = None) -> int | None:
        """A new queue entry, last in the queue; None when the session has an entry with this key already."""
        with self._tx() as db:
            if key is not None and db.execute("SELECT 1 FROM ideas WHERE tag=? AND key=?", (tag, key)).fetchone():
                return None
            last = db.execute("SELECT MAX(position) FROM ideas WHERE tag=?", (tag,)).fetchone()[0]
            cur = db.execute(
                "INSERT INTO ideas(tag, direction, text, key, source, state, position, created, decided)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (tag, direction, text, key, source, state, (last or 0.0) + 1.0, time.time(),
                 time.time() if state != "proposed" else None),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def ideas(self, tag: str) -> list[dict[str, Any]]:
        """The session's queue in its order, each entry with the experiments that tested it."""
        rows = [dict(r) for r in self._query("SELECT * FROM ideas WHERE tag=? ORDER BY position, id", (tag,))]
        tried: dict[int, list[int]] = {}
        for r in self._query("SELECT id, idea_id FROM experiments WHERE tag=? AND idea_id IS NOT NULL ORDER BY id", (tag,)):
            tried.setdefault(int(r["idea_id"]), []).append(int(r["id"]))
        for row in rows:
            row["experiment_ids"] = tried.get(int(row["id"]), [])
        return rows

    def decide_idea(self, idea_id: int, state: str, reason: str = "") -> None:
        with self._tx() as db:
            db.execute("UPDATE ideas SET state=?, reason=?, decided=? WHERE id=?", (state, reason, time.time(), idea_id))

    def move_idea(self, tag: str, idea_id: int, index: int) -> None:
        """Put an entry at ``index`` of the session's queue (0: first); the others keep their order."""
        with self._tx() as db:
            order = [int(r[0]) for r in db.execute("SELECT id FROM ideas WHERE tag=? ORDER BY position, id", (tag,))]
            order.remove(idea_id)
            order.insert(max(0, min(index, len(order))), idea_id)
            db.executemany("UPDATE ideas SET position=? WHERE id=?", [(float(i + 1), i_id) for i, i_id in enumerate(order)])

    def copy_ideas(self, old: str, new: str) -> None:
        """A session's queue and directions into a new session (a new budget): their states, reasons and order, not
        which experiments tested them. Entries the new session has already (by key) are left as they are."""
        with self._tx() as db:
            rows = db.execute("SELECT * FROM ideas WHERE tag=? ORDER BY position, id", (old,)).fetchall()
            for r in rows:
                if r["key"] is not None and db.execute("SELECT 1 FROM ideas WHERE tag=? AND key=?", (new, r["key"])).fetchone():
                    continue
                db.execute("INSERT INTO ideas(tag, direction, text, key, source, state, reason, position, created, decided)"
                           " VALUES (?,?,?,?,?,?,?,?,?,?)", (new, r["direction"], r["text"], r["key"], r["source"], r["state"],
                                                             r["reason"], r["position"], r["created"], r["decided"]))
            db.execute("INSERT OR IGNORE INTO directions(tag, name, state) SELECT ?, name, state FROM directions WHERE tag=?",
                       (new, old))

    def set_direction(self, tag: str, name: str, state: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO directions(tag, name, state) VALUES (?,?,?) ON CONFLICT(tag, name) DO UPDATE SET"
                       " state=excluded.state", (tag, name, state))

    def directions(self, tag: str) -> dict[str, str]:
        """Direction name → open | pinned | closed, for the directions the human set (the rest are open)."""
        return {str(r["name"]): str(r["state"]) for r in self._query("SELECT * FROM directions WHERE tag=?", (tag,))}

    def ablations(self, tag: str) -> list[dict[str, Any]]:
        """The session's latest ablation (``overnight ablate``), one row per kept change: its measured effect (the
        metric without it minus with it, positive: it helps), in σ, whether it is droppable, and its commit on the
        final branch (empty: dropped). [] before any ablation."""
        stored = self.meta(f"ablation:{tag}")
        if stored is None:
            return []
        info = json.loads(stored)
        rows = []
        for ablation_id in info.get("ablations", []):
            ablation = self.experiment(int(ablation_id))
            ev = ablation.evidence if ablation is not None and ablation.evidence else {}
            for change_id in ev.get("ablates", []):
                change = self.experiment(int(change_id))
                rows.append({"experiment_id": int(change_id), "description": change.description if change else "",
                             "effect": ev.get("effect"), "sigma": ev.get("sigmas"), "droppable": bool(ev.get("droppable")),
                             "commit": info.get("commits", {}).get(str(change_id)) or "", "ablation_id": int(ablation_id),
                             "branch": info.get("branch", "")})
        return rows

    def add_transfer(self, tag: str, **values: Any) -> None:
        cols = ["tag", *values, "created"]
        with self._tx() as db:
            db.execute(f"INSERT INTO transfers({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                       (tag, *values.values(), time.time()))

    def transfers(self, tag: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT * FROM transfers WHERE tag=? ORDER BY id", (tag,))]

    # -- suggestion decisions ---------------------------------------------------------------------

    def decide_hunks(self, tag: str, path: str, keys: list[str], state: str, *, suggestion_id: str,
                     experiment_ids: list[int], reason: str = "") -> None:
        """Record accept/reject of hunks; a reject's reason also becomes feedback the agent reads."""
        now = time.time()
        with self._tx() as db:
            for key in keys:
                db.execute(
                    "INSERT OR REPLACE INTO hunk_decisions(tag, path, hunk_key, state, reason, suggestion_id,"
                    " experiment_ids, created) VALUES (?,?,?,?,?,?,?,?)",
                    (tag, path, key, state, reason, suggestion_id, json.dumps(experiment_ids), now),
                )
            if state == "rejected":
                ids = ", ".join(f"#{i}" for i in experiment_ids) or "the loop's change"
                text = f"the user rejected the change from {ids} in {path}" + (f": {reason}" if reason else " (no reason given)")
                db.execute("INSERT INTO feedback(tag, kind, experiment_id, text, created) VALUES (?,?,?,?,?)",
                           (tag, "reject", experiment_ids[-1] if experiment_ids else None, text, now))

    def reviews(self, tag: str) -> dict[int, str]:
        """Experiment id → what the user decided on the suggestion hunks carrying it: accepted, rejected or mixed."""
        states: dict[int, set[str]] = {}
        for row in self._query("SELECT state, experiment_ids FROM hunk_decisions WHERE tag=?", (tag,)):
            try:
                ids = json.loads(row["experiment_ids"])
            except ValueError:
                continue
            for exp_id in ids if isinstance(ids, list) else []:
                if isinstance(exp_id, int):
                    states.setdefault(exp_id, set()).add(str(row["state"]))
        return {i: (next(iter(st)) if len(st) == 1 else "mixed") for i, st in states.items()}

    def set_line_history(self, tag: str, path: str, ledger: Ledger) -> None:
        lines = msgpack.packb([[line, ids] for line, ids in sorted(ledger.lines.items())])
        covered = msgpack.packb(sorted(ledger.covered))
        with self._tx() as db:
            db.execute("INSERT INTO line_history(tag, path, head, lines, covered) VALUES (?,?,?,?,?)"
                       " ON CONFLICT(tag, path) DO UPDATE SET head=excluded.head, lines=excluded.lines,"
                       " covered=excluded.covered", (tag, path, ledger.head, lines, covered))

    def line_history(self, tag: str, path: str) -> Ledger | None:
        """The persisted per-line history; None when there is none or it cannot be read (it is derived data:
        the caller recomputes it)."""
        rows = self._query("SELECT head, lines, covered FROM line_history WHERE tag=? AND path=?", (tag, path))
        if not rows:
            return None
        try:
            lines = {int(line): [int(i) for i in ids] for line, ids in msgpack.unpackb(rows[0]["lines"])}
            covered = {int(i) for i in msgpack.unpackb(rows[0]["covered"])}
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        return Ledger(str(rows[0]["head"]), lines, covered)

    def hunk_decisions(self, tag: str, path: str) -> dict[str, str]:
        """Hunk key → accepted | rejected."""
        rows = self._query("SELECT hunk_key, state FROM hunk_decisions WHERE tag=? AND path=?", (tag, path))
        return {str(r["hunk_key"]): str(r["state"]) for r in rows}


def _session(row: sqlite3.Row) -> Session:
    return Session(
        tag=row["tag"], branch=row["branch"], base_commit=row["base_commit"],
        frozen_hashes=json.loads(row["frozen_hashes"]), config=json.loads(row["config"]), created=row["created"],
    )


def _experiment(row: sqlite3.Row) -> Experiment:
    values = dict(row)
    values["meta"] = json.loads(values["meta"] or "{}")
    values["evidence"] = json.loads(values["evidence"]) if values["evidence"] else None
    return Experiment(**values)


def _run(row: sqlite3.Row) -> Run:
    values = dict(row)
    values["curve"] = [tuple(p) for p in msgpack.unpackb(values["curve"])] if values["curve"] else []
    values["checks"] = json.loads(values["checks"]) if values.get("checks") else {}
    values["flags"] = json.loads(values["flags"]) if values.get("flags") else []
    return Run(**values)

"""`overnight doctor`: check what a kill, a full disk or a person can leave behind, and repair what is safe.

Checked: the journal (SQLite's integrity check), the discovery file (a daemon that is gone), the loop's lock (a
loop that runs: then nothing else is touched), each session's branch, worktree, git locks and experiment refs
against the journal. Repaired with ``--repair`` (and only what cannot lose anything): stale git locks of the
session's own worktree and refs, a stale discovery file, experiment refs the journal names but git lacks (when the
commit exists), and a damaged journal — its readable rows are copied into a new journal, and the damaged file is
kept beside it (``journal.db.damaged-<time>``), never overwritten.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import git

from .config import Config
from .journal import Journal, JournalError
from .server import discovery
from .workspace import Workspace, WorkspaceError, branch_name, experiment_ref

# The journal's tables, parents before children (foreign keys).
# line_history is left out: a cache the loop rebuilds from git (annotate.py).
_TABLES = ("meta", "sessions", "experiments", "runs", "feedback", "flags", "transfers", "hunk_decisions", "ideas",
           "directions")


@dataclass
class Finding:
    """One thing checked: ``ok``, or what is wrong and (with --repair) what was done about it."""

    area: str
    ok: bool
    detail: str
    repaired: str = ""


def loop_running(cfg: Config) -> int | None:
    """The pid of the loop holding the workspace lock, or None when no loop runs."""
    path = cfg.state_dir / "loop.lock"
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 64).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)
    return None


def check(cfg: Config, repair: bool = False) -> list[Finding]:
    findings: list[Finding] = []
    running = loop_running(cfg)
    if running is not None:
        findings.append(Finding("loop", True, f"a loop runs on this workspace (pid {running}): git and the journal "
                                              "are its to keep consistent; only read-only checks were made"))
        repair = False
    findings.append(_check_discovery(cfg, repair))
    journal_ok = _check_journal(cfg, repair, findings)
    if journal_ok:
        findings.extend(_check_git(cfg, repair))
    return findings


def _check_discovery(cfg: Config, repair: bool) -> Finding:
    path = discovery.path(cfg.state_dir)
    if not path.exists():
        return Finding("daemon", True, "no daemon registered")
    info = discovery.read(cfg.state_dir)  # None when the file is stale (its pid is gone or not a daemon)
    if info is not None:
        return Finding("daemon", True, f"a daemon runs: pid {info.pid}, 127.0.0.1:{info.port}")
    if repair:
        path.unlink(missing_ok=True)
        return Finding("daemon", False, f"{path.name} names a daemon that is gone", repaired="removed it")
    return Finding("daemon", False, f"{path.name} names a daemon that is gone (--repair removes it)")


def _check_journal(cfg: Config, repair: bool, findings: list[Finding]) -> bool:
    path = cfg.journal_path
    if not path.exists():
        findings.append(Finding("journal", True, "no journal yet"))
        return False
    problems = Journal.check(path)
    if not problems:
        findings.append(Finding("journal", True, f"{path.name}: integrity check ok"))
        return True
    detail = f"{path.name} is damaged: {'; '.join(problems[:3])}"
    if not repair:
        findings.append(Finding("journal", False, detail + " (--repair rebuilds it from what can be read)"))
        return False
    kept, counts = salvage(path)
    summary = ", ".join(f"{n} {table}" for table, n in counts.items() if n)
    findings.append(Finding("journal", False, detail,
                            repaired=f"rebuilt from the readable rows ({summary or 'none'}); the damaged file is {kept.name}"))
    return True


def salvage(path: Path) -> tuple[Path, dict[str, int]]:
    """Copy every readable row of a damaged journal into a new one at ``path``; the damaged file (with its WAL)
    is renamed, never written. Returns the damaged file's new path and the rows saved per table."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = path.with_name(f"{path.name}.damaged-{stamp}")
    fresh = path.with_name(f"{path.name}.rebuilding")
    fresh.unlink(missing_ok=True)
    # Read from a copy (the WAL beside it too), so nothing touches the damaged file itself.
    work = path.with_name(f"{path.name}.reading")
    shutil.copyfile(path, work)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            shutil.copyfile(side, work.with_name(work.name + suffix))
    counts: dict[str, int] = {}
    Journal(fresh).close()  # the current schema, empty
    new = sqlite3.connect(fresh, isolation_level=None)
    old = sqlite3.connect(work, isolation_level=None)
    try:
        new.execute("PRAGMA foreign_keys=OFF")
        new.execute("BEGIN")
        new.execute("DELETE FROM meta")
        for table in _TABLES:
            counts[table] = _copy_table(old, new, table)
        new.execute("COMMIT")
    finally:
        old.close()
        new.close()
        for name in (work.name, work.name + "-wal", work.name + "-shm"):
            path.with_name(name).unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, kept.with_name(kept.name + suffix))
    os.replace(path, kept)
    os.replace(fresh, path)
    return kept, counts


def _copy_table(old: sqlite3.Connection, new: sqlite3.Connection, table: str) -> int:
    columns = [str(r[1]) for r in new.execute(f"PRAGMA table_info({table})")]
    try:
        have = {str(r[1]) for r in old.execute(f"PRAGMA table_info({table})")}
    except sqlite3.DatabaseError:
        return 0
    shared = [c for c in columns if c in have]
    if not shared:
        return 0
    names = ", ".join(shared)
    insert = f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({', '.join('?' for _ in shared)})"
    try:
        rows = old.execute(f"SELECT {names} FROM {table}").fetchall()
    except sqlite3.DatabaseError:
        rows = _row_by_row(old, table, names)  # a damaged page: take what each row's lookup still returns
    saved = 0
    for row in rows:
        try:
            new.execute(insert, tuple(row))
            saved += 1
        except sqlite3.Error:
            continue
    return saved


def _row_by_row(old: sqlite3.Connection, table: str, names: str) -> list[tuple[object, ...]]:
    try:
        top = old.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        top = 100_000
    rows = []
    for rowid in range(1, int(top) + 1):
        try:
            row = old.execute(f"SELECT {names} FROM {table} WHERE rowid=?", (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None:
            rows.append(tuple(row))
    return rows


def _check_git(cfg: Config, repair: bool) -> list[Finding]:
    findings: list[Finding] = []
    try:
        ws = Workspace(cfg)
        journal = Journal(cfg.journal_path)
    except (WorkspaceError, JournalError) as exc:
        return [Finding("git", False, str(exc))]
    try:
        for session in journal.sessions():
            tag = session.tag
            locks = ws.clear_stale_locks(tag) if repair else []
            if locks:
                findings.append(Finding(f"session {tag}", False, "git lock files left by a killed loop",
                                        repaired=f"removed {', '.join(p.name for p in locks)}"))
            branch = branch_name(tag)
            no_branch = branch not in [h.name for h in ws.repo.heads]
            if no_branch:
                findings.append(Finding(f"session {tag}", False, f"the branch {branch} is gone; the experiments' "
                                                                 f"refs remain under refs/overnight/{tag}/"))
            missing, restored, lost = [], [], []
            for exp in journal.experiments(tag):
                if not exp.commit_sha:
                    continue
                ref = experiment_ref(tag, exp.id)
                try:
                    at = ws.repo.git.rev_parse("--verify", "--quiet", ref)
                except git.GitCommandError:
                    at = ""
                if at == exp.commit_sha:
                    continue
                try:
                    ws.repo.git.cat_file("-e", f"{exp.commit_sha}^{{commit}}")
                except git.GitCommandError:
                    lost.append(exp.id)
                    continue
                if repair:
                    ws.set_ref(ref, exp.commit_sha)
                    restored.append(exp.id)
                else:
                    missing.append(exp.id)
            if missing:
                findings.append(Finding(f"session {tag}", False, f"refs missing or moved for #{', #'.join(map(str, missing))} "
                                                                 "(--repair points them at the journal's commits)"))
            if restored:
                findings.append(Finding(f"session {tag}", False, "refs missing or moved",
                                        repaired=f"restored #{', #'.join(map(str, restored))}"))
            if lost:
                findings.append(Finding(f"session {tag}", False, f"the commits of #{', #'.join(map(str, lost))} are no "
                                                                 "longer in git (a gc after their refs were deleted?)"))
            if not (missing or restored or lost or locks or no_branch):
                findings.append(Finding(f"session {tag}", True, "branch, refs and journal agree"))
    finally:
        journal.close()
    return findings

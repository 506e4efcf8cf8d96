"""`overnight import results.tsv`: an autoresearch log brought into the journal as a session.

autoresearch (karpathy/autoresearch) keeps its own log, a tab-separated ``results.tsv``: one row per experiment
(``commit  val_bpb  memory_gb  status  description``), the first row the baseline, a crash written as val_bpb
0.000000 and memory 0.0. Kept commits stay on its branch; discarded ones were ``git reset`` away, so their short
hashes may no longer resolve. Imported, the log is one session like the loop's own: ``overnight results``,
``plot``, ``show``, the editor's per-line history and the reports work on it.

The numbers stay autoresearch's: one run per experiment, printed by the training script itself, decided by
autoresearch's agent, with no noise estimate and no seal. The session says so (``measure = "reported"``,
``sandbox = "none"``), and every view marks it.

The whole file is read, checked and matched against git before anything is written, so a bad row is one error
that names its line and leaves the journal and the repository as they were.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import io
import math
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import git
from rich.console import Console
from rich.markup import escape

from .journal import Journal, Run, Session
from .lock import WorkspaceLock
from .report import TSV_COLUMNS
from .workspace import WorkspaceError, branch_name, check_tag, experiment_ref

STATUSES = ("keep", "discard", "crash")
# What decided every imported experiment: autoresearch's agent, by its own rule, not Overnight's keep rule.
DECIDED_BY = "imported"
JUDGE = "autoresearch's agent: one run each, its own keep rule, no noise estimate"
# A commit cell is an abbreviated object name; anything else (a branch name, HEAD~1) is not what autoresearch writes.
_HASH = re.compile(r"[0-9a-f]{4,40}")
# The CLI's own parser class (cli._Parser): argparse's subparser action is invariant in it.
_P = TypeVar("_P", bound=argparse.ArgumentParser)


class ImportFailed(ValueError):
    """The log cannot be imported; the message says why. Nothing was written."""


class TsvError(ImportFailed):
    """The file is not an autoresearch results.tsv: the message names the file and the line."""

    def __init__(self, path: Path, line: int, message: str) -> None:
        super().__init__(f"{path}, line {line}: {message}")
        self.path = path
        self.line = line


@dataclass(frozen=True)
class LogRow:
    """One row of results.tsv, checked."""

    line: int
    commit: str  # as the log wrote it: an abbreviated hash, lower case
    val_bpb: float | None  # None for a crash (autoresearch writes 0.000000)
    memory_gb: float
    status: str  # keep | discard | crash
    description: str


@dataclass(frozen=True)
class Resolved:
    """A row matched against the repository: its full commit, diff and date when git still has the commit."""

    row: LogRow
    sha: str | None
    diff: str
    date: float | None  # the commit's date: when autoresearch made it (the run followed within minutes)


@dataclass(frozen=True)
class Plan:
    """Everything an import writes, worked out (and checked) before any of it is written."""

    tsv: Path
    root: Path
    branch: str
    tag: str
    rows: tuple[Resolved, ...]

    @property
    def unresolved(self) -> int:
        return sum(r.sha is None for r in self.rows)


# -- reading the log --------------------------------------------------------------------------------


def parse_tsv(path: Path) -> list[LogRow]:
    """The rows of an autoresearch results.tsv, strictly: any deviation is a TsvError naming its line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImportFailed(f"cannot read {path}: {exc.strerror or exc}") from None
    # An editor on Windows may have saved it with a byte-order mark; it is not part of the header's first name.
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TsvError(path, line, f"not UTF-8 text (byte {data[exc.start]:#04x}): autoresearch writes UTF-8; "
                                   "save the file as UTF-8") from None
    # QUOTE_NONE: autoresearch writes descriptions raw, so a quote in one is a quote, not the start of a quoted field.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
    rows: list[LogRow] = []
    try:
        header = next(reader, None)
        if header is None:
            raise TsvError(path, 1, f"the file is empty: expected the header {_columns(TSV_COLUMNS)}")
        _check_header(path, reader.line_num, header)
        for fields in reader:
            if not "".join(fields).strip():
                continue  # a blank line (an editor's trailing newline) is not a row
            rows.append(_row(path, reader.line_num, fields, first=not rows))
    except csv.Error as exc:  # a NUL byte, a carriage return inside a field
        raise TsvError(path, reader.line_num, f"not a tab-separated row ({exc})") from None
    if not rows:
        raise TsvError(path, reader.line_num, "no rows after the header: the log has not even its baseline")
    return rows


def _columns(names: tuple[str, ...] | list[str]) -> str:
    return "\\t".join(names)


def _check_header(path: Path, line: int, header: list[str]) -> None:
    if tuple(header) == TSV_COLUMNS:
        return
    missing = [c for c in TSV_COLUMNS if c not in header]
    unknown = [c for c in header if c not in TSV_COLUMNS]
    what = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                       f"unknown {', '.join(map(repr, unknown))}" if unknown else "") if part)
    raise TsvError(path, line, f"the header is {_columns(header)!r} ({what or 'columns out of order'}), "
                               f"autoresearch's is {_columns(TSV_COLUMNS)!r}")


def _row(path: Path, line: int, fields: list[str], first: bool) -> LogRow:
    if len(fields) != len(TSV_COLUMNS):
        raise TsvError(path, line, f"{len(fields)} fields, expected {len(TSV_COLUMNS)} ({', '.join(TSV_COLUMNS)}): "
                                   "a tab inside the description, or a column left out?")
    commit, val_text, mem_text, status, description = fields
    commit = commit.strip().lower()
    if not _HASH.fullmatch(commit):
        raise TsvError(path, line, f"commit {fields[0]!r} is not a commit hash (autoresearch writes the short hash)")
    val = _number(path, line, "val_bpb", val_text)
    memory = _number(path, line, "memory_gb", mem_text)
    if status not in STATUSES:
        raise TsvError(path, line, f"status {status!r} is not one of {', '.join(STATUSES)}")
    if status == "crash" and val != 0.0:
        raise TsvError(path, line, f"a crash with val_bpb {val_text.strip()}: autoresearch writes 0.000000 for a crash")
    if status != "crash" and val == 0.0:
        raise TsvError(path, line, f"a {status} with val_bpb 0: autoresearch writes 0.000000 only for a crash")
    if first and status != "keep":
        raise TsvError(path, line, f"the first row is the baseline, so its status is keep, not {status}")
    return LogRow(line, commit, None if status == "crash" else val, memory, status, description)


def _number(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TsvError(path, line, f"{column} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise TsvError(path, line, f"{column} {text.strip()} is not a finite number of 0 or more")
    return value


# -- matching it against git ------------------------------------------------------------------------


def plan(root: Path, tsv: Path, *, branch: str | None, tag: str | None) -> Plan:
    """Read and check the log, and find its commits in the repository at ``root``; nothing is written.

    With ``branch``, every kept commit must be on it (an ancestor of its tip): autoresearch keeps a commit by
    leaving it on its branch, so a kept row whose commit is elsewhere is not this branch's log."""
    rows = parse_tsv(tsv)
    try:
        repo = git.Repo(root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise ImportFailed(f"{root} is not a git repository: import in the repository autoresearch ran in") from None
    with repo:
        if branch is not None:
            try:
                tip: git.Commit | None = repo.commit(branch)
            except (git.BadName, git.BadObject, ValueError):
                raise ImportFailed(f"--branch {branch}: no such branch in {root}") from None
            name = branch
        else:
            tip = None
            try:
                name = repo.active_branch.name
            except TypeError:  # a detached HEAD has no branch name to record
                raise ImportFailed("HEAD is detached: say which branch autoresearch ran on with --branch") from None
        tag = _tag(tag, name)
        resolved = []
        for i, row in enumerate(rows):
            commit = _resolve(repo, row.commit)
            if i == 0 and commit is None:
                # The session's base: without it there is no code the session started from.
                raise TsvError(tsv, row.line, f"the baseline's commit {row.commit} is not in {root} (or names more "
                                              "than one object): import in the repository autoresearch ran in")
            if tip is not None and row.status == "keep":
                if commit is None:
                    raise TsvError(tsv, row.line, f"the kept commit {row.commit} is not in {root} (or names more than "
                                                  f"one object), so it is not on {branch}")
                if commit != tip and not repo.is_ancestor(commit, tip):
                    raise TsvError(tsv, row.line, f"the kept commit {row.commit} is not on {branch}: is this "
                                                  f"{branch}'s log?")
            if commit is None:
                resolved.append(Resolved(row, None, "", None))
                continue
            # The baseline is the code as it was (the loop records it with no diff); an experiment's diff is its
            # commit's change, which `show` prints and the per-line history reads.
            diff = "" if i == 0 else _diff(repo, commit)
            resolved.append(Resolved(row, commit.hexsha, diff, float(commit.committed_date)))
    return Plan(tsv=tsv, root=root, branch=name, tag=tag, rows=tuple(resolved))


def _tag(given: str | None, branch: str) -> str:
    """``given``, or ``imported-<branch>`` made into a usable tag (a tag names a branch and a folder)."""
    if given is None:
        cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", branch)
        cleaned = re.sub(r"\.{2,}", ".", cleaned).strip("-.")
        given = f"imported-{cleaned}"[:64].rstrip("-.").removesuffix(".lock")
    try:
        return check_tag(given)
    except WorkspaceError as exc:
        raise ImportFailed(f"--tag: {exc}") from None


def _resolve(repo: git.Repo, short: str) -> git.Commit | None:
    """The commit an abbreviated hash names; None when git no longer has it (reset away and collected) or the
    abbreviation is ambiguous (gitpython says BadName for both)."""
    try:
        commit = repo.commit(short)
    except (git.BadName, git.BadObject, ValueError):
        return None
    # A ref that happens to be spelt like a hash resolves too; only the object itself is this row's commit.
    return commit if commit.hexsha.startswith(short) else None


def _diff(repo: git.Repo, commit: git.Commit) -> str:
    if commit.parents:
        return str(repo.git.diff(commit.parents[0].hexsha, commit.hexsha))  # as the loop records its experiments'
    return str(repo.git.show("--format=", commit.hexsha))  # a root commit: its whole tree is its change


# -- writing it ---------------------------------------------------------------------------------------


def import_tsv(journal: Journal, root: Path, tsv: Path, *, branch: str | None, tag: str | None) -> Session:
    """Import autoresearch's ``tsv`` (commits in the repository at ``root``) as a new session of ``journal``."""
    return write(journal, plan(root, tsv, branch=branch, tag=tag))


def write(journal: Journal, p: Plan) -> Session:
    """Write a checked plan: the session, one experiment and one run per row, and a ref for every commit git has.

    Refused, with nothing written, when the tag is taken in the journal or in git."""
    if journal.session(p.tag) is not None:
        raise ImportFailed(f"a session {p.tag!r} exists already in the journal: choose another tag with --tag")
    with git.Repo(p.root) as repo:
        taken = str(repo.git.for_each_ref("--format=%(refname)", f"refs/overnight/{p.tag}/",
                                          f"refs/heads/{branch_name(p.tag)}")).split()
    if taken:
        raise ImportFailed(f"git has refs of an earlier session {p.tag!r} ({', '.join(taken[:3])}"
                           f"{', …' if len(taken) > 3 else ''}) that the journal does not know: choose another tag "
                           "with --tag")
    now = time.time()
    session = Session(
        tag=p.tag, branch=p.branch, base_commit=_base(p), frozen_hashes={}, created=now,
        # What every view reads to mark the session: its metric is the script's own printout (report.is_reported),
        # and its runs were not sealed (report.is_sealed). The loop's resume check (_MEASUREMENT_KEYS) reads the
        # same keys, so a workspace measuring otherwise cannot continue this session as if comparable. network:
        # autoresearch runs its script unsandboxed, so the network was open to every run.
        config={"measure": "reported", "metric": "val_bpb", "direction": "minimize", "sandbox": "none",
                "network": True, "imported_from": str(p.tsv), "imported_rows": len(p.rows)},
    )
    # One transaction: a failure or a kill part-way leaves no half session behind.
    with journal.batch():
        journal.create_session(session)
        refs: list[tuple[str, str]] = []
        incumbent: tuple[int, str, float] | None = None  # (experiment id, its commit, its val_bpb)
        head = _base(p)  # the newest kept commit git has: where the session branch goes
        reason = f"imported from {p.tsv.name} (autoresearch's own decision)"
        for i, r in enumerate(p.rows):
            row = r.row
            kind = "baseline" if i == 0 else "experiment"
            # The incumbent's commit is what autoresearch built on; the baseline stands on itself, as the loop's does.
            parent = (r.sha or row.commit) if incumbent is None else incumbent[1]
            exp_id = journal.start_experiment(
                tag=p.tag, kind=kind, parent_commit=parent, description=row.description, agent="autoresearch",
                # The hash as the log wrote it: the only trace of a commit git no longer has.
                meta={"short_commit": row.commit, "tsv_line": row.line},
            )
            if r.sha is not None:
                ref = experiment_ref(p.tag, exp_id)
                journal.set_commit(exp_id, r.sha, ref, r.diff)
                refs.append((ref, r.sha))
            when = r.date if r.date is not None else now
            error = "crashed under autoresearch (its log records no val_bpb)" if row.status == "crash" else None
            journal.add_run(Run(
                experiment_id=exp_id, seed=0, status="crash" if row.status == "crash" else "ok", started=when, finished=when,
                val_bpb=row.val_bpb, peak_mem_mb=row.memory_gb * 1024 if row.memory_gb > 0 else None, error=error,
            ))
            evidence: dict[str, object] = {"judge": JUDGE}
            if incumbent is None:
                evidence["mean"] = row.val_bpb  # how report.describe states a baseline
            else:
                # Experiment.delta reads incumbent_mean: the table's Δ, the plot and the editor's hints show it.
                evidence.update(incumbent_id=incumbent[0], incumbent_mean=incumbent[2])
                if row.val_bpb is not None:
                    evidence["candidate_mean"] = row.val_bpb
            journal.finish_experiment(exp_id, status=row.status, decided_by=DECIDED_BY, reason=reason, evidence=evidence,
                                      val_bpb=row.val_bpb, error=error)
            if row.status == "keep":
                assert row.val_bpb is not None  # parse_tsv: only a crash has no value
                incumbent = (exp_id, r.sha or row.commit, row.val_bpb)
                head = r.sha or head
        # Inside the transaction: refs that cannot be written roll the journal back. (A kill between the refs and
        # the commit leaves refs without a session: a later import under that tag is refused, naming them.)
        _write_refs(p, refs, head)
    return session


def _base(p: Plan) -> str:
    """The code the session started from: the baseline's commit (autoresearch measures the branch's starting point
    unchanged, and the loop records its own sessions' base the same way)."""
    sha = p.rows[0].sha
    assert sha is not None  # plan(): an import without its baseline's commit is refused
    return sha


def _write_refs(p: Plan, refs: list[tuple[str, str]], head: str) -> None:
    """Every commit under its experiment's ref, as the loop keeps its own (git gc would otherwise collect the
    discarded ones, which no branch holds), and the session branch the editor's per-line history reads, on the
    incumbent. One `git update-ref` transaction: all of them, or none."""
    lines = [f"create {ref} {sha}\n" for ref, sha in refs] + [f"create refs/heads/{branch_name(p.tag)} {head}\n"]
    done = subprocess.run(["git", "update-ref", "--stdin"], cwd=p.root, input="".join(lines), text=True,
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise ImportFailed(f"session {p.tag!r} was imported, but git refused its refs ({done.stderr.strip()}): "
                           "`overnight doctor --repair` restores the experiments' refs")


# -- the command ----------------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction[_P]) -> None:
    p = sub.add_parser("import", help="bring an autoresearch results.tsv into the journal as a session "
                                      "(results, plot and show work on it)")
    p.add_argument("tsv", help="autoresearch's results.tsv")
    p.add_argument("--branch", help="the branch autoresearch ran on (e.g. autoresearch/mar5): every kept commit must "
                                    "be on it (default: the current branch, not checked)")
    p.add_argument("--tag", help="the new session's tag (default: imported-<branch>)")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace, console: Console) -> int:
    from .cli import CliError, _config  # cli.py imports this module to build its parser

    cfg = _config(args)
    tsv = Path(args.tsv).resolve()
    try:
        # Everything is checked before the journal is even opened: a bad file leaves no journal behind either.
        checked = plan(cfg.root, tsv, branch=args.branch, tag=args.tag)
        # One writer per workspace: a loop running here holds the lock (WorkspaceBusy says so).
        with WorkspaceLock(cfg.state_dir):
            _ignore(cfg.state_dir)
            # Not cli._journal: that refuses a workspace where nothing has run yet, and an import is often the first.
            with Journal(cfg.journal_path) as journal:
                session = write(journal, checked)
    except ImportFailed as exc:
        raise CliError(str(exc)) from None
    rows = [r.row for r in checked.rows[1:]]
    counts = ", ".join(f"{sum(r.status == s for r in rows)} {word}"
                       for s, word in (("keep", "kept"), ("discard", "discarded"), ("crash", "crashed")))
    missing = checked.unresolved
    lost = (f"; {missing} commit{'s' if missing != 1 else ''} no longer in the repository "
            f"{'were' if missing != 1 else 'was'} imported without {'their' if missing != 1 else 'its'} diff"
            if missing else "")
    console.print(f"imported the baseline and {len(rows)} experiment{'s' if len(rows) != 1 else ''} ({counts}) "
                  f"into session {escape(session.tag)}{lost}", highlight=False)
    console.print(f"  next: overnight results --tag {session.tag} · overnight plot --tag {session.tag}", highlight=False)
    return 0


def _ignore(state_dir: Path) -> None:
    """Keep Overnight's folder out of `git status`, as the loop's workspace does when it makes it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    ignore = state_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")

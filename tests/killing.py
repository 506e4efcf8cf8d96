"""Killing the loop at random moments and checking what it left: shared by tests/integration/test_kills.py (a few
kills, in CI) and bench/kills.py (many, with a table).

Each round starts `overnight run` as a user would (its own process group), lets it work for a random time, sometimes
edits the user's train.py meanwhile, and kills the whole group with SIGKILL. After each kill: no process of the
run survives it (runs and evaluators die with the loop: parent-death signal), the journal passes SQLite's integrity
check, no finished row was lost or changed, and every experiment's ref points at its recorded commit. At the end
one more start runs to completion by itself, and every edit the user made is in the session's branch.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

OVERNIGHT = [sys.executable, "-m", "overnight.daemon.cli"]
TRAIN = "trainer/train.py"


@dataclass
class KillReport:
    kills: int = 0
    survivors: list[str] = field(default_factory=list)  # processes still alive 10 s after a kill
    problems: list[str] = field(default_factory=list)   # journal, refs or lost rows, per kill
    phases: list[str] = field(default_factory=list)     # what the loop was doing when killed (the journal's view)
    edits: list[str] = field(default_factory=list)      # markers of the user's edits
    final_rc: int | None = None
    final_output: str = ""


def replay_file(root: Path, n: int) -> None:
    """n comment-only proposals as patches, each inserting a line at its own place in the top half of train.py (so
    they apply whatever was kept before them, and never touch the end of the file, where the user edits)."""
    import difflib

    lines = (root / TRAIN).read_text().splitlines(keepends=True)
    out = []
    for i in range(n):
        at = 20 + 15 * i
        new = [*lines[:at], f"# note {i}\n", *lines[at:]]
        patch = "".join(difflib.unified_diff(lines, new, f"a/{TRAIN}", f"b/{TRAIN}"))
        out.append(json.dumps({"description": f"note {i}", "patch": patch}))
    (root / "proposals.jsonl").write_text("\n".join(out) + "\n")


def _rows(root: Path) -> dict[int, tuple[str, str | None]]:
    path = root / ".overnight" / "journal.db"
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {int(r[0]): (str(r[1]), r[2]) for r in db.execute("SELECT id, status, commit_sha FROM experiments")}
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


def _tag(root: Path) -> str | None:
    path = root / ".overnight" / "journal.db"
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT tag FROM sessions ORDER BY created DESC LIMIT 1").fetchone()
        return str(row[0]) if row else None
    except sqlite3.OperationalError:
        return None
    finally:
        db.close()


def _ours(root: Path) -> list[psutil.Process]:
    """Processes working for this workspace: their command line or working directory is under it."""
    found = []
    text = str(root)
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            cwd = proc.info["cwd"] or ""
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if proc.pid != os.getpid() and (text in cmd or cwd.startswith(text)):
            found.append(proc)
    return found


FINISHED = ("keep", "discard", "crash", "timeout", "invalid", "held", "pruned")


def _check(root: Path, before: dict[int, tuple[str, str | None]], report: KillReport) -> None:
    path = root / ".overnight" / "journal.db"
    if path.exists():
        db = sqlite3.connect(path)
        try:
            verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            db.close()
        if verdict != "ok":
            report.problems.append(f"kill {report.kills}: integrity_check says {verdict}")
    after = _rows(root)
    for exp_id, (status, _) in before.items():
        if status in FINISHED and after.get(exp_id, ("gone",))[0] != status:
            report.problems.append(f"kill {report.kills}: #{exp_id} was {status}, now {after.get(exp_id)}")
    tag = _tag(root)
    if tag is None:
        return
    for exp_id, (_, sha) in after.items():
        if not sha:
            continue
        ref = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/overnight/{tag}/{exp_id}"], cwd=root,
                             capture_output=True, text=True).stdout.strip()
        if ref != sha:
            report.problems.append(f"kill {report.kills}: refs/overnight/{tag}/{exp_id} is {ref or 'missing'}, "
                                   f"the journal says {sha[:12]}")


def kill_rounds(root: Path, kills: int, seed: int, window: tuple[float, float] = (1.0, 15.0),
                edit_every: int = 3, in_flight: bool = False) -> KillReport:
    """``kills`` rounds of start, wait a random time in ``window``, SIGKILL. ``in_flight``: the wait starts once an
    experiment is in flight (a short session in CI then still kills mid-run, not only during start-up)."""
    rng = random.Random(seed)
    report = KillReport()
    for i in range(kills):
        before = _rows(root)
        proc = subprocess.Popen([*OVERNIGHT, "run", "--agent", "replay"], cwd=root, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if in_flight:
            ready = time.monotonic() + 120
            while (time.monotonic() < ready and proc.poll() is None
                   and not any(r[0] == "running" for r in _rows(root).values())):
                time.sleep(0.1)
        deadline = time.monotonic() + rng.uniform(*window)
        edited = False
        while time.monotonic() < deadline and proc.poll() is None:
            if not edited and edit_every and i % edit_every == edit_every - 1 and rng.random() < 0.05:
                # The user edits their own file while the loop works (an edit the session must end up with).
                marker = f"# the user's edit {i}"
                with (root / TRAIN).open("a") as fh:
                    fh.write(f"\n{marker}\n")
                report.edits.append(marker)
                edited = True
            time.sleep(0.1)
        running = [r for r in _rows(root).values() if r[0] in ("running", "interrupted")]
        report.phases.append("experiment in flight" if running else "between experiments")
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        report.kills += 1
        # Runs and evaluators are in sessions of their own: they must die with the loop (parent-death signal).
        end = time.monotonic() + 10
        while (left := _ours(root)) and time.monotonic() < end:
            time.sleep(0.2)
        for p in left:
            try:
                report.survivors.append(f"kill {report.kills}: pid {p.pid} {' '.join(p.cmdline())[:120]}")
                p.kill()
            except psutil.NoSuchProcess:
                pass
        _check(root, before, report)
    return report


def finish(root: Path, report: KillReport, timeout: float = 600) -> None:
    """One more start, left alone: it must resume and end by itself, with every user edit in the session."""
    out = subprocess.run([*OVERNIGHT, "run", "--agent", "replay"], cwd=root, capture_output=True, text=True,
                         timeout=timeout, stdin=subprocess.DEVNULL)
    report.final_rc, report.final_output = out.returncode, out.stdout + out.stderr
    tag = _tag(root)
    if tag is None:
        report.problems.append("no session after the final start")
        return
    branch = subprocess.run(["git", "show", f"overnight/{tag}:{TRAIN}"], cwd=root, capture_output=True,
                            text=True).stdout
    for marker in report.edits:
        if marker not in branch:
            report.problems.append(f"the user's edit {marker!r} is not in the session's branch")
    for exp_id, (status, _) in _rows(root).items():
        if status in ("running", "interrupted"):
            report.problems.append(f"#{exp_id} is still {status} after a start that ran to its end")
    _check(root, {}, report)

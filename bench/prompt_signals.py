"""What the research memory and the loss curves cost in the prompt, and the figures they are meant to improve.

For each experiment of a recorded session, in order, the Claude agent's prompt is built (prompt.build, no API call)
as it would have been when that experiment was proposed: the experiments before it, as they were finally decided,
once without and once with the research memory (memory.generate up to that experiment) and the condensed loss
curves (curves.of_experiments). Reported: the prompt's size both ways (characters; tokens estimated as
characters / 4, no tokenizer offline).

Without calling any API, the session's own proposals are then counted: how often one repeated an earlier
description or an earlier change (the same added lines), whether the earlier one was still listed line by line in
the prompt (the last ``--recent``), and how often one failed to run (crash, timeout, invalid), and in a direction
that had failed to run before. These are the baseline figures a with/without comparison of proposal quality would
be measured against; that comparison itself needs the Claude API (two sessions, or the same prefixes proposed
twice) and is not made here without ANTHROPIC_API_KEY.

    python bench/prompt_signals.py JOURNAL [JOURNAL ...] [--tag TAG] [--recent 25] [--out bench/results]

The journals are copied (SQLite's backup) before they are read: a live session is not touched. Writes
prompt_signals.md and prompt_signals.json under --out, with the machine's load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = Path(__file__).resolve().parent / "results"

from overnight.daemon import memory  # noqa: E402
from overnight.daemon.agents import Context  # noqa: E402
from overnight.daemon.agents.curves import of_experiments  # noqa: E402
from overnight.daemon.agents.prompt import build  # noqa: E402
from overnight.daemon.journal import Experiment, Journal  # noqa: E402
from overnight.daemon.noise import session_noise  # noqa: E402

NO_KEY = "not measured: no API key"


def copy_journal(path: Path, into: Path) -> Path:
    """A private copy of the journal (its WAL included), made with SQLite's backup: the original is only read."""
    target = into / f"{path.stem}-{abs(hash(str(path.resolve())))}.db"
    src = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return target


def _files(config: dict[str, Any], journal_path: Path) -> tuple[str, dict[str, str], str]:
    """program.md and the editable files as the workspace has them now (the prompt's static part: their size
    differs from the incumbent's at each step by a few lines), and where they came from."""
    root = Path(str(config.get("root") or journal_path.resolve().parent.parent))
    files = {}
    for rel in config.get("editable", ["trainer/train.py"]):
        p = root / str(rel)
        if p.is_file():
            files[str(rel)] = p.read_text(encoding="utf-8", errors="replace")
    program = root / str(config.get("program", "program.md"))
    return (program.read_text(encoding="utf-8", errors="replace") if program.is_file() else "", files,
            str(root) if files else "(workspace not found: files left out of both prompts)")


def proposals(exps: list[Experiment], recent: int) -> dict[str, Any]:
    """The session's own proposals, counted: repeats, and failures to run."""
    seen_desc: dict[str, int] = {}
    seen_change: dict[frozenset[str], int] = {}
    failed_dirs: set[str] = set()
    listed = 0  # proposals so far, for "was the earlier one still listed line by line"
    out: dict[str, Any] = {"proposals": 0, "repeat_description": 0, "repeat_change": 0, "repeats": 0,
                           "repeats_of_listed": 0, "failed_to_run": 0, "crash": 0, "timeout": 0, "invalid": 0,
                           "failed_in_failed_direction": 0, "examples": []}
    order: dict[int, int] = {}
    for e in exps:
        if e.kind != "experiment" or e.meta.get("remeasures"):
            continue
        out["proposals"] += 1
        order[e.id] = listed
        listed += 1
        if e.status in memory.FAILED_TO_RUN:
            out["failed_to_run"] += 1
            out[e.status] += 1
            key = memory.group_key(e)
            if key in failed_dirs:
                out["failed_in_failed_direction"] += 1
            failed_dirs.add(key)
        if e.description.startswith("(invalid answer)"):
            continue
        desc, change = memory.description_key(e), memory.change_key(e)
        earlier = seen_desc.get(desc)
        by_change = seen_change.get(change) if change else None
        if earlier is not None:
            out["repeat_description"] += 1
        if by_change is not None:
            out["repeat_change"] += 1
        found = [i for i in (earlier, by_change) if i is not None]
        first = min(found) if found else None
        if first is not None:
            out["repeats"] += 1
            if order[e.id] - order[first] <= recent:
                out["repeats_of_listed"] += 1
            if len(out["examples"]) < 5:
                out["examples"].append(f"#{e.id} “{e.description}” repeats #{first}")
        seen_desc.setdefault(desc, e.id)
        if change:
            seen_change.setdefault(change, e.id)
    return out


def measure(path: Path, tag: str | None, recent: int, scratch: Path) -> dict[str, Any]:
    j = Journal(copy_journal(path, scratch))
    try:
        session = j.session(tag) if tag else j.latest_session()
        if session is None:
            raise SystemExit(f"{path}: no session {tag!r}" if tag else f"{path}: no session")
        cfg = session.config
        program, files, files_from = _files(cfg, path)
        history = j.experiments(session.tag)
        budget = float(cfg.get("budget", 60.0))
        curves = of_experiments(j, history, budget)
        sigma = session_noise(j, session.tag, float(cfg.get("min_sigma", 0.0))).sigma
        rows = []
        for k, e in enumerate(history):
            if e.kind != "experiment":
                continue
            before = history[:k]
            incumbent = next((x for x in reversed(before) if x.status == "keep"), None)
            if incumbent is None:
                continue
            plain = Context(program=program, files=files, incumbent=incumbent, history=before, feedback=[], sigma=sigma)
            text = memory.generate(j, session.tag, upto=e.id)
            ids = {x.id for x in before}
            rich = Context(program=program, files=files, incumbent=incumbent, history=before, feedback=[], sigma=sigma,
                           memory=text, curves={i: c for i, c in curves.items() if i in ids})
            without, with_ = build(plain, recent=recent).chars(), build(rich, recent=recent).chars()
            rows.append({"experiment": e.id, "n_before": len(before), "without": without, "with": with_,
                         "memory_chars": len(text), "memory_lines": len(text.splitlines()),
                         "curve_lines": json.dumps(build(rich, recent=recent).messages).count("loss at ")})
        return {"journal": str(path), "tag": session.tag, "budget": budget, "files_from": files_from,
                "experiments": sum(e.kind == "experiment" for e in history),
                "with_curves": sum(1 for e in history if e.id in curves and e.kind == "experiment"),
                "statuses": {s: sum(e.status == s for e in history if e.kind == "experiment")
                             for s in sorted({e.status for e in history if e.kind == "experiment"})},
                "agents": sorted({e.agent for e in history if e.kind == "experiment"}),
                "rows": rows, "counts": proposals(history, recent)}
    finally:
        j.close()


def _pct(n: int, d: int) -> str:
    return f"{n} ({n / d:.0%})" if d else str(n)


def report(results: list[dict[str, Any]], load: tuple[list[float], list[float]], live: str, argv: list[str],
           recent: int) -> str:
    out = ["# Research memory and loss curves in the prompt: their size, and the figures they should improve", "",
           f"`python bench/prompt_signals.py {' '.join(argv)}` on {platform.machine()}, python "
           f"{platform.python_version()} ({dt.date.today()}). Load average (1/5/15 min) at the start "
           f"{'/'.join(f'{x:.2f}' for x in load[0])}, at the end {'/'.join(f'{x:.2f}' for x in load[1])} "
           f"({os.cpu_count()} CPUs, shared with other work; nothing here is timed).", "",
           "Each experiment's prompt is rebuilt as it would have been when it was proposed (the experiments before it, "
           "as they were finally decided), without and with the research memory and the loss-curve lines; tokens are "
           "estimated as characters / 4. No API is called.", "",
           f"**Proposal quality with vs without (fewer crashes, fewer repeats): {live}.** The counts below are the "
           "baseline such a comparison would be measured against: what the recorded session's agent did without "
           "either signal."]
    for r in results:
        rows, c = r["rows"], r["counts"]
        out += ["", f"## {r['journal']} (session {r['tag']})", ""] + ([r["note"], ""] if r.get("note") else []) + [
                f"{r['experiments']} experiments by {', '.join(r['agents']) or '—'} "
                f"({', '.join(f'{n} {s}' for s, n in r['statuses'].items())}); {r['with_curves']} with a loss curve; "
                f"budget {r['budget']:g} s; editable files from {r['files_from']}.", ""]
        if rows:
            picks = sorted({0, len(rows) // 4, len(rows) // 2, 3 * len(rows) // 4, len(rows) - 1})
            out += ["| proposal for | experiments before | prompt without, chars (tokens est.) | with, chars (tokens est.) "
                    "| added tokens | memory lines | curve lines |", "|---|---:|---:|---:|---:|---:|---:|"]
            for i in picks:
                x = rows[i]
                out.append(f"| #{x['experiment']} | {x['n_before']} | {x['without']:,} ({x['without'] // 4:,}) | "
                           f"{x['with']:,} ({x['with'] // 4:,}) | {(x['with'] - x['without']) // 4:+,} | "
                           f"{x['memory_lines']} | {x['curve_lines']} |")
            added = [(x["with"] - x["without"]) / 4 for x in rows]
            ratio = [x["with"] / x["without"] for x in rows]
            out += ["", f"Over all {len(rows)} prompts: {statistics.fmean(added):,.0f} tokens added on average "
                        f"(at most {max(added):,.0f}), the prompt {statistics.fmean(ratio):.2f}× as long on average "
                        f"(at most {max(ratio):.2f}×); the memory at most {max(x['memory_lines'] for x in rows)} lines "
                        f"and {max(x['memory_chars'] for x in rows):,} characters."]
        n = c["proposals"]
        out += ["", "| the session's proposals (no API) | count |", "|---|---:|",
                f"| proposals | {n} |",
                f"| repeated an earlier one (same description or same change) | {_pct(c['repeats'], n)} |",
                f"| … same description | {c['repeat_description']} |",
                f"| … same change (the same added lines) | {c['repeat_change']} |",
                f"| … of one still listed line by line in the prompt (last {recent}) | {c['repeats_of_listed']} |",
                f"| failed to run (crash, timeout, invalid) | {_pct(c['failed_to_run'], n)} |",
                f"| … crash / timeout / invalid | {c['crash']} / {c['timeout']} / {c['invalid']} |",
                f"| … in a direction that had failed to run before | {c['failed_in_failed_direction']} |"]
        if c["examples"]:
            out += ["", "Repeats: " + "; ".join(c["examples"]) + "."]
    out += ["", "## What this does not say", "",
            "Whether the memory and the curves make the agent's proposals better (fewer repeats, fewer crashes, more "
            "keeps) is measured only by proposing with and without them: Claude API calls on the same session "
            f"prefixes. {live[0].upper() + live[1:]}. The sweep agent ignores both signals (it reads only the "
            "config block and the history's settings), so a sweep session's figures are a floor, not a test."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("journals", nargs="+", type=Path, help="journal.db files (e.g. <workspace>/.overnight/journal.db)")
    ap.add_argument("--tag", default=None, help="the session (default: each journal's latest)")
    ap.add_argument("--recent", type=int, default=25, help="experiments listed line by line ([claude] recent)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--note", action="append", default=[],
                    help="what a journal's session is (once per journal, in their order): printed under its heading")
    args = ap.parse_args(argv)
    load0 = [round(x, 2) for x in os.getloadavg()]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        results = [measure(p, args.tag, args.recent, Path(scratch)) for p in args.journals]
    for r, note in zip(results, args.note, strict=False):
        r["note"] = note
    load1 = [round(x, 2) for x in os.getloadavg()]
    live = NO_KEY if not os.environ.get("ANTHROPIC_API_KEY") else (
        "not measured: this script makes no API calls (a live with/without run is not implemented)")
    shown = [str(p) for p in args.journals] + (["--tag", args.tag] if args.tag else []) + (
        ["--recent", str(args.recent)] if args.recent != 25 else []) + ["--note …"] * len(args.note)
    text = report(results, (load0, load1), live, shown, args.recent)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prompt_signals.md").write_text(text)
    (args.out / "prompt_signals.json").write_text(json.dumps(
        {"load_start": load0, "load_end": load1, "seconds": round(time.monotonic() - t0, 2), "live": live,
         "results": results}, indent=1) + "\n")
    print(text)
    print(f"load average {load0} → {load1}; written to {args.out / 'prompt_signals.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The research memory: a short "what we learned" document for one session, derived from the journal.

It says, with the numbers behind each claim, what was kept and by how much, which directions were tried without a
keep, what was tried more than once, what failed to run and with which error, and what is held for the human. The
agent reads it before the journal's lists (prompt.py); the human reads and edits it at
``<state_dir>/memory/<tag>.md``.

It is regenerated as the session goes, and the human's edits win and persist. The journal keeps the text last
generated (meta ``memory_generated:<tag>``); a regeneration is a three-way merge (merge3) of that text (the base),
the file as the human left it, and the new text: a line the human deleted stays deleted, a line they rewrote stays
rewritten, a line they added stays, and the new facts come in around them. Where both changed the same lines the
human's text replaces the generated hunk; where both only added lines at one place, the human's come first. A file
the human removed is written afresh; one that cannot be read or is not UTF-8 is left untouched (and said so in the
log), and the agent gets the generated text.

The holdout and out-of-distribution scores never appear in it: the agent reads it (loop._HIDDEN_EVIDENCE).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import merge3

from .journal import Experiment, Journal

log = logging.getLogger("overnight.memory")

# The document's length at most, in lines: older entries are condensed to stay within it.
MAX_LINES = 60
# Entries per section before the older ones are condensed into one line.
KEPT_SHOWN, HELD_SHOWN, DIRECTIONS_SHOWN, REPEATS_SHOWN, FAILED_SHOWN = 10, 4, 12, 6, 8

NOT_KEPT = ("discard", "crash", "timeout", "invalid", "pruned")
FAILED_TO_RUN = ("crash", "timeout", "invalid")
_CONSTANT = re.compile(r"^([A-Z][A-Z0-9_]*)\s*(?::[^=]*)?=")
_REMEASURED = re.compile(r"\s*\(re-measured on #\d+\)\s*$")


def path(state_dir: Path, tag: str) -> Path:
    return state_dir / "memory" / f"{tag}.md"


def _meta_key(tag: str) -> str:
    return f"memory_generated:{tag}"


# -- what the journal says -------------------------------------------------------------------------------------


def generate(journal: Journal, tag: str, *, upto: int | None = None) -> str:
    """The memory as the journal says it now (or as it said before experiment ``upto``): pure, writes nothing."""
    session = journal.session(tag)
    config = session.config if session is not None else {}
    exps = [e for e in journal.experiments(tag) if upto is None or e.id < upto]
    return summarize(tag, exps, metric=str(config.get("metric", "val_bpb")),
                     direction=str(config.get("direction", "minimize")))


def summarize(tag: str, history: Sequence[Experiment], *, metric: str = "val_bpb", direction: str = "minimize") -> str:
    """The memory of a session whose experiments so far are ``history`` (oldest first)."""
    sign = -1.0 if direction == "maximize" else 1.0  # sign * Δ < 0: better than the incumbent
    exps = [e for e in history if e.kind == "experiment" and e.is_final]
    out = [f"# What we learned — session {tag}", "",
           "Derived from the journal as the session goes. Edit freely: your edits stay when it is regenerated.",
           _standing(history, exps, metric)]

    kept = [e for e in exps if e.status == "keep"]
    if kept:
        lines = [f"- #{e.id} {_short(e.description)}: {_effect(e, metric)}" for e in kept[-KEPT_SHOWN:]]
        older = kept[:-KEPT_SHOWN]
        if older:
            total = sum(e.delta or 0.0 for e in older)
            lines.insert(0, f"- {len(older)} older keeps ({_ids(older)}): Δ {total:+.4f} {metric} together")
        out += ["", "## Kept (effect against the incumbent each was judged against)", *lines]

    held = [e for e in exps if e.status == "held"]
    if held:
        lines = [f"- #{e.id} {_short(e.description)}: {_effect(e, metric)}, held: the holdout check did not confirm it"
                 for e in held[-HELD_SHOWN:]]
        if len(held) > HELD_SHOWN:
            lines.insert(0, f"- {len(held) - HELD_SHOWN} older held ({_ids(held[:-HELD_SHOWN])})")
        out += ["", "## Held for the human (val improved, not kept)", *lines]

    directions = _directions(exps, sign, metric)
    if directions:
        out += ["", "## Directions tried and not kept (grouped by the constant changed, else the description's first "
                "words)", *directions]

    repeats = _repeats(exps)
    if repeats:
        out += ["", "## Tried more than once (the same description or the same change)", *repeats]

    failed = [e for e in exps if e.status in FAILED_TO_RUN]
    if failed:
        lines = [f"- #{e.id} {e.status}: {_short(e.description, 70)}" + (f" — {_short(_last_line(e.error), 110)}"
                                                                         if e.error else "")
                 for e in failed[-FAILED_SHOWN:]]
        if len(failed) > FAILED_SHOWN:
            older = failed[:-FAILED_SHOWN]
            lines.insert(0, f"- {len(older)} older: " + ", ".join(f"#{e.id} {e.status}" for e in older[-12:])
                         + (" …" if len(older) > 12 else ""))
        out += ["", "## Failed to run (crash, timeout, invalid), with the error's last line", *lines]

    if len(out) > MAX_LINES:
        out = out[:MAX_LINES - 1] + [f"… ({len(out) - MAX_LINES + 1} more lines cut)"]
    return "\n".join(out) + "\n"


def _standing(history: Sequence[Experiment], exps: list[Experiment], metric: str) -> str:
    counts: dict[str, int] = {}
    for e in exps:
        counts[e.status] = counts.get(e.status, 0) + 1
    text = f"{len(exps)} experiments decided" + (": " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                                                 if counts else "") + "."
    baseline = next((e for e in history if e.kind == "baseline" and e.status == "keep" and e.val_bpb is not None), None)
    incumbent = next((e for e in reversed(history) if e.status == "keep" and e.val_bpb is not None), None)
    if baseline is not None and baseline.val_bpb is not None:
        text += f" Baseline #{baseline.id}: {metric} {baseline.val_bpb:.4f}"
        if incumbent is not None and incumbent.val_bpb is not None and incumbent.id != baseline.id:
            text += (f"; incumbent #{incumbent.id}: {incumbent.val_bpb:.4f} "
                     f"({incumbent.val_bpb - baseline.val_bpb:+.4f})")
        text += "."
    return text


def _effect(exp: Experiment, metric: str) -> str:
    """Δ against its incumbent, in units of the pooled σ, over how many runs (the decision's own numbers)."""
    delta = exp.delta
    if delta is None:
        return f"{metric} {exp.val_bpb:.4f}" if exp.val_bpb is not None else "not measured"
    ev = exp.evidence or {}
    parts = []
    sigma = ev.get("sigma")
    if isinstance(sigma, (int, float)) and sigma > 0:
        parts.append(f"{abs(delta) / sigma:.1f}σ")
    runs = ev.get("candidate_n")
    if not isinstance(runs, int):
        cand = ev.get("candidate_runs")
        runs = len(cand) if isinstance(cand, list) else None
    if isinstance(runs, int):
        parts.append(f"{runs} run{'s' if runs != 1 else ''}")
    return f"Δ {delta:+.4f} {metric}" + (f" ({', '.join(parts)})" if parts else "")


def group_key(exp: Experiment) -> str:
    """A coarse name for what an experiment tried: the config constants its diff changes when it changes nothing
    else (``LR``, ``N_LAYER+N_HEAD``), the sweep's recorded directions, else the description's first three words."""
    names: set[str] = set()
    only_constants = True
    for line in _changed_lines(exp.diff):
        code = line[1:].split("#", 1)[0].strip()
        if not code:
            continue
        match = _CONSTANT.match(code)
        if match:
            names.add(match.group(1))
        else:
            only_constants = False
    if names and only_constants:
        return "+".join(sorted(names))
    directions = exp.meta.get("directions") if isinstance(exp.meta, dict) else None
    if isinstance(directions, dict) and directions:
        return "+".join(sorted(str(k) for k in directions))
    words = re.findall(r"[a-z][a-z'_-]*", _REMEASURED.sub("", exp.description).lower())
    return "“" + " ".join(words[:3]) + ("…" if len(words) > 3 else "") + "”" if words else "(no description)"


def change_key(exp: Experiment) -> frozenset[str]:
    """What an experiment's diff brings (its added lines, stripped; a pure deletion: its removed lines): two
    experiments with the same key made the same change. Empty without a diff."""
    added = {line[1:].strip() for line in _changed_lines(exp.diff) if line.startswith("+") and line[1:].strip()}
    if added:
        return frozenset(added)
    return frozenset("-" + line[1:].strip() for line in _changed_lines(exp.diff) if line[1:].strip())


def description_key(exp: Experiment) -> str:
    return " ".join(_REMEASURED.sub("", exp.description).lower().split())


def _changed_lines(diff: str) -> list[str]:
    return [line for line in (diff or "").splitlines()
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def _directions(exps: list[Experiment], sign: float, metric: str) -> list[str]:
    groups: dict[str, list[Experiment]] = {}
    for e in exps:
        if e.status in ("keep", "held", *NOT_KEPT) and not e.meta.get("remeasures"):
            groups.setdefault(group_key(e), []).append(e)
    failing = {k: g for k, g in groups.items() if any(e.status in NOT_KEPT for e in g)}
    if not failing:
        return []
    # The most tried first when cutting; shown in the order they were first tried, so the text moves little.
    chosen = sorted(failing, key=lambda k: (-sum(e.status in NOT_KEPT for e in failing[k]), failing[k][0].id))
    shown = sorted(chosen[:DIRECTIONS_SHOWN], key=lambda k: failing[k][0].id)
    lines = []
    for key in shown:
        group = failing[key]
        bad = [e for e in group if e.status in NOT_KEPT]
        good = [e for e in group if e.status in ("keep", "held")]
        counts: dict[str, int] = {}
        for e in bad:
            counts[e.status] = counts.get(e.status, 0) + 1
        not_kept = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        text = f"- {key}: {len(group)} tried, " + (
            ", ".join(f"{sum(e.status == st for e in good)} {st} ({_ids([e for e in good if e.status == st])})"
                      for st in ("keep", "held") if any(e.status == st for e in good))
            + f"; not kept: {not_kept}" if good else f"none kept ({not_kept})")
        measured = [e for e in bad if e.delta is not None]
        if measured:
            best = min(measured, key=lambda e: sign * (e.delta or 0.0))
            text += f"; best of those Δ {best.delta:+.4f} {metric} (#{best.id})"
        lines.append(text)
    rest = chosen[DIRECTIONS_SHOWN:]
    if rest:
        n = sum(sum(e.status in NOT_KEPT for e in failing[k]) for k in rest)
        lines.append(f"- {len(rest)} more directions, {n} experiments not kept (the journal has them)")
    return lines


def _repeats(exps: list[Experiment]) -> list[str]:
    by_desc: dict[str, list[Experiment]] = {}
    by_change: dict[frozenset[str], list[Experiment]] = {}
    for e in exps:
        if e.meta.get("remeasures") or e.description.startswith("(invalid answer)"):
            continue
        by_desc.setdefault(description_key(e), []).append(e)
        key = change_key(e)
        if key:
            by_change.setdefault(key, []).append(e)
    groups: list[list[Experiment]] = [g for g in by_desc.values() if len(g) > 1]
    seen = {tuple(e.id for e in g) for g in groups}
    groups += [g for g in by_change.values() if len(g) > 1 and tuple(e.id for e in g) not in seen]
    groups.sort(key=lambda g: g[0].id)
    lines = []
    for g in groups[-REPEATS_SHOWN:]:
        tries = ", ".join(f"#{e.id} {e.status}" + (f" {e.delta:+.4f}" if e.delta is not None else "") for e in g)
        lines.append(f"- “{_short(g[0].description, 70)}” ×{len(g)}: {tries}")
    if len(groups) > REPEATS_SHOWN:
        lines.insert(0, f"- {len(groups) - REPEATS_SHOWN} older repeats (the journal has them)")
    return lines


def _ids(exps: Sequence[Experiment], most: int = 8) -> str:
    ids = ", ".join(f"#{e.id}" for e in exps[-most:])
    return ("… " if len(exps) > most else "") + ids


def _short(text: str, n: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


# -- the human's copy ------------------------------------------------------------------------------------------


def read(state_dir: Path, tag: str) -> str | None:
    """The memory file as it stands (the human may have edited it); None when there is none or it cannot be read."""
    try:
        return path(state_dir, tag).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def merge(base: str, human: str, generated: str) -> str:
    """Three-way merge, the human's text winning where both changed the same lines (see the module's doc)."""
    z, a, b = base.splitlines(keepends=True), human.splitlines(keepends=True), generated.splitlines(keepends=True)
    out: list[str] = []
    for region in merge3.Merge3(z, a, b).merge_regions():
        kind = region[0]
        if kind == "unchanged":
            out += z[region[1]:region[2]]
        elif kind in ("a", "same"):
            out += a[region[1]:region[2]]
        elif kind == "b":
            out += b[region[1]:region[2]]
        else:  # conflict: (zstart, zend, astart, aend, bstart, bend)
            z1, z2, a1, a2, b1, b2 = (int(v) for v in region[1:7])
            out += _resolve(z[z1:z2], a[a1:a2], b[b1:b2])
    text = "".join(out)
    return text if not text or text.endswith("\n") else text + "\n"


def _resolve(z: list[str], a: list[str], b: list[str]) -> list[str]:
    """A region merge3 calls a conflict. merge3 lumps neighbouring changes together: a line the human deleted next
    to a line whose numbers changed is one conflict. Where the two sides' edits touch different base lines, both
    are taken; where they touch the same lines, the human's lines are. Lines both only inserted here: the human's,
    then the generated ones the human's do not already have."""
    if not z:
        return a + [line for line in b if line not in a]
    mine, theirs = _edits(z, a), _edits(z, b)
    for i1, i2, _ in mine:
        for k1, k2, _ in theirs:
            if (i1 < k2 and k1 < i2) or (i1 == i2 and k1 < i1 < k2) or (k1 == k2 and i1 < k1 < i2):
                return a
    # Apply both, in base order; at one base line an insertion goes before a change that starts there, the human's
    # insertion before the generated one.
    edits = sorted([(i1, i2 > i1, 0, i2, new) for i1, i2, new in mine] + [(k1, k2 > k1, 1, k2, new) for k1, k2, new in theirs])
    out: list[str] = []
    at = 0
    for i1, _, _, i2, new in edits:
        if i1 < at:  # two edits over one base line (cannot happen after the overlap check): the human's text
            return a
        out += z[at:i1] + new
        at = i2
    return out + z[at:]


def _edits(base: list[str], other: list[str]) -> list[tuple[int, int, list[str]]]:
    matcher = difflib.SequenceMatcher(a=base, b=other, autojunk=False)
    return [(i1, i2, other[j1:j2]) for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal"]


def refresh(journal: Journal, state_dir: Path, tag: str) -> str:
    """Regenerate the memory, merge it into the human's copy and write that copy: the text the agent should see.

    The journal remembers what was generated (the next merge's base) only once the file is written."""
    generated = generate(journal, tag)
    target = path(state_dir, tag)
    base = journal.meta(_meta_key(tag))
    for _ in range(3):
        try:
            before = _snapshot(target)
        except OSError as exc:
            log.warning("the research memory %s cannot be read (%s): left as it is; the agent sees the generated text",
                        target, exc.strerror or exc)
            return generated
        if before is None:
            merged = generated
        else:
            try:
                human = before[1].decode("utf-8").replace("\r\n", "\n")  # an editor's CRLF: the same lines
            except UnicodeDecodeError as exc:
                log.warning("the research memory %s is not UTF-8 (byte %d): left as it is; the agent sees the generated "
                            "text. Save it as UTF-8 to edit it again.", target, exc.start)
                return generated
            merged = merge(base if base is not None else "", human, generated)
            if merged == human:  # nothing new for the file (its mtime stays the human's)
                if base != generated:
                    journal.set_meta(_meta_key(tag), generated)
                return merged
        try:
            if _write_unless_changed(target, merged, before):
                journal.set_meta(_meta_key(tag), generated)
                return merged
        except OSError as exc:
            log.warning("the research memory %s cannot be written (%s)", target, exc.strerror or exc)
            return merged
    log.warning("the research memory %s kept changing while it was merged: left as it is this time", target)
    return merged


def _snapshot(target: Path) -> tuple[tuple[int, int], bytes] | None:
    """(mtime, size) and contents; None when the file does not exist."""
    try:
        st = target.stat()
        data = target.read_bytes()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size), data


def _write_unless_changed(target: Path, text: str, before: tuple[tuple[int, int], bytes] | None) -> bool:
    """Write atomically (a temporary file, then os.replace); False, writing nothing, when the file changed since
    ``before`` was read (the human saved meanwhile: merge again)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            now = _snapshot(target)
        except OSError:
            now = before
        if now != before:
            return False
        os.replace(tmp, target)
        tmp = ""
        return True
    finally:
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass

"""The agent's tools and the validation of what it sends back through them.

Three tools: ``edit`` (one exact search/replace in one editable file; several calls per answer are
fine), ``hypothesize`` (a hypothesis for the queue the human curates, grouped into a direction; any number, up to
a few) and ``propose`` (the description, the hypothesis and the queue idea it tests; it ends the answer). An answer is taken
whole or not at all: every edit must apply exactly once, in order, only to editable files, and the
result must parse. The errors are written for the model, which gets them in a repair turn.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

EDIT_TOOL: dict[str, Any] = {
    "name": "edit",
    "description": (
        "Replace one exact piece of text in an editable file. `old` must occur exactly once in the file as it "
        "stands after your previous edits in this answer (copy it verbatim, whitespace included, with enough "
        "surrounding lines to be unique). Call it once per change; several calls per answer are fine."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "workspace-relative path of an editable file"},
            "old": {"type": "string", "description": "the exact text to replace (non-empty, unique in the file)"},
            "new": {"type": "string", "description": "the replacement text"},
        },
        "required": ["path", "old", "new"],
    },
}

PROPOSE_TOOL: dict[str, Any] = {
    "name": "propose",
    "description": (
        "Submit this experiment, after your edit calls. Call it exactly once, last. The description is what "
        "the journal, the results table and the human see: one line, specific (what changed, from what to what)."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "description": {"type": "string", "description": "one line, under 100 characters"},
            "hypothesis": {"type": "string", "description": "why this should lower val_bpb within the fixed budget"},
            "idea": {"type": "integer", "description": "the id of the queue idea this experiment tests, if it tests one"},
        },
        "required": ["description", "hypothesis"],
    },
}

HYPOTHESIZE_TOOL: dict[str, Any] = {
    "name": "hypothesize",
    "description": (
        "State a hypothesis you mean to test in a later experiment, for the idea queue the human curates (they "
        "approve or veto it before compute is spent on it). Group it into a short direction such as `optimizer`, "
        "`attention`, `data order`. Optional; at most three per answer; never one already in the queue."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "direction": {"type": "string", "description": "a short lower-case name grouping related ideas"},
            "text": {"type": "string", "description": "one line: what to change and what it should do"},
        },
        "required": ["direction", "text"],
    },
}

TOOLS = (EDIT_TOOL, HYPOTHESIZE_TOOL, PROPOSE_TOOL)
# Hypotheses one answer may state: the queue is the human's to read, not a dump.
MAX_HYPOTHESES = 3


@dataclass(frozen=True)
class SearchReplace:
    path: str
    old: str
    new: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    input: Any


@dataclass(frozen=True)
class Checked:
    """An answer that passed: the new files (only those that changed), the edits, the proposal's words."""

    files: dict[str, str]
    edits: tuple[SearchReplace, ...]
    description: str
    hypothesis: str
    ideas: tuple[tuple[str, str], ...] = ()  # (direction, text) stated with hypothesize
    idea: int | None = None  # the queue idea the proposal tests


@dataclass(frozen=True)
class Rejected:
    """An answer that did not pass: one result text per tool call (by id), and a summary for the model."""

    results: dict[str, str]
    summary: str


class EditError(ValueError):
    pass


def apply_edits(files: dict[str, str], edits: tuple[SearchReplace, ...] | list[SearchReplace]) -> dict[str, str]:
    """The editable files after the edits, in order; EditError (a message for the model) if one does not apply."""
    out = dict(files)
    for k, e in enumerate(edits, 1):
        if e.path not in out:
            raise EditError(f"edit {k}: {e.path!r} is not an editable file (editable: {', '.join(sorted(files))})")
        if not e.old:
            raise EditError(f"edit {k}: `old` is empty; give the exact text to replace")
        if e.old == e.new:
            raise EditError(f"edit {k}: `old` and `new` are the same; the edit changes nothing")
        text = out[e.path]
        n = text.count(e.old)
        if n == 0:
            raise EditError(f"edit {k}: `old` does not occur in {e.path}{_closest(text, e.old)}")
        if n > 1:
            raise EditError(f"edit {k}: `old` occurs {n} times in {e.path}; include more surrounding lines to make it unique")
        out[e.path] = text.replace(e.old, e.new, 1)
    return out


def _closest(text: str, old: str) -> str:
    first = old.strip().splitlines()[0] if old.strip() else ""
    match = difflib.get_close_matches(first, [line.strip() for line in text.splitlines()], n=1, cutoff=0.6)
    return f" (closest line in the file: {match[0]!r}; copy the text verbatim)" if match else " (copy the text verbatim)"


def check_syntax(files: dict[str, str]) -> None:
    for rel, source in files.items():
        if rel.endswith(".py"):
            try:
                compile(source, rel, "exec")
            except SyntaxError as exc:
                raise EditError(f"after your edits {rel} does not parse: line {exc.lineno}: {exc.msg}") from None


def _edit(call: ToolCall) -> SearchReplace:
    raw = call.input
    if not isinstance(raw, dict):
        raise EditError("the edit tool's input must be an object with path, old and new")
    missing = [k for k in ("path", "old", "new") if not isinstance(raw.get(k), str)]
    if missing:
        raise EditError(f"the edit tool's input needs string fields {', '.join(missing)}")
    return SearchReplace(str(raw["path"]), str(raw["old"]), str(raw["new"]))


def check_answer(files: dict[str, str], calls: list[ToolCall]) -> Checked | Rejected:
    """Validate one answer's tool calls against the files it was written for."""
    results = {c.id: "ok" for c in calls}
    edits: list[SearchReplace] = []
    ideas: list[tuple[str, str]] = []
    problems: list[str] = []
    propose: ToolCall | None = None
    idea: int | None = None
    for call in calls:
        if call.name == "edit":
            try:
                edits.append(_edit(call))
            except EditError as exc:
                results[call.id] = str(exc)
                problems.append(str(exc))
        elif call.name == "hypothesize":
            raw_h = call.input if isinstance(call.input, dict) else {}
            direction, text = str(raw_h.get("direction") or "").strip(), str(raw_h.get("text") or "").strip()
            if not direction or not text:
                results[call.id] = "hypothesize needs a non-empty direction and text"
                problems.append(results[call.id])
            elif len(ideas) >= MAX_HYPOTHESES:
                results[call.id] = f"at most {MAX_HYPOTHESES} hypothesize calls per answer"
                problems.append(results[call.id])
            else:
                ideas.append((direction[:60], " ".join(text.split())[:300]))
        elif call.name == "propose":
            if propose is not None:
                results[call.id] = "propose was called more than once: call it once, last"
                problems.append(results[call.id])
            propose = call
        else:
            results[call.id] = f"unknown tool {call.name!r}: use edit, hypothesize and propose"
            problems.append(results[call.id])
    description = hypothesis = ""
    if propose is None:
        problems.append("no propose call: after your edits, call propose with a description and a hypothesis")
    else:
        raw = propose.input if isinstance(propose.input, dict) else {}
        description = str(raw.get("description") or "").strip().splitlines()[0] if str(raw.get("description") or "").strip() else ""
        hypothesis = str(raw.get("hypothesis") or "").strip()
        raw_idea = raw.get("idea")
        if raw_idea is not None and (isinstance(raw_idea, bool) or not isinstance(raw_idea, int)):
            results[propose.id] = "propose's idea must be the integer id of a queue idea (or left out)"
            problems.append(results[propose.id])
        elif raw_idea is not None:
            idea = raw_idea
        if not description:
            results[propose.id] = "propose needs a non-empty one-line description"
            problems.append(results[propose.id])
    if not edits and not problems:
        problems.append("no edit calls: change the code with the edit tool before calling propose")
    new_files: dict[str, str] = {}
    if not problems:
        try:
            new_files = apply_edits(files, edits)
            check_syntax({rel: new_files[rel] for rel in new_files if new_files[rel] != files[rel]})
        except EditError as exc:
            problems.append(str(exc))
            bad = next((c for c in calls if c.name == "edit"), None)
            if bad is not None:
                results[bad.id] = str(exc)
    if problems:
        for call_id, text in results.items():
            if text == "ok":
                results[call_id] = "not applied: the answer was refused as a whole (see the other errors)"
        return Rejected(results, "; ".join(problems))
    changed = {rel: text for rel, text in new_files.items() if text != files[rel]}
    if not changed:
        return Rejected({c.id: "the edits change nothing" for c in calls}, "the edits leave the files unchanged")
    return Checked(changed, tuple(edits), description[:200], hypothesis, tuple(ideas), idea)

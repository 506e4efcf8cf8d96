"""Replays proposals from a file, in order: reproduce a session on new hardware, or script a test.

The file is JSON Lines; each line is one proposal::

    {"description": "halve the LR", "patch": "--- a/trainer/train.py\\n+++ ...", "hypothesis": "..."}
    {"description": "...", "files": {"trainer/train.py": "<whole new content>"}}

A proposal's optional "reasoning" is recorded with it and sent to clients as the agent's thought. Its optional
"ideas" (``[{"direction": "optimizer", "text": "...", "key": "..."}]``) are the hypotheses it states for the queue, and
"idea" names (by key) the one it tests.

Position is derived from the journal (how many replayed experiments the session already has), so
a resumed session continues where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..ideas import Draft
from ..workspace import Edit
from .base import Agent, AgentError, Context, Proposal


def _drafts(raw: Any, where: str) -> tuple[Draft, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(
            isinstance(d, dict) and isinstance(d.get("direction"), str) and isinstance(d.get("text"), str)
            and isinstance(d.get("key", ""), str) for d in raw):
        raise AgentError(f"{where}: \"ideas\" must be a list of {{\"direction\", \"text\", \"key\"?}} objects")
    return tuple(Draft(direction=d["direction"], text=d["text"], key=d.get("key") or None) for d in raw)


def _proposal(entry: Any, where: str) -> Proposal:
    if not isinstance(entry, dict):
        raise AgentError(f"{where}: each proposal must be a JSON object")
    description = entry.get("description")
    if not isinstance(description, str) or not description.strip():
        raise AgentError(f"{where}: a proposal needs a non-empty \"description\"")
    patch, files = entry.get("patch"), entry.get("files")
    if (patch is None) == (files is None):
        raise AgentError(f"{where}: give exactly one of \"patch\" (a unified diff) or \"files\" (path → content)")
    if patch is not None and not isinstance(patch, str):
        raise AgentError(f"{where}: \"patch\" must be a string")
    if files is not None and not (
        isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
    ):
        raise AgentError(f"{where}: \"files\" must map paths to file contents")
    edit = Edit(patch=patch) if patch is not None else Edit(files=tuple((files or {}).items()))
    idea = entry.get("idea")
    if idea is not None and not isinstance(idea, str):
        raise AgentError(f"{where}: \"idea\" must be the key of one of the ideas")
    return Proposal(
        description=description.strip(),
        edit=edit,
        hypothesis=str(entry.get("hypothesis", "")),
        reasoning=str(entry.get("reasoning", "")),
        meta={"replay_index": None},
        ideas=_drafts(entry.get("ideas"), where),
        idea_key=idea,
    )


class ReplayAgent(Agent):
    name = "replay"

    def __init__(self, proposals: list[Proposal]) -> None:
        super().__init__()
        self.proposals = proposals

    @classmethod
    def from_file(cls, path: Path) -> ReplayAgent:
        if not path.is_file():
            raise AgentError(f"replay file {path} does not exist (set replay_file in overnight.toml or pass --replay-file)")
        proposals = []
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise AgentError(f"replay file {path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
        except OSError as exc:
            raise AgentError(f"replay file {path} cannot be read: {exc.strerror}") from None
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AgentError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from None
            proposals.append(_proposal(entry, f"{path}:{lineno}"))
        return cls(proposals)

    def propose(self, ctx: Context) -> Proposal | None:
        done = sum(1 for exp in ctx.history if exp.agent == self.name and exp.kind == "experiment")
        if done >= len(self.proposals):
            return None
        p = self.proposals[done]
        if p.reasoning:  # a replayed proposal's recorded reasoning is what the agent thought
            self.on_thought(p.reasoning, True)
        return Proposal(p.description, p.edit, p.hypothesis, p.reasoning, {"replay_index": done}, ideas=p.ideas,
                        idea_key=p.idea_key)

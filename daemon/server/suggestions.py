"""Suggestions over the wire: per-client views, accept through ``workspace/applyEdit``, reject, CodeLens.

Every client sees the suggestions anchored in *its own* text of each editable file: the live buffer
when it has the document open (pygls document sync), the file on disk otherwise. Each connection
remembers what it was last sent; ``push`` sends only what changed (``suggestionAdded`` replaces a
client's copy with the same id, ``suggestionRemoved`` drops one), after every journal change and
every edit of the client's buffer.

Accept never writes a file: the daemon asks the client to apply a versioned edit, so it lands in
the buffer the hunks were anchored in (or is refused when that buffer moved on), and is undoable.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from pygls import uris
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer

from overnight.protocol import types as t

from ..commands import DecideHunks
from ..suggestions import PendingHunk, PendingSuggestion, suggestion_id, suggestion_path
from .core import DaemonCore, call_in_thread
from .files import read_editable

log = logging.getLogger("overnight.daemon")


class InvalidState(JsonRpcException):
    CODE = t.ErrorCode.INVALID_STATE


class NotFound(JsonRpcException):
    CODE = t.ErrorCode.NOT_FOUND


@dataclass(frozen=True)
class UserText:
    """One client's text of one editable file: its open buffer (with its version) or the file on disk."""

    path: str
    uri: str
    text: str
    version: int | None


def _relative(root: Path, uri: str) -> str | None:
    try:
        return Path(uris.to_fs_path(uri) or "").resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def relative(core: DaemonCore, uri: str) -> str | None:
    """The workspace-relative path of a document URI; None outside the workspace."""
    return _relative(core.cfg.root, uri)


def relative_path(root: Path, uri: str) -> str:
    """For display: the workspace-relative path, or the URI itself."""
    return _relative(root, uri) or uri


def user_texts(ls: LanguageServer, core: DaemonCore) -> dict[str, UserText]:
    """Snapshot (on the event loop, where document sync mutates them) of this client's editable files."""
    texts: dict[str, UserText] = {}
    for uri, doc in list(ls.workspace.text_documents.items()):
        path = relative(core, uri)
        if path in core.cfg.editable:
            texts[path] = UserText(path, uri, doc.source, doc.version)
    for path in core.cfg.editable:
        if path not in texts:
            disk = core.cfg.root / path
            text = read_editable(core.cfg.root, path, core.cfg.editable)
            if text is not None:  # a missing, unreadable or irregular file has no suggestions
                texts[path] = UserText(path, uris.from_fs_path(str(disk)) or disk.as_uri(), text, None)
    return texts


def _range(hunk: PendingHunk) -> lsp.Range:
    return lsp.Range(start=lsp.Position(*hunk.start), end=lsp.Position(*hunk.end))


def to_wire(pending: PendingSuggestion, uri: str) -> t.Suggestion:
    return t.Suggestion(
        id=pending.id, uri=uri, experiment_ids=list(pending.experiment_ids), evidence=pending.evidence,
        state=t.SuggestionState.PENDING,
        hunks=[t.Hunk(id=h.id, range=_range(h), old_text=h.old_text, new_text=h.new_text,
                      experiment_ids=list(h.experiment_ids), evidence=h.evidence or None) for h in pending.hunks],
    )


def views(core: DaemonCore, texts: dict[str, UserText]) -> dict[str, tuple[PendingSuggestion, UserText]]:
    """Pending suggestions for these texts, by suggestion id (runs in a worker thread: git and SQLite)."""
    tag = core.tag
    if not tag:
        return {}
    result = {}
    for path, text in texts.items():
        pending = core.suggestions.view(tag, path, text.text).suggestion
        if pending is not None:
            result[pending.id] = (pending, text)
    return result


class Reservations:
    """Hunks being accepted right now, daemon-wide: two clients accepting one hunk get one edit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: set[tuple[str, str]] = set()

    def take(self, keys: list[tuple[str, str]]) -> bool:
        with self._lock:
            if self._held.intersection(keys):
                return False
            self._held.update(keys)
            return True

    def release(self, keys: list[tuple[str, str]]) -> None:
        with self._lock:
            self._held.difference_update(keys)


class SuggestionFeature:
    """The suggestion methods and the per-connection push, for one connection's server object."""

    def __init__(self, ls: LanguageServer, core: DaemonCore, reservations: Reservations) -> None:
        self.ls, self.core, self.reservations = ls, core, reservations
        self.sent: dict[str, tuple[t.Suggestion, tuple[str, ...]]] = {}  # id → (what was sent, its hunk keys)
        self._push_lock = asyncio.Lock()  # pushes in order: never an older view after a newer one

    async def current(self) -> dict[str, tuple[PendingSuggestion, UserText]]:
        texts = user_texts(self.ls, self.core)
        return dict(await call_in_thread(lambda: views(self.core, texts)))

    async def push(self) -> None:
        """Send this client what changed since the last push: added or re-anchored, and removed."""
        async with self._push_lock:
            now = await self.current()
            wire = {sid: (to_wire(p, text.uri), tuple(h.key for h in p.hunks)) for sid, (p, text) in now.items()}
            for sid, (suggestion, _keys) in wire.items():
                if self.sent.get(sid, (None,))[0] != suggestion:
                    self.ls.protocol.notify(t.OVERNIGHT_SUGGESTION_ADDED, t.SuggestionAddedParams(suggestion=suggestion))
            for sid in self.sent.keys() - wire.keys():
                state, reason = await call_in_thread(functools.partial(self._removal, sid, wire))
                self.ls.protocol.notify(t.OVERNIGHT_SUGGESTION_REMOVED,
                                        t.SuggestionRemovedParams(id=sid, state=state, reason=reason))
            self.sent = wire

    def _removal(self, sid: str, now: dict[str, Any]) -> tuple[t.SuggestionState, str]:
        suggestion, keys = self.sent[sid]
        decided = self.core.journal.hunk_decisions(self.core.tag or "", suggestion_path(sid) or "")
        states = {decided.get(k) for k in keys}
        if states == {"rejected"}:
            return t.SuggestionState.REJECTED, "rejected"
        if "accepted" in states and states <= {"accepted", "rejected"}:
            return t.SuggestionState.ACCEPTED, "accepted"
        if any(other.split("@")[0] == sid.split("@")[0] for other in now):
            return t.SuggestionState.EXPIRED, "replaced by a newer suggestion (a later experiment was kept)"
        return t.SuggestionState.EXPIRED, "no longer applies: your version of the file has these changes, or changed these lines"

    # -- requests ---------------------------------------------------------------------------------

    async def list_pending(self, params: t.ListSuggestionsParams) -> t.SuggestionList:
        path = relative(self.core, params.uri) if params.uri else None
        now = await self.current()
        return t.SuggestionList(items=[to_wire(p, text.uri) for p, text in now.values() if path in (None, p.path)])

    def _find(self, now: dict[str, tuple[PendingSuggestion, UserText]], sid: str,
              hunk: str | None) -> tuple[PendingSuggestion, UserText, list[PendingHunk]]:
        if sid not in now:
            if self.core.tag and suggestion_path(sid) in self.core.cfg.editable:
                raise InvalidState(message=f"suggestion {sid} is no longer pending (accepted, rejected, replaced by a "
                                           "newer one, or your code changed those lines): list the suggestions again")
            raise NotFound(message=f"no suggestion {sid}")
        pending, text = now[sid]
        hunks = [h for h in pending.hunks if hunk is None or h.id == hunk]
        if not hunks:
            raise InvalidState(message=f"hunk {hunk} of suggestion {sid} is no longer pending")
        return pending, text, hunks

    async def accept(self, params: t.AcceptSuggestionParams) -> t.AcceptSuggestionResult:
        now = await self.current()
        pending, text, hunks = self._find(now, params.id, params.hunk_id)
        keys = [(pending.path, h.key) for h in hunks]
        if not self.reservations.take(keys):
            raise InvalidState(message="another client is accepting this change right now")
        try:
            edit = lsp.WorkspaceEdit(document_changes=[lsp.TextDocumentEdit(
                text_document=lsp.OptionalVersionedTextDocumentIdentifier(uri=text.uri, version=text.version),
                edits=[lsp.TextEdit(range=_range(h), new_text=h.new_text) for h in hunks],
            )])
            label = f"Overnight: accept {', '.join(f'#{i}' for i in pending.experiment_ids)}"
            try:
                result = await self.ls.workspace_apply_edit_async(lsp.ApplyWorkspaceEditParams(edit=edit, label=label))
            except Exception as exc:  # the client vanished or does not do applyEdit: nothing was applied
                log.info("applyEdit failed: %r", exc)
                return t.AcceptSuggestionResult(applied=False, message=f"the editor did not apply the edit: {exc}")
            if not result.applied:
                reason = result.failure_reason or "the editor refused the edit (did the buffer change meanwhile?)"
                return t.AcceptSuggestionResult(applied=False, message=f"{reason}; the suggestion stays pending")
            await self._record(pending, hunks, "accepted")
        finally:
            self.reservations.release(keys)
        self.core.changed()
        return t.AcceptSuggestionResult(applied=True)

    async def reject(self, params: t.RejectSuggestionParams) -> t.RejectSuggestionResult:
        now = await self.current()
        pending, _, hunks = self._find(now, params.id, params.hunk_id)
        keys = [(pending.path, h.key) for h in hunks]
        if not self.reservations.take(keys):
            raise InvalidState(message="another client is accepting this change right now")
        try:
            await self._record(pending, hunks, "rejected", (params.reason or "").strip())
        finally:
            self.reservations.release(keys)
        self.core.changed()
        return t.RejectSuggestionResult()

    async def _record(self, pending: PendingSuggestion, hunks: list[PendingHunk], state: str, reason: str = "") -> None:
        tag = self.core.tag or ""
        ids = sorted({i for h in hunks for i in h.experiment_ids})
        command = DecideHunks(tag=tag, path=pending.path, keys=tuple(h.key for h in hunks), state=state,
                              suggestion_id=pending.id, experiment_ids=tuple(ids), reason=reason)
        await call_in_thread(lambda: self.core.decide_hunks(command))

    async def code_lenses(self, uri: str) -> list[lsp.CodeLens]:
        path = relative(self.core, uri)
        if path not in self.core.cfg.editable:
            return []
        lenses = []
        for pending, _ in (await self.current()).values():
            if pending.path != path:
                continue
            for h in pending.hunks:
                at = lsp.Range(start=lsp.Position(h.start[0], 0), end=lsp.Position(h.start[0], 0))
                ids = list(h.experiment_ids)
                # Server commands (execute.py): any client runs them through workspace/executeCommand.
                lenses.append(lsp.CodeLens(range=at, command=lsp.Command(
                    title="✓ Accept", command=t.SERVER_COMMAND_ACCEPT_SUGGESTION, arguments=[pending.id, h.id])))
                lenses.append(lsp.CodeLens(range=at, command=lsp.Command(
                    title="✗ Reject", command=t.SERVER_COMMAND_REJECT_SUGGESTION, arguments=[pending.id, h.id])))
                if ids:
                    lenses.append(lsp.CodeLens(range=at, command=lsp.Command(
                        title=h.evidence or f"#{ids[-1]}", command=t.SERVER_COMMAND_SHOW_EXPERIMENT, arguments=[ids[-1]])))
        return lenses


__all__ = ["InvalidState", "NotFound", "Reservations", "SuggestionFeature", "suggestion_id"]

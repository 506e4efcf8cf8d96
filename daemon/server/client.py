"""A Python client of the daemon (the CLI's second-client commands, and tests): discover, authenticate, ask."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from pygls import uris
from pygls.io_ import run_async
from pygls.lsp.client import LanguageClient
from pygls.workspace import TextDocument

from overnight.protocol import types as t
from overnight.protocol.wire import OvernightProtocol, make_converter

from .. import __version__
from . import discovery


class NoDaemon(RuntimeError):
    """No daemon runs for this workspace."""


def apply_to_disk(root: Path, edit: lsp.WorkspaceEdit) -> list[Path]:
    """Apply a workspace edit to files on disk (the CLI has no buffers): each file atomically.

    Only for the user's own explicit accept from the command line, and only inside the workspace."""
    changes: list[tuple[str, list[lsp.TextEdit]]] = []
    for doc_change in edit.document_changes or []:
        if not isinstance(doc_change, lsp.TextDocumentEdit):
            raise ValueError("only text edits are supported")
        changes.append((doc_change.text_document.uri, [e for e in doc_change.edits if isinstance(e, lsp.TextEdit)]))
    changes += [(uri, list(edits)) for uri, edits in (edit.changes or {}).items()]
    written = []
    for uri, edits in changes:
        path = Path(uris.to_fs_path(uri) or "").resolve()
        path.relative_to(root.resolve())  # ValueError outside the workspace
        doc = TextDocument(uri, source=path.read_text(encoding="utf-8"))
        # Bottom-up, so earlier positions stay valid.
        for e in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
            doc.apply_change(lsp.TextDocumentContentChangePartial(range=e.range, text=e.new_text))
        tmp = path.with_name(f".{path.name}.overnight-accept")
        tmp.write_text(doc.source, encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written


class DaemonClient:
    def __init__(self, apply_edits_under: Path | None = None) -> None:
        """``apply_edits_under``: answer the daemon's ``workspace/applyEdit`` by writing files under this
        root (the CLI's `overnight accept`); otherwise such requests are refused."""
        self.client = LanguageClient("overnight-cli", __version__, protocol_cls=OvernightProtocol,
                                     converter_factory=make_converter)
        self.apply_edits_under = apply_edits_under
        self.applied: list[Path] = []

        def apply_edit(params: lsp.ApplyWorkspaceEditParams) -> lsp.ApplyWorkspaceEditResult:
            return self._apply_edit(params)

        self.client.feature(lsp.WORKSPACE_APPLY_EDIT)(apply_edit)  # a plain function: pygls tags it

        self.notifications: list[tuple[str, Any]] = []
        self.messages: list[lsp.ShowMessageParams] = []  # window/showMessage: what an editor would pop up

        def show_message(params: lsp.ShowMessageParams) -> None:
            self.messages.append(params)

        self.client.feature(lsp.WINDOW_SHOW_MESSAGE)(show_message)
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        for method in (t.OVERNIGHT_LOOP_STATE_CHANGED, t.OVERNIGHT_EXPERIMENT_STARTED, t.OVERNIGHT_PROGRESS,
                       t.OVERNIGHT_EXPERIMENT_FINISHED, t.OVERNIGHT_SUGGESTION_ADDED, t.OVERNIGHT_SUGGESTION_REMOVED,
                       t.OVERNIGHT_AGENT_THOUGHT):
            self.client.feature(method)(self._collector(method))

    def _apply_edit(self, params: lsp.ApplyWorkspaceEditParams) -> lsp.ApplyWorkspaceEditResult:
        if self.apply_edits_under is None:
            return lsp.ApplyWorkspaceEditResult(applied=False, failure_reason="this client does not edit files")
        try:
            self.applied += apply_to_disk(self.apply_edits_under, params.edit)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            return lsp.ApplyWorkspaceEditResult(applied=False, failure_reason=str(exc))
        return lsp.ApplyWorkspaceEditResult(applied=True)

    def _collector(self, method: str) -> Any:
        def collect(params: Any) -> None:
            self.notifications.append((method, params))

        return collect

    async def connect(self, host: str, port: int, token: str, version: str = t.PROTOCOL_VERSION,
                      options: dict[str, Any] | None = None) -> lsp.InitializeResult:
        reader, writer = await asyncio.open_connection(host, port, limit=16 * 1024 * 1024)
        self._writer = writer
        self.client.protocol.set_writer(writer)
        self._task = asyncio.ensure_future(run_async(stop_event=threading.Event(), reader=reader,
                                                     protocol=self.client.protocol))
        return await self.client.initialize_async(lsp.InitializeParams(
            capabilities=lsp.ClientCapabilities(workspace=lsp.WorkspaceClientCapabilities(
                apply_edit=self.apply_edits_under is not None,
                workspace_edit=lsp.WorkspaceEditClientCapabilities(document_changes=True))),
            process_id=None,
            initialization_options={**(options or {}), "token": token, "protocolVersion": version},
        ))

    async def connect_workspace(self, state_dir: Path, options: dict[str, Any] | None = None) -> lsp.InitializeResult:
        info = discovery.read(state_dir)
        if info is None:
            raise NoDaemon(f"no Overnight daemon runs for this workspace (no live {discovery.path(state_dir)}); "
                           "start one with `overnight daemon --detach`")
        return await self.connect(info.host, info.port, info.token, options=options)

    async def request(self, method: str, params: Any) -> Any:
        return await self.client.protocol.send_request_async(method, params)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.client.shutdown_async(None), timeout=5)
            self.client.exit(None)
        except Exception:
            pass  # the daemon may already be gone; closing our end is all that is left
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()

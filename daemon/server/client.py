"""A Python client of the daemon (the CLI's second-client commands, and tests): discover, authenticate, ask."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from pygls.io_ import run_async
from pygls.lsp.client import LanguageClient

from overnight.protocol import types as t
from overnight.protocol.wire import OvernightProtocol, make_converter

from .. import __version__
from . import discovery


class NoDaemon(RuntimeError):
    """No daemon runs for this workspace."""


class DaemonClient:
    def __init__(self) -> None:
        self.client = LanguageClient("overnight-cli", __version__, protocol_cls=OvernightProtocol,
                                     converter_factory=make_converter)
        self.notifications: list[tuple[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        for method in (t.OVERNIGHT_LOOP_STATE_CHANGED, t.OVERNIGHT_EXPERIMENT_STARTED, t.OVERNIGHT_PROGRESS,
                       t.OVERNIGHT_EXPERIMENT_FINISHED, t.OVERNIGHT_SUGGESTION_ADDED, t.OVERNIGHT_SUGGESTION_REMOVED,
                       t.OVERNIGHT_AGENT_THOUGHT):
            self.client.feature(method)(self._collector(method))

    def _collector(self, method: str) -> Any:
        def collect(params: Any) -> None:
            self.notifications.append((method, params))

        return collect

    async def connect(self, host: str, port: int, token: str, version: str = t.PROTOCOL_VERSION) -> lsp.InitializeResult:
        reader, writer = await asyncio.open_connection(host, port, limit=16 * 1024 * 1024)
        self._writer = writer
        self.client.protocol.set_writer(writer)
        self._task = asyncio.ensure_future(run_async(stop_event=threading.Event(), reader=reader,
                                                     protocol=self.client.protocol))
        return await self.client.initialize_async(lsp.InitializeParams(
            capabilities=lsp.ClientCapabilities(), process_id=None,
            initialization_options={"token": token, "protocolVersion": version},
        ))

    async def connect_workspace(self, state_dir: Path) -> lsp.InitializeResult:
        info = discovery.read(state_dir)
        if info is None:
            raise NoDaemon(f"no Overnight daemon runs for this workspace (no live {discovery.path(state_dir)}); "
                           "start one with `overnight daemon --detach`")
        return await self.connect(info.host, info.port, info.token)

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

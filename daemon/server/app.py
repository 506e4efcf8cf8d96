"""The daemon process: a loopback TCP server, one pygls server object per connection, one shared core."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

from lsprotocol import types as lsp
from pygls import uris
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer

from overnight.protocol import types as t
from overnight.protocol.wire import make_converter

from .. import __version__
from ..config import Config
from . import discovery
from .auth import DaemonProtocol
from .core import DaemonCore, call_in_thread
from .framing import serve_connection

log = logging.getLogger("overnight.daemon")

# One JSON-RPC message larger than this is refused (the connection is closed): no client needs it.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class _NotFound(JsonRpcException):
    CODE = t.ErrorCode.NOT_FOUND


def create_server(core: DaemonCore, token: str) -> LanguageServer:
    """A server object for one connection (a factory, so every connection and test gets a fresh one)."""

    class Protocol(DaemonProtocol):
        pass

    Protocol.token = token
    ls = LanguageServer("overnight", __version__, protocol_cls=Protocol, converter_factory=make_converter)

    @ls.feature(t.OVERNIGHT_STATUS)
    async def status(ls: LanguageServer, params: t.StatusParams) -> t.LoopStatus:
        return await call_in_thread(core.status)

    @ls.feature(t.OVERNIGHT_PAUSE)
    async def pause(ls: LanguageServer, params: t.PauseParams) -> t.LoopStatus:
        await call_in_thread(lambda: core.loop.pause(params.reason or ""))
        return await call_in_thread(core.status)

    @ls.feature(t.OVERNIGHT_RESUME)
    async def resume(ls: LanguageServer, params: t.ResumeParams) -> t.LoopStatus:
        await call_in_thread(core.loop.resume)
        return await call_in_thread(core.status)

    @ls.feature(t.OVERNIGHT_STOP)
    async def stop(ls: LanguageServer, params: t.StopParams) -> t.LoopStatus:
        if params.when == t.StopWhen.NOW:
            await call_in_thread(core.loop.stop)
        else:
            await call_in_thread(core.loop.stop_after_current)
        return await call_in_thread(core.status)

    @ls.feature(t.OVERNIGHT_REDIRECT)
    async def redirect(ls: LanguageServer, params: t.RedirectParams) -> t.RedirectResult:
        if not params.instruction.strip():
            raise JsonRpcException(code=-32602, message="the instruction is empty")
        try:
            feedback_id = await call_in_thread(lambda: core.loop.redirect(params.instruction.strip()))
        except Exception as exc:
            raise JsonRpcException(code=t.ErrorCode.INVALID_STATE, message=str(exc)) from None
        return t.RedirectResult(feedback_id=feedback_id)

    @ls.feature(t.OVERNIGHT_EXPERIMENTS_LIST)
    async def list_experiments(ls: LanguageServer, params: t.ListExperimentsParams) -> t.ExperimentList:
        return await call_in_thread(lambda: core.list_experiments(params))

    @ls.feature(t.OVERNIGHT_EXPERIMENTS_GET)
    async def get_experiment(ls: LanguageServer, params: t.GetExperimentParams) -> t.ExperimentDetail:
        detail = await call_in_thread(lambda: core.get_experiment(params.id))
        if detail is None:
            raise _NotFound(message=f"no experiment #{params.id}")
        return detail

    def _rel(uri: str) -> str | None:
        try:
            return Path(uris.to_fs_path(uri) or "").resolve().relative_to(core.cfg.root).as_posix()
        except ValueError:
            return None

    def _history(uri: str) -> tuple[list[str], dict[int, list[Any]]]:
        rel = _rel(uri)
        doc = ls.workspace.get_text_document(uri)
        if rel is None:
            return list(doc.lines), {}
        return list(doc.lines), core.line_history(rel, doc.source)

    @ls.feature(lsp.TEXT_DOCUMENT_INLAY_HINT)
    async def inlay_hints(ls: LanguageServer, params: lsp.InlayHintParams) -> list[lsp.InlayHint]:
        lines, history = await call_in_thread(lambda: _history(params.text_document.uri))
        hints = []
        for line in range(params.range.start.line, min(params.range.end.line + 1, len(lines))):
            touches = history.get(line)
            if touches:
                more = f" +{len(touches) - 1}" if len(touches) > 1 else ""
                hints.append(lsp.InlayHint(position=lsp.Position(line, len(lines[line].rstrip("\r\n"))),
                                           label=f"{touches[0].label}{more}", padding_left=True))
        return hints

    @ls.feature(lsp.TEXT_DOCUMENT_HOVER)
    async def hover(ls: LanguageServer, params: lsp.HoverParams) -> lsp.Hover | None:
        _, history = await call_in_thread(lambda: _history(params.text_document.uri))
        touches = history.get(params.position.line)
        if not touches:
            return None
        rows = [f"- **{tch.label}** — {tch.description}" for tch in touches]
        return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown,
                                                    value="Experiments that touched this line:\n\n" + "\n".join(rows)))

    return ls


class Daemon:
    """Owns the listening socket, the connections, and the core; ``serve`` runs until stopped."""

    def __init__(self, cfg: Config, core: DaemonCore, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the daemon runs code: it listens on loopback only")
        self.cfg, self.core, self.host, self.port = cfg, core, host, port
        self.token = discovery.new_token()
        self.clients: set[LanguageServer] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._aio: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None

    def broadcast(self, method: str, params: Any) -> None:
        """Thread-safe: the loop's thread hands notifications to the event loop, which sends them."""
        if self._aio is not None and not self._aio.is_closed():
            self._aio.call_soon_threadsafe(self._send_all, method, params)

    def _send_all(self, method: str, params: Any) -> None:
        for ls in list(self.clients):
            protocol = ls.protocol
            if isinstance(protocol, DaemonProtocol) and protocol.authenticated and protocol.writer is not None:
                try:
                    protocol.notify(method, params)
                except Exception:  # a client that went away mid-write is dropped by its reader task
                    log.debug("could not notify a client", exc_info=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ls = create_server(self.core, self.token)
        ls.protocol.set_writer(writer)
        self.clients.add(ls)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        log.info("client connected (%d attached)", len(self.clients))
        try:
            await serve_connection(reader, ls.protocol, MAX_MESSAGE_BYTES, log)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            log.info("client connection ended: %r", exc)
        finally:
            self.clients.discard(ls)
            writer.close()
            if task is not None:
                self._handlers.discard(task)
            log.info("client disconnected (%d attached)", len(self.clients))

    async def serve(self) -> None:
        self._aio = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._handle, self.host, self.port, limit=MAX_MESSAGE_BYTES)
        self.port = server.sockets[0].getsockname()[1]
        discovery.write(self.cfg.state_dir, discovery.Discovery(self.host, self.port, os.getpid(), self.token))
        log.info("listening on %s:%d (pid %d)", self.host, self.port, os.getpid())
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._aio.add_signal_handler(sig, self._stopped.set)
            except (NotImplementedError, RuntimeError):
                pass  # not the main thread (tests): stop() is called instead
        self.core.start(self.broadcast)
        finished = asyncio.ensure_future(asyncio.to_thread(self.core.finished.wait))
        try:
            async with server:
                await asyncio.wait([asyncio.ensure_future(self._stopped.wait()), finished],
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            discovery.remove(self.cfg.state_dir, os.getpid())
            await asyncio.to_thread(self.core.stop)
            for ls in list(self.clients):
                if ls.protocol.writer is not None:
                    ls.protocol.writer.close()
            if self._handlers:
                # Let each connection's reader see its closed socket and finish, rather than be cancelled.
                await asyncio.wait(list(self._handlers), timeout=5)

    def stop(self) -> None:
        if self._aio is not None and self._stopped is not None:
            self._aio.call_soon_threadsafe(self._stopped.set)


def setup_logging(cfg: Config) -> None:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.FileHandler(cfg.state_dir / "daemon.log"), logging.StreamHandler()]
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for h in handlers:
        h.setFormatter(fmt)
    root = logging.getLogger("overnight")
    root.setLevel(logging.INFO)
    for h in handlers:
        root.addHandler(h)


def run_daemon(cfg: Config, core: DaemonCore, port: int = 0) -> None:
    """Run the daemon in the foreground until SIGINT/SIGTERM or the loop ends. One per workspace."""
    running = discovery.read(cfg.state_dir)
    if running is not None:
        raise RuntimeError(f"a daemon already runs for this workspace: pid {running.pid}, port {running.port}")
    asyncio.run(Daemon(cfg, core, port=port).serve())

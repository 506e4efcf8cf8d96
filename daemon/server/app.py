"""The daemon process: a loopback TCP server, one pygls server object per connection, one shared core."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import os
import signal
import sys
import urllib.parse
from typing import Any

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer

from overnight.protocol import types as t
from overnight.protocol.wire import make_converter

from .. import __version__, ablate
from ..commands import Curate
from ..config import Config
from ..loop import LoopError
from . import discovery, execute
from .auth import DaemonProtocol
from .core import DaemonCore, call_in_thread
from .files import read_editable
from .framing import serve_connection
from .progress import ExperimentProgress
from .suggestions import NotFound, Reservations, SuggestionFeature, relative

log = logging.getLogger("overnight.daemon")
# A command the loop's thread did not take in time (it is in a step that does not take commands, e.g. the data
# preparation): it may still be carried out; the client is told to look again.
_BUSY = "the loop is busy and did not take the command in time; look again (overnight/ideas/list, status) before retrying"

# One JSON-RPC message larger than this is refused (the connection is closed): no client needs it.
# Before the token is proven the limit is framing.PRE_AUTH_BYTES.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# A client that has not authenticated within this many seconds is disconnected.
HANDSHAKE_SECONDS = 10.0
# Editors, a CLI call or two, a bridge: far fewer than this. More are refused at once, unread.
MAX_CONNECTIONS = 64


class DaemonServer(LanguageServer):
    """One connection's server object, with what the daemon keeps per client."""

    suggestions: SuggestionFeature
    experiment_progress: ExperimentProgress
    tasks: set[asyncio.Task[Any]]

    def spawn(self, coro: Any) -> None:
        """Run a coroutine for this client in the background; keep a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("a background task for a client failed: %r", task.exception())

    async def refresh(self) -> None:
        """Suggestions, then the client's CodeLenses and inlay hints: the journal or the user's text changed."""
        await self.suggestions.push()
        workspace = self.client_capabilities.workspace if self.client_capabilities else None
        if workspace and workspace.code_lens and workspace.code_lens.refresh_support:
            self.workspace_code_lens_refresh(None)
        if workspace and workspace.inlay_hint and workspace.inlay_hint.refresh_support:
            self.workspace_inlay_hint_refresh(None)


def create_server(core: DaemonCore, token: str, reservations: Reservations | None = None) -> DaemonServer:
    """A server object for one connection (a factory, so every connection and test gets a fresh one)."""

    class Protocol(DaemonProtocol):
        pass

    Protocol.token = token
    ls = DaemonServer("overnight", __version__, protocol_cls=Protocol, converter_factory=make_converter)
    ls.suggestions = SuggestionFeature(ls, core, reservations or Reservations())
    ls.experiment_progress = ExperimentProgress(ls)
    ls.tasks = set()
    execute.register(ls, core)

    @ls.feature(t.OVERNIGHT_STATUS)
    async def status(ls: LanguageServer, params: t.StatusParams) -> t.LoopStatus:
        return await call_in_thread(core.status)

    @ls.feature(t.OVERNIGHT_PAUSE)
    async def pause(ls: LanguageServer, params: t.PauseParams) -> t.LoopStatus:
        await call_in_thread(lambda: core.loop.pause(params.reason or ""))
        return await call_in_thread(core.status)

    @ls.feature(t.OVERNIGHT_RESUME)
    async def resume(ls: LanguageServer, params: t.ResumeParams) -> t.LoopStatus:
        await call_in_thread(core.resume)
        return await call_in_thread(core.status)

    @ls.feature(t.OVERNIGHT_SHUTDOWN)
    async def shutdown(ls: LanguageServer, params: t.ShutdownParams) -> t.ShutdownResult:
        # After this answer is written: the daemon stops the loop, closes every connection and exits.
        asyncio.get_running_loop().call_later(0.1, core.shutdown)
        return t.ShutdownResult()

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

    @ls.feature(t.OVERNIGHT_SET_BUDGET)
    async def set_budget(ls: LanguageServer, params: t.SetBudgetParams) -> t.LoopStatus:
        if not params.seconds > 0 or params.seconds != params.seconds or params.seconds == float("inf"):
            raise JsonRpcException(code=-32602, message="seconds must be a positive, finite number")
        try:
            await call_in_thread(lambda: core.set_budget(params.seconds, params.tag))
        except Exception as exc:
            raise JsonRpcException(code=t.ErrorCode.INVALID_STATE, message=str(exc)) from None
        return await call_in_thread(core.status)

    @ls.feature(t.OVERNIGHT_ABLATE)
    async def ablate_kept(ls: LanguageServer, params: t.AblateParams) -> t.AblateResult:
        runs = params.runs if params.runs is not None else ablate.DEFAULT_RUNS
        if not 2 <= runs <= 20:
            raise JsonRpcInvalidParams(message="runs must be from 2 to 20")
        try:
            return await call_in_thread(lambda: core.ablate(runs, dry_run=bool(params.dry_run)))
        except LoopError as exc:
            raise JsonRpcException(code=t.ErrorCode.INVALID_STATE, message=str(exc)) from None
        except TimeoutError:
            raise JsonRpcException(code=t.ErrorCode.INVALID_STATE, message=_BUSY) from None

    @ls.feature(t.OVERNIGHT_IDEAS_LIST)
    async def list_ideas(ls: LanguageServer, params: t.ListIdeasParams) -> t.IdeaQueue:
        return await call_in_thread(core.ideas)

    @ls.feature(t.OVERNIGHT_IDEAS_ADD)
    async def add_idea(ls: LanguageServer, params: t.AddIdeaParams) -> t.IdeaQueue:
        return await _curate(Curate("add", text=params.text, direction=params.direction or "yours"))

    @ls.feature(t.OVERNIGHT_IDEAS_CURATE)
    async def curate_idea(ls: LanguageServer, params: t.CurateIdeaParams) -> t.IdeaQueue:
        action = params.action.value
        if action in ("approve", "veto", "reopen", "move") and params.id is None:
            raise JsonRpcInvalidParams(message=f"{action} needs the idea's id")
        if action == "move" and (params.index is None or params.index < 0):
            raise JsonRpcInvalidParams(message="move needs an index of 0 or more (0: the top of the queue)")
        if action in ("pin", "close", "open") and not (params.direction or "").strip():
            raise JsonRpcInvalidParams(message=f"{action} needs a direction")
        return await _curate(Curate(action, idea_id=params.id, reason=params.reason or "", direction=params.direction or "",
                                    index=min(params.index, 2**31) if params.index is not None else None))

    async def _curate(command: Curate) -> t.IdeaQueue:
        try:
            return await call_in_thread(lambda: core.curate(command))
        except TimeoutError:  # the loop's thread is in a step that does not take commands (the data preparation)
            raise JsonRpcException(code=t.ErrorCode.INVALID_STATE, message=_BUSY) from None
        except LoopError as exc:
            # An unknown id or direction, an empty text: the client's mistake; no session yet: the loop's state.
            if core.tag:
                raise JsonRpcInvalidParams(message=str(exc)) from None
            raise JsonRpcException(code=t.ErrorCode.INVALID_STATE, message=str(exc)) from None

    @ls.feature(t.OVERNIGHT_SUGGESTIONS_LIST)
    async def list_suggestions(ls: DaemonServer, params: t.ListSuggestionsParams) -> t.SuggestionList:
        return await ls.suggestions.list_pending(params)

    @ls.feature(t.OVERNIGHT_SUGGESTIONS_ACCEPT)
    async def accept(ls: DaemonServer, params: t.AcceptSuggestionParams) -> t.AcceptSuggestionResult:
        return await ls.suggestions.accept(params)

    @ls.feature(t.OVERNIGHT_SUGGESTIONS_REJECT)
    async def reject(ls: DaemonServer, params: t.RejectSuggestionParams) -> t.RejectSuggestionResult:
        return await ls.suggestions.reject(params)

    @ls.feature(lsp.TEXT_DOCUMENT_CODE_LENS)
    async def code_lens(ls: DaemonServer, params: lsp.CodeLensParams) -> list[lsp.CodeLens]:
        return await ls.suggestions.code_lenses(params.text_document.uri)

    # Document sync is pygls's; after it, the client's suggestions are re-anchored in its new text.
    @ls.feature(lsp.INITIALIZED)
    def initialized(ls: DaemonServer, params: lsp.InitializedParams) -> None:
        ls.spawn(ls.suggestions.push())
        for flying in core.in_flight():  # attached mid-run: the editor's progress bars start with these experiments
            ls.spawn(ls.experiment_progress.started(flying))

    @ls.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: DaemonServer, params: lsp.DidOpenTextDocumentParams) -> None:
        ls.spawn(ls.suggestions.push())

    @ls.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: DaemonServer, params: lsp.DidChangeTextDocumentParams) -> None:
        ls.spawn(ls.suggestions.push())

    @ls.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: DaemonServer, params: lsp.DidCloseTextDocumentParams) -> None:
        ls.spawn(ls.suggestions.push())

    @ls.feature(t.OVERNIGHT_EXPERIMENTS_LIST)
    async def list_experiments(ls: LanguageServer, params: t.ListExperimentsParams) -> t.ExperimentList:
        return await call_in_thread(lambda: core.list_experiments(params))

    @ls.feature(t.OVERNIGHT_EXPERIMENTS_GET)
    async def get_experiment(ls: LanguageServer, params: t.GetExperimentParams) -> t.ExperimentDetail:
        detail = await call_in_thread(lambda: core.get_experiment(params.id))
        if detail is None:
            raise NotFound(message=f"no experiment #{params.id}")
        return detail

    def _history(uri: str, source: str | None) -> tuple[list[str], dict[int, list[Any]]]:
        # The client's open buffer, else the file on disk — but only an editable file of the workspace,
        # checked before anything is read (files.py); any other URI has no history and reveals nothing.
        rel = relative(core, uri)
        if rel is None or rel not in core.cfg.editable:
            return [], {}
        text = source if source is not None else read_editable(core.cfg.root, rel, core.cfg.editable)
        if text is None:
            return [], {}
        return text.splitlines(keepends=True), core.line_history(rel, text)

    def _open_source(uri: str) -> str | None:
        # Read on the event loop, where document sync mutates the buffers.
        doc = ls.workspace.text_documents.get(uri)
        return doc.source if doc is not None else None

    @ls.feature(lsp.TEXT_DOCUMENT_INLAY_HINT)
    async def inlay_hints(ls: LanguageServer, params: lsp.InlayHintParams) -> list[lsp.InlayHint]:
        uri = params.text_document.uri
        source = _open_source(uri)
        lines, history = await call_in_thread(lambda: _history(uri, source))
        hints = []
        for line in range(params.range.start.line, min(params.range.end.line + 1, len(lines))):
            touches = history.get(line)
            if touches:
                more = f" +{len(touches) - 1}" if len(touches) > 1 else ""
                # "▸" first: after a comment, a label starting with "#" reads as part of it.
                hints.append(lsp.InlayHint(position=lsp.Position(line, len(lines[line].rstrip("\r\n"))),
                                           label=f"▸ {touches[0].label}{more}", padding_left=True))
        return hints

    @ls.feature(lsp.TEXT_DOCUMENT_HOVER)
    async def hover(ls: LanguageServer, params: lsp.HoverParams) -> lsp.Hover | None:
        uri = params.text_document.uri
        source = _open_source(uri)
        _, history = await call_in_thread(lambda: _history(uri, source))
        touches = history.get(params.position.line)
        if not touches:
            return None
        if getattr(ls.protocol, "command_links", False):  # the client runs command links (the VS Code extension)
            rows = [f"- **[{tch.label}]({_show_link(tch.experiment_id)})** — {tch.description}" for tch in touches]
        else:  # a plain reference: what to run to see it
            rows = [f"- **{tch.label}** — {tch.description} (`overnight show {tch.experiment_id}`)" for tch in touches]
        return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown,
                                                    value="Experiments that touched this line:\n\n" + "\n".join(rows)))

    return ls


def decision_message(exp: t.ExperimentSummary) -> tuple[lsp.MessageType, str] | None:
    """What a plain client pops up when an experiment is decided: a keep (the news of the night) and a held keep
    (the human's call); nothing for the many discards."""
    if exp.kind != t.ExperimentKind.EXPERIMENT:
        return None
    delta = f" {exp.delta:+.4f} bpb".replace("-", "−") if exp.delta is not None else ""
    if exp.status == t.Status.KEEP:
        return lsp.MessageType.Info, f"Overnight: #{exp.id} kept:{delta} — {exp.description} (`overnight show {exp.id}`)"
    if exp.status == t.Status.HELD:
        return (lsp.MessageType.Warning, f"Overnight: #{exp.id} held for you:{delta} on val, but its holdout got worse "
                f"— {exp.description} (`overnight show {exp.id}`)")
    return None


def _show_link(exp_id: int) -> str:
    """A markdown command link to the client's show-experiment command."""
    return f"command:{t.COMMAND_SHOW_EXPERIMENT}?{urllib.parse.quote(json.dumps([exp_id]))}"


class Daemon:
    """Owns the listening socket, the connections, and the core; ``serve`` runs until stopped."""

    def __init__(self, cfg: Config, core: DaemonCore, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the daemon runs code: it listens on loopback only")
        self.cfg, self.core, self.host, self.port = cfg, core, host, port
        self.token = discovery.new_token()
        self.clients: set[DaemonServer] = set()
        self.reservations = Reservations()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._aio: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._full_logged = False
        # The experiments whose decision was popped up: an incumbent's re-run finishes it again (its mean moved),
        # which must not say "kept" again.
        self._announced: set[int] = set()

    def broadcast(self, method: str, params: Any) -> None:
        """Thread-safe: the loop's thread hands notifications to the event loop, which sends them."""
        if self._aio is not None and not self._aio.is_closed():
            self._aio.call_soon_threadsafe(self._send_all, method, params)

    def changed(self) -> None:
        """Thread-safe: what clients derive from the journal or the user's files may have changed."""
        if self._aio is not None and not self._aio.is_closed():
            self._aio.call_soon_threadsafe(self._refresh_all)

    def _attached(self) -> list[DaemonServer]:
        return [ls for ls in list(self.clients)
                if isinstance(ls.protocol, DaemonProtocol) and ls.protocol.authenticated and ls.protocol.writer is not None]

    def _refresh_all(self) -> None:
        for ls in self._attached():
            ls.spawn(ls.refresh())

    def _send_all(self, method: str, params: Any) -> None:
        decided = None
        if method == t.OVERNIGHT_EXPERIMENT_FINISHED and params.experiment.id not in self._announced:
            decided = decision_message(params.experiment)
            if decided is not None:
                self._announced.add(params.experiment.id)
        # Each experiment's own phase for its own bar: with runs overlapping, the one scored is not the current one.
        phases = self.core.flying.phases() if method == t.OVERNIGHT_LOOP_STATE_CHANGED else {}
        for ls in self._attached():
            try:
                ls.protocol.notify(method, params)
                # The editor's own progress bar follows the experiment in flight.
                if method == t.OVERNIGHT_EXPERIMENT_STARTED:
                    ls.spawn(ls.experiment_progress.started(params))
                elif method == t.OVERNIGHT_PROGRESS:
                    ls.experiment_progress.report(params)
                elif method == t.OVERNIGHT_EXPERIMENT_FINISHED:
                    ls.experiment_progress.finished(params)
                    if decided is not None and getattr(ls.protocol, "show_messages", False):
                        ls.window_show_message(lsp.ShowMessageParams(type=decided[0], message=decided[1]))
                elif method == t.OVERNIGHT_LOOP_STATE_CHANGED and params.state in (t.LoopState.STOPPED, t.LoopState.ERROR):
                    ls.experiment_progress.end_all()
                elif method == t.OVERNIGHT_LOOP_STATE_CHANGED:
                    for exp_id, phase in phases.items():
                        ls.experiment_progress.phase(exp_id, phase)
            except Exception:  # a client that went away mid-write is dropped by its reader task
                log.debug("could not notify a client", exc_info=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.clients) >= MAX_CONNECTIONS:
            if not self._full_logged:
                log.warning("refusing connections: %d are open already", len(self.clients))
            self._full_logged = True
            writer.close()
            return
        self._full_logged = False
        ls = create_server(self.core, self.token, self.reservations)
        ls.protocol.set_writer(writer)
        self.clients.add(ls)
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        # A connection that has not proven the token in time is closed (its reader then sees the end).
        deadline = asyncio.get_running_loop().call_later(HANDSHAKE_SECONDS, self._handshake_expired, ls, writer)
        log.info("client connected (%d attached)", len(self.clients))
        try:
            await serve_connection(reader, ls.protocol, MAX_MESSAGE_BYTES, log)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            log.info("client connection ended: %s", exc)
        finally:
            deadline.cancel()
            self.clients.discard(ls)
            writer.close()
            if task is not None:
                self._handlers.discard(task)
            log.info("client disconnected (%d attached)", len(self.clients))

    @staticmethod
    def _handshake_expired(ls: DaemonServer, writer: asyncio.StreamWriter) -> None:
        if isinstance(ls.protocol, DaemonProtocol) and not ls.protocol.authenticated:
            log.info("closing a connection that did not authenticate within %.0f s", HANDSHAKE_SECONDS)
            writer.close()
            # The reader may be parked mid-frame on a slow drip: the closed transport alone need not wake it.
            transport = writer.transport
            if transport is not None:
                transport.abort()

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
        self.core.start(self.broadcast, self.changed, self.stop)
        try:
            # The daemon outlives its loop (clients still review suggestions and history after a session
            # ends): it runs until SIGINT/SIGTERM or `overnight/shutdown`.
            async with server:
                await self._stopped.wait()
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


# daemon.log stays bounded whatever clients send: 4 files of at most 5 MB.
LOG_BYTES, LOG_BACKUPS = 5 * 1024 * 1024, 3


class _PyglsNoise(logging.Filter):
    """pygls logs a full traceback for every message it cannot structure (framing.py logs one line instead) and for
    every JSON-RPC error a handler answers on purpose (a refused request is not a fault). Our own faults — any other
    exception — keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.funcName == "structure_message":
            return False
        error = record.exc_info[1] if record.exc_info else None
        return not (record.name.startswith("pygls") and isinstance(error, JsonRpcException))


def setup_logging(cfg: Config) -> None:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [
        logging.handlers.RotatingFileHandler(cfg.state_dir / "daemon.log", maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS)]
    if sys.stderr is not None and sys.stderr.isatty():
        # In a terminal the log is shown too; detached, stderr is daemon.out (kept for crashes), not a second log.
        handlers.append(logging.StreamHandler())
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for h in handlers:
        h.setFormatter(fmt)
    for name, level in (("overnight", logging.INFO), ("pygls", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False
        for h in handlers:
            logger.addHandler(h)
    for h in handlers:
        h.addFilter(_PyglsNoise())


def run_daemon(cfg: Config, core: DaemonCore, port: int = 0) -> None:
    """Run the daemon in the foreground until SIGINT/SIGTERM or `overnight shutdown`. One per workspace."""
    running = discovery.read(cfg.state_dir)
    if running is not None:
        raise RuntimeError(f"a daemon already runs for this workspace: pid {running.pid}, port {running.port}")
    asyncio.run(Daemon(cfg, core, port=port).serve())

"""Server commands (``workspace/executeCommand``): what lets any LSP client act, not only the VS Code extension.

The daemon's CodeLenses carry these commands, and ``executeCommandProvider`` lists them, so Neovim, Emacs
(eglot) or Helix accept a suggestion by running its lens: the daemon then sends ``workspace/applyEdit``, as it
does for the extension. Each command answers like the request it stands for, and — because a plain client
shows nothing of an answer — also says what happened with ``window/showMessage``.

Arguments are checked here, not by pygls's converter, so a wrong one gets an InvalidParams error that says
which argument and why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams

from overnight.protocol import types as t

from .core import DaemonCore, call_in_thread
from .suggestions import NotFound

if TYPE_CHECKING:
    from .app import DaemonServer



def _arg(args: tuple[Any, ...], i: int, name: str, kind: type, *, required: bool = True) -> Any:
    """The i-th argument, of ``kind`` (None when optional and absent)."""
    if i >= len(args) or args[i] is None:
        if required:
            raise JsonRpcInvalidParams(message=f"missing argument {i + 1}: {name}")
        return None
    value = args[i]
    # bool is an int to Python; an id is never true or false.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise JsonRpcInvalidParams(message=f"argument {i + 1} ({name}) must be {_KINDS[kind]}, not {json_kind(value)}")
    return value


_KINDS = {int: "an integer", str: "a string"}


def json_kind(value: object) -> str:
    """What a JSON value is, in JSON's words."""
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                       (list, "an array"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return "null"


def _at_most(args: tuple[Any, ...], n: int) -> None:
    if len(args) > n:
        raise JsonRpcInvalidParams(message=f"expected at most {n} argument{'s' if n != 1 else ''}, got {len(args)}")


def status_line(status: t.LoopStatus) -> str:
    """The loop's state in one line, as a plain client's message shows it."""
    parts = [f"Overnight: {status.state.value}"]
    if status.message:
        parts.append(status.message)
    if status.current is not None and status.state.value in ("running", "pausing", "stopping", "baseline"):
        parts.append(f"#{status.current.id} {status.current.description}")
        parts.extend(f"also #{f.experiment.id}" + (f" {f.phase.value}" if f.phase else "") for f in status.also_in_flight or [])
    if status.best is not None:
        parts.append(f"best {status.best.val_bpb:.4f} (#{status.best.id})")
    parts.append(f"{status.experiments} experiments, {status.kept} kept")
    return " · ".join(parts)


def experiment_line(detail: t.ExperimentDetail) -> str:
    exp = detail.experiment
    delta = f" {exp.delta:+.4f} bpb".replace("-", "−") if exp.delta is not None else ""
    return f"#{exp.id} {exp.status.value}{delta}: {exp.description} (details: `overnight show {exp.id}`)"


def register(ls: DaemonServer, core: DaemonCore) -> None:
    """Register every server command on one connection's server object."""

    def tell(kind: lsp.MessageType, text: str) -> None:
        ls.window_show_message(lsp.ShowMessageParams(type=kind, message=text))

    def command(name: str) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
        def wrap(fn: Callable[..., Awaitable[Any]]) -> Any:
            # pygls passes the server as ``ls`` and the command's arguments as they came (checked by ``fn``).
            async def handler(ls: Any, *args: object) -> Any:
                try:
                    return await fn(*args)
                except JsonRpcException as exc:  # the client gets the error; its user gets the reason
                    tell(lsp.MessageType.Warning, f"Overnight: {exc.message}")
                    raise
            return ls.command(name)(handler)
        return wrap

    async def status_reply() -> t.LoopStatus:
        """The state the command produced, answered and told."""
        status: t.LoopStatus = await call_in_thread(core.status)
        tell(lsp.MessageType.Info, status_line(status))
        return status

    @command(t.SERVER_COMMAND_ACCEPT_SUGGESTION)
    async def accept(*args: Any) -> t.AcceptSuggestionResult:
        _at_most(args, 2)
        params = t.AcceptSuggestionParams(id=_arg(args, 0, "suggestionId", str),
                                          hunk_id=_arg(args, 1, "hunkId", str, required=False))
        result = await ls.suggestions.accept(params)
        if result.applied:
            tell(lsp.MessageType.Info, "Overnight: accepted — the change is in your buffer (not saved yet)")
        else:
            tell(lsp.MessageType.Warning, f"Overnight: not accepted — {result.message}")
        return result

    @command(t.SERVER_COMMAND_REJECT_SUGGESTION)
    async def reject(*args: Any) -> t.RejectSuggestionResult:
        _at_most(args, 3)
        params = t.RejectSuggestionParams(id=_arg(args, 0, "suggestionId", str),
                                          hunk_id=_arg(args, 1, "hunkId", str, required=False),
                                          reason=_arg(args, 2, "reason", str, required=False))
        result = await ls.suggestions.reject(params)
        tell(lsp.MessageType.Info, "Overnight: rejected" + (f" ({params.reason.strip()})" if params.reason else "")
             + " — the agent sees it")
        return result

    @command(t.SERVER_COMMAND_SHOW_EXPERIMENT)
    async def show(*args: Any) -> t.ExperimentDetail:
        _at_most(args, 1)
        exp_id = _arg(args, 0, "experimentId", int)
        detail = await call_in_thread(lambda: core.get_experiment(exp_id))
        if detail is None:
            raise NotFound(message=f"no experiment #{exp_id}")
        tell(lsp.MessageType.Info, experiment_line(detail))
        return detail

    @command(t.SERVER_COMMAND_STATUS)
    async def status(*args: Any) -> t.LoopStatus:
        _at_most(args, 0)
        return await status_reply()

    @command(t.SERVER_COMMAND_PAUSE)
    async def pause(*args: Any) -> t.LoopStatus:
        _at_most(args, 1)
        reason = _arg(args, 0, "reason", str, required=False) or ""
        await call_in_thread(lambda: core.loop.pause(reason))
        return await status_reply()

    @command(t.SERVER_COMMAND_RESUME)
    async def resume(*args: Any) -> t.LoopStatus:
        _at_most(args, 0)
        await call_in_thread(core.resume)
        return await status_reply()

    @command(t.SERVER_COMMAND_STOP_AFTER_CURRENT)
    async def stop_after(*args: Any) -> t.LoopStatus:
        _at_most(args, 0)
        await call_in_thread(core.loop.stop_after_current)
        return await status_reply()

    @command(t.SERVER_COMMAND_STOP)
    async def stop(*args: Any) -> t.LoopStatus:
        _at_most(args, 0)
        await call_in_thread(core.loop.stop)
        return await status_reply()

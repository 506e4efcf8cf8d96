"""The daemon with real clients over real loopback TCP: the token check, several clients, control, exit.

The daemon runs in a thread of the test process (its own event loop) on a real workspace whose loop
runs real two-second training runs from a replayed agent.
"""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overnight.daemon.agents.replay import ReplayAgent
from overnight.daemon.config import load_config
from overnight.daemon.server import discovery
from overnight.daemon.server.app import Daemon
from overnight.daemon.server.client import DaemonClient, NoDaemon
from overnight.daemon.server.core import DaemonCore
from overnight.protocol import types as t


def _proposals(root: Path, n: int) -> None:
    train = (root / "trainer" / "train.py").read_text()
    lines = [json.dumps({"description": f"note {i}", "files": {"trainer/train.py": train + f"\n# note {i}\n"}})
             for i in range(n)]
    (root / "proposals.jsonl").write_text("\n".join(lines) + "\n")


class Running:
    def __init__(self, root: Path, daemon: Daemon, thread: threading.Thread) -> None:
        self.root, self.daemon, self.thread = root, daemon, thread

    @property
    def info(self) -> discovery.Discovery:
        info = discovery.read(self.root / ".overnight")
        assert info is not None
        return info


def _start(make_workspace: Callable[..., Path], paused: bool) -> Iterator[Running]:
    root = make_workspace(replay_file="proposals.jsonl")
    _proposals(root, 3)
    cfg = load_config(root)
    core = DaemonCore(cfg, ReplayAgent.from_file(root / "proposals.jsonl"))
    if paused:
        core.loop.pause()
    d = Daemon(cfg, core)
    thread = threading.Thread(target=lambda: asyncio.run(d.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while discovery.read(root / ".overnight") is None:
        assert time.monotonic() < deadline, "the daemon did not write its discovery file"
        time.sleep(0.05)
    yield Running(root, d, thread)
    d.stop()
    thread.join(timeout=90)
    assert not thread.is_alive()
    assert discovery.read(root / ".overnight") is None  # removed on the way out


@pytest.fixture
def daemon(make_workspace: Callable[..., Path]) -> Iterator[Running]:
    """A daemon whose loop runs (real two-second training runs)."""
    yield from _start(make_workspace, paused=False)


@pytest.fixture
def idle_daemon(make_workspace: Callable[..., Path]) -> Iterator[Running]:
    """A daemon started paused: the protocol under test, no training competing for the CPU."""
    yield from _start(make_workspace, paused=True)


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=240))


async def _raw(info: discovery.Discovery, payload: bytes) -> bytes:
    """Send raw bytes, return whatever comes back before the daemon closes the connection."""
    reader, writer = await asyncio.open_connection(info.host, info.port)
    writer.write(payload)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()


def _frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


@pytest.mark.timeout(200)
def test_discovery_file_is_private_and_on_loopback(idle_daemon: Running) -> None:
    daemon = idle_daemon
    path = discovery.path(daemon.root / ".overnight")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert daemon.info.host == "127.0.0.1" and daemon.info.port > 0
    assert len(daemon.info.token) >= 32
    with pytest.raises(ValueError, match="loopback"):
        Daemon(load_config(daemon.root), daemon.daemon.core, host="0.0.0.0")


@pytest.mark.timeout(200)
def test_nothing_is_answered_before_the_token(idle_daemon: Running) -> None:
    daemon = idle_daemon
    info = daemon.info
    # A custom request before initialize: the connection closes with no answer at all.
    got = _run(_raw(info, _frame({"jsonrpc": "2.0", "id": 1, "method": "overnight/status", "params": {}})))
    assert got == b""
    # initialize with a wrong token: an error response, then the connection is closed.
    bad = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "processId": None, "capabilities": {}, "initializationOptions": {"token": "nope", "protocolVersion": "1.0"}}}
    got = _run(_raw(info, _frame(bad) + _frame({"jsonrpc": "2.0", "id": 2, "method": "overnight/status"})))
    body = json.loads(got.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == t.ErrorCode.UNAUTHORIZED and body["id"] == 1
    assert got.count(b"Content-Length") == 1  # the status request after it got nothing
    # The right token but another major version: refused too.
    old = json.loads(json.dumps(bad))
    old["params"]["initializationOptions"] = {"token": info.token, "protocolVersion": "0.9"}
    body = json.loads(_run(_raw(info, _frame(old))).split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == t.ErrorCode.VERSION_MISMATCH


@pytest.mark.timeout(200)
def test_bad_params_and_unknown_methods_get_errors_not_a_crash(idle_daemon: Running) -> None:
    daemon = idle_daemon
    info = daemon.info
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "processId": None, "capabilities": {}, "initializationOptions": {"token": info.token, "protocolVersion": "1.0"}}}

    async def scenario() -> dict[int | None, dict[str, Any]]:
        reader, writer = await asyncio.open_connection(info.host, info.port)
        writer.write(_frame(init) + b"Content-Length: 5\r\n\r\n{bad}"  # malformed JSON: a parse error, id null
                     + _frame({"jsonrpc": "2.0", "id": 2, "method": "overnight/experiments/get", "params": {"id": "one"}})
                     + _frame({"jsonrpc": "2.0", "id": 3, "method": "overnight/noSuchMethod", "params": {}})
                     + _frame({"jsonrpc": "2.0", "id": 4, "method": "overnight/status", "params": {}}))
        await writer.drain()
        replies: dict[int | None, dict[str, Any]] = {}
        while not {None, 1, 2, 3, 4} <= set(replies):
            header = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            length = int(header.split(b":")[1].split(b"\r\n")[0])
            message = json.loads(await reader.readexactly(length))
            if "id" in message:
                replies[message["id"]] = message
        writer.close()
        return replies

    replies = _run(scenario())
    assert replies[None]["error"]["code"] == -32700
    assert replies[2]["error"]["code"] == -32602
    assert replies[3]["error"]["code"] == -32601
    assert replies[4]["result"]["agent"] == "replay"  # still answering after all that
    assert daemon.thread.is_alive()


def test_no_daemon_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NoDaemon, match="no Overnight daemon runs"):
        _run(DaemonClient().connect_workspace(tmp_path / ".overnight"))


async def _session(info: discovery.Discovery, messages: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Authenticate on a raw connection, send messages, return the replies by id."""
    reader, writer = await asyncio.open_connection(info.host, info.port)
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "processId": None, "capabilities": {}, "initializationOptions": {"token": info.token, "protocolVersion": "1.0"}}}
    writer.write(b"".join(_frame(m) for m in [init, *messages]))
    await writer.drain()
    wanted = {0} | {m["id"] for m in messages if "id" in m}
    replies: dict[int, dict[str, Any]] = {}
    try:
        while not wanted <= set(replies):
            header = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            length = int(header.split(b":")[1].split(b"\r\n")[0])
            message = json.loads(await reader.readexactly(length))
            if "id" in message and "method" not in message:
                replies[message["id"]] = message
    finally:
        writer.close()
    return replies


@pytest.mark.timeout(200)
def test_a_huge_message_closes_that_connection_only(idle_daemon: Running) -> None:
    daemon = idle_daemon
    info = daemon.info

    async def huge() -> bytes:
        reader, writer = await asyncio.open_connection(info.host, info.port)
        writer.write(b"Content-Length: 999999999999\r\n\r\n" + b"x" * 1024)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(), timeout=10)
        finally:
            writer.close()

    assert _run(huge()) == b""  # closed, nothing buffered, nothing answered
    replies = _run(_session(info, [{"jsonrpc": "2.0", "id": 1, "method": "overnight/status", "params": {}}]))
    assert replies[1]["result"]["agent"] == "replay"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
# Every custom request except stop and shutdown (well-formed, they end the session or the daemon under test).
_FUZZED = [m for m, info in t.METHODS.items()
           if info.kind == "request" and info.direction == "clientToServer" and m not in (t.OVERNIGHT_STOP, t.OVERNIGHT_SHUTDOWN)]


@pytest.mark.timeout(300)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.tuples(st.sampled_from(_FUZZED),
                                _JSON | st.dictionaries(st.sampled_from(["id", "offset", "limit", "status", "reason",
                                                                         "instruction", "when", "seconds", "uri",
                                                                         "hunkId", "tag"]), _JSON, max_size=4)),
                      min_size=1, max_size=6))
def test_fuzzed_params_get_a_result_or_an_error(idle_daemon: Running, calls: list[tuple[str, Any]]) -> None:
    daemon = idle_daemon
    messages = [{"jsonrpc": "2.0", "id": i + 1, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
    replies = _run(_session(daemon.info, messages))
    for m in messages:
        reply = replies[m["id"]]
        assert ("result" in reply) != ("error" in reply), reply
        if "error" in reply:
            assert isinstance(reply["error"]["code"], int) and reply["error"]["message"]
    assert daemon.thread.is_alive()


@pytest.mark.timeout(300)
def test_inlay_hints_and_hover_carry_each_lines_history_onto_the_live_buffer(daemon: Running) -> None:
    from lsprotocol import types as lsp

    async def scenario() -> None:
        c = DaemonClient()
        await c.connect_workspace(daemon.root / ".overnight")
        deadline = time.monotonic() + 240
        while not any(m == t.OVERNIGHT_EXPERIMENT_FINISHED and p.experiment.kind == t.ExperimentKind.EXPERIMENT
                      for m, p in c.notifications):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.3)
        path = daemon.root / "trainer" / "train.py"
        # The user's buffer differs from the branch: two lines typed at the top, not saved. (It starts
        # from the branch's version: a kept note exists only there, and lines the user does not have
        # carry nothing.)
        tag = (await c.request(t.OVERNIGHT_STATUS, t.StatusParams())).tag
        head = subprocess.run(["git", "show", f"overnight/{tag}:trainer/train.py"], cwd=daemon.root,
                              capture_output=True, text=True, check=True).stdout
        buffer = "# my notes\n# more notes\n" + head
        uri = path.as_uri()
        c.client.text_document_did_open(lsp.DidOpenTextDocumentParams(
            text_document=lsp.TextDocumentItem(uri=uri, language_id="python", version=1, text=buffer)))
        n = buffer.count("\n") + 1
        hints = await c.client.text_document_inlay_hint_async(lsp.InlayHintParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri),
            range=lsp.Range(lsp.Position(0, 0), lsp.Position(n, 0))))
        assert hints, "no line carries a history"
        lines = buffer.splitlines()
        for hint in hints:
            assert hint.position.line >= 2  # nothing on the user's own new lines
            assert hint.position.character == len(lines[hint.position.line])
            assert str(hint.label).startswith("▸ #") and str(hint.label).split()[-1] in ("keep", "discard", "crash", "timeout")
        hover = await c.client.text_document_hover_async(lsp.HoverParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri), position=hints[0].position))
        assert hover is not None and "Experiments that touched this line" in hover.contents.value
        assert "note" in hover.contents.value  # the experiment's description
        # A plain client gets a reference to run; a client that runs command links (VS Code) gets a link.
        assert "`overnight show " in hover.contents.value and "command:" not in hover.contents.value
        linked = DaemonClient()
        await linked.connect_workspace(daemon.root / ".overnight", options={"commandLinks": True})
        linked.client.text_document_did_open(lsp.DidOpenTextDocumentParams(
            text_document=lsp.TextDocumentItem(uri=uri, language_id="python", version=1, text=buffer)))
        rich = await linked.client.text_document_hover_async(lsp.HoverParams(
            text_document=lsp.TextDocumentIdentifier(uri=uri), position=hints[0].position))
        assert rich is not None and f"(command:{t.COMMAND_SHOW_EXPERIMENT}?%5B" in rich.contents.value
        await linked.close()
        await c.close()

    _run(scenario())


def test_server_commands_let_any_lsp_client_act_and_say_what_happened(idle_daemon: Running) -> None:
    from lsprotocol import types as lsp
    from pygls.exceptions import JsonRpcException

    async def scenario() -> None:
        c = DaemonClient()
        init = await c.connect_workspace(idle_daemon.root / ".overnight")
        advertised = init.capabilities.execute_command_provider
        ours = {getattr(t, name) for name in dir(t) if name.startswith("SERVER_COMMAND_")}
        assert advertised is not None and set(advertised.commands) == ours and len(ours) == 8

        async def run(command: str, *args: Any) -> Any:
            return await c.client.workspace_execute_command_async(
                lsp.ExecuteCommandParams(command=command, arguments=list(args)))

        status = await run(t.SERVER_COMMAND_STATUS)
        assert status["state"] == "paused" and status["protocolVersion"] == t.PROTOCOL_VERSION
        paused = await run(t.SERVER_COMMAND_PAUSE, "lunch")
        assert paused["state"] == "paused"
        deadline = time.monotonic() + 10
        while len(c.messages) < 2:
            assert time.monotonic() < deadline, "no window/showMessage for the commands"
            await asyncio.sleep(0.05)
        assert all(m.message.startswith("Overnight: paused") for m in c.messages[:2])
        assert all(m.type == lsp.MessageType.Info for m in c.messages[:2])

        bad: list[tuple[tuple[Any, ...], int, str]] = [
            ((t.SERVER_COMMAND_STATUS, 1), -32602, "at most 0 arguments"),
            ((t.SERVER_COMMAND_SHOW_EXPERIMENT, "7"), -32602, "argument 1 (experimentId) must be an integer, not a string"),
            ((t.SERVER_COMMAND_SHOW_EXPERIMENT, True), -32602, "must be an integer, not a boolean"),
            ((t.SERVER_COMMAND_SHOW_EXPERIMENT,), -32602, "missing argument 1: experimentId"),
            ((t.SERVER_COMMAND_SHOW_EXPERIMENT, 10**30), t.ErrorCode.NOT_FOUND, "no experiment"),
            ((t.SERVER_COMMAND_ACCEPT_SUGGESTION, "nope"), t.ErrorCode.NOT_FOUND, "no suggestion nope"),
            ((t.SERVER_COMMAND_REJECT_SUGGESTION, "a", "b", "c", "d"), -32602, "at most 3 arguments"),
            (("overnight.noSuchCommand",), -32602, "not defined"),
        ]
        for (command, *args), code, text in bad:
            with pytest.raises(JsonRpcException) as err:
                await run(command, *args)
            assert err.value.code == code and text in (err.value.message or ""), (command, args, err.value)
        warned = [m for m in c.messages if m.type == lsp.MessageType.Warning]
        assert any("no experiment" in m.message for m in warned)
        # The daemon still answers.
        assert (await c.request(t.OVERNIGHT_STATUS, t.StatusParams())).state == t.LoopState.PAUSED
        await c.close()

    _run(scenario())

"""Hostile and broken clients against a real daemon over loopback TCP: what they cannot do to it or to others.

Before authentication: a small frame limit, a handshake deadline, a connection cap. After it: every malformed
message answered with its JSON-RPC error, files read only when they are the workspace's editable regular files.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from overnight.daemon.server import app, files
from overnight.daemon.server.discovery import Discovery

from .test_daemon import Running, _frame, _raw, _run, _start


@pytest.fixture
def idle_daemon(make_workspace: Callable[..., Path]) -> Iterator[Running]:
    yield from _start(make_workspace, paused=True)


def _init(info: Discovery, msg_id: int = 0) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "method": "initialize", "params": {
        "processId": None, "capabilities": {}, "initializationOptions": {"token": info.token, "protocolVersion": "1.0"}}}


async def _replies(info: Discovery, payload: bytes, last_id: int, timeout: float = 30,
                   also: set[int] | None = None) -> list[dict[str, Any]]:
    """Authenticate, send raw bytes, then a status request with ``last_id``; every reply up to its answer (and up
    to the answers of the ids in ``also``: requests answered from worker threads may come in any order)."""
    waiting = set(also or ())
    reader, writer = await asyncio.open_connection(info.host, info.port)
    writer.write(_frame(_init(info)) + payload
                 + _frame({"jsonrpc": "2.0", "id": last_id, "method": "overnight/status", "params": {}}))
    await writer.drain()
    replies: list[dict[str, Any]] = []
    try:
        while True:
            header = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=timeout)
            length = int(header.split(b":")[1].split(b"\r\n")[0])
            message = json.loads(await reader.readexactly(length))
            if "method" in message:
                continue  # the daemon's own notifications
            replies.append(message)
            waiting.discard(message.get("id"))  # type: ignore[arg-type]
            if not waiting and any(r.get("id") == last_id for r in replies):
                return replies
    finally:
        writer.close()


@pytest.mark.timeout(200)
def test_an_unauthenticated_frame_over_64_kib_is_refused_unread(idle_daemon: Running) -> None:
    info = idle_daemon.info
    # An initialize padded past the pre-authentication limit: closed with no answer (and not buffered).
    padded = _init(info)
    padded["params"]["pad"] = "x" * (100 * 1024)
    assert _run(_raw(info, _frame(padded))) == b""
    # Garbage before authenticating: closed, no answer either.
    assert _run(_raw(info, b"Content-Length: 3\r\n\r\n[1]")) == b""
    assert _run(_raw(info, b"Content-Length: 4\r\n\r\nnope")) == b""
    # After the token, the same large message is an ordinary (if unknown) notification: the connection lives.
    big = {"jsonrpc": "2.0", "method": "overnight/whatever", "params": {"pad": "x" * (100 * 1024)}}
    replies = _run(_replies(info, _frame(big), last_id=7))
    assert replies[-1]["result"]["agent"] == "replay"


@pytest.mark.timeout(200)
def test_a_client_that_never_authenticates_is_dropped(idle_daemon: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    info = idle_daemon.info
    monkeypatch.setattr(app, "HANDSHAKE_SECONDS", 1.0)

    async def idle(payload: bytes) -> float:
        reader, writer = await asyncio.open_connection(info.host, info.port)
        start = time.monotonic()
        writer.write(payload)
        await writer.drain()
        try:
            assert await asyncio.wait_for(reader.read(), timeout=20) == b""
        finally:
            writer.close()
        return time.monotonic() - start

    assert _run(idle(b"")) < 15  # silent
    assert _run(idle(b"Content-Length: 100\r\n\r\n{\"jsonrpc\"")) < 15  # a slow drip, parked mid-frame


@pytest.mark.timeout(200)
def test_connections_beyond_the_cap_are_refused_and_others_still_served(
        idle_daemon: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    info = idle_daemon.info
    monkeypatch.setattr(app, "MAX_CONNECTIONS", 4)

    async def scenario() -> tuple[bytes, list[dict[str, Any]]]:
        held = [await asyncio.open_connection(info.host, info.port) for _ in range(4)]
        await asyncio.sleep(0.3)
        reader, writer = await asyncio.open_connection(info.host, info.port)
        refused = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        for _, w in held:
            w.close()
        await asyncio.sleep(0.5)
        return refused, await _replies(info, b"", last_id=3)

    refused, replies = _run(scenario())
    assert refused == b""
    assert replies[-1]["result"]["agent"] == "replay"


@pytest.mark.timeout(200)
def test_every_malformed_message_gets_its_json_rpc_error(idle_daemon: Running, caplog: pytest.LogCaptureFixture) -> None:
    info = idle_daemon.info
    cases: list[tuple[bytes, int, Any]] = [
        (b"Content-Length: 5\r\n\r\n{bad}", -32700, None),
        (_frame([{"jsonrpc": "2.0", "id": 1, "method": "overnight/status"}]), -32600, None),  # type: ignore[arg-type]
        (b"Content-Length: 2\r\n\r\n42", -32600, None),
        (_frame({"id": 2, "method": "overnight/status"}), -32600, 2),  # no "jsonrpc"
        (_frame({"jsonrpc": "1.0", "id": 3, "method": "overnight/status"}), -32600, 3),
        (_frame({"jsonrpc": "2.0", "id": 2**64, "method": "overnight/status"}), -32600, None),
        (_frame({"jsonrpc": "2.0", "id": {"a": 1}, "method": "overnight/status"}), -32600, None),
        (_frame({"jsonrpc": "2.0", "id": 4, "method": 12}), -32600, 4),
        (_frame({"jsonrpc": "2.0", "id": 5, "method": ""}), -32600, 5),
        (_frame({"jsonrpc": "2.0", "id": 6, "method": "overnight/status", "params": "x"}), -32602, 6),
        (_frame({"jsonrpc": "2.0", "id": 7, "method": "overnight/experiments/get", "params": {"id": [1]}}), -32602, 7),
        (_frame({"jsonrpc": "2.0", "id": 8, "method": "textDocument/hover", "params": {"textDocument": 3}}), -32602, 8),
        (_frame({"jsonrpc": "2.0", "id": 9}), -32600, 9),  # neither request nor response
        (_frame({"jsonrpc": "2.0", "id": 10, "method": "no/such"}), -32601, 10),
    ]
    payload = b"".join(frame for frame, _, _ in cases)
    replies = _run(_replies(info, payload, last_id=99))
    errors = [r for r in replies if r.get("id") != 0 and r.get("id") != 99]
    assert [(r["error"]["code"], r["id"]) for r in errors] == [(code, msg_id) for _, code, msg_id in cases]
    for r in errors:
        assert "data" not in r["error"] and "Traceback" not in r["error"]["message"]
    assert replies[-1]["result"]["agent"] == "replay"
    # One line each in the daemon's log, no traceback.
    ours = [r for r in caplog.records if r.name == "overnight.daemon" and "bad message" in r.getMessage()]
    assert len(ours) >= 10 and all(r.exc_info is None for r in ours)


def _hover(uri: str, msg_id: int) -> bytes:
    return _frame({"jsonrpc": "2.0", "id": msg_id, "method": "textDocument/hover",
                   "params": {"textDocument": {"uri": uri}, "position": {"line": 0, "character": 0}}})


@pytest.mark.timeout(200)
def test_hovers_read_only_the_workspaces_editable_regular_files(idle_daemon: Running) -> None:
    info, root = idle_daemon.info, idle_daemon.root
    fifo = root / "pipe"
    os.mkfifo(fifo)
    (root / "big.bin").write_bytes(b"x" * 1024)
    uris = [fifo.as_uri()] * 8 + [(root / "big.bin").as_uri(), (root / "missing.py").as_uri(),
                                  Path("/etc/passwd").as_uri(), Path("/dev/zero").as_uri(), "file:///nonexistent/x"]
    payload = b"".join(_hover(uri, 100 + i) for i, uri in enumerate(uris))
    start = time.monotonic()
    replies = _run(_replies(info, payload, last_id=99, timeout=20, also={100 + i for i in range(len(uris))}))
    assert time.monotonic() - start < 20  # eight hovers on a FIFO blocked nothing
    by_id = {r["id"]: r for r in replies}
    # Existing or not, readable or not: the same empty answer, nothing revealed.
    assert all(by_id[100 + i] == {"jsonrpc": "2.0", "id": 100 + i, "result": None} for i in range(len(uris)))
    assert by_id[99]["result"]["agent"] == "replay"


def test_read_editable_checks_before_reading(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("x = 1\n")
    assert files.read_editable(tmp_path, "train.py", ["train.py"]) == "x = 1\n"
    assert files.read_editable(tmp_path, "other.py", ["train.py"]) is None  # not editable: not even opened
    assert files.read_editable(tmp_path, None, ["train.py"]) is None
    os.mkfifo(tmp_path / "fifo.py")
    assert files.read_editable(tmp_path, "fifo.py", ["fifo.py"]) is None  # returns at once: no writer awaited
    (tmp_path / "huge.py").write_bytes(b"#" * (files.MAX_FILE_BYTES + 1))
    assert files.read_editable(tmp_path, "huge.py", ["huge.py"]) is None
    (tmp_path / "link.py").symlink_to(tmp_path / "train.py")
    assert files.read_editable(tmp_path, "link.py", ["link.py"]) is None
    (tmp_path / "bad.py").write_bytes(b"\xff\xfe")
    assert files.read_editable(tmp_path, "bad.py", ["bad.py"]) is None


@pytest.mark.timeout(200)
def test_numbers_beyond_sqlite_are_answered_not_crashed_on(idle_daemon: Running) -> None:
    from overnight.protocol import types as t

    info = idle_daemon.info
    payload = (_frame({"jsonrpc": "2.0", "id": 1, "method": "overnight/experiments/get", "params": {"id": 2**63}})
               + _frame({"jsonrpc": "2.0", "id": 2, "method": "overnight/experiments/list",
                         "params": {"offset": 2**63, "limit": 2**63}}))
    by_id = {r["id"]: r for r in _run(_replies(info, payload, last_id=99, also={1, 2}))}
    assert by_id[1]["error"]["code"] == t.ErrorCode.NOT_FOUND
    assert "result" in by_id[2]

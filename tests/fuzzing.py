"""A seeded generator of hostile protocol traffic, and the clients that send it: shared by the suite's fuzz test
(tests/integration/test_fuzz.py) and bench/fuzz.py (10,000 messages and more, against a real daemon process).

Every message is drawn from one of these kinds: a well-formed request or notification for a real or unknown method
with random params; ids of every JSON type and size (null, floats, booleans, objects, 2⁶⁴); a wrong or missing
"jsonrpc"; a batch; a bare JSON value; invalid JSON; invalid UTF-8; a Content-Length that lies (short); garbage
headers; and, rarely, a frame over the size limit (which closes that connection: the fuzzer reconnects). Fuzzers
run authenticated or not, side by side with a slow-drip connection and a canary client that asks for the loop's
status every half second and must always be answered.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from overnight.protocol import types as t

METHODS = [*t.METHODS, "initialize", "shutdown", "textDocument/hover", "textDocument/inlayHint", "textDocument/codeLens",
           "textDocument/didOpen", "textDocument/didChange", "workspace/executeCommand", "$/cancelRequest",
           "no/such/method", ""]
# Methods a fuzzer must not send well-formed: they end the session or the daemon under test.
_FORBIDDEN = {t.OVERNIGHT_SHUTDOWN, t.OVERNIGHT_STOP, t.OVERNIGHT_RESUME, t.OVERNIGHT_SET_BUDGET, "exit"}


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63, -(2**64), rng.randrange(-1000, 1000)])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e300, 3.14])
    if kind == 4:
        return rng.choice(["", "x", "file:///etc/passwd", "file:///dev/zero", "../../..", "\u0000", "é" * 50,
                           "a" * rng.randrange(1, 2000)])
    if kind == 5:
        return rng.choice(["id", "uri", "seconds", "tag", "reason", "when", "instruction", "textDocument"])
    if kind == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["id", "uri", "textDocument", "position", "range", "seconds", "tag", "reason", "when", "instruction",
            "hunkId", "offset", "limit", "status", "command", "arguments", "line", "character"]
    return {rng.choice(keys): _value(rng, depth + 1) for _ in range(rng.randrange(5))}


def _frame(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def message(rng: random.Random, msg_id: int, limit: int) -> tuple[bytes, str]:
    """One fuzzed frame and its kind."""
    kind = rng.choices(["request", "notification", "bad-id", "bad-version", "batch", "bare", "bad-json", "bad-utf8",
                        "short-length", "bad-header", "huge"],
                       weights=[30, 12, 10, 6, 6, 5, 8, 5, 4, 4, 1 if limit else 0])[0]
    method = rng.choice(METHODS)
    if method in _FORBIDDEN:
        method = "no/such/method"
    params = _value(rng)
    if kind == "request":
        return _frame(json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}).encode()), kind
    if kind == "notification":
        return _frame(json.dumps({"jsonrpc": "2.0", "method": method, "params": params}).encode()), kind
    if kind == "bad-id":
        bad = rng.choice([None, 2**64, -(2**70), 1.5, True, {"a": 1}, [1], "x" * 5000])
        return _frame(json.dumps({"jsonrpc": "2.0", "id": bad, "method": method, "params": params}).encode()), kind
    if kind == "bad-version":
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if rng.random() < 0.5:
            msg["jsonrpc"] = rng.choice(["1.0", 2, None])
        return _frame(json.dumps(msg).encode()), kind
    if kind == "batch":
        return _frame(json.dumps([{"jsonrpc": "2.0", "id": msg_id, "method": method}] * rng.randrange(0, 4)).encode()), kind
    if kind == "bare":
        return _frame(json.dumps(_value(rng)).encode()), kind
    if kind == "bad-json":
        return _frame(rng.choice([b"{", b"{]", b"nul", b'{"jsonrpc": "2.0", "id": 1,}', b"\x00" * 8])), kind
    if kind == "bad-utf8":
        return _frame(b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe"}'), kind
    if kind == "short-length":
        body = json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": "overnight/status"}).encode()
        return b"Content-Length: %d\r\n\r\n" % (len(body) - 5) + body, kind
    if kind == "bad-header":
        return rng.choice([b"Content-Length: abc\r\n\r\n", b"Content-Type: x\r\n\r\n{}", b"\r\n", b"X" * 3000 + b"\r\n"]), kind
    return b"Content-Length: %d\r\n\r\n" % (limit + 1), kind


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    reconnects: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    canary: list[float] = field(default_factory=list)  # seconds per status answer
    canary_failures: list[str] = field(default_factory=list)


def initialize(token: str) -> bytes:
    return _frame(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "processId": None, "capabilities": {}, "initializationOptions": {"token": token, "protocolVersion": "1.0"}}}).encode())


async def _drain(reader: asyncio.StreamReader, tally: Tally) -> None:
    try:
        while True:
            header = await reader.readuntil(b"\r\n\r\n")
            length = int(header.split(b":")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            tally.answered += 1
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
        return


async def fuzzer(host: str, port: int, token: str | None, rng: random.Random, n: int, limit: int, tally: Tally) -> None:
    """Send ``n`` fuzzed messages (after authenticating when ``token`` is given), reconnecting when the daemon
    closes the connection, reading every answer."""
    sent = 0
    while sent < n:
        reader, writer = await asyncio.open_connection(host, port, limit=2**24)
        drain = asyncio.ensure_future(_drain(reader, tally))
        try:
            if token is not None:
                writer.write(initialize(token))
            while sent < n:
                frame, kind = message(rng, sent + 1, limit)
                writer.write(frame)
                await writer.drain()
                sent += 1
                tally.sent += 1
                tally.by_kind[kind] = tally.by_kind.get(kind, 0) + 1
                if kind in ("huge", "short-length", "bad-header") or (token is None and rng.random() < 0.3):
                    break  # the daemon closes (or the stream is out of step): a fresh connection
                if sent % 50 == 0:
                    await asyncio.sleep(0)
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.write_eof()  # the daemon answers what it has, sees the end, and closes
                await asyncio.wait_for(asyncio.shield(drain), timeout=2)
            except (TimeoutError, OSError):
                pass
            writer.close()
            drain.cancel()
        tally.reconnects += 1


async def slow_drip(host: str, port: int, seconds: float) -> bool:
    """A client that sends one byte of a frame every 0.2 s: True when the daemon closed it (the handshake deadline)."""
    reader, writer = await asyncio.open_connection(host, port)
    payload = b'Content-Length: 80\r\n\r\n{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}' + b" " * 30
    end = time.monotonic() + seconds
    try:
        for byte in payload:
            if time.monotonic() > end:
                return False
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)
            if reader.at_eof():
                return True
    except (ConnectionError, OSError):
        return True
    finally:
        writer.close()
    return False


async def canary(host: str, port: int, token: str, stop: asyncio.Event, tally: Tally, patience: float = 5.0) -> None:
    """An honest client asking for the status every 0.5 s; each answer's latency is recorded."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(initialize(token))
    await writer.drain()
    msg_id = 1

    async def answer(wanted: int) -> None:
        while True:
            header = await reader.readuntil(b"\r\n\r\n")
            length = int(header.split(b":")[1].split(b"\r\n")[0])
            body = json.loads(await reader.readexactly(length))
            if body.get("id") == wanted:
                return

    try:
        await asyncio.wait_for(answer(0), timeout=patience)
        while not stop.is_set():
            msg_id += 1
            start = time.monotonic()
            writer.write(_frame(json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": t.OVERNIGHT_STATUS,
                                            "params": {}}).encode()))
            await writer.drain()
            try:
                await asyncio.wait_for(answer(msg_id), timeout=patience)
                tally.canary.append(time.monotonic() - start)
            except TimeoutError:
                tally.canary_failures.append(f"status #{msg_id} unanswered after {patience:.0f} s")
            await asyncio.sleep(0.5)
    finally:
        writer.close()

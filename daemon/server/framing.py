"""Reading LSP base-protocol frames from one connection: size limits, the envelope checked, errors answered.

pygls's own reader trusts the ``Content-Length`` header and reads that many bytes, gives no answer to a
batch or to an object without ``"jsonrpc"``, and turns an id of 2⁶⁴ or a numeric method into an internal
error with a traceback in the log. This reader, in order:

1. refuses a frame over the connection's limit by closing it — a small limit (``PRE_AUTH_BYTES``) until
   the client has authenticated, the large one after; nothing unauthenticated is ever buffered whole;
2. parses the JSON and checks the JSON-RPC envelope (one object, ``"jsonrpc": "2.0"``, an id that is a
   string or a safe integer, a string method, params an object or an array) and answers a bad one with the
   JSON-RPC error it deserves (-32700 parse error, -32600 invalid request, -32602 invalid params) and one
   log line — before authentication a bad message closes the connection instead, unanswered;
3. hands the message to the protocol exactly as pygls would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from pygls.exceptions import JsonRpcException

_CONTENT_LENGTH = re.compile(rb"^Content-Length: *(\d{1,12})\r?\n$", re.IGNORECASE)
# Headers are a few short lines; anything longer is not a client speaking the protocol.
_MAX_HEADER_LINES = 16

# Until a client authenticates, its frames are small: an initialize is a few KiB.
PRE_AUTH_BYTES = 64 * 1024
# JavaScript's safe integers: every editor's JSON can represent these ids exactly.
_MAX_ID = 2**53 - 1
_MAX_NAME = 256

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602


class FrameTooLarge(ValueError):
    pass


class Refused(ValueError):
    """An unauthenticated client sent something that is not a well-formed initialize: close, answer nothing."""


@dataclass(frozen=True)
class BadMessage:
    """What is wrong with a message, and the id to answer it with (None: the JSON-RPC ``null`` id)."""

    code: int
    reason: str
    msg_id: int | str | None


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -_MAX_ID <= value <= _MAX_ID
    return isinstance(value, str) and len(value) <= _MAX_NAME


def check_envelope(raw: Any) -> BadMessage | None:
    """None for a well-formed JSON-RPC 2.0 message, else what is wrong with it."""
    if isinstance(raw, list):
        return BadMessage(INVALID_REQUEST, "batch messages are not supported (send one message per frame)", None)
    if not isinstance(raw, dict):
        return BadMessage(INVALID_REQUEST, "a message must be a JSON object", None)
    has_id = "id" in raw
    if has_id and raw["id"] is not None and not _valid_id(raw["id"]):
        return BadMessage(INVALID_REQUEST, f"an id must be a string or an integer within ±{_MAX_ID}", None)
    msg_id = raw.get("id") if has_id else None
    if raw.get("jsonrpc") != "2.0":
        return BadMessage(INVALID_REQUEST, 'a message must carry "jsonrpc": "2.0"', msg_id)
    if "method" in raw:
        method = raw["method"]
        if not isinstance(method, str) or not method or len(method) > _MAX_NAME:
            return BadMessage(INVALID_REQUEST, "method must be a non-empty string", msg_id)
        if "params" in raw and raw["params"] is not None and not isinstance(raw["params"], (dict, list)):
            return BadMessage(INVALID_PARAMS, f"params of {method} must be an object or an array", msg_id)
        return None
    if not has_id or ("result" not in raw and "error" not in raw):
        return BadMessage(INVALID_REQUEST, "a message must be a request, a notification or a response", msg_id)
    if "error" in raw and not isinstance(raw["error"], dict):
        return BadMessage(INVALID_REQUEST, "a response's error must be an object", None)
    return None


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _read_frame(reader: asyncio.StreamReader, max_bytes: int) -> bytes | None:
    """The next frame's body, None at EOF; FrameTooLarge past ``max_bytes`` or on garbage headers."""
    while True:
        length: int | None = None
        for _ in range(_MAX_HEADER_LINES):
            line = await reader.readline()
            if not line:
                return None  # the client went away
            match = _CONTENT_LENGTH.fullmatch(line)
            if match:
                length = int(match.group(1))
                if length > max_bytes:
                    raise FrameTooLarge(f"a {length}-byte message exceeds the {max_bytes}-byte limit")
            elif line in (b"\r\n", b"\n"):
                break
            elif len(line) > 1024:
                raise FrameTooLarge("a header line over 1 KiB")
        else:
            raise FrameTooLarge("too many header lines")
        if length is not None:
            return await reader.readexactly(length)
        # A blank line with no header before it: nothing to read; wait for the next header.


def _answer(protocol: Any, bad: BadMessage, log: logging.Logger) -> None:
    log.warning("bad message (%d): %s", bad.code, bad.reason)
    # Written as a plain object: the JSON-RPC "id": null must be sent, which pygls's converter would omit.
    protocol._send_data({"jsonrpc": "2.0", "id": bad.msg_id, "error": {"code": bad.code, "message": bad.reason}})


async def serve_connection(reader: asyncio.StreamReader, protocol: Any, max_bytes: int, log: logging.Logger) -> None:
    """Feed every message from ``reader`` to ``protocol`` until EOF.

    Raises FrameTooLarge past the connection's limit and Refused when an unauthenticated client sends
    anything but a well-formed message; the caller closes the connection.
    """
    while True:
        authenticated = bool(getattr(protocol, "authenticated", True))
        body = await _read_frame(reader, max_bytes if authenticated else min(max_bytes, PRE_AUTH_BYTES))
        if body is None:
            return
        try:
            raw = json.loads(body)
        except (ValueError, RecursionError):
            if not authenticated:
                raise Refused("unreadable JSON before authenticating") from None
            _answer(protocol, BadMessage(PARSE_ERROR, "the message is not valid JSON (UTF-8)", None), log)
            continue
        bad = check_envelope(raw)
        if bad is not None:
            if not authenticated:
                raise Refused(f"{bad.reason}, before authenticating")
            _answer(protocol, bad, log)
            continue
        if "method" in raw and "params" not in raw and protocol.get_message_type(raw["method"]) is None:
            # JSON-RPC lets a message omit params; pygls's generic message (an unknown method) needs the key.
            raw["params"] = None
        try:
            message = protocol.structure_message(raw)
        except JsonRpcException as exc:
            # The protocol (overnight.protocol.wire) has answered a request it could not read; one line here.
            reason = _short(str(exc.__cause__ or exc.message or exc))
            if not authenticated:
                raise Refused(f"an unreadable message before authenticating: {reason}") from None
            log.warning("bad message: unreadable %s: %s", raw.get("method", "response"), reason)
            continue
        try:
            protocol.handle_message(message)
        except Exception:
            log.exception("handling a message failed")

"""Reading LSP base-protocol frames from one connection, with a size limit.

pygls's own reader trusts the ``Content-Length`` header and reads that many bytes, so one client
could make the daemon buffer gigabytes — before it has even authenticated. This reader refuses a
frame over ``max_bytes`` by closing the connection, and otherwise hands each message to the
protocol exactly as pygls does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

_CONTENT_LENGTH = re.compile(rb"^Content-Length: (\d+)\r\n$", re.IGNORECASE)
# Headers are a few short lines; anything longer is not a client speaking the protocol.
_MAX_HEADER_LINES = 16


class FrameTooLarge(ValueError):
    pass


async def serve_connection(reader: asyncio.StreamReader, protocol: Any, max_bytes: int, log: logging.Logger) -> None:
    """Feed every message from ``reader`` to ``protocol`` until EOF; raise FrameTooLarge past the limit."""
    while True:
        length: int | None = None
        for _ in range(_MAX_HEADER_LINES):
            line = await reader.readline()
            if not line:
                return  # the client went away
            match = _CONTENT_LENGTH.fullmatch(line)
            if match:
                length = int(match.group(1))
                if length > max_bytes:
                    raise FrameTooLarge(f"a {length}-byte message exceeds the {max_bytes}-byte limit")
            elif line in (b"\r\n", b"\n"):
                break
        else:
            raise FrameTooLarge("too many header lines")
        if length is None:
            continue  # a blank line with no header before it: nothing to read
        body = await reader.readexactly(length)
        try:
            message = json.loads(body, object_hook=protocol.structure_message)
        except Exception:
            # Malformed JSON or a message pygls cannot structure: it has already answered what it could.
            log.warning("could not read a %d-byte message", length, exc_info=log.isEnabledFor(logging.DEBUG))
            continue
        try:
            protocol.handle_message(message)
        except Exception:
            log.exception("handling a message failed")

"""The golden messages through a real pygls server (in process, no sockets): handlers get typed params,
responses and notifications go out as the fixtures say, and unreadable params get an error, not silence."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pygls.lsp.server import LanguageServer

from overnight.protocol import types
from overnight.protocol.wire import OvernightProtocol, make_converter

from .conftest import load

VALID = load("valid.json")
INVALID = load("invalid.json")


class _Writer:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.bodies: list[str] = []

    def write(self, data: bytes) -> None:
        body = data.decode("utf-8").split("\r\n\r\n", 1)[1]
        self.bodies.append(body)
        self.messages.append(json.loads(body))

    def close(self) -> None:
        pass


def _server() -> tuple[LanguageServer, _Writer, dict[str, Any]]:
    server = LanguageServer("overnight-test", "0", protocol_cls=OvernightProtocol, converter_factory=make_converter)
    seen: dict[str, Any] = {}

    def register(method: str) -> None:
        @server.feature(method)
        def handler(ls: LanguageServer, params: Any) -> Any:
            seen["params"] = params
            return seen["result"]

    for method, info in types.METHODS.items():
        if info.kind == "request":
            register(method)
    writer = _Writer()
    server.protocol.set_writer(writer)
    return server, writer, seen


def _feed(server: LanguageServer, message: dict[str, Any]) -> None:
    try:
        server.protocol.handle_message(server.protocol.structure_message(message))
    except Exception:  # noqa: S110 - pygls's reader loop logs and drops it the same way
        pass


def test_golden_requests_and_notifications_through_pygls() -> None:
    async def run() -> None:
        server, writer, seen = _server()
        converter = make_converter()
        for message in VALID["messages"]:
            info = types.METHODS[message["method"]]
            if info.kind == "request":
                seen["result"] = converter.structure(message["response"]["result"], info.result)
                _feed(server, message["request"])
                await asyncio.sleep(0)
                assert isinstance(seen["params"], info.params)
                assert seen["params"] == converter.structure(message["request"]["params"], info.params)
                assert writer.messages[-1] == message["response"]
                assert json.dumps(writer.messages[-1]["result"]) == json.dumps(message["response"]["result"])
            else:
                server.protocol.notify(info.name, converter.structure(message["notification"]["params"], info.params))
                assert writer.messages[-1] == message["notification"]

    asyncio.run(run())


def test_unreadable_params_get_an_invalid_params_error() -> None:
    params_types = {info.params.__name__: name for name, info in types.METHODS.items() if info.kind == "request"}
    cases = [c for c in INVALID["cases"] if c["type"] in params_types]
    assert cases

    async def run() -> None:
        server, writer, seen = _server()
        for i, case in enumerate(cases, start=100):
            _feed(server, {"jsonrpc": "2.0", "id": i, "method": params_types[case["type"]], "params": case["value"]})
            await asyncio.sleep(0)
            assert writer.messages[-1]["id"] == i, case
            assert writer.messages[-1]["error"]["code"] == -32602, case
        assert "params" not in seen  # no handler ran

    asyncio.run(run())

"""The golden fixtures against the Python types: valid messages structure and come back byte for byte,
invalid ones are refused."""

from __future__ import annotations

import json
from typing import Any

import cattrs
import pytest
from lsprotocol import types as lsp
from pygls.protocol import default_converter

from overnight.protocol import spec, types
from overnight.protocol.wire import make_converter

from .conftest import load

VALID = load("valid.json")
INVALID = load("invalid.json")


def _pygls_converter() -> cattrs.Converter:
    """pygls's own converter, as a LanguageServer gets it by default."""
    converter: cattrs.Converter = default_converter()  # type: ignore[no-untyped-call]
    return converter


def _converters() -> list[cattrs.Converter]:
    return [_pygls_converter(), make_converter()]


def _wire(converter: cattrs.Converter, obj: Any) -> str:
    """The JSON text pygls would send for obj (it json.dumps the converter's output)."""
    return json.dumps(converter.unstructure(obj))


def _params_and_results() -> list[Any]:
    cases = []
    for i, m in enumerate(VALID["messages"]):
        if m["kind"] == "request":
            cases.append(pytest.param(m["paramsType"], m["request"]["params"], id=f"{i}-{m['method']}-params"))
            cases.append(pytest.param(m["resultType"], m["response"]["result"], id=f"{i}-{m['method']}-result"))
        else:
            cases.append(pytest.param(m["paramsType"], m["notification"]["params"], id=f"{i}-{m['method']}"))
    return cases


def test_fixtures_are_of_this_protocol_version() -> None:
    assert VALID["protocolVersion"] == INVALID["protocolVersion"] == types.PROTOCOL_VERSION == spec.PROTOCOL_VERSION


def test_every_method_has_a_golden_message() -> None:
    assert {m["method"] for m in VALID["messages"]} == set(types.METHODS)


@pytest.mark.parametrize(("type_name", "value"), _params_and_results())
def test_valid_fixture_round_trips_exactly(type_name: str, value: Any) -> None:
    cls = types.TYPES[type_name]
    for converter in _converters():
        obj = converter.structure(value, cls)
        assert isinstance(obj, cls)
        # The same JSON text, key order included: the fixture is what pygls puts on the wire.
        assert _wire(converter, obj) == json.dumps(value)


@pytest.mark.parametrize("message", VALID["messages"], ids=lambda m: m["method"])
def test_whole_messages_structure_through_the_method_table(message: dict[str, Any]) -> None:
    info = types.METHODS[message["method"]]
    converter = make_converter()
    if info.kind == "request":
        request = converter.structure(message["request"], info.message)
        assert request.params == converter.structure(message["request"]["params"], info.params)
        assert info.response is not None
        response = converter.structure(message["response"], info.response)
        assert response.result == converter.structure(message["response"]["result"], info.result)
    else:
        notification = converter.structure(message["notification"], info.message)
        assert notification.params == converter.structure(message["notification"]["params"], info.params)
        assert info.direction == "serverToClient"


def test_a_request_may_leave_out_empty_params() -> None:
    request = make_converter().structure({"jsonrpc": "2.0", "id": 3, "method": types.OVERNIGHT_STATUS},
                                         types.StatusRequest)
    assert request.params == types.StatusParams()


def test_connection_fixtures() -> None:
    converter = make_converter()
    connection = VALID["connection"]
    initialize = converter.structure(connection["initialize"], lsp.InitializeRequest)
    options = converter.structure(initialize.params.initialization_options, types.InitializationOptions)
    assert options.protocol_version == types.PROTOCOL_VERSION and options.token
    result = converter.structure(connection["initializeResult"]["result"], lsp.InitializeResult)
    assert result.capabilities.experimental is not None
    server = converter.structure(result.capabilities.experimental["overnight"], types.ServerInfoOvernight)
    assert server.protocol_version == types.PROTOCOL_VERSION
    assert connection["unauthorized"]["error"]["code"] == types.ErrorCode.UNAUTHORIZED
    assert connection["versionMismatch"]["error"]["code"] == types.ErrorCode.VERSION_MISMATCH


@pytest.mark.parametrize("case", INVALID["cases"],
                         ids=lambda c: f"{c['type']}-{c['kind']}-{c['field']}")
def test_invalid_fixture_is_refused(case: dict[str, Any]) -> None:
    with pytest.raises(Exception):  # noqa: B017 - cattrs raises ClassValidationError, TypeError, ...
        make_converter().structure(case["value"], types.TYPES[case["type"]])


@pytest.mark.parametrize("case", [c for c in INVALID["cases"] if c["kind"] in ("missing", "badEnum", "tupleLength")],
                         ids=lambda c: f"{c['type']}-{c['kind']}-{c['field']}")
def test_structural_errors_are_refused_even_by_pygls_default_converter(case: dict[str, Any]) -> None:
    with pytest.raises(Exception):  # noqa: B017
        _pygls_converter().structure(case["value"], types.TYPES[case["type"]])


def test_pygls_default_converter_coerces_what_make_converter_refuses() -> None:
    # Why the daemon uses make_converter(): the trap, pinned down.
    value = {"id": 3, "hunkId": None}
    assert _pygls_converter().structure({"id": 5}, types.AcceptSuggestionParams).id == "5"
    assert _pygls_converter().structure({"id": None}, types.AcceptSuggestionParams).id == "None"
    with pytest.raises(Exception):  # noqa: B017
        make_converter().structure(value, types.AcceptSuggestionParams)


def test_strict_converter_still_reads_standard_lsp_messages() -> None:
    converter = make_converter()
    change = converter.structure({
        "jsonrpc": "2.0", "method": "textDocument/didChange",
        "params": {"textDocument": {"uri": "file:///w/train.py", "version": 3}, "contentChanges": [
            {"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 4}}, "text": "lr"},
            {"text": "whole"}]}}, lsp.DidChangeTextDocumentNotification)
    assert len(change.params.content_changes) == 2
    hover = converter.structure({"jsonrpc": "2.0", "id": "h1", "method": "textDocument/hover", "params": {
        "textDocument": {"uri": "file:///w/train.py"}, "position": {"line": 4, "character": 2}}}, lsp.HoverRequest)
    assert hover.params.position.line == 4
    applied = converter.structure({"applied": False, "failureReason": "stale"}, lsp.ApplyWorkspaceEditResult)
    assert applied.failure_reason == "stale"
    hint = converter.structure({"position": {"line": 1, "character": 0}, "label": "−0.013 bpb", "kind": 1},
                               lsp.InlayHint)
    assert hint.kind == lsp.InlayHintKind.Type

"""What pygls needs to speak Overnight: a strict converter, and a protocol class that knows our methods.

``make_converter()`` is pygls's converter, made strict about JSON types.

pygls's converter (lsprotocol's hooks over cattrs) renames fields to camelCase and structures the
``overnight/*`` classes fine, but it coerces wrong types instead of refusing them: ``5`` becomes ``"5"``,
``null`` in a required string becomes ``"None"``, ``2.5`` becomes ``2``, ``"true"`` becomes ``True``, and a
class whose fields are all optional accepts any value at all. A peer that sends those has a bug, and the
daemon should say so (pygls answers ``InvalidParams``) rather than act on a made-up value.

``OvernightProtocol`` is pygls's ``LanguageServerProtocol`` that structures the ``overnight/*`` messages
into the classes of ``types.py`` (pygls only knows LSP's own methods) and answers a request it cannot
read with an error (pygls 2.1 logs and drops it, so its sender would wait forever).

Use both, in the daemon and in a Python client::

    LanguageServer("overnight", version, protocol_cls=OvernightProtocol, converter_factory=make_converter)
    LanguageClient("overnight-cli", version, protocol_cls=OvernightProtocol, converter_factory=make_converter)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args, get_origin

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override
from pygls.exceptions import JsonRpcException
from pygls.protocol import LanguageServerProtocol, default_converter

from . import types


class OvernightProtocol(LanguageServerProtocol):
    def get_message_type(self, method: str) -> type[Any] | None:  # type: ignore[override]
        # pygls's versions are lru_cached; a dict lookup needs no cache.
        info = types.METHODS.get(method)
        return info.message if info is not None else super().get_message_type(method)

    def get_result_type(self, method: str) -> type[Any] | None:  # type: ignore[override]
        info = types.METHODS.get(method)
        return info.response if info is not None else super().get_result_type(method)

    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as error:
            if "id" in data and "method" in data:
                # A request we cannot read (InvalidParams): answer it, or its sender waits forever — saying what
                # was wrong, in one line (the cause is cattrs's account of the first field it could not read).
                cause = " ".join(_explain(error.__cause__).split())[:200]
                reason = f"invalid params for {data['method']}" + (f": {cause}" if cause else "")
                self._send_response(data["id"], None, type(error)(message=reason).to_response_error())
            elif "id" in data:
                # A response we cannot read: fail the request waiting for it.
                future = self._request_futures.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_exception(error)
            raise


def _explain(cause: BaseException | None) -> str:
    """cattrs's account of what it could not read ("expected an integer @ $.params.id"), else the exception."""
    if cause is None:
        return ""
    if isinstance(cause, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(cause, path="$")[:3])
    return str(cause)


def make_converter() -> cattrs.Converter:
    converter: cattrs.Converter = default_converter()  # type: ignore[no-untyped-call]
    # Enum classes that subclass str or int dispatch here too: they get cl(value) after the type check.
    converter.register_structure_hook(str, _strict(str, "a string"))
    converter.register_structure_hook(int, _strict(int, "an integer"))
    converter.register_structure_hook(bool, _strict(bool, "a boolean"))
    converter.register_structure_hook(float, _strict_number)
    converter.register_structure_hook_func(_is_list, _strict_list(converter))
    converter.register_structure_hook_factory(_is_ours, lambda cl: _object_hook(converter, cl))
    return converter


def _strict(kind: type, what: str) -> Callable[[Any, type], Any]:
    def hook(value: Any, cl: type) -> Any:
        # type() and not isinstance(): True is an int to Python, not to JSON.
        if type(value) is not kind:
            raise TypeError(f"expected {what}, got {_json_kind(value)}")
        return value if cl is kind else cl(value)

    return hook


def _strict_number(value: Any, cl: type) -> Any:
    if type(value) not in (int, float):
        raise TypeError(f"expected a number, got {_json_kind(value)}")
    return cl(value)


def _strict_list(converter: cattrs.Converter) -> Callable[[Any, Any], list[Any]]:
    def hook(value: Any, t: Any) -> list[Any]:
        if not isinstance(value, list):  # a string is iterable too, and would become a list of characters
            raise TypeError(f"expected an array, got {_json_kind(value)}")
        (item,) = get_args(t) or (Any,)
        return [converter.structure(v, item) for v in value]

    return hook


def _is_list(t: Any) -> bool:
    origin: Any = get_origin(t)
    return origin is list


def _is_ours(cl: Any) -> bool:
    return isinstance(cl, type) and attrs.has(cl) and cl.__module__ == types.__name__


def _object_hook(converter: cattrs.Converter, cl: type) -> Callable[[Any, type], Any]:
    # The same camelCase renaming as lsprotocol's hook for attrs classes, behind an object check.
    overrides: dict[str, Any] = {a.name: override(rename=_camel(a.name)) for a in attrs.fields(cl)}
    inner: Callable[[Any, type], Any] = make_dict_structure_fn(cl, converter, **overrides)

    def hook(value: Any, _: type) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected a {cl.__name__} object, got {_json_kind(value)}")
        return inner(value, cl)

    return hook


def _camel(name: str) -> str:
    name = name[:-1] if name.endswith("_") else name
    first, *rest = name.split("_")
    return first + "".join(p.title() for p in rest)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)

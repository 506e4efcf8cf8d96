"""Property: any instance of any protocol type survives unstructure -> JSON -> structure unchanged, and its
JSON is what spec.py says is on the wire (camelCase names, optional fields absent rather than null)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overnight.protocol import generate, spec, types
from overnight.protocol.generate import Array, Prim, Ref, Tuple, TypeExpr
from overnight.protocol.wire import make_converter

MODEL = generate.Model()
CONVERTER = make_converter()
_SAFE_INT = 2**53 - 1  # what a JavaScript number holds exactly

_json_leaf = (st.none() | st.booleans() | st.integers(-_SAFE_INT, _SAFE_INT)
              | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
_json_value = st.recursive(_json_leaf, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def strategy(t: TypeExpr, unsigned: bool = False) -> st.SearchStrategy[Any]:
    if isinstance(t, Prim):
        return {
            # lsprotocol's own types (Range, Position) hold LSP uintegers.
            "integer": st.integers(0, 2**31 - 1) if unsigned else st.integers(-_SAFE_INT, _SAFE_INT),
            "number": st.floats(allow_nan=False, allow_infinity=False),
            "string": st.text(max_size=12),
            "boolean": st.booleans(),
            "json": st.dictionaries(st.text(max_size=5), _json_value, max_size=3),
        }[t.name]
    if isinstance(t, Array):
        return st.lists(strategy(t.item, unsigned), max_size=3)
    if isinstance(t, Tuple):
        return st.tuples(*(strategy(item, unsigned) for item in t.items))
    cls = types.TYPES[t.name]
    if t.name in MODEL.enums:
        return st.sampled_from(list(cls))
    struct = MODEL.structs[t.name]
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in struct.fields:
        value = strategy(MODEL.field_type(field), unsigned or struct.python is not None)
        fields[generate.py_field_name(field.name)] = st.none() | value if field.optional else value
    return st.builds(cls, **fields)


@pytest.mark.parametrize("name", [s.name for s in spec.STRUCTS])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_instances_survive_the_wire(name: str, data: st.DataObject) -> None:
    cls = types.TYPES[name]
    obj = data.draw(strategy(Ref(name)))
    wire = json.loads(json.dumps(CONVERTER.unstructure(obj)))
    assert generate.check_struct(MODEL, MODEL.structs[name], wire) == []
    assert CONVERTER.structure(wire, cls) == obj

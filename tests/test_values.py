"""The value encoding: every kind round-trips through plain msgpack, bit-exactly; bad values are refused."""

from __future__ import annotations

import math
import struct

import msgpack
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fxlower.format.constants import DTYPE_CODES, LAYOUTS, MEMORY_FORMATS
from fxlower.errors import ExportError, FormatError
from fxlower.format.values import INT64_MAX, INT64_MIN, decode, encode

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(INT64_MIN, INT64_MAX), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.just(Ellipsis), st.complex_numbers(allow_nan=False),
    st.sampled_from(sorted(DTYPE_CODES.values(), key=str)), st.sampled_from(list(MEMORY_FORMATS.values())),
    st.sampled_from(list(LAYOUTS.values())), st.sampled_from([torch.device("cpu"), torch.device("cuda:1")]),
    st.builds(slice, st.none() | st.integers(-5, 5), st.none() | st.integers(-5, 5), st.none() | st.integers(1, 3)),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple),
    st.dictionaries(st.text(max_size=4) | st.integers(-3, 3), inner, max_size=4)), max_leaves=20)


def _bits_equal(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, complex):
        return _bits_equal(a.real, b.real) and _bits_equal(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_bits_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_bits_equal(a[k], b[k]) for k in a)
    if isinstance(a, slice):
        return _bits_equal((a.start, a.stop, a.step), (b.start, b.stop, b.step))
    return a == b


@settings(max_examples=300, deadline=None)
@given(values)
def test_every_value_round_trips_bit_exactly_through_plain_msgpack(value):
    wire = msgpack.packb(encode(value), use_bin_type=True)
    back = decode(msgpack.unpackb(wire, raw=False, strict_map_key=True), "v")
    assert _bits_equal(back, value)


def test_special_floats_keep_their_bits():
    for x in (float("inf"), -float("inf"), -0.0, float("nan"), 5e-324):
        back = decode(msgpack.unpackb(msgpack.packb(encode(x))), "v")
        assert struct.pack("<d", back) == struct.pack("<d", x) or (math.isnan(x) and math.isnan(back))


def test_lists_and_tuples_stay_distinct():
    assert encode([1, (2,)]) == {"t": "list", "v": [1, {"t": "tuple", "v": [2]}]}


def test_node_and_tensor_references_resolve_through_callbacks():
    import torch.fx as fx
    g = fx.Graph()
    x = g.placeholder("x")
    enc = encode({"a": x, "b": torch.ones(1)}, tensor_name=lambda t: "w")
    assert enc == {"t": "dict", "v": [["a", {"t": "node", "v": "x"}], ["b", {"t": "tensor", "v": "w"}]]}
    assert decode(enc, "v", node=lambda n, w: f"N:{n}", tensor=lambda n, w: f"T:{n}") == {"a": "N:x", "b": "T:w"}


@pytest.mark.parametrize("value, message", [
    (1 << 63, "outside the 64-bit range"),
    (object(), "builtins.object"),
    ({(1, 2): 3}, "dict key"),
    (torch.ones(1), "only allowed where the tensor table"),
    (torch.qint8, "no code in format v1"),
])
def test_unencodable_values_are_refused_naming_where(value, message):
    with pytest.raises(ExportError, match=message):
        encode(value, where="node 'n' args[0]")


@pytest.mark.parametrize("obj, code", [
    ({"t": "node", "v": "x"}, "graph.reference"),
    ({"t": "tensor", "v": "w"}, "tensor.reference"),
    ({"t": "nope", "v": 1}, "schema.type"),
    ({"t": "list", "v": 1}, "schema.type"),
    ({"t": "list"}, "schema.type"),
    ({"t": "dict", "v": [["a", 1], ["a", 2]]}, "manifest.duplicate_key"),
    ({"t": "dtype", "v": "F128"}, "tensor.dtype"),
    ({"t": "device", "v": "cpu; rm"}, "schema.type"),
    ({"t": "complex", "v": [1, 2]}, "schema.type"),
    ({"t": "slice", "v": [1, 2]}, "schema.type"),
    (b"bytes", "schema.type"),
    (1 << 63, "schema.type"),
])
def test_malformed_values_are_refused_with_their_code(obj, code):
    with pytest.raises(FormatError) as info:
        decode(obj, "manifest.msgpack: graphs[0].nodes[1].args[0]")
    assert info.value.code == code and "graphs[0].nodes[1].args[0]" in str(info.value)


def test_nesting_past_the_cap_is_refused():
    obj = 1
    for _ in range(70):
        obj = {"t": "list", "v": [obj]}
    with pytest.raises(FormatError) as info:
        decode(obj, "v")
    assert info.value.code == "schema.depth"


# ------------------------------------------------------------------------------------------------ the walker

def test_walk_rebuilds_every_container_kind_around_mapped_leaves():
    from fxlower.format.values import walk
    value = [1, (2, {"a": 3, 4: slice(5, None, 6)}), "s"]
    got = walk(value, lambda v, w: v * 10 if type(v) is int else v)
    assert got == [10, (20, {"a": 30, 4: slice(50, None, 60)}), "s"]
    assert type(got[1]) is tuple and list(got[1][1]) == ["a", 4]


def test_walk_reports_each_leaf_where_it_is():
    from fxlower.format.values import leaves
    assert leaves({"k": [None, (1,)]}, where="v") == [(None, "v['k'][0]"), (1, "v['k'][1][0]")]


def test_node_refs_are_distinct_in_order_of_first_reference():
    from fxlower.format.values import NodeRef, node_refs
    a, b = NodeRef("a"), NodeRef("b")
    assert node_refs(((b, [a, b]), {"k": slice(a, None, None)})) == ["b", "a"]


def test_walk_limits_depth_only_when_asked():
    from fxlower.format.values import walk
    deep = None
    for _ in range(70):
        deep = (deep,)
    assert walk(deep, lambda v, w: v) == deep
    with pytest.raises(ValueError, match="deep"):
        walk(deep, lambda v, w: v, too_deep=lambda w: ValueError(f"too deep at {w[:10]}"))

"""The manifest schema, declared once as frozen dataclasses.

The msgpack encoding (:func:`to_obj`) and the checked decoding (:func:`from_obj`) are derived from the type
hints; so is the JSON Schema in ``docs/schema.json`` (:func:`json_schema`). A field added in a minor version
MUST have a default (a reader of the new minor then accepts files of the older one); ``tests/test_schema.py``
fails with "bump to X.Y" otherwise.

Field types: ``str``, ``int`` (int64), ``float`` (float64), ``bool``, ``list[T]``, ``dict[str, T]``,
``T | None``, a nested dataclass, ``Value`` (see :mod:`fxlower.format.values`) and ``Meta`` (output metadata). Value
and Meta fields are kept as their raw msgpack objects here; :mod:`fxlower.io.loading` decodes them in graph context.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, NewType, Union

from .constants import FORMAT_VERSION
from ..errors import FormatError
from .values import INT64_MAX, INT64_MIN, kind_name as _kind

__all__ = [
    "SCHEMA_VERSION", "Value", "Meta", "Producer", "FileEntry", "TensorEntry", "Lowering", "Node", "Graph",
    "MeshDim", "Placement", "Signature", "Tolerance", "Golden", "Param", "Overload", "AttrDecl", "ModuleDecl", "NodeLink", "CoreInput",
    "CoreOutput", "OpArg", "OpSchema", "Symbol", "CoreView", "Manifest", "to_obj",
    "from_obj", "json_schema",
]

SCHEMA_VERSION = FORMAT_VERSION

#: A Value (docs/format.md, "Values"), kept as its msgpack object.
Value = NewType("Value", object)
#: Output metadata (docs/format.md, "Output metadata"), kept as its msgpack object.
Meta = NewType("Meta", object)


@dataclasses.dataclass(frozen=True)
class Producer:
    name: str
    version: str
    torch: str


@dataclasses.dataclass(frozen=True)
class FileEntry:
    path: str
    role: str


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: list[int]
    file: str
    key: str
    sha256: str
    # 1.1: what the tensor is to the module: "parameter", "buffer", "constant" or "golden"; "" only in 1.0 files,
    # whose loaders fall back to the 1.0 rule (floating -> frozen parameter, else buffer).
    kind: str = ""
    # 1.1: a parameter's requires_grad (false for every other kind).
    requires_grad: bool = False
    # 1.1: whether a buffer is in state_dict() (true for every other kind).
    persistent: bool = True
    # 1.3: how a multi-device program lays the tensor out over a device mesh (DTensor placements); nil when
    # the tensor is not placed (a single-device tensor, or a golden tensor).
    placement: Placement | None = None


@dataclasses.dataclass(frozen=True)
class MeshDim:
    """1.3: one dimension of a tensor's placement: ``kind`` "shard" (split along tensor dimension ``dim`` into
    chunks, torch.chunk's rule) or "replicate" (every coordinate holds it whole; ``dim`` is -1)."""

    kind: str
    dim: int


@dataclasses.dataclass(frozen=True)
class Placement:
    """1.3: a tensor laid out over a device mesh of shape ``mesh`` (ranks numbered row-major), one ``MeshDim``
    per mesh dimension, applied in mesh-dimension order; ``mesh_dim_names`` as DeviceMesh named them, or []."""

    mesh: list[int]
    dims: list[MeshDim]
    mesh_dim_names: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Lowering:
    module_type: str
    version: int
    module_version: int
    attrs: dict[str, Value]
    # 1.1: the module's training flag at export (informative: the artifact's computation is eval-mode).
    training: bool = False


@dataclasses.dataclass(frozen=True)
class NodeLink:
    """1.2: a node of the module view (``Manifest.graphs[graph]``, node ``node``)."""

    graph: int
    node: str


@dataclasses.dataclass(frozen=True)
class Node:
    name: str
    op: str
    target: str
    args: list[Value]
    kwargs: dict[str, Value]
    inputs: list[str]
    users: list[str]
    meta: Meta | None
    lowering: Lowering | None
    graph: int | None
    # 1.1: for call_function/call_method nodes, the index of the overload (Manifest.functions / .methods) that
    # the node's args and kwargs bind to; nil on other ops and in 1.0 files.
    overload: int | None = None
    # 1.2: on a core-view node, the module-view node it came from (nil for glue and on module-view nodes).
    origin: NodeLink | None = None


@dataclasses.dataclass(frozen=True)
class Graph:
    name: str
    nodes: list[Node]
    # 1.1: the graph module's own training flag at export.
    training: bool = False


@dataclasses.dataclass(frozen=True)
class Signature:
    inputs: list[str]
    output: Value


@dataclasses.dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


@dataclasses.dataclass(frozen=True)
class Golden:
    mode: str
    file: str
    inputs: list[Value]
    outputs: Value
    nodes: dict[str, Value]
    tolerances: dict[str, Tolerance]
    # 1.2: core root node name -> its result (golden="nodes" with a core view).
    core_nodes: dict[str, Value] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Param:
    """A parameter of a module's forward or of a function overload (docs/format.md, Signatures)."""

    name: str
    kind: str  # positional_only, positional_or_keyword, var_positional, keyword_only, var_keyword
    default: Value  # the default; nil when there is none (see required) or when it is None
    required: bool  # true when the parameter has no default


@dataclasses.dataclass(frozen=True)
class Overload:
    params: list[Param]
    returns: str  # the return annotation as text (informative)


@dataclasses.dataclass(frozen=True)
class AttrDecl:
    name: str  # dotted; the component "*" stands for one decimal index
    type: str  # the attribute type grammar of docs/format.md
    doc: str  # one line of meaning


@dataclasses.dataclass(frozen=True)
class ModuleDecl:
    version: int  # the lowering rule's version
    attrs: list[AttrDecl]
    forward: list[Param]


@dataclasses.dataclass(frozen=True)
class CoreInput:
    """1.2: a placeholder of the core root graph."""

    name: str  # the placeholder node's name
    kind: str  # user_input, parameter, buffer, constant
    target: str  # user_input: the signature input it binds to; otherwise the tensor table name


@dataclasses.dataclass(frozen=True)
class CoreOutput:
    """1.2: an element of the core root graph's output."""

    name: str  # the node it returns ("" for a constant or None)
    kind: str  # user_output, buffer_mutation
    target: str  # buffer_mutation: the tensor table name of the buffer it updates; otherwise ""


@dataclasses.dataclass(frozen=True)
class OpArg:
    """1.2: an argument or return of an operator schema."""

    name: str
    type: str  # the schema's type text: Tensor, Tensor?, SymInt[], Scalar, ...
    kwarg_only: bool
    default: Value  # nil when there is none (see required) or when it is None
    required: bool
    mutates: bool  # the schema marks it written (alias annotation with '!')


@dataclasses.dataclass(frozen=True)
class OpSchema:
    """1.2: the schema of a core operator (torch.FunctionSchema)."""

    name: str  # aten::convolution
    overload: str  # default
    arguments: list[OpArg]
    returns: list[OpArg]


@dataclasses.dataclass(frozen=True)
class Symbol:
    """1.2: a shape symbol of the core view and the input dimension that defines it."""

    min: int
    max: int | None  # nil: unbounded
    input: int  # index into CoreView.inputs (a user_input)
    dim: int


@dataclasses.dataclass(frozen=True)
class CoreView:
    """1.2: the program as Core ATen operators (torch.export + run_decompositions)."""

    graphs: list[Graph]  # graphs[0] the root; then control-flow branches and bodies
    inputs: list[CoreInput]
    outputs: list[CoreOutput]
    ops: dict[str, OpSchema]
    symbols: dict[str, Symbol]


@dataclasses.dataclass(frozen=True)
class Manifest:
    format: str
    format_version: list[int]
    producer: Producer
    files: list[FileEntry]
    tensors: list[TensorEntry]
    graphs: list[Graph]
    signature: Signature
    golden: Golden | None
    digest: str
    # 1.1: the declaration of every module type used by a lowering record (or named by a module Value in one).
    modules: dict[str, ModuleDecl] = dataclasses.field(default_factory=dict)
    # 1.1: the overloads of every call_function target / call_method name used by the graphs.
    functions: dict[str, list[Overload]] = dataclasses.field(default_factory=dict)
    methods: dict[str, list[Overload]] = dataclasses.field(default_factory=dict)
    # 1.2: the core view (Core ATen), linked to the module view; nil when the artifact has none.
    core: CoreView | None = None


# ------------------------------------------------------------------------------------------------ encoding

def to_obj(value: Any) -> Any:
    """A schema object as plain msgpack types: dataclasses become maps in field order.

    Value and Meta fields are plain msgpack objects already and are passed through as they are.
    """
    cls = type(value)
    if dataclasses.is_dataclass(cls):
        return {name: (v if plain else to_obj(v)) for name, plain in _plan(cls)
                for v in (getattr(value, name),)}
    if cls is list:
        return [to_obj(v) for v in value]
    if cls is dict:
        return {k: to_obj(v) for k, v in value.items()}
    return value


_PLANS: dict[type, tuple[tuple[str, bool], ...]] = {}


def _plan(cls: type) -> tuple[tuple[str, bool], ...]:
    """(field name, whether its value is already plain) for each field of a schema dataclass."""
    plan = _PLANS.get(cls)
    if plan is None:
        hints = _hints(cls)
        plan = _PLANS[cls] = tuple((f.name, not _has_dataclass(hints[f.name])) for f in dataclasses.fields(cls))
    return plan


def _has_dataclass(hint: Any) -> bool:
    return dataclasses.is_dataclass(hint) or any(_has_dataclass(a) for a in typing.get_args(hint))


# ------------------------------------------------------------------------------------------------ decoding

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _is_extension_key(key: str) -> bool:
    return key.startswith("x-")


def from_obj(cls: type, obj: Any, where: str) -> Any:
    """Decode and type-check ``obj`` as an instance of the schema dataclass ``cls``.

    Unknown keys are rejected unless they start with ``x-`` (the extension namespace, ignored). A field with a
    default may be absent.

    Raises:
        FormatError: "schema.missing_field", "schema.unknown_field" or "schema.type", naming the field.
    """
    if type(obj) is not dict:
        raise FormatError("schema.type", f"expected a map ({cls.__name__}), found {_kind(obj)}", where)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    for key in obj:
        if key not in names and not _is_extension_key(key):
            raise FormatError("schema.unknown_field", f"unknown field '{key}' in {cls.__name__}; expected "
                              f"{sorted(names)} (extension fields start with 'x-')", where)
    hints = _hints(cls)
    kwargs = {}
    for f in fields:
        if f.name not in obj:
            if f.default is not dataclasses.MISSING:
                kwargs[f.name] = f.default
                continue
            if f.default_factory is not dataclasses.MISSING:
                kwargs[f.name] = f.default_factory()
                continue
            raise FormatError("schema.missing_field", f"{cls.__name__} requires the field '{f.name}'", where)
        kwargs[f.name] = _check(hints[f.name], obj[f.name], f"{where}.{f.name}")
    return cls(**kwargs)


def _check(hint: Any, obj: Any, where: str) -> Any:
    if hint is Value or hint is Meta:
        _check_ints(obj, where)
        return obj  # decoded in context by fxlower.io.reading
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if obj is None:
            return None
        return _check(args[0], obj, where)
    if origin is list:
        if type(obj) is not list:
            raise FormatError("schema.type", f"expected an array, found {_kind(obj)}", where)
        (item,) = typing.get_args(hint)
        return [_check(item, v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if origin is dict:
        if type(obj) is not dict:
            raise FormatError("schema.type", f"expected a map, found {_kind(obj)}", where)
        _, item = typing.get_args(hint)
        return {k: _check(item, v, f"{where}.{k}") for k, v in obj.items()}
    if dataclasses.is_dataclass(hint):
        return from_obj(hint, obj, where)
    if hint is int:
        if type(obj) is not int or not INT64_MIN <= obj <= INT64_MAX:
            raise FormatError("schema.type", f"expected an int64, found {_kind(obj)} {obj!r:.40}", where)
        return obj
    if hint in (str, float, bool):
        if type(obj) is not hint:
            raise FormatError("schema.type", f"expected {_kind(hint())}, found {_kind(obj)}", where)
        return obj
    raise TypeError(f"schema hint {hint!r} at {where} has no decoder")  # a bug in this module, not in a file


def _check_ints(obj: Any, where: str) -> None:
    """Every int inside a Value or Meta is an int64 (docs/format.md section 10: checked with the schema, in field
    order, before anything is decoded in context). Iterative: msgpack nesting is at most 1024 deep. A first pass
    without paths; the path of the first bad int is worked out only when there is one."""
    stack = [obj]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is int:
            if not INT64_MIN <= v <= INT64_MAX:
                break
        elif t is list:
            stack.extend(v)
        elif t is dict:
            stack.extend(v.values())
    else:
        return
    todo = [(obj, where)]
    while todo:
        v, w = todo.pop()
        t = type(v)
        if t is int and not INT64_MIN <= v <= INT64_MAX:
            raise FormatError("schema.type", f"the int {v} is outside int64", w)
        if t is list:
            todo.extend((v[i], f"{w}[{i}]") for i in range(len(v) - 1, -1, -1))
        elif t is dict:
            todo.extend((x, f"{w}.{k}") for k, x in reversed(list(v.items())))


# ------------------------------------------------------------------------------------------------ JSON Schema

_VALUE_SCHEMA = {
    "description": "A Value (docs/format.md, Values): nil, bool, int64, float64, str, or a tagged map.",
    "oneOf": [
        {"type": ["null", "boolean", "integer", "number", "string"]},
        {"type": "object", "additionalProperties": False, "required": ["t", "v"],
         "properties": {"t": {"enum": ["node", "tensor", "dtype", "device", "memory_format", "layout",
                                             "function", "module"]},
                        "v": {"type": "string"}}},
        {"type": "object", "additionalProperties": False, "required": ["t", "v"],
         "properties": {"t": {"enum": ["list", "tuple"]}, "v": {"type": "array", "items": {"$ref": "#/$defs/Value"}}}},
        {"type": "object", "additionalProperties": False, "required": ["t", "v"],
         "properties": {"t": {"const": "dict"}, "v": {"type": "array", "items": {
             "type": "array", "prefixItems": [{"type": ["string", "integer"]}, {"$ref": "#/$defs/Value"}],
             "minItems": 2, "maxItems": 2}}}},
        {"type": "object", "additionalProperties": False, "required": ["t", "v"],
         "properties": {"t": {"const": "slice"}, "v": {"type": "array", "items": {"$ref": "#/$defs/Value"},
                                                       "minItems": 3, "maxItems": 3}}},
        {"type": "object", "additionalProperties": False, "required": ["t", "v"],
         "properties": {"t": {"const": "ellipsis"}, "v": {"type": "null"}}},
        {"type": "object", "additionalProperties": False, "required": ["t", "v"],
         "properties": {"t": {"const": "complex"}, "v": {"type": "array", "items": {"type": "number"},
                                                         "minItems": 2, "maxItems": 2}}},
        {"type": "object", "additionalProperties": False, "required": ["t", "v"],  # 1.2, core graphs only
         "properties": {"t": {"const": "graph"}, "v": {"type": "integer", "minimum": 1}}},
    ],
}
_META_SCHEMA = {
    "description": "Output metadata of a node (docs/format.md, Output metadata).",
    "oneOf": [
        {"type": "object", "additionalProperties": False, "required": ["t", "dtype", "shape"],
         "properties": {"t": {"const": "tensor"}, "dtype": {"type": "string"},
                        "shape": {"type": "array", "maxItems": 64, "items": {"anyOf": [
                            {"type": "integer", "minimum": 0},
                            {"type": "string", "description": "1.2, core graphs only: a shape expression"}]}}}},
        {"type": "object", "additionalProperties": False, "required": ["t", "v"],
         "properties": {"t": {"enum": ["tuple", "list"]}, "v": {"type": "array", "items": {"$ref": "#/$defs/Meta"}}}},
        {"type": "object", "additionalProperties": False, "required": ["t", "v"],
         "properties": {"t": {"const": "dict"}, "v": {"type": "array", "items": {
             "type": "array", "prefixItems": [{"type": ["string", "integer"]}, {"$ref": "#/$defs/Meta"}],
             "minItems": 2, "maxItems": 2}}}},
        {"type": "object", "additionalProperties": False, "required": ["t", "v"],
         "description": "1.2, core graphs only: a SymInt result and its symbol expression",
         "properties": {"t": {"const": "symint"}, "v": {"type": ["string", "integer"]}}},
        {"type": "object", "additionalProperties": False, "required": ["t"],
         "properties": {"t": {"enum": ["int", "float", "bool", "str", "none", "other", "device", "dtype",
                                             "memory_format", "layout"]}}},
    ],
}


def _json_type(hint: Any) -> dict[str, Any]:
    if hint is Value:
        return {"$ref": "#/$defs/Value"}
    if hint is Meta:
        return {"$ref": "#/$defs/Meta"}
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return {"anyOf": [_json_type(inner), {"type": "null"}]}
    if origin is list:
        return {"type": "array", "items": _json_type(typing.get_args(hint)[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _json_type(typing.get_args(hint)[1])}
    if dataclasses.is_dataclass(hint):
        return {"$ref": f"#/$defs/{hint.__name__}"}
    return {"type": {int: "integer", float: "number", str: "string", bool: "boolean"}[hint]}


def _dataclasses(root: type) -> list[type]:
    out: list[type] = []

    def visit(hint: Any) -> None:
        if dataclasses.is_dataclass(hint):
            if hint in out:
                return
            out.append(hint)
            for h in _hints(hint).values():
                visit(h)
        for a in typing.get_args(hint):
            visit(a)

    visit(root)
    return out


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the manifest, rendered from the dataclasses."""
    defs: dict[str, Any] = {"Value": _VALUE_SCHEMA, "Meta": _META_SCHEMA}
    for cls in _dataclasses(Manifest):
        hints = _hints(cls)
        fields = dataclasses.fields(cls)
        defs[cls.__name__] = {
            "type": "object",
            "required": [f.name for f in fields
                         if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING],
            "properties": {f.name: _json_type(hints[f.name]) for f in fields},
            "patternProperties": {"^x-": {}},
            "additionalProperties": False,
        }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"fxlower manifest, format {SCHEMA_VERSION[0]}.{SCHEMA_VERSION[1]}",
        "$ref": "#/$defs/Manifest",
        "$defs": defs,
    }

"""The value encoding: Python values carried by fx nodes <-> plain msgpack objects, and output metadata.

A Value is written as itself when it is ``nil``, a bool, a 64-bit int, a float64 or a str. Every other kind is a
map with exactly the keys ``"t"`` (the kind) and ``"v"`` (its payload)::

    {"t": "node",   "v": "<node name>"}        an earlier node of the same graph
    {"t": "tensor", "v": "<tensor name>"}      an entry of the manifest's tensor table
    {"t": "list",   "v": [Value, ...]}
    {"t": "tuple",  "v": [Value, ...]}
    {"t": "dict",   "v": [[key, Value], ...]}  key: str or int; order kept
    {"t": "slice",  "v": [start, stop, step]}  each a Value
    {"t": "ellipsis", "v": nil}
    {"t": "complex", "v": [re, im]}            float64s
    {"t": "dtype",  "v": "F32"}                a dtype code (docs/format.md)
    {"t": "device", "v": "cpu" | "cuda:0"}
    {"t": "memory_format", "v": "channels_last"}
    {"t": "layout", "v": "strided"}
    {"t": "function", "v": "torch.nn.functional.relu"}   1.1: a function, by canonical name
    {"t": "module", "v": "torch.nn.Linear"}              1.1: a module type (a child in a lowering record)
    {"t": "graph", "v": 1}                               1.2: a subgraph of the core view (CoreView.graphs index),
                                                         the branch/body argument of a control-flow operator

Output metadata ("Meta") describes what a node produces::

    {"t": "tensor", "dtype": "F32", "shape": [1, 3]}
    {"t": "tuple" | "list", "v": [Meta, ...]}
    {"t": "dict", "v": [[key, Meta], ...]}
    {"t": "int" | "float" | "bool" | "str" | "none" | "other"}
    {"t": "device" | "dtype" | "memory_format" | "layout"}       1.1
    {"t": "symint", "v": "s0*2"}                                  1.2, core graphs only: a SymInt and its expression

In core graphs (1.2) a tensor shape entry may also be a str: a symbol expression (:mod:`fxlower.format.symbolic`).
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx

from .constants import (CODE_OF_DTYPE, DTYPE_CODES, LAYOUTS, MAX_NAME_BYTES, MAX_RANK, MAX_VALUE_DEPTH,
                        MEMORY_FORMATS, STORAGE_DTYPES)
from ..errors import ExportError, FormatError

__all__ = ["encode", "decode", "check_meta", "check_shape", "meta_of", "kind_name", "FunctionRef", "ModuleTypeRef",
           "NodeRef", "TensorRef", "GraphRef", "walk", "split_python", "join_python", "split_tagged", "leaves", "node_refs",
           "has_tensor", "clone_tensors", "INT64_MIN", "INT64_MAX"]

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_MEMORY_FORMAT_NAMES = {v: k for k, v in MEMORY_FORMATS.items()}
_LAYOUT_NAMES = {v: k for k, v in LAYOUTS.items()}
#: Device types a Value may name (docs/format.md 6.1), and an optional index without leading zeros.
DEVICE_TYPES = ("cpu", "cuda", "hip", "mps", "xpu", "xla", "meta", "hpu", "mtia", "maia", "ipu", "privateuseone")
_DEVICE_RE = re.compile(r"^(" + "|".join(DEVICE_TYPES) + r")(:(0|[1-9][0-9]{0,5}))?\Z")
_VALUE_KINDS = frozenset({"node", "tensor", "list", "tuple", "dict", "slice", "ellipsis", "complex", "dtype",
                          "device", "memory_format", "layout", "function", "module", "graph"})


@dataclasses.dataclass(frozen=True)
class FunctionRef:
    """A decoded ``function`` Value: a function by canonical name, resolved only through the allow-list."""

    name: str


@dataclasses.dataclass(frozen=True)
class ModuleTypeRef:
    """A decoded ``module`` Value: a module type by name, resolved only through the book's registry."""

    name: str


@dataclasses.dataclass(frozen=True)
class NodeRef:
    """A decoded ``node`` Value: a reference to an earlier node's result."""

    name: str


@dataclasses.dataclass(frozen=True)
class GraphRef:
    """A decoded ``graph`` Value (1.2): a subgraph of the core view, by its index in ``CoreView.graphs``."""

    index: int


@dataclasses.dataclass(frozen=True)
class TensorRef:
    """A decoded ``tensor`` Value: a reference to an entry of the tensor table."""

    name: str


# ------------------------------------------------------------------------------------------------ the walker
#
# One walker serves every traversal of a value tree: the encoder (Python -> msgpack), the decoder (msgpack ->
# Python), and the collectors and rewriters of decoded or live values (node references, tensors, copies). A tree is
# seen through a *view*: ``split(value, where)`` returns None for a leaf, or ``(kind, children)`` for a container,
# children being ``(key, child, child_where)``; ``join(kind, [(key, result), ...], where)`` builds the container
# result. The walker owns the depth limit.

Children = list[tuple[Any, Any, str]]
_SCALARS = frozenset({type(None), bool, int, float, str})


def split_python(value: Any, where: str | None) -> tuple[str, Children] | None:
    """The view of a Python value tree: lists, tuples (any tuple subclass), dicts and slices are containers.
    With ``where`` None, children carry no location (collectors that never report one skip the formatting)."""
    if where is None:
        if isinstance(value, (list, tuple)):
            return ("list" if isinstance(value, list) else "tuple"), [(i, v, None) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return "dict", [(k, v, None) for k, v in value.items()]
        if isinstance(value, slice):
            return "slice", [("start", value.start, None), ("stop", value.stop, None), ("step", value.step, None)]
        return None
    if isinstance(value, list):
        return "list", [(i, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return "tuple", [(i, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return "dict", [(k, v, f"{where}[{k!r}]") for k, v in value.items()]
    if isinstance(value, slice):
        return "slice", [(n, x, f"{where}.{n}") for n, x in (("start", value.start), ("stop", value.stop),
                                                              ("step", value.step))]
    return None


def join_python(kind: str, items: list[tuple[Any, Any]], where: str) -> Any:
    """Build a Python container (list, tuple, dict, slice) from walked children."""
    if kind == "list":
        return [r for _, r in items]
    if kind == "tuple":
        return tuple(r for _, r in items)
    if kind == "dict":
        return dict(items)
    return slice(*(r for _, r in items))


def walk(value: Any, leaf: Callable[[Any, str], Any], *, split: Callable[[Any, str], Any] = split_python,
         join: Callable[[str, list, str], Any] | None = join_python, where: str | None = "value",
         too_deep: Callable[[str], Exception] | None = None, _depth: int = 0) -> Any:
    """Walk a value tree: ``leaf(value, where)`` for every leaf, ``join`` for every container, bottom-up.

    Args:
        value: the tree.
        leaf: the result for a leaf.
        split: the view (:func:`split_python` for Python values; the decoder passes the tagged msgpack view).
        join: builds a container's result from its children's results (:func:`join_python` rebuilds the
            container); None only visits (the result is None).
        where: names the value in errors; children extend it (``[0]``, ``['key']``, ``.start``).
        too_deep: the exception to raise past ``MAX_VALUE_DEPTH`` levels of nesting; without it, no limit (for
            trees already checked, such as decoded values wrapped in an argument tuple).

    Example:
        >>> walk([1, (2, 3)], lambda v, w: v * 10)
        [10, (20, 30)]
    """
    if too_deep is not None and _depth > MAX_VALUE_DEPTH:
        raise too_deep(where)
    if type(value) in _SCALARS:  # a leaf in every view
        return leaf(value, where)
    parts = split(value, where)
    if parts is None:
        return leaf(value, where)
    kind, children = parts
    d = _depth + 1
    if join is None:  # visiting only: no results to build
        for _, c, w in children:
            walk(c, leaf, split=split, join=None, where=w, too_deep=too_deep, _depth=d)
        return None
    return join(kind, [(k, walk(c, leaf, split=split, join=join, where=w, too_deep=too_deep, _depth=d))
                       for k, c, w in children], where)


def leaves(value: Any, *, where: str | None = "value") -> list[tuple[Any, str | None]]:
    """Every leaf of a Python value tree with its location (None with ``where=None``), depth first, in order."""
    out: list[tuple[Any, str | None]] = []
    walk(value, lambda v, w: out.append((v, w)), join=None, where=where)
    return out


def node_refs(value: Any) -> list[str]:
    """The distinct node names a decoded value references, in order of first reference."""
    return list(dict.fromkeys(v.name for v, _ in leaves(value, where=None) if isinstance(v, NodeRef)))


def has_tensor(value: Any) -> bool:
    """Whether a Python value tree holds a tensor."""
    return any(isinstance(v, torch.Tensor) for v, _ in leaves(value, where=None))


def clone_tensors(value: Any) -> Any:
    """The tree with every tensor replaced by a detached copy (containers rebuilt, other leaves shared)."""
    return walk(value, lambda v, w: v.detach().clone() if isinstance(v, torch.Tensor) else v, where=None)


# ------------------------------------------------------------------------------------------------ encoding

def _tagged(kind: str, payload: Any) -> dict[str, Any]:
    return {"t": kind, "v": payload}


def encode(value: Any, *, tensor_name: Callable[[torch.Tensor], str] | None = None, where: str = "value") -> Any:
    """Encode a Python value for the manifest.

    Args:
        value: what an fx node argument (or a lowering attribute) holds.
        tensor_name: maps a tensor to its name in the tensor table; tensors are refused without it.
        where: names the value in error messages.

    Raises:
        ExportError: the value has no encoding (naming where and its type), an int is outside int64, or
            nesting is deeper than the format allows.
    """
    return walk(value, lambda v, w: _encode_leaf(v, w, tensor_name), join=_join_tagged, where=where,
                too_deep=lambda w: ExportError(f"{w} nests deeper than {MAX_VALUE_DEPTH} levels"))


def _join_tagged(kind: str, items: list[tuple[Any, Any]], where: str) -> dict[str, Any]:
    if kind != "dict":
        return _tagged(kind, [r for _, r in items])
    for k, _ in items:
        if type(k) is not str and (type(k) is not int or not INT64_MIN <= k <= INT64_MAX):
            raise ExportError(f"{where} has the dict key {k!r}; only str and int64 keys are encodable")
    return _tagged("dict", [[k, r] for k, r in items])


def _encode_leaf(value: Any, where: str, tensor_name: Callable[[torch.Tensor], str] | None) -> Any:
    t = type(value)
    if value is None or t is bool or t is str or t is float:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ExportError(f"{where} is the int {value}, outside the 64-bit range the format stores")
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, fx.Node):
        return _tagged("node", value.name)
    if isinstance(value, torch.Tensor):
        if tensor_name is None:
            raise ExportError(f"{where} is a tensor, which is only allowed where the tensor table can hold it")
        return _tagged("tensor", tensor_name(value))
    if value is Ellipsis:
        return _tagged("ellipsis", None)
    if isinstance(value, complex):
        return _tagged("complex", [float(value.real), float(value.imag)])
    if isinstance(value, torch.dtype):
        code = CODE_OF_DTYPE.get(value)
        if code is None:
            raise ExportError(f"{where} is the dtype {value}, which has no code in format v1")
        return _tagged("dtype", code)
    if isinstance(value, torch.device):
        return _tagged("device", str(value))
    if isinstance(value, torch.memory_format):
        return _tagged("memory_format", _MEMORY_FORMAT_NAMES[value])
    if isinstance(value, torch.layout):
        return _tagged("layout", _LAYOUT_NAMES[value])
    if isinstance(value, FunctionRef):
        return _tagged("function", value.name)
    if isinstance(value, ModuleTypeRef):
        return _tagged("module", value.name)
    if isinstance(value, GraphRef):
        return _tagged("graph", value.index)
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.BuiltinMethodType)):
        from ..lowering.targets import function_name  # targets imports this module
        return _tagged("function", function_name(value))
    if isinstance(value, type) and issubclass(value, torch.nn.Module):
        from ..lowering.book import type_name  # book imports this module's users
        return _tagged("module", type_name(value))
    raise ExportError(f"{where} is a {t.__module__}.{t.__qualname__} ({value!r:.80}), which the format cannot "
                      f"encode; expected None, bool, int, float, str, list, tuple, dict, slice, Ellipsis, complex, "
                      f"a node, a tensor, torch.dtype, torch.device, torch.memory_format, torch.layout, a function or an nn.Module class")


# ------------------------------------------------------------------------------------------------ decoding

def _bad(where: str, message: str, code: str = "schema.type") -> FormatError:
    return FormatError(code, message, where)


_CONTAINER_KINDS = frozenset({"list", "tuple", "dict", "slice"})


def split_tagged(obj: Any, where: str) -> tuple[str, Children] | None:
    """The view of a Value as read from a manifest (tagged maps): checks a tagged map's keys and kind, and a
    container's payload; every other object is a leaf (checked by the decoder's leaf function).

    Raises:
        FormatError ("schema.type", "manifest.duplicate_key").
    """
    if type(obj) is not dict:
        return None
    if len(obj) != 2 or "t" not in obj or "v" not in obj:
        raise _bad(where, f"a tagged Value has exactly the keys 't' and 'v', found {sorted(obj)}")
    kind, payload = obj["t"], obj["v"]
    if type(kind) is not str or kind not in _VALUE_KINDS:
        raise _bad(where, f"unknown Value kind {kind!r}; expected one of {sorted(_VALUE_KINDS)}")
    if kind not in _CONTAINER_KINDS:
        return None
    items = _array(payload, where)
    if kind == "dict":
        children: Children = []
        seen: set = set()
        for i, pair in enumerate(items):
            if type(pair) is not list or len(pair) != 2:
                raise _bad(f"{where}[{i}]", "a dict entry is a [key, Value] pair")
            key = pair[0]
            if type(key) is not str and (type(key) is not int or not INT64_MIN <= key <= INT64_MAX):
                raise _bad(f"{where}[{i}]", f"a dict key is a str or an int64, found {kind_name(key)} {key!r:.40}")
            if key in seen:
                raise _bad(f"{where}[{i}]", f"dict key {key!r} appears twice", "manifest.duplicate_key")
            seen.add(key)
            children.append((key, pair[1], f"{where}[{key!r}]"))
        return kind, children
    if kind == "slice" and len(items) != 3:
        raise _bad(where, f"a slice is [start, stop, step], found {len(items)} items")
    return kind, [(i, v, f"{where}[{i}]") for i, v in enumerate(items)]


def decode(obj: Any, where: str, *, node: Callable[[str, str], Any] | None = None,
           tensor: Callable[[str, str], Any] | None = None, graph: Callable[[int, str], Any] | None = None) -> Any:
    """Decode (and validate) a Value read from a manifest.

    Args:
        obj: the msgpack object.
        where: file and field, for error messages.
        node: resolves a node name (``node(name, where)``); it raises if the name is not defined yet.
            Without it, node references are rejected.
        tensor: resolves a tensor name likewise; without it, tensor references are rejected.
        graph: resolves a ``graph`` Value's index (1.2, core graphs); without it, graph references are rejected.

    Returns:
        The Python value: containers as list/tuple/dict/slice, ``function``/``module`` Values as
        :class:`FunctionRef`/:class:`ModuleTypeRef`, references as the resolvers return them.

    Raises:
        FormatError: the object is not a well-formed Value ("schema.type", "schema.depth"), or a reference does
            not resolve (the resolver's error).
    """
    return walk(obj, lambda v, w: _decode_leaf(v, w, node, tensor, graph), split=split_tagged, where=where,
                too_deep=lambda w: _bad(w, f"value nests deeper than {MAX_VALUE_DEPTH} levels", "schema.depth"))


def _decode_leaf(obj: Any, where: str, node: Callable[[str, str], Any] | None,
                 tensor: Callable[[str, str], Any] | None, graph: Callable[[int, str], Any] | None = None) -> Any:
    t = type(obj)
    if obj is None or t is bool or t is str or t is float:
        return obj
    if t is int:
        if not INT64_MIN <= obj <= INT64_MAX:
            raise _bad(where, f"the int {obj} is outside int64")
        return obj
    if t is not dict:
        raise _bad(where, f"expected a Value, found {kind_name(obj)}")
    kind, payload = obj["t"], obj["v"]  # keys and kind were checked by split_tagged
    if kind == "node" or kind == "tensor":
        if type(payload) is not str:
            raise _bad(where, f"a {kind} reference holds a name, found {kind_name(payload)}")
        resolver = node if kind == "node" else tensor
        if resolver is None:
            raise _bad(where, f"a {kind} reference is not allowed here",
                       f"{'graph' if kind == 'node' else 'tensor'}.reference")
        return resolver(payload, where)
    if kind == "ellipsis":
        if payload is not None:
            raise _bad(where, "an ellipsis has a nil payload")
        return Ellipsis
    if kind == "complex":
        items = _array(payload, where)
        if len(items) != 2 or any(type(x) is not float for x in items):
            raise _bad(where, "a complex is [re, im], two float64s")
        return complex(items[0], items[1])
    if kind == "graph":
        if type(payload) is not int:
            raise _bad(where, f"a graph reference holds an index, found {kind_name(payload)}")
        if graph is None:
            raise _bad(where, "a graph reference is only allowed in the arguments of core-view nodes",
                       "graph.reference")
        return graph(payload, where)
    if type(payload) is not str:
        raise _bad(where, f"a {kind} is written as a string, found {kind_name(payload)}")
    if kind == "function":
        if not _FUNCTION_NAME.match(payload):
            raise _bad(where, f"{payload!r:.80} is not a canonical function name like 'torch.nn.functional.relu'")
        return FunctionRef(payload)
    if kind == "module":
        if not payload or len(payload.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES or _CONTROL.search(payload):
            raise _bad(where, f"{payload!r:.80} is not a module type name")
        return ModuleTypeRef(payload)
    if kind == "dtype":
        if payload not in DTYPE_CODES:
            raise _bad(where, f"unknown dtype code {payload!r}", "tensor.dtype")
        return DTYPE_CODES[payload]
    if kind == "device":
        if not _DEVICE_RE.match(payload):
            raise _bad(where, f"{payload!r:.40} is not a device string: one of {', '.join(DEVICE_TYPES)}, "
                              f"optionally ':' and an index such as 'cuda:0'")
        try:
            return torch.device(payload)
        except (RuntimeError, ValueError) as e:
            raise _bad(where, f"{payload!r} is not a device torch knows ({e})") from None
    if kind == "memory_format":
        if payload not in MEMORY_FORMATS:
            raise _bad(where, f"unknown memory format {payload!r}; expected one of {sorted(MEMORY_FORMATS)}")
        return MEMORY_FORMATS[payload]
    if payload not in LAYOUTS:  # layout
        raise _bad(where, f"unknown layout {payload!r}; expected one of {sorted(LAYOUTS)}")
    return LAYOUTS[payload]


def _array(obj: Any, where: str) -> list:
    if type(obj) is not list:
        raise _bad(where, f"expected an array, found {kind_name(obj)}")
    return obj


_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


_KIND_NAMES = {type(None): "nil", bool: "a bool", int: "an int", float: "a float", str: "a str", bytes: "bin",
               list: "an array", dict: "a map"}


def kind_name(obj: Any) -> str:
    """How an error message names the msgpack kind of ``obj`` ("an int", "a map", ...)."""
    return _KIND_NAMES.get(type(obj), type(obj).__name__)


# --------------------------------------------------------------------------------------------------- metadata

_SCALAR_META = {bool: "bool", int: "int", float: "float", str: "str", type(None): "none"}
#: 1.1: runtime values that are not tensors but have a kind of their own (e.g. getattr(x, "device")).
_RUNTIME_META = ((torch.device, "device"), (torch.dtype, "dtype"), (torch.memory_format, "memory_format"),
                 (torch.layout, "layout"))


def meta_of(value: Any, _depth: int = 0) -> dict[str, Any]:
    """Output metadata for a runtime value (what a node produced)."""
    if isinstance(value, torch.Tensor):
        code = CODE_OF_DTYPE.get(value.dtype)
        if code is None:
            return {"t": "other"}
        return {"t": "tensor", "dtype": code, "shape": [int(s) for s in value.shape]}
    if _depth >= MAX_VALUE_DEPTH:
        return {"t": "other"}
    if isinstance(value, (tuple, list)):
        return {"t": "list" if isinstance(value, list) else "tuple", "v": [meta_of(v, _depth + 1) for v in value]}
    if isinstance(value, dict) and all(type(k) in (str, int) for k in value):
        return {"t": "dict", "v": [[k, meta_of(v, _depth + 1)] for k, v in value.items()]}
    for klass, name in _SCALAR_META.items():
        if type(value) is klass:
            return {"t": name}
    for klass, name in _RUNTIME_META:
        if isinstance(value, klass):
            return {"t": name}
    return {"t": "other"}


#: Bytes per element of every dtype code, value-only complex codes included (for byte-size overflow checks).
_ITEMSIZE = {**{k: v[1] for k, v in STORAGE_DTYPES.items()}, "C64": 8, "C128": 16}

_META_LEAVES = frozenset({"int", "float", "bool", "str", "none", "other", "device", "dtype", "memory_format",
                          "layout"})


def check_meta(obj: Any, where: str, _depth: int = 0, *, dim: Callable[[str, str], None] | None = None) -> None:
    """Validate output metadata read from a manifest.

    Args:
        dim: 1.2, core graphs: checks a shape entry that is a str (a symbol expression); without it a str
            dimension is rejected ("tensor.shape").

    Raises:
        FormatError: not well-formed ("schema.type"), too deep ("schema.depth"), bad dtype ("tensor.dtype") or
            bad shape ("tensor.shape").
    """
    if _depth > MAX_VALUE_DEPTH:
        raise _bad(where, f"metadata nests deeper than {MAX_VALUE_DEPTH} levels", "schema.depth")
    if type(obj) is not dict or type(obj.get("t")) is not str:
        raise _bad(where, f"output metadata is a map with a 't' kind, found {kind_name(obj)}")
    kind = obj["t"]
    if kind == "tensor":
        if set(obj) != {"t", "dtype", "shape"}:
            raise _bad(where, f"tensor metadata has exactly the keys t, dtype, shape; found {sorted(obj)}")
        code = obj["dtype"]
        if type(code) is not str:
            raise _bad(where, f"a dtype code is a str, found {kind_name(code)}")
        if code not in DTYPE_CODES:
            raise _bad(where, f"unknown dtype code {code!r:.40}", "tensor.dtype")
        check_shape(obj["shape"], where, _ITEMSIZE[code], dim=dim)
    elif kind in ("tuple", "list", "dict"):
        if set(obj) != {"t", "v"}:
            raise _bad(where, f"{kind} metadata has exactly the keys t, v; found {sorted(obj)}")
        for i, item in enumerate(_array(obj["v"], where)):
            if kind == "dict":
                if (type(item) is not list or len(item) != 2 or type(item[0]) not in (str, int)
                        or (type(item[0]) is int and not INT64_MIN <= item[0] <= INT64_MAX)):
                    raise _bad(f"{where}[{i}]", "a dict metadata entry is a [str or int key, Meta] pair")
                item = item[1]
            check_meta(item, f"{where}[{i}]", _depth + 1, dim=dim)
    elif kind == "symint" and dim is not None:  # 1.2, core graphs: a SymInt result and its expression
        if set(obj) != {"t", "v"}:
            raise _bad(where, f"symint metadata has exactly the keys t, v; found {sorted(obj)}")
        if type(obj["v"]) is str:
            dim(obj["v"], where + ".v")
        elif type(obj["v"]) is not int:
            raise _bad(where, f"a symint's v is an expression (str) or an int, found {kind_name(obj['v'])}")
    elif kind in _META_LEAVES:
        if set(obj) != {"t"}:
            raise _bad(where, f"{kind} metadata has only the key t; found {sorted(obj)}")
    else:
        raise _bad(where, f"unknown metadata kind {kind!r}")


def check_shape(shape: Any, where: str, itemsize: int = 8, *, dim: Callable[[str, str], None] | None = None) -> int:
    """Validate a shape and return its element count, with checked arithmetic.

    Args:
        itemsize: bytes per element of the tensor's dtype; the byte size ``count * itemsize`` must fit int64.
        dim: 1.2, core graphs: checks a dimension that is a str (a symbol expression, ``dim(text, where)``);
            the count then covers the int dimensions only.

    Raises:
        FormatError ("tensor.shape"): not an array of non-negative ints, rank over the cap, or an element count
            whose byte size overflows int64.
    """
    if type(shape) is not list:
        raise _bad(where, f"a shape is an array of ints, found {kind_name(shape)}", "tensor.shape")
    if len(shape) > MAX_RANK:
        raise _bad(where, f"rank {len(shape)} exceeds the maximum {MAX_RANK}", "tensor.shape")
    count = 1
    check_dim = dim
    for i, dim in enumerate(shape):
        if check_dim is not None and type(dim) is str:
            check_dim(dim, f"{where}.shape[{i}]")
            continue
        if type(dim) is not int or not 0 <= dim <= INT64_MAX:
            raise _bad(where, f"dimension {i} is {dim!r}; dimensions are non-negative int64s", "tensor.shape")
        count *= dim  # exact: Python ints do not overflow
    if count * itemsize > INT64_MAX:
        raise _bad(where, f"shape {shape[:8]} has more elements than a 64-bit byte size can hold", "tensor.shape")
    return count

#!/usr/bin/env python3
"""Generate the format 1.3 conformance vectors of docs/format.md section 12 into ``tests/conformance/v1.3/``.

    python3 scripts/make_conformance.py            # (re)write tests/conformance/v1.3/
    python3 scripts/make_conformance.py --check    # regenerate into a temporary directory and compare

Layout::

    tests/conformance/v1.3/valid/<name>/      artifacts every reader MUST load (and verify)
    tests/conformance/v1.3/invalid/<name>/    artifacts every reader MUST reject, with the code EXPECTED gives
    tests/conformance/v1.3/EXPECTED           "<name> <code>" per invalid vector, sorted by name

``tests/conformance/v1.2/`` (frozen when 1.3 was introduced), ``tests/conformance/v1.1/`` (frozen when 1.2 was) and
``tests/conformance/v1.0/`` (frozen when 1.1 was) are older sets: this script never writes them.

The output is deterministic: models are filled with values from fixed seeds (never torch's RNG), the manifest's
``producer`` is pinned (it is informative only), and nothing depends on time or host. Golden data is computed with
exact arithmetic only (small dyadic rationals, so every sum and product is representable and any summation order
gives the same bits); vectors using transcendental functions (``book_rules``, ``lowering_values``,
``overloads``: LSTM, attention, softmax) carry no golden data, so they stay byte-identical everywhere.

Every invalid vector is a valid one (``minimal`` unless noted) with exactly one fault, the first in the spec's
validation order (section 10); the comment of each says what was corrupted. Not representable in git, hence
absent: a FIFO, socket or device member (``artifact.not_regular`` has a symlink vector instead, which some
checkouts turn into a plain file) and a manifest over 1 GiB (``manifest.size``).

Until the writer records the 1.1 fields itself, :func:`complete_1_1` adds them to each exported manifest (see the
comment above ``DECLS``); each step runs only where the writer left a field at its default, so the writer's own
output wins once it has them, and regenerating then updates the set. Likewise, until the writer produces the core
view (``fxlower.export(..., core=True)``), the ``core_*`` vectors get theirs from the stand-in of the section
"core view (1.2)" below, built from torch.export's ExportedProgram.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import json
import math
import operator
import os
import random
import re
import shutil
import struct
import sys
import tempfile
import types
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402
import torch  # noqa: E402
import torch.fx as fx  # noqa: E402
import torch.nn as nn  # noqa: E402

import fxlower  # noqa: E402
import fxlower.lowering.book  # noqa: E402
import fxlower.lowering.targets  # noqa: E402
import fxlower.format.values  # noqa: E402
from fxlower.format.constants import DTYPE_CODES, LAYOUTS, MEMORY_FORMATS, STORAGE_DTYPES  # noqa: E402
from fxlower.format.schema import CoreView, Graph, Meta, Signature, TensorEntry, Value  # noqa: E402

DEFAULT_OUT = ROOT / "tests" / "conformance" / "v1.3"
MANIFEST = "manifest.msgpack"
WEIGHTS = "weights.safetensors"
GOLDEN = "golden.safetensors"
#: Informative only (docs/format.md 2.1); pinned so that vectors do not change with the torch or package version.
PRODUCER = {"name": "fxlower", "version": "conformance", "torch": "any"}


# ------------------------------------------------------------------------------------------------ values

def dyadic(shape, seed: int, lo: int = -8, hi: int = 8, denom: int = 16) -> torch.Tensor:
    """A float32 tensor of k/denom, k uniform in [lo, hi] from a seeded Python RNG (platform independent)."""
    rng = random.Random(seed)
    n = math.prod(shape)
    return torch.tensor([rng.randint(lo, hi) / denom for _ in range(n)], dtype=torch.float32).reshape(shape)


def fill_(module: nn.Module, seed: int) -> nn.Module:
    """Overwrite every floating parameter and buffer with dyadic values (running variances with 1)."""
    with torch.no_grad():
        for i, (name, t) in enumerate(sorted(list(module.named_parameters()) + list(module.named_buffers()))):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.ones_like(t))
            else:
                t.copy_(dyadic(tuple(t.shape), seed * 1000 + i).to(t.dtype))
    return module.eval()


# ------------------------------------------------------------------------------------------------ file helpers

def read_m(d: Path) -> dict:
    return msgpack.unpackb((d / MANIFEST).read_bytes(), raw=False, strict_map_key=False)


def write_m(d: Path, m) -> None:
    (d / MANIFEST).write_bytes(msgpack.packb(m, use_bin_type=True))


def edit(d: Path, fn) -> None:
    m = read_m(d)
    fn(m)
    write_m(d, m)


def node(m: dict, name: str, graph: int = 0) -> dict:
    return next(n for n in m["graphs"][graph]["nodes"] if n["name"] == name)


def tensor(m: dict, name: str) -> dict:
    return next(t for t in m["tensors"] if t["name"] == name)


def canonical(hint, obj):
    """``obj`` (a decoded manifest part of schema type ``hint``) re-encoded per docs/format.md section 7: schema
    maps in field order with every field (defaults for absent ones), x- fields removed, Value and Meta maps in
    their key order, floats as float64."""
    if hint is Value or hint is Meta:
        return _canonical_value(obj)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)][0]
        return None if obj is None else canonical(inner, obj)
    if origin is list:
        return [canonical(typing.get_args(hint)[0], x) for x in obj]
    if origin is dict:
        return {k: canonical(typing.get_args(hint)[1], x) for k, x in obj.items()}
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        out = {}
        for f in dataclasses.fields(hint):
            if f.name in obj:
                out[f.name] = canonical(hints[f.name], obj[f.name])
            else:
                out[f.name] = f.default_factory() if f.default is dataclasses.MISSING else f.default
        return out
    return float(obj) if hint is float else obj


def _canonical_value(v):
    if isinstance(v, dict):
        order = ["t", "v"] if "v" in v else ["t", "dtype", "shape"]
        return {k: _canonical_value(v[k]) for k in order if k in v}
    if isinstance(v, list):
        return [_canonical_value(x) for x in v]
    return v


def digest(m: dict) -> str:
    """docs/format.md section 7: SHA-256 of the canonical encoding of [graphs, weight tensors, signature] (and the
    core view as a 4th element when there is one)."""
    weights = {f["path"] for f in m["files"] if f["role"] == "weights"}
    parts = [canonical(list[Graph], m["graphs"]),
             canonical(list[TensorEntry], [t for t in m["tensors"] if t["file"] in weights]),
             canonical(Signature, m["signature"])]
    if m.get("core") is not None:  # 1.2: the core view is the 4th element, only when there is one
        parts.append(canonical(CoreView, m["core"]))
    blob = msgpack.packb(parts, use_bin_type=True)
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def packed_map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """A msgpack map from already packed (key, value) pairs: keys may repeat or be of any type."""
    return msgpack.Packer().pack_map_header(len(pairs)) + b"".join(k + v for k, v in pairs)


def add_top_level(d: Path, key: bytes, value: bytes) -> None:
    """Append one packed pair to the manifest's top-level fixmap."""
    raw = (d / MANIFEST).read_bytes()
    assert 0x80 <= raw[0] < 0x8F
    (d / MANIFEST).write_bytes(bytes([raw[0] + 1]) + raw[1:] + key + value)


def replace_once(path: Path, old: bytes, new: bytes) -> None:
    raw = path.read_bytes()
    assert raw.count(old) == 1, (path, old, raw.count(old))
    path.write_bytes(raw.replace(old, new))


def st_read(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_tensors(path: Path) -> dict[str, tuple[str, list[int], bytes]]:
    header, data = st_read(path)
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items() if k != "__metadata__"}


def st_raw(header: bytes, data: bytes, *, pad: int | None = None) -> bytes:
    """A safetensors file from raw header bytes, padded with spaces to a multiple of 8 (or ``pad`` spaces)."""
    header += b" " * ((-(8 + len(header))) % 8 if pad is None else pad)
    return struct.pack("<Q", len(header)) + header + data


def st_write(path: Path, tensors: dict[str, tuple[str, list[int], bytes]], metadata: dict | None = None) -> None:
    """A canonical file as the writer lays it out: item size descending, then key; data section 8-aligned."""
    order = sorted(tensors, key=lambda k: (-STORAGE_DTYPES[tensors[k][0]][1], k))
    header: dict = {} if metadata is None else {"__metadata__": metadata}
    pos, data = 0, b""
    for k in order:
        code, shape, blob = tensors[k]
        header[k] = {"dtype": code, "shape": shape, "data_offsets": [pos, pos + len(blob)]}
        pos += len(blob)
        data += blob
    path.write_bytes(st_raw(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode(), data))


def rename_node(m: dict, old: str, new: str, graph: int = 0) -> None:
    """Rename a node everywhere it is named (args, kwargs, inputs, users, signature, golden)."""
    def sub(v):
        if isinstance(v, dict):
            if v.get("t") == "node" and v.get("v") == old:
                return {"t": "node", "v": new}
            return {k: sub(x) for k, x in v.items()}
        if isinstance(v, list):
            return [sub(x) for x in v]
        return v
    for n in m["graphs"][graph]["nodes"]:
        if n["name"] == old:
            n["name"] = new
        n["args"], n["kwargs"] = sub(n["args"]), sub(n["kwargs"])
        n["inputs"] = [new if i == old else i for i in n["inputs"]]
        n["users"] = [new if u == old else u for u in n["users"]]
    if graph == 0:
        m["signature"]["output"] = sub(m["signature"]["output"])
        if m["golden"] and old in m["golden"]["nodes"]:
            m["golden"]["nodes"] = {new if k == old else k: v for k, v in m["golden"]["nodes"].items()}


# ------------------------------------------------------------------------------------------------ 1.1 fields

# Until the writer records the 1.1 fields itself (tensor kinds, training flags, module declarations, function
# and method overloads, node.overload, module/function Values in lowering records), ``complete_1_1`` adds them to
# an exported manifest by surgery, from the GraphModule that was exported. Each step runs only when the writer
# left the field at its 1.0 default, so once the writer fills a field its own output is kept.

#: Declared attributes of the module types the vectors use: (rule version, [(name, type, doc)]). The types follow
#: docs/format.md section 2.2 ("Attribute types"); the forward parameters come from the class's forward.
DECLS: dict[str, tuple[int, list[tuple[str, str, str]]]] = {
    "torch.nn.Linear": (1, [
        ("in_features", "int", "size of each input sample"),
        ("out_features", "int", "size of each output sample"),
        ("weight", "tensor", "[out_features, in_features]"),
        ("bias", "tensor|none", "[out_features], or none"),
    ]),
    "torch.nn.Conv2d": (1, [
        ("in_channels", "int", "input channels"),
        ("out_channels", "int", "output channels"),
        ("kernel_size", "int[2]", "kernel height and width"),
        ("stride", "int[2]", "stride"),
        ("padding", "int[2]|enum(same,valid)", "zero padding per side, or a padding mode"),
        ("dilation", "int[2]", "dilation"),
        ("transposed", "bool", "always false for Conv2d"),
        ("output_padding", "int[2]", "unused by Conv2d"),
        ("groups", "int", "channel groups"),
        ("padding_mode", "enum(zeros,reflect,replicate,circular)", "how padding is filled"),
        ("weight", "tensor", "[out_channels, in_channels / groups, kH, kW]"),
        ("bias", "tensor|none", "[out_channels], or none"),
    ]),
    "torch.nn.BatchNorm2d": (1, [
        ("num_features", "int", "channels"),
        ("eps", "float", "added to the variance"),
        ("momentum", "float|none", "running statistics update factor (training only)"),
        ("affine", "bool", "whether weight and bias exist"),
        ("track_running_stats", "bool", "whether running statistics exist"),
        ("weight", "tensor|none", "[num_features]"),
        ("bias", "tensor|none", "[num_features]"),
        ("running_mean", "tensor|none", "[num_features]"),
        ("running_var", "tensor|none", "[num_features]"),
        ("num_batches_tracked", "tensor|none", "I64 scalar"),
    ]),
    "torch.nn.AdaptiveAvgPool2d": (1, [("output_size", "int|int[2]", "output height and width")]),
    "torch.nn.Embedding": (1, [
        ("num_embeddings", "int", "rows of the table"),
        ("embedding_dim", "int", "columns of the table"),
        ("padding_idx", "int|none", "the row whose gradient is zero"),
        ("max_norm", "float|none", "renormalisation bound"),
        ("norm_type", "float", "p of the renormalisation norm"),
        ("scale_grad_by_freq", "bool", "training only"),
        ("sparse", "bool", "training only"),
        ("weight", "tensor", "[num_embeddings, embedding_dim]"),
    ]),
    "torch.nn.LSTM": (1, [
        ("mode", "enum(LSTM)", "the recurrence"),
        ("input_size", "int", "features of the input"),
        ("hidden_size", "int", "features of the hidden state"),
        ("num_layers", "int", "stacked layers"),
        ("bias", "bool", "whether bias tensors exist"),
        ("batch_first", "bool", "input is [batch, seq, feature]"),
        ("dropout", "float", "between layers (training only)"),
        ("bidirectional", "bool", "two directions"),
        ("proj_size", "int", "projection size, 0 for none"),
        ("weight_ih_l*", "tensor", "layer k input-hidden weights"),
        ("weight_hh_l*", "tensor", "layer k hidden-hidden weights"),
        ("bias_ih_l*", "tensor", "layer k input-hidden bias"),
        ("bias_hh_l*", "tensor", "layer k hidden-hidden bias"),
        ("weight_hr_l*", "tensor", "layer k projection weights"),
        ("weight_ih_l*_reverse", "tensor", "reverse direction"),
        ("weight_hh_l*_reverse", "tensor", "reverse direction"),
        ("bias_ih_l*_reverse", "tensor", "reverse direction"),
        ("bias_hh_l*_reverse", "tensor", "reverse direction"),
        ("weight_hr_l*_reverse", "tensor", "reverse direction"),
    ]),
    "torch.nn.MultiheadAttention": (1, [
        ("embed_dim", "int", "model width"),
        ("kdim", "int", "key width"),
        ("vdim", "int", "value width"),
        ("num_heads", "int", "heads"),
        ("head_dim", "int", "embed_dim / num_heads"),
        ("dropout", "float", "attention dropout (training only)"),
        ("batch_first", "bool", "inputs are [batch, seq, feature]"),
        ("_qkv_same_embed_dim", "bool", "packed in_proj_weight when true"),
        ("add_zero_attn", "bool", "append a zero key/value"),
        ("in_proj_weight", "tensor|none", "[3 * embed_dim, embed_dim] when packed"),
        ("in_proj_bias", "tensor|none", "[3 * embed_dim]"),
        ("q_proj_weight", "tensor|none", "separate projections when not packed"),
        ("k_proj_weight", "tensor|none", "separate projections when not packed"),
        ("v_proj_weight", "tensor|none", "separate projections when not packed"),
        ("bias_k", "tensor|none", "extra key bias"),
        ("bias_v", "tensor|none", "extra value bias"),
        ("out_proj", "module", "the output projection (a Linear)"),
    ]),
    "torch.nn.LayerNorm": (1, [
        ("normalized_shape", "int[]", "trailing dimensions normalised"),
        ("eps", "float", "added to the variance"),
        ("elementwise_affine", "bool", "whether weight exists"),
        ("weight", "tensor|none", "normalized_shape"),
        ("bias", "tensor|none", "normalized_shape"),
    ]),
    "torch.nn.Dropout": (1, [("p", "float", "drop probability (training only)"),
                             ("inplace", "bool", "in place")]),
    "torch.nn.GELU": (1, [("approximate", "enum(none,tanh)", "the approximation")]),
    "torch.nn.ReLU": (1, [("inplace", "bool", "in place")]),
    "torch.nn.Sigmoid": (1, []),
    "torch.nn.Upsample": (1, [
        ("name", "str", "the class name"),
        ("size", "int|int[]|none", "output size, or none when scale_factor is given"),
        ("scale_factor", "float|float[]|none", "scale per spatial dimension"),
        ("mode", "str", "nearest, linear, bilinear, bicubic, trilinear or nearest-exact"),
        ("align_corners", "bool|none", "corner alignment of the linear modes"),
        ("recompute_scale_factor", "bool|none", "recompute the scale from the output size"),
    ]),
    "torch.nn.Flatten": (1, [("start_dim", "int", "first flattened dim"), ("end_dim", "int", "last flattened dim")]),
    "torch.nn.TransformerEncoderLayer": (1, [
        ("norm_first", "bool", "pre-norm when true"),
        ("activation_relu_or_gelu", "int", "1 relu, 2 gelu, 0 another activation"),
        ("activation", "function|module", "the feed-forward activation"),
        ("self_attn", "module", "self-attention (a MultiheadAttention)"),
        ("linear1", "module", "first feed-forward layer"),
        ("dropout", "module", "feed-forward dropout"),
        ("linear2", "module", "second feed-forward layer"),
        ("norm1", "module", "first norm"),
        ("norm2", "module", "second norm"),
        ("dropout1", "module", "residual dropout"),
        ("dropout2", "module", "residual dropout"),
    ]),
    "torch.nn.TransformerEncoder": (1, [
        ("num_layers", "int", "stacked layers"),
        ("norm", "module|none", "the final norm"),
        ("enable_nested_tensor", "bool", "fast-path setting"),
        ("use_nested_tensor", "bool", "fast-path setting"),
        ("mask_check", "bool", "fast-path setting"),
        ("layers.*", "module", "layer k"),
    ]),
}

_PARAM_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional_only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional_or_keyword",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword_only",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}


def _params(sig: inspect.Signature, skip_self: bool = False) -> list[dict]:
    out = []
    for i, p in enumerate(sig.parameters.values()):
        if skip_self and i == 0:
            continue
        required = p.default is inspect.Parameter.empty and p.kind not in (
            inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        default = None if p.default is inspect.Parameter.empty else fxlower.format.values.encode(p.default)
        out.append({"name": p.name, "kind": _PARAM_KINDS[p.kind], "default": default, "required": required})
    return out


def _pattern(declared: str) -> re.Pattern:
    """A declared attribute name as a regex: each '*' is one decimal index (docs/format.md 2.2)."""
    return re.compile("(?:0|[1-9][0-9]*)".join(re.escape(p) for p in declared.split("*")) + r"\Z")


def module_decl(type_name_: str, cls: type) -> dict:
    version, attrs = DECLS[type_name_]
    return {"version": version, "attrs": [{"name": n, "type": t, "doc": d} for n, t, d in attrs],
            "forward": _params(inspect.signature(cls.forward), skip_self=True)}


#: builtins.getattr has no introspectable signature: its two forms (docs/format.md 2.3).
_GETATTR = [
    {"params": [{"name": "object", "kind": "positional_only", "default": None, "required": True},
                {"name": "name", "kind": "positional_only", "default": None, "required": True}], "returns": ""},
    {"params": [{"name": "object", "kind": "positional_only", "default": None, "required": True},
                {"name": "name", "kind": "positional_only", "default": None, "required": True},
                {"name": "default", "kind": "positional_only", "default": None, "required": True}], "returns": ""},
]


def _returns_text(ann) -> str:
    if ann is inspect.Signature.empty:
        return ""
    return ann if isinstance(ann, str) else getattr(ann, "__name__", None) or str(ann)


def function_overloads(fn) -> list[tuple[inspect.Signature, dict]]:
    """(signature for binding, Overload object) per overload of a call_function target, in the order of
    docs/format.md 2.3."""
    if fn is getattr:
        sigs = [inspect.Signature([inspect.Parameter(p["name"], inspect.Parameter.POSITIONAL_ONLY)
                                   for p in o["params"]]) for o in _GETATTR]
        return list(zip(sigs, _GETATTR))
    sigs, schemas = torch.fx.operator_schemas.get_signature_for_torch_op(fn, return_schemas=True)
    if sigs:
        return [(s, {"params": _params(s), "returns": ", ".join(str(r.type) for r in sc.returns)})
                for s, sc in zip(sigs, schemas)]
    s = inspect.signature(fn)
    return [(s, {"params": _params(s), "returns": _returns_text(s.return_annotation)})]


def method_overloads(name: str) -> list[tuple[inspect.Signature, dict]]:
    """The ``aten::<name>`` schemas, ``self`` first (torch.fx calls it ``input``; the format says ``self``)."""
    out = []
    for sc in torch._C._jit_get_schemas_for_operator("aten::" + name):
        s = torch.fx.operator_schemas._torchscript_schema_to_signature(sc)
        params = _params(s)
        if params and params[0]["name"] == "input" and sc.arguments[0].name == "self":
            params[0]["name"] = "self"
        out.append((s, {"params": params, "returns": ", ".join(str(r.type) for r in sc.returns)}))
    if not out:
        raise SystemExit(f"no aten schema for the method '{name}'")
    return out


def _arg_type(v):
    if isinstance(v, torch.Tensor):
        return torch.Tensor
    if isinstance(v, (list, tuple)) and v:
        kinds = {_arg_type(x) for x in v}
        if len(kinds) == 1:
            (k,) = kinds
            return list[k] if isinstance(k, type) else list
    return type(v)


def _binds(sig: inspect.Signature, args: tuple, kwargs: dict) -> bool:
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError:
        return False
    for name, value in bound.arguments.items():
        ann = sig.parameters[name].annotation
        if ann is inspect.Parameter.empty:
            continue
        if sig.parameters[name].kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if not _type_ok(ann, value):
            return False
    return True


def _type_ok(ann, value) -> bool:
    if isinstance(ann, str):
        return True  # an unevaluated annotation: not checked
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        return any(_type_ok(a, value) for a in typing.get_args(ann))
    if ann is type(None):
        return value is None
    if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
        value = 0  # TorchScript schemas type ScalarType, Layout and MemoryFormat as int
    return torch.fx.operator_schemas.type_matches(ann, _arg_type(value))


def choose_overload(overloads, args: tuple, kwargs: dict, where: str) -> int:
    """The first overload the call binds to (Python's rules plus the varargs form for a trailing list
    parameter, docs/format.md 2.3)."""
    for i, (sig, _) in enumerate(overloads):
        if _binds(sig, args, kwargs):
            return i
    for i, (sig, _) in enumerate(overloads):  # varargs form: f(a, 1, 2, 3) for f(a, int[] size)
        positional = [p for p in sig.parameters.values()
                      if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        for j, p in enumerate(positional):
            if typing.get_origin(p.annotation) is list and len(args) > j:
                packed = tuple(args[:j]) + (list(args[j:]),)
                if _binds(sig, packed, kwargs):
                    return i
                break
    raise SystemExit(f"{where}: no overload binds")


def _runtime_env(gm: fx.GraphModule, inputs: tuple) -> dict[str, dict[str, object]]:
    """Every node's value in a run, per graph path ('' for the root), for overload selection."""
    envs: dict[str, dict[str, object]] = {}

    class Recorder(fx.Interpreter):
        def __init__(self, module, path):
            super().__init__(module, garbage_collect_values=False)
            self.path = path

        def call_module(self, target, args, kwargs):
            sub = self.module.get_submodule(target)
            if isinstance(sub, fx.GraphModule):
                child = f"{self.path}.{target}" if self.path else target
                return Recorder(sub, child).run(*args, **kwargs)
            return super().call_module(target, args, kwargs)

        def run_node(self, n):
            value = super().run_node(n)
            envs.setdefault(self.path, {})[n.name] = value
            return value

    with torch.no_grad():
        Recorder(gm, "").run(*inputs)
    return envs


def _materialize(v, env: dict):
    if isinstance(v, dict):
        t = v["t"]
        if t == "node":
            return env[v["v"]]
        if t in ("list", "tuple"):
            items = [_materialize(x, env) for x in v["v"]]
            return items if t == "list" else tuple(items)
        if t == "dict":
            return {k: _materialize(x, env) for k, x in v["v"]}
        if t == "slice":
            return slice(*(_materialize(x, env) for x in v["v"]))
        if t == "ellipsis":
            return ...
        if t == "complex":
            return complex(*v["v"])
        if t == "dtype":
            return DTYPE_CODES[v["v"]]
        if t == "device":
            return torch.device(v["v"])
        if t == "memory_format":
            return MEMORY_FORMATS[v["v"]]
        if t == "layout":
            return LAYOUTS[v["v"]]
    return v


def _tensor_kinds(gm: fx.GraphModule) -> dict[str, tuple[str, bool, bool]]:
    out = {}
    for name, p in gm.named_parameters(remove_duplicate=False):
        out[name] = ("parameter", p.requires_grad, True)
    for prefix, mod in gm.named_modules(remove_duplicate=False):
        for b, t in mod._buffers.items():
            if t is not None:
                out[f"{prefix}.{b}" if prefix else b] = ("buffer", False, b not in mod._non_persistent_buffers_set)
    return out


def _attr_object(module: nn.Module, dotted: str):
    obj = module
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _lowering_values(record: dict, module: nn.Module) -> None:
    """1.1 encodings in a lowering record: module-valued attrs as ``module`` Values, function-valued ones as
    ``function`` Values (checked against the real attribute), ints declared ``float`` widened."""
    for name, value in list(record["attrs"].items()):
        obj = _attr_object(module, name)
        if isinstance(obj, nn.Module):
            try:
                rule = fxlower.lowering.book.rule_for(obj)
            except fxlower.UnsupportedModuleError:  # a container (the ModuleList of layers.*) has no rule
                del record["attrs"][name]
                continue
            record["attrs"][name] = {"t": "module", "v": rule.type_name}
        elif isinstance(obj, (types.FunctionType, types.BuiltinFunctionType)):
            record["attrs"][name] = {"t": "function", "v": fxlower.lowering.targets.function_name(obj)}


def _module_types(record: dict):
    yield record["module_type"]
    for v in record["attrs"].values():
        if isinstance(v, dict) and v.get("t") == "module":
            yield v["v"]


def complete_1_1(m: dict, gm: fx.GraphModule, inputs: tuple) -> None:
    """Fill the 1.1 fields the writer left at their defaults (see the comment above DECLS)."""
    assert m["format_version"] == [1, 3], m["format_version"]
    kinds = _tensor_kinds(gm)
    for t in m["tensors"]:
        if t.get("kind", ""):
            continue
        if t["name"].startswith("golden/"):
            t["kind"], t["requires_grad"], t["persistent"] = "golden", False, True
        else:
            t["kind"], t["requires_grad"], t["persistent"] = kinds.get(t["name"], ("constant", False, True))
    paths = {g["name"]: gm.get_submodule(g["name"]) if g["name"] else gm for g in m["graphs"]}
    envs = _runtime_env(gm, inputs) if not m.get("functions") and not m.get("methods") else None
    declared_by_writer = bool(m.get("modules"))
    modules = m.setdefault("modules", {})
    functions, methods = {}, {}
    for g in m["graphs"]:
        owner = paths[g["name"]]
        g["training"] = owner.training
        for n in g["nodes"]:
            n["kwargs"] = {k: v for k, v in n["kwargs"].items() if not k.startswith("_")}
            if n["lowering"] is not None:
                leaf = owner.get_submodule(n["target"])
                n["lowering"]["training"] = leaf.training
                if declared_by_writer:
                    continue
                _lowering_values(n["lowering"], leaf)
                for typ in _module_types(n["lowering"]):
                    if typ not in modules and typ in DECLS:
                        modules[typ] = module_decl(typ, _class_of(typ))
            if envs is None or n["op"] not in ("call_function", "call_method"):
                continue
            env = envs[g["name"]]
            args = tuple(_materialize(a, env) for a in n["args"])
            kwargs = {k: _materialize(v, env) for k, v in n["kwargs"].items()}
            if n["op"] == "call_function":
                table, ovs = functions, function_overloads(fxlower.lowering.targets.resolve_function(n["target"]))
            else:
                table, ovs = methods, method_overloads(n["target"])
            table[n["target"]] = [o for _, o in ovs]
            n["overload"] = choose_overload(ovs, args, kwargs, f"{g['name']}:{n['name']}")
    if envs is not None:
        m["functions"], m["methods"] = functions, methods
    m["modules"] = {k: modules[k] for k in sorted(modules)}
    m["functions"] = {k: m["functions"][k] for k in sorted(m["functions"])}
    m["methods"] = {k: m["methods"][k] for k in sorted(m["methods"])}
    missing = sorted({t for g in m["graphs"] for n in g["nodes"] if n["lowering"]
                      for t in _module_types(n["lowering"])} - set(m["modules"]))
    if missing:
        raise SystemExit(f"no declaration for {missing}; add them to DECLS")
    m["digest"] = digest(m)


def _class_of(type_name_: str) -> type:
    assert type_name_.startswith("torch.nn."), type_name_
    return getattr(nn, type_name_.rsplit(".", 1)[1])


def export(gm: fx.GraphModule, path: Path, inputs: tuple, golden, **kw) -> None:
    fxlower.export(gm, path, inputs, golden=golden, **kw)

    def finish(m):
        m["producer"] = dict(PRODUCER)
        complete_1_1(m, gm, inputs)
    edit(path, finish)


# ------------------------------------------------------------------------------------------------ valid models

class Small(nn.Module):
    """x -> lin (call_module) -> torch.relu -> * scale (get_attr) -> .sum(-1) (call_method)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.register_buffer("scale", torch.full((3,), 0.5))

    def forward(self, x):
        y = torch.relu(self.lin(x))
        y = y * self.scale
        return y.sum(-1)


def values_graph() -> tuple[fx.GraphModule, tuple]:
    """A hand-built, executable graph whose arguments use every Value kind (docs/format.md 6.1)."""
    root = nn.Module()
    root.lin = fill_(nn.Linear(2, 2), 7)  # lowering attrs hold `tensor` Values
    g = fx.Graph()
    x = g.placeholder("x")
    deep = None
    for _ in range(64):  # the deepest Value allowed: 64 nested containers
        deep = (deep,)
    g.placeholder("deep", default_value=deep)
    y = g.placeholder("y", default_value=3)                                  # int default
    lin = g.call_module("lin", (x,))                                         # node
    cat = g.call_function(torch.cat, ([x, lin],), {"dim": 0})                # list, int
    perm = g.call_method("permute", (cat, (1, 0)))                           # tuple
    pick = g.call_function(operator.getitem, ({"a": x, 1: perm}, 1))         # dict with str and int keys
    part = g.call_function(operator.getitem, (pick, (slice(0, 1, None), Ellipsis)))  # slice, nil, ellipsis
    cplx = g.call_method("to", (x, torch.complex64))                         # dtype (value-only code)
    shifted = g.call_function(torch.add, (cplx, complex(1.0, -2.0)))         # complex
    real = g.call_function(torch.real, (shifted,))
    wide = g.call_method("to", (real,), {"dtype": torch.float64, "device": torch.device("cpu")})  # dtype, device
    kept = g.call_function(torch.clone, (x,), {"memory_format": torch.contiguous_format})  # memory_format
    zeros = g.call_function(torch.zeros, ((2, 2),), {"dtype": torch.float32, "layout": torch.strided})  # layout
    clamped = g.call_function(torch.clamp, (kept,), {"min": -math.inf, "max": math.inf})  # -inf, inf
    same = g.call_function(torch.nan_to_num, (clamped,), {"nan": math.nan, "posinf": None})  # nan, nil
    plus = g.call_function(torch.add, (same, -0.0))                          # -0.0
    floor = g.call_function(torch.div, (plus, 0.5), {"rounding_mode": "floor"})  # float, str
    summed = g.call_function(torch.sum, (floor,), {"dim": 0, "keepdim": True})   # bool
    trans = g.call_function(torch.einsum, ("ij->ji", zeros))                 # str
    shape = g.call_function(getattr, (x, "shape"))                           # builtins.getattr
    rows = g.call_function(operator.getitem, (shape, 0))
    scaled = g.call_function(operator.mul, (rows, y))
    g.output((part, [wide, trans], {"s": summed, 7: scaled}, None, True, "str", -0.0, math.nan, -math.inf))
    gm = fx.GraphModule(root, g)
    return gm, (dyadic((2, 2), 11),)


class Dtypes(nn.Module):
    """A buffer of every storage dtype (with special values), returned so that golden data holds them too."""

    def __init__(self):
        super().__init__()
        special = [0.0, -0.0, 1.5, -2.25, math.inf, -math.inf, math.nan]
        self.register_buffer("f64", torch.tensor(special + [5e-324, 1e308], dtype=torch.float64))
        self.register_buffer("f32", torch.tensor(special + [1e-45, 3.0e38], dtype=torch.float32))
        self.register_buffer("f16", torch.tensor(special + [6e-8, 65504.0], dtype=torch.float16))
        self.register_buffer("bf16", torch.tensor(special + [1e-40, 3.0e38], dtype=torch.bfloat16))
        self.register_buffer("f8_e4m3", torch.tensor([0.0, -0.0, 1.5, -2.25, 448.0, -448.0, math.nan, 0.001953125])
                             .to(torch.float8_e4m3fn))
        self.register_buffer("f8_e5m2", torch.tensor(special + [57344.0]).to(torch.float8_e5m2))
        self.register_buffer("i64", torch.tensor([0, 1, -1, 2**63 - 1, -(2**63)], dtype=torch.int64))
        self.register_buffer("i32", torch.tensor([0, 1, -1, 2**31 - 1, -(2**31)], dtype=torch.int32))
        self.register_buffer("i16", torch.tensor([0, 1, -1, 2**15 - 1, -(2**15)], dtype=torch.int16))
        self.register_buffer("i8", torch.tensor([0, 1, -1, 127, -128], dtype=torch.int8))
        self.register_buffer("u64", torch.tensor([0, 1, 2**63, 2**64 - 1], dtype=torch.uint64))
        self.register_buffer("u32", torch.tensor([0, 1, 2**31, 2**32 - 1], dtype=torch.uint32))
        self.register_buffer("u16", torch.tensor([0, 1, 2**15, 2**16 - 1], dtype=torch.uint16))
        self.register_buffer("u8", torch.tensor([0, 1, 128, 255], dtype=torch.uint8))
        self.register_buffer("flags", torch.tensor([True, False, True]))
        self.register_buffer("grid", torch.arange(24, dtype=torch.int16).reshape(2, 3, 4))  # multi-dim, LE bytes

    def forward(self, x):
        return (x + 1, self.f64, self.f32, self.f16, self.bf16, self.f8_e4m3, self.f8_e5m2, self.i64, self.i32,
                self.i16, self.i8, self.u64, self.u32, self.u16, self.u8, self.flags, self.grid)


class Shapes(nn.Module):
    """0-d and zero-element tensors: buffers, an input and outputs."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scalar", torch.tensor(2.5))
        self.register_buffer("empty", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("hollow", torch.zeros(2, 0, 3, dtype=torch.float16))

    def forward(self, x):
        return x.sum() * self.scalar, x * 2, self.empty, self.hollow


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return torch.relu(self.fc(x)) + x


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Linear(4, 3)
        self.block = fx.symbolic_trace(fill_(Inner(), 21))

    def forward(self, x):
        return self.block(self.pre(x)) * 2


class GraphModuleLeaf(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, fx.GraphModule) or super().is_leaf_module(m, qualname)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 4, bias=False)
        self.dec = nn.Linear(4, 4)
        self.dec.weight = self.enc.weight

    def forward(self, x):
        return self.dec(torch.relu(self.enc(x)))


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 2)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h), h.shape[-1]


class Book(nn.Module):
    """Several lowering rules: conv, batch norm, linear, LSTM, multi-head attention, layer norm, embedding."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.proj = nn.Linear(4, 8)
        self.emb = nn.Embedding(5, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm = nn.LayerNorm(8)

    def forward(self, img, tokens):
        f = self.pool(torch.relu(self.bn(self.conv(img)))).flatten(1)
        seq = self.emb(tokens) + self.proj(f).unsqueeze(1)
        seq, _ = self.lstm(seq)
        att, _ = self.mha(seq, seq, seq, need_weights=False)
        return self.norm(att + seq)


# --- 1.1 models

class TensorState(nn.Module):
    """Every tensor kind and flag: a trainable and a frozen parameter, a persistent and a non-persistent buffer,
    a tensor constant (a plain tensor attribute); the root is in training mode, the Linear in eval mode."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.gain = nn.Parameter(torch.full((4,), 0.5))                       # requires_grad
        self.frozen = nn.Parameter(torch.full((4,), 0.25), requires_grad=False)
        self.register_buffer("shift", torch.full((4,), 1.0))                  # persistent
        self.register_buffer("cache", torch.full((4,), 2.0), persistent=False)
        self.table = torch.tensor([1.0, 2.0, 3.0, 4.0])                       # neither: a constant

    def forward(self, x):
        y = self.lin(x) * self.gain + self.frozen
        return (y + self.shift) * self.cache - self.table


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("β", torch.full((8,), 0.5))

    def forward(self, x):
        return x * self.β


class OddNames(nn.Module):
    """Submodule and buffer names that are not identifiers (docs/format.md 3): 'block1-0', 'layer 1', 'ü.β'."""

    def __init__(self):
        super().__init__()
        self.add_module("block1-0", nn.Linear(4, 4))
        self.add_module("layer 1", nn.Sequential(nn.ReLU(), nn.Upsample(scale_factor=2.0, mode="nearest")))
        self.add_module("ü", Scale())

    def forward(self, x):
        h = getattr(self, "block1-0")(x)
        h = getattr(self, "layer 1")(h.unsqueeze(0))
        return getattr(self, "ü")(h)


class Overloads(nn.Module):
    """Overload choice: a method's varargs form (view(3, 4)), a method with a list (permute((1, 0))), an
    overload other than the first (torch.sum(x, 0), torch.add(x, 2.0)) and a private kwarg the writer drops
    (softmax's _stacklevel)."""

    def forward(self, x):
        v = x.view(3, 4).permute((1, 0))
        s = torch.sum(v, 0) + torch.add(v, 2.0).sum()
        return nn.functional.softmax(s, dim=-1), torch.div(s, 2.0, rounding_mode="floor")


class RuntimeMeta(nn.Module):
    """Nodes whose results are a device, a dtype and a layout (Meta kinds of 1.1)."""

    def forward(self, x):
        z = torch.zeros(2, dtype=x.dtype, device=x.device, layout=x.layout)
        return x + z


class LoweringValues(nn.Module):
    """function and module Values in lowering records, a '*' declaration (layers.*) and child-module recursion
    (layers.0 -> self_attn -> out_proj)."""

    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation=nn.GELU(), batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(8), enable_nested_tensor=False)
        self.top = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation=nn.functional.relu,
                                              batch_first=True)

    def forward(self, x):
        return self.top(self.enc(x))


def make_valid(out: Path) -> None:
    v = out / "valid"
    v.mkdir()
    # minimal: Linear, relu, a get_attr buffer, operator.mul and a call_method; golden outputs. Base of most
    # invalid vectors.
    export(fx.symbolic_trace(fill_(Small(), 1)), v / "minimal", (dyadic((2, 4), 2),), True)
    # values: every Value kind in node arguments and outputs (incl. inf/-inf/nan/-0.0, dict with int keys, a
    # placeholder default 64 deep), a Linear's tensor attributes; golden outputs.
    gm, inputs = values_graph()
    export(gm, v / "values", inputs, True)
    # dtypes: every storage dtype, as weights and as golden outputs.
    export(fx.symbolic_trace(Dtypes()), v / "dtypes", (dyadic((2,), 3),), True)
    # shapes: 0-d and zero-element tensors (weights, golden input and outputs).
    export(fx.symbolic_trace(Shapes()), v / "shapes", (torch.zeros(0, 4),), True)
    # nested_graph: a GraphModule called as a leaf becomes graphs[1].
    outer = fill_(Outer(), 4)
    gm = fx.GraphModule(outer, GraphModuleLeaf().trace(outer), "Outer")
    export(gm, v / "nested_graph", (dyadic((2, 4), 5),), True)
    # tied_weights: enc.weight and dec.weight are one tensor: two table entries, one stored key (an alias).
    export(fx.symbolic_trace(fill_(Tied(), 6)), v / "tied_weights", (dyadic((1, 4), 7),), True)
    # golden_nodes: golden="nodes" stores every root node's result.
    export(fx.symbolic_trace(fill_(Mlp(), 8)), v / "golden_nodes", (dyadic((3, 4), 9),), "nodes")
    # book_rules: conv/bn/linear/lstm/mha/layernorm/embedding lowering records; output metadata from a run, no
    # golden data (transcendental results are not bit-identical across CPUs).
    book = fill_(Book(), 10)
    export(fx.symbolic_trace(book), v / "book_rules",
           (dyadic((1, 2, 5, 5), 11), torch.tensor([[0, 3, 4]])), False)

    # tensor_state (1.1): parameter (trainable and frozen), buffer (persistent and not), constant and golden
    # tensor kinds; training flags (root in training mode, its Linear in eval mode).
    gm = fx.symbolic_trace(fill_(TensorState(), 12))
    # GraphModule's constructor turns every tensor attribute into a persistent buffer; restore what TensorState
    # declares: cache is not persistent, table is a plain tensor attribute.
    gm._non_persistent_buffers_set.add("cache")
    table = gm._buffers.pop("table")
    gm.table = table
    gm.train()
    gm.lin.eval()
    export(gm, v / "tensor_state", (dyadic((2, 4), 13),), True)
    # odd_names (1.1 names rule): call_module and get_attr targets 'block1-0', 'layer 1.1', 'ü.β'; golden outputs.
    export(fx.symbolic_trace(fill_(OddNames(), 14)), v / "odd_names", (dyadic((2, 4), 15),), True)
    # overloads (1.1): functions/methods tables and node.overload, incl. the varargs form and overloads other
    # than the first; softmax's _stacklevel dropped. No golden data (softmax is transcendental).
    export(fx.symbolic_trace(Overloads()), v / "overloads", (dyadic((2, 6), 16),), False)
    # runtime_meta (1.1): Meta kinds device, dtype and layout; golden outputs.
    export(fx.symbolic_trace(RuntimeMeta()), v / "runtime_meta", (dyadic((2,), 17),), True)
    # lowering_values (1.1): function and module Values, layers.* and child-module recursion. No golden data.
    export(fx.symbolic_trace(fill_(LoweringValues(), 18)), v / "lowering_values", (dyadic((1, 3, 8), 19),), False)
    # x_prefixed_names (1.1, section 2.4): golden_nodes with its relu node renamed "x-relu": a key of a data map
    # (golden.nodes) that starts with x- is an ordinary key, not an extension.
    shutil.copytree(v / "golden_nodes", v / "x_prefixed_names")

    def x_prefixed(m):
        rename_node(m, "relu", "x-relu")
        m["digest"] = digest(m)
    edit(v / "x_prefixed_names", x_prefixed)

    # Leniencies every reader MUST accept, each on a copy of minimal:
    # x_fields: extension fields (x-...) at the top level and in every kind of nested object.
    shutil.copytree(v / "minimal", v / "x_fields")

    def ext(m):
        m["x-vendor"] = {"anything": [1, 2.5, {"deep": None}]}
        m["producer"]["x-host"] = "any"
        m["files"][0]["x-note"] = 1
        m["tensors"][0]["x-quant"] = [1, 2]
        m["graphs"][0]["x-graph"] = True
        node(m, "lin")["x-note"] = "fused"
        node(m, "lin")["lowering"]["x-rule"] = {}
        m["signature"]["x-sig"] = None
        m["golden"]["x-golden"] = -1
        m["golden"]["tolerances"]["F32"]["x-why"] = "default"
        m["modules"]["torch.nn.Linear"]["x-decl"] = 1                       # 1.1 objects
        m["modules"]["torch.nn.Linear"]["attrs"][0]["x-unit"] = "features"
        m["modules"]["torch.nn.Linear"]["forward"][0]["x-shape"] = "[*, in_features]"
        m["functions"]["torch.relu"][0]["x-note"] = None
        m["functions"]["torch.relu"][0]["params"][0]["x-note"] = []
        m["digest"] = digest(m)
    edit(v / "x_fields", ext)
    # float32: the golden tolerances written as msgpack float32 (0xca) instead of float64.
    shutil.copytree(v / "minimal", v / "float32")
    raw = (v / "float32" / MANIFEST).read_bytes()
    for value in (1e-3, 1e-4):
        raw = raw.replace(b"\xcb" + struct.pack(">d", value), b"\xca" + struct.pack(">f", value))
    (v / "float32" / MANIFEST).write_bytes(raw)
    # msgpack_depth_1024: an x- field nested so that the manifest reaches exactly 1024 levels (the top map is 1).
    shutil.copytree(v / "minimal", v / "msgpack_depth_1024")
    add_top_level(v / "msgpack_depth_1024", msgpack.packb("x-deep"), b"\x91" * 1023 + b"\xc0")
    # safetensors_metadata: a __metadata__ map of str to str in the weights header.
    shutil.copytree(v / "minimal", v / "safetensors_metadata")
    st_write(v / "safetensors_metadata" / WEIGHTS, st_tensors(v / "minimal" / WEIGHTS), {"format": "pt"})
    make_core_valid(v)
    make_1_3_valid(v)


# ------------------------------------------------------------------------------------------------ core view (1.2)

def exported(model: nn.Module, inputs: tuple, dynamic_shapes=None):
    return torch.export.export(model, inputs, dynamic_shapes=dynamic_shapes).run_decompositions()


class CoreCnn(nn.Module):
    """conv -> batch norm -> relu -> max pool -> flatten -> linear: links from several leaf modules, glue ops."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2, eps=0.0)  # variance 1 (fill_), eps 0: normalisation stays exact (dyadic)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = torch.nn.functional.max_pool2d(y, 2)
        return self.fc(y.flatten(1))


class CoreDyn(nn.Module):
    """A Linear over a dynamic batch s0; the batch size used as a number (aten.sym_size.int); a zero row padded on
    (shape s0+1) and a concatenation (shape 2*s0+1): shape expressions in the metadata."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.fc(x)
        z = torch.cat([y, torch.nn.functional.pad(y, (0, 0, 1, 0))], 0)
        return z.sum(0) * x.shape[0], z


class CoreControl(nn.Module):
    """torch.cond choosing fc(x) or 2x, then while_loop doubling the result three times."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        from torch._higher_order_ops.while_loop import while_loop
        y = torch.cond(x.sum() > 0, lambda v: self.fc(v), lambda v: v * 2.0, (x,))
        return while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 2.0),
                          (torch.zeros((), dtype=torch.int64), y))


class Holder(nn.Module):
    """fc only: a traceable module with CoreControl's / CoreLinear's parameters (for the tensor table)."""

    def __init__(self, fc: nn.Module):
        super().__init__()
        self.fc = fc

    def forward(self, x):
        return self.fc(x)


def export_core(obj, path: Path, inputs: tuple, golden, **kw) -> None:
    """fxlower.export with the core view (``obj`` a GraphModule with core=True, or an ExportedProgram)."""
    if isinstance(obj, torch.export.ExportedProgram):
        fxlower.export(obj, path, golden=golden, **kw)
    else:
        fxlower.export(obj, path, inputs, golden=golden, core=True, **kw)
    edit(path, lambda m: m.__setitem__("producer", dict(PRODUCER)))


def make_core_valid(v: Path) -> None:
    # core_cnn: module view + core view with origin links (conv, bn, fc) and glue (relu, pool, view); golden
    # "nodes" with the core root nodes' results in golden.core_nodes.
    model = fill_(CoreCnn(), 30)
    x = dyadic((1, 1, 6, 6), 31)
    export_core(fx.symbolic_trace(model), v / "core_cnn", (x,), "nodes")
    # core_dynamic: batch dimension in [2, 64]; symbolic Meta shapes; aten.sym_size.int.
    model = fill_(CoreDyn(), 32)
    x = dyadic((3, 4), 33)
    export_core(fx.symbolic_trace(model), v / "core_dynamic", (x,), True,
                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=2, max=64)}})
    # core_control_flow: cond and while_loop, core view only (torch.cond does not trace symbolically).
    model = fill_(CoreControl(), 34)
    x = dyadic((2, 2), 35)
    export_core(torch.export.export(model, (x,)), v / "core_control_flow", (x,), True)
    # core_only: an ExportedProgram without module=: empty graphs, signature of the core root graph.
    model = fill_(Holder(nn.Linear(3, 2)), 36)
    x = dyadic((2, 3), 37)
    export_core(torch.export.export(model, (x,)), v / "core_only", (x,), True)


# ------------------------------------------------------------------------------------------------ 1.3

def make_1_3_valid(v: Path) -> None:
    from torch.distributed.tensor import Replicate, Shard
    # sharded_weights: Mlp (a.bias F32[8], a.weight F32[8, 4], b.bias F32[2], b.weight F32[2, 8]) with
    # max_shard_bytes=100: file order a.bias (32 bytes), a.weight (128: over the limit, alone), b.bias (8) and
    # b.weight (64: 72 <= 100): weights-00001-of-00003 holds a.bias, -00002- a.weight, -00003- b.bias and b.weight.
    export(fx.symbolic_trace(fill_(Mlp(), 40)), v / "sharded_weights", (dyadic((3, 4), 41),), True,
           max_shard_bytes=100)
    # sharded_tied: Tied with max_shard_bytes=16: dec.bias (16 bytes) in shard 1; the key dec.weight (enc.weight
    # is its alias, same file and key) in shard 2.
    export(fx.symbolic_trace(fill_(Tied(), 42)), v / "sharded_tied", (dyadic((1, 4), 43),), True,
           max_shard_bytes=16)
    # placements: Mlp with a.weight [8, 4] Shard(0) over mesh [4]; a.bias [8] (Replicate, Shard(0)) over mesh
    # [2, 2]; b.weight [2, 8] (Shard(1), Shard(0)) over mesh [2, 3] named dp, tp (rows 2 over 3: the last chunk
    # is empty); b.bias not placed.
    export(fx.symbolic_trace(fill_(Mlp(), 44)), v / "placements", (dyadic((3, 4), 45),), True,
           placements={"a.weight": ((4,), [Shard(0)]), "a.bias": ((2, 2), [Replicate(), Shard(0)]),
                       "b.weight": ((2, 3), [Shard(1), Shard(0)], ("dp", "tp"))})


def _to_1_2(m: dict) -> None:
    """The manifest as a 1.2 writer would have written it: [1, 2], no placement field."""
    m["format_version"] = [1, 2]
    for t in m["tensors"]:
        t.pop("placement", None)


def invalid_1_3(vec) -> None:
    """One vector per 1.3 rule (docs/format.md sections 2.1, 5.1, 5.2 and steps 5 and 6 of section 10)."""
    # sharded_weights said [1, 2] (no placement field): several weights files need 1.3.
    edit(vec("sharded_in_1_2", "schema.type", base="sharded_weights"), _to_1_2)
    # The table's b.weight names shard 1, which does not hold its key (shard 3 does).
    edit(vec("sharded_key_in_other_shard", "tensor.missing", base="sharded_weights"),
         lambda m: tensor(m, "b.weight").__setitem__("file", "weights-00001-of-00003.safetensors"))
    # A placement in a file that says [1, 2].

    def placed_1_2(m):
        keep = tensor(m, "a.weight")["placement"]
        _to_1_2(m)
        tensor(m, "a.weight")["placement"] = keep
    edit(vec("placement_in_1_2", "schema.unknown_field", base="placements"), placed_1_2)
    # A golden tensor with a placement.
    edit(vec("placement_on_golden", "schema.type", base="placements"),
         lambda m: tensor(m, "golden/outputs/0").__setitem__(
             "placement", {"mesh": [2], "dims": [{"kind": "replicate", "dim": -1}], "mesh_dim_names": []}))

    # The weights tensor b.bias says kind "golden" (only tensors of the golden file have it; section 2.1, step 6).
    edit(vec("tensor_kind_golden_in_weights", "schema.type", base="placements"),
         lambda m: tensor(m, "b.bias").__setitem__("kind", "golden"))
    # The golden tensor golden/outputs/0 says kind "buffer" (a golden file's tensors have kind "golden").
    edit(vec("tensor_kind_buffer_in_golden", "schema.type", base="placements"),
         lambda m: tensor(m, "golden/outputs/0").__setitem__("kind", "buffer"))

    def placement(name, code, fn):
        edit(vec(name, code, base="placements"), lambda m: fn(tensor(m, "b.weight")["placement"]))
    # mesh ["2", 3]: a str where an int is expected (step 4).
    placement("placement_mesh_not_int", "schema.type", lambda p: p["mesh"].__setitem__(0, "2"))
    # Placement has the field "devices" (step 4).
    placement("placement_unknown_field", "schema.unknown_field", lambda p: p.__setitem__("devices", 6))
    # MeshDim kind "partial" (not shard or replicate).
    placement("placement_kind_unknown", "schema.type", lambda p: p["dims"][1].__setitem__("kind", "partial"))
    # mesh [] and dims [].
    placement("placement_mesh_empty", "tensor.placement", lambda p: p.update(mesh=[], dims=[], mesh_dim_names=[]))
    # mesh [2, 0].
    placement("placement_mesh_zero", "tensor.placement", lambda p: p.__setitem__("mesh", [2, 0]))
    # mesh [256, 257]: 65792 devices, over 65536.
    placement("placement_mesh_too_big", "tensor.placement", lambda p: p.__setitem__("mesh", [256, 257]))
    # dims has one entry for a mesh of two dimensions.
    placement("placement_dims_length", "tensor.placement", lambda p: p["dims"].pop())
    # Shard(2) on a tensor of rank 2.
    placement("placement_shard_dim_out_of_range", "tensor.placement", lambda p: p["dims"][0].__setitem__("dim", 2))
    # A replicate mesh dimension with dim 0 (must be -1).
    placement("placement_replicate_dim", "tensor.placement",
              lambda p: p["dims"][1].update(kind="replicate", dim=0))
    # mesh_dim_names ["dp"] for a mesh of two dimensions.
    placement("placement_names_length", "tensor.placement", lambda p: p["mesh_dim_names"].pop())
    # mesh_dim_names ["tp", "tp"].
    placement("placement_names_repeated", "tensor.placement", lambda p: p.__setitem__("mesh_dim_names", ["tp", "tp"]))
    # mesh_dim_names ["dp", "t-p"]: not an identifier.
    placement("placement_name_not_identifier", "tensor.placement",
              lambda p: p.__setitem__("mesh_dim_names", ["dp", "t-p"]))


def core_invalid(vec) -> None:
    """One vector per 1.2 rule (docs/format.md section 2.6 and step 10 of section 10)."""
    def core_node(m, name, graph=0):
        return next(n for n in m["core"]["graphs"][graph]["nodes"] if n["name"] == name)
    # core_cnn: ops lacks the schema of aten.addmm.default, the target of node addmm.
    edit(vec("core_op_schema_missing", "core.op", base="core_cnn"),
         lambda m: m["core"]["ops"].pop("aten.addmm.default"))

    # core_cnn: node relu calls aten.relu_.default (in-place, not a Core ATen op), its schema copied alongside.
    def off_list(m):
        core_node(m, "relu")["target"] = "aten.relu_.default"
        m["core"]["ops"]["aten.relu_.default"] = {**m["core"]["ops"].pop("aten.relu.default"), "name": "aten::relu_"}
    edit(vec("core_op_not_core_aten", "core.op", base="core_cnn"), off_list)
    # core_cnn: inputs[0] (p_conv_weight) has kind "weight".
    edit(vec("core_input_kind_unknown", "core.structure", base="core_cnn"),
         lambda m: m["core"]["inputs"][0].__setitem__("kind", "weight"))
    # core_cnn: inputs lacks its last entry (x): one fewer than the root graph's placeholders.
    edit(vec("core_input_count", "core.structure", base="core_cnn"), lambda m: m["core"]["inputs"].pop())

    # core_cnn: a second output, kind buffer_mutation of addmm into fc.weight (a parameter, not a buffer).
    def mutation(m):
        m["core"]["outputs"].append({"name": "addmm", "kind": "buffer_mutation", "target": "fc.weight"})
        out = core_node(m, "output")
        out["args"][0]["v"].append({"t": "node", "v": "addmm"})
        out["meta"]["v"].append(out["meta"]["v"][0])
    edit(vec("core_output_mutation_not_buffer", "core.structure", base="core_cnn"), mutation)
    def batch(m):  # the one symbol of core_dynamic (torch names it, e.g. s77)
        (name,) = m["core"]["symbols"]
        return name
    # core_dynamic: the batch symbol names input 0, the parameter p_fc_weight, not a user_input.
    edit(vec("core_symbol_input_not_user", "core.symbol", base="core_dynamic"),
         lambda m: m["core"]["symbols"][batch(m)].__setitem__("input", 0))
    # core_dynamic: the batch symbol names dimension 2 of x, which has rank 2.
    edit(vec("core_symbol_dim_out_of_range", "core.symbol", base="core_dynamic"),
         lambda m: m["core"]["symbols"][batch(m)].__setitem__("dim", 2))
    # core_dynamic: the meta shape of addmm is ["<batch>+", 2] (a syntax error).
    edit(vec("core_shape_syntax", "core.symbol", base="core_dynamic"),
         lambda m: core_node(m, "addmm")["meta"]["shape"].__setitem__(0, batch(m) + "+"))
    # core_dynamic: the meta shape of addmm names a second symbol; only the batch symbol is declared.
    edit(vec("core_shape_undeclared_symbol", "core.symbol", base="core_dynamic"),
         lambda m: core_node(m, "addmm")["meta"]["shape"].__setitem__(0, batch(m) + "1"))
    # core_cnn: node convolution links to module-view node "conv2", which does not exist.
    edit(vec("core_origin_missing_node", "graph.reference", base="core_cnn"),
         lambda m: core_node(m, "convolution")["origin"].__setitem__("node", "conv2"))
    # core_cnn: golden.core_nodes has the key "conv", a module-view node but no core root node.
    edit(vec("core_golden_nodes_unknown", "graph.reference", base="core_cnn"),
         lambda m: m["golden"]["core_nodes"].__setitem__("conv", m["golden"]["core_nodes"].pop("convolution")))
    # core_cnn: the module-view node conv has an origin (origin is for core nodes only).
    edit(vec("core_origin_on_module_node", "graph.structure", base="core_cnn"),
         lambda m: node(m, "conv").__setitem__("origin", {"graph": 0, "node": "bn"}))
    # core_control_flow: the cond node's false branch is {"t": "graph", "v": 5}; core.graphs has 5 entries.
    edit(vec("core_graph_value_out_of_range", "core.structure", base="core_control_flow"),
         lambda m: core_node(m, "cond")["args"][2].__setitem__("v", 5))
    # core_only: core is nil while graphs is empty.
    edit(vec("graphs_empty_without_core", "graph.structure", base="core_only"), lambda m: m.__setitem__("core", None))


# ------------------------------------------------------------------------------------------------ invalid vectors

def make_invalid(out: Path) -> dict[str, str]:
    """Write the invalid vectors; return name -> expected code."""
    v, inv = out / "valid", out / "invalid"
    inv.mkdir()
    expected: dict[str, str] = {}

    def vec(name: str, code: str, base: str = "minimal") -> Path:
        assert name not in expected
        expected[name] = code
        d = inv / name
        shutil.copytree(v / base, d)
        return d

    # --- section 1: directory and members ---
    # The listed golden file is deleted.
    (vec("missing_listed_file", "artifact.missing") / GOLDEN).unlink()
    # The manifest is deleted (the tensor files stay).
    (vec("missing_manifest", "artifact.missing") / MANIFEST).unlink()
    # weights.safetensors is a relative symlink to valid/minimal's identical file.
    d = vec("symlink_member", "artifact.not_regular")
    (d / WEIGHTS).unlink()
    os.symlink(os.path.join("..", "..", "valid", "minimal", WEIGHTS), d / WEIGHTS)
    # An unlisted file README.txt.
    (vec("extra_file", "artifact.extra_file") / "README.txt").write_text("not listed\n")
    # The golden file is listed as "../golden.safetensors" (tensor entries and golden.file follow) and is absent
    # from the directory, so nothing else is wrong: the path is rejected before it is looked up.
    d = vec("path_traversal", "path.invalid")
    (d / GOLDEN).unlink()

    def traverse(m):
        bad = "../" + GOLDEN
        for f in m["files"]:
            if f["path"] == GOLDEN:
                f["path"] = bad
        for t in m["tensors"]:
            if t["file"] == GOLDEN:
                t["file"] = bad
        m["golden"]["file"] = bad
    edit(d, traverse)

    # --- section 2: manifest bytes ---
    # One nil byte (0xc0) appended after the manifest object.
    with open(vec("manifest_trailing_bytes", "manifest.decode") / MANIFEST, "ab") as f:
        f.write(b"\xc0")
    # The manifest's last byte is cut off.
    d = vec("manifest_truncated", "manifest.decode")
    (d / MANIFEST).write_bytes((d / MANIFEST).read_bytes()[:-1])
    # The nil value of the lin node's "graph" field is replaced by the reserved byte 0xc1.
    _replace_field_value(vec("manifest_byte_c1", "manifest.decode") / MANIFEST, "lin", b"\xc1")
    # The same nil replaced by a fixext1 of application type 5.
    _replace_field_value(vec("manifest_ext_type", "manifest.decode") / MANIFEST, "lin", b"\xd4\x05\x00")
    # The same nil replaced by a timestamp (extension type -1, fixext4).
    _replace_field_value(vec("manifest_timestamp", "manifest.decode") / MANIFEST, "lin", b"\xd6\xff\x00\x00\x00\x00")
    # The node name "relu" (a fixstr) has its bytes replaced by invalid UTF-8 (0xff, 0xfe).
    replace_once(vec("manifest_invalid_utf8", "manifest.decode") / MANIFEST, b"\xa4name\xa4relu",
                 b"\xa4name\xa4r\xffl\xfe")
    # An x- field whose value nests 1024 arrays: 1025 levels with the top map.
    add_top_level(vec("manifest_depth_1025", "manifest.decode"), msgpack.packb("x-deep"), b"\x91" * 1024 + b"\xc0")
    # The whole manifest is an array32 header declaring 2^32-1 elements (5 bytes).
    (vec("manifest_huge_array", "manifest.decode") / MANIFEST).write_bytes(b"\xdd\xff\xff\xff\xff")
    # The relu node's (empty) kwargs map gets the int key 1 (value nil).
    d = vec("manifest_int_key", "manifest.key_type")
    replace_once(d / MANIFEST, b"\xa6kwargs\x80\xa6inputs\x91\xa3lin",
                 b"\xa6kwargs\x81\x01\xc0\xa6inputs\x91\xa3lin")
    # The top-level key "digest" appears twice, with the same value.
    d = vec("manifest_duplicate_key", "manifest.duplicate_key")
    add_top_level(d, msgpack.packb("digest"), msgpack.packb(read_m(v / "minimal")["digest"]))
    # values' dict Value {"a": x, 1: permute} becomes {"a": x, "a": x, 1: permute} (a repeated dict key).
    d = vec("dict_value_duplicate_key", "manifest.duplicate_key", base="values")

    def dup_dict_key(m):
        pairs = node(m, "getitem")["args"][0]["v"]
        assert pairs[0][0] == "a"
        pairs.insert(1, list(pairs[0]))
    edit(d, dup_dict_key)

    # --- section 9: format and version ---
    # format is "fxlowr".
    edit(vec("format_identifier", "format.identifier"), lambda m: m.__setitem__("format", "fxlowr"))
    # format_version is [2, 0].
    edit(vec("format_major_2", "format.version"), lambda m: m.__setitem__("format_version", [2, 0]))
    # format_version is [1, 4], a minor newer than this spec.
    edit(vec("format_minor_future", "format.version"), lambda m: m.__setitem__("format_version", [1, 4]))
    # format_version is [1, 2, 0]: three elements.
    edit(vec("format_version_length_3", "format.version"), lambda m: m.__setitem__("format_version", [1, 2, 0]))
    # The manifest is the array ["fxlower", [1, 1]], not a map.
    (vec("manifest_not_map", "format.identifier") / MANIFEST).write_bytes(msgpack.packb(["fxlower", [1, 1]]))
    # The top-level field format is removed.
    edit(vec("format_missing", "format.identifier"), lambda m: m.pop("format"))

    # --- section 2.1: schema ---
    # tensors[0] lacks its sha256 field.
    edit(vec("missing_field", "schema.missing_field"), lambda m: m["tensors"][0].pop("sha256"))
    # The lin node has an unknown field "device" (not in the x- namespace).
    edit(vec("unknown_field", "schema.unknown_field"), lambda m: node(m, "lin").__setitem__("device", "cpu"))
    # The lin node's lowering.version is the str "1".
    edit(vec("str_for_int", "schema.type"), lambda m: node(m, "lin")["lowering"].__setitem__("version", "1"))
    # The lin node's lowering.version is the bool true.
    edit(vec("bool_for_int", "schema.type"), lambda m: node(m, "lin")["lowering"].__setitem__("version", True))
    # The lin node's lowering.module_version is the uint64 2^64-1.
    edit(vec("uint64_for_int", "schema.type"),
         lambda m: node(m, "lin")["lowering"].__setitem__("module_version", 2**64 - 1))
    # The relu node gets the keyword argument extra={"t": "tensorish", "v": "x"}: an unknown Value kind.
    edit(vec("value_unknown_kind", "schema.type"),
         lambda m: node(m, "relu")["kwargs"].__setitem__("extra", {"t": "tensorish", "v": "x"}))

    # Values: the placeholder x gets a default nested 65 deep (one more than allowed; valid/values has 64).
    def deep(m):
        value = None
        for _ in range(65):
            value = {"t": "tuple", "v": [value]}
        node(m, "x")["args"] = [value]
    edit(vec("value_depth_65", "schema.depth"), deep)

    # --- section 3: names ---
    # The relu node is renamed "re\x01lu" everywhere it is named.
    edit(vec("name_control_char", "schema.name"), lambda m: rename_node(m, "relu", "re\x01lu"))
    # The relu node is renamed to 1025 bytes everywhere it is named.
    edit(vec("name_too_long", "schema.name"), lambda m: rename_node(m, "relu", "r" * 1025))

    # --- graphs ---
    # The relu node's op is "call_python".
    edit(vec("unknown_op", "graph.op"), lambda m: node(m, "relu").__setitem__("op", "call_python"))
    # The call_method node sum_1 targets "__class__".
    edit(vec("method_target_dunder", "graph.target"), lambda m: node(m, "sum_1").__setitem__("target", "__class__"))

    # relu uses mul, which comes later (inputs and users are made consistent with that).
    def forward_ref(m):
        node(m, "relu")["args"] = [{"t": "node", "v": "mul"}]
        node(m, "relu")["inputs"] = ["mul"]
        node(m, "lin")["users"] = []
        node(m, "mul")["users"] = ["relu", "sum_1"]
    edit(vec("forward_reference", "graph.reference"), forward_ref)
    # The call_module node lin has neither lowering nor graph.
    edit(vec("call_module_without_lowering", "graph.structure"), lambda m: node(m, "lin").__setitem__("lowering", None))

    # Two nested graphs (appended, not called from the root) call each other.
    def cycle(m):
        m["graphs"] += [_nested_graph("s1", 2), _nested_graph("s2", 1)]
    edit(vec("graph_cycle", "graph.structure"), cycle)
    # signature.output names mul instead of the output node's sum_1.
    edit(vec("signature_output_differs", "graph.output"),
         lambda m: m["signature"].__setitem__("output", {"t": "node", "v": "mul"}))

    # --- output metadata and tensors ---
    # The relu node's meta has the dtype code "F31".
    edit(vec("meta_unknown_dtype", "tensor.dtype"), lambda m: node(m, "relu")["meta"].__setitem__("dtype", "F31"))
    # The relu node's meta has the shape [2, -3].
    edit(vec("meta_negative_dim", "tensor.shape"), lambda m: node(m, "relu")["meta"].__setitem__("shape", [2, -3]))
    # The get_attr node scale targets "shift", which is not in the tensor table.
    edit(vec("get_attr_missing_tensor", "tensor.reference"), lambda m: node(m, "scale").__setitem__("target", "shift"))
    # weights.safetensors is rewritten without the key "scale" (the table still lists it).
    d = vec("tensor_key_missing", "tensor.missing")
    st_write(d / WEIGHTS, {k: t for k, t in st_tensors(d / WEIGHTS).items() if k != "scale"})
    # weights.safetensors stores scale (same bytes) with shape [1, 3]; the table says [3].
    d = vec("tensor_shape_mismatch", "tensor.mismatch")
    st_write(d / WEIGHTS, {k: (c, [1, 3] if k == "scale" else s, b) for k, (c, s, b) in st_tensors(d / WEIGHTS).items()})
    # tied_weights: the alias entry (same file and key as the stored one) has another sha256.
    d = vec("alias_mismatch", "tensor.mismatch", base="tied_weights")

    def alias(m):
        stored = {t["key"] for t in m["tensors"] if t["name"] == t["key"]}
        aliases = [t for t in m["tensors"] if t["name"] != t["key"] and t["key"] in stored]
        assert len(aliases) == 1, aliases
        aliases[0]["sha256"] = "0" * 64
    edit(d, alias)
    # The last data byte of weights.safetensors is flipped: only hash verification finds it.
    d = vec("hash_mismatch", "tensor.hash")
    raw = bytearray((d / WEIGHTS).read_bytes())
    raw[-1] ^= 0x01
    (d / WEIGHTS).write_bytes(bytes(raw))

    # --- section 5: tensor files ---
    # The weights header holds "scale" twice, with identical entries.
    d = vec("safetensors_duplicate_key", "safetensors.header")
    header, data = st_read(d / WEIGHTS)
    body = json.dumps(header, separators=(",", ":"))
    entry = json.dumps(header["scale"], separators=(",", ":"))
    (d / WEIGHTS).write_bytes(st_raw(f'{body[:-1]},"scale":{entry}}}'.encode(), data))
    # The weights header starts with a space.
    d = vec("safetensors_leading_space", "safetensors.header")
    header, data = st_read(d / WEIGHTS)
    (d / WEIGHTS).write_bytes(st_raw(b" " + json.dumps(header, separators=(",", ":")).encode(), data))
    # The weights header's __metadata__ holds the non-JSON constant NaN.
    d = vec("safetensors_nan", "safetensors.header")
    header, data = st_read(d / WEIGHTS)
    body = json.dumps(header, separators=(",", ":"))
    (d / WEIGHTS).write_bytes(st_raw(('{"__metadata__":{"a":NaN},' + body[1:]).encode(), data))
    # The weights header length field exceeds the file size.
    d = vec("safetensors_header_too_long", "safetensors.header")
    raw = (d / WEIGHTS).read_bytes()
    (d / WEIGHTS).write_bytes(struct.pack("<Q", len(raw)) + raw[8:])
    # 8 zero bytes between the second and third tensors of weights.safetensors (offsets follow).
    d = vec("safetensors_gap", "safetensors.layout")
    header, data = st_read(d / WEIGHTS)
    keys = sorted(header, key=lambda k: header[k]["data_offsets"])
    cut = header[keys[2]]["data_offsets"][0]
    for k in keys[2:]:
        header[k]["data_offsets"] = [x + 8 for x in header[k]["data_offsets"]]
    (d / WEIGHTS).write_bytes(st_raw(json.dumps(header, separators=(",", ":")).encode(),
                                     data[:cut] + b"\x00" * 8 + data[cut:]))
    # The weights header is padded so that the data section starts at 4 modulo 8.
    d = vec("safetensors_misaligned_start", "safetensors.layout")
    header, data = st_read(d / WEIGHTS)
    raw = json.dumps(header, separators=(",", ":")).encode()
    (d / WEIGHTS).write_bytes(st_raw(raw, data, pad=(-(8 + len(raw))) % 8 + 4))
    # 8 zero bytes appended to weights.safetensors after the last tensor.
    with open(vec("safetensors_trailing_bytes", "safetensors.layout") / WEIGHTS, "ab") as f:
        f.write(b"\x00" * 8)
    # weights.safetensors also holds a U8 tensor "extra" that no table entry uses.
    d = vec("safetensors_unreferenced", "safetensors.unreferenced")
    st_write(d / WEIGHTS, {**st_tensors(d / WEIGHTS), "extra": ("U8", [8], bytes(range(8)))})
    # golden.file names weights.safetensors, a listed file of role weights.
    edit(vec("golden_file_not_golden", "tensor.reference"),
         lambda m: m["golden"].__setitem__("file", WEIGHTS))
    _invalid_1_1(vec)
    core_invalid(vec)
    invalid_1_3(vec)
    return expected


def _invalid_1_1(vec) -> None:
    """One vector per rejection format 1.1 adds (docs/format.md "Changes in 1.1")."""
    def attr(base, node_name, name, value, code="lowering.attr", vector=None):
        d = vec(vector or f"lowering_attr_{name}", code, base=base)
        edit(d, lambda m: node(m, node_name)["lowering"]["attrs"].__setitem__(name, value))
        return d

    # --- lowering.attr: a value not of the declared type, one per type kind ---
    # minimal: Linear.weight (declared tensor) is the int 3.
    attr("minimal", "lin", "weight", 3, vector="lowering_attr_tensor")
    # minimal: Linear.in_features (declared int) is the float 4.0.
    attr("minimal", "lin", "in_features", 4.0, vector="lowering_attr_int")
    # book_rules: BatchNorm2d.eps (declared float) is the int 1: ints are not widened on read.
    attr("book_rules", "bn", "eps", 1, vector="lowering_attr_float")
    # book_rules: Conv2d.transposed (declared bool) is the int 0.
    attr("book_rules", "conv", "transposed", 0, vector="lowering_attr_bool")
    # odd_names: Upsample.mode (declared str) is the int 3.
    attr("odd_names", "layer_1_1", "mode", 3, vector="lowering_attr_str")
    # book_rules: Conv2d.padding_mode (declared enum(zeros,reflect,replicate,circular)) is "zeroes".
    attr("book_rules", "conv", "padding_mode", "zeroes", vector="lowering_attr_enum")
    # book_rules: Conv2d.kernel_size (declared int[2]) is a tuple of three ints.
    attr("book_rules", "conv", "kernel_size", {"t": "tuple", "v": [3, 3, 3]}, vector="lowering_attr_int_n")
    # lowering_values: TransformerEncoderLayer.activation (declared function|module) is the plain str
    # "torch.nn.functional.relu": a str is never a function in a 1.1 file.
    attr("lowering_values", "top", "activation", "torch.nn.functional.relu", vector="lowering_attr_function")
    # book_rules: MultiheadAttention.out_proj (declared module) is the plain str "torch.nn.Linear" (the 1.0
    # encoding, a string in a 1.1 file).
    attr("book_rules", "mha", "out_proj", "torch.nn.Linear", vector="lowering_attr_module")
    # minimal: Linear.in_features (declared int, none not allowed) is nil.
    attr("minimal", "lin", "in_features", None, vector="lowering_attr_none")
    # minimal: the Linear record gets the attribute "out_bias" = 1, which torch.nn.Linear does not declare.
    attr("minimal", "lin", "out_bias", 1, vector="lowering_attr_undeclared")
    # lowering_values: a child attribute below a module Value that its type does not declare
    # (layers.0.self_attn.out_proj.scale; the recursion reaches torch.nn.Linear).
    attr("lowering_values", "enc", "layers.0.self_attn.out_proj.scale", 1.0,
         vector="lowering_attr_undeclared_child")
    # lowering_values: modules lacks torch.nn.Linear, which only module Values (out_proj, linear1, ...) name.
    edit(vec("lowering_attr_module_undeclared", "lowering.attr", base="lowering_values"),
         lambda m: m["modules"].pop("torch.nn.Linear"))
    # minimal: modules lacks torch.nn.Linear, the module_type of the lin record.
    edit(vec("lowering_module_type_undeclared", "lowering.attr"), lambda m: m["modules"].pop("torch.nn.Linear"))

    # --- Values ---
    # lowering_values: the function Value of activation names "relu" (not a dotted name).
    attr("lowering_values", "top", "activation", {"t": "function", "v": "relu"}, code="schema.type",
         vector="function_value_bad_name")
    # lowering_values: the module Value of self_attn is the empty string.
    attr("lowering_values", "top", "self_attn", {"t": "module", "v": ""}, code="schema.type",
         vector="module_value_empty")

    # --- declarations (modules, functions, methods) ---
    # minimal: Linear.bias is declared with the type "tensor|None" (the grammar's word is none).
    edit(vec("attr_type_grammar", "schema.type"),
         lambda m: m["modules"]["torch.nn.Linear"]["attrs"][3].__setitem__("type", "tensor|None"))
    # minimal: the first parameter of torch.relu's overload 0 has kind "positional".
    edit(vec("param_kind_unknown", "schema.type"),
         lambda m: m["functions"]["torch.relu"][0]["params"][0].__setitem__("kind", "positional"))
    # minimal: modules["torch.nn.Linear"] is an array.
    edit(vec("modules_not_map", "schema.type"), lambda m: m["modules"].__setitem__("torch.nn.Linear", []))

    # --- overloads ---
    # minimal: relu's overload is 2; torch.relu has 2 overloads.
    edit(vec("overload_out_of_range", "graph.structure"), lambda m: node(m, "relu").__setitem__("overload", 2))
    # minimal: relu's overload is nil (1.1 writers write it on every call_function/call_method node).
    edit(vec("overload_missing", "graph.structure"), lambda m: node(m, "relu").__setitem__("overload", None))
    # minimal: the placeholder x has overload 0.
    edit(vec("overload_on_placeholder", "graph.structure"), lambda m: node(m, "x").__setitem__("overload", 0))
    # minimal: functions lacks torch.relu, the target of the relu node.
    edit(vec("function_undeclared", "graph.target"), lambda m: m["functions"].pop("torch.relu"))
    # minimal: methods lacks sum, the target of the sum_1 node.
    edit(vec("method_undeclared", "graph.target"), lambda m: m["methods"].pop("sum"))

    # --- kwargs keys ---
    # minimal: relu gets the keyword argument _stacklevel=3 (writers drop private keywords).
    edit(vec("private_kwarg", "schema.name"), lambda m: node(m, "relu")["kwargs"].__setitem__("_stacklevel", 3))
    # minimal: relu gets the keyword argument "x-note": a kwargs key is data, not an extension field.
    edit(vec("kwargs_x_key", "schema.name"), lambda m: node(m, "relu")["kwargs"].__setitem__("x-note", 1))

    # --- tensor state ---
    # minimal: lin.weight has kind "weight".
    edit(vec("tensor_kind_unknown", "schema.type"), lambda m: tensor(m, "lin.weight").__setitem__("kind", "weight"))
    # minimal: lin.weight has kind "" (only 1.0 files have no kind).
    edit(vec("tensor_kind_empty", "schema.type"), lambda m: tensor(m, "lin.weight").__setitem__("kind", ""))
    # minimal: the buffer scale has requires_grad true.
    edit(vec("requires_grad_on_buffer", "schema.type"),
         lambda m: tensor(m, "scale").__setitem__("requires_grad", True))
    # minimal: the parameter lin.bias has persistent false.
    edit(vec("persistent_false_on_parameter", "schema.type"),
         lambda m: tensor(m, "lin.bias").__setitem__("persistent", False))
    # minimal: the root graph's training is the str "no".
    edit(vec("training_not_bool", "schema.type"), lambda m: m["graphs"][0].__setitem__("training", "no"))

    # --- names (section 3) ---
    # minimal: the call_module target lin becomes li"n.
    edit(vec("call_module_target_quote", "graph.target"), lambda m: node(m, "lin").__setitem__("target", 'li"n'))
    # odd_names: the get_attr target ü.β becomes ü\β.
    edit(vec("get_attr_target_backslash", "graph.target", base="odd_names"),
         lambda m: node(m, "_").__setitem__("target", "ü\\β"))
    # odd_names: the call_module target "layer 1.0" becomes "layer 1.__0".
    edit(vec("call_module_target_dunder", "graph.target", base="odd_names"),
         lambda m: node(m, "layer_1_0").__setitem__("target", "layer 1.__0"))


def _replace_field_value(path: Path, node_name: str, new: bytes) -> None:
    """Replace the nil of the "graph" field of node ``node_name`` (raw surgery on the manifest bytes)."""
    raw = path.read_bytes()
    start = raw.index(b"\xa4name" + msgpack.packb(node_name))
    at = raw.index(b"\xa5graph\xc0", start) + len(b"\xa5graph")
    path.write_bytes(raw[:at] + new + raw[at + 1:])


def _nested_graph(name: str, callee: int) -> dict:
    """placeholder a -> call_module inner (graph=callee) -> output."""
    def n(name, op, target, args, inputs, users, graph=None):
        return {"name": name, "op": op, "target": target, "args": args, "kwargs": {}, "inputs": inputs,
                "users": users, "meta": None, "lowering": None, "graph": graph}
    return {"name": name, "nodes": [
        n("a", "placeholder", "a", [], [], ["c"]),
        n("c", "call_module", "inner", [{"t": "node", "v": "a"}], ["a"], ["output"], graph=callee),
        n("output", "output", "output", [{"t": "node", "v": "c"}], ["c"], [])]}


# ------------------------------------------------------------------------------------------------ driver

def generate(out: Path) -> None:
    """Write the whole set into ``out`` (which must not exist or be empty)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise SystemExit(f"{out} is not empty")
    make_valid(out)
    expected = make_invalid(out)
    (out / "EXPECTED").write_text("".join(f"{name} {code}\n" for name, code in sorted(expected.items())))


def _tree(root: Path) -> dict[str, tuple[str, bytes | str]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            else:
                out[rel] = ("file", p.read_bytes())
    return out


def compare(a: Path, b: Path) -> list[str]:
    """Relative paths that differ between two trees (missing on one side, other kind, other bytes or link)."""
    ta, tb = _tree(a), _tree(b)
    return sorted(k for k in set(ta) | set(tb) if ta.get(k) != tb.get(k))


def check(out: Path = DEFAULT_OUT) -> list[str]:
    """Regenerate into a temporary directory; return the paths where ``out`` differs."""
    with tempfile.TemporaryDirectory(prefix="fxlower-conformance-") as tmp:
        fresh = Path(tmp) / "conformance"
        generate(fresh)
        return compare(fresh, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare a fresh generation with the checked-in set")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the conformance directory")
    args = parser.parse_args(argv)
    if args.check:
        diffs = check(args.out)
        if diffs:
            print(f"{args.out} is stale; rerun scripts/make_conformance.py. Differing files:", file=sys.stderr)
            for d in diffs:
                print(f"  {d}", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    with tempfile.TemporaryDirectory(prefix="fxlower-conformance-", dir=args.out.parent) as tmp:
        fresh = Path(tmp) / "conformance"
        generate(fresh)
        if args.out.exists():
            shutil.rmtree(args.out)
        os.rename(fresh, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

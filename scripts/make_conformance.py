#!/usr/bin/env python3
"""Generate the conformance vectors of docs/format.md section 12 into ``tests/conformance/``.

    python3 scripts/make_conformance.py            # (re)write tests/conformance/
    python3 scripts/make_conformance.py --check    # regenerate into a temporary directory and compare

Layout::

    tests/conformance/valid/<name>/      artifacts every reader MUST load (and verify)
    tests/conformance/invalid/<name>/    artifacts every reader MUST reject, with the code EXPECTED gives
    tests/conformance/EXPECTED           "<name> <code>" per invalid vector, sorted by name

The output is deterministic: models are filled with values from fixed seeds (never torch's RNG), the manifest's
``producer`` is pinned (it is informative only), and nothing depends on time or host. Golden data is computed with
exact arithmetic only (small dyadic rationals, so every sum and product is representable and any summation order
gives the same bits); ``book_rules`` uses transcendental functions (LSTM, attention) whose last bits may differ
between CPUs, so it carries no golden data and stays byte-identical everywhere.

Every invalid vector is a valid one (``minimal`` unless noted) with exactly one fault, the first in the spec's
validation order (section 10); the comment of each says what was corrupted. Not representable in git, hence
absent: a FIFO, socket or device member (``artifact.not_regular`` has a symlink vector instead, which some
checkouts turn into a plain file) and a manifest over 1 GiB (``manifest.size``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import operator
import os
import random
import shutil
import struct
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402
import torch  # noqa: E402
import torch.fx as fx  # noqa: E402
import torch.nn as nn  # noqa: E402

import fxlower  # noqa: E402
from fxlower.constants import STORAGE_DTYPES  # noqa: E402

DEFAULT_OUT = ROOT / "tests" / "conformance"
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


def digest(m: dict) -> str:
    """docs/format.md section 7, for valid vectors whose graphs were edited after export."""
    weights = {f["path"] for f in m["files"] if f["role"] == "weights"}
    blob = msgpack.packb([m["graphs"], [t for t in m["tensors"] if t["file"] in weights], m["signature"]],
                         use_bin_type=True)
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


def export(gm: fx.GraphModule, path: Path, inputs: tuple, golden) -> None:
    fxlower.export(gm, path, inputs, golden=golden)
    edit(path, lambda m: m.__setitem__("producer", dict(PRODUCER)))


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
    # format_version is [1, 1], a minor newer than this spec.
    edit(vec("format_minor_future", "format.version"), lambda m: m.__setitem__("format_version", [1, 1]))

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
    return expected


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

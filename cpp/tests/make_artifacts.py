#!/usr/bin/env python3
"""Craft fxlower artifacts (formats 1.0 and 1.1) by hand for the C++ reader's tests, without the fxlower package.

    python3 make_artifacts.py OUTDIR

writes, in the layout of tests/conformance/:

    OUTDIR/valid/<name>/        artifacts that must load and verify
    OUTDIR/invalid/<name>/      artifacts that must be rejected
    OUTDIR/EXPECTED             "name code" per invalid artifact
    OUTDIR/dumps/<name>.txt     for each valid artifact, the expected output of fxlower-dump (cpp/DUMP.md),
                                rendered here in Python from the objects written: a reference implementation of
                                the dump grammar, so that the C++ rendering (floats especially) is checked
                                against Python's own repr().

The manifest is encoded by the small MessagePack encoder below rather than by the msgpack package, so that tests
can write what no well-behaved encoder writes (float32, duplicate or non-str keys, raw bytes). Safetensors files
are written by hand following docs/format.md section 5. Only the standard library is needed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import struct
import sys

# ----------------------------------------------------------------------------------------------- msgpack


class F32(float):
    """A float written as MessagePack float32."""


class Raw(bytes):
    """Bytes inserted verbatim into the encoding."""


class Pairs(list):
    """A map given as a list of (key, value) pairs: keys may repeat or be non-str."""


def enc(o, out: bytearray, canonical: bool = False) -> None:
    """Encode o; canonical=True writes as section 2 says writers do (F32 widened to float64)."""
    if isinstance(o, Raw):
        out += o
    elif o is None:
        out.append(0xC0)
    elif o is True:
        out.append(0xC3)
    elif o is False:
        out.append(0xC2)
    elif isinstance(o, F32) and not canonical:
        out += b"\xca" + struct.pack(">f", o)
    elif isinstance(o, F32):
        out += b"\xcb" + struct.pack(">d", f32(o))
    elif isinstance(o, float):
        out += b"\xcb" + struct.pack(">d", o)
    elif isinstance(o, int):
        if 0 <= o <= 0x7F:
            out.append(o)
        elif o >= 0:
            for code, fmt, hi in ((0xCC, ">B", 0xFF), (0xCD, ">H", 0xFFFF), (0xCE, ">I", 0xFFFFFFFF),
                                  (0xCF, ">Q", (1 << 64) - 1)):
                if o <= hi:
                    out += bytes([code]) + struct.pack(fmt, o)
                    break
        elif o >= -32:
            out += struct.pack(">b", o)
        else:
            for code, fmt, lo in ((0xD0, ">b", -128), (0xD1, ">h", -32768), (0xD2, ">i", -(1 << 31)),
                                  (0xD3, ">q", -(1 << 63))):
                if o >= lo:
                    out += bytes([code]) + struct.pack(fmt, o)
                    break
    elif isinstance(o, str):
        b = o.encode("utf-8", "surrogatepass")
        n = len(b)
        if n <= 31:
            out.append(0xA0 | n)
        elif n <= 0xFF:
            out += b"\xd9" + struct.pack(">B", n)
        elif n <= 0xFFFF:
            out += b"\xda" + struct.pack(">H", n)
        else:
            out += b"\xdb" + struct.pack(">I", n)
        out += b
    elif isinstance(o, bytes):
        out += b"\xc4" + struct.pack(">B", len(o)) + o
    elif isinstance(o, (dict, Pairs)):
        items = list(o.items()) if isinstance(o, dict) else list(o)
        n = len(items)
        if n <= 15:
            out.append(0x80 | n)
        elif n <= 0xFFFF:
            out += b"\xde" + struct.pack(">H", n)
        else:
            out += b"\xdf" + struct.pack(">I", n)
        for k, v in items:
            enc(k, out, canonical)
            enc(v, out, canonical)
    elif isinstance(o, (list, tuple)):
        n = len(o)
        if n <= 15:
            out.append(0x90 | n)
        elif n <= 0xFFFF:
            out += b"\xdc" + struct.pack(">H", n)
        else:
            out += b"\xdd" + struct.pack(">I", n)
        for v in o:
            enc(v, out, canonical)
    else:
        raise TypeError(type(o))


def packb(o, canonical: bool = False) -> bytes:
    out = bytearray()
    enc(o, out, canonical)
    return bytes(out)


def f32(v):
    return struct.unpack(">f", struct.pack(">f", v))[0]


# ----------------------------------------------------------------------------------------------- values

def N(name):  # node reference
    return {"t": "node", "v": name}


def T(name):  # tensor reference
    return {"t": "tensor", "v": name}


def L(*items):
    return {"t": "list", "v": list(items)}


def TU(*items):
    return {"t": "tuple", "v": list(items)}


def D(*pairs):
    return {"t": "dict", "v": [list(p) for p in pairs]}


def S(a, b, c):
    return {"t": "slice", "v": [a, b, c]}


E = {"t": "ellipsis", "v": None}


def C(re, im):
    return {"t": "complex", "v": [float(re), float(im)]}


def DT(code):
    return {"t": "dtype", "v": code}


def DEV(s):
    return {"t": "device", "v": s}


def MF(s):
    return {"t": "memory_format", "v": s}


def FN(name):  # function Value (1.1)
    return {"t": "function", "v": name}


def MOD(type_name):  # module Value (1.1): a child module of this type
    return {"t": "module", "v": type_name}


def LAY(s):
    return {"t": "layout", "v": s}


def MT(dtype, shape):
    return {"t": "tensor", "dtype": dtype, "shape": list(shape)}


def MS(kind, *items):
    return {"t": kind, "v": list(items)}


def MD(*pairs):
    return {"t": "dict", "v": [list(p) for p in pairs]}


def ML(kind):
    return {"t": kind}


def refs(v, acc):
    if isinstance(v, dict) and set(v) == {"t", "v"}:
        t = v["t"]
        if t == "node":
            if v["v"] not in acc:
                acc.append(v["v"])
        elif t in ("list", "tuple", "slice"):
            for x in v["v"]:
                refs(x, acc)
        elif t == "dict":
            for _, x in v["v"]:
                refs(x, acc)
    return acc


def node(name, op, target, args=(), kwargs=None, meta=None, lowering=None, graph=None, extra=None):
    n = {"name": name, "op": op, "target": target, "args": list(args), "kwargs": dict(kwargs or {}),
         "inputs": None, "users": None, "meta": meta, "lowering": lowering, "graph": graph}
    if extra:
        n.update(extra)
    return n


def finish(nodes):
    """Fill inputs and users as the format derives them."""
    for n in nodes:
        acc = []
        for a in n["args"]:
            refs(a, acc)
        for a in n["kwargs"].values():
            refs(a, acc)
        n["inputs"] = acc
    for n in nodes:
        n["users"] = [m["name"] for m in nodes if n["name"] in m["inputs"]]
    return nodes


def lowering(module_type, attrs, version=1, module_version=1):
    return {"module_type": module_type, "version": version, "module_version": module_version, "attrs": attrs}


# ----------------------------------------------------------------------------------------------- tensors

ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2,
            "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


def prod(shape):
    p = 1
    for d in shape:
        p *= d
    return p


def tensor_bytes(dtype, values):
    if dtype == "F64":
        return struct.pack(f"<{len(values)}d", *values)
    if dtype == "F32":
        return struct.pack(f"<{len(values)}f", *values)
    if dtype == "F16":
        return struct.pack(f"<{len(values)}e", *values)
    if dtype == "BF16":
        return b"".join(struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0])[2:] for v in values)
    if dtype in ("F8_E4M3", "F8_E5M2", "U8", "BOOL"):
        return bytes(values)
    fmt = {"I64": "q", "I32": "i", "I16": "h", "I8": "b", "U64": "Q", "U32": "I", "U16": "H"}[dtype]
    return struct.pack(f"<{len(values)}{fmt}", *values)


def safetensors(entries, *, header_obj=None, header_text=None, pad=b" ", min_pad=0):
    """entries: list of (key, dtype, shape, data). Tensors ordered by item size (largest first) then key."""
    entries = sorted(entries, key=lambda e: (-ITEMSIZE[e[1]], e[0]))
    header, blobs, off = {}, [], 0
    for key, dtype, shape, data in entries:
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    text = header_text if header_text is not None else json.dumps(
        header_obj if header_obj is not None else header, separators=(",", ":")).encode()
    text += pad * min_pad
    while (8 + len(text)) % 8:
        text += pad
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


# ----------------------------------------------------------------------------------------------- artifacts


class Art:
    """An artifact being built: tensors per file, the manifest as plain objects."""

    def __init__(self, version=(1, 0)):
        self.version = version
        self.modules = {}     # 1.1 declarations
        self.functions = {}
        self.methods = {}
        self.kinds = {}       # tensor name -> (kind, requires_grad, persistent), 1.1
        self.files = {}      # path -> role
        self.stored = {}     # path -> list of (key, dtype, shape, data)
        self.table = []      # TensorEntry dicts
        self.graphs = []
        self.signature = None
        self.golden = None
        self.extra_top = {}
        self.core = None     # 1.2 CoreView object
        self.file_bytes = {}  # path -> bytes overriding the generated safetensors

    def add_tensor(self, name, dtype, shape, values, path="weights.safetensors", role="weights", key=None,
                   store=True, kind=None, requires_grad=False, persistent=True):
        if kind is None:
            kind = "golden" if role == "golden" else ("parameter" if dtype[0] in "FB" and dtype != "BOOL" else "buffer")
        self.kinds[name] = (kind, requires_grad, persistent)
        data = tensor_bytes(dtype, values)
        assert len(data) == prod(shape) * ITEMSIZE[dtype], name
        self.files.setdefault(path, role)
        self.stored.setdefault(path, [])
        key = key or name
        if store:
            self.stored[path].append((key, dtype, list(shape), data))
        self.table.append({"name": name, "dtype": dtype, "shape": list(shape), "file": path, "key": key,
                           "sha256": hashlib.sha256(data).hexdigest()})

    def upgrade(self):
        """1.1: every new field written (after the 1.0 ones, in schema order), unless a builder set it."""
        if self.version < (1, 1):
            return
        for e in self.table:
            kind, rg, pers = self.kinds[e["name"]]
            e.setdefault("kind", kind)
            e.setdefault("requires_grad", rg)
            e.setdefault("persistent", pers)
        for g in self.graphs:
            for n in g["nodes"]:
                if n["lowering"] is not None:
                    n["lowering"].setdefault("training", False)
                n.setdefault("overload", 0 if n["op"] in ("call_function", "call_method") else None)
                if self.version >= (1, 2):
                    n.setdefault("origin", None)
            g.setdefault("training", False)
        if self.version >= (1, 2) and self.core is not None:
            for g in self.core["graphs"]:
                for n in g["nodes"]:
                    n.setdefault("overload", None)
                    n.setdefault("origin", None)
                g.setdefault("training", False)

    def manifest(self):
        self.upgrade()
        files = [{"path": p, "role": r} for p, r in self.files.items()]
        tensors = sorted(self.table, key=lambda e: e["name"])
        weights = [t for t in tensors if self.files.get(t["file"]) == "weights"]
        covered = [[no_x_graph(g) for g in self.graphs], [no_x(t) for t in weights], no_x(self.signature)]
        if self.version >= (1, 2) and self.core is not None:  # 1.2: the core view is the 4th element
            c = self.core
            covered.append({"graphs": [no_x_graph(g) for g in c["graphs"]], "inputs": c["inputs"],
                            "outputs": c["outputs"], "ops": c["ops"], "symbols": c["symbols"]})
        digest = "sha256:" + hashlib.sha256(packb(covered, canonical=True)).hexdigest()
        m = {"format": "fxlower", "format_version": list(self.version),
             "producer": {"name": "fxlower", "version": "0.0.0+cpp-tests", "torch": "none"},
             "files": files, "tensors": tensors, "graphs": self.graphs, "signature": self.signature,
             "golden": self.golden, "digest": digest}
        if self.version >= (1, 1):
            m.update(modules=self.modules, functions=self.functions, methods=self.methods)
        if self.version >= (1, 2):
            m["core"] = self.core
        m.update(self.extra_top)
        return m

    def write(self, path, manifest_bytes=None):
        os.makedirs(path)
        m = self.manifest()
        with open(os.path.join(path, "manifest.msgpack"), "wb") as f:
            f.write(manifest_bytes if manifest_bytes is not None else packb(m))
        for p in self.files:
            data = self.file_bytes.get(p)
            if data is None:
                data = safetensors(self.stored[p])
            with open(os.path.join(path, p), "wb") as f:
                f.write(data)
        return m


def no_x(obj):
    """A schema object without its x- extension fields (section 7: the digest leaves them out)."""
    return {k: v for k, v in obj.items() if not k.startswith("x-")}


def no_x_graph(g):
    def node_(n):
        n = no_x(n)
        if n["lowering"] is not None:
            n["lowering"] = no_x(n["lowering"])
        return n
    g = no_x(g)
    g["nodes"] = [node_(n) for n in g["nodes"]]
    return g


def seq(n, scale=1.0, offset=0.0):
    return [((i % 7) - 3) * scale + offset for i in range(n)]


def conv_relu():
    """Conv2d(3, 4, 3, stride=2) -> ReLU, with golden outputs: the worked example's input."""
    a = Art()
    a.add_tensor("conv.weight", "F32", [4, 3, 3, 3], seq(108, 0.125))
    a.add_tensor("conv.bias", "F32", [4], [0.5, -0.25, 0.0, 1.0])
    a.add_tensor("golden/inputs/0", "F32", [1, 3, 5, 5], seq(75, 0.5), "golden.safetensors", "golden")
    a.add_tensor("golden/outputs/0", "F32", [1, 4, 2, 2], [0.0] * 16, "golden.safetensors", "golden")
    nodes = finish([
        node("x", "placeholder", "x", meta=MT("F32", [1, 3, 5, 5])),
        node("conv", "call_module", "conv", [N("x")], meta=MT("F32", [1, 4, 2, 2]),
             lowering=lowering("torch.nn.Conv2d", {
                 "in_channels": 3, "out_channels": 4, "kernel_size": TU(3, 3), "stride": TU(2, 2),
                 "padding": TU(0, 0), "dilation": TU(1, 1), "groups": 1, "padding_mode": "zeros",
                 "weight": T("conv.weight"), "bias": T("conv.bias")}, module_version=1)),
        node("act", "call_module", "act", [N("conv")], meta=MT("F32", [1, 4, 2, 2]),
             lowering=lowering("torch.nn.ReLU", {"inplace": False})),
        node("output", "output", "output", [N("act")], meta=MT("F32", [1, 4, 2, 2])),
    ])
    a.graphs = [{"name": "", "nodes": nodes}]
    a.signature = {"inputs": ["x"], "output": N("act")}
    a.golden = {"mode": "outputs", "file": "golden.safetensors", "inputs": [T("golden/inputs/0")],
                "outputs": T("golden/outputs/0"), "nodes": {}, "tolerances": {"F32": {"rtol": 1e-3, "atol": 1e-4}}}
    return a


def minimal():
    a = Art()
    a.graphs = [{"name": "", "nodes": finish([
        node("x", "placeholder", "x"),
        node("output", "output", "output", [N("x")]),
    ])}]
    a.signature = {"inputs": ["x"], "output": N("x")}
    return a


EVERY_VALUE = [
    None, True, False, 0, -1, 127, 128, -33, 65535, -(1 << 63), (1 << 63) - 1,
    0.0, -0.0, 1.5, 0.1, 1e-05, 0.0001, 1e16, 1e15, 123456789.0, 2.5e-07, 1.7976931348623157e308, 5e-324,
    float("inf"), float("-inf"), float("nan"), F32(0.1), F32(-2.5),
    "", "plain", "quote\" backslash\\ tab\t newline\n nul\x00 del\x7f é ∑ 😀",
    N("x"), L(), L(1, L(2, TU())), TU(), TU(1), TU(1, "a"), D(), D(("a", 1), (2, N("w")), (-3, None)),
    S(None, 5, None), S(1, N("x"), -1), E, C(1.0, -0.5), C(float("nan"), float("-inf")),
    DT("F32"), DT("C128"), DT("BOOL"), DEV("cpu"), DEV("cuda:0"), DEV("privateuseone:123456"),
    MF("contiguous_format"), MF("channels_last"), MF("channels_last_3d"), MF("preserve_format"),
    LAY("strided"), LAY("sparse_coo"), LAY("jagged"),
]


def everything():
    """Every Value kind, Meta kind, storage dtype, a nested graph, aliases, x- fields and golden nodes."""
    a = Art()
    a.add_tensor("conv.weight", "F32", [4, 3, 3, 3], seq(108, 0.25))
    a.add_tensor("conv.bias", "F32", [4], [1.0, 2.0, 3.0, 4.0])
    a.add_tensor("conv.weight_tied", "F32", [4, 3, 3, 3], seq(108, 0.25), key="conv.weight", store=False)
    a.add_tensor("sub.scale", "F32", [], [0.75])
    a.add_tensor("empty", "F32", [0, 3], [])
    dtype_values = {
        "F64": [1.5, -2.0, 1e300, -0.0], "F32": [0.5, -1.0, 3.25, 1e-40], "F16": [1.0, -2.0, 65504.0, 6e-08],
        "BF16": [1.0, -2.0, 3.0, 1e38], "F8_E4M3": [0x38, 0xB8, 0x7E, 0x01], "F8_E5M2": [0x3C, 0xBC, 0x7B, 0x7C],
        "I64": [-(1 << 63), -1, 0, (1 << 63) - 1], "I32": [-(1 << 31), -1, 0, (1 << 31) - 1],
        "I16": [-32768, -1, 0, 32767], "I8": [-128, -1, 0, 127], "U64": [0, 1, (1 << 63) - 1, (1 << 64) - 1],
        "U32": [0, 1, 2, (1 << 32) - 1], "U16": [0, 1, 2, 65535], "U8": [0, 1, 2, 255], "BOOL": [0, 1, 1, 0],
    }
    for code, values in dtype_values.items():
        a.add_tensor(f"dtypes.{code}", code, [len(values)], values)
    a.add_tensor("golden/inputs/0", "F32", [1, 3, 4, 4], seq(48, 0.5), "golden.safetensors", "golden")
    a.add_tensor("golden/outputs/0", "F32", [2], [1.0, 2.0], "golden.safetensors", "golden")
    a.add_tensor("golden/nodes/conv/0", "F32", [1, 4, 2, 2], seq(16), "golden.safetensors", "golden")
    meta_all = MS("tuple", MT("F32", [1, 4, 2, 2]), MT("C64", []), MS("list", ML("int"), ML("float")),
                  MD(("a", ML("bool")), (3, ML("str"))), ML("none"), ML("other"), MS("tuple"))
    root = finish([
        node("x", "placeholder", "x", meta=MT("F32", [1, 3, 4, 4])),
        node("y", "placeholder", "y", [2.5], meta=ML("float")),
        node("w", "get_attr", "conv.weight", meta=MT("F32", [4, 3, 3, 3])),
        node("conv", "call_module", "conv", [N("x")], meta=MT("F32", [1, 4, 2, 2]),
             lowering=lowering("torch.nn.Conv2d", {
                 "in_channels": 3, "out_channels": 4, "kernel_size": TU(3, 3), "stride": TU(1, 1),
                 "padding": TU(0, 0), "dilation": TU(1, 1), "groups": 1, "padding_mode": "zeros",
                 "weight": T("conv.weight"), "bias": T("conv.bias")}),
             extra={"x-note": "extension fields are ignored"}),
        node("sub", "call_module", "sub", [N("conv")], graph=1, meta=MT("F32", [1, 4, 2, 2])),
        node("relu", "call_function", "torch.nn.functional.relu", [N("sub")], {"inplace": False},
             meta=MT("F32", [1, 4, 2, 2])),
        node("every", "call_function", "fxlower_tests.every_value", EVERY_VALUE + [N("w")],
             {"k": D(("nested", L(S(None, None, None), E))), "dt": DT("I64"), "y": N("y")}, meta=meta_all),
        node("shape", "call_function", "builtins.getattr", [N("relu"), "shape"], meta=ML("other")),
        node("item", "call_function", "operator.getitem", [N("shape"), 0], meta=ML("int")),
        node("view", "call_method", "view", [N("relu"), -1], meta=MT("F32", [16])),
        node("output", "output", "output", [TU(N("view"), N("item"), N("every"))], meta=None),
    ])
    sub = finish([
        node("inp", "placeholder", "inp", meta=MT("F32", [1, 4, 2, 2])),
        node("scale", "get_attr", "scale", meta=MT("F32", [])),
        node("mul", "call_function", "operator.mul", [N("inp"), N("scale")], meta=MT("F32", [1, 4, 2, 2])),
        node("act", "call_module", "act", [N("mul")], meta=MT("F32", [1, 4, 2, 2]),
             lowering=lowering("torch.nn.ReLU", {"inplace": False}, version=1, module_version=1)),
        node("output", "output", "output", [N("act")]),
    ])
    a.graphs = [{"name": "", "nodes": root}, {"name": "sub", "nodes": sub}]
    a.signature = {"inputs": ["x", "y"], "output": root[-1]["args"][0]}
    a.golden = {"mode": "nodes", "file": "golden.safetensors", "inputs": [T("golden/inputs/0"), 2.5],
                "outputs": TU(T("golden/outputs/0"), 7), "nodes": {"conv": T("golden/nodes/conv/0")},
                "tolerances": {"F32": {"rtol": 1e-3, "atol": 1e-4}, "F16": {"rtol": 0.01, "atol": 0.01}}}
    a.extra_top = {"x-generator": "cpp/tests/make_artifacts.py"}
    return a


def empty_golden_tensors():
    """A 0-d tensor, an empty tensor, a weights file with no tensor at all is not allowed: no weights file."""
    a = Art()
    a.add_tensor("golden/inputs/0", "I64", [], [42], "golden.safetensors", "golden")
    a.add_tensor("golden/outputs/0", "BOOL", [0], [], "golden.safetensors", "golden")
    a.graphs = [{"name": "", "nodes": finish([
        node("n", "placeholder", "n", meta=ML("int")),
        node("output", "output", "output", [L(N("n"), S(None, None, None))]),
    ])}]
    a.signature = {"inputs": ["n"], "output": L(N("n"), S(None, None, None))}
    a.golden = {"mode": "outputs", "file": "golden.safetensors", "inputs": [T("golden/inputs/0")],
                "outputs": T("golden/outputs/0"), "nodes": {}, "tolerances": {}}
    return a


VALID = {"conv_relu": conv_relu, "minimal": minimal, "everything": everything,
         "empty_golden_tensors": empty_golden_tensors}

# ----------------------------------------------------------------------------------------------- dump (Python reference)


def r_float(v):
    return repr(f32(v)) if isinstance(v, F32) else repr(float(v))


def r_str(s):
    return json.dumps(s, ensure_ascii=False)


def r_key(k):
    return str(k) if isinstance(k, int) else r_str(k)


def r_value(v):
    if v is None:
        return "None"
    if v is True:
        return "True"
    if v is False:
        return "False"
    if isinstance(v, float):
        return r_float(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return r_str(v)
    t, p = v["t"], v["v"]
    if t == "node":
        return "%" + p
    if t == "tensor":
        return "$" + p
    if t == "list":
        return "[" + ", ".join(r_value(x) for x in p) + "]"
    if t == "tuple":
        return "(" + ", ".join(r_value(x) for x in p) + ("," if len(p) == 1 else "") + ")"
    if t == "dict":
        return "{" + ", ".join(f"{r_key(k)}: {r_value(x)}" for k, x in p) + "}"
    if t == "slice":
        return "slice(" + ", ".join(r_value(x) for x in p) + ")"
    if t == "ellipsis":
        return "..."
    if t == "complex":
        return f"complex({r_float(p[0])}, {r_float(p[1])})"
    return f"{t}({p})"  # dtype, device, memory_format, layout


def r_meta(m):
    if m is None:
        return "None"
    t = m["t"]
    if t == "tensor":
        return f"tensor({m['dtype']},[{','.join(str(d) for d in m['shape'])}])"
    if t == "symint":
        return f"symint({m['v']})"
    if t in ("tuple", "list"):
        return t + "(" + ", ".join(r_meta(x) for x in m["v"]) + ")"
    if t == "dict":
        return "dict(" + ", ".join(f"{r_key(k)}: {r_meta(x)}" for k, x in m["v"]) + ")"
    return t


def dump(m, directory):
    lines = [f"format {m['format_version'][0]}.{m['format_version'][1]}",
             "producer " + " ".join(r_str(m["producer"][k]) for k in ("name", "version", "torch")),
             "digest " + m["digest"]]
    for f in m["files"]:
        lines.append(f"file {f['path']} {f['role']}")
    for gi, g in enumerate(m["graphs"]):
        lines.append(f"graph {gi} {r_str(g['name'])} {len(g['nodes'])} training={r_value(g.get('training', False))}")
        for i, n in enumerate(g["nodes"]):
            lines.append(f"node {gi} {i} {n['name']} {n['op']} {n['target']} args={r_value(L(*n['args']))} "
                         f"kwargs={r_value(D(*n['kwargs'].items()))} meta={r_meta(n['meta'])} "
                         f"overload={r_value(n.get('overload'))}")
            low = n["lowering"]
            if low is not None:
                lines.append(f"lowering {gi} {n['name']} {low['module_type']} {low['version']} "
                             f"{low['module_version']} training={r_value(low.get('training', False))} "
                             f"attrs={r_value(D(*low['attrs'].items()))}")
            if n["graph"] is not None:
                lines.append(f"subgraph {gi} {n['name']} {n['graph']}")
    core = m.get("core")
    if core is not None:
        lines.append(f"core graphs={len(core['graphs'])} inputs={len(core['inputs'])} outputs={len(core['outputs'])} "
                     f"ops={len(core['ops'])} symbols={len(core['symbols'])}")
        for gi, g in enumerate(core["graphs"]):
            lines.append(f"core_graph {gi} {r_str(g['name'])} {len(g['nodes'])} training={r_value(g.get('training', False))}")
            for i, n in enumerate(g["nodes"]):
                o = n.get("origin")
                origin = "None" if o is None else f"{o['graph']}:{o['node']}"
                lines.append(f"core_node {gi} {i} {n['name']} {n['op']} {n['target']} args={r_value(L(*n['args']))} "
                             f"kwargs={r_value(D(*n['kwargs'].items()))} meta={r_meta(n['meta'])} origin={origin}")
        for i, x in enumerate(core["inputs"]):
            lines.append(f"core_input {i} {x['name']} {x['kind']} {x['target']}")
        for i, x in enumerate(core["outputs"]):
            lines.append(f"core_output {i} {r_str(x['name'])} {x['kind']} {r_str(x['target'])}")
        for key, op in core["ops"].items():
            lines.append(f"op {key} {r_str(op['name'])} {r_str(op['overload'])} arguments={len(op['arguments'])} "
                         f"returns={len(op['returns'])}")
            for which in ("arguments", "returns"):
                for j, a in enumerate(op[which]):
                    lines.append(f"op_arg {key} {which} {j} {r_str(a['name'])} {r_str(a['type'])} "
                                 f"kwarg_only={r_value(a['kwarg_only'])} required={r_value(a['required'])} "
                                 f"mutates={r_value(a['mutates'])} default={r_value(a['default'])}")
        for name, s in core["symbols"].items():
            lines.append(f"symbol {name} min={s['min']} max={r_value(s['max'])} input={s['input']} dim={s['dim']}")
    sig = m["signature"]
    lines.append(f"signature inputs={r_value(L(*sig['inputs']))} output={r_value(sig['output'])}")
    gold = m["golden"]
    if gold is not None:
        lines.append(f"golden {gold['mode']} {gold['file']} inputs={r_value(L(*gold['inputs']))} "
                     f"outputs={r_value(gold['outputs'])}")
        for k, v in gold["nodes"].items():
            lines.append(f"golden_node {k} {r_value(v)}")
        for k, v in gold.get("core_nodes", {}).items():
            lines.append(f"golden_core_node {k} {r_value(v)}")
        for k, tol in gold["tolerances"].items():
            lines.append(f"tolerance {k} {r_float(tol['rtol'])} {r_float(tol['atol'])}")
    for t in m["tensors"]:
        with open(os.path.join(directory, t["file"]), "rb") as f:
            data = f.read()
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + n])
        b, e = header[t["key"]]["data_offsets"]
        digest = hashlib.sha256(data[8 + n + b:8 + n + e]).hexdigest()
        lines.append(f"tensor {t['name']} {t['dtype']} [{','.join(str(d) for d in t['shape'])}] {t['file']} "
                     f"{t['key']} {digest} kind={r_str(t.get('kind', ''))} "
                     f"requires_grad={r_value(t.get('requires_grad', False))} "
                     f"persistent={r_value(t.get('persistent', True))}")

    def params(prefix, ps):
        for j, q in enumerate(ps):
            lines.append(f"{prefix} {j} {q['name']} {q['kind']} required={r_value(q['required'])} "
                         f"default={r_value(q['default'])}")
    for name, d in m.get("modules", {}).items():
        lines.append(f"module {name} version={d['version']} attrs={len(d['attrs'])} forward={len(d['forward'])}")
        for i, a in enumerate(d["attrs"]):
            lines.append(f"module_attr {name} {i} {a['name']} {a['type']} {r_str(a['doc'])}")
        params(f"module_param {name}", d["forward"])
    for what in ("functions", "methods"):
        for name, overloads in m.get(what, {}).items():
            for i, o in enumerate(overloads):
                lines.append(f"overload {what[:-1]} {name} {i} params={len(o['params'])} returns={r_str(o['returns'])}")
                params(f"overload_param {what[:-1]} {name} {i}", o["params"])
    return "".join(line + "\n" for line in sorted(lines))


# ----------------------------------------------------------------------------------------------- invalid vectors

INVALID = {}


def invalid(code):
    def deco(fn):
        INVALID[fn.__name__] = (code, fn)
        return fn
    return deco


def write_manifest(path, obj_or_bytes):
    with open(os.path.join(path, "manifest.msgpack"), "wb") as f:
        f.write(obj_or_bytes if isinstance(obj_or_bytes, bytes) else packb(obj_or_bytes))


def base(path, mutate=None, art=None):
    """Write conv_relu (or `art`), letting `mutate(manifest)` change the manifest objects first."""
    a = art or conv_relu()
    m = a.write(path)
    if mutate:
        mutate(m)
        write_manifest(path, m)
    return m


def graph0(m):
    return m["graphs"][0]["nodes"]


# --- directory and members
@invalid("artifact.missing")
def no_manifest(p):
    base(p)
    os.remove(os.path.join(p, "manifest.msgpack"))


@invalid("artifact.missing")
def listed_file_missing(p):
    base(p)
    os.remove(os.path.join(p, "golden.safetensors"))


@invalid("artifact.not_regular")
def manifest_symlink(p):
    base(p)
    target = os.path.join(os.path.dirname(os.path.dirname(p)), "manifest_symlink_target.msgpack")
    os.rename(os.path.join(p, "manifest.msgpack"), target)
    os.symlink(os.path.join("..", "..", os.path.basename(target)), os.path.join(p, "manifest.msgpack"))


@invalid("artifact.not_regular")
def listed_file_is_directory(p):
    base(p)
    os.remove(os.path.join(p, "golden.safetensors"))
    os.mkdir(os.path.join(p, "golden.safetensors"))


@invalid("artifact.not_regular")
def listed_file_is_fifo(p):
    base(p)
    os.remove(os.path.join(p, "golden.safetensors"))
    os.mkfifo(os.path.join(p, "golden.safetensors"))


@invalid("artifact.extra_file")
def extra_file(p):
    base(p)
    with open(os.path.join(p, "notes.txt"), "w") as f:
        f.write("not listed\n")


@invalid("path.invalid")
def path_traversal(p):
    base(p, lambda m: m["files"][0].update(path="../weights.safetensors"))


@invalid("path.invalid")
def path_windows_reserved(p):
    base(p, lambda m: m["files"][0].update(path="Aux.safetensors"))


@invalid("path.invalid")
def path_trailing_dot(p):
    base(p, lambda m: m["files"][0].update(path="weights."))


@invalid("path.invalid")
def path_lists_manifest(p):
    base(p, lambda m: m["files"].append({"path": "manifest.msgpack", "role": "golden"}))


@invalid("path.invalid")
def path_case_collision(p):
    def mut(m):
        m["files"][1]["path"] = "WEIGHTS.safetensors"
    base(p, mut)


# --- manifest bytes
@invalid("manifest.size")
def manifest_over_1gib(p):
    base(p)
    os.truncate(os.path.join(p, "manifest.msgpack"), (1 << 30) + 1)  # sparse: no disk used


@invalid("manifest.decode")
def manifest_empty(p):
    base(p)
    write_manifest(p, b"")


@invalid("manifest.decode")
def manifest_truncated(p):
    m = base(p)
    write_manifest(p, packb(m)[:-3])


@invalid("manifest.decode")
def manifest_trailing_bytes(p):
    m = base(p)
    write_manifest(p, packb(m) + b"\xc0")


@invalid("manifest.decode")
def manifest_byte_c1(p):
    base(p, lambda m: m["producer"].update(torch=Raw(b"\xc1")))


@invalid("manifest.decode")
def manifest_ext(p):
    base(p, lambda m: m["producer"].update(torch=Raw(b"\xd6\xff\x00\x00\x00\x00")))  # timestamp32


@invalid("manifest.decode")
def manifest_invalid_utf8(p):
    base(p, lambda m: m["producer"].update(torch=Raw(b"\xa2\xc3\x28")))


@invalid("manifest.decode")
def manifest_surrogate_utf8(p):
    base(p, lambda m: m["producer"].update(torch=Raw(b"\xa3\xed\xa0\x80")))


@invalid("manifest.decode")
def manifest_depth_1025(p):
    base(p, lambda m: m.update({"x-deep": Raw(b"\x91" * 1024 + b"\xc0")}))  # 1025 with the top map


@invalid("manifest.decode")
def manifest_array32_claim(p):
    base(p)
    write_manifest(p, b"\xdd\xff\xff\xff\xff")


@invalid("manifest.key_type")
def manifest_int_key(p):
    base(p, lambda m: m.__setitem__("producer", Pairs(
        [("name", "fxlower"), ("version", "0"), ("torch", "none"), (5, "x")])))


@invalid("manifest.key_type")
def manifest_bin_key(p):
    base(p, lambda m: m.__setitem__("producer", Pairs(
        [("name", "fxlower"), ("version", "0"), ("torch", "none"), (b"k", "x")])))


@invalid("manifest.duplicate_key")
def manifest_duplicate_key(p):
    base(p, lambda m: m.__setitem__("producer", Pairs(
        [("name", "fxlower"), ("version", "0"), ("torch", "none"), ("name", "fxlower")])))


@invalid("manifest.duplicate_key")
def value_dict_duplicate_key(p):
    base(p, lambda m: graph0(m)[2]["kwargs"].update(extra=D(("a", 1), ("a", 2))))


# --- format
@invalid("format.identifier")
def format_wrong(p):
    base(p, lambda m: m.update(format="onnx"))


@invalid("format.identifier")
def format_missing(p):
    base(p, lambda m: m.pop("format"))


@invalid("format.version")
def format_major_2(p):
    base(p, lambda m: m.update(format_version=[2, 0]))


@invalid("format.version")
def format_minor_newer(p):
    base(p, lambda m: m.update(format_version=[1, 4]))


# --- schema
@invalid("schema.missing_field")
def missing_node_users(p):
    base(p, lambda m: graph0(m)[1].pop("users"))


@invalid("schema.unknown_field")
def unknown_field(p):
    base(p, lambda m: graph0(m)[1].update(color="red"))


@invalid("schema.type")
def target_is_int(p):
    base(p, lambda m: graph0(m)[3].update(target=3))


@invalid("schema.type")
def uint64_above_int64(p):
    base(p, lambda m: graph0(m)[1]["lowering"].update(version=(1 << 64) - 1))


@invalid("schema.type")
def uint64_value_above_int64(p):
    base(p, lambda m: graph0(m)[1]["lowering"]["attrs"].update(groups=1 << 63))


@invalid("schema.type")
def bad_file_role(p):
    base(p, lambda m: m["files"][0].update(role="cache"))


@invalid("schema.type")
def bad_sha256_text(p):
    base(p, lambda m: m["tensors"][0].update(sha256="ABC"))


@invalid("schema.type")
def bad_value_kind(p):
    base(p, lambda m: graph0(m)[2]["kwargs"].update(extra={"t": "lambda", "v": "x"}))


@invalid("schema.type")
def bad_device(p):
    base(p, lambda m: graph0(m)[2]["kwargs"].update(extra=DEV("CUDA:0")))


@invalid("schema.type")
def device_index_leading_zero(p):
    base(p, lambda m: graph0(m)[2]["kwargs"].update(extra=DEV("cuda:007")))


@invalid("schema.type")
def device_unknown_type(p):
    base(p, lambda m: graph0(m)[2]["kwargs"].update(extra=DEV("npu_custom:1")))


@invalid("schema.type")
def negative_tolerance(p):
    base(p, lambda m: m["golden"]["tolerances"]["F32"].update(atol=-1.0))


@invalid("schema.depth")
def value_depth_65(p):
    v = 1
    for _ in range(65):
        v = L(v)
    base(p, lambda m: graph0(m)[2]["kwargs"].update(extra=v))


@invalid("schema.depth")
def meta_depth_65(p):
    v = ML("int")
    for _ in range(65):
        v = MS("tuple", v)
    base(p, lambda m: graph0(m)[2].update(meta=v))


@invalid("schema.name")
def duplicate_node_name(p):
    base(p, lambda m: graph0(m)[2].update(name="conv"))


@invalid("schema.name")
def empty_tensor_name(p):
    base(p, lambda m: m["tensors"][0].update(name=""))


@invalid("schema.name")
def control_char_in_name(p):
    base(p, lambda m: m["tensors"][0].update(name="a\x01b"))


# --- graphs
@invalid("graph.op")
def unknown_op(p):
    base(p, lambda m: graph0(m)[2].update(op="call_lambda"))


@invalid("graph.target")
def dunder_get_attr(p):
    a = conv_relu()
    g = a.graphs[0]["nodes"]
    g.insert(1, node("cls", "get_attr", "__class__"))
    finish(g)
    a.write(p)


@invalid("graph.target")
def getattr_private(p):
    a = conv_relu()
    g = a.graphs[0]["nodes"]
    g.insert(2, node("priv", "call_function", "builtins.getattr", [N("conv"), "_secret"]))
    finish(g)
    a.write(p)


@invalid("graph.output")
def output_two_args(p):
    base(p, lambda m: graph0(m)[3].update(args=[N("act"), 1]))


@invalid("graph.reference")
def forward_reference(p):
    def mut(m):
        g = graph0(m)
        g[1]["args"] = [N("act")]
        g[1]["inputs"] = ["act"]
        g[2]["users"] = ["conv", "output"]
        g[0]["users"] = []
    base(p, mut)


@invalid("graph.structure")
def wrong_users(p):
    base(p, lambda m: graph0(m)[0].update(users=[]))


@invalid("graph.structure")
def lowering_missing(p):
    base(p, lambda m: graph0(m)[2].update(lowering=None))


@invalid("graph.structure")
def signature_inputs_differ(p):
    base(p, lambda m: m["signature"].update(inputs=["y"]))


@invalid("graph.output")
def output_not_last(p):
    def mut(m):
        g = graph0(m)
        g[2], g[3] = g[3], g[2]
        g[3]["users"] = []
        g[2]["args"] = [N("conv")]
        g[2]["inputs"] = ["conv"]
    base(p, mut)


@invalid("graph.output")
def signature_output_differs(p):
    base(p, lambda m: m["signature"].update(output=N("conv")))


# --- tensors
@invalid("tensor.dtype")
def unknown_dtype(p):
    base(p, lambda m: m["tensors"][0].update(dtype="F12"))


@invalid("tensor.shape")
def negative_dim(p):
    base(p, lambda m: m["tensors"][0].update(shape=[4, -3, 3, 3]))


@invalid("tensor.reference")
def attr_tensor_missing(p):
    base(p, lambda m: graph0(m)[1]["lowering"]["attrs"].update(weight=T("nope.weight")))


@invalid("tensor.reference")
def golden_tensor_in_weights(p):
    base(p, lambda m: m["golden"].update(outputs=T("conv.bias")))


@invalid("tensor.missing")
def key_not_in_file(p):
    a = conv_relu()
    a.stored["weights.safetensors"] = [e for e in a.stored["weights.safetensors"] if e[0] != "conv.bias"]
    a.write(p)


@invalid("tensor.mismatch")
def shape_differs_from_file(p):
    base(p, lambda m: m["tensors"][1].update(shape=[4, 27]))


@invalid("tensor.hash")
def hash_mismatch(p):
    base(p, lambda m: m["tensors"][0].update(sha256="0" * 64))


# --- safetensors
def with_weights_file(p, data):
    a = conv_relu()
    a.file_bytes["weights.safetensors"] = data
    a.write(p)


def weights_entries():
    return conv_relu().stored["weights.safetensors"]


@invalid("safetensors.header")
def header_duplicate_key(p):
    e = sorted(weights_entries(), key=lambda e: e[0])
    bias = e[0]
    hdr = ('{"conv.bias":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},'
           '"conv.bias":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},'
           f'"conv.weight":{{"dtype":"F32","shape":[4,3,3,3],"data_offsets":[16,{16 + 432}]}}}}').encode()
    while (8 + len(hdr)) % 8:
        hdr += b" "
    with_weights_file(p, struct.pack("<Q", len(hdr)) + hdr + bias[3] + e[1][3])


@invalid("safetensors.header")
def header_leading_space(p):
    data = safetensors(weights_entries())
    n = struct.unpack("<Q", data[:8])[0]
    hdr = b" " + data[8:8 + n].rstrip(b" ")
    while (8 + len(hdr)) % 8:
        hdr += b" "
    with_weights_file(p, struct.pack("<Q", len(hdr)) + hdr + data[8 + n:])


@invalid("safetensors.header")
def header_nul_padding(p):
    with_weights_file(p, safetensors(weights_entries(), pad=b"\x00", min_pad=1))


@invalid("safetensors.header")
def header_depth_129(p):
    data = safetensors(weights_entries())
    n = struct.unpack("<Q", data[:8])[0]
    obj = json.loads(data[8:8 + n])
    text = json.dumps(obj, separators=(",", ":"))
    text = text[:-1] + ',"__metadata__":' + "[" * 128 + "]" * 128 + "}"
    hdr = text.encode()
    while (8 + len(hdr)) % 8:
        hdr += b" "
    with_weights_file(p, struct.pack("<Q", len(hdr)) + hdr + data[8 + n:])


@invalid("safetensors.header")
def header_length_past_end(p):
    data = safetensors(weights_entries())
    with_weights_file(p, struct.pack("<Q", len(data)) + data[8:])


@invalid("safetensors.header")
def header_extra_field(p):
    e = sorted(weights_entries(), key=lambda e: (-4, e[0]))
    obj, off = {}, 0
    for key, dtype, shape, data in e:
        obj[key] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)], "crc": 0}
        off += len(data)
    with_weights_file(p, safetensors(e, header_obj=obj))


@invalid("safetensors.layout")
def layout_gap(p):
    e = sorted(weights_entries(), key=lambda e: e[0])
    obj = {"conv.bias": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
           "conv.weight": {"dtype": "F32", "shape": [4, 3, 3, 3], "data_offsets": [24, 24 + 432]}}
    hdr = json.dumps(obj, separators=(",", ":")).encode()
    while (8 + len(hdr)) % 8:
        hdr += b" "
    with_weights_file(p, struct.pack("<Q", len(hdr)) + hdr + e[0][3] + b"\0" * 8 + e[1][3])


@invalid("safetensors.layout")
def layout_trailing_bytes(p):
    with_weights_file(p, safetensors(weights_entries()) + b"\0" * 8)


@invalid("safetensors.layout")
def layout_header_unaligned(p):
    data = safetensors(weights_entries())
    n = struct.unpack("<Q", data[:8])[0]
    hdr = data[8:8 + n].rstrip(b" ")
    if (8 + len(hdr)) % 8 == 0:
        hdr += b" "
    with_weights_file(p, struct.pack("<Q", len(hdr)) + hdr + data[8 + n:])


@invalid("safetensors.unreferenced")
def unreferenced_tensor(p):
    a = conv_relu()
    a.stored["weights.safetensors"].append(("stray", "F32", [2], tensor_bytes("F32", [1.0, 2.0])))
    a.write(p)


# --- rules of the Python loader (fxlower/io/loading.py) beyond the letter of the spec
@invalid("graph.structure")
def placeholder_two_args(p):
    base(p, lambda m: graph0(m)[0].update(args=[1, 2]))


@invalid("graph.structure")
def call_method_without_args(p):
    a = conv_relu()
    g = a.graphs[0]["nodes"]
    g.insert(3, node("sz", "call_method", "size"))
    finish(g)
    a.write(p)


@invalid("schema.type")
def tensor_table_unsorted(p):
    base(p, lambda m: m["tensors"].reverse())


@invalid("schema.name")
def kwarg_is_keyword(p):
    base(p, lambda m: graph0(m)[2]["kwargs"].update({"class": 1}))


@invalid("graph.target")
def function_target_without_module(p):
    a = conv_relu()
    g = a.graphs[0]["nodes"]
    g.insert(3, node("r", "call_function", "relu", [N("act")]))
    finish(g)
    a.write(p)


@invalid("graph.target")
def placeholder_keyword(p):
    base(p, lambda m: graph0(m)[0].update(target="lambda"))


@invalid("schema.name")
def module_type_empty(p):
    base(p, lambda m: graph0(m)[1]["lowering"].update(module_type=""))


@invalid("tensor.reference")
def golden_file_is_weights(p):
    base(p, lambda m: m["golden"].update(file="weights.safetensors"))


@invalid("tensor.dtype")
def tolerance_value_only_dtype(p):
    base(p, lambda m: m["golden"]["tolerances"].update(C64={"rtol": 0.0, "atol": 0.0}))


@invalid("schema.type")
def meta_dim_above_int64(p):
    """Section 10 (1.1): an int above INT64_MAX, in metadata too, is schema.type at step 4."""
    base(p, lambda m: graph0(m)[2].update(meta=MT("F32", [1 << 63])))


@invalid("schema.type")
def meta_dtype_not_str(p):
    base(p, lambda m: graph0(m)[2].update(meta={"t": "tensor", "dtype": 4, "shape": []}))


def header_variant(p, mutate_obj):
    """weights.safetensors with its header object changed by mutate_obj (data and padding kept)."""
    data = safetensors(weights_entries())
    n = struct.unpack("<Q", data[:8])[0]
    obj = json.loads(data[8:8 + n])
    mutate_obj(obj)
    hdr = json.dumps(obj, separators=(",", ":")).encode()
    while (8 + len(hdr)) % 8:
        hdr += b" "
    with_weights_file(p, struct.pack("<Q", len(hdr)) + hdr + data[8 + n:])


@invalid("tensor.dtype")
def header_unknown_dtype(p):
    header_variant(p, lambda o: o["conv.bias"].update(dtype="F12"))


@invalid("tensor.shape")
def header_negative_dim(p):
    header_variant(p, lambda o: o["conv.bias"].update(shape=[-4]))


@invalid("schema.name")
def header_empty_key(p):
    header_variant(p, lambda o: o.update({"": o.pop("conv.bias")}))


@invalid("safetensors.header")
def header_offsets_reversed(p):
    header_variant(p, lambda o: o["conv.bias"].update(data_offsets=[16, 0]))


@invalid("safetensors.header")
def header_metadata_not_str(p):
    header_variant(p, lambda o: o.update({"__metadata__": {"a": 1}}))


# --- where the Python loader departs from docs/format.md (cpp/tests/README.md lists them): the spec's verdict
@invalid("safetensors.header")
def header_trailing_newline(p):
    """Section 5: the object is followed only by spaces; Python's json.loads also skips '\\n'."""
    data = safetensors(weights_entries())
    n = struct.unpack("<Q", data[:8])[0]
    hdr = data[8:8 + n].rstrip(b" ") + b"\n"
    while (8 + len(hdr)) % 8:
        hdr += b" "
    with_weights_file(p, struct.pack("<Q", len(hdr)) + hdr + data[8 + n:])


@invalid("safetensors.header")
def header_lone_surrogate(p):
    """Section 5: no \\u escape of a lone surrogate (D800-DFFF) in the header."""
    header_variant(p, lambda o: o.update({"\ud800": o.pop("conv.bias")}))


@invalid("graph.target")
def method_target_trailing_newline(p):
    """Section 2.1: [A-Za-z][A-Za-z0-9_]*; Python's re '$' also matches before a final newline."""
    a = conv_relu()
    g = a.graphs[0]["nodes"]
    g.insert(3, node("sz", "call_method", "size\n", [N("act")]))
    finish(g)
    a.write(p)


@invalid("schema.type")
def sha256_trailing_newline(p):
    base(p, lambda m: m["tensors"][0].update(sha256=m["tensors"][0]["sha256"] + "\n"))


def devices():
    """Section 6.1: the listed device types, with or without an index."""
    a = minimal()
    a.graphs = [{"name": "", "nodes": finish([
        node("x", "placeholder", "x"),
        node("to", "call_method", "to", [N("x"), DEV("cuda:12"), DEV("privateuseone:1"), DEV("mps")]),
        node("output", "output", "output", [N("to")]),
    ])}]
    a.signature = {"inputs": ["x"], "output": N("to")}
    return a


def leniencies():
    """Variadic placeholders, a zero-size tensor tied at another's offset, JSON whitespace inside a header,
    __metadata__, an empty weights file."""
    a = minimal()
    a.add_tensor("b", "F32", [2], [1.0, 2.0])
    a.add_tensor("a", "F32", [0], [])
    a.graphs = [{"name": "", "nodes": finish([
        node("args", "placeholder", "*args"),
        node("kwargs", "placeholder", "**kwargs"),
        node("output", "output", "output", [TU(N("args"), N("kwargs"))]),
    ])}]
    a.signature = {"inputs": ["args", "kwargs"], "output": TU(N("args"), N("kwargs"))}
    # "b" is listed first, at [0, 8]; the empty "a" sits at [8, 8]: ties sort by (begin, end)
    hdr = ('{"__metadata__": {"format": "pt"},\n "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},\n'
           ' "a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]}}').encode()
    a.file_bytes["weights.safetensors"] = safetensors([], header_text=hdr)[:-0 or None] + tensor_bytes("F32", [1.0, 2.0])
    return a


VALID.update({"devices": devices, "leniencies": leniencies})


# ----------------------------------------------------------------------------------------------- format 1.1


def P(name, kind="positional_or_keyword", default=None, required=True):
    return {"name": name, "kind": kind, "default": default, "required": required}


def AD(name, type_, doc="-"):
    return {"name": name, "type": type_, "doc": doc}


def MDECL(attrs, forward=None, version=1):
    return {"version": version, "attrs": [AD(*a) for a in attrs], "forward": forward or [P("input")]}


def OV(params, returns="Tensor"):
    return {"params": params, "returns": returns}


MODULE_DECLS = {
    "torch.nn.Conv2d": MDECL([("in_channels", "int"), ("out_channels", "int"), ("kernel_size", "int[2]"),
                              ("stride", "int[2]"), ("padding", "int[2]|enum(same,valid)"), ("dilation", "int[2]"),
                              ("groups", "int"), ("padding_mode", "enum(zeros,reflect,replicate,circular)"),
                              ("weight", "tensor"), ("bias", "tensor|none")]),
    "torch.nn.ReLU": MDECL([("inplace", "bool", "whether the module works in place")]),
    "torch.nn.Linear": MDECL([("in_features", "int"), ("out_features", "int"), ("weight", "tensor"),
                              ("bias", "tensor|none")]),
    "torch.nn.LayerNorm": MDECL([("normalized_shape", "int[]"), ("eps", "float"), ("elementwise_affine", "bool"),
                                 ("weight", "tensor|none"), ("bias", "tensor|none")]),
    "torch.nn.GELU": MDECL([("approximate", "enum(none,tanh)")]),
    "torch.nn.MultiheadAttention": MDECL(
        [("embed_dim", "int"), ("num_heads", "int"), ("batch_first", "bool"), ("in_proj_weight", "tensor|none"),
         ("out_proj", "module", "the output projection (NonDynamicallyQuantizableLinear)")],
        [P("query"), P("key"), P("value"), P("key_padding_mask", default=None, required=False),
         P("need_weights", default=True, required=False)]),
    "torch.nn.TransformerEncoderLayer": MDECL(
        [("activation", "function|module"), ("norm_first", "bool"), ("self_attn", "module"), ("linear1", "module"),
         ("norm1", "module")],
        [P("src"), P("src_mask", default=None, required=False), P("is_causal", "keyword_only", False, False)]),
    "torch.nn.TransformerEncoder": MDECL([("num_layers", "int"), ("layers.*", "module"), ("norm", "module|none")],
                                         [P("src"), P("mask", default=None, required=False)]),
    "fxlower_tests.Scaled": MDECL([("scale", "float|none"), ("shape", "int|int[2]"), ("dtype", "dtype"),
                                   ("device", "device"), ("names", "str[]"), ("flags", "bool[2]")], version=3),
}

FUNCTION_DECLS = {
    "operator.add": [OV([P("a", "positional_only"), P("b", "positional_only")], "Any")],
    "torch.add": [OV([P("input"), P("other"), P("alpha", "keyword_only", 1, False)]),
                  OV([P("input"), P("other", default=1, required=False)])],
    "builtins.getattr": [OV([P("obj", "positional_only"), P("name", "positional_only"),
                             P("default", "positional_only", None, False)], "Any")],
    "torch.nn.functional.relu": [OV([P("input"), P("inplace", default=False, required=False)])],
}

METHOD_DECLS = {
    "view": [OV([P("self"), P("dtype")]), OV([P("self"), P("size", "var_positional")])],
    "size": [OV([P("self"), P("dim", default=None, required=False)], "int | torch.Size")],
}


def conv11():
    """conv_relu in format 1.1: tensor kinds, module declarations, an overloaded function and a method."""
    a = conv_relu()
    a.version = (1, 1)
    a.modules = copy.deepcopy({k: MODULE_DECLS[k] for k in ("torch.nn.Conv2d", "torch.nn.ReLU")})
    a.functions = copy.deepcopy({"torch.add": FUNCTION_DECLS["torch.add"]})
    a.methods = copy.deepcopy({"view": METHOD_DECLS["view"]})
    g = a.graphs[0]["nodes"]
    g.insert(3, node("add", "call_function", "torch.add", [N("act"), 1.0], {"alpha": 2}, MT("F32", [1, 4, 2, 2]),
                     extra={"overload": 0}))
    g.insert(4, node("flat", "call_method", "view", [N("add"), -1], meta=MT("F32", [16]), extra={"overload": 1}))
    g[-1]["args"] = [N("act")]
    finish(g)
    return a


def format_1_1():
    """Every 1.1 addition: tensor kinds and state, function and module Values (child modules, '*' names,
    activations), module declarations with every type form, overloads, the new Meta kinds, training flags and
    Unicode/punctuated module paths."""
    a = Art((1, 1))
    a.add_tensor("enc.layers.0.self_attn.out_proj.weight", "F32", [4, 4], seq(16, 0.5), requires_grad=True)
    a.add_tensor("enc.layers.0.self_attn.in_proj_weight", "F32", [12, 4], seq(48, 0.25))
    a.add_tensor("enc.norm.weight", "F32", [4], [1.0, 1.0, 1.0, 1.0])
    a.add_tensor("bn.num_batches_tracked", "I64", [], [7], persistent=False)
    a.add_tensor("block1-0.layer 1.ü", "F32", [2], [0.5, 2.0], kind="constant")
    a.add_tensor("golden/inputs/0", "F32", [2, 4], seq(8), "golden.safetensors", "golden")
    a.add_tensor("golden/outputs/0", "F32", [2, 4], seq(8, 2.0), "golden.safetensors", "golden")
    a.modules = copy.deepcopy({k: MODULE_DECLS[k] for k in (
        "torch.nn.TransformerEncoder", "torch.nn.TransformerEncoderLayer", "torch.nn.MultiheadAttention",
        "torch.nn.Linear", "torch.nn.LayerNorm", "torch.nn.GELU", "fxlower_tests.Scaled")})
    a.functions = copy.deepcopy({k: FUNCTION_DECLS[k] for k in ("torch.add", "builtins.getattr",
                                                                "torch.nn.functional.relu")})
    a.methods = copy.deepcopy({k: METHOD_DECLS[k] for k in ("view", "size")})
    a.modules["torch.nn.GELU"]["x-origin"] = "extension fields of schema objects are ignored"
    a.methods["size"][0]["x-note"] = "here too"
    enc = {
        "num_layers": 2,
        "layers.0": MOD("torch.nn.TransformerEncoderLayer"),
        "layers.0.activation": FN("torch.nn.functional.relu"),
        "layers.0.norm_first": False,
        "layers.0.self_attn": MOD("torch.nn.MultiheadAttention"),
        "layers.0.self_attn.embed_dim": 4,
        "layers.0.self_attn.num_heads": 2,
        "layers.0.self_attn.batch_first": True,
        "layers.0.self_attn.in_proj_weight": T("enc.layers.0.self_attn.in_proj_weight"),
        "layers.0.self_attn.out_proj": MOD("torch.nn.Linear"),
        "layers.0.self_attn.out_proj.in_features": 4,
        "layers.0.self_attn.out_proj.out_features": 4,
        "layers.0.self_attn.out_proj.weight": T("enc.layers.0.self_attn.out_proj.weight"),
        "layers.0.self_attn.out_proj.bias": None,
        "layers.1": MOD("torch.nn.TransformerEncoderLayer"),
        "layers.1.activation": MOD("torch.nn.GELU"),
        "layers.1.activation.approximate": "tanh",
        "norm": MOD("torch.nn.LayerNorm"),
        "norm.normalized_shape": TU(4),
        "norm.eps": 1e-05,
        "norm.elementwise_affine": True,
        "norm.weight": T("enc.norm.weight"),
        "norm.bias": None,
    }
    scaled = {"scale": None, "shape": TU(2, 4), "dtype": DT("BF16"), "device": DEV("cpu"), "names": TU("a", "é"),
              "flags": TU(True, False)}
    root = finish([
        node("x", "placeholder", "x", meta=MT("F32", [2, 4])),
        node("enc", "call_module", "enc", [N("x")], {"mask": None}, MT("F32", [2, 4]),
             lowering=lowering("torch.nn.TransformerEncoder", enc)),
        node("const", "get_attr", "block1-0.layer 1.ü", meta=MT("F32", [2])),
        node("scaled", "call_module", "block1-0.layer 1", [N("enc")], meta=MT("F32", [2, 4]),
             lowering=lowering("fxlower_tests.Scaled", scaled, version=3, module_version=2)),
        node("add", "call_function", "torch.add", [N("scaled"), N("enc")], {"alpha": 2}, MT("F32", [2, 4])),
        node("dev", "call_function", "builtins.getattr", [N("add"), "device"], meta=ML("device")),
        node("dt", "call_function", "builtins.getattr", [N("add"), "dtype"], meta=ML("dtype")),
        node("lay", "call_function", "builtins.getattr", [N("add"), "layout"], meta=ML("layout")),
        node("relu", "call_function", "torch.nn.functional.relu", [N("add")], meta=MT("F32", [2, 4])),
        node("sz", "call_method", "size", [N("relu")], meta=ML("other")),
        node("view", "call_method", "view", [N("relu"), 8], meta=MT("F32", [8])),
        node("output", "output", "output", [TU(N("view"), N("dev"), N("dt"), N("lay"), N("sz"))]),
    ])
    root[1]["lowering"]["training"] = True
    root[4]["overload"] = 0
    root[10]["overload"] = 1
    a.graphs = [{"name": "", "nodes": root, "training": True}]
    a.signature = {"inputs": ["x"], "output": root[-1]["args"][0]}
    a.golden = {"mode": "outputs", "file": "golden.safetensors", "inputs": [T("golden/inputs/0")],
                "outputs": TU(T("golden/outputs/0"), DEV("cpu"), DT("F32"), LAY("strided"), TU(2, 4)),
                "nodes": {}, "tolerances": {"F32": {"rtol": 1e-3, "atol": 1e-4}}}
    return a


def names_1_0():
    """Section 3 names in a 1.0 file: module path components with '-', spaces and non-ASCII; a nested graph with
    such a name; private keyword arguments (rejected only in 1.1 files)."""
    a = Art()
    a.add_tensor("block1-0.layer 1.ü", "F32", [2], [0.5, 2.0])
    a.add_tensor("blöck 2.w", "F32", [2], [1.0, 3.0])
    root = finish([
        node("x", "placeholder", "x"),
        node("c", "get_attr", "block1-0.layer 1.ü"),
        node("sub", "call_module", "blöck 2", [N("x")], graph=1),
        node("mul", "call_function", "operator.mul", [N("sub"), N("c")], {"_stacklevel": 2}),
        node("output", "output", "output", [N("mul")]),
    ])
    sub = finish([
        node("inp", "placeholder", "inp"),
        node("w", "get_attr", "w"),
        node("m", "call_function", "operator.mul", [N("inp"), N("w")]),
        node("output", "output", "output", [N("m")]),
    ])
    a.graphs = [{"name": "", "nodes": root}, {"name": "blöck 2", "nodes": sub}]
    a.signature = {"inputs": ["x"], "output": N("mul")}
    return a


VALID.update({"conv11": conv11, "format_1_1": format_1_1, "names_1_0": names_1_0})


def base11(p, mutate):
    return base(p, mutate, conv11())


def base_full(p, mutate):
    return base(p, mutate, format_1_1())


def enc_attrs(m):
    return graph0(m)[1]["lowering"]["attrs"]


# --- 1.1 tensor state
@invalid("schema.type")
def v11_tensor_kind_unknown(p):
    base11(p, lambda m: m["tensors"][0].update(kind="weight"))


@invalid("schema.type")
def v11_tensor_kind_empty(p):
    base11(p, lambda m: m["tensors"][0].update(kind=""))


@invalid("schema.type")
def v11_requires_grad_on_buffer(p):
    base_full(p, lambda m: [t.update(requires_grad=True) for t in m["tensors"] if t["kind"] == "buffer"])


@invalid("schema.type")
def v11_non_persistent_parameter(p):
    base11(p, lambda m: m["tensors"][0].update(persistent=False))


@invalid("schema.type")
def v11_requires_grad_not_bool(p):
    base11(p, lambda m: m["tensors"][0].update(requires_grad=1))


@invalid("schema.type")
def v11_lowering_training_not_bool(p):
    base11(p, lambda m: graph0(m)[1]["lowering"].update(training=None))


@invalid("schema.type")
def v11_graph_training_not_bool(p):
    base11(p, lambda m: m["graphs"][0].update(training=0))


# --- 1.1 declarations (schema and use)
@invalid("schema.type")
def v11_modules_not_a_map(p):
    base11(p, lambda m: m.update(modules=[]))


@invalid("schema.unknown_field")
def v11_module_decl_unknown_field(p):
    base11(p, lambda m: m["modules"]["torch.nn.ReLU"].update(rule="x"))


@invalid("schema.missing_field")
def v11_module_decl_missing_version(p):
    base11(p, lambda m: m["modules"]["torch.nn.ReLU"].pop("version"))


@invalid("schema.missing_field")
def v11_param_missing_required(p):
    base11(p, lambda m: m["functions"]["torch.add"][0]["params"][0].pop("required"))


@invalid("schema.type")
def v11_attr_type_grammar(p):
    base11(p, lambda m: m["modules"]["torch.nn.ReLU"]["attrs"][0].update(type="int[2"))


@invalid("schema.type")
def v11_attr_type_unknown_word(p):
    base11(p, lambda m: m["modules"]["torch.nn.ReLU"]["attrs"][0].update(type="bool|integer"))


@invalid("schema.type")
def v11_param_kind_unknown(p):
    base11(p, lambda m: m["methods"]["view"][1]["params"][1].update(kind="varargs"))


@invalid("schema.type")
def v11_required_param_with_default(p):
    base11(p, lambda m: m["functions"]["torch.add"][0]["params"][0].update(default=1))


@invalid("graph.reference")
def v11_param_default_node_reference(p):
    base11(p, lambda m: m["functions"]["torch.add"][1]["params"][1].update(default=N("x")))


@invalid("schema.name")
def v11_param_name_not_identifier(p):
    base11(p, lambda m: m["functions"]["torch.add"][0]["params"][0].update(name="in put"))


@invalid("graph.target")
def v11_function_not_declared(p):
    base11(p, lambda m: m.update(functions={}))


@invalid("graph.target")
def v11_method_not_declared(p):
    base11(p, lambda m: m.update(methods={"size": copy.deepcopy(METHOD_DECLS["size"])}))


@invalid("graph.structure")
def v11_overload_out_of_range(p):
    base11(p, lambda m: graph0(m)[4].update(overload=2))


@invalid("graph.structure")
def v11_overload_negative(p):
    base11(p, lambda m: graph0(m)[3].update(overload=-1))


@invalid("graph.structure")
def v11_overload_missing(p):
    base11(p, lambda m: graph0(m)[3].update(overload=None))


@invalid("graph.structure")
def v11_overload_on_call_module(p):
    base11(p, lambda m: graph0(m)[1].update(overload=0))


@invalid("schema.name")
def v11_private_kwarg(p):
    base11(p, lambda m: graph0(m)[3]["kwargs"].update(_stacklevel=2))


@invalid("schema.name")
def v11_extension_key_in_kwargs(p):
    """Section K: keys of {str: T} fields are data, never extensions."""
    base11(p, lambda m: graph0(m)[3]["kwargs"].update({"x-note": 1}))


# --- 1.1 lowering attributes against declarations
@invalid("lowering.attr")
def v11_attr_not_declared(p):
    base11(p, lambda m: graph0(m)[1]["lowering"]["attrs"].update(color="red"))


@invalid("lowering.attr")
def v11_extension_key_in_attrs(p):
    base11(p, lambda m: graph0(m)[1]["lowering"]["attrs"].update({"x-note": "data"}))


@invalid("lowering.attr")
def v11_attr_list_for_tuple(p):
    base11(p, lambda m: graph0(m)[1]["lowering"]["attrs"].update(stride=L(2, 2)))


@invalid("lowering.attr")
def v11_attr_tuple_wrong_length(p):
    base11(p, lambda m: graph0(m)[1]["lowering"]["attrs"].update(stride=TU(2, 2, 2)))


@invalid("lowering.attr")
def v11_attr_enum_word_unknown(p):
    base11(p, lambda m: graph0(m)[1]["lowering"]["attrs"].update(padding_mode="mirror"))


@invalid("lowering.attr")
def v11_attr_int_for_float(p):
    base_full(p, lambda m: enc_attrs(m).update({"norm.eps": 1}))


@invalid("lowering.attr")
def v11_attr_str_for_function(p):
    """Section A: a plain str is a string, never a function."""
    base_full(p, lambda m: enc_attrs(m).update({"layers.0.activation": "torch.nn.functional.relu"}))


@invalid("lowering.attr")
def v11_attr_none_for_bool(p):
    base11(p, lambda m: graph0(m)[1]["lowering"]["attrs"].update(inplace=None))


@invalid("lowering.attr")
def v11_module_type_not_declared(p):
    base11(p, lambda m: m["modules"].pop("torch.nn.ReLU"))


@invalid("lowering.attr")
def v11_module_value_type_not_declared(p):
    base_full(p, lambda m: m["modules"].pop("torch.nn.Linear"))


@invalid("lowering.attr")
def v11_child_attr_under_none(p):
    def mut(m):
        enc_attrs(m).update({"norm": None})
    base_full(p, mut)


@invalid("lowering.attr")
def v11_star_needs_decimal_index(p):
    base_full(p, lambda m: enc_attrs(m).update({"layers.01": MOD("torch.nn.TransformerEncoderLayer")}))


@invalid("lowering.attr")
def v11_child_attr_not_declared(p):
    base_full(p, lambda m: enc_attrs(m).update({"layers.0.self_attn.out_proj.scale": 1.0}))


@invalid("schema.type")
def v11_function_value_not_dotted(p):
    base_full(p, lambda m: enc_attrs(m).update({"layers.0.activation": FN("relu")}))


@invalid("schema.type")
def v11_module_value_empty(p):
    base_full(p, lambda m: enc_attrs(m).update({"layers.1": MOD("")}))


@invalid("schema.type")
def v11_meta_kind_unknown(p):
    base_full(p, lambda m: graph0(m)[5].update(meta=ML("stream")))


# --- names (section 3, also 1.0) and order (section 10)
@invalid("graph.target")
def get_attr_target_with_quote(p):
    a = names_1_0()
    a.graphs[0]["nodes"][1]["target"] = 'block1-0.layer "1".ü'
    a.write(p)


@invalid("schema.name")
def graph_name_empty_component(p):
    a = names_1_0()
    a.graphs[1]["name"] = "blöck 2..x"
    a.write(p)


# --- order of the 1.1 checks (each vector has two faults; the code is the one reported first)
@invalid("schema.type")
def v11_order_declarations_before_graphs(p):
    """Declarations are checked at the start of step 8, before graph 0's nodes."""
    def mut(m):
        m["methods"]["view"][0]["params"][0]["kind"] = "self"
        m["functions"] = {}
    base11(p, mut)


@invalid("artifact.extra_file")
def v11_order_extra_file_before_tensor_kind(p):
    """Tensor kinds are checked in step 6 (the table), after the directory's entries (step 5)."""
    base11(p, lambda m: m["tensors"][0].update(kind="weight"))
    with open(os.path.join(p, "notes.txt"), "w") as f:
        f.write("x")


@invalid("tensor.reference")
def v11_order_attr_values_before_declarations(p):
    """A record's Values are all decoded before its attributes are checked against the declarations."""
    def mut(m):
        attrs = graph0(m)[1]["lowering"]["attrs"]
        attrs["color"] = "red"
        attrs["bias"] = T("nope")
    base11(p, mut)


@invalid("lowering.attr")
def v11_order_attrs_before_overload(p):
    """In one node, the lowering record (step 8's lowering) comes before the overload (the last field)."""
    def mut(m):
        graph0(m)[1]["lowering"]["attrs"]["color"] = "red"
        graph0(m)[1]["overload"] = 3
    base11(p, mut)


@invalid("schema.type")
def uint64_in_args_before_missing_file(p):
    """Section 10: an int above INT64_MAX anywhere, Values included, is schema.type at step 4, before files."""
    m = base11(p, lambda m: graph0(m)[3]["args"].append(1 << 63))
    os.remove(os.path.join(p, "golden.safetensors"))


# ----------------------------------------------------------------------------------------------- format 1.2: core view


def op_arg(name, type_, default=None, required=True, kwarg_only=False, mutates=False):
    return {"name": name, "type": type_, "kwarg_only": kwarg_only, "default": default, "required": required,
            "mutates": mutates}


CORE_OPS = {
    "aten.convolution.default": {"name": "aten::convolution", "overload": "default", "arguments": [
        op_arg("input", "Tensor"), op_arg("weight", "Tensor"), op_arg("bias", "Tensor?"),
        op_arg("stride", "SymInt[]"), op_arg("padding", "SymInt[]"), op_arg("dilation", "SymInt[]"),
        op_arg("transposed", "bool"), op_arg("output_padding", "SymInt[]"), op_arg("groups", "SymInt")],
        "returns": [op_arg("", "Tensor")]},
    "aten.relu.default": {"name": "aten::relu", "overload": "default", "arguments": [op_arg("self", "Tensor")],
                          "returns": [op_arg("", "Tensor")]},
    "aten.add.Tensor": {"name": "aten::add", "overload": "Tensor", "arguments": [
        op_arg("self", "Tensor"), op_arg("other", "Tensor"),
        op_arg("alpha", "Scalar", default=1, required=False, kwarg_only=True)], "returns": [op_arg("", "Tensor")]},
}


def conv_relu_reference(x, n):
    """relu(conv2d(x, conv.weight, conv.bias, stride 2)) of conv_relu's weights, in double, for n images of
    [3, 5, 5] (a second implementation of what the core view computes: fxlower-run --check compares)."""
    w, b = seq(108, 0.125), [0.5, -0.25, 0.0, 1.0]
    out = []
    for i in range(n):
        for o in range(4):
            for oy in range(2):
                for ox in range(2):
                    acc = b[o]
                    for c in range(3):
                        for ky in range(3):
                            for kx in range(3):
                                acc += (w[((o * 3 + c) * 3 + ky) * 3 + kx] *
                                        x[((i * 3 + c) * 5 + 2 * oy + ky) * 5 + 2 * ox + kx])
                    out.append(max(acc, 0.0))
    return out


def set_values(a, name, values):
    """Replace the stored values of tensor `name` (same dtype and shape)."""
    for path, items in a.stored.items():
        for k, (key, dtype, shape, _) in enumerate(items):
            if key == name:
                data = tensor_bytes(dtype, values)
                items[k] = (key, dtype, shape, data)
                for e in a.table:
                    if e["name"] == name:
                        e["sha256"] = hashlib.sha256(data).hexdigest()


def core12(core_only=False):
    """conv11 in format 1.2 with a core view: parameters as placeholders, a dynamic batch s0 in [1, 4], origin
    links to the module view, an op with a keyword-only default (alpha), golden core node results (golden="nodes":
    the output and relu's result are relu(conv(x)), computed here)."""
    a = conv11()
    a.version = (1, 2)
    ref = conv_relu_reference(seq(75, 0.5), 1)
    set_values(a, "golden/outputs/0", ref)
    a.add_tensor("golden/core/relu/0", "F32", [1, 4, 2, 2], ref, "golden.safetensors", "golden")
    a.golden["mode"] = "nodes"
    a.golden["core_nodes"] = {"relu": T("golden/core/relu/0")}
    sym = "s0"
    nodes = finish([
        node("p_conv_weight", "placeholder", "p_conv_weight", meta=MT("F32", [4, 3, 3, 3])),
        node("p_conv_bias", "placeholder", "p_conv_bias", meta=MT("F32", [4])),
        node("x", "placeholder", "x", meta=MT("F32", [sym, 3, 5, 5])),
        node("convolution", "call_function", "aten.convolution.default",
             [N("x"), N("p_conv_weight"), N("p_conv_bias"), L(2, 2), L(0, 0), L(1, 1), False, L(0, 0), 1],
             meta=MT("F32", [sym, 4, 2, 2]), extra={"overload": None, "origin": {"graph": 0, "node": "conv"}}),
        node("relu", "call_function", "aten.relu.default", [N("convolution")], meta=MT("F32", [sym, 4, 2, 2]),
             extra={"overload": None, "origin": {"graph": 0, "node": "act"}}),
        node("add", "call_function", "aten.add.Tensor", [N("relu"), N("relu")], {"alpha": 2},
             meta=MT("F32", [sym, 4, 2, 2]), extra={"overload": None, "origin": None}),
        node("sym_size_int", "call_function", "aten.sym_size.int", [N("x"), 0], meta={"t": "symint", "v": "s0*16"},
             extra={"overload": None, "origin": None}),
        node("output", "output", "output", [TU(N("relu"))], meta=MS("tuple", MT("F32", [sym, 4, 2, 2]))),
    ])
    ops = copy.deepcopy(CORE_OPS)
    ops["aten.sym_size.int"] = {"name": "aten::sym_size", "overload": "int", "arguments": [
        op_arg("self", "Tensor"), op_arg("dim", "int")], "returns": [op_arg("", "SymInt")]}
    a.core = {"graphs": [{"name": "", "nodes": nodes}],
              "inputs": [{"name": "p_conv_weight", "kind": "parameter", "target": "conv.weight"},
                         {"name": "p_conv_bias", "kind": "parameter", "target": "conv.bias"},
                         {"name": "x", "kind": "user_input", "target": "x"}],
              "outputs": [{"name": "relu", "kind": "user_output", "target": ""}],
              "ops": ops,
              "symbols": {sym: {"min": 1, "max": 4, "input": 2, "dim": 0}}}
    if core_only:
        a.graphs = []
        a.modules, a.functions, a.methods = {}, {}, {}
        a.signature = {"inputs": ["x"], "output": TU(N("relu"))}
        for n in nodes:
            n.setdefault("overload", None)  # (declared order: overload, then origin)
            n["origin"] = None
    return a


def core_only():
    """A 1.2 artifact with only the core view: graphs is empty and the signature describes the core root."""
    return core12(core_only=True)


def derived12():
    """A 1.2 module view derived from a core view: Core ATen call_function targets among the module view's nodes,
    declared in `functions` like any function (aten.add.Tensor's alpha bound from its keyword-only default)."""
    a = conv11()
    a.version = (1, 2)
    ref = conv_relu_reference(seq(75, 0.5), 1)
    set_values(a, "golden/outputs/0", [2.0 * v for v in ref])
    a.functions = {"aten.relu.default": [OV([P("self")], "Tensor")],
                   "aten.add.Tensor": [OV([P("self"), P("other"), P("alpha", "keyword_only", 1, False)], "Tensor")]}
    a.methods = {}
    a.modules = copy.deepcopy({"torch.nn.Conv2d": MODULE_DECLS["torch.nn.Conv2d"]})
    nodes = finish([
        node("x", "placeholder", "x", meta=MT("F32", [1, 3, 5, 5])),
        a.graphs[0]["nodes"][1],
        node("relu", "call_function", "aten.relu.default", [N("conv")], meta=MT("F32", [1, 4, 2, 2]), extra={"overload": 0}),
        node("add", "call_function", "aten.add.Tensor", [N("relu"), N("relu")], meta=MT("F32", [1, 4, 2, 2]),
             extra={"overload": 0}),
        node("output", "output", "output", [N("add")], meta=MT("F32", [1, 4, 2, 2])),
    ])
    a.graphs = [{"name": "", "nodes": nodes}]
    a.signature = {"inputs": ["x"], "output": N("add")}
    return a


def G(i):  # graph Value (1.2): a CoreView.graphs index
    return {"t": "graph", "v": i}


def core_cond():
    """A core-only 1.2 artifact with control flow: cond(p, graph 1 = relu, graph 2 = neg, (x,)); golden for p True."""
    a = Art((1, 2))
    a.add_tensor("golden/inputs/0", "BOOL", [], [1], "golden.safetensors", "golden")
    a.add_tensor("golden/inputs/1", "F32", [2], [-1.5, 2.0], "golden.safetensors", "golden")
    a.add_tensor("golden/outputs/0", "F32", [2], [0.0, 2.0], "golden.safetensors", "golden")

    def branch(op, target):
        return {"name": op + "_graph", "nodes": finish([
            node("a", "placeholder", "a", meta=MT("F32", [2])),
            node(op, "call_function", target, [N("a")], meta=MT("F32", [2])),
            node("output", "output", "output", [TU(N(op))]),
        ])}
    root = finish([
        node("p", "placeholder", "p", meta=MT("BOOL", [])),
        node("x", "placeholder", "x", meta=MT("F32", [2])),
        node("cond", "call_function", "higher_order.cond", [N("p"), G(1), G(2), TU(N("x"))],
             meta=MS("tuple", MT("F32", [2]))),
        node("getitem", "call_function", "operator.getitem", [N("cond"), 0], meta=MT("F32", [2])),
        node("output", "output", "output", [TU(N("getitem"))]),
    ])
    ops = {"aten.relu.default": copy.deepcopy(CORE_OPS["aten.relu.default"]),
           "aten.neg.default": {"name": "aten::neg", "overload": "default", "arguments": [op_arg("self", "Tensor")],
                                "returns": [op_arg("", "Tensor")]},
           # format.md's hand-written schemas of the control-flow operators and Python callables
           "higher_order.cond": {"name": "higher_order::cond", "overload": "",
                                 "arguments": [op_arg("pred", "Tensor"), op_arg("true_fn", "Graph"),
                                               op_arg("false_fn", "Graph"), op_arg("operands", "Any[]")],
                                 "returns": [op_arg("", "Any[]")]},
           "operator.getitem": {"name": "operator::getitem", "overload": "",
                                "arguments": [op_arg("a", "Any"), op_arg("b", "Any")], "returns": [op_arg("", "Any")]}}
    a.core = {"graphs": [{"name": "", "nodes": root}, branch("relu", "aten.relu.default"), branch("neg", "aten.neg.default")],
              "inputs": [{"name": "p", "kind": "user_input", "target": "p"}, {"name": "x", "kind": "user_input", "target": "x"}],
              "outputs": [{"name": "getitem", "kind": "user_output", "target": ""}], "ops": ops, "symbols": {}}
    a.signature = {"inputs": ["p", "x"], "output": TU(N("getitem"))}
    a.golden = {"mode": "outputs", "file": "golden.safetensors", "inputs": [T("golden/inputs/0"), T("golden/inputs/1")],
                "outputs": TU(T("golden/outputs/0")), "nodes": {}, "tolerances": {"F32": {"rtol": 1e-3, "atol": 1e-4}}}
    return a


VALID.update({"core12": core12, "core_only": core_only, "derived12": derived12, "core_cond": core_cond})


@invalid("core.structure")
def core_graph_values_form_a_cycle(p):
    def mut(m):
        g1 = m["core"]["graphs"][1]["nodes"]
        g1.insert(1, node("inner", "call_function", "higher_order.cond", [True, G(1), G(2), TU(N("a"))],
                          extra={"overload": None, "origin": None}))
        finish(g1)
    base(p, mut, core_cond())


def base12(p, mutate):
    return base(p, mutate, core12())


def cnodes(m, g=0):
    return m["core"]["graphs"][g]["nodes"]


@invalid("core.op")
def core_op_without_schema(p):
    base12(p, lambda m: m["core"]["ops"].pop("aten.relu.default"))


@invalid("core.op")
def core_op_key_not_its_schema(p):
    base12(p, lambda m: m["core"]["ops"]["aten.relu.default"].update(name="aten::sigmoid"))


@invalid("schema.type")
def core_op_required_arg_with_default(p):
    base12(p, lambda m: m["core"]["ops"]["aten.relu.default"]["arguments"][0].update(default=1))


@invalid("graph.op")
def core_call_module_node(p):
    def mut(m):
        cnodes(m)[4].update(op="call_module", target="act")
    base12(p, mut)


@invalid("graph.structure")
def core_node_with_lowering(p):
    base12(p, lambda m: cnodes(m)[4].update(lowering=lowering("torch.nn.ReLU", {"inplace": False})))


@invalid("core.structure")
def core_graphs_empty(p):
    base12(p, lambda m: m["core"].update(graphs=[]))


@invalid("core.structure")
def core_graph_value_out_of_range(p):
    base12(p, lambda m: cnodes(m)[5]["kwargs"].update(alpha={"t": "graph", "v": 1}))


@invalid("graph.reference")
def graph_value_in_module_view(p):
    base12(p, lambda m: graph0(m)[3]["kwargs"].update(alpha={"t": "graph", "v": 0}))


@invalid("core.structure")
def core_inputs_count(p):
    base12(p, lambda m: m["core"]["inputs"].pop(0))


@invalid("core.structure")
def core_input_name(p):
    base12(p, lambda m: m["core"]["inputs"][2].update(name="y"))


@invalid("core.structure")
def core_input_kind_unknown(p):
    base12(p, lambda m: m["core"]["inputs"][0].update(kind="weight"))


@invalid("core.structure")
def core_user_input_target(p):
    base12(p, lambda m: m["core"]["inputs"][2].update(target="input"))


@invalid("tensor.reference")
def core_parameter_not_in_table(p):
    base12(p, lambda m: m["core"]["inputs"][0].update(target="conv.w"))


@invalid("core.structure")
def core_outputs_count(p):
    base12(p, lambda m: m["core"]["outputs"].append({"name": "add", "kind": "user_output", "target": ""}))


@invalid("core.structure")
def core_output_name(p):
    base12(p, lambda m: m["core"]["outputs"][0].update(name="add"))


@invalid("core.structure")
def core_output_kind_unknown(p):
    base12(p, lambda m: m["core"]["outputs"][0].update(kind="output"))


@invalid("graph.reference")
def core_origin_unresolved(p):
    base12(p, lambda m: cnodes(m)[3].update(origin={"graph": 0, "node": "conv2"}))


@invalid("graph.reference")
def core_origin_graph_out_of_range(p):
    base12(p, lambda m: cnodes(m)[3].update(origin={"graph": 1, "node": "conv"}))


@invalid("graph.structure")
def origin_on_module_view_node(p):
    base12(p, lambda m: graph0(m)[1].update(origin={"graph": 0, "node": "conv"}))


@invalid("core.symbol")
def core_shape_symbol_undeclared(p):
    base12(p, lambda m: cnodes(m)[4]["meta"].update(shape=["s1", 4, 2, 2]))


@invalid("core.symbol")
def core_shape_expression_syntax(p):
    base12(p, lambda m: cnodes(m)[4]["meta"].update(shape=["s0+", 4, 2, 2]))


@invalid("core.symbol")
def core_symint_expression_syntax(p):
    base12(p, lambda m: cnodes(m)[6]["meta"].update(v="s0**2"))


@invalid("tensor.shape")
def shape_expression_in_module_view(p):
    base12(p, lambda m: graph0(m)[1]["meta"].update(shape=["s0", 4, 2, 2]))


@invalid("core.symbol")
def core_symbol_name(p):
    base12(p, lambda m: m["core"]["symbols"].update(n0={"min": 1, "max": 2, "input": 2, "dim": 0}))


@invalid("core.symbol")
def core_symbol_range_reversed(p):
    base12(p, lambda m: m["core"]["symbols"]["s0"].update(min=5, max=4))


@invalid("core.symbol")
def core_symbol_input_not_user(p):
    base12(p, lambda m: m["core"]["symbols"]["s0"].update(input=0))


@invalid("core.symbol")
def core_symbol_dim_out_of_range(p):
    base12(p, lambda m: m["core"]["symbols"]["s0"].update(dim=4))


@invalid("graph.reference")
def golden_core_node_unknown(p):
    base12(p, lambda m: m["golden"]["core_nodes"].update(nope=T("golden/core/relu/0")))


@invalid("graph.structure")
def v12_graphs_empty_without_core(p):
    def mut(m):
        m["graphs"] = []
        m["core"] = None
    base12(p, mut)


# Order inside the core step (cpp/DUMP.md / docs/cpp.md): ops table, graphs, signature (core only), inputs,
# outputs, origins, symbol expressions, symbols.
@invalid("core.op")
def core_order_ops_table_before_graphs(p):
    def mut(m):
        m["core"]["ops"]["aten.relu.default"].update(name="aten::sigmoid")
        cnodes(m)[4].update(op="call_module")
    base12(p, mut)


@invalid("core.op")
def core_order_node_op_before_inputs(p):
    def mut(m):
        m["core"]["ops"].pop("aten.relu.default")
        m["core"]["inputs"].pop(0)
    base12(p, mut)


@invalid("graph.reference")
def core_order_origin_before_inputs(p):
    def mut(m):
        m["core"]["inputs"][2].update(name="y")
        cnodes(m)[3].update(origin={"graph": 0, "node": "conv2"})
    base12(p, mut)


@invalid("graph.reference")
def core_order_origin_before_symbols(p):
    def mut(m):
        cnodes(m)[3].update(origin={"graph": 0, "node": "conv2"})
        cnodes(m)[4]["meta"].update(shape=["s9", 4, 2, 2])
    base12(p, mut)


@invalid("core.symbol")
def core_order_expressions_before_symbol_records(p):
    def mut(m):
        cnodes(m)[4]["meta"].update(shape=["s9", 4, 2, 2])
        m["core"]["symbols"]["s0"].update(dim=4)
    base12(p, mut)


@invalid("core.structure")
def core_order_signature_before_golden(p):
    def mut(m):
        m["core"]["outputs"][0].update(name="add")
        m["golden"]["core_nodes"].update(nope=T("golden/core/relu/0"))
    base12(p, mut)


# ----------------------------------------------------------------------------------------------- main


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    out = argv[1]
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "valid"))
    os.makedirs(os.path.join(out, "invalid"))
    os.makedirs(os.path.join(out, "dumps"))
    for name, fn in VALID.items():
        path = os.path.join(out, "valid", name)
        m = fn().write(path)
        with open(os.path.join(out, "dumps", name + ".txt"), "w", encoding="utf-8", newline="\n") as f:
            f.write(dump(m, path))
    lines = []
    for name, (code, fn) in INVALID.items():
        fn(os.path.join(out, "invalid", name))
        lines.append(f"{name} {code}\n")
    with open(os.path.join(out, "EXPECTED"), "w") as f:
        f.writelines(lines)
    # inputs for fxlower-run on the core view of core12 (s0 in [1, 4]): 2 images, and 5 (out of range)
    os.makedirs(os.path.join(out, "inputs"))
    with open(os.path.join(out, "inputs", "core_cond_false.safetensors"), "wb") as f:
        f.write(safetensors([("0", "BOOL", [], bytes([0])), ("1", "F32", [2], tensor_bytes("F32", [-1.5, 2.0]))]))
    for n in (2, 5):
        x = seq(75 * n, 0.5, 0.25)
        with open(os.path.join(out, "inputs", f"core12_batch{n}.safetensors"), "wb") as f:
            f.write(safetensors([("0", "F32", [n, 3, 5, 5], tensor_bytes("F32", x))]))
    print(f"{len(VALID)} valid and {len(INVALID)} invalid artifacts in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

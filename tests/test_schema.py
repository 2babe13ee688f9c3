"""The schema contract, against expectations written out by hand: the objects and fields of docs/format.md (in
order, with which fields are required), the version rule (fields of 1.0 required, fields added in 1.1 and 1.2
optional with defaults), exact MessagePack bytes of an encoded object, and the checked decoding's errors.
docs/schema.json is rendered from fxlower/format/schema.py by scripts/gen_schema.py and must be current."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import msgpack
import pytest

from fxlower.errors import FormatError
from fxlower.format.schema import (SCHEMA_VERSION, CoreInput, CoreOutput, CoreView, FileEntry, Golden, Graph, Lowering,
                            Manifest, Node, NodeLink, OpArg, OpSchema, Symbol, TensorEntry, from_obj, json_schema,
                            to_obj)

ROOT = pathlib.Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "docs" / "schema.json"

#: Every object of docs/format.md section 2.1-2.3 and 2.6: (fields of the version that introduced the object,
#: required) + (fields added by later minors, each with a default: 1.1's, then 1.2's). A field added later belongs to a new minor (with a default) or a new major (without); update
#: this table, FORMAT_VERSION and docs/format.md together.
FIELDS = {
    "Manifest": (["format", "format_version", "producer", "files", "tensors", "graphs", "signature", "golden",
                  "digest"], ["modules", "functions", "methods", "core"]),
    "Producer": (["name", "version", "torch"], []),
    "FileEntry": (["path", "role"], []),
    "TensorEntry": (["name", "dtype", "shape", "file", "key", "sha256"],
                    ["kind", "requires_grad", "persistent", "placement"]),
    "Graph": (["name", "nodes"], ["training"]),
    "Node": (["name", "op", "target", "args", "kwargs", "inputs", "users", "meta", "lowering", "graph"],
             ["overload", "origin"]),
    "Lowering": (["module_type", "version", "module_version", "attrs"], ["training"]),
    "Signature": (["inputs", "output"], []),
    "Golden": (["mode", "file", "inputs", "outputs", "nodes", "tolerances"], ["core_nodes"]),
    "Tolerance": (["rtol", "atol"], []),
    # new objects of 1.1: all their fields are required inside them (the object itself is optional)
    "ModuleDecl": (["version", "attrs", "forward"], []),
    "AttrDecl": (["name", "type", "doc"], []),
    "Param": (["name", "kind", "default", "required"], []),
    "Overload": (["params", "returns"], []),
    # new objects of 1.2 (section 2.6)
    "NodeLink": (["graph", "node"], []),
    "CoreView": (["graphs", "inputs", "outputs", "ops", "symbols"], []),
    "CoreInput": (["name", "kind", "target"], []),
    "CoreOutput": (["name", "kind", "target"], []),
    "OpSchema": (["name", "overload", "arguments", "returns"], []),
    "OpArg": (["name", "type", "kwarg_only", "default", "required", "mutates"], []),
    "Symbol": (["min", "max", "input", "dim"], []),
    # new objects of 1.3 (section 2.1, Placement)
    "Placement": (["mesh", "dims"], ["mesh_dim_names"]),
    "MeshDim": (["kind", "dim"], []),
}


def test_checked_in_schema_is_current():
    assert json.loads(SNAPSHOT.read_text()) == json_schema(), "run python3 scripts/gen_schema.py"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_schema.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_schema_is_format_1_3():
    schema = json.loads(SNAPSHOT.read_text())
    assert SCHEMA_VERSION == (1, 3)
    assert schema["title"] == "fxlower manifest, format 1.3"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$ref"] == "#/$defs/Manifest"


def test_objects_fields_and_the_version_rule():
    defs = json.loads(SNAPSHOT.read_text())["$defs"]
    objects = {name for name, d in defs.items() if "properties" in d}
    assert objects == set(FIELDS)
    for name, (first, later) in FIELDS.items():
        d = defs[name]
        assert list(d["properties"]) == first + later, name
        assert d["required"] == first, name
        assert d["additionalProperties"] is False and d["patternProperties"] == {"^x-": {}}, name


def test_field_types_of_the_1_1_additions():
    defs = json.loads(SNAPSHOT.read_text())["$defs"]
    assert defs["TensorEntry"]["properties"]["kind"] == {"type": "string"}
    assert defs["TensorEntry"]["properties"]["requires_grad"] == {"type": "boolean"}
    assert defs["TensorEntry"]["properties"]["persistent"] == {"type": "boolean"}
    assert defs["Graph"]["properties"]["training"] == {"type": "boolean"}
    assert defs["Lowering"]["properties"]["training"] == {"type": "boolean"}
    assert defs["Node"]["properties"]["overload"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert defs["Manifest"]["properties"]["modules"] == {
        "type": "object", "additionalProperties": {"$ref": "#/$defs/ModuleDecl"}}
    for field in ("functions", "methods"):
        assert defs["Manifest"]["properties"][field] == {
            "type": "object", "additionalProperties": {"type": "array", "items": {"$ref": "#/$defs/Overload"}}}
    assert defs["Param"]["properties"]["default"] == {"$ref": "#/$defs/Value"}
    value_kinds = set()
    for alt in defs["Value"]["oneOf"]:
        t = alt.get("properties", {}).get("t", {})
        value_kinds |= set(t.get("enum", [])) | ({t["const"]} if "const" in t else set())
    assert value_kinds == {"node", "tensor", "dtype", "device", "memory_format", "layout", "function", "module",
                           "list", "tuple", "dict", "slice", "ellipsis", "complex", "graph"}  # graph: 1.2
    leaves = next(a for a in defs["Meta"]["oneOf"] if a["required"] == ["t"])["properties"]["t"]["enum"]
    assert set(leaves) == {"int", "float", "bool", "str", "none", "other", "device", "dtype", "memory_format",
                           "layout"}


def test_encoding_is_field_order_maps_with_every_field():
    entry = TensorEntry(name="w", dtype="F32", shape=[2, 3], file="weights.safetensors", key="w", sha256="ab",
                        kind="parameter", requires_grad=True, persistent=True)
    expected = (b"\x8a"                                  # fixmap, 10 entries
                b"\xa4name\xa1w"
                b"\xa5dtype\xa3F32"
                b"\xa5shape\x92\x02\x03"
                b"\xa4file\xb3weights.safetensors"
                b"\xa3key\xa1w"
                b"\xa6sha256\xa2ab"
                b"\xa4kind\xa9parameter"
                b"\xadrequires_grad\xc3"
                b"\xaapersistent\xc3"
                b"\xa9placement\xc0")                    # 1.3, nil when not placed
    assert msgpack.packb(to_obj(entry), use_bin_type=True) == expected
    low = Lowering(module_type="torch.nn.ReLU", version=1, module_version=1, attrs={"inplace": False})
    assert msgpack.packb(to_obj(low), use_bin_type=True) == (
        b"\x85\xabmodule_type\xadtorch.nn.ReLU\xa7version\x01\xaemodule_version\x01"
        b"\xa5attrs\x81\xa7inplace\xc2\xa8training\xc2")


def test_a_1_0_object_decodes_with_the_1_1_defaults():
    obj = {"name": "w", "dtype": "F32", "shape": [2], "file": "weights.safetensors", "key": "w", "sha256": "ab"}
    assert from_obj(TensorEntry, obj, "t") == TensorEntry("w", "F32", [2], "weights.safetensors", "w", "ab",
                                                          kind="", requires_grad=False, persistent=True)
    node = {"name": "x", "op": "placeholder", "target": "x", "args": [], "kwargs": {}, "inputs": [], "users": [],
            "meta": None, "lowering": None, "graph": None}
    assert from_obj(Node, node, "n").overload is None
    top = {"format": "fxlower", "format_version": [1, 0], "producer": {"name": "a", "version": "b", "torch": "c"},
           "files": [], "tensors": [], "graphs": [], "signature": {"inputs": [], "output": None}, "golden": None,
           "digest": "sha256:"}
    m = from_obj(Manifest, top, "manifest")
    assert (m.modules, m.functions, m.methods) == ({}, {}, {})


def test_decoding_errors_name_the_field():
    good = {"path": "weights.safetensors", "role": "weights"}
    with pytest.raises(FormatError) as e:
        from_obj(FileEntry, {"path": "weights.safetensors"}, "files[0]")
    assert e.value.code == "schema.missing_field" and "'role'" in str(e.value) and "files[0]" in str(e.value)
    with pytest.raises(FormatError) as e:
        from_obj(FileEntry, {**good, "size": 3}, "files[0]")
    assert e.value.code == "schema.unknown_field" and "'size'" in str(e.value)
    assert from_obj(FileEntry, {**good, "x-size": 3}, "files[0]") == FileEntry("weights.safetensors", "weights")
    with pytest.raises(FormatError) as e:
        from_obj(FileEntry, {**good, "role": 1}, "files[0]")
    assert e.value.code == "schema.type" and "files[0].role" in str(e.value)
    low = {"module_type": "torch.nn.ReLU", "version": 2**64 - 1, "module_version": 1, "attrs": {}}
    with pytest.raises(FormatError) as e:
        from_obj(Lowering, low, "lowering")
    assert e.value.code == "schema.type" and "lowering.version" in str(e.value)
    with pytest.raises(FormatError) as e:
        from_obj(Lowering, {**low, "version": 1, "training": 0}, "lowering")
    assert e.value.code == "schema.type" and "lowering.training" in str(e.value)
    with pytest.raises(FormatError) as e:
        from_obj(Lowering, {**low, "version": True}, "lowering")
    assert e.value.code == "schema.type"


def test_an_exported_manifest_decodes_and_reencodes_to_the_same_object(tmp_path):
    import torch.fx as fx
    import torch.nn as nn

    import fxlower
    fxlower.export(fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2))), tmp_path / "m")
    raw = (tmp_path / "m" / "manifest.msgpack").read_bytes()
    obj = msgpack.unpackb(raw)
    assert msgpack.packb(to_obj(from_obj(Manifest, obj, "manifest")), use_bin_type=True) == raw
    obj["producer"]["version"] = 3
    with pytest.raises(FormatError, match=r"\[schema.type\] manifest.producer.version: expected a str, found an int"):
        from_obj(Manifest, obj, "manifest")


# ------------------------------------------------------------------------------------------------ 1.2

def test_field_types_of_the_1_2_additions():
    defs = json.loads(SNAPSHOT.read_text())["$defs"]
    nullable = lambda t: {"anyOf": [t, {"type": "null"}]}  # noqa: E731
    string, integer, boolean = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
    assert defs["Manifest"]["properties"]["core"] == nullable({"$ref": "#/$defs/CoreView"})
    assert defs["Node"]["properties"]["origin"] == nullable({"$ref": "#/$defs/NodeLink"})
    assert defs["Golden"]["properties"]["core_nodes"] == {"type": "object",
                                                          "additionalProperties": {"$ref": "#/$defs/Value"}}
    assert defs["NodeLink"]["properties"] == {"graph": integer, "node": string}
    assert defs["CoreView"]["properties"] == {
        "graphs": {"type": "array", "items": {"$ref": "#/$defs/Graph"}},
        "inputs": {"type": "array", "items": {"$ref": "#/$defs/CoreInput"}},
        "outputs": {"type": "array", "items": {"$ref": "#/$defs/CoreOutput"}},
        "ops": {"type": "object", "additionalProperties": {"$ref": "#/$defs/OpSchema"}},
        "symbols": {"type": "object", "additionalProperties": {"$ref": "#/$defs/Symbol"}}}
    for name in ("CoreInput", "CoreOutput"):
        assert defs[name]["properties"] == {"name": string, "kind": string, "target": string}
    assert defs["OpSchema"]["properties"] == {
        "name": string, "overload": string, "arguments": {"type": "array", "items": {"$ref": "#/$defs/OpArg"}},
        "returns": {"type": "array", "items": {"$ref": "#/$defs/OpArg"}}}
    assert defs["OpArg"]["properties"] == {"name": string, "type": string, "kwarg_only": boolean,
                                           "default": {"$ref": "#/$defs/Value"}, "required": boolean,
                                           "mutates": boolean}
    assert defs["Symbol"]["properties"] == {"min": integer, "max": nullable(integer), "input": integer,
                                            "dim": integer}
    graph_value = [a for a in defs["Value"]["oneOf"] if a.get("properties", {}).get("t") == {"const": "graph"}]
    assert graph_value == [{"type": "object", "additionalProperties": False, "required": ["t", "v"],
                            "properties": {"t": {"const": "graph"}, "v": {"type": "integer", "minimum": 1}}}]
    tensor_meta = next(a for a in defs["Meta"]["oneOf"] if a["properties"]["t"] == {"const": "tensor"})
    items = tensor_meta["properties"]["shape"]["items"]["anyOf"]
    assert [i["type"] for i in items] == ["integer", "string"]


def test_1_2_objects_encode_to_exact_bytes():
    link = NodeLink(graph=0, node="fc")
    assert msgpack.packb(to_obj(link), use_bin_type=True) == b"\x82\xa5graph\x00\xa4node\xa2fc"
    node = Node(name="addmm", op="call_function", target="aten.addmm.default", args=[{"t": "node", "v": "x"}],
                kwargs={}, inputs=["x"], users=[], meta=None, lowering=None, graph=None, overload=None, origin=link)
    assert msgpack.packb(to_obj(node), use_bin_type=True) == (
        b"\x8c"                                              # fixmap, 12 entries
        b"\xa4name\xa5addmm"
        b"\xa2op\xadcall_function"
        b"\xa6target\xb2aten.addmm.default"
        b"\xa4args\x91\x82\xa1t\xa4node\xa1v\xa1x"
        b"\xa6kwargs\x80"
        b"\xa6inputs\x91\xa1x"
        b"\xa5users\x90"
        b"\xa4meta\xc0"
        b"\xa8lowering\xc0"
        b"\xa5graph\xc0"
        b"\xa8overload\xc0"
        b"\xa6origin\x82\xa5graph\x00\xa4node\xa2fc")
    arg = OpArg(name="alpha", type="Scalar", kwarg_only=True, default=1, required=False, mutates=False)
    assert msgpack.packb(to_obj(arg), use_bin_type=True) == (
        b"\x86\xa4name\xa5alpha\xa4type\xa6Scalar\xaakwarg_only\xc3\xa7default\x01\xa8required\xc2"
        b"\xa7mutates\xc2")
    op = OpSchema(name="aten::relu", overload="default", arguments=[], returns=[])
    assert msgpack.packb(to_obj(op), use_bin_type=True) == (
        b"\x84\xa4name\xaaaten::relu\xa8overload\xa7default\xa9arguments\x90\xa7returns\x90")
    sym = Symbol(min=2, max=None, input=2, dim=0)
    assert msgpack.packb(to_obj(sym), use_bin_type=True) == b"\x84\xa3min\x02\xa3max\xc0\xa5input\x02\xa3dim\x00"
    core = CoreView(graphs=[Graph(name="", nodes=[], training=False)],
                    inputs=[CoreInput(name="x", kind="user_input", target="x")],
                    outputs=[CoreOutput(name="y", kind="user_output", target="")],
                    ops={}, symbols={"s0": Symbol(min=0, max=64, input=0, dim=0)})
    assert msgpack.packb(to_obj(core), use_bin_type=True) == (
        b"\x85"
        b"\xa6graphs\x91\x83\xa4name\xa0\xa5nodes\x90\xa8training\xc2"
        b"\xa6inputs\x91\x83\xa4name\xa1x\xa4kind\xaauser_input\xa6target\xa1x"
        b"\xa7outputs\x91\x83\xa4name\xa1y\xa4kind\xabuser_output\xa6target\xa0"
        b"\xa3ops\x80"
        b"\xa7symbols\x81\xa2s0\x84\xa3min\x00\xa3max\x40\xa5input\x00\xa3dim\x00")
    golden = Golden(mode="nodes", file="golden.safetensors", inputs=[], outputs=None, nodes={}, tolerances={},
                    core_nodes={"relu": {"t": "tensor", "v": "golden/core/relu/0"}})
    assert msgpack.packb(to_obj(golden), use_bin_type=True) == (
        b"\x87\xa4mode\xa5nodes\xa4file\xb2golden.safetensors\xa6inputs\x90\xa7outputs\xc0\xa5nodes\x80"
        b"\xaatolerances\x80\xaacore_nodes\x81\xa4relu\x82\xa1t\xa6tensor\xa1v\xb2golden/core/relu/0")


def test_a_1_1_object_decodes_with_the_1_2_defaults_and_1_2_fields_are_checked():
    node = {"name": "x", "op": "placeholder", "target": "x", "args": [], "kwargs": {}, "inputs": [], "users": [],
            "meta": None, "lowering": None, "graph": None, "overload": None}
    assert from_obj(Node, node, "n").origin is None
    assert from_obj(Node, {**node, "origin": {"graph": 0, "node": "fc"}}, "n").origin == NodeLink(0, "fc")
    golden = {"mode": "outputs", "file": "golden.safetensors", "inputs": [], "outputs": None, "nodes": {},
              "tolerances": {}}
    assert from_obj(Golden, golden, "golden").core_nodes == {}
    with pytest.raises(FormatError) as e:
        from_obj(Node, {**node, "origin": {"graph": 0}}, "n")
    assert e.value.code == "schema.missing_field" and "'node'" in str(e.value) and "n.origin" in str(e.value)
    with pytest.raises(FormatError) as e:
        from_obj(Symbol, {"min": 2, "max": "64", "input": 0, "dim": 0}, "core.symbols.s0")
    assert e.value.code == "schema.type" and "core.symbols.s0.max" in str(e.value)
    with pytest.raises(FormatError) as e:
        from_obj(OpArg, {"name": "a", "type": "Tensor", "kwarg_only": 0, "default": None, "required": True,
                         "mutates": False}, "arg")
    assert e.value.code == "schema.type" and "arg.kwarg_only" in str(e.value)
    with pytest.raises(FormatError) as e:
        from_obj(CoreInput, {"name": "x", "kind": "user_input", "target": "x", "slot": 0}, "core.inputs[0]")
    assert e.value.code == "schema.unknown_field" and "'slot'" in str(e.value)
    assert from_obj(CoreInput, {"name": "x", "kind": "user_input", "target": "x", "x-slot": 0},
                    "core.inputs[0]") == CoreInput("x", "user_input", "x")

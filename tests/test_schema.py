"""The schema contract, against expectations written out by hand: the objects and fields of docs/format.md (in
order, with which fields are required), the version rule (fields of 1.0 required, fields added in 1.1 optional
with defaults), exact MessagePack bytes of an encoded object, and the checked decoding's errors.
docs/schema.json is rendered from fxlower/schema.py by scripts/gen_schema.py and must be current."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import msgpack
import pytest

from fxlower.errors import FormatError
from fxlower.schema import (SCHEMA_VERSION, FileEntry, Lowering, Manifest, Node, TensorEntry, from_obj,
                            json_schema, to_obj)

ROOT = pathlib.Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "docs" / "schema.json"

#: Every object of docs/format.md section 2.1-2.3: (fields of format 1.0, required) + (fields added in 1.1, each
#: with a default). A field added later belongs to a new minor (with a default) or a new major (without); update
#: this table, FORMAT_VERSION and docs/format.md together.
FIELDS = {
    "Manifest": (["format", "format_version", "producer", "files", "tensors", "graphs", "signature", "golden",
                  "digest"], ["modules", "functions", "methods"]),
    "Producer": (["name", "version", "torch"], []),
    "FileEntry": (["path", "role"], []),
    "TensorEntry": (["name", "dtype", "shape", "file", "key", "sha256"], ["kind", "requires_grad", "persistent"]),
    "Graph": (["name", "nodes"], ["training"]),
    "Node": (["name", "op", "target", "args", "kwargs", "inputs", "users", "meta", "lowering", "graph"],
             ["overload"]),
    "Lowering": (["module_type", "version", "module_version", "attrs"], ["training"]),
    "Signature": (["inputs", "output"], []),
    "Golden": (["mode", "file", "inputs", "outputs", "nodes", "tolerances"], []),
    "Tolerance": (["rtol", "atol"], []),
    # new objects of 1.1: all their fields are required inside them (the object itself is optional)
    "ModuleDecl": (["version", "attrs", "forward"], []),
    "AttrDecl": (["name", "type", "doc"], []),
    "Param": (["name", "kind", "default", "required"], []),
    "Overload": (["params", "returns"], []),
}


def test_checked_in_schema_is_current():
    assert json.loads(SNAPSHOT.read_text()) == json_schema(), "run python3 scripts/gen_schema.py"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_schema.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_schema_is_format_1_1():
    schema = json.loads(SNAPSHOT.read_text())
    assert SCHEMA_VERSION == (1, 1)
    assert schema["title"] == "fxlower manifest, format 1.1"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$ref"] == "#/$defs/Manifest"


def test_objects_fields_and_the_version_rule():
    defs = json.loads(SNAPSHOT.read_text())["$defs"]
    objects = {name for name, d in defs.items() if "properties" in d}
    assert objects == set(FIELDS)
    for name, (v1_0, v1_1) in FIELDS.items():
        d = defs[name]
        assert list(d["properties"]) == v1_0 + v1_1, name
        assert d["required"] == v1_0, name
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
                           "list", "tuple", "dict", "slice", "ellipsis", "complex"}
    leaves = next(a for a in defs["Meta"]["oneOf"] if a["required"] == ["t"])["properties"]["t"]["enum"]
    assert set(leaves) == {"int", "float", "bool", "str", "none", "other", "device", "dtype", "memory_format",
                           "layout"}


def test_encoding_is_field_order_maps_with_every_field():
    entry = TensorEntry(name="w", dtype="F32", shape=[2, 3], file="weights.safetensors", key="w", sha256="ab",
                        kind="parameter", requires_grad=True, persistent=True)
    expected = (b"\x89"                                  # fixmap, 9 entries
                b"\xa4name\xa1w"
                b"\xa5dtype\xa3F32"
                b"\xa5shape\x92\x02\x03"
                b"\xa4file\xb3weights.safetensors"
                b"\xa3key\xa1w"
                b"\xa6sha256\xa2ab"
                b"\xa4kind\xa9parameter"
                b"\xadrequires_grad\xc3"
                b"\xaapersistent\xc3")
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

"""The schema contract: docs/schema.json is rendered from fxlower/schema.py, and changes follow the version rules."""

from __future__ import annotations

import copy
import json
import pathlib
import re

import msgpack
import pytest

from fxlower.schema import SCHEMA_VERSION, Manifest, from_obj, json_schema, to_obj
from fxlower.errors import FormatError

SNAPSHOT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "schema.json"


def version_verdict(old: dict, new: dict, new_version: tuple[int, int]) -> str | None:
    """What a schema change requires, or None if the snapshot is current.

    Fields removed or added without a default need a new major; fields added with a default need a new minor.
    """
    major, minor = map(int, re.search(r"format (\d+)\.(\d+)", old["title"]).groups())
    for name, new_def in new["$defs"].items():
        old_def = old["$defs"].get(name)
        if old_def is None or "properties" not in new_def:
            continue
        for field in new_def["properties"]:
            if field in old_def["properties"]:
                continue
            if field in new_def["required"]:
                if new_version[0] <= major:
                    return f"bump to {major + 1}.0: field {name}.{field} added without default"
            elif new_version <= (major, minor):
                return f"bump to {major}.{minor + 1}: field {name}.{field} added (with a default)"
        for field in old_def["properties"]:
            if field not in new_def["properties"] and new_version[0] <= major:
                return f"bump to {major + 1}.0: field {name}.{field} removed"
    if old != new:
        return "docs/schema.json is stale: run python3 scripts/gen_schema.py"
    return None


def test_checked_in_schema_matches_the_dataclasses_and_the_version():
    assert version_verdict(json.loads(SNAPSHOT.read_text()), json_schema(), SCHEMA_VERSION) is None


def test_adding_a_field_without_default_demands_a_major_bump():
    old = json_schema()
    new = copy.deepcopy(old)
    new["$defs"]["Node"]["properties"]["flags"] = {"type": "integer"}
    new["$defs"]["Node"]["required"].append("flags")
    assert version_verdict(old, new, (1, 0)) == "bump to 2.0: field Node.flags added without default"
    assert version_verdict(old, new, (2, 0)) == "docs/schema.json is stale: run python3 scripts/gen_schema.py"


def test_adding_a_field_with_a_default_demands_a_minor_bump():
    old = json_schema()
    new = copy.deepcopy(old)
    new["$defs"]["TensorEntry"]["properties"]["quant"] = {"type": "string"}
    assert version_verdict(old, new, (1, 0)) == "bump to 1.1: field TensorEntry.quant added (with a default)"


def test_removing_a_field_demands_a_major_bump():
    old = json_schema()
    new = copy.deepcopy(old)
    del new["$defs"]["Producer"]["properties"]["torch"]
    assert version_verdict(old, new, (1, 0)) == "bump to 2.0: field Producer.torch removed"


def test_every_manifest_field_is_required_in_version_1():
    for name, d in json_schema()["$defs"].items():
        if "properties" in d:
            assert set(d["required"]) == set(d["properties"]), name


def test_decoding_is_derived_from_the_type_hints(tmp_path):
    import torch.fx as fx, torch.nn as nn, fxlower
    fxlower.export(fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2))), tmp_path / "m")
    obj = msgpack.unpackb((tmp_path / "m" / "manifest.msgpack").read_bytes())
    manifest = from_obj(Manifest, obj, "manifest")
    assert to_obj(manifest) == obj
    obj["producer"]["version"] = 3
    with pytest.raises(FormatError, match=r"\[schema.type\] manifest.producer.version: expected a str, found an int"):
        from_obj(Manifest, obj, "manifest")

"""The conformance vectors (docs/format.md section 12), as the Python reader sees them.

Every ``tests/conformance/valid/<name>`` loads with hash verification and, where it carries golden data, the
rebuilt GraphModule reproduces it bit for bit; every ``tests/conformance/invalid/<name>`` is rejected (also with
verification) with exactly the code ``tests/conformance/EXPECTED`` gives; and the checked-in set is what
``scripts/make_conformance.py`` generates today.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
import shutil
import struct
from pathlib import Path

import msgpack
import pytest
import torch
import torch.fx as fx

import fxlower
from fxlower.constants import STORAGE_DTYPES
from fxlower.tensorfile import tensor_bytes

ROOT = Path(__file__).resolve().parent.parent
VECTORS = Path(__file__).resolve().parent / "conformance"
VALID = sorted(p.name for p in (VECTORS / "valid").iterdir()) if (VECTORS / "valid").is_dir() else []
EXPECTED = dict(line.split() for line in (VECTORS / "EXPECTED").read_text().splitlines()) \
    if (VECTORS / "EXPECTED").is_file() else {}
#: Codes of section 11 that no directory in git can carry (a manifest over 1 GiB).
NOT_REPRESENTABLE = {"manifest.size"}


def _generator():
    spec = importlib.util.spec_from_file_location("make_conformance", ROOT / "scripts" / "make_conformance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def same(a, b) -> bool:
    """Bit-exact structural equality (tensors by dtype, shape and bytes; floats by bits; NaN equals NaN)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and bytes(tensor_bytes(a)) == bytes(tensor_bytes(b)))
    for kind in (tuple, list, dict):  # fx's immutable_list/immutable_dict count as list/dict
        if isinstance(a, kind) or isinstance(b, kind):
            if not (isinstance(a, kind) and isinstance(b, kind)):
                return False
            if kind is dict:
                return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return a == b


# ------------------------------------------------------------------------------------------------ valid

def test_the_set_exists():
    assert VALID and EXPECTED, "tests/conformance is missing; run scripts/make_conformance.py"


@pytest.mark.parametrize("name", VALID)
def test_valid_vector_loads_and_verifies(name):
    with fxlower.load(VECTORS / "valid" / name, verify=True) as art:
        if art.golden_mode is None:
            art.to_graph_module()  # rebuilds; nothing stored to compare with
            return
        gm = art.to_graph_module()
        inputs = art.golden_inputs()
        interp = fx.Interpreter(gm, garbage_collect_values=False)
        with torch.no_grad():
            out = interp.run(*inputs)
        assert same(out, art.golden_outputs()), f"{name}: outputs differ from the golden outputs"
        if art.golden_mode == "nodes":
            results = {n.name: v for n, v in interp.env.items()}
            golden = art.golden_nodes()
            assert golden, f"{name}: golden mode 'nodes' without node results"
            for node_name, value in golden.items():
                assert same(results[node_name], value), f"{name}: node '{node_name}' differs"


def _manifests():
    for name in VALID:
        yield name, msgpack.unpackb((VECTORS / "valid" / name / "manifest.msgpack").read_bytes(), raw=False,
                                    strict_map_key=False)


def test_valid_set_covers_every_value_kind_and_storage_dtype():
    kinds: set[str] = set()
    floats: set[bytes] = set()

    def walk(v):
        if isinstance(v, dict):
            if set(v) == {"t", "v"} and isinstance(v["t"], str):
                kinds.add(v["t"])
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, float):
            floats.add(struct.pack("<d", v))
    dtypes = set()
    for _, m in _manifests():
        for g in m["graphs"]:
            for n in g["nodes"]:
                walk([n["args"], n["kwargs"], n["lowering"]])
        walk(m["golden"])
        dtypes |= {t["dtype"] for t in m["tensors"]}
    assert kinds >= {"node", "tensor", "list", "tuple", "dict", "slice", "ellipsis", "complex", "dtype", "device",
                     "memory_format", "layout"}
    assert {struct.pack("<d", x) for x in (math.inf, -math.inf, -0.0)} <= floats
    assert any(math.isnan(struct.unpack("<d", f)[0]) for f in floats)
    assert dtypes == set(STORAGE_DTYPES)


# ------------------------------------------------------------------------------------------------ invalid

def test_expected_lists_exactly_the_invalid_vectors():
    dirs = sorted(p.name for p in (VECTORS / "invalid").iterdir())
    assert sorted(EXPECTED) == dirs
    lines = (VECTORS / "EXPECTED").read_text().splitlines()
    assert lines == sorted(lines)
    assert all(re.fullmatch(r"[a-z0-9_]+ [a-z_]+\.[a-z_]+", line) for line in lines)


def test_invalid_set_covers_every_error_code():
    spec = (ROOT / "docs" / "format.md").read_text()
    section = spec[spec.index("## 11. Error codes"):spec.index("## 12.")]
    codes = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", section, re.M))
    assert len(codes) > 20
    assert set(EXPECTED.values()) == codes - NOT_REPRESENTABLE


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_vector_is_rejected_with_its_code(name):
    path = VECTORS / "invalid" / name
    if name == "symlink_member" and not os.path.islink(path / "weights.safetensors"):
        pytest.skip("this checkout turned the symlink into a plain file")
    with pytest.raises(fxlower.FormatError) as info:
        fxlower.load(path, verify=True)
    assert info.value.code == EXPECTED[name], str(info.value)


def test_hash_vector_is_accepted_without_verification():
    fxlower.load(VECTORS / "invalid" / "hash_mismatch")


# ------------------------------------------------------------------------------------------------ staleness

@pytest.fixture(scope="module")
def generator():
    return _generator()


def test_checked_in_set_is_what_the_generator_writes(generator):
    diffs = generator.check(VECTORS)
    assert not diffs, f"tests/conformance is stale; run scripts/make_conformance.py ({diffs[:10]})"


def test_check_mode_names_a_stale_file(generator, tmp_path, capsys):
    stale = tmp_path / "conformance"
    shutil.copytree(VECTORS, stale, symlinks=True)
    target = stale / "valid" / "minimal" / "golden.safetensors"
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 1
    target.write_bytes(bytes(raw))
    (stale / "invalid" / "extra_file" / "README.txt").unlink()
    assert generator.main(["--check", "--out", str(stale)]) == 1
    err = capsys.readouterr().err
    assert "valid/minimal/golden.safetensors" in err
    assert "invalid/extra_file/README.txt" in err


@pytest.mark.parametrize("name", VALID)
def test_valid_vector_digest_matches_section_7(name):
    m = dict(_manifests())[name]
    weights = {f["path"] for f in m["files"] if f["role"] == "weights"}
    blob = msgpack.packb([m["graphs"], [t for t in m["tensors"] if t["file"] in weights], m["signature"]],
                         use_bin_type=True)
    assert m["digest"] == "sha256:" + hashlib.sha256(blob).hexdigest()
